"""`farm manifest show`, `farm verify` and `farm eval`: look inside manifests, files, models."""

from __future__ import annotations

import contextlib

import typer
from rich.table import Table

from farm.cli.common import ROOT, app, console, errors

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

    with errors():
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

    with errors():
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


# Unset options are left to the evaluation's own command line (model.training.eval.parser and
# farm.evaluation), which owns their defaults; reading them here would load torch on every call.
@app.command("eval")
def eval_model(
    preset: str | None = typer.Option(
        None, help="Model preset or checkpoint URL (default: the evaluation's)."
    ),
    limit: int | None = typer.Option(
        None, help="Only the first N of the 48 held-out triples (default: all)."
    ),
    steps: int | None = typer.Option(None, help="Denoising steps (default: the evaluation's)."),
    guidance: float | None = typer.Option(
        None, help="Classifier-free guidance scale, 1 = off (default: the evaluation's)."
    ),
    seconds: float | None = typer.Option(
        None, help="Length of the seam test video (default: the evaluation's)."
    ),
    seams: bool = typer.Option(True, help="Also measure seams of a long video and MP4 bytes."),
    out: str = typer.Option("", help="Write the full JSON report (every clip) here."),
) -> None:
    """Does the model follow prompts? Colour and motion accuracy per language, and seams."""
    from farm.evaluation import main as eval_main

    given = {
        "--model": preset,
        "--limit": limit,
        "--steps": steps,
        "--guidance": guidance,
        "--seconds": seconds,
    }
    argv = [arg for flag, v in given.items() if v is not None for arg in (flag, str(v))]
    argv += [] if seams else ["--no-seams"]
    argv += ["--out", out] if out else []
    with errors("evaluation failed"):
        eval_main(argv)
