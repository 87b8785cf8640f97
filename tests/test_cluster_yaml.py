"""cluster.yaml: valid for the installed Ray's cluster launcher, and locked down.

The schema is the one the launcher itself validates with (`ray/autoscaler/ray-schema.json`
inside the installed ray package), so a config that passes here is one `ray up` accepts.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"

# Ports that must never be reachable from the internet: dashboard + Jobs API, GCS, Ray
# Client, object manager, Serve HTTP.
RAY_PORTS = {
    8265: "dashboard/Jobs",
    6379: "GCS",
    10001: "Ray Client",
    8076: "object manager",
    8000: "Serve HTTP",
}
WORLD = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    with CLUSTER_YAML.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    text = importlib.resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text()
    return json.loads(text)


def _gpu_types(config: dict) -> dict[str, dict]:
    return {
        name: nt
        for name, nt in config["available_node_types"].items()
        if nt.get("resources", {}).get("GPU", 0) > 0
    }


def _commands(config: dict, key: str) -> list[str]:
    return [c for c in config.get(key, []) if isinstance(c, str)]


def _ray_start_head(config: dict) -> str:
    cmds = [c for c in _commands(config, "head_start_ray_commands") if "ray start" in c]
    assert len(cmds) == 1, cmds
    return cmds[0]


def _flag(cmd: str, name: str) -> list[str]:
    """Values of `--name=value` / `--name value` in a shell command line."""
    words = shlex.split(cmd.replace(";", " ; "))
    values = []
    for i, w in enumerate(words):
        if w.startswith(name + "="):
            values.append(w.split("=", 1)[1])
        elif w == name and i + 1 < len(words):
            values.append(words[i + 1])
    return values


# ---- schema ------------------------------------------------------------------------------


def test_schema_is_the_one_shipped_with_ray(schema: dict):
    path = Path(str(importlib.resources.files("ray.autoscaler").joinpath("ray-schema.json")))
    assert path.is_file()
    assert Path(ray.__file__).parent in path.parents
    assert "available_node_types" in schema["properties"]


def test_validates_against_ray_schema(config: dict, schema: dict):
    jsonschema.validate(config, schema)


def test_launcher_accepts_it_offline(config: dict):
    """What `ray up` does before touching AWS: fill in provider defaults, validate again."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_docker_images_match_installed_ray(config: dict):
    docker = config["docker"]
    assert docker["container_name"]
    for key in ("image", "head_image"):
        assert f":{ray.__version__}-py311" in docker[key], docker[key]
    assert docker["image"].endswith("-gpu")


# ---- node types --------------------------------------------------------------------------


def test_head_is_cpu_only(config: dict):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert "--num-gpus=0" in _ray_start_head(config)


def test_gpu_workers_scale_from_zero(config: dict):
    gpu = _gpu_types(config)
    assert gpu, "no GPU worker types"
    assert config["head_node_type"] not in gpu
    for name, nt in gpu.items():
        assert nt["min_workers"] == 0, name
        assert nt["max_workers"] >= 1, name
    assert sum(nt["max_workers"] for nt in gpu.values()) <= config["max_workers"]
    instance_types = {nt["node_config"]["InstanceType"] for nt in gpu.values()}
    assert "g5.xlarge" in instance_types
    assert config["idle_timeout_minutes"] > 0


def test_project_installed_from_synced_checkout(config: dict):
    mounts = config["file_mounts"]
    checkout = next(remote for remote, local in mounts.items() if local in (".", "./"))
    setup = " && ".join(
        _commands(config, "setup_commands")
        + _commands(config, "head_setup_commands")
        + _commands(config, "worker_setup_commands")
    )
    assert f"cd {checkout} && pip install" in setup
    assert re.search(r'pip install[^&;]* -e "\.\[cuda,s3\]"', setup), setup
    assert ".venv" in config["rsync_exclude"]


# ---- dashboard and token auth ------------------------------------------------------------


def test_dashboard_bound_to_loopback(config: dict):
    cmd = _ray_start_head(config)
    assert _flag(cmd, "--dashboard-host") == ["127.0.0.1"], cmd
    assert "0.0.0.0" not in " ".join(_flag(cmd, "--dashboard-host"))


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_token_auth_enabled(config: dict, key: str):
    starts = [c for c in _commands(config, key) if re.search(r"\b(ray start|serve start)\b", c)]
    assert starts, key
    for cmd in starts:
        # Each list item runs in its own shell: the mode and token must be set in it,
        # before Ray starts.
        start = re.search(r"\b(ray start|serve start)\b", cmd).start()
        mode = cmd.find("RAY_AUTH_MODE=token")
        assert 0 <= mode < start, cmd
        token = re.search(r"RAY_AUTH_TOKEN=(\S+)", cmd)
        assert token and token.start() < start, cmd
        # The value is expanded at run time, never written into the file.
        assert token.group(1).lstrip("\"'").startswith("$"), cmd


def test_token_never_hard_coded(config: dict):
    text = CLUSTER_YAML.read_text(encoding="utf-8")
    for m in re.finditer(r"RAY_AUTH_TOKEN\s*[=:]\s*(\S+)", text):
        assert m.group(1).lstrip("\"'").startswith("$"), m.group(0)
    # The token file comes from the operator's home directory, not from the repository.
    token_mounts = {r: loc for r, loc in config["file_mounts"].items() if "auth_token" in r}
    assert token_mounts
    for local in token_mounts.values():
        assert local.startswith("~/") or Path(local).is_absolute(), local


# ---- network exposure --------------------------------------------------------------------


def _world_rules(rules: list[dict]) -> list[dict]:
    out = []
    for rule in rules:
        cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])}
        cidrs |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
        if cidrs & WORLD:
            out.append(rule)
    return out


def _opens(rule: dict, port: int) -> bool:
    if str(rule.get("IpProtocol")) == "-1":
        return True
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return lo == -1 or lo <= port <= hi


def _assert_ray_ports_closed(rules: list[dict]) -> None:
    for rule in _world_rules(rules):
        for port, what in RAY_PORTS.items():
            assert not _opens(rule, port), f"{what} port {port} open to the world: {rule}"


def test_configured_ingress_is_ssh_from_a_cidr(config: dict):
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    assert not _world_rules(rules), rules
    _assert_ray_ports_closed(rules)
    for rule in rules:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule
        assert rule["IpRanges"] and all(r["CidrIp"] not in WORLD for r in rule["IpRanges"])


def test_no_node_type_brings_its_own_security_groups(config: dict):
    # A SecurityGroupIds entry would bypass the group checked above.
    for name, nt in config["available_node_types"].items():
        assert "SecurityGroupIds" not in nt["node_config"], name


def test_rules_the_launcher_would_create_keep_ray_ports_closed(config: dict):
    """A fresh group gets the launcher's defaults plus ours: still no Ray port to the world."""
    aws_config = pytest.importorskip("ray.autoscaler._private.aws.config")
    make_rules = getattr(aws_config, "_create_default_inbound_rules", None)
    if make_rules is None:
        pytest.skip("this Ray has no _create_default_inbound_rules")
    extended = config["provider"].get("security_group", {}).get("IpPermissions", [])
    rules = make_rules(["sg-0000000000000000"], extended)
    _assert_ray_ports_closed(rules)
