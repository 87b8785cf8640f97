"""deploy/kuberay/rayservice.yaml: Serve's own schema accepts it, it builds `farm serve`'s app,
its pods fit the Renderer, and its network policies keep Ray's ports inside the farm.

No cluster is needed: Serve builds an application (deployments, their options and bound
arguments) without Ray running, which is what the Serve controller does with serveConfigV2
before it deploys anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray._common.utils import import_attr
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import BuiltApplication, build_app
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import ServeDeploySchema

from farm.local_farm import local_app, serve_settings
from farm.serve.wire import FarmAppArgs
from farm.settings import ENV_PREFIX, hash_token, reset_settings

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFEST = KUBERAY / "rayservice.yaml"
FARM_LABEL = {"app.kubernetes.io/name": "video-farm"}
API_PORT = 8000
# Ray's ports that nothing outside the farm's pods may reach (8265 only the operator may).
RAY_PORTS = {
    6379: "GCS",
    8265: "dashboard/Jobs API",
    10001: "Ray Client",
    8076: "object manager",
    52365: "dashboard agent",
    8080: "metrics export",
    9000: "Serve gRPC proxy",
    10002: "workers (first)",
    19999: "workers (last)",
}


def _locked(name: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements.lock")


RAY_VERSION = _locked("ray")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    with MANIFEST.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} in {MANIFEST.name}"
    return found[0]


@pytest.fixture(scope="module")
def service(docs: list[dict]) -> dict:
    return _one(docs, "RayService")


@pytest.fixture(scope="module")
def cluster(service: dict) -> dict:
    return service["spec"]["rayClusterConfig"]


@pytest.fixture(scope="module")
def head(cluster: dict) -> dict:
    return cluster["headGroupSpec"]


@pytest.fixture(scope="module")
def gpu_group(cluster: dict) -> dict:
    groups = cluster["workerGroupSpecs"]
    assert len(groups) == 1, [g["groupName"] for g in groups]
    return groups[0]


@pytest.fixture(scope="module")
def serve_config(service: dict) -> ServeDeploySchema:
    text = service["spec"]["serveConfigV2"]
    assert isinstance(text, str), "serveConfigV2 is a YAML string (KubeRay's type)"
    return ServeDeploySchema.model_validate(yaml.safe_load(text))


@pytest.fixture(scope="module")
def app_config(serve_config: ServeDeploySchema):
    assert len(serve_config.applications) == 1
    return serve_config.applications[0]


def _container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _farm_env(group: dict) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in _container(group).get("env", [])
        if e["name"].startswith(ENV_PREFIX)
    }


def _cpus(quantity: str | int) -> float:
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


# ---- the manifest's shape ---------------------------------------------------------------


def test_kinds_and_api_versions(docs: list[dict]):
    kinds = {d["kind"]: d["apiVersion"] for d in docs}
    assert kinds["RayService"] == "ray.io/v1"
    assert kinds["NetworkPolicy"] == "networking.k8s.io/v1"
    assert kinds["PersistentVolumeClaim"] == "v1"
    for d in docs:
        assert d["metadata"]["name"], d["kind"]
    # Nothing here opens a port outside the cluster.
    for key, value in _walk(docs):
        assert key not in ("hostPort", "hostNetwork", "nodePort"), key
        if key in ("type", "serviceType"):
            assert value not in ("LoadBalancer", "NodePort"), (key, value)


def _walk(node: Any) -> Any:
    """Every (key, value) pair of nested mappings and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_images_pinned_to_the_locked_ray(cluster: dict, head: dict, gpu_group: dict):
    assert ray.__version__ == RAY_VERSION, "the venv runs the locked Ray"
    assert cluster["rayVersion"] == RAY_VERSION
    assert _container(head)["image"].endswith(f":{RAY_VERSION}-py311-cpu")
    assert _container(gpu_group)["image"].endswith(f":{RAY_VERSION}-py311-gpu")
    # The images are built on rayproject/ray of that version (deploy/kuberay/Dockerfile).
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={RAY_VERSION}\n" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}" in dockerfile


def test_ray_token_auth_on(cluster: dict):
    assert cluster["authOptions"]["mode"] == "token"


# ---- serveConfigV2 ----------------------------------------------------------------------


def test_serve_config_passes_serves_schema(serve_config: ServeDeploySchema, app_config):
    assert serve_config.http_options.host == "0.0.0.0"  # the Service reaches the pod IP
    assert serve_config.http_options.port == API_PORT
    assert app_config.route_prefix == "/"
    FarmAppArgs.model_validate(app_config.args)  # every key is a setting with a valid value


def test_app_name_is_the_one_campaign_jobs_render_on(app_config):
    assert app_config.args["app_name"] == app_config.name


def test_jobs_go_to_the_head_service(service: dict, app_config):
    name = service["metadata"]["name"]
    assert app_config.args["jobs_address"] == f"http://{name}-head-svc:8265"


@pytest.fixture()
def pod_env(monkeypatch: pytest.MonkeyPatch, head: dict) -> dict[str, str]:
    """The head's FARM_* environment in this process (a valid stand-in for each Secret)."""
    for name in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    env = {}
    for name, value in _farm_env(head).items():
        if isinstance(value, dict):  # valueFrom a Secret
            assert name == "FARM_TOKENS", name
            value = f'{{"{hash_token("test-token")}": "acme"}}'
        env[name] = value
        monkeypatch.setenv(name, value)
    reset_settings()
    yield env
    reset_settings()


def _build(builder: Any, args: dict, name: str) -> BuiltApplication:
    """What the Serve controller does with an application of a config: build, don't deploy."""
    app = call_user_app_builder_with_args_if_necessary(builder, args)
    return build_app(app, name=name, default_runtime_env={})


def _described(value: Any) -> Any:
    """A bound argument, with handles to other deployments named by their deployment."""
    if isinstance(value, DeploymentHandle):
        return ("handle", value.deployment_name)
    return value


def _deployments(built: BuiltApplication) -> dict[str, dict]:
    out = {}
    for d in built.deployments:
        config = d._deployment_config
        autoscaling = config.autoscaling_config
        out[d.name] = {
            "class": d.func_or_class,
            "ray_actor_options": d.ray_actor_options,
            "num_replicas": config.num_replicas,
            "max_ongoing_requests": config.max_ongoing_requests,
            "autoscaling": autoscaling.model_dump() if autoscaling else None,
            "args": [_described(a) for a in d.init_args],
            "kwargs": {k: _described(v) for k, v in d.init_kwargs.items()},
        }
    return out


def test_builds_the_app_farm_serve_builds(pod_env, app_config, tmp_path: Path):
    # The manifest's app: its import path called with its args, over the pods' FARM_* env.
    built = _build(import_attr(app_config.import_path), app_config.args, app_config.name)
    # farm serve's app with the same settings: the args as its --settings file, same env.
    settings_file = tmp_path / "farm.yaml"
    settings_file.write_text(yaml.safe_dump(app_config.args))
    settings = serve_settings(str(settings_file))
    local_jobs = "http://127.0.0.1:8265"
    served = _build(local_app(settings, local_jobs), {}, app_config.name)

    assert built.ingress_deployment_name == served.ingress_deployment_name == "Api"
    ours, theirs = _deployments(built), _deployments(served)
    assert set(ours) == set(theirs) == {"Api", "Director", "Renderer"}
    # farm serve submits campaigns to its own Ray; the cluster to the head's Jobs API.
    assert theirs["Api"]["kwargs"].pop("jobs_address") == local_jobs
    assert ours["Api"]["kwargs"].pop("jobs_address") == app_config.args["jobs_address"]
    for name in ours:
        assert ours[name] == theirs[name], name

    # And the settings reached the deployments: GPU Renderers from zero, the pods' model.
    renderer = ours["Renderer"]
    assert renderer["ray_actor_options"]["num_gpus"] == app_config.args["renderer_num_gpus"]
    assert renderer["kwargs"]["device"] == "cuda"
    assert renderer["autoscaling"]["min_replicas"] == 0
    assert renderer["args"] == [pod_env["FARM_MODEL"]]
    assert ours["Director"]["args"][1] == pod_env["FARM_STORAGE_ROOT"]
    assert ours["Api"]["kwargs"]["tokens"] == {hash_token("test-token"): "acme"}


# ---- pods and resources -----------------------------------------------------------------


def test_head_is_cpu_only(head: dict, pod_env, app_config):
    assert head["rayStartParams"]["num-gpus"] == "0"
    resources = _container(head)["resources"]
    for part in ("requests", "limits"):
        assert "nvidia.com/gpu" not in resources.get(part, {}), part
    args = FarmAppArgs.model_validate(app_config.args).settings()
    assert _cpus(resources["limits"]["cpu"]) >= args.director_num_cpus + args.api_num_cpus + 1


def test_gpu_group_holds_the_renderer_pool(cluster: dict, gpu_group: dict, pod_env, app_config):
    assert cluster["enableInTreeAutoscaling"] is True
    settings = FarmAppArgs.model_validate(app_config.args).settings()
    resources = _container(gpu_group)["resources"]
    gpus = int(resources["limits"]["nvidia.com/gpu"])
    assert gpus >= 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    assert gpus >= settings.renderer_num_gpus > 0
    # One replica's CPUs fit a pod, with room for Ray's own processes and a proxy.
    assert _cpus(resources["limits"]["cpu"]) > settings.renderer_num_cpus
    # The group scales from zero and has room for the largest pool.
    assert gpu_group["minReplicas"] == gpu_group["replicas"] == 0
    replicas_per_pod = gpus // settings.renderer_num_gpus
    assert gpu_group["maxReplicas"] * replicas_per_pod >= settings.renderer_max_replicas
    assert settings.renderer_min_replicas == 0  # the pool lets the group go to zero
    tolerated = {t["key"] for t in gpu_group["template"]["spec"].get("tolerations", [])}
    assert "nvidia.com/gpu" in tolerated


def test_both_groups_read_the_same_settings(head: dict, gpu_group: dict):
    # Serve may build the app on any node: each must see the same FARM_* environment.
    assert _farm_env(head) == _farm_env(gpu_group)
    assert {"FARM_MODEL", "FARM_STORAGE_ROOT", "FARM_TOKENS"} <= set(_farm_env(head))
    assert _farm_env(head)["FARM_TOKENS"]["secretKeyRef"]["name"]  # never a literal


def test_checkpoint_volume_mounted_where_the_model_points(docs: list[dict], head, gpu_group):
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    model = _farm_env(head)["FARM_MODEL"]
    path = model.removeprefix("diffusers:")
    for group in (head, gpu_group):
        spec = group["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = [
            m
            for m in _container(group)["volumeMounts"]
            if path.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        assert len(mounts) == 1, f"{path} is on no volume of {group.get('groupName', 'head')}"
        assert mounts[0]["readOnly"] is True
        claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]
        assert claim["claimName"] in claims
    claim = _one(docs, "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # many pods on many nodes read it


# ---- network exposure -------------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod_labels(group: dict) -> dict:
    return group["template"]["metadata"]["labels"]


def _admits(rule: dict, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port for p in ports)


def _policies(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def test_policies_select_every_ray_pod(docs: list[dict], head: dict, gpu_group: dict):
    private = [p for p in _policies(docs) if p["metadata"]["name"] == "video-farm-ray-private"]
    assert len(private) == 1
    for group in (head, gpu_group):
        labels = _pod_labels(group)
        # Without its label a pod is selected by no policy, so every port is open.
        assert _selects(private[0]["spec"]["podSelector"], labels)
        assert all(labels.get(k) == v for k, v in FARM_LABEL.items())


def test_ray_ports_admit_only_the_farms_pods(docs: list[dict], head: dict, gpu_group: dict):
    """Every ingress rule that selects a Ray pod either comes from the farm's own pods, or
    admits the API port only, or the head's dashboard from the KubeRay operator only."""
    for policy in _policies(docs):
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec.get("ingress", []):
            peers = rule.get("from")
            assert peers, f"{policy['metadata']['name']}: a rule without 'from' admits anyone"
            for peer in peers:
                assert "ipBlock" not in peer, policy["metadata"]["name"]
                farm = set(peer) == {"podSelector"} and _selects(peer["podSelector"], FARM_LABEL)
                if farm:
                    continue
                for group in (head, gpu_group):
                    if not _selects(spec["podSelector"], _pod_labels(group)):
                        continue
                    for port, what in RAY_PORTS.items():
                        if port == 8265 and group is head and _is_operator(peer):
                            continue
                        assert not _admits(rule, port), (
                            f"{policy['metadata']['name']} admits {what} ({port}) from {peer}"
                        )
                # What outside peers may reach: the API, and the operator the dashboard.
                ports = {p["port"] for p in rule.get("ports", [])}
                assert ports in ({API_PORT}, {8265}), policy["metadata"]["name"]
                if ports == {8265}:
                    assert _is_operator(peer)
                    assert not _selects(spec["podSelector"], _pod_labels(gpu_group))


def _is_operator(peer: dict) -> bool:
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    namespaces = peer.get("namespaceSelector", {}).get("matchLabels", {})
    return pods == {"app.kubernetes.io/name": "kuberay-operator"} and bool(namespaces)


def test_the_api_is_reachable_through_the_ingress_controller(docs: list[dict], head, gpu_group):
    rules = [
        rule
        for p in _policies(docs)
        if all(_selects(p["spec"]["podSelector"], _pod_labels(g)) for g in (head, gpu_group))
        for rule in p["spec"]["ingress"]
        if {q["port"] for q in rule.get("ports", [])} == {API_PORT}
    ]
    assert rules, "no policy admits the API port"
    for rule in rules:
        for peer in rule["from"]:
            assert peer.get("namespaceSelector", {}).get("matchLabels"), peer


def test_readme_names_the_private_ports():
    text = (KUBERAY / "README.md").read_text()
    for port in (6379, 8265, 10001, 52365, 8000, 9000):
        assert str(port) in text, port
    assert "cluster.yaml" in text and "NetworkPolicy" in text
