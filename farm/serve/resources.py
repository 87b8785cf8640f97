"""Will the farm's actors fit the cluster? A check before deploying, naming what is short.

Ray never refuses an actor it cannot place: it waits, forever, for a node that fits. So a
Serve app at min replicas, or a job's actor pool, that asks for more CPUs or GPUs than the
cluster has free sits at "0/2" with nothing said. `check_fits` compares what a set of
actors asks for with what is free and raises `Unschedulable` naming the setting, the
resource and both amounts, before anything is started. It is for clusters that cannot
grow (the local farm, a job's own pool); an autoscaling cluster adds nodes on demand.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from farm.settings import Settings

__all__ = ["ActorGroup", "Unschedulable", "check_fits", "free_resources", "serve_app_groups"]

_RESOURCES = (("CPU", "CPUs", "num_cpus"), ("GPU", "GPUs", "num_gpus"))


class Unschedulable(RuntimeError):
    """Actors ask for more of a resource than the cluster has free; the message says which."""


@dataclass(frozen=True)
class ActorGroup:
    """`count` actors of one kind, each asking `cpus` CPUs and `gpus` GPUs."""

    name: str  # in the user's words: "Renderer replicas"
    count: int
    cpus: float
    gpus: float
    count_knob: str  # the setting that asks for `count`: "renderer_min_replicas"
    knob_prefix: str  # of the per-actor settings: "renderer" -> renderer_num_cpus


def serve_app_groups(settings: Settings) -> list[ActorGroup]:
    """The Serve app's actors at start: one Api, one Director, the Renderers it starts with."""
    s = settings
    # Settings keep min <= initial <= max: Serve starts `initial` replicas when it is set.
    renderers, knob = s.renderer_min_replicas, "renderer_min_replicas"
    if s.renderer_initial_replicas is not None:
        renderers, knob = s.renderer_initial_replicas, "renderer_initial_replicas"
    return [
        ActorGroup("the Api replica", 1, s.api_num_cpus, 0.0, "", "api"),
        ActorGroup("the Director replica", 1, s.director_num_cpus, 0.0, "", "director"),
        ActorGroup(
            "Renderer replicas",
            renderers,
            s.renderer_num_cpus,
            s.renderer_num_gpus,
            knob,
            "renderer",
        ),
    ]


def _amount(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_fits(groups: Sequence[ActorGroup], free: Mapping[str, float]) -> None:
    """Raise `Unschedulable` unless every group fits in `free` (e.g. ray.available_resources()).

    Groups are placed in order, so the first that does not fit in what the earlier ones
    left is the one named (with what the cluster had free before it).
    """
    left = {key: float(free.get(key, 0.0)) for key, _, _ in _RESOURCES}
    for g in groups:
        for key, plural, field in _RESOURCES:
            per_actor = g.cpus if key == "CPU" else g.gpus
            need = per_actor * g.count
            if need <= left[key] + 1e-9:
                left[key] -= need
                continue
            asked = f"{g.count_knob}={g.count} needs" if g.count_knob else "needs"
            raise Unschedulable(
                f"{asked} {_amount(need)} {plural} for {g.name}, the cluster has "
                f"{_amount(left[key])} free ({g.knob_prefix}_{field}={_amount(per_actor)})"
            )


def free_resources(wait_s: float = 10.0) -> dict[str, float]:
    """CPUs and GPUs free now on the Ray cluster this process is connected to."""
    import ray

    # Right after ray.init the node's resources may not be reported yet: an empty view
    # would read as "0 free" and refuse settings that fit.
    deadline = time.monotonic() + wait_s
    while not ray.cluster_resources() and time.monotonic() < deadline:
        time.sleep(0.1)
    available = ray.available_resources()
    return {key: float(available.get(key, 0.0)) for key, _, _ in _RESOURCES}
