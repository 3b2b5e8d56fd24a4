"""model.engine_kwargs reach vLLM's engine arguments as they are; the service's own settings win."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cluster.config import ModelConfig
from cluster.engine.vllm_engine import engine_args, resolve_dtype
from cluster.models import QWEN_CODER_05B, SMALL_MODEL

pytestmark = pytest.mark.unit


def test_engine_kwargs_pass_through_over_the_service_defaults(tmp_path: Path) -> None:
    config = ModelConfig(
        name="served-name",
        path=str(tmp_path),
        max_model_len=1024,
        engine_kwargs={"max_num_seqs": 16, "enable_prefix_caching": False, "enforce_eager": False},
    )
    args = engine_args(config.model_copy(update={"dtype": "float32"}), tmp_path, cuda=False)
    assert (args.max_num_seqs, args.enable_prefix_caching, args.enforce_eager) == (16, False, False)
    assert args.model == str(tmp_path)
    assert args.served_model_name == "served-name"
    assert args.max_model_len == 1024
    assert args.dtype == "float32"


def test_without_engine_kwargs_the_engine_runs_eager_and_quiet(tmp_path: Path) -> None:
    args = engine_args(ModelConfig(path=str(tmp_path)), tmp_path, cuda=True)
    assert args.enforce_eager and args.disable_log_stats
    assert args.dtype == "bfloat16"


def test_an_unknown_engine_setting_is_named(tmp_path: Path) -> None:
    config = ModelConfig(path=str(tmp_path), engine_kwargs={"max_num_seq": 16})
    with pytest.raises(ValueError, match=r"model\.engine_kwargs: max_num_seq is not a vLLM engine setting"):
        engine_args(config, tmp_path, cuda=False)


def test_auto_dtype_is_the_faster_one_measured_for_the_model(tmp_path: Path) -> None:
    bf16_cpu = torch.cpu._is_avx512_bf16_supported()
    qwen = ModelConfig(name=QWEN_CODER_05B.name)
    assert resolve_dtype(qwen, cuda=False) == ("bfloat16" if bf16_cpu else "float32")
    assert resolve_dtype(ModelConfig(name=SMALL_MODEL), cuda=False) == "float32"
    assert resolve_dtype(ModelConfig(name="local", path=str(tmp_path)), cuda=False) == "float32"
    assert resolve_dtype(qwen, cuda=True) == "bfloat16"
    assert resolve_dtype(qwen.model_copy(update={"dtype": "float16"}), cuda=False) == "float16"
