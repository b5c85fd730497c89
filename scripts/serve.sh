#!/usr/bin/env bash
# Set everything up and start the server on the embedded default (SQLite + local files in ./marionet-data).
# Extra arguments go to `marionet serve` (e.g. --port 9000). On first start it prints an API key and a curl example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/marionet serve "$@"
