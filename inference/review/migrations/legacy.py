"""The schema that parcelscan's first review store made with ``PRAGMA user_version`` = 1 (frozen; never edit).

Before Alembic, ``db.py`` created SQLite databases from this script and counted versions in
``PRAGMA user_version``. Such a database is taken over in place: its schema is compared with this script's
(tables, columns, keys, indexes, triggers) and, when equal, stamped with the baseline revision, which creates
exactly this schema. Anything else is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

LEGACY_USER_VERSION = 1
# What an Alembic-managed SQLite file carries in user_version: an older parcelscan (which knew only version 1)
# then says "schema version 2 is newer than this parcelscan; upgrade parcelscan" instead of touching it.
ALEMBIC_USER_VERSION = 2

SCHEMA_V1 = """
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
"""

TABLES = ("users", "sessions", "login_failures", "items", "decisions", "current_decisions", "audit")


def create_v1(conn: sqlite3.Connection) -> None:
    """Make a database exactly as the pre-Alembic code did (used to check a legacy file, and by the tests)."""
    conn.executescript(SCHEMA_V1)
    conn.execute(f"PRAGMA user_version = {LEGACY_USER_VERSION}")


def describe(conn: sqlite3.Connection) -> dict[str, object]:
    """A comparable description of a SQLite schema: columns, keys, foreign keys, indexes, trigger names.

    Spelling that does not change behaviour (whitespace, constraint order in the CREATE text) is left out;
    declared types, NOT NULL, defaults, primary keys, foreign keys, unique and named indexes are kept.
    """
    out: dict[str, object] = {}
    for table in TABLES:
        columns = [tuple(row)[1:] for row in conn.execute(f"PRAGMA table_info({table})")]
        foreign = sorted(tuple(row)[2:5] for row in conn.execute(f"PRAGMA foreign_key_list({table})"))
        indexes = []
        for row in conn.execute(f"PRAGMA index_list({table})"):
            name, unique, origin = row[1], row[2], row[3]
            cols = [(r[2], r[3]) for r in conn.execute(f"PRAGMA index_xinfo({name})") if r[5]]
            indexes.append((name if origin == "c" else origin, unique, tuple(cols)))
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        checks = sorted(part.strip() for part in _checks(sql[0] if sql else ""))
        out[table] = {"columns": columns, "foreign_keys": foreign, "indexes": sorted(indexes), "checks": checks}
    out["triggers"] = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
    return out


def _checks(create_sql: str) -> list[str]:
    """The CHECK expressions of a CREATE TABLE statement, whitespace-normalised."""
    found, start = [], 0
    upper = create_sql.upper()
    while (k := upper.find("CHECK", start)) >= 0:
        open_at = create_sql.index("(", k)
        depth, j = 0, open_at
        while True:
            depth += {"(": 1, ")": -1}.get(create_sql[j], 0)
            if depth == 0:
                break
            j += 1
        found.append(" ".join(create_sql[open_at + 1:j].split()))
        start = j
    return found


def reference() -> dict[str, object]:
    """``describe`` of a fresh legacy database (in memory)."""
    conn = sqlite3.connect(":memory:")
    try:
        create_v1(conn)
        return describe(conn)
    finally:
        conn.close()
