"""Configs for tests of the plumbing (serving, streaming, CLI, autoscaling) rather than of answers.

They run on the small named model: it starts and generates several times faster than the
default, and none of these tests depends on the answer being right.
"""

from __future__ import annotations

from typing import Any

from cluster.config import ClusterConfig, load_config
from cluster.models import SMALL_MODEL


def plumbing_config(overrides: dict[str, Any] | None = None) -> ClusterConfig:
    """The default config on the small model, with `overrides` merged over it."""
    small = load_config().with_overrides({"model": {"name": SMALL_MODEL, "path": None}})
    return small.with_overrides(overrides or {})
