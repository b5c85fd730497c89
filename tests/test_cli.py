"""The `marionet` command as a subprocess: keys, the bootstrap key of a fresh server, animate, eval."""

from __future__ import annotations

import re

import httpx
import pytest

from marionet.media.video import probe_video
from tests.servers import Server, cli


def test_keys_create_list_revoke(tmp_path):
    out = cli("keys", "create", "--name", "ci", "--data-dir", str(tmp_path))
    assert out.returncode == 0
    key = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"mk-[A-Za-z0-9_-]{43}", key)
    second = (
        cli("keys", "create", "--name", "other", "--data-dir", str(tmp_path)).stdout.strip().splitlines()[-1]
    )
    assert second != key
    listing = cli("keys", "list", "--data-dir", str(tmp_path)).stdout
    assert re.search(r"^\s+1\s+ci\s+" + re.escape(key[:10]) + r"\s+.*active$", listing, re.M)
    assert key not in listing and "other" in listing
    db = b"".join(path.read_bytes() for path in tmp_path.glob("marionet.db*"))  # with the WAL
    assert key.encode() not in db  # stored only as a hash
    assert cli("keys", "revoke", "ci", "--data-dir", str(tmp_path)).returncode == 0
    assert re.search(
        r"^\s+1\s+ci\s+.*revoked$", cli("keys", "list", "--data-dir", str(tmp_path)).stdout, re.M
    )
    missing = cli("keys", "revoke", "nobody", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_fresh_server_prints_one_working_key_once(tmp_path):
    srv = Server(tmp_path / "data", {"MARIONET_EMBEDDED_WORKERS": "false"}).start()
    try:
        log = srv.log()
        keys = re.findall(r"^\s+(mk-\S+)$", log, re.M)
        assert len(keys) == 1
        assert f"Authorization: Bearer {keys[0]}" in log and "curl" in log
        assert (
            httpx.get(f"{srv.url}/v1/models", headers={"Authorization": f"Bearer {keys[0]}"}).status_code
            == 200
        )
        assert httpx.get(f"{srv.url}/v1/models").status_code == 401  # no open mode
    finally:
        srv.stop()
    srv.start()  # a restart with a key present prints none
    srv.stop()
    assert len(re.findall(r"^\s+(mk-\S+)$", srv.log(), re.M)) == 1


@pytest.mark.slow
def test_animate_makes_a_video_with_a_progress_bar(tmp_path, data_dir):
    out = tmp_path / "out.mp4"
    video = data_dir / "halfbody_talk_3s.mp4"
    run = cli(
        "animate", str(data_dir / "halfbody_ref_elf.jpg"), str(video), "-o", str(out), "--sound", "no",
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "100.0%" in run.stderr and "[" in run.stderr
    info = probe_video(out)
    assert info.frame_count > 0 and abs(info.duration_s - probe_video(video).duration_s) < 0.5
    assert not info.has_audio


def test_animate_reports_input_errors_with_a_code(tmp_path, data_dir):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    run = cli("animate", str(bad), str(data_dir / "halfbody_talk_3s.mp4"), "-o", str(tmp_path / "o.mp4"))
    assert run.returncode == 1
    assert "error: image_invalid" in run.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_animate_names_a_missing_file_as_missing_not_as_a_bad_url(tmp_path, data_dir):
    missing = tmp_path / "no-such-photo.png"
    run = cli("animate", str(missing), str(data_dir / "halfbody_talk_3s.mp4"), "-o", str(tmp_path / "o.mp4"))
    assert run.returncode == 1
    assert "error: file_not_found: image file not found: " + str(missing) in run.stderr
    assert "scheme" not in run.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_eval_names_a_missing_or_unreadable_input_instead_of_a_traceback(tmp_path, data_dir):
    video, image = data_dir / "halfbody_talk_3s.mp4", data_dir / "halfbody_ref_elf.jpg"
    missing = tmp_path / "no-such-output.mp4"
    run = cli("eval", str(missing), str(video), str(image))
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: file_not_found: output file not found: {missing}"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    run = cli("eval", str(broken), str(video), str(image))
    assert run.returncode == 2
    assert "\nerror: video_invalid: The video could not be read" in "\n" + run.stderr
    assert "Traceback" not in run.stderr
    not_an_image = tmp_path / "not-an-image.jpg"
    not_an_image.write_text("hello")
    run = cli("eval", str(video), str(video), str(not_an_image))
    assert run.returncode == 2
    assert "error: image_invalid: The image could not be decoded" in run.stderr
    assert "Traceback" not in run.stderr
