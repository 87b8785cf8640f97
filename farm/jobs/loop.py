"""The campaign job's loop: render the pending variants and record every outcome.

The loop the campaign job runs (`jobs.render_campaign`) and `farm demo --in-process` runs
with concurrency 1: take a writer epoch, pick the pending variants (highest priority
first), mark each `in_progress`, render it through any executor on the one render path
(`farm.output.render`), and commit `completed` with its file and sha256, or `failed` with
a reason from the failure taxonomy. Finished variants are never pending again, so running
it a second time after a crash resumes where the manifest says, re-rendering nothing.

A failed variant is retried in its thread with exponential backoff until it has had
`max_attempts` attempts, except for failures no retry can fix. A cancel stops dispatch
between variants: the variants in flight finish, the rest are committed `cancelled`. A
spent failure budget stops dispatch too; the rest stay pending for a resume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from farm import metrics
from farm.campaign import cost
from farm.campaign.manifest import Manifest
from farm.campaign.spec import FailureBudget
from farm.campaign.tables import FAILURE_CODES
from farm.jobs.options import JobOptions
from farm.output.render import output_dir, render_video, variant_order
from farm.render.protocols import Executor
from farm.storage import STORAGE_ERRORS

log = logging.getLogger(__name__)

# Failures a retry cannot fix: the same input fails the same way.
_NOT_RETRIED = ("invalid_input", "policy_violation")


def failure_code(error: BaseException) -> str:
    """The taxonomy code of a render failure (farm.campaign.tables.FAILURE_CODES).

    An error may name its own code with a `failure_code` attribute (a policy check raises
    one with "policy_violation"); otherwise the type decides. TimeoutError is an OSError,
    so it is asked about first.
    """
    own = getattr(error, "failure_code", None)
    if own in FAILURE_CODES:
        return own
    if isinstance(error, ValueError):
        return "invalid_input"
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return "oom"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, STORAGE_ERRORS):  # raw botocore errors (lost mid-upload) too
        return "storage_error"
    return "model_error"


def render_one(
    commit: Callable[[dict], None],
    executor: Executor,
    row: dict,
    attempt: int,
    root: str,
    *,
    storage_options: dict | None = None,
    **engine,
) -> str | None:
    """One recorded attempt at one variant: `in_progress`, then `completed` or `failed`.

    Returns None when the variant completed, else its failure code. Every outcome is
    committed through `commit(event)`, so none is lost.
    """
    vid = row["variant_id"]
    commit({"variant_id": vid, "status": "in_progress", "attempt": attempt})
    t0 = time.perf_counter()
    try:
        out = render_video(
            executor,
            variant_order(row),
            output_dir(root, row["campaign_id"]),
            storage_options=storage_options,
            **engine,
        )
    except Exception as error:  # recorded with its reason; the caller decides on retries
        code = failure_code(error)
        metrics.record_attempt(row, time.perf_counter() - t0, code)  # metrics: failed attempt
        commit(
            {
                "variant_id": vid,
                "status": "failed",
                "attempt": attempt,
                "error_code": code,
                "error_message": str(error)[:2000],
            }
        )
        return code
    metrics.record_attempt(row, time.perf_counter() - t0, None)  # metrics: completed attempt
    commit(
        {
            "variant_id": vid,
            "status": "completed",
            "attempt": attempt,
            "output_url": out.mp4_url,
            "sha256": out.sha256,
            "gpu_seconds": time.perf_counter() - t0,
        }
    )
    return None


@dataclass
class JobReport:
    """What one pass over the pending variants did, and why it stopped.

    `failed` counts variants that failed for good (no attempt left, or a failure no retry
    fixes); `interrupted` those stopped while waiting to retry, which stay pending.
    """

    completed: int = 0
    failed: int = 0
    seconds: float = 0.0
    cancelled: int = 0
    retries: int = 0
    interrupted: int = 0
    stopped_by_cancel: bool = False
    stopped_by_budget: str | None = None  # why the failure budget stopped dispatch
    epoch: int = 0  # the writer epoch of the pass

    def summary(self) -> dict[str, Any]:
        """The run record: counts and why the pass stopped (None: it ran out of work)."""
        stopped = "failure_budget" if self.stopped_by_budget else None
        stopped = "cancelled" if self.stopped_by_cancel else stopped
        return {
            "completed": self.completed,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "cancelled": self.cancelled,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "stopped": stopped,
            "reason": self.stopped_by_budget or ("campaign cancelled" if stopped else None),
            "ended_at": datetime.now(UTC).isoformat(),
        }


def _sleep(seconds: float, stop: Callable[[], bool], tick: float = 0.2) -> bool:
    """Sleep up to `seconds`, waking early (True) when `stop()` says so."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stop():
            return True
        time.sleep(min(tick, max(0.0, deadline - time.monotonic())))
    return stop()


def render_concurrently(
    manifest: Manifest,
    executor: Executor,
    root: str,
    options: JobOptions | None = None,
    *,
    limit: int | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    on_done: Callable[[dict, str, float], None] | None = None,
    storage_options: dict | None = None,
    worker: str = "campaign-job",
    failure_budget: FailureBudget | None = None,
    **engine: Any,
) -> JobReport:
    """Render up to `limit` pending variants, `options.concurrency` at a time, through one
    executor (see the module doc for retries, cancel and the failure budget).

    One writer epoch for the pass, commits serialized by a lock. `cancelled()` is asked
    before each dispatch and each retry. `on_done(row, status, seconds)` is called in this
    thread as each variant finishes. The pass's run record goes to the manifest
    (`Manifest.runs`). `engine`: VideoJob layout fields (window, overlap, ...).
    """
    options = options or JobOptions()
    concurrency, max_attempts = options.concurrency, options.max_attempts
    start = time.perf_counter()
    report = JobReport()
    budget = failure_budget or FailureBudget()
    writer = manifest.writer(worker=worker)
    report.epoch = writer.epoch
    lock = threading.Lock()
    halt = threading.Event()

    def commit(event: dict) -> None:
        with lock:
            writer.commit([event])

    def stopping() -> bool:
        if not halt.is_set() and cancelled():
            report.stopped_by_cancel = True
            halt.set()
        return halt.is_set()

    status = manifest.status()
    attempts = dict(
        zip(status["variant_id"].to_pylist(), status["attempt"].to_pylist(), strict=True)
    )

    def run(row: dict) -> tuple[str, float]:
        attempt = attempts.get(row["variant_id"], 0)
        while True:
            attempt += 1
            t0 = time.perf_counter()
            code = render_one(
                commit, executor, row, attempt, root, storage_options=storage_options, **engine
            )
            if code is None:
                return "completed", time.perf_counter() - t0
            if attempt >= max_attempts or code in _NOT_RETRIED:
                return "failed", time.perf_counter() - t0
            delay = min(options.max_backoff_s, options.backoff_s * 2 ** (attempt - 1))
            if _sleep(delay, stopping):
                return "interrupted", time.perf_counter() - t0
            with lock:
                report.retries += 1

    errors: list[BaseException] = []
    rendered: list[tuple[dict, float]] = []  # completed variants and their render seconds

    def collect(done: set[Future], rows: dict[Future, dict]) -> None:
        for future in done:
            try:
                outcome, seconds = future.result()
            except BaseException as error:  # StaleWriter, storage down: stop everything
                halt.set()
                errors.append(error)
                continue
            if outcome == "completed":
                report.completed += 1
                rendered.append((rows[future], seconds))
            elif outcome == "failed":
                report.failed += 1
            else:
                report.interrupted += 1
            if on_done:
                on_done(rows[future], outcome, seconds)
        spent = budget.exceeded(report.failed, report.completed + report.failed)
        if spent and not report.stopped_by_budget and not halt.is_set():
            report.stopped_by_budget = spent
            halt.set()

    pending = manifest.pending(max_attempts=max_attempts)
    if limit is not None:
        pending = pending.slice(0, limit)
    with ThreadPoolExecutor(concurrency, thread_name_prefix="variant") as pool:
        in_flight: dict[Future, dict] = {}
        for row in pending.to_pylist():
            while len(in_flight) >= concurrency:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                collect(done, in_flight)
                for future in done:
                    del in_flight[future]
            if stopping():
                break
            in_flight[pool.submit(run, row)] = row
        collect(wait(in_flight).done, in_flight)
    if errors:
        raise errors[0]
    if report.stopped_by_cancel:
        report.cancelled = mark_cancelled(manifest, writer, max_attempts)
    report.seconds = time.perf_counter() - start
    manifest.record_run(writer.epoch, {"worker": worker, **report.summary()})
    record_calibration(executor, root, rendered, storage_options)
    return report


def record_calibration(
    executor: Executor,
    root: str,
    rendered: list[tuple[dict, float]],
    storage_options: dict | None = None,
) -> None:
    """Add a pass's completed renders to its model's calibration on its device
    (farm.campaign.cost), which prices the next estimate. Advisory: a failure is logged."""
    if not rendered:
        return
    rows = pa.Table.from_pylist([row for row, _ in rendered])
    seconds = sum(s for _, s in rendered)
    try:
        device = executor.model_info().get("device", "unknown")
        work = float(cost.variant_work(rows).sum())
        preset = str(rows["preset"][0].as_py())
        cost.record(root, preset, device, seconds, work, len(rendered), storage_options)
    except Exception as error:  # the renders and their events are safe; only the rate waits
        log.warning("calibration not recorded: %s", error)


def mark_cancelled(manifest: Manifest, writer: Any, max_attempts: int | None = None) -> int:
    """Commit `cancelled` for every variant still pending; returns how many."""
    max_attempts = max_attempts or JobOptions().max_attempts
    todo = manifest.pending(max_attempts=max_attempts).select(["variant_id", "attempt"])
    events = [
        {
            "variant_id": r["variant_id"],
            "status": "cancelled",
            "attempt": r["attempt"],
            "error_code": "cancelled",
            "error_message": "campaign cancelled",
        }
        for r in todo.to_pylist()
    ]
    if events:
        writer.commit(events)
    return len(events)
