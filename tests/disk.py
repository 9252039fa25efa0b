"""A disk that fills up: a small tmpfs under a test's SQLite file (mounting one needs root, as the
tests run on CI; pgserver's own user is how PostgreSQL runs there)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path


class FullDisk:
    """A small tmpfs for the SQLite file; `fill()` takes every free byte, `free()` gives them back."""

    def __init__(self, directory: Path, size_mb: int = 1024):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the soak mounts a tmpfs for its full-disk fault (needs root): {done.stderr.strip()}")
        self.filler = directory / "filler"

    def used_mb(self) -> float:
        usage = shutil.disk_usage(self.directory)
        return round(usage.used / 2**20, 1)

    def fill(self) -> None:
        chunk = b"\0" * (1 << 20)
        with open(self.filler, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
            small = chunk[:4096]
            try:  # the last pages too
                while True:
                    out.write(small)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        self.free()
        subprocess.run(["umount", "-l", str(self.directory)], capture_output=True)
