"""`farm demo` and `farm serve`: a whole farm on this machine (or the demo without Ray)."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time

import typer

from farm.cli.common import (
    JOB_WAIT_S,
    app,
    console,
    errors,
    follow,
    group_table,
    progress_bar,
)
from farm.settings import setting_default

# The local farm's ports: Ray's own default dashboard port (also the default jobs_address's)
# and Serve's own default HTTP port. Both listen on 127.0.0.1 only (farm.local_farm).
DASHBOARD_PORT = typer.Option(8265, help="Ray dashboard / Jobs API port (127.0.0.1).")
API_PORT = typer.Option(8000, help="The farm's HTTP API port (127.0.0.1).")


@app.command()
def demo(
    spec_path: str = typer.Option(
        "examples/packshot-campaign.yaml", "--spec", help="Campaign to run."
    ),
    root: str = typer.Option(
        setting_default("storage_root"), help="Storage root (local dir or fsspec URL)."
    ),
    preset: str = typer.Option("", help="Model preset (default: the campaign's)."),
    in_process: bool = typer.Option(
        False, "--in-process", help="Skip Ray: render in this process (fastest to start)."
    ),
    limit: int = typer.Option(0, help="With --in-process: render at most this many variants."),
    concurrency: int | None = typer.Option(
        None, help="Variants in flight in the campaign job (default: JobOptions')."
    ),
    dashboard_port: int = DASHBOARD_PORT,
    api_port: int = API_PORT,
) -> None:
    """Run a campaign (spec or feed) on a local farm: Ray, the Serve app and a Ray Job."""
    from farm.jobs.inputs import load_campaign

    try:
        campaign = load_campaign(spec_path)
    except (OSError, ValueError) as e:
        console.print(f"[red]invalid campaign[/red] {spec_path}:\n{e}")
        raise typer.Exit(2) from None
    model_ref = preset or campaign.settings.preset
    if in_process:
        _demo_in_process(campaign, root, model_ref, limit)
        return
    from farm.jobs.client import submit_campaign
    from farm.jobs.options import JobOptions
    from farm.local_farm import demo_settings, local_farm
    from farm.output.render import output_dir

    start = time.perf_counter()
    with console.status("starting local Ray and the Serve app"):
        settings = demo_settings(root, model_ref)
        farm = local_farm(settings, dashboard_port=dashboard_port, api_port=api_port)
        urls = farm.__enter__()
    try:
        with errors("cannot run the demo"):
            cid, sid = submit_campaign(
                campaign,
                address=urls.dashboard_url,
                root=root,
                options=JobOptions.given(concurrency=concurrency, serve_app=urls.app_name),
                python=shlex.quote(sys.executable),  # the job runs in this venv
            )
            console.print(f"campaign {cid}: Ray Job {sid}")
            follow(urls.dashboard_url, root, cid, sid, timeout=JOB_WAIT_S)
        console.print(
            f"done in {time.perf_counter() - start:.0f} s. Files: "
            f"{output_dir(root, cid)}/  Ray dashboard: {urls.dashboard_url}  "
            f"Campaign page: {urls.api_url}/dashboard/campaigns/{cid}  "
            f"API: {urls.api_url}/docs (all stop with this command)"
        )
    finally:
        farm.__exit__(None, None, None)


@app.command("serve")
def serve_farm(
    settings_file: str = typer.Option(
        "", "--settings", help="Settings YAML (default: FARM_* env vars and defaults)."
    ),
    dashboard_port: int = DASHBOARD_PORT,
    api_port: int = API_PORT,
) -> None:
    """Run the farm's Serve app on a local Ray until Ctrl-C or SIGTERM (settings: env or YAML).

    Settings whose actors this machine cannot hold (say renderer_min_replicas=2 on two
    CPUs) are refused at start, naming the resource that is short: exit code 2.
    """
    from farm.local_farm import local_farm, serve_settings

    with errors("cannot start the farm"), contextlib.suppress(KeyboardInterrupt):
        settings = serve_settings(settings_file)
        with local_farm(settings, dashboard_port=dashboard_port, api_port=api_port) as farm:
            console.print(
                f"farm up: API {farm.api_url}/docs  campaign pages {farm.api_url}/dashboard  "
                f"Ray dashboard {farm.dashboard_url}  Ray logs {farm.session_dir}/logs  "
                "(Ctrl-C or SIGTERM stops them)",
                soft_wrap=True,  # one line, whatever the terminal's width: scripts read it
            )
            # Until Ctrl-C or SIGTERM (local_farm turns it into Ctrl-C), also during
            # start-up: either way the farm shuts down cleanly and leaves no process.
            while True:
                time.sleep(3600)


def _demo_in_process(campaign, root: str, model_ref: str, limit: int) -> None:
    """The demo without Ray: the campaign job's loop, one variant at a time, in this process."""
    from farm.jobs.client import prepare_campaign
    from farm.jobs.loop import render_concurrently
    from farm.jobs.options import JobOptions
    from farm.output.render import output_dir
    from farm.render.executors import LocalExecutor

    options = JobOptions(concurrency=1)  # one model in this process: one variant at a time
    cid = campaign.campaign_id
    manifest = prepare_campaign(campaign, root)
    todo = manifest.pending(max_attempts=options.max_attempts).num_rows
    todo = min(limit, todo) if limit else todo
    with console.status(f"loading model {model_ref!r}"):
        executor = LocalExecutor(model_ref)
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"campaign {campaign.name}", total=todo)
        report = render_concurrently(
            manifest,
            executor,
            root,
            options,
            limit=limit or None,
            worker="demo",
            on_done=lambda row, status, seconds: bar.update(task, advance=1),
        )
    console.print(group_table(manifest.progress(), f"{campaign.name} ({cid})"))
    console.print(
        f"{report.completed} rendered, {report.failed} failed in "
        f"{time.perf_counter() - start:.0f} s; files in {output_dir(root, cid)}"
    )
