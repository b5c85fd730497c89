"""Stage 4, render: each part layer warped by its bone's transform and composited over the filled background.

Parts are drawn back to front: legs, then arms behind the body, torso, head, then arms in front (BlazePose z).
Warps touch only each part's bounding box, so a frame costs a few small cv2.warpAffine calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from marionet.engine.cpu import mesh as mesh_stage
from marionet.engine.cpu.mesh import Tips
from marionet.engine.cpu.retarget import Motion
from marionet.engine.cpu.rig import CharacterRig, J, PartLayer, PartSpec

TORSO_FIT = (J["neck"], J["l_shoulder"], J["r_shoulder"], J["pelvis"], J["l_hip"], J["r_hip"])


@dataclass(frozen=True)
class RenderSettings:
    interpolation: int = cv2.INTER_LINEAR
    mesh: bool = True  # draw the skinned mesh when the rig has one; False: the rigid part layers


def part_transforms(rig: CharacterRig, motion: Motion, frame: int) -> list[np.ndarray]:
    """2x3 affine per part layer: rest-pose canvas pixels -> this frame's canvas pixels."""
    return spec_transforms(rig, motion, frame, [(layer.spec, layer.axis) for layer in rig.parts])


def spec_transforms(
    rig: CharacterRig, motion: Motion, frame: int, parts: list[tuple[PartSpec, np.ndarray]]
) -> list[np.ndarray]:
    """2x3 affine per (part, rest bone direction): rest-pose canvas pixels -> this frame's canvas pixels."""
    posed = motion.joints[frame]
    scale = float(motion.scale[frame])
    flip = np.eye(3)
    if motion.mirrored[frame]:
        flip = np.array([[-1.0, 0.0, 2 * motion.axis_x], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rest = rig.joints @ flip[:2, :2].T + flip[:2, 2]
    out = []
    for spec, rest_axis in parts:
        if spec.kind == "torso":
            linear, shift = _fit_affine(rest[list(TORSO_FIT)], posed[list(TORSO_FIT)])
        elif spec.kind == "head":
            linear, shift = _rigid(
                rest[spec.start], rest[spec.end], posed[spec.start], posed[spec.end], scale
            )
        else:
            axis = rest_axis * (-1.0 if motion.mirrored[frame] else 1.0, 1.0)
            length = float(np.linalg.norm(rig.joints[spec.end] - rig.joints[spec.start]))
            start = rest[spec.start]
            linear, shift = _bone_map(start, start + axis * length, posed[spec.start], posed[spec.end], scale)
        matrix = np.eye(3)
        matrix[:2, :2] = linear
        matrix[:2, 2] = shift
        out.append((matrix @ flip)[:2])
    return out


# A hand's turn at the wrist grows from nothing there to all of it this share of the hand's length past it. The
# turn has no limit: clipped (at 90 deg), a hand pointing back along a forearm that points at the camera flipped
# from one side of it to the other between frames (the half pair's frames 28 and 51).
TIP_TURN_RAMP = 0.35
TIP_KINDS = ("arm",)  # feet keep their angle to the shin


def tip_poses(
    rig: CharacterRig,
    motion: Motion,
    frame: int,
    specs: list[PartSpec],
    axes: np.ndarray,
    transforms: np.ndarray,
) -> Tips:
    """Per limb part (`specs`, their rest `axes` and this frame's `transforms`), how its hand or foot is drawn. A forearm pointing at the camera is drawn short; its hand
    stays a hand, not a smear (`shifts`). The hand keeps its rest angle to the forearm unless the driver's
    wrist and hand are seen: then it turns to the driver's wrist -> hand direction (`turns`), as a hand does
    when it is raised or flapped at the wrist."""
    posed = motion.joints[frame]
    scale = float(motion.scale[frame])
    shifts, turns = np.zeros((len(specs), 2)), np.zeros(len(specs))
    pivots, ramps = np.zeros((len(specs), 2)), np.ones(len(specs))
    for part, spec in enumerate(specs):
        if spec.kind not in ("arm", "leg"):
            continue
        bone = posed[spec.end] - posed[spec.start]
        length = float(np.linalg.norm(bone))
        rest_length = float(np.linalg.norm(rig.joints[spec.end] - rig.joints[spec.start]))
        along = length / max(rest_length, 1e-6)
        shifts[part] = (scale - along) * bone / max(length, 1e-6)
        pivots[part] = posed[spec.end]
        if spec.kind not in TIP_KINDS or spec.reach == spec.end or motion.tip_trust is None:
            continue
        trust = float(motion.tip_trust[frame, spec.reach])
        tip_rest = rig.joints[spec.reach]
        ramps[part] = max(TIP_TURN_RAMP * float(np.linalg.norm(tip_rest - rig.joints[spec.end])), 1.0)
        if trust <= 0.0:
            continue
        past = max(float((tip_rest - rig.joints[spec.start]) @ axes[part]) - rest_length, 0.0)
        carried = transforms[part] @ np.append(tip_rest, 1.0) + past * shifts[part] - pivots[part]
        wanted = posed[spec.reach] - posed[spec.end]
        if np.linalg.norm(carried) < 1e-6 or np.linalg.norm(wanted) < 1e-6:
            continue
        turn = np.arctan2(wanted[1], wanted[0]) - np.arctan2(carried[1], carried[0])
        turn = (turn + np.pi) % (2 * np.pi) - np.pi
        turns[part] = trust * float(turn)
    return Tips(shifts=shifts, turns=turns, pivots=pivots, ramps=ramps)


def _bone_map(a: np.ndarray, b: np.ndarray, pa: np.ndarray, pb: np.ndarray, scale: float):
    # Along the bone: stretch to the posed length (foreshortening); across it: keep the width (times scale).
    u = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    v = (pb - pa) / max(np.linalg.norm(pb - pa), 1e-6)
    along = np.linalg.norm(pb - pa) / max(np.linalg.norm(b - a), 1e-6)
    n, nv = np.array([-u[1], u[0]]), np.array([-v[1], v[0]])
    linear = along * np.outer(v, u) + scale * np.outer(nv, n)
    return linear, pa - linear @ a


def _rigid(a: np.ndarray, b: np.ndarray, pa: np.ndarray, pb: np.ndarray, scale: float):
    angle = np.arctan2(*(pb - pa)[::-1]) - np.arctan2(*(b - a)[::-1])
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    linear = np.array([[c, -s], [s, c]])
    return linear, pa - linear @ a


def _fit_affine(src: np.ndarray, dst: np.ndarray):
    design = np.hstack([src, np.ones((len(src), 1))])
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return solution[:2].T, solution[2]


def draw_order(rig: CharacterRig, motion: Motion, frame: int) -> list[int]:
    """Indices of rig.parts back to front: legs (far one first), arms behind, torso, head, arms in front."""
    left_leg_front = bool(motion.left_leg_in_front[frame])
    arm_in_front = motion.arm_in_front[frame]

    def key(i: int) -> tuple[int, int, int]:
        spec = rig.parts[i].spec
        side = 0 if spec.name.startswith("l_") else 1
        distal = int(spec.name.endswith(("forearm", "shin")))
        if spec.kind == "leg":
            return (0, int(left_leg_front == (side == 0)), distal)
        if spec.kind == "torso":
            return (2, 0, 0)
        if spec.kind == "head":
            return (3, 0, 0)
        return (4 if arm_in_front[side] else 1, side, distal)

    return sorted(range(len(rig.parts)), key=key)


def _group_depth(group: str, motion: Motion, frame: int) -> tuple[int, int]:
    """Back-to-front key of a mesh layer: legs (far one first), the body under the shoulders' caps, arms behind,
    body, arms in front."""
    if group == "body":
        return (2, 0)
    if group == mesh_stage.UNDER:
        return (1, -1)
    side = 0 if group.startswith("l_") else 1
    if group.endswith("leg"):
        return (0, int(bool(motion.left_leg_in_front[frame]) == (side == 0)))
    return (4 if motion.arm_in_front[frame][side] else 1, side)


def render_frame(rig: CharacterRig, motion: Motion, frame: int, settings: RenderSettings) -> np.ndarray:
    """One output frame (H, W, 3) uint8."""
    canvas = rig.background.copy()
    if settings.mesh and rig.mesh is not None:
        mesh = rig.mesh
        transforms = np.array(
            spec_transforms(rig, motion, frame, list(zip(mesh.specs, mesh.axes, strict=True)))
        )
        tips = tip_poses(rig, motion, frame, mesh.specs, mesh.axes, transforms)
        for layer in sorted(
            mesh.layers, key=lambda layer: (*_group_depth(layer.group, motion, frame), layer.distal)
        ):
            mesh_stage.draw_layer(canvas, layer, transforms, tips, settings.interpolation)
        return canvas
    height, width = canvas.shape[:2]
    transforms = part_transforms(rig, motion, frame)
    for i in draw_order(rig, motion, frame):
        _composite(canvas, rig.parts[i], transforms[i], settings, width, height)
    return canvas


def _composite(
    canvas: np.ndarray, layer: PartLayer, matrix: np.ndarray, settings, width: int, height: int
) -> None:
    h, w = layer.rgba.shape[:2]
    ox, oy = layer.origin
    # Layer pixel -> canvas pixel.
    full = matrix.copy()
    full[:, 2] += matrix[:, :2] @ np.array([ox, oy], float)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ full.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    local = full.copy()
    local[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(
        layer.rgba, local, (x1 - x0, y1 - y0), flags=settings.interpolation, borderMode=cv2.BORDER_CONSTANT
    )
    mesh_stage.over(canvas[y0:y1, x0:x1], warped)
