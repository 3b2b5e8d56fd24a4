"""Effort mapping and config validation: operators get errors that say what to fix."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from cluster.auth import hash_key
from cluster.cli import main
from cluster.config import (
    DEFAULT_CONFIG_PATH,
    REDACTED,
    ClusterConfig,
    EffortBudget,
    TaskSettings,
    load_config,
)
from cluster.config_schema import CHART_PART, chart_values_schema
from cluster.search import strategy_names
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
        "none",
        "minimal",
        "low",
        "medium",
        "high",
        "xhigh",
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


# --- a config file says only what it changes ---------------------------------------------------


def test_a_file_that_sets_only_the_model_keeps_every_default(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  name: Qwen2.5-7B-Instruct\n  path: /models/qwen\n")
    config = load_config(path)
    assert (config.model.name, config.model.path) == ("Qwen2.5-7B-Instruct", "/models/qwen")
    assert config.model.max_model_len == load_config().model.max_model_len
    assert config.efforts == load_config().efforts


def test_one_effort_key_merges_into_that_effort_and_lists_replace(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("efforts:\n  high:\n    strategy: beam_search\n    verifiers: [arithmetic]\n")
    high, default = load_config(path).efforts[Effort.HIGH], load_config().efforts[Effort.HIGH]
    assert (high.strategy, high.verifiers) == ("beam_search", ("arithmetic",))
    assert high.model_dump(exclude={"strategy", "verifiers"}) == default.model_dump(
        exclude={"strategy", "verifiers"}
    )


def test_a_merged_file_is_still_validated_with_the_models_messages(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("efforts:\n  low:\n    max_branches: 3\n")
    with pytest.raises(ValidationError, match="single_chain grows exactly one chain"):
        load_config(path)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("- model\n")
    with pytest.raises(ValueError, match="must hold a mapping of sections, not list"):
        load_config(path)


def test_an_empty_file_is_the_packaged_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# nothing changed\n")
    assert load_config(path) == load_config()


# --- deployments: Serve options pass through ------------------------------------------------


def test_deployment_settings_keep_serve_options_for_the_builder() -> None:
    config = load_config().with_overrides(
        {"deployments": {"gateway": {"health_check_period_s": 5, "ray_actor_options": {"memory": 2**30}}}}
    )
    assert config.deployments.gateway.serve_options == {
        "health_check_period_s": 5,
        "ray_actor_options": {"memory": 2**30},
    }
    assert config.deployments.planner.serve_options == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ray_actor_options": {"num_cpus": 2}}, r"ray_actor_options\.num_cpus: set num_cpus of the"),
        ({"request_router_config": {}}, "request_router_config: set by the application builder"),
        ({"_init_args": []}, "_init_args: set by the application builder"),
        ({"num_replicas": "many"}, r"deployments\.gateway\.num_replicas"),
    ],
)
def test_deployment_settings_refuse_what_the_builder_owns(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_config().with_overrides({"deployments": {"gateway": settings}})


def test_serve_autoscaling_of_a_worker_conflicts_with_the_apps_own() -> None:
    overrides = {
        "autoscaling": {"enabled": True},
        "deployments": {"planner": {"num_replicas": "auto", "autoscaling_config": {"max_replicas": 3}}},
    }
    with pytest.raises(ValidationError, match=r"deployments\.planner: autoscaling\.enabled lets the app"):
        load_config().with_overrides(overrides)
    # The gateway is not scaled by the app's policies: Serve's autoscaling is its own.
    gateway = {"num_replicas": "auto", "autoscaling_config": {"max_replicas": 3}}
    load_config().with_overrides({"autoscaling": {"enabled": True}, "deployments": {"gateway": gateway}})


# --- reasoning-cluster config show ------------------------------------------------------------


def test_config_show_prints_the_merged_config_with_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    path = tmp_path / "config.yaml"
    tenant_hash, ops_hash = hash_key("sk-tenant-key"), hash_key("sk-ops-key")
    path.write_text(
        "model: {name: Qwen2.5-7B-Instruct, path: /models/qwen2.5-7b}\n"
        "redis: {url: 'redis://redis.internal:6380/1', password_file: /run/secrets/redis}\n"
        f"auth: {{tenants: {{acme: {{api_key_sha256: {tenant_hash}}}}}, "
        f"ops: {{alice: {{api_key_sha256: {ops_hash}}}}}}}\n"
    )
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert shown["model"]["name"] == "Qwen2.5-7B-Instruct"
    assert shown["efforts"]["medium"]["strategy"] == "beam_search"  # a default, merged in
    assert shown["redis"]["url"] == "redis://redis.internal:6380/1"
    assert shown["auth"]["tenants"]["acme"]["api_key_sha256"] == REDACTED
    assert shown["auth"]["ops"]["alice"]["api_key_sha256"] == REDACTED
    assert shown["efforts"]["low"]["max_tokens_per_branch"] == 256  # "token" in a name is no secret
    for secret in (tenant_hash, ops_hash):
        assert secret not in out


def test_config_show_reports_a_refused_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("efforts:\n  high:\n    strategy: beam\n")
    assert main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "efforts.high.strategy" in err and "Traceback" not in err


# --- the chart's values schema, generated ---------------------------------------------------


def test_chart_schema_takes_the_config_model_with_every_key_optional_and_chart_keys_out() -> None:
    schema = chart_values_schema(json.loads(CHART_PART.read_text()))
    config = schema["properties"]["config"]
    text = json.dumps(schema)
    assert '"$ref"' not in text and '"$defs"' not in text  # self-contained
    assert "required" not in json.dumps(config)  # a values file says only what it changes
    assert "auth" not in config["properties"]
    assert {"url", "password_file"}.isdisjoint(config["properties"]["redis"]["properties"])
    assert {"host", "port", "metrics_port"}.isdisjoint(config["properties"]["http"]["properties"])
    budget = config["properties"]["efforts"]["additionalProperties"]
    assert budget["properties"]["strategy"]["enum"] == strategy_names()
    assert set(budget["properties"]) == set(EffortBudget.model_fields)
    # Serve options pass through deployments: their schema leaves them open.
    assert config["properties"]["deployments"]["properties"]["gateway"]["additionalProperties"] is True
    # The hand-written part keeps its own checks, inlined.
    cpu_image = schema["properties"]["image"]["properties"]["cpu"]
    assert cpu_image["properties"]["tag"]["not"] == {"const": "latest"}
