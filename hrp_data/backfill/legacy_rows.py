"""The legacy file read raw, a key range at a time, and converted into COPY lines.

Reading uses plain sqlite3 (no ORM: it is the backfill's hot loop) with the
same lenient text decoding as the app's engine (invalid UTF-8 arrives as
lone surrogates, which the conversion rules reject by name). Batches are
keyset pages, `WHERE key > last ORDER BY key LIMIT n`, on the primary key
(race_horses: the row value (race_id, horse_id)), never OFFSET and never the
rowid of a table without an INTEGER PRIMARY KEY (VACUUM may renumber it).

Every value goes through the conversion rules of `adapters.convert` for its
column's kind (JSON through `json_text`, which hands canonical legacy text on
as it is), then becomes a COPY text field (adapters.pg_copy). Conversion is a pure
function, so for text-held kinds an exact memo of recent spellings saves
re-parsing the many repeated timestamps, dates and names. A row with any
rejected value is not copied; each rejected column is reported with its
reason and a displayable value (secrets fingerprinted).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters import pg_copy
from adapters.convert import (
    BIGINT_RANGE, Kind, Rejected, canonical_texts, converter, fits_numeric, json_text, timestamp_text,
    to_postgres,
)
from adapters.outbox import OUTBOX
from adapters.sqlite import BUSY_TIMEOUT_MS, decode_text, stored_width
from adapters.types import ExactNumeric, kind_of
from adapters.vouch import vouched
from adapters.catalog import Catalog, is_secret, quote
from shadow.redact import fingerprint, looks_secret, redact_json

MEMO_KINDS = frozenset({Kind.TIMESTAMP, Kind.DATE, Kind.TEXT, Kind.BOOLEAN})
MEMO_LIMIT = 20_000
SHOWN_MAX = 500

Key = tuple[Any, ...]


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:/// URL."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        raise ValueError(f"{url} does not name a SQLite file")
    return Path(database)


def connect(path: Path, *, read_only: bool = True) -> sqlite3.Connection:
    """A raw connection to the legacy file (read-only by default: `file:...?mode=ro`)."""
    if read_only:
        connection = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    else:
        connection = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    connection.isolation_level = None
    connection.text_factory = decode_text
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return connection


PAGE_BYTES = 32 * 2**20
"""A backfill page (hrp_data.backfill.read_pool) holds rows of at most about this many stored bytes,
however few rows that is (a table of uploads in BLOBs: a page of 10,000 rows of 1 MB each was 10 GB
in the worker, and again in the COPY text), and at least one row."""


def _fetch(connection: sqlite3.Connection, sql: str, params: tuple) -> list[tuple]:
    """All rows, decoded by the C decoder; a page holding invalid UTF-8 is read again leniently."""
    connection.text_factory = str
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError as error:
        if "decode" not in str(error):
            raise
        connection.text_factory = decode_text
        return connection.execute(sql, params).fetchall()
    finally:
        connection.text_factory = decode_text


_FORMAT: dict[Kind, Callable[[Any], str]] = {
    Kind.INTEGER: str,
    Kind.REAL: pg_copy.float_field,
    Kind.TEXT: pg_copy.escape_text,
    Kind.BOOLEAN: lambda value: "t" if value else "f",
    Kind.DATE: lambda value: value.isoformat(),
    Kind.BLOB: lambda value: "\\\\x" + value.hex(),  # bytea hex input, its backslash escaped
    Kind.NUMERIC: str,
}


def _json_field(raw: Any) -> str:
    """A raw JSON value as a COPY field (NULL as \\N): json_text, escaped. Its text holds no NUL and
    no raw tab, newline or carriage return (JSON escapes them inside strings, and neither
    canonical text nor json.dumps has them between tokens), so of COPY's escapes only the
    backslash's applies (pg_copy.escape_text)."""
    if raw is None:
        return pg_copy.NULL
    text = json_text(raw)
    return text.replace("\\", "\\\\") if "\\" in text else text


def _to_field(kind: Kind) -> Callable[[Any], str]:
    """non-NULL raw value -> COPY field: the kind's conversion, then its COPY spelling
    (timestamps in one step: adapters.convert.timestamp_text)."""
    if kind is Kind.TIMESTAMP:
        return timestamp_text
    convert, spell = converter(kind), _FORMAT[kind]
    return lambda raw: spell(convert(raw))


def field_encoder(kind: Kind) -> Callable[[Any], str]:
    """raw SQLite value -> COPY field, via the conversion rules (adapters.convert); raises Rejected."""
    null = pg_copy.NULL

    if kind is Kind.JSON:
        return _json_field

    if kind not in MEMO_KINDS:
        convert, spell = converter(kind), _FORMAT[kind]

        def encode(raw: Any) -> str:  # the hot loop: one call less than via to_field
            return null if raw is None else spell(convert(raw))

        return encode

    to_field = _to_field(kind)
    memo: dict[str, str] = {}

    def encode_memo(raw: Any) -> str:
        if raw is None:
            return null
        if type(raw) is not str:  # equal numbers of other types (1, 1.0, True) convert differently
            return to_field(raw)
        text = memo.get(raw)
        if text is None:
            text = to_field(raw)
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            memo[raw] = text
        return text

    return encode_memo


Spelled = tuple[str, Sequence[Any]]
"""A column's part of the COPY lines: a %-directive and one value per row for it. ("%s", fields) in
general; the raw values themselves where the directive spells each as its field encoder does:
"%d" for ints of BIGINT's range (int.__repr__), "%r" for finite floats (float.__repr__)."""

FIELDS = "%s"


def spelled_fields(spelled: Spelled) -> list[str]:
    """The COPY fields a column's part stands for."""
    directive, values = spelled
    return list(values) if directive == FIELDS else [directive % value for value in values]


def column_encoder(kind: Kind) -> Callable[[Sequence[Any]], Spelled]:
    """A column of raw values -> their part of the COPY lines: spelled_fields gives what
    map(field_encoder(kind), values) gives.

    Each kind's common case is told for the whole column at once, in C-level calls, and spelled
    without a call per value; any other column goes value by value (field_encoder):
    - INTEGER and REAL: one storage class throughout, no NULL, after one range or finiteness
      check: the values as they are, for the line's "%d" or "%r";
    - TEXT: every value text without a character COPY escapes or PostgreSQL refuses (NUL, a lone
      surrogate), told on the values joined: each is then its own field;
    - JSON: runs of texts in json.dumps' canonical spelling (adapters.convert.canonical_texts), each
      then its own field with its backslashes escaped, as _json_field gives it;
    - TIMESTAMP, DATE, BOOLEAN: NULL and text only, each distinct value converted once.
    NULLs go to \\N around the texts of TEXT and JSON.
    """
    encode = field_encoder(kind)
    null = pg_copy.NULL

    def each(values: Sequence[Any]) -> Spelled:
        return FIELDS, list(map(encode, values))

    if kind is Kind.INTEGER:
        low, high = BIGINT_RANGE

        def integers(values: Sequence[Any]) -> Spelled:
            if values and set(map(type, values)) == {int} and low <= min(values) and max(values) <= high:
                return "%d", values
            return each(values)

        return integers
    if kind is Kind.REAL:

        def reals(values: Sequence[Any]) -> Spelled:
            if values and set(map(type, values)) == {float} and all(map(math.isfinite, values)):
                return "%r", values
            return each(values)

        return reals
    if kind is Kind.TEXT or kind is Kind.JSON:
        plain = _plain_texts if kind is Kind.TEXT else _canonical_json_texts

        def texts(values: Sequence[Any]) -> Spelled:
            present = values if None not in values else [value for value in values if value is not None]
            fields = plain(present)
            if fields is None:
                return each(values)
            if present is values:
                return FIELDS, fields
            spelled = iter(fields)
            return FIELDS, [null if value is None else next(spelled) for value in values]

        return texts
    if kind in MEMO_KINDS:

        def distinct(values: Sequence[Any]) -> Spelled:
            seen = dict.fromkeys(values)  # in the column's order: the first refusal is the column's first
            if any(type(value) is not str and value is not None for value in seen):
                return each(values)  # 1, 1.0 and True are one key, and convert differently
            spelled = {value: encode(value) for value in seen}
            return FIELDS, list(map(spelled.__getitem__, values))

        return distinct
    return each


def _plain_texts(values: Sequence[Any]) -> Sequence[str] | None:
    """The values as they are, if they are all text that the TEXT rule accepts and COPY takes
    unescaped (adapters.convert: no NUL, valid UTF-8; pg_copy.escape_text: no backslash, tab,
    newline or carriage return), else None. A character is in one of the values iff it is in
    their concatenation."""
    try:
        joined = "".join(values)  # TypeError: a value that is not text
        if not joined.isascii():
            joined.encode("utf-8")  # UnicodeEncodeError: a lone surrogate (invalid UTF-8 read leniently)
    except (TypeError, UnicodeEncodeError):
        return None
    if any(character in joined for character in pg_copy.ESCAPED):  # NUL: convert's text rule refuses it too
        return None
    return values


JSON_RUN = 256
"""Texts told canonical at once: a run's documents and spellings stay in the CPU's caches (a whole
page's, ten times the size, cost more per text than one at a time)."""


def _canonical_json_texts(values: Sequence[Any]) -> list[str]:
    """_json_field of each value (all text): a run of JSON_RUN at a time told canonical at once
    (convert.canonical_texts: then json_text gives each back as it is), any other run value by value."""
    fields: list[str] = []
    for start in range(0, len(values), JSON_RUN):
        run = values[start : start + JSON_RUN]
        if not canonical_texts(run):
            fields += map(_json_field, run)
        elif any(map(str.__contains__, run, itertools.repeat("\\"))):
            fields += [value.replace("\\", "\\\\") for value in run]
        else:
            fields += run
    return fields


NULL_IN_REQUIRED = "null_in_required_column"
"""A NULL where the schema says NOT NULL (a primary-key column included): SQLite enforces that
only if the file was made with the constraint, and a composite key may hold NULL regardless."""


def _refusing_null(encode: Callable[[Any], str]) -> Callable[[Any], str]:
    def required(raw: Any) -> str:
        if raw is None:
            raise Rejected(NULL_IN_REQUIRED)
        return encode(raw)

    return required


def _refusing_null_column(encode: Callable[[Sequence[Any]], Spelled]) -> Callable[[Sequence[Any]], Spelled]:
    def required(values: Sequence[Any]) -> Spelled:
        if None in values:
            raise Rejected(NULL_IN_REQUIRED)  # the batch goes row by row, which names each row
        return encode(values)

    return required


def _held(column: sa.Column, encode: Callable[[Any], str]) -> Callable[[Any], str]:
    """A NUMERIC(p,s) column's encoder also refuses a value p and s cannot hold (PostgreSQL would round it)."""
    if not isinstance(column.type, ExactNumeric) or column.type.precision is None:
        return encode
    precision, scale = column.type.precision, column.type.scale

    def held(raw: Any) -> str:
        if raw is not None:
            fits_numeric(to_postgres(Kind.NUMERIC, raw), precision, scale)
        return encode(raw)

    return held


def _held_column(column: sa.Column, encode: Callable[[Sequence[Any]], Spelled]) -> Callable[[Sequence[Any]], Spelled]:
    check = _held(column, lambda raw: "")
    if check is not None and isinstance(column.type, ExactNumeric) and column.type.precision is not None:

        def held(values: Sequence[Any]) -> list[str]:
            for raw in values:
                check(raw)
            return encode(values)

        return held
    return encode


LINE_RUN = 500
"""Lines spelled by one %-format: one call per run instead of per line, on values still in the CPU's caches."""


def _lines(columns: Sequence[Spelled]) -> str:
    """The COPY lines of columns' parts (column_encoder), each ended by a newline."""
    line = "\t".join([directive for directive, _ in columns]) + "\n"
    values = [column for _, column in columns]
    size = len(values[0])
    if size <= LINE_RUN:
        return (line * size) % tuple(itertools.chain.from_iterable(zip(*values)))
    return "".join([
        (line * len(run[0])) % tuple(itertools.chain.from_iterable(zip(*run)))
        for run in ([column[start : start + LINE_RUN] for column in values] for start in range(0, size, LINE_RUN))
    ])


@dataclasses.dataclass(frozen=True)
class Reject:
    """One value of one row that cannot go to PostgreSQL as it is."""

    key: Key
    column: str
    reason: str
    value: str | None
    detail: str | None = None


def shown_value(column: str, raw: Any, secret: bool = False) -> str | None:
    """A value as the quarantine stores it: readable, bounded, secrets fingerprinted (`secret`: the
    operator chose the column as one; a name that looks secret is one anyway)."""
    if raw is None:
        return None
    if secret or looks_secret(column):
        return fingerprint(raw)
    raw = redact_json(raw)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        text = "x'" + bytes(raw).hex().upper() + "'"
    elif isinstance(raw, float):
        text = repr(raw)
    elif isinstance(raw, str):
        text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        text = text.replace("\x00", "\\x00")
    else:
        text = str(raw)
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 1] + "\u2026"


def sqlite_order(key: Key) -> tuple:
    """A sort key that orders keys as SQLite orders their values: NULL, numbers (integers and reals
    by value), text, blobs. Legacy keys may mix them; Python alone cannot compare 1.5 with 'abc'."""
    return tuple(_storage_rank(value) for value in key)


def _storage_rank(value: Any) -> tuple:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, bytes(value))


@dataclasses.dataclass
class Converted:
    """A batch turned into a COPY payload; `rejects` lists every value that was refused."""

    payload: bytes
    staged: int
    staged_keys: list[Key]
    rejects: list[Reject]
    rejected_keys: set[Key]


class TableReader:
    """Keyset reads and conversion of one legacy table.

    `table` is the catalog's table (PostgreSQL's names: `name`, `columns`,
    `key_columns` name what the COPY writes); `sqlite_table` the same table as
    the file names it (default: `table`), which the reads use."""

    def __init__(self, table: sa.Table, sqlite_table: sa.Table | None = None):
        sqlite_table = table if sqlite_table is None else sqlite_table
        self.table = table
        self.name = table.name
        self.sqlite_name = sqlite_table.name
        self.columns = [c.name for c in table.columns]
        self.secrets = frozenset(c.name for c in table.columns if is_secret(c))
        self.kinds = [kind_of(c) for c in table.columns]
        self.key_columns = [c.name for c in table.primary_key.columns]
        self.key_index = [self.columns.index(c) for c in self.key_columns]
        self.rowid_keyed = sqlite_table.autoincrement_column is not None
        """Keyed by its INTEGER PRIMARY KEY, SQLite's rowid."""
        self._sqlite_keys = [c.name for c in sqlite_table.primary_key.columns]
        sqlite_columns = [c.name for c in sqlite_table.columns]
        self.sqlite_columns = dict(zip(self.columns, sqlite_columns))
        """Each column's name in the file, by its PostgreSQL name."""
        self._width = stored_width(zip(sqlite_columns, self.kinds))
        required = [not c.nullable for c in table.columns]
        self._unvouched = " OR ".join(
            f"NOT {vouched(kind, quote(name), required=needed, precision=getattr(c.type, 'precision', None), scale=getattr(c.type, 'scale', None))}"
            if isinstance(c.type, ExactNumeric) else f"NOT {vouched(kind, quote(name), required=needed)}"
            for c, name, kind, needed in zip(table.columns, sqlite_columns, self.kinds, required)
        ) or "0"
        self.encoders = [
            _refusing_null(_held(c, field_encoder(kind))) if needed else _held(c, field_encoder(kind))
            for c, kind, needed in zip(table.columns, self.kinds, required)
        ]
        self.column_encoders = [
            _refusing_null_column(_held_column(c, column_encoder(kind))) if needed
            else _held_column(c, column_encoder(kind))
            for c, kind, needed in zip(table.columns, self.kinds, required)
        ]
        quoted = ", ".join(quote(c) for c in sqlite_columns)
        self._keys_sql = ", ".join(quote(c) for c in self._sqlite_keys)
        self._row_value = (
            self._keys_sql if len(self._sqlite_keys) == 1 else f"({self._keys_sql})"
        )
        self._select = f"SELECT {quoted} FROM {quote(self.sqlite_name)}"
        self._placeholders = "?" if len(self._sqlite_keys) == 1 else f"({', '.join('?' * len(self._sqlite_keys))})"
        # a composite key may hold NULL (unless the file has NOT NULL): a row value with a NULL
        # compares as unknown, so the keyset walk takes only keys without one (null_keyed: the rest)
        self._keyed = None if sqlite_table.autoincrement_column is not None else " AND ".join(
            f"{quote(c)} IS NOT NULL" for c in self._sqlite_keys
        )

    # -- reading --------------------------------------------------------

    def key_of(self, row: Sequence[Any]) -> Key:
        return tuple(row[i] for i in self.key_index)

    def _where(self, condition: str | None) -> str:
        """A WHERE clause of `condition` and, for a composite key, its columns NOT NULL ('' for none)."""
        parts = [part for part in (condition, self._keyed) if part]
        return f" WHERE {' AND '.join(parts)}" if parts else ""

    def page(self, connection: sqlite3.Connection, after: Key | None, limit: int) -> list[tuple]:
        """The next `limit` rows after key `after` (None: from the start), in key order."""
        order = f" ORDER BY {self._keys_sql} LIMIT ?"
        if after is None:
            return _fetch(connection, self._select + self._where(None) + order, (limit,))
        return _fetch(
            connection, f"{self._select}{self._where(f'{self._row_value} > {self._placeholders}')}{order}",
            (*after, limit),
        )

    def suspects(self, connection: sqlite3.Connection, size: int, low: int | None = None,
                 high: int | None = None) -> Iterator[list[tuple]]:
        """The rows (keys without NULL, as the keyset walk reads them) holding a value that SQLite
        cannot vouch converts (adapters.vouch; `connection` must know its functions: vouch.register),
        in key order, `size` at a time: a superset of the rows `convert` rejects. With `low`
        and/or `high`, only the rows whose first key column is at least `low` and less than `high`
        (SQLite's order: any text or blob is more than every number). The table is scanned
        (NOT INDEXED) and its few matches sorted: an index walk would visit every row out of order."""
        first = quote(self._sqlite_keys[0])
        bounds = [f"{first} >= {int(low)}" if low is not None else "", f"{first} < {int(high)}" if high is not None else ""]
        where = self._where(" AND ".join([part for part in bounds if part] + [f"({self._unvouched})"]))
        cursor = connection.execute(f"{self._select} NOT INDEXED{where} ORDER BY {self._keys_sql}")
        while rows := cursor.fetchmany(size):
            yield rows

    def suspect_rejects(self, connection: sqlite3.Connection, size: int, low: int | None = None,
                        high: int | None = None) -> list[Converted]:
        """`suspects` converted, `size` rows at a time: what assess's census reads rejects from."""
        return [self.convert(rows) for rows in self.suspects(connection, size, low, high)]

    def first_key_range(self, connection: sqlite3.Connection) -> tuple[int, int] | None:
        """The least and greatest value of the first key column, if both are integers."""
        first, table = quote(self._sqlite_keys[0]), quote(self.sqlite_name)
        low, high = (  # one aggregate per query: then SQLite reads it off the key's index
            connection.execute(f"SELECT {end}({first}) FROM {table} WHERE {first} IS NOT NULL").fetchone()[0]
            for end in ("min", "max")
        )
        return (low, high) if type(low) is int and type(high) is int else None

    def fitting(self, connection: sqlite3.Connection, rows: int) -> int:
        """How many of the table's first `rows` rows a page holds (page_end: PAGE_BYTES, at least one):
        what a sample of wide rows (big blobs, texts) may read at once."""
        high, _full = self.page_end(connection, None, rows)
        if high is None:
            return rows
        where, params = self._range(None, high)
        return connection.execute(f"SELECT count(*) FROM {quote(self.sqlite_name)} WHERE {where}", params).fetchone()[0]

    def sample(self, connection: sqlite3.Connection, rows: int, parts: int = 4) -> list[tuple]:
        """About `rows` rows in key order from `parts` places spread over the table (where its first
        key column holds integers: evenly between their least and greatest), else its first rows."""
        first = quote(self._sqlite_keys[0])
        span = self.first_key_range(connection)
        if span is None or parts < 2:
            return self.page(connection, None, rows)
        low, high = span
        each = max(1, rows // parts)
        order = f" ORDER BY {self._keys_sql} LIMIT ?"
        found: list[tuple] = []
        for part in range(parts):
            start = low + (high - low) * part // parts
            found += _fetch(connection, f"{self._select}{self._where(f'{first} >= ?')}{order}", (start, each))
        return found

    def null_keyed(self, connection: sqlite3.Connection) -> list[tuple]:
        """The rows whose key holds a NULL (never in the keyset walk; PostgreSQL cannot hold them)."""
        if self._keyed is None:
            return []
        where = " OR ".join(f"{quote(c)} IS NULL" for c in self._sqlite_keys)
        return _fetch(connection, f"{self._select} WHERE {where}", ())

    def page_end(self, connection: sqlite3.Connection, after: Key | None, limit: int) -> tuple[Key | None, bool]:
        """The last key of the page after `after` (None: no key left), and whether the page is full
        (more keys follow): `limit` keys, or fewer where their rows hold more than PAGE_BYTES.

        A key-only walk of the primary key from a keyset seek: the OFFSET
        counts inside this one page (cost: the page), it never paginates.
        No row is read, so the page itself can be read elsewhere as the
        range (after, end]. Then the page's stored size is summed (`_width`);
        only a page over PAGE_BYTES is cut, where its running size reaches it.
        """
        high, full = self._key_page_end(connection, after, limit)
        if high is None or self._width is None:
            return high, full
        where, params = self._range(after, high)
        table = quote(self.sqlite_name)
        stored = connection.execute(f"SELECT total({self._width}) FROM {table} WHERE {where}", params).fetchone()[0]
        if stored <= PAGE_BYTES:
            return high, full
        cut = connection.execute(
            f"SELECT {self._keys_sql} FROM (SELECT {self._keys_sql}, sum({self._width}) OVER"
            f" (ORDER BY {self._keys_sql}) AS running FROM {table} WHERE {where})"
            f" WHERE running <= ? ORDER BY {', '.join(f'{quote(c)} DESC' for c in self._sqlite_keys)} LIMIT 1",
            (*params, PAGE_BYTES),
        ).fetchone() or connection.execute(  # the first row alone is over PAGE_BYTES: a page of one row
            f"SELECT {self._keys_sql} FROM {table} WHERE {where} ORDER BY {self._keys_sql} LIMIT 1", params
        ).fetchone()
        return tuple(cut), True

    def _key_page_end(self, connection: sqlite3.Connection, after: Key | None, limit: int) -> tuple[Key | None, bool]:
        where, params = (self._where(None), ()) if after is None else (
            self._where(f"{self._row_value} > {self._placeholders}"), tuple(after)
        )
        table = quote(self.sqlite_name)
        found = connection.execute(
            f"SELECT {self._keys_sql} FROM {table}{where} ORDER BY {self._keys_sql} LIMIT 1 OFFSET ?",
            (*params, limit - 1),
        ).fetchone()
        if found is not None:
            return tuple(found), True
        descending = ", ".join(f"{quote(c)} DESC" for c in self._sqlite_keys)
        found = connection.execute(
            f"SELECT {self._keys_sql} FROM {table}{where} ORDER BY {descending} LIMIT 1", params
        ).fetchone()
        return (None if found is None else tuple(found)), False

    def _range(self, low: Key | None, high: Key) -> tuple[str, tuple]:
        where = f"{self._row_value} <= {self._placeholders}"
        params: tuple = tuple(high)
        if low is not None:
            where = f"{self._row_value} > {self._placeholders} AND " + where
            params = (*low, *high)
        if self._keyed:  # (4, NULL) <= (5, 7) holds: the first column decides before the NULL is met
            where += f" AND {self._keyed}"
        return where, params

    def rows_between(self, connection: sqlite3.Connection, low: Key | None, high: Key) -> list[tuple]:
        """The rows with keys in (low, high], in key order."""
        where, params = self._range(low, high)
        return _fetch(connection, f"{self._select} WHERE {where} ORDER BY {self._keys_sql}", params)

    def key_list(self, connection: sqlite3.Connection, low: Key | None, high: Key) -> str | None:
        """The keys in (low, high] as one text, in key order: each key's values by SQLite's quote()
        joined by ',', the keys by ' ' (None for no key). Integers read as PostgreSQL's int8 text;
        any other value carries quotes or a point, so it never reads like one."""
        where, params = self._range(low, high)
        spelled = " || ',' || ".join(f"quote({quote(c)})" for c in self._sqlite_keys)
        return connection.execute(
            f"SELECT group_concat(k, ' ') FROM (SELECT {spelled} AS k FROM {quote(self.sqlite_name)}"
            f" WHERE {where} ORDER BY {self._keys_sql})",
            params,
        ).fetchone()[0]

    def keys_between(self, connection: sqlite3.Connection, low: Key | None, high: Key) -> set[Key]:
        """The keys in (low, high]."""
        where, params = self._range(low, high)
        cursor = connection.execute(
            f"SELECT {self._keys_sql} FROM {quote(self.sqlite_name)} WHERE {where}", params
        )
        return {tuple(row) for row in cursor}

    def rows_for(self, connection: sqlite3.Connection, keys: Sequence[Key]) -> list[tuple]:
        """The rows that exist for these keys, in key order (a key holding NULL matched with IS)."""
        rows: list[tuple] = []
        with_null = [key for key in keys if None in key]
        keys = [key for key in keys if None not in key]
        matched = " AND ".join(f"{quote(c)} IS ?" for c in self._sqlite_keys)
        for key in with_null:
            rows += connection.execute(f"{self._select} WHERE {matched}", tuple(key)).fetchall()
        for start in range(0, len(keys), 200):
            chunk = keys[start : start + 200]
            if len(self._sqlite_keys) == 1:
                marks = ", ".join("?" * len(chunk))
                params: list = [k[0] for k in chunk]
            else:
                marks = ", ".join(self._placeholders for _ in chunk)
                params = [v for k in chunk for v in k]
            rows += connection.execute(
                f"{self._select} WHERE {self._row_value} IN ({marks})", params
            ).fetchall()
        return sorted(rows, key=lambda row: sqlite_order(self.key_of(row)))

    def count(self, connection: sqlite3.Connection, after: Key | None = None) -> int:
        if after is None:
            return connection.execute(f"SELECT count(*) FROM {quote(self.sqlite_name)}").fetchone()[0]
        return connection.execute(
            f"SELECT count(*) FROM {quote(self.sqlite_name)}"
            f" WHERE {self._row_value} > {self._placeholders}",
            tuple(after),
        ).fetchone()[0]

    # -- conversion -----------------------------------------------------

    def rejections(self, row: Sequence[Any]) -> list[Reject]:
        """Every value of `row` that does not convert, with its reason."""
        key = self.key_of(row)
        found = []
        for name, encode, raw in zip(self.columns, self.encoders, row):
            try:
                encode(raw)
            except Rejected as error:
                found.append(Reject(key, name, error.reason, shown_value(name, raw, name in self.secrets)))
            except Exception as error:  # an encoding problem: quarantined, never fatal
                found.append(Reject(key, name, f"unencodable: {type(error).__name__}",
                                    shown_value(name, raw, name in self.secrets)))
        return found

    def convert(self, rows: Sequence[Sequence[Any]], *, with_keys: bool = False) -> Converted:
        """COPY lines of the rows that convert; the rest as rejects.

        Column by column first (each column through its column encoder, then
        the lines spelled by %-formats of the columns' directives: _lines):
        the batch of a clean table. A batch holding any value that does not
        convert goes row by row, so that each rejected value is named.
        """
        if rows:
            try:
                columns = [encode(values) for encode, values in zip(self.column_encoders, zip(*rows))]
            except Exception:  # named row by row below
                pass
            else:
                keys = [self.key_of(row) for row in rows] if with_keys else []
                return Converted(_lines(columns).encode("utf-8"), len(rows), keys, [], set())
        return self._convert_rows(rows, with_keys)

    def _convert_rows(self, rows: Sequence[Sequence[Any]], with_keys: bool) -> Converted:
        encoders = self.encoders
        lines: list[str] = []
        rejects: list[Reject] = []
        rejected_keys: set[Key] = set()
        staged_keys: list[Key] = []
        append = lines.append
        for row in rows:
            try:
                append("\t".join([encode(raw) for encode, raw in zip(encoders, row)]))
            except Exception:
                found = self.rejections(row) or [
                    Reject(self.key_of(row), "", "unencodable", None)
                ]
                rejects += found
                rejected_keys.add(found[0].key)
                continue
            if with_keys:
                staged_keys.append(self.key_of(row))
        payload = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        return Converted(payload, len(lines), staged_keys, rejects, rejected_keys)


def capture_mark(connection: sqlite3.Connection) -> int:
    """How many changes the capture triggers have recorded in the file so far.

    The outbox's AUTOINCREMENT counter: every write to an HRP table in phase
    dual_write or shadow adds an outbox row (a delete, a cascade's parent
    delete, an INSERT OR REPLACE's insert), and the counter never goes back
    when the applier removes rows. Equal marks mean no write reached the HRP
    tables in between.
    """
    try:
        found = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (OUTBOX,)).fetchone()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table in the file yet (no outbox: nothing captured)
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            raise
        return 0
    return 0 if found is None else found[0]


def readers(catalog: Catalog) -> dict[str, TableReader]:
    """A reader per table of the catalog (hrp_data.catalog), by the catalog's name."""
    return {name: TableReader(entry.postgres, entry.sqlite) for name, entry in catalog.tables.items()}
