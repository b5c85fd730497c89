"""The one video reader/writer: duration to the frame, fps cap, audio carried in sync."""

import av
import cv2
import numpy as np
import pytest
from conftest import DATA
from ingest_media import make_video

from marionet.media.video import SEEK_LEAD_S, VideoWriter, probe_video, read_frames


@pytest.mark.parametrize(
    "name, fps, frames, audio",
    [("halfbody_talk_3s.mp4", 30.0, 106, True), ("skeleton_render_no_person.mp4", 30.0, 210, False)],
)
def test_round_trip_keeps_duration_and_audio(tmp_path, name, fps, frames, audio):
    src = DATA / name
    info = probe_video(src)
    assert info.output_fps == fps and info.output_frame_count == frames
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=320, height=180, fps=info.output_fps, audio_from=src) as writer:
        for _, _, rgb in read_frames(src, info):
            assert rgb.dtype == np.uint8 and rgb.shape == (info.height, info.width, 3)
            writer.write(np.ascontiguousarray(rgb[::6, ::6][:180, :320]))
    result = probe_video(out)
    assert result.frame_count == frames
    assert (
        abs(result.duration_s - info.output_frame_count / fps) < 1e-3
    )  # within a millisecond: container time-base rounding
    assert result.has_audio is audio
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        if audio:
            a = c.streams.audio[0]
            assert abs(float(a.duration * a.time_base) - result.duration_s) < 0.05


@pytest.mark.parametrize("colorspace", ["ITU709", "ITU601"])
@pytest.mark.parametrize("size", [(640, 360), (642, 363)])
def test_shrinking_yuv_planes_keeps_the_colours(colorspace, size):
    # The analysis decode shrinks yuv420p planes with cv2 instead of swscale: the colours of the picture that
    # was encoded come back under either matrix (as closely as swscale's own conversion brings them back).
    from marionet.media.video import _shrunk_rgb

    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [(xs * 255 // width), (ys * 255 // height), ((xs + ys) * 127 // (width + height)) + 64], axis=2
    ).astype(np.uint8)
    rgb[height // 3 : height // 2, width // 4 : width // 2] = (200, 30, 40)  # a saturated block
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=colorspace
    )
    frame.colorspace = 1 if colorspace == "ITU709" else 5  # how a decoder tags the frame
    frame.color_range = 1
    small = (width // 3, height // 3)
    truth = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA).astype(int)
    ours = _shrunk_rgb(frame, *small).astype(int)
    swscale = frame.to_ndarray(format="rgb24", width=small[0], height=small[1]).astype(int)
    assert ours.shape == truth.shape == (small[1], small[0], 3)
    assert np.abs(ours - truth).mean() < 1.5
    assert np.abs((ours - truth).mean(axis=(0, 1))).max() < 1.0  # no colour cast
    assert np.abs(ours - truth).mean() <= np.abs(swscale - truth).mean() + 0.5


def test_the_output_says_which_colour_matrix_made_it(tmp_path):
    # Untagged HD video is shown with the BT.709 matrix by most players; the writer uses BT.601's, and says so.
    from marionet.media.video import _shrunk_rgb

    out = tmp_path / "red.mp4"
    red = np.full((360, 640, 3), (200, 30, 40), np.uint8)
    with VideoWriter(out, width=640, height=360, fps=25, preset="ultrafast") as writer:
        for _ in range(3):
            writer.write(red)
    data = out.read_bytes()
    colr = data.index(b"colr")
    # nclx: primaries 1 (BT.709), transfer 1 (BT.709), matrix 6 (SMPTE 170M = BT.601), limited range.
    assert data[colr + 4 : colr + 15] == b"nclx\x00\x01\x00\x01\x00\x06\x00"
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert (frame.colorspace, frame.color_range) == (6, 1)
    assert np.abs(_shrunk_rgb(frame, 64, 36).astype(int) - (200, 30, 40)).max() <= 2


@pytest.mark.parametrize(
    "frame_times, rotation, codec, container",
    [
        (None, None, "libx264", "mp4"),
        (None, 90, "libx264", "mp4"),
        # Variable frame rate: 30 frames a second for 3 s, then 5 a second for 4 s.
        ([i / 30 for i in range(90)] + [3 + i / 5 for i in range(20)], None, "libx264", "mp4"),
        (None, None, "libx265", "mp4"),
        (None, None, "libvpx-vp9", "webm"),
    ],
)
def test_a_read_from_the_middle_shows_what_a_whole_read_shows_from_there(
    tmp_path, frame_times, rotation, codec, container
):
    # A pose chunk read again starts at its own frames (by a seek to the keyframe before them) instead of
    # decoding the video from its start; each output frame must still show the source frame it showed before.
    path = make_video(
        tmp_path / f"clip.{container}",
        seconds=7.0,
        fps=30,
        frame_times=frame_times,
        rotation=rotation,
        codec=codec,
        container=container,
        keyframe_every=15,
    )
    info = probe_video(path)
    whole = {index: rgb for index, _, rgb in read_frames(path, info, max_side=180)}
    assert len(whole) == info.output_frame_count
    for first in (1, round(SEEK_LEAD_S * info.output_fps) + 1, 100, 150, info.output_frame_count - 1):
        part = list(read_frames(path, info, max_side=180, first=first))
        assert [index for index, _, _ in part] == list(range(first, info.output_frame_count))
        for index, _, rgb in part:
            assert np.array_equal(rgb, whole[index]), (first, index)
