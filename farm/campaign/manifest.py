"""Campaign manifests: variants plus an append-only log of render events on any fsspec storage.

Layout under `{root}/campaigns/{campaign_id}/`:

    spec.json                      the campaign spec; written last, so it marks the campaign
    variants.parquet               VARIANTS rows, immutable; footer holds their content hash
    epochs/{epoch:06d}.json        one per writer takeover: {"epoch", "fenced_from", ...}
    events/{seq:012d}.parquet      EVENTS rows, one immutable part per commit
    snapshot-{seq:012d}.parquet    latest valid event per variant over all parts <= seq
    runs/{epoch:06d}.json          how each writer's pass ended: counts, stop reason

Invariants:

1. Every file is created once, whole, by an exclusive create, and never rewritten or
   deleted (`manifest_io.exclusive_write`: link on local, `If-None-Match: *` on S3).
   Seqs are dense: a writer writes its next seq and, when that is taken, jumps to the
   highest listed seq + 1, so a snapshot at `seq` covers every part up to `seq`.
2. Epochs are dense (a takeover creates `max + 1` exclusively) and epoch `e` records
   `fenced_from`, the next seq at its takeover. A part of epoch `e` is valid only if its
   seq is below the `fenced_from` of every later epoch, so once a new writer has taken
   over, whatever an older writer still manages to write is ignored by every reader.
   Parts that land between a takeover's listing and its epoch file are re-committed by
   the new writer, so no event whose commit returned is lost.
3. A commit returns only once its part is durable and valid: the writer checks for a
   newer epoch before and after writing and raises `StaleWriter` when fenced.
4. Readers take the newest readable snapshot plus the valid parts after it. A part that
   cannot be read or has the wrong schema goes to `Manifest.problems` and is skipped; an
   unreadable snapshot falls back to an older one (parts are kept). Snapshot rows are
   final: an epoch taken after it fences from above its seq, and an epoch racing it
   adopts (2) whatever it fences.
5. A variant's latest event is the one with the highest seq, then the last row.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from farm.campaign.cost import variant_work
from farm.campaign.manifest_io import (
    ManifestError,
    ManifestStorageError,
    check_events,
    check_variants,
    conform,
    const_int64,
    content_sha256,
    exclusive_write,
    parquet_bytes,
    read_bytes,
    retry,
    write_once,
)
from farm.campaign.tables import EVENTS, STATUSES, TERMINAL
from farm.jobs.options import JobOptions
from farm.storage import StorageUnavailable

# Readers without a job's options (status pages, metrics) count attempts as a campaign job
# does by default (JobOptions owns the retry policy).
DEFAULT_MAX_ATTEMPTS: int = JobOptions.model_fields["max_attempts"].default

__all__ = [
    "Manifest",
    "ManifestConflict",
    "ManifestError",
    "ManifestNotFound",
    "ManifestStorageError",
    "ManifestWriter",
    "Progress",
    "StaleWriter",
]

_PART = re.compile(r"(\d{12})\.parquet")
_SNAPSHOT = re.compile(r"snapshot-(\d{12})\.parquet")
_EPOCH = re.compile(r"(\d{6})\.json")
_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HASH_KEY = b"farm.variants_sha256"


class ManifestNotFound(ManifestError):
    """The campaign (or one of its required files) does not exist."""


class ManifestConflict(ManifestError):
    """The campaign already exists with different variants."""


class StaleWriter(ManifestError):
    """A newer writer epoch has taken over this campaign."""


@dataclass(frozen=True)
class Progress:
    """How far a campaign has got: counts, GPU time spent, throughput and ETA."""

    total: int
    by_status: dict[str, int]  # every status in STATUSES, zeros included
    by_group: pa.Table  # status, locale, format, count
    completed_gpu_s: float  # measured gpu_seconds of completed variants
    throughput: float  # completed variants per second over the window
    eta_s: float | None  # remaining work / work completed per second; None: no rate


def _latest_rows(events: pa.Table) -> pa.Array:
    """Row indices of each variant's latest event (rows are in seq, then row, order)."""
    rows = pa.table({"variant_id": events["variant_id"], "row": np.arange(len(events))})
    return rows.group_by("variant_id").aggregate([("row", "max")])["row_max"].sort()


class Manifest:
    """One campaign's variants and event log on fsspec storage; see the module invariants."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, campaign_id: str) -> None:
        self.fs = fs
        self.campaign_id = campaign_id
        self.dir = posixpath.join(root, "campaigns", campaign_id)
        self.problems: list[tuple[str, str]] = []  # (path, reason) found by the last read
        self._variants: pa.Table | None = None
        self._parts: dict[str, pa.Table] = {}  # path -> rows; parts are immutable
        self._epochs: dict[int, int] = {}  # epoch -> fenced_from; epoch files are immutable

    # ---- opening -------------------------------------------------------------------------

    @staticmethod
    def _fs(root: str, campaign_id: str, options: dict | None) -> tuple[Any, str]:
        if not _CAMPAIGN_ID.fullmatch(campaign_id):
            raise ValueError(f"campaign_id: must match {_CAMPAIGN_ID.pattern}, got {campaign_id!r}")
        return fsspec.core.url_to_fs(root, **(options or {}))

    @classmethod
    def create(
        cls,
        root: str,
        campaign_id: str,
        spec: dict,
        variants: pa.Table,
        storage_options: dict | None = None,
    ) -> Manifest:
        """Create a campaign, or open it if it already exists with the same variants."""
        fs, path = cls._fs(root, campaign_id, storage_options)
        m = cls(fs, path, campaign_id)
        variants = check_variants(variants, campaign_id)
        digest = content_sha256(variants).encode()
        vpath = m._path("variants.parquet")
        try:
            if retry(lambda: fs.exists(vpath), f"stat {vpath}"):
                raise FileExistsError(vpath)
            data = parquet_bytes(variants, {_HASH_KEY: digest})
            retry(lambda: exclusive_write(fs, vpath, data), f"write {vpath}")
        except FileExistsError:
            # Created before (or by a concurrent create): same content is fine, else refuse.
            if m._variants_digest() != digest:
                raise ManifestConflict(
                    f"campaign {campaign_id!r} exists at {vpath} with different variants"
                ) from None
        with_spec = json.dumps(spec, sort_keys=True, indent=2, default=str).encode()
        # The spec goes last: its presence marks the campaign complete. If it exists, an
        # earlier create of the same variants wrote it.
        with contextlib.suppress(FileExistsError):
            write_once(fs, m._path("spec.json"), with_spec)
        m._variants = variants
        return m

    @classmethod
    def open(cls, root: str, campaign_id: str, storage_options: dict | None = None) -> Manifest:
        """Open an existing campaign; ManifestNotFound naming the missing path otherwise."""
        fs, path = cls._fs(root, campaign_id, storage_options)
        m = cls(fs, path, campaign_id)
        for name in ("spec.json", "variants.parquet"):
            if not retry(lambda n=name: fs.exists(m._path(n)), f"stat {name}"):
                url = fs.unstrip_protocol(m._path(name))
                raise ManifestNotFound(f"no campaign {campaign_id!r}: {url} is missing")
        return m

    def _variants_digest(self) -> bytes | None:
        """The content hash stored in the variants file's footer (only the footer is read)."""
        path = self._path("variants.parquet")

        def footer() -> pa.Schema:
            with self.fs.open(path, "rb") as f:
                return pq.read_schema(f)

        return (retry(footer, f"read {path}").metadata or {}).get(_HASH_KEY)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.dir, *parts)

    @property
    def spec(self) -> dict:
        """The campaign spec as written by `create`."""
        path = self._path("spec.json")
        return json.loads(read_bytes(self.fs, path))

    @property
    def variants(self) -> pa.Table:
        """The campaign's VARIANTS table (read once; it is immutable)."""
        if self._variants is None:
            path = self._path("variants.parquet")
            data = read_bytes(self.fs, path)
            self._variants = pq.read_table(pa.BufferReader(data)).replace_schema_metadata(None)
        return self._variants

    # ---- storage listing ----------------------------------------------------------------

    def _ls(self, *parts: str) -> dict[str, str]:
        """Basename -> path of the files in a campaign directory, fresh from storage."""
        path = self._path(*parts)
        self.fs.invalidate_cache(path)  # s3fs caches listings; parts appear under our feet
        try:
            names = retry(lambda: self.fs.ls(path, detail=False), f"list {path}")
        except FileNotFoundError:
            return {}
        return {posixpath.basename(n.rstrip("/")): n for n in names}

    def _seqs(self, pattern: re.Pattern, *parts: str) -> dict[int, str]:
        found = ((pattern.fullmatch(n), p) for n, p in self._ls(*parts).items())
        return {int(m.group(1)): p for m, p in found if m}

    def _read_epochs(self) -> dict[int, int]:
        """Epoch -> fenced_from for every epoch file (new ones read, old ones cached)."""
        for epoch, path in self._seqs(_EPOCH, "epochs").items():
            if epoch not in self._epochs:
                try:
                    record = json.loads(read_bytes(self.fs, path))
                    self._epochs[epoch] = int(record["fenced_from"])
                except (ValueError, KeyError, TypeError) as err:
                    # Unknown fencing means unknown validity: refuse rather than guess.
                    raise ManifestError(f"{path}: unreadable epoch record: {err}") from err
        return dict(self._epochs)

    def _next_seq(self) -> int:
        seqs = [*self._seqs(_PART, "events"), *self._seqs(_SNAPSHOT)]
        return max(seqs, default=-1) + 1

    def _load(self, paths: Sequence[str]) -> dict[str, pa.Table]:
        """Read parts or snapshots; unreadable ones go to `problems` and are left out."""
        todo = [p for p in paths if p not in self._parts]
        fetched = retry(lambda: self.fs.cat(todo, on_error="return"), "read parts") if todo else {}
        for path in todo:
            data = fetched.get(path)
            try:
                if data is None or isinstance(data, Exception):  # one more try on its own
                    data = read_bytes(self.fs, path)
                table = pq.read_table(pa.BufferReader(data))
                self._parts[path] = conform(table, EVENTS, path)
            except StorageUnavailable:
                raise  # storage is down, the part may be fine: a partial read would lie
            except Exception as err:  # any bad part is reported, never fatal
                self.problems.append((path, f"{type(err).__name__}: {err}"))
        return {p: self._parts[p] for p in paths if p in self._parts}

    # ---- reading ------------------------------------------------------------------------

    def _events(self) -> tuple[pa.Table, int]:
        """Valid events (EVENTS + seq, in order) and the highest seq looked at."""
        self.problems = []
        parts = self._seqs(_PART, "events")
        snapshots = self._seqs(_SNAPSHOT)
        epochs = self._read_epochs()  # after listing parts: every part's epoch is on file
        base_seq, tables = -1, []
        for seq in sorted(snapshots, reverse=True):
            loaded = self._load([snapshots[seq]])
            if loaded:
                base_seq, snap = seq, loaded[snapshots[seq]]
                tables.append(snap.append_column("seq", const_int64(seq, len(snap))))
                break
        later = sorted(s for s in parts if s > base_seq)
        loaded = self._load([parts[s] for s in later])
        # Forget what a snapshot has made redundant, so memory follows the uncompacted tail.
        keep_cached = {*loaded, snapshots.get(base_seq)}
        self._parts = {p: t for p, t in self._parts.items() if p in keep_cached}
        for seq in later:
            part = loaded.get(parts[seq])
            if part is None:
                continue
            if not pc.all(pc.is_in(part["epoch"], pa.array(list(epochs), pa.int64()))).as_py():
                self.problems.append((parts[seq], "rows from an epoch with no epochs/ record"))
                continue
            tables.append(part.append_column("seq", const_int64(seq, len(part))))
        schema = EVENTS.append(pa.field("seq", pa.int64()))
        events = pa.concat_tables(tables) if tables else schema.empty_table()
        # Fencing: epoch e's rows count only below the fenced_from of every later epoch.
        order = sorted(epochs)
        limits = [min((epochs[f] for f in order if f > e), default=2**62) for e in order]
        limit = pa.array(limits, pa.int64()).take(pc.index_in(events["epoch"], pa.array(order)))
        keep = pc.or_(pc.less_equal(events["seq"], base_seq), pc.less(events["seq"], limit))
        return events.filter(keep), max([base_seq, *later])

    def events(self) -> pa.Table:
        """The newest readable snapshot's rows, then every valid part after it, plus `seq`."""
        return self._events()[0]

    def status(self) -> pa.Table:
        """Each variant's columns with its latest event; no event yet: queued, attempt 0."""
        events = self.events()
        latest = events.take(_latest_rows(events))
        variants = self.variants
        at = pc.index_in(variants["variant_id"], value_set=latest["variant_id"])
        joined = latest.drop_columns(["variant_id"]).take(at)  # null rows where no event
        joined = joined.set_column(0, "status", joined["status"].fill_null("queued"))
        joined = joined.set_column(1, "attempt", joined["attempt"].fill_null(0))
        return pa.Table.from_arrays(
            variants.columns + joined.columns, names=variants.column_names + joined.column_names
        )

    def _runnable(self, status: pa.Table, max_attempts: int) -> pa.Array:
        exhausted = pc.and_(
            pc.equal(status["status"], "failed"), pc.greater_equal(status["attempt"], max_attempts)
        )
        return pc.and_(
            pc.invert(pc.is_in(status["status"], pa.array(TERMINAL))), pc.invert(exhausted)
        )

    def pending(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> pa.Table:
        """Variants still to render (not terminal, attempts left), highest priority first."""
        status = self.status()
        todo = status.filter(self._runnable(status, max_attempts))
        return todo.sort_by([("priority", "descending"), ("variant_id", "ascending")])

    def progress(
        self,
        window_s: float = 600.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        now: datetime | None = None,
    ) -> Progress:
        """Counts by status and by status x locale x format, throughput over `window_s`, ETA."""
        status = self.status()
        counts = status.group_by("status").aggregate([("status", "count")]).to_pydict()
        by_status = dict.fromkeys(STATUSES, 0) | dict(
            zip(counts["status"], counts["status_count"], strict=True)
        )
        by_group = (
            status.group_by(["status", "locale", "format"])
            .aggregate([("variant_id", "count")])
            .rename_columns(["status", "locale", "format", "count"])
            .sort_by([("status", "ascending"), ("locale", "ascending"), ("format", "ascending")])
        )
        completed = pc.equal(status["status"], "completed")
        now = now or datetime.now(UTC)
        start = now - timedelta(seconds=window_s)
        first = pc.min(status["ts"]).as_py()
        span = (now - max(start, first)).total_seconds() if first else 0.0
        recent = status.filter(pc.and_(completed, pc.greater_equal(status["ts"], start)))
        # Work (farm.campaign.cost) from each row's own columns, so older manifests count too.
        rate = variant_work(recent).sum() / span if span > 0 and len(recent) else 0.0
        todo = status.filter(self._runnable(status, max_attempts))
        remaining = variant_work(todo).sum() if len(todo) else 0.0
        eta = 0.0 if not len(todo) else (float(remaining / rate) if rate > 0 else None)
        return Progress(
            total=len(status),
            by_status=by_status,
            by_group=by_group,
            completed_gpu_s=pc.sum(status.filter(completed)["gpu_seconds"]).as_py() or 0.0,
            throughput=len(recent) / span if span > 0 else 0.0,
            eta_s=eta,
        )

    def compact(self) -> int | None:
        """Write a snapshot of the latest event per variant; returns its seq (None: no events)."""
        events, seq = self._events()
        if seq < 0:
            return None
        latest = events.take(_latest_rows(events)).drop_columns(["seq"])
        path = self._path(f"snapshot-{seq:012d}.parquet")
        with contextlib.suppress(FileExistsError):  # same parts, same snapshot: done already
            write_once(self.fs, path, parquet_bytes(latest))
        return seq

    def runs(self) -> list[dict[str, Any]]:
        """The run records (`record_run`), oldest epoch first; unreadable ones are skipped."""
        out = []
        for _, path in sorted(self._seqs(_EPOCH, "runs").items()):
            with contextlib.suppress(ValueError):
                out.append(json.loads(read_bytes(self.fs, path)))
        return out

    # ---- writing ------------------------------------------------------------------------

    def record_run(self, epoch: int, record: dict[str, Any]) -> None:
        """Record how epoch `epoch`'s pass ended (counts, why it stopped); once per epoch."""
        data = json.dumps({"epoch": epoch, **record}, sort_keys=True, default=str).encode()
        write_once(self.fs, self._path("runs", f"{epoch:06d}.json"), data)

    def writer(self, worker: str = "") -> ManifestWriter:
        """Take over as this campaign's writer with a new epoch, fencing every older one."""
        while True:
            epoch = max(self._read_epochs(), default=0) + 1
            fenced_from = self._next_seq()
            record = {
                "epoch": epoch,
                "fenced_from": fenced_from,
                "worker": worker,
                "created_at": datetime.now(UTC).isoformat(),
            }
            path = self._path("epochs", f"{epoch:06d}.json")
            data = json.dumps(record).encode()
            try:
                retry(lambda p=path, d=data: exclusive_write(self.fs, p, d), f"write {path}")
                break
            except FileExistsError:
                continue  # another writer took this epoch: take the next one
        # A second create must fail: a store that ignores If-None-Match would overwrite
        # here, and fencing depends on exclusive create.
        with contextlib.suppress(FileExistsError):
            exclusive_write(self.fs, path, data)
            raise ManifestError(f"{path}: storage does not support exclusive create")
        self._epochs[epoch] = fenced_from
        w = ManifestWriter(self, epoch, fenced_from, worker)
        # Parts an older writer landed between our listing and our epoch file are fenced
        # now, though that writer saw no newer epoch and reported success: adopt them.
        late = self._load(
            [p for s, p in sorted(self._seqs(_PART, "events").items()) if s >= fenced_from]
        )
        if late:
            w.commit(pa.concat_tables(late.values()))
        return w


class ManifestWriter:
    """The single writer of a campaign's event log for one epoch."""

    def __init__(self, manifest: Manifest, epoch: int, fenced_from: int, worker: str) -> None:
        self.manifest = manifest
        self.epoch = epoch
        self.fenced_from = fenced_from
        self.worker = worker
        self._next_seq = fenced_from

    def _newer_epoch(self) -> int | None:
        """fenced_from of the next epoch if one exists (epochs are dense, so one look)."""
        m = self.manifest
        path = m._path("epochs", f"{self.epoch + 1:06d}.json")
        m.fs.invalidate_cache(posixpath.dirname(path))
        if not retry(lambda: m.fs.exists(path), f"stat {path}"):
            return None
        return m._read_epochs()[self.epoch + 1]

    def commit(self, events: pa.Table | list[dict[str, Any]]) -> int:
        """Append events as one new part and return its seq; StaleWriter once fenced."""
        m = self.manifest
        ids = m.variants["variant_id"]
        data = parquet_bytes(check_events(events, ids, self.epoch, self.worker))
        if self._newer_epoch() is not None:
            raise StaleWriter(f"{m.dir}: epoch {self.epoch} was taken over; nothing written")
        while True:
            path = m._path("events", f"{self._next_seq:012d}.parquet")
            try:
                write_once(m.fs, path, data)
                break
            except FileExistsError:
                # Someone else holds this seq (a racing writer): skip past everything listed.
                self._next_seq = max(self._next_seq + 1, m._next_seq())
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        fence = self._newer_epoch()
        if fence is not None and seq >= fence:
            raise StaleWriter(
                f"{path}: epoch {self.epoch + 1} took over from seq {fence}; readers ignore it"
            )
        return seq
