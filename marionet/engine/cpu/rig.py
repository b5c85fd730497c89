"""Stage 2, character: the image cut into a refined person mask, a filled background, a skeleton and body parts.

The skeleton is AnimatedDrawings-style: joints derived from BlazePose landmarks, bones in forward-kinematics
order. Each body part is a layer of the character's own pixels, skinned to one bone, with a rounded cap over
its parent joint so bending never opens a gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from marionet.engine.cpu import pose as bp

if TYPE_CHECKING:
    from marionet.engine.cpu.mesh import CharacterMesh

# Joints of the rig, in the order of JOINT_NAMES.
JOINT_NAMES = (
    "pelvis", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist", "l_hand",
    "r_shoulder", "r_elbow", "r_wrist", "r_hand",
    "l_hip", "l_knee", "l_ankle", "l_foot",
    "r_hip", "r_knee", "r_ankle", "r_foot",
)  # fmt: skip
J = {name: i for i, name in enumerate(JOINT_NAMES)}
# Landmark(s) each joint is the mean of.
JOINT_LANDMARKS = (
    (bp.L_HIP, bp.R_HIP), (bp.L_SHOULDER, bp.R_SHOULDER), (bp.L_EAR, bp.R_EAR),
    (bp.L_SHOULDER,), (bp.L_ELBOW,), (bp.L_WRIST,), (bp.L_INDEX,),
    (bp.R_SHOULDER,), (bp.R_ELBOW,), (bp.R_WRIST,), (bp.R_INDEX,),
    (bp.L_HIP,), (bp.L_KNEE,), (bp.L_ANKLE,), (bp.L_FOOT,),
    (bp.R_HIP,), (bp.R_KNEE,), (bp.R_ANKLE,), (bp.R_FOOT,),
)  # fmt: skip
# Bones (parent joint, child joint) in forward-kinematics order: every parent is placed before its children.
BONES = (
    (J["pelvis"], J["neck"]), (J["neck"], J["head"]),
    (J["neck"], J["l_shoulder"]), (J["l_shoulder"], J["l_elbow"]), (J["l_elbow"], J["l_wrist"]),
    (J["l_wrist"], J["l_hand"]),
    (J["neck"], J["r_shoulder"]), (J["r_shoulder"], J["r_elbow"]), (J["r_elbow"], J["r_wrist"]),
    (J["r_wrist"], J["r_hand"]),
    (J["pelvis"], J["l_hip"]), (J["l_hip"], J["l_knee"]), (J["l_knee"], J["l_ankle"]), (J["l_ankle"], J["l_foot"]),
    (J["pelvis"], J["r_hip"]), (J["r_hip"], J["r_knee"]), (J["r_knee"], J["r_ankle"]), (J["r_ankle"], J["r_foot"]),
)  # fmt: skip
# Left/right joint swap (a turned-around driver's left arm drives the character's right arm in image mode).
MIRROR_JOINTS = np.array(
    [J[n.replace("l_", "R_").replace("r_", "l_").replace("R_", "r_")] for n in JOINT_NAMES]
)


@dataclass(frozen=True)
class PartSpec:
    """A body part: its bone (proximal joint, distal joint) and the joint its segment reaches to for labelling."""

    name: str
    start: int
    end: int
    reach: int
    kind: str  # "torso", "head", "arm" or "leg"


PARTS = (
    PartSpec("torso", J["pelvis"], J["neck"], J["neck"], "torso"),
    PartSpec("head", J["neck"], J["head"], J["head"], "head"),
    PartSpec("l_upper_arm", J["l_shoulder"], J["l_elbow"], J["l_elbow"], "arm"),
    PartSpec("l_forearm", J["l_elbow"], J["l_wrist"], J["l_hand"], "arm"),
    PartSpec("r_upper_arm", J["r_shoulder"], J["r_elbow"], J["r_elbow"], "arm"),
    PartSpec("r_forearm", J["r_elbow"], J["r_wrist"], J["r_hand"], "arm"),
    PartSpec("l_thigh", J["l_hip"], J["l_knee"], J["l_knee"], "leg"),
    PartSpec("l_shin", J["l_knee"], J["l_ankle"], J["l_foot"], "leg"),
    PartSpec("r_thigh", J["r_hip"], J["r_knee"], J["r_knee"], "leg"),
    PartSpec("r_shin", J["r_knee"], J["r_ankle"], J["r_foot"], "leg"),
)


def joints_from_landmarks(keypoints: np.ndarray) -> np.ndarray:
    """(..., 33, 4) BlazePose landmarks -> (..., joints, 4) rig joints (x, y, z, visibility)."""
    out = np.stack([keypoints[..., list(idx), :].mean(axis=-2) for idx in JOINT_LANDMARKS], axis=-2)
    for i, idx in enumerate(JOINT_LANDMARKS):
        if len(idx) > 1:
            out[..., i, 3] = keypoints[..., list(idx), 3].min(axis=-1)
    return out


@dataclass
class PartLayer:
    """One part's pixels: premultiplied RGBA crop (uint8) at `origin` (x, y) in canvas pixels."""

    spec: PartSpec
    rgba: np.ndarray
    origin: tuple[int, int]
    axis: np.ndarray  # unit rest direction of the part's bone, canvas pixels


@dataclass
class CharacterRig:
    """The character at output-canvas scale: filled background, rest joints, bone lengths and part layers."""

    background: np.ndarray  # (H, W, 3) uint8, the image with the person removed
    joints: np.ndarray  # (joints, 2) rest positions in canvas pixels
    visibility: np.ndarray  # (joints,) BlazePose visibility of each rest joint
    bone_lengths: np.ndarray  # (bones,) canvas pixels
    parts: list[PartLayer]  # the rigid part layers; empty when the mesh is built instead
    facing: int  # +1 facing the camera (left shoulder on screen right), -1 turned away
    size: float  # body size in canvas pixels (pelvis-neck distance)
    cut_at_bottom: bool  # the image crops the person at its bottom edge (a half-body portrait)
    mesh: CharacterMesh | None = None  # the skinned triangle mesh, when the mesh renderer is used

    @property
    def canvas_size(self) -> tuple[int, int]:
        height, width = self.background.shape[:2]
        return width, height


# A hinge joint (elbow, knee) the detector put off its limb, outside the silhouette, moves to the limb's middle
# across, when the limb is found within HINGE_REACH body sizes of it and is at most HINGE_WIDTH body sizes wide
# there (wider: the limb lies against the body, or under a dress, and its middle cannot be told).
HINGES = (("l_elbow", "l_wrist"), ("r_elbow", "r_wrist"), ("l_knee", "l_ankle"), ("r_knee", "r_ankle"))
HINGE_REACH = 0.25
HINGE_WIDTH = 0.3


def centre_hinges(joints: np.ndarray, alpha: np.ndarray, size: float) -> np.ndarray:
    """The rest joints with each elbow and knee that lies outside the silhouette moved to the middle of its
    limb's cross-section (across the bone below it). BlazePose puts a knee under a flared dress beside the leg;
    the leg then bends about a point off itself and its two segments part at the knee. A joint on its limb
    stays: across a bent elbow lies the upper arm, not a cross-section."""
    out = joints.copy()
    reach, widest = HINGE_REACH * size, HINGE_WIDTH * size
    # Far enough to see the whole of a run that starts within reach.
    steps = np.arange(-np.ceil(reach + widest), np.ceil(reach + widest) + 1)
    height, width = alpha.shape
    for hinge, child in HINGES:
        joint = joints[J[hinge]]
        along = joints[J[child]] - joint
        x, y = int(round(joint[0])), int(round(joint[1]))
        # Past the image's edge a joint is a guess with nothing to check it against.
        if not (0 <= x < width and 0 <= y < height) or alpha[y, x] > 0.5 or np.linalg.norm(along) < 1:
            continue
        across = unit_vector(np.array([-along[1], along[0]]))
        points = joint + steps[:, None] * across
        inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
        xi, yi = pixel_of(points, alpha.shape)
        limb = inside & (alpha[yi, xi] > 0.5)
        # Runs of limb along the line: starts and ends (exclusive), then the run nearest the joint.
        edges = np.diff(np.concatenate([[0], limb.astype(np.int8), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        if not starts.size:
            continue
        centre = len(steps) // 2
        gaps = np.maximum(0, np.maximum(starts - centre, centre - (ends - 1)))
        run = int(np.argmin(gaps))
        # A run cut by the search's ends or the image's edge has no known middle.
        whole = starts[run] > 0 and ends[run] < len(steps) and inside[starts[run] - 1] and inside[ends[run]]
        if whole and gaps[run] <= reach and ends[run] - starts[run] <= widest:
            out[J[hinge]] = joint + (steps[starts[run]] + steps[ends[run] - 1]) / 2 * across
    return out


def build_character(
    image_rgb: np.ndarray,
    image_pose: bp.ImagePose,
    canvas: tuple[int, int],
    mesh_cells: float | None = None,
    opacity: np.ndarray | None = None,
) -> CharacterRig:
    """Cut the person out of the image, fill the background, split the person into parts and, with
    `mesh_cells` (grid cells per body size), build the skinned triangle mesh.

    `opacity` (0..1, the image's shape) is a cut-out's own transparency, the image laid on white: everything
    it shows is lifted off the background, also the pale soft edges and glows the segmentation calls scenery
    (left there, they would stay behind as a ghost of the image's pose)."""
    width, height = canvas
    sx, sy = width / image_rgb.shape[1], height / image_rgb.shape[0]
    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(image_rgb, (width, height), interpolation=interp)
    soft = cv2.resize(image_pose.mask, (width, height), interpolation=cv2.INTER_LINEAR)
    alpha = refine_mask(rgb, soft)
    keypoints = image_pose.keypoints.copy()
    keypoints[:, 0] *= sx
    keypoints[:, 1] *= sy
    keypoints[:, 2] *= sx  # BlazePose's z is on the x scale
    joints4 = joints_from_landmarks(keypoints)
    joints = joints4[:, :2].astype(np.float64)
    visibility = unconfirmed_hands_unseen(joints, joints4[:, 3], image_pose.hands, canvas)
    size = max(float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]])), 1.0)
    joints = centre_hinges(joints, alpha, size)
    lengths = limb_lengths(joints, joints4[:, 2], visibility, (width, height))
    shown = soft  # what is lifted off the background: the segmentation's, and all a cut-out shows
    if opacity is not None:
        shown = np.maximum(soft, cv2.resize(opacity, (width, height), interpolation=cv2.INTER_LINEAR))
    background = fill_background(rgb, alpha, shown)
    hands = hand_masks({side: hand * (sx, sy) for side, hand in image_pose.hands.items()}, alpha, rgb)
    specs, labels, beneath = label_parts(
        alpha, joints, visibility, size, depth=joints4[:, 2], rgb=rgb, hands=hands
    )
    collar_to_torso(rgb, labels, specs, joints)
    over = skirt_over_thighs(rgb, alpha, labels, specs, joints)
    facing = 1 if joints[J["l_shoulder"], 0] >= joints[J["r_shoulder"], 0] else -1
    mesh, parts = None, []
    if mesh_cells:
        from marionet.engine.cpu.mesh import build_mesh

        cell = max(4.0, size / mesh_cells)
        mesh = build_mesh(rgb, alpha, joints, specs, labels, size, cell, beneath, over)
    else:
        parts = split_parts(rgb, alpha, joints, specs, labels)
    return CharacterRig(
        background=background,
        joints=joints,
        visibility=visibility,
        bone_lengths=lengths,
        parts=parts,
        facing=facing,
        size=size,
        cut_at_bottom=bool(alpha[-2:].max() > 0.5),
        mesh=mesh,
    )


def unconfirmed_hands_unseen(
    joints: np.ndarray, visibility: np.ndarray, hands: dict[str, np.ndarray], canvas: tuple[int, int]
) -> np.ndarray:
    """`visibility` with a wrist and hand marked unseen where the elbow is outside the picture and MediaPipe
    Hands found no hand at that wrist. In a head-and-shoulders picture BlazePose still places the arms, and it
    put one raised, its wrist on the elf's ear (visibility 0.84) with the elbow below the picture: her ear and
    hair became a forearm, and flapped with the driver's arm. A hand raised into a close picture from below
    it is a hand MediaPipe Hands finds."""
    width, height = canvas
    out = visibility.copy()
    for side in ("left", "right"):
        elbow = joints[J[f"{side[0]}_elbow"]]
        if side not in hands and not (0 <= elbow[0] < width and 0 <= elbow[1] < height):
            out[[J[f"{side[0]}_wrist"], J[f"{side[0]}_hand"]]] = 0.0
    return out


# A limb the picture shows pointing at the camera is short in it, and a character drawn with that length in
# every pose has a stump where the driver stretches an arm out (the dancer's own frame, elbow forward, as the
# character: her upper arm 0.54 of its length in her video). What it would be: the same bone on the other side,
# or the bone it joins in the limb times LIMB_RATIOS (the least a person's upper arm is of their forearm and so
# on; the shared dancer's are 1.01-1.07 and 1.13, the cartoon's 1.0-1.04 and 1.05-1.14), the longer, each only
# where both its joints are seen; but never longer than BlazePose's depth allows (its length with z, which
# reads a limb in the picture's plane as about as long as it is drawn).
LIMB_RATIOS = {
    ("elbow", "wrist"): 0.85,
    ("wrist", "elbow"): 0.8,
    ("knee", "ankle"): 0.9,
    ("ankle", "knee"): 0.75,
}
# Only a bone drawn shorter than this share of that length is given it (it points more than 48 degrees out of
# the picture): BlazePose's readings of a drawn character's two sides disagree by up to a quarter where they are
# drawn alike (the elf's forearms read 0.40 and 0.52 of her torso), and a limb lengthened on that noise renders
# no better and reads worse (the half pair re-encoded: 11.8-17.0 deg against 11.3-13.8).
FORESHORTENED = 2 / 3
SEEN = 0.5  # BlazePose visibility from which a joint's place is trusted to measure a bone


def limb_lengths(
    joints: np.ndarray, depth: np.ndarray, visibility: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """(bones,) the character's bone lengths in canvas pixels: as drawn, but a limb bone drawn far shorter than
    the picture and its depth say it is, is made that long (see LIMB_RATIOS). `depth` is BlazePose's z of each
    joint on the x scale, `shape` the canvas (width, height)."""
    drawn = np.array([np.linalg.norm(joints[c] - joints[p]) for p, c in BONES])
    with_depth = np.array(
        [np.linalg.norm(np.append(joints[c] - joints[p], depth[c] - depth[p])) for p, c in BONES]
    )
    width, height = shape
    inside = (joints[:, 0] >= 0) & (joints[:, 0] < width) & (joints[:, 1] >= 0) & (joints[:, 1] < height)
    seen = inside & (visibility >= SEEN)
    bone = {JOINT_NAMES[c]: b for b, (p, c) in enumerate(BONES)}
    measured = {b: bool(seen[p] and seen[c]) for b, (p, c) in enumerate(BONES)}
    out = drawn.copy()
    for side, other in (("l_", "r_"), ("r_", "l_")):
        for (end, partner), ratio in LIMB_RATIOS.items():
            b, mirror, joined = bone[side + end], bone[other + end], bone[side + partner]
            if not measured[b]:
                continue
            candidates = [drawn[mirror]] if measured[mirror] else []
            if measured[joined]:
                candidates.append(ratio * drawn[joined])
            if candidates:
                length = min(max(candidates), with_depth[b])
                if drawn[b] < FORESHORTENED * length:
                    out[b] = length
    return out


def refine_mask(rgb: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Segmentation snapped to the image's edges (guided filter), one body, its doubtful holes filled: alpha 0..1."""
    binary = (soft > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count > 1:
        # Keep the body and any sizeable piece (a detached hand or hair lock), drop specks.
        biggest = stats[1:, cv2.CC_STAT_AREA].max()
        keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 0.02 * biggest]
        binary = np.isin(labels, keep).astype(np.uint8)
    binary |= _body_holes(binary, soft)
    alpha = binary.astype(np.float32)
    if hasattr(cv2, "ximgproc"):
        radius = max(2, round(min(rgb.shape[:2]) / 240))
        alpha = cv2.ximgproc.guidedFilter(rgb, alpha, radius, 1e-3)
    else:
        alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)
    return np.clip(alpha, 0.0, 1.0)


def _body_holes(binary: np.ndarray, soft: np.ndarray, min_doubt: float = 0.1) -> np.ndarray:
    """Pixels the segmentation dropped inside the body: regions no image edge reaches where it was not sure of
    the background (a dark shirt, a translucent sleeve). The sky framed by a hand on the hip or at the chin
    scores near 0 and stays background: filled, it would fly off with the arm."""
    outside = np.pad(binary, 1)
    cv2.floodFill(outside, None, (0, 0), 1)
    enclosed = (1 - outside[1:-1, 1:-1]).astype(np.uint8)
    count, labels = cv2.connectedComponents(enclosed, connectivity=4)
    if count <= 1:
        return enclosed
    doubt = np.bincount(labels.ravel(), weights=soft.ravel(), minlength=count)
    doubt /= np.maximum(np.bincount(labels.ravel(), minlength=count), 1)
    keep = doubt >= min_doubt
    keep[0] = False
    return keep[labels].astype(np.uint8)


# The bays of the hole (between an arm and the body, under a raised sleeve) are closed over this many of its
# growths, and what is lighter there than the scenery around it by GHOST_LIGHT (Lab lightness, 0..255) is taken
# out with the person: the cartoon's glowing sleeve hems, which the segmentation calls scenery, were left as two
# bright crescents that hung in the sky wherever her arms moved away.
BAY_REACH = 2
GHOST_LIGHT = 20


def fill_background(rgb: np.ndarray, alpha: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Remove the person and their halo, filling the hole from the scenery around it: across each row where the
    hole is narrow (row_fill), smoothly from all around (push-pull interpolation) where it is wide.

    The hole is generous: glows and soft edges left behind would read as a ghost of the image's pose, and so
    would a light patch in the bays of the hole (see BAY_REACH).
    """
    height, width = rgb.shape[:2]
    grow = max(3, round(min(height, width) / 28))
    hole = ((alpha > 0.02) | (soft > 0.05)).astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    box = grown_box(hole, grow)
    hole[box] = cv2.dilate(hole[box], disc)
    hole |= _light_in_bays(rgb, hole, grow)
    filled = row_fill(rgb, hole, push_pull_fill(rgb, 1.0 - hole.astype(np.float32)), grow)
    blend = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), grow / 3)[..., None]
    blend = np.maximum(blend, hole[..., None].astype(np.float32))
    return (rgb * (1 - blend) + filled * blend).astype(np.uint8)


def _light_in_bays(rgb: np.ndarray, hole: np.ndarray, grow: int) -> np.ndarray:
    """(h, w) uint8: the pixels in the hole's bays lighter than the fill of the bays would be, grown by a third
    of `grow` (the hole's growth) to take their soft edges too. The bays are found at half size: they are wide."""
    reach = BAY_REACH * grow
    box = grown_box(hole, reach)
    part = hole[box]
    small = cv2.resize(
        part, (max(1, part.shape[1] // 2), max(1, part.shape[0] // 2)), interpolation=cv2.INTER_AREA
    )
    half = max(1, reach // 2)
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * half + 1, 2 * half + 1))
    closed = cv2.morphologyEx(np.pad(small, half), cv2.MORPH_CLOSE, close)[half:-half, half:-half]
    closed = cv2.resize(closed, part.shape[::-1], interpolation=cv2.INTER_NEAREST)
    bays = np.zeros_like(hole)
    bays[box] = closed & (1 - part)
    if not bays.any():
        return bays
    guess = push_pull_fill(rgb, 1.0 - (hole | bays).astype(np.float32)).astype(np.uint8)
    light = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0].astype(np.int16)
    expected = cv2.cvtColor(guess, cv2.COLOR_RGB2LAB)[..., 0].astype(np.int16)
    ghost = (bays > 0) & (light - expected > GHOST_LIGHT)
    edge = max(1, grow // 3)
    return cv2.dilate(
        ghost.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge + 1,) * 2)
    )


# A hole's row is filled by interpolating between the scenery at its two ends, with a weight that halves where
# the row crosses ROW_REACH of the picture's short side (push-pull fills the rest): a standing person's hole is
# narrow across, and the scenery's lines behind them (a horizon, a road's edge, a desk) run across too. Filled
# from all around, the cartoon's legs left two pale columns of the lit road through the dark horizon, shaped
# like legs where hers had been (the eval's reading of the dance steadied: jitter ratio 2.67 -> 2.10). The
# ends' colours are the scenery's, averaged over ROW_BLUR of the hole's growth; the rows' values are then
# smoothed down the picture over ROW_SMOOTH of it, so no single row's end streaks across.
ROW_REACH = 0.25
ROW_BLUR = 1 / 6
ROW_SMOOTH = 1 / 4


def row_fill(rgb: np.ndarray, hole: np.ndarray, around: np.ndarray, grow: int) -> np.ndarray:
    """(h, w, 3) float32: the `hole` (h, w, nonzero inside) of `rgb` filled along its rows, blended with `around`
    (a fill from all around it) where the rows' gaps are wide or reach the picture's edge; `grow` is the hole's
    growth in pixels (its scale)."""
    height, width = hole.shape
    inside = hole > 0
    scenery = (~inside).astype(np.float32)
    blur = max(1.0, ROW_BLUR * grow)
    colour = cv2.GaussianBlur(rgb.astype(np.float32) * scenery[..., None], (0, 0), blur)
    colour /= np.maximum(cv2.GaussianBlur(scenery, (0, 0), blur), 1e-3)[..., None]
    columns = np.arange(width)
    left = np.maximum.accumulate(np.where(inside, -1, columns), axis=1)
    right = np.minimum.accumulate(np.where(inside, width, columns)[:, ::-1], axis=1)[:, ::-1]
    bounded = inside & (left >= 0) & (right < width)
    left, right = np.clip(left, 0, width - 1), np.clip(right, 0, width - 1)
    rows = np.arange(height)[:, None]
    gap = np.maximum(right - left, 1)
    t = ((columns - left) / gap).astype(np.float32)[..., None]
    value = colour[rows, left] * (1 - t) + colour[rows, right] * t
    weight = (bounded / (1 + (gap / (ROW_REACH * min(height, width))) ** 2)).astype(np.float32)
    smooth = max(1.0, ROW_SMOOTH * grow)
    spread = cv2.GaussianBlur(weight, (1, 0), sigmaX=0, sigmaY=smooth)
    value = cv2.GaussianBlur(value * weight[..., None], (1, 0), sigmaX=0, sigmaY=smooth)
    value /= np.maximum(spread, 1e-3)[..., None]
    spread = spread[..., None]
    return value * spread + around.astype(np.float32) * (1 - spread)


def grown_box(mask: np.ndarray, reach: int) -> tuple[slice, slice]:
    """The bounding box of a mask's nonzero pixels grown by `reach` (clipped to the mask): a dilation by at
    most `reach` done inside it gives the same pixels as over the whole mask, for a fraction of the work."""
    x, y, w, h = cv2.boundingRect(mask)
    return slice(max(0, y - reach), y + h + reach), slice(max(0, x - reach), x + w + reach)


def push_pull_fill(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill pixels where `valid` is 0 with a smooth interpolation of the valid ones (pull down, push up)."""
    colour = [rgb.astype(np.float32) * valid[..., None]]
    weight = [valid.astype(np.float32)]
    while min(weight[-1].shape) > 4:
        colour.append(cv2.pyrDown(colour[-1]))
        weight.append(cv2.pyrDown(weight[-1]))
    # Where even the coarsest level saw nothing valid (a long hole lit from one end), the valid pixels' mean.
    total = max(float(weight[-1].sum()), 1e-6)
    mean = colour[-1].reshape(-1, 3).sum(axis=0) / total
    filled = np.where(
        weight[-1][..., None] > 1e-6, colour[-1] / np.maximum(weight[-1], 1e-6)[..., None], mean
    )
    for level in range(len(colour) - 2, -1, -1):
        size = colour[level].shape[1::-1]
        coarse = cv2.pyrUp(filled, dstsize=size)
        w = weight[level][..., None]
        own = colour[level] / np.maximum(w, 1e-6)
        trust = np.clip(w * 4.0, 0.0, 1.0)
        filled = own * trust + coarse * (1.0 - trust)
    return np.clip(filled, 0, 255)


def visible_parts(visibility: np.ndarray) -> list[PartSpec]:
    """The parts the image shows: torso and head always, a limb when both its joints are seen."""
    return [
        s for s in PARTS if s.kind in ("torso", "head") or min(visibility[s.start], visibility[s.end]) > 0.3
    ]


def shoulder_width(joints: np.ndarray) -> float:
    return float(np.linalg.norm(joints[J["l_shoulder"]] - joints[J["r_shoulder"]]))


def hip_width(joints: np.ndarray) -> float:
    return float(np.linalg.norm(joints[J["l_hip"]] - joints[J["r_hip"]]))


def head_radius(joints: np.ndarray) -> float:
    """The head's reach around its joint: generous, so hair belongs to the head even where a hand touched it."""
    return max(
        0.8 * float(np.linalg.norm(joints[J["neck"]] - joints[J["head"]])), 0.35 * shoulder_width(joints)
    )


def part_thickness(labels: np.ndarray, index: int, spec: PartSpec, joints: np.ndarray) -> float:
    """A part's mean width: its pixel count over the length of its segment (canvas pixels)."""
    length = max(float(np.linalg.norm(joints[spec.reach] - joints[spec.start])), 1.0)
    return float((labels == index).sum()) / length


def cap_radius(labels: np.ndarray, index: int, spec: PartSpec, joints: np.ndarray) -> int:
    """Radius of the disc around a limb's proximal joint that travels with the limb and covers the joint."""
    return int(round(0.55 * max(3.0, part_thickness(labels, index, spec, joints))))


# MediaPipe Hands' landmarks: the palm's outline and each finger's joints from its base to its tip.
HAND_PALM = (0, 1, 5, 9, 13, 17)
HAND_FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
FINGER_WIDTH = 0.3  # a finger's width drawn, in palm lengths (wrist to the middle finger's base): generous
FINGER_CORE = 0.1  # the line along a finger that is surely hand, in palm lengths
HAND_RING = 0.25  # the ring around a hand whose colours tell GrabCut what is not hand, in palm lengths
ARM_CORE = 0.12  # half an arm's width, in shoulder widths: the band around its bone that is surely arm
SLIVER = 3  # pixels: pieces thinner than this never change part on colour alone
IN_FRONT = 0.1  # body sizes nearer the camera (BlazePose z) a wrist must be to lie over a body part


def arm_core(joints: np.ndarray, size: float) -> float:
    """Half an arm's width in canvas pixels: the band around its bone that is surely arm."""
    return ARM_CORE * max(shoulder_width(joints), 0.5 * size)


def part_costs(
    points: np.ndarray, specs: list[PartSpec], joints: np.ndarray, size: float, within_reach: bool = True
) -> np.ndarray:
    """(parts, points) cost of giving each point to each part: distance to the part's bone minus its thickness.
    A limb is kept from pixels beyond its reach (a skirt beside a leg) unless `within_reach` is False."""
    shoulders, hips_width = shoulder_width(joints), hip_width(joints)
    torso_radius = 0.4 * max(shoulders, 0.5 * size)
    head = head_radius(joints)
    limb_core = {"arm": arm_core(joints, size), "leg": 0.3 * max(hips_width, 0.3 * size)}
    limb_reach = limb_reaches(joints, size)
    cost = np.empty((len(specs), len(points)))
    for i, spec in enumerate(specs):
        if spec.kind == "torso":
            hips = (joints[J["l_hip"]] + joints[J["r_hip"]]) / 2
            cost[i] = bp.segment_distance(points, hips, joints[J["neck"]]) - torso_radius
        elif spec.kind == "head":
            cost[i] = np.linalg.norm(points - joints[J["head"]], axis=1) - head
        else:
            # A limb claims only pixels within its own thickness; skirts, capes and sleeves stay on the body.
            distance = bp.segment_distance(points, joints[spec.start], joints[spec.reach])
            reach = limb_reach[spec.kind]
            beyond = (distance > reach) if within_reach else np.zeros(len(points), bool)
            cost[i] = np.where(beyond, distance + 4 * size, distance - limb_core[spec.kind])
    return cost


def limb_reaches(joints: np.ndarray, size: float) -> dict[str, float]:
    """How far from its bone a limb may claim pixels, by kind (canvas pixels)."""
    return {
        "arm": 0.45 * max(shoulder_width(joints), 0.5 * size),
        "leg": 0.7 * max(hip_width(joints), 0.3 * size),
    }


def label_parts(
    alpha: np.ndarray,
    joints: np.ndarray,
    visibility: np.ndarray,
    size: float,
    depth: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    hands: dict[str, np.ndarray] | None = None,
) -> tuple[list[PartSpec], np.ndarray, np.ndarray]:
    """Each person pixel's part (index into the returned specs; -1 off the person), and beneath a forearm held
    in front of the head or torso, the part it hides (-1 elsewhere).

    With the joints' `depth` (BlazePose z, nearer is smaller), a forearm held in front of the face or the
    body keeps the pixels along its bone, hand included: a hand at the chin or on the hip leaves with the arm.
    With the image's `rgb`, the seam between a forearm and the part it touches follows colour and edges.
    With `hands` (forearm name -> mask of its hand, from hand_masks), a hand seen is its forearm's whatever it
    lies over, and what it lies over is filled beneath it.
    """
    height, width = alpha.shape
    ys, xs = np.nonzero(alpha > 0.02)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    specs = visible_parts(visibility)
    cost = part_costs(points, specs, joints, size)
    plain_cost = cost.copy()
    plain_label = np.argmin(cost, axis=0)
    raised = np.zeros(len(points), bool)
    if depth is not None:
        raised = _forearms_in_front(cost, points, specs, joints, depth, size)
    label = np.argmin(cost, axis=0)
    given_back = np.zeros(len(points), bool)
    if rgb is not None:
        taken, given_back = _hands_by_colour(rgb, points, label, plain_cost, specs, joints, size)
        raised |= taken
    # A piece far from the part it fell to (a claw past the hand's reach) goes to its plainly nearest part,
    # limbs' reach aside. (Taking the reach penalty off every cost above 2 body sizes, as this once did, also
    # lowered the costs of parts that are simply far: a sliver at the cartoon's knee went to her head.)
    stray = (cost[label, np.arange(len(points))] > 0.5 * size) & ~given_back
    if stray.any():
        plain = part_costs(points[stray], specs, joints, size, within_reach=False)
        label[stray] = np.argmin(plain, axis=0)
    for i, spec in enumerate(specs):
        if hands is not None and spec.name in hands:
            hand = hands[spec.name][ys, xs]
            label[hand] = i
            raised |= hand
    labels = np.full((height, width), -1, np.int32)
    labels[ys, xs] = label
    if depth is not None:
        _edges_to_forearms(labels, specs, alpha)
    body = np.array([spec.kind in ("torso", "head") for spec in specs])
    taken = raised & body[plain_label] & ~body[label]
    beneath = np.full((height, width), -1, np.int32)
    beneath[ys[taken], xs[taken]] = plain_label[taken]
    return specs, labels, beneath


# A skirt: clothing over the thighs wider than a leg. Thigh pixels of the clothing's colour (the torso's below
# the hips), not the leg's (the shin's), go with the body; the leg under them is drawn, beneath, from the knee's
# colours. As pieces of the legs, a skirt tore along the inner thigh into shards whenever the legs moved apart.
# The thigh's half-width drawn under a skirt, at the hip and at the knee, in shin widths:
LEG_BAND = (0.85, 0.6)
LEG_MARGIN = 1.35  # how much wider than that band a leg may show, below a skirt
SKIRT_WIDER = 0.05  # clothing-coloured thigh pixels past both legs' bands, as a share of them: a skirt
# How surely (balanced accuracy on their own samples) the colours must tell the clothing from the leg:
SKIRT_CONTRAST = 0.95


def skirt_over_thighs(
    rgb: np.ndarray, alpha: np.ndarray, labels: np.ndarray, specs: list[PartSpec], joints: np.ndarray
) -> np.ndarray:
    """Find a skirt over the thighs; relabel `labels` in place. Returns `over`: for each pixel of a thigh's
    covered stretch, the part drawn over it (the torso, with the pixel's own colours); -1 elsewhere.

    The skirt is the thigh's pixels whose colour fits the torso's pixels below the hips better than the shin's,
    where those two colour models surely differ, and where some of it reaches past both legs' bands (leg-wide
    bands along the thighs' bones). Past a band it becomes the torso's. Inside, it stays the thigh's (its
    skinning follows the bone) while the torso also draws it, over the thigh, which mesh.py fills with the
    leg's colours. Trousers (the clothing is the leg's colour), tight shorts (nothing past the legs) and
    clothing whose colours cannot be told from the legs' are left as they are; loose shorts count as a skirt.
    """
    over = np.full(labels.shape, -1, np.int32)
    index = {spec.name: i for i, spec in enumerate(specs)}
    if "torso" not in index:
        return over
    torso = index["torso"]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).astype(np.float64)
    person = alpha > 0.5
    down = unit_vector(joints[J["pelvis"]] - joints[J["neck"]])
    across = (np.arange(labels.shape[1]) - joints[J["pelvis"], 0]) * down[0]
    below_hips = (np.arange(labels.shape[0])[:, None] - joints[J["pelvis"], 1]) * down[1] + across > 0
    clothing_samples = lab[person & below_hips & (labels == torso)]
    clothing = _colour_model(clothing_samples)
    if clothing is None:
        return over
    legs = []
    for side in ("l", "r"):
        thigh, shin = index.get(f"{side}_thigh"), index.get(f"{side}_shin")
        if thigh is None or shin is None:
            continue
        leg_samples = lab[person & (labels == shin)]
        leg = _colour_model(leg_samples)
        if leg is None or _contrast(clothing, leg, clothing_samples, leg_samples) < SKIRT_CONTRAST:
            continue
        hip, knee = joints[specs[thigh].start], joints[specs[thigh].end]
        width = part_thickness(labels, shin, specs[shin], joints)
        band = _tapered_band(hip, knee, LEG_BAND[0] * width, LEG_BAND[1] * width, labels.shape)
        candidates = person & ((labels == thigh) | ((labels == torso) & band & below_hips))
        skirt = np.zeros_like(person)
        skirt[candidates] = _log_likelihood(clothing, lab[candidates]) > _log_likelihood(leg, lab[candidates])
        legs.append((thigh, width, hip, knee, band, skirt))
    if not legs:
        return over
    # One skirt over both legs, judged on both: held together, the legs leave little of it past either one.
    bands = np.logical_or.reduce([leg[4] for leg in legs])
    past = np.logical_or.reduce([leg[5] & (labels == leg[0]) for leg in legs]) & ~bands
    if past.sum() < SKIRT_WIDER * bands.sum():
        return over
    inner = cv2.erode(person.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    for thigh, width, hip, knee, band, skirt in legs:
        wide = skirt & ~band & (labels == thigh)
        # Past the leg's own width nothing is leg: the skirt, and what glows or shows through its edge.
        near = _tapered_band(hip, knee, *(LEG_MARGIN * LEG_BAND[k] * width for k in (0, 1)), labels.shape)
        labels[wide | ((labels == thigh) & ~near)] = torso
        # A thin sliver left past the band is the skirt's edge blended with what is behind it: a thread of it
        # went off with the leg.
        left = ((labels == thigh) & ~band).astype(np.uint8)
        labels[(left > 0) & (cv2.morphologyEx(left, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) == 0)] = torso
        # The skirt over the band, its pattern's spots (a print's stars) closed in: a spot left to the thigh
        # would travel on the leg and leave its shape as a hole in the skirt.
        gap = max(3, int(round(0.25 * width))) | 1
        closed = cv2.morphologyEx(skirt.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((gap, gap), np.uint8))
        over_leg = (_without_holes(closed) > 0) & band & person & np.isin(labels, (thigh, torso))
        # The skirt's own soft outline stays the skirt's: a leg drawn opaque under it showed as a brown fringe.
        labels[over_leg & ~inner] = torso
        covered = over_leg & inner
        labels[covered] = thigh
        over[covered] = torso
    return over


FACE_OVAL = (0.85, 0.45)  # the face's half-length along the neck's line and half-width, in head radii
# Clothing by the neck (collar_to_torso): from COLLAR_JAW head radii below the head joint (along the neck's line),
# a colour COLLAR_MARGIN nearer the body's than the head's (8-bit Lab units, compared in bins of COLOUR_BIN: a
# bin's colours are at most 3.5 apart).
COLLAR_JAW = 0.5
COLLAR_MARGIN = 6.0
COLOUR_BIN = 4


def head_axis(joints: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """The head joint (between the ears), the head's radius and the unit direction from it to the neck: the
    frame the face oval and the collar's jaw line are measured in."""
    centre = joints[J["head"]]
    return centre, head_radius(joints), unit_vector(joints[J["neck"]] - centre)


def face_oval(joints: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bool mask of an oval around the face: centred on the head joint (between the ears), FACE_OVAL[0] head
    radii along the neck's line and FACE_OVAL[1] across it; it reaches the jaw but not the neck and shoulders."""
    centre, radius, down = head_axis(joints)
    reach = FACE_OVAL[0] * radius + 1
    x0, y0 = (max(0, int(np.floor(v - reach))) for v in centre)
    x1, y1 = (
        min(shape[1], int(np.ceil(centre[0] + reach)) + 1),
        min(shape[0], int(np.ceil(centre[1] + reach)) + 1),
    )
    out = np.zeros(shape[:2], bool)
    if x0 >= x1 or y0 >= y1:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1]
    dx, dy = xs - centre[0], ys - centre[1]
    along, across = dx * down[0] + dy * down[1], dy * down[0] - dx * down[1]
    out[y0:y1, x0:x1] = (along / (FACE_OVAL[0] * radius)) ** 2 + (
        across / (FACE_OVAL[1] * radius)
    ) ** 2 <= 1.0
    return out


def collar_to_torso(rgb: np.ndarray, labels: np.ndarray, specs: list[PartSpec], joints: np.ndarray) -> None:
    """The head's pixels below its jaw and beside the face that are clothing go to the torso (`labels` changed
    in place): the head's generous reach took a strip of T-shirt along the top of the shoulders, which, carried
    rigidly with the head, stood up beside the neck as a wing. Clothing is a colour nearer the body's around
    the neck than the head's above the jaw (face and hair) by COLLAR_MARGIN; the neck's skin and hair on the
    shoulders, as near the head's, stay the head's."""
    index = {spec.name: i for i, spec in enumerate(specs)}
    if "head" not in index or "torso" not in index:
        return
    head, torso = index["head"], index["torso"]
    centre, radius, down = head_axis(joints)
    neck = joints[J["neck"]]
    ys, xs = np.nonzero(labels == head)
    offset = np.stack([xs, ys], axis=1) - centre
    along = offset @ down
    low = (along > COLLAR_JAW * radius) & ~face_oval(joints, labels.shape)[ys, xs]
    if not low.any():
        return
    above = ~low & (along <= COLLAR_JAW * radius)
    ty, tx = np.nonzero(labels == torso)
    near_neck = np.hypot(tx - neck[0], ty - neck[1]) < 2 * radius
    if above.sum() < 64 or near_neck.sum() < 64:
        return
    # Every pixel of each side counts, each distinct colour (in bins) once.
    code = _colour_codes(rgb)
    body = _nearest_colour(code[ys[low], xs[low]], code[ty[near_neck], tx[near_neck]])
    clothing = body + COLLAR_MARGIN < _nearest_colour(code[ys[low], xs[low]], code[ys[above], xs[above]])
    moved = np.zeros(labels.shape, np.uint8)
    moved[ys[low][clothing], xs[low][clothing]] = 1
    # Blended edge pixels inside the clothing go with it; specks of it in the hair stay.
    candidates = np.zeros(labels.shape, np.uint8)
    candidates[ys[low], xs[low]] = 1
    square = np.ones((3, 3), np.uint8)
    moved = cv2.morphologyEx(cv2.morphologyEx(moved, cv2.MORPH_CLOSE, square), cv2.MORPH_OPEN, square)
    labels[(moved > 0) & (candidates > 0)] = torso


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's colour as one integer: 8-bit Lab, each channel in bins of COLOUR_BIN."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab) // COLOUR_BIN
    return (lab[..., 0].astype(np.int32) << 16) | (lab[..., 1].astype(np.int32) << 8) | lab[..., 2]


def _nearest_colour(codes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each of `codes`' distance (8-bit Lab units) to the nearest colour among `reference`'s codes."""

    def lab(values: np.ndarray) -> np.ndarray:
        channels = np.stack([values >> 16, (values >> 8) & 255, values & 255], axis=1)
        return COLOUR_BIN * channels.astype(np.float32)

    distinct, back = np.unique(codes, return_inverse=True)
    targets, points = lab(np.unique(reference)), lab(distinct)
    out = np.empty(len(distinct), np.float32)
    for start in range(0, len(distinct), 512):
        chunk = points[start : start + 512]
        out[start : start + 512] = np.sqrt(((chunk[:, None] - targets[None]) ** 2).sum(-1).min(axis=1))
    return out[back.ravel()]


def _tapered_band(a: np.ndarray, b: np.ndarray, half_a: float, half_b: float, shape) -> np.ndarray:
    """Bool mask of the quadrilateral from a to b, `half_a` wide each side at a and `half_b` at b, with round ends."""
    u = unit_vector(b - a)
    n = np.array([-u[1], u[0]])
    corners = np.array([a + n * half_a, b + n * half_b, b - n * half_b, a - n * half_a])
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(corners).astype(np.int32), 1)
    cv2.circle(mask, tuple(int(round(v)) for v in b), int(round(half_b)), 1, -1)
    cv2.circle(mask, tuple(int(round(v)) for v in a), int(round(half_a)), 1, -1)
    return mask > 0


def unit_vector(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-6)


def pixel_of(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) integer indices of the pixel each point lies on, clipped to an image of `shape`."""
    xi = np.clip(np.round(points[:, 0]).astype(int), 0, shape[1] - 1)
    yi = np.clip(np.round(points[:, 1]).astype(int), 0, shape[0] - 1)
    return xi, yi


def _colour_model(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and (regularised) covariance of Lab colours; None for too few samples to tell."""
    if len(samples) < 64:
        return None
    return samples.mean(axis=0), np.cov(samples, rowvar=False) + np.eye(3) * 4.0


def _contrast(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    a_samples: np.ndarray,
    b_samples: np.ndarray,
) -> float:
    """How well the two colour models tell their own samples apart: the mean of each one's share won (0.5 is
    chance: trousers, whose clothing is the leg's colour)."""
    a_wins = (_log_likelihood(a, a_samples) > _log_likelihood(b, a_samples)).mean()
    b_wins = (_log_likelihood(b, b_samples) > _log_likelihood(a, b_samples)).mean()
    return float(a_wins + b_wins) / 2


def _log_likelihood(model: tuple[np.ndarray, np.ndarray], samples: np.ndarray) -> np.ndarray:
    mean, cov = model
    diff = samples - mean
    return -0.5 * (np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff) + np.log(np.linalg.det(cov)))


def hand_masks(
    hands: dict[str, np.ndarray], alpha: np.ndarray, rgb: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Each forearm's hand (from ImagePose.hands, canvas pixels) as a mask of the person's pixels: the palm
    and a band along each finger, so what shows between spread fingers stays with what it is.

    The band is drawn wide enough for any finger; with the image's `rgb`, GrabCut then keeps of it what
    looks like the hand (seeded by the palm and a thin line along each finger, against a ring around the
    band): the skirt's edge between the fingers of a hand on the hip stays on the skirt.
    """
    person = alpha > 0.02
    masks = {}
    for side, landmarks in hands.items():
        palm = max(float(np.linalg.norm(landmarks[bp.HAND_MIDDLE_BASE] - landmarks[0])), 1.0)
        wide = _drawn_hand(landmarks, FINGER_WIDTH * palm, alpha.shape)
        if rgb is not None:
            ring = max(2, int(round(HAND_RING * palm)))
            box = grown_box(wide, ring + 1)
            # Gaps between the bands closed first (a fist's folded fingers); colour reopens what is not hand.
            reach = max(3, int(round(FINGER_WIDTH * palm)) | 1)
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach))
            wide[box] = cv2.morphologyEx(wide[box], cv2.MORPH_CLOSE, kernel)
            state = np.full(wide[box].shape, cv2.GC_BGD, np.uint8)
            state[wide[box] > 0] = cv2.GC_PR_FGD
            state[_drawn_hand(landmarks, FINGER_CORE * palm, alpha.shape)[box] > 0] = cv2.GC_FGD
            models = np.zeros((1, 65)), np.zeros((1, 65))
            cv2.grabCut(np.ascontiguousarray(rgb[box]), state, None, *models, 3, cv2.GC_INIT_WITH_MASK)
            wide[box] &= _without_holes(np.isin(state, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8))
        masks[f"{side[0]}_forearm"] = (wide > 0) & person
    return masks


def _without_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` (uint8 0/1) with every region it encloses filled: a shadow in a fist's palm is still hand."""
    outside = np.pad(1 - mask, 1, constant_values=1)
    flood = np.zeros((outside.shape[0] + 2, outside.shape[1] + 2), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2)
    return (outside[1:-1, 1:-1] != 2).astype(np.uint8)


def _drawn_hand(landmarks: np.ndarray, finger_width: float, shape: tuple[int, ...]) -> np.ndarray:
    """The palm's outline filled and each finger drawn `finger_width` pixels wide, as a uint8 mask."""
    drawn = np.zeros(shape[:2], np.uint8)
    points = np.round(landmarks).astype(np.int32)
    cv2.fillPoly(drawn, [cv2.convexHull(points[list(HAND_PALM)])], 1)
    for finger in HAND_FINGERS:
        cv2.polylines(drawn, [points[list(finger)]], False, 1, max(1, int(round(finger_width))))
    return drawn


def _hands_by_colour(
    rgb: np.ndarray,
    points: np.ndarray,
    label: np.ndarray,
    cost: np.ndarray,
    specs: list[PartSpec],
    joints: np.ndarray,
    size: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Where a forearm meets another part (a hand on the hip), the pixels either side of the seam go to
    whichever of the two they look like (GrabCut on colour and edges): the skirt under a hand stays on the
    body, the fingers over it leave with the arm. `label` is changed in place; `cost` (parts, points) chooses
    the part a pixel the forearm gives up goes to. Returns the points forearms took from other parts, and
    those they gave up."""
    height, width = rgb.shape[:2]
    taken, given_back = np.zeros(len(points), bool), np.zeros(len(points), bool)
    core = arm_core(joints, size)
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    for i, spec in enumerate(specs):
        if spec.kind != "arm" or spec.reach == spec.end:
            continue
        # The upper arm of the same side is the same sleeve or skin: no seam to find there.
        limb = [i, *(k for k, s in enumerate(specs) if s.kind == "arm" and s.end == spec.start)]
        own, other = label == i, ~np.isin(label, limb)
        distance = bp.segment_distance(points, joints[spec.start], joints[spec.reach])
        # Other parts' pixels near the forearm's bone, and the forearm's own pixels near those.
        contested_other = other & (distance <= 1.5 * core)
        if not contested_other.any() or not own.any():
            continue
        margin = int(round(2 * core))
        x0, y0 = max(0, xs[contested_other].min() - margin), max(0, ys[contested_other].min() - margin)
        x1 = min(width, xs[contested_other].max() + margin + 1)
        y1 = min(height, ys[contested_other].max() + margin + 1)
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        local = (ys[inside] - y0, xs[inside] - x0)
        others = np.zeros((y1 - y0, x1 - x0), np.uint8)
        others[local] = other[inside]
        near_other = cv2.distanceTransform(1 - others, cv2.DIST_L2, 3)[local] <= core
        # Along its bone the forearm is surely itself (hand included); its pixels by other parts are in doubt.
        state = np.where(other[inside], cv2.GC_BGD, cv2.GC_FGD).astype(np.uint8)
        state[contested_other[inside]] = cv2.GC_PR_BGD
        state[own[inside] & near_other & (distance[inside] > 0.5 * core)] = cv2.GC_PR_FGD
        mask = np.full((y1 - y0, x1 - x0), cv2.GC_BGD, np.uint8)
        mask[local] = state
        models = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.grabCut(np.ascontiguousarray(rgb[y0:y1, x0:x1]), mask, None, *models, 3, cv2.GC_INIT_WITH_MASK)
        fore = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
        lost, gained = np.zeros_like(inside), np.zeros_like(inside)
        lost[inside] = _solid(1 - fore, state == cv2.GC_PR_FGD, local)
        gained[inside] = _solid(fore, state == cv2.GC_PR_BGD, local)
        if lost.any():
            rest = cost[:, lost].copy()
            rest[i] = np.inf
            label[lost] = np.argmin(rest, axis=0)
        label[gained] = i
        taken |= gained
        given_back |= lost
    return taken, given_back


def _solid(changed: np.ndarray, candidates: np.ndarray, local: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Of the `candidates` (the points at `local`), those where the image `changed` holds, but not in pieces
    thinner than a few pixels: a seam of blended edge pixels looks like neither side and would be left behind
    as a sliver."""
    pieces = np.zeros_like(changed)
    pieces[local] = candidates
    pieces &= changed
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (SLIVER, SLIVER))
    return cv2.morphologyEx(pieces, cv2.MORPH_OPEN, kernel)[local] > 0


def _edges_to_forearms(labels: np.ndarray, specs: list[PartSpec], alpha: np.ndarray) -> None:
    """Slivers of the head or torso on a forearm's outline go to the forearm (`labels` changed in place).

    A forearm held across the face is often wider than its core band, and its outline, a line a few pixels
    thick blended with the background, fell to the head: left behind when the arm moved, it hung in the air
    beside the face, and it stretched the head's outline (its hull) over the background between jaw and
    shoulder. Only pieces mostly see-through move: a thin seam inside the body (the skirt's edge under a hand
    on the hip, left there by the colour seam) is the body's.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * SLIVER - 1, 2 * SLIVER - 1))
    forearms = [i for i, spec in enumerate(specs) if spec.kind == "arm" and spec.reach != spec.end]
    for body, spec in enumerate(specs):
        if spec.kind not in ("head", "torso"):
            continue
        own = (labels == body).astype(np.uint8)
        if not own.any():
            continue
        box = grown_box(own, 2 * SLIVER)
        thin = ((own[box] > 0) & (cv2.morphologyEx(own[box], cv2.MORPH_OPEN, kernel) == 0)).astype(np.uint8)
        count, pieces = cv2.connectedComponents(thin, connectivity=8)
        if count < 2:
            continue
        sums = np.bincount(pieces.ravel(), weights=alpha[box].ravel(), minlength=count)
        sizes = np.bincount(pieces.ravel(), minlength=count)
        outline = sums < 0.5 * sizes  # mostly see-through
        outline[0] = False
        region = labels[box]  # a view: writes land in labels
        for arm in forearms:
            beside = cv2.dilate((region == arm).astype(np.uint8), kernel) > 0
            touching = np.zeros(count, bool)
            touching[pieces[(thin > 0) & beside]] = True
            moved = (touching & outline)[pieces]
            region[moved] = arm
            outline &= ~touching


def _forearms_in_front(
    cost: np.ndarray,
    points: np.ndarray,
    specs: list[PartSpec],
    joints: np.ndarray,
    depth: np.ndarray,
    size: float,
) -> np.ndarray:
    """Where a forearm's core lies over the head or torso and its wrist is nearer the camera than that part,
    the part gives those pixels up (its cost there is raised out of reach). Returns the points concerned."""
    core = arm_core(joints, size)
    torso_depth = float(depth[[J["l_shoulder"], J["r_shoulder"], J["l_hip"], J["r_hip"]]].mean())
    behind = {"head": float(depth[J["head"]]), "torso": torso_depth}
    raised = np.zeros(len(points), bool)
    for spec in specs:
        if spec.kind != "arm" or spec.reach == spec.end:
            continue
        inside = bp.segment_distance(points, joints[spec.start], joints[spec.reach]) <= core
        for other, spec_other in enumerate(specs):
            if spec_other.kind in behind and depth[spec.end] < behind[spec_other.kind] - IN_FRONT * size:
                cost[other, inside] = np.maximum(cost[other, inside], 8 * size)
                raised |= inside
    return raised


def split_parts(
    rgb: np.ndarray, alpha: np.ndarray, joints: np.ndarray, specs: list[PartSpec], labels: np.ndarray
) -> list[PartLayer]:
    """Cut one premultiplied layer per labelled part, with a cap over its proximal joint."""
    height, width = alpha.shape
    premult = (
        np.dstack([rgb.astype(np.float32) * alpha[..., None], alpha * 255]).clip(0, 255).astype(np.uint8)
    )
    layers = []
    for i, spec in enumerate(specs):
        own = labels == i
        if own.sum() < 16:
            continue
        region = own.astype(np.uint8)
        bone = joints[spec.end] - joints[spec.start]
        axis = bone / max(float(np.linalg.norm(bone)), 1e-6)
        if spec.kind in ("arm", "leg"):
            # A disc of the body around the proximal joint travels with the part: it covers the joint when bending.
            centre = tuple(int(round(v)) for v in joints[spec.start])
            cv2.circle(region, centre, cap_radius(labels, i, spec, joints), 1, -1)
            region &= (alpha > 0.02).astype(np.uint8)
        # Parts overlap by two pixels so resampled seams never let the background show through.
        region = cv2.dilate(region, np.ones((5, 5), np.uint8))
        x, y, w, h = cv2.boundingRect(region)
        pad = 2
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(width, x + w + pad), min(height, y + h + pad)
        crop = premult[y0:y1, x0:x1] * region[y0:y1, x0:x1, None]
        layers.append(PartLayer(spec=spec, rgba=np.ascontiguousarray(crop), origin=(x0, y0), axis=axis))
    return layers
