"""Alembic's environment for the review database: run the revisions on the connection ``db.migrate`` passes in.

``db.migrate`` owns the transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL one transaction holding an
advisory lock), so two processes upgrading at once serialise and the second finds nothing to do, and a
failed revision leaves the database as it was (both back ends have transactional DDL). After the
revisions, the append-only guards are re-armed (see ``guards``): a batch-mode table rebuild on SQLite drops
triggers, and a revision must not be able to leave the trail unguarded.
"""

from __future__ import annotations

from alembic import context

from parcelscan.inference.review.migrations import guards

if context.is_offline_mode():
    raise RuntimeError("the review database is migrated online only (parcelscan review migrate)")

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite",
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
context.config.attributes["rearmed"] = guards.arm(connection)
