"""The `farm` command line (typer + rich)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
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
    from farm.render_local import RenderRequest, parse_size, render_to_storage

    try:
        width, height = parse_size(size)
        request = RenderRequest(
            prompt, negative_prompt, seconds, fps, width, height, steps, guidance, seed, preset
        )
        with console.status(f"loading model {preset!r}"):
            m = model.load(preset)
        m.latent_shape(request.frames, height, width)  # validate before any compute
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"rendering {request.frames} frames {width}x{height}", total=steps)
        result = render_to_storage(request, out, m=m, on_step=lambda i: bar.update(task, advance=1))
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
    limit: int = typer.Option(0, help="Render at most this many variants (0 = all)."),
) -> None:
    """Run the example campaign on this machine: manifest, localized MP4s, progress."""
    from farm.campaign import campaign_id
    from farm.executors import LocalExecutor
    from farm.manifest import Manifest
    from farm.runner import render_pending
    from farm.variant_render import output_dir

    try:
        spec, variants = _load_campaign(spec_path)
    except (OSError, ValueError) as e:
        console.print(f"[red]invalid campaign[/red] {spec_path}:\n{e}")
        raise typer.Exit(2) from None
    cid = campaign_id(spec)
    manifest = Manifest.create(root, cid, spec.model_dump(mode="json"), variants)
    todo = manifest.pending().num_rows if not limit else min(limit, manifest.pending().num_rows)
    with console.status(f"loading model {preset or spec.preset!r}"):
        executor = LocalExecutor(preset or spec.preset)
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"campaign {spec.name}", total=todo)
        report = render_pending(
            manifest,
            executor,
            root,
            limit=limit or None,
            on_done=lambda row, status: bar.update(task, advance=1),
        )
    _progress_table(manifest, f"{spec.name} ({cid})")
    console.print(
        f"{report.completed} rendered, {report.failed} failed in "
        f"{time.perf_counter() - start:.0f} s; files in {output_dir(root, cid)}"
    )


def _progress_table(manifest, title: str) -> None:
    """Counts by status x locale x format, as a rich table."""
    groups = manifest.progress().by_group.to_pylist()
    table = Table(title=title)
    for column in ("locale", "format", "status", "variants"):
        table.add_column(column, justify="right" if column == "variants" else "left")
    for g in sorted(groups, key=lambda g: (g["locale"], g["format"], g["status"])):
        table.add_row(g["locale"], g["format"], g["status"], str(g["count"]))
    console.print(table)


campaign_app = typer.Typer(help="Campaigns: validate, inspect and run variant sets.")
app.add_typer(campaign_app, name="campaign")


def _load_campaign(path: str):
    """Read a spec (YAML/JSON) or a feed (CSV/Parquet) file into (spec-or-None, variants)."""
    from farm.campaign import expand, expand_feed
    from farm.feed import load_feed
    from farm.spec import load_spec

    data = Path(path).read_bytes()
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".parquet"):
        return None, expand_feed(load_feed(data, suffix[1:]), None)
    spec = load_spec(data, fmt="json" if suffix == ".json" else "yaml")
    return spec, expand(spec)


@campaign_app.command("schema")
def campaign_schema() -> None:
    """Print the JSON schema of a campaign spec (every field documented)."""
    import json

    from farm.spec import spec_json_schema

    typer.echo(json.dumps(spec_json_schema(), indent=2, ensure_ascii=False))


@campaign_app.command("validate")
def campaign_validate(
    path: str = typer.Argument(..., help="Campaign spec (.yaml/.json) or feed (.csv/.parquet)."),
) -> None:
    """Check a spec or feed: errors name the field; prints variant count and GPU-seconds."""
    from farm.campaign import summary

    try:
        spec, variants = _load_campaign(path)
    except FileNotFoundError:
        console.print(f"[red]error:[/red] no such file: {path}")
        raise typer.Exit(2) from None
    except ValueError as e:  # SpecError names the path of every bad field
        console.print(f"[red]invalid campaign[/red] {path}:\n{e}")
        raise typer.Exit(2) from None
    info = summary(variants)
    table = Table(title=f"{spec.name if spec else Path(path).name}: {info['variants']} variants")
    table.add_column("locale")
    table.add_column("variants", justify="right")
    for locale, count in sorted(info["by_locale"].items()):
        table.add_row(locale, str(count))
    console.print(table)
    console.print(f"estimated GPU time: {info['est_gpu_s']:.1f} GPU-seconds")


def main() -> None:
    app()
