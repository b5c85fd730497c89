"""The cluster against real Redis and PostgreSQL on loopback: an API that only enqueues, worker subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from marionet.cluster import RUN_TASK, make_celery, queue_for_engine
from marionet.config import Settings
from tests.clusterkit import REPO, TERMINAL, Cluster, free_port, running_cluster, wait_for

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


def test_worker_refuses_engines_it_cannot_run() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "marionet", "worker", "--engines", "marionet-cpu,no-such-gpu-engine"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no-such-gpu-engine" in out.stdout


def test_embedded_default_needs_no_broker(tmp_path: Path) -> None:
    """The default app starts its pool without importing Celery or Redis (so neither needs to be running)."""
    code = (
        "import sys; from marionet.api.app import create_app; from marionet.config import Settings; "
        f"app = create_app(Settings(data_dir={str(tmp_path)!r})); "
        "print(type(app.state.dispatcher).__name__, 'celery' in sys.modules, 'redis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert out.stdout.split() == ["EmbeddedDispatcher", "False", "False"], out.stderr


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MARIONET_")}


@pytest.mark.services
@pytest.mark.slow
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
    assert results == sorted(f"{i}.a{attempts[i]}.mp4" for i in ids)
    with httpx.Client(timeout=60) as client:
        response = client.get(tasks[victim]["results"][0])
    assert response.status_code == 200
    assert response.content[4:8] == b"ftyp"


@pytest.mark.services
@pytest.mark.slow
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
    # The same task also waits on another engine's queue, which this CPU worker never declared.
    gpu_queue = queue_for_engine("some-gpu-engine")
    make_celery(Settings(redis_url=cluster.redis_url)).send_task(RUN_TASK, args=[queued[0]], queue=gpu_queue)
    cluster.start_worker("w1-restarted")
    tasks = wait_terminal(cluster, queued)
    assert [tasks[i]["status"] for i in queued] == ["completed", "completed"]
    assert all(running_on(cluster, i) == "w1-restarted" for i in queued)
    assert redis.Redis.from_url(cluster.redis_url).llen(gpu_queue) == 1


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize("first_to_learn", ["either", "engine"])
def test_stalled_worker_never_writes_a_second_result(
    cluster: Cluster, inputs: tuple[str, str], first_to_learn: str
) -> None:
    # Thawed, the worker learns it was taken over from its heartbeat thread or from the engine's next progress
    # report, whichever comes first. A heartbeat that sleeps for minutes leaves it to the engine (whose
    # reports beat the lease meanwhile): that worker used to stop the run but live on.
    env = {"MARIONET_HEARTBEAT_INTERVAL_S": "600"} if first_to_learn == "engine" else None
    stalled = cluster.start_worker("stalled", env=env)
    task_id = cluster.create_task(*inputs)
    wait_for(
        lambda: cluster.task(task_id)["status"] == "processing" and cluster.task(task_id)["progress"] >= 10,
        TASK_TIMEOUT_S,
        "the task inside the engine",
    )
    # Frozen, the worker sends no heartbeats: another worker takes the task over and completes it.
    os.killpg(stalled.pid, signal.SIGSTOP)
    cluster.start_worker("rescuer")
    task = wait_terminal(cluster, [task_id])[task_id]
    assert task["status"] == "completed"
    assert db_rows(cluster, "SELECT attempts FROM tasks") == [(2,)]

    # Thawed, it finds its attempt superseded and exits before it can write anything.
    os.killpg(stalled.pid, signal.SIGCONT)
    assert stalled.wait(timeout=120) == 75
    assert "was taken over" in cluster.log("stalled")
    assert [p.name for p in (cluster.root / "shared" / "results").iterdir()] == [f"{task_id}.a2.mp4"]
    with httpx.Client(timeout=60) as client:
        response = client.get(task["results"][0])
    assert response.status_code == 200
    assert response.content[4:8] == b"ftyp"
    assert cluster.task(task_id)["status"] == "completed"


@pytest.mark.services
@pytest.mark.slow
def test_worker_fails_a_task_past_its_time_limit(cluster: Cluster, inputs: tuple[str, str]) -> None:
    worker = cluster.start_worker("w1", env={"MARIONET_TASK_TIMEOUT_S": "2"})
    task_id = cluster.create_task(*inputs)
    task = wait_terminal(cluster, [task_id])[task_id]
    assert task["status"] == "failed"
    assert task["error"]["code"] == "task_timeout"
    # The engine stops at its next progress report and the worker lives on for the next task.
    wait_for(lambda: "succeeded in" in cluster.log("w1"), TASK_TIMEOUT_S, "the run to return")
    assert worker.poll() is None
    assert "stopping this worker" not in cluster.log("w1")


@pytest.mark.services
@pytest.mark.slow
def test_attempts_are_bounded(cluster: Cluster, inputs: tuple[str, str]) -> None:
    one_attempt = {"MARIONET_MAX_ATTEMPTS": "1"}
    cluster.start_worker("doomed", env=one_attempt)
    task_id = cluster.create_task(*inputs)
    wait_for(
        lambda: cluster.task(task_id)["status"] == "processing" and cluster.task(task_id)["progress"] >= 10,
        TASK_TIMEOUT_S,
        "the task inside the engine",
    )
    cluster.kill_worker("doomed", signal.SIGKILL)
    cluster.start_worker("survivor", env=one_attempt)
    task = wait_terminal(cluster, [task_id])[task_id]
    assert task["status"] == "failed"
    assert task["error"]["code"] == "worker_lost"
    assert "results" not in task
    assert db_rows(cluster, "SELECT attempts FROM tasks") == [(1,)]
    assert not list((cluster.root / "shared" / "results").glob("*.mp4"))


@pytest.mark.services
@pytest.mark.slow
def test_tasks_whose_message_never_reached_the_queue_still_run(
    cluster: Cluster, inputs: tuple[str, str]
) -> None:
    # An API whose Redis is down still saves the task and answers 200 (not a 500 with a task left behind).
    port = free_port()
    dead_redis = {"MARIONET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    api2 = cluster._spawn("api2", ["serve", "--host", "127.0.0.1", "--port", str(port)], dead_redis)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/healthz"), 60, "the second API", cluster.root / "api2.log")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=60) as c:
            r = c.post("/v1/videos/generations", json={"image_url": inputs[0], "video_url": inputs[1]})
        assert r.status_code == 200, r.text
        unsent = r.json()["id"]
    finally:
        os.killpg(api2.pid, signal.SIGKILL)
        api2.wait(timeout=30)
    assert "saved but not sent to the queue" in cluster.log("api2")
    # A message lost from the broker (here deleted) is just as lost.
    lost = cluster.create_task(*inputs)
    assert redis.Redis.from_url(cluster.redis_url).delete(queue_for_engine("marionet-cpu")) == 1

    cluster.start_worker("w1")
    tasks = wait_terminal(cluster, [unsent, lost])
    assert [tasks[i]["status"] for i in (unsent, lost)] == ["completed", "completed"]
    assert "sent again" in cluster.log("w1")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
