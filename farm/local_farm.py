"""The embedded default: a whole farm on this machine (local Ray, the Serve app, Jobs).

`farm demo` and `farm serve` run inside it. Ray's dashboard/Jobs API and the farm's HTTP API
listen on 127.0.0.1 only: Ray runs any code a client sends, so its ports never face a network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import ray
from ray import serve
from ray.serve import Application

from farm.serve.app import farm_app
from farm.settings import Settings, get_settings, setting_default

APP_NAME = setting_default("app_name")  # the name the local farm deploys its app under


@dataclass(frozen=True)
class LocalFarm:
    """Where the local farm answers."""

    dashboard_url: str  # Ray dashboard and Jobs API
    api_url: str  # the farm's HTTP API (OpenAPI at /docs)
    app_name: str = APP_NAME


def serve_settings(settings_file: str = "") -> Settings:
    """The settings of `farm serve`: `settings_file` if given, else $FARM_SETTINGS_FILE.

    FARM_* environment variables override either file, as they do for ``serve run``.
    """
    return Settings.from_yaml(settings_file) if settings_file else get_settings()


def demo_settings(root: str, model: str) -> Settings:
    """The settings of `farm demo`: the environment's, with its storage root and model.

    No tokens are needed: the demo serves 127.0.0.1 only, as tenant "default"; the Director
    takes no CPU of its own so a small machine's cores go to rendering.
    """
    return Settings(storage_root=root, model=model, director_num_cpus=0, allow_anonymous=True)


def local_app(settings: Settings, jobs_address: str) -> Application:
    """The Serve app a local farm runs: `settings`, submitting campaigns to this Ray."""
    # Both name this process's own Ray and app, whatever the settings say about a cluster;
    # model_copy, as a re-validation would read the environment over a from_yaml's file.
    return farm_app(
        settings.model_copy(update={"jobs_address": jobs_address, "app_name": APP_NAME})
    )


@contextlib.contextmanager
def local_farm(settings: Settings, *, dashboard_port: int, api_port: int) -> Iterator[LocalFarm]:
    """Start local Ray + the Serve app for `settings`; shut both down on exit."""
    context = ray.init(
        address="local",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": api_port})
        # Campaign jobs go to this Ray's Jobs API and render on this app's Renderer pool.
        dashboard = f"http://{context.dashboard_url}"
        serve.run(local_app(settings, dashboard), name=APP_NAME, route_prefix="/")
        yield LocalFarm(dashboard, f"http://127.0.0.1:{api_port}")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
