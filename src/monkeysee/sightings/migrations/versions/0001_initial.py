"""The keeper's log: keepers, places, photos, sightings, their photos and their history.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "keepers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_table(
        "places",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(120), nullable=False, unique=True),
        sa.Column("latitude", sa.Float, nullable=True),
        sa.Column("longitude", sa.Float, nullable=True),
    )
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("location", sa.String(300), nullable=False),
        sa.Column("media_type", sa.String(40), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
    )
    op.create_table(
        "sightings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("observed_at", tz, nullable=False, index=True),
        sa.Column("recorded_at", tz, nullable=False),
        sa.Column("place_id", sa.Integer, sa.ForeignKey("places.id"), nullable=True, index=True),
        sa.Column("place_text", sa.String(200), nullable=True),
        sa.Column("keeper_id", sa.Integer, sa.ForeignKey("keepers.id"), nullable=True),
        sa.Column("run", sa.String(300), nullable=True),
        sa.Column("rank", sa.String(32), nullable=True),
        sa.Column("taxon", sa.String(200), nullable=True),
        sa.Column("species_hint", sa.String(200), nullable=True),
        sa.Column("probability", sa.Float, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("species", sa.String(120), nullable=True, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("reviewed_by", sa.Integer, sa.ForeignKey("keepers.id"), nullable=True),
        sa.Column("reviewed_at", tz, nullable=True),
        sa.Column("notes", sa.Text, nullable=False),
    )
    op.create_table(
        "sighting_photos",
        sa.Column("sighting_id", sa.Integer, sa.ForeignKey("sightings.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("photo_id", sa.Integer, sa.ForeignKey("photos.id"), nullable=False, index=True),
        sa.UniqueConstraint("sighting_id", "photo_id"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sighting_id", sa.Integer, sa.ForeignKey("sightings.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("keeper_id", sa.Integer, sa.ForeignKey("keepers.id"), nullable=True),
        sa.Column("at", tz, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("events", "sighting_photos", "sightings", "photos", "places", "keepers"):
        op.drop_table(table)
