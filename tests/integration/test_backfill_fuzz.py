"""Hostile values at random in every column: after the backfill each legacy row is in PostgreSQL
exactly (verify equal) or quarantined with a reason, none lost, none changed in silence."""

from __future__ import annotations

import random
import sqlite3

import pytest

from hrp_data.backfill.run import Options, run_backfill
from hrp_data.models import TABLES
from hrp_data.schema.install import upgrade
from hrp_data.verify.run import verify
from tests.integration.test_backfill import _quarantine_map, open_cutover, pg_query

HOSTILE_VALUES = [
    None, 0, 1, -1, 2, 2**63 - 1, -(2**63), 1.5, -0.0, 0.1 + 0.2, 5e-324, 1e308, float("inf"), float("-inf"),
    "", " ", "abc", "N/A", "1", "1.5", "true", "FALSE", "yes", "tab\there", "nl\nx", "back\\slash", "\\N", "\\.",
    "caf\u00e9", "\U0001F40E", "a\x00b", b"", b"\x00\xff", "2025-01-14 09:30:00", "2025-01-14T09:30:00Z",
    "2025-01-14 09:30:00.1234567", "2025-02-30 10:00:00", "2025-01-14", "0000-01-01", "9999-12-31 23:59:59",
    "2025-01-14 09:30:00+05:30", "1736847000", 1736847000, 1736847000.5, "24:00", "null", "[]", "{}",
    '{"a": 1}', '{"a": 1, "a": 2}', '{"a": NaN}', "[1e400]", '"str"', '{"k": "x, y"}', "[1e16]", '{"x": 1e+23}',
    "[0.1000000000000000055511151231257827]", '{"n": 12345678901234567890}', '{"u": "\\ud800"}',
    '{"z": "\\u0000"}', '{"deep": ' * 50 + "1" + "}" * 50,
]
ROWS = 50


def _hostile_file(path, seed: int) -> None:
    rnd = random.Random(seed)
    tables = {t.name: t for t in TABLES}
    with sqlite3.connect(path) as raw:
        for name in ("users", "races", "horses", "predictions"):
            columns = [c.name for c in tables[name].columns if c.name != "id"]
            for row_id in range(1, ROWS + 1):
                values = [rnd.choice(HOSTILE_VALUES) if rnd.random() < 0.3 else None for _ in columns]
                for index, column in enumerate(columns):  # mostly plausible where a constraint would refuse
                    if column in ("username", "email", "race_name", "horse_name", "password_hash") and rnd.random() < 0.8:
                        values[index] = f"{column}{row_id}"
                    if column.endswith("_id") and rnd.random() < 0.7:
                        values[index] = rnd.randint(1, ROWS)
                try:
                    raw.execute(f'INSERT INTO "{name}" (id, {", ".join(columns)})'
                                f' VALUES ({row_id}, {", ".join("?" * len(columns))})', values)
                except sqlite3.IntegrityError:  # a unique or NOT NULL the file enforces itself
                    pass


@pytest.mark.parametrize("seed", [4, 11, 23])
def test_a_file_of_random_hostile_values_ends_copied_exactly_or_quarantined(legacy_file, postgres_url, seed):
    _hostile_file(legacy_file, seed)
    upgrade(postgres_url)
    with open_cutover(legacy_file, postgres_url) as cutover:
        result = run_backfill(cutover, Options(batch_size=7, workers=0))
        assert result.complete
        checked = verify(cutover, record=False)
    assert checked.equal, checked.examples[:3]
    quarantined = _quarantine_map(postgres_url)
    with sqlite3.connect(legacy_file) as raw:
        for name in ("users", "races", "horses", "predictions"):
            legacy = raw.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            copied = pg_query(postgres_url, f'SELECT count(*) FROM "{name}"')[0][0]
            held = len({key for table, key, _ in quarantined if table == name})
            assert copied + held == legacy, name
            assert checked.tables[name].quarantined == held, name
    assert all(entry["reason"] for entry in quarantined.values())
