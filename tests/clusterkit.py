"""A real cluster on loopback for tests and the benchmark: PostgreSQL + Redis, `marionet serve`, N workers.

Each run gets its own PostgreSQL database and its own Redis database index, both dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("MARIONET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("MARIONET_TEST_REDIS", "redis://127.0.0.1:6379")
TERMINAL = ("completed", "failed")


def ensure_services() -> None:
    """Start loopback PostgreSQL and Redis through scripts/services.sh unless both already answer."""
    if _answers(5432) and _answers(6379):
        return
    subprocess.run(["bash", str(REPO / "scripts" / "services.sh")], check=True, capture_output=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    import psycopg

    name = f"marionet_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_redis() -> Iterator[str]:
    """An empty Redis database index of its own (1..15); yields its URL and empties it afterwards."""
    import redis

    for index in secrets.SystemRandom().sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{REDIS_BASE}/{index}")
        if client.setnx("marionet-test-lock", "1"):
            if client.dbsize() == 1:
                break
            client.delete("marionet-test-lock")
    else:
        raise RuntimeError("no free Redis database index")
    try:
        yield f"{REDIS_BASE}/{index}"
    finally:
        client.flushdb()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """One API server and any number of worker processes sharing one database, one broker, one storage dir."""

    root: Path
    database_url: str
    redis_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    api: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    key: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MARIONET_QUEUE": "celery",
            "MARIONET_DATABASE_URL": self.database_url,
            "MARIONET_REDIS_URL": self.redis_url,
            "MARIONET_DATA_DIR": str(data_dir),
            "MARIONET_STORAGE_DIR": str(self.root / "shared"),
            "MARIONET_SECRET": "cluster-test-secret",
            "MARIONET_PUBLIC_URL": self.base_url,
            "MARIONET_HEARTBEAT_INTERVAL_S": "0.5",
            "MARIONET_LEASE_TIMEOUT_S": "4",
            **self.extra_env,
        }
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it until it exits
        return subprocess.Popen(
            [sys.executable, "-m", "marionet", *args],
            cwd=REPO,
            env={**self.env(data_dir), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_api(self) -> None:
        """Create a key, start `marionet serve` and wait until /healthz answers."""
        out = subprocess.run(
            [sys.executable, "-m", "marionet", "keys", "create", "--name", "cluster-test"],
            cwd=REPO,
            env=self.env(self.root / "api"),
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = out.stdout.strip().splitlines()[-1]
        self.api = self._spawn("api", ["serve", "--host", "127.0.0.1", "--port", str(self.port)])
        wait_for(lambda: self._healthy(), 60, "API /healthz", self.root / "api.log")

    def _healthy(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            raise RuntimeError(f"API exited with {self.api.returncode}: {self.log('api')[-3000:]}")
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = self._spawn(name, ["worker", *extra], env)
        self.workers[name] = proc
        wait_for(lambda: "ready." in self.log(name) or proc.poll() is not None, 60, f"worker {name}")
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited with {proc.returncode}: {self.log(name)[-3000:]}")
        return proc

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.api] if self.api else [])]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=30)
        self.workers.clear()
        self.api = None

    # HTTP helpers
    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )

    def upload(self, path: Path) -> str:
        with self.client() as client, path.open("rb") as fh:
            response = client.post("/v1/files", files={"file": (path.name, fh)})
        response.raise_for_status()
        return response.json()["url"]

    def create_task(self, image_url: str, video_url: str) -> str:
        with self.client() as client:
            response = client.post(
                "/v1/videos/generations",
                json={"image_url": image_url, "video_url": video_url, "keep_original_sound": "no"},
            )
        response.raise_for_status()
        return response.json()["id"]

    def task(self, task_id: str) -> dict:
        with self.client() as client:
            response = client.get(f"/v1/tasks/{task_id}")
        response.raise_for_status()
        return response.json()

    def tasks(self, ids: list[str]) -> dict[str, dict]:
        return {task_id: self.task(task_id) for task_id in ids}


def wait_for(predicate, timeout_s: float, what: str, log: Path | None = None):
    """Poll `predicate` until it returns something truthy; fail with `what` (and a log tail) on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail}")


@contextmanager
def running_cluster(root: Path, **extra_env: str) -> Iterator[Cluster]:
    """A fresh database and broker, an API server (no workers yet); everything is torn down on exit."""
    ensure_services()
    with fresh_database() as database_url, fresh_redis() as redis_url:
        cluster = Cluster(root=root, database_url=database_url, redis_url=redis_url, extra_env=extra_env)
        try:
            cluster.start_api()
            yield cluster
        finally:
            cluster.stop()
