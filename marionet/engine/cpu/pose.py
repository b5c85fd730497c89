"""Stage 1, pose: BlazePose keypoints of the character image and of every driving frame, smoothed and gap-filled.

Keypoints are kept in pixels of the upright source frame: (x, y, z, visibility) for BlazePose's 33 landmarks,
z on the same scale as x (negative is nearer the camera).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from marionet.media.video import VideoInfo, read_frames

# BlazePose landmark indices used by the rig.
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_INDEX, R_INDEX = 19, 20
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
L_FOOT, R_FOOT = 31, 32
N_LANDMARKS = 33

# Bump when decoding, detection or post-processing changes, so cached tracks of older code are not reused.
TRACK_VERSION = "v10"
ANALYSIS_SIDE = 384  # the detector works at 256 px; decoding smaller than the source is most of the speed
POSE_LANES = 2  # BlazePose graphs running side by side on the clip's chunks, one core each
MIN_CHUNK_FRAMES, MAX_CHUNK_FRAMES = 30, 120
LARGER_PERSON = 1.05  # a second person this much larger (torso length) than the one found is followed instead
MAX_PEOPLE = 4  # people in a clip read through it, one after another, to find the one who fills it most
SEAM_FRAMES = 10  # frames over which one chunk's reading takes over from the previous one's
HAND_MIDDLE_BASE = 9  # MediaPipe Hands' landmark at the middle finger's base; 0 is the wrist
# The character image is also read cropped to the person's mask grown by each of these (of its larger side).
IMAGE_BOX_MARGINS = (0.05, 0.1, 0.2)
IMAGE_BOX_SAME = 0.02  # a crop within this much (of the image's larger side) of its edges is not read
# The picture's own mask joins its crops' only when the person spans this much of its larger side: smaller, it
# is a coarse blob (BlazePose segments at 256 px) that takes in the scenery beside them.
IMAGE_FINE_SPAN = 0.5
# A person small in a large picture is missed read whole (BlazePose's detector sees it at 224 px): the picture is
# then read in windows of each of these fractions of its sides, overlapping by half, the larger windows first.
IMAGE_WINDOWS = (0.6, 0.4)
# A picture in which nobody is seen is read again with these shares of its height added beneath it (its bottom
# row repeated), in turn, before it is searched in windows. The cartoon cut at mid-thigh was seen by no whole
# reading, and the windows found a figure a third of her size inside her (her knees at her waist): she came out
# as a crumpled blob. With room below BlazePose reads her torso whole (with 0.3 to 1.0 of her height alike).
# Cut at her waist or chest she was refused (no person); she is read with 0.6 (at the chest, her hips a guess).
IMAGE_ROOM_BELOW = (0.3, 0.6, 1.0)
# Read so, BlazePose also finds people in scenery: the elf's cave wall, with 0.3 of its height below it, gave a
# head and shoulders seen at 0.72. A reading with room below counts only when its nose and shoulders are seen
# at this much or more (the cartoon's cuts: 0.99 and over; six pictures of scenery from the shared media gave no
# other reading).
IMAGE_ROOM_SEEN = 0.9
# A driving video where nobody was found is searched the same way on a frame every REGION_EVERY_S seconds (at
# least REGION_SAMPLES frames; decoded at REGION_SIDE at most), and read again within the box the people found
# there span, grown by REGION_MARGIN of its larger side, unless that is more than REGION_MAX_SHARE of the frame
# (nothing to gain).
REGION_SAMPLES = 5
REGION_EVERY_S = 2.0
REGION_SIDE = 1280
REGION_MARGIN = 0.25
REGION_MAX_SHARE = 0.6
# A camera cut: a frame whose grey thumbnail (CUT_THUMB px square, contrast-normalised) differs from the one
# before it (1 - their correlation) by CUT_CHANGE or more and by CUT_OUTLIER times as much as any of the two
# frames either side of it differ from theirs: motion changes a picture over several frames, a cut in one.
# Measured at 384 px: cuts (to another place, to a close-up at 1.5x, to the same picture mirrored) 0.34-0.91
# and 3.5-520 times their neighbours'; within a shot the shared clips and a fast dance at most 0.22, the
# skeleton render's flicker 0.64 beside 0.3-0.5, and the presenter resampled to 24 fps 0.26 at 2.7 times. A cut
# that would leave a shot under MIN_SHOT_S seconds, or one where nobody is seen, is not kept.
CUT_THUMB = 32
CUT_CHANGE = 0.3
CUT_OUTLIER = 3.0
MIN_SHOT_S = 0.5
PERSON_MARGIN = 0.15  # a person's box in a driving frame: their landmarks' grown by this of its larger side
# Bones whose distance to the silhouette scores a reading of the image (skeleton_fit); legs only where seen.
FIT_BONES = (
    (L_SHOULDER, R_SHOULDER), (L_SHOULDER, L_HIP), (R_SHOULDER, R_HIP), (L_HIP, R_HIP), (NOSE, L_SHOULDER),
    (NOSE, R_SHOULDER), (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST), (L_WRIST, L_INDEX), (R_SHOULDER, R_ELBOW),
    (R_ELBOW, R_WRIST), (R_WRIST, R_INDEX), (L_HIP, L_KNEE), (L_KNEE, L_ANKLE), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE),
)  # fmt: skip
FIT_LEG_JOINTS = (L_HIP, R_HIP, L_KNEE, R_KNEE)
# Palm lengths a hand's wrist may lie from BlazePose's wrist (drawn characters' wrists are read loosely).
HAND_REACH = 2.0


@dataclass
class ImagePose:
    """BlazePose on the character image: keypoints (33, 4) in image pixels and a soft person mask (h, w) 0..1;
    and its hands ("left", "right": the person's own) as MediaPipe Hands' 21 landmarks (21, 2) in image pixels."""

    keypoints: np.ndarray
    mask: np.ndarray
    hands: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class PoseTrack:
    """One driving clip's motion: keypoints (frames, 33, 4) in source pixels and which frames saw a person."""

    keypoints: np.ndarray
    detected: np.ndarray
    fps: float
    width: int
    height: int
    # First frames of the clip's shots after its first (camera cuts): the motion is smoothed, filled and fitted
    # within each shot, never across a cut.
    cuts: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def frame_count(self) -> int:
        return int(self.keypoints.shape[0])

    def shots(self) -> list[range]:
        """The clip's frames, shot by shot."""
        edges = [0, *(int(c) for c in self.cuts), self.frame_count]
        return [range(a, b) for a, b in itertools.pairwise(edges) if b > a]

    def shot(self, span: range) -> PoseTrack:
        """The frames of `span` as a track whose arrays are views of this one's (changes write through)."""
        return PoseTrack(
            keypoints=self.keypoints[span.start : span.stop],
            detected=self.detected[span.start : span.stop],
            fps=self.fps,
            width=self.width,
            height=self.height,
        )

    @property
    def person_share(self) -> float:
        return float(self.detected.mean()) if self.detected.size else 0.0


def pose_solution():
    # Imported lazily: mediapipe takes a second to import and the API process never needs it.
    import mediapipe as mp

    return mp.solutions.pose


def landmarks_array(result, width: int, height: int) -> np.ndarray | None:
    if result.pose_landmarks is None:
        return None
    points = np.array(
        [(lm.x * width, lm.y * height, lm.z * width, lm.visibility) for lm in result.pose_landmarks.landmark],
        dtype=np.float32,
    )
    return points


def torso_coverage(keypoints: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> float:
    """Mean segmentation inside the shoulders-hips quad: a real body fills it, a drawn stick figure does not."""
    quad = keypoints[[L_SHOULDER, R_SHOULDER, R_HIP, L_HIP], :2] * scale
    poly = np.zeros(mask.shape[:2], np.uint8)
    cv2.fillConvexPoly(poly, np.round(quad).astype(np.int32), 1)
    inside = poly.astype(bool)
    if inside.sum() < 16:
        # Hips off-frame or a degenerate quad: judge the upper chest disc instead.
        centre = keypoints[[L_SHOULDER, R_SHOULDER], :2].mean(axis=0) * scale
        radius = max(
            4.0, 0.35 * float(np.linalg.norm(keypoints[L_SHOULDER, :2] - keypoints[R_SHOULDER, :2])) * scale
        )
        poly[:] = 0
        cv2.circle(poly, tuple(int(v) for v in centre), int(radius), 1, -1)
        inside = poly.astype(bool)
    return float(mask[inside].mean()) if inside.any() else 0.0


def detect_image_pose(rgb: np.ndarray) -> ImagePose | None:
    """Static BlazePose (full model: the heavy one is not in the wheel) with segmentation on one image; None when
    no person is seen.

    The image is read whole and again cropped to the person (their mask grown by each of IMAGE_BOX_MARGINS of
    its larger side), and the reading whose bones lie closest to the silhouette is kept (skeleton_fit). Read
    whole, a half-body person with room around them (the elf with a third of her width beside her, or a third
    of her height above) came out a fifth narrower in the shoulders and her upper arms up to two thirds short;
    a crop reads her as her tight framing does. The mask kept is the most the readings saw of the person.

    When the whole picture shows nobody, it is searched in windows (IMAGE_WINDOWS) and the person found there is
    read the same way: the contract recommends only that the person fill more than 5 % of the frame, and a
    person a third of the picture's height was not found whole.

    With several people in the picture, the largest is animated, as the hosted service follows the largest
    person in the video: the one found first is hidden and the picture read again (_larger_in_image)."""
    rgb = lit_for_reading(rgb)
    with pose_solution().Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        found = _read_person(pose, rgb, _static_pose(pose, rgb))
        for room in IMAGE_ROOM_BELOW if found is None else ():
            found = _read_person(pose, rgb, _seen_clearly(_static_pose(pose, rgb, room)), room)
            if found is not None:
                break
        if found is None:
            found = _read_person(pose, rgb, _found_in_windows(pose, rgb))
        else:
            found = _read_person(pose, rgb, _larger_in_image(pose, rgb, found[0])) or found
    if found is None:
        return None
    points, mask = found
    return ImagePose(keypoints=points, mask=mask, hands=detect_hands(rgb, points))


# A picture whose brightest (99th percentile) grey level is under DARK_P99 is read brightened to LIT_P99 there.
# The elf's own picture (157) is read as it is; darkened to 45 % (70), BlazePose saw neither of her arms
# (visibility 0.07-0.29) and gave her half-hidden legs to her arms' pixels; brightened, it sees them (0.86-0.95).
DARK_P99, LIT_P99 = 100.0, 200.0


def lit_for_reading(rgb: np.ndarray) -> np.ndarray:
    """The picture as BlazePose and Hands read it: a dark one brightened (only for the reading; the character
    keeps its own pixels)."""
    brightest = float(np.percentile(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 99))
    if brightest >= DARK_P99:
        return rgb
    gain = LIT_P99 / max(brightest, 1.0)
    return np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _read_person(
    pose, rgb: np.ndarray, first: tuple[np.ndarray, np.ndarray] | None, room_below: float = 0.0
) -> tuple[np.ndarray, np.ndarray] | None:
    """From a `first` reading (landmarks, mask in the image's pixels), the best of it and the crops around its
    mask (landmarks, union mask 0..1); None when there is no first reading or the best is not a person. The
    first mask is left out of the union when the person spans less than IMAGE_FINE_SPAN of the picture and a
    crop was read: the cartoon at a third of a picture's sides came out as a blob that took in the Eiffel
    tower beside her (0.55 of her own picture's mask in common; her crops' 0.94). A larger person's first mask
    adds what the crops miss: the elf's fingers, with room above her. `room_below`: the crops are read so too
    (_static_pose), as the first reading was."""
    if first is None:
        return None
    height, width = rgb.shape[:2]
    bounds = _mask_bounds(first[1])
    fine = max(bounds[2] - bounds[0], bounds[3] - bounds[1]) >= IMAGE_FINE_SPAN * max(width, height)
    readings, mask = [first[0]], np.zeros_like(first[1])
    for margin in IMAGE_BOX_MARGINS:
        x0, y0, x1, y1 = _grown(bounds, margin, width, height)
        if max(x0, y0, width - x1, height - y1) <= IMAGE_BOX_SAME * max(width, height):
            continue  # nearly the whole image: read already
        cropped = _static_pose(pose, np.ascontiguousarray(rgb[y0:y1, x0:x1]), room_below)
        if cropped is None:
            continue
        points, crop_mask = cropped
        points[:, 0] += x0
        points[:, 1] += y0
        readings.append(points)
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], crop_mask)
    if fine or len(readings) == 1:  # a small person's own mask only when no crop saw them
        mask = np.maximum(mask, first[1])
    points = min(readings, key=lambda candidate: skeleton_fit(candidate, mask))
    if not _is_person(points, mask):
        return None
    return points, np.clip(mask, 0.0, 1.0)


def _larger_in_image(pose, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Someone else, larger (torso LARGER_PERSON times as long) than the person read at `points`, read with a
    box around that person's landmarks painted grey; None when nobody else is seen, or nobody larger.
    BlazePose reads whoever its detector scores best, and in a picture of the cartoon beside a smaller
    photographed dancer that was the dancer. A box, not the person's silhouette: a grey silhouette is read as
    a person, and the dancer's own frame was taken for someone larger than her, with a mask of grey."""
    height, width = rgb.shape[:2]
    torso = max(float(torso_length(points)), 1.0)
    low, high = _seen_extent(points)
    (x0, y0), (x1, y1) = low - 0.25 * torso, high + 0.25 * torso
    hidden = rgb.copy()
    hidden[max(0, int(y0)) : max(0, int(np.ceil(y1))), max(0, int(x0)) : max(0, int(np.ceil(x1)))] = 128
    other = _static_pose(pose, hidden)
    if other is None or not _is_person(*other):
        return None
    centre = torso_centre(other[0])
    if x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1:
        return None  # the same person, read through the box
    if float(torso_length(other[0])) < LARGER_PERSON * torso:
        return None
    return other


def _seen_clearly(reading: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """`reading`, when its nose and shoulders are seen at IMAGE_ROOM_SEEN or more; else None."""
    if reading is None or reading[0][[NOSE, L_SHOULDER, R_SHOULDER], 3].min() < IMAGE_ROOM_SEEN:
        return None
    return reading


def _is_person(points: np.ndarray, mask: np.ndarray) -> bool:
    """A reading worth animating: head and shoulders seen, a silhouette of 1 % of the picture at least, and a
    torso the silhouette fills (a stick figure's does not)."""
    core = points[[NOSE, L_SHOULDER, R_SHOULDER], 3]
    return core.min() >= 0.5 and (mask > 0.5).mean() >= 0.01 and torso_coverage(points, mask) >= 0.3


def _found_in_windows(pose, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A person in windows of the picture (landmarks, mask in the image's pixels), the larger windows first.
    Of the people one size of window finds, one its window holds whole is preferred (a window's inner edge cut
    the others), then the largest, as the hosted service follows the largest person."""
    height, width = rgb.shape[:2]
    for fraction in IMAGE_WINDOWS:
        found = []
        for x0, y0, x1, y1 in _windows(width, height, fraction):
            reading = _static_pose(pose, np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            if reading is None or not _is_person(*reading):
                continue
            points, window_mask = reading
            bx0, by0, bx1, by1 = _mask_bounds(window_mask)
            cut = (bx0 == 0 < x0) or (by0 == 0 < y0) or (bx1 == x1 - x0 and x1 < width)
            cut = cut or (by1 == y1 - y0 and y1 < height)
            points[:, 0] += x0
            points[:, 1] += y0
            found.append((cut, -float(torso_length(points)), points, window_mask, (x0, y0, x1, y1)))
        if found:
            _, _, points, window_mask, (x0, y0, x1, y1) = min(found, key=lambda hit: hit[:2])
            mask = np.zeros((height, width), np.float32)  # the whole picture's size: once, for the one kept
            mask[y0:y1, x0:x1] = window_mask
            return points, mask
    return None


def _windows(width: int, height: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) windows `fraction` of the picture's sides, overlapping by half and covering it."""
    window_w, window_h = round(width * fraction), round(height * fraction)
    count = math.ceil((1 - fraction) / (fraction / 2)) + 1
    xs = np.linspace(0, width - window_w, count).round().astype(int)
    ys = np.linspace(0, height - window_h, count).round().astype(int)
    return [(int(x), int(y), int(x) + window_w, int(y) + window_h) for y in ys for x in xs]


def skeleton_fit(points: np.ndarray, mask: np.ndarray, samples: int = 4000) -> float:
    """How far the person's pixels (mask > 0.5) lie from the nearest bone of a reading, on average, over the
    square root of their area: lower fits better. A reading that shrank the arms leaves the outstretched arms'
    pixels far from every bone. Legs count where both their joints are seen."""
    ys, xs = np.nonzero(mask > 0.5)
    if xs.size == 0:
        return math.inf
    step = max(1, xs.size // samples)
    pixels = np.stack([xs[::step], ys[::step]], axis=1).astype(np.float64)
    nearest = np.full(len(pixels), np.inf)
    for a, b in FIT_BONES:
        if a in FIT_LEG_JOINTS and min(points[a, 3], points[b, 3]) < 0.5:
            continue
        start, end = points[a, :2].astype(np.float64), points[b, :2].astype(np.float64)
        nearest = np.minimum(nearest, segment_distance(pixels, start, end))
    return float(nearest.mean() / math.sqrt(xs.size))


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each point's (n, 2) distance to the segment from a to b."""
    ab = b - a
    dx, dy = points[:, 0] - a[0], points[:, 1] - a[1]
    t = np.clip((dx * ab[0] + dy * ab[1]) / max(float(ab @ ab), 1e-6), 0.0, 1.0)
    return np.hypot(dx - t * ab[0], dy - t * ab[1])


def _static_pose(pose, rgb: np.ndarray, room_below: float = 0.0) -> tuple[np.ndarray, np.ndarray] | None:
    """One reading of an image (shrunk to 1024 px at most) by a static BlazePose graph with segmentation:
    landmarks and the soft mask, in the image's pixels. `room_below`: read with that share of its height added
    under it (its bottom row repeated), as IMAGE_ROOM_BELOW says."""
    height, width = rgb.shape[:2]
    below = round(height * room_below)
    if below:
        rgb = np.pad(rgb, ((0, below), (0, 0), (0, 0)), mode="edge")
    scale = min(1.0, 1024 / max(height + below, width))
    small = cv2.resize(
        rgb, (round(width * scale), round((height + below) * scale)), interpolation=cv2.INTER_AREA
    )
    result = pose.process(small)
    points = landmarks_array(result, width, height + below)
    if points is None or result.segmentation_mask is None:
        return None
    mask = cv2.resize(result.segmentation_mask, (width, height + below), interpolation=cv2.INTER_LINEAR)
    return points, np.ascontiguousarray(mask[:height])


def _mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box of the person's mask (> 0.5); the whole image if it is empty."""
    ys, xs = np.nonzero(mask > 0.5)
    if xs.size == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _grown(
    box: tuple[float, float, float, float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """`box` grown by `margin` of its larger side, within a `width` x `height` image."""
    x0, y0, x1, y1 = box
    grow = margin * max(x1 - x0, y1 - y0)
    return (
        max(0, math.floor(x0 - grow)),
        max(0, math.floor(y0 - grow)),
        min(width, math.ceil(x1 + grow)),
        min(height, math.ceil(y1 + grow)),
    )


def detect_hands(rgb: np.ndarray, keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """The person's hands, by MediaPipe Hands (its models are in the wheel too): for "left" and "right" (the
    person's own), the hand's 21 landmarks (21, 2) in image pixels. BlazePose gives a hand three points at its
    knuckles; these outline the whole hand, curled fingers of a fist included.

    Each hand is looked for in a square around BlazePose's hand, 1.2 arm segments wide: in a full-body
    image a hand is a few pixels of the palm detector's 192 px view of the whole frame, and a drawn hand was
    missed there. A hand found nearer the other wrist (hands held together) or far from this one is dropped.
    """
    import mediapipe as mp

    height, width = rgb.shape[:2]
    sides = {
        "left": (L_SHOULDER, L_ELBOW, L_WRIST, L_INDEX),
        "right": (R_SHOULDER, R_ELBOW, R_WRIST, R_INDEX),
    }
    found: dict[str, np.ndarray] = {}
    with mp.solutions.hands.Hands(
        static_image_mode=True, max_num_hands=1, min_detection_confidence=0.3
    ) as hands:
        for side, (shoulder, elbow, wrist, index) in sides.items():
            joint = keypoints[[shoulder, elbow, wrist, index], :2].astype(np.float64)
            span = max(
                1.2 * np.linalg.norm(joint[1] - joint[2]),
                1.2 * np.linalg.norm(joint[0] - joint[1]),
                6.0 * np.linalg.norm(joint[3] - joint[2]),
            )
            centre = (joint[2] + joint[3]) / 2
            x0, y0 = np.maximum(0, np.floor(centre - span / 2)).astype(int)
            x1, y1 = np.minimum((width, height), np.ceil(centre + span / 2)).astype(int)
            if x1 - x0 < 16 or y1 - y0 < 16:
                continue
            result = hands.process(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            if not result.multi_hand_landmarks:
                continue
            marks = result.multi_hand_landmarks[0].landmark
            points = np.array([(x0 + p.x * (x1 - x0), y0 + p.y * (y1 - y0)) for p in marks], np.float64)
            palm = max(float(np.linalg.norm(points[HAND_MIDDLE_BASE] - points[0])), 1.0)
            other = keypoints[R_WRIST if side == "left" else L_WRIST, :2]
            near = np.linalg.norm(points[0] - joint[2])
            if near <= HAND_REACH * palm and near < np.linalg.norm(points[0] - other):
                found[side] = points
    return found


def pose_chunks(total: int) -> list[range]:
    """The clip's frames cut into contiguous chunks, each analysed by a fresh BlazePose graph (its first frame
    finds the person again, as the clip's first frame does). The cut depends on the frame count alone, not on
    POSE_LANES, so a clip's track is the same however many lanes work through its chunks."""
    if total < 2 * MIN_CHUNK_FRAMES:
        return [range(total)]
    count = max(2, math.ceil(total / MAX_CHUNK_FRAMES))
    count += count % 2  # an even count, so two lanes finish together
    size = math.ceil(total / count)
    return [range(start, min(total, start + size)) for start in range(0, total, size)]


def lead_in(chunk: range) -> range:
    """The frames before a chunk that its graph reads too, so its reading can take over from the previous
    chunk's gradually: two graphs disagree by up to a limb's width where one re-finds the person."""
    return range(max(0, chunk.start - SEAM_FRAMES), chunk.start)


def extract_pose_track(
    video_path: Path,
    info: VideoInfo,
    on_batch: Callable[[int], None],
    batch: int = 16,
    region: tuple[int, int, int, int] | None = None,
    on_others: Callable[[int, int], None] | None = None,
) -> PoseTrack:
    """BlazePose in video mode over every output frame (streamed, downscaled), then gap filling and smoothing.

    One decoder feeds POSE_LANES graphs, each working through its own chunks of the clip on its own core
    (BlazePose on one core is the slowest stage of a job); every chunk then follows the person the first one
    found. `on_batch` is called from the calling thread with the number of frames analysed, after every
    `batch` of them; an exception it raises stops the pass. A clip with several people is then read again
    (_follow_one_person): `on_others`, when given, is called likewise with the number of frames read again so
    far and the number expected in all (twice the clip's, and once more for each further person), else
    `on_batch` with the clip's. With `region` (x0, y0, x1, y1 in source pixels) only that part of the frames
    is read, at ANALYSIS_SIDE (see find_person_region); keypoints are still in the whole frame's pixels.
    """
    total = info.output_frame_count
    view = _region_view(info, region)
    chunks = pose_chunks(total)
    # Per chunk: landmarks of its lead-in and own frames, and where a person was found.
    readings = [np.zeros((len(lead_in(c)) + len(c), N_LANDMARKS, 4), np.float32) for c in chunks]
    found = [np.zeros(len(r), bool) for r in readings]
    feeds: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in chunks]
    stop = threading.Event()
    # Chunks being analysed or buffered: the decoder runs at most one chunk ahead of the lanes.
    slots = threading.Semaphore(POSE_LANES + 1)
    analysed = [0] * len(chunks)  # frames done per chunk, each written by its own lane only

    larger: list[tuple[int, int, int, int] | None] = []  # the first chunk's check for a larger person

    def analyse(chunk: int) -> None:
        frames = iter(feeds[chunk].get, None)
        check = (lambda rgb, points: larger.append(_larger_person(rgb, points, view))) if chunk == 0 else None
        try:
            with contextlib.closing(
                _read_chunk(frames, chunks[chunk], readings[chunk], found[chunk], view, on_first=check)
            ) as reads:
                for index in reads:
                    if stop.is_set():
                        break
                    analysed[chunk] += index >= chunks[chunk].start
        finally:
            slots.release()

    reported = 0

    def report() -> None:
        nonlocal reported
        done = sum(analysed)
        if done - reported >= batch:
            reported = done - done % batch
            on_batch(reported)

    count = 0
    signatures: list[np.ndarray] = []  # per frame read, for finding camera cuts
    with ThreadPoolExecutor(max_workers=POSE_LANES, thread_name_prefix="marionet-pose") as lanes:
        running: list[Future] = []
        try:
            frames = _frames_in(video_path, info, region, range(total))
            with contextlib.closing(frames):
                for index, rgb in frames:
                    signatures.append(frame_signature(rgb))
                    owner = index // len(chunks[0])
                    readers = [owner]
                    if owner + 1 < len(chunks) and index in lead_in(chunks[owner + 1]):
                        readers.append(owner + 1)
                    for chunk in readers:
                        if index == lead_in(chunks[chunk]).start:
                            while not slots.acquire(timeout=0.05):
                                report()
                            running.append(lanes.submit(analyse, chunk))
                        feeds[chunk].put((index, rgb))
                        if index == chunks[chunk][-1]:
                            feeds[chunk].put(None)
                    count = index + 1
                    report()
            for feed in feeds:  # the stream may end before its declared length, inside a chunk
                feed.put(None)
            _joined(running, report)
        finally:
            stop.set()
            for feed in feeds:
                feed.put(None)
    on_batch(count)
    _follow_one_person(
        video_path,
        info,
        region,
        chunks,
        readings,
        found,
        larger[0] if larger else None,
        on_others or (lambda read, expected: on_batch(count)),
        batch,
    )
    keypoints, detected = _join_chunks(chunks, readings, found, total)
    if region is not None:
        keypoints[detected, :, :2] += np.array(region[:2], np.float32)
    # Frames past the end of a stream shorter than declared stay undetected: the last pose is held.
    track = PoseTrack(
        keypoints=keypoints, detected=detected, fps=info.output_fps, width=info.width, height=info.height
    )
    track.cuts = find_cuts(signatures, detected, info.output_fps)
    if track.detected.any():
        for span in track.shots():  # each with someone in it (kept_cuts)
            drop_detours(track.shot(span))
            drop_shrunken(track.shot(span))
        track.cuts = kept_cuts(track.cuts, track.detected, track.fps)
        for span in track.shots():
            shot = track.shot(span)
            fill_gaps(shot)
            smooth_track(shot)
    return track


def frame_signature(rgb: np.ndarray) -> np.ndarray:
    """What a camera cut changes: an analysis frame's grey thumbnail, contrast-normalised (a unit vector)."""
    grey = cv2.cvtColor(
        cv2.resize(rgb, (CUT_THUMB, CUT_THUMB), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
    )
    thumb = grey.astype(np.float32).ravel()
    thumb -= thumb.mean()
    return thumb / max(float(np.linalg.norm(thumb)), 1e-6)


def find_cuts(signatures: list[np.ndarray], detected: np.ndarray, fps: float) -> np.ndarray:
    """First frames of new shots: where a frame differs from the one before it as only a camera cut does
    (CUT_CHANGE, CUT_OUTLIER); see kept_cuts for the ones dropped."""
    change = np.zeros(len(signatures))
    for i in range(1, len(signatures)):
        change[i] = 1.0 - float(signatures[i] @ signatures[i - 1])
    cuts = []
    for i in range(1, len(change)):
        around = [change[j] for j in (i - 2, i - 1, i + 1, i + 2) if 1 <= j < len(change)]
        if change[i] >= CUT_CHANGE and change[i] >= CUT_OUTLIER * max(around, default=0.0):
            cuts.append(i)
    return kept_cuts(np.array(cuts, int), detected, fps)


def kept_cuts(cuts: np.ndarray, detected: np.ndarray, fps: float) -> np.ndarray:
    """The cuts at least MIN_SHOT_S seconds from the cuts either side of them and from the clip's ends (a burst
    of them is flicker, not editing), less those that would start or end a shot where nobody is seen: such a
    shot joins the one before it (the first, the one after), holding the pose seen last."""
    shortest = max(1, int(round(MIN_SHOT_S * fps)))
    around = [0, *(int(c) for c in cuts), len(detected)]
    spaced = [
        c
        for before, c, after in zip(around, around[1:], around[2:], strict=False)
        if min(c - before, after - c) >= shortest
    ]
    kept: list[int] = []
    start = 0  # of the shot the next cut would end
    for cut, end in itertools.pairwise([*spaced, len(detected)]):
        if not detected[cut:end].any():
            continue
        if detected[start:cut].any():
            kept.append(cut)
        start = cut
    return np.array(kept, int)


def _region_view(info: VideoInfo, region: tuple[int, int, int, int] | None) -> VideoInfo:
    """What the graphs see: the whole frame, or `region` of it as if it were the frame."""
    if region is None:
        return info
    return replace(info, width=region[2] - region[0], height=region[3] - region[1])


def find_person_region(video_path: Path, info: VideoInfo) -> tuple[int, int, int, int] | None:
    """Where a person too small for BlazePose's detector (it sees the frame at 224 px) moves in the clip: the
    windows' search of the character image (_found_in_windows) on frames spread over the clip (one every
    REGION_EVERY_S seconds, REGION_SAMPLES at least), their people's boxes joined and grown by REGION_MARGIN of
    the larger side (x0, y0, x1, y1 in source pixels); None when no sample shows anyone, or the region is
    nearly the whole frame. A person who crosses more than that between two samples leaves the region there."""
    total = info.output_frame_count
    side = max(info.width, info.height)
    samples = max(REGION_SAMPLES, math.ceil(total / info.output_fps / REGION_EVERY_S) + 1)
    boxes = []
    with pose_solution().Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        for index in sorted({round(i * (total - 1) / max(1, samples - 1)) for i in range(samples)}):
            frames = read_frames(video_path, info, max_side=min(side, REGION_SIDE), first=index)
            with contextlib.closing(frames):
                rgb = next(frames, (0, 0.0, None))[2]
            found = None if rgb is None else _found_in_windows(pose, rgb)
            if found is not None:
                scale = info.width / rgb.shape[1]
                boxes.append(np.array(_mask_bounds(found[1]), np.float64) * scale)
    if not boxes:
        return None
    x0, y0 = np.min(boxes, axis=0)[:2]
    x1, y1 = np.max(boxes, axis=0)[2:]
    region = _grown((x0, y0, x1, y1), REGION_MARGIN, info.width, info.height)
    if (region[2] - region[0]) * (region[3] - region[1]) > REGION_MAX_SHARE * info.width * info.height:
        return None
    return region


def _follow_one_person(
    video_path: Path,
    info: VideoInfo,
    region: tuple[int, int, int, int] | None,
    chunks: list[range],
    readings: list[np.ndarray],
    found: list[np.ndarray],
    larger: tuple[int, int, int, int] | None,
    check: Callable[[int, int], None],
    batch: int,
) -> None:
    """One person through the whole clip, the largest, as the hosted service follows. A chunk's graph follows
    whoever its detector scores best at its first frame: the first chunk is read again on the `larger` person
    its lane saw beside the one it found (a box, or None), and any later chunk that followed someone else than
    the chunk before it is read again, shown that person first (one graph each, after the parallel pass; only
    clips with several people pay for it). Where either happened, the clip is read once more, as one person
    again, with the first hidden; where that reading too sees someone else beside its person, once more with
    both hidden, and so on for up to MAX_PEOPLE people. Whoever fills the clip most is kept (the first found
    unless someone fills it LARGER_PERSON times as much). `check(read, expected)` is called every `batch`
    frames read again, with the number read again so far and the number now expected in all (progress,
    cancels). With a `region`, boxes and landmarks are in its pixels."""
    view = _region_view(info, region)
    total = sum(len(chunk) for chunk in chunks)
    read, expected = [0], [2 * total]  # frames read again by every lane; the whole clip once per person more

    def reread(
        chunk: int,
        start: int,
        focus: tuple[int, int, int, int] | None,
        hidden: list[tuple[np.ndarray, np.ndarray]] | None = None,
        stop: threading.Event | None = None,
        on_first: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> None:
        first = lead_in(chunks[chunk]).start
        readings[chunk][start - first :], found[chunk][start - first :] = 0.0, False
        frames = _frames_in(video_path, info, region, range(start, chunks[chunk].stop))
        if hidden:
            frames = _hiding(frames, hidden, first, view)
        with contextlib.closing(
            _read_chunk(frames, chunks[chunk], readings[chunk], found[chunk], view, focus, on_first)
        ) as reads:
            for _ in reads:
                read[0] += 1
                if stop is not None:
                    if stop.is_set():
                        return
                elif read[0] % batch == 0:
                    check(read[0], expected[0])

    def one_person(hidden: list[list[tuple[np.ndarray, np.ndarray]]] | None = None) -> bool:
        """Each chunk after the first read again on the person of the chunk before it, where it followed
        someone else (with `hidden`'s people, per chunk, hidden); whether any did."""
        others = False
        for chunk in range(1, len(chunks)):
            box = _other_person(chunks, readings, found, chunk, view)
            if box is not None:
                others = True
                reread(chunk, lead_in(chunks[chunk]).start, box, hidden[chunk] if hidden else [])
        return others

    def this_person() -> list[tuple[np.ndarray, np.ndarray]]:
        return [(reading.copy(), seen.copy()) for reading, seen in zip(readings, found, strict=True)]

    beside: list[tuple[int, int, int, int] | None] = []  # a hidden reading's check for someone larger

    def look_beside(rgb: np.ndarray, points: np.ndarray) -> None:
        beside.append(_larger_person(rgb, points, view))

    if larger is not None:
        reread(0, int(np.argmax(found[0])), larger)
    if not one_person() and larger is None:
        return
    people: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per person read, per chunk: (landmarks, seen)
    others = True  # someone else was seen beside the person just read
    while True:
        people.append(this_person())
        if not others or len(people) == MAX_PEOPLE:
            break
        # Someone else was seen beside the people read so far: follow them too, through the whole clip with
        # those hidden (the chunks side by side, as in the first pass, then made one person as that was).
        if len(people) > 1:
            expected[0] = max(expected[0], read[0] + total)
        hidden = [[person[chunk] for person in people] for chunk in range(len(chunks))]
        beside.clear()
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=POSE_LANES, thread_name_prefix="marionet-pose") as lanes:
            running = [
                lanes.submit(
                    reread,
                    chunk,
                    lead_in(chunks[chunk]).start,
                    None,
                    hidden[chunk],
                    stop,
                    None if chunk else look_beside,
                )
                for chunk in range(len(chunks))
            ]
            try:
                _joined(running, lambda: check(read[0], expected[0]))
            finally:
                stop.set()
        if not any(seen.any() for seen in found):
            break  # nobody else
        larger = beside[0] if beside else None
        if larger is not None:
            reread(0, int(np.argmax(found[0])), larger, hidden[0])
        others = one_person(hidden) or larger is not None
    presence = [_presence(chunks, *zip(*person, strict=True)) for person in people]
    kept = int(np.argmax(presence))
    if presence[kept] <= LARGER_PERSON * presence[0]:
        kept = 0
    for chunk, (reading, seen) in enumerate(people[kept]):
        readings[chunk][:], found[chunk][:] = reading, seen


def _joined(running: list[Future], tick: Callable[[], None]) -> None:
    """Wait for the lanes' work, calling `tick` (progress, cancels) from this thread meanwhile; their errors
    are raised here."""
    while wait(running, timeout=0.05).not_done:
        tick()
    for future in running:
        future.result()


def _presence(chunks: list[range], readings: list[np.ndarray], found: list[np.ndarray]) -> float:
    """How much of the clip the chunks' person fills: their torso length summed over the frames where they are
    seen (a large dancer there throughout outweighs a larger passer-by crossing in a second)."""
    total = 0.0
    for chunk, reading, seen in zip(chunks, readings, found, strict=True):
        own = slice(len(reading) - len(chunk), None)
        total += float(torso_length(reading[own][seen[own]]).sum())
    return total


def _hiding(
    frames: Iterable[tuple[int, np.ndarray]],
    hidden: list[tuple[np.ndarray, np.ndarray]],
    first: int,
    info: VideoInfo,
) -> Iterator[tuple[int, np.ndarray]]:
    """`frames` with the people of a chunk's earlier readings (landmarks, seen; from frame `first`) painted over
    in grey, frame by frame; where a reading lost its person, where it last (or next) saw them."""
    hidden = [(reading, np.flatnonzero(seen)) for reading, seen in hidden if seen.any()]
    for index, rgb in frames:
        for reading, seen_at in hidden:
            rgb = _hidden(rgb, reading[seen_at[np.argmin(np.abs(seen_at - (index - first)))]], info)
        yield index, rgb


def _hidden(rgb: np.ndarray, points: np.ndarray, info: VideoInfo) -> np.ndarray:
    """A copy of an analysis frame with the box around a person's landmarks (source pixels) painted grey."""
    hidden = rgb.copy()
    hidden[_inside(person_box(points, info), rgb, info)] = 128
    return hidden


def shown_only(rgb: np.ndarray, box: tuple[int, int, int, int], info: VideoInfo) -> np.ndarray:
    """A copy of an analysis frame painted grey outside a box (x0, y0, x1, y1 in source pixels)."""
    shown = np.full_like(rgb, 128)
    inside = _inside(box, rgb, info)
    shown[inside] = rgb[inside]
    return shown


def _inside(box: tuple[int, int, int, int], rgb: np.ndarray, info: VideoInfo) -> tuple[slice, slice]:
    """The rows and columns of an analysis frame inside a box in source pixels."""
    x0, y0, x1, y1 = (round(v * rgb.shape[1] / info.width) for v in box)
    return slice(y0, y1), slice(x0, x1)


def _larger_person(
    rgb: np.ndarray, followed: np.ndarray, info: VideoInfo
) -> tuple[int, int, int, int] | None:
    """A box around someone larger (torso LARGER_PERSON times as long) than the person `followed` in this
    analysis frame, found with that person hidden; None when there is nobody else, or nobody larger."""
    with pose_solution().Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        other = _person_landmarks(pose, _hidden(rgb, followed, info), info)
    if other is None or torso_length(other) < LARGER_PERSON * torso_length(followed):
        return None
    return person_box(other, info)


def torso_length(points: np.ndarray) -> np.ndarray:
    """Shoulder-midpoint to hip-midpoint distance of (..., 33, >=2) landmarks: one per pose."""
    shoulders = points[..., [L_SHOULDER, R_SHOULDER], :2].mean(axis=-2)
    hips = points[..., [L_HIP, R_HIP], :2].mean(axis=-2)
    return np.linalg.norm(shoulders - hips, axis=-1)


def torso_centre(points: np.ndarray) -> np.ndarray:
    """The mean (x, y) of the shoulders and hips of (..., 33, >=2) landmarks: one per pose."""
    return points[..., [L_SHOULDER, R_SHOULDER, L_HIP, R_HIP], :2].mean(axis=-2)


def _seen_extent(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) minimum and maximum of a reading's well-seen landmarks (all of them if under four are)."""
    seen = points[points[:, 3] >= 0.5, :2] if (points[:, 3] >= 0.5).sum() >= 4 else points[:, :2]
    return seen.min(axis=0), seen.max(axis=0)


def person_box(points: np.ndarray, info: VideoInfo) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) source pixels around a person's landmarks (the well-seen ones), with a margin."""
    (x0, y0), (x1, y1) = _seen_extent(points)
    return _grown((float(x0), float(y0), float(x1), float(y1)), PERSON_MARGIN, info.width, info.height)


def _frames_in(
    video_path: Path, info: VideoInfo, region: tuple[int, int, int, int] | None, span: range
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, analysis-size rgb) of the frames in `span` (from a keyframe shortly before it, unless it starts
    the clip): the whole frame or `region` of it, ANALYSIS_SIDE on its larger side (less if the source is)."""
    side, box = ANALYSIS_SIDE, None
    if region is not None:
        larger = max(region[2] - region[0], region[3] - region[1])
        side = min(
            max(info.width, info.height), math.ceil(ANALYSIS_SIDE * max(info.width, info.height) / larger)
        )
    frames = read_frames(video_path, info, max_side=side, first=span.start)
    with contextlib.closing(frames):
        for index, _, rgb in frames:
            if index >= span.stop:
                return
            if region is not None:
                if box is None:
                    scale = rgb.shape[1] / info.width
                    box = tuple(round(v * scale) for v in region)
                rgb = np.ascontiguousarray(rgb[box[1] : box[3], box[0] : box[2]])
            yield index, rgb


def _read_chunk(
    frames: Iterable[tuple[int, np.ndarray]],
    chunk: range,
    reading: np.ndarray,
    found: np.ndarray,
    info: VideoInfo,
    focus: tuple[int, int, int, int] | None = None,
    on_first: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> Iterator[int]:
    """One fresh BlazePose graph over a chunk's lead-in and own frames (index, rgb), filling `reading` and
    `found`; yields each index once it is read. With `focus` (x0, y0, x1, y1 in source pixels), frames show
    only that box until a person is found there (for at most SEAM_FRAMES frames), so the graph starts on that
    person and then tracks them. `on_first(rgb, landmarks)` is called at the first frame a person is found."""
    first = lead_in(chunk).start
    with pose_solution().Pose(
        static_image_mode=False, model_complexity=1, enable_segmentation=True, smooth_landmarks=False
    ) as pose:
        for shown_frames, (index, rgb) in enumerate(frames):
            if shown_frames >= SEAM_FRAMES:
                focus = None
            if focus is not None:
                rgb = shown_only(rgb, focus, info)
            points = _person_landmarks(pose, rgb, info)
            if points is not None:
                reading[index - first] = points
                found[index - first] = True
                focus = None
                if on_first is not None:
                    on_first(rgb, points)
                    on_first = None
            yield index


def _other_person(
    chunks: list[range], readings: list[np.ndarray], found: list[np.ndarray], chunk: int, info: VideoInfo
) -> tuple[int, int, int, int] | None:
    """Where the previous chunk's person is, when `chunk` read someone else over the frames both read (their
    torsos more than half a torso length apart): a box around that person at the lead-in's first frame both
    saw; None when both followed the same person, or there is nothing to compare."""
    lead = lead_in(chunks[chunk])
    before = np.arange(lead.start, lead.stop) - lead_in(chunks[chunk - 1]).start
    ours, theirs = readings[chunk][: len(lead)], readings[chunk - 1][before]
    both = np.nonzero(found[chunk][: len(lead)] & found[chunk - 1][before])[0]
    if not both.size:
        return None
    apart = np.linalg.norm(torso_centre(ours[both]) - torso_centre(theirs[both]), axis=1)
    if np.median(apart / np.maximum(torso_length(theirs[both]), 1.0)) <= 0.5:
        return None
    return person_box(theirs[both[0]], info)


def _person_landmarks(pose, rgb: np.ndarray, info: VideoInfo) -> np.ndarray | None:
    """One frame's landmarks in source pixels, or None when BlazePose sees no person (or a drawn figure)."""
    result = pose.process(rgb)
    points = landmarks_array(result, info.width, info.height)
    if points is None or result.segmentation_mask is None:
        return None
    if torso_coverage(points, result.segmentation_mask, rgb.shape[1] / info.width) < 0.3:
        return None
    return points


def _join_chunks(
    chunks: list[range], readings: list[np.ndarray], found: list[np.ndarray], total: int
) -> tuple[np.ndarray, np.ndarray]:
    """One track (keypoints, detected) from the chunks' readings, each lead-in cross-faded linearly into the
    previous chunk's reading of the same frames; where only one of the two found the person, that one."""
    keypoints = np.zeros((total, N_LANDMARKS, 4), np.float32)
    detected = np.zeros(total, bool)
    for chunk, reading, seen in zip(chunks, readings, found, strict=True):
        lead = lead_in(chunk)
        keypoints[chunk.start : chunk.stop] = reading[len(lead) :]
        detected[chunk.start : chunk.stop] = seen[len(lead) :]
        if not len(lead):
            continue
        weight = np.arange(1, len(lead) + 1, dtype=np.float32) / (len(lead) + 1)
        weight[~seen[: len(lead)]] = 0.0
        weight[seen[: len(lead)] & ~detected[lead.start : lead.stop]] = 1.0
        theirs = keypoints[lead.start : lead.stop]
        keypoints[lead.start : lead.stop] = theirs + (reading[: len(lead)] - theirs) * weight[:, None, None]
        detected[lead.start : lead.stop] |= seen[: len(lead)]
    return keypoints, detected


# The torso's centre moves at most 0.15 torso lengths a frame in the shared dance (and in it zoomed in to 1.6x).
# A reading that leaps JUMP or more in a frame (per frame between two readings) is another person: BlazePose's
# tracker went over to someone passing in front of the one it followed (to 0.9 a frame) or came back.
JUMP = 0.5
DETOUR_BACK = 1.0  # ... and the readings either side of such a run lie this near each other (torso lengths)
DETOUR_GAP = 0.25  # seconds without a reading that end a run (drop_detours)


def drop_detours(track: PoseTrack) -> None:
    """Mark undetected the readings BlazePose's tracker took from someone else for a while: someone who passed
    in front of the person followed. The readings fall into runs, between leaps (JUMP) and between gaps of
    DETOUR_GAP seconds or more (after which the person is found afresh). A run that leaps away and back, where
    the readings either side agree (within DETOUR_BACK) and that is shorter than those two runs together, is
    not the person; nor is one that leaps only once, towards a gap or an end of the track, and is shorter
    than the run across its leap, unless that run slid over to them from the person rather than leapt
    (_slid_away): then what it read after it left the person. Followed, the character slid across the canvas
    with them and snapped back; filled as a gap, it holds its pose while the person is hidden."""
    seen = np.flatnonzero(track.detected)
    if len(seen) < 3:
        return
    points = track.keypoints[seen]
    centre = torso_centre(points)
    torso = np.maximum(torso_length(points), 1.0)
    step = np.linalg.norm(np.diff(centre, axis=0), axis=1) / np.minimum(torso[1:], torso[:-1])
    leaps = step >= JUMP * np.diff(seen)  # between seen[j] and seen[j + 1]
    ends = leaps | (np.diff(seen) >= DETOUR_GAP * track.fps)
    # Run r is seen[edges[r] + 1 : edges[r + 1] + 1].
    edges = [-1, *np.flatnonzero(ends).tolist(), len(seen) - 1]
    lengths = np.diff(edges)
    leap_before = [run > 0 and bool(leaps[edges[run]]) for run in range(len(lengths))]
    leap_after = [run < len(lengths) - 1 and bool(leaps[edges[run + 1]]) for run in range(len(lengths))]
    others = set()
    for run in range(len(lengths)):  # away and back to where it left
        if leap_before[run] and leap_after[run]:
            before, after = edges[run], edges[run + 1] + 1
            apart = np.linalg.norm(centre[after] - centre[before]) / min(torso[before], torso[after])
            if apart <= DETOUR_BACK and lengths[run] < lengths[run - 1] + lengths[run + 1]:
                others.add(run)
    # One leap only: compared with the run across it, unless that one is not the person, or slid away from it.
    slid = []
    for run in range(len(lengths)):
        if leap_before[run] != leap_after[run]:
            across = run - 1 if leap_before[run] else run + 1
            if across in others or lengths[run] >= lengths[across]:
                continue
            towards = np.arange(edges[across] + 1, edges[across + 1] + 1)  # the run across, towards the leap
            came = edges[run] + 1 if leap_before[run] else edges[run + 1]
            away = _slid_away(
                seen, centre, torso, towards if leap_before[run] else towards[::-1], came, track.fps
            )
            if 0 < len(away) < lengths[across] - len(away) + lengths[run]:
                slid.append(away)
            else:
                others.add(run)
    for run in others:
        track.detected[seen[edges[run] + 1 : edges[run + 1] + 1]] = False
    for away in slid:
        track.detected[seen[away]] = False


# Where the tracker slid from the person followed onto someone passing close by, it moved as a dancer can
# (0.1-0.4 torso lengths a frame) and leapt back to them only once the other had gone. A run that ends (or
# starts) in one leap went away from the person where, SLID_S or less before the leap (or after), it was last
# within SLID_NEAR of where the run across the leap starts and of its size (within SLID_SIZE in log): someone
# crossing in front of the person passes through their place too, but is seldom their size.
SLID_NEAR = 0.25
SLID_SIZE = 0.1
SLID_S = 3.0


def _slid_away(
    seen: np.ndarray, centre: np.ndarray, torso: np.ndarray, run: np.ndarray, came: int, fps: float
) -> np.ndarray:
    """The readings of `run` (indices into `seen`, in order towards its leap) after it was last where the
    reading `came`, across the leap, is: empty where it never was there within SLID_S of the leap."""
    recent = run[np.abs(seen[run] - seen[run[-1]]) <= SLID_S * fps]
    there = (np.linalg.norm(centre[recent] - centre[came], axis=1) <= SLID_NEAR * torso[recent]) & (
        np.abs(np.log(torso[recent] / torso[came])) <= SLID_SIZE
    )
    if not there.any():
        return recent[:0]
    return recent[np.flatnonzero(there)[-1] + 1 :]


# A reading whose skeleton is under SHRUNK of the readings' around it (the median of its bones' ratios) is not the
# person. The shared clips' readings are 0.91 or more of those around them; a dancer sliding back into the frame,
# read as a small figure at its bottom, 0.34-0.76.
SHRUNK = 0.8
SCALE_BONES = ((L_SHOULDER, R_SHOULDER), (L_HIP, R_HIP), (L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW),
               (L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST), (L_HIP, L_KNEE), (R_HIP, R_KNEE), (L_KNEE, L_ANKLE),
               (R_KNEE, R_ANKLE))  # fmt: skip


def drop_shrunken(track: PoseTrack, seconds: float = 1.0) -> None:
    """Mark undetected the frames whose reading is under SHRUNK of the size of the readings within `seconds`
    either side: nobody shrinks like that from one moment to the next. The size is the median, over the torso
    and SCALE_BONES, of each one's length against its median around the frame, so a bow (a short torso) or an
    arm pointed at the camera changes it little. Filled as a gap, the character keeps its size; followed, it
    shrank into a corner. Twice, so a run of such readings does not hide itself in the medians."""
    keypoints = track.keypoints
    lengths = np.stack(
        [np.linalg.norm(keypoints[:, a, :2] - keypoints[:, b, :2], axis=1) for a, b in SCALE_BONES]
        + [torso_length(keypoints)],
        axis=1,
    )
    reach = max(1, int(round(seconds * track.fps)))
    for _ in range(2):
        seen = np.nonzero(track.detected)[0]
        shrunk = []
        for i in seen:
            near = seen[(seen >= i - reach) & (seen <= i + reach)]
            if len(near) < 3:
                continue
            reference = np.maximum(np.median(lengths[near], axis=0), 1e-6)
            if np.median(lengths[i] / reference) < SHRUNK:
                shrunk.append(i)
        track.detected[shrunk] = False


# An elbow or wrist read under ARM_SEEN is a guess: something passed in front of it. BlazePose then drops the arm
# to the body's side (a pillar crossing the dancer's raised arm: elbow 0.50-0.55 drifting 90 px down, wrist
# 0.04-0.40), and the character dropped hers; it is carried from the frames around that saw it. The shared
# clips' elbows and wrists read under it in one frame of 394. In a clip where an arm reads low throughout (dim,
# blurred), only its dips count: under ARM_DIP of its median, if that is lower.
ARM_SEEN = 0.6
ARM_DIP = 0.75
ARM_LANDMARKS = (L_ELBOW, R_ELBOW, L_WRIST, R_WRIST)


def fill_gaps(track: PoseTrack, min_visibility: float = 0.3) -> None:
    """Interpolate each landmark across frames where the detector missed it or only guessed it (under
    `min_visibility`; for elbows and wrists, ARM_SEEN or their dips); hold the ends."""
    frames = np.arange(track.frame_count)
    for j in range(N_LANDMARKS):
        seen = min_visibility
        if j in ARM_LANDMARKS and track.detected.any():
            typical = float(np.median(track.keypoints[track.detected, j, 3]))
            seen = max(min_visibility, min(ARM_SEEN, ARM_DIP * typical))
        good = track.detected & (track.keypoints[:, j, 3] >= seen)
        if good.sum() < max(2, 0.05 * track.detected.sum()):
            # Never reliably seen (e.g. legs of a half-body clip): keep the detector's guesses, fill missing frames.
            good = track.detected
        if good.all() or not good.any():
            continue
        for c in range(3):
            track.keypoints[:, j, c] = np.interp(frames, frames[good], track.keypoints[good, j, c])
        track.keypoints[~track.detected, j, 3] = 0.0


def smooth_track(track: PoseTrack, min_cutoff: float = 3.0, beta: float = 6.0, d_cutoff: float = 1.0) -> None:
    """One-Euro filter, run forward then backward so the smoothed motion has no lag."""
    # Speeds are measured in body heights per second so the filter behaves the same at any resolution.
    scale = max(1.0, _body_size(track))
    values = track.keypoints[:, :, :3] / scale
    forward = _one_euro(values, track.fps, min_cutoff, beta, d_cutoff)
    backward = _one_euro(forward[::-1], track.fps, min_cutoff, beta, d_cutoff)[::-1]
    track.keypoints[:, :, :3] = backward * scale


def _body_size(track: PoseTrack) -> float:
    return float(np.median(torso_length(track.keypoints[track.detected]))) * 3.0


def _one_euro(values: np.ndarray, fps: float, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    out = np.empty_like(values)
    out[0] = values[0]
    speed = np.zeros_like(values[0])
    a_d = alpha(d_cutoff)
    for i in range(1, len(values)):
        raw_speed = (values[i] - out[i - 1]) * fps
        speed = speed + a_d * (raw_speed - speed)
        cutoff = min_cutoff + beta * np.abs(speed)
        a = alpha(cutoff)
        out[i] = out[i - 1] + a * (values[i] - out[i - 1])
    return out


def track_file(video_sha256: str) -> str:
    """The pose cache's file name for the track of the video with this content hash (this TRACK_VERSION)."""
    return f"{video_sha256}-{TRACK_VERSION}.npz"


def cached_track(cache_dir: Path, video_sha256: str, frames: int) -> PoseTrack | None:
    """The track cached in `cache_dir` for the video with this content hash, if it has `frames` frames."""
    track = load_track(cache_dir / track_file(video_sha256))
    return track if track is not None and track.frame_count == frames else None


def save_track(track: PoseTrack, path: Path) -> None:
    """Write a track atomically (a half-written cache file must never be read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        keypoints=track.keypoints,
        detected=track.detected,
        meta=np.array([track.fps, track.width, track.height], np.float64),
        cuts=np.asarray(track.cuts, np.int64),
    )
    tmp.replace(path)


def load_track(path: Path) -> PoseTrack | None:
    """A cached track, or None when there is none or it cannot be read; a track read is marked used (its
    modification time), so pruning by age removes only the tracks nobody asked for lately."""
    try:
        with np.load(path) as data:
            fps, width, height = data["meta"]
            track = PoseTrack(
                keypoints=data["keypoints"].astype(np.float32),
                detected=data["detected"].astype(bool),
                fps=float(fps),
                width=int(width),
                height=int(height),
                cuts=data["cuts"].astype(int),
            )
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None  # damaged, or not a track: a pose pass writes it again
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(path)
    return track
