"""The `marionet` command: serve, keys, animate, eval (and worker, for clusters)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marionet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval", help="Quality figures of an output video against its driving video and image."
    )
    ev.add_argument("output")
    ev.add_argument("driving")
    ev.add_argument("image")
    ev.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    wk = sub.add_parser("worker", help="Run tasks from the cluster queue (MARIONET_QUEUE=celery).")
    wk.add_argument("--engines", help="Comma-separated engines to run (default: MARIONET_WORKER_ENGINES).")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "eval":
        from marionet.quality import run_eval_cli

        return run_eval_cli(args)
    if args.command == "worker":
        from marionet.cluster.worker import run_worker_cli

        return run_worker_cli(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
