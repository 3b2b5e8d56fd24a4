"""The sandbox's limits as a section of the cluster config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.config import load_config
from cluster.sandbox import SandboxSettings

pytestmark = pytest.mark.unit


def test_the_shipped_config_has_the_default_limits() -> None:
    assert load_config().sandbox == SandboxSettings()


def test_an_operator_sets_some_limits_and_keeps_the_rest() -> None:
    config = load_config().with_overrides({"sandbox": {"cpu_seconds": 2, "memory_mib": 512}})
    assert (config.sandbox.cpu_seconds, config.sandbox.memory_mib) == (2, 512)
    assert config.sandbox.wall_seconds == SandboxSettings().wall_seconds


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cpu_secs": 2}, "cpu_secs"),
        ({"memory_mib": 16}, "memory_mib"),
        ({"max_processes": 0}, "max_processes"),
        ({"python": "/root/.pyenv/versions/3.11.7/bin/python3"}, "under /usr/"),
    ],
)
def test_a_bad_limit_is_refused_by_name(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_config().with_overrides({"sandbox": override})
