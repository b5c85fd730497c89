"""Validate an untrusted file in a child process with memory and CPU limits, so a decoder that crashes,
hangs or balloons on a crafted file costs that child, never the server or the worker.

`validate_isolated(path, kind, timeout_s=..., memory_mb=...)` returns what `check_image` / `inspect_video`
would, or raises the InputError they raised; a crash, a time-out or the memory cap become an InputError too.
The child is this module run as `python -m marionet.media.sandbox <kind> <path> <memory_mb> <cpu_s>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from marionet.errors import InputError
from marionet.media.validate import ImageInfo
from marionet.media.video import VideoInfo

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _invalid(kind: str, message: str) -> InputError:
    return InputError(message, code=f"{kind}_invalid", param=f"{kind}_url")


def validate_isolated(path: Path, kind: str, *, timeout_s: float, memory_mb: int) -> ImageInfo | VideoInfo:
    """Run the validation of `kind` ("image" | "video") on `path` in a limited child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    cpu_s = max(1, int(timeout_s) + 1)
    command = [sys.executable, "-m", "marionet.media.sandbox", kind, str(path), str(memory_mb), str(cpu_s)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise _invalid(
            kind, f"Checking the {kind} took longer than {timeout_s:g} s; the file was refused."
        ) from None
    try:
        answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = None
    if not isinstance(answer, dict):
        if done.returncode < 0:
            raise _invalid(kind, f"The {kind} decoder crashed on this file (signal {-done.returncode}).")
        raise RuntimeError(f"validation child failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    if "error" in answer:
        raise InputError.from_record(answer["error"])
    return (ImageInfo if kind == "image" else VideoInfo)(**answer["info"])


def _child(kind: str, path: str, memory_mb: int, cpu_s: int) -> dict:
    import resource

    # Limits first: nothing has been decoded yet.
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    try:
        from dataclasses import asdict

        from marionet.media.validate import check_image, inspect_video

        info = check_image(Path(path)) if kind == "image" else inspect_video(Path(path))
        return {"info": asdict(info)}
    except InputError as exc:
        return {"error": exc.to_record()}
    except MemoryError:
        message = f"Checking the {kind} needed more than {memory_mb} MB of memory; the file was refused."
        return {"error": _invalid(kind, message).to_record()}
    except Exception as exc:  # e.g. cv2.error on a crafted file: the file is bad, not the server
        message = f"The {kind} could not be read ({type(exc).__name__}: {str(exc)[:200]})."
        return {"error": _invalid(kind, message).to_record()}


if __name__ == "__main__":
    kind_arg, path_arg, memory_arg, cpu_arg = sys.argv[1:5]
    result = _child(kind_arg, path_arg, int(memory_arg), int(cpu_arg))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
