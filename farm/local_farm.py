"""The embedded default: a whole farm on this machine (local Ray, the Serve app, Jobs).

`farm demo` runs inside it. Ray's dashboard/Jobs API and the farm's HTTP API listen on
127.0.0.1 only: Ray runs any code a client sends, so its ports never face a network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import ray
from ray import serve

from farm.serve.app import build_app
from farm.serve.wire import FarmAppArgs

APP_NAME = "farm"


@dataclass(frozen=True)
class LocalFarm:
    """Where the local farm answers."""

    dashboard_url: str  # Ray dashboard and Jobs API
    api_url: str  # the farm's HTTP API (OpenAPI at /docs)
    app_name: str = APP_NAME


@contextlib.contextmanager
def local_farm(
    root: str,
    model: str,
    *,
    dashboard_port: int = 8265,
    api_port: int = 8000,
    args: FarmAppArgs | None = None,
) -> Iterator[LocalFarm]:
    """Start local Ray + the Serve app (from `args`, else defaults); shut both down on exit."""
    context = ray.init(
        address="local",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": api_port})
        # The job renders through the Renderer pool; the Director serves ad-hoc videos.
        dashboard = f"http://{context.dashboard_url}"
        # No tokens by default: the demo serves 127.0.0.1 only, as tenant "default".
        args = args or FarmAppArgs(
            model=model, storage_root=root, director_num_cpus=0, allow_anonymous=True
        )
        args = args.model_copy(update={"jobs_address": dashboard, "app_name": APP_NAME})
        serve.run(build_app(args), name=APP_NAME, route_prefix="/")
        yield LocalFarm(dashboard, f"http://127.0.0.1:{api_port}")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
