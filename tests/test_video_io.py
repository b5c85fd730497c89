"""The one video reader/writer: duration to the frame, fps cap, audio carried in sync."""

import av
import numpy as np
import pytest
from conftest import DATA

from marionet.media.video import VideoWriter, probe_video, read_frames


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
