"""The Serve application builder: Api → Director → Renderer pool, configured by FarmAppArgs.

    serve run farm.serve.app:build_app model=tiny storage_root=farm-data renderer_min_replicas=0

or in a Serve config file:

    applications:
      - name: farm
        route_prefix: /
        import_path: farm.serve.app:build_app
        args: {model: small, renderer_max_replicas: 4, renderer_num_gpus: 1}
"""

# No `from __future__ import annotations`: Serve reads the builder's annotation as a class to
# validate `args` into FarmAppArgs.

from typing import Any

from ray.serve import Application

from farm.serve.api import Api
from farm.serve.director import Director
from farm.serve.renderer import Renderer
from farm.serve.wire import FarmAppArgs

__all__ = ["FarmAppArgs", "build_app", "renderer_options"]


def renderer_options(args: FarmAppArgs) -> dict[str, Any]:
    """Deployment options of the Renderer pool: replicas or autoscaling, resources."""
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_gpus": args.renderer_num_gpus,
            "num_cpus": args.renderer_num_cpus,
        },
        # A batch of N videos is N ongoing requests; decodes and queries come on top.
        "max_ongoing_requests": max(args.renderer_max_ongoing_requests, args.renderer_batch_videos),
    }
    if args.renderer_min_replicas == args.renderer_max_replicas:
        options["num_replicas"] = args.renderer_max_replicas
        return options
    options["autoscaling_config"] = {
        "min_replicas": args.renderer_min_replicas,
        "max_replicas": args.renderer_max_replicas,
        "initial_replicas": args.renderer_initial_replicas,
        "target_ongoing_requests": args.renderer_target_ongoing_requests,
        "upscale_delay_s": args.renderer_upscale_delay_s,
        "downscale_delay_s": args.renderer_downscale_delay_s,
    }
    return options


def build_app(args: FarmAppArgs) -> Application:
    """The farm's Serve application (ingress: Api) for `args` (a FarmAppArgs or its dict)."""
    if not isinstance(args, FarmAppArgs):
        args = FarmAppArgs.model_validate(args)
    renderer = Renderer.options(**renderer_options(args)).bind(
        args.model,
        max_batch=args.renderer_max_batch,
        batch_videos=args.renderer_batch_videos,
        batch_wait_s=args.renderer_batch_wait_s,
        device="cuda" if args.renderer_num_gpus > 0 else "cpu",
        threads=args.renderer_threads,
        bulk_batch_videos=args.bulk_batch_videos,
        bulk_forward_rows=args.bulk_forward_rows,
        interactive_threads=args.renderer_interactive_threads,
    )
    director = Director.options(ray_actor_options={"num_cpus": args.director_num_cpus}).bind(
        renderer,
        args.storage_root,
        model=args.model,
        engine=args.engine(),
        max_videos=args.director_max_videos,
        storage_options=args.storage_options,
        max_resends=args.max_resends,
    )
    return Api.options(ray_actor_options={"num_cpus": args.api_num_cpus}).bind(
        director,
        args.storage_root,
        limits=args.limits().model_dump(),
        storage_options=args.storage_options,
        jobs_address=args.jobs_address,
        app_name=args.app_name,
        tokens=args.tokens,
        allow_anonymous=args.allow_anonymous,
        prompt_policy={k: v.model_dump() for k, v in args.prompt_policy.items()},
        max_body_bytes=args.max_body_bytes,
    )
