"""Ray Job entrypoint: render a campaign's pending variants on the cluster it runs in.

    python -m jobs.render_campaign --root R --campaign-id C [--concurrency N]
        [--max-attempts K] [--backoff-s S] [--max-backoff-s S] [--preset P] [--actors A]
        [--serve-app NAME]

Attaches to the cluster (`ray.init()` inside a job), opens the manifest, takes a writer
epoch and renders every pending variant, N at a time, through one shared executor: a pool
of A Ray actors holding the model, or the Renderer of a running Serve app. Failed variants
are retried with backoff; the cancel marker stops it between variants. Running it again
resumes: only variants the manifest still has pending are rendered. Progress goes to
stdout, which Ray keeps as the job's logs (`farm campaign logs`).

Exit status: 0 when every variant was dispatched (or the campaign was cancelled); 1 when
the spec's failure budget stopped dispatch (Ray then reports the job FAILED, and its logs
and the manifest's run record say why); a storage outage longer than the retry window or
a newer writer (StaleWriter) ends it with a traceback and a non-zero status too.
"""

from __future__ import annotations

import argparse
import sys
import time

import ray

from farm import metrics
from farm.campaign.fields import DEFAULT_PRESET
from farm.campaign.manifest import Manifest
from farm.campaign.spec import FailureBudget
from farm.jobs.loop import render_concurrently
from farm.jobs.options import JobOptions
from farm.jobs.state import cancel_requested
from farm.render.protocols import Closeable
from farm.serve.resources import Unschedulable
from farm.settings import get_settings

SERVE_APP_WAIT_S = 20.0  # how long a job asks for its Serve app before using its own actors


def _executor(preset: str, actors: int, serve_app: str | None, priority: int = 0):
    """The Serve app's Renderer if asked for and reachable, else a RayExecutor pool.

    On a Renderer the campaign's work is bulk: interactive requests go first, and among
    campaigns the higher `priority` does.
    """
    if serve_app:
        from ray import serve

        from farm.serve.executor import ServeExecutor

        # A busy Serve controller can be slow to answer a new driver: ask for a while before
        # falling back, or the job would start actors beside a pool that is really there.
        deadline = time.monotonic() + SERVE_APP_WAIT_S
        while True:
            try:
                handle = serve.get_deployment_handle("Renderer", serve_app)
                print(f"rendering on Serve app {serve_app!r}", flush=True)
                return ServeExecutor(handle, interactive=False, priority=priority)
            except Exception as error:  # no such app, Serve not running: fall back to actors
                if time.monotonic() >= deadline:
                    print(
                        f"Serve app {serve_app!r} unavailable ({error}); using actors", flush=True
                    )
                    break
                time.sleep(1.0)
    from farm.render.executors import RayExecutor
    from farm.serve.resources import ActorGroup, check_fits, free_resources

    # Ray would wait forever for actors it cannot place: the job would sit at 0/N.
    pool = ActorGroup("the job's model actors", actors, 1.0, 0.0, "actors", "actor")
    check_fits([pool], free_resources())
    print(f"rendering on {actors} actor(s) with model {preset!r}", flush=True)
    # The model's load options (dtype, text encoder, cache) are the environment's settings.
    load = get_settings().model_load()
    return RayExecutor(preset, num_actors=actors, num_cpus=pool.cpus, load=load)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, JobOptions]:
    """The campaign to render, and the job options (defaults: `JobOptions`'s)."""
    parser = argparse.ArgumentParser(prog="jobs.render_campaign", description=__doc__)
    parser.add_argument("--root", required=True, help="Storage root (local dir or fsspec URL).")
    parser.add_argument("--campaign-id", required=True)
    for name, field in JobOptions.model_fields.items():  # JobOptions parses the values
        parser.add_argument(f"--{name.replace('_', '-')}", help=field.description)
    args = parser.parse_args(argv)
    return args, JobOptions.given(**{name: getattr(args, name) for name in JobOptions.model_fields})


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)
    ray.init()  # inside a Ray Job: attaches to the job's cluster
    manifest = Manifest.open(args.root, args.campaign_id)
    spec = manifest.spec
    preset = options.preset or spec.get("preset") or DEFAULT_PRESET
    total = manifest.variants.num_rows
    todo = manifest.pending(max_attempts=options.max_attempts).num_rows
    print(
        f"campaign {spec.get('name', '?')} ({args.campaign_id}): {total} variants, "
        f"{todo} to render, concurrency {options.concurrency}",
        flush=True,
    )
    budget = FailureBudget.model_validate(spec.get("failure_budget") or {})
    priority = int(spec.get("priority") or 0)
    try:
        executor = _executor(preset, options.actors, options.serve_app, priority)
    except Unschedulable as e:  # fail fast, naming what is short, instead of waiting
        print(f"FAILED: cannot start the job's actors: {e}", flush=True)
        return 2
    done = 0
    # metrics: the manifest's counts by status (throttled) and variants left to finish
    progress = metrics.CampaignProgressReporter(manifest)
    progress.update(force=True)
    metrics.record_queue_depth(args.campaign_id, todo)

    def on_done(row: dict, status: str, seconds: float) -> None:
        nonlocal done
        done += 1
        metrics.record_queue_depth(args.campaign_id, todo - done)  # metrics
        progress.update()  # metrics
        print(
            f"[{done}/{todo}] {row['variant_id']} {row['locale']} {row['format']}: "
            f"{status} in {seconds:.1f} s",
            flush=True,
        )

    start = time.perf_counter()
    try:
        report = render_concurrently(
            manifest,
            executor,
            args.root,
            options,
            cancelled=lambda: cancel_requested(args.root, args.campaign_id),
            on_done=on_done,
            worker=f"job:{ray.get_runtime_context().get_job_id()}",
            failure_budget=budget,
        )
    finally:
        if isinstance(executor, Closeable):
            executor.close()
        progress.update(force=True)  # metrics: the final counts
    if report.stopped_by_cancel:
        print(f"cancel requested: {report.cancelled} variants marked cancelled", flush=True)
    print(
        f"done: {report.completed} completed, {report.failed} failed, "
        f"{report.retries} retries, {report.cancelled} cancelled "
        f"in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    if report.stopped_by_budget:
        print(f"STOPPED: failure budget spent: {report.stopped_by_budget}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
