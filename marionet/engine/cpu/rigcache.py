"""The character's rig, cached by the image's content: a character animated again (an avatar driven by one
clip after another) skips its pose reading, cut-out, background fill and mesh.

The key is the image file's SHA-256, the canvas size, the mesh density, and the version of what builds a rig:
a hash of the source of the modules that build it and of the versions of the libraries they call. Any change
to them is a new key, never a stale rig. Files are written atomically as compressed plain arrays (no pickle),
about 1 MB for a 720p character (6 MB uncompressed; compressing costs 0.1 s, in the thread beside the pose
pass), beside the pose tracks; a rig read is marked used, so the cache's pruning keeps those in demand.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from marionet.engine.cpu.mesh import CharacterMesh, MeshLayer
from marionet.engine.cpu.rig import CharacterRig, PartLayer, PartSpec

# The modules whose code decides what a rig is (this one's included: it decides how a rig is stored).
_BUILDERS = ("marionet.engine.cpu.pose", "marionet.engine.cpu.rig", "marionet.engine.cpu.mesh",
             "marionet.engine.cpu.engine", "marionet.media.validate", __name__)  # fmt: skip
_LAYER_ARRAYS = ("rest", "weights", "triangles", "beyond", "rgba")


@functools.cache
def builder_version() -> str:
    """A short hash of the rig builders' source and of the versions of numpy, OpenCV and MediaPipe."""
    import importlib
    import importlib.metadata

    digest = hashlib.sha256()
    for name in _BUILDERS:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    digest.update(f"{np.__version__} {cv2.__version__} {importlib.metadata.version('mediapipe')}".encode())
    return digest.hexdigest()[:16]


def rig_key(image_sha256: str, canvas: tuple[int, int], mesh_cells: float | None) -> str:
    cells = "parts" if mesh_cells is None else f"{mesh_cells:g}"
    return f"rig-{image_sha256}-{canvas[0]}x{canvas[1]}-{cells}-{builder_version()}.npz"


def save_rig(rig: CharacterRig, path: Path) -> None:
    """Write a rig atomically (a half-written cache file must never be read)."""
    arrays: dict[str, np.ndarray] = {
        "background": rig.background,
        "joints": rig.joints,
        "visibility": rig.visibility,
        "bone_lengths": rig.bone_lengths,
    }
    meta: dict = {"facing": rig.facing, "size": rig.size, "cut_at_bottom": rig.cut_at_bottom, "parts": []}
    for i, part in enumerate(rig.parts):
        meta["parts"].append({"spec": asdict(part.spec), "origin": list(part.origin)})
        arrays[f"part{i}_rgba"], arrays[f"part{i}_axis"] = part.rgba, part.axis
    if rig.mesh is not None:
        mesh = rig.mesh
        meta["mesh"] = {"specs": [asdict(spec) for spec in mesh.specs], "cell": mesh.cell, "layers": []}
        arrays["mesh_axes"] = mesh.axes
        for i, layer in enumerate(mesh.layers):
            meta["mesh"]["layers"].append(
                {
                    "group": layer.group,
                    "part": layer.part,
                    "distal": layer.distal,
                    "origin": list(layer.origin),
                }
            )
            for name in _LAYER_ARRAYS:
                arrays[f"layer{i}_{name}"] = getattr(layer, name)
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_rig(path: Path) -> CharacterRig | None:
    """A cached rig, or None when there is none or it cannot be read; a rig read is marked used."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            parts = [
                PartLayer(
                    spec=PartSpec(**entry["spec"]),
                    rgba=data[f"part{i}_rgba"],
                    origin=tuple(entry["origin"]),
                    axis=data[f"part{i}_axis"],
                )
                for i, entry in enumerate(meta["parts"])
            ]
            mesh = None
            if "mesh" in meta:
                layers = [
                    MeshLayer(
                        group=entry["group"],
                        part=entry["part"],
                        distal=entry["distal"],
                        origin=tuple(entry["origin"]),
                        **{name: data[f"layer{i}_{name}"] for name in _LAYER_ARRAYS},
                    )
                    for i, entry in enumerate(meta["mesh"]["layers"])
                ]
                mesh = CharacterMesh(
                    specs=[PartSpec(**spec) for spec in meta["mesh"]["specs"]],
                    axes=data["mesh_axes"],
                    layers=layers,
                    cell=meta["mesh"]["cell"],
                )
            rig = CharacterRig(
                background=data["background"],
                joints=data["joints"],
                visibility=data["visibility"],
                bone_lengths=data["bone_lengths"],
                parts=parts,
                facing=meta["facing"],
                size=meta["size"],
                cut_at_bottom=meta["cut_at_bottom"],
                mesh=mesh,
            )
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(path)
    return rig
