"""The review database's one schema history (Alembic) on SQLite: the baseline is the legacy schema, legacy
files are upgraded in place, and the append-only triggers survive a batch-mode table rebuild (issue 19).
"""

from __future__ import annotations

import sqlite3
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from parcelscan.errors import ParcelscanError
from parcelscan.inference.review import auth, migrations, store
from parcelscan.inference.review.db import connect, migrate
from parcelscan.inference.review.migrations import guards, legacy

BATCH_REVISION = '''
"""Test-only: rebuild the audit table in batch mode (what any later ALTER on SQLite does)."""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("audit", recreate="always") as batch:
        batch.add_column(sa.Column("reviewed_by", sa.Text))
    with op.batch_alter_table("decisions", recreate="always") as batch:
        batch.add_column(sa.Column("source", sa.Text))
'''


def _triggers(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def test_head_is_the_scripts_head():
    assert migrations.script_head() == migrations.HEAD


def test_a_new_sqlite_file_has_exactly_the_legacy_schema(tmp_path):
    conn = connect(tmp_path / "new.sqlite", create=True)
    assert legacy.describe(conn) == legacy.reference()
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrations.HEAD
    assert conn.execute("PRAGMA user_version").fetchone()[0] == legacy.ALEMBIC_USER_VERSION
    conn.close()


def test_a_legacy_user_version_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "legacy.sqlite"
    raw = sqlite3.connect(path)
    legacy.create_v1(raw)  # what db.py made before Alembic
    raw.execute("INSERT INTO users (name, password_hash, created_at) VALUES ('old', 'x', '2026-01-01T00:00:00Z')")
    raw.execute("INSERT INTO audit (at, user_name, action) VALUES ('2026-01-01T00:00:00Z', 'cli', 'add_user')")
    raw.commit()
    raw.close()
    conn = connect(path)  # opening it upgrades it, as opening an older file always did
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrations.HEAD
    assert [tuple(r) for r in conn.execute("SELECT name FROM users")] == [("old",)]
    actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY id")]
    assert actions == ["add_user", "migrate"]
    assert _triggers(conn) == set(guards.SQLITE_TRIGGERS)
    assert legacy.describe(conn) == legacy.reference()
    new_user = auth.add_user(conn, "alice", "alice-password-1")  # and it works
    assert store.counts(conn, new_user)["total"] == 0
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()


def test_a_legacy_file_with_another_schema_is_refused(tmp_path):
    path = tmp_path / "odd.sqlite"
    raw = sqlite3.connect(path)
    legacy.create_v1(raw)
    raw.execute("ALTER TABLE items ADD COLUMN extra TEXT")
    raw.commit()
    raw.close()
    with pytest.raises(ParcelscanError, match=r"schema differs.*items"):
        connect(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1  # left as it was
    raw.close()


def test_a_newer_revision_is_refused(tmp_path):
    path = tmp_path / "newer.sqlite"
    connect(path, create=True).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE alembic_version SET version_num = 'ffff'")
    raw.commit()
    raw.close()
    with pytest.raises(ParcelscanError, match="newer than this parcelscan"):
        connect(path)


def test_a_batch_rebuild_drops_triggers_and_migrate_rearms_them(tmp_path):
    # control: Alembic's batch mode on SQLite really drops the table's triggers (create-copy-drop-rename)
    path = tmp_path / "control.sqlite"
    connect(path, create=True).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        with Operations(MigrationContext.configure(connection)).batch_alter_table("audit", recreate="always") as b:
            b.add_column(sa.Column("x", sa.Text))
        remaining = set(connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                        .scalars())
    engine.dispose()
    assert not remaining & {"audit_no_update", "audit_no_delete"}
    # the same rebuild as a revision run by migrate: the guards are re-armed in the same transaction
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "9001_batch.py").write_text(textwrap.dedent(BATCH_REVISION.format(head=migrations.HEAD)))
    path = tmp_path / "review.sqlite"
    conn = connect(path, create=True)
    user = auth.add_user(conn, "alice", "alice-password-1")
    conn.close()
    report = migrate(path, extra_version_locations=[versions])
    assert (report.before, report.after) == (migrations.HEAD, "9001")
    assert sorted(report.rearmed) == sorted(guards.SQLITE_TRIGGERS)  # all four were dropped by the rebuilds
    raw = sqlite3.connect(path)
    assert _triggers(raw) == set(guards.SQLITE_TRIGGERS)
    assert [r[1] for r in raw.execute("PRAGMA table_info(audit)")][-1] == "reviewed_by"
    raw.execute("INSERT INTO audit (at, user_id, user_name, action) VALUES ('t', ?, 'alice', 'x')", (user,))
    raw.execute("INSERT INTO items (id, scan_id, model_sha256, inputs_sha256, inputs, verdict, verdict_line, "
                "ingested_at) VALUES (1, 's', 'm', 'i', '[]', 'suspect', '{}', 't')")
    raw.execute("INSERT INTO decisions (item_id, user_id, decision, created_at) VALUES (1, ?, 'unsure', 't')", (user,))
    for statement in ("UPDATE audit SET user_name = 'mallory'", "DELETE FROM audit",
                      "UPDATE decisions SET decision = 'seizure'", "DELETE FROM decisions"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(statement)
    raw.close()


def test_concurrent_first_opens_migrate_once(tmp_path):
    path = tmp_path / "race.sqlite"

    def open_close(_):
        connect(path, create=True).close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(open_close, range(6)))
    conn = connect(path)
    assert conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'migrate'").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0] == 1
    conn.close()


def test_a_dropped_trigger_is_refused_until_migrate_restores_it(tmp_path):
    path = tmp_path / "review.sqlite"
    connect(path, create=True).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER decisions_no_delete")
    raw.close()
    with pytest.raises(ParcelscanError, match=r"append-only triggers.*missing.*review migrate"):
        connect(path)
    assert migrate(path).rearmed == ["decisions_no_delete"]
    conn = connect(path)
    actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY id")]
    assert actions == ["migrate", "migrate"]  # the repair is in the trail
    conn.close()


def test_items_ingested_before_0002_are_rekeyed_by_the_stations_content_digest(tmp_path):
    """Revision 0002: an item keyed by its paths whose verdict line carried inputs_sha256 gets that key (so the
    line delivered again after the upgrade is a duplicate); one whose new key would collide keeps its own."""
    path = tmp_path / "legacy.sqlite"
    raw = sqlite3.connect(path)
    legacy.create_v1(raw)
    digest = "ab" * 32
    insert = ("INSERT INTO items (scan_id, model_sha256, inputs_sha256, inputs, verdict, verdict_line, ingested_at) "
              "VALUES (?, 'm', ?, '[]', 'suspect', ?, 't')")
    raw.execute(insert, ("s1", "paths-hot", f'{{"inputs_sha256": "{digest}"}}'))
    raw.execute(insert, ("s1", "paths-done", f'{{"inputs_sha256": "{digest}"}}'))  # same scan from done/
    raw.execute(insert, ("s2", "paths-old", '{"inputs_sha256": null}'))
    raw.commit()
    raw.close()
    conn = connect(path)
    keys = [tuple(r) for r in conn.execute("SELECT scan_id, inputs_sha256 FROM items ORDER BY id")]
    assert keys == [("s1", digest), ("s1", "paths-done"), ("s2", "paths-old")]
    conn.close()
