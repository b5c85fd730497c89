"""The cluster against real Redis and PostgreSQL on loopback: an API that only enqueues, worker subprocesses."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.clusterkit import TERMINAL, Cluster, running_cluster, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

IMAGE = "halfbody_ref_elf.jpg"
VIDEO = "halfbody_talk_3s.mp4"
TASK_TIMEOUT_S = 240


@pytest.fixture
def cluster(tmp_path: Path):
    with running_cluster(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def inputs(cluster: Cluster, data_dir: Path) -> tuple[str, str]:
    return cluster.upload(data_dir / IMAGE), cluster.upload(data_dir / VIDEO)


def db_rows(cluster: Cluster, query: str) -> list[tuple]:
    with psycopg.connect(cluster.database_url.replace("+psycopg", "")) as conn:
        return conn.execute(query).fetchall()


def wait_terminal(cluster: Cluster, ids: list[str]) -> dict[str, dict]:
    def all_done() -> dict[str, dict] | None:
        tasks = cluster.tasks(ids)
        return tasks if all(t["status"] in TERMINAL for t in tasks.values()) else None

    return wait_for(all_done, TASK_TIMEOUT_S, f"{len(ids)} tasks to end")


def running_on(cluster: Cluster, task_id: str) -> str | None:
    """The worker whose log says it is running `task_id` (each worker logs one line per claimed task)."""
    pattern = re.compile(rf"worker \S+ running task {re.escape(task_id)}")
    return next((name for name in cluster.workers if pattern.search(cluster.log(name))), None)


def test_sigkilled_worker_loses_nothing(cluster: Cluster, inputs: tuple[str, str]) -> None:
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    ids = [cluster.create_task(*inputs) for _ in range(8)]

    # Kill the worker of a task that is well inside the engine, not between two tasks.
    def victim_task() -> str | None:
        return next(
            (i for i, t in cluster.tasks(ids).items() if t["status"] == "processing" and t["progress"] >= 10),
            None,
        )

    victim = wait_for(victim_task, TASK_TIMEOUT_S, "a task inside the engine")
    worker = running_on(cluster, victim)
    assert worker is not None
    cluster.kill_worker(worker, signal.SIGKILL)

    tasks = wait_terminal(cluster, ids)
    assert {t["status"] for t in tasks.values()} == {"completed"}, {
        i: t.get("error") for i, t in tasks.items()
    }
    for task in tasks.values():
        assert len(task["results"]) == 1
        assert task["progress"] == 100
    attempts = dict(db_rows(cluster, "SELECT id, attempts FROM tasks"))
    assert attempts[victim] == 2
    assert sorted(attempts.values()) == [1] * 7 + [2]

    # Exactly one stored result per task, and every link downloads an MP4.
    results = sorted(p.name for p in (cluster.root / "shared" / "results").iterdir())
    assert results == sorted(f"{i}.mp4" for i in ids)
    with httpx.Client(timeout=60) as client:
        response = client.get(tasks[victim]["results"][0])
    assert response.status_code == 200
    assert response.content[4:8] == b"ftyp"


def test_cancel_reaches_a_worker_and_restart_picks_up_queued_work(
    cluster: Cluster, inputs: tuple[str, str]
) -> None:
    cluster.start_worker("w1")
    running = cluster.create_task(*inputs)
    wait_for(
        lambda: cluster.task(running)["status"] == "processing" and cluster.task(running)["progress"] >= 10,
        TASK_TIMEOUT_S,
        "the task inside the engine",
    )
    with cluster.client() as client:
        assert client.post(f"/v1/tasks/{running}/cancel").status_code == 200
    cancelled = wait_terminal(cluster, [running])[running]
    assert cancelled["status"] == "failed"
    assert cancelled["error"]["code"] == "task_cancelled"
    assert "results" not in cancelled

    # Stop the only worker: new tasks wait in the queue, and a restarted worker runs them.
    cluster.kill_worker("w1", signal.SIGTERM)
    queued = [cluster.create_task(*inputs) for _ in range(2)]
    assert [cluster.task(i)["status"] for i in queued] == ["pending", "pending"]
    cluster.start_worker("w1-restarted")
    tasks = wait_terminal(cluster, queued)
    assert [tasks[i]["status"] for i in queued] == ["completed", "completed"]
    assert all(running_on(cluster, i) == "w1-restarted" for i in queued)
