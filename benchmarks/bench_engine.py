"""Time the CPU engine on the shared pairs in std and pro: realtime factor, peak memory, ratio to decode+encode.

Run from the repository root: `python benchmarks/bench_engine.py [--markdown]`. Each case runs in its own
process (so peak RSS is that case's alone) with an empty pose cache (first-time cost), then again cached. The
process first loads the engine's libraries, as the server's task process does before its task arrives (that
load is reported apart). Each case runs `--runs` times (3) and the median run is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MARIONET_TEST_DATA", REPO.parent / "shared" / "data"))

PAIRS = {
    "dance": ("dance_ref_cartoon.png", "dance_fullbody_12s.mp4", "video"),
    "half": ("halfbody_ref_elf.jpg", "halfbody_talk_3s.mp4", "image"),
}


def run_case(pair: str, mode: str, workdir: Path, renderer: str = "mesh") -> dict:
    """One engine run (uncached, then cached) and a bare decode+encode of the same video, in this process."""
    import cv2

    from marionet.engine import preload_engines
    from marionet.engine.base import AnimationRequest
    from marionet.engine.cpu import CpuEngine
    from marionet.engine.cpu.engine import QUALITY, canvas_size
    from marionet.media.video import VideoWriter, probe_video, read_frames

    # The server's task process loads these before its task arrives (marionet.tasks.queue): timed apart.
    started = time.perf_counter()
    preload_engines()
    preload = time.perf_counter() - started
    image, video, orientation = PAIRS[pair]
    engine = CpuEngine(cache_dir=workdir / "poses", renderer=renderer)
    request = AnimationRequest(
        DATA / image,
        DATA / video,
        workdir / f"{pair}-{mode}.mp4",
        mode=mode,
        character_orientation=orientation,
    )
    started = time.perf_counter()
    result = engine.animate(request)
    first = time.perf_counter() - started
    started = time.perf_counter()
    engine.animate(request)
    cached = time.perf_counter() - started
    engine_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the floor run adds its own

    info = probe_video(DATA / video)
    quality = QUALITY[mode]
    height, width = cv2.imread(str(DATA / image)).shape[:2]
    size = canvas_size(width, height, quality.short_side)
    started = time.perf_counter()
    with VideoWriter(
        workdir / "floor.mp4", width=size[0], height=size[1], fps=info.output_fps, preset=quality.preset,
        crf=quality.crf, audio_from=DATA / video,
    ) as writer:  # fmt: skip
        for _, _, rgb in read_frames(DATA / video, info):
            writer.write(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    floor = time.perf_counter() - started
    return {
        "pair": pair,
        "mode": mode,
        "renderer": renderer,
        "size": f"{result.width}x{result.height}",
        "frames": result.frame_count,
        "video_s": round(result.duration_s, 2),
        "preload_s": round(preload, 2),
        "wall_s": round(first, 2),
        "wall_cached_s": round(cached, 2),
        "realtime": round(result.duration_s / first, 2),
        "realtime_cached": round(result.duration_s / cached, 2),
        "floor_s": round(floor, 2),
        "ratio_to_floor": round(first / floor, 2),
        "peak_rss_mb": round(engine_rss / 1024),
    }


def make_long_clip(path: Path, seconds: float = 30.0) -> None:
    """A 1080x1920 clip of `seconds` (the dance, looped): the memory check's worst case."""
    from marionet.media.video import VideoWriter, probe_video, read_frames

    source = DATA / "dance_fullbody_12s.mp4"
    info = probe_video(source)
    needed = round(seconds * info.output_fps)
    with VideoWriter(
        path, width=info.width, height=info.height, fps=info.output_fps, preset="ultrafast"
    ) as writer:
        while writer.frames_written < needed:
            for _, _, rgb in read_frames(source, info):
                if writer.frames_written >= needed:
                    break
                writer.write(rgb)


def run_long(workdir: Path, renderer: str = "mesh") -> dict:
    """Peak memory of one std run on a 30 s 1080p driving clip (a fresh process, so RSS is this run's)."""
    from marionet.engine import preload_engines
    from marionet.engine.base import AnimationRequest
    from marionet.engine.cpu import CpuEngine

    clip = workdir / "long.mp4"
    make_long_clip(clip)
    preload_engines()  # as in run_case: the task process has these loaded before its task arrives
    engine = CpuEngine(cache_dir=workdir / "poses", renderer=renderer)
    request = AnimationRequest(
        DATA / "dance_ref_cartoon.png", clip, workdir / "long-out.mp4", character_orientation="video"
    )
    started = time.perf_counter()
    result = engine.animate(request)
    wall = time.perf_counter() - started
    return {
        "pair": "dance looped to 30 s, 1080x1920",
        "mode": "std",
        "video_s": round(result.duration_s, 2),
        "wall_s": round(wall, 2),
        "realtime": round(result.duration_s / wall, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", help="internal: run one PAIR:MODE case in this process and print JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--long", action="store_true", help="only the 30 s 1080p memory check")
    parser.add_argument(
        "--runs", type=int, default=3, help="fresh-process runs per case (the median is shown)"
    )
    parser.add_argument(
        "--renderer", default="mesh", choices=("parts", "mesh"), help="marionet-cpu's renderer"
    )
    args = parser.parse_args()
    if args.long:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_long(Path(tmp), args.renderer)))
        return 0
    if args.case:
        pair, mode = args.case.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_case(pair, mode, Path(tmp), args.renderer)))
        return 0
    rows = []
    for pair in PAIRS:
        for mode in ("std", "pro"):
            # Each run in a fresh process, as each task runs in its own; this machine's speed varies by 10-20 %
            # from run to run, so the row is the median run (by first-run wall time) of `--runs`.
            runs = []
            for _ in range(args.runs):
                done = subprocess.run(
                    [sys.executable, __file__, "--case", f"{pair}:{mode}", "--renderer", args.renderer],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), file=sys.stderr)
            rows.append(sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}"
    )
    if args.markdown:
        print("| pair | mode | output | video s | wall s (first) | realtime (first) | realtime (cached pose) "
              "| decode+encode s | ratio to decode+encode | peak RSS MB | library load s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['pair']} | {r['mode']} | {r['size']} | {r['video_s']} | {r['wall_s']} | {r['realtime']}x "
                f"| {r['realtime_cached']}x | {r['floor_s']} | {r['ratio_to_floor']}x | {r['peak_rss_mb']} "
                f"| {r['preload_s']} |"
            )
    else:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
