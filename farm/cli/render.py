"""`farm render`: one video in this process, outside any campaign."""

from __future__ import annotations

import time
from dataclasses import fields

import typer
from pydantic import ValidationError
from rich.table import Table

from farm.cli.common import app, console, progress_bar
from farm.output.request import RenderRequest
from farm.settings import setting_default

# `farm render`'s defaults are RenderRequest's; its files go under the default storage root.
_DEFAULT = {f.name: f.default for f in fields(RenderRequest)}


@app.command()
def render(
    prompt: str = typer.Argument(..., help="What the video shows, in any language."),
    negative_prompt: str = typer.Option(
        _DEFAULT["negative_prompt"], help="What to steer away from."
    ),
    seconds: float = typer.Option(_DEFAULT["seconds"], help="Length in seconds."),
    size: str = typer.Option(
        f"{_DEFAULT['width']}x{_DEFAULT['height']}",
        help="WIDTHxHEIGHT, each side a multiple of the model's pixel multiple.",
    ),
    fps: int = typer.Option(_DEFAULT["fps"], help="Frames per second."),
    steps: int = typer.Option(_DEFAULT["steps"], help="Denoising steps."),
    guidance: float = typer.Option(
        _DEFAULT["guidance"], help="Classifier-free guidance scale (1 = off)."
    ),
    seed: int = typer.Option(_DEFAULT["seed"], help="Noise seed: same seed, same video."),
    preset: str = typer.Option(
        _DEFAULT["preset"],
        "--model",
        "--preset",
        help="Model: a preset, a checkpoint URL, or diffusers:<dir or URL> (Wan, LTX-Video, "
        "CogVideoX).",
    ),
    window: int = typer.Option(
        setting_default("window"), help="Window length in latent frames (long videos)."
    ),
    overlap: int = typer.Option(
        setting_default("overlap"), help="Overlap of consecutive windows, in latent frames."
    ),
    out: str = typer.Option(
        f"{setting_default('storage_root')}/renders", help="Output directory or fsspec URL."
    ),
) -> None:
    """Render one video in this process and write MP4 + poster + provenance JSON."""
    import model
    from farm.output.render import render_video, request_order, video_job
    from farm.output.watermark import length_problem
    from farm.render.executors import LocalExecutor
    from farm.render.worker import load_options
    from farm.serve.wire import parse_size
    from farm.settings import get_settings

    try:
        width, height = parse_size(size)
        request = RenderRequest(
            prompt, negative_prompt, seconds, fps, width, height, steps, guidance, seed, preset
        )
        with console.status(f"loading model {preset!r}"):
            m = model.load(
                preset,
                **load_options(preset, get_settings().model_load()),
            )
        order = request_order(request, request.video_id(), m.geometry)
        m.latent_shape(order.frames, height, width)  # validate before any compute
        try:  # the window layout, too
            video_job(order, window=window, overlap=overlap)
        except ValidationError as e:
            raise ValueError(f"--window/--overlap: {e.errors()[0]['msg']}") from None
        too_short = length_problem(seconds, fps, order.frames)
        if too_short:
            raise ValueError(f"--seconds: {too_short}")
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"rendering {order.frames} frames {width}x{height}", total=steps + 1)
        result = render_video(
            LocalExecutor(m),
            order,
            out,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            window=window,
            overlap=overlap,
        )
    table = Table(title=f"rendered in {time.perf_counter() - start:.1f} s")
    for column in ("file", "bytes", "sha256"):
        table.add_column(column)
    table.add_row(result.mp4_url, str(result.mp4_bytes), result.sha256[:16] + "…")
    table.add_row(result.poster_url, str(result.poster_bytes), "")
    table.add_row(result.sidecar_url, str(result.sidecar_bytes), "")
    console.print(table)
