"""The skinned-mesh renderer on the dance character: weights, a rigid head, the rest pose and a bent arm."""

from __future__ import annotations

import functools

import av
import cv2
import numpy as np
import pytest
from conftest import DATA, shared_picture

from marionet.engine.cpu import pose
from marionet.engine.cpu.engine import QUALITY, canvas_size
from marionet.engine.cpu.mesh import UNDER, _beyond_head_outline, build_mesh, posed_vertices
from marionet.engine.cpu.render import RenderSettings, render_frame, spec_transforms, tip_poses
from marionet.engine.cpu.retarget import Motion
from marionet.engine.cpu.rig import (
    BONES,
    JOINT_NAMES,
    PARTS,
    CharacterRig,
    J,
    _body_holes,
    _edges_to_forearms,
    build_character,
    centre_hinges,
    collar_to_torso,
    fill_background,
    hand_masks,
    joints_from_landmarks,
    label_parts,
    limb_lengths,
    push_pull_fill,
    refine_mask,
    skirt_over_thighs,
)
from marionet.media.validate import decode_with_alpha


@functools.cache
def character() -> tuple[np.ndarray, CharacterRig]:
    rgb = shared_picture("dance_ref_cartoon.png")
    image_pose = pose.detect_image_pose(rgb)
    assert image_pose is not None
    canvas = canvas_size(rgb.shape[1], rgb.shape[0], 720)
    rig = build_character(rgb, image_pose, canvas, QUALITY["std"].mesh_cells)
    return cv2.resize(rgb, canvas, interpolation=cv2.INTER_AREA), rig


def figure_joints(**moved: tuple[float, float]) -> np.ndarray:
    """Rig joints of a drawn 300 px stick figure standing with its arms down, some of them `moved`."""
    joints = np.zeros((len(JOINT_NAMES), 2))
    for name, xy in {
        "head": (150, 45), "neck": (150, 85), "pelvis": (150, 200),
        "l_shoulder": (195, 90), "l_elbow": (215, 150), "l_wrist": (220, 200), "l_hand": (222, 215),
        "r_shoulder": (105, 90), "r_elbow": (85, 150), "r_wrist": (80, 200), "r_hand": (78, 215),
        "l_hip": (170, 200), "l_knee": (172, 250), "l_ankle": (174, 300), "l_foot": (180, 310),
        "r_hip": (130, 200), "r_knee": (128, 250), "r_ankle": (126, 300), "r_foot": (120, 310),
        **moved,
    }.items():  # fmt: skip
        joints[J[name]] = xy
    return joints


FIGURE_ARMS = (
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_hand"),
    ("r_shoulder", "r_elbow"),
    ("r_elbow", "r_hand"),
)
FIGURE_LEGS = (("l_hip", "l_knee"), ("l_knee", "l_foot"), ("r_hip", "r_knee"), ("r_knee", "r_foot"))


def draw_limbs(image: np.ndarray, joints: np.ndarray, bones, value, width: int) -> None:
    """Each bone (joint name, joint name) of a drawn figure as a line `width` pixels wide."""
    for a, b in bones:
        cv2.line(image, tuple(map(int, joints[J[a]])), tuple(map(int, joints[J[b]])), value, width)


def mesh_rig(rgb, alpha, joints, background, specs, labels, size, beneath, over=None) -> CharacterRig:
    """A drawn figure's rig around its skinned mesh (6 px cells), for rendering it posed."""
    return CharacterRig(
        background=np.full_like(rgb, background),
        joints=joints,
        visibility=np.ones(len(joints)),
        bone_lengths=np.array([np.linalg.norm(joints[c] - joints[p]) for p, c in BONES]),
        parts=[],
        facing=1,
        size=size,
        cut_at_bottom=False,
        mesh=build_mesh(rgb, alpha, joints, specs, labels, size, 6.0, beneath, over),
    )


def swung(joints: np.ndarray, pivot: str, names: list[str], turn: float) -> np.ndarray:
    """The joints with `names` turned `turn` radians about the joint `pivot`."""
    out = joints.copy()
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    for name in names:
        out[J[name]] = (joints[J[name]] - joints[J[pivot]]) @ rotation.T + joints[J[pivot]]
    return out


def still(rig: CharacterRig, joints: np.ndarray, tip_trust: float | None = None) -> Motion:
    """One frame of `joints`; with `tip_trust`, the hands turn that much to their own bone's direction."""
    return Motion(
        joints=joints[None].copy(),
        arm_in_front=np.ones((1, 2), bool),
        left_leg_in_front=np.zeros(1, bool),
        scale=np.ones(1),
        mirrored=np.zeros(1, bool),
        axis_x=float(rig.joints[J["pelvis"], 0]),
        tip_trust=None if tip_trust is None else np.full((1, len(joints)), tip_trust),
    )


def test_mesh_weights_are_convex_and_the_head_is_rigid():
    _, rig = character()
    mesh = rig.mesh
    assert mesh is not None and 5 <= len(mesh.layers) <= len(mesh.specs) + 2
    # At most one layer per part, but for the body's pixels under each shoulder's cap (_kept_under_caps).
    under = [layer for layer in mesh.layers if layer.group == UNDER]
    assert len(under) <= 2 and all(mesh.specs[layer.part].kind == "torso" for layer in under)
    head = next(i for i, s in enumerate(mesh.specs) if s.kind == "head")
    for layer in mesh.layers:
        assert np.allclose(layer.weights.sum(axis=1), 1.0)
        assert layer.weights.min() >= 0.0
        assert len(layer.triangles) > 20
        if layer.part == head:
            # Every vertex of the face's own pixels follows the head alone: the face is never warped.
            inner = layer.weights[:, head] > 0.5
            assert np.allclose(layer.weights[inner, head], 1.0)
    triangles = sum(len(layer.triangles) for layer in mesh.layers)
    assert 1000 <= triangles <= 6000  # std: a coarse mesh, about 1-2k triangles per depth group


def test_rest_pose_reproduces_the_character_like_the_part_layers():
    image, rig = character()
    motion = still(rig, rig.joints)
    mesh = render_frame(rig, motion, 0, RenderSettings(mesh=True)).astype(np.int16)
    parts = render_frame(rig, motion, 0, RenderSettings(mesh=False)).astype(np.int16)
    person = cv2.resize(pose.detect_image_pose(image).mask, image.shape[1::-1]) > 0.5
    assert np.abs(mesh - image)[person].mean() < 6.0
    assert np.abs(mesh - image)[person].mean() <= np.abs(parts - image)[person].mean() + 1.0


def test_a_bent_elbow_keeps_the_arm_whole():
    image, rig = character()
    joints = rig.joints.copy()
    elbow, wrist, hand = J["l_elbow"], J["l_wrist"], J["l_hand"]
    angle = 0.8
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    joints[[wrist, hand]] = (joints[[wrist, hand]] - joints[elbow]) @ rotation.T + joints[elbow]
    frame = render_frame(rig, still(rig, joints), 0, RenderSettings(mesh=True))
    # Along the bent forearm the character's pixels are drawn all the way to the wrist: no hole, no tear.
    background = rig.background.astype(np.int16)
    for t in np.linspace(0.1, 0.9, 9):
        x, y = np.round(joints[elbow] + t * (joints[wrist] - joints[elbow])).astype(int)
        assert np.abs(frame[y, x].astype(np.int16) - background[y, x]).sum() > 30


def test_a_foreshortened_forearm_keeps_its_hand_full_size():
    _, rig = character()
    mesh = rig.mesh
    joints = rig.joints.copy()
    elbow, wrist, hand = J["l_elbow"], J["l_wrist"], J["l_hand"]
    short = 0.4  # the driver's forearm points at the camera
    joints[[wrist, hand]] += (short - 1.0) * (joints[wrist] - joints[elbow])
    motion = still(rig, joints)
    transforms = np.array(spec_transforms(rig, motion, 0, list(zip(mesh.specs, mesh.axes, strict=True))))
    tips = tip_poses(rig, motion, 0, mesh.specs, mesh.axes, transforms)
    part = next(i for i, s in enumerate(mesh.specs) if s.name == "l_forearm")
    layer = next(layer for layer in mesh.layers if layer.part == part)
    own = layer.weights[:, part] > 0.999
    posed = posed_vertices(layer, transforms, tips)
    axis = mesh.axes[part]
    rest_along = (layer.rest - rig.joints[wrist]) @ axis
    posed_along = (posed - joints[wrist]) @ axis
    hand_side, arm_side = own & (layer.beyond[:, part] > 0), own & (rest_along < 0)
    assert hand_side.sum() > 5 and arm_side.sum() > 5
    # Past the wrist the hand keeps its own length; the forearm itself is drawn short.
    assert np.allclose(posed_along[hand_side], rest_along[hand_side])
    assert np.allclose(posed_along[arm_side], short * rest_along[arm_side])


def gloved_figure() -> tuple[CharacterRig, np.ndarray]:
    """A drawn figure whose left hand is a green glove 40 px long past the wrist, and its rig's joints."""
    skin, glove, shirt, sky = (225, 170, 140), (40, 200, 60), (235, 235, 240), (60, 90, 160)
    joints = figure_joints(l_elbow=(215, 140), l_wrist=(218, 190), l_hand=(220, 210))
    rgb = np.full((330, 300, 3), sky, np.uint8)
    draw_limbs(rgb, joints, FIGURE_LEGS, skin, 16)
    draw_limbs(rgb, joints, FIGURE_ARMS, skin, 22)
    cv2.line(rgb, (218, 192), (221, 228), glove, 20)
    cv2.circle(rgb, (150, 45), 28, skin, -1)
    body = np.array([[108, 80], [192, 80], [205, 92], [188, 205], [112, 205], [95, 92]], np.int32)
    cv2.fillPoly(rgb, [body], shirt)
    alpha = np.any(rgb != sky, axis=2).astype(np.float32)
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    specs, labels, beneath = label_parts(alpha, joints, np.ones(len(joints)), size, rgb=rgb)
    return mesh_rig(rgb, alpha, joints, sky, specs, labels, size, beneath), joints


def glove_share(frame: np.ndarray, centre: np.ndarray, radius: int = 6) -> float:
    """The share of glove-green pixels in the disk of `radius` around `centre` of a rendered frame."""
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]]
    disk = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
    green = (frame[..., 1].astype(int) > 150) & (frame[..., 0].astype(int) < 110)
    return float(green[disk].mean())


def test_a_hand_turns_at_the_wrist_to_the_driver_s_hand():
    # The driver flaps a hand up at the wrist: the character's hand turns with it, by as much as the driver's
    # wrist and hand are trusted; the forearm stays where it is. Carried rigidly with the forearm, the elf's
    # hand lay along it as a long paddle the pose reader took for the forearm (18 deg off on the half pair).
    rig, joints = gloved_figure()
    wrist = joints[J["l_wrist"]]
    turned = swung(joints, "l_wrist", ["l_hand"], -np.pi / 2)  # the hand points out to the side
    along = (joints[J["l_hand"]] - wrist) / np.linalg.norm(joints[J["l_hand"]] - wrist)
    aside = (turned[J["l_hand"]] - wrist) / np.linalg.norm(turned[J["l_hand"]] - wrist)
    kept = render_frame(rig, still(rig, turned, tip_trust=0.0), 0, RenderSettings())
    flapped = render_frame(rig, still(rig, turned, tip_trust=1.0), 0, RenderSettings())
    assert glove_share(kept, wrist + 25 * along) > 0.9 and glove_share(kept, wrist + 25 * aside) < 0.1
    assert glove_share(flapped, wrist + 25 * aside) > 0.9 and glove_share(flapped, wrist + 25 * along) < 0.1
    elbow_side = wrist - 20 * along  # the forearm itself is drawn alike either way
    x, y = np.round(elbow_side).astype(int)
    assert np.array_equal(kept[y - 3 : y + 4, x - 3 : x + 4], flapped[y - 3 : y + 4, x - 3 : x + 4])


def test_a_hand_bent_back_over_its_wrist_is_drawn_whole_over_it():
    # A forearm pointing at the camera is drawn short, and the driver's hand may point back along it. The hand
    # then covers the wrist: drawn in the mesh's grid order, the two came out interleaved, a saw-tooth of the
    # wrist's dark bracer through the elf's palm.
    rig, joints = gloved_figure()
    wrist = joints[J["l_wrist"]]
    along = (joints[J["l_hand"]] - wrist) / np.linalg.norm(joints[J["l_hand"]] - wrist)
    for turn in (np.radians(165), -np.radians(165)):
        back = swung(joints, "l_wrist", ["l_hand"], turn)
        frame = render_frame(rig, still(rig, back, tip_trust=1.0), 0, RenderSettings())
        direction = (back[J["l_hand"]] - wrist) / np.linalg.norm(back[J["l_hand"]] - wrist)
        assert glove_share(frame, wrist + 28 * direction) > 0.99, turn  # grid order: 0.93 and 0.97
        assert glove_share(frame, wrist + 28 * along) < 0.1, turn


def test_only_holes_the_segmentation_doubted_are_filled():
    body = np.zeros((60, 80), np.uint8)
    body[10:50, 10:70] = 1
    body[20:30, 20:30] = 0  # framed sky: sure background
    body[20:30, 45:55] = 0  # a dark shirt the segmentation half-dropped
    body[40:60, 35:40] = 0  # a gap open to the bottom edge
    soft = np.where(body > 0, 0.9, 0.02).astype(np.float32)
    soft[20:30, 45:55] = 0.3
    filled = _body_holes(body, soft)
    assert filled[20:30, 45:55].all()
    assert not filled[20:30, 20:30].any() and not filled[40:60, 35:40].any()
    assert filled.sum() == 100


def test_a_cut_out_leaves_no_ghost_of_its_soft_edges_in_the_background():
    # The dance character as a cut-out on white, its opacity the segmentation's soft mask: on white the pale,
    # half-transparent hem and sleeves read as background, and would stay behind when she moves.
    rgb = shared_picture("dance_ref_cartoon.png")
    alpha = refine_mask(rgb, cv2.resize(pose.detect_image_pose(rgb).mask, rgb.shape[1::-1]))
    bgra = np.dstack([rgb[..., ::-1], np.round(alpha * 255).astype(np.uint8)])
    cut_out, opacity = decode_with_alpha(cv2.imencode(".png", bgra)[1].tobytes())  # as the engine reads it
    image_pose = pose.detect_image_pose(cut_out)
    canvas = canvas_size(rgb.shape[1], rgb.shape[0], 720)
    ghost = build_character(cut_out, image_pose, canvas).background
    assert ghost.min() < 200  # the segmentation alone leaves pale edges there (174; 2555 pixels under 240)
    background = build_character(cut_out, image_pose, canvas, opacity=opacity).background
    assert background.min() >= 240  # the cut-out's own opacity lifts all of her off the white


def test_a_light_remnant_in_a_bay_beside_the_person_leaves_with_them():
    # The cartoon's glowing sleeve hems lie outside her segmentation, in the bays between her arms and her
    # dress: left in the background, they hung in the sky as two bright crescents wherever her arms moved.
    rgb = np.zeros((200, 200, 3), np.uint8)
    rgb[:] = (30, 30, 80)  # night sky
    person = np.zeros((200, 200), np.float32)
    person[40:180, 80:120] = 1  # the body
    person[40:60, 120:175] = 1  # an upper arm out to the side
    person[40:110, 155:175] = 1  # its forearm hanging down: a bay between the arm and the body
    rgb[person > 0] = (200, 170, 150)
    rgb[85:95, 133:138] = (230, 230, 250)  # the glowing hem, in the bay
    rgb[10:15, 10:15] = (230, 230, 250)  # a star, far from her
    background = fill_background(rgb, person, person).astype(int)
    assert background[85:95, 133:138].sum(axis=-1).max() < 250  # the sky's 140, not the hem's 710
    assert (background[10:15, 10:15] == (230, 230, 250)).all()  # scenery away from the bays stays


def test_the_scenery_behind_a_standing_person_is_carried_across_their_narrow_hole():
    # A dark horizon between a light sky and a lit road, and a leg in front of it. Filled from all around, the
    # hole became a pale column through the horizon, which BlazePose read as a leg where the character's had
    # gone; filled along the rows, the horizon runs on behind her.
    rgb = np.zeros((240, 240, 3), np.uint8)
    rgb[:100] = (150, 170, 210)  # sky
    rgb[100:130] = (20, 20, 30)  # the horizon's buildings
    rgb[130:] = (220, 200, 180)  # the road
    leg = np.zeros((240, 240), np.float32)
    leg[30:240, 105:125] = 1
    rgb[leg > 0] = (240, 220, 200)
    background = fill_background(rgb, leg, leg).astype(int)
    horizon = background[108:122, 100:130].mean(axis=(0, 1))
    assert np.abs(horizon - (20, 20, 30)).max() < 25
    assert np.abs(background[180:230, 100:130] - (220, 200, 180)).max() < 20  # the road, not the leg
    hole = cv2.dilate((leg > 0).astype(np.uint8), np.ones((31, 31), np.uint8))
    around = push_pull_fill(rgb, 1.0 - hole.astype(np.float32))[108:122, 100:130].mean(axis=(0, 1))
    assert around.mean() > horizon.mean() + 40  # what a fill from all around would have made of it


def test_a_forearm_in_front_takes_its_pixels_and_the_body_beneath_is_filled():
    rgb = shared_picture("halfbody_ref_elf.jpg")
    image_pose = pose.detect_image_pose(rgb)
    canvas = canvas_size(rgb.shape[1], rgb.shape[0], 720)
    rig = build_character(rgb, image_pose, canvas, QUALITY["std"].mesh_cells)
    small = cv2.resize(rgb, canvas, interpolation=cv2.INTER_AREA)
    alpha = refine_mask(small, cv2.resize(image_pose.mask, canvas))
    # The same rig with its right wrist pulled in front of the face: the forearm's band over the face goes
    # to the forearm, and the head keeps those pixels beneath it.
    joints, depth = rig.joints.copy(), np.zeros(len(rig.joints))
    head, elbow, wrist, hand = J["head"], J["r_elbow"], J["r_wrist"], J["r_hand"]
    joints[elbow] = joints[head] + (60.0, 120.0)
    joints[wrist] = joints[head] + (10.0, 30.0)
    joints[hand] = joints[head] + (-10.0, 10.0)
    for in_front in (False, True):
        depth[wrist] = -rig.size if in_front else 0.0
        specs, labels, beneath = label_parts(alpha, joints, rig.visibility, rig.size, depth=depth)
        names = [s.name for s in specs]
        x, y = np.round(joints[wrist]).astype(int)
        assert names[labels[y, x]] == ("r_forearm" if in_front else "head")
        assert (beneath[y, x] == names.index("head")) == in_front
    mesh = build_mesh(small, alpha, joints, specs, labels, rig.size, rig.mesh.cell, beneath)
    layer = next(layer for layer in mesh.layers if layer.part == names.index("head"))
    ox, oy = layer.origin
    assert layer.rgba[y - oy, x - ox, 3] == 255  # the face under the hand, opaque in the head's own layer


def test_a_hand_on_the_hip_leaves_the_skirt_under_it_behind():
    # A drawn figure: white shirt, red skirt, skin arms; the right hand rests on the skirt's waistband.
    skin, shirt, skirt = (225, 170, 140), (235, 235, 240), (200, 25, 35)
    rgb = np.full((320, 300, 3), (90, 160, 200), np.uint8)
    person = np.zeros((320, 300), np.uint8)
    joints = figure_joints(r_elbow=(60, 150), r_wrist=(100, 190), r_hand=(118, 197))
    cv2.rectangle(rgb, (112, 85), (188, 180), shirt, -1)
    cv2.rectangle(rgb, (105, 180), (195, 262), skirt, -1)
    cv2.circle(rgb, (150, 45), 28, skin, -1)
    for a, b in (("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"), ("l_shoulder", "l_elbow"),
                 ("l_elbow", "l_wrist"), ("l_knee", "l_ankle"), ("r_knee", "r_ankle")):  # fmt: skip
        cv2.line(rgb, tuple(map(int, joints[J[a]])), tuple(map(int, joints[J[b]])), skin, 14)
    cv2.ellipse(rgb, (112, 194), (14, 9), 20, 0, 360, skin, -1)  # the hand, fingers down over the waistband
    person[np.any(rgb != (90, 160, 200), axis=2)] = 1
    alpha = person.astype(np.float32)
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    depth = np.zeros(len(joints))
    depth[[J["r_elbow"], J["r_wrist"], J["r_hand"]]] = -size  # the hand is in front of the body
    red = person.astype(bool) & np.all(rgb == skirt, axis=2)
    hand = np.zeros_like(person)
    cv2.ellipse(hand, (112, 194), (12, 7), 20, 0, 360, 1, -1)
    carried = {}
    for colour in (False, True):
        specs, labels, beneath = label_parts(
            alpha, joints, np.ones(len(joints)), size, depth=depth, rgb=rgb if colour else None
        )
        forearm = labels == [s.name for s in specs].index("r_forearm")
        carried[colour] = (forearm & red).sum()
        assert (forearm & hand.astype(bool)).sum() >= 0.95 * hand.sum()  # the hand leaves with the arm
    assert carried[False] > 100  # by distance alone, the arm's band takes the skirt around the hand
    assert carried[True] <= 0.2 * carried[False]  # by colour it stays on the body, but for a thin seam


def test_a_fist_at_the_chin_leaves_with_its_arm_and_the_face_is_filled_beneath():
    # The dancer at 6 s holds a fist at her chin. BlazePose marks a hand by three points at its knuckles; the
    # curled fingers below them stayed on the face (a second fist left there when the arm moved away).
    with av.open(str(DATA / "dance_fullbody_12s.mp4")) as container:
        frame = next(f for f in container.decode(video=0) if f.time >= 6.0)
    rgb = frame.to_ndarray(format="rgb24")
    image_pose = pose.detect_image_pose(rgb)
    assert image_pose is not None and sorted(image_pose.hands) == ["left", "right"]
    canvas = canvas_size(rgb.shape[1], rgb.shape[0], 720)
    scale = np.array(canvas) / rgb.shape[1::-1]
    small = cv2.resize(rgb, canvas, interpolation=cv2.INTER_AREA)
    alpha = refine_mask(small, cv2.resize(image_pose.mask, canvas))
    keypoints = image_pose.keypoints.copy()
    keypoints[:, :3] *= (*scale, scale[0])
    joints4 = joints_from_landmarks(keypoints)
    joints, visibility, depth = joints4[:, :2].astype(float), joints4[:, 3], joints4[:, 2]
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    hands = hand_masks({side: hand * scale for side, hand in image_pose.hands.items()}, alpha)
    nose = keypoints[pose.NOSE, :2]
    at_chin = min(hands, key=lambda name: np.linalg.norm(np.argwhere(hands[name]).mean(0)[::-1] - nose))
    fist = hands[at_chin]
    assert fist.sum() > 1000
    for given in (None, hands):
        specs, labels, beneath = label_parts(
            alpha, joints, visibility, size, depth=depth, rgb=small, hands=given
        )
        names = [s.name for s in specs]
        head_share = (labels[fist] == names.index("head")).mean()
        if given is None:
            assert head_share > 0.5  # by the pose's three hand points alone, most of the fist is face
        else:
            assert (labels[fist] == names.index(at_chin)).mean() > 0.98 and head_share == 0.0
            assert (beneath[fist] == names.index("head")).mean() > 0.9  # the face under it is filled


def test_a_hand_over_the_edge_of_the_hair_leaves_no_flag_when_it_moves_away():
    # A round head (40 px) with a hand over its upper right edge, reaching 25 px past it: the cartoon's hands
    # lie so on her hair. Filling the whole hand's silhouette as head left two finger-shaped flags of hair
    # beside her head once her hands moved. What lies past the head's outline (taken from the directions
    # either side of the hand) is left out, its own glow between the fingers too; the face's is kept.
    centre = np.array([100.0, 100.0])
    yy, xx = np.mgrid[0:200, 0:200]
    radius = np.hypot(xx - centre[0], yy - centre[1])
    head = (radius <= 40).astype(np.uint8)
    hand = np.zeros_like(head)
    cv2.rectangle(hand, (118, 48), (152, 82), 1, -1)  # over the edge at about 45 degrees up-right
    ring = cv2.dilate(hand, np.ones((5, 5), np.uint8)) & (1 - hand)
    glow = (ring & (radius > 45)).astype(np.uint8)  # the glow around the fingers, labelled head
    assert glow.sum() > 100
    own = (head | glow) & (1 - hand)
    hidden = head & hand
    hidden[radius > 40] = 0
    hidden |= hand  # as labelling gives it: the whole hand's silhouette beneath
    face = np.zeros_like(head)
    cv2.ellipse(face, (100, 110), (15, 25), 0, 0, 360, 1, -1)
    neck = np.array([100.0, 170.0])
    past = _beyond_head_outline(own, hidden, hand, centre, face, neck)
    assert past[(hidden > 0) & (radius > 40 + 3)].all()  # the flag
    assert not past[(hidden > 0) & (radius <= 40)].any()  # the hair under the hand stays, to be filled
    assert past[glow > 0].all()
    assert not past[(own > 0) & (radius <= 40)].any()
    # A fist beside the jaw, the head's label running on down into a shoulder (as the dancer's at 6 s does):
    # towards the neck the label is no outline, and the flap past the jaw goes all the same.
    shoulder = np.zeros_like(head)
    cv2.rectangle(shoulder, (100, 120), (175, 165), 1, -1)
    jaw_fist = np.zeros_like(head)
    cv2.rectangle(jaw_fist, (125, 100), (165, 135), 1, -1)
    jaw_fist &= 1 - face
    labelled = (head | shoulder) & (1 - jaw_fist)
    flap = _beyond_head_outline(labelled, jaw_fist, jaw_fist, centre, face, neck)
    assert flap[(jaw_fist > 0) & (radius > 40 + 3)].all() and not flap[(jaw_fist > 0) & (radius <= 40)].any()
    # A fist over the face (inside its oval) is the chin's business: nothing of it is taken away.
    fist = np.zeros_like(head)
    cv2.rectangle(fist, (92, 115), (125, 150), 1, -1)
    inside = fist & face
    assert not _beyond_head_outline(head & (1 - fist), inside, fist, centre, face, neck).any()


def test_a_sliver_of_face_along_a_forearm_goes_with_the_forearm():
    specs = [s for s in PARTS if s.kind in ("torso", "head") or s.name in ("l_upper_arm", "l_forearm")]
    head, forearm = [s.name for s in specs].index("head"), [s.name for s in specs].index("l_forearm")
    labels = np.full((120, 200), -1, np.int32)
    face = np.zeros((120, 200), np.uint8)
    cv2.circle(face, (60, 60), 40, 1, -1)
    labels[face > 0] = head
    labels[60:80, 70:190] = forearm  # a forearm across the chin, out past the face
    labels[57:60, 100:190] = head  # its blended top edge, read as face: a 3 px line hanging off the jaw
    alpha = (labels >= 0).astype(np.float32)
    alpha[57:60] *= 0.3
    seam = labels.copy()
    _edges_to_forearms(labels, specs, alpha)
    assert (labels[57:60, 100:190] == forearm).all()
    _edges_to_forearms(seam, specs, (seam >= 0).astype(np.float32))
    assert (seam[57:60, 100:190] == head).all()  # the same line, opaque: a seam inside the figure, kept
    assert (labels[(face > 0) & (np.arange(200)[None, :] < 60)] == head).all()  # the face itself stays


def test_a_hand_outline_keeps_what_looks_like_the_hand_and_leaves_the_skirt_between_the_fingers():
    # A drawn open hand (MediaPipe Hands' 21 landmarks) lying on a red skirt, fingers a fifth of the palm wide.
    landmarks = np.array([
        (100, 150), (88, 140), (75, 128), (65, 118), (58, 108),  # wrist, thumb
        (85, 102), (83, 85), (82, 73), (81, 63),  # index
        (100, 100), (100, 82), (100, 70), (100, 60),  # middle
        (113, 102), (115, 85), (116, 74), (117, 65),  # ring
        (125, 106), (128, 92), (130, 83), (131, 75),  # pinky
    ], np.float64)  # fmt: skip
    skin, skirt = (225, 170, 140), (200, 25, 35)
    rgb = np.full((200, 200, 3), skirt, np.uint8)
    points = np.round(landmarks).astype(np.int32)
    cv2.fillPoly(rgb, [cv2.convexHull(points[[0, 1, 5, 9, 13, 17]])], skin)
    for finger in ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20)):
        cv2.polylines(rgb, [points[list(finger)]], False, skin, 9)
    alpha = np.ones((200, 200), np.float32)  # the skirt is the person too
    hand, red = np.all(rgb == skin, axis=2), np.all(rgb == skirt, axis=2)
    by_shape = hand_masks({"right": landmarks}, alpha)["r_forearm"]
    by_colour = hand_masks({"right": landmarks}, alpha, rgb)["r_forearm"]
    assert (by_shape & hand).sum() >= 0.97 * hand.sum() and (by_shape & red).sum() > 300
    assert (by_colour & hand).sum() >= 0.97 * hand.sum()  # the hand, whole
    assert (by_colour & red).sum() <= 0.1 * (by_shape & red).sum()  # and hardly any skirt


def test_a_stray_piece_by_the_ankle_goes_to_the_leg_not_to_the_far_head():
    # A stick figure and a loose piece of it beside the right shin's end, past every limb's reach (a sliver of
    # glow at the cartoon's knee): it goes to its plainly nearest part. Taking the reach penalty off every cost
    # over two body sizes had also lowered the head's, the farthest part, and the piece went to the head.
    joints = figure_joints()
    person = np.zeros((330, 300), np.uint8)
    cv2.circle(person, (150, 45), 28, 1, -1)
    cv2.rectangle(person, (112, 85), (188, 200), 1, -1)
    draw_limbs(person, joints, FIGURE_ARMS + FIGURE_LEGS, 1, 14)
    cv2.circle(person, (240, 312), 5, 1, -1)  # the loose piece, 60 px from the left foot
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    specs, labels, _ = label_parts(person.astype(np.float32), joints, np.ones(len(joints)), size)
    assert specs[labels[312, 240]].kind == "leg"


def test_a_skirt_stays_whole_when_the_legs_part_and_the_thigh_under_it_is_leg():
    # A drawn figure in a red skirt over skin-coloured legs. As pieces of the thighs, the skirt tore along the
    # inner thighs whenever the legs moved apart, and its sides went off with the legs.
    joints = figure_joints()
    skin, red, shirt, sky = (225, 170, 140), (200, 25, 35), (235, 235, 235), (60, 90, 160)
    rgb = np.full((330, 300, 3), sky, np.uint8)
    draw_limbs(rgb, joints, FIGURE_LEGS, skin, 16)
    draw_limbs(rgb, joints, FIGURE_ARMS, skin, 14)
    cv2.rectangle(rgb, (112, 85), (188, 195), shirt, -1)
    skirt_outline = np.array([(120, 185), (180, 185), (205, 235), (95, 235)], np.int32)
    cv2.fillPoly(rgb, [skirt_outline], red)
    cv2.circle(rgb, (150, 45), 28, skin, -1)
    person = np.any(rgb != sky, axis=2).astype(np.uint8)
    skirt = np.zeros_like(person)
    cv2.fillPoly(skirt, [skirt_outline], 1)
    alpha = person.astype(np.float32)
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    visibility = np.ones(len(joints))
    specs, labels, beneath = label_parts(alpha, joints, visibility, size, rgb=rgb)
    names = [s.name for s in specs]
    assert names[labels[225, 110]] == "r_thigh"  # the skirt's sides fall to the thighs by distance alone
    over = skirt_over_thighs(rgb, alpha, labels, specs, joints)
    assert names[labels[225, 110]] == "torso" and names[labels[200, 150]] == "torso"
    assert names[labels[225, 170]] == "l_thigh" and over[225, 170] == names.index("torso")
    rig = mesh_rig(rgb, alpha, joints, sky, specs, labels, size, beneath, over)
    assert np.abs(render_frame(rig, still(rig, joints), 0, RenderSettings()).astype(int) - rgb).mean() < 2.0
    # The legs apart: each knee swung 40 degrees outwards about its hip, the shin with it.
    parted = joints
    for side, turn in (("l", -0.7), ("r", 0.7)):
        parted = swung(parted, f"{side}_hip", [f"{side}_{name}" for name in ("knee", "ankle", "foot")], turn)
    frame = render_frame(rig, still(rig, parted), 0, RenderSettings()).astype(int)
    inside = cv2.erode(skirt, np.ones((5, 5), np.uint8)) > 0
    is_red = np.abs(frame - red).sum(axis=2) < 60
    assert is_red[inside].mean() > 0.97  # the skirt, whole where it was (the old rig: 0.91)
    for side in ("l", "r"):
        hip, knee = parted[J[f"{side}_hip"]], parted[J[f"{side}_knee"]]
        for t in np.linspace(0.75, 0.95, 5):
            x, y = np.round(hip + t * (knee - hip)).astype(int)
            if not skirt[y, x]:  # the thigh out from under the skirt: the leg's colour, not the skirt's
                assert np.abs(frame[y, x] - skin).sum() < 60, (side, t, frame[y, x])


def test_a_knee_read_beside_the_leg_moves_onto_it_and_the_bent_leg_stays_whole():
    # BlazePose put the cartoon's knee, under her flared dress, beside her leg: the leg then bent about a point
    # off itself and the shin came away from the thigh with a gap at the knee.
    skin, sky = (225, 170, 140), (60, 90, 160)
    true = figure_joints()
    rgb = np.full((330, 300, 3), sky, np.uint8)
    draw_limbs(rgb, true, FIGURE_LEGS, skin, 16)
    draw_limbs(rgb, true, FIGURE_ARMS, skin, 14)
    cv2.rectangle(rgb, (112, 85), (188, 205), skin, -1)
    cv2.circle(rgb, (150, 45), 28, skin, -1)
    alpha = np.any(rgb != sky, axis=2).astype(np.float32)
    read = figure_joints(l_knee=(195, 250))  # 23 px right of the leg's middle, off the leg
    size = float(np.linalg.norm(read[J["neck"]] - read[J["pelvis"]]))
    centred = centre_hinges(read, alpha, size)
    # Onto the leg's middle line (hip to ankle), near the knee: moved across the leg, not along it.
    x, y = centred[J["l_knee"]]
    assert abs(x - (170 + 0.04 * (y - 200))) < 2.0 and abs(y - 250) < 15
    moved = [JOINT_NAMES[j] for j in np.nonzero(np.any(centred != read, axis=1))[0]]
    assert moved == ["l_knee"]  # joints on their limbs stay where the detector put them
    # Beside something wider than a limb (a long dress hiding the legs) a knee stays: no middle to find.
    dress = np.zeros_like(alpha)
    dress[100:320, 120:170] = 1.0  # 50 px: wider than a limb of this 115 px body (0.3 of it)
    beside = figure_joints(l_knee=(180, 250))
    assert np.array_equal(centre_hinges(beside, dress, size), beside)

    specs, labels, beneath = label_parts(alpha, centred, np.ones(len(centred)), size, rgb=rgb)
    rig = mesh_rig(rgb, alpha, centred, sky, specs, labels, size, beneath)
    # The left shin kicked 70 degrees outwards about its knee: the leg is skin all the way through the knee.
    bent = swung(centred, "l_knee", ["l_ankle", "l_foot"], -1.2)
    frame = render_frame(rig, still(rig, bent), 0, RenderSettings()).astype(int)
    hip, knee, ankle = bent[J["l_hip"]], bent[J["l_knee"]], bent[J["l_ankle"]]
    for a, b in ((hip, knee), (knee, ankle)):
        for t in np.linspace(0.0, 1.0, 9):
            x, y = np.round(a + t * (b - a)).astype(int)
            assert np.abs(frame[y, x] - skin).sum() < 60, (t, frame[y, x])


def figure_bones(
    joints: np.ndarray, depth: np.ndarray, visibility=None, shape=(300, 330)
) -> dict[str, float]:
    """limb_lengths of a figure, by the name of each bone's child joint."""
    seen = np.ones(len(joints)) if visibility is None else visibility
    lengths = limb_lengths(joints, depth, seen, shape)
    return {JOINT_NAMES[c]: float(lengths[b]) for b, (p, c) in enumerate(BONES)}


def test_a_limb_drawn_pointing_at_the_camera_keeps_its_length_for_other_poses():
    # The figure's upper arms are 61 px, forearms 50 px, thighs and shins 50 px, drawn in the picture's plane.
    flat = np.zeros(len(JOINT_NAMES))
    upright = figure_joints()
    assert figure_bones(upright, flat) == pytest.approx(
        {JOINT_NAMES[c]: float(np.linalg.norm(upright[c] - upright[p])) for p, c in BONES}
    )
    # Its left elbow held out towards the camera: drawn 20 px short of the shoulder, and BlazePose's depth
    # puts it 60 px nearer. The upper arm is as long as the right one; the forearm, drawn whole, stays.
    forward = figure_joints(l_elbow=(199, 110), l_wrist=(204, 160), l_hand=(206, 175))
    depth = flat.copy()
    depth[[J["l_elbow"], J["l_wrist"], J["l_hand"]]] = -60.0
    bones = figure_bones(forward, depth)
    assert bones["l_elbow"] == pytest.approx(np.hypot(20, 60), rel=0.01)  # the right one's, 63 px
    assert bones["l_wrist"] == pytest.approx(np.hypot(5, 50))
    # Drawn 0.8 of the right one (within what BlazePose's reading of two sides drawn alike varies by), it
    # stays as drawn, depth or not.
    slightly = figure_joints(l_elbow=(205, 139), l_wrist=(210, 189), l_hand=(212, 204))
    assert figure_bones(slightly, depth)["l_elbow"] == pytest.approx(np.hypot(10, 49))
    # Without the depth to say so, the drawn length is the picture's: an arm drawn short may be short.
    assert figure_bones(forward, flat)["l_elbow"] == pytest.approx(np.hypot(4, 20))
    # Nor with the right arm unseen (the mirror is not measured); the forearm still says the upper arm is
    # at least 0.85 of it.
    hidden = np.ones(len(JOINT_NAMES))
    hidden[J["r_elbow"]] = 0.2
    assert figure_bones(forward, depth, hidden)["l_elbow"] == pytest.approx(0.85 * np.hypot(5, 50))
    # Sitting, facing the camera: both thighs point at it, drawn 15 px long; the shins hang 50 px. Each
    # thigh is at least 0.9 of its shin; the shins keep their length.
    sitting = figure_joints(
        l_knee=(172, 215), l_ankle=(174, 265), l_foot=(180, 275),
        r_knee=(128, 215), r_ankle=(126, 265), r_foot=(120, 275),
    )  # fmt: skip
    depth = flat.copy()
    depth[[J[n] for n in ("l_knee", "l_ankle", "l_foot", "r_knee", "r_ankle", "r_foot")]] = -70.0
    bones = figure_bones(sitting, depth)
    for side in ("l_", "r_"):
        assert bones[side + "knee"] == pytest.approx(0.9 * np.hypot(2, 50))
        assert bones[side + "ankle"] == pytest.approx(np.hypot(2, 50))
    # A knee past the picture's bottom edge (a half-body portrait's guess) measures nothing.
    cut = figure_bones(sitting, depth, shape=(300, 210))
    assert cut["l_knee"] == pytest.approx(np.hypot(2, 15)) and cut["l_ankle"] == pytest.approx(
        np.hypot(2, 50)
    )


def test_a_raised_upper_arm_opens_no_crescent_of_background_at_its_shoulder():
    # A drawn figure in a T-shirt whose shoulders' corners lie just above and outside the shoulder joints, as
    # a photographed person's do. The upper arm's cap (a disc around the joint) took the shoulder's top from
    # the body and turns with the arm, and the picture's edge inside it turned too: raised either way, a
    # crescent of background opened between the cap and the chest (up to 25 of these 445 pixels).
    skin, shirt, sky = (225, 170, 140), (235, 235, 240), (60, 90, 160)
    joints = figure_joints()
    rgb = np.full((330, 300, 3), sky, np.uint8)
    draw_limbs(rgb, joints, FIGURE_LEGS, skin, 16)
    draw_limbs(rgb, joints, FIGURE_ARMS, skin, 22)
    cv2.circle(rgb, (150, 45), 28, skin, -1)
    cv2.rectangle(rgb, (140, 60), (160, 85), skin, -1)
    body = np.array([[108, 80], [192, 80], [205, 92], [188, 205], [112, 205], [95, 92]], np.int32)
    cv2.fillPoly(rgb, [body], shirt)
    alpha = np.any(rgb != sky, axis=2).astype(np.float32)
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    specs, labels, beneath = label_parts(alpha, joints, np.ones(len(joints)), size, rgb=rgb)
    rig = mesh_rig(rgb, alpha, joints, sky, specs, labels, size, beneath)
    torso = labels == [s.name for s in specs].index("torso")
    ys, xs = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    points = np.stack([xs, ys], axis=-1).astype(float)
    neck = joints[J["neck"]]
    for side in ("l", "r"):
        shoulder = joints[J[f"{side}_shoulder"]]
        # The body's own pixels around the shoulder, on the neck's side of the joint.
        chest = torso & ((points - shoulder) @ (neck - shoulder) >= 0)
        chest &= np.linalg.norm(points - shoulder, axis=-1) < 25
        assert chest.sum() > 300
        for turn in (-2.4, -1.6, -0.8, 0.8, 1.6, 2.4):
            raised = swung(
                joints, f"{side}_shoulder", [f"{side}_elbow", f"{side}_wrist", f"{side}_hand"], turn
            )
            frame = render_frame(rig, still(rig, raised), 0, RenderSettings()).astype(int)
            holes = (np.abs(frame - sky).sum(axis=2) < 40) & chest
            assert holes.sum() == 0, (side, turn, int(holes.sum()))


def test_the_top_of_a_t_shirt_by_the_neck_is_the_body_s_and_hair_on_the_shoulder_the_head_s():
    # The head's label reaches generously round its joint, and took a strip of a T-shirt along the top of the
    # shoulders: carried rigidly with the head, it stood up beside the neck as a wing whenever the head and
    # the shoulders moved apart (the photographed dancer, frames 144 and 231). A lock of dark hair lying over
    # the same shoulder, and the neck's skin, stay the head's.
    skin, hair, shirt, sky = (225, 170, 140), (40, 30, 25), (235, 235, 240), (60, 160, 150)
    joints = figure_joints(head=(150, 30), l_shoulder=(185, 90), r_shoulder=(115, 90))
    rgb = np.full((330, 300, 3), sky, np.uint8)
    draw_limbs(rgb, joints, FIGURE_LEGS, skin, 16)
    draw_limbs(rgb, joints, FIGURE_ARMS, skin, 16)
    cv2.rectangle(rgb, (141, 40), (159, 70), skin, -1)  # the neck
    cv2.circle(rgb, (150, 32), 22, skin, -1)
    cv2.ellipse(rgb, (150, 26), (24, 18), 0, 180, 360, hair, -1)  # hair on top
    body = np.array([[110, 64], [190, 64], [198, 90], [188, 205], [112, 205], [102, 90]], np.int32)
    cv2.fillPoly(rgb, [body], shirt)
    cv2.ellipse(rgb, (150, 64), (10, 9), 0, 0, 180, skin, -1)  # the neckline
    cv2.rectangle(rgb, (122, 48), (128, 80), hair, -1)  # a lock of hair over the right shoulder
    alpha = np.any(rgb != sky, axis=2).astype(np.float32)
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    specs, labels, _ = label_parts(alpha, joints, np.ones(len(joints)), size, rgb=rgb)
    head = [s.name for s in specs].index("head")
    shirt_pixels, lock = np.all(rgb == shirt, axis=2), np.all(rgb == hair, axis=2)
    lock[:48] = False
    neck = np.zeros_like(lock)
    neck[56:64, 144:157] = True
    assert (shirt_pixels & (labels == head)).sum() > 200  # the strip the head's reach takes
    before = labels.copy()
    collar_to_torso(rgb, labels, specs, joints)
    assert (shirt_pixels & (labels == head)).sum() <= 5  # a corner pixel or two
    assert np.array_equal(labels[lock], before[lock]) and (labels[lock] == head).sum() > 100
    assert np.all(labels[neck] == head)
    assert np.array_equal(labels[~shirt_pixels], before[~shirt_pixels])


# A T-shirt wide enough that the arms hang over its sides, and one narrower, with sky between it and the arms.
SHIRTS = {
    "against": [[108, 80], [192, 80], [196, 95], [184, 205], [116, 205], [104, 95]],
    "clear": [[112, 80], [188, 80], [180, 95], [172, 205], [128, 205], [120, 95]],
}


@pytest.mark.parametrize("shirt_cut", list(SHIRTS))
def test_an_arm_over_the_body_s_side_leaves_it_whole_and_one_clear_of_it_leaves_its_gap(shirt_cut):
    # A drawn figure, its arms hanging down, as in a photo of someone standing with arms at their sides. Swung
    # out, an arm over the shirt's side left the stretch it had hidden as a slit of background through the body
    # (315 pixels of sky at the first swing, of the 810 the arms hid; the photographed dancer's armpits, the
    # astronaut's flank): the body is drawn beneath it now. An arm with sky between it and the shirt leaves
    # no shirt-coloured ghost where it was (359 pixels when a one-pixel sliver of the arm's edge, labelled
    # body, seeded the trunk's rows).
    skin, shirt, sky = (225, 170, 140), (235, 235, 240), (60, 90, 160)
    arms = {}
    for side, sign in (("l", 1), ("r", -1)):
        arms |= {
            f"{side}_elbow": (150 + sign * 46, 150),
            f"{side}_wrist": (150 + sign * 48, 200),
            f"{side}_hand": (150 + sign * 49, 215),
        }
    joints = figure_joints(**arms)
    rgb = np.full((330, 300, 3), sky, np.uint8)
    draw_limbs(rgb, joints, FIGURE_LEGS, skin, 16)
    cv2.circle(rgb, (150, 45), 28, skin, -1)
    cv2.rectangle(rgb, (140, 60), (160, 85), skin, -1)
    body = np.array(SHIRTS[shirt_cut], np.int32)
    cv2.fillPoly(rgb, [body], shirt)
    trunk = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(trunk, [body], 1)
    draw_limbs(rgb, joints, FIGURE_ARMS, skin, 22)
    beside = cv2.dilate(trunk, np.ones((5, 5), np.uint8)) == 0  # off the shirt, its blended edge aside
    trunk = trunk.astype(bool)
    trunk[:115], beside[:115] = False, False  # the shoulders' caps: their sleeve turns with the arm
    hidden = trunk & np.all(rgb == skin, axis=2)
    assert (hidden.sum() > 300) == (shirt_cut == "against")
    alpha = np.any(rgb != sky, axis=2).astype(np.float32)
    size = float(np.linalg.norm(joints[J["neck"]] - joints[J["pelvis"]]))
    specs, labels, beneath = label_parts(alpha, joints, np.ones(len(joints)), size, rgb=rgb)
    rig = mesh_rig(rgb, alpha, joints, sky, specs, labels, size, beneath)
    for turn in (0.6, 1.2):
        out = swung(joints, "l_shoulder", ["l_elbow", "l_wrist", "l_hand"], -turn)
        out = swung(out, "r_shoulder", ["r_elbow", "r_wrist", "r_hand"], turn)
        frame = render_frame(rig, still(rig, out), 0, RenderSettings()).astype(int)
        sky_shown = np.abs(frame - sky).sum(axis=2) < 40
        arms_now = np.zeros(trunk.shape, np.uint8)
        for side in ("l", "r"):
            names = [f"{side}_shoulder", f"{side}_elbow", f"{side}_hand"]
            for a, b in zip(names, names[1:], strict=False):
                cv2.line(arms_now, tuple(map(int, out[J[a]])), tuple(map(int, out[J[b]])), 1, 30)
        off = arms_now == 0
        ghost = (np.abs(frame - shirt).sum(axis=2) < 40) & beside & off
        assert (sky_shown & trunk & off).sum() == 0, (turn, int((sky_shown & trunk & off).sum()))
        assert ghost.sum() == 0, (turn, int(ghost.sum()))


@functools.cache
def headshot() -> tuple[pose.ImagePose, CharacterRig, np.ndarray]:
    """The elf's head and shoulders (the top 55 % of her picture, 0.6 of its height wide): her posed rig, over
    a magenta background, and the labels of her parts."""
    import marionet.engine.cpu.rig as rig_module

    elf = shared_picture("halfbody_ref_elf.jpg")
    height, width = elf.shape[:2]
    rgb = np.ascontiguousarray(
        elf[: int(0.55 * height), width // 2 - int(0.3 * height) : width // 2 + int(0.3 * height)]
    )
    image_pose = pose.detect_image_pose(rgb)
    seen, original = {}, rig_module.label_parts

    def spy(*args, **kwargs):
        seen["labels"] = (result := original(*args, **kwargs))[1]
        return result

    rig_module.label_parts = spy
    try:
        canvas = canvas_size(rgb.shape[1], rgb.shape[0], 720)
        rig = build_character(rgb, image_pose, canvas, QUALITY["std"].mesh_cells)
    finally:
        rig_module.label_parts = original
    rig.background = np.zeros_like(rig.background)
    rig.background[:] = (255, 0, 255)
    return image_pose, rig, seen["labels"]


def test_a_head_and_shoulders_picture_s_ear_is_no_forearm():
    # BlazePose still places the arms in a head-and-shoulders picture: it put the elf's right one raised, its
    # wrist on her ear (visibility 0.84) and its elbow below the picture. Her ear and hair became a forearm and
    # flapped with the driver's arm. A wrist at the end of a forearm from outside the picture, where MediaPipe
    # Hands finds no hand, is not seen.
    image_pose, rig, _ = headshot()
    points = image_pose.keypoints
    height, width = image_pose.mask.shape
    assert points[pose.R_WRIST, 3] > 0.5 and 0 <= points[pose.R_WRIST, 1] < height  # the misreading
    assert points[pose.R_ELBOW, 1] >= height and "right" not in image_pose.hands
    assert rig.visibility[J["r_wrist"]] == 0 and rig.visibility[J["r_hand"]] == 0
    assert not [layer for layer in rig.mesh.layers if rig.mesh.specs[layer.part].name.endswith("forearm")]


def test_a_head_turning_over_a_wide_seam_with_the_torso_opens_no_line_of_background():
    # A head-and-shoulders picture's head meets the torso along her jaw, collar and the hair over her
    # shoulders, far wider than the neck it blends with the torso around: turned, it opened a line of
    # background along that seam. The torso keeps a band of the head's pixels there, drawn beneath it.
    _, rig, labels = headshot()
    kinds = [s.kind for s in rig.mesh.specs]
    head, torso = labels == kinds.index("head"), labels == kinds.index("torso")
    # The band either side of the seam that a turn of 0.2 rad moves the head's edge across, far from the neck.
    near = lambda mask: cv2.dilate(mask.astype(np.uint8), np.ones((61, 61), np.uint8)) > 0  # noqa: E731
    rest = render_frame(rig, still(rig, rig.joints), 0, RenderSettings()).astype(int)
    person = np.abs(rest - (255, 0, 255)).sum(axis=2) > 60
    interior = cv2.erode(person.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
    seam = near(head) & near(torso) & interior
    assert seam.sum() > 5000
    for turn in (-0.2, -0.1, 0.1, 0.2):
        turned = swung(rig.joints, "neck", ["head"], turn)
        frame = render_frame(rig, still(rig, turned), 0, RenderSettings()).astype(int)
        holes = (np.abs(frame - (255, 0, 255)).sum(axis=2) < 60) & seam
        assert holes.sum() <= 0.01 * seam.sum(), (turn, int(holes.sum()), int(seam.sum()))
