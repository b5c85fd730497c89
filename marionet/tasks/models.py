"""SQLAlchemy 2 models: API keys (stored only as hashes) and tasks. Times are Unix seconds (portable)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = (PENDING, PROCESSING, COMPLETED, FAILED)
TERMINAL = (COMPLETED, FAILED)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_seq", "status", "seq"),
        Index("ix_tasks_key_seq", "api_key_id", "seq"),
    )

    # seq orders tasks (newest first, queue order); id is the public `task-unified-...` name.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    created: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    model: Mapped[str] = mapped_column(String(100))
    engine: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(8))
    prompt: Mapped[str] = mapped_column(Text, default="")
    character_orientation: Mapped[str] = mapped_column(String(8))
    keep_original_sound: Mapped[bool] = mapped_column(Boolean)
    image_url: Mapped[str] = mapped_column(Text)
    video_url: Mapped[str] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    base_url: Mapped[str] = mapped_column(Text)

    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    warnings: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings

    video_duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    billed_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    engine_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    result_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    callback_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
