"""Initial schema: api_keys and tasks.

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
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "tasks",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("engine", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("character_orientation", sa.String(8), nullable=False),
        sa.Column("keep_original_sound", sa.Boolean, nullable=False),
        sa.Column("image_url", sa.Text, nullable=False),
        sa.Column("video_url", sa.Text, nullable=False),
        sa.Column("callback_url", sa.Text, nullable=True),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("warnings", sa.Text, nullable=False),
        sa.Column("video_duration_s", sa.Float, nullable=True),
        sa.Column("billed_seconds", sa.Integer, nullable=True),
        sa.Column("engine_seconds", sa.Float, nullable=True),
        sa.Column("result_path", sa.Text, nullable=True),
        sa.Column("result_deleted", sa.Boolean, nullable=False),
        sa.Column("callback_status", sa.String(32), nullable=True),
    )
    op.create_index("ix_tasks_status_seq", "tasks", ["status", "seq"])
    op.create_index("ix_tasks_key_seq", "tasks", ["api_key_id", "seq"])


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("api_keys")
