"""`make bench-scale`: the long commands at scale, through the real CLI, as an operator runs them.

For each size of HRP_SCALE_RACES (races, comma-separated; default "100000,1000000"), in a
work directory of its own (HRP_SCALE_WORKDIR, default a fresh one under the system's temp dir)
and against an embedded PostgreSQL (pgserver, as the tests start it; HRP_TEST_POSTGRES_URL's
server instead when set):

    hrp-cutover seed --sqlite FILE --races N      the file
    hrp-cutover backup --json                     online snapshot beside it (the backfill requires one)
    hrp-cutover assess --json                     its estimate of the backfill's time
    hrp-cutover schema                            on a fresh database
    hrp-cutover phase set dual_write
    hrp-cutover backfill --json                   after a CHECKPOINT
    hrp-cutover verify --json
    pgloader sqlite://FILE postgresql://...       the same file into another fresh database,
                                                  Debian's pgloader with its defaults (installed
                                                  by the target's set-up step); when that fails, once
                                                  more with `prefetch rows = 10000`

Each command is a child process; its wall seconds, CPU seconds (user + system of the process and
the children it waited for) and the peak RSS of its whole process tree (psutil, every
POLL_S seconds: the sum of the RSS of the process and all its descendants, the maximum over the
samples) are recorded, with the load average before and after (the machine may be shared).
Rows per second are the file's rows (every table) over the command's wall seconds.

Figures go to artifacts/bench-scale/races-<N>.json as each size ends (a failure at the larger size
keeps the smaller one's) and artifacts/bench-scale/scale.json (the run, the ratios of the largest
size to the smallest per row and for memory); each command's stdout and stderr to
artifacts/bench-scale/logs/<N>/. `hrp-cutover bench --scale-only` writes them into the "Scale"
section of BENCHMARKS.md. Exit 1 when one of our commands failed (pgloader's outcome is a
figure, not a failure).

Other knobs: HRP_SCALE_TIMEOUT (seconds per command, default 7200), HRP_SCALE_KEEP=1 keeps
the work directory and the databases, HRP_SCALE_PGLOADER_RETRY=always runs the second pgloader
even when the first succeeded.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import psycopg2
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "bench-scale"
HRP = str(Path(sys.executable).parent / "hrp-cutover")
POLL_S = 0.2
PGLOADER_RETRY_WITH = "prefetch rows = 10000"
PER_ROW = ("seed", "backup", "assess", "backfill", "verify")
"""The commands whose work grows with the rows (schema and phase are a fixed cost)."""


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pgloader_url(url: str) -> str:
    parsed = make_url(url)
    host = parsed.query.get("host")
    if host:  # a unix socket directory (pgserver)
        return f"postgresql://{parsed.username or 'postgres'}@unix:{host}:{parsed.port or 5432}/{parsed.database}"
    password = f":{parsed.password}" if parsed.password else ""
    return f"postgresql://{parsed.username}{password}@{parsed.host}:{parsed.port or 5432}/{parsed.database}"


def _admin(server_url: str):
    connection = psycopg2.connect(_libpq(server_url))
    connection.autocommit = True
    return connection


def _checkpoint(url: str) -> None:
    """Write out what earlier steps left dirty, so that the next measured command does not pay for it."""
    connection = _admin(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    finally:
        connection.close()


def _database_mb(url: str) -> float:
    connection = _admin(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            return round(cursor.fetchone()[0] / 1e6, 1)
    finally:
        connection.close()


def _tree_rss(process: psutil.Process) -> int:
    """The sum of the RSS of `process` and all its descendants now (bytes)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # ended since the listing
    return total


def _kill_tree(process: psutil.Process) -> None:
    try:
        members = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass


def _interesting(text: str) -> str | None:
    """The first line that says what went wrong (pgloader's "Heap exhausted", an error, a fatal)."""
    for needle in ("Heap exhausted", "FATAL", "ERROR", "Error:", "error", "Traceback"):
        for line in text.splitlines():
            if needle in line:
                return line.strip()[:500]
    return None


def run_command(name: str, argv: list[str], env: dict[str, str], logs: Path, timeout_s: float) -> dict:
    """Run one command as a child process: wall and CPU seconds, peak RSS of its process tree, exit code."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    peak = samples = 0
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        process = psutil.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        while process.poll() is None:
            peak = max(peak, _tree_rss(process))
            samples += 1
            if time.perf_counter() - started > timeout_s:
                timed_out = True
                _kill_tree(process)
                process.wait()
                break
            time.sleep(POLL_S)
        seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    figure = {
        "argv": [Path(argv[0]).name, *argv[1:]],
        "exit_code": process.returncode,
        "ok": process.returncode == 0 and not timed_out,
        "seconds": round(seconds, 2),
        "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "peak_rss_mb": round(peak / 1e6, 1),
        "rss_samples": samples,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    if timed_out:
        figure["failure"] = f"timed out after {timeout_s:.0f} s (killed)"
    elif process.returncode != 0:
        figure["failure"] = _interesting(stderr) or _interesting(stdout) or (stderr or stdout).strip()[-500:]
        figure["stderr_tail"] = stderr.strip().splitlines()[-15:]
    print(f"  {name:<10} exit {process.returncode}  {figure['seconds']:>9.2f} s"
          f"  peak RSS {figure['peak_rss_mb']:>8.1f} MB" + (f"  {figure.get('failure')}" if not figure["ok"] else ""),
          flush=True)
    figure["_stdout"] = stdout
    return figure


def _json_out(figure: dict) -> dict | None:
    try:
        return json.loads(figure["_stdout"])
    except (ValueError, KeyError):
        return None


def _file_counts(path: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name NOT LIKE 'hrp_cutover%' ORDER BY name")]
        return {name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}
    finally:
        connection.close()


def _ensure_pgloader() -> str | None:
    from tests.bench.test_backfill_bench import _ensure_pgloader as ensure

    return ensure()


def _pgloader(path: Path, server_url: str, logs: Path, timeout_s: float, env: dict[str, str], with_: str | None,
              keep: bool) -> dict:
    """pgloader on the file into a fresh database (its defaults, or a load file WITH `with_`)."""
    name = f"hrp_scale_pgloader_{uuid.uuid4().hex[:8]}"
    admin = _admin(server_url)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    target = make_url(server_url).set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    try:
        _checkpoint(server_url)
        if with_ is None:
            argv = ["pgloader", "--no-ssl-cert-verification", f"sqlite://{path}", _pgloader_url(target)]
            label = "pgloader"
        else:
            load = logs / "pgloader.load"
            load.write_text(f"LOAD DATABASE\n  FROM sqlite://{path}\n  INTO {_pgloader_url(target)}\n"
                            f"  WITH {with_};\n")
            argv = ["pgloader", "--no-ssl-cert-verification", str(load)]
            label = "pgloader_retry"
        figure = run_command(label, argv, env, logs, timeout_s)
        text = figure["_stdout"] + (logs / f"{label}.stderr").read_text(errors="replace")
        summary = [line.strip() for line in text.splitlines() if "Total import time" in line]
        figure["summary"] = summary[-1] if summary else None
        figure["with"] = with_ or "defaults"
        if "Heap exhausted" in text:
            figure["ok"] = False
            figure["failure"] = _interesting(text)
        if figure["ok"]:
            figure["database_mb"] = _database_mb(target)
        return figure
    finally:
        if not keep:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def run_size(races: int, server_url: str, work: Path, timeout_s: float, keep: bool) -> dict:
    print(f"\n{races} races", flush=True)
    here = work / f"races-{races}"
    here.mkdir(parents=True, exist_ok=True)
    logs = ARTIFACTS / "logs" / str(races)
    path = here / "hrp_database.db"
    name = f"hrp_scale_{races}_{uuid.uuid4().hex[:6]}"
    url = make_url(server_url).set(drivername="postgresql+psycopg2", database=name).render_as_string(
        hide_password=False)
    env = {**os.environ, "HRP_SQLITE_URL": f"sqlite:///{path}", "HRP_POSTGRES_URL": url,
           "HRP_LOG_FORMAT": "json", "COLUMNS": "120"}
    env.pop("HRP_POSTGRES_DIRECT_URL", None)
    commands: dict[str, dict] = {}
    figures: dict = {"races": races, "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "commands": commands}

    def step(label: str, argv: list[str]) -> dict:
        commands[label] = run_command(label, [HRP, *argv], env, logs, timeout_s)
        return commands[label]

    admin = _admin(server_url)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        if not step("seed", ["seed", "--sqlite", str(path), "--races", str(races), "--seed", "1"])["ok"]:
            return figures
        counts = _file_counts(path)
        rows = sum(counts.values())
        figures |= {"rows": rows, "rows_per_table": counts, "file_mb": round(path.stat().st_size / 1e6, 1)}
        backup = step("backup", ["backup", "--json"])
        if backup["ok"] and (manifest := _json_out(backup)):
            figures["backup_mb"] = round(manifest.get("size", 0) / 1e6, 1)
        assess = step("assess", ["assess", "--json"])
        if assess["ok"] and (report := _json_out(assess)):
            figures["assess_estimate_seconds"] = report["estimate"]["seconds"]
            figures["assess_estimate_tables"] = {t: e["seconds"] for t, e in report["estimate"]["tables"].items()}
        step("schema", ["schema"])
        step("phase", ["phase", "set", "dual_write"])
        _checkpoint(url)
        backfill = step("backfill", ["backfill", "--json"])
        if (result := _json_out(backfill)) is not None:
            figures["backfill_complete"] = result.get("complete")
            figures["backfill_tables"] = result.get("tables")
        if backfill["ok"]:
            figures["database_mb"] = _database_mb(url)
        verify = step("verify", ["verify", "--json"])
        if (result := _json_out(verify)) is not None:
            figures["verify_equal"] = result.get("equal")
        for figure in (commands[n] for n in PER_ROW if n in commands):
            if figure["ok"] and figure["seconds"] > 0:
                figure["rows_per_s"] = round(rows / figure["seconds"])
                figure["us_per_row"] = round(figure["seconds"] / rows * 1e6, 3)
        if "assess_estimate_seconds" in figures and backfill["ok"]:
            figures["backfill_over_estimate"] = round(backfill["seconds"] / max(figures["assess_estimate_seconds"], 1e-9), 2)
            figures["assess_over_backfill"] = round(assess["seconds"] / backfill["seconds"], 3)

        missing = _ensure_pgloader()
        if missing:
            figures["pgloader"] = {"ok": False, "failure": missing}
        else:
            runs = [_pgloader(path, server_url, logs, timeout_s, env, None, keep)]
            if not runs[0]["ok"] or os.environ.get("HRP_SCALE_PGLOADER_RETRY") == "always":
                runs.append(_pgloader(path, server_url, logs, timeout_s, env, PGLOADER_RETRY_WITH, keep))
            for run in runs:
                run.pop("_stdout", None)
                if run["ok"]:
                    run["rows_per_s"] = round(rows / run["seconds"])
                    run["us_per_row"] = round(run["seconds"] / rows * 1e6, 3)
            figures["pgloader"] = runs[0]
            if len(runs) > 1:
                figures["pgloader_retry"] = runs[1]
            done = next((r for r in runs if r["ok"]), None)
            if done and backfill["ok"]:
                figures["pgloader_over_backfill"] = round(done["seconds"] / backfill["seconds"], 3)
        return figures
    finally:
        for figure in commands.values():
            figure.pop("_stdout", None)
        figures["ended"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"races-{races}.json").write_text(json.dumps(figures, indent=2, default=str))
        if not keep:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            shutil.rmtree(here, ignore_errors=True)
        admin.close()


def ratios(sizes: list[dict]) -> dict:
    """The largest size against the smallest: seconds per row and peak RSS, per command."""
    done = [s for s in sizes if s.get("rows")]
    if len(done) < 2:
        return {}
    small, large = min(done, key=lambda s: s["rows"]), max(done, key=lambda s: s["rows"])
    out = {"of": f"{large['races']:,} races over {small['races']:,} races",
           "rows": round(large["rows"] / small["rows"], 2), "per_row": {}, "peak_rss": {}}
    pairs = [(name, small["commands"].get(name), large["commands"].get(name)) for name in PER_ROW]
    pairs += [(key, small.get(key), large.get(key)) for key in ("pgloader", "pgloader_retry")]
    for name, a, b in pairs:
        if not a or not b or not a.get("ok") or not b.get("ok"):
            continue
        out["per_row"][name] = round((b["seconds"] / large["rows"]) / (a["seconds"] / small["rows"]), 2)
        if a.get("peak_rss_mb"):
            out["peak_rss"][name] = round(b["peak_rss_mb"] / a["peak_rss_mb"], 2)
    return out


def _server():
    """(server URL, cleanup): HRP_TEST_POSTGRES_URL's server, else a fresh embedded pgserver."""
    if os.environ.get("HRP_TEST_POSTGRES_URL"):
        return os.environ["HRP_TEST_POSTGRES_URL"], lambda: None
    from tests.pg_control import start_pgserver

    data_dir, server = start_pgserver("hrp-scale-pg-")

    def cleanup() -> None:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)

    return server.get_uri(), cleanup


def main() -> int:
    sizes = [int(v) for v in os.environ.get("HRP_SCALE_RACES", "100000,1000000").replace(" ", "").split(",") if v]
    timeout_s = float(os.environ.get("HRP_SCALE_TIMEOUT", "7200"))
    keep = os.environ.get("HRP_SCALE_KEEP") == "1"
    work = Path(os.environ.get("HRP_SCALE_WORKDIR") or tempfile.mkdtemp(prefix="hrp-scale-"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server_url, cleanup = _server()
    results = []
    try:
        for races in sizes:
            results.append(run_size(races, server_url, work, timeout_s, keep))
    finally:
        cleanup()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    failed = [f"{r['races']} races: {name}" for r in results for name, c in r["commands"].items() if not c["ok"]]
    summary = {
        "sizes_races": sizes,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores,"
                   f" {round(psutil.virtual_memory().total / 2**30, 1)} GiB",
        "system": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": "HRP_TEST_POSTGRES_URL" if os.environ.get("HRP_TEST_POSTGRES_URL") else "embedded pgserver",
        "total_seconds": round(time.perf_counter() - started, 1),
        "failed": failed,
        "ratios": ratios(results),
    }
    (ARTIFACTS / "scale.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {ARTIFACTS}; {summary['total_seconds']} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
