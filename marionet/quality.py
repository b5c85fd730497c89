"""Quality figures of an animation: does a person show, do the limbs follow the driver, is it steady, is it them?

Everything is measured with BlazePose on the output and on the driving video at the same timestamps (both read
at the output frame rate), and with colour histograms of the person region against the character image.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from marionet.config import get_settings
from marionet.engine.cpu.pose import (
    PoseTrack,
    cached_track,
    detect_image_pose,
    extract_pose_track,
    landmarks_array,
    person_box,
    pose_solution,
    shown_only,
    torso_centre,
    torso_length,
)
from marionet.errors import InputError, MarionetError
from marionet.media.cache import file_sha256, pose_cache_dir
from marionet.media.validate import decode_image
from marionet.media.video import VideoInfo, probe_video, read_frames

# Upper arms, forearms, thighs, shins: their names in reports (the person's left/right) and BlazePose indices.
LIMB_SEGMENTS = {
    "l_upper_arm": (11, 13), "l_forearm": (13, 15), "r_upper_arm": (12, 14), "r_forearm": (14, 16),
    "l_thigh": (23, 25), "l_shin": (25, 27), "r_thigh": (24, 26), "r_shin": (26, 28),
}  # fmt: skip
JITTER_LANDMARKS = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
MIN_VISIBILITY = 0.5
ANALYSIS_SIDE = 384
# BlazePose's tracker starts cold: it reads the first frame again until its landmarks move less than
# SETTLE_PX (analysis pixels) between reads, at most SETTLE_READS times, before any frame is measured.
SETTLE_READS = 60
SETTLE_PX = 0.5
IDENTITY_EVERY = 4  # frames between identity samples
# A driving video whose reading lies more than half a torso from the person the engine follows in this share of
# the frames both see someone is read again showing only that person: of several people, the one animated.
ELSEWHERE_SHARE = 0.1
# Identity: the share of the person's colours the output and image have in common, on a coarse Lab grid. On the
# shared media a person's own clip against its own frame scores 0.88-0.92, another person 0.60 at most.
IDENTITY_BINS = 8
IDENTITY_SOFTEN = 0.5  # a Gaussian's sigma, in bins


@dataclass(frozen=True)
class Targets:
    """The issue's bar for a result worth showing."""

    detected_share: float = 0.95
    limb_error_deg: float = 12.0
    jitter_ratio: float = 1.3
    identity: float = 0.85


@dataclass
class QualityReport:
    frames: int
    detected_share: float  # output frames with a person, 0..1
    limb_error_deg: float  # mean limb-direction error against the driving frame at the same time
    limb_pairs: int  # (frame, segment) pairs the error is averaged over
    segment_errors_deg: dict[str, float | None]  # the same error per segment (None: never seen in both)
    jitter_ratio: float  # output keypoint jitter / driving keypoint jitter
    output_jitter: float
    driving_jitter: float
    identity: float  # share of the person region's colours in common, output vs image, 0..1

    def failures(self, targets: Targets = Targets()) -> list[str]:
        """The figures that miss their target, as sentences."""
        out = []
        if self.detected_share < targets.detected_share:
            out.append(
                f"person detected in {self.detected_share:.1%} of frames < {targets.detected_share:.0%}"
            )
        if not self.limb_error_deg <= targets.limb_error_deg:
            out.append(f"limb error {self.limb_error_deg:.1f} deg > {targets.limb_error_deg} deg")
        if not self.jitter_ratio <= targets.jitter_ratio:
            out.append(f"jitter ratio {self.jitter_ratio:.2f} > {targets.jitter_ratio}")
        if self.identity < targets.identity:
            out.append(f"identity {self.identity:.2f} < {targets.identity}")
        return out


@dataclass
class _Sequence:
    keypoints: np.ndarray  # (frames, 33, 4): x, y in pixels of the analysed frame, z, visibility
    detected: np.ndarray  # (frames,)
    histograms: list[np.ndarray]


def _person_histogram(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The person region's colours: a Lab histogram (IDENTITY_BINS per channel) softened by IDENTITY_SOFTEN bins
    along each axis, summing to 1, so that two histograms' intersection is the share of colour they have in
    common. Hue and saturation, as first measured, scored the presenter's own clip against its first frame 0.41
    (the hue of his dark suit and white shirt is noise) and a different person up to 0.34."""
    region = (mask > 0.5).astype(np.uint8)
    if region.sum() < 64:
        return None
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    hist = cv2.calcHist([lab], [0, 1, 2], region, [IDENTITY_BINS] * 3, [0, 256] * 3)
    reach = int(np.ceil(3 * IDENTITY_SOFTEN))
    kernel = np.exp(-0.5 * (np.arange(-reach, reach + 1) / IDENTITY_SOFTEN) ** 2)
    kernel /= kernel.sum()
    for axis in range(3):
        hist = np.apply_along_axis(np.convolve, axis, hist, kernel, mode="same")
    return (hist / max(float(hist.sum()), 1e-9)).astype(np.float32).ravel()


def _analyse_video(
    path: Path, info: VideoInfo, frames: int, histograms: bool, shown: np.ndarray | None = None
) -> _Sequence:
    """BlazePose's tracker over the first `frames` frames; with `shown` (frames, 4: x0, y0, x1, y1 in source
    pixels), each frame grey outside its box."""
    keypoints = np.zeros((frames, 33, 4), np.float32)
    detected = np.zeros(frames, bool)
    hists: list[np.ndarray] = []
    with pose_solution().Pose(
        static_image_mode=False, model_complexity=1, enable_segmentation=histograms
    ) as pose:
        for index, _, rgb in read_frames(path, info, max_side=ANALYSIS_SIDE):
            if index >= frames:
                break
            if shown is not None:
                rgb = shown_only(rgb, shown[index], info)
            if index == 0:
                _settle(pose, rgb)
            result = pose.process(rgb)
            if result.pose_landmarks is None:
                continue
            keypoints[index] = landmarks_array(result, rgb.shape[1], rgb.shape[0])
            detected[index] = True
            if histograms and index % IDENTITY_EVERY == 0 and result.segmentation_mask is not None:
                hist = _person_histogram(rgb, result.segmentation_mask)
                if hist is not None:
                    hists.append(hist)
    return _Sequence(keypoints=keypoints, detected=detected, histograms=hists)


def _settle(pose, rgb: np.ndarray) -> None:
    """Read the first frame until the tracker's landmarks stand still. A cold tracker moves its landmarks for
    several frames while the picture does not (the half pair's first output frame held still for two seconds:
    up to 97 px a frame over its first ten frames, the presenter's own first frame 6 px): that is the reader
    finding its region, and it would be scored as the video's jitter."""
    previous = None
    for _ in range(SETTLE_READS):
        result = pose.process(rgb)
        if result.pose_landmarks is None:
            return
        points = landmarks_array(result, rgb.shape[1], rgb.shape[0])[:, :2]
        if previous is not None and np.abs(points - previous).max() < SETTLE_PX:
            return
        previous = points


@functools.lru_cache(maxsize=4)
def _analyse_driving(path: str, mtime_ns: int, info: VideoInfo, frames: int) -> _Sequence:
    """The driving video's analysis, kept for the next evaluation against the same clip (one process). With
    several people in it BlazePose's tracker follows whoever it finds first; where that is not the person the
    engine animates (the largest), the clip is read again showing only that person, frame by frame."""
    reading = _analyse_video(Path(path), info, frames, histograms=False)
    track = _engine_track(Path(path), info)
    if not track.detected.any() or track.frame_count < frames:
        return reading
    both = reading.detected & track.detected[:frames]
    # The engine's landmarks are in source pixels, the reading's in the analysis frame's.
    scale = min(1.0, ANALYSIS_SIDE / max(info.width, info.height))
    followed = track.keypoints[:frames][both] * np.array([scale, scale, 1.0, 1.0], np.float32)
    apart = np.linalg.norm(torso_centre(reading.keypoints[both]) - torso_centre(followed), axis=1)
    apart /= np.maximum(torso_length(followed), 1.0)
    if not both.any() or np.mean(apart > 0.5) <= ELSEWHERE_SHARE:
        return reading
    shown = np.array([person_box(points, info) for points in track.keypoints[:frames]])
    return _analyse_video(Path(path), info, frames, histograms=False, shown=shown)


def _engine_track(path: Path, info: VideoInfo) -> PoseTrack:
    """The engine's pose track of a driving video: from the pose cache of the data directory the settings name,
    where the engine has read this clip (`marionet animate`, the server), else read now (a pose pass)."""
    cached = cached_track(pose_cache_dir(get_settings()), file_sha256(path), info.output_frame_count)
    return cached if cached is not None else extract_pose_track(path, info, lambda done: None)


def _image_histogram(path: Path) -> np.ndarray | None:
    rgb = decode_image(path.read_bytes())  # the picture the engine animates
    if rgb is None:
        raise InputError(f"The image could not be decoded: {path}", code="image_invalid")
    scale = min(1.0, 1024 / max(rgb.shape[:2]))
    rgb = cv2.resize(
        rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    with pose_solution().Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        result = pose.process(rgb)
    if result.segmentation_mask is not None:
        return _person_histogram(rgb, result.segmentation_mask)
    # Nobody seen in the picture read whole (a cartoon cut at her thighs): the person the engine finds there,
    # as it finds her (with room below the picture, or in windows).
    found = detect_image_pose(rgb)
    return None if found is None else _person_histogram(rgb, found.mask)


def angles_between(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """(n,) the angle in degrees (0..180) between each pair of 2D vectors of `va` and `vb` (n, 2)."""
    angle = np.abs(np.arctan2(va[:, 1], va[:, 0]) - np.arctan2(vb[:, 1], vb[:, 0]))
    return np.degrees(np.minimum(angle, 2 * np.pi - angle))


def limb_error(a: _Sequence, b: _Sequence) -> tuple[float, int, dict[str, float | None]]:
    """Mean angle (degrees) between the same limb segment in a and b, where both see both joints; the number of
    (frame, segment) pairs it is averaged over; and the mean per segment."""
    errors = []
    per_segment: dict[str, float | None] = dict.fromkeys(LIMB_SEGMENTS)
    for name, (start, end) in LIMB_SEGMENTS.items():
        seen = (
            a.detected
            & b.detected
            & (np.minimum(a.keypoints[:, start, 3], a.keypoints[:, end, 3]) >= MIN_VISIBILITY)
            & (np.minimum(b.keypoints[:, start, 3], b.keypoints[:, end, 3]) >= MIN_VISIBILITY)
        )
        if not seen.any():
            continue
        va = a.keypoints[seen, end, :2] - a.keypoints[seen, start, :2]
        vb = b.keypoints[seen, end, :2] - b.keypoints[seen, start, :2]
        errors.append(angles_between(va, vb))
        per_segment[name] = float(errors[-1].mean())
    if not errors:
        return float("nan"), 0, per_segment
    joined = np.concatenate(errors)
    return float(joined.mean()), int(joined.size), per_segment


def jitter(seq: _Sequence) -> float:
    """Mean keypoint acceleration (second difference) over runs of detected frames, in body sizes per frame^2."""
    k = seq.keypoints
    triple = seq.detected[:-2] & seq.detected[1:-1] & seq.detected[2:]
    if not triple.any():
        return float("nan")
    size = float(np.median(torso_length(k[seq.detected])))
    points = k[:, list(JITTER_LANDMARKS), :2]
    accel = np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=2)  # (frames-2, landmarks)
    return float(accel[triple].mean() / max(size, 1e-6))


def identity_score(histograms: list[np.ndarray], reference: np.ndarray | None) -> float:
    """The mean share of colour in common between the output's person histograms and the image's (0 when either
    shows nobody)."""
    if reference is None or not histograms:
        return 0.0
    scores = [cv2.compareHist(reference, hist, cv2.HISTCMP_INTERSECT) for hist in histograms]
    return float(np.clip(np.mean(scores), 0.0, 1.0))


def evaluate(output: str | Path, driving: str | Path, image: str | Path) -> QualityReport:
    """All figures for one animation: `output` made from `image` driven by `driving`."""
    reference = _image_histogram(Path(image))  # first: an image that cannot be read fails at once
    out_info, drv_info = probe_video(output), probe_video(driving)
    frames = min(out_info.output_frame_count, drv_info.output_frame_count)
    out = _analyse_video(Path(output), out_info, frames, histograms=True)
    drv = _analyse_driving(str(Path(driving).resolve()), Path(driving).stat().st_mtime_ns, drv_info, frames)
    error, pairs, segments = limb_error(out, drv)
    out_jitter, drv_jitter = jitter(out), jitter(drv)
    identity = identity_score(out.histograms, reference)
    return QualityReport(
        frames=frames,
        detected_share=float(out.detected.mean()) if frames else 0.0,
        limb_error_deg=error,
        limb_pairs=pairs,
        segment_errors_deg=segments,
        jitter_ratio=out_jitter / drv_jitter if drv_jitter > 0 else float("nan"),
        output_jitter=out_jitter,
        driving_jitter=drv_jitter,
        identity=identity,
    )


def run_eval_cli(args: argparse.Namespace) -> int:
    """`marionet eval OUTPUT DRIVING IMAGE [--json]`: print the figures; exit 1 when a target is missed, 2 when
    an input is missing or unreadable (said on stderr with its code, as `marionet animate` does)."""
    for name, path in (("output", args.output), ("driving video", args.driving), ("image", args.image)):
        if not Path(path).is_file():
            sys.stderr.write(f"error: file_not_found: {name} file not found: {path}\n")
            return 2
    try:
        report = evaluate(args.output, args.driving, args.image)
    except MarionetError as exc:
        sys.stderr.write(f"error: {exc.code}: {exc.message}\n")
        return 2
    failures = report.failures()
    if args.json:
        print(json.dumps({**asdict(report), "failures": failures}, indent=2))
    else:
        print(f"frames                 {report.frames}")
        print(f"person detected        {report.detected_share:.1%}")
        print(f"limb error             {report.limb_error_deg:.1f} deg over {report.limb_pairs} limb-frames")
        for name, value in report.segment_errors_deg.items():
            print(f"  {name:<20} {'not seen' if value is None else f'{value:.1f} deg'}")
        print(
            f"jitter ratio           {report.jitter_ratio:.2f} "
            f"(output {report.output_jitter:.4f}, driving {report.driving_jitter:.4f})"
        )
        print(f"identity               {report.identity:.3f}")
        for line in failures:
            print(f"MISSED: {line}")
    return 1 if failures else 0
