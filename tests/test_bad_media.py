"""The robustness corpus: odd and broken files each get their own clear error, or a correct result."""

from __future__ import annotations

import struct

import av
import cv2
import numpy as np
import pytest
from conftest import DATA
from ingest_http import LoopbackServer, serve
from ingest_media import (
    image_bytes,
    make_audio_only,
    make_video,
    make_wav,
    png_declaring,
)

from marionet.config import Settings
from marionet.errors import InputError
from marionet.media.ingest import check_image, check_video, load_input
from marionet.media.sandbox import validate_isolated
from marionet.media.validate import check_image_bytes, decode_image, decode_with_alpha
from marionet.media.video import read_frames


def _video_error(path, orientation="video") -> InputError:
    with pytest.raises(InputError) as err:
        check_video(path, orientation)
    assert err.value.status == 400 and err.value.param == "video_url"
    return err.value


def test_zero_bytes(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    err = _video_error(empty)
    assert err.code == "video_invalid" and "empty (0 bytes)" in err.message
    with pytest.raises(InputError) as img:
        check_image(empty)
    assert img.value.code == "image_invalid" and "an empty file" in img.value.message


def test_truncated_mp4_without_index(tmp_path):
    # moov at the end (the default): cutting the file loses the index entirely.
    whole = make_video(tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    err = _video_error(cut)
    assert err.code == "video_invalid" and "could not be read as MP4/MOV" in err.message
    assert str(tmp_path) not in err.message  # no server paths in user-facing messages


def test_truncated_mp4_with_index_first(tmp_path):
    # faststart: the index survives, the frames it lists do not.
    whole = make_video(tmp_path / "whole.mp4", faststart=True, seconds=4.0)
    assert check_video(whole, "image").frame_count == 40
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    err = _video_error(cut)
    assert err.code == "video_invalid" and "truncated" in err.message
    found, declared = (int(x) for x in err.message.split(": ")[1].split(" frames")[0].split(" of its "))
    assert declared == 40 and 0 < found < 40


def test_html_served_as_video_mp4(tmp_path):
    server = LoopbackServer()
    try:
        server.routes["/clip.mp4"] = serve(b"<!doctype html><html><body>Not found</body></html>", "video/mp4")
        settings = Settings(data_dir=tmp_path, url_allowlist="127.0.0.1")
        with pytest.raises(InputError) as err:
            load_input(server.url("/clip.mp4"), "video", tmp_path / "task", settings)
    finally:
        server.close()
    assert err.value.code == "video_invalid"
    assert "must be an MP4 or MOV file; this is a HTML/XML text file" in err.value.message


def test_png_declaring_50000_squared_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(50000, 50000))
    assert bomb.stat().st_size < 1000
    with pytest.raises(InputError) as err:
        check_image(bomb)
    assert err.value.code == "image_too_large"
    assert "50000x50000 = 2500.0 megapixels; at most 40 megapixels" in err.value.message


def test_jpeg_bomb_header_is_refused_too(tmp_path):
    data = bytearray(image_bytes(400, 400, ".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 9000, 9000)
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        check_image(path)
    assert err.value.code == "image_too_large" and "81.0 megapixels" in err.value.message


def test_mov_without_a_video_track(tmp_path):
    err = _video_error(make_audio_only(tmp_path / "sound.mov", "mov"))
    assert err.code == "video_no_stream" and "audio only" in err.message


def test_audio_only_files(tmp_path):
    err = _video_error(make_audio_only(tmp_path / "sound.m4a", "mp4"))
    assert err.code == "video_no_stream"
    err = _video_error(make_wav(tmp_path / "sound.wav"))
    assert err.code == "video_invalid" and "MP4 or MOV" in err.message


def test_other_containers_and_playlists_never_reach_a_demuxer(tmp_path):
    webm = make_video(tmp_path / "clip.webm", codec="libvpx-vp9", container="webm", seconds=3.2)
    err = _video_error(webm)
    assert err.code == "video_invalid" and "must be an MP4 or MOV file" in err.message
    playlist = tmp_path / "list.mp4"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )
    err = _video_error(playlist)
    assert err.code == "video_invalid" and "unrecognised format" in err.message


def test_variable_frame_rate_video(tmp_path):
    # 30 frames over the first second, then 10 over the next three: 40 frames, 4 s.
    times = [i / 30 for i in range(30)] + [1 + i * 0.3 for i in range(10)] + [4.0]
    path = make_video(tmp_path / "vfr.mp4", frame_times=times, fps=30)
    info = check_video(path, "image")
    # Timestamps span 0..4.0 s; with one average frame interval (4.0 / 40) the video plays 4.1 s.
    assert info.frame_count == 41
    assert info.duration_s == pytest.approx(4.1, abs=1e-3)
    assert info.fps == pytest.approx(info.frame_count / info.duration_s, rel=0.1)
    frames = list(read_frames(path, info))
    assert len(frames) == info.output_frame_count
    assert all(rgb.shape == (360, 360, 3) for _, _, rgb in frames)
    # Each output frame shows the source frame nearest its own time (make_video paints frame i's lower-left
    # block grey 7 i mod 256): the dense first second drops frames, the sparse rest repeats them, so motion
    # keeps its timing. Read one to one, output frame 30 (3.0 s) showed the source frame of 1.0 s.
    levels = np.array([(i * 7) % 256 for i in range(len(times))])
    for index, t, rgb in frames:
        shown = int(np.argmin(np.abs(levels - rgb[200:, :40].mean())))
        nearest = np.min(np.abs(np.array(times) - t))
        assert abs(times[shown] - t) <= nearest + 1e-3, (index, t, times[shown])


@pytest.mark.parametrize("rotation", [-90, 90])
def test_phone_video_with_rotation_reads_upright(tmp_path, rotation):
    path = make_video(tmp_path / "phone.mp4", width=360, height=640, rotation=rotation, seconds=3.2)
    with av.open(str(path)) as container:
        stored = container.streams.video[0].codec_context
        assert (stored.width, stored.height) == (640, 360)  # stored landscape
    data = path.read_bytes()
    tkhd = data.index(b"tkhd")
    matrix = struct.unpack(">9i", data[tkhd + 44 : tkhd + 80])
    if rotation == -90:
        # The matrix an iPhone writes for a portrait video ("rotate=90"): a=0, b=1, c=-1, d=0.
        assert matrix[:5] == (0, 65536, 0, -65536, 0)
    info = check_video(path, "image")
    assert (info.width, info.height) == (360, 640)
    _, _, rgb = next(read_frames(path, info))
    assert rgb.shape == (640, 360, 3)
    top, bottom = rgb[:100].mean(), rgb[-100:, 60:].mean()
    assert top > 200 and bottom < 50  # the white band is on top, as the phone showed it


def test_hevc_video(tmp_path):
    path = make_video(tmp_path / "hevc.mp4", codec="libx265", seconds=3.2)
    info = check_video(path, "image")
    assert info.codec == "hevc" and (info.width, info.height, info.frame_count) == (360, 360, 32)
    _, _, rgb = next(read_frames(path, info))
    assert rgb.dtype == np.uint8 and rgb[:80].mean() > 200


def test_ten_bit_hevc_video(tmp_path):
    path = make_video(
        tmp_path / "hevc10.mov", codec="libx265", pix_fmt="yuv420p10le", container="mov", seconds=3.2
    )
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    info = check_video(path, "image")
    assert info.codec == "hevc" and info.frame_count == 32
    frames = list(read_frames(path, info))
    assert len(frames) == 32 and frames[0][2].dtype == np.uint8 and frames[0][2][:80].mean() > 200


def test_corrupt_images(tmp_path):
    png = image_bytes(400, 400, ".png")
    cases = {
        "truncated.png": (png[:40], "could not be decoded"),
        "header-only.jpg": (image_bytes(400, 400, ".jpg")[:20], "no frame header"),
        "gif.png": (b"GIF89a" + b"\0" * 100, "a GIF file"),
        "webp.jpg": (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 100, "WebP"),
        "video.png": (b"\0\0\0\x20ftypisom" + b"\0" * 100, "an MP4/MOV video"),
    }
    for name, (data, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as err:
            check_image(path)
        assert err.value.code == "image_invalid" and fragment in err.value.message, name


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding only an Orientation tag, as a phone camera writes it."""
    tiff = b"II*\0" + struct.pack("<IHHHIHHI", 8, 1, 0x0112, 3, 1, orientation, 0, 0)
    app1 = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_a_phone_photo_is_read_turned_as_its_orientation_tag_says():
    bgr = np.zeros((300, 400, 3), np.uint8)
    bgr[:, :200] = (0, 0, 255)  # left half red
    ok, jpeg = cv2.imencode(".jpg", bgr)
    rgb = decode_image(_with_orientation(jpeg.tobytes(), 6))  # 6: turn 90 degrees clockwise to show
    assert rgb.shape == (400, 300, 3)
    assert rgb[:190, :, 0].mean() > 200 and rgb[210:, :, 0].mean() < 50  # the red half is now on top
    info = check_image_bytes(_with_orientation(jpeg.tobytes(), 6))
    assert (info.width, info.height) == (300, 400)  # validation measures the picture as shown, too


def test_a_transparent_png_is_read_laid_on_white_with_its_opacity():
    bgra = np.zeros((320, 320, 4), np.uint8)
    bgra[..., :3] = (0, 255, 0)  # green hidden under the transparent pixels
    bgra[100:220, 100:220] = (255, 0, 0, 255)  # an opaque blue square
    bgra[100:220, 240:260] = (255, 0, 0, 128)  # a half-transparent blue stripe
    ok, png = cv2.imencode(".png", bgra)
    rgb, opacity = decode_with_alpha(png.tobytes())
    assert tuple(rgb[10, 10]) == (255, 255, 255)  # no green: transparent is white
    assert tuple(rgb[150, 150]) == (0, 0, 255)
    assert np.abs(rgb[150, 250].astype(int) - (127, 127, 255)).max() <= 1  # half blue over white
    assert opacity[10, 10] == 0.0 and opacity[150, 150] == 1.0 and abs(opacity[150, 250] - 128 / 255) < 1e-6
    ok, opaque_png = cv2.imencode(".png", np.ascontiguousarray(bgra[..., :3]))
    assert decode_with_alpha(opaque_png.tobytes())[1] is None
    bgra[..., 3] = 255  # an alpha channel that hides nothing
    ok, solid_png = cv2.imencode(".png", bgra)
    assert decode_with_alpha(solid_png.tobytes())[1] is None
    assert decode_image(png.tobytes()).shape == (320, 320, 3)


def test_isolated_check_refuses_a_file_that_takes_too_long(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=3.2)
    with pytest.raises(InputError) as err:
        validate_isolated(path, "video", timeout_s=0.01, memory_mb=4096)
    assert err.value.code == "video_invalid" and "took longer than 0.01 s" in err.value.message


def test_isolated_check_contains_a_decoder_out_of_memory(tmp_path):
    # 100 MB of address space is far too little to decode 1080p: the child fails (a MemoryError, or FFmpeg
    # dying on a failed allocation), this process carries on with a clear error.
    path = DATA / "dance_fullbody_12s.mp4"
    with pytest.raises(InputError) as err:
        validate_isolated(path, "video", timeout_s=60, memory_mb=100)
    assert err.value.code == "video_invalid"
    # Where the allocation fails decides which of these the child reports; each names the cause.
    causes = ("needed more than 100 MB", "decoder crashed", "Cannot allocate memory")
    assert any(cause in err.value.message for cause in causes), err.value.message
    assert validate_isolated(path, "video", timeout_s=60, memory_mb=4096).duration_s == 12.0


def test_isolated_check_returns_the_same_errors(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(50000, 50000))
    with pytest.raises(InputError) as err:
        validate_isolated(bomb, "image", timeout_s=60, memory_mb=4096)
    assert err.value.code == "image_too_large" and err.value.param == "image_url"


def test_isolated_check_turns_an_unexpected_decoder_exception_into_a_clear_error(tmp_path):
    # A folder where a file should be makes the reader raise IsADirectoryError, an exception no check expects.
    for kind in ("image", "video"):
        with pytest.raises(InputError) as err:
            validate_isolated(tmp_path, kind, timeout_s=60, memory_mb=4096)
        assert (err.value.code, err.value.param, err.value.status) == (f"{kind}_invalid", f"{kind}_url", 400)
        assert "could not be read" in err.value.message
