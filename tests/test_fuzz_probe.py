"""Fuzz the video probe and the image checks: any bytes give a result or an InputError, never anything else.

Bounded: a few hundred examples per property, a few seconds each on two cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_media import image_bytes, make_video

from marionet.errors import InputError
from marionet.media.validate import check_image_bytes, inspect_video
from marionet.media.video import VideoInfo

_WORK = Path(tempfile.mkdtemp(prefix="marionet-fuzz-"))
_SEED_VIDEO = make_video(_WORK / "seed.mp4", width=352, height=352, seconds=0.5, faststart=True).read_bytes()
_SEED_PNG = image_bytes(320, 320, ".png")
_SEED_JPEG = image_bytes(320, 320, ".jpg")

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


def _probe(data: bytes) -> VideoInfo | None:
    path = _WORK / "case.mp4"
    path.write_bytes(data)
    try:
        return inspect_video(path)
    except InputError as exc:
        assert exc.code in {"video_invalid", "video_no_stream"}, exc.code
        assert str(_WORK) not in exc.message
        return None


@_FUZZ
@given(mutated(_SEED_VIDEO))
def test_probe_survives_mutated_mp4(data):
    info = _probe(data)
    if info is not None:
        assert info.width > 0 and info.height > 0 and info.duration_s > 0 and info.frame_count > 0


@_FUZZ
@given(st.binary(max_size=2048).map(lambda tail: b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + tail))
def test_probe_survives_random_boxes(data):
    _probe(data)


@pytest.mark.parametrize("seed", [_SEED_PNG, _SEED_JPEG], ids=["png", "jpeg"])
def test_image_checks_survive_mutations(seed):
    @_FUZZ
    @given(mutated(seed))
    def check(data):
        try:
            info = check_image_bytes(data)
        except InputError as exc:
            assert exc.code.startswith("image_"), exc.code
        else:
            assert info.width >= 300 and info.height >= 300

    check()
