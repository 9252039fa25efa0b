"""The README is a short front door, figures live only in BENCHMARKS.md, links lead somewhere,
and every HRP_* variable the code reads is in docs/reference.md."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
CODE_PACKAGES = ("hrp_data", "shadow", "adapters", "tools")
MAX_README_LINES = 160

FIGURE = re.compile(
    r"\bx\d+(?:\.\d+)?\b"                               # x1.05
    r"|\b\d+(?:\.\d+)?x\b"                              # 3.5x
    r"|\b\d[\d,]*(?:\.\d+)?\s?(?:ms|us|µs|rows/s)(?![\w/])"  # 16 ms, 34 us, 192,625 rows/s
)
"""A benchmark-style figure: a multiplier, a latency or a rate. Settings and bounds in seconds
("5 s", "30 s") are not figures and do not match."""

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
VARIABLE = re.compile(r"HRP_[A-Z][A-Z0-9_]*")


def _relative(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _prose(text: str) -> str:
    """The page without its fenced code blocks (a `# comment` there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def figures_in(text: str) -> list[str]:
    return [match.group(0) for match in FIGURE.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, blanks to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in _prose(page.read_text(encoding="utf-8")).splitlines()
            if re.match(r"#{1,6} ", line)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    return broken


def variables_in_code() -> set[str]:
    """HRP_* names in the string literals of the product code (not its docstrings or comments:
    'HRP_CUT0' there spells a lock id), and the variable each Settings field is read from."""
    found: set[str] = set()
    for package in CODE_PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            tree = ast.parse(source.read_text(encoding="utf-8"))
            docstrings = {  # a string that is a statement of its own: a docstring, read by nothing
                id(node.value) for node in ast.walk(tree)
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    found.update(VARIABLE.findall(node.value))
    from hrp_data.settings import Settings

    if dataclasses.is_dataclass(Settings):
        found.update(f"HRP_{field.name.upper()}" for field in dataclasses.fields(Settings))
    return found


def documented_variables(text: str) -> set[str]:
    """Variables that have a row of their own in a table: | `HRP_X` | default | meaning |."""
    return set(re.findall(r"^\| `(HRP_[A-Z0-9_]+)` \|", text, flags=re.M))


def test_the_readme_is_a_front_door():
    """README.md stays short: what it is, how to start, where to read on."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=_relative)
def test_no_figure_outside_benchmarks(page):
    """Measured figures live in BENCHMARKS.md only; the docs link to it."""
    assert figures_in(page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "text, figures",
    [
        ("p99 x4.6 across runs", ["x4.6"]),
        ("held writes p50 16 ms, max 236ms", ["16 ms", "236ms"]),
        ("192,625 rows/s against 226302 rows/s", ["192,625 rows/s", "226302 rows/s"]),
        ("about 3.5x faster, 34 us per read", ["3.5x", "34 us"]),
        ("a 5 s bound, 30 s busy timeout, 0x10, `STATEMENT_BOUND_S` (120 s)", []),
        ("```\nhold 20 ms in a code block\n```\n", ["20 ms"]),
    ],
)
def test_the_figure_pattern(text, figures):
    """The pattern finds benchmark figures and leaves settings, bounds and code alone."""
    assert figures_in(text) == figures


@pytest.mark.parametrize("page", PAGES, ids=_relative)
def test_every_relative_link_leads_somewhere(page):
    """Every relative link names a file that exists, and a heading of it when it has an anchor."""
    assert broken_links(page) == []


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A `code` heading, with commas\n", encoding="utf-8")
    page.write_text(
        "[ok](other.md) [ok](other.md#a-code-heading-with-commas) [ok](https://example.com)\n"
        "[gone](missing.md) [no heading](other.md#nothing-here)\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["missing.md", "other.md#nothing-here"]


def test_every_variable_the_code_reads_is_in_the_reference():
    """Each HRP_* variable named in the code has a row in docs/reference.md's tables."""
    code = variables_in_code()
    assert {"HRP_SQLITE_URL", "HRP_SHADOW_WINDOW", "HRP_SECRET_KEY"} <= code  # the scan finds them
    missing = sorted(code - documented_variables((ROOT / "docs" / "reference.md").read_text(encoding="utf-8")))
    assert missing == [], f"add these to the settings table in docs/reference.md: {missing}"


def _as_number(shown: str) -> float:
    """'10', '5.0', '1h', '24h', '90m' as a number (durations in seconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", shown)
    assert match, f"{shown!r} is not a number or a duration"
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def test_the_settings_table_gives_each_settings_default():
    """The reference's default for each Settings field is the field's default."""
    from hrp_data.settings import Settings

    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(HRP_[A-Z0-9_]+)` \| ([^|]+) \|", text, flags=re.M))
    for field in dataclasses.fields(Settings):
        variable = f"HRP_{field.name.upper()}"
        shown = rows[variable].strip().strip("`")
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        if default in (None, "", (), []):
            assert shown == "-", variable
        elif isinstance(default, (bool, int, float)):
            assert _as_number(shown) == float(default), variable
        elif re.fullmatch(r"\d+(?:\.\d+)?[smhd]?", str(default)):
            assert _as_number(shown) == _as_number(str(default)), variable
        else:
            assert shown == str(default), variable
