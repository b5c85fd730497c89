"""Ingestion through its public functions: request-time checks, uploads, fetch-once cache, validation rules."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import threading
import time

import pytest
from conftest import DATA
from ingest_http import LoopbackServer, PointedResolver, send_bytes, serve
from ingest_media import image_bytes, make_video, png_declaring

from marionet.config import Settings
from marionet.errors import InputError, PayloadTooLarge
from marionet.media.cache import InputCache
from marionet.media.ingest import (
    check_image,
    check_source_at_request,
    check_video,
    ingest_input,
    inline_image,
    load_input,
    store_inline_image,
    task_workdir,
    workdir_path,
)
from marionet.media.uploads import store_upload, upload_url


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", url_allowlist="127.0.0.1")


@pytest.fixture
def closed_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", url_allowlist="")


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def probes(monkeypatch) -> list[list[str]]:
    """Every isolated validation (a child process probing or decoding an input) from now on."""
    started: list[list[str]] = []
    real = subprocess.run

    def counting(command, *args, **kwargs):
        if "marionet.media.sandbox" in command:
            started.append(list(command))
        return real(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting)
    return started


def _error(call, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as err:
        call(*args, **kwargs)
    return err.value


# Request-time checks ------------------------------------------------------------------------------------


def test_data_uris_and_base64_are_validated_at_request(closed_settings):
    png = image_bytes(400, 500, ".png")
    jpeg = image_bytes(600, 400, ".jpg")
    check_source_at_request(
        "data:image/png;base64," + base64.b64encode(png).decode(), "image", closed_settings
    )
    check_source_at_request(base64.b64encode(jpeg).decode(), "image", closed_settings)
    # Line-wrapped and URL-safe base64 too.
    wrapped = base64.encodebytes(jpeg).decode()
    check_source_at_request(wrapped, "image", closed_settings)
    check_source_at_request(base64.urlsafe_b64encode(jpeg).decode().rstrip("="), "image", closed_settings)

    small = base64.b64encode(image_bytes(299, 400)).decode()
    err = _error(check_source_at_request, "data:image/png;base64," + small, "image", closed_settings)
    assert err.code == "image_too_small" and err.status == 400 and "299x400" in err.message

    err = _error(check_source_at_request, "data:image/png," + "x" * 100, "image", closed_settings)
    assert err.code == "invalid_data_uri"
    err = _error(check_source_at_request, "data:image/png;base64,!!!notbase64!!!", "image", closed_settings)
    assert err.code == "invalid_data_uri"
    err = _error(check_source_at_request, "data:video/mp4;base64,AAAA", "video", closed_settings)
    assert err.code == "unsupported_url" and "POST /v1/files" in err.message


def test_inline_image_is_decoded_once_and_validated_only_in_the_sandbox(closed_settings, probes):
    png = image_bytes(400, 500, ".png")
    data = inline_image("data:image/png;base64," + base64.b64encode(png).decode())
    assert data == png and inline_image("https://cdn.example/a.png") is None
    stored = store_inline_image(data, closed_settings)
    assert (stored.kind, stored.info.width, stored.info.height) == ("image", 400, 500)
    assert len(probes) == 1 and probes[0][-4] == "image"
    # A video smuggled in as an "image" is refused under image_url and leaves no file behind.
    err = _error(store_inline_image, (DATA / "halfbody_talk_3s.mp4").read_bytes(), closed_settings)
    assert (err.code, err.param) == ("image_invalid", "image_url")
    err = _error(store_inline_image, image_bytes(299, 400), closed_settings)
    assert (err.code, err.param) == ("image_too_small", "image_url")
    files = closed_settings.resolved_storage_dir() / "files"
    assert [p.name for p in files.iterdir()] == [stored.file_id]


def test_oversize_base64_is_refused_before_decoding(closed_settings):
    huge = "A" * (14 * 1024 * 1024)  # 10.5 MB once decoded
    with pytest.raises(PayloadTooLarge) as err:
        check_source_at_request(huge, "image", closed_settings)
    assert err.value.status == 413 and "limit is 10485760 bytes (10 MB)" in err.value.message


def test_remote_urls_are_checked_not_fetched_at_request(closed_settings, server, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", PointedResolver({"cdn.example": [["93.184.216.34"]]}))
    check_source_at_request("https://cdn.example/clip.mp4", "video", closed_settings, orientation="video")
    err = _error(check_source_at_request, server.url("/clip.mp4"), "video", closed_settings)
    assert err.code == "url_not_allowed" and err.param == "video_url"
    assert server.requests == []
    for bad in ("file:///etc/passwd", "ftp://cdn.example/a.mp4", "gopher://cdn.example/"):
        err = _error(check_source_at_request, bad, "video", closed_settings)
        assert err.code == "unsupported_url" and "URL from POST /v1/files" in err.message
    err = _error(check_source_at_request, "/etc/passwd", "image", closed_settings)
    assert err.code == "unsupported_url" and "data: URI or base64" in err.message


# Uploads -------------------------------------------------------------------------------------------------


def test_uploaded_video_is_validated_for_the_task_orientation(closed_settings):
    with (DATA / "dance_fullbody_12s.mp4").open("rb") as f:
        stored = store_upload(f, closed_settings)
    assert stored.kind == "video" and stored.info.duration_s == 12.0 and stored.path.is_file()
    url = upload_url(stored.file_id, "http://127.0.0.1:8000")
    err = _error(check_source_at_request, url, "video", closed_settings, orientation="image")
    assert err.code == "video_too_long" and err.status == 400
    assert "12.00 s long; at most 10 s" in err.message
    check_source_at_request(url, "video", closed_settings, orientation="video")


def test_uploaded_image_and_its_rules(closed_settings):
    stored = store_upload(io.BytesIO(image_bytes(400, 600, ".png")), closed_settings)
    assert (stored.kind, stored.info.width, stored.info.height, stored.info.format) == (
        "image",
        400,
        600,
        "png",
    )
    check_source_at_request(upload_url(stored.file_id, "http://h"), "image", closed_settings)

    err = _error(store_upload, io.BytesIO(image_bytes(300, 800)), closed_settings)
    assert (
        err.code == "image_aspect_ratio" and err.param == "file" and "aspect ratio of 1:2.667" in err.message
    )
    err = _error(store_upload, io.BytesIO(b"<html>hello</html>"), closed_settings)
    assert err.code == "unsupported_file_type"
    err = _error(store_upload, io.BytesIO(b""), closed_settings)
    assert err.code == "file_empty"
    with pytest.raises(PayloadTooLarge) as big:
        store_upload(io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(11 * 2**20)), closed_settings)
    assert "limit is 10485760 bytes (10 MB)" in big.value.message
    leftovers = [p.name for p in (closed_settings.resolved_storage_dir() / "files").iterdir()]
    assert leftovers == [stored.file_id]


class _EndlessUpload(io.RawIOBase):
    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = 2**20 if size is None or size < 0 else size
        self.served += size
        return b"\0\0\0\x20ftypisom".ljust(size, b"\0") if self.served == size else bytes(size)


def test_upload_stream_stops_at_the_video_cap(closed_settings):
    stream = _EndlessUpload()
    with pytest.raises(PayloadTooLarge) as err:
        store_upload(stream, closed_settings)
    assert "limit of 104857600 bytes (100 MB)" in err.value.message
    assert 100 * 2**20 < stream.served <= 101 * 2**20
    assert list((closed_settings.resolved_storage_dir() / "files").iterdir()) == []


def test_missing_upload_is_named(closed_settings):
    err = _error(
        check_source_at_request, "http://127.0.0.1:8000/v1/files/file-" + "a" * 24, "image", closed_settings
    )
    assert err.code == "upload_not_found" and err.param == "image_url"


# Fetch once, probe once ---------------------------------------------------------------------------------


def test_video_reused_by_many_tasks_is_fetched_and_probed_once(settings, server, tmp_path, probes):
    clip = (DATA / "halfbody_talk_3s.mp4").read_bytes()
    server.routes["/a.mp4"] = serve(clip, "video/mp4")
    server.routes["/same-bytes.mp4"] = serve(clip, "video/mp4")

    first = ingest_input(server.url("/a.mp4"), "video", tmp_path / "t1", settings, orientation="image")
    assert first.info.frame_count == 106 and first.path.read_bytes() == clip
    assert len(probes) == 1

    second = ingest_input(server.url("/a.mp4"), "video", tmp_path / "t2", settings, orientation="image")
    third = ingest_input(
        server.url("/same-bytes.mp4"), "video", tmp_path / "t3", settings, orientation="video"
    )
    assert server.paths() == ["/a.mp4", "/same-bytes.mp4"]  # a new URL is fetched; its bytes are known
    assert len(probes) == 1  # nothing probed again
    assert second.info == first.info == third.info and second.sha256 == third.sha256
    assert os.path.samefile(second.path, third.path) or second.path.read_bytes() == clip
    assert second.path.name == "video.mp4"


def test_concurrent_tasks_fetch_a_url_once(settings, server, tmp_path):
    clip = (DATA / "halfbody_talk_3s.mp4").read_bytes()

    def slow(h):
        time.sleep(0.3)
        send_bytes(h, clip, "video/mp4")

    server.routes["/slow.mp4"] = slow
    results, errors = [], []

    def task(n):
        try:
            results.append(load_input(server.url("/slow.mp4"), "video", tmp_path / f"t{n}", settings))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 3
    assert server.paths() == ["/slow.mp4"]


def test_expired_url_entry_is_fetched_again_but_not_reprobed(tmp_path, server, probes):
    settings = Settings(data_dir=tmp_path / "data", url_allowlist="127.0.0.1", input_cache_ttl_s=0)
    server.routes["/a.jpg"] = serve(image_bytes(400, 400, ".jpg"), "image/jpeg")
    for n in range(2):
        loaded = ingest_input(server.url("/a.jpg"), "image", tmp_path / f"t{n}", settings)
        assert loaded.info.format == "jpeg" and loaded.path.name == "image.jpg"
    assert server.paths() == ["/a.jpg", "/a.jpg"] and len(probes) == 1 and probes[0][-4] == "image"


def test_bad_remote_video_fails_the_same_way_without_refetching(settings, server, tmp_path, probes):
    server.routes["/short.mp4"] = serve(make_video(tmp_path / "short.mp4", seconds=2.0).read_bytes())
    for n in range(2):
        err = _error(load_input, server.url("/short.mp4"), "video", tmp_path / f"t{n}", settings)
        assert err.code == "video_too_short" and "2.00 s long; it must be at least 3 s" in err.message
    assert len(probes) == 1 and server.paths() == ["/short.mp4"]


def test_local_paths_only_with_allow_local(settings, tmp_path):
    source = str(DATA / "halfbody_ref_elf.jpg")
    err = _error(load_input, source, "image", tmp_path / "t", settings)
    assert err.code == "unsupported_url"
    path = load_input(source, "image", tmp_path / "t", settings, allow_local=True)
    assert path.name == "image.jpg" and path.read_bytes() == (DATA / "halfbody_ref_elf.jpg").read_bytes()
    # Named .png, a JPEG by content.
    assert load_input(
        str(DATA / "dance_ref_cartoon.png"), "image", tmp_path / "t", settings, allow_local=True
    ).name == ("image.jpg")


def test_threads_of_one_process_store_the_same_input_at_once(settings, tmp_path):
    """Temp files were named by PID: two threads adding the same bytes renamed each other's file away."""
    from concurrent.futures import ThreadPoolExecutor

    cache = InputCache(settings)
    source = tmp_path / "same.bin"
    for round_ in range(6):
        data = os.urandom(4 * 2**20) + bytes([round_])
        source.write_bytes(data)
        barrier = threading.Barrier(8)

        def store(n: int, data: bytes = data, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            if n % 2:
                return cache.copy_in(source)
            cache.remember_url("https://cdn.example/same", "0" * 64)
            return cache.add_bytes(data)

        with ThreadPoolExecutor(8) as pool:
            hashes = set(pool.map(store, range(8)))
        assert len(hashes) == 1 and cache.blob(hashes.pop()).read_bytes() == data
    assert list(cache.tmp.iterdir()) == [] and len(list(cache.urls.iterdir())) == 1


def test_prune_removes_entries_unused_past_retention(settings, tmp_path):
    load_input(str(DATA / "halfbody_ref_elf.jpg"), "image", tmp_path / "t", settings, allow_local=True)
    cache = InputCache(settings)
    assert len(list(cache.blobs.iterdir())) == 2  # the bytes and their verdict
    assert cache.prune(now=time.time()) == 0
    assert cache.maybe_prune() == 0  # pruned moments ago by the load itself
    assert cache.prune(now=time.time() + settings.retention_hours * 3600 + 60) == 2
    assert list(cache.blobs.iterdir()) == []


def test_ingestion_prunes_old_entries_by_itself(settings, tmp_path):
    cache = InputCache(settings)
    old = cache.blob("0" * 64)
    old.write_bytes(b"stale")
    long_ago = time.time() - settings.retention_hours * 3600 - 60
    os.utime(old, (long_ago, long_ago))
    (cache.root / ".pruned").touch()
    os.utime(cache.root / ".pruned", (long_ago, long_ago))
    load_input(str(DATA / "halfbody_ref_elf.jpg"), "image", tmp_path / "t", settings, allow_local=True)
    assert not old.exists() and len(list(cache.blobs.iterdir())) == 2


# Per-task folder ----------------------------------------------------------------------------------------


def test_task_workdir_is_removed_whatever_happens(settings):
    with task_workdir(settings, "task-unified-1-abc", 1) as work:
        assert work == settings.resolved_storage_dir() / "work" / "task-unified-1-abc.a1"
        (work / "video.mp4").write_bytes(b"x")
        assert work.stat().st_mode & 0o777 == 0o700
    assert not work.exists()
    with pytest.raises(RuntimeError), task_workdir(settings, "task-unified-1-abc", 1) as work:
        (work / "deep").mkdir()
        (work / "deep" / "f").write_bytes(b"x")
        raise RuntimeError("engine died")
    assert not work.exists()


def test_task_workdir_clears_a_crashed_attempt_and_refuses_odd_ids(settings):
    stale = settings.resolved_storage_dir() / "work" / "task-2.a1"
    stale.mkdir(parents=True)
    (stale / "left-by-a-killed-worker").write_bytes(b"x")
    with task_workdir(settings, "task-2", 1) as work:
        assert list(work.iterdir()) == []
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(ValueError), task_workdir(settings, bad, 1):
            pass


def test_each_attempt_has_its_own_workdir(settings):
    """A stale attempt 1 waking up late never empties the folder attempt 2 is working in."""
    with task_workdir(settings, "task-3", 2) as second:
        (second / "image.png").write_bytes(b"x")
        with task_workdir(settings, "task-3", 1) as first:
            assert first != second
        assert (second / "image.png").read_bytes() == b"x"
    assert workdir_path(settings, "task-3", 2) == second


# Validation rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, code, fragment",
    [
        (299, 400, "image_too_small", "299x400; each side must be at least 300 px"),
        (400, 299, "image_too_small", "400x299"),
        (751, 300, "image_aspect_ratio", "aspect ratio of 2.503:1"),
        (300, 751, "image_aspect_ratio", "aspect ratio of 1:2.503"),
    ],
)
def test_image_rules(tmp_path, width, height, code, fragment):
    path = tmp_path / "i.png"
    path.write_bytes(image_bytes(width, height))
    err = _error(check_image, path)
    assert err.code == code and fragment in err.message


def test_image_limits_are_inclusive(tmp_path):
    for width, height in ((300, 750), (750, 300), (300, 300)):
        path = tmp_path / f"{width}x{height}.jpg"
        path.write_bytes(image_bytes(width, height, ".jpg"))
        info = check_image(path)
        assert (info.width, info.height, info.format) == (width, height, "jpeg")
    path = tmp_path / "41mp.png"
    path.write_bytes(png_declaring(8000, 5126))
    err = _error(check_image, path)
    assert err.code == "image_too_large" and "41.0 megapixels" in err.message


@pytest.mark.parametrize(
    "size, fragment",
    [
        ((336, 400), "its width must be between 340 and 3850 px"),
        ((400, 3856), "its height must be between 340"),
    ],
)
def test_video_dimension_rule(tmp_path, size, fragment):
    path = make_video(tmp_path / "v.mp4", width=size[0], height=size[1], seconds=0.3)
    err = _error(check_video, path, "video")
    assert err.code == "video_dimensions" and fragment in err.message


def test_video_duration_rules(tmp_path):
    short = make_video(tmp_path / "short.mp4", seconds=2.5)
    err = _error(check_video, short, "video")
    assert err.code == "video_too_short" and "2.50 s long; it must be at least 3 s" in err.message

    eleven = make_video(tmp_path / "eleven.mp4", seconds=10.5, fps=4)
    err = _error(check_video, eleven, "image")
    assert err.code == "video_too_long" and "10.50 s long; at most 10 s" in err.message
    assert check_video(eleven, "video").duration_s == pytest.approx(10.5)
    assert check_video(eleven, None).duration_s == pytest.approx(10.5)

    long = make_video(tmp_path / "long.mp4", seconds=31, fps=2)
    for orientation in ("video", None):
        err = _error(check_video, long, orientation)
        assert err.code == "video_too_long" and "31.00 s long; at most 30 s" in err.message

    exact = make_video(tmp_path / "ten.mp4", seconds=10, fps=5)
    assert check_video(exact, "image").duration_s == pytest.approx(10.0)
