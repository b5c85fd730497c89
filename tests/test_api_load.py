"""Load and fuzzing against the real server: 100 concurrent creates, and schemathesis finding no 5xx."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.servers import Server, create_key


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # API only: the point is the request path and the database, not running 100 engines.
    srv = Server(
        tmp_path_factory.mktemp("load"),
        {"MARIONET_EMBEDDED_WORKERS": "false", "MARIONET_MAX_QUEUED_PER_KEY": "60"},
    )
    srv.keys = [create_key(srv.data_dir, f"load{i}") for i in range(2)]
    srv.start()
    yield srv
    srv.stop()


def test_100_concurrent_creates_no_5xx_all_accounted_for(server, data_dir):
    with server.client(server.keys[0]) as client, (data_dir / "halfbody_ref_elf.jpg").open("rb") as f:
        image = client.post("/v1/files", files={"file": ("i.jpg", f)}).json()["url"]
    with server.client(server.keys[0]) as client, (data_dir / "halfbody_talk_3s.mp4").open("rb") as f:
        video = client.post("/v1/files", files={"file": ("v.mp4", f)}).json()["url"]
    body = {"image_url": image, "video_url": video}

    def create(i: int) -> tuple[int, httpx.Response]:
        key = server.keys[i % 2]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
            return i % 2, c.post("/v1/videos/generations", json=body)

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(create, range(100)))

    statuses = [r.status_code for _, r in answers]
    assert all(s < 500 for s in statuses), statuses
    assert set(statuses) == {200}
    for owner, key in enumerate(server.keys):
        created = {r.json()["id"] for o, r in answers if o == owner}
        with server.client(key) as client:
            listed = client.get("/v1/tasks", params={"limit": 100}).json()
        assert {t["id"] for t in listed["data"]} == created and len(created) == 50
        assert all(t["status"] == "pending" for t in listed["data"])
    # Over the per-key queue limit the answers are 429s, never 5xx.
    over = [create(0)[1].status_code for _ in range(12)]
    assert over.count(200) == 10 and over.count(429) == 2


def test_schemathesis_finds_no_server_errors(server, tmp_path):
    key = server.keys[1]
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {key}",
            "--max-examples",
            "15",
            "--max-time",
            "50",
            "--workers",
            "2",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
        ],
        cwd=tmp_path,  # schemathesis writes its cache into the working directory
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) >= 100, result.stdout[-2000:]
    assert "Server error" not in result.stdout
