"""Each photo of a sighting keeps the model's answer for it alone, with the weight it had in the fused
answer of the sighting.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (("species_hint", sa.String(200)), ("probability", sa.Float()), ("verdict", sa.String(16)),
           ("weight", sa.Float()))


def upgrade() -> None:
    with op.batch_alter_table("sighting_photos") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sighting_photos") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
