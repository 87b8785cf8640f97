"""Storage primitives and input checks under the manifest: exclusive create, retries, tables.

Exclusive create, per backend (`exclusive_write`):

- local: write a hidden temp file in the target directory, then `link` it to the final
  name. `link(2)` is atomic and fails with EEXIST if the name is taken, so readers never see
  a partial file and two writers never both win. (`rename` would silently replace.)
- S3 (s3fs): one `PutObject` with `If-None-Match: *` (s3fs `pipe_file(mode="create")`).
  The object appears whole or not at all, and S3 answers 412 if the key exists, which
  s3fs raises as FileExistsError. AWS S3 honours this since 2024-08, as do moto and MinIO.
  `Manifest.writer` checks it once per takeover (creating its epoch file a second time
  must fail) and refuses to write to a store that ignores it.
- memory: `pipe_file(mode="create")` checks and stores the whole bytes in one step.
- others: the filesystem's own `mode="create"`; fsspec's generic fallback is an existence
  check then a write, which is safe given one writer per campaign plus epoch fencing.

A retried create that finds the file already there compares bytes: its own earlier try
landed (the reply was lost), so that counts as success rather than a collision.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from farm import storage
from farm.campaign.tables import EVENTS, STATUSES, VARIANTS, VARIANTS_OPTIONAL

T = TypeVar("T")


class ManifestError(Exception):
    """Base of every error the manifest raises on purpose."""


class ManifestStorageError(ManifestError, storage.StorageUnavailable):
    """Storage kept failing for the whole retry window (see farm.storage)."""


def retry(fn: Callable[[], T], what: str) -> T:
    """Run `fn`, retrying transient storage errors with backoff (farm.storage.retry)."""
    return storage.retry(fn, what, error=ManifestStorageError)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)


def exclusive_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Create `path` holding `data`, all at once, or raise FileExistsError if it exists."""
    if not _is_local(fs):
        fs.pipe_file(path, data, mode="create")  # see the module docstring, per backend
        return
    parent, name = posixpath.split(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
    fs.pipe_file(tmp, data)
    try:
        fs.link(tmp, path)
    finally:
        fs.rm_file(tmp)


def write_once(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Exclusive create with retries; an existing file with our exact bytes counts as ours."""
    try:
        retry(lambda: exclusive_write(fs, path, data), f"write {path}")
    except FileExistsError:
        if retry(lambda: fs.cat_file(path), f"read {path}") != data:
            raise


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """The whole file, with retries."""
    return retry(lambda: fs.cat_file(path), f"read {path}")


def parquet_bytes(table: pa.Table, metadata: dict[bytes, bytes] | None = None) -> bytes:
    """`table` as one Parquet file in memory (parts are small; one PUT writes them)."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def conform(table: pa.Table, schema: pa.Schema, what: str, fill: bool = False) -> pa.Table:
    """`table` with `schema`'s columns and types; ValueError naming the offending column.

    Missing columns are an error, or all-null with `fill`. Types are cast safely, so
    int64 -> int32 passes when every value fits and fails (naming the column) when not.
    """
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise ValueError(f"{what}: unknown column {extra[0]!r} (expected {schema.names})")
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            if not fill:
                raise ValueError(f"{what}: missing column {field.name!r} ({field.type})")
            columns.append(pa.nulls(len(table), field.type))
            continue
        col = table.column(field.name)
        try:
            columns.append(col if col.type == field.type else col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(
                f"{what}: column {field.name!r} has type {col.type}, expected {field.type}: {err}"
            ) from err
    return pa.Table.from_arrays(columns, schema=schema)


def content_sha256(table: pa.Table) -> str:
    """Hash of a table's values that depends on neither chunking, buffers nor file format."""
    digest = hashlib.sha256(str(table.schema).encode())
    sep = pa.scalar("\x1f", pa.large_string())
    for chunked in table.columns:
        col = chunked.combine_chunks()
        digest.update(pc.is_null(col).to_numpy(zero_copy_only=False).tobytes())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = col.cast(pa.large_string()).fill_null("")
            one_list = pa.LargeListArray.from_arrays(pa.array([0, len(text)], pa.int64()), text)
            digest.update(pc.binary_join(one_list, sep)[0].as_buffer())
        else:  # fixed width: the values themselves, with nulls (already hashed) as zeros
            digest.update(col.fill_null(0).to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def const_int64(value: int, n: int) -> pa.Array:
    """A column of `n` copies of `value`."""
    return pa.repeat(pa.scalar(value, pa.int64()), n)


def check_variants(table: pa.Table, campaign_id: str) -> pa.Table:
    """`table` as VARIANTS rows of this campaign with unique ids; ValueError naming the column."""
    for name in VARIANTS_OPTIONAL:
        if name not in table.column_names:
            table = table.append_column(
                VARIANTS.field(name), pa.nulls(len(table), VARIANTS.field(name).type)
            )
    table = conform(table, VARIANTS, "variants")
    if pc.any(pc.not_equal(table["campaign_id"], campaign_id)).as_py():
        raise ValueError(f"variants: column 'campaign_id' must be {campaign_id!r} everywhere")
    ids = table["variant_id"]
    if ids.null_count or pc.count_distinct(ids).as_py() != len(table):
        raise ValueError("variants: column 'variant_id' must be non-null and unique")
    return table


def _events_from_rows(rows: list[dict[str, Any]]) -> pa.Table:
    unknown = set().union(*rows) - set(EVENTS.names)
    if unknown:
        raise ValueError(f"events: unknown column {sorted(unknown)[0]!r}")
    try:
        return pa.Table.from_pylist(rows, schema=EVENTS)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for field in EVENTS:  # Arrow's message lacks the column: find it, on the error path only
            try:
                pa.array([row.get(field.name) for row in rows], field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                raise ValueError(f"events: column {field.name!r}: {err}") from err
        raise


def check_events(
    events: pa.Table | list[dict[str, Any]], variant_ids: pa.ChunkedArray, epoch: int, worker: str
) -> pa.Table:
    """Events as EVENTS rows stamped with the writer's epoch; ValueError naming the column.

    Missing columns are null; `ts` and `worker` default to now and the writer's worker.
    The epoch is always the writer's: fencing judges a row by the epoch that wrote it.
    """
    if not isinstance(events, pa.Table):
        events = _events_from_rows(list(events))
    table = conform(events, EVENTS, "events", fill=True)
    if not len(table):
        raise ValueError("events: nothing to commit")
    for name in ("variant_id", "status", "attempt"):
        if table[name].null_count:
            raise ValueError(f"events: column {name!r} must not be null")
    bad = pc.invert(pc.is_in(table["status"], pa.array(STATUSES)))
    if pc.any(bad).as_py():
        first = table["status"].filter(bad)[0].as_py()
        raise ValueError(f"events: column 'status' has {first!r}, not in {STATUSES}")
    # Probe the campaign's ids against the part's few ids: hashing 1M ids per commit is slow.
    wanted = pc.unique(table["variant_id"])
    known = variant_ids.filter(pc.is_in(variant_ids, value_set=wanted))
    if len(known) != len(wanted):
        first = wanted.filter(pc.invert(pc.is_in(wanted, value_set=known)))[0].as_py()
        raise ValueError(f"events: column 'variant_id' has {first!r}, not in this campaign")
    now = pa.scalar(datetime.now(UTC), EVENTS.field("ts").type)
    table = table.set_column(3, "epoch", const_int64(epoch, len(table)))
    table = table.set_column(4, "ts", table["ts"].fill_null(now))
    return table.set_column(10, "worker", table["worker"].fill_null(worker))
