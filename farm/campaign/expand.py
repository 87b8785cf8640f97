"""Campaign expansion: a spec (or a copy feed) becomes the VARIANTS table, one row per video.

Expansion is columnar: the cross product is a set of index arrays (numpy), and each
dimension is a small Arrow table taken along its index, so 100k variants cost the same
handful of calls as 12. Only the per-row sha256 runs in Python, over one contiguous
buffer of canonical keys built by Arrow.

Identity is content: `variant_id` hashes everything that changes the rendered file
(product, locale, copy, prompt, format, size, duration, fps, seed, model settings) and
nothing else (not the campaign, not the priority), so unchanged variants keep their ids,
and their finished renders, when a campaign is edited.

Frame counts and token counts are the model's (`model.geometry`, from the preset): a
duration becomes the nearest count the model's frame rule allows, as in every renderer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from farm.campaign.branding import EndCard
from farm.campaign.cost import work_units
from farm.campaign.feed import check_feed_lengths, check_feed_sizes
from farm.campaign.fields import SpecError, messages
from farm.campaign.spec import CampaignDefaults, CampaignSpec, fill
from farm.campaign.tables import VARIANTS

# Known aspect names for feeds (which give only a size), as W:H; else the reduced ratio.
KNOWN_ASPECTS = ("9:16", "16:9", "1:1", "4:5", "5:4", "4:3", "3:4", "2:3", "3:2", "21:9")


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def campaign_id(spec: CampaignSpec) -> str:
    """Content hash of the spec: sha256 of its canonical JSON (defaults included), 16 hex."""
    return hashlib.sha256(_canonical(spec.model_dump(mode="json"))).hexdigest()[:16]


# --- identity --------------------------------------------------------------------------

# Text that varies per (product, locale): hashed once per pair, not once per row.
_TEXT_KEYS = ("product_id", "locale", "prompt", "negative_prompt", "headline", "cta")


def _netstrings(cols: dict[str, Any], names: tuple[str, ...]) -> pa.Array:
    """Each row's texts as `<bytes>:<text>|...`: unambiguous whatever the texts contain."""
    parts = []
    for name in names:
        col = _column(cols[name], pa.string())
        parts.append(
            pc.binary_join_element_wise(pc.cast(pc.binary_length(col), pa.string()), col, ":")
        )
    return pc.binary_join_element_wise(*parts, "|")


def _text_keys(cols: dict[str, Any]) -> pa.Array:
    """sha256 (hex) of the (product, locale) texts of each row."""
    digests = _sha256_rows(_netstrings(cols, _TEXT_KEYS))
    return pc.cast(pa.array(np.frombuffer(digests.tobytes().hex().encode(), "S64")), pa.string())


def _content_keys(cols: dict[str, Any], seed_key: pa.Array, settings: CampaignDefaults) -> pa.Array:
    """One canonical key per row, built by Arrow: text hash, format, size, time, seed, model.

    Numbers are integers (milliseconds, milli-guidance) so float formatting never changes
    an id.
    """
    parts = [cols["text_key"], _netstrings(cols, ("format",))]
    duration_ms = np.round(np.asarray(cols["duration_s"], np.float64) * 1000).astype(np.int64)
    for values in (cols["width"], cols["height"], duration_ms, cols["fps"]):
        parts.append(pc.cast(_column(values, pa.int64()), pa.string()))
    parts.append(seed_key)
    model = f"{settings.preset}|{settings.steps}|{round(settings.guidance * 1000)}"
    parts.append(pa.scalar(model))
    keys = pc.binary_join_element_wise(*parts, "|")
    # The end card changes the file; rows without one keep the ids they always had.
    card_ms = np.round(np.asarray(cols["end_card_s"], np.float64) * 1000).astype(np.int64)
    if not card_ms.any():
        return keys
    card = _netstrings(
        {
            "reference_image": _column(cols["reference_image"], pa.string()).fill_null(""),
            "logo": _column(cols["logo"], pa.string()).fill_null(""),
            "background": _column(cols["end_card_background"], pa.string()).fill_null(""),
            "ms": pc.cast(pa.array(card_ms), pa.string()),
        },
        ("reference_image", "logo", "background", "ms"),
    )
    with_card = pc.binary_join_element_wise(keys, card, "|card|")
    return pc.if_else(pa.array(card_ms > 0), with_card, keys)


def _sha256_rows(keys: pa.Array) -> np.ndarray:
    """The sha256 digests, (n, 32) uint8, of each string of `keys`."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    n = len(keys)
    if n == 0:
        return np.zeros((0, 32), np.uint8)
    offsets = np.frombuffer(keys.buffers()[1], np.int32)[keys.offset : keys.offset + n + 1]
    data = memoryview(keys.buffers()[2])
    sha = hashlib.sha256  # the one Python loop: ~1 µs a row, over slices of one buffer
    digests = b"".join([sha(data[a:b]).digest() for a, b in pairwise(offsets.tolist())])
    return np.frombuffer(digests, np.uint8).reshape(n, 32)


def _hash_rows(keys: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(variant_id: 20 hex chars, derived seed: 0 <= seed < 2**31) of each key's sha256."""
    raw = _sha256_rows(keys)
    hex_ids = np.frombuffer(raw[:, :10].tobytes().hex().encode(), dtype="S20")
    ids = pc.cast(pa.array(hex_ids, pa.binary()), pa.string())
    seeds = raw[:, 10:14].copy().view(">u4").ravel().astype(np.int64) & 0x7FFFFFFF
    return ids, seeds


def _column(values: Any, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(type_) if isinstance(values, pa.Array) else pa.array(values, type_)


def _end_cards(
    cols: dict[str, Any], images: pa.Array, logo: str | None, card: EndCard | None
) -> None:
    """The end card columns of rows whose product image is `images` (null: none)."""
    card = card or EndCard()
    has_image = pc.is_valid(images).to_numpy(zero_copy_only=False)
    n = len(has_image)
    cols["reference_image"] = images
    cols["logo"] = pa.array(np.where(has_image, logo, None), pa.string())
    cols["end_card_s"] = np.where(has_image, card.seconds, 0.0).astype(np.float32)
    shown = has_image & (card.seconds > 0)
    cols["end_card_background"] = pa.array(
        np.where(shown, card.background, None) if n else [], pa.string()
    )


def _finish(
    cols: dict[str, Any],
    seed_key: pa.Array,
    explicit_seed: pa.Array | None,
    settings: CampaignDefaults | CampaignSpec,
    campaign_of: Callable[[pa.Array], str],
) -> pa.Table:
    """Derive ids, seeds, frames and cost; assemble VARIANTS; drop duplicate ids (first wins)."""
    n = len(cols["product_id"])
    geometry = settings.geometry
    cols["frames"] = geometry.frame_counts(cols["duration_s"], cols["fps"])
    if "text_key" not in cols:
        cols["text_key"] = _text_keys(cols)
    ids, seeds = _hash_rows(_content_keys(cols, seed_key, settings))
    if explicit_seed is not None:  # a feed's pinned seed wins over the derived one
        pinned = explicit_seed.fill_null(-1).to_numpy(zero_copy_only=False)
        seeds = np.where(pinned >= 0, pinned, seeds)
    work = work_units(
        cols["frames"], cols["width"], cols["height"], geometry, settings.steps, settings.guidance
    )
    cols.update(
        variant_id=ids,
        campaign_id=pa.nulls(n, pa.string()),  # known once duplicates are gone
        seed=seeds,
        preset=pa.array(np.full(n, settings.preset, dtype=object), pa.string()),
        steps=np.full(n, settings.steps, np.int32),
        guidance=np.full(n, settings.guidance, np.float32),
        priority=np.full(n, settings.priority, np.int32),
        work=work,
    )
    table = pa.Table.from_arrays([_column(cols[f.name], f.type) for f in VARIANTS], schema=VARIANTS)
    if n and pc.count_distinct(table["variant_id"]).as_py() < n:
        first = (
            pa.table({"variant_id": table["variant_id"], "row": np.arange(n)})
            .group_by("variant_id", use_threads=False)
            .aggregate([("row", "min")])["row_min"]
        )
        table = table.take(pa.array(np.sort(first.to_numpy())))  # sorted: original order
    cid = campaign_of(table["variant_id"])
    index = VARIANTS.get_field_index("campaign_id")
    return table.set_column(
        index, VARIANTS.field("campaign_id"), pa.array(np.full(table.num_rows, cid), pa.string())
    )


def expand(spec: CampaignSpec) -> pa.Table:
    """Every variant of the spec (product × locale × format × duration × seed), as VARIANTS.

    Rows are ordered product-major, then locale, format, duration and seed, so the first
    of two identical variants is the one earlier in the spec.
    """
    locales = list(spec.locales)
    P, L, F = len(spec.products), len(locales), len(spec.formats)
    D, S = len(spec.durations), spec.seeds
    # (product, locale) pairs are few (P·L): fill their prompt templates in Python.
    pairs: dict[str, list[Any]] = {k: [] for k in (*_TEXT_KEYS, "product_name", "reference_image")}
    for product in spec.products:
        for code in locales:
            copy = spec.locales[code]
            pairs["product_id"].append(product.id)
            pairs["product_name"].append(product.name)
            pairs["reference_image"].append(product.reference_image)
            pairs["locale"].append(code)
            pairs["prompt"].append(fill(copy.prompt, spec.prompt_values(product, code)))
            pairs["negative_prompt"].append(copy.negative_prompt)
            pairs["headline"].append(copy.headline)
            pairs["cta"].append(copy.cta)
    pair_table = pa.table(pairs, schema=pa.schema([(k, pa.string()) for k in pairs]))
    pair_table = pair_table.append_column("text_key", _text_keys(pairs))
    format_table = pa.table(
        {
            "format": [f.name for f in spec.formats],
            "aspect": [f.aspect for f in spec.formats],
            "width": pa.array([f.width for f in spec.formats], pa.int32()),
            "height": pa.array([f.height for f in spec.formats], pa.int32()),
        }
    )
    # The cross product as index arrays: row r = ((((p·L + l)·F + f)·D + d)·S + s).
    rest, seed_index = np.divmod(np.arange(P * L * F * D * S, dtype=np.int64), S)
    rest, d = np.divmod(rest, D)
    pair, f = np.divmod(rest, F)
    cols: dict[str, Any] = {}
    for table, index in ((pair_table, pair), (format_table, f)):
        taken = table.take(pa.array(index))
        cols.update({name: taken[name] for name in table.column_names})
    cols["duration_s"] = np.asarray(spec.durations, np.float64)[d]
    cols["fps"] = np.full(len(d), spec.fps, np.int32)
    _end_cards(cols, cols["reference_image"], spec.logo, spec.end_card)
    seed_key = pc.binary_join_element_wise(
        pa.scalar("#"), pc.cast(pa.array(seed_index), pa.string()), ""
    )
    cid = campaign_id(spec)
    return _finish(cols, seed_key, None, spec, lambda _: cid)


def _aspects(width: np.ndarray, height: np.ndarray) -> pa.Array:
    """The aspect name of each size: a known one within 2%, else the reduced W:H ratio."""
    g = np.gcd(width, height)
    out = pc.binary_join_element_wise(
        pc.cast(pa.array(width // g), pa.string()), pc.cast(pa.array(height // g), pa.string()), ":"
    )
    ratio = width / height
    for name in reversed(KNOWN_ASPECTS):  # reversed: the first listed wins a tie
        a, b = (int(x) for x in name.split(":"))
        near = np.abs(ratio / (a / b) - 1) <= 0.02
        out = pc.if_else(pa.array(near), pa.scalar(name), out)
    return out


def expand_feed(
    table: pa.Table,
    campaign_defaults: CampaignDefaults | CampaignSpec | dict[str, Any] | None = None,
) -> pa.Table:
    """Map a feed from `farm.campaign.feed.load_feed` onto VARIANTS, with the campaign's settings.

    The campaign id hashes the defaults and the feed's variant ids, so the same feed with
    the same settings is the same campaign. Duplicate rows (same content) are dropped.
    Sizes are checked against the settings' preset (SpecError naming the rows).
    """
    if campaign_defaults is None or isinstance(campaign_defaults, dict):
        try:
            campaign_defaults = CampaignDefaults.model_validate(campaign_defaults or {})
        except ValidationError as e:
            raise SpecError(messages(e, CampaignDefaults.model_fields)) from None
    settings = campaign_defaults
    check_feed_sizes(table, settings.geometry)
    check_feed_lengths(table, settings.geometry, settings.fps)
    cols: dict[str, Any] = {
        name: table[name].combine_chunks()
        for name in ("product_id", "product_name", "locale", "headline", "cta", "prompt")
    }
    cols["negative_prompt"] = table["negative_prompt"].combine_chunks().fill_null("")
    cols["format"] = table["format"].combine_chunks()
    width = table["width"].to_numpy().astype(np.int64)
    height = table["height"].to_numpy().astype(np.int64)
    cols.update(width=width, height=height, aspect=_aspects(width, height))
    cols["duration_s"] = table["duration_s"].to_numpy().astype(np.float64)
    cols["fps"] = table["fps"].combine_chunks().fill_null(settings.fps).to_numpy()
    images = (
        table["reference_image"].combine_chunks()
        if "reference_image" in table.column_names
        else pa.nulls(table.num_rows, pa.string())
    )
    # A spec as the feed's settings lends its brand's logo and end card; defaults have none.
    _end_cards(cols, images, getattr(settings, "logo", None), getattr(settings, "end_card", None))
    seed = table["seed"].combine_chunks()
    seed_key = pc.if_else(
        pc.is_null(seed),
        pa.scalar("#0"),  # derived exactly as a spec's first seed
        pc.binary_join_element_wise(pa.scalar("="), pc.cast(seed, pa.string()), ""),
    )
    head = settings.model_dump(mode="json")

    def campaign_of(ids: pa.Array) -> str:
        content = _canonical({"defaults": head, "variants": ids.to_pylist()})
        return hashlib.sha256(content).hexdigest()[:16]

    return _finish(cols, seed_key, seed, settings, campaign_of)


def summary(variants: pa.Table) -> dict[str, Any]:
    """Variant count, total work (farm.campaign.cost prices it), counts by locale, format
    and product."""

    def counts(column: str) -> dict[str, int]:
        grouped = variants.group_by(column).aggregate([(column, "count")])
        keys, values = grouped[column].to_pylist(), grouped[f"{column}_count"].to_pylist()
        return dict(sorted(zip(keys, values, strict=True)))

    return {
        "variants": variants.num_rows,
        "work": float(pc.sum(variants["work"]).as_py() or 0.0),
        "by_locale": counts("locale"),
        "by_format": counts("format"),
        "by_product": counts("product_id"),
    }
