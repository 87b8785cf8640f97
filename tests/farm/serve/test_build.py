"""One settings source: `farm serve`, `serve run` and a Serve config build the same app.

No Ray is started: each test reads the bound `Application` (every deployment's options and
constructor arguments), which is exactly what Serve would deploy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray._common.utils import import_attr
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema
from ray.serve.scripts import convert_args_to_dict

from farm.local_farm import demo_settings, local_app, serve_settings
from farm.serve.app import FarmAppArgs, farm_app
from farm.serve.wire import Limits
from farm.settings import Quota, Settings, hash_token, quota_for, reset_settings

IMPORT_PATH = "farm.serve.app:build_app"
JOBS = "http://127.0.0.1:8265"  # the Jobs API a local farm pins; serve run is told the same
SETTINGS_YAML = f"""
model: tiny
storage_root: /data/farm
renderer_min_replicas: 0
renderer_max_replicas: 3
renderer_num_gpus: 0.5
renderer_batch_wait_s: 0.05
director_max_videos: 4
max_seconds: 30
max_side: 640
tokens: {{{hash_token("t")}: acme}}
prompt_policy: {{'*': {{blocked_terms: [Tom Hanks]}}}}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    """No FARM_* variable from the outer environment leaks in; the cache starts empty."""
    for name in list(os.environ):
        if name.upper().startswith("FARM_"):
            monkeypatch.delenv(name)
    reset_settings()
    yield monkeypatch
    reset_settings()


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "farm.yaml"
    path.write_text(SETTINGS_YAML, encoding="utf-8")
    return path


def describe(app: Application) -> dict[str, dict[str, Any]]:
    """Every deployment of `app` by name: its Serve options and its constructor's arguments."""
    out: dict[str, dict[str, Any]] = {}

    def arg(value: Any) -> Any:
        if isinstance(value, Application):
            walk(value)
            return f"<{value._bound_deployment.name}>"
        return value

    def walk(node: Application) -> None:
        d = node._bound_deployment
        config = d._deployment_config
        autoscaling = config.autoscaling_config
        out[d.name] = {
            "num_replicas": None if autoscaling else config.num_replicas,
            "autoscaling_config": autoscaling.model_dump() if autoscaling else None,
            "max_ongoing_requests": config.max_ongoing_requests,
            "ray_actor_options": d.ray_actor_options,
            "config": config.model_dump(),
            "args": [arg(v) for v in d.init_args],
            "kwargs": {k: arg(v) for k, v in d.init_kwargs.items()},
        }

    walk(app)
    return out


def farm_serve(settings_file: Path | None = None) -> Application:
    """What `farm serve [--settings FILE]` runs (farm.cli → farm.local_farm)."""
    return local_app(serve_settings(str(settings_file or "")), JOBS)


def serve_run(*args: str) -> Application:
    """What `serve run farm.serve.app:build_app KEY=VALUE...` deploys."""
    builder = import_attr(IMPORT_PATH)
    return call_user_app_builder_with_args_if_necessary(builder, convert_args_to_dict(args))


def serve_config(args: dict[str, Any]) -> Application:
    """What a Serve config file with one farm application (`args`) deploys."""
    config = ServeDeploySchema.model_validate(
        {
            "applications": [
                {"name": "farm", "route_prefix": "/", "import_path": IMPORT_PATH, "args": args}
            ]
        }
    )
    (app,) = config.applications
    return call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), app.args)


def limits(app: Application) -> dict[str, Any]:
    return describe(app)["Api"]["kwargs"]["limits"]


def test_three_ways_to_start_the_farm_build_the_same_app(
    settings_file: Path, clean_env: pytest.MonkeyPatch
):
    by_farm_serve = describe(farm_serve(settings_file))
    config_args = yaml.safe_load(SETTINGS_YAML) | {"jobs_address": JOBS}
    by_serve_config = describe(serve_config(config_args))
    clean_env.setenv("FARM_SETTINGS_FILE", str(settings_file))
    reset_settings()
    by_serve_run = describe(serve_run(f"jobs_address={JOBS}", "app_name=farm"))
    by_farm_serve_env = describe(farm_serve())
    assert by_farm_serve == by_serve_run == by_serve_config == by_farm_serve_env
    # ... and it is the file's farm, not some other defaults.
    renderer = by_farm_serve["Renderer"]
    assert renderer["autoscaling_config"]["min_replicas"] == 0
    assert renderer["autoscaling_config"]["max_replicas"] == 3
    assert renderer["ray_actor_options"] == {"num_gpus": 0.5, "num_cpus": 1.0}
    assert renderer["args"] == ["tiny"] and renderer["kwargs"]["device"] == "cuda"
    assert by_farm_serve["Api"]["kwargs"]["limits"]["max_seconds"] == 30
    assert by_farm_serve["Api"]["kwargs"]["limits"]["max_side"] == 640


def test_with_no_settings_every_way_uses_the_settings_defaults():
    by_farm_serve = describe(farm_serve())
    assert describe(serve_run(f"jobs_address={JOBS}")) == by_farm_serve
    assert describe(serve_config({})) == by_farm_serve  # JOBS is the default Jobs API too
    assert by_farm_serve == describe(farm_app(Settings()))
    defaults = Settings()
    assert by_farm_serve["Api"]["kwargs"]["limits"] == Limits.from_settings(defaults).model_dump()
    assert Limits() == Limits.from_settings(defaults)  # Limits' defaults are the settings'
    renderer = by_farm_serve["Renderer"]
    assert renderer["autoscaling_config"]["max_replicas"] == defaults.renderer_max_replicas
    assert renderer["autoscaling_config"]["upscale_delay_s"] == defaults.renderer_upscale_delay_s
    assert renderer["args"] == [defaults.model]


def test_app_args_are_settings_overrides_without_defaults_of_their_own():
    assert set(FarmAppArgs.model_fields) == set(Settings.model_fields)
    assert all(f.default is None for f in FarmAppArgs.model_fields.values())
    assert FarmAppArgs().settings() == Settings()


def test_args_beat_env_beat_the_settings_file(settings_file: Path, clean_env: pytest.MonkeyPatch):
    clean_env.setenv("FARM_SETTINGS_FILE", str(settings_file))
    clean_env.setenv("FARM_MAX_STEPS", "9")
    clean_env.setenv("FARM_RENDERER_MAX_REPLICAS", "4")
    other = hash_token("u")
    app = describe(serve_run("renderer_max_replicas=5", f'tokens={{"{other}": "globex"}}'))
    assert app["Renderer"]["autoscaling_config"]["max_replicas"] == 5  # args over env
    assert app["Api"]["kwargs"]["limits"]["max_steps"] == 9  # env over the file's default
    assert app["Api"]["kwargs"]["limits"]["max_seconds"] == 30  # the file's
    # Dict settings merge key by key: the file's tenant stays, the args' joins it.
    assert app["Api"]["kwargs"]["tokens"] == {hash_token("t"): "acme", other: "globex"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("renderer_max_replica=3",), "renderer_max_replica"),
        (("renderer_min_replicas=-1",), "renderer_min_replicas"),
        (("renderer_min_replicas=3",), "renderer_min_replicas (3) must be <="),
        (("max_steps=many",), "max_steps"),
        (("tokens=acme",), "tokens must be a JSON object"),
    ],
)
def test_bad_args_name_the_setting(args: tuple[str, ...], fragment: str):
    with pytest.raises(ValidationError) as e:
        serve_run(*args)
    assert fragment in str(e.value)
    config_args = dict(a.split("=", 1) for a in args)
    with pytest.raises(ValidationError, match=fragment.split(" ")[0]):
        serve_config(config_args)


# A value other than the default for every setting; a new setting must be added here.
CHANGED: dict[str, Any] = {
    "storage_root": "s3://bucket/farm",
    "storage_options": {"anon": True},
    "model": "tiny",
    "model_dtype": "bfloat16",
    "text_encoder_device": "cpu",
    "attention": "flash",
    "model_cache": "/var/cache/models",
    "renderer_num_gpus": 1,
    "renderer_num_cpus": 2,
    "renderer_threads": 2,
    "renderer_min_replicas": 0,
    "renderer_max_replicas": 3,
    "renderer_initial_replicas": 2,
    "renderer_target_ongoing_requests": 2,
    "renderer_max_ongoing_requests": 16,
    "renderer_upscale_delay_s": 1,
    "renderer_downscale_delay_s": 10,
    "renderer_max_batch": 4,
    "renderer_batch_videos": 4,
    "renderer_batch_wait_s": 0.5,
    "renderer_interactive_threads": 2,
    "interactive_headroom": 0.5,
    "director_num_cpus": 0.5,
    "director_max_videos": 2,
    "max_resends": 1,
    "api_num_cpus": 1,
    "jobs_address": "http://head:8265",
    "jobs_python": "/opt/farm/bin/python",
    "app_name": "ads",
    "window": 12,
    "overlap": 3,
    "decode_chunk": 8,
    "max_seconds": 10,
    "max_side": 512,
    "max_pixels": 4096,
    "max_steps": 10,
    "max_variants": 10,
    "max_prompt_bytes": 100,
    "max_body_bytes": 1000,
    "tokens": {hash_token("t"): "acme"},
    "allow_anonymous": True,
    "prompt_policy": {"*": {"blocked_terms": ["x"]}},
    "quotas": {"*": {"max_concurrent_videos": 1}, "acme": {"gpu_seconds_per_day": 60}},
}


def test_every_setting_reaches_the_app():
    assert set(CHANGED) == set(Settings.model_fields)
    base = describe(farm_app(Settings()))
    unread = [k for k, v in CHANGED.items() if describe(farm_app(Settings(**{k: v}))) == base]
    assert unread == []


def test_quotas_reach_the_api_per_tenant_and_merge_field_by_field(
    clean_env: pytest.MonkeyPatch,
):
    clean_env.setenv("FARM_QUOTAS", '{"*": {"max_concurrent_videos": 3}}')
    args = '{"acme": {"max_concurrent_campaigns": 0}}'
    api = describe(serve_run(f"quotas={args}"))["Api"]["kwargs"]
    assert api["quotas"] == {
        "*": {"max_concurrent_videos": 3},
        "acme": {"max_concurrent_campaigns": 0},
    }
    quotas = {k: Quota.model_validate(v) for k, v in api["quotas"].items()}
    acme = quota_for(quotas, "acme")
    assert (acme.max_concurrent_videos, acme.max_concurrent_campaigns) == (3, 0)
    assert acme.max_queued_variants == Quota().max_queued_variants


def test_fairness_settings_reach_the_renderer(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("FARM_RENDERER_INTERACTIVE_THREADS", "2")
    clean_env.setenv("FARM_INTERACTIVE_HEADROOM", "0.5")
    renderer = describe(serve_run())["Renderer"]["kwargs"]
    assert renderer["interactive_threads"] == 2
    assert renderer["bulk_batch_videos"] == renderer["batch_videos"] // 2
    assert renderer["bulk_forward_rows"] == renderer["max_batch"] // 2


def test_demo_is_the_settings_with_its_root_model_and_anonymous_access(
    clean_env: pytest.MonkeyPatch,
):
    clean_env.setenv("FARM_RENDERER_MAX_REPLICAS", "3")  # the environment still counts
    demo = describe(local_app(demo_settings("/tmp/demo", "tiny"), JOBS))
    expected = describe(
        serve_run(
            "storage_root=/tmp/demo",
            "model=tiny",
            "director_num_cpus=0",
            "allow_anonymous=true",
            f"jobs_address={JOBS}",
        )
    )
    assert demo == expected
    assert demo["Renderer"]["autoscaling_config"]["max_replicas"] == 3
