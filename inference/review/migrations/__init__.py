"""The review database's schema history: one list of Alembic revisions for SQLite and PostgreSQL.

Why Alembic: the SQLite store counted versions in ``PRAGMA user_version`` and ran SQLite-only scripts; a
central PostgreSQL server needs the same schema from the same history. Revisions live in ``versions/``
(``0001`` is the baseline: the legacy schema), ``env.py`` runs them on a connection that ``db.migrate``
opened and holds in one transaction, and ``guards`` keeps the append-only triggers armed.

``HEAD`` is the revision this code expects; ``db.connect`` compares the database's version with it in one
query (no Alembic machinery on the hot path) and refuses a database from a newer parcelscan.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
HEAD = "0003"  # tests/test_review_migrations.py checks that this is the scripts' head


def config(connection: Connection | None = None, extra_version_locations: Sequence[Path] = ()) -> Config:
    """An Alembic config without an ini file: our scripts, plus (for tests) further version folders."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    locations = [HERE / "versions", *map(Path, extra_version_locations)]
    cfg.set_main_option("version_locations", os.pathsep.join(str(p) for p in locations))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_head(extra_version_locations: Sequence[Path] = ()) -> str:
    heads = ScriptDirectory.from_config(config(None, extra_version_locations)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the review migrations have {len(heads)} heads ({heads}); merge them")
    return heads[0]


def known_revisions(extra_version_locations: Sequence[Path] = ()) -> set[str]:
    script = ScriptDirectory.from_config(config(None, extra_version_locations))
    return {rev.revision for rev in script.walk_revisions()}


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def stamp(connection: Connection, revision: str) -> None:
    command.stamp(config(connection), revision)


def upgrade(connection: Connection, extra_version_locations: Sequence[Path] = ()) -> list[str]:
    """Upgrade to head inside the caller's transaction; returns the guards that had to be re-created."""
    cfg = config(connection, extra_version_locations)
    command.upgrade(cfg, "heads")
    return list(cfg.attributes.get("rearmed", []))
