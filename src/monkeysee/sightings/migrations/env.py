"""Alembic environment: always run by `monkeysee.sightings.database.migrate`, which hands over an open
connection (no alembic.ini, no URL in a file)."""

from __future__ import annotations

from alembic import context

from monkeysee.sightings.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
