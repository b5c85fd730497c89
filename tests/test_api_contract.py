"""Contract tests over HTTP against the real server (API only: no workers, so tasks stay as created)."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import httpx
import pytest
from conftest import DATA

from marionet.config import Settings
from marionet.engine import PROMPT_WARNING
from marionet.tasks.signing import result_link
from tests.servers import Server, cli, create_key

ID = re.compile(r"^task-unified-(\d+)-[a-z0-9]{8}$")
ERROR_KEYS = {"code", "message", "type", "param"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    srv = Server(tmp_path_factory.mktemp("contract"), {"MARIONET_EMBEDDED_WORKERS": "false"})
    srv.keys = {name: create_key(srv.data_dir, name) for name in ("alice", "bob", "carol", "dave")}
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(server) -> httpx.Client:
    with server.client(server.keys["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def uploads(alice, data_dir) -> dict[str, str]:
    urls = {}
    for name in ("halfbody_ref_elf.jpg", "halfbody_talk_3s.mp4"):
        with (data_dir / name).open("rb") as f:
            r = alice.post("/v1/files", files={"file": (name, f)})
        assert r.status_code == 200, r.text
        urls[name] = r.json()["url"]
    return urls


@pytest.fixture()
def body(uploads) -> dict:
    return {"image_url": uploads["halfbody_ref_elf.jpg"], "video_url": uploads["halfbody_talk_3s.mp4"]}


def assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param
    return err


def test_create_returns_the_contract_task_object(alice, body):
    before = int(time.time())
    r = alice.post("/v1/videos/generations", json=body)
    assert r.status_code == 200, r.text
    task = r.json()
    assert set(task) == {
        "created", "id", "model", "object", "progress", "status", "task_info", "type", "usage", "warnings"
    }  # fmt: skip
    match = ID.match(task["id"])
    assert match and int(match.group(1)) == task["created"]
    assert before <= task["created"] <= int(time.time())
    assert task["model"] == "kling-v3-motion-control"
    assert task["object"] == "video.generation.task"
    assert task["type"] == "video"
    assert task["progress"] == 0
    assert task["status"] == "pending"
    assert task["task_info"]["can_cancel"] is True
    assert isinstance(task["task_info"]["estimated_time"], int) and task["task_info"]["estimated_time"] > 0
    assert task["usage"] == {"billing_rule": "per_second", "billed_seconds": None, "mode": "std"}
    assert task["warnings"] == []
    for path in (f"/v1/tasks/{task['id']}", f"/v1/videos/generations/{task['id']}"):
        again = alice.get(path).json()
        assert {k: v for k, v in again.items() if k != "task_info"} == {
            k: v for k, v in task.items() if k != "task_info"
        }


@pytest.mark.parametrize(
    ("extra", "model", "mode"),
    [
        ({"model": "kling-v2-6-motion-control", "mode": "pro"}, "kling-v2-6-motion-control", "pro"),
        ({"model": "marionet-cpu"}, "marionet-cpu", "std"),
        (
            {"model": None, "mode": None, "prompt": None, "keep_original_sound": None},
            "kling-v3-motion-control",
            "std",
        ),
        ({"character_orientation": "video", "keep_original_sound": "no"}, "kling-v3-motion-control", "std"),
        ({"keep_original_sound": True, "prompt": "x" * 2500}, "kling-v3-motion-control", "std"),
        ({"keep_original_sound": False, "unknown_field": 1}, "kling-v3-motion-control", "std"),
    ],
)
def test_create_accepts_every_allowed_value(alice, body, extra, model, mode):
    r = alice.post("/v1/videos/generations", json={**body, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    assert r.json()["usage"]["mode"] == mode


@pytest.mark.parametrize("prompt", ["a girl dancing at night", "  "])
def test_a_prompt_the_engine_will_not_read_is_warned_about_when_the_task_is_created(alice, body, prompt):
    # The default models run on marionet-cpu, which does not read text: the client learns it from the create
    # response, not only once the task has run. A blank prompt says nothing to ignore.
    task = alice.post("/v1/videos/generations", json={**body, "prompt": prompt}).json()
    expected = [PROMPT_WARNING] if prompt.strip() else []
    assert task["status"] == "pending" and task["warnings"] == expected
    assert alice.get(f"/v1/tasks/{task['id']}").json()["warnings"] == expected


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"model": "kling-v9"}, "model", "invalid_parameter"),
        ({"mode": "fast"}, "mode", "invalid_parameter"),
        ({"character_orientation": "left"}, "character_orientation", "invalid_parameter"),
        ({"keep_original_sound": "maybe"}, "keep_original_sound", "invalid_parameter"),
        ({"keep_original_sound": 3}, "keep_original_sound", "invalid_parameter"),
        ({"prompt": "x" * 2501}, "prompt", "invalid_parameter"),
        ({"prompt": 5}, "prompt", "invalid_parameter"),
        ({"image_url": None}, "image_url", None),
        ({"image_url": ""}, "image_url", "invalid_parameter"),
        ({"video_url": "ftp://example.com/a.mp4"}, "video_url", "unsupported_url"),
        ({"image_url": "not a url"}, "image_url", "unsupported_url"),
        ({"image_url": "http://[::1/x.png"}, "image_url", "unsupported_url"),
        ({"video_url": "http://[::1/v1/files/file-abcdefghijklmnopqrstuvwx"}, "video_url", "unsupported_url"),
        ({"video_url": "http://h:99999/a.mp4"}, "video_url", "unsupported_url"),
        ({"callback_url": "http://[::1/cb"}, "callback_url", "unsupported_url"),
        ({"callback_url": "file:///etc/passwd"}, "callback_url", "unsupported_url"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(alice, body, change, param, code):
    r = alice.post("/v1/videos/generations", json={**body, **change})
    assert_error(r, 400, code, param)


@pytest.mark.parametrize("missing", ["image_url", "video_url"])
def test_missing_required_field_is_400(alice, body, missing):
    body.pop(missing)
    assert_error(alice.post("/v1/videos/generations", json=body), 400, "missing_parameter", missing)


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_request_body"), (b"", "invalid_request_body")],
)
def test_malformed_bodies_are_400(alice, content, code):
    r = alice.post("/v1/videos/generations", content=content, headers={"Content-Type": "application/json"})
    assert_error(r, 400, code)


def test_oversized_body_is_413(alice, body):
    r = alice.post("/v1/videos/generations", json={**body, "prompt": "x" * (17 * 1024 * 1024)})
    assert_error(r, 413)


def test_chunked_body_past_the_cap_is_413(alice):
    chunks = (b"x" * (1024 * 1024) for _ in range(24))  # no Content-Length: 24 MB against the 16 MB cap
    r = alice.post("/v1/videos/generations", content=chunks, headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "request_too_large")


def test_auth_missing_wrong_and_revoked_keys_are_401(server, body):
    with server.client() as anonymous:
        assert_error(anonymous.get("/v1/tasks"), 401, "missing_api_key")
        assert_error(anonymous.post("/v1/videos/generations", json=body), 401)
    with server.client("mk-wrong") as wrong:
        assert_error(wrong.get("/v1/tasks"), 401, "invalid_api_key")
    with server.client(server.keys["dave"]) as dave:
        assert dave.get("/v1/tasks").status_code == 200
        out = cli("keys", "revoke", "dave", "--data-dir", str(server.data_dir))
        assert out.returncode == 0, out.stderr
        assert_error(dave.get("/v1/tasks"), 401, "invalid_api_key")
    listing = cli("keys", "list", "--data-dir", str(server.data_dir)).stdout
    assert re.search(r"dave\s+mk-\S+\s+.*revoked", listing)
    assert server.keys["alice"] not in listing  # keys are never shown again


def test_another_keys_task_is_404(server, alice, body):
    task_id = alice.post("/v1/videos/generations", json=body).json()["id"]
    with server.client(server.keys["bob"]) as bob:
        assert_error(bob.get(f"/v1/tasks/{task_id}"), 404, "task_not_found")
        assert_error(bob.get(f"/v1/videos/generations/{task_id}"), 404)
        assert_error(bob.post(f"/v1/tasks/{task_id}/cancel"), 404)
        assert task_id not in [t["id"] for t in bob.get("/v1/tasks").json()["data"]]
    assert_error(alice.get("/v1/tasks/task-unified-1-aaaaaaaa"), 404, "task_not_found")


def test_cancel_pending_then_409(alice, body):
    task_id = alice.post("/v1/videos/generations", json=body).json()["id"]
    r = alice.post(f"/v1/tasks/{task_id}/cancel")
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "failed"
    assert task["error"]["code"] == "task_cancelled" and task["error"]["message"]
    assert task["task_info"] == {"can_cancel": False, "estimated_time": 0}
    assert_error(alice.post(f"/v1/tasks/{task_id}/cancel"), 409, "invalid_state")


def test_list_is_own_newest_first_and_paginated(server, body):
    with server.client(server.keys["carol"]) as carol:
        created = [carol.post("/v1/videos/generations", json=body).json()["id"] for _ in range(5)]
        page1 = carol.get("/v1/tasks", params={"limit": 2}).json()
        assert page1["object"] == "list" and page1["has_more"] is True
        seen = [t["id"] for t in page1["data"]]
        after = page1["next_after"]
        while after:
            page = carol.get("/v1/tasks", params={"limit": 2, "after": after}).json()
            seen += [t["id"] for t in page["data"]]
            after = page["next_after"]
        assert seen == created[::-1]
        assert_error(carol.get("/v1/tasks", params={"limit": 0}), 400, "invalid_parameter", "limit")
        assert_error(carol.get("/v1/tasks", params={"limit": 101}), 400, param="limit")
        assert_error(carol.get("/v1/tasks", params={"after": "task-unified-1-zzzzzzzz"}), 404)


def test_queue_limit_per_key_is_429(server, body):
    key = create_key(server.data_dir, "eve")
    with server.client(key) as eve:
        for _ in range(20):
            assert eve.post("/v1/videos/generations", json=body).status_code == 200
        assert_error(eve.post("/v1/videos/generations", json=body), 429, "too_many_queued_tasks")
        # A refused create leaves no upload behind (an inline image is stored only for a created task).
        files = server.data_dir / "files"
        before = sorted(files.iterdir())
        inline = {
            **body,
            "image_url": base64.b64encode((DATA / "halfbody_ref_elf.jpg").read_bytes()).decode(),
        }
        assert_error(eve.post("/v1/videos/generations", json=inline), 429, "too_many_queued_tasks")
        assert_error(
            eve.post("/v1/videos/generations", json={**inline, "callback_url": "ftp://x/y"}),
            400,
            param="callback_url",
        )
        assert sorted(files.iterdir()) == before
        # Cancelling one frees a place in the queue.
        first = eve.get("/v1/tasks", params={"limit": 1}).json()["data"][0]["id"]
        eve.post(f"/v1/tasks/{first}/cancel")
        assert eve.post("/v1/videos/generations", json=body).status_code == 200


def test_estimated_time_grows_with_work_queued_ahead(server, body):
    with server.client(create_key(server.data_dir, "frank")) as frank:
        first = frank.post("/v1/videos/generations", json=body).json()
        second = frank.post("/v1/videos/generations", json=body).json()
        assert second["task_info"]["estimated_time"] > first["task_info"]["estimated_time"]


def test_uploads_accept_media_and_refuse_the_rest(alice, uploads, data_dir):
    assert all("/v1/files/file-" in url for url in uploads.values())
    with (data_dir / "halfbody_talk_3s.mp4").open("rb") as f:
        info = alice.post("/v1/files", files={"file": ("v.mp4", f)}).json()
    assert info["object"] == "file" and info["kind"] == "video"
    assert info["bytes"] == (data_dir / "halfbody_talk_3s.mp4").stat().st_size
    assert_error(alice.post("/v1/files", files={"file": ("x.txt", b"hello world")}), 400, param="file")
    assert_error(alice.post("/v1/files", files={"file": ("e.jpg", b"")}), 400, "file_empty", "file")
    assert_error(
        alice.post("/v1/files", files={"file": ("bad.jpg", b"\xff\xd8\xff" + b"0" * 100)}), 400, param="file"
    )
    assert_error(alice.post("/v1/files", data={"x": "1"}), 400, param="file")


def test_result_links_tampered_403_expired_410(server, alice, body):
    task_id = alice.post("/v1/videos/generations", json=body).json()["id"]
    settings = Settings(data_dir=server.data_dir)
    good = result_link(task_id, server.url, settings)
    with httpx.Client(base_url=server.url) as anonymous:
        tampered = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
        assert_error(anonymous.get(tampered), 403, "invalid_signature")
        # Ids end in a random character: change it to one it is not.
        other_id = task_id[:-1] + ("y" if task_id.endswith("x") else "x")
        assert_error(anonymous.get(good.replace(task_id, other_id)), 403)
        expired = result_link(
            task_id, server.url, settings, now=time.time() - settings.result_link_ttl_s - 60
        )
        assert_error(anonymous.get(expired), 410, "link_expired")
        # A valid link to a task without a result yet.
        assert_error(anonymous.get(good), 404, "result_not_found")
        assert_error(anonymous.get(f"/v1/results/{task_id}.mp4"), 400, "missing_parameter")


def test_models_health_metrics_docs(server, alice):
    models = alice.get("/v1/models").json()
    engines = {m["id"]: m["engine"] for m in models["data"]}
    assert engines["kling-v3-motion-control"] == "marionet-cpu"
    assert engines["kling-v2-6-motion-control"] == "marionet-cpu"
    assert engines["marionet-cpu"] == "marionet-cpu"
    with httpx.Client(base_url=server.url) as anonymous:
        health = anonymous.get("/healthz").json()
        assert health["status"] == "ok" and health["database"] == "ok"
        metrics = anonymous.get("/metrics").text
        for name in (
            'marionet_tasks{status="pending"}',
            'marionet_tasks{status="failed"}',
            "marionet_queue_depth",
            "marionet_engine_seconds_total",
            "marionet_request_duration_seconds_bucket",
        ):
            assert name in metrics
        pending = float(re.search(r"^marionet_queue_depth (\S+)$", metrics, re.M).group(1))
        assert pending == health["pending"] and pending >= 1
        schema = anonymous.get("/openapi.json").json()
        for path in ("/v1/videos/generations", "/v1/tasks/{task_id}", "/v1/tasks", "/v1/files", "/v1/models"):
            assert path in schema["paths"]
        for methods in schema["paths"].values():
            for operation in methods.values():
                assert "422" not in operation["responses"]
        assert "400" in schema["paths"]["/v1/videos/generations"]["post"]["responses"]
        create = schema["components"]["schemas"]["CreateTaskRequest"]["properties"]
        assert set(create) >= {"model", "image_url", "video_url", "mode", "prompt", "character_orientation"}
        assert anonymous.get("/docs").status_code == 200
        assert anonymous.get("/").status_code == 200
        assert_error(anonymous.get("/no/such/route"), 404, "not_found")
        assert_error(anonymous.delete("/v1/tasks"), 405, "method_not_allowed")


def test_data_uri_image_is_accepted(server, alice, body, data_dir: Path):
    encoded = base64.b64encode((data_dir / "halfbody_ref_elf.jpg").read_bytes()).decode()
    for image in (f"data:image/jpeg;base64,{encoded}", encoded):
        r = alice.post("/v1/videos/generations", json={**body, "image_url": image})
        assert r.status_code == 200, r.text
    # Stored as an upload: the database keeps a short URL, not the megabytes of base64.
    db = b"".join(path.read_bytes() for path in server.data_dir.glob("marionet.db*"))  # with the WAL
    windows = [encoded[i : i + 64].encode() for i in range(0, len(encoded) - 64, 4000)]
    assert len(windows) > 5 and not any(window in db for window in windows)
    bad = alice.post(
        "/v1/videos/generations", json={**body, "image_url": "data:image/png;base64," + "A" * 100}
    )
    assert_error(bad, 400, param="image_url")
    video = base64.b64encode((data_dir / "halfbody_talk_3s.mp4").read_bytes()).decode()
    bad = alice.post("/v1/videos/generations", json={**body, "image_url": video})
    assert_error(bad, 400, "image_invalid", "image_url")
