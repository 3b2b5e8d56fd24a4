#!/usr/bin/env bash
# One command on a fresh machine: install everything, then run the local cluster in the
# foreground (http://127.0.0.1:8000; pass --port N to change it). Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/reasoning-cluster up "$@"
