"""The CPU engine on the shared media: output format, audio, prompt warning, pose cache, bad input, cancel.

Engine runs are shared through `rendered()` (one run per case per test session), so the quality tests reuse
these outputs instead of rendering again.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATA, shared_picture

from marionet import quality
from marionet.config import Settings
from marionet.engine import PROMPT_WARNING, load_engine
from marionet.engine.base import AnimationRequest, AnimationResult
from marionet.engine.cpu import CpuEngine, pose, prefetch, rigcache
from marionet.engine.cpu import engine as cpu_engine
from marionet.engine.cpu.prefetch import forked_map, ordered_map
from marionet.engine.cpu.render import RenderSettings, render_frame
from marionet.engine.cpu.retarget import retarget
from marionet.engine.cpu.rig import CharacterRig, J, joints_from_landmarks
from marionet.errors import EngineError, MarionetError, TaskCancelled
from marionet.media.cache import InputCache
from marionet.media.video import VideoInfo, VideoWriter, probe_video, read_frames
from marionet.quality import angles_between

# One folder for the session's engine outputs (test_quality reuses them), removed when pytest exits.
WORK = Path(tempfile.mkdtemp(prefix="marionet-engine-tests-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
CACHE = WORK / "poses"

CASES = {
    # image, video, orientation, mode, keep sound, prompt
    "dance": (
        "dance_ref_cartoon.png",
        "dance_fullbody_12s.mp4",
        "video",
        "std",
        True,
        "a girl dancing at night",
    ),
    "half": ("halfbody_ref_elf.jpg", "halfbody_talk_3s.mp4", "image", "std", False, ""),
    "half_pro": ("halfbody_ref_elf.jpg", "halfbody_talk_3s.mp4", "video", "pro", True, ""),
}


@dataclass
class Outcome:
    result: AnimationResult
    request: AnimationRequest
    progress: list[tuple[float, str]] = field(default_factory=list)


@functools.cache
def rendered(case: str) -> Outcome:
    """Run the engine once per case per session; later callers get the same output file."""
    image, video, orientation, mode, sound, prompt = CASES[case]
    request = AnimationRequest(
        image_path=DATA / image,
        video_path=DATA / video,
        output_path=WORK / f"{case}.mp4",
        mode=mode,
        character_orientation=orientation,
        keep_original_sound=sound,
        prompt=prompt,
    )
    calls: list[tuple[float, str]] = []
    result = CpuEngine(cache_dir=CACHE).animate(request, lambda f, m: calls.append((f, m)))
    return Outcome(result=result, request=request, progress=calls)


@functools.cache
def driving_track(video_name: str = "dance_fullbody_12s.mp4") -> pose.PoseTrack:
    """A shared clip's pose track (the dance's unless named), as the engine reads it (from the session's cache
    after the first call)."""
    video = DATA / video_name
    request = AnimationRequest(
        image_path=DATA / "dance_ref_cartoon.png", video_path=video, output_path=WORK / "x"
    )
    track, _ = CpuEngine(cache_dir=CACHE)._pose_track(
        request, probe_video(video), lambda f, m: None, lambda: None
    )
    return track


def copied(track: pose.PoseTrack) -> pose.PoseTrack:
    """A track whose keypoints and detected flags can be changed without changing `track` (a cached one)."""
    return dataclasses.replace(track, keypoints=track.keypoints.copy(), detected=track.detected.copy())


def hips_of(track: pose.PoseTrack) -> np.ndarray:
    """The x of the hips' midpoint in each frame of a track."""
    return (track.keypoints[:, pose.L_HIP, 0] + track.keypoints[:, pose.R_HIP, 0]) / 2


@functools.cache
def cartoon_rig() -> CharacterRig:
    """The cartoon's rig on her own picture's canvas (720 px short side), built once: tests only read it."""
    image = shared_picture("dance_ref_cartoon.png")
    return cpu_engine._character(
        image, None, cpu_engine.canvas_size(image.shape[1], image.shape[0], 720), None
    )


def test_registry_builds_the_cpu_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("MARIONET_DATA_DIR", str(tmp_path))
    from marionet.config import get_settings

    get_settings.cache_clear()
    try:
        engine = load_engine("marionet-cpu")
    finally:
        get_settings.cache_clear()
    assert engine.name == "marionet-cpu"
    assert engine.cache_dir == tmp_path / "cache" / "poses"


@pytest.mark.slow
def test_dance_follows_the_driving_video_format():
    outcome = rendered("dance")
    info = probe_video(outcome.result.output_path)
    driving = probe_video(DATA / "dance_fullbody_12s.mp4")
    assert (info.width, info.height) == (720, 1244)  # the image's 704x1216 framing, 720 px short side, even
    assert info.fps == pytest.approx(24.0)
    assert info.frame_count == driving.output_frame_count == 288
    assert info.duration_s == pytest.approx(12.0, abs=1e-3)
    assert info.codec == "h264" and info.has_audio
    result = outcome.result
    assert (result.width, result.height, result.frame_count) == (720, 1244, 288)
    assert result.duration_s == pytest.approx(12.0) and result.fps == pytest.approx(24.0)
    assert result.warnings == [PROMPT_WARNING]


@pytest.mark.slow
def test_dance_progress_is_reported_per_batch_and_reaches_one():
    fractions = [f for f, _ in rendered("dance").progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    assert len(fractions) >= 288 // 16 * 2  # the pose pass and the render pass both report every 16 frames
    assert {m for _, m in rendered("dance").progress} == {"analysing motion", "rendering"}


@pytest.mark.slow
def test_halfbody_without_sound_keeps_the_image_framing():
    outcome = rendered("half")
    info = probe_video(outcome.result.output_path)
    assert (info.width, info.height) == (1280, 720)
    assert info.fps == pytest.approx(30.0)
    assert info.frame_count == 106
    assert info.duration_s == pytest.approx(106 / 30, abs=1e-3)
    assert not info.has_audio
    assert outcome.result.warnings == []


@pytest.mark.slow
def test_pro_mode_is_1080p_with_audio():
    info = probe_video(rendered("half_pro").result.output_path)
    assert (info.width, info.height) == (1920, 1080)
    assert info.frame_count == 106 and info.has_audio


@pytest.mark.slow
def test_pose_track_and_rig_are_cached_by_content(tmp_path, monkeypatch):
    rendered("half")  # fills the cache for halfbody_talk_3s.mp4 and the elf's rig
    video, image = tmp_path / "same-dance-other-name.mp4", tmp_path / "same-elf-other-name.jpg"
    shutil.copyfile(DATA / "halfbody_talk_3s.mp4", video)
    shutil.copyfile(DATA / "halfbody_ref_elf.jpg", image)
    built = []
    build = cpu_engine._character
    monkeypatch.setattr(cpu_engine, "_character", lambda *args: built.append(args) or build(*args))
    calls: list[tuple[float, str]] = []
    request = AnimationRequest(image, video, tmp_path / "out.mp4", keep_original_sound=False)
    result = CpuEngine(cache_dir=CACHE).animate(request, lambda f, m: calls.append((f, m)))
    assert result.frame_count == 106
    assert {m for _, m in calls} == {"rendering"}  # no pose pass: the track came from the cache
    assert built == []  # no rig built: it came from the cache too
    assert list(CACHE.glob(f"*-{pose.TRACK_VERSION}.npz")) and list(CACHE.glob("rig-*.npz"))


def test_a_cached_rig_draws_the_same_frames_and_a_change_to_what_builds_it_builds_it_again(
    tmp_path, monkeypatch
):
    image, opacity = cpu_engine._read_image(DATA / "dance_ref_cartoon.png")
    mode = cpu_engine.QUALITY["std"]
    canvas = cpu_engine.canvas_size(image.shape[1], image.shape[0], mode.short_side)
    built = []
    build = cpu_engine._character
    monkeypatch.setattr(cpu_engine, "_character", lambda *args: built.append(args) or build(*args))
    path = tmp_path / rigcache.rig_key("ab" * 32, canvas, mode.mesh_cells)
    fresh = cpu_engine._cached_character(path, image, opacity, canvas, mode.mesh_cells)
    again = cpu_engine._cached_character(path, image, opacity, canvas, mode.mesh_cells)
    assert len(built) == 1 and again is not fresh
    motion = retarget(driving_track(), fresh, "video")
    for frame in (0, 120, 250):
        drawn = [render_frame(rig, motion, frame, RenderSettings()) for rig in (fresh, again)]
        assert np.array_equal(*drawn)
    path.write_bytes(b"half a rig")  # damaged: built again, and the cache mended
    cpu_engine._cached_character(path, image, opacity, canvas, mode.mesh_cells)
    assert len(built) == 2 and rigcache.load_rig(path) is not None
    # Another image, canvas or mesh density is another rig; so is any change to the code that builds one.
    keys = {
        path.name,
        rigcache.rig_key("cd" * 32, canvas, mode.mesh_cells),
        rigcache.rig_key("ab" * 32, (canvas[0] + 2, canvas[1]), mode.mesh_cells),
        rigcache.rig_key("ab" * 32, canvas, mode.mesh_cells + 1),
        rigcache.rig_key("ab" * 32, canvas, None),
    }
    monkeypatch.setattr(rigcache, "builder_version", lambda: "0123456789abcdef")
    keys.add(rigcache.rig_key("ab" * 32, canvas, mode.mesh_cells))
    assert len(keys) == 6


@pytest.mark.slow
def test_cancel_between_batches_stops_and_removes_the_output(tmp_path):
    rendered("half")
    output = tmp_path / "cancelled.mp4"
    calls = []

    def progress(fraction: float, message: str) -> None:
        calls.append(fraction)
        if len(calls) == 3:
            raise TaskCancelled()

    request = AnimationRequest(DATA / "halfbody_ref_elf.jpg", DATA / "halfbody_talk_3s.mp4", output)
    with pytest.raises(TaskCancelled):
        CpuEngine(cache_dir=CACHE).animate(request, progress)
    assert len(calls) == 3
    assert not output.exists()


def _children() -> set[int]:
    """This process's child processes (Linux: /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


@pytest.mark.slow
def test_cancel_while_drawing_stops_the_drawing_processes(tmp_path):
    rendered("half")  # its pose track is cached: the progress bar goes straight to drawing
    output = tmp_path / "cancelled.mp4"
    before = _children()
    drawing: list[float] = []
    seen_drawers: set[int] = set()

    def progress(fraction: float, message: str) -> None:
        if message == "rendering" and fraction > 0:
            drawing.append(fraction)
            seen_drawers.update(_children() - before)
            if len(drawing) == 2:
                raise TaskCancelled()

    request = AnimationRequest(DATA / "halfbody_ref_elf.jpg", DATA / "halfbody_talk_3s.mp4", output)
    with pytest.raises(TaskCancelled):
        CpuEngine(cache_dir=CACHE).animate(request, progress)
    assert drawing[-1] < 1.0 and not output.exists()
    assert len(seen_drawers) == 2  # the frames were being drawn by two processes...
    assert _children() == before  # ...which the cancel stopped and reaped


@pytest.mark.slow
def test_a_video_without_a_person_is_refused(tmp_path):
    output = tmp_path / "out.mp4"
    request = AnimationRequest(DATA / "dance_ref_cartoon.png", DATA / "skeleton_render_no_person.mp4", output)
    with pytest.raises(EngineError) as caught:
        CpuEngine(cache_dir=tmp_path / "poses").animate(request)
    assert caught.value.code == "no_person_in_video"
    assert caught.value.param == "video_url"
    assert not output.exists()


def test_an_image_without_a_person_is_refused(tmp_path):
    # The elf picture's left third is cave wall only: a real image with nobody in it.
    scenery = cv2.imread(str(DATA / "halfbody_ref_elf.jpg"))[:, :400]
    image = tmp_path / "cave.png"
    cv2.imwrite(str(image), scenery)
    output = tmp_path / "out.mp4"
    request = AnimationRequest(image, DATA / "halfbody_talk_3s.mp4", output)
    with pytest.raises(EngineError) as caught:
        CpuEngine(cache_dir=tmp_path / "poses").animate(request)
    assert caught.value.code == "no_person_in_image"
    assert "person" in caught.value.message
    assert not output.exists()


@pytest.mark.slow
def test_a_video_that_starts_without_anyone_is_animated_from_its_first_frame(tmp_path):
    # "The pose step crashes when the first frame has no person": the presenter's clip after a second of his
    # studio with him painted out. The character holds the first pose seen until he appears, and the output
    # keeps every frame of the input.
    source = DATA / "halfbody_talk_3s.mp4"
    info = probe_video(source)
    video = tmp_path / "late.mp4"
    with VideoWriter(
        video, width=info.width, height=info.height, fps=info.output_fps, preset="ultrafast"
    ) as writer:
        for index, _, rgb in read_frames(source, info):
            if index == 0:
                empty = rgb.copy()
                empty[:, info.width // 3 :] = rgb[:, : info.width // 3].mean(axis=(0, 1)).astype(np.uint8)
                for _ in range(30):
                    writer.write(empty)
            writer.write(rgb)
    request = AnimationRequest(DATA / "halfbody_ref_elf.jpg", video, tmp_path / "out.mp4")
    result = CpuEngine(cache_dir=tmp_path / "poses").animate(request)
    assert result.frame_count == probe_video(video).output_frame_count == info.output_frame_count + 30
    track = pose.load_track(next((tmp_path / "poses").glob(f"*-{pose.TRACK_VERSION}.npz")))
    assert not track.detected[:30].any() and track.detected[30:].mean() > 0.95
    body = track.keypoints[:, : pose.R_HIP + 1, :2]  # head, arms and hips: what a half-body clip shows
    # The first pose seen, held; the zero-lag smoothing eases into the first motion over the last few frames.
    assert np.abs(body[:24] - body[0]).max() < 1.0
    assert np.abs(body[0] - body[30]).max() < 0.1 * float(pose.torso_length(track.keypoints[30]))
    output = probe_video(result.output_path)
    frames = [rgb.astype(np.int16) for index, _, rgb in read_frames(result.output_path, output) if index < 24]
    assert max(np.abs(frame - frames[0]).mean() for frame in frames) < 1.0  # held still, no garbage


@pytest.mark.slow
def test_a_dancer_too_small_for_the_detector_is_found_and_followed(tmp_path):
    # The dance's first two seconds at a quarter of the frame's sides, in the middle of a grey frame (she is a
    # fifth of its height): BlazePose's detector, which sees the whole frame at 224 px, finds nobody. The
    # engine looks for her in windows of a few frames and reads only the region she moves in: her limbs as
    # read from the clip at full size.
    source = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(source)
    small_w, small_h = info.width // 8 * 2, info.height // 8 * 2
    left, top = (info.width - small_w) // 2, (info.height - small_h) // 2
    full, small = tmp_path / "full.mp4", tmp_path / "small.mp4"
    size = {"width": info.width, "height": info.height, "fps": info.output_fps, "preset": "ultrafast"}
    with VideoWriter(full, **size) as whole, VideoWriter(small, **size) as far:
        for index, _, rgb in read_frames(source, info):
            if index == 48:
                break
            whole.write(rgb)
            frame = np.full_like(rgb, 128)
            frame[top : top + small_h, left : left + small_w] = cv2.resize(
                rgb, (small_w, small_h), interpolation=cv2.INTER_AREA
            )
            far.write(frame)
    small_info = probe_video(small)
    assert pose.extract_pose_track(small, small_info, lambda done: None).person_share == 0.0
    request = AnimationRequest(DATA / "dance_ref_cartoon.png", small, tmp_path / "out.mp4")
    calls: list[tuple[float, str]] = []
    result = CpuEngine(cache_dir=tmp_path / "poses").animate(request, lambda f, m: calls.append((f, m)))
    assert result.frame_count == 48
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # the second look moves the bar on
    assert "analysing motion where they are" in {message for _, message in calls}
    found = pose.load_track(next((tmp_path / "poses").glob(f"*-{pose.TRACK_VERSION}.npz")))
    assert found.person_share > 0.95
    reference = pose.extract_pose_track(full, probe_video(full), lambda done: None)
    placed = reference.keypoints.copy()
    placed[..., 0] = placed[..., 0] * small_w / info.width + left
    placed[..., 1] = placed[..., 1] * small_h / info.height + top
    limbs = [(pose.L_SHOULDER, pose.L_ELBOW), (pose.L_ELBOW, pose.L_WRIST), (pose.R_SHOULDER, pose.R_ELBOW)]
    limbs += [(pose.R_ELBOW, pose.R_WRIST), (pose.L_HIP, pose.L_KNEE), (pose.R_HIP, pose.R_KNEE)]
    for start, end in limbs:
        a = found.keypoints[:, end, :2] - found.keypoints[:, start, :2]
        b = placed[:, end, :2] - placed[:, start, :2]
        turn = np.degrees(np.abs(np.angle((a[:, 0] + 1j * a[:, 1]) / (b[:, 0] + 1j * b[:, 1]))))
        assert turn.mean() < 5.0
    assert np.linalg.norm(found.keypoints[:, pose.NOSE, :2] - placed[:, pose.NOSE, :2], axis=1).mean() < 6.0


def _arms(keypoints: np.ndarray) -> tuple[float, float]:
    """Shoulder width and the upper arms' mean length of a BlazePose reading, in pixels."""
    shoulders = float(np.linalg.norm(keypoints[pose.L_SHOULDER, :2] - keypoints[pose.R_SHOULDER, :2]))
    pairs = ((pose.L_SHOULDER, pose.L_ELBOW), (pose.R_SHOULDER, pose.R_ELBOW))
    upper = [keypoints[s, :2] - keypoints[e, :2] for s, e in pairs]
    return shoulders, float(np.mean([np.linalg.norm(v) for v in upper]))


@pytest.mark.parametrize("room", ["headroom", "beside"])
def test_a_half_body_character_with_room_around_her_is_read_as_when_framed_tight(room):
    # The elf's picture with a plain margin above her, or a third of her width beside her. BlazePose reading
    # the whole picture makes her a fifth to a third narrower and her upper arms a third to two thirds shorter;
    # the character's pose is the best fit to her silhouette of that reading and of crops around her.
    rgb = shared_picture("halfbody_ref_elf.jpg")
    height, width = rgb.shape[:2]
    plain = [int(v) for v in np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).mean(axis=0)]
    top, right = (height // 3, 0) if room == "headroom" else (0, width // 3)
    roomy = cv2.copyMakeBorder(rgb, top, 0, 0, right, cv2.BORDER_CONSTANT, value=plain)
    tight_shoulders, tight_arms = _arms(pose.detect_image_pose(rgb).keypoints)
    with pose.pose_solution().Pose(static_image_mode=True, enable_segmentation=True) as whole:
        whole_shoulders, whole_arms = _arms(pose._static_pose(whole, roomy)[0])
    assert whole_shoulders < 0.85 * tight_shoulders and whole_arms < 0.7 * tight_arms  # the misreading
    found = pose.detect_image_pose(roomy)
    shoulders, arms = _arms(found.keypoints - (0, top, 0, 0))
    assert abs(shoulders - tight_shoulders) < 0.05 * tight_shoulders
    assert abs(arms - tight_arms) < 0.1 * tight_arms
    assert found.mask.shape == roomy.shape[:2] and (found.mask[:top] > 0.5).sum() == 0


def _in_a_large_picture(rgb: np.ndarray, fraction: float, colour: tuple[int, int, int]) -> tuple:
    """`rgb` in the middle of a plain picture whose sides are 1/fraction times its own; and its (top, left)."""
    height, width = rgb.shape[:2]
    big_h, big_w = int(height / fraction), int(width / fraction)
    top, left = (big_h - height) // 2, (big_w - width) // 2
    picture = np.empty((big_h, big_w, 3), np.uint8)
    picture[:] = colour
    picture[top : top + height, left : left + width] = rgb
    return picture, top, left


def test_a_character_small_in_a_large_picture_is_found_and_read_as_when_framed_tight():
    # The dancer cartoon's picture at 45 % of a plain grey picture's sides: her box fills 13 % of it, above the
    # 5 % the contract recommends. Read whole, BlazePose finds nobody; the windows find her.
    rgb = shared_picture("dance_ref_cartoon.png")
    picture, top, left = _in_a_large_picture(rgb, 0.45, (128, 128, 128))
    with pose.pose_solution().Pose(static_image_mode=True, enable_segmentation=True) as whole:
        assert pose._static_pose(whole, picture) is None
    tight_shoulders, tight_arms = _arms(pose.detect_image_pose(rgb).keypoints)
    found = pose.detect_image_pose(picture)
    assert found is not None
    shoulders, arms = _arms(found.keypoints - (left, top, 0, 0))
    assert abs(shoulders - tight_shoulders) < 0.05 * tight_shoulders
    assert abs(arms - tight_arms) < 0.1 * tight_arms


def test_a_small_character_s_silhouette_is_the_crops_not_the_whole_picture_s_coarse_blob():
    # The cartoon at a third of a dark picture's sides is found whole, but BlazePose segments at 256 px: that
    # blob took in the Eiffel tower beside her (it vanished into the filled background). Her crops' masks are
    # as fine as her own picture's.
    rgb = shared_picture("dance_ref_cartoon.png")
    height, width = rgb.shape[:2]
    tight = pose.detect_image_pose(rgb).mask > 0.5
    picture, top, left = _in_a_large_picture(rgb, 0.33, (40, 40, 60))

    def overlap(mask: np.ndarray) -> float:
        inside = mask[top : top + height, left : left + width] > 0.5
        return float((inside & tight).sum() / (inside | tight).sum())

    with pose.pose_solution().Pose(static_image_mode=True, enable_segmentation=True) as whole:
        points, coarse = pose._static_pose(whole, picture)
    assert pose._is_person(points, coarse) and overlap(coarse) < 0.7
    found = pose.detect_image_pose(picture)
    assert overlap(found.mask) > 0.9
    assert (found.mask > 0.5).sum() == (found.mask[top : top + height, left : left + width] > 0.5).sum()


def test_of_two_people_in_the_picture_the_larger_is_the_character():
    # The cartoon's picture on the right of a dark one, the dancer's frame at 0.6 of its height on the left.
    # BlazePose reads the dancer (its detector scores her higher), and she was animated; the hosted service
    # follows the largest person, and so does the character.
    cartoon = shared_picture("dance_ref_cartoon.png")
    height, width = cartoon.shape[:2]
    dancer = next(rgb for index, _, rgb in read_frames(DATA / "dance_fullbody_12s.mp4") if index == 144)
    dancer = cv2.resize(
        dancer, (round(dancer.shape[1] * 0.6 * height / dancer.shape[0]), round(0.6 * height))
    )
    picture = np.full((height, 2 * width, 3), 30, np.uint8)
    picture[:, width:] = cartoon
    picture[height - dancer.shape[0] :, 40 : 40 + dancer.shape[1]] = dancer
    with pose.pose_solution().Pose(static_image_mode=True, enable_segmentation=True) as whole:
        assert pose._static_pose(whole, picture)[0][pose.NOSE, 0] < width  # the misreading: the dancer
    alone = pose.detect_image_pose(cartoon)
    found = pose.detect_image_pose(picture)
    shoulders, arms = _arms(found.keypoints - (width, 0, 0, 0))
    alone_shoulders, alone_arms = _arms(alone.keypoints)
    assert (
        np.abs(found.keypoints[:, :2] - (width, 0) - alone.keypoints[:, :2])[: pose.L_HIP].max()
        < 0.05 * height
    )
    assert abs(shoulders - alone_shoulders) < 0.05 * alone_shoulders
    assert abs(arms - alone_arms) < 0.1 * alone_arms
    assert (found.mask[:, :width] > 0.5).sum() < 0.01 * (found.mask > 0.5).sum()
    # Alone in her own frame, the dancer is nobody else: hidden under her grey silhouette rather than a box,
    # she was read again as someone larger, with a mask of grey (the photo pair's identity fell 0.97 -> 0.94).
    frame = next(rgb for index, _, rgb in read_frames(DATA / "dance_fullbody_12s.mp4") if index == 144)
    frame = np.ascontiguousarray(frame[:, ::-1])
    with pose.pose_solution().Pose(static_image_mode=True, enable_segmentation=True) as graph:
        assert pose._larger_in_image(graph, frame, pose.detect_image_pose(frame).keypoints) is None


def test_a_character_photographed_with_her_elbow_towards_the_camera_keeps_her_arm_s_length():
    # The dancer's own frame 104, mirrored, as the character: one elbow points at the camera there, and her
    # upper arm is drawn 0.54 of its length in the rest of her video. Kept at that length, it was a stump
    # whenever the dance stretched the arm out. Driven by her own dance, each limb bone is now drawn about as
    # long, against her torso, as her video shows it (the median over the frames: 0.79-0.97 measured, that
    # upper arm 0.95; the forearm at 0.79 is drawn so, within what BlazePose's readings vary by, and kept).
    video = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(video)
    with contextlib.closing(read_frames(video, info)) as frames:
        image = next(rgb for index, _, rgb in frames if index == 104)[:, ::-1].copy()
    track = driving_track()
    rig = cpu_engine._character(image, None, cpu_engine.canvas_size(info.width, info.height, 720), None)
    motion = retarget(track, rig, "video")
    driver = joints_from_landmarks(track.keypoints)[track.detected, :, :2]
    drawn = motion.joints[track.detected]

    def against_torso(joints: np.ndarray, parent: str, child: str) -> np.ndarray:
        torso = np.linalg.norm(joints[:, J["neck"]] - joints[:, J["pelvis"]], axis=1)
        return np.linalg.norm(joints[:, J[child]] - joints[:, J[parent]], axis=1) / torso

    for side in ("l_", "r_"):
        for parent, child in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")):
            bone = (side + parent, side + child)
            ratio = np.median(against_torso(drawn, *bone) / against_torso(driver, *bone))
            assert 0.75 < ratio < 1.2, (bone, ratio)


def test_hands_turn_at_the_wrist_only_where_the_driver_and_the_picture_both_show_them():
    # A hand follows the driver's wrist -> hand direction as far as both the driver's landmarks and the
    # picture's are seen: a hand the picture hides (behind the back) has no wrist to turn at, and a hand the
    # driver's frame loses keeps its rest angle to the forearm.
    track = dataclasses.replace(driving_track(), keypoints=driving_track().keypoints.copy())
    rig = cartoon_rig()
    hands = [J["l_hand"], J["r_hand"]]
    trust = retarget(track, rig, "video").tip_trust
    assert trust.shape == (track.frame_count, len(rig.joints))
    assert trust[:, hands].mean() > 0.8  # the dancer's and the cartoon's hands are seen
    hidden = dataclasses.replace(rig, visibility=rig.visibility.copy())
    hidden.visibility[J["l_hand"]] = 0.2
    trust_hidden = retarget(track, hidden, "video").tip_trust
    assert trust_hidden[:, J["l_hand"]].max() == 0.0
    assert np.array_equal(trust_hidden[:, J["r_hand"]], trust[:, J["r_hand"]])
    track.keypoints[:10, pose.L_WRIST, 3] = 0.1
    lost = retarget(track, rig, "video").tip_trust
    assert lost[:10, J["l_hand"]].max() == 0.0 and np.array_equal(lost[10:], trust[10:])


@pytest.mark.slow
def test_a_landscape_clip_drives_a_portrait_character_as_large_as_a_portrait_clip_does():
    # The dance re-framed as a landscape clip: her frame scaled to 720 px high, a third of the way across a
    # 1280 x 720 frame. Fitting that whole frame inside the cartoon's portrait canvas drew her at a third of the
    # height the portrait clip gives, floating in the canvas's middle; now the frame's empty sides overflow
    # (0.81 of it: her fingertips reach the portrait frame's edges, and are kept on the canvas here).
    portrait = driving_track()
    scale = 720 / portrait.height
    keypoints = portrait.keypoints.copy()
    keypoints[..., :3] *= scale
    keypoints[..., 0] += (1280 - portrait.width * scale) // 3
    landscape = dataclasses.replace(portrait, keypoints=keypoints, width=1280, height=720)
    rig = cartoon_rig()
    seen = portrait.detected

    def drawn(track: pose.PoseTrack) -> np.ndarray:
        return retarget(track, rig, "video").joints[seen]

    def tall(joints: np.ndarray) -> float:
        return float(np.median(joints[..., 1].max(axis=1) - joints[..., 1].min(axis=1)))

    wide = drawn(landscape)
    assert tall(wide) > 0.78 * tall(drawn(portrait)), tall(wide) / tall(drawn(portrait))
    width, height = rig.canvas_size
    inside = (wide[..., 0] >= 0) & (wide[..., 0] < width) & (wide[..., 1] >= 0) & (wide[..., 1] < height)
    assert inside.mean() > 0.995


def test_the_driver_s_frame_is_fitted_whole_unless_the_person_would_come_out_small():
    from marionet.engine.cpu.retarget import _frame_fit

    rng = np.random.default_rng(1)
    canvas = (720, 1280)

    def person(x0, x1, y0, y1, frames=50):
        """Joints (frames, 19, 2) spread over the box, whose corners every frame reaches."""
        points = np.stack([rng.uniform(x0, x1, (frames, 19)), rng.uniform(y0, y1, (frames, 19))], axis=2)
        points[:, :2] = [[x0, y0], [x1, y1]]
        return points

    # The same shape: the whole frame, scaled to the canvas.
    fit, offset = _frame_fit(person(300, 700, 100, 1200), (1080, 1920), canvas, 100.0)
    assert fit == pytest.approx(720 / 1080) and np.allclose(offset, [0, (1280 - 1920 * fit) / 2])
    # A landscape frame with someone dancing in its middle: enlarged until their reach meets the margins.
    dancer = person(560, 720, 60, 660)
    fit, offset = _frame_fit(dancer, (1280, 720), canvas, 40.0)
    assert fit > 1.5 * (720 / 1280)
    on_canvas = dancer * fit + offset
    assert on_canvas[..., 0].min() >= 0.02 * 720 - 1e-6 and on_canvas[..., 0].max() <= 0.98 * 720 + 1e-6
    # Someone who sweeps the whole frame's width: nothing to gain, the whole frame again.
    fit, _ = _frame_fit(person(10, 1270, 100, 600), (1280, 720), canvas, 60.0)
    assert fit == pytest.approx(720 / 1280)
    # A presenter cut off by the frame's bottom: its bottom edge stays at or below the canvas's.
    fit, offset = _frame_fit(person(500, 800, 150, 1080), (1920, 1080), canvas, 120.0)
    assert fit > 720 / 1920 and offset[1] + 1080 * fit >= 1280 - 1e-6
    # Someone at a landscape frame's right edge (a second, smaller person left of them is not followed): the
    # frame's right edge on the canvas's, so they stay on it whole.
    edge = person(900, 1280, 100, 700)
    fit, offset = _frame_fit(edge, (1280, 720), canvas, 100.0)
    on_canvas = edge * fit + offset
    assert offset[0] + 1280 * fit == pytest.approx(720)
    assert on_canvas[..., 0].min() >= 0 and on_canvas[..., 0].max() <= 720 + 1e-6
    # And at its left edge.
    edge[..., 0] = 1280 - edge[..., 0]
    fit, offset = _frame_fit(edge, (1280, 720), canvas, 100.0)
    on_canvas = edge * fit + offset
    assert offset[0] == pytest.approx(0)
    assert on_canvas[..., 0].min() >= -1e-6 and on_canvas[..., 0].max() <= 720


def test_ordered_map_keeps_order_raises_the_error_and_stops_early():
    import time

    def slow_square(i):
        time.sleep(0.002 * (i % 3))  # out-of-order finishes: the results must still come in order
        return i * i

    assert list(ordered_map(slow_square, range(50), workers=2, depth=4)) == [i * i for i in range(50)]

    def broken(i):
        if i == 5:
            raise ValueError("bad frame")
        return i

    with pytest.raises(ValueError, match="bad frame"):
        list(ordered_map(broken, range(20)))
    started = []

    def counted(i):
        started.append(i)
        return i

    with contextlib.closing(ordered_map(counted, range(1000), workers=2, depth=3)) as items:
        assert next(items) == 0
    assert len(started) < 10  # closing stopped the submissions instead of drawing all 1000


def _frame_of(index: int) -> np.ndarray:
    """A frame that says which frame it is and which process drew it."""
    time.sleep(0.002 * (index % 3))  # the processes finish out of turn: frames must still come in order
    frame = np.full((6, 4, 3), index % 251, np.uint8)
    frame[0, :, :] = np.frombuffer(np.int64(os.getpid()).tobytes() + bytes(4), np.uint8).reshape(4, 3)
    return frame


def _drawer_pid(frame: np.ndarray) -> int:
    return int(np.frombuffer(frame[0].tobytes()[:8], np.int64)[0])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_forked_drawing_keeps_order_and_stops_its_processes():
    frames = [
        (f[1:].copy(), _drawer_pid(f)) for f in forked_map(_frame_of, 40, (6, 4, 3), workers=2, depth=2)
    ]
    assert [int(f[0, 0, 0]) for f, _ in frames] == list(range(40))
    assert all((f == i % 251).all() for i, (f, _) in enumerate(frames))
    drawers = {pid for _, pid in frames}
    assert len(drawers) == 2 and os.getpid() not in drawers  # drawn by two other processes, turn about
    assert all(_gone(pid) for pid in drawers)  # and none left behind, not even as a zombie

    with contextlib.closing(forked_map(_frame_of, 10_000, (6, 4, 3), workers=2, depth=3)) as items:
        first = _drawer_pid(next(items))
    assert _gone(first)  # stopping early stops the processes instead of drawing all 10 000


@pytest.mark.parametrize("forks_allowed", [0, 1])
def test_forked_drawing_goes_on_with_fewer_processes_or_threads_when_fork_fails(monkeypatch, forks_allowed):
    real_fork, forks = prefetch._fork, []

    def limited_fork() -> int:
        if len(forks) >= forks_allowed:
            raise BlockingIOError(11, "Resource temporarily unavailable")  # what a process limit answers
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(prefetch, "_fork", limited_fork)
    frames = [(f[1:].copy(), _drawer_pid(f)) for f in forked_map(_frame_of, 30, (6, 4, 3), workers=2)]
    assert [int(f[0, 0, 0]) for f, _ in frames] == list(range(30))
    drawers = {pid for _, pid in frames}
    if forks_allowed:
        assert len(drawers) == 1 and os.getpid() not in drawers and _gone(drawers.pop())
    else:
        assert drawers == {os.getpid()}  # threads of this process drew them


def test_forked_drawing_raises_the_error_of_a_frame_and_names_a_process_that_died():
    def broken(index: int) -> np.ndarray:
        if index == 5:
            raise ValueError("bad frame 5")
        return _frame_of(index)

    with pytest.raises(ValueError, match="bad frame 5") as caught:
        list(forked_map(broken, 20, (6, 4, 3)))
    assert "in the drawing process" in str(caught.value.__cause__)  # where it was raised, over there

    def killed(index: int) -> np.ndarray:
        if index == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return _frame_of(index)

    with pytest.raises(MarionetError, match="killed by signal 9") as died:
        list(forked_map(killed, 20, (6, 4, 3)))
    assert died.value.code == "engine_crashed"


@pytest.mark.slow
@pytest.mark.parametrize("big_on_the_left", [True, False])
def test_with_two_people_the_larger_one_is_followed(tmp_path, big_on_the_left):
    """The hosted service follows the largest person; a smaller, mirrored dancer beside it must not pull the
    track over, whichever side each stands on."""
    source = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(source)
    clip = tmp_path / "two.mp4"
    big_x, small_x = (60, 700) if big_on_the_left else (600, 100)
    with VideoWriter(clip, width=960, height=540, fps=info.output_fps, preset="ultrafast") as writer:
        for index, _, rgb in read_frames(source, info, max_side=960):
            if index >= 72:
                break
            frame = np.full((540, 960, 3), 230, np.uint8)
            frame[:, big_x : big_x + 304] = cv2.resize(rgb, (304, 540))
            frame[270:, small_x : small_x + 152] = cv2.resize(rgb, (152, 270))[:, ::-1]
            writer.write(np.ascontiguousarray(frame))
    track = pose.extract_pose_track(clip, probe_video(clip), lambda done: None)
    assert track.person_share > 0.9
    hips_x = hips_of(track)
    assert np.all((hips_x > big_x) & (hips_x < big_x + 304))


@pytest.mark.parametrize("total", [1, 59, 60, 106, 288, 901])
def test_pose_chunks_cover_the_clip_once_in_whole_rounds_of_lanes(total):
    chunks = pose.pose_chunks(total)
    assert [i for chunk in chunks for i in chunk] == list(range(total))
    if total < 2 * pose.MIN_CHUNK_FRAMES:
        assert len(chunks) == 1
    else:
        assert len(chunks) % 2 == 0  # two lanes finish together
        assert max(map(len, chunks)) <= pose.MAX_CHUNK_FRAMES
        assert min(map(len, chunks)) > pose.SEAM_FRAMES  # a lead-in never reaches past the previous chunk


@pytest.mark.slow
def test_the_track_does_not_depend_on_how_many_lanes_read_it(monkeypatch):
    video = DATA / "halfbody_talk_3s.mp4"
    info = probe_video(video)
    two = pose.extract_pose_track(video, info, lambda done: None)
    monkeypatch.setattr(pose, "POSE_LANES", 1)
    one = pose.extract_pose_track(video, info, lambda done: None)
    assert len(pose.pose_chunks(info.output_frame_count)) == 2
    assert np.array_equal(one.detected, two.detected) and one.detected.all()
    assert np.array_equal(one.keypoints, two.keypoints)


@pytest.mark.slow
def test_a_stream_shorter_than_declared_ends_the_pose_pass_with_the_last_pose_held():
    # Declared 400 frames, 106 in the stream: the second chunk stops early, the third and fourth never start.
    video = DATA / "halfbody_talk_3s.mp4"
    info = dataclasses.replace(probe_video(video), frame_count=400)
    assert len(pose.pose_chunks(400)) == 4
    track = pose.extract_pose_track(video, info, lambda done: None)
    assert track.frame_count == 400
    assert track.detected[:106].all() and not track.detected[106:].any()
    held = track.keypoints[116:, :, :2]  # after the smoothing's few frames of settling
    assert np.allclose(held, held[0], atol=0.05)  # one pose held still to the declared end
    assert np.abs(held[0] - track.keypoints[105, :, :2]).max() < 30.0  # the last one seen


def test_chunks_are_joined_by_a_cross_fade_not_a_jump():
    chunks = [range(0, 40), range(40, 80)]
    lead = pose.lead_in(chunks[1])
    assert lead == range(40 - pose.SEAM_FRAMES, 40)
    # The second graph reads everything 30 px further right than the first: a seam would jump by 30 px.
    first = np.ones((40, 33, 4), np.float32)
    second = np.ones((len(lead) + 40, 33, 4), np.float32)
    second[:, :, 0] += 30.0
    found = [np.ones(40, bool), np.ones(len(lead) + 40, bool)]
    found[1][0] = False  # the second graph missed the first frame of its lead-in: the first one's reading
    found[0][lead.stop - 1] = False  # the first missed the last lead-in frame: the second one's reading
    keypoints, detected = pose._join_chunks(chunks, [first, second], found, 80)
    assert detected.all()
    x = keypoints[:, pose.NOSE, 0]
    assert x[0] == 1.0 and x[lead.start] == 1.0 and x[39] == 31.0 and x[79] == 31.0
    steps = np.diff(x[lead.start + 1 : lead.stop - 1])
    assert np.allclose(steps, 30.0 / (len(lead) + 1))  # a ramp across the lead-in


def test_a_cancelled_pose_pass_stops_its_lanes(tmp_path):
    video = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(video)
    assert len(pose.pose_chunks(info.output_frame_count)) > pose.POSE_LANES
    calls = []

    def on_batch(done: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise TaskCancelled()

    with pytest.raises(TaskCancelled):
        pose.extract_pose_track(video, info, on_batch)
    assert calls == [16, 32]  # every batch of 16 frames, counted over both lanes
    assert not [t for t in threading.enumerate() if t.name.startswith("marionet-pose")]


@pytest.mark.slow
@pytest.mark.parametrize("right_scale", [1.0, 0.9])
def test_with_two_dancers_one_is_followed_across_every_chunk(tmp_path, right_scale):
    """Each chunk's graph follows whoever it finds first. Two dancers side by side (the right one mirrored and
    a second ahead): the track stays on one of them for the whole clip, and when the right one is a tenth
    smaller (which the detector picks first here), on the larger left one, as the hosted service does."""
    source = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(source)
    clip = tmp_path / "twins.mp4"
    ahead = round(info.output_fps)
    small = (round(360 * right_scale), round(640 * right_scale))
    frames = []
    with VideoWriter(clip, width=720, height=640, fps=info.output_fps, preset="ultrafast") as writer:
        for index, _, rgb in read_frames(source, info, max_side=640):
            frames.append(cv2.resize(rgb, (360, 640)))
            if index >= ahead:
                right = np.full((640, 360, 3), 230, np.uint8)
                x = (360 - small[0]) // 2
                right[640 - small[1] :, x : x + small[0]] = cv2.resize(frames[-1][:, ::-1], small)
                writer.write(np.ascontiguousarray(np.hstack([frames.pop(0), right])))
    twins = probe_video(clip)
    assert len(pose.pose_chunks(twins.output_frame_count)) >= 4
    track = pose.extract_pose_track(clip, twins, lambda done: None)
    assert track.person_share > 0.9
    hips_x = hips_of(track)
    followed_left = hips_x[0] < 360
    assert np.all((hips_x < 360) == followed_left)
    if right_scale < 1.0:
        assert followed_left


@dataclass(frozen=True)
class Dancer:
    """The shared dancer placed in a clip's frame (640 px high): between columns x0 and x1 (or from
    `moving(seconds)` on, as wide), standing on its bottom at `scale` of its height (over 1, cut at the
    bottom), `behind` frames behind the clip, mirrored if asked, from `since` to `until` seconds."""

    x0: int
    x1: int
    scale: float
    behind: int = 0
    mirrored: bool = False
    since: float = 0.0
    until: float = float("inf")
    moving: Callable[[float], int] | None = None


def dancers_clip(path: Path, seconds: float, dancers: list[Dancer], width: int = 1280) -> Path:
    """A clip of copies of the shared dance on grey, each drawn over the ones before it in `dancers`."""
    source = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(source)
    frames = []
    with VideoWriter(path, width=width, height=640, fps=info.output_fps, preset="ultrafast") as writer:
        for index, _, rgb in read_frames(source, info, max_side=640):
            if index >= seconds * info.output_fps:
                break
            frames.append(cv2.resize(rgb, (360, 640)))
            frame = np.full((640, width, 3), 200, np.uint8)
            now = index / info.output_fps
            for dancer in dancers:
                if not dancer.since <= now <= dancer.until:
                    continue
                picture = frames[max(0, index - dancer.behind)]
                wide = dancer.x1 - dancer.x0
                drawn = cv2.resize(
                    picture[:, ::-1] if dancer.mirrored else picture, (wide, round(640 * dancer.scale))
                )
                drawn = drawn[:640]
                x = dancer.moving(now) if dancer.moving else dancer.x0
                shown = slice(max(0, x), min(width, x + wide))
                if shown.stop > shown.start:
                    frame[640 - len(drawn) :, shown] = drawn[:, shown.start - x : shown.stop - x]
            writer.write(np.ascontiguousarray(frame))
    return path


def engine_pose_pass(
    clip: Path, tmp_path: Path
) -> tuple[VideoInfo, pose.PoseTrack, float, list[tuple[float, str]]]:
    """The engine's pose pass on a clip of two chunks or more: the clip's info, the track, the share of the bar
    it took and the progress it reported (fraction, message)."""
    info = probe_video(clip)
    assert len(pose.pose_chunks(info.output_frame_count)) >= 2
    calls: list[tuple[float, str]] = []
    request = AnimationRequest(DATA / "dance_ref_cartoon.png", clip, tmp_path / "out.mp4")
    track, share = CpuEngine(cache_dir=tmp_path / "poses")._pose_track(
        request, info, lambda fraction, message: calls.append((fraction, message)), lambda: None
    )
    return info, track, share, calls


@pytest.mark.slow
@pytest.mark.parametrize("stays", [True, False], ids=["comes_in_and_dances", "passes_by"])
def test_a_larger_dancer_who_comes_in_later_is_followed_and_a_passer_by_is_not(tmp_path, stays, monkeypatch):
    """A smaller dancer (0.7 of the size, mirrored, three seconds behind) stands on the left from the first
    frame; a larger one slides in from the right at 1 s and dances to the end, or comes in at 2 s and leaves
    again by 3.5 s. Every chunk's graph after the first picked the larger one, and each was read again on the
    smaller, who was followed through the whole clip. The hosted service follows the largest person: the one
    who fills more of the clip is followed, once and for all of it."""
    small = Dancer(80, 332, 0.7, behind=72, mirrored=True)
    came, went = (1.0, 99.0) if stays else (2.0, 3.5)
    # Slides in from the right at 600 px a second as far as column 460 (and out again if it goes).
    large = Dancer(
        460,
        820,
        1.0,
        since=came,
        until=went,
        moving=lambda now: int(max(460, 960 - min(now - came, went - now) * 600)),
    )
    clip = dancers_clip(tmp_path / "later.mp4", 6.0, [small, large], width=960)
    later, track, share, calls = engine_pose_pass(clip, tmp_path)
    # The bar goes on moving while the clip is read again, and the render starts where that ended.
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions)
    again = [fraction for fraction, message in calls if message == cpu_engine.OTHERS_MESSAGE]
    assert len(again) >= 8 and again[0] >= cpu_engine.POSE_SHARE
    assert share == pytest.approx(cpu_engine.POSE_SHARE + cpu_engine.OTHERS_SHARE)
    assert again[-1] <= share
    hips_x = hips_of(track)
    on_the_left = (hips_x > small.x0) & (hips_x < small.x1)
    if stays:
        whole = slice(round(1.8 * later.output_fps), None)  # from when the larger one is all in the frame
        assert track.detected[whole].all()
        assert np.all((hips_x[whole] > large.x0) & (hips_x[whole] < large.x1))
        assert not on_the_left.any()  # before she came in nobody is followed: her first pose is held
        # A cancel while the clip is read again with the first person hidden stops that reading's lanes too.
        hiding = pose._hiding
        again = threading.Event()
        monkeypatch.setattr(pose, "_hiding", lambda *args: again.set() or hiding(*args))

        def on_batch(done: int) -> None:
            if again.is_set():
                raise TaskCancelled()

        with pytest.raises(TaskCancelled):
            pose.extract_pose_track(clip, later, on_batch)
        assert not [t for t in threading.enumerate() if t.name.startswith("marionet-pose")]
    else:
        assert track.person_share > 0.9
        assert on_the_left.all()


@pytest.mark.slow
def test_of_three_people_the_one_who_fills_the_clip_most_is_followed_through_it(tmp_path):
    """Three dancers, 0.6 of the size on the left and 0.75 on the right from the first frame, 1.0 in the middle
    from 0.5 s. Only the first two found used to be compared (the right one was followed); the clip read again
    with her hidden followed the right one in its first chunk and the middle one in its second, and the
    character jumped from one dancer to another before that reading was made one person. Now each person found
    is read through the clip, made one person, with those before hidden, until nobody else is seen: the middle
    one, largest and there for all but half a second, is followed from the first frame she is seen to the last,
    and the bar moves on all the while without going back."""
    dancers = [
        Dancer(40, 256, 0.6, behind=60, mirrored=True),
        Dancer(960, 1230, 0.75, behind=30),
        Dancer(460, 820, 1.0, since=0.5),
    ]
    three, track, share, calls = engine_pose_pass(
        dancers_clip(tmp_path / "three.mp4", 4.0, dancers), tmp_path
    )
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] <= share
    hips_x = hips_of(track)
    middle = dancers[2]
    came = round(0.6 * three.output_fps)
    assert track.detected[came:].all()
    assert np.all((hips_x > middle.x0) & (hips_x < middle.x1))  # before she came in, her first pose is held


def test_pose_gaps_are_filled_and_smoothing_keeps_a_steady_pose():
    frames = 40
    keypoints = np.zeros((frames, 33, 4), np.float32)
    keypoints[:, :, 0] = np.linspace(100, 200, frames)[:, None]  # everything walks right at constant speed
    keypoints[:, :, 1] = 300.0
    keypoints[:, pose.L_HIP, 1] = keypoints[:, pose.R_HIP, 1] = 400.0
    keypoints[:, :, 3] = 1.0
    detected = np.ones(frames, bool)
    detected[:5] = detected[20:25] = False  # the detector missed the start and a stretch in the middle
    keypoints[~detected] = 0.0
    track = pose.PoseTrack(keypoints=keypoints, detected=detected, fps=25.0, width=640, height=480)
    pose.fill_gaps(track)
    pose.smooth_track(track)
    expected = np.linspace(100, 200, frames)
    error = np.abs(track.keypoints[:, pose.NOSE, 0] - expected)
    assert error[8:-3].max() < 1.0  # the middle gap is interpolated, the walk followed without lag
    assert error[5:].max() < 2.5  # at the ends the zero-lag filter settles within a few pixels
    assert np.allclose(track.keypoints[:5, pose.NOSE, 0], expected[5], atol=2.0)  # held, not zeros
    assert np.allclose(track.keypoints[:, pose.NOSE, 1], 300.0, atol=1e-3)


def test_pruning_drops_pose_tracks_nobody_read_within_retention_and_keeps_those_read(tmp_path):
    settings = Settings(data_dir=tmp_path, retention_hours=1.0)
    cache = InputCache(settings)
    assert load_engine("marionet-cpu", settings).cache_dir == cache.poses  # the engine writes where it prunes
    keypoints = np.random.default_rng(0).random((12, 33, 4), dtype=np.float32)
    track = pose.PoseTrack(keypoints=keypoints, detected=np.ones(12, bool), fps=24.0, width=64, height=48)
    two_hours_ago = time.time() - 2 * 3600
    used, unused = cache.poses / f"{'a' * 64}-v5.npz", cache.poses / f"{'b' * 64}-v4.npz"
    for path in (used, unused):
        pose.save_track(track, path)
        os.utime(path, (two_hours_ago, two_hours_ago))
    loaded = pose.load_track(used)  # a task asked for this dance again
    assert loaded is not None and np.array_equal(loaded.keypoints, keypoints)
    assert cache.prune() == 1
    assert used.exists() and not unused.exists()


def test_a_damaged_or_foreign_file_in_the_pose_cache_reads_as_no_track(tmp_path):
    # A track cut short (a full disk, a copy interrupted) or another file under its name must cost a pose pass,
    # never the task: np.load raised BadZipFile on the one and TypeError on a rig's arrays.
    keypoints = np.random.default_rng(0).random((12, 33, 4), dtype=np.float32)
    track = pose.PoseTrack(keypoints=keypoints, detected=np.ones(12, bool), fps=24.0, width=64, height=48)
    whole, cut = tmp_path / "whole.npz", tmp_path / "cut.npz"
    pose.save_track(track, whole)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert pose.load_track(whole) is not None and pose.load_track(cut) is None
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, meta=np.array("{}"), keypoints=np.zeros(3))
    assert pose.load_track(foreign) is None
    assert rigcache.load_rig(cut) is None and rigcache.load_rig(whole) is None


def test_load_engine_follows_the_given_settings_not_the_environment(tmp_path, monkeypatch):
    from marionet.config import Settings

    monkeypatch.setenv("MARIONET_CPU_RENDERER", "parts")
    settings = Settings(data_dir=tmp_path / "data", storage_dir=tmp_path / "shared", cpu_renderer="mesh")
    engine = load_engine("marionet-cpu", settings)
    assert engine.renderer == "mesh"
    assert engine.cache_dir == (tmp_path / "shared").resolve() / "cache" / "poses"


def test_a_reading_that_shrinks_at_once_is_a_gap_and_a_bow_is_not():
    # A dancer sliding back into the frame was read as a small figure at its bottom for a few frames (its
    # skeleton 0.34-0.76 of the readings around it); followed, the character shrank into a corner. A bow
    # halves the torso alone, and stays.
    track = driving_track("halfbody_talk_3s.mp4")
    shrunk = pose.PoseTrack(
        keypoints=track.keypoints.copy(),
        detected=track.detected.copy(),
        fps=track.fps,
        width=1920,
        height=1080,
    )
    assert shrunk.detected.all()
    small, bowed = range(40, 45), range(70, 80)
    centre = shrunk.keypoints[small, :, :2].mean(axis=1, keepdims=True)
    shrunk.keypoints[small, :, :2] = (shrunk.keypoints[small, :, :2] - centre) * 0.5 + centre + (300, 200)
    # The bow: everything above the hips lowered by half the torso, towards them.
    upper = list(range(pose.L_HIP))
    hips = shrunk.keypoints[bowed][:, [pose.L_HIP, pose.R_HIP], :2].mean(axis=1)
    chest = shrunk.keypoints[bowed][:, [pose.L_SHOULDER, pose.R_SHOULDER], :2].mean(axis=1)
    shrunk.keypoints[np.ix_(bowed, upper, [0, 1])] += (0.5 * (hips - chest))[:, None, :]
    pose.drop_shrunken(shrunk)
    assert np.nonzero(~shrunk.detected)[0].tolist() == list(small)


def test_a_run_of_readings_that_leaps_away_and_back_is_a_gap_and_a_fast_dance_is_not():
    # BlazePose's tracker went over to someone larger passing in front of the dancer and followed them across
    # the frame for a second; the character slid with them and snapped back. At the clip's end it went with
    # them and never came back. The dance itself, at double speed (every other frame: its torso's centre
    # moves up to 0.19 of its length a frame), keeps every reading.
    track = driving_track()
    fast = dataclasses.replace(
        track, keypoints=track.keypoints[::2].copy(), detected=track.detected[::2].copy()
    )
    assert fast.detected.all()
    pose.drop_detours(fast)
    assert fast.detected.all()
    passed = copied(track)
    by = range(100, 125)
    torso = float(np.median(pose.torso_length(track.keypoints)))
    centre = passed.keypoints[by, :, :2].mean(axis=1, keepdims=True)
    walk = np.stack([np.linspace(1.5, -1.5, len(by)) * torso, np.zeros(len(by))], axis=1)[:, None, :]
    passed.keypoints[by, :, :2] = (passed.keypoints[by, :, :2] - centre) * 1.3 + centre + walk
    passed.detected[112] = False  # lost for a frame as it went
    # And someone else in front of the camera at the end: the track leaps to them and the clip ends.
    end = range(270, track.frame_count)
    passed.keypoints[end, :, 0] += 2 * torso
    pose.drop_detours(passed)
    assert np.nonzero(~passed.detected)[0].tolist() == [*by, *end]


def test_a_tracker_that_slid_onto_a_passer_by_is_cut_where_it_left_the_dancer():
    # BlazePose's tracker slid from the dancer onto someone larger passing in front of her (towards them, then
    # with them: never a leap), lost them at the frame's edge and leapt back to her. The run of readings that
    # slid was longer than the one after the leap, so the dancer's whole return to the clip's end was dropped
    # and the character stood at the frame's edge for it. What the run read after it was last at her place and
    # her size is the gap now; the passer-by crossing her place, larger, does not count as her.
    track = driving_track()
    slid = copied(track)
    by = np.arange(100, 151)
    torso = float(np.median(pose.torso_length(track.keypoints)))
    centre = slid.keypoints[by, :, :2].mean(axis=1, keepdims=True)
    walk = np.interp(by, [100, 110, 150], [0.0, 1.0, -3.0]) * torso
    grown = np.interp(by, [100, 104], [1.0, 1.3])[:, None, None]
    slid.keypoints[by, :, :2] = (slid.keypoints[by, :, :2] - centre) * grown + centre
    slid.keypoints[by, :, 0] += walk[:, None]
    slid.detected[151] = False
    steps = np.linalg.norm(np.diff(pose.torso_centre(slid.keypoints[99:151]), axis=0), axis=1) / torso
    assert steps.max() < pose.JUMP  # no leap until the one back to her
    pose.drop_detours(slid)
    assert slid.detected[:99].all() and slid.detected[152:].all()
    assert not slid.detected[104:152].any()


@pytest.mark.slow
@pytest.mark.parametrize(
    "at", [3.0, 0.0, 2.5], ids=["in_the_middle", "at_the_start", "tracker_slides_onto_them"]
)
def test_someone_passing_in_front_of_the_dancer_is_not_followed(tmp_path, at):
    """A larger person crosses the frame in front of the dancer in two seconds, hiding her for one: the track
    went with them across the frame and back (and the character, drawn small for the whole clip to fit them,
    slid with them). It now holds the dancer's place while she is hidden, also when they cross at once. At
    2.5 s the tracker slid onto them without a leap and leapt back to her only after they had left the frame:
    her return, shorter than what came before it, was dropped to the clip's end."""
    dancer = Dancer(300, 660, 1.0)
    # 1.3 times her size, cut at the knees, crossing the 960 px frame from right to left in two seconds.
    passer = Dancer(
        0,
        468,
        1.3,
        behind=90,
        mirrored=True,
        since=at,
        until=at + 2.0,
        moving=lambda now: round(960 - (now - at) / 2.0 * 1428),
    )
    clip = dancers_clip(tmp_path / "passer.mp4", 7.0, [dancer, passer], width=960)
    track = pose.extract_pose_track(clip, probe_video(clip), lambda done: None)
    hips_x = hips_of(track)
    assert track.detected.mean() > 0.7
    assert np.all((hips_x > 400) & (hips_x < 560))  # the dancer's, 300-660; the passer-by went to 0


def test_in_orientation_image_the_character_stays_in_the_picture_when_the_driver_walks_out(monkeypatch):
    # The elf kept her place only as far as the presenter kept his: slid out of his frame, he took her out of
    # hers. Her head and torso now stay in the picture; the travel of a driver who stays is unchanged.
    image = shared_picture("halfbody_ref_elf.jpg")
    rig = cpu_engine._character(image, None, cpu_engine.canvas_size(1280, 720, 720), None)
    track = driving_track("halfbody_talk_3s.mp4")
    with_clamp = retarget(track, rig, "image").joints
    gone = pose.PoseTrack(
        keypoints=track.keypoints.copy(), detected=track.detected, fps=track.fps, width=1920, height=1080
    )
    gone.keypoints[50:90, :, 0] += np.linspace(0, 1.5 * 1920, 40)[:, None]
    walked = retarget(gone, rig, "image").joints
    torso = [J[n] for n in ("neck", "pelvis", "l_shoulder", "r_shoulder", "l_hip", "r_hip", "head")]
    width, height = rig.canvas_size
    assert walked[:, torso, 0].min() >= 0 and walked[:, torso, 0].max() <= width
    assert walked[:, J["head"], 1].min() >= 0
    import marionet.engine.cpu.retarget as retarget_module

    monkeypatch.setattr(retarget_module, "_kept_in_picture", lambda offset, rig: offset)
    unclamped_walk = retarget(gone, rig, "image").joints
    unclamped = retarget(track, rig, "image").joints
    assert unclamped_walk[:, torso, 0].max() > 1.5 * width  # the fault: out of the picture
    assert np.array_equal(with_clamp, unclamped)


def test_a_dark_picture_is_read_brightened_and_its_arms_are_seen(monkeypatch, tmp_path):
    # The elf darkened to 45 % (a JPEG): read as it is, BlazePose saw neither arm (visibility 0.07-0.29) and the rig
    # gave her arms' pixels to her guessed legs; the character came out armless. The shared pictures are
    # read as they are.
    elf = cv2.imread(str(DATA / "halfbody_ref_elf.jpg"))
    cv2.imwrite(str(tmp_path / "dark.jpg"), (elf.astype(np.float32) * 0.45).astype(np.uint8))
    dark = cv2.cvtColor(cv2.imread(str(tmp_path / "dark.jpg")), cv2.COLOR_BGR2RGB)
    arms = [pose.L_ELBOW, pose.R_ELBOW, pose.L_WRIST, pose.R_WRIST]
    with monkeypatch.context() as unlit:
        unlit.setattr(pose, "lit_for_reading", lambda rgb: rgb)
        assert pose.detect_image_pose(dark).keypoints[arms, 3].min() < 0.3  # the misreading
    found = pose.detect_image_pose(dark)
    assert found.keypoints[arms, 3].min() > 0.5 and set(found.hands) == {"left", "right"}
    for name in ("halfbody_ref_elf.jpg", "dance_ref_cartoon.png"):
        picture = shared_picture(name)
        assert pose.lit_for_reading(picture) is picture


def test_legs_the_driver_does_not_show_keep_the_picture_s_stance():
    # The presenter is cut at the desk: his knees and ankles are BlazePose's guesses (visibility 0.00). Followed,
    # they stood the cartoon's legs straight down, feet together over her cat, and showed the background filled
    # where her legs stand apart. A dancer whose legs are seen still drives them.
    rig = cartoon_rig()
    legs = [(J[s + p], J[s + c]) for s in ("l_", "r_") for p, c in (("hip", "knee"), ("knee", "ankle"))]

    def angles(joints: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """(frames, legs) degrees between each leg bone in `joints` and in `reference`."""
        return np.stack(
            [angles_between(joints[:, c] - joints[:, p], reference[:, c] - reference[:, p]) for p, c in legs],
            axis=1,
        )

    talk = driving_track("halfbody_talk_3s.mp4")
    rest = np.broadcast_to(rig.joints, (talk.frame_count, *rig.joints.shape))
    kept = angles(retarget(talk, rig, "image").joints, rest)
    guessed = angles(joints_from_landmarks(talk.keypoints)[..., :2], rest)
    assert kept.max() < 0.5, kept.max()
    assert np.median(guessed) > 5  # the guesses are not her stance: the test can fail
    dance = driving_track()
    drawn = retarget(dance, rig, "video").joints[dance.detected]
    driver = joints_from_landmarks(dance.keypoints)[dance.detected, :, :2]
    assert np.percentile(angles(drawn, driver), 95) < 1.0


def test_camera_cuts_are_kept_only_between_shots_long_enough_and_with_someone_in_them():
    fps, half_second = 24.0, 12
    seen = np.ones(200, bool)
    assert pose.kept_cuts(np.array([60, 130]), seen, fps).tolist() == [60, 130]
    # A burst of cuts is flicker (a strobe, a glitch), and a cut half a second from an end starts no shot.
    assert pose.kept_cuts(np.array([60, 64, 66, 130, 195]), seen, fps).tolist() == [130]
    assert pose.kept_cuts(np.array([half_second - 1, 200 - half_second + 1]), seen, fps).tolist() == []
    # A shot where nobody is seen joins the one before it (the first such shot, the one after it).
    nobody = seen.copy()
    nobody[60:130] = False
    assert pose.kept_cuts(np.array([60, 130]), nobody, fps).tolist() == [130]
    nobody = seen.copy()
    nobody[:60] = False
    assert pose.kept_cuts(np.array([60, 130]), nobody, fps).tolist() == [130]


def test_a_frame_signature_tells_a_camera_cut_from_a_dancer_moving():
    # Her fastest turn (frames 80-85), then the next frames from a second camera: a close-up at 1.5x, or the
    # same picture mirrored. Only the cut's frame is a cut; a shot of a single frame is flicker.
    video = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(video)
    with contextlib.closing(read_frames(video, info, max_side=pose.ANALYSIS_SIDE)) as frames:
        shot = [rgb for index, _, rgb in frames if 80 <= index < 92]
    height, width = shot[0].shape[:2]
    cameras = {
        "close-up": lambda rgb: cv2.resize(
            rgb[40 : height * 3 // 4, 40 : width * 7 // 8], (width, height), interpolation=cv2.INTER_AREA
        ),
        "mirrored": lambda rgb: np.ascontiguousarray(rgb[:, ::-1]),
    }
    seen = np.ones(len(shot), bool)
    for camera in cameras.values():
        signatures = [pose.frame_signature(rgb) for rgb in shot[:6] + [camera(rgb) for rgb in shot[6:]]]
        assert pose.find_cuts(signatures, seen, fps=4.0).tolist() == [6]
    same = [pose.frame_signature(rgb) for rgb in shot]
    assert pose.find_cuts(same, seen, fps=4.0).tolist() == []


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["video", "image"])
def test_across_a_camera_cut_the_character_cuts_with_it(tmp_path, orientation):
    # The dance, then the same dance in a close-up at 1.6x (a second camera in the same set). Read as one shot,
    # the wide shot's bones were measured against the close-up's (in `video` the character came out at 0.6 of
    # the dancer's size there, then grew through the cut over half a second), and in `image` the character
    # travelled with the dancer's jump in the frame and grew with her. Shot by shot, neither.
    source = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(source)
    video = tmp_path / "edited.mp4"
    width, height, cut = 360, 640, 36
    with VideoWriter(video, width=width, height=height, fps=info.output_fps, preset="ultrafast") as writer:
        for index, _, rgb in read_frames(source, info, max_side=height):
            if index == 2 * cut:
                break
            if index >= cut:
                rgb = cv2.resize(rgb[40:440, 45:270], (width, height), interpolation=cv2.INTER_AREA)
            writer.write(rgb)
    track = pose.extract_pose_track(video, probe_video(video), lambda done: None)
    assert track.cuts.tolist() == [cut]
    saved = tmp_path / "track.npz"
    pose.save_track(track, saved)
    assert pose.load_track(saved).cuts.tolist() == [cut]
    image = shared_picture("dance_ref_cartoon.png")
    rig = cpu_engine._character(image, None, cpu_engine.canvas_size(width, height, 720), None)
    joints = retarget(track, rig, orientation).joints
    torso = np.linalg.norm(joints[:, J["neck"]] - joints[:, J["pelvis"]], axis=1)
    if orientation == "video":
        # As large as the dancer, against her, in both shots and through the cut.
        driver = joints_from_landmarks(track.keypoints)
        against = torso / np.linalg.norm(driver[:, J["neck"], :2] - driver[:, J["pelvis"], :2], axis=1)
        assert against.max() < 1.25 * against.min(), against
    else:
        assert 0.85 < np.median(torso[cut:]) / np.median(torso[:cut]) < 1.15
        assert np.abs(joints[:, J["pelvis"]] - rig.joints[J["pelvis"]]).max() < 0.2 * rig.size


def test_an_arm_hidden_for_a_moment_is_carried_from_the_frames_that_saw_it():
    # Something passes in front of the dancer's raised arm: BlazePose guesses it dropped to her side, at low
    # visibility. The character's arm stays where it was seen, on the way to where it is seen again.
    frames = 24
    keypoints = np.zeros((frames, pose.N_LANDMARKS, 4), np.float32)
    keypoints[..., 3] = 0.95
    keypoints[:, pose.L_SHOULDER, :2] = (100, 100)
    keypoints[:, pose.L_ELBOW, :2] = (150, 90)
    keypoints[:, pose.L_WRIST, :2] = np.linspace((190, 60), (200, 50), frames)
    hidden = slice(8, 16)
    keypoints[hidden, pose.L_ELBOW] = (110, 150, 0, 0.52)  # dropped to her side, guessed
    keypoints[hidden, pose.L_WRIST] = (115, 200, 0, 0.2)
    track = pose.PoseTrack(
        keypoints=keypoints, detected=np.ones(frames, bool), fps=24.0, width=320, height=240
    )
    pose.fill_gaps(track)
    assert np.abs(track.keypoints[:, pose.L_ELBOW, :2] - (150, 90)).max() < 1e-3
    expected = np.linspace((190, 60), (200, 50), frames)
    assert np.abs(track.keypoints[:, pose.L_WRIST, :2] - expected).max() < 1e-3
    # In a dim clip the arm reads 0.55 throughout: its own readings are kept, only its dips are gaps.
    dim = keypoints.copy()
    dim[:, pose.L_ELBOW, 3] = 0.55
    dim[hidden, pose.L_ELBOW, 3] = 0.3
    waving = np.linspace((150, 90), (160, 120), frames)
    dim[:, pose.L_ELBOW, :2] = waving
    dim[hidden, pose.L_ELBOW, :2] = (110, 150)
    track = pose.PoseTrack(keypoints=dim, detected=np.ones(frames, bool), fps=24.0, width=320, height=240)
    pose.fill_gaps(track)
    assert np.abs(track.keypoints[:, pose.L_ELBOW, :2] - waving).max() < 1e-3


@pytest.mark.parametrize("orientation", ["video", "image"])
def test_through_a_zoom_the_character_keeps_her_size_against_the_dancer_or_her_picture(orientation):
    # The camera zooms from 1.0 to 1.6x over the dance (a dancer walking towards it does the same). Measured in
    # pixels against the shot's longest, every bone of the wide frames read foreshortened: in `video` the
    # cartoon was drawn at 0.64 of the dancer's size there and 0.95 at the end; in `image` she shrank to 0.68
    # of her own size. A shot that keeps its distance (the dance itself) is drawn as before.
    still = driving_track()
    zoom = np.linspace(1.0, 1.6, still.frame_count)[:, None, None]
    centre = np.array([still.width / 2, still.height / 3], np.float32)
    zoomed = dataclasses.replace(still, keypoints=still.keypoints.copy())
    zoomed.keypoints[..., :2] = (still.keypoints[..., :2] - centre) * zoom + centre
    zoomed.keypoints[..., 2] *= zoom[..., 0]
    rig = cartoon_rig()

    def torso(joints: np.ndarray) -> np.ndarray:
        return np.linalg.norm(joints[:, J["neck"], :2] - joints[:, J["pelvis"], :2], axis=1)

    drawn = torso(retarget(zoomed, rig, orientation).joints)
    against = drawn / torso(joints_from_landmarks(zoomed.keypoints)) if orientation == "video" else drawn
    quarter = still.frame_count // 4
    first, last = np.median(against[:quarter]), np.median(against[-quarter:])
    assert 0.9 < first / last < 1.1, (first, last)


def test_a_half_body_character_driven_by_a_full_body_dancer_in_video_comes_as_high_as_her():
    # The elf is cut at her picture's bottom; the dancer is seen whole. At the dancer's size, with the elf's cut
    # held at the canvas's bottom (never lifted into view), her head came 0.69 of the way down the frame the
    # dancer's head tops. She is now drawn up towards the dancer's head (0.35), never larger than in her own
    # picture (her head there at 0.29).
    rig = elf_rig()
    assert rig.cut_at_bottom
    motion = retarget(driving_track(), rig, "video")
    height = rig.canvas_size[1]
    head = np.median(motion.joints[:, J["head"], 1]) / height
    assert head < 0.4, head
    assert np.median(motion.scale) <= 1.0 + 1e-6
    picture = rig.joints[J["head"], 1] / height
    assert head >= picture - 0.02  # as high as in her picture at most: her cut stays at the bottom


def test_the_depth_order_starts_afresh_in_each_shot():
    # The left arm well in front of the body, then, after a cut, a little in front: within the hold's two
    # bounds, where one shot keeps the order it had. Across a cut the new shot's own depth decides.
    track = dataclasses.replace(driving_track(), keypoints=driving_track().keypoints.copy())
    cut = track.frame_count // 2
    size = float(np.median(pose.torso_length(track.keypoints[track.detected])))
    track.keypoints[..., 2] = 0.0
    for landmark in (pose.L_ELBOW, pose.L_WRIST, pose.L_INDEX):
        track.keypoints[:cut, landmark, 2] = -0.5 * size
        track.keypoints[cut:, landmark, 2] = -0.15 * size
    rig = cartoon_rig()
    one_shot = retarget(track, rig, "video").arm_in_front[:, 0]
    assert one_shot.all()  # the hold carries the first half's order on
    track.cuts = np.array([cut])
    shots = retarget(track, rig, "video").arm_in_front[:, 0]
    assert shots[:cut].all() and not shots[cut:].any()


def _walking(track: pose.PoseTrack, offset: np.ndarray) -> pose.PoseTrack:
    """The track moved across its frame by `offset` (frames,) pixels, its person lost (as BlazePose loses a body
    half out of the frame) wherever the pelvis is past 0.95 of the frame's width or before 0.05 of it, and those
    frames filled as the pose pass fills them."""
    moved = copied(track)
    moved.keypoints[..., 0] += offset[:, None].astype(np.float32)
    pelvis = moved.keypoints[:, [pose.L_HIP, pose.R_HIP], 0].mean(axis=1)
    moved.detected &= (pelvis < 0.95 * track.width) & (pelvis > 0.05 * track.width)
    pose.fill_gaps(moved)
    return moved


@functools.cache
def elf_rig() -> CharacterRig:
    """The elf's rig on her own picture's canvas (1280x720), built once: tests only read it."""
    image = shared_picture("halfbody_ref_elf.jpg")
    return cpu_engine._character(image, None, cpu_engine.canvas_size(1280, 720, 720), None)


@pytest.mark.parametrize("way", ["out_and_back", "in_at_the_start", "out_of_a_wider_picture"])
def test_a_dancer_who_walks_out_of_the_frame_takes_the_character_with_her_in_video(way, monkeypatch):
    # The dancer walks out through the frame's right side and back in (or walks in from the left at the start).
    # While nobody is in the frame the pose is filled from either side of the gap, and the cartoon stood still
    # half off the canvas's edge where the dancer was last seen. She now walks out (in) at the dancer's speed,
    # and the empty frames show her background alone. A gap with the dancer in the middle of the frame holds her
    # where she was. The portrait dance fitted into the elf's landscape picture leaves the frame's side in the
    # picture's middle: she walks faster there, to leave her picture when the dancer leaves the frame (at the
    # dancer's speed she walked only as far as her picture's edge and back).
    track = driving_track()
    frames, width = track.frame_count, track.width
    step = 0.03 * width  # the dancer's walk, a frame
    t = np.arange(frames, dtype=float)
    if way == "in_at_the_start":
        offset = -np.clip(60 - t, 0, None) * step
        empty = 0
    else:
        offset = np.clip(np.minimum(t - 100, 200 - t), 0, None) * step
        empty = 150
    walking = _walking(track, offset)
    assert not walking.detected[empty]
    rig = elf_rig() if way == "out_of_a_wider_picture" else cartoon_rig()
    motion = retarget(walking, rig, "video")
    canvas_width = rig.canvas_size[0]

    def empty_canvas(motion) -> bool:
        drawn = render_frame(rig, motion, empty, RenderSettings())
        return np.abs(drawn.astype(int) - rig.background.astype(int)).max() <= 2

    assert empty_canvas(motion)
    # She walks: no jump at the gap's ends; the dancer's own steps on the canvas are about 0.03 of its width.
    steps = np.abs(np.diff(motion.joints[:, J["pelvis"], 0]))
    assert steps.max() < 0.06 * canvas_width, steps.max()

    import marionet.engine.cpu.retarget as retarget_module

    monkeypatch.setattr(retarget_module, "_walked_out", lambda x, *others: x)
    held = retarget(walking, rig, "video")
    assert not empty_canvas(held)  # the fault: half of her at the edge
    seen = walking.detected
    assert np.array_equal(motion.joints[seen], held.joints[seen])  # where the dancer is found, as before
    # Lost in the middle of the frame while moving across it (a detector's dropout): filled as before.
    dropout = _walking(track, np.clip(t - 150, -20, 20) * 0.01 * width)
    dropout.detected[140:160] = False
    pose.fill_gaps(dropout)
    held = retarget(dropout, rig, "video").joints
    monkeypatch.undo()
    assert np.array_equal(retarget(dropout, rig, "video").joints, held)


def _bowing(track: pose.PoseTrack, frames: slice, depth: float) -> pose.PoseTrack:
    """The track with the dancer bowing (leaning towards the camera) over `frames`: everything above the hips
    drawn towards them to `depth` of its height, eased in and out over half a second."""
    bowed = dataclasses.replace(track, keypoints=track.keypoints.copy())
    keypoints = bowed.keypoints
    hips = keypoints[:, [pose.L_HIP, pose.R_HIP], 1].mean(axis=1)
    squash = np.ones(track.frame_count)
    squash[frames] = depth
    ease = int(track.fps / 2) | 1
    squash = np.convolve(np.pad(squash, ease // 2, mode="edge"), np.ones(ease) / ease, mode="valid")
    upper = list(range(pose.L_HIP))  # the face, shoulders, arms and hands
    keypoints[:, upper, 1] = hips[:, None] + (keypoints[:, upper, 1] - hips[:, None]) * squash[:, None]
    return bowed


@pytest.mark.parametrize("orientation", ["video", "image"])
def test_a_dancer_who_bows_keeps_the_character_s_size_and_her_legs_length(orientation):
    # The dance with a bow of two and a half seconds, the torso foreshortened to 0.45 of its length. Measured by
    # the torso alone, the dancer's size halved: in `video` the cartoon shrank to 0.45 of her size for the bow;
    # in `image` the bow read as a zoom, and her legs were drawn at half their length everywhere else. Her
    # shoulders, hips and legs say she is as large as before, and the cartoon is drawn so.
    track, rig = driving_track(), cartoon_rig()
    bow = slice(100, 160)
    plain, bowed = (retarget(t, rig, orientation) for t in (track, _bowing(track, bow, 0.45)))
    assert np.median(bowed.scale[bow] / plain.scale[bow]) > 0.85

    def legs(motion) -> np.ndarray:
        bones = [("l_hip", "l_knee"), ("l_knee", "l_ankle"), ("r_hip", "r_knee"), ("r_knee", "r_ankle")]
        return sum(np.linalg.norm(motion.joints[:, J[b]] - motion.joints[:, J[a]], axis=1) for a, b in bones)

    ratio = legs(bowed) / legs(plain)
    for frames in (bow, slice(0, 90), slice(170, None)):
        assert 0.85 < np.median(ratio[frames]) < 1.15, (frames, np.median(ratio[frames]))


@pytest.mark.parametrize("cut", [0.62, 0.5, 0.4])
def test_a_character_cut_at_her_thighs_waist_or_chest_is_read_whole(cut, tmp_path):
    # The cartoon cut at mid-thigh (0.62 of her picture), at the waist (0.5) or at the chest (0.4). Read whole,
    # BlazePose saw nobody in any. The windows then found a figure a third of her size inside the thigh cut
    # (torso 0.37 of hers, her knees at her waist), and she came out a crumpled blob; the other two were refused
    # (no person). Read with room below the picture, her torso is read about as the whole picture reads it (a
    # cut picture's hips are guesses: 0.61 of it at the chest), and the eval finds her to compare colours with.
    image = shared_picture("dance_ref_cartoon.png")
    whole = pose.torso_length(pose.detect_image_pose(image).keypoints)
    cut_picture = np.ascontiguousarray(image[: round(image.shape[0] * cut)])
    found = pose.detect_image_pose(cut_picture)
    assert found is not None
    assert 0.55 * whole < pose.torso_length(found.keypoints) < 1.2 * whole
    neck = found.keypoints[[pose.L_SHOULDER, pose.R_SHOULDER], :2].mean(axis=0)
    assert abs(neck[1] - image.shape[0] * 0.32) < 0.05 * image.shape[0]  # her shoulders where they are
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), cv2.cvtColor(cut_picture, cv2.COLOR_RGB2BGR))
    assert quality._image_histogram(path) is not None


def test_legs_the_picture_cuts_off_above_the_ankles_keep_its_stance():
    # The cartoon cut at mid-thigh: her thighs are under her skirt, her ankles out of the picture (read at 0.14).
    # Following the dancer's thighs, the skirt over them fanned open and shut. Such legs keep the picture's
    # stance; the whole cartoon's legs follow the dancer's.
    image = shared_picture("dance_ref_cartoon.png")
    cut = np.ascontiguousarray(image[: round(image.shape[0] * 0.62)])
    rig = cpu_engine._character(cut, None, cpu_engine.canvas_size(cut.shape[1], cut.shape[0], 720), None)
    track = driving_track()

    def thighs(rig: CharacterRig) -> tuple[np.ndarray, np.ndarray]:
        motion = retarget(track, rig, "image")
        drawn = [motion.joints[:, J[f"{s}_knee"]] - motion.joints[:, J[f"{s}_hip"]] for s in "lr"]
        rest = [
            (rig.joints[J[f"{s}_knee"]] - rig.joints[J[f"{s}_hip"]]) * motion.scale[:, None] for s in "lr"
        ]
        return np.stack(drawn), np.stack(rest)

    drawn, rest = thighs(rig)
    assert np.abs(drawn - rest).max() < 1e-6
    drawn, rest = thighs(cartoon_rig())
    assert angles_between(drawn.reshape(-1, 2), rest.reshape(-1, 2)).max() > 20
