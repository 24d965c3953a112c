"""The review database: a SQLite file (one station, the default) or a PostgreSQL server (a hub), one schema.

``--db`` takes a file path (SQLite) or a ``postgresql://user@host:port/dbname`` URL. A URL that carries a
password is refused: a command line is readable by every user of the machine and kept in shell history.
libpq finds the password in ``PGPASSWORD``, ``~/.pgpass`` or the file ``PGPASSFILE`` names.

SQLite: WAL lets inspectors read the queue while a decision is being written; ``synchronous=FULL`` makes
every COMMIT reach the disk before it returns, so a decision the server acknowledged survives a killed
process (and a power cut). Each request opens its own connection (cheap); writers use ``BEGIN IMMEDIATE``
so two writers never deadlock half-way.

PostgreSQL: connections come from a per-process pool (``check`` on checkout, so a restarted server is
reconnected to without restarting the app); ``synchronous_commit=on`` is set on every connection and a
server running with ``fsync=off`` is refused, so an acknowledged decision is on disk. Every write
transaction first takes one transaction-scoped advisory lock: writers are serialised exactly as SQLite's
``BEGIN IMMEDIATE`` serialises them, so every rule the store proves on SQLite (one current decision per
inspector, undo pops one's own last decision, login failures counted before the password check) holds
unchanged. A decision holds the lock for a few milliseconds. The connection speaks the ``sqlite3`` API the
review code is written against (``execute(sql, params)``, ``?`` and ``:name`` placeholders, rows by name
and index, ``lastrowid``, ``rowcount``, ``INSERT OR IGNORE``): one portable SQL text for both back ends.

Schema: one Alembic history for both back ends (``migrations``). SQLite files are upgraded in place when
opened (a pre-Alembic ``user_version`` = 1 file is checked and stamped with the baseline). On PostgreSQL
the owner runs ``parcelscan review migrate --db URL --app-role ROLE`` once per upgrade; the review
commands connect as the application role, which may not UPDATE, DELETE or TRUNCATE the audit trail or
the decisions (checked when the first connection is made: the owner's role is refused). The audit and
decision tables are append-only, enforced by triggers in the database itself on both back ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlalchemy.pool import NullPool

from parcelscan.errors import ParcelscanError
from parcelscan.inference.review import migrations
from parcelscan.inference.review.migrations import guards, legacy
from parcelscan.inference.verdict import utc_now  # the one clock format (verdicts, review trail)

BUSY_TIMEOUT_S = 30.0
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
POOL_MAX_SIZE = 20  # connections per app process (PostgreSQL's default max_connections is 100)
POOL_TIMEOUT_S = 10.0  # how long a request waits for a connection before it fails (server down, pool full)
# One advisory lock key for all review writes ("parcelscan" in ASCII, as a bigint): see the module docstring.
WRITE_LOCK_KEY = 0x70617263656C
MIGRATE_LOCK_KEY = WRITE_LOCK_KEY + 1
# Tables whose INSERTs report ``lastrowid`` (integer identity key named id).
ID_TABLES = frozenset({"users", "login_failures", "items", "decisions", "audit", "tip_rates", "tip_projections"})
APP_PRIVILEGES = {  # what the application role may do, table by table; nothing else (no TRUNCATE anywhere)
    "users": "SELECT, INSERT, UPDATE",
    "sessions": "SELECT, INSERT, DELETE",
    "login_failures": "SELECT, INSERT, DELETE",
    "items": "SELECT, INSERT",
    "decisions": "SELECT, INSERT",
    "current_decisions": "SELECT, INSERT, UPDATE, DELETE",
    "audit": "SELECT, INSERT",
    "roles": "SELECT, INSERT, DELETE",
    "tip_rates": "SELECT, INSERT",
    "tip_projections": "SELECT, INSERT",
    "marks": "SELECT, INSERT",
    "alembic_version": "SELECT",
}
# sqlite3's and psycopg's errors: what a command line turns into a one-line message
DATABASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.DatabaseError, psycopg.Error, PoolTimeout)


class DatabaseUnavailable(Exception):
    """The PostgreSQL server cannot be reached now (down, restarting, pool exhausted): retry later.

    Deliberately not a ``ParcelscanError`` (which the app answers with 400: the request is wrong)."""


# --- targets ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the review database is: a SQLite file or a PostgreSQL URL (never with a password in it)."""

    kind: str  # "sqlite" or "postgresql"
    path: Path | None = None
    url: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.kind == "sqlite" else str(self.url)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = "&".join(f"{k}=***" if k == "password" else f"{k}={v}" for k, v in parse_qsl(parts.query))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_target(target: str | Path | Target) -> Target:
    """A path → SQLite; ``postgresql://`` (or ``postgres://``) → PostgreSQL; refuses a URL with a password."""
    if isinstance(target, Target):
        return target
    text = str(target)
    if "://" not in text:
        return Target("sqlite", path=Path(text))
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return Target("sqlite", path=Path(text.split("://", 1)[1].removeprefix("/")))
    if scheme not in POSTGRES_SCHEMES:
        raise ParcelscanError(f"unsupported database URL scheme {scheme!r}: give a SQLite file path or a "
                              "postgresql://user@host:port/dbname URL")
    parts = urlsplit(text)
    if parts.password is not None or any(k == "password" for k, _ in parse_qsl(parts.query)):
        raise ParcelscanError(
            f"refusing the database URL {_redact(text)}: it carries a password, and a command line is readable "
            "by every user of this machine (ps, /proc/PID/cmdline) and kept in shell history. Leave the "
            "password out of the URL and give it in the environment (PGPASSWORD) or in a ~/.pgpass file "
            "(or the file PGPASSFILE names, mode 0600)")
    if not parts.path.strip("/"):
        raise ParcelscanError(f"the database URL {text} names no database: postgresql://user@host:port/dbname")
    return Target("postgresql", url=urlunsplit(("postgresql", *parts[1:])))


def resolve_target(target: str | Path | Target) -> Path | str:
    """What the app keeps as its database setting: an absolute file path, or the URL unchanged."""
    parsed = parse_target(target)
    return parsed.path.resolve() if parsed.kind == "sqlite" else str(parsed.url)


def is_postgres(target: str | Path | Target) -> bool:
    return parse_target(target).kind == "postgresql"


# --- connections -----------------------------------------------------------------------------------------
def connect(target: str | Path | Target, *, create: bool = False) -> sqlite3.Connection | PgConnection:
    """Open the review database (with ``create``, a SQLite file is made and migrated when missing).

    SQLite: a plain ``sqlite3.Connection`` with ``isolation_level=None`` (no implicit transactions; writers
    use ``transaction()``). PostgreSQL: a pooled ``PgConnection``; ``close()`` returns it to the pool.
    """
    parsed = parse_target(target)
    if parsed.kind == "postgresql":
        return _connect_postgres(parsed)
    return _connect_sqlite(parsed.path, create=create)


def _wal_mode(conn: sqlite3.Connection) -> str:
    """Switch to WAL and return the journal mode in force. The switch needs the file to itself, and when several
    connections open a new file at once SQLite answers "database is locked" at once instead of waiting in its busy
    handler (it would risk a deadlock): retried here up to ``BUSY_TIMEOUT_S``, as any other lock is waited for."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _open_sqlite(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        mode = _wal_mode(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    except sqlite3.DatabaseError as error:
        raise ParcelscanError(f"{path}: not a usable SQLite database: {error}") from error
    if mode.lower() != "wal":
        conn.close()
        raise ParcelscanError(f"{path}: could not switch to WAL mode (got {mode}); is it on a network file system?")
    return conn


_SQLITE_STATE = ("SELECT (SELECT group_concat(version_num) FROM alembic_version), "
                 "(SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({}))"
                 .format(",".join("?" * len(guards.SQLITE_TRIGGERS))))


def _sqlite_state(conn: sqlite3.Connection) -> tuple[str | None, int]:
    """(schema revision or None when not under Alembic yet, number of append-only triggers): one query."""
    try:
        version, triggers = conn.execute(_SQLITE_STATE, guards.SQLITE_TRIGGERS).fetchone()
    except sqlite3.OperationalError:  # no alembic_version table: a new file, or one from before Alembic
        return None, 0
    return version, triggers


def _connect_sqlite(path: Path, *, create: bool) -> sqlite3.Connection:
    if not create and not path.exists():
        raise ParcelscanError(f"review database {path} does not exist: create it with "
                              f"`parcelscan review add-user NAME --db {path}` or `parcelscan review ingest`")
    if path.exists() and path.is_dir():
        raise ParcelscanError(f"review database {path} is a directory")
    conn = _open_sqlite(path)
    try:
        version, triggers = _sqlite_state(conn)
        if version != migrations.HEAD:
            migrate(Target("sqlite", path=path))  # in place, as opening an older file always did
            version, triggers = _sqlite_state(conn)
        if triggers != len(guards.SQLITE_TRIGGERS):
            raise ParcelscanError(f"{path}: the append-only triggers on the audit trail are missing (someone "
                                  "dropped them); `parcelscan review migrate --db {path}` restores them")
    except BaseException:
        conn.close()
        raise
    return conn


class PgRow(tuple):
    """A row by index and by column name, like ``sqlite3.Row`` (``dict(row)`` works too)."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _pg_row_factory(cursor: psycopg.Cursor):
    names = [column.name for column in cursor.description or ()]
    index = {name: k for k, name in enumerate(names)}
    return lambda values: PgRow(values, index)


class PgCursor:
    """The result of ``PgConnection.execute``: ``fetchone``/``fetchall``/iteration, ``lastrowid``, ``rowcount``."""

    def __init__(self, cursor: psycopg.Cursor, returns_id: bool):
        self._cursor = cursor
        self.rowcount = cursor.rowcount
        self.lastrowid: int | None = None
        if returns_id:
            row = cursor.fetchone()
            self.lastrowid = int(row[0]) if row is not None else None

    def fetchone(self) -> PgRow | None:
        return None if self._cursor.description is None else self._cursor.fetchone()

    def fetchall(self) -> list[PgRow]:
        return [] if self._cursor.description is None else self._cursor.fetchall()

    def __iter__(self) -> Iterator[PgRow]:
        return iter(self.fetchall())


_NAME = re.compile(r"[A-Za-z_]\w*")
_INSERT = re.compile(r"^\s*INSERT\s+(OR\s+IGNORE\s+)?INTO\s+(\w+)", re.IGNORECASE)


@lru_cache(maxsize=512)
def translate(sql: str) -> tuple[str, bool]:
    """sqlite3 SQL → psycopg SQL: ``?`` → ``%s``, ``:name`` → ``%(name)s``, ``%`` → ``%%`` (quoted text and
    ``::`` casts left alone), ``INSERT OR IGNORE`` → ``ON CONFLICT DO NOTHING``, and ``RETURNING id`` added
    to an INSERT into a table with an id (for ``lastrowid``). Returns the SQL and whether it returns an id.

    This is the whole dialect difference the review code relies on; anything else must be portable SQL
    (the PostgreSQL tests run the store's queries on a real server)."""
    out: list[str] = []
    styles: set[str] = set()
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n and not (sql[j] == c and (j + 1 >= n or sql[j + 1] != c)):
                j += 2 if sql[j] == c else 1
            out.append(sql[i:j + 1].replace("%", "%%"))
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif c == "?":
            out.append("%s")
            styles.add("qmark")
            i += 1
        elif c == ":" and sql.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":" and (match := _NAME.match(sql, i + 1)):
            out.append(f"%({match.group()})s")
            styles.add("named")
            i = match.end()
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    if len(styles) > 1:
        raise ValueError(f"mixed ? and :name placeholders in {sql!r}")
    text = "".join(out).strip().removesuffix(";")
    match = _INSERT.match(text)
    returns_id = False
    if match:
        if match.group(1):
            text = re.sub(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO", "INSERT INTO", text, flags=re.IGNORECASE)
            text += " ON CONFLICT DO NOTHING"
        if match.group(2).lower() in ID_TABLES and "RETURNING" not in text.upper():
            text += " RETURNING id"
            returns_id = True
    elif re.match(r"^\s*INSERT\s+OR\s", text, re.IGNORECASE):
        raise ValueError(f"only INSERT OR IGNORE is translated for PostgreSQL: {sql!r}")
    return text, returns_id


class PgConnection:
    """A pooled psycopg connection (autocommit: every statement outside ``transaction()`` stands alone, as
    with ``sqlite3`` and ``isolation_level=None``) that speaks the ``sqlite3`` API of the review code."""

    def __init__(self, pool: ConnectionPool, raw: psycopg.Connection, target: Target):
        self._pool = pool
        self._raw: psycopg.Connection | None = raw
        self.target = target

    @property
    def raw(self) -> psycopg.Connection:
        if self._raw is None:
            raise ParcelscanError("the review database connection is closed")
        return self._raw

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        query, returns_id = translate(sql)
        values: Sequence[Any] | dict[str, Any] = dict(params) if isinstance(params, dict) else tuple(params)
        return PgCursor(self.raw.execute(query, values), returns_id)

    @contextmanager
    def write_transaction(self) -> Iterator[PgConnection]:
        with self.raw.transaction():
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            yield self

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        if not raw.closed and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):  # a broken connection: the pool throws it away
                raw.rollback()
        self._pool.putconn(raw)


_POOLS: dict[str, ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


def _configure(conn: psycopg.Connection) -> None:
    # durability does not depend on the server's or the role's defaults
    conn.execute("SET synchronous_commit = on")
    conn.execute(f"SET lock_timeout = '{int(BUSY_TIMEOUT_S)}s'")


def _connect_postgres(target: Target) -> PgConnection:
    pool = _pool(target)
    try:
        raw = pool.getconn()
    except PoolTimeout as error:
        raise DatabaseUnavailable(f"the review database {target} is unavailable (no connection within "
                                  f"{POOL_TIMEOUT_S:.0f} s): {error}") from error
    return PgConnection(pool, raw, target)


def _pool(target: Target) -> ConnectionPool:
    url = str(target.url)
    with _POOLS_LOCK:
        pool = _POOLS.get(url)
        if pool is None:
            check_postgres(target)
            pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX_SIZE, timeout=POOL_TIMEOUT_S,
                                  kwargs={"autocommit": True, "row_factory": _pg_row_factory},
                                  configure=_configure, check=ConnectionPool.check_connection,
                                  name="parcelscan-review", open=True)
            _POOLS[url] = pool
    return pool


def close_pools() -> None:
    """Close every PostgreSQL pool of this process (at exit, and in tests that restart the server)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


def _open_postgres(target: Target, **kwargs: Any) -> psycopg.Connection:
    """A direct (unpooled) connection; a failure says why in one line (libpq's own message)."""
    try:
        return psycopg.connect(str(target.url), **kwargs)
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split())
        hint = ""
        if "password" in reason:
            hint = " (give the password in PGPASSWORD or a .pgpass file / PGPASSFILE, never in the URL)"
        raise ParcelscanError(f"cannot connect to the review database {target}: {reason}{hint}") from error


def check_postgres(target: Target) -> None:
    """Refuse a database the review commands must not run on: no or another schema revision, append-only
    triggers missing or disabled, a role that could rewrite the trail, or a server that does not fsync."""
    with _open_postgres(target, autocommit=True) as conn:
        has_schema = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] if has_schema else None
        migrate_hint = (f"run `parcelscan review migrate --db {target} --app-role ROLE` as the database's "
                        "owner (see README, central review server)")
        if version is None:
            raise ParcelscanError(f"{target} has no review schema yet: {migrate_hint}")
        if version != migrations.HEAD:
            if version in migrations.known_revisions():
                raise ParcelscanError(f"{target}: schema revision {version}, this parcelscan needs "
                                      f"{migrations.HEAD}: {migrate_hint}")
            raise ParcelscanError(f"{target}: schema revision {version} is newer than this parcelscan "
                                  f"({migrations.HEAD}); upgrade parcelscan")
        present = {name for (name,) in conn.execute(guards.POSTGRES_PRESENT_TRIGGERS)}
        missing = [name for name in guards.POSTGRES_TRIGGERS if name not in present]
        if missing:
            raise ParcelscanError(f"{target}: append-only triggers missing or disabled ({', '.join(missing)}): "
                                  f"{migrate_hint}")
        role = conn.execute("SELECT current_user").fetchone()[0]
        may = [f"{privilege} {table}" for table in guards.APPEND_ONLY for privilege in ("UPDATE", "DELETE", "TRUNCATE")
               if conn.execute("SELECT has_table_privilege(%s, %s)", (table, privilege)).fetchone()[0]]
        if may:
            raise ParcelscanError(
                f"{target}: connected as role {role!r}, which may {', '.join(may)}: the review commands connect as "
                "the application role, which can only append to the audit trail (create it and grant it with "
                "`parcelscan review migrate --app-role ROLE`); the owner's role is for migrations only")
        if conn.execute("SHOW fsync").fetchone()[0] != "on":
            raise ParcelscanError(f"{target}: the server runs with fsync=off, so an acknowledged decision could "
                                  "be lost in a crash; refusing")


# What the review code holds: either back end's connection and row (both speak the sqlite3 API).
Connection = sqlite3.Connection | PgConnection
Row = sqlite3.Row | PgRow


# --- transactions ----------------------------------------------------------------------------------------
@contextmanager
def transaction(conn: sqlite3.Connection | PgConnection) -> Iterator[sqlite3.Connection | PgConnection]:
    """A write transaction, durable when the block returns; rolled back on any exception.

    SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT``. PostgreSQL: BEGIN, the review write lock, … COMMIT."""
    if isinstance(conn, PgConnection):
        with conn.write_transaction():
            yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def opened(target: str | Path | Target, *, create: bool = False) -> Iterator[sqlite3.Connection | PgConnection]:
    conn = connect(target, create=create)
    try:
        yield conn
    finally:
        conn.close()


# --- migrations ------------------------------------------------------------------------------------------
@dataclass
class MigrationReport:
    target: str
    before: str | None  # revision before, "legacy user_version 1", or None for an empty database
    after: str
    rearmed: list[str] = field(default_factory=list)
    granted_to: str | None = None

    def summary(self) -> str:
        if self.before == self.after:
            text = f"{self.target}: schema at revision {self.after} (up to date)"
        else:
            text = f"{self.target}: schema {self.before or 'empty'} → revision {self.after}"
        if self.rearmed:
            text += f"; re-created the append-only trigger(s) {', '.join(self.rearmed)}"
        if self.granted_to:
            text += (f"; role {self.granted_to!r} may read, append to the audit trail and decisions, "
                     "and never UPDATE, DELETE or TRUNCATE them")
        return text


def _engine(target: Target) -> sa.Engine:
    if target.kind == "sqlite":
        path = target.path
        engine = sa.create_engine("sqlite://", creator=lambda: _open_sqlite(path), poolclass=NullPool)

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine("postgresql+psycopg://", creator=lambda: _open_postgres(target), poolclass=NullPool)


def migrate(target: str | Path | Target, *, app_role: str | None = None, actor: str = "cli",
            extra_version_locations: Sequence[Path] = ()) -> MigrationReport:
    """Bring the schema to head in one transaction (concurrent callers serialise; the second finds nothing
    to do) and re-arm the append-only guards; on PostgreSQL grant ``app_role`` its least privileges.

    ``extra_version_locations``: further revision folders (the tests' batch-rebuild revision)."""
    parsed = parse_target(target)
    if app_role is not None and parsed.kind != "postgresql":
        raise ParcelscanError("--app-role is for PostgreSQL (a SQLite file has no roles)")
    if parsed.kind == "sqlite" and parsed.path.is_dir():
        raise ParcelscanError(f"review database {parsed.path} is a directory")
    engine = _engine(parsed)
    try:
        with engine.begin() as connection:
            if parsed.kind == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
            before = migrations.current(connection)
            known = migrations.known_revisions(extra_version_locations)
            if before is None:
                before = _adopt_unversioned(connection, parsed)
            elif before not in known:
                raise ParcelscanError(f"{parsed}: schema revision {before} is newer than this parcelscan "
                                      f"({migrations.script_head(extra_version_locations)}); upgrade parcelscan")
            rearmed = migrations.upgrade(connection, extra_version_locations)
            if before is None:
                rearmed = []  # a new database: the guards were made with it, not repaired
            after = migrations.current(connection) or ""
            if parsed.kind == "sqlite":
                connection.exec_driver_sql(f"PRAGMA user_version = {legacy.ALEMBIC_USER_VERSION}")
            report = MigrationReport(str(parsed), before, after, rearmed)
            if app_role is not None:
                _grant(connection, app_role)
                report.granted_to = app_role
            if report.before != report.after or report.rearmed:
                connection.execute(
                    sa.text("INSERT INTO audit (at, user_id, user_name, action, detail) "
                            "VALUES (:at, NULL, :actor, 'migrate', :detail)"),
                    {"at": utc_now(), "actor": actor,
                     "detail": json.dumps({"from": before, "to": after, "rearmed": rearmed}, sort_keys=True)})
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as error:
        raise ParcelscanError(f"migrating {parsed} failed: {' '.join(str(error.orig).split())}") from error
    finally:
        engine.dispose()
    return report


def _adopt_unversioned(connection: sa.Connection, target: Target) -> str | None:
    """A database without Alembic's version table: empty (→ None), or a legacy SQLite file (→ stamped)."""
    tables = set(sa.inspect(connection).get_table_names()) & set(legacy.TABLES)
    if target.kind == "sqlite":
        raw = connection.connection.driver_connection
        user_version = raw.execute("PRAGMA user_version").fetchone()[0]
        if user_version == 0 and not tables:
            return None
        if user_version == legacy.LEGACY_USER_VERSION:
            found, expected = legacy.describe(raw), legacy.reference()
            if found != expected:
                differing = sorted(k for k in expected if found.get(k) != expected[k])
                raise ParcelscanError(f"{target}: a user_version 1 review database whose schema differs from "
                                      f"parcelscan's (in {', '.join(differing)}); refusing to upgrade it")
            migrations.stamp(connection, migrations.BASELINE)
            return f"legacy user_version {user_version}"
        raise ParcelscanError(f"{target}: schema version {user_version} is newer than this parcelscan; "
                              "upgrade parcelscan")
    if tables:
        raise ParcelscanError(f"{target}: review tables exist but no schema revision; refusing to guess")
    return None


def _grant(connection: sa.Connection, role: str) -> None:
    exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if exists is None:
        raise ParcelscanError(f"role {role!r} does not exist: create it first (CREATE ROLE {role} LOGIN; "
                              f"then \\password {role} in psql)")
    owns = connection.execute(sa.text(
        "SELECT r.rolsuper OR pg_has_role(r.oid, c.relowner, 'MEMBER') FROM pg_roles r, pg_class c "
        "WHERE r.rolname = :r AND c.oid = 'audit'::regclass"), {"r": role}).scalar()
    if owns:  # an owner or superuser can re-grant itself anything and disable the triggers
        raise ParcelscanError(f"role {role!r} owns the review tables (or is a superuser or a member of the "
                              "owner's role): give the app a role of its own")
    quoted = connection.dialect.identifier_preparer.quote(role)
    for table, privileges in APP_PRIVILEGES.items():
        connection.exec_driver_sql(f"REVOKE ALL ON TABLE {table} FROM {quoted}")
        connection.exec_driver_sql(f"GRANT {privileges} ON TABLE {table} TO {quoted}")
    may = [f"{privilege} {table}" for table in guards.APPEND_ONLY for privilege in ("UPDATE", "DELETE", "TRUNCATE")
           if connection.execute(sa.text("SELECT has_table_privilege(:r, :t, :p)"),
                                 {"r": role, "t": table, "p": privilege}).scalar()]
    if may:
        raise ParcelscanError(f"role {role!r} may still {', '.join(may)} (it owns the tables, is a superuser or "
                              "a member of the owner's role): give the app a role of its own")
