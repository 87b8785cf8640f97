"""The `farm` command line (typer + rich)."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="Render farm for generative video ad campaigns.", no_args_is_help=True)
console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def render(
    prompt: str = typer.Argument(..., help="What the video shows, in any language."),
    negative_prompt: str = typer.Option("", help="What to steer away from."),
    seconds: float = typer.Option(1.0, help="Length in seconds."),
    size: str = typer.Option("256x144", help="WIDTHxHEIGHT, multiples of 16."),
    fps: int = typer.Option(24, help="Frames per second."),
    steps: int = typer.Option(12, help="Denoising steps."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale (1 = off)."),
    seed: int = typer.Option(0, help="Noise seed: same seed, same video."),
    preset: str = typer.Option("small", help="Model preset or checkpoint URL."),
    out: str = typer.Option("farm-data/renders", help="Output directory or fsspec URL."),
) -> None:
    """Render one video in this process and write MP4 + poster + provenance JSON."""
    import model
    from farm.output.render import RenderRequest, render_video, request_order
    from farm.render.executors import LocalExecutor
    from farm.serve.wire import parse_size

    try:
        width, height = parse_size(size)
        request = RenderRequest(
            prompt, negative_prompt, seconds, fps, width, height, steps, guidance, seed, preset
        )
        with console.status(f"loading model {preset!r}"):
            m = model.load(preset)
        order = request_order(request, request.video_id(), m.geometry)
        m.latent_shape(order.frames, height, width)  # validate before any compute
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"rendering {order.frames} frames {width}x{height}", total=steps + 1)
        result = render_video(
            LocalExecutor(m),
            order,
            out,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    table = Table(title=f"rendered in {time.perf_counter() - start:.1f} s")
    for column in ("file", "bytes", "sha256"):
        table.add_column(column)
    table.add_row(result.mp4_url, str(result.mp4_bytes), result.sha256[:16] + "…")
    table.add_row(result.poster_url, str(result.poster_bytes), "")
    table.add_row(result.sidecar_url, str(result.sidecar_bytes), "")
    console.print(table)


@app.command()
def demo(
    spec_path: str = typer.Option("examples/campaign.yaml", "--spec", help="Campaign to run."),
    root: str = typer.Option("farm-data", help="Storage root (local dir or fsspec URL)."),
    preset: str = typer.Option("", help="Model preset (default: the campaign's)."),
    in_process: bool = typer.Option(
        False, "--in-process", help="Skip Ray: render in this process (fastest to start)."
    ),
    limit: int = typer.Option(0, help="With --in-process: render at most this many variants."),
    concurrency: int | None = typer.Option(
        None, help="Variants in flight in the campaign job (default: JobOptions')."
    ),
    dashboard_port: int = typer.Option(8265, help="Ray dashboard / Jobs API port (127.0.0.1)."),
    api_port: int = typer.Option(8000, help="The farm's HTTP API port (127.0.0.1)."),
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
        with _errors("cannot run the demo"):
            cid, sid = submit_campaign(
                campaign,
                address=urls.dashboard_url,
                root=root,
                options=JobOptions.given(concurrency=concurrency, serve_app=urls.app_name),
                python=shlex.quote(sys.executable),  # the job runs in this venv
            )
            console.print(f"campaign {cid}: Ray Job {sid}")
            _follow(urls.dashboard_url, root, cid, sid, timeout=3600)
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
    dashboard_port: int = typer.Option(8265, help="Ray dashboard / Jobs API port (127.0.0.1)."),
    api_port: int = typer.Option(8000, help="The farm's HTTP API port (127.0.0.1)."),
) -> None:
    """Run the farm's Serve app on a local Ray until Ctrl-C (settings from env or YAML)."""
    from farm.local_farm import local_farm, serve_settings

    with _errors("cannot start the farm"), contextlib.suppress(KeyboardInterrupt):
        settings = serve_settings(settings_file)
        with local_farm(settings, dashboard_port=dashboard_port, api_port=api_port) as farm:
            console.print(
                f"farm up: API {farm.api_url}/docs  campaign pages {farm.api_url}/dashboard  "
                f"Ray dashboard {farm.dashboard_url}  (Ctrl-C stops them)"
            )
            while True:  # until Ctrl-C (also during start-up: the farm shuts down cleanly)
                time.sleep(3600)


def _demo_in_process(campaign, root: str, model_ref: str, limit: int) -> None:
    """The demo without Ray: the campaign job's loop, one variant at a time, in this process."""
    from farm.jobs.client import prepare_campaign
    from farm.jobs.loop import render_concurrently
    from farm.jobs.options import JobOptions
    from farm.output.render import output_dir
    from farm.render.executors import LocalExecutor

    options = JobOptions(concurrency=1)
    cid = campaign.campaign_id
    manifest = prepare_campaign(campaign, root)
    todo = manifest.pending(max_attempts=options.max_attempts).num_rows
    todo = min(limit, todo) if limit else todo
    with console.status(f"loading model {model_ref!r}"):
        executor = LocalExecutor(model_ref)
    start = time.perf_counter()
    with _progress() as bar:
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
    _progress_table(manifest, f"{campaign.name} ({cid})")
    console.print(
        f"{report.completed} rendered, {report.failed} failed in "
        f"{time.perf_counter() - start:.0f} s; files in {output_dir(root, cid)}"
    )


def _progress_table(manifest, title: str) -> None:
    """Counts by status x locale x format, as a rich table."""
    console.print(_group_table(manifest.progress(), title))


def _group_table(progress, title: str) -> Table:
    """A Progress's counts by status x locale x format."""
    groups = progress.by_group.to_pylist()
    table = Table(title=title)
    for column in ("locale", "format", "status", "variants"):
        table.add_column(column, justify="right" if column == "variants" else "left")
    for g in sorted(groups, key=lambda g: (g["locale"], g["format"], g["status"])):
        table.add_row(g["locale"], g["format"], g["status"], str(g["count"]))
    return table


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
) -> None:
    """Check a spec or feed: errors name the field; prints variant count and GPU-seconds."""
    from farm.campaign.expand import summary
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
    console.print(f"estimated GPU time: {info['est_gpu_s']:.1f} GPU-seconds")


# ---- campaigns as Ray Jobs -------------------------------------------------------------------

ADDRESS = typer.Option(
    "http://127.0.0.1:8265",
    "--address",
    envvar="RAY_API_SERVER_ADDRESS",
    help="Ray dashboard (Jobs API) address.",
)
ROOT = typer.Option("farm-data", "--root", help="Storage root (local dir or fsspec URL).")


@contextlib.contextmanager
def _errors(what: str = "error"):
    """Any failure becomes one red line and exit code 2, never a stack trace."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    except Exception as e:
        from farm.campaign.manifest_io import ManifestError
        from farm.campaign.spec import SpecError

        known = (ManifestError, SpecError, OSError, RuntimeError, TimeoutError, ValueError)
        kind = "" if isinstance(e, known) else f"{type(e).__name__}: "
        console.print(f"[red]{what}:[/red] {kind}{e}")
        raise typer.Exit(2) from None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _status_view(status) -> Group:
    """The status table plus one summary line (counts, ETA, job, cancel)."""
    p = status.progress
    counts = ", ".join(f"{n} {s}" for s, n in p.by_status.items() if n)
    line = f"{p.total} variants: {counts}; {status.pending} to go, ETA {_eta(p.eta_s)}"
    if status.job:
        line += f"; job {status.job} {status.job_status}"
    if status.cancel_requested:
        line += "; [yellow]cancel requested[/yellow]"
    return Group(_group_table(p, f"{status.name} ({status.campaign_id})"), line)


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
TIMEOUT = typer.Option(3600.0, help="With --wait: give up after this many seconds.")


def _follow(address: str, root: str, cid: str, sid: str, timeout: float) -> None:
    """A progress bar fed by the manifest until the job ends; exit 1 unless it succeeded."""
    from farm.jobs.client import TERMINAL_JOB, campaign_status

    deadline = time.monotonic() + timeout
    with _progress() as bar:
        task = bar.add_task(f"{sid}", total=None)
        while True:
            st = campaign_status(root, cid, address)
            done = st.progress.total - st.pending
            job = st.job_status if st.job == sid else "?"
            bar.update(task, total=st.progress.total, completed=done, description=f"{sid} {job}")
            if job in TERMINAL_JOB:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {sid} still {job} after {timeout:.0f} s")
            time.sleep(1.0)
    console.print(_status_view(st))
    if job != "SUCCEEDED":
        console.print(f"[red]job {sid} ended {job}[/red]; see: farm campaign logs {cid}")
        raise typer.Exit(1)


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

    with _errors("cannot submit"):
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
            _follow(address, root, cid, sid, timeout)


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

    with _errors("cannot resume"):
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
            _follow(address, root, campaign, sid, timeout)


@campaign_app.command("status")
def campaign_status_cmd(
    campaign: str = typer.Argument(..., help="Campaign id."),
    root: str = ROOT,
    address: str = typer.Option("", help="Also show the latest job on this Ray cluster."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until nothing is pending."),
    interval: float = typer.Option(2.0, help="With --watch: seconds between refreshes."),
) -> None:
    """Progress by status x locale x format, with ETA (from the manifest)."""
    from rich.live import Live

    from farm.jobs.client import campaign_status

    with _errors():
        st = campaign_status(root, campaign, address or None)
        if not watch:
            console.print(_status_view(st))
            return
        with Live(_status_view(st), console=console, refresh_per_second=4) as live:
            while st.pending:
                time.sleep(interval)
                st = campaign_status(root, campaign, address or None)
                live.update(_status_view(st))


@campaign_app.command("list")
def campaign_list(root: str = ROOT) -> None:
    """Every campaign under the root with its counts by status."""
    from farm.campaign.tables import STATUSES
    from farm.jobs.client import list_campaigns

    with _errors():
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

    with _errors("cannot cancel"):
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
    campaign: str = typer.Argument(..., help="Campaign id."), address: str = ADDRESS
) -> None:
    """The logs of the campaign's jobs (progress lines), oldest first."""
    from farm.jobs.client import campaign_logs

    with _errors():
        text = campaign_logs(address, campaign)
    typer.echo(text)


manifest_app = typer.Typer(help="Manifests: a campaign's variants and their latest events.")
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("show")
def manifest_show(
    campaign: str = typer.Argument(..., help="Campaign id."),
    root: str = ROOT,
    limit: int = typer.Option(20, "-n", "--limit", help="Rows to show (0 = all)."),
    status: str = typer.Option("", help="Only variants with this status."),
) -> None:
    """Each variant's latest status, as a table (first N rows)."""
    import pyarrow.compute as pc

    from farm.campaign.manifest import Manifest

    with _errors():
        rows = Manifest.open(root, campaign).status()
        if status:
            rows = rows.filter(pc.equal(rows["status"], status))
    shown = rows.slice(0, limit or None).to_pylist()
    table = Table(title=f"{campaign}: {len(shown)} of {rows.num_rows} variants")
    columns = ("variant_id", "product_id", "locale", "format", "status", "attempt", "detail")
    for column in columns:
        table.add_column(column, no_wrap=column == "variant_id")
    for r in shown:
        detail = r["error_code"] or (r["sha256"][:12] if r["sha256"] else "")
        table.add_row(*(str(r[c]) for c in columns[:-1]), detail)
    console.print(table)


@app.command()
def verify(
    file: str = typer.Argument(..., help="MP4 to check: local path or fsspec URL."),
    expected: str = typer.Option("", help="Variant id (16/20 hex) the mark should carry."),
) -> None:
    """Report whether a video carries the farm's watermark and which id it encodes.

    Reads the mark blind (CRC-checked), then checks it against --expected or, failing
    that, the variant id in the file's provenance tag (a mark matches an id when it decodes
    to it or >= 90% of its bits agree). Exit code 0: the mark is there (and matches the id
    checked against, if any); 1: no mark, or another id's.
    """
    import fsspec

    from farm.output import watermark as wm
    from farm.output.media import Provenance, probe_mp4

    with _errors():
        with fsspec.open(file, "rb") as f:
            data = f.read()
        tagged = None
        with contextlib.suppress(Exception):  # a re-encoded copy has lost its tags: fine
            tagged = Provenance.from_metadata(probe_mp4(data).metadata).variant_id
        claim = expected or (wm.payload_for(tagged) if tagged else None)
        result = wm.verify_file(data, expected=claim)
    if result.found:
        console.print(f"watermark: [green]present[/green], payload {result.payload_hex}")
    else:
        console.print("watermark: [red]no blind read[/red] (no CRC match)")
    bits = wm.bit_accuracy(result.bits, wm.payload_bits(claim)) if claim else None
    console.print(
        f"confidence {result.confidence:.1f}, "
        f"bit accuracy estimate {result.bit_accuracy_estimate:.1%}"
    )
    if tagged is not None:
        console.print(f"provenance tag: variant {tagged}")
    if claim is None:
        raise typer.Exit(0 if result.found else 1)
    what = f"expected {result.expected}" if expected else f"tagged id {result.expected}"
    verdict = "[green]match[/green]" if result.matches else "[red]NO match[/red]"
    console.print(f"{what}: {verdict} ({bits:.0%} of payload bits agree)")
    raise typer.Exit(0 if result.matches else 1)


@app.command("eval")
def eval_model(
    preset: str = typer.Option("small", help="Model preset or checkpoint URL."),
    limit: int = typer.Option(0, help="Only the first N of the 48 held-out triples (0 = all)."),
    steps: int = typer.Option(20, help="Denoising steps."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale (1 = off)."),
    seconds: float = typer.Option(30.0, help="Length of the seam test video."),
    seams: bool = typer.Option(True, help="Also measure seams of a long video and MP4 bytes."),
    out: str = typer.Option("", help="Write the full JSON report (every clip) here."),
) -> None:
    """Does the model follow prompts? Colour and motion accuracy per language, and seams."""
    from farm.evaluation import main as eval_main

    argv = ["--model", preset, "--limit", str(limit), "--steps", str(steps)]
    argv += ["--guidance", str(guidance), "--seconds", str(seconds)]
    argv += [] if seams else ["--no-seams"]
    argv += ["--out", out] if out else []
    with _errors("evaluation failed"):
        eval_main(argv)


def main() -> None:
    app()
