"""Every metric the Grafana dashboards query is one a live farm actually exports.

The session's Ray (its head has a known metrics export port) runs the Serve app; one video
goes through HTTP (Api → Director → Renderer), a campaign job renders on the Renderer
pool, and one variant fails for real. Then Ray's metrics endpoint is scraped, the way
Prometheus does, and every metric name in a PromQL expression under dashboards/ must be
in the scrape. The farm's own metrics must come from this module's work: series that
were not there, or had another value, before it began (other modules share the cluster).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
import requests
import yaml

from farm.campaign.manifest import Manifest
from farm.campaign.spec import load_spec
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import Campaign
from farm.jobs.loop import render_concurrently
from farm.jobs.options import JobOptions
from farm.render.executors import LocalExecutor
from farm.serve.app import FarmAppArgs, build_app
from tests.helpers.cluster import deployed
from tests.helpers.paths import REPO

DASHBOARDS = REPO / "dashboards"
TOKEN = "metrics-test-token"
APP = "metrics"  # this module's Serve app
FARM_METRICS = {
    "ray_farm_variants_total",
    "ray_farm_campaign_variants",
    "ray_farm_render_seconds_bucket",
    "ray_farm_window_steps_total",
    "ray_farm_renderer_batch_size_bucket",
    "ray_farm_dispatch_queue_depth",
    "ray_farm_gpu_seconds_total",
    "ray_farm_frames_rendered_total",
    "ray_farm_failures_total",
}
# Ray's node agent reports these only on a node with GPUs.
GPU_ONLY = {"ray_node_gpus_utilization", "ray_node_gram_used", "ray_node_gram_available"}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def _spec(name: str) -> dict:
    spec = yaml.safe_load((REPO / "examples/campaign.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["products"] = spec["products"][:1]
    spec["locales"] = {k: spec["locales"][k] for k in ("en-US", "ar-SA")}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 64, "height": 64}]
    return spec | {"durations": [0.5], "fps": 32, "steps": 2, "preset": "tiny"}


@dataclass(frozen=True)
class Scrape:
    names: set[str]  # every metric name on the endpoint
    fresh: set[str]  # names with a series this module's work added or changed


def _names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.M)}


def _series(text: str) -> dict[str, str]:
    """Sample value by series (metric name and labels) of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = value
    return out


def _fresh(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {_names(key).pop() for key, value in after.items() if before.get(key) != value}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels, keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, e.g. "$campaign"
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        if m.group(2) is None and m.group(1).lower() not in _PROMQL_WORDS:
            names.add(m.group(1))
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """(dashboard file: panel title, expr) of every PromQL target in dashboards/*.json."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        panels = list(board.get("panels", []))
        while panels:
            panel = panels.pop()
            panels.extend(panel.get("panels", []))  # rows nest panels
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((f"{path.name}: {panel.get('title')}", target["expr"]))
        for var in board.get("templating", {}).get("list", []):
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", query or "")
            if m:
                out.append((f"{path.name}: ${var['name']}", m.group(1)))
    return out


@pytest.fixture(scope="module")
def scrape(ray_cluster, serve_http, tmp_path_factory) -> Scrape:
    """Ray's metrics endpoint after a real video, campaign and failure (see `Scrape`)."""
    node = next(n for n in ray.nodes() if n["Alive"])
    endpoint = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    assert node["MetricsExportPort"] == ray_cluster.metrics_port
    before = _series(requests.get(endpoint, timeout=10).text)
    root = str(tmp_path_factory.mktemp("metrics") / "farm-data")
    args = FarmAppArgs(
        model="tiny",
        storage_root=root,
        renderer_max_replicas=1,
        renderer_threads=1,
        director_num_cpus=0,
        tokens={hashlib.sha256(TOKEN.encode()).hexdigest(): "acme"},
    )
    with deployed(build_app(args), APP, "/", http=serve_http):
        url, auth = serve_http, {"Authorization": f"Bearer {TOKEN}"}

        # An ad-hoc video over HTTP: Api, Director, Renderer, Serve's HTTP proxy.
        body = {"prompt": "a bottle", "size": "64x32", "seconds": 0.5, "fps": 32, "steps": 2}
        video = requests.post(f"{url}/v1/videos", json=body, headers=auth, timeout=60).json()
        deadline = time.monotonic() + 120
        while video["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, video
            time.sleep(0.2)
            video = requests.get(f"{url}/v1/videos/{video['id']}", headers=auth).json()
        assert video["status"] == "completed", video

        # A variant that fails for real (overlap as long as the window): failures by reason.
        bad = prepare_campaign(Campaign.of_spec(load_spec(_spec("metrics-bad"))), root)
        once = JobOptions(concurrency=1)
        ex = LocalExecutor("tiny")
        report = render_concurrently(bad, ex, root, once, limit=1, window=4, overlap=4)
        assert report.failed == 1

        # A campaign job on the Renderer pool, as the Jobs API would start it. Its metrics
        # are flushed every second: a finished job's gauges leave the endpoint soon after.
        cid = prepare_campaign(Campaign.of_spec(load_spec(_spec("metrics"))), root).campaign_id
        job = [sys.executable, "-m", "jobs.render_campaign", "--root", root]
        job += ["--campaign-id", cid, "--serve-app", APP, "--max-attempts", "1"]
        env = os.environ | {"RAY_ADDRESS": ray_cluster.gcs_address}
        env |= {"PYTHONPATH": str(REPO), "RAY_metrics_report_interval_ms": "1000"}
        done = subprocess.run(job, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert Manifest.open(root, cid).progress().by_status["completed"] == 2

        deadline = time.monotonic() + 30
        while True:
            text = requests.get(endpoint, timeout=10).text
            fresh = _fresh(before, _series(text))
            serve_seen = any(n.startswith("ray_serve_num_http_requests") for n in fresh)
            if (fresh >= FARM_METRICS and serve_seen) or time.monotonic() > deadline:
                return Scrape(_names(text), fresh)  # past the deadline: the test names the gap
            time.sleep(1)


def test_promql_metric_names_parser():
    expr = (
        "histogram_quantile(0.95, sum by (le, preset) (rate(ray_farm_render_seconds_bucket"
        '{campaign=~"$campaign"}[$__rate_interval]))) / on (x) group_left ray_up or vector(0)'
    )
    assert promql_metric_names(expr) == {"ray_farm_render_seconds_bucket", "ray_up"}


def test_the_farm_exports_its_metrics(scrape: Scrape):
    assert scrape.fresh >= FARM_METRICS, sorted(FARM_METRICS - scrape.fresh)


def test_every_dashboard_metric_is_exported(scrape: Scrape):
    exprs = dashboard_exprs()
    assert len(exprs) >= 10, exprs
    used = {name: where for where, expr in exprs for name in promql_metric_names(expr)}
    assert any(n.startswith("ray_serve_") for n in used) and set(used) >= FARM_METRICS
    has_gpu = bool(ray.is_initialized() and ray.cluster_resources().get("GPU"))
    reporter = Path(ray.__file__).parent / "dashboard/modules/reporter/reporter_agent.py"
    missing = []
    for name, where in sorted(used.items()):
        if name in scrape.names:
            continue
        # No GPU on this node, so no sample: the name must be one Ray's node agent defines.
        defined = f'"{name.removeprefix("ray_")}"' in reporter.read_text(encoding="utf-8")
        if name in GPU_ONLY and not has_gpu and defined:
            continue
        missing.append(f"{name} ({where})")
    assert not missing, missing
