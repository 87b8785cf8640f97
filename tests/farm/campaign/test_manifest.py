"""Manifest behaviour, the same tests on a local dir, `memory://` and a real S3 server."""

from __future__ import annotations

import io
import posixpath
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from farm import storage as farm_storage
from farm.campaign import manifest_io
from farm.campaign.manifest import (
    Manifest,
    ManifestConflict,
    ManifestNotFound,
    ManifestStorageError,
    StaleWriter,
)
from farm.campaign.tables import EVENTS, VARIANTS, VARIANTS_OPTIONAL

CAMPAIGN = "summer-25"
LOCALES = ["en-US", "ar-SA", "ja-JP", "de-DE"]
FORMATS = ["tiktok", "feed", "story"]
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

Storage = tuple[str, dict | None]


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path) -> Iterator[Storage]:
    """A fresh, empty manifest root on each kind of storage."""
    if request.param == "local":
        yield str(tmp_path / "farm-data"), None
    elif request.param == "memory":
        root = f"memory://manifest-{uuid.uuid4().hex}"
        yield root, None
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        base, options = request.getfixturevalue("s3_server")
        yield f"{base}/{uuid.uuid4().hex}", options


def make_variants(n: int, campaign_id: str = CAMPAIGN) -> pa.Table:
    """A synthetic VARIANTS table: locales and formats cycle, priority is i % 5."""
    i = np.arange(n)
    ids = pc.binary_join_element_wise("v", pc.utf8_lpad(pa.array(i.astype(str)), 7, "0"), "")
    text = pa.array(np.full(n, "a red bottle turns"))
    columns = {
        "variant_id": ids,
        "campaign_id": pa.array(np.full(n, campaign_id)),
        "product_id": pa.array(np.full(n, "p1")),
        "product_name": pa.array(np.full(n, "Bottle")),
        "locale": pa.array(np.array(LOCALES)[i % len(LOCALES)]),
        "format": pa.array(np.array(FORMATS)[i % len(FORMATS)]),
        "aspect": pa.array(np.full(n, "9:16")),
        "width": pa.array(np.full(n, 144, np.int32)),
        "height": pa.array(np.full(n, 256, np.int32)),
        "duration_s": pa.array(np.full(n, 2.0, np.float32)),
        "fps": pa.array(np.full(n, 24, np.int32)),
        "frames": pa.array(np.full(n, 49, np.int32)),
        "seed": pa.array(i),
        "prompt": text,
        "negative_prompt": pa.array(np.full(n, "")),
        "headline": text,
        "cta": pa.array(np.full(n, "Buy")),
        "preset": pa.array(np.full(n, "small")),
        "steps": pa.array(np.full(n, 20, np.int32)),
        "guidance": pa.array(np.full(n, 5.0, np.float32)),
        "priority": pa.array((i % 5).astype(np.int32)),
        "work": pa.array(np.full(n, 10.0)),
    }
    for name in VARIANTS_OPTIONAL:  # no product images: no end cards
        columns[name] = pa.nulls(n, VARIANTS.field(name).type)
    return pa.table(columns, schema=VARIANTS)


def make_events(ids: list[str] | pa.Array, status: str, attempt: int = 1, **cols) -> pa.Table:
    """EVENTS rows for `ids`, all with one status; other columns left to the writer."""
    ids = pa.array(ids, pa.string())
    data = {
        "variant_id": ids,
        "status": pa.array([status] * len(ids)),
        "attempt": [attempt] * len(ids),
    }
    data |= {k: [v] * len(ids) for k, v in cols.items()}
    return pa.table(data).cast(pa.schema([EVENTS.field(k) for k in data]))


def fs_of(manifest: Manifest) -> fsspec.AbstractFileSystem:
    return manifest.fs


def part_path(manifest: Manifest, seq: int) -> str:
    return manifest._path("events", f"{seq:012d}.parquet")


def by_id(table: pa.Table, column: str) -> dict:
    return dict(zip(table["variant_id"].to_pylist(), table[column].to_pylist(), strict=True))


@pytest.fixture
def small(storage: Storage) -> Manifest:
    root, options = storage
    return Manifest.create(root, CAMPAIGN, {"name": "Summer"}, make_variants(12), options)


# ---- create / open ------------------------------------------------------------------------


def test_create_then_open_gives_the_same_campaign(storage: Storage) -> None:
    root, options = storage
    variants = make_variants(12)
    Manifest.create(root, CAMPAIGN, {"name": "Summer", "budget": 3}, variants, options)
    m = Manifest.open(root, CAMPAIGN, options)
    assert m.spec == {"name": "Summer", "budget": 3}
    assert m.variants.equals(variants)
    status = m.status()
    assert status["status"].to_pylist() == ["queued"] * 12
    assert status["attempt"].to_pylist() == [0] * 12


def test_open_missing_campaign_names_the_path(storage: Storage) -> None:
    root, options = storage
    with pytest.raises(ManifestNotFound, match=r"campaigns/nope/spec\.json"):
        Manifest.open(root, "nope", options)


def test_create_is_idempotent_and_refuses_different_variants(storage: Storage) -> None:
    root, options = storage
    variants = make_variants(12)
    Manifest.create(root, CAMPAIGN, {"name": "Summer"}, variants, options)
    # Same rows in different chunks: the same campaign.
    rechunked = pa.concat_tables([variants.slice(0, 5), variants.slice(5)])
    again = Manifest.create(root, CAMPAIGN, {"name": "Summer"}, rechunked, options)
    assert again.variants.equals(variants)
    changed = variants.set_column(
        variants.schema.get_field_index("priority"), "priority", pa.array([9] * 12, pa.int32())
    )
    with pytest.raises(ManifestConflict, match="different variants"):
        Manifest.create(root, CAMPAIGN, {"name": "Summer"}, changed, options)


def test_half_created_campaign_is_not_found_until_create_finishes(storage: Storage) -> None:
    root, options = storage
    m = Manifest.create(root, CAMPAIGN, {"name": "Summer"}, make_variants(4), options)
    fs_of(m).rm_file(m._path("spec.json"))  # as if create died before its last write
    with pytest.raises(ManifestNotFound, match=r"spec\.json is missing"):
        Manifest.open(root, CAMPAIGN, options)
    Manifest.create(root, CAMPAIGN, {"name": "Summer"}, make_variants(4), options)
    assert Manifest.open(root, CAMPAIGN, options).spec == {"name": "Summer"}


def test_create_names_the_wrong_column(storage: Storage) -> None:
    root, options = storage
    variants = make_variants(3)
    with pytest.raises(ValueError, match="missing column 'work'"):
        Manifest.create(root, CAMPAIGN, {}, variants.drop_columns(["work"]), options)
    bad = variants.set_column(7, "width", pa.array(["wide"] * 3))
    with pytest.raises(ValueError, match="column 'width' has type string"):
        Manifest.create(root, CAMPAIGN, {}, bad, options)
    dup = pa.concat_tables([variants, variants.slice(0, 1)])
    with pytest.raises(ValueError, match="'variant_id' must be non-null and unique"):
        Manifest.create(root, CAMPAIGN, {}, dup, options)


# ---- events, status, progress ---------------------------------------------------------------


def test_commit_then_status_and_progress(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()
    w = small.writer("w1")
    ts = pa.scalar(T0, EVENTS.field("ts").type)
    assert w.commit(make_events(ids[:6], "in_progress", ts=T0)) == 0
    done = make_events(ids[:4], "completed", gpu_seconds=7.5, ts=T0 + timedelta(seconds=60))
    assert w.commit(done) == 1
    failed = [{"variant_id": ids[4], "status": "failed", "attempt": 1, "error_code": "oom"}]
    assert w.commit(failed) == 2

    status = small.status()
    statuses = by_id(status, "status")
    assert [statuses[i] for i in ids[:6]] == ["completed"] * 4 + ["failed", "in_progress"]
    assert set(statuses[i] for i in ids[6:]) == {"queued"}
    assert by_id(status, "error_code")[ids[4]] == "oom"
    assert by_id(status, "worker")[ids[0]] == "w1"
    assert by_id(status, "epoch")[ids[0]] == w.epoch
    assert pc.min(status["ts"]).as_py() == ts.as_py()

    p = small.progress(window_s=600, now=T0 + timedelta(seconds=120))
    assert p.total == 12
    assert p.by_status == {
        "queued": 6,
        "in_progress": 1,
        "completed": 4,
        "failed": 1,
        "cancelled": 0,
    }
    assert p.completed_gpu_s == pytest.approx(30.0)
    # 4 completions over 120 s since the first event; 8 variants x 10 est GPU-s remain.
    assert p.throughput == pytest.approx(4 / 120)
    assert p.eta_s == pytest.approx(80 / (40 / 120))
    groups = {(r["status"], r["locale"], r["format"]): r["count"] for r in p.by_group.to_pylist()}
    assert sum(groups.values()) == 12
    assert groups[("completed", "en-US", "tiktok")] == 1  # ids 0..3: (en,tik) (ar,feed) ...
    assert groups[("failed", "en-US", "feed")] == 1  # id 4
    assert groups[("queued", "de-DE", "feed")] == 1  # id 7


def test_parts_are_plain_parquet(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()
    seq = small.writer().commit(make_events(ids[:3], "completed", gpu_seconds=1.0))
    with fs_of(small).open(part_path(small, seq), "rb") as f:
        table = pq.read_table(f)
    assert table.schema.equals(EVENTS, check_metadata=False)
    assert table["variant_id"].to_pylist() == ids[:3]


def test_events_are_validated_naming_the_column(small: Manifest) -> None:
    w = small.writer()
    with pytest.raises(ValueError, match="column 'status' has 'done'"):
        w.commit(make_events(["v0000000"], "done"))
    with pytest.raises(ValueError, match="column 'variant_id' has 'nope'"):
        w.commit(make_events(["nope"], "completed"))
    with pytest.raises(ValueError, match="column 'attempt'"):
        w.commit([{"variant_id": "v0000000", "status": "failed", "attempt": "x"}])
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        w.commit([{"variant_id": "v0000000", "status": "failed", "attempt": 1, "colour": 1}])
    assert len(small.events()) == 0


# ---- resume and fencing ---------------------------------------------------------------------


def test_crash_after_commit_loses_no_event(storage: Storage) -> None:
    root, options = storage
    m = Manifest.create(root, CAMPAIGN, {}, make_variants(12), options)
    ids = m.variants["variant_id"].to_pylist()
    w = m.writer("first")
    w.commit(make_events(ids[:5], "completed"))
    del w, m  # the job dies without closing anything

    m = Manifest.open(root, CAMPAIGN, options)
    assert by_id(m.status(), "status")[ids[4]] == "completed"
    w2 = m.writer("second")
    assert w2.epoch == 2 and w2.fenced_from == 1
    assert w2.commit(make_events(ids[5:7], "completed")) == 1
    assert m.progress().by_status["completed"] == 7
    assert len(m.pending()) == 5


def test_new_writer_fences_the_old_one(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()
    old = small.writer("old")
    old.commit(make_events(ids[:2], "completed"))
    new = small.writer("new")
    assert new.epoch == old.epoch + 1 and new.fenced_from == 1
    with pytest.raises(StaleWriter):
        old.commit(make_events(ids[2:4], "completed"))
    new.commit(make_events(ids[4:6], "completed"))
    # A part forged with the old epoch at a later seq, written straight to storage.
    forged = make_events(ids[6:8], "completed", epoch=old.epoch, ts=T0, worker="old")
    buf = io.BytesIO()
    pq.write_table(manifest_io.conform(forged, EVENTS, "forged", fill=True), buf)
    fs_of(small).pipe_file(part_path(small, 2), buf.getvalue())

    statuses = by_id(small.status(), "status")
    assert [statuses[i] for i in ids[:8]] == ["completed"] * 2 + ["queued"] * 2 + [
        "completed"
    ] * 2 + ["queued"] * 2
    assert small.problems == []
    # The new writer steps over the forged seq and its events count.
    assert new.commit(make_events(ids[6:7], "failed")) == 3
    assert by_id(small.status(), "status")[ids[6]] == "failed"


def test_takeover_adopts_parts_that_raced_its_epoch(small: Manifest, monkeypatch) -> None:
    ids = small.variants["variant_id"].to_pylist()
    old = small.writer("old")
    old.commit(make_events(ids[:1], "completed"))
    old.commit(make_events(ids[1:2], "completed"))  # seq 1 lands after the new writer listed
    monkeypatch.setattr(Manifest, "_next_seq", lambda self: 1)
    new = small.writer("new")
    monkeypatch.undo()
    assert new.fenced_from == 1  # so the old part at seq 1 is fenced, yet its event stays
    assert by_id(small.status(), "status")[ids[1]] == "completed"
    assert by_id(small.status(), "epoch")[ids[1]] == new.epoch


def test_seq_collision_takes_the_next_seq(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()
    w = small.writer()
    w.commit(make_events(ids[:1], "completed"))
    fs_of(small).copy(part_path(small, 0), part_path(small, 1))  # seq 1 taken behind its back
    assert w.commit(make_events(ids[1:2], "completed")) == 2


def test_bad_parts_are_reported_and_skipped(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()
    w = small.writer()
    w.commit(make_events(ids[:2], "completed"))
    fs = fs_of(small)
    good = fs.cat_file(part_path(small, 0))
    fs.pipe_file(part_path(small, 1), good[: len(good) // 2])
    fs.pipe_file(part_path(small, 2), b"definitely not parquet")
    assert w.commit(make_events(ids[2:3], "completed")) == 3

    statuses = by_id(small.status(), "status")
    assert [statuses[i] for i in ids[:4]] == ["completed"] * 3 + ["queued"]
    assert sorted(p for p, _ in small.problems) == [part_path(small, 1), part_path(small, 2)]
    assert all(reason for _, reason in small.problems)


def test_transient_storage_errors_are_retried(small: Manifest, monkeypatch) -> None:
    ids = small.variants["variant_id"].to_pylist()
    w = small.writer()
    real, calls = manifest_io.exclusive_write, []

    def flaky(fs, path, data):
        calls.append(path)
        if len(calls) <= 2:
            raise ConnectionResetError("connection reset by peer")
        return real(fs, path, data)

    monkeypatch.setattr(farm_storage, "RETRY_DELAY_S", 0.001)
    monkeypatch.setattr(farm_storage, "RETRY_WINDOW_S", 0.0)  # give up after the minimum tries
    monkeypatch.setattr(manifest_io, "exclusive_write", flaky)
    assert w.commit(make_events(ids[:1], "completed")) == 0
    assert len(calls) == 3

    def down(fs, path, data):
        raise OSError("storage down")

    monkeypatch.setattr(manifest_io, "exclusive_write", down)
    with pytest.raises(ManifestStorageError, match="failed after 4 attempts"):
        w.commit(make_events(ids[1:2], "completed"))


def test_storage_outage_on_read_raises_instead_of_skipping_parts(
    small: Manifest, monkeypatch
) -> None:
    ids = small.variants["variant_id"].to_pylist()
    small.writer().commit(make_events(ids[:2], "completed"))
    root = posixpath.dirname(posixpath.dirname(small.dir))
    fresh = Manifest(small.fs, root, CAMPAIGN)  # nothing cached: every part is read
    monkeypatch.setattr(farm_storage, "RETRY_DELAY_S", 0.001)
    monkeypatch.setattr(farm_storage, "RETRY_WINDOW_S", 0.0)
    fs = fs_of(fresh)

    def down(*args, **kwargs):
        raise ConnectionRefusedError("storage down")

    monkeypatch.setattr(fs, "cat", down)
    monkeypatch.setattr(fs, "cat_file", down)
    # A part that cannot be fetched is not a bad part: reading fails loudly, it never
    # reports a status with events missing.
    with pytest.raises(ManifestStorageError, match="storage down"):
        fresh.status()
    monkeypatch.undo()
    assert by_id(fresh.status(), "status")[ids[0]] == "completed" and fresh.problems == []


# ---- compaction and pending -------------------------------------------------------------------


def test_compaction_keeps_status_and_later_events_apply(storage: Storage) -> None:
    root, options = storage
    m = Manifest.create(root, CAMPAIGN, {}, make_variants(12), options)
    ids = m.variants["variant_id"].to_pylist()
    w = m.writer()
    w.commit(make_events(ids[:6], "in_progress"))
    w.commit(make_events(ids[:3], "completed", gpu_seconds=2.0))
    w.commit(make_events(ids[3:4], "failed", error_code="oom"))
    before = m.status()
    assert m.compact() == 2
    assert fs_of(m).exists(m._path(f"snapshot-{2:012d}.parquet"))
    fresh = Manifest.open(root, CAMPAIGN, options)
    assert fresh.status().drop_columns(["seq"]).equals(before.drop_columns(["seq"]))
    assert len(fresh.events()) == 6  # the latest event per touched variant, not the history

    w.commit(make_events(ids[3:4], "completed", attempt=2))
    statuses = by_id(fresh.status(), "status")
    assert [statuses[i] for i in ids[:6]] == ["completed"] * 4 + ["in_progress"] * 2
    assert fresh.progress().completed_gpu_s == pytest.approx(6.0)


def test_unreadable_snapshot_falls_back_to_the_parts(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()
    w = small.writer()
    w.commit(make_events(ids[:3], "in_progress"))
    w.commit(make_events(ids[:2], "completed"))
    assert small.compact() == 1
    before = small.status()
    bad = small._path(f"snapshot-{5:012d}.parquet")
    fs_of(small).pipe_file(bad, b"PAR1 truncated")
    assert small.status().equals(before)
    assert [p for p, _ in small.problems] == [bad]
    w.commit(make_events(ids[2:3], "failed"))
    assert by_id(small.status(), "status")[ids[2]] == "failed"


def test_pending_orders_by_priority_and_honours_max_attempts(small: Manifest) -> None:
    ids = small.variants["variant_id"].to_pylist()  # priority of ids[i] is i % 5
    w = small.writer()
    w.commit(make_events(ids[:2], "completed"))
    w.commit(make_events([ids[2]], "cancelled"))
    w.commit(make_events([ids[3]], "failed", attempt=3))
    w.commit(make_events([ids[4]], "failed", attempt=2))
    w.commit(make_events([ids[9]], "in_progress"))
    todo = small.pending()
    expected = sorted(set(ids) - set(ids[:4]), key=lambda v: (-(int(v[1:]) % 5), v))
    assert todo["variant_id"].to_pylist() == expected
    assert ids[3] in small.pending(max_attempts=4)["variant_id"].to_pylist()
    assert ids[4] not in small.pending(max_attempts=2)["variant_id"].to_pylist()


# ---- scale ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_100k_variants(storage: Storage) -> None:
    root, options = storage
    n = 100_000
    Manifest.create(root, CAMPAIGN, {"name": "big"}, make_variants(n), options)
    m = Manifest.open(root, CAMPAIGN, options)
    ids = m.variants["variant_id"]
    assert len(ids) == n
    w = m.writer()
    for k in range(3):  # 3000 completions in 3 parts of 1000
        chunk = ids.slice(k * 1000, 1000)
        w.commit(make_events(chunk, "completed", gpu_seconds=3.0, ts=T0 + timedelta(seconds=k)))
    w.commit(make_events(ids.slice(5000, 500), "failed", attempt=3))
    p = m.progress(now=T0 + timedelta(seconds=100))
    assert p.total == n
    assert p.by_status["completed"] == 3000
    assert p.by_status["failed"] == 500
    assert p.by_status["queued"] == n - 3500
    assert p.completed_gpu_s == pytest.approx(9000.0)
    assert p.throughput == pytest.approx(3000 / 100)
    assert p.eta_s == pytest.approx((n - 3500) * 10 / (3000 * 10 / 100))
    assert len(m.pending()) == n - 3500
