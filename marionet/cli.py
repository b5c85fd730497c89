"""The `marionet` command: serve, keys, animate, eval (and worker, for clusters)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marionet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="Run the API server (and, by default, its embedded worker pool).")
    serve.add_argument("--host", help="Interface to listen on (MARIONET_HOST, default 127.0.0.1).")
    serve.add_argument("--port", type=int, help="Port (MARIONET_PORT, default 8000).")
    serve.add_argument("--data-dir", type=Path, help="Database, files and secret (MARIONET_DATA_DIR).")
    serve.add_argument("--workers", type=int, help="Tasks run at once (MARIONET_WORKERS, default 1).")

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir", type=Path, default=argparse.SUPPRESS, help="MARIONET_DATA_DIR of the server."
    )
    keys = sub.add_parser("keys", help="Manage API keys.", parents=[data_dir])
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser(
        "create", help="Create a key; the key is printed alone on the last line.", parents=[data_dir]
    )
    create.add_argument("--name", required=True)
    keys_sub.add_parser("list", help="List keys (never the keys themselves).", parents=[data_dir])
    revoke = keys_sub.add_parser("revoke", help="Revoke a key by id, prefix or name.", parents=[data_dir])
    revoke.add_argument("key")

    animate = sub.add_parser("animate", help="Make one video locally: IMAGE performs the motion of VIDEO.")
    animate.add_argument("image", help="Character image: a local file, URL or data: URI.")
    animate.add_argument("video", help="Driving video: a local file or URL.")
    animate.add_argument("-o", "--output", type=Path, required=True, help="Output MP4.")
    animate.add_argument("--mode", choices=("std", "pro"), default="std")
    animate.add_argument("--orientation", choices=("image", "video"), default="image")
    animate.add_argument(
        "--sound", choices=("yes", "no"), default="yes", help="Keep the driving video's audio."
    )
    animate.add_argument("--prompt", default="")
    animate.add_argument("--model", default="kling-v3-motion-control", help="Model or engine name.")

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


def _settings(args: argparse.Namespace, **overrides: object):
    from marionet.config import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if getattr(args, "data_dir", None) is not None:
        values["data_dir"] = args.data_dir
    return Settings(**values)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from marionet.api.app import create_app

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    app = create_app(settings, run_workers=settings.embedded_workers)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from marionet.errors import NotFound
    from marionet.tasks.db import migrate
    from marionet.tasks.store import Store

    settings = _settings(args)
    migrate(settings)
    store = Store(settings)
    if args.keys_command == "create":
        key, token = store.create_key(args.name)
        print(f"Created key {key.id} '{key.name}'. It is shown only now; keep it:")
        print(token)
        return 0
    if args.keys_command == "list":
        print(f"{'id':>4}  {'name':<24} {'prefix':<12} {'created (UTC)':<20} status")
        for key in store.list_keys():
            created = datetime.fromtimestamp(key.created_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            status = "revoked" if key.revoked_at else "active"
            print(f"{key.id:>4}  {key.name:<24} {key.prefix:<12} {created:<20} {status}")
        return 0
    try:
        key = store.revoke_key(args.key)
    except NotFound as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"Revoked key {key.id} '{key.name}'.")
    return 0


class ProgressBar:
    """A one-line progress bar on stderr."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.started = time.monotonic()

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * self.width)
        elapsed = time.monotonic() - self.started
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\r[{bar}] {fraction * 100:5.1f}% {elapsed:6.1f}s {message[:40]:<40}")
        sys.stderr.flush()


def cmd_animate(args: argparse.Namespace) -> int:
    from marionet.config import Settings
    from marionet.engine import AnimationRequest
    from marionet.errors import MarionetError
    from marionet.tasks.runner import prepare_inputs, run_engine

    settings = Settings()
    engine = settings.engine_for_model(args.model)
    bar = ProgressBar()
    try:
        with tempfile.TemporaryDirectory(prefix="marionet-animate-") as scratch:
            bar(0.0, "reading inputs")
            inputs = prepare_inputs(
                args.image, args.video, args.orientation, Path(scratch), settings, allow_local=True
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            request = AnimationRequest(
                image_path=inputs.image_path,
                video_path=inputs.video_path,
                output_path=args.output.resolve(),
                mode=args.mode,
                character_orientation=args.orientation,
                keep_original_sound=args.sound == "yes",
                prompt=args.prompt,
                video_sha256=inputs.video_sha256,
            )
            result = run_engine(engine, request, bar, settings)
    except MarionetError as exc:
        sys.stderr.write(f"\nerror: {exc.code}: {exc.message}\n")
        return 1
    bar(1.0, "done")
    sys.stderr.write("\n")
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    print(
        f"{result.output_path} {result.width}x{result.height} {result.frame_count} frames "
        f"{result.duration_s:.2f}s @ {result.fps:.2f} fps"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "keys":
        return cmd_keys(args)
    if args.command == "animate":
        return cmd_animate(args)
    if args.command == "eval":
        from marionet.quality import run_eval_cli

        return run_eval_cli(args)
    if args.command == "worker":
        from marionet.cluster.worker import run_worker_cli

        return run_worker_cli(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
