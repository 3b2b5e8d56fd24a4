#!/usr/bin/env bash
# One command on a fresh machine: install everything, lint, type-check and run every test
# (unit, integration against a real Redis, end to end on Ray Serve + vLLM). Extra
# arguments go to pytest, e.g. scripts/test.sh -m unit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy cluster deployments autoscale monitoring
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
