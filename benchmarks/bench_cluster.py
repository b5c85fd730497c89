"""Cluster throughput: tasks per minute with 1 and 2 `marionet worker` processes on the same input.

Starts real PostgreSQL/Redis (scripts/services.sh), an API with MARIONET_QUEUE=celery and N workers, submits
the same short half-body task several times and times first create -> last completed.

    python benchmarks/bench_cluster.py --tasks 6 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.clusterkit import TERMINAL, running_cluster, wait_for  # noqa: E402

DATA = Path(os.environ.get("MARIONET_TEST_DATA", REPO.parent / "shared" / "data"))


def measure(workers: int, tasks: int, image: Path, video: Path) -> dict:
    """Run `tasks` identical tasks on `workers` workers; wall time from the first create to the last end."""
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        for n in range(workers):
            cluster.start_worker(f"w{n + 1}")
        image_url, video_url = cluster.upload(image), cluster.upload(video)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        ids = [cluster.create_task(image_url, video_url) for _ in range(tasks)]

        def finished() -> dict | None:
            states = cluster.tasks(ids)
            return states if all(t["status"] in TERMINAL for t in states.values()) else None

        states = wait_for(finished, 3600, "all tasks")
        elapsed = time.monotonic() - started
    completed = sum(t["status"] == "completed" for t in states.values())
    return {
        "workers": workers,
        "tasks": tasks,
        "completed": completed,
        "seconds": round(elapsed, 1),
        "tasks_per_minute": round(completed / elapsed * 60, 2),
        # Other work on the machine skews the figures: record how busy it was.
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image", type=Path, default=DATA / "halfbody_ref_elf.jpg")
    parser.add_argument("--video", type=Path, default=DATA / "halfbody_talk_3s.mp4")
    args = parser.parse_args()

    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    rows = [measure(n, args.tasks, args.image, args.video) for n in args.workers]
    print(
        json.dumps({"machine": machine, "input": [args.image.name, args.video.name], "runs": rows}, indent=2)
    )
    print(
        "\n| worker processes | tasks | completed | wall time (s) | tasks / minute | load avg (start, end) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['workers']} | {row['tasks']} | {row['completed']} | {row['seconds']} "
            f"| {row['tasks_per_minute']} | {row['load_avg_1m'][0]}, {row['load_avg_1m'][1]} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
