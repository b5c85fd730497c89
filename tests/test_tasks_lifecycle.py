"""Tasks running for real: the embedded pool, the CPU engine on short real media, callbacks, cancel and
restart recovery (SIGKILL mid-task)."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from marionet.config import Settings
from marionet.media.video import probe_video
from tests.servers import CallbackReceiver, Server, create_key, media_server, wait_for

pytestmark = pytest.mark.slow

TERMINAL = ("completed", "failed")


def upload(client: httpx.Client, path) -> str:
    with path.open("rb") as f:
        r = client.post("/v1/files", files={"file": (path.name, f)})
    assert r.status_code == 200, r.text
    return r.json()["url"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("lifecycle"), {"MARIONET_CALLBACK_BACKOFF_S": "0.2"})
    srv.key = create_key(srv.data_dir, "runner")
    srv.start()
    yield srv
    srv.stop()


def test_task_completes_with_progress_result_and_signed_callback(server, data_dir, tmp_path):
    receiver = CallbackReceiver(fail_first=1)  # the first delivery fails: the retry must arrive
    video = data_dir / "halfbody_talk_3s.mp4"
    with server.client(server.key) as client:
        r = client.post(
            "/v1/videos/generations",
            json={
                "image_url": upload(client, data_dir / "halfbody_ref_elf.jpg"),
                "video_url": upload(client, video),
                "callback_url": receiver.url,
                "keep_original_sound": "no",
            },
        )
        assert r.status_code == 200, r.text
        task_id = r.json()["id"]
        seen: list[dict] = []

        def done(task: dict) -> bool:
            seen.append(task)
            return task["status"] in TERMINAL

        task = wait_for(client, task_id, done)
    assert task["status"] == "completed", task
    statuses = [t["status"] for t in seen]
    assert set(statuses) <= {"pending", "processing", "completed"}
    progress = [t["progress"] for t in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert task["task_info"] == {"can_cancel": False, "estimated_time": 0}
    assert task["usage"]["billed_seconds"] == math.ceil(probe_video(video).duration_s)
    assert "error" not in task and len(task["results"]) == 1

    # The result downloads without a key and is a real MP4 as long as the driving video.
    r = httpx.get(task["results"][0], timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    out = tmp_path / "result.mp4"
    out.write_bytes(r.content)
    info = probe_video(out)
    assert info.frame_count > 0 and abs(info.duration_s - probe_video(video).duration_s) < 0.5

    # The callback: retried after the 500, body is the final task object, signature verifies.
    for _ in range(100):
        if len(receiver.posts) >= 2:
            break
        time.sleep(0.1)
    receiver.close()
    assert len(receiver.posts) == 2
    secret = (server.data_dir / "secret").read_text().strip().encode()
    for headers, body in receiver.posts:
        assert headers["x-marionet-signature"] == hmac.new(secret, body, hashlib.sha256).hexdigest()
        sent = json.loads(body)
        assert sent["id"] == task_id and sent["status"] == "completed" and sent["progress"] == 100

    metrics = httpx.get(f"{server.url}/metrics").text
    assert float(re.search(r"^marionet_engine_seconds_total (\S+)$", metrics, re.M).group(1)) > 0
    speed = float(re.search(r"^marionet_engine_seconds_per_video_second (\S+)$", metrics, re.M).group(1))
    # Measured, no longer the configured default.
    assert speed > 0 and speed != Settings().default_engine_speed
    # The engine's pose cache belongs to this server's data dir (--data-dir), not to the working directory.
    assert any((server.data_dir / "cache" / "poses").iterdir())


def test_cancel_stops_a_processing_task(server, data_dir):
    with server.client(server.key) as client:
        task_id = client.post(
            "/v1/videos/generations",
            json={
                "image_url": upload(client, data_dir / "dance_ref_cartoon.png"),
                "video_url": upload(client, data_dir / "dance_fullbody_12s.mp4"),
                "character_orientation": "video",
            },
        ).json()["id"]
        task = wait_for(client, task_id, lambda t: t["progress"] > 5 or t["status"] in TERMINAL)
        assert task["status"] == "processing", task
        r = client.post(f"/v1/tasks/{task_id}/cancel")
        assert r.status_code == 200 and r.json()["task_info"]["can_cancel"] is False
        task = wait_for(client, task_id, lambda t: t["status"] in TERMINAL, timeout=60)
        assert task["status"] == "failed" and task["error"]["code"] == "task_cancelled"
        assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 409


def test_restart_after_sigkill_reruns_the_task(tmp_path, data_dir):
    srv = Server(tmp_path / "data")
    key = create_key(srv.data_dir, "restart")
    srv.start()
    try:
        with srv.client(key) as client:
            task_id = client.post(
                "/v1/videos/generations",
                json={
                    "image_url": upload(client, data_dir / "halfbody_ref_elf.jpg"),
                    "video_url": upload(client, data_dir / "halfbody_talk_3s.mp4"),
                },
            ).json()["id"]
            task = wait_for(client, task_id, lambda t: t["progress"] > 5 or t["status"] in TERMINAL)
            assert task["status"] == "processing", task
        srv.stop(kill=True)
        srv.start()
        with srv.client(key) as client:
            task = wait_for(client, task_id, lambda t: t["status"] in TERMINAL)
        assert task["status"] == "completed", task
        assert httpx.get(task["results"][0], timeout=30).status_code == 200
    finally:
        srv.stop()


def test_task_killed_on_every_attempt_fails_with_a_code(tmp_path, data_dir):
    stalled = media_server(data_dir, stall_s=120)  # the fetch never finishes: the task sits in processing
    srv = Server(tmp_path / "data", {"MARIONET_FETCH_READ_TIMEOUT_S": "300"})
    key = create_key(srv.data_dir, "stuck")
    try:
        srv.start()
        with srv.client(key) as client:
            task_id = client.post(
                "/v1/videos/generations",
                json={
                    "image_url": f"{stalled.url}/halfbody_ref_elf.jpg",
                    "video_url": f"{stalled.url}/halfbody_talk_3s.mp4",
                },
            ).json()["id"]
        for _ in range(2):
            with srv.client(key) as client:
                task = wait_for(client, task_id, lambda t: t["status"] != "pending", timeout=60)
                assert task["status"] == "processing", task
            srv.stop(kill=True)
            srv.start()
        with srv.client(key) as client:
            task = wait_for(client, task_id, lambda t: t["status"] in TERMINAL, timeout=30)
        assert task["status"] == "failed" and task["error"]["code"] == "worker_lost", task
    finally:
        srv.stop()
        stalled.close()


def _task_children(server_pid: int) -> list[int]:
    """Pids of the spawned task processes of the server (not its resource tracker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and b"spawn_main" in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_crashing_task_process_fails_that_task_only(server, data_dir):
    with server.client(server.key) as client:
        body = {
            "image_url": upload(client, data_dir / "dance_ref_cartoon.png"),
            "video_url": upload(client, data_dir / "dance_fullbody_12s.mp4"),
            "character_orientation": "video",
        }
        task_id = client.post("/v1/videos/generations", json=body).json()["id"]
        task = wait_for(client, task_id, lambda t: t["progress"] > 5 or t["status"] in TERMINAL)
        assert task["status"] == "processing", task
        children = _task_children(server.proc.pid)
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)  # as a segfault in native media code would end it
        task = wait_for(client, task_id, lambda t: t["status"] in TERMINAL, timeout=60)
        assert task["status"] == "failed" and task["error"]["code"] == "engine_crashed", task
        assert client.get("/healthz").status_code == 200
        assert server.proc.poll() is None


def test_an_idle_server_has_a_task_process_ready_and_the_next_task_runs_in_it(server, data_dir):
    # The spare child does its imports while the server is idle, so a task does not wait for them.
    with server.client(server.key) as client:
        deadline = time.monotonic() + 60
        while len(children := _task_children(server.proc.pid)) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children) == 1, children
        spare = children[0]
        body = {
            "image_url": upload(client, data_dir / "halfbody_ref_elf.jpg"),
            "video_url": upload(client, data_dir / "halfbody_talk_3s.mp4"),
        }
        task_id = client.post("/v1/videos/generations", json=body).json()["id"]
        task = wait_for(client, task_id, lambda t: t["progress"] > 5 or t["status"] in TERMINAL)
        assert _task_children(server.proc.pid) == [spare]  # the task runs in the ready process, alone
        task = wait_for(client, task_id, lambda t: t["status"] in TERMINAL, timeout=120)
        assert task["status"] == "completed", task
        # Once the task is done its process has ended and a fresh spare waits for the next one.
        deadline = time.monotonic() + 60
        while (children := _task_children(server.proc.pid)) in ([], [spare]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children) == 1 and children != [spare], children


def test_with_a_task_waiting_the_next_task_process_gets_ready_beside_the_running_one(server, data_dir):
    # A burst: the second task's process does its imports while the first task runs, not after it.
    with server.client(server.key) as client:
        body = {
            "image_url": upload(client, data_dir / "halfbody_ref_elf.jpg"),
            "video_url": upload(client, data_dir / "halfbody_talk_3s.mp4"),
        }
        first = client.post("/v1/videos/generations", json=body).json()["id"]
        second = client.post("/v1/videos/generations", json=body).json()["id"]
        wait_for(client, first, lambda t: t["status"] != "pending")
        deadline = time.monotonic() + 60
        children: list[int] = []
        while client.get(f"/v1/tasks/{second}").json()["status"] == "pending" and time.monotonic() < deadline:
            children = _task_children(server.proc.pid) if len(children) < 2 else children
            time.sleep(0.05)
        assert len(children) == 2, children  # the running task's process and the next one's, ready
        task = wait_for(client, second, lambda t: t["status"] != "pending", timeout=120)
        running = _task_children(server.proc.pid)
        if task["status"] == "processing":  # (a task already done has no process left to compare)
            assert set(running) & set(children), (running, children)  # it runs in the process made ready
        for task_id in (first, second):
            assert (
                wait_for(client, task_id, lambda t: t["status"] in TERMINAL, timeout=120)["status"]
                == "completed"
            )
