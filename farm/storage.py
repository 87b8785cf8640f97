"""Storage retries: every read and write of farm state rides out a storage blip.

Object stores drop connections, answer 503 and go away for seconds at a time. A campaign
job must neither lose an event nor fail a variant for that, so every storage call the farm
makes (manifest parts, epoch files, outputs, the cancel marker) goes through `retry`:

- transient errors (connection refused/reset, timeouts, 5xx surfacing as OSError or as a
  raw botocore error) are retried with exponential backoff, `RETRY_DELAY_S` doubling up to
  `RETRY_MAX_DELAY_S`, until `RETRY_WINDOW_S` seconds have passed (at least
  `RETRY_MIN_ATTEMPTS` tries), then `StorageUnavailable` is raised;
- errors about the file itself (exists, not found, permission) are raised at once: a retry
  cannot change them, and exclusive create depends on seeing FileExistsError.

`RETRY_WINDOW_S` defaults to 60 s (`FARM_STORAGE_RETRY_S` overrides it): long enough for a
restarting S3 endpoint, short enough that a store that is really gone stops the job with a
clear error instead of hanging it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RETRY_WINDOW_S", "STORAGE_ERRORS", "StorageUnavailable", "retry"]

# What a storage call raises when storage fails: s3fs lets some botocore errors (connection
# resets, timeouts) through untranslated.
STORAGE_ERRORS: tuple[type[Exception], ...] = (OSError,)
try:
    from botocore.exceptions import BotoCoreError

    STORAGE_ERRORS += (BotoCoreError,)
except ImportError:  # pragma: no cover - botocore comes with s3fs
    pass

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_MIN_ATTEMPTS = 4
RETRY_DELAY_S = 0.05  # first backoff; doubles each attempt
RETRY_MAX_DELAY_S = 2.0
RETRY_WINDOW_S = float(os.environ.get("FARM_STORAGE_RETRY_S", "60"))
# Errors that say something about the file rather than the connection: never retried.
PERMANENT = (FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError)


class StorageUnavailable(OSError):
    """Storage kept failing for the whole retry window; the message says what and how often."""


def retry(
    fn: Callable[[], T],
    what: str,
    *,
    error: type[Exception] = StorageUnavailable,
    window_s: float | None = None,
) -> T:
    """Run `fn`, retrying transient storage errors with backoff; `error` once the window is spent.

    `window_s` defaults to the module's RETRY_WINDOW_S (read at call time, so tests and
    benchmarks can shorten it). A StorageUnavailable from a nested retry is not retried again.
    """
    window = RETRY_WINDOW_S if window_s is None else window_s
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except (*PERMANENT, StorageUnavailable):
            raise
        except STORAGE_ERRORS as err:
            elapsed = time.monotonic() - start
            if attempt >= RETRY_MIN_ATTEMPTS and elapsed >= window:
                raise error(
                    f"{what}: failed after {attempt} attempts over {elapsed:.1f} s: {err!r}"
                ) from err
            delay = min(RETRY_MAX_DELAY_S, RETRY_DELAY_S * 2 ** (attempt - 1))
            if attempt == RETRY_MIN_ATTEMPTS:
                log.warning("%s: storage error (%r); retrying for up to %.0f s", what, err, window)
            time.sleep(delay)
