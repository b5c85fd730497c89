"""Database engine per URL, SQLite tuned for concurrent writers, and Alembic migrations run at startup."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from marionet.config import Settings

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
_migrate_lock = threading.Lock()


_WRITE = "marionet_write"
# PostgreSQL ends a session left idle inside a transaction this long, releasing its row locks. A worker frozen
# between a heartbeat's UPDATE and its COMMIT (a paused VM, SIGSTOP) otherwise held its task's row locked for
# as long as it stayed frozen, and the reaper that came to requeue the task waited on that lock with it: the
# task was never taken over. Every transaction marionet opens lasts milliseconds; a lease lasts 60 s.
IDLE_IN_TRANSACTION_S = 30.0


def _tune_sqlite(engine: Engine) -> None:
    """WAL + busy timeout; write transactions BEGIN IMMEDIATE so read-then-write ones serialise instead of
    deadlocking, while reads BEGIN deferred and read their WAL snapshot without waiting for a writer."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _tune_sqlite(engine)
        return engine
    idle = f"-c idle_in_transaction_session_timeout={round(IDLE_IN_TRANSACTION_S * 1000)}"
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=30, connect_args={"options": idle}
    )


class Sessions:
    """`sessions()` for reads, `sessions.begin()` for a write transaction (on SQLite, the only kind that takes
    the write lock at BEGIN; PostgreSQL needs nothing: its row locks and single-statement updates suffice)."""

    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(**{_WRITE: True}), expire_on_commit=False)

    def __call__(self) -> Session:
        return self._read()

    def begin(self) -> AbstractContextManager[Session]:
        return self._write.begin()


def session_factory(settings: Settings) -> Sessions:
    return Sessions(get_engine(settings.resolved_database_url()))


def migrate(settings: Settings) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = get_engine(settings.resolved_database_url()).execution_options(**{_WRITE: True})
    with _migrate_lock, engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
