"""Fuzz the video probe and the image checks: any bytes give a result or an InputError, never anything else.

Bounded: a few hundred examples per property, a few seconds each on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_media import image_bytes, make_video

from marionet.errors import InputError
from marionet.media.validate import check_image_bytes, inspect_video
from marionet.media.video import VideoInfo

_FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """The seed with a few bytes overwritten, a slice cut out or the tail dropped: mostly-valid structure."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data) - 1))
        del data[start : start + draw(st.integers(1, 4096))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("fuzz")
    return {
        "work": work,
        "video": make_video(
            work / "seed.mp4", width=352, height=352, seconds=0.5, faststart=True
        ).read_bytes(),
        "png": image_bytes(320, 320, ".png"),
        "jpeg": image_bytes(320, 320, ".jpg"),
    }


def _probe(work: Path, data: bytes) -> VideoInfo | None:
    path = work / "case.mp4"
    path.write_bytes(data)
    try:
        return inspect_video(path)
    except InputError as exc:
        assert exc.code in {"video_invalid", "video_no_stream"}, exc.code
        assert str(work) not in exc.message
        return None


@_FUZZ
@given(data=st.data())
def test_probe_survives_mutated_mp4(seeds, data):
    info = _probe(seeds["work"], data.draw(mutated(seeds["video"])))
    if info is not None:
        assert info.width > 0 and info.height > 0 and info.duration_s > 0 and info.frame_count > 0


@_FUZZ
@given(tail=st.binary(max_size=2048))
def test_probe_survives_random_boxes(seeds, tail):
    _probe(seeds["work"], b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + tail)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_image_checks_survive_mutations(seeds, kind):
    @_FUZZ
    @given(mutated(seeds[kind]))
    def check(data):
        try:
            info = check_image_bytes(data)
        except InputError as exc:
            assert exc.code.startswith("image_"), exc.code
        else:
            assert info.width >= 300 and info.height >= 300

    check()
