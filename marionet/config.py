"""All configuration in one place: `MARIONET_*` environment variables (documented in the README's table)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

UPSTREAM_MODELS = ("kling-v3-motion-control", "kling-v2-6-motion-control")
DEFAULT_MODEL = "kling-v3-motion-control"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONET_", extra="ignore")

    # Storage
    data_dir: Path = Field(Path("marionet-data"), description="SQLite file, inputs, results and the secret.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    storage_dir: Path | None = Field(
        None, description="Inputs and results; must be shared by all machines in a cluster. Default data_dir."
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        None, description="Base URL clients reach the server at, used in result and file links."
    )
    secret: str | None = Field(
        None, description="Signs result links and callbacks; default: generated once into data_dir/secret."
    )

    # Work
    queue: Literal["embedded", "celery"] = "embedded"
    workers: int = Field(1, ge=1, description="Embedded pool size: tasks run at once on this server.")
    embedded_workers: bool = Field(
        True,
        description="Run the embedded pool in `serve`; false serves the API only (tasks wait for workers).",
    )
    max_attempts: int = Field(2, ge=1)
    max_running_per_key: int = 2
    max_queued_per_key: int = 20
    retention_hours: float = 24.0
    result_link_ttl_s: int = 24 * 3600
    task_timeout_s: float = Field(
        3600.0, gt=0, description="A running task is stopped and failed after this."
    )
    cleanup_interval_s: float = Field(
        300.0, gt=0, description="How often expired inputs and results are deleted."
    )
    default_engine_speed: float = Field(
        # marionet-cpu measures about 0.8-1.3 in std and 1.5-2.5 in pro on 2 cores (benchmarks/RESULTS.md).
        2.0,
        gt=0,
        description="Engine seconds per video second until recent tasks have measured it.",
    )
    callback_attempts: int = Field(5, ge=1, description="Tries to deliver a callback before giving up.")
    callback_backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles on each retry.")
    max_request_bytes: int = Field(16 * 1024 * 1024, description="Largest JSON request body.")

    cpu_renderer: Literal["parts", "mesh"] = Field(
        "mesh",
        description="marionet-cpu's renderer: the skinned triangle mesh (LBS), or rigid part layers.",
    )

    # Models: upstream model name -> engine name
    model_v3_engine: str = "marionet-cpu"
    model_v2_6_engine: str = "marionet-cpu"

    # Ingestion
    url_allowlist: str = Field(
        "", description="Comma-separated hosts or CIDR networks that may be fetched despite being private."
    )
    fetch_connect_timeout_s: float = 10.0
    fetch_read_timeout_s: float = Field(30.0, description="Longest wait for the next byte of a fetched file.")
    fetch_ca_bundle: Path | None = Field(
        None, description="PEM file of extra certificate authorities trusted by https fetches (a private CA)."
    )
    fetch_total_timeout_s: float = Field(
        300.0, description="Longest a whole fetch (redirects, headers and body) may take: stops slow drips."
    )
    probe_timeout_s: float = Field(
        60.0, description="Longest the isolated check of one input file may take before it is refused."
    )
    probe_memory_mb: int = Field(
        4096, description="Address-space cap of the process checking one input file."
    )
    input_cache_ttl_s: float = Field(
        3600.0,
        description="How long a fetched URL's content is reused by later tasks without fetching again.",
    )

    # Scale-out
    redis_url: str = "redis://127.0.0.1:6379/0"
    worker_engines: str = Field(
        "marionet-cpu", description="Comma-separated engines a `marionet worker` runs."
    )
    heartbeat_interval_s: float = Field(10.0, gt=0, description="How often a worker renews its task's lease.")
    lease_timeout_s: float = Field(
        60.0, gt=0, description="A task whose worker sent no heartbeat for this long is requeued elsewhere."
    )
    visibility_timeout_s: int = Field(
        3600, ge=1, description="Redis redelivers an unacknowledged message after this long (a backstop)."
    )

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'marionet.db').resolve()}"

    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir).resolve()

    def engine_for_model(self, model: str) -> str:
        """Engine that runs `model`; an engine's own name maps to itself."""
        return {
            "kling-v3-motion-control": self.model_v3_engine,
            "kling-v2-6-motion-control": self.model_v2_6_engine,
        }.get(model, model)


@lru_cache
def get_settings() -> Settings:
    return Settings()
