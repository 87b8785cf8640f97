"""The Serve application builder: Api → Director → Renderer pool, configured by `Settings`.

Every option comes from `farm.settings.Settings` (FARM_* env, $FARM_SETTINGS_FILE, defaults),
with the builder's args on top, so these build the same app from the same settings:

    farm serve --settings farm.yaml
    FARM_SETTINGS_FILE=farm.yaml serve run farm.serve.app:build_app renderer_min_replicas=0

or a Serve config file (`serve deploy` / `serve run config.yaml`):

    applications:
      - name: farm
        route_prefix: /
        import_path: farm.serve.app:build_app
        args: {model: small, renderer_max_replicas: 4, renderer_num_gpus: 1}

``app_name`` must be the name the app is deployed under (campaign jobs render on its pool).
"""

# No `from __future__ import annotations`: Serve reads the builder's annotation as a class to
# validate `args` into FarmAppArgs.

from typing import Any

from ray.serve import Application

from farm.serve.api import Api
from farm.serve.director import Director
from farm.serve.renderer import Renderer
from farm.serve.wire import FarmAppArgs, Limits
from farm.settings import Settings

__all__ = ["FarmAppArgs", "build_app", "farm_app", "renderer_options"]


def renderer_options(settings: Settings) -> dict[str, Any]:
    """Deployment options of the Renderer pool: replicas or autoscaling, resources."""
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_gpus": settings.renderer_num_gpus,
            "num_cpus": settings.renderer_num_cpus,
        },
        # A batch of N videos is N ongoing requests; decodes and queries come on top.
        "max_ongoing_requests": max(
            settings.renderer_max_ongoing_requests, settings.renderer_batch_videos
        ),
    }
    if settings.renderer_min_replicas == settings.renderer_max_replicas:
        options["num_replicas"] = settings.renderer_max_replicas
        return options
    options["autoscaling_config"] = {
        "min_replicas": settings.renderer_min_replicas,
        "max_replicas": settings.renderer_max_replicas,
        "initial_replicas": settings.renderer_initial_replicas,
        "target_ongoing_requests": settings.renderer_target_ongoing_requests,
        "upscale_delay_s": settings.renderer_upscale_delay_s,
        "downscale_delay_s": settings.renderer_downscale_delay_s,
    }
    return options


def _campaign_share(capacity: int, headroom: float) -> int:
    """What campaign work may hold of `capacity` when `headroom` of it stays interactive."""
    return max(1, int(capacity * (1 - headroom)))


def farm_app(settings: Settings) -> Application:
    """The farm's Serve application (ingress: Api) for `settings`."""
    s = settings
    renderer = Renderer.options(**renderer_options(s)).bind(
        s.model,
        max_batch=s.renderer_max_batch,
        batch_videos=s.renderer_batch_videos,
        batch_wait_s=s.renderer_batch_wait_s,
        device="cuda" if s.renderer_num_gpus > 0 else "cpu",
        threads=s.renderer_threads,
        bulk_batch_videos=_campaign_share(s.renderer_batch_videos, s.interactive_headroom),
        bulk_forward_rows=_campaign_share(s.renderer_max_batch, s.interactive_headroom),
        interactive_threads=s.renderer_interactive_threads,
        load=s.model_load(),
    )
    director = Director.options(ray_actor_options={"num_cpus": s.director_num_cpus}).bind(
        renderer,
        s.storage_root,
        model=s.model,
        engine={"window": s.window, "overlap": s.overlap, "decode_chunk": s.decode_chunk},
        max_videos=s.director_max_videos,
        storage_options=s.storage_options,
        max_resends=s.max_resends,
    )
    return Api.options(ray_actor_options={"num_cpus": s.api_num_cpus}).bind(
        director,
        s.storage_root,
        limits=Limits.from_settings(s).model_dump(),
        storage_options=s.storage_options,
        jobs_address=s.jobs_address,
        jobs_python=s.jobs_python,
        app_name=s.app_name,
        tokens=s.tokens,
        allow_anonymous=s.allow_anonymous,
        prompt_policy={k: v.model_dump() for k, v in s.prompt_policy.items()},
        # Only the fields each entry sets: a tenant's entry merges over "*" field by field.
        quotas={k: v.model_dump(exclude_unset=True) for k, v in s.quotas.items()},
        max_body_bytes=s.max_body_bytes,
        model=s.model,
    )


def build_app(args: FarmAppArgs) -> Application:
    """The app for the environment's settings with `args` on top (a FarmAppArgs or its dict).

    The builder of ``serve run farm.serve.app:build_app`` and of Serve config files.
    """
    if not isinstance(args, FarmAppArgs):
        args = FarmAppArgs.model_validate(args)
    return farm_app(args.settings())
