"""Threat image projection (TIP): supervisors, TIP rates per queue, projections, inspectors' marks.

Revision ID: 0003
Revises: 0002

New tables only (the baseline's are untouched): ``roles`` (who is a supervisor; enforced server-side),
``tip_rates`` (the share of projections per queue = station, set by a supervisor, append-only like the
audit: the current rate is the latest row), ``tip_projections`` (one per composite made: its background
item, used once; its item in the queue, or NULL when the model missed it; what and where the threat is),
``marks`` (where an inspector marked the threat, one per decision: a hit needs the right location).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Real = sa.Float().with_variant(sa.REAL(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, sa.Identity(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "roles",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("granted_at", sa.Text, nullable=False),
        sa.CheckConstraint("role IN ('supervisor')", name="roles_role"),
    )
    op.create_table(
        "tip_rates", _id(),
        sa.Column("station", sa.Text, nullable=False),
        sa.Column("rate", Real, nullable=False),
        sa.Column("set_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("set_at", sa.Text, nullable=False),
        sa.CheckConstraint("rate >= 0 AND rate <= 0.5", name="tip_rates_rate"),
    )
    op.create_index("tip_rates_station", "tip_rates", ["station", "id"])
    op.create_table(
        "tip_projections", _id(),
        sa.Column("background_item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False, unique=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), unique=True),
        sa.Column("station", sa.Text),
        sa.Column("threat", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("scenario", sa.Text, nullable=False),
        sa.Column("mass_g", Real, nullable=False),
        sa.Column("mask", sa.Text, nullable=False),
        sa.Column("score", Real),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("provenance", sa.Text, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.CheckConstraint("outcome IN ('queued', 'model_miss')", name="tip_projections_outcome"),
    )
    op.create_table(
        "marks",
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id"), primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("col", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the review trail is never dropped by a migration")
