"""The review database: one SQLite file in WAL mode, a versioned schema, real transactions.

Why these settings: WAL lets inspectors read the queue while a decision is being written;
``synchronous=FULL`` makes every COMMIT reach the disk before it returns, so a decision the server
has acknowledged survives a killed process (and a power cut). Each request opens its own
connection (cheap) and writes inside ``BEGIN IMMEDIATE`` so two writers never deadlock half-way.

The audit and decision tables are append-only, enforced by triggers in the database itself: no code
path, and no one with the sqlite3 shell who forgets, can rewrite who decided what.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from parcelscan.errors import ParcelscanError

BUSY_TIMEOUT_S = 30.0

# Each entry migrates the schema from version i to i + 1. Never edit a shipped entry: append one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE sessions (
        token_sha256 TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        csrf_token TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        ip TEXT
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE login_failures (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX login_failures_subject ON login_failures(subject, at);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        scan_id TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        inputs_sha256 TEXT NOT NULL,
        inputs TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('suspect', 'manual_inspection')),
        score REAL,
        threshold REAL,
        model_name TEXT,
        model_version TEXT,
        station TEXT,
        scanned_at TEXT,
        reasons TEXT NOT NULL DEFAULT '[]',
        verdict_error TEXT,
        verdict_line TEXT NOT NULL,
        scan_files TEXT NOT NULL DEFAULT '{}',
        scan_error TEXT,
        scan_kind TEXT,
        scan_rows INTEGER,
        scan_cols INTEGER,
        scan_meta TEXT NOT NULL DEFAULT '{}',
        heatmap_path TEXT,
        heatmap_sha256 TEXT,
        heatmap_error TEXT,
        ingested_at TEXT NOT NULL,
        ingested_from TEXT,
        UNIQUE (scan_id, model_sha256, inputs_sha256)
    );
    CREATE INDEX items_score ON items(score DESC);
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        decision TEXT NOT NULL CHECK (decision IN ('seizure', 'false_alarm', 'unsure')),
        material TEXT,
        scenario TEXT,
        notes TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX decisions_item ON decisions(item_id);
    CREATE TABLE current_decisions (
        item_id INTEGER NOT NULL REFERENCES items(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        decision_id INTEGER NOT NULL REFERENCES decisions(id),
        PRIMARY KEY (item_id, user_id)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user_id INTEGER REFERENCES users(id),
        user_name TEXT NOT NULL,
        action TEXT NOT NULL,
        item_id INTEGER REFERENCES items(id),
        decision_id INTEGER REFERENCES decisions(id),
        replaced_decision_id INTEGER REFERENCES decisions(id),
        undoes_audit_id INTEGER REFERENCES audit(id),
        ip TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_item ON audit(item_id);
    CREATE INDEX audit_user_action ON audit(user_id, action);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> str:
    """ISO 8601 UTC with microseconds: sorts as text, and two decisions in one second stay ordered."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open (and with ``create``, make and migrate) the review database.

    ``isolation_level=None``: no implicit transactions; writers use ``transaction()`` explicitly.
    """
    path = Path(path)
    if not create and not path.exists():
        raise ParcelscanError(f"review database {path} does not exist: create it with "
                              f"`parcelscan review add-user NAME --db {path}` or `parcelscan review ingest`")
    if path.exists() and path.is_dir():
        raise ParcelscanError(f"review database {path} is a directory")
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    except sqlite3.DatabaseError as error:
        raise ParcelscanError(f"{path}: not a usable SQLite database: {error}") from error
    if mode.lower() != "wal":
        conn.close()
        raise ParcelscanError(f"{path}: could not switch to WAL mode (got {mode}); is it on a network file system?")
    try:
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ParcelscanError(f"{path}: schema version {version} is newer than this parcelscan ({SCHEMA_VERSION}); "
                              "upgrade parcelscan")
    if version == SCHEMA_VERSION:
        return
    with transaction(conn):
        # re-read inside the write lock: another process may have migrated meanwhile
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version, SCHEMA_VERSION):
            for statement in _split_script(MIGRATIONS[target]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target + 1}")


def _split_script(script: str) -> list[str]:
    """Split a migration into statements (executescript would COMMIT our transaction)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "".join(current).strip():
        raise ValueError("incomplete statement at the end of a migration")
    return statements


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (durable on return) or ``ROLLBACK`` on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def opened(path: str | Path, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    conn = connect(path, create=create)
    try:
        yield conn
    finally:
        conn.close()
