"""`python -m tests.soak.mover POINT DIR -- ARGS...`: `hrp-cutover ARGS...` that stops at the move's
POINT (one of hrp_data.flip.move.FAULT_POINTS): it writes DIR/at (its pid) and waits for DIR/go,
so the soak can inject a fault from outside at that exact point of a real move (kill this
process, fill the disk, stop PostgreSQL) and then let it go on. Test code only: the product
has no fault hook but `move.fault_at`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hrp_data.flip import move
from tools.cli import cli

WAIT_S = 60.0


def stop_at(point: str, directory: Path):
    def fault(at: str) -> None:
        if at != point:
            return
        (directory / "at").write_text(str(os.getpid()))
        deadline = time.monotonic() + WAIT_S
        while not (directory / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    return fault


def main() -> None:
    point, directory, separator, *args = sys.argv[1:]
    assert separator == "--" and point in move.FAULT_POINTS, sys.argv
    move.fault_at = stop_at(point, Path(directory))
    cli.main(args=args, prog_name="hrp-cutover")


if __name__ == "__main__":
    main()
