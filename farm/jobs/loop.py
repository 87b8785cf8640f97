"""Render a campaign's pending variants and record every outcome in its manifest.

The loop the campaign job runs (and `farm demo` in-process): take a writer epoch, pick the
pending variants (highest priority first), mark each `in_progress`, render it through any
executor, and commit `completed` with its file and sha256, or `failed` with a reason from
the failure taxonomy. Finished variants are never pending again, so running it a second
time after a crash resumes where the manifest says, without re-rendering anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from farm import metrics
from farm.campaign.manifest import Manifest
from farm.campaign.tables import FAILURE_CODES
from farm.output.render import render_variant
from farm.render.engine import Executor

try:  # raw botocore errors (connection lost mid-upload) are storage errors too
    from botocore.exceptions import BotoCoreError as _BotoError
except ImportError:  # pragma: no cover - botocore comes with s3fs
    _BotoError = OSError


@dataclass
class RunReport:
    """What one pass over the pending variants did."""

    completed: int = 0
    failed: int = 0
    seconds: float = 0.0


def failure_code(error: BaseException) -> str:
    """The taxonomy code of a render failure (farm.schemas.FAILURE_CODES).

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
    if isinstance(error, OSError | _BotoError):
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
        out = render_variant(executor, row, root, storage_options=storage_options, **engine)
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


def render_pending(
    manifest: Manifest,
    executor: Executor,
    root: str,
    *,
    limit: int | None = None,
    max_attempts: int = 3,
    storage_options: dict | None = None,
    on_done: Callable[[dict, str], None] | None = None,
    **engine,
) -> RunReport:
    """Render up to `limit` pending variants one after another; returns the counts."""
    start = time.perf_counter()
    report = RunReport()
    writer = manifest.writer(worker="runner")
    status = manifest.status()
    attempts = dict(
        zip(status["variant_id"].to_pylist(), status["attempt"].to_pylist(), strict=True)
    )
    pending = manifest.pending(max_attempts=max_attempts)
    if limit is not None:
        pending = pending.slice(0, limit)
    for row in pending.to_pylist():
        attempt = attempts.get(row["variant_id"], 0) + 1
        code = render_one(
            lambda e: writer.commit([e]),
            executor,
            row,
            attempt,
            root,
            storage_options=storage_options,
            **engine,
        )
        outcome = "completed" if code is None else "failed"
        report.completed += code is None
        report.failed += code is not None
        if on_done:
            on_done(row, outcome)
    report.seconds = time.perf_counter() - start
    return report
