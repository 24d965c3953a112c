"""Items keyed by their inputs' contents: ``items.inputs_sha256`` becomes the station's ``inputs_sha256``.

Revision ID: 0002
Revises: 0001

Why: the station's verdict line carries ``inputs_sha256``, the sha256 of its input files' contents, and
promises consumers to deduplicate by ``scan_id`` + ``inputs_sha256``. Until now ingest keyed an item by the
sha256 of its input *paths*, so a verdict delivered again with its files moved to ``--done`` became a second
item. Ingest now stores the station's digest (falling back to the paths' digest for lines without one); this
revision rewrites the items already ingested from lines that carried it (each item keeps its whole verdict
line), so a line ingested before the upgrade and delivered again after it is still recognised. An item
whose new key would collide with another item of the same scan and model (the same scan ingested twice from
two paths before this revision) keeps its old key: both stay, as they were. No schema change.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _station_digest(verdict_line: str) -> str | None:
    try:
        value = json.loads(verdict_line).get("inputs_sha256")
    except (ValueError, AttributeError):
        return None
    ok = isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    return value if ok else None


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, scan_id, model_sha256, inputs_sha256, verdict_line FROM items "
                                "ORDER BY id")).fetchall()
    taken = {(r.scan_id, r.model_sha256, r.inputs_sha256) for r in rows}
    for row in rows:
        digest = _station_digest(row.verdict_line)
        if digest is None or digest == row.inputs_sha256 or (row.scan_id, row.model_sha256, digest) in taken:
            continue
        bind.execute(sa.text("UPDATE items SET inputs_sha256 = :key WHERE id = :id"), {"key": digest, "id": row.id})
        taken.discard((row.scan_id, row.model_sha256, row.inputs_sha256))
        taken.add((row.scan_id, row.model_sha256, digest))


def downgrade() -> None:
    raise NotImplementedError("the review trail is never dropped by a migration")
