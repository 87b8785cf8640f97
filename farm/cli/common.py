"""What every `farm` command shares: the typer app, the console, errors, progress views."""

from __future__ import annotations

import contextlib
import time

import typer
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from farm.settings import setting_default

app = typer.Typer(help="Render farm for generative video ad campaigns.", no_args_is_help=True)
console = Console()

ADDRESS = typer.Option(
    setting_default("jobs_address"),
    "--address",
    envvar="RAY_API_SERVER_ADDRESS",
    help="Ray dashboard (Jobs API) address.",
)
ROOT = typer.Option(
    setting_default("storage_root"), "--root", help="Storage root (local dir or fsspec URL)."
)
JOB_WAIT_S = 3600.0  # how long `--wait` and `farm demo` follow a campaign job by default


def progress_bar() -> Progress:
    """A rich progress bar: description, bar, done/total, elapsed, remaining."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@contextlib.contextmanager
def errors(what: str = "error"):
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


def group_table(progress, title: str) -> Table:
    """A Progress's counts by status x locale x format."""
    groups = progress.by_group.to_pylist()
    table = Table(title=title)
    for column in ("locale", "format", "status", "variants"):
        table.add_column(column, justify="right" if column == "variants" else "left")
    for g in sorted(groups, key=lambda g: (g["locale"], g["format"], g["status"])):
        table.add_row(g["locale"], g["format"], g["status"], str(g["count"]))
    return table


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def status_view(status) -> Group:
    """The status table plus one summary line (counts, ETA, job, cancel)."""
    p = status.progress
    counts = ", ".join(f"{n} {s}" for s, n in p.by_status.items() if n)
    line = f"{p.total} variants: {counts}; {status.pending} to go, ETA {_eta(p.eta_s)}"
    if status.job:
        line += f"; job {status.job} {status.job_status}"
    if status.job_status == "UNKNOWN":
        line += f"; job unknown ({status.job_message[:120]})"
    elif status.job_status is not None:  # the state joins the job and the manifest
        line += f"; {status.state}"
        if status.resumable:
            line += f" ([yellow]farm campaign resume {status.campaign_id}[/yellow])"
    if status.cancel_requested:
        line += "; [yellow]cancel requested[/yellow]"
    return Group(group_table(p, f"{status.name} ({status.campaign_id})"), line)


def follow(address: str, root: str, cid: str, sid: str, timeout: float) -> None:
    """A progress bar fed by the manifest until the job ends; exit 1 unless it succeeded."""
    from farm.jobs.state import TERMINAL_JOB, campaign_status

    deadline = time.monotonic() + timeout
    with progress_bar() as bar:
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
    console.print(status_view(st))
    if job != "SUCCEEDED":
        console.print(f"[red]job {sid} ended {job}[/red]; see: farm campaign logs {cid}")
        raise typer.Exit(1)
