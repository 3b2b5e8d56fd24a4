"""Effort mapping and config validation: operators get errors that say what to fix."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.config import DEFAULT_CONFIG_PATH, ClusterConfig, TaskSettings, load_config
from cluster.types import Effort

pytestmark = pytest.mark.unit


def test_default_config_maps_each_effort_to_its_strategy() -> None:
    config = load_config()
    strategies = {effort: config.budget_for(effort).strategy for effort in Effort}
    assert strategies == {
        Effort.NONE: "single_chain",
        Effort.MINIMAL: "single_chain",
        Effort.LOW: "single_chain",
        Effort.MEDIUM: "beam_search",
        Effort.HIGH: "compute_optimal",
        Effort.XHIGH: "compute_optimal",
    }
    assert config.default_effort is Effort.MEDIUM


def test_budgets_grow_with_effort() -> None:
    config = load_config()
    budgets = [config.budget_for(e) for e in Effort]
    for lower, higher in itertools.pairwise(budgets):
        assert lower.max_reasoning_tokens < higher.max_reasoning_tokens
        assert lower.max_branches <= higher.max_branches
        assert lower.max_verifier_calls <= higher.max_verifier_calls
        assert lower.deadline_s <= higher.deadline_s
    none, minimal, xhigh = (config.budget_for(e) for e in (Effort.NONE, Effort.MINIMAL, Effort.XHIGH))
    # none and minimal are single short chains; xhigh is the long search for background mode.
    assert none.max_branches == minimal.max_branches == 1 and not none.verifiers
    assert xhigh.deadline_s > config.budget_for(Effort.HIGH).deadline_s


def test_effort_order_follows_openai() -> None:
    assert [e.value for e in sorted(Effort, key=lambda e: e.rank)] == [
        "none", "minimal", "low", "medium", "high", "xhigh"
    ]


def test_missing_effort_is_named(tmp_path: Path) -> None:
    raw = load_config().model_dump(mode="json")
    del raw["efforts"]["high"]
    with pytest.raises(ValidationError, match="no budget for high"):
        ClusterConfig.model_validate(raw)


def test_branch_larger_than_budget_is_refused() -> None:
    with pytest.raises(ValidationError, match="not even one branch fits"):
        load_config().with_overrides({"efforts": {"low": {"max_tokens_per_branch": 10_000}}})


def test_single_chain_must_have_one_branch() -> None:
    with pytest.raises(ValidationError, match="max_branches: 1"):
        load_config().with_overrides({"efforts": {"low": {"max_branches": 3}}})


def test_typo_in_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text().replace("deadline_s: 60", "deadline: 60"))
    with pytest.raises(ValidationError, match="deadline"):
        load_config(path)


def test_redis_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:6380/2")
    assert load_config().redis.url == "redis://10.0.0.5:6380/2"


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_generator_affinity_is_on_by_default_and_refuses_a_negative_margin() -> None:
    assert load_config().deployments.generator_affinity.enabled
    with pytest.raises(ValidationError, match=r"generator_affinity\.max_imbalance"):
        load_config().with_overrides({"deployments": {"generator_affinity": {"max_imbalance": -1}}})


def test_a_task_setting_keeps_the_other_task_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text() + "tasks:\n  game24: {step_temperature: 0.7}\n")
    tasks = load_config(path).tasks
    assert tasks["game24"] == TaskSettings(step_delimiter="\n", step_temperature=0.7)
    assert tasks["math"].step_delimiter == "\n"


def test_greedy_steps_are_refused_where_no_grammar_leaves_out_the_steps_tried() -> None:
    assert load_config().tasks["game24"].step_temperature == 0.0
    with pytest.raises(ValidationError, match=r"tasks\.math\.step_temperature 0 would propose the same step"):
        load_config().with_overrides({"tasks": {"math": {"step_temperature": 0}}})
