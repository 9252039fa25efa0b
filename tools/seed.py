"""Seed: a legacy-schema SQLite file filled with realistic, deterministic HRP data.

`seed_database(path, races=N, seed=S)` creates `path` from the legacy DDL
(hrp_data/schema/legacy_schema.sql, never the models) and fills it with about

    users            max(1, N // 10)
    races            N                      (2023-01-01 .. 2026-12-31)
    horses           2 N
    race_horses      ~10 N                  (6..14 distinct runners per race)
    predictions      = race_horses          (one per runner)
    api_credentials  ~0.4 per user

Every value is spelled the way the legacy app writes it (timestamps
'YYYY-MM-DD HH:MM:SS', dates 'YYYY-MM-DD', booleans 0/1, JSON via json.dumps,
REAL columns as Python floats) and converts to PostgreSQL with
`adapters.convert.to_postgres` without a rejection.

Determinism: the only randomness is `random.Random(seed)` (one sub-stream per
table, drawn from it in a fixed order) and there is no wall clock: "now" is the
fixed snapshot instant `NOW`, so races before it are finished and races after
it are scheduled. The same seed gives identical table contents.

Speed: rows come from tight generators over precomputed pools and go in with
`executemany` in large batches inside one transaction, with journal_mode=OFF
and synchronous=OFF during the load and the legacy indexes built after the
data. The file is built beside the target under a temporary name, switched to
journal_mode=WAL (as the app runs it), fsynced and renamed into place, so a
crash never leaves a half-written database at `path`.

Memory: what the later tables need of the earlier ones (a race's day, going and
start, a horse's strength, weight and form) is kept in compact arrays, a few
dozen bytes a race, never as Python objects per row; horse names are checked for
uniqueness in a packed set (_NameSet). SQLite's page cache is capped, and the
indexes are built after the load with a small cache and temporary files, so
their sort works in bounded runs. Peak memory therefore grows little with the
number of races.
"""

from __future__ import annotations

import bisect
from array import array
import datetime as dt
import itertools
import json
import math
import os
import random
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["SeedError", "seed_database", "expected_counts", "TABLES", "NOW"]

TABLES = ("users", "races", "horses", "race_horses", "predictions", "api_credentials")
"""The legacy tables, parents before children (the order of the returned counts)."""


class SeedError(ValueError):
    """Bad input for the seed (existing file, too few races); the message is one line."""


# ---------------------------------------------------------------------------
# Time: a fixed calendar, no wall clock.
# ---------------------------------------------------------------------------

_ORIGIN = dt.date(2021, 1, 1)
"""Second 0 of every timestamp the seed writes."""
_LAST_DAY = dt.date(2027, 12, 31)
_FIRST_RACE_DAY = (dt.date(2023, 1, 1) - _ORIGIN).days
_RACE_SPAN_DAYS = (dt.date(2026, 12, 31) - dt.date(2023, 1, 1)).days + 1
NOW = dt.datetime(2026, 9, 30, 12, 0, 0)
"""The snapshot instant: races before this day are finished, later ones scheduled."""
_DAY_S = 86_400
_NOW_S = (NOW.date() - _ORIGIN).days * _DAY_S + 12 * 3600
_NOW_DAY = _NOW_S // _DAY_S
_USERS_FROM_S = (dt.date(2022, 6, 1) - _ORIGIN).days * _DAY_S
_CATALOGUE_END_S = (dt.date(2023, 1, 1) - _ORIGIN).days * _DAY_S

_DATES = [
    (_ORIGIN + dt.timedelta(days=d)).isoformat()
    for d in range((_LAST_DAY - _ORIGIN).days + 1)
]
_MONTHS = [(_ORIGIN + dt.timedelta(days=d)).month - 1 for d in range(len(_DATES))]
_CLOCK = [f" {h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]


def _stamp(second: int) -> str:
    """'YYYY-MM-DD HH:MM:SS' for a second counted from 2021-01-01 00:00:00."""
    return _DATES[second // _DAY_S] + _CLOCK[second % _DAY_S]


# ---------------------------------------------------------------------------
# Pools.
# ---------------------------------------------------------------------------

_FIRST_NAMES = """
Oisin Ryan Rachael Paul Jack Harry William Tom Oliver James Hollie Saffie Rossa Danny
Frankie Ryan Jamie Callum Luke Sean Colin Tadhg Hayley Josephine Megan Bryony Kevin
Richard Robbie Sam Adam Ben Charlie David Edward Finley George Henry Isaac Joe Kieran
Liam Mark Nathan Owen Patrick Rory Shane Tyler Alan Brian Conor Declan Eoin Fergal
Gavin Hugh Irene Jessica Kate Lorna Maria Niamh Olivia Philip Rebecca Sarah Tara Una
Victoria Wendy Aidan Barry Ciaran Darragh Emmet Fiachra Gearoid Jonjo Keith Lisa
Michael Noel Padraig Ruby Seamus Tony Brandon Chris Dylan Eric Flavien Gerardo Hector
Irad Javier Joel Jose Junior Kendrick Luis Manny Mike Nik Orlando Rafael Ricardo
Santiago Tyler Umberto Vincent Wesley Xavier Yuri Zoe Ana Beth Carla Dana Elena Fiona
Grace Hannah Isla Julia Kerry Laura Molly Nora Paula Quinn Rosa Sophie Tessa Vera
Amelia Billy Cathal Dara Eddie Freddie Gina Harvey Ivan Jordan Kit Leo Morgan Neil
""".split()

_SURNAMES = """
Murphy Walsh Townend Blackmore Moore Doyle Cobden Skelton Buick Dettori Kingscote
Crowley Hanagan Spencer Atzeni Marquand Fanning Keniry Hughes Fox Hayes Brennan
Kennedy Geraghty McCoy Johnson Twiston-Davies Bowen Scudamore Sheehan O'Brien Mullins
Elliott de Bromhead Henderson Nicholls Gosden Appleby Haggas Balding Varian Stoute
Hannon Johnston Fahey Dascombe Evans Easterby Ryan Channon Morrison Pipe Tizzard King
Lavelle Skelton Hobbs Greatrex Curtis Williams Jones Smith Brown Taylor Wilson Davies
Robinson Wright Thompson White Hall Green Wood Harris Martin Jackson Clarke Lewis
Roberts Walker Young Allen Mitchell Turner Carter Phillips Parker Edwards Collins
Stewart Morris Rogers Cook Morgan Bell Murray Kelly Ward Cox Richardson Gray Ross
Ortiz Rosario Prat Saez Velazquez Castellano Gaffalione Lanerie Geroux Alvarado
Santana Franco Smith Baffert Pletcher Brown Cox Asmussen Mott McPeek Casse Motion
Lukas Sadler Desormeaux Espinoza Gutierrez Hernandez Leparoux Rispoli Talamo Vazquez
Byrne Carroll Daly Dunne Farrell Flynn Gallagher Keane Lynch McCarthy Nolan Power
Quinlan Regan Ryan Sweeney Tobin Whelan Costello Cullen Foley Hogan Kearney Lacey
""".split()
_SURNAMES = list(dict.fromkeys(_SURNAMES))
_FIRST_NAMES = list(dict.fromkeys(_FIRST_NAMES))

# (track, country, codes, all-weather surface or None, relative weight)
_TRACKS = (
    ("Ascot", "GB", "FJ", None, 3), ("Cheltenham", "GB", "J", None, 3),
    ("Newmarket", "GB", "F", None, 4), ("Epsom Downs", "GB", "F", None, 2),
    ("York", "GB", "F", None, 3), ("Goodwood", "GB", "F", None, 3),
    ("Aintree", "GB", "J", None, 2), ("Doncaster", "GB", "FJ", None, 3),
    ("Sandown Park", "GB", "FJ", None, 3), ("Haydock Park", "GB", "FJ", None, 3),
    ("Kempton Park", "GB", "FJ", "polytrack", 5), ("Newbury", "GB", "FJ", None, 3),
    ("Chester", "GB", "F", None, 2), ("Lingfield Park", "GB", "FJ", "polytrack", 5),
    ("Wolverhampton", "GB", "F", "tapeta", 6), ("Southwell", "GB", "FJ", "tapeta", 5),
    ("Musselburgh", "GB", "FJ", None, 3), ("Ayr", "GB", "FJ", None, 3),
    ("Kelso", "GB", "J", None, 2), ("Wetherby", "GB", "FJ", None, 3),
    ("Chepstow", "GB", "FJ", None, 3), ("Exeter", "GB", "J", None, 2),
    ("Leopardstown", "IE", "FJ", None, 3), ("The Curragh", "IE", "F", None, 3),
    ("Punchestown", "IE", "J", None, 3), ("Fairyhouse", "IE", "FJ", None, 3),
    ("Galway", "IE", "FJ", None, 2), ("Naas", "IE", "FJ", None, 3),
    ("Dundalk", "IE", "F", "polytrack", 5), ("Navan", "IE", "FJ", None, 3),
    ("Churchill Downs", "US", "F", None, 4), ("Belmont Park", "US", "F", None, 3),
    ("Saratoga", "US", "F", None, 3), ("Santa Anita Park", "US", "F", None, 4),
    ("Keeneland", "US", "F", None, 2), ("Del Mar", "US", "F", None, 3),
    ("Gulfstream Park", "US", "F", None, 5), ("Aqueduct", "US", "F", None, 4),
    ("Pimlico", "US", "F", None, 2), ("Oaklawn Park", "US", "F", None, 3),
)

_SPONSORS = (
    "Sky Bet", "Betfred", "William Hill", "Coral", "Ladbrokes", "Paddy Power", "Racing TV",
    "At The Races", "Virgin Bet", "BetVictor", "BoyleSports", "Tote", "Unibet", "bet365",
    "Sporting Life", "Jenningsbet", "Pertemps Network", "Weatherbys", "Irish Stallion Farms",
    "British Stallion Studs", "EBF", "Close Brothers", "Bathwick Tyres", "Watch Racing Free",
)
_FLAT_KINDS = (
    "Handicap", "Handicap", "Handicap", "Maiden Stakes", "Novice Stakes", "Conditions Stakes",
    "Fillies' Handicap", "Nursery Handicap", "Classified Stakes", "Apprentice Handicap",
    "Median Auction Maiden Stakes", "Selling Stakes",
)
_HURDLE_KINDS = (
    "Handicap Hurdle", "Handicap Hurdle", "Novices' Hurdle", "Maiden Hurdle",
    "Juvenile Hurdle", "Mares' Novices' Hurdle", "Conditional Jockeys' Handicap Hurdle",
    "Selling Hurdle",
)
_CHASE_KINDS = (
    "Handicap Chase", "Handicap Chase", "Novices' Chase", "Beginners' Chase",
    "Hunters' Chase", "Novices' Handicap Chase", "Mares' Chase",
)
_BUMPER_KINDS = ("Standard Open NH Flat Race", "Mares' Standard Open NH Flat Race", "INH Flat Race")
_US_KINDS = (
    "Maiden Special Weight", "Maiden Claiming", "Claiming", "Claiming", "Allowance",
    "Allowance Optional Claiming", "Starter Allowance", "Starter Optional Claiming",
)
_STAKES_WORDS = (
    "Bourbon", "Juvenile", "Sprint", "Mile", "Derby Trial", "Oaks Trial", "Breeders'",
    "Founders", "Heritage", "Championship", "Classic", "Turf", "Distaff", "Autumn",
    "Spring", "Summer", "Governor's", "Mayor's", "Lakeside", "Riverside", "Valley", "Pegasus",
)
# furlongs per race type (flat in GB/IE, jumps, US)
_FURLONGS = {
    "flat": (5, 5, 5.5, 6, 6, 7, 7, 8, 8, 8.5, 9, 10, 10, 10.5, 11, 12, 12, 13, 14, 16, 18, 20),
    "hurdle": (16, 16, 16.5, 17, 19, 20, 20, 21, 22, 23, 24, 24, 25, 26),
    "chase": (16, 17, 19, 20, 20, 21, 24, 25, 26, 26, 28, 29, 30, 33, 36),
    "nh_flat": (13, 14, 16, 16, 17, 19, 20),
    "us": (4.5, 5, 5.5, 6, 6, 6.5, 7, 8, 8, 8.5, 8.5, 9, 10, 11, 12),
}
_FURLONG_M = 201.168
_YARD_M = 0.9144
_CLASS_PRIZE = {1: 60_000, 2: 25_000, 3: 12_000, 4: 7_000, 5: 4_500, 6: 3_400, 7: 2_900}
_MONTH_TEMP = {
    "GB": (5, 6, 8, 10, 13, 16, 18, 18, 15, 12, 8, 6),
    "IE": (6, 7, 8, 10, 12, 15, 17, 17, 14, 12, 9, 7),
    "US": (8, 10, 14, 18, 22, 26, 28, 28, 25, 19, 13, 9),
}
_WINDS = ("SW", "SW", "W", "W", "NW", "N", "NE", "E", "SE", "S", "WSW", "SSW")
_TURF_GOING = ("firm", "good to firm", "good", "good to soft", "soft", "heavy")
_US_TURF_GOING = ("firm", "good", "yielding", "soft")
_DIRT_GOING = ("fast", "good", "muddy", "sloppy")
_AW_GOING = ("standard", "standard", "standard", "standard to slow", "standard to fast")
_GOINGS = tuple(dict.fromkeys(
    ("unknown", "firm", *_TURF_GOING, *_US_TURF_GOING, *_DIRT_GOING, *_AW_GOING)))
"""Every going a race can have: a race keeps its going as an index into this tuple."""

_SYLLABLES = """
ka lo ri na ve mor dan tel sar quin bel cor del fen gar hol jas kel lan mir nel pen ros sil
tor vin wil zel ber cas dor fin gor hal jor kin lis mon per rin sol tam ven zor bra cla dra
flo gra lu mi si te vo ly den ar el is or ul al an av bo ca da fa ga ha ja ma pa ra sa ta
va za ce de ge le me ne re se thea rho xan cel dal mar tal val cal bar nar tar har lar var
""".split()
_ENDINGS = """
a ina ella ette on ar or us ix o ia ello ano ica ius ra wyn mere dale ton ley ford stone
wick by ra ine elle ando ero inho enzo ova ado ilo ana ette is an en
""".split()
_ADJECTIVES = """
Silver Golden Midnight Royal Dancing Flying Secret Wild Bold Lucky Noble Crimson Misty
Northern Southern Highland Desert Ocean Thunder Storm Smart Quiet Brave Proud Rapid Dark
Bright Little Big Grand Sweet Sharp Gentle Mighty Lonely Hidden Rising Morning Evening
Autumn Winter Summer Spring Velvet Copper Iron Scarlet Amber Ivory Emerald Sapphire Ruby
Clever Happy Restless Fearless Timeless Magic Mystic Ancient Celtic Atlantic Arctic
""".split()
_NOUNS = """
Dancer Legend Spirit Arrow Tempest Runner Prince Princess King Queen Warrior Dream Rocket
Echo Blaze Harbour Quest Whisper Glory Voyager Charm Rhythm Lad Lass Boy Girl Star Moon
Comet Falcon Eagle Hawk Raven Fox Wolf Lion Tiger River Valley Mountain Meadow Island
Harmony Melody Ballad Sonnet Poet Artist Dreamer Rebel Rogue Outlaw Ranger Pilot Captain
Admiral General Major Baron Duke Duchess Lady Knight Jester Wizard Oracle Phoenix Dragon
Thunderbolt Lightning Breeze Gale Cyclone Horizon Frontier Legacy Fortune Destiny Empire
""".split()
_PLACES = ("Bay", "Hill", "Lane", "Park", "Road", "Bridge", "Court", "Glen", "Ridge", "Point")
_TITLES = ("Mr", "Mister", "Lady", "Sir", "Captain", "Madam", "Count", "Miss", "Doctor")

_EMAIL_DOMAINS = (
    "gmail.com", "gmail.com", "gmail.com", "outlook.com", "hotmail.co.uk", "yahoo.co.uk",
    "yahoo.com", "icloud.com", "proton.me", "btinternet.com", "eircom.net", "aol.com",
)
_SALT_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SERVICES = (
    ("racing_api", "https://api.theracingapi.com/v1", True),
    ("betfair", "https://api.betfair.com/exchange/betting/rest/v1.0", True),
    ("odds_api", "https://api.the-odds-api.com/v4", False),
    ("weather_api", "https://api.openweathermap.org/data/3.0", False),
    ("timeform", "https://api.timeform.com/v2", True),
    ("racing_post", "https://api.racingpost.com/v1", True),
)
# (first day the version ran, version): the model in production on a given day
_ALGORITHMS = (
    (0, "v1.8.2"), (780, "v1.9.0"), (880, "v2.0.0"), (1000, "v2.0.3"), (1120, "v2.1.0"),
    (1250, "v2.2.1"), (1400, "v2.3.0"), (1460, "v2.3.1"), (1600, "v2.4.0"), (1900, "v2.5.0"),
)
_ALGORITHM_DAYS = [day for day, _ in _ALGORITHMS]


# ---------------------------------------------------------------------------
# The public entry point.
# ---------------------------------------------------------------------------


def expected_counts(races: int) -> dict[str, int]:
    """The fixed row counts for `races` (race_horses, predictions, api_credentials vary)."""
    return {"users": max(1, races // 10), "races": races, "horses": 2 * races}


def seed_database(
    path: str | os.PathLike[str],
    *,
    races: int,
    seed: int = 1,
    replace: bool = False,
    console: Any = None,
) -> dict[str, int]:
    """Create `path` as a legacy-schema SQLite file with `races` races of HRP data.

    Returns {table: rows written}, parents before children. Raises `SeedError`
    (one line) for races < 1, an existing file without `replace`, or a target
    that cannot be written. `console` is a rich Console for progress bars
    (None: silent).
    """
    if isinstance(races, bool) or not isinstance(races, int) or races < 1:
        raise SeedError(f"--races must be a whole number of at least 1, got {races!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SeedError(f"--seed must be a whole number, got {seed!r}")
    target = Path(path)
    _check_target(target, replace)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".seeding", dir=target.parent
        )
        os.close(handle)
    except OSError as error:
        raise SeedError(f"cannot write beside {target}: {error.strerror or error}") from None
    temp_path = Path(temporary)
    try:
        os.unlink(temp_path)  # sqlite3 creates it afresh with the legacy DDL
        with _progress(console) as progress:
            counts = _build(temp_path, races, seed, progress)
        _fsync(temp_path)
        _check_target(target, replace)  # a file may have appeared meanwhile
        for sidecar in ("-wal", "-shm", "-journal"):  # stale sidecars of a replaced file
            Path(f"{target}{sidecar}").unlink(missing_ok=True)
        os.replace(temp_path, target)
        _fsync_directory(target.parent)
    except OSError as error:
        raise SeedError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        for leftover in ("", "-wal", "-shm", "-journal"):
            Path(f"{temp_path}{leftover}").unlink(missing_ok=True)
    return counts


def _check_target(target: Path, replace: bool) -> None:
    if target.is_dir():
        raise SeedError(f"{target} is a directory; give a file path for --sqlite")
    if target.exists() and not replace:
        raise SeedError(f"{target} already exists; pass --force to replace it")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems do not fsync directories
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------
# Progress.
# ---------------------------------------------------------------------------


class _Silent:
    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def start_task(self, *args: Any, **kwargs: Any) -> None:
        pass

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def _progress(console: Any) -> Iterator[Any]:
    if console is None:
        yield _Silent()
        return
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as progress:
        yield progress


# ---------------------------------------------------------------------------
# Building the file.
# ---------------------------------------------------------------------------

_BATCH = 20_000
_INDEX_CACHE_KIB = 32_768
"""The page cache while the indexes are built, which is also each sorted run's size."""
_INDEX = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\b", re.IGNORECASE)


def _legacy_statements() -> tuple[list[str], list[str]]:
    """The legacy DDL split into (tables and pragmas, indexes), each in file order."""
    text = resources.files("hrp_data.schema").joinpath("legacy_schema.sql").read_text(encoding="utf-8")
    statements, pending = [], ""
    for line in text.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip():
        statements.append(pending)
    code = [re.sub(r"^(\s*--[^\n]*\n)+", "", s) for s in statements]
    head = [s for s, c in zip(statements, code) if not _INDEX.match(c)]
    tail = [s for s, c in zip(statements, code) if _INDEX.match(c)]
    return head, tail


def _build(path: Path, races: int, seed: int, progress: Any) -> dict[str, int]:
    head, indexes = _legacy_statements()
    master = random.Random(seed)
    rngs = {name: random.Random(master.getrandbits(64)) for name in TABLES}
    users = _Users(rngs["users"], max(1, races // 10))
    race_plan = _Races(rngs["races"], races)
    horse_plan = _Horses(rngs["horses"], 2 * races)
    runs = _Runs(rngs["race_horses"], race_plan, horse_plan, users)
    credentials = _Credentials(rngs["api_credentials"], users)

    totals = {
        "users": users.count, "races": races, "horses": 2 * races, "race_horses": runs.total,
        "predictions": runs.total, "api_credentials": credentials.count,
    }
    tasks = {table: progress.add_task(table, total=totals[table], start=False) for table in TABLES}
    counts = dict.fromkeys(TABLES, 0)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        # the sorter of CREATE INDEX keeps every entry in memory when temporary
        # storage is in memory; with files it sorts runs of at most the cache size
        connection.execute("PRAGMA temp_store=FILE")
        connection.executescript("".join(head))
        connection.execute("PRAGMA foreign_keys=OFF")  # checked by the tests, not row by row
        connection.execute("BEGIN")

        def load(table: str, sql: str, rows: Iterable[tuple]) -> None:
            progress.start_task(tasks[table])
            iterator = iter(rows)
            while True:
                cursor = connection.executemany(sql, itertools.islice(iterator, _BATCH))
                if cursor.rowcount <= 0:
                    break
                counts[table] += cursor.rowcount
                progress.advance(tasks[table], cursor.rowcount)

        load("users", _insert("users", users.COLUMNS), users.rows())
        load("races", _insert("races", race_plan.COLUMNS), race_plan.rows())
        load("horses", _insert("horses", horse_plan.COLUMNS), horse_plan.rows())
        run_sql = _insert("race_horses", runs.RUN_COLUMNS)
        prediction_sql = _insert("predictions", runs.PREDICTION_COLUMNS)
        progress.start_task(tasks["race_horses"])
        progress.start_task(tasks["predictions"])
        for run_rows, prediction_rows in runs.blocks(2_000):
            connection.executemany(run_sql, run_rows)
            connection.executemany(prediction_sql, prediction_rows)
            counts["race_horses"] += len(run_rows)
            counts["predictions"] += len(prediction_rows)
            progress.advance(tasks["race_horses"], len(run_rows))
            progress.advance(tasks["predictions"], len(prediction_rows))
        load("api_credentials", _insert("api_credentials", credentials.COLUMNS), credentials.rows())
        # the loaded pages are no longer needed: a small cache bounds the index sorter
        connection.execute(f"PRAGMA cache_size=-{_INDEX_CACHE_KIB}")
        for statement in indexes:
            connection.execute(statement)
        connection.execute("COMMIT")
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise SeedError(f"cannot switch {path} to WAL (journal_mode stayed {mode})")
    finally:
        connection.close()
    return counts


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# ---------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------


def _person_names(rng: random.Random, count: int, taken: set[str] | None = None) -> list[str]:
    taken = set() if taken is None else taken
    firsts, lasts = _FIRST_NAMES, _SURNAMES
    nf, nl = len(firsts), len(lasts)
    names: list[str] = []
    while len(names) < count:
        name = f"{firsts[int(rng.random() * nf)]} {lasts[int(rng.random() * nl)]}"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _sorted_array(typecode: str, values: Iterable[int], low: int, high: int) -> array:
    """The ints `values` (each low <= v < high), drawn in order, sorted into an array.

    A bucket sort: the values go into 1024 arrays by range and each is sorted
    on its own, so no list of all of them (an int object each) is ever built.
    """
    width = -(-(high - low) // 1024)
    buckets = [array(typecode) for _ in range(1024)]
    appenders = [bucket.append for bucket in buckets]
    for value in values:
        appenders[(value - low) // width](value)
    del appenders
    result = array(typecode)
    for number in range(1024):
        result.extend(sorted(buckets[number]))
        buckets[number] = array(typecode)  # freed as soon as it is copied
    return result


class _NameSet:
    """A set of up to `count` short ASCII names, about 20 bytes a name instead of ~100.

    The names lie end to end in one bytearray; an open-addressing table
    (linear probing, at most 3/4 full) holds each name's place as
    (offset + 1) << 5 | length, 0 for an empty slot. Only the table's layout
    depends on str hashing; membership is exact.
    """

    def __init__(self, count: int, longest: int = 31):
        if longest > 31:
            raise ValueError("names longer than 31 bytes do not fit a slot")
        size = 1 << max(4, (count + count // 3 + 1).bit_length())
        # 4-byte slots while every name's offset fits in 27 bits, else 8-byte ones
        self._table = array("I" if count * longest < 1 << 27 else "q", [0]) * size
        self._mask = size - 1
        self._names = bytearray()

    def _find(self, name: bytes, key: int) -> int:
        """The slot holding `name`, or the empty slot where it would go."""
        table, mask, names = self._table, self._mask, self._names
        length = len(name)
        slot = key & mask
        while True:
            entry = table[slot]
            if not entry:
                return slot
            if entry & 31 == length:
                start = (entry >> 5) - 1
                if names[start:start + length] == name:
                    return slot
            slot = (slot + 1) & mask

    def __contains__(self, name: str) -> bool:
        return bool(self._table[self._find(name.encode("ascii"), hash(name))])

    def add(self, name: str) -> None:
        encoded = name.encode("ascii")
        slot = self._find(encoded, hash(name))
        if not self._table[slot]:
            self._table[slot] = (len(self._names) + 1) << 5 | len(encoded)
            self._names += encoded


def _zipf_cumulative(count: int, offset: float, power: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (i + offset) ** power for i in range(count)))


class _Users:
    COLUMNS = ("id", "username", "email", "password_hash", "is_admin", "created_at", "last_login")

    def __init__(self, rng: random.Random, count: int):
        self.rng = rng
        self.count = count
        span = _NOW_S - _USERS_FROM_S
        later = _sorted_array("i", (_USERS_FROM_S + int(rng.random() * span)
                                    for _ in range(count - 1)), _USERS_FROM_S, _NOW_S)
        self.created = array("i", [_USERS_FROM_S]) + later  # user 1, the admin, came first
        # how much each user predicts: a few heavy users, a long tail of occasional ones
        activity = (rng.paretovariate(1.3) for _ in range(count))
        self.activity = array("d", itertools.accumulate(activity))

    def pick(self, rnd: Callable[[], float], second: int) -> int:
        """A user id that existed at `second`, heavy users more often."""
        known = max(1, bisect.bisect_right(self.created, second))
        activity = self.activity
        return min(known, bisect.bisect_right(activity, rnd() * activity[known - 1]) + 1)

    def rows(self) -> Iterator[tuple]:
        rng = self.rng
        rnd = rng.random
        getrandbits = rng.getrandbits
        alphabet = _SALT_ALPHABET
        firsts, lasts, domains = _FIRST_NAMES, _SURNAMES, _EMAIL_DOMAINS
        taken = {"admin"}
        for index, created in enumerate(self.created):
            user_id = index + 1
            if user_id == 1:
                username, email, is_admin = "admin", "admin@hrp.example.com", 1
            else:
                first = firsts[int(rnd() * len(firsts))].lower()
                last = re.sub(r"[^a-z]", "", lasts[int(rnd() * len(lasts))].lower())
                style = rnd()
                if style < 0.35:
                    username = f"{first}.{last}"
                elif style < 0.65:
                    username = f"{first[0]}{last}{int(rnd() * 100)}"
                elif style < 0.85:
                    username = f"{first}_{last[:4]}{1960 + int(rnd() * 45)}"
                else:
                    username = f"{last}{first[:2]}{int(rnd() * 1000)}"
                while username in taken:
                    username = f"{username}{int(rnd() * 10)}"
                email = f"{username}@{domains[int(rnd() * len(domains))]}"
                is_admin = 1 if rnd() < 0.01 else 0
            taken.add(username)
            salt = "".join(alphabet[int(rnd() * 62)] for _ in range(16))
            if rnd() < 0.8:
                password_hash = f"scrypt:32768:8:1${salt}${getrandbits(512):0128x}"
            else:
                password_hash = f"pbkdf2:sha256:600000${salt}${getrandbits(256):064x}"
            if rnd() < 0.12 and user_id != 1:
                last_login = None
            else:
                last_login = _stamp(created + int(rnd() * (_NOW_S - created)))
            yield (user_id, username, email, password_hash, is_admin, _stamp(created), last_login)


class _Races:
    COLUMNS = (
        "id", "race_name", "race_date", "track_name", "race_type", "distance", "surface",
        "prize_money", "weather_conditions", "status", "created_at", "updated_at",
    )

    def __init__(self, rng: random.Random, count: int):
        self.rng = rng
        self.count = count
        rnd = rng.random
        self.day = _sorted_array(
            "H", (_FIRST_RACE_DAY + int(rnd() * _RACE_SPAN_DAYS) for _ in range(count)),
            _FIRST_RACE_DAY, _FIRST_RACE_DAY + _RACE_SPAN_DAYS)
        self.field = bytearray(6 + int(rnd() * 9) for _ in range(count))  # 6..14 runners, mean 10
        # filled by rows(): what the runners and predictions need, one compact array each
        self.status = bytearray(count)  # 0 scheduled, 1 finished, 2 cancelled, 3 running
        self.jumps = bytearray(count)
        self.distance = array("i", bytes(4 * count))  # decimetres: round(metres, 1) * 10
        self.going = bytearray(count)  # an index into _GOINGS
        self.created = array("i", bytes(4 * count))

    def rows(self) -> Iterator[tuple]:
        rng = self.rng
        rnd, gauss, choice = rng.random, rng.gauss, rng.choice
        stamp, dates, months = _stamp, _DATES, _MONTHS
        dumps = json.dumps
        tracks = _TRACKS
        track_cumulative = list(itertools.accumulate(t[4] for t in tracks))
        track_total = track_cumulative[-1]
        sponsors, winds = _SPONSORS, _WINDS
        status_names = ("scheduled", "finished", "cancelled", "running")
        going_code = {going: code for code, going in enumerate(_GOINGS)}
        kinds_of = {"flat": _FLAT_KINDS, "hurdle": _HURDLE_KINDS, "chase": _CHASE_KINDS,
                    "nh_flat": _BUMPER_KINDS}
        for index in range(self.count):
            day = self.day[index]
            track, country, codes, all_weather, _ = tracks[
                bisect.bisect_right(track_cumulative, rnd() * track_total)
            ]
            month = months[day]
            winter = month in (10, 11, 0, 1, 2, 3)
            # race type and surface
            if country == "US":
                race_type = "flat"
                surface = "turf" if rnd() < 0.3 else "dirt"
                furlongs = choice(_FURLONGS["us"])
            else:
                jumps = "J" in codes and ("F" not in codes or rnd() < (0.7 if winter else 0.25))
                if jumps:
                    kind_roll = rnd()
                    race_type = "hurdle" if kind_roll < 0.5 else "chase" if kind_roll < 0.88 else "nh_flat"
                    surface = "turf"
                else:
                    race_type = "flat"
                    surface = all_weather if all_weather and (winter or rnd() < 0.5) else "turf"
                furlongs = choice(_FURLONGS[race_type])
            yards = 0 if rnd() < 0.55 else 10 * (1 + int(rnd() * 21))
            distance = round(furlongs * _FURLONG_M + yards * _YARD_M, 1)
            # name, class and prize
            if country == "US":
                grade_roll = rnd()
                if grade_roll < 0.06:
                    grade = "G1" if grade_roll < 0.01 else "G2" if grade_roll < 0.03 else "G3"
                    race_name = f"{choice(_STAKES_WORDS)} Stakes ({grade})"
                    prize = {"G1": 750_000, "G2": 250_000, "G3": 125_000}[grade]
                elif grade_roll < 0.12:
                    race_name = f"{choice(_STAKES_WORDS)} Stakes"
                    prize = 85_000
                else:
                    race_name = choice(_US_KINDS)
                    prize = 22_000 + 60_000 * rnd() * rnd()
            else:
                kinds = kinds_of[race_type]
                race_class = 1 + min(6, int(abs(gauss(0, 1)) * 3.2 + rnd() * 1.5))
                if race_type != "flat":
                    race_class = min(race_class, 5)
                sponsor = choice(sponsors)
                if race_class == 1 and rnd() < 0.45:
                    level = int(rnd() * 3) + 1
                    label = f"Group {level}" if race_type == "flat" else f"Grade {level}"
                    stakes = "Stakes" if race_type == "flat" else "Hurdle" if race_type == "hurdle" else "Chase"
                    race_name = f"{sponsor} {choice(_SURNAMES)} {stakes} ({label})"
                    prize = {1: 400_000, 2: 150_000, 3: 80_000}[level]
                elif race_class == 1:
                    race_name = f"{sponsor} {choice(kinds)} (Listed)"
                    prize = 45_000
                else:
                    race_name = f"{sponsor} {choice(kinds)} (Class {race_class})"
                    prize = _CLASS_PRIZE[race_class]
            prize_money = round(prize * (0.8 + 0.45 * rnd()), 2)
            # weather and going
            status = 1 if day < _NOW_DAY else 3 if day == _NOW_DAY else 0
            if status == 1 and rnd() < 0.015:
                status = 2
            if status == 0 and day - _NOW_DAY > 10:
                weather = None  # too far ahead for a forecast
                going = "unknown"
            else:
                temp = round(_MONTH_TEMP[country][month] + gauss(0, 3.2), 1)
                precip = 0.0 if rnd() < 0.6 else round(-math.log(1.0 - rnd()) * 3.0, 1)
                wetness = precip + rnd() * (4.0 if winter else 1.5)
                if surface in ("polytrack", "tapeta", "fibresand"):
                    going = _AW_GOING[int(rnd() * 5)]
                elif surface == "dirt":
                    going = _DIRT_GOING[min(3, int(wetness / 2.5))]
                elif country == "US":
                    going = _US_TURF_GOING[min(3, int(wetness / 2.0))]
                else:
                    base = 2 if winter else 1  # good in winter, good to firm in summer
                    going = _TURF_GOING[min(5, base + int(wetness / 2.2))]
                    if not winter and wetness < 0.3 and rnd() < 0.15:
                        going = "firm"
                weather = dumps({
                    "temp_c": temp,
                    "wind": winds[int(rnd() * len(winds))],
                    "wind_kph": round(abs(gauss(16.0, 8.0)), 1),
                    "precip_mm": precip,
                    "humidity": 45 + int(rnd() * 53),
                    "going": going,
                })
            lead = (5 + int(rnd() * 40)) * _DAY_S + int(rnd() * _DAY_S)
            race_start = day * _DAY_S + 12 * 3600 + int(rnd() * 9) * 1800 + 600
            created = min(race_start - lead, _NOW_S - int(rnd() * 5 * _DAY_S))
            if status in (1, 2):
                updated = race_start + 300 + int(rnd() * 3600)
            elif status == 3:
                updated = min(_NOW_S, race_start)
            else:
                updated = created + int(rnd() * (_NOW_S - created))
            self.status[index] = status
            self.jumps[index] = race_type in ("hurdle", "chase")
            self.distance[index] = round(distance * 10)
            self.going[index] = going_code[going]
            self.created[index] = created
            yield (
                index + 1, race_name, dates[day], track, race_type, distance, surface,
                prize_money, weather, status_names[status], stamp(created), stamp(updated),
            )


def _horse_name(rnd: Callable[[], float]) -> str:
    syllables, endings = _SYLLABLES, _ENDINGS
    ns, ne = len(syllables), len(endings)

    def word() -> str:
        parts = syllables[int(rnd() * ns)]
        if rnd() < 0.45:
            parts += syllables[int(rnd() * ns)]
        return (parts + endings[int(rnd() * ne)]).capitalize()

    style = rnd()
    if style < 0.30:
        return word()
    if style < 0.45:
        return f"{_ADJECTIVES[int(rnd() * len(_ADJECTIVES))]} {word()}"
    if style < 0.60:
        return f"{word()} {_NOUNS[int(rnd() * len(_NOUNS))]}"
    if style < 0.72:
        return f"{_ADJECTIVES[int(rnd() * len(_ADJECTIVES))]} {_NOUNS[int(rnd() * len(_NOUNS))]}"
    if style < 0.82:
        return f"{word()}'s {_NOUNS[int(rnd() * len(_NOUNS))]}"
    if style < 0.91:
        return f"{word()} {_PLACES[int(rnd() * len(_PLACES))]}"
    return f"{_TITLES[int(rnd() * len(_TITLES))]} {word()}"


_NO_FORM = 0xFFFF
"""A horse's kept form average when it has no form (its runners' features say null)."""


class _Horses:
    COLUMNS = (
        "id", "horse_name", "age", "weight", "jockey", "trainer", "owner", "form",
        "created_at", "updated_at",
    )

    def __init__(self, rng: random.Random, count: int):
        self.rng = rng
        self.count = count
        rnd = rng.random
        gauss = rng.gauss
        self.strength = array("d", (gauss(0.0, 1.0) for _ in range(count)))
        catalogue = int(count * 0.6)  # imported before the first race, the rest arrive later
        self.created = _sorted_array("i", itertools.chain(
            (int(rnd() * _CATALOGUE_END_S) for _ in range(catalogue)),
            (_CATALOGUE_END_S + int(rnd() * (_NOW_S - _CATALOGUE_END_S))
             for _ in range(count - catalogue)),
        ), 0, _NOW_S)
        taken: set[str] = set()
        self.jockeys = _person_names(rng, 300, taken)
        self.trainers = _person_names(rng, 420, taken)
        people = _person_names(rng, 2_400, taken)
        syndicates = []
        for surname in _SURNAMES:
            syndicates += [f"{surname} Racing", f"{surname} Bloodstock Ltd",
                           f"The {surname} Partnership"]
        syndicates += [f"The {noun} Syndicate" for noun in _NOUNS]
        syndicates += ["Godolphin", "Coolmore Partners", "JP McManus", "Gigginstown House Stud",
                       "Juddmonte", "Shadwell Estate", "Cheveley Park Stud", "Qatar Racing",
                       "Ballymore Properties", "Simon Munir & Isaac Souede"]
        self.owners = people + syndicates
        self.jockey_rate = [round(max(0.02, 0.24 - 0.0006 * i + gauss(0, 0.02)), 3)
                            for i in range(len(self.jockeys))]
        self.trainer_rate = [round(max(0.02, 0.22 - 0.0004 * i + gauss(0, 0.02)), 3)
                             for i in range(len(self.trainers))]
        # filled by rows(): what the runners' predictions need, one compact array each
        self.age = bytearray(count)
        # a value rounded to n decimals is kept as the whole number value * 10**n: the
        # correctly rounded k / 10**n gives back that very float (both are the double
        # nearest the decimal k / 10**n)
        self.weight = array("i", bytes(4 * count))  # round(kg, 1) * 10
        self.jockey = array("H", bytes(2 * count))
        self.trainer = array("H", bytes(2 * count))
        self.form_avg = array("H", bytes(2 * count))  # round(avg, 2) * 100; _NO_FORM: none

    def rows(self) -> Iterator[tuple]:
        rng = self.rng
        rnd, gauss = rng.random, rng.gauss
        stamp = _stamp
        strength, created = self.strength, self.created
        ages, weights, jockey_of, trainer_of, form_avg = (
            self.age, self.weight, self.jockey, self.trainer, self.form_avg)
        jockeys, trainers, owners = self.jockeys, self.trainers, self.owners
        jockey_cumulative = _zipf_cumulative(len(jockeys), 15.0)
        trainer_cumulative = _zipf_cumulative(len(trainers), 20.0)
        owner_cumulative = _zipf_cumulative(len(owners), 50.0)
        jt, tt, ot = jockey_cumulative[-1], trainer_cumulative[-1], owner_cumulative[-1]
        search = bisect.bisect_right
        age_table = (2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 8, 8, 9, 10, 11, 12)
        n_ages = len(age_table)
        finish_marks = "1234567890"
        names = _NameSet(self.count, longest=18)
        for index in range(self.count):
            name = _horse_name(rnd)
            while len(name) > 18 or name in names:  # both pure: the old order's outcome
                name = _horse_name(rnd)
            names.add(name)
            age = age_table[int(rnd() * n_ages)]
            weight = round(gauss(495.0, 32.0), 1)
            jockey = search(jockey_cumulative, rnd() * jt)
            trainer = search(trainer_cumulative, rnd() * tt)
            owner = search(owner_cumulative, rnd() * ot)
            skill = strength[index]
            runs = min(6, int(rnd() * (age + 1)))
            if runs == 0:
                form, average = None, None
            else:
                places = []
                for _ in range(runs):
                    place = int(abs(gauss(3.6 - 1.4 * skill, 2.4))) + 1
                    places.append(min(place, 10))
                form = "-".join(finish_marks[p - 1] for p in places)
                if age >= 4 and rnd() < 0.06:
                    form += "-" + ("P" if rnd() < 0.5 else "F" if rnd() < 0.5 else "U")
                average = round(sum(places) / runs, 2)
            born = created[index]
            updated = born + int(rnd() * (_NOW_S - born))
            ages[index] = age
            weights[index] = round(weight * 10)
            form_avg[index] = _NO_FORM if average is None else round(average * 100)
            jockey_of[index], trainer_of[index] = jockey, trainer
            yield (
                index + 1, name, age, weight, jockeys[jockey], trainers[trainer], owners[owner],
                form, stamp(born), stamp(updated),
            )


class _Runs:
    """race_horses and predictions: one prediction per runner, both from the same draw."""

    RUN_COLUMNS = ("race_id", "horse_id", "post_position", "odds", "finish_position")
    PREDICTION_COLUMNS = (
        "race_id", "horse_id", "user_id", "prediction_value", "confidence",
        "algorithm_version", "features", "created_at",
    )

    def __init__(self, rng: random.Random, races: _Races, horses: _Horses, users: _Users):
        self.rng = rng
        self.races = races
        self.horses = horses
        self.users = users
        self.field = bytearray(min(size, horses.count) for size in races.field)
        self.total = sum(self.field)

    def blocks(self, size: int) -> Iterator[tuple[list[tuple], list[tuple]]]:
        """Lists of race_horses rows and prediction rows for `size` races at a time."""
        rng = self.rng
        rnd, gauss = rng.random, rng.gauss
        exp = math.exp
        dumps = json.dumps
        stamp = _stamp
        search = bisect.bisect_right
        races, horses, users = self.races, self.horses, self.users
        field = self.field
        days, statuses, jumps, distances, goings, race_created = (
            races.day, races.status, races.jumps, races.distance, races.going, races.created)
        strength, ages, weights, form_avg = horses.strength, horses.age, horses.weight, horses.form_avg
        jockey_of, trainer_of = horses.jockey, horses.trainer
        jockey_rate, trainer_rate = horses.jockey_rate, horses.trainer_rate
        horse_created = horses.created
        horse_count = horses.count
        algorithm_days, algorithms = _ALGORITHM_DAYS, _ALGORITHMS
        going_names = _GOINGS
        pick_user = users.pick
        run_rows: list[tuple] = []
        prediction_rows: list[tuple] = []
        for index in range(races.count):
            race_id = index + 1
            k = field[index]
            day = days[index]
            status = statuses[index]
            opened = race_created[index]
            # runners: distinct horses already in the catalogue when the race was declared
            pool = min(horse_count, max(k, search(horse_created, opened)))
            chosen: list[int] = []
            while len(chosen) < k:
                horse = int(rnd() * pool)
                if horse not in chosen:
                    chosen.append(horse)
            # the market: odds from strength plus noise, with a bookmaker's overround
            market = [exp(0.95 * (strength[h] + gauss(0.0, 0.45))) for h in chosen]
            total = sum(market) * 1.17
            odds = [min(501.0, max(1.01, round(total / m, 2))) for m in market]
            # the result
            if status == 1:
                performance = [strength[h] + gauss(0.0, 1.0) for h in chosen]
                order = sorted(range(k), key=performance.__getitem__, reverse=True)
                finish = [0] * k
                for place, runner in enumerate(order, 1):
                    finish[runner] = place
                if jumps[index]:
                    for runner in range(k):
                        if rnd() < 0.07:
                            finish[runner] = None  # fell, unseated or pulled up
            else:
                finish = [None] * k
            # the model's view, made by one user shortly before the race
            model = [exp(1.05 * (strength[h] + gauss(0.0, 0.6))) for h in chosen]
            model_total = sum(model)
            asked = min(day * _DAY_S + 11 * 3600 - int(rnd() * 3 * _DAY_S),
                        _NOW_S - int(rnd() * 6 * 3600))
            asked = max(asked, opened)
            user_id = pick_user(rnd, asked)
            version = algorithms[search(algorithm_days, asked // _DAY_S) - 1][1]
            created_at = stamp(asked)
            distance, going = distances[index] / 10, going_names[goings[index]]
            for position in range(k):
                horse = chosen[position]
                horse_id = horse + 1
                price = odds[position]
                run_rows.append((race_id, horse_id, position + 1, price, finish[position]))
                probability = round(model[position] / model_total, 4)
                confidence = round(min(1.0, max(0.0, 0.42 + 0.9 * probability + gauss(0.0, 0.1))), 3)
                jockey, trainer = jockey_of[horse], trainer_of[horse]
                average = form_avg[horse]
                features = dumps({
                    "odds": price,
                    "implied_prob": round(1.0 / price, 4),
                    "form_avg": None if average == _NO_FORM else average / 100,
                    "age": ages[horse],
                    "weight_kg": weights[horse] / 10,
                    "post_position": position + 1,
                    "field_size": k,
                    "distance_m": distance,
                    "going": going,
                    "jockey_win_rate": jockey_rate[jockey],
                    "trainer_win_rate": trainer_rate[trainer],
                    "days_since_last_run": 7 + int(rnd() * 90),
                })
                prediction_rows.append((
                    race_id, horse_id, user_id, probability, confidence, version, features,
                    created_at,
                ))
            if race_id % size == 0 or race_id == races.count:
                yield run_rows, prediction_rows
                run_rows, prediction_rows = [], []


class _Credentials:
    COLUMNS = ("id", "user_id", "service_name", "api_key", "api_secret", "endpoint_url",
               "is_active", "created_at")

    def __init__(self, rng: random.Random, users: _Users):
        self.rng = rng
        self.users = users
        rnd = rng.random
        self.owners = array("i")
        for user_id in range(1, users.count + 1):
            if user_id == 1 or rnd() < 0.3:
                self.owners.append(user_id)
                if rnd() < 0.3:
                    self.owners.append(user_id)
        self.count = len(self.owners)

    def rows(self) -> Iterator[tuple]:
        rng = self.rng
        rnd, getrandbits = rng.random, rng.getrandbits
        services = _SERVICES
        created_of = self.users.created
        for index, user_id in enumerate(self.owners):
            service, endpoint, has_secret = services[int(rnd() * len(services))]
            since = created_of[user_id - 1]
            created = since + int(rnd() * (_NOW_S - since))
            yield (
                index + 1, user_id, service, f"{getrandbits(128):032x}",
                f"{getrandbits(256):064x}" if has_secret else None,
                endpoint if rnd() < 0.9 else None,
                0 if rnd() < 0.15 else 1,
                _stamp(created),
            )
