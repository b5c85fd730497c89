"""Stage 3, retarget: the driving pose's bone directions on the character's own bone lengths, placed on the canvas.

orientation "image": the character stays where the image has it (root motion scaled by body-size ratio), and
keeps its facing. orientation "video": it follows the driver's place and size in the frame, mirrored while the
driver faces the other way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marionet.engine.cpu.pose import PoseTrack
from marionet.engine.cpu.rig import BONES, MIRROR_JOINTS, CharacterRig, J, head_radius, joints_from_landmarks

# Bones whose on-screen length follows the driver's (foreshortening), clipped so a limb never vanishes.
MIN_FORESHORTEN = 0.35
# A hand follows the driver's own wrist -> hand direction as its joints' visibility rises between these.
TIP_SEEN = (0.5, 0.8)
# A leg follows the driver's as its knee's and ankle's visibility rise between these (smoothed over LEG_SECONDS);
# below, it keeps the picture's stance. A half-body clip's legs are BlazePose's guesses (the presenter's knees
# and ankles read 0.00): followed, they stood the character's legs straight down, whatever her stance, and
# showed the background filled where her own legs had been. The dance's ankles read 0.75 and over.
LEG_SEEN = (0.2, 0.5)
LEG_SECONDS = 0.5
LEG_CHAINS = (("l_knee", "l_ankle", "l_foot"), ("r_knee", "r_ankle", "r_foot"))


@dataclass
class Motion:
    """The character's pose on the canvas for every output frame."""

    joints: np.ndarray  # (frames, joints, 2) canvas pixels
    arm_in_front: np.ndarray  # (frames, 2) bool, [left, right]: the arm is drawn over the body
    left_leg_in_front: np.ndarray  # (frames,) bool: the left leg is drawn over the right one
    scale: np.ndarray  # (frames,) character scale against the rest pose
    mirrored: np.ndarray  # (frames,) bool: draw the character flipped horizontally
    axis_x: float  # rest-pose x the character is mirrored about (its pelvis)
    # (frames, joints) 0..1: how far a hand turns to its own bone's direction (wrist -> hand) rather than keep
    # its rest angle to the forearm: how well the driver's frame and the picture both show that bone's joints.
    tip_trust: np.ndarray | None = None


def retarget(track: PoseTrack, rig: CharacterRig, orientation: str) -> Motion:
    """Turn a driving pose track into canvas joint positions for this character."""
    driver = joints_from_landmarks(track.keypoints).astype(np.float64)  # (frames, joints, 4)
    frames = driver.shape[0]
    xy = driver[..., :2]
    facing = _facing(xy)
    mirrored = np.zeros(frames, bool)
    if orientation == "video":
        mirrored = facing != rig.facing
    else:
        # Keep the image's facing: a turned-around driver's left limbs drive the character's right ones.
        turned = facing != rig.facing
        driver[turned] = driver[turned][:, MIRROR_JOINTS]

    vectors = np.stack([xy[:, c] - xy[:, p] for p, c in BONES], axis=1)  # (frames, bones, 2)
    lengths = np.linalg.norm(vectors, axis=2)
    directions = vectors / np.maximum(lengths, 1e-6)[..., None]
    foreshorten = np.ones_like(lengths)
    driver_size = np.zeros(frames)
    root, scale = np.zeros((frames, 2)), np.ones(frames)
    arm_in_front, left_leg_in_front = np.zeros((frames, 2), bool), np.zeros(frames, bool)
    width, height = rig.canvas_size
    pelvis = xy[:, J["pelvis"]]
    rig_size = max(rig.size, 0.5 * rig.bone_lengths[2] + 0.5 * rig.bone_lengths[6])
    # Orientation "video": the driving frame's sides on the canvas, per shot (by its first frame).
    frame_sides: dict[int, np.ndarray] = {}
    # Shot by shot: a camera cut changes the driver's size and place in the frame at once, and neither is the
    # character's motion (across one, a dancer's size was smoothed into the next shot's close-up half a second
    # early, and her bones measured against the close-up's drew her limbs at a third of their length).
    for span in track.shots():
        at = slice(span.start, span.stop)
        seen = track.detected[at] if track.detected[at].any() else np.ones(len(span), bool)
        driver_size[at] = _smooth(_body_size(lengths[at], driver[at, :, 3], seen), track.fps)
        # The depth order's hold starts afresh too: it would carry one shot's order into the next.
        depth = driver[at, :, 2] / np.maximum(driver_size[at], 1e-6)[:, None]
        arm_in_front[at], left_leg_in_front[at] = _layering(depth)
        measured = lengths[at] / _distance(driver_size[at], seen)[:, None]
        reference = np.percentile(measured[seen], 95, axis=0)
        foreshorten[at] = np.clip(measured / np.maximum(reference, 1e-6), MIN_FORESHORTEN, 1.0)
        if orientation == "video":
            body = float(np.median(driver_size[at][seen]))
            fit, offset = _frame_fit(xy[at][seen], (track.width, track.height), (width, height), body)
            root[at] = pelvis[at] * fit + offset
            scale[at] = driver_size[at] * fit / rig_size
            if rig.cut_at_bottom:
                scale[at] *= _up_to_driver_s_head(
                    xy[at][seen], fit, offset, rig, float(np.median(scale[at][seen]))
                )
            frame_sides[span.start] = np.array([offset[0], offset[0] + fit * track.width])
        else:
            ratio = rig.size / max(float(np.median(driver_size[at])), 1e-6)
            root[at] = (pelvis[at] - np.median(pelvis[at], axis=0)) * ratio
    if orientation != "video":
        root = rig.joints[J["pelvis"]] + _kept_in_picture(root, rig)

    if rig.cut_at_bottom:
        # Never lift a cropped body's cut edge into view: it would show as a floating torso.
        below_root = (height - rig.joints[J["pelvis"], 1]) * scale
        root[:, 1] = np.maximum(root[:, 1], height - below_root)
    joints = np.zeros((frames, len(rig.joints), 2))
    joints[:, J["pelvis"]] = root
    followed = _legs_followed(driver[..., 3], track, rig.visibility)
    for b, (p, c) in enumerate(BONES):
        step = directions[:, b] * (rig.bone_lengths[b] * foreshorten[:, b] * scale)[:, None]
        if c in followed:
            # The picture's own bone, as photographed, where the driver does not show it.
            weight = followed[c][:, None]
            step = weight * step + (1.0 - weight) * (rig.joints[c] - rig.joints[p]) * scale[:, None]
        joints[:, c] = joints[:, p] + step
    if orientation == "video":
        at_side = _at_side(xy, track.width)
        for span in track.shots():
            at = slice(span.start, span.stop)
            x = joints[at, J["pelvis"], 0]
            left, right = frame_sides[span.start]
            fit = (right - left) / track.width
            # How far she, and the driver, reach to either side of the root on the canvas: their joints, and
            # hair, a skirt, fingertips beyond.
            reach = _sideways(joints[at, :, 0], x, REACH_PAST_JOINTS * rig.size * scale[at])
            driver_reach = _sideways(xy[at, :, 0] * fit + left, x, REACH_PAST_JOINTS * driver_size[at] * fit)
            walked = _walked_out(
                x, reach, driver_reach, track.detected[at], at_side[at], width, frame_sides[span.start]
            )
            joints[at, :, 0] += (walked - x)[:, None]
    # Both the driver's and the image's: a hand the picture hides (behind the back) has no wrist to turn at.
    seen = np.minimum(_seen(driver[..., 3]), _seen(rig.visibility)[None, :])
    tip_trust = np.zeros((frames, len(rig.joints)))
    for p, c in BONES:
        tip_trust[:, c] = np.minimum(seen[:, p], seen[:, c])
    return Motion(
        joints=joints,
        arm_in_front=arm_in_front,
        left_leg_in_front=left_leg_in_front,
        scale=scale,
        mirrored=mirrored,
        axis_x=float(rig.joints[J["pelvis"], 0]),
        tip_trust=tip_trust,
    )


# A shot's body size is its torso (pelvis to neck), or where that is foreshortened (a bow, a lean towards the
# camera) what these say it is: half the shoulders' width, half the hips', a leg (thigh and shin), each where its
# joints are seen (visibility), scaled by its median ratio to the torso over the shot. Taken from the torso
# alone, a dancer bowing for two and a half seconds halved the cartoon in `video`, and in `image` the bow read
# as a zoom: her legs were drawn at half their length outside it. The others count only where they say the torso
# is foreshortened by more than SIZE_SLACK: on the shared clips they read 1.14 (dance) and 1.07 (presenter) times
# the torso at most, noise that would make the character breathe.
SIZE_SEEN = 0.5
SIZE_SLACK = 1.15
SIZE_MEASURES = (((2, 6), ("l_shoulder", "r_shoulder")), ((10, 14), ("l_hip", "r_hip")))
LEG_BONES = ((11, 12, "l_knee", "l_ankle"), (15, 16, "r_knee", "r_ankle"))


def _body_size(lengths: np.ndarray, visibility: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(frames,) a shot's driver's body size in pixels, per frame: the torso, or the largest of the other
    measures (SIZE_MEASURES, legs), each scaled by its median ratio to the torso over the frames with a person
    (`seen`), over SIZE_SLACK, where that is larger."""
    torso = lengths[:, 0]
    estimates = [torso]
    measures = [
        (0.5 * (lengths[:, a] + lengths[:, b]), np.minimum(visibility[:, J[m]], visibility[:, J[n]]))
        for (a, b), (m, n) in SIZE_MEASURES
    ]
    legs = np.stack([lengths[:, a] + lengths[:, b] for a, b, _, _ in LEG_BONES], axis=1)
    leg_seen = np.stack(
        [np.minimum(visibility[:, J[k]], visibility[:, J[n]]) for _, _, k, n in LEG_BONES], axis=1
    )
    legs[leg_seen < SIZE_SEEN] = 0.0
    measures.append((legs.max(axis=1), leg_seen.max(axis=1)))
    for value, visible in measures:
        usable = seen & (visible >= SIZE_SEEN) & (value > 0)
        if usable.sum() < max(3, 0.2 * seen.sum()):
            continue
        ratio = float(np.median(torso[usable] / value[usable]))
        estimates.append(np.where(visible >= SIZE_SEEN, value * ratio, 0.0))
    return np.maximum(torso, np.max(estimates, axis=0) / SIZE_SLACK)


# orientation "image": the root's travel from the image's place is let through unchanged up to this share of the
# room the picture leaves the head and torso, then eased off so they never leave it.
EASE_FROM = 0.7


def _kept_in_picture(offset: np.ndarray, rig: CharacterRig) -> np.ndarray:
    """(frames, 2) root travel, eased so the character's torso (across) and head and shoulders (up and down)
    stay in the picture, FRAME_MARGIN of its sides inside: `image` keeps the character's place, and a driver
    who walked out of the frame took the elf out of hers. Travel within EASE_FROM of the room is unchanged."""
    width, height = rig.canvas_size
    margin = FRAME_MARGIN * np.array([width, height], float)
    joints = rig.joints
    torso = joints[[J[n] for n in ("neck", "pelvis", "l_shoulder", "r_shoulder", "l_hip", "r_hip", "head")]]
    top = joints[J["head"], 1] - head_radius(joints)
    shoulders = joints[[J["l_shoulder"], J["r_shoulder"]], 1].max()
    low = np.array([margin[0] - torso[:, 0].min(), margin[1] - top])  # the most travel left / up (negative)
    high = np.array([width - margin[0] - torso[:, 0].max(), height - margin[1] - shoulders])
    out = offset.copy()
    for axis in range(2):
        for bound, sign in ((high[axis], 1.0), (-low[axis], -1.0)):
            travel = sign * out[:, axis]
            room = max(float(bound), 0.0)
            knee = EASE_FROM * room
            over = travel > knee
            if room <= 0:
                out[over, axis] = 0.0
                continue
            eased = knee + (room - knee) * np.tanh((travel[over] - knee) / (room - knee))
            out[over, axis] = sign * eased
    return out


# orientation "video": a driver lost at a side of the frame while moving towards it at this share of the canvas's
# width a frame or faster walked out there (one found first at a side, moving away from it, walked in). Held
# where she was last seen, the cartoon stood half off the canvas's edge, still, while the frame was empty.
WALK_SPEED = 0.004
WALK_FRAMES = 4  # the frames before a gap (after it) its speed is measured over
SIDE_MARGIN = 0.02
REACH_PAST_JOINTS = 0.6  # body sizes: how far hair, a skirt or fingertips lie past her outermost joint
# At most this much faster than the driver (a driver lost with little of her left in the frame would have the
# character leap off the canvas in a frame or two).
WALK_SPEEDUP = 3.0


def _at_side(xy: np.ndarray, width: int) -> np.ndarray:
    """(frames,) +1 where the driver's joints reach the frame's right side (within SIDE_MARGIN of its width) or
    past it, -1 the left side, 0 neither."""
    out = np.zeros(len(xy), int)
    out[xy[..., 0].max(axis=1) >= (1 - SIDE_MARGIN) * width] = 1
    out[xy[..., 0].min(axis=1) <= SIDE_MARGIN * width] = -1
    return out


def _sideways(joints_x: np.ndarray, root_x: np.ndarray, beyond: np.ndarray) -> np.ndarray:
    """(frames, 2) how far a body reaches left and right of its root: its joints, and `beyond` past them."""
    return np.stack([root_x - joints_x.min(axis=1), joints_x.max(axis=1) - root_x], axis=1) + beyond[:, None]


def _walked_out(
    x: np.ndarray,
    reach: np.ndarray,
    driver_reach: np.ndarray,
    detected: np.ndarray,
    at_side: np.ndarray,
    width: float,
    frame: np.ndarray,
) -> np.ndarray:
    """A shot's root x per frame (canvas pixels), with each run of frames without a person that someone walked
    out of (or into) the frame through a side (`at_side` there, see _at_side) moved out through that side, at
    the speed they walked, until nothing of the character is left on the canvas (`reach`, (frames, 2): how far
    she reaches left and right of her root). Other gaps keep the track's filling (the pose held, or carried
    across the gap).

    She leaves the canvas no later than the driver leaves the frame (`frame`: its left and right sides on the
    canvas; `driver_reach`: the driver's `reach`): faster than the driver where the frame's side lies inside the
    canvas (a portrait clip driving a landscape picture) or where she is drawn larger than the driver. At the
    dancer's own speed the elf walked only as far as her picture's edge and back."""
    out = x.copy()
    frames = len(x)
    missing = np.flatnonzero(~detected)
    if not len(missing) or not detected.any():
        return out
    runs = np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1)
    for run in runs:
        start, stop = int(run[0]), int(run[-1]) + 1
        paths = []
        for anchor, away in ((start - 1, -1), (stop, 1)):
            # away: the direction in time from the gap to the frames the speed is read in
            if not 0 <= anchor < frames or not 0 <= anchor + away * WALK_FRAMES < frames:
                continue
            speed = (x[anchor] - x[anchor + away * WALK_FRAMES]) / WALK_FRAMES  # per frame into the gap
            side = 1.0 if speed > 0 else -1.0
            edge = width if side > 0 else 0.0
            if abs(speed) < WALK_SPEED * width or at_side[anchor] != side:
                continue
            trailing = reach[:, 0] if side > 0 else reach[:, 1]  # her side away from the one she leaves by
            driver_trailing = driver_reach[anchor, 0 if side > 0 else 1]
            # The driver clears the frame's side in so many frames; she clears the canvas's in as many.
            to_frame = side * (frame[int(side > 0)] + side * driver_trailing - x[anchor])
            to_canvas = side * (edge + side * trailing[anchor] - x[anchor])
            if to_frame > 0:
                speed *= float(np.clip(to_canvas / to_frame, 1.0, WALK_SPEEDUP))
            gone = edge + side * trailing[run]  # her root where nothing of her is left on the canvas
            path = x[anchor] + speed * np.abs(run - anchor)
            paths.append((side, np.minimum(path, gone) if side > 0 else np.maximum(path, gone)))
        if len(paths) == 2 and paths[0][0] != paths[1][0]:
            # Out through one side and back in through the other: out, then in.
            half = len(run) // 2
            out[run[:half]], out[run[half:]] = paths[0][1][:half], paths[1][1][half:]
            continue
        if paths:
            # Each path holds near its own end of the gap: the one nearer the canvas is the one walked there.
            side = paths[0][0]
            nearest = (np.minimum if side > 0 else np.maximum).reduce([path for _, path in paths])
            out[run] = np.maximum(out[run], nearest) if side > 0 else np.minimum(out[run], nearest)
    return out


# A shot in which the driver's size (smoothed) spans more than ZOOM_FROM (its 90th percentile over its 10th) is a
# zoom, or a dancer walking to or from the camera, fully so from ZOOM_FULL: bones are measured against the
# driver's size there, not in pixels. Measured in pixels against the shot's longest, every bone of the far
# frames read foreshortened (a zoom from 1.0 to 1.6x drew the cartoon at 0.64 -> 0.95 of the dancer's size in
# `video`, and shrank her to 0.68 of her own in `image`). Within a shot that keeps its distance (the dance spans
# 1.09) the pixels are kept: measured against her size there, the dance read worse on every variant (4.9 -> 6.6
# deg, 1.80 -> 3.71x; mirrored and `pro` alike).
ZOOM_FROM, ZOOM_FULL = 1.2, 1.4


def _distance(size: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(frames,) what a shot's bone lengths are divided by before they are compared: 1 where the driver keeps
    their distance, their size where they (or the camera) move nearer or further, blended between."""
    low, high = np.percentile(size[seen], [10, 90])
    span = high / max(float(low), 1e-6)
    weight = float(np.clip((span - ZOOM_FROM) / (ZOOM_FULL - ZOOM_FROM), 0.0, 1.0))
    return (np.maximum(size, 1e-6) / max(float(np.median(size[seen])), 1e-6)) ** weight


def _up_to_driver_s_head(
    xy: np.ndarray, fit: float, offset: np.ndarray, rig: CharacterRig, scale: float
) -> float:
    """Orientation "video", a character the picture cuts at its bottom (half-body): how much larger to draw her
    than the driver's size says, so that, her cut held at the canvas's bottom, her head comes as high as the
    driver's (`xy`: a shot's detected frames' joints, mapped by `fit`, `offset`); never larger than in her own
    picture. At the size of a full-body driver, the elf's cut held at the bottom put her head two thirds of the
    way down a canvas the dancer's head topped."""
    height = rig.canvas_size[1]
    head = float(np.median(xy[:, J["head"], 1])) * fit + float(offset[1])
    room = (height - head) / max(height - float(rig.joints[J["head"], 1]), 1.0)
    return max(1.0, min(room, 1.0) / max(scale, 1e-6))


def _legs_followed(visibility: np.ndarray, track: PoseTrack, pictured: np.ndarray) -> dict[int, np.ndarray]:
    """Per leg joint (knee, ankle, foot), 0..1 per frame: how far its bone follows the driver's rather than keep
    the picture's. A joint follows no further than the one above it; frames without a person take their
    neighbours' (a gap holds the legs as it holds the rest of the body); smoothed within each shot.

    A leg whose ankle the picture does not show (`pictured`: the picture's visibility per joint; a portrait cut
    above the ankles) keeps the picture's stance whatever the driver does, by the same LEG_SEEN ramp: the
    cartoon cut at mid-thigh had only her skirt over her thighs, and it fanned open and shut with the dancer's
    legs. Cut at her knees, her ankles are read at 0.58-0.68 and her legs follow."""
    frames = np.arange(len(visibility))
    detected = track.detected if track.detected.any() else np.ones(len(visibility), bool)
    out: dict[int, np.ndarray] = {}
    for chain in LEG_CHAINS:
        above = np.full(len(visibility), float(_ramp(pictured[J[chain[1]]], LEG_SEEN)))
        for name in chain:
            j = J[name]
            if name.endswith("_foot"):
                out[j] = above  # the foot turns with the shin: its own landmark is the least seen
                continue
            held = np.interp(frames, frames[detected], visibility[detected, j])
            seen = _ramp(held, LEG_SEEN)
            for span in track.shots():
                seen[span.start : span.stop] = _smooth(seen[span.start : span.stop], track.fps, LEG_SECONDS)
            above = np.minimum(above, seen)
            out[j] = above
    return out


def _ramp(value: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """0 at or under bounds[0], 1 at or over bounds[1], linear between."""
    return np.clip((value - bounds[0]) / (bounds[1] - bounds[0]), 0.0, 1.0)


def _seen(visibility: np.ndarray) -> np.ndarray:
    return _ramp(visibility, TIP_SEEN)


# orientation "video": between the driver's reach over the clip and the canvas's edge, a share of the canvas's
# side. The reach is the joints' extent and, in body sizes (torso lengths), the top of the head above the ears
# and the fingertips and soles past the hand's and foot's landmarks: (x, y) before the joints, then after.
FRAME_MARGIN = 0.02
REACH_BEFORE, REACH_AFTER = np.array([0.1, 0.45]), np.array([0.1, 0.1])


def _frame_fit(
    points: np.ndarray, frame: tuple[int, int], canvas: tuple[int, int], body: float
) -> tuple[float, np.ndarray]:
    """Scale and offset that put the driver's frame on the canvas (orientation "video"): `points` are the
    detected frames' joints (frames, joints, 2) in the driver's pixels.

    The whole frame fits in the canvas, unless their shapes differ so much that the person would come out small
    (a landscape dance driving a portrait character: a full-height dancer became a figure a third of the
    canvas's height, floating in its middle). Then the frame is enlarged, up to covering the canvas, as far as
    the person's reach over the whole clip stays on it, and slid so it does: what overflows is frame where the
    person never goes. A side where the person meets the frame's edge (a body cut off) keeps it at the
    canvas's edge."""
    size, room = np.array(frame, float), np.array(canvas, float)
    contain, cover = float(np.min(room / size)), float(np.max(room / size))
    offset = (room - size * contain) / 2
    if not len(points) or cover <= contain:
        return contain, offset
    low = np.clip(np.percentile(points.min(axis=1), 2, axis=0) - REACH_BEFORE * body, 0, size)
    high = np.clip(np.percentile(points.max(axis=1), 98, axis=0) + REACH_AFTER * body, 0, size)
    margin = FRAME_MARGIN * room
    fit = max(contain, min(cover, float(np.min((room - 2 * margin) / np.maximum(high - low, 1.0)))))
    offset = (room - size * fit) / 2
    for axis in range(2):
        if size[axis] * fit <= room[axis]:
            continue
        # Bounds on the offset: the reach inside the margins; where the person meets the frame's edge, that edge
        # on the canvas's (past it would cut more of them off, short of it show the cut; with only a bound
        # one way, someone at a landscape frame's right edge was slid off a portrait canvas).
        if low[axis] > 0:
            first, last = margin[axis] - fit * low[axis], np.inf
        else:
            first, last = 0.0, 0.0
        edge = room[axis] - fit * size[axis]
        if high[axis] < size[axis]:
            last = min(last, room[axis] - margin[axis] - fit * high[axis])
        else:
            first, last = max(first, edge), min(last, edge)
        offset[axis] = np.clip(offset[axis], first, last) if first <= last else (first + last) / 2
    return fit, offset


# An arm comes in front of the body once its elbow and wrist are this much nearer than the torso (body sizes),
# and goes back only when under the lower bound: BlazePose's z is noisy, and a layer popping is a flicker.
ARM_ENTER_FRONT, ARM_LEAVE_FRONT = 0.25, 0.08
LEG_SWAP = 0.1


def _layering(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth order per frame from BlazePose z, with hysteresis: which arms are over the body, which leg is nearer."""
    torso = depth[:, [J["l_shoulder"], J["r_shoulder"], J["l_hip"], J["r_hip"]]].mean(axis=1)
    arms = np.zeros((len(depth), 2), bool)
    for side, (elbow, wrist) in enumerate(((J["l_elbow"], J["l_wrist"]), (J["r_elbow"], J["r_wrist"]))):
        nearer = torso - depth[:, [elbow, wrist]].mean(axis=1)
        arms[:, side] = _hysteresis(nearer, ARM_ENTER_FRONT, ARM_LEAVE_FRONT)
    left_nearer = depth[:, [J["r_knee"], J["r_ankle"]]].mean(axis=1) - depth[
        :, [J["l_knee"], J["l_ankle"]]
    ].mean(axis=1)
    return arms, _hysteresis(left_nearer, LEG_SWAP, -LEG_SWAP)


def _hysteresis(value: np.ndarray, enter: float, leave: float) -> np.ndarray:
    """True from where `value` rises above `enter` until it falls below `leave`."""
    out = np.zeros(len(value), bool)
    state = bool(value[0] > (enter + leave) / 2) if len(value) else False
    for i, v in enumerate(value):
        if state and v < leave:
            state = False
        elif not state and v > enter:
            state = True
        out[i] = state
    return out


def _facing(xy: np.ndarray, threshold: float = 0.12, hold: int = 3) -> np.ndarray:
    """+1 while the driver faces the camera, -1 while turned away; hysteresis keeps it from flickering."""
    spread = xy[:, J["l_shoulder"], 0] - xy[:, J["r_shoulder"], 0]
    torso = np.linalg.norm(xy[:, J["neck"]] - xy[:, J["pelvis"]], axis=1)
    signed = spread / np.maximum(torso, 1e-6)
    out = np.ones(len(xy), int)
    state, pending = (1 if signed[0] >= 0 else -1), 0
    for i, value in enumerate(signed):
        if value * state < -threshold:
            pending += 1
            if pending >= hold:
                state, pending = -state, 0
                out[max(0, i - hold + 1) : i + 1] = state
        else:
            pending = 0
        out[i] = state
    return out


def _smooth(values: np.ndarray, fps: float, seconds: float = 1.0) -> np.ndarray:
    """Moving median then mean over about `seconds`: body size should drift, never twitch."""
    n = max(1, int(round(fps * seconds)) | 1)
    if len(values) < 3:
        return values.copy()
    pad = np.pad(values, n // 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, n)
    median = np.median(windows, axis=1)
    pad = np.pad(median, n // 2, mode="edge")
    return np.convolve(pad, np.ones(n) / n, mode="valid")
