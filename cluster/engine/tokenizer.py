"""The model's own tokenizer, for processes that render prompts but run no engine."""

from __future__ import annotations

from typing import Any

from cluster.config import ModelConfig
from cluster.models import resolve_model_dir


def load_tokenizer(config: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_dir(config))
