"""`hrp-cutover bench`: the Scale section (`make bench-scale`) is written apart from the rest of
BENCHMARKS.md and survives a `make bench` that has no scale figures of its own."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tools.bench_cmd import SCALE_BEGIN, SCALE_END, bench, render_scale, splice_scale


def _size(races: int, rows: int, backfill_s: float, ok: bool = True) -> dict:
    command = {"ok": True, "exit_code": 0, "seconds": 1.0, "peak_rss_mb": 100.0, "cpu_seconds": 1.0,
               "load_average_before": [1.0], "load_average_after": [1.0]}
    commands = {name: dict(command) for name in ("seed", "backup", "assess", "schema", "phase", "backfill", "verify")}
    commands["backfill"]["seconds"] = backfill_s
    if not ok:
        commands["verify"] |= {"ok": False, "exit_code": 1, "failure": "database unavailable: ClientTimeout"}
    return {"races": races, "rows": rows, "rows_per_table": {"races": races}, "commands": commands,
            "assess_estimate_seconds": 2.0, "backfill_over_estimate": round(backfill_s / 2.0, 2),
            "assess_over_backfill": 0.5,
            "pgloader": {"ok": False, "exit_code": 1, "seconds": 9.0, "failure": "Heap exhausted, game over."},
            "pgloader_retry": {"ok": True, "exit_code": 0, "seconds": 8.0, "with": "prefetch rows = 10000"}}


def test_the_section_names_failures_and_pgloader_outcome():
    text = render_scale([_size(1000, 23000, 3.0, ok=False), _size(100, 2300, 1.0)], {"date": "d", "failed": ["x"]})
    assert text.startswith(SCALE_BEGIN) and text.endswith(SCALE_END)
    assert "verify failed (exit 1: database unavailable: ClientTimeout)" in text
    assert "pgloader (defaults): exit 1: Heap exhausted, game over. after 9.0 s" in text
    assert "with `prefetch rows = 10000`: 8.0 s" in text
    assert text.index("### 100 races") < text.index("### 1,000 races")


def test_splice_replaces_only_the_section():
    old = render_scale([_size(100, 2300, 1.0)], None)
    page = f"# Benchmarks\n\nabove\n\n{old}\n\n## below\n"
    new = render_scale([_size(200, 4600, 1.0)], None)
    spliced = splice_scale(page, new)
    assert "above" in spliced and "## below" in spliced and "### 200 races" in spliced and "### 100 races" not in spliced
    assert splice_scale("# Benchmarks\n", new).endswith(new + "\n")


def test_make_bench_keeps_the_scale_section(tmp_path):
    out, bench_dir, scale_dir = tmp_path / "BENCHMARKS.md", tmp_path / "bench", tmp_path / "scale"
    scale_dir.mkdir()
    (scale_dir / "races-100.json").write_text(json.dumps(_size(100, 2300, 1.0)))
    out.write_text("# Benchmarks\n\nold figures\n")
    runner = CliRunner()
    result = runner.invoke(bench, ["--scale-only", "--scale-artifacts", str(scale_dir), "--out", str(out),
                                   "--artifacts", str(bench_dir)])
    assert result.exit_code == 0, result.output
    assert "old figures" in out.read_text() and "### 100 races" in out.read_text()
    bench_dir.mkdir()
    (bench_dir / "verify.json").write_text(json.dumps({"rows_per_s": 1}))
    result = runner.invoke(bench, ["--artifacts", str(bench_dir), "--scale-artifacts", str(tmp_path / "none"),
                                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "old figures" not in text and "## verify" in text and "### 100 races" in text
