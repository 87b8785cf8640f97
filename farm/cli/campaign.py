"""`farm campaign ...`: validate campaigns, run them as Ray Jobs, follow and cancel them."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import typer
from rich.table import Table

from farm.cli.common import ADDRESS, JOB_WAIT_S, ROOT, app, console, errors, follow, status_view

campaign_app = typer.Typer(help="Campaigns: validate, inspect and run variant sets.")
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("schema")
def campaign_schema() -> None:
    """Print the JSON schema of a campaign spec (every field documented)."""
    import json

    from farm.campaign.spec import spec_json_schema

    typer.echo(json.dumps(spec_json_schema(), indent=2, ensure_ascii=False))


@campaign_app.command("validate")
def campaign_validate(
    path: str = typer.Argument(..., help="Campaign spec (.yaml/.json) or feed (.csv/.parquet)."),
    root: str = ROOT,
) -> None:
    """Check a spec or feed: errors name the field; prints variant count and GPU-seconds.

    The estimate prices the campaign's work by measured renders of its model under --root
    (farm.campaign.cost), or else by timing one render of it here; it says which.
    """
    from farm.campaign import cost
    from farm.campaign.expand import summary
    from farm.campaign.manifest import Manifest, ManifestNotFound
    from farm.jobs.inputs import load_campaign

    try:
        campaign = load_campaign(path)
    except FileNotFoundError:
        console.print(f"[red]error:[/red] no such file: {path}")
        raise typer.Exit(2) from None
    except ValueError as e:  # SpecError names the path of every bad field
        console.print(f"[red]invalid campaign[/red] {path}:\n{e}")
        raise typer.Exit(2) from None
    info = summary(campaign.variants)
    name = campaign.name if campaign.spec else Path(path).name
    table = Table(title=f"{name}: {info['variants']} variants")
    table.add_column("locale")
    table.add_column("variants", justify="right")
    for locale, count in sorted(info["by_locale"].items()):
        table.add_row(locale, str(count))
    console.print(table)
    with errors("cannot estimate"), console.status("calibrating render time"):
        est = cost.estimate(campaign.variants, cost.calibrate(campaign.variants, root))
    console.print(f"estimated GPU time: {est['est_gpu_s']:.1f} GPU-seconds ({est['basis']})")
    with contextlib.suppress(ManifestNotFound, OSError):  # not submitted here yet: fine
        done = Manifest.open(root, campaign.campaign_id).progress()
        console.print(
            f"measured so far: {done.completed_gpu_s:.1f} GPU-seconds for "
            f"{done.by_status['completed']} of {done.total} variants"
        )


def _job_option(name: str):
    """A CLI option for a `JobOptions` field: unset means the field's default, shown here."""
    from farm.jobs.options import JobOptions

    field = JobOptions.model_fields[name]
    default = "" if field.default is None else f" (default: {field.default})"
    return typer.Option(None, help=f"{field.description.rstrip('.')}{default}.")


CONCURRENCY = _job_option("concurrency")
MAX_ATTEMPTS = _job_option("max_attempts")
ACTORS = _job_option("actors")
PRESET = _job_option("preset")
SERVE_APP = _job_option("serve_app")
WAIT = typer.Option(False, "--wait", help="Follow the job with a progress bar until it ends.")
TIMEOUT = typer.Option(JOB_WAIT_S, help="With --wait: give up after this many seconds.")


@campaign_app.command("submit")
def campaign_submit(
    spec_path: str = typer.Argument(
        ..., help="Campaign spec (.yaml/.json) or feed (.csv/.parquet)."
    ),
    address: str = ADDRESS,
    root: str = ROOT,
    concurrency: int | None = CONCURRENCY,
    max_attempts: int | None = MAX_ATTEMPTS,
    actors: int | None = ACTORS,
    preset: str | None = PRESET,
    serve_app: str | None = SERVE_APP,
    wait: bool = WAIT,
    timeout: float = TIMEOUT,
) -> None:
    """Render a campaign as a Ray Job; submitting it again while it runs finds the same job."""
    from farm.jobs.client import submit_campaign
    from farm.jobs.inputs import load_campaign
    from farm.jobs.options import JobOptions

    with errors("cannot submit"):
        with console.status("validating and submitting"):
            cid, sid = submit_campaign(
                load_campaign(spec_path),
                address=address,
                root=root,
                options=JobOptions.given(
                    concurrency=concurrency,
                    max_attempts=max_attempts,
                    actors=actors,
                    preset=preset,
                    serve_app=serve_app,
                ),
            )
        console.print(f"campaign {cid}: job {sid}")
        if wait:
            follow(address, root, cid, sid, timeout)


@campaign_app.command("resume")
def campaign_resume(
    campaign: str = typer.Argument(..., help="Campaign id."),
    address: str = ADDRESS,
    root: str = ROOT,
    concurrency: int | None = CONCURRENCY,
    max_attempts: int | None = MAX_ATTEMPTS,
    actors: int | None = ACTORS,
    preset: str | None = PRESET,
    serve_app: str | None = SERVE_APP,
    wait: bool = WAIT,
    timeout: float = TIMEOUT,
) -> None:
    """Start a new job for the variants still pending (finished ones are never re-rendered)."""
    from farm.jobs.client import resume_campaign
    from farm.jobs.options import JobOptions

    with errors("cannot resume"):
        sid = resume_campaign(
            campaign,
            address=address,
            root=root,
            options=JobOptions.given(
                concurrency=concurrency,
                max_attempts=max_attempts,
                actors=actors,
                preset=preset,
                serve_app=serve_app,
            ),
        )
        console.print(f"campaign {campaign}: job {sid}")
        if wait:
            follow(address, root, campaign, sid, timeout)


@campaign_app.command("status")
def campaign_status_cmd(
    campaign: str = typer.Argument(..., help="Campaign id."),
    root: str = ROOT,
    address: str = ADDRESS,
    watch: bool = typer.Option(False, "--watch", help="Refresh until nothing is pending."),
    interval: float = typer.Option(2.0, help="With --watch: seconds between refreshes."),
) -> None:
    """Progress by status x locale x format, ETA, and the state with its latest job."""
    from rich.live import Live

    from farm.jobs.state import campaign_status

    with errors():
        st = campaign_status(root, campaign, address)
        if not watch:
            console.print(status_view(st))
            return
        with Live(status_view(st), console=console, refresh_per_second=4) as live:
            while st.pending:
                time.sleep(interval)
                st = campaign_status(root, campaign, address)
                live.update(status_view(st))


@campaign_app.command("list")
def campaign_list(root: str = ROOT) -> None:
    """Every campaign under the root with its counts by status."""
    from farm.campaign.tables import STATUSES
    from farm.jobs.state import list_campaigns

    with errors():
        rows = list_campaigns(root)
    table = Table(title=f"campaigns in {root}")
    table.add_column("campaign", no_wrap=True)
    table.add_column("name")
    for column in ("total", *STATUSES):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["campaign_id"], r["name"], str(r["total"]), *(str(r[s]) for s in STATUSES))
    console.print(table)


@campaign_app.command("cancel")
def campaign_cancel(
    campaign: str = typer.Argument(..., help="Campaign id."),
    root: str = ROOT,
    address: str = ADDRESS,
) -> None:
    """Cancel: the job stops between variants and marks the rest cancelled."""
    from farm.jobs.client import cancel_campaign

    with errors("cannot cancel"):
        try:
            outcome = cancel_campaign(root, campaign, address)
        except ConnectionError as e:  # the marker is written before the cluster is asked
            console.print(
                f"[yellow]cancel marker written, but {address} is unreachable ({e}).[/yellow] "
                "A running job will still stop; if none runs, cancel again with --address."
            )
            raise typer.Exit(2) from None
        console.print(f"campaign {campaign} cancelled: {outcome}")


@campaign_app.command("logs")
def campaign_logs_cmd(
    campaign: str = typer.Argument(..., help="Campaign id."),
    address: str = ADDRESS,
    root: str = ROOT,
) -> None:
    """The logs of the campaign's jobs (progress lines), oldest first."""
    from farm.jobs.client import campaign_logs

    with errors():
        text = campaign_logs(address, campaign, root=root)
    typer.echo(text)
