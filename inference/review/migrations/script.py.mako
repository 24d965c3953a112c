"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}

Runs on SQLite and PostgreSQL. On SQLite, ALTER TABLE beyond adding a column goes through
op.batch_alter_table (a table rebuild); env.py re-arms the append-only triggers afterwards.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    raise NotImplementedError("the review trail is never dropped by a migration")
