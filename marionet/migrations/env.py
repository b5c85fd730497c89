"""Alembic environment: run programmatically by marionet.tasks.db.migrate (a connection is passed in)."""

from __future__ import annotations

from alembic import context

from marionet.tasks.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
