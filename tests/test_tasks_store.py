"""The task store on a real database: atomic claims, monotonic progress, recovery and retention.
SQLite always; PostgreSQL too when one answers on loopback (MARIONET_TEST_PG)."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from marionet.api.app import create_app
from marionet.config import Settings
from marionet.media.cache import InputCache
from marionet.tasks.callbacks import resend_lost_callbacks
from marionet.tasks.db import migrate
from marionet.tasks.models import Task
from marionet.tasks.retention import purge_expired
from marionet.tasks.signing import result_link
from marionet.tasks.store import NewTask, Store
from tests.servers import CallbackReceiver

PG = os.environ.get("MARIONET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_url():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL on loopback")
    name = f"marionet_store_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    yield PG.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    from marionet.tasks.db import get_engine

    for url in list(_opened):
        get_engine(url).dispose()
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


_opened: set[str] = set()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store(request, tmp_path):
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path)
        migrate(settings)
        yield Store(settings)
        return
    gen = _postgres_url()
    url = next(gen)
    _opened.add(url)
    settings = Settings(data_dir=tmp_path, database_url=url)
    migrate(settings)
    yield Store(settings)
    next(gen, None)


def new_task(store: Store, key_id: int, callback_url: str | None = None) -> str:
    params = NewTask(
        model="kling-v3-motion-control",
        engine="marionet-cpu",
        mode="std",
        prompt="",
        character_orientation="image",
        keep_original_sound=True,
        image_url="http://127.0.0.1/i.jpg",
        video_url="http://127.0.0.1/v.mp4",
        callback_url=callback_url,
        base_url="http://127.0.0.1:1",
    )
    return store.create_task(key_id, params).id


def test_reads_do_not_wait_for_a_writer_on_sqlite(tmp_path):
    """A poll reads its snapshot while another process holds the write lock (it used to wait, then fail)."""
    import sqlite3

    settings = Settings(data_dir=tmp_path)
    migrate(settings)
    store = Store(settings)
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    writer = sqlite3.connect(tmp_path / "marionet.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE tasks SET progress = 7")
    try:
        assert store.get_task(task_id, key.id).progress == 0
        assert [t.id for t in store.list_tasks(key.id, 10, None)[0]] == [task_id]
        assert store.counts_by_status()["pending"] == 1
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert store.get_task(task_id).progress == 7


def test_one_claim_wins_among_concurrent_claimers(store):
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    barrier = threading.Barrier(12)

    def claim(_: int) -> bool:
        barrier.wait()
        return store.claim(task_id)

    with ThreadPoolExecutor(12) as pool:
        wins = list(pool.map(claim, range(12)))
    assert wins.count(True) == 1
    task = store.get_task(task_id)
    assert task.status == "processing" and task.attempts == 1


def test_concurrent_claims_of_one_key_never_exceed_its_running_limit(store):
    key, _ = store.create_key("k")
    tasks = [new_task(store, key.id) for _ in range(6)]
    barrier = threading.Barrier(len(tasks))

    def claim(task_id: str) -> bool | None:
        barrier.wait()
        return store.claim_within_limit(task_id)

    with ThreadPoolExecutor(len(tasks)) as pool:
        outcomes = list(pool.map(claim, tasks))
    # max_running_per_key=2: two win, the rest are told the key is busy and stay pending.
    assert outcomes.count(True) == 2 and outcomes.count(None) == 4
    statuses = [store.get_task(task_id).status for task_id in tasks]
    assert statuses.count("processing") == 2 and statuses.count("pending") == 4
    assert store.claim_within_limit(tasks[outcomes.index(True)]) is None  # busy is checked before pending
    assert store.claim_within_limit("task-unified-0-nosuchtask") is False


def test_claim_next_hands_each_task_out_once(store):
    keys = [store.create_key(f"k{i}")[0] for i in range(5)]
    created = {new_task(store, keys[i % 5].id) for i in range(10)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(_: int) -> None:
        while (task_id := store.claim_next()) is not None:
            with lock:
                claimed.append(task_id)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    assert sorted(claimed) == sorted(created)


def test_claim_next_respects_the_running_limit_per_key(store):
    key, _ = store.create_key("busy")
    other, _ = store.create_key("other")
    for _ in range(3):
        new_task(store, key.id)
    late = new_task(store, other.id)
    first, second = store.claim_next(), store.claim_next()
    assert {store.get_task(first).api_key_id, store.get_task(second).api_key_id} == {key.id}
    assert store.claim_next() == late  # the busy key's third task waits: max_running_per_key=2
    assert store.claim_next() is None


def test_progress_only_rises_and_reports_cancel(store):
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    assert store.claim(task_id)
    assert store.report_progress(task_id, 40) is False
    store.report_progress(task_id, 20)
    assert store.get_task(task_id).progress == 40
    assert store.request_cancel(task_id, key.id) is False  # processing: flagged for the runner
    assert store.report_progress(task_id, 41) is True


def test_recovery_reruns_then_fails_after_max_attempts(store):
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    for attempt in (1, 2):
        assert store.claim(task_id)
        store.report_progress(task_id, 20 * attempt, attempt=attempt)
        requeued, failed = store.recover_interrupted()
        if attempt == 1:
            assert requeued == [task_id] and failed == []
            task = store.get_task(task_id)
            assert task.status == "pending"
            assert task.progress == 20  # a client polling never sees progress drop after a crash-retry
    assert failed == [task_id]
    task = store.get_task(task_id)
    assert task.status == "failed" and task.error_code == "worker_lost" and task.attempts == 2


@pytest.mark.services
def test_a_worker_frozen_inside_a_transaction_does_not_keep_its_task_from_being_taken_over(
    tmp_path, monkeypatch
):
    # A worker stopped (SIGSTOP, a paused VM) between its heartbeat's UPDATE and the COMMIT held the task's row
    # locked while frozen, and the reaper requeueing the task waited on that lock for as long: the cluster's
    # stalled-worker test hung 240 s in about one run in eight. PostgreSQL now ends such a session.
    from marionet.tasks import db

    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION_S", 1.0)  # 30 s in service; read when the engine is made
    gen = _postgres_url()
    url = next(gen)
    _opened.add(url)
    settings = Settings(data_dir=tmp_path, database_url=url)
    migrate(settings)
    store = Store(settings)
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    assert store.claim(task_id)
    frozen = db.get_engine(url).connect()
    reaper = ThreadPoolExecutor(max_workers=1)
    try:
        frozen.execute(update(Task).where(Task.id == task_id).values(heartbeat_at=time.time()))  # no COMMIT
        recovery = reaper.submit(store.recover_interrupted, time.time() + 1)
        assert recovery.result(timeout=20) == ([task_id], [])
        assert store.get_task(task_id).status == "pending"
        with pytest.raises(DBAPIError):  # thawed, the frozen worker learns its session was ended
            frozen.commit()
    finally:
        frozen.close()  # rolls back, releasing the lock, where the session still stood
        reaper.shutdown(wait=True)
        next(gen, None)


def test_only_the_attempt_that_owns_the_task_can_complete_it(store):
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    assert store.claim(task_id)
    store.recover_interrupted()  # attempt 1's worker is presumed dead: the task goes back to pending
    assert store.claim(task_id)  # attempt 2 takes it over
    assert store.complete(task_id, f"results/{task_id}.a1.mp4", 1.0, [], attempt=1) is False
    assert store.get_task(task_id).status == "processing"
    assert store.complete(task_id, f"results/{task_id}.a2.mp4", 1.0, [], attempt=2) is True
    task = store.get_task(task_id)
    assert task.status == "completed" and task.result_path == f"results/{task_id}.a2.mp4"


def test_an_old_attempt_can_neither_fail_nor_move_a_task_a_newer_one_owns(store):
    key, _ = store.create_key("k")
    task_id = new_task(store, key.id)
    assert store.claim(task_id)
    assert store.report_progress(task_id, 30, attempt=1) is False
    store.recover_interrupted()  # attempt 1 presumed dead: back to pending, still attempts=1
    assert store.fail(task_id, "engine_failed", "late", attempt=1) is False
    assert store.report_progress(task_id, 50, attempt=1) is True  # told to stop
    assert store.get_task(task_id).status == "pending"
    assert store.claim(task_id)  # attempt 2
    claimed = store.get_task(task_id)
    assert store.fail(task_id, "engine_failed", "late", attempt=1) is False
    assert store.report_progress(task_id, 60, attempt=1) is True
    task = store.get_task(task_id)
    assert (task.status, task.progress, task.heartbeat_at) == (
        "processing",
        claimed.progress,
        claimed.heartbeat_at,
    )
    assert store.report_progress(task_id, 60, attempt=2) is False
    assert store.fail(task_id, "engine_failed", "no person", attempt=2) is True
    task = store.get_task(task_id)
    assert (task.status, task.error_code, task.progress) == ("failed", "engine_failed", 60)


def test_retention_prunes_the_input_cache_and_dead_runs_scratch_folders(tmp_path):
    settings = Settings(data_dir=tmp_path, retention_hours=1.0)
    migrate(settings)
    store = Store(settings)
    key, _ = store.create_key("k")
    running, finished = new_task(store, key.id), new_task(store, key.id)
    assert store.claim(running) and store.claim(finished)
    assert store.fail(finished, "engine_failed", "no person", attempt=1)
    cache = InputCache(settings)
    blob = cache.blob(cache.add_bytes(b"an input nobody used for a while"))
    cache.remember_url("https://cdn.example/a.png", blob.name)
    work = settings.resolved_storage_dir() / "work"
    folders = {name: work / name for name in (f"{running}.a1", f"{finished}.a1", f"{running}.a0", "odd")}
    for folder in folders.values():
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "frame.png").write_bytes(b"x")

    purge_expired(settings, store)  # nothing is old yet
    assert blob.exists() and all(folder.exists() for folder in folders.values())

    purge_expired(settings, store, now=time.time() + 2 * 3600)
    assert not blob.exists() and list(cache.urls.iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == [f"{running}.a1"]  # the running attempt's own


def test_healthz_is_503_in_the_error_shape_when_the_database_does_not_answer(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp_path, database_url=f"postgresql+psycopg://x@127.0.0.1:{port}/none")
    client = TestClient(create_app(settings, run_workers=False))  # no lifespan: it would migrate first
    r = client.get("/healthz")
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("database_unavailable", "api_error", None)
    assert "database does not answer" in error["message"]


def test_retention_deletes_results_and_the_link_answers_410(tmp_path):
    settings = Settings(data_dir=tmp_path, retention_hours=1.0)
    migrate(settings)
    store = Store(settings)
    key, token = store.create_key("k")
    task_id = new_task(store, key.id)
    assert store.claim(task_id)
    result = settings.resolved_storage_dir() / "results" / f"{task_id}.mp4"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    assert store.complete(task_id, f"results/{task_id}.mp4", 2.0, [])
    upload = settings.resolved_storage_dir() / "files" / "file-old"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(upload, (old, old))

    with TestClient(create_app(settings, run_workers=False)) as client:
        link = result_link(task_id, str(client.base_url), settings)
        for _ in range(100):  # the server's janitor runs a pass at startup
            if not upload.exists():
                break
            time.sleep(0.05)
        assert not upload.exists()  # two hours old: gone
        assert client.get(link).status_code == 200  # an hour not passed: kept
        assert purge_expired(settings, store) == 0
        assert purge_expired(settings, store, now=time.time() + 3700) == 1
        assert not result.exists()
        r = client.get(link)
        assert r.status_code == 410 and r.json()["error"]["code"] == "result_deleted"
        task = client.get(f"/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"}).json()
        assert task["status"] == "completed" and httpx.URL(task["results"][0]).path.endswith(".mp4")


def test_a_callback_whose_sender_died_is_sent_again_once_and_only_when_it_cannot_still_be_retrying(store):
    settings = store.settings.model_copy(update={"url_allowlist": "127.0.0.1"})
    receiver = CallbackReceiver()
    try:
        key, _ = store.create_key("k")
        lost, recent, delivered = (new_task(store, key.id, receiver.url) for _ in range(3))
        for task_id in (lost, recent, delivered):
            assert store.claim(task_id) and store.fail(task_id, "engine_failed", "no person", attempt=1)
        store.set_callback_status(delivered, "delivered")
        # The process sending `lost`'s callback died an hour ago; `recent` ended moments ago and may still be
        # retrying: only the first is sent again, once, whoever else sweeps at the same time.
        with store.session.begin() as s:
            s.execute(update(Task).where(Task.id == lost).values(finished_at=time.time() - 3600))
        assert resend_lost_callbacks(settings, store) == [lost]
        assert resend_lost_callbacks(settings, store) == []
        deadline = time.monotonic() + 10
        while store.get_task(lost).callback_status != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get_task(lost).callback_status == "delivered"
        assert [body["id"] for body in receiver.bodies()] == [lost]
        assert store.get_task(recent).callback_status is None
    finally:
        receiver.close()
