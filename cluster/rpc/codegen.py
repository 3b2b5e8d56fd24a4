"""Generate the Python stubs of `reasoning.proto`: `python -m cluster.rpc.codegen [--out DIR]`.

The stubs (reasoning_pb2.py, its .pyi, reasoning_pb2_grpc.py) are committed: Ray Serve's gRPC
proxy and every replica import them, in the local cluster, in Serve YAML deployments and in
the images, none of which runs a build step. Run this after changing the .proto;
tests/unit/test_rpc_stubs.py fails while the committed stubs differ from what it generates.
It needs grpcio-tools (the `dev` extra); serving needs only grpcio and protobuf.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

PROTO = Path(__file__).with_name("reasoning.proto")
# The directory that holds the `cluster` package: the proto's import root, so the generated
# gRPC module imports `cluster.rpc.reasoning_pb2`.
SOURCE_ROOT = Path(__file__).parents[2]


def generate(out: Path = SOURCE_ROOT) -> list[Path]:
    """Write the stubs under `out` (at cluster/rpc/); the files written."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    relative = PROTO.relative_to(SOURCE_ROOT)
    args = [
        "grpc_tools.protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(relative),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    stem = out / relative.parent / relative.stem
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.rpc.codegen", description=__doc__)
    parser.add_argument("--out", type=Path, default=SOURCE_ROOT, help="root to write cluster/rpc/ under")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
