"""The character as a triangle mesh with per-bone skinning weights (linear blend skinning), drawn by a backward warp.

The mesh is a regular triangulated grid over the silhouette. Weights start as each vertex's body part and are
smoothed across joints only (heat-diffusion-like), so an elbow bends smoothly while an arm resting against the
body never drags the torso. The head keeps rigid weights: the face stays the character's own pixels.
Each part is its own sub-mesh with its own pixels; sub-meshes share their weights across a joint, so they meet
without a seam there, and are drawn back to front by depth group (a leg, an arm, the body).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from marionet.engine.cpu.rig import (
    BONES,
    J,
    PartSpec,
    arm_core,
    cap_radius,
    face_oval,
    grown_box,
    head_radius,
    hip_width,
    part_costs,
    part_thickness,
    pixel_of,
    push_pull_fill,
    shoulder_width,
    unit_vector,
)

FILL_REACH = 12  # pixels around a hidden stretch of a part whose own colours fill it
HEAD_BINS = 180  # directions around the head joint in which its outline is followed (_beyond_head_outline)
NECK_ARC = 60.0  # degrees either side of the neck's direction where the head's label is no outline
HEAD_SLACK = 2.0  # pixels past the outline taken from the directions either side that still count as head

# Each part's parent in the skeleton; a part blends with its parent around the part's proximal joint.
PARENT = {
    "head": "torso",
    "l_upper_arm": "torso",
    "r_upper_arm": "torso",
    "l_forearm": "l_upper_arm",
    "r_forearm": "r_upper_arm",
    "l_thigh": "torso",
    "r_thigh": "torso",
    "l_shin": "l_thigh",
    "r_shin": "r_thigh",
}
# Parts that meet their parent without a blend band. A shoulder turns through up to 180 degrees (arms raised
# in the image, hanging in the dance): blending across such a turn folds the sleeve and shoulder into a smear
# (linear blend skinning's collapse), and the cap over the joint hides the seam a rigid join leaves. Measured
# on the four pairings of the shared images and clips: lower limb error on three and lower jitter on all four.
RIGID_JOINS = frozenset({"l_upper_arm", "r_upper_arm"})
UNDER = "under"  # depth group of the body's pixels under a rigid join's cap: drawn before any arm (_kept_under_caps)
SUBPIXEL = 4  # fillConvexPoly fixed-point bits: vertices keep 1/16 px precision
BLEND = 0.1  # skinning blend band each side of a joint, in body sizes
LINK = 0.6  # weights diffuse between parts only this many limb thicknesses from their joint
OUTSIDE = -1e5  # source coordinate of pixels no triangle covers
# The trunk's outline at the hips, in hip joint spreads (a person's hips are about 1.6-1.9 times as wide as the
# distance between their hip joints); never wider than the shoulder joints.
TRUNK_HIPS = 1.7


@dataclass
class MeshLayer:
    """One part's sub-mesh (rest vertices, skinning weights, triangles) and its premultiplied pixels."""

    group: str  # depth group: "body", or a limb like "l_arm" / "r_leg"
    part: int  # the part (index into CharacterMesh.specs) whose pixels these are
    distal: bool  # drawn over the rest of its group (forearm, shin, head)
    rest: np.ndarray  # (vertices, 2) float64 rest positions, canvas pixels
    weights: np.ndarray  # (vertices, parts) float64, rows sum to 1
    triangles: np.ndarray  # (triangles, 3) int32 vertex indices, in draw order within the layer
    beyond: np.ndarray  # (vertices, parts) rest distance past a forearm's wrist or a shin's ankle, else 0
    rgba: np.ndarray  # premultiplied RGBA crop (uint8) of this layer's pixels at `origin`
    origin: tuple[int, int]


@dataclass(frozen=True)
class Tips:
    """How the pixels past a limb's end joint (the forearm's hand, the shin's foot) are carried, per part."""

    shifts: np.ndarray  # (parts, 2) per rest pixel past the end joint: the step that undoes foreshortening
    turns: np.ndarray  # (parts,) radians the tip turns about its end joint, beyond the limb's own rotation
    pivots: np.ndarray  # (parts, 2) the end joints as posed
    ramps: np.ndarray  # (parts,) rest pixels past the end joint over which the turn grows to all of it


@dataclass
class CharacterMesh:
    specs: list[PartSpec]  # the parts the weights refer to (columns of MeshLayer.weights)
    axes: np.ndarray  # (parts, 2) unit rest direction of each part's bone
    layers: list[MeshLayer]
    cell: float  # grid spacing, canvas pixels


def group_of(spec: PartSpec) -> str:
    """The depth layer a part is drawn in: the body (torso and head) or its limb (both segments together)."""
    if spec.kind in ("torso", "head"):
        return "body"
    return f"{spec.name[0]}_{spec.kind}"


def build_mesh(
    rgb: np.ndarray,
    alpha: np.ndarray,
    joints: np.ndarray,
    specs: list[PartSpec],
    labels: np.ndarray,
    size: float,
    cell: float,
    beneath: np.ndarray | None = None,
    over: np.ndarray | None = None,
) -> CharacterMesh:
    """Grid mesh over the silhouette, skinning weights smoothed across joints, one sub-mesh per depth layer.

    `beneath` (from label_parts): the head or torso hidden behind a forearm in the image. That part's layer
    also covers those pixels, filled from its own around them, so no hole opens when the arm moves away.
    `over` (from rig.skirt_over_thighs): a thigh's stretch under a skirt, and the part (the torso) drawn over it.
    That part's layer draws those pixels as they are; the thigh's layer has them in the leg's colours.
    """
    height, width = alpha.shape
    person = (alpha > 0.02).astype(np.uint8)
    if over is None:
        over = np.full(labels.shape, -1, np.int32)
    covered = over >= 0
    uncapped = labels
    labels = _with_caps(labels, person, joints, specs, set(np.unique(labels[covered]).tolist()))
    kept = _kept_under_caps(uncapped, labels, joints, specs)
    below_head = _torso_beneath_head(uncapped, joints, specs)
    kept[below_head & (kept < 0)] = [s.kind for s in specs].index("torso")
    margin = int(np.ceil(1.5 * cell))
    ys, xs = np.nonzero(person)
    x0, y0 = xs.min() - margin, ys.min() - margin
    nx = int(np.ceil((xs.max() + margin - x0) / cell)) + 1
    ny = int(np.ceil((ys.max() + margin - y0) / cell)) + 1
    gx, gy = np.meshgrid(x0 + cell * np.arange(nx), y0 + cell * np.arange(ny))
    nodes = np.stack([gx.ravel(), gy.ravel()], axis=1)
    node_labels = _node_labels(nodes, labels, specs, joints, size)
    thickness = np.array([part_thickness(labels, i, sp, joints) for i, sp in enumerate(specs)])
    weights = _skinning_weights(nodes, node_labels.reshape(ny, nx), specs, joints, thickness, size, cell)
    weights = weights.reshape(-1, len(specs))

    # Two triangles per grid cell, split along alternating diagonals so the mesh has no preferred direction.
    cells = np.arange((ny - 1) * nx).reshape(ny - 1, nx)[:, :-1]
    a, b, c, d = cells, cells + 1, cells + nx, cells + nx + 1
    flip = ((np.arange(ny - 1)[:, None] + np.arange(nx - 1)[None, :]) % 2).astype(bool)
    tri1 = np.where(flip[..., None], np.stack([a, b, d], -1), np.stack([a, b, c], -1)).reshape(-1, 3)
    tri2 = np.where(flip[..., None], np.stack([a, d, c], -1), np.stack([b, d, c], -1)).reshape(-1, 3)
    triangles = np.concatenate([tri1, tri2]).astype(np.int32)
    centroids = nodes[triangles].mean(axis=1)
    axes = np.array([unit_vector(joints[s.end] - joints[s.start]) for s in specs])
    beyond = _beyond_end(nodes, specs, joints, axes)

    premult = np.dstack([rgb.astype(np.float32) * alpha[..., None], alpha * 255]).clip(0, 255)
    # Every triangle within 3 px of the pixels: the half-resolution maps lose the mesh's outermost 2 px.
    reach = int(np.ceil(0.8 * cell)) + 3
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    layers = []
    # The widest forearm band (a fist) a hidden stretch of head or torso lies under.
    gap = 3 * arm_core(joints, size)
    cx, cy = pixel_of(centroids, alpha.shape)
    sources = [(part, labels == part, group_of(spec), premult) for part, spec in enumerate(specs)]
    sources += [(int(part), kept == part, UNDER, premult) for part in np.unique(kept[kept >= 0])]
    flank = _torso_beneath_arms(uncapped, beneath, joints, specs, person)
    if flank is not None:
        sources.append((*flank, UNDER, _filled_flank(premult, uncapped, *flank)))
    for part, mask, group, colours in sources:
        spec = specs[part]
        own = mask.astype(np.uint8)
        if own.sum() < 16:
            continue
        hidden = np.zeros_like(own)
        if beneath is not None and group != UNDER:
            face = None
            if spec.kind == "head":
                face = face_oval(joints, own.shape).astype(np.uint8)
            hidden = _hidden_inside(own, beneath == part, gap, face)
            if face is not None:
                past = _beyond_head_outline(
                    own, hidden, beneath == part, joints[spec.end], face, joints[spec.start]
                )
                own, hidden = own & (1 - past), hidden & (1 - past)
        drawn_over = ((over == part) & (group != UNDER)).astype(np.uint8)
        box = grown_box(own | hidden | drawn_over, reach + 2)  # the two dilations below reach this far
        by0, bx0 = box[0].start, box[1].start
        # Parts overlap by two pixels so resampled seams never let the background show through.
        pixels = (
            (cv2.dilate(own[box], np.ones((5, 5), np.uint8)) & person[box]) | hidden[box] | drawn_over[box]
        )
        near = cv2.dilate(pixels, grow)
        inside = (cx >= bx0) & (cy >= by0) & (cx < bx0 + near.shape[1]) & (cy < by0 + near.shape[0])
        hit = np.zeros(len(cx), bool)
        hit[inside] = near[cy[inside] - by0, cx[inside] - bx0] > 0
        chosen = np.nonzero(hit)[0]
        # Triangles past the end joint last, in order along the bone: a hand bent back over its wrist is drawn
        # whole over it (in grid order the two came out interleaved, a saw-tooth of wrist through the palm).
        chosen = chosen[np.argsort(beyond[triangles[chosen], part].mean(axis=1), kind="stable")]
        used, local = np.unique(triangles[chosen], return_inverse=True)
        rx, ry, rw, rh = cv2.boundingRect(pixels)
        pad = 2
        ox, oy = max(0, bx0 + rx - pad), max(0, by0 + ry - pad)
        ex, ey = min(width, bx0 + rx + rw + pad), min(height, by0 + ry + rh + pad)
        soft = cv2.GaussianBlur(
            pixels[oy - by0 : ey - by0, ox - bx0 : ex - bx0].astype(np.float32), (3, 3), 0.7
        )
        source = colours[oy:ey, ox:ex]
        if hidden[oy:ey, ox:ex].any():
            source = _fill_hidden(source, own[oy:ey, ox:ex], hidden[oy:ey, ox:ex])
        crop_own, crop_covered = own[oy:ey, ox:ex], covered[oy:ey, ox:ex]
        under = crop_own & crop_covered
        if under.any():
            # The leg under a skirt, in the colours of the leg seen: the thigh's own and its shin's.
            child = [i for i, c in enumerate(specs) if PARENT.get(c.name) == spec.name]
            seen = ((crop_own & ~crop_covered) | np.isin(labels[oy:ey, ox:ex], child)).astype(np.uint8)
            layer_pixels = pixels[oy - by0 : ey - by0, ox - bx0 : ex - bx0]
            beneath_skirt = cv2.dilate(under, np.ones((5, 5), np.uint8)) & layer_pixels
            source = _fill_hidden(source, seen, beneath_skirt)
        crop = (source * soft[..., None]).astype(np.uint8)
        layers.append(
            MeshLayer(
                group=group,
                part=part,
                distal=_is_distal(spec) and group != UNDER,
                rest=nodes[used].astype(np.float64),
                weights=_confine(weights, node_labels, nodes, used, part, drawn_over),
                triangles=local.reshape(-1, 3).astype(np.int32),
                beyond=beyond[used],
                rgba=np.ascontiguousarray(crop),
                origin=(ox, oy),
            )
        )
    return CharacterMesh(specs=specs, axes=axes, layers=layers, cell=cell)


def _with_caps(
    labels: np.ndarray, person: np.ndarray, joints: np.ndarray, specs: list[PartSpec], under_skirt: set[int]
) -> np.ndarray:
    """Labels where each limb segment also owns its parent's pixels around its root joint: the shoulder's
    roundness and the sleeve go with the arm (the pose detector reads limbs by them). A thigh under a skirt
    (`under_skirt`) takes none: around its hip is the skirt."""
    out = labels.copy()
    index = {s.name: i for i, s in enumerate(specs)}
    for part, spec in enumerate(specs):
        parent = index.get(PARENT.get(spec.name, ""))
        if spec.kind in ("arm", "leg") and parent is not None and part not in under_skirt:
            disc = np.zeros_like(person)
            centre = tuple(int(round(v)) for v in joints[spec.start])
            cv2.circle(disc, centre, cap_radius(labels, part, spec, joints), 1, -1)
            out[(disc > 0) & (person > 0) & (labels == parent)] = part
    return out


def _kept_under_caps(
    uncapped: np.ndarray, capped: np.ndarray, joints: np.ndarray, specs: list[PartSpec]
) -> np.ndarray:
    """Per pixel, the part that also keeps it under a rigidly joined limb's cap (-1 elsewhere): of the pixels
    the cap took from its parent, those on the parent's side of the joint (towards the neck from a shoulder).
    A cap turns with its limb about the joint, and the person's edge inside it turns too: raised, an upper
    arm's cap opened a crescent of background between itself and the chest (the dancer's T-shirt, the cartoon's
    dress), at the top of the shoulder and under a raised arm. The parent's own pixels there close it, as a
    layer of their own (group UNDER) drawn beneath every arm: they show only where the cap has turned away."""
    out = np.full(capped.shape, -1, np.int32)
    index = {s.name: i for i, s in enumerate(specs)}
    inner = {child: parent for parent, child in BONES}
    for part, spec in enumerate(specs):
        parent = index.get(PARENT.get(spec.name, ""))
        if spec.name not in RIGID_JOINS or parent is None or spec.start not in inner:
            continue
        taken = (capped == part) & (uncapped == parent)
        if not taken.any():
            continue
        ys, xs = np.nonzero(taken)
        towards = joints[inner[spec.start]] - joints[spec.start]
        side = (xs - joints[spec.start][0]) * towards[0] + (ys - joints[spec.start][1]) * towards[1] >= 0
        out[ys[side], xs[side]] = parent
    return out


HEAD_SEAM = 0.25  # the band of the head's pixels along its seam with the torso the torso keeps, in head radii


def _torso_beneath_head(uncapped: np.ndarray, joints: np.ndarray, specs: list[PartSpec]) -> np.ndarray:
    """The head's pixels within HEAD_SEAM head radii of the torso's, which the torso keeps too (drawn beneath,
    as the body under the shoulders' caps): the head is rigid and blends with the torso only around the neck,
    and where its seam with the torso is wide (hair over the shoulders, a head-and-shoulders picture's jaw and
    collar) a turn of the head opened a line of background along it. The torso's copy of the seam shows there
    instead, moving with the torso's edge."""
    kinds = [s.kind for s in specs]
    if "head" not in kinds or "torso" not in kinds:
        return np.zeros(uncapped.shape, bool)
    # The body the head meets: the torso, and the shoulders' tops, which the upper arms take.
    body = [
        kinds.index("torso"),
        *(i for i, s in enumerate(specs) if s.kind == "arm" and PARENT[s.name] == "torso"),
    ]
    head, below = uncapped == kinds.index("head"), np.isin(uncapped, body)
    if not head.any() or not below.any():
        return np.zeros(uncapped.shape, bool)
    reach = max(2.0, HEAD_SEAM * head_radius(joints))
    box = grown_box(head.astype(np.uint8), int(np.ceil(reach)) + 1)
    away = cv2.distanceTransform((~below[box]).astype(np.uint8), cv2.DIST_L2, 3)
    out = np.zeros(uncapped.shape, bool)
    out[box] = head[box] & (away <= reach)
    return out


def _torso_beneath_arms(
    uncapped: np.ndarray,
    beneath: np.ndarray | None,
    joints: np.ndarray,
    specs: list[PartSpec],
    person: np.ndarray,
) -> tuple[int, np.ndarray] | None:
    """The torso's index and the pixels of the image's arms that lie over its trunk, or None.

    An arm hanging against the body, or a hand resting on it, hides the trunk's side there; without the trunk
    drawn beneath, the arm left a hole of filled background through the body wherever it moved away (a
    photographed astronaut, arms at her sides, a hand across her belly). The trunk is the quadrilateral from
    the shoulder joints to the hips' outline (TRUNK_HIPS times the hip joints' spread, at most the shoulders'),
    and of the arm's pixels in it only those reached across the trunk from its own pixels without a gap of
    background: an arm hanging clear of the body keeps the gap, and leaves no torso-coloured ghost."""
    index = {s.name: i for i, s in enumerate(specs)}
    if "torso" not in index:
        return None
    torso = index["torso"]
    arms = np.isin(uncapped, [i for i, s in enumerate(specs) if s.kind == "arm"])
    if beneath is not None:
        arms &= beneath < 0  # already drawn beneath a forearm held in front, by the body's own layer
    l_hip, r_hip = joints[J["l_hip"]], joints[J["r_hip"]]
    middle, half = (l_hip + r_hip) / 2, (l_hip - r_hip) / 2
    spread = min(TRUNK_HIPS, shoulder_width(joints) / max(hip_width(joints), 1e-6))
    corners = np.array(
        [joints[J["l_shoulder"]], joints[J["r_shoulder"]], middle - spread * half, middle + spread * half]
    )
    trunk = np.zeros_like(person)
    cv2.fillConvexPoly(trunk, np.round(corners * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    allowed = (trunk > 0) & (person > 0) & (arms | (uncapped == torso))
    # Across the trunk: rows square to its axis (hips to neck), in a copy turned upright.
    axis = joints[J["neck"]] - middle
    angle = np.degrees(np.arctan2(axis[0], -axis[1]))
    height, width = person.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    side = int(np.ceil(np.hypot(width, height)))
    turn[:, 2] += (side - width) / 2, (side - height) / 2
    upright = cv2.warpAffine(allowed.astype(np.uint8), turn, (side, side), flags=cv2.INTER_NEAREST) > 0
    # Seeded by the trunk's pixels 3 px inside its label: a sliver of an arm's edge that fell to the torso is
    # no bridge across a gap of sky.
    seeds = cv2.erode((uncapped == torso).astype(np.uint8), np.ones((7, 7), np.uint8))
    own = cv2.warpAffine(seeds, turn, (side, side), flags=cv2.INTER_NEAREST) > 0
    starts = upright.copy()
    starts[:, 1:] &= ~upright[:, :-1]
    runs = np.cumsum(starts.ravel()).reshape(upright.shape) * upright
    with_torso = np.zeros(int(runs.max()) + 1, bool)
    with_torso[runs[own & upright]] = True
    with_torso[0] = False
    reached = with_torso[runs].astype(np.uint8)
    back = cv2.warpAffine(reached, cv2.invertAffineTransform(turn), (width, height), flags=cv2.INTER_NEAREST)
    flank = ((back > 0) & allowed & arms).astype(np.uint8)  # the warp back may stray a pixel past them
    if flank.sum() < 16:
        return None
    return torso, flank


def _filled_flank(premult: np.ndarray, uncapped: np.ndarray, torso: int, flank: np.ndarray) -> np.ndarray:
    """The premultiplied image with the flank's pixels (and a seam of 2 around them) in the torso's own
    colours, filled from the trunk around them."""
    out = premult.copy()
    box = grown_box(flank, 2 * FILL_REACH)
    own = (uncapped[box] == torso).astype(np.uint8)
    hidden = cv2.dilate(flank[box], np.ones((5, 5), np.uint8)) & (1 - own)
    out[box] = _fill_hidden(premult[box], own, hidden)
    return out


def _hidden_inside(
    own: np.ndarray, hidden: np.ndarray, gap: float, face: np.ndarray | None = None
) -> np.ndarray:
    """The hidden pixels inside the part's own outline: its convex hull, closed over gaps up to `gap` pixels
    wide (the forearm's band across it). A forearm's band reaching past the chin or hip would otherwise widen
    the face or body where it never was; the hull alone is not enough where the part is concave (a head and
    its neck: the hull spans the background between jaw and shoulder, and the fill showed there as a wing).

    With `face` (rig.face_oval), the hull of the part's pixels inside it counts as outline too: a fist
    wider than `gap` over the jaw hides the jaw line itself, and the face's hull restores it.
    """
    if not hidden.any():
        return hidden.astype(np.uint8)
    hull = np.zeros_like(own)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(own)), 1)
    radius = max(1, int(round(gap / 2)))
    box = grown_box(own, 2 * radius)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    outline = np.zeros_like(own)
    outline[box] = cv2.morphologyEx(own[box], cv2.MORPH_CLOSE, kernel)
    inner = own & face if face is not None else None
    if inner is not None and inner.any():
        cv2.fillConvexPoly(outline, cv2.convexHull(cv2.findNonZero(inner)), 1)
    return (hidden & (hull > 0) & (outline > 0)).astype(np.uint8)


def _beyond_head_outline(
    own: np.ndarray,
    hidden: np.ndarray,
    beneath: np.ndarray,
    centre: np.ndarray,
    face: np.ndarray,
    neck: np.ndarray,
) -> np.ndarray:
    """The head's pixels outside its face oval that lie past its outline (uint8 mask), in the directions from
    the head joint (one of HEAD_BINS) in which a hand hides part of it there: the outline in those directions
    is taken from the directions either side. Hidden pixels count, and of the head's own only those beside
    the hand (the glow between fingers). Filled as head, a hand's whole silhouette stayed behind once the hand
    moved: the cartoon's hands on the edge of her hair left two finger-shaped flags beside her head, the
    dancer's fist at her chin a flap of skin past her cheek. Inside the face oval, _hidden_inside's outline
    holds (a fist at the chin hides the chin's own outline)."""
    out = np.zeros_like(own)
    outside = hidden & (face == 0)
    if not own.any() or not outside.any():
        return out

    def polar(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(mask)
        dx, dy = xs - centre[0], ys - centre[1]
        angle = np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * HEAD_BINS).astype(int) % HEAD_BINS
        return ys, xs, angle, np.hypot(dx, dy)

    _, _, own_bin, own_r = polar(own)
    reach = np.zeros(HEAD_BINS)
    np.maximum.at(reach, own_bin, own_r)
    beside = own & (face == 0) & cv2.dilate(beneath.astype(np.uint8), np.ones((7, 7), np.uint8))
    ys, xs, angle, radius = polar(outside | beside)
    covered = np.zeros(HEAD_BINS, bool)
    covered[angle] = True
    # Towards the neck the head's label runs on into the neck and shoulders: no outline to go by there.
    down = np.arctan2(neck[1] - centre[1], neck[0] - centre[0])
    bins = np.arange(HEAD_BINS)
    middle = (bins + 0.5) * 2 * np.pi / HEAD_BINS - np.pi
    towards_neck = np.abs(np.angle(np.exp(1j * (middle - down)))) < np.radians(NECK_ARC)
    known = (reach > 0) & ~covered & ~towards_neck
    if not known.any():
        return out
    limit = np.interp(bins, bins[known], reach[known], period=HEAD_BINS) + HEAD_SLACK
    past = radius > limit[angle]  # every one of them lies in a covered direction
    out[ys[past], xs[past]] = 1
    return out


def _fill_hidden(premult: np.ndarray, own: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The part's premultiplied pixels with those a forearm hid filled in from its own (opaque, smooth).

    The fill is a smooth interpolation of the part's own pixels in a ring around the hidden stretch only: over
    the whole part, a face's hair darkened the skin filled under a fist into a fist-shaped shadow. The ring's
    inner pixels, the covering hand's blended outline, are filled too, so no seam line is left.
    """
    out = premult.copy()
    seam = cv2.dilate(hidden, np.ones((5, 5), np.uint8)) & own
    ring = cv2.dilate(hidden, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * FILL_REACH + 1,) * 2))
    opaque = premult[..., 3] > 250
    valid = (own & ring & (1 - seam)).astype(np.float32) * opaque
    if valid.sum() < 16:  # hardly any of the part around it: fill from all of the part
        valid = (own & (1 - seam) & (1 - hidden)).astype(np.float32) * opaque
    filled = (hidden | seam) > 0
    if valid.sum() == 0:  # nothing to fill from: leave the hidden stretch out rather than show what hid it
        out[hidden > 0] = 0
        return out
    colour = push_pull_fill(premult[..., :3], valid)
    out[filled, :3] = colour[filled]
    out[filled, 3] = 255
    return out


def _beyond_end(nodes: np.ndarray, specs: list[PartSpec], joints: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(nodes, parts): how far each node lies past the end joint along the bone of a part that reaches past it
    (the forearm's hand, the shin's foot); 0 before it and for every other part."""
    out = np.zeros((len(nodes), len(specs)))
    for part, spec in enumerate(specs):
        if spec.reach != spec.end:
            length = float(np.linalg.norm(joints[spec.end] - joints[spec.start]))
            out[:, part] = np.maximum((nodes - joints[spec.start]) @ axes[part] - length, 0.0)
    return out


def _is_distal(spec: PartSpec) -> bool:
    return spec.kind == "head" or spec.name.endswith(("forearm", "shin"))


def _node_labels(
    nodes: np.ndarray, labels: np.ndarray, specs: list[PartSpec], joints: np.ndarray, size: float
) -> np.ndarray:
    """Each grid node's part: the pixel's label on the person, the geometrically nearest part off it."""
    xi, yi = pixel_of(nodes, labels.shape)
    out = labels[yi, xi].copy()
    off = out < 0
    if off.any():
        out[off] = np.argmin(part_costs(nodes[off], specs, joints, size), axis=0)
    return out


def _skinning_weights(
    nodes: np.ndarray,
    grid_labels: np.ndarray,
    specs: list[PartSpec],
    joints: np.ndarray,
    thickness: np.ndarray,
    size: float,
    cell: float,
) -> np.ndarray:
    """(ny, nx, parts) weights: one-hot parts diffused across the grid, but only over edges near a shared joint."""
    ny, nx = grid_labels.shape
    parts = len(specs)
    index = {s.name: i for i, s in enumerate(specs)}
    head = head_radius(joints)
    # links[a, b]: the joint (x, y, radius) where parts a and b meet, radius 0 when they do not.
    links = np.zeros((parts, parts, 3))
    for i, s in enumerate(specs):
        parent = PARENT.get(s.name)
        if parent in index and s.name not in RIGID_JOINS:
            # Blend only within the joint's own roundness: further out, the sides of a bent elbow are apart.
            radius = head if s.kind == "head" else max(cell, LINK * thickness[i])
            links[i, index[parent]] = links[index[parent], i] = (*joints[s.start], radius)
    xy = nodes.reshape(ny, nx, 2)

    def passable(la: np.ndarray, lb: np.ndarray, mid: np.ndarray) -> np.ndarray:
        link = links[la, lb]
        near = np.linalg.norm(mid - link[..., :2], axis=-1) < link[..., 2]
        return ((la == lb) | near).astype(np.float64)

    right = passable(grid_labels[:, :-1], grid_labels[:, 1:], (xy[:, :-1] + xy[:, 1:]) / 2)[..., None]
    down = passable(grid_labels[:-1], grid_labels[1:], (xy[:-1] + xy[1:]) / 2)[..., None]
    onehot = np.eye(parts)[grid_labels]
    rigid = np.zeros((ny, nx, 1), bool)
    if "head" in index:
        rigid[..., 0] = grid_labels == index["head"]
    weights = onehot.copy()
    # The blend band grows like the square root of the step count: about BLEND body sizes each side.
    steps = int(np.clip((BLEND * size / cell) ** 2, 1, 40)) if BLEND > 0 else 0
    for _ in range(steps):
        total = weights.copy()
        count = np.ones((ny, nx, 1))
        total[:, :-1] += right * weights[:, 1:]
        total[:, 1:] += right * weights[:, :-1]
        total[:-1] += down * weights[1:]
        total[1:] += down * weights[:-1]
        count[:, :-1] += right
        count[:, 1:] += right
        count[:-1] += down
        count[1:] += down
        weights = np.where(rigid, onehot, total / count)
    return weights


def _confine(
    weights: np.ndarray,
    node_labels: np.ndarray,
    nodes: np.ndarray,
    used: np.ndarray,
    part: int,
    drawn_over: np.ndarray | None = None,
) -> np.ndarray:
    """A part's weights: its nodes (and those reached from it across a joint) keep theirs; any other node takes
    its nearest such node's, so an arm's edge follows the arm, not the body it rested on. Nodes on the part's
    `drawn_over` pixels (a skirt over the thighs, drawn by the torso) are never its own: the skirt goes with
    the body, not with the leg under it."""
    out = weights[used].copy()
    reached = (node_labels == part) | (weights[:, part] > 0.05)
    if drawn_over is not None and drawn_over.any():
        xi, yi = pixel_of(nodes, drawn_over.shape)
        reached &= drawn_over[yi, xi] == 0
    own_nodes = np.nonzero(reached)[0]
    foreign = ~reached[used]
    if foreign.any() and own_nodes.size:
        diff = nodes[used[foreign]][:, None, :] - nodes[own_nodes][None, :, :]
        nearest = own_nodes[np.argmin((diff**2).sum(axis=2), axis=1)]
        out[foreign] = weights[nearest]
    return out


def posed_vertices(layer: MeshLayer, transforms: np.ndarray, tips: Tips) -> np.ndarray:
    """(vertices, 2): sum over parts of weight * the part's pose of the vertex: A_part @ [x, y, 1], and past a
    limb's end joint, plus beyond_part * tip_shift_part, turned about the end joint by the tip's turn (growing
    from nothing at the joint to all of it a ramp past it)."""
    homogeneous = np.hstack([layer.rest, np.ones((len(layer.rest), 1))])
    per_part = np.einsum("pij,vj->vpi", transforms, homogeneous)
    per_part += layer.beyond[:, :, None] * tips.shifts[None, :, :]
    for part in np.nonzero(tips.turns)[0]:
        past = layer.beyond[:, part] > 0
        if not past.any():
            continue
        angle = tips.turns[part] * np.minimum(layer.beyond[past, part] / tips.ramps[part], 1.0)
        c, s = np.cos(angle), np.sin(angle)
        offset = per_part[past, part] - tips.pivots[part]
        per_part[past, part, 0] = tips.pivots[part, 0] + c * offset[:, 0] - s * offset[:, 1]
        per_part[past, part, 1] = tips.pivots[part, 1] + s * offset[:, 0] + c * offset[:, 1]
    return np.einsum("vp,vpi->vi", layer.weights, per_part)


def draw_layer(
    canvas: np.ndarray, layer: MeshLayer, transforms: np.ndarray, tips: Tips, interpolation: int
) -> None:
    """Deform `layer` by linear blend skinning and composite it over `canvas` (premultiplied "over").

    `tips`: how the pixels past a limb's end joint are carried (Tips, from render.tip_poses): the hand and foot keep their size
    while the limb is foreshortened, and a hand may turn at the wrist.
    """
    height, width = canvas.shape[:2]
    posed = posed_vertices(layer, transforms, tips)
    x0, y0 = np.floor(posed.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(posed.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    dst = posed[layer.triangles]  # (triangles, 3, 2)
    src = layer.rest[layer.triangles] - np.array(layer.origin, float)
    e1, e2 = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep = np.nonzero(np.abs(area) > 1e-3)[0]
    if keep.size == 0:
        return
    # Per triangle the affine map from output pixels back to the layer's pixels.
    d = np.concatenate([dst[keep], np.ones((keep.size, 3, 1))], axis=2)  # (k, 3, 3) rows [x, y, 1]
    coef = np.linalg.solve(d, src[keep])  # (k, 3, 2): [x, y, 1] @ coef = source (x, y)
    # The maps are made at half resolution and scaled up: piecewise-affine maps are continuous inside a
    # layer, and outside it the far-off sentinel keeps any blend with it far off too (transparent).
    half_w, half_h = (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2
    ids = np.zeros((half_h, half_w), np.int32)
    corners = np.round((dst[keep] - (x0 + 0.5, y0 + 0.5)) * (0.5 * (1 << SUBPIXEL))).astype(np.int32)
    for number, corner in enumerate(corners, start=1):
        cv2.fillConvexPoly(ids, corner, number, lineType=cv2.LINE_8, shift=SUBPIXEL)
    xs = (x0 + 0.5 + 2.0 * np.arange(half_w)).astype(np.float32)[None, :]
    ys = (y0 + 0.5 + 2.0 * np.arange(half_h)).astype(np.float32)[:, None]
    maps = []
    for axis in range(2):
        column = np.concatenate([[[0.0, 0.0, OUTSIDE]], coef[:, :, axis]]).astype(np.float32)
        a, b, c = (np.take(column[:, k], ids) for k in range(3))
        maps.append(cv2.resize(a * xs + b * ys + c, (2 * half_w, 2 * half_h))[: y1 - y0, : x1 - x0])
    map_x, map_y = maps
    warped = cv2.remap(layer.rgba, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT)
    over(canvas[y0:y1, x0:x1], warped)


def over(roi: np.ndarray, rgba: np.ndarray) -> None:
    """Premultiplied "over" in place, uint8 with cv2's saturating SIMD ops: roi = roi * (1 - alpha) + colour."""
    inverse = cv2.cvtColor(255 - rgba[..., 3], cv2.COLOR_GRAY2RGB)
    behind = cv2.multiply(roi, inverse, scale=1.0 / 255.0)
    cv2.add(behind, cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), dst=roi)  # contiguous colour: SIMD add
