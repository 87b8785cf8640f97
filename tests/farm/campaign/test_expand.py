"""Tests for farm.campaign.expand: expansion into VARIANTS, content ids, feeds and summaries."""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

import farm.campaign.fields
from farm.campaign.expand import campaign_id, expand, expand_feed, summary
from farm.campaign.feed import load_feed
from farm.campaign.spec import CampaignDefaults, SpecError, load_spec
from farm.campaign.tables import VARIANTS
from farm.output.watermark import MIN_FRAMES
from model.geometry import Geometry, geometry_of
from tests.helpers.paths import EXAMPLES

# Its image paths made absolute: these tests load the spec as a dict, with no directory.
EXAMPLE = yaml.safe_load(
    (EXAMPLES / "campaign.yaml")
    .read_text(encoding="utf-8")
    .replace(": assets/", f": {EXAMPLES}/assets/")
)
FEED_CSV = (EXAMPLES / "feed.csv").read_bytes()


def spec_of(**changes: Any) -> Any:
    data = copy.deepcopy(EXAMPLE)
    data.update(changes)
    return load_spec(data)


def ids_by_key(table: pa.Table) -> dict[tuple[Any, ...], str]:
    keys = ("product_id", "locale", "format", "duration_s", "seed")
    rows = table.select(["variant_id", *keys[:-1]]).to_pylist()
    return {tuple(r[k] for k in keys[:-1]): r["variant_id"] for r in rows}


# --- the example -----------------------------------------------------------------------


def test_example_expands_to_12_variants_with_the_variants_schema() -> None:
    table = expand(load_spec(EXAMPLE))
    assert table.schema.equals(VARIANTS)
    assert table.num_rows == 2 * 3 * 2 * 1 * 1
    assert pc.count_distinct(table["variant_id"]).as_py() == 12
    assert all(len(v) == 20 for v in table["variant_id"].to_pylist())
    assert set(table["campaign_id"].to_pylist()) == {campaign_id(load_spec(EXAMPLE))}
    assert table["frames"].to_pylist() == [25] * 12  # 1 s at 24 fps → 4·6+1
    assert set(table["aspect"].to_pylist()) == {"9:16", "16:9"}
    assert table.column("preset").unique().to_pylist() == ["small"]
    assert (table["steps"].unique().to_pylist(), table["guidance"].unique().to_pylist()) == (
        [8],
        [4.0],
    )
    seeds = np.array(table["seed"].to_pylist())
    assert ((seeds >= 0) & (seeds < 2**31)).all() and len(set(seeds)) == 12
    assert pc.all(pc.greater(table["work"], 0)).as_py()


def test_prompts_are_filled_per_product_and_locale() -> None:
    rows = expand(load_spec(EXAMPLE)).to_pylist()
    for row in rows:
        assert "{" not in row["prompt"]
        assert row["headline"] in row["prompt"] and row["product_name"] in row["prompt"]
        assert "Nordkap" in row["prompt"]
    ar = next(r for r in rows if r["locale"] == "ar-SA" and r["product_id"] == "trail-cup")
    assert "قطرات الندى" in ar["prompt"] and "collapsible silicone camping cup" in ar["prompt"]
    assert ar["cta"] == "تسوّق الآن" and ar["negative_prompt"].startswith("ضبابي")


def test_rows_are_ordered_product_locale_format() -> None:
    table = expand(load_spec(EXAMPLE))
    keys = list(
        zip(*(table[c].to_pylist() for c in ("product_id", "locale", "format")), strict=True)
    )
    assert keys[:4] == [
        ("flask-500", "en-US", "stories"),
        ("flask-500", "en-US", "landscape"),
        ("flask-500", "zh-CN", "stories"),
        ("flask-500", "zh-CN", "landscape"),
    ]


def test_ids_are_stable_across_runs_and_processes() -> None:
    spec = load_spec(EXAMPLE)
    assert expand(spec).equals(expand(load_spec(EXAMPLE)))
    # Pinned: a change here re-renders every campaign ever expanded. Bump on purpose only.
    minimal = load_spec(
        {
            "name": "pin",
            "brand": "B",
            "products": [{"id": "p", "name": "P", "description": "d"}],
            "locales": {"en": {"language": "English", "headline": "H", "cta": "C", "prompt": "x"}},
            "formats": [{"name": "sq", "aspect": "1:1", "width": 64, "height": 64}],
            "durations": [1],
        }
    )
    row = expand(minimal).to_pylist()[0]
    assert (row["variant_id"], row["seed"]) == ("41f95010eff5fa1298bd", 1292018587)
    assert campaign_id(minimal) == "14e5a669bfda749f"
    # The recipe, spelled out: netstring texts → sha256; then the row's key → sha256.
    texts = hashlib.sha256(b"1:p|2:en|1:x|0:|1:H|1:C").hexdigest()
    digest = hashlib.sha256(f"{texts}|2:sq|64|64|1000|24|#0|small|20|4000".encode()).digest()
    assert row["variant_id"] == digest.hex()[:20]
    assert row["seed"] == int.from_bytes(digest[10:14], "big") & 0x7FFFFFFF


def test_campaign_id_is_a_content_hash() -> None:
    assert campaign_id(load_spec(EXAMPLE)) == campaign_id(load_spec(copy.deepcopy(EXAMPLE)))
    reordered = dict(reversed(list(copy.deepcopy(EXAMPLE).items())))  # key order is not content
    assert campaign_id(load_spec(reordered)) == campaign_id(load_spec(EXAMPLE))
    explicit_default = spec_of(seeds=1, fps=24.0)  # defaults written out change nothing
    assert campaign_id(explicit_default) == campaign_id(load_spec(EXAMPLE))
    assert campaign_id(spec_of(priority=5)) != campaign_id(load_spec(EXAMPLE))


def test_changing_one_headline_changes_exactly_its_variants() -> None:
    before = ids_by_key(expand(load_spec(EXAMPLE)))
    data = copy.deepcopy(EXAMPLE)
    data["locales"]["zh-CN"]["headline"] = "一整天都冰爽。"
    after = ids_by_key(expand(load_spec(data)))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in before if k[1] == "zh-CN"}
    assert len(changed) == 4


def test_scheduling_fields_do_not_change_variant_ids() -> None:
    base = expand(load_spec(EXAMPLE))
    bumped = expand(spec_of(priority=7, name="renamed", output_root="s3://bucket/x"))
    assert bumped["variant_id"].equals(base["variant_id"])
    assert bumped["priority"].unique().to_pylist() == [7]
    assert bumped["campaign_id"][0] != base["campaign_id"][0]
    assert not expand(spec_of(steps=9))["variant_id"].equals(base["variant_id"])


def test_seed_indices_give_distinct_variants() -> None:
    table = expand(spec_of(seeds=3))
    assert table.num_rows == 36
    assert pc.count_distinct(table["variant_id"]).as_py() == 36
    assert pc.count_distinct(table["seed"]).as_py() == 36
    first = expand(load_spec(EXAMPLE))  # seed index 0 keeps its id when seeds grow
    assert set(first["variant_id"].to_pylist()) <= set(table["variant_id"].to_pylist())


# --- frames and cost -------------------------------------------------------------------


@pytest.mark.parametrize("fps", [1, 8, 12, 24, 25, 30, 60])
def test_frames_are_the_models_count_for_each_duration(fps: int) -> None:
    small = geometry_of("small")
    durations = [0.01, 0.1, 0.5, 1, 1.1, 2.5, 6, 15, 29.97, 60, 120]
    # shorter clips are refused (the watermark's minimum: test_spec, test_feed)
    durations = [d for d in durations if small.frames_for(d, fps) >= MIN_FRAMES]
    table = expand(spec_of(durations=durations, fps=fps, formats=EXAMPLE["formats"][:1]))
    assert table["frames"].to_pylist() == [small.frames_for(d, fps) for d in durations] * 6


# A model with another rule: 8n+1 frames, 32-pixel multiple (LTX-Video's layout).
LTX = Geometry(model="ltx", temporal_stride=8, spatial_stride=32, pixel_multiple=32, max_frames=257)


def test_expansion_asks_the_presets_model_and_keeps_no_rule(monkeypatch) -> None:
    monkeypatch.setattr(farm.campaign.fields, "geometry_of", lambda ref: LTX)
    formats = [{"name": "square", "aspect": "1:1", "width": 256, "height": 256}]
    table = expand(spec_of(formats=formats, durations=[1, 2], fps=24))
    assert set(table["frames"].to_pylist()) == {25, 49}  # 8n+1 nearest 24 and 48 frames
    one = table.filter(pc.equal(table["frames"], 25))["work"][0].as_py()
    tokens = 4 * 8 * 8  # 25 frames → 4 latent frames of 8 x 8 tokens (256 / 32)
    assert one == tokens * 8 * 2  # x 8 steps x 2 forwards (guidance)
    with pytest.raises(SpecError) as info:  # 144 is a multiple of 16, not of 32
        spec_of()
    assert "formats[0].width: 144 must be a positive multiple of 32 (model 'ltx')" in str(
        info.value
    )


def test_expand_feed_checks_sizes_against_its_preset(monkeypatch) -> None:
    feed = load_feed(FEED_CSV, "csv")  # valid for the small preset
    monkeypatch.setattr(farm.campaign.fields, "geometry_of", lambda ref: LTX)
    with pytest.raises(SpecError) as info:
        expand_feed(feed, {"preset": "base"})
    assert info.value.errors[0] == (
        "feed row 1, column width",
        "144 must be a positive multiple of 32 (model 'ltx')",
    )
    assert {p.split(",")[0] for p, _ in info.value.errors} == {
        f"feed row {i + 1}" for i in range(feed.num_rows)
    }


def test_work_grows_with_tokens_steps_and_guidance() -> None:
    one = expand(spec_of(steps=10))
    work = dict(zip(one["format"].to_pylist(), one["work"].to_pylist(), strict=False))
    assert work["stories"] == work["landscape"]  # same token count, transposed
    total = summary(one)["work"]
    assert summary(expand(spec_of(steps=20)))["work"] == 2 * total
    assert summary(expand(spec_of(steps=10, guidance=1)))["work"] == total / 2
    assert summary(expand(spec_of(steps=10, durations=[2])))["work"] > 1.5 * total
    # 1 s, 144x256: 7 latent frames × 9 × 16 tokens, 10 steps × 2 (CFG); seconds are
    # measured per model and device (farm.campaign.cost), never a constant here.
    assert work["stories"] == 7 * 9 * 16 * 20


# --- scale -----------------------------------------------------------------------------


def big_spec() -> Any:
    languages = ["en", "es", "fr", "de", "pt"]
    regions = ["US", "GB", "MX", "ES", "FR", "DE", "BR", "CA", "AU", "IN"]
    copy_text = {
        "language": "x",
        "headline": "Headline",
        "cta": "Buy",
        "prompt": "A cinematic shot of {product}, {description}, by {brand}: {headline}. " * 3,
    }
    sizes = [("a", "9:16", 144, 256), ("b", "16:9", 256, 144), ("c", "1:1", 256, 256)]
    sizes.append(("d", "4:5", 256, 320))
    return load_spec(
        {
            "name": "big",
            "brand": "Acme",
            "products": [
                {"id": f"p{i}", "name": f"Product {i}", "description": "a thing " * 8}
                for i in range(10)
            ],
            "locales": {
                f"{lang}-{region}": copy_text | {"headline": f"{lang} {region}"}
                for lang in languages
                for region in regions
            },
            "formats": [{"name": n, "aspect": a, "width": w, "height": h} for n, a, w, h in sizes],
            "durations": [1, 2, 5, 10, 15],
            "seeds": 10,
        }
    )


def test_100k_variants_expand_in_well_under_a_second() -> None:
    spec = big_spec()
    expand(spec)  # warm up imports and kernels
    start = time.perf_counter()
    table = expand(spec)
    elapsed = time.perf_counter() - start
    print(f"\nexpand: {table.num_rows} variants in {elapsed:.3f} s")
    assert table.num_rows == 100_000
    assert elapsed < 3.0  # ~0.15-0.3 s unloaded; slack for a shared machine
    assert table.schema.equals(VARIANTS)
    assert pc.count_distinct(table["variant_id"]).as_py() == 100_000
    stats = summary(table)
    assert stats["variants"] == 100_000
    assert len(stats["by_locale"]) == 50 and set(stats["by_locale"].values()) == {2_000}
    assert stats["by_format"] == {"a": 25_000, "b": 25_000, "c": 25_000, "d": 25_000}
    assert set(stats["by_product"].values()) == {10_000}
    assert stats["work"] == pytest.approx(float(np.sum(table["work"].to_numpy())))


# --- feeds -----------------------------------------------------------------------------


def test_example_feed_maps_onto_variants() -> None:
    table = expand_feed(load_feed(FEED_CSV, "csv"), load_spec(EXAMPLE))
    assert table.schema.equals(VARIANTS)
    assert table.num_rows == 4
    assert table["aspect"].to_pylist() == ["9:16", "9:16", "16:9", "16:9"]
    assert table["seed"][1].as_py() == 1234  # a pinned seed is kept
    assert table["fps"].to_pylist() == [24, 24, 24, 12]  # empty cell → campaign fps
    assert table["frames"].to_pylist() == [25, 25, 25, 25]  # 2 s at 12 fps is 25 frames too
    assert table["steps"].unique().to_pylist() == [8]
    assert len(set(table["campaign_id"].to_pylist())) == 1
    assert table["headline"][2].as_py() == "برودة تدوم ٢٤ ساعة، جاهزة لكل مغامرة."


def test_feed_duplicates_are_dropped_keeping_the_first() -> None:
    feed = load_feed(FEED_CSV, "csv")
    doubled = pa.concat_tables([feed, feed.slice(2, 1), feed.slice(0, 1)])
    table = expand_feed(doubled, CampaignDefaults())
    assert table.num_rows == 4
    assert table["variant_id"].equals(expand_feed(feed, CampaignDefaults())["variant_id"])
    assert table["locale"].to_pylist() == ["en-US", "zh-CN", "ar-SA", "en-US"]


def test_feed_campaign_id_depends_on_content_and_settings() -> None:
    feed = load_feed(FEED_CSV, "csv")
    cid = expand_feed(feed, {"steps": 8})["campaign_id"][0]
    assert expand_feed(feed, {"steps": 8})["campaign_id"][0] == cid
    assert expand_feed(feed, {"steps": 9})["campaign_id"][0] != cid
    assert expand_feed(feed.slice(0, 3), {"steps": 8})["campaign_id"][0] != cid


def test_a_feed_row_equal_to_a_spec_variant_gets_its_id() -> None:
    spec = load_spec(EXAMPLE)
    variants = expand(spec).slice(5, 1)  # one spec variant, written out as a feed row
    feed = variants.select([n for n in load_feed(FEED_CSV, "csv").column_names if n != "seed"])
    feed = feed.append_column("seed", pa.nulls(1, pa.int64()))
    assert expand_feed(feed, spec)["variant_id"].equals(variants["variant_id"])


def test_summary_of_nothing() -> None:
    empty = VARIANTS.empty_table()
    assert summary(empty) == {
        "variants": 0,
        "work": 0.0,
        "by_locale": {},
        "by_format": {},
        "by_product": {},
    }


def test_100k_campaign_through_the_manifest(tmp_path) -> None:
    from farm.campaign.manifest import Manifest

    spec = big_spec()
    variants = expand(spec)
    cid = campaign_id(spec)
    Manifest.create(str(tmp_path), cid, spec.model_dump(mode="json"), variants)
    reopened = Manifest.open(str(tmp_path), cid)
    writer = reopened.writer()
    done = variants["variant_id"].slice(0, 2_500).to_pylist()
    writer.commit([{"variant_id": v, "status": "completed", "attempt": 1} for v in done])
    progress = Manifest.open(str(tmp_path), cid).progress()
    assert progress.total == 100_000
    assert progress.by_status["completed"] == 2_500
    assert progress.by_status["queued"] == 97_500
    groups = progress.by_group.to_pylist()
    per_cell = {(g["locale"], g["format"]): 0 for g in groups}
    for g in groups:
        per_cell[(g["locale"], g["format"])] += g["count"]
    assert len(per_cell) == 50 * 4 and set(per_cell.values()) == {500}
