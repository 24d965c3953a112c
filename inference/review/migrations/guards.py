"""The database's own guards on the review trail: append-only ``audit`` and ``decisions``, on both back ends.

Why in the database: no code path, and no one with a SQL shell who forgets, can rewrite who decided what.
Why a module of its own: the baseline revision creates the guards and the migration environment re-arms
them after *every* upgrade. On SQLite, Alembic's batch mode (``op.batch_alter_table``) rebuilds a table as
"create new, copy, drop old, rename", which silently drops the table's triggers; re-arming after each run
means a later revision that rebuilds ``audit`` or ``decisions`` cannot leave them unguarded.

On PostgreSQL row triggers refuse UPDATE and DELETE and a statement trigger refuses TRUNCATE (row triggers
do not fire on TRUNCATE); the application role additionally holds no UPDATE, DELETE or TRUNCATE privilege on
these tables (``db.migrate(..., app_role=...)``), so even disabling a trigger needs the owner.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# table → the message every refused change reports (the tests match on "append-only")
APPEND_ONLY = {"audit": "the audit trail is append-only", "decisions": "decisions are append-only"}
SQLITE_TRIGGERS = tuple(f"{table}_no_{verb}" for table in APPEND_ONLY for verb in ("update", "delete"))
POSTGRES_TRIGGERS = tuple(f"{table}_no_{verb}" for table in APPEND_ONLY for verb in ("update", "delete", "truncate"))
POSTGRES_FUNCTION = "parcelscan_append_only"


def sqlite_statements() -> list[str]:
    return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            for table, message in APPEND_ONLY.items() for verb in ("update", "delete")]


def postgres_statements() -> list[str]:
    statements = [
        f"""CREATE OR REPLACE FUNCTION {POSTGRES_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], ERRCODE = 'integrity_constraint_violation';
        END
        $body$"""]
    for table, message in APPEND_ONLY.items():
        for verb, level in (("update", "ROW"), ("delete", "ROW"), ("truncate", "STATEMENT")):
            statements.append(f"CREATE OR REPLACE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
                              f"FOR EACH {level} EXECUTE FUNCTION {POSTGRES_FUNCTION}('{message}')")
    return statements


def arm(connection: Connection) -> list[str]:
    """(Re)create the guards that are missing or disabled; returns the names it had to create."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        present = set(connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
        missing = [name for name in SQLITE_TRIGGERS if name not in present]
        for statement in sqlite_statements():
            connection.execute(text(statement))
        return missing
    if dialect == "postgresql":
        missing = missing_postgres_triggers(connection)
        for statement in postgres_statements():
            connection.execute(text(statement))
        for table in APPEND_ONLY:  # a trigger disabled by the owner is enabled again
            connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        return missing
    raise ValueError(f"unsupported database dialect {dialect!r}")


# the enabled user triggers on the append-only tables of the current schema
POSTGRES_PRESENT_TRIGGERS = (
    "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "WHERE c.relname IN ('audit', 'decisions') AND c.relnamespace = current_schema()::regnamespace "
    "AND NOT t.tgisinternal AND t.tgenabled <> 'D'")


def missing_postgres_triggers(connection: Connection) -> list[str]:
    present = set(connection.execute(text(POSTGRES_PRESENT_TRIGGERS)).scalars())
    return [name for name in POSTGRES_TRIGGERS if name not in present]
