"""Copy feeds: the spreadsheet form of a campaign, one fully specified variant per row.

Teams that keep copy in spreadsheets send a feed (CSV or Parquet) instead of a campaign spec;
`load_feed` validates it into an Arrow table with schema `FEED`, which
`farm.campaign.expand.expand_feed` maps onto the VARIANTS table. Widths and heights are
checked against the model that renders them (a preset's `Geometry`), never a copied rule.
Every error names the row, the column and the model's rule (`feed row 3, column width: 1000
must be a positive multiple of ... (model 'small')`), and the loader raises `SpecError` and
nothing else, whatever the input.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, ValidationError

from farm.campaign.fields import (
    DEFAULT_PRESET,
    Fps,
    ImageRef,
    LocaleCode,
    NonBlank,
    Pixels,
    Seconds,
    Slug,
    SpecError,
    SpecModel,
    Text,
    messages,
    preset_geometry,
)
from farm.output.watermark import length_problem
from model.geometry import Geometry

if TYPE_CHECKING:
    from farm.campaign.images import ImageAccess

Seed = Annotated[int, Field(ge=0, lt=2**31)]


class FeedRow(SpecModel):
    """One row of a copy feed: a fully specified variant (the prompt is literal text)."""

    product_id: Slug = Field(description="Product slug.")
    product_name: NonBlank = Field(description="Product display name.")
    locale: LocaleCode = Field(description="BCP-47 locale code.")
    headline: NonBlank = Field(description="Headline shown in the video.")
    cta: NonBlank = Field(description="Call to action.")
    prompt: NonBlank = Field(description="The prompt, literal (no placeholders are filled).")
    negative_prompt: Text = Field("", description="What to steer away from.")
    format: Slug = Field(description="Format name.")
    width: Pixels = Field(description="Pixel width, a multiple of the model's pixel multiple.")
    height: Pixels = Field(description="Pixel height, a multiple of the model's pixel multiple.")
    duration_s: Seconds = Field(description="Length in seconds.")
    seed: Seed | None = Field(None, description="Noise seed; derived from the content if empty.")
    fps: Fps | None = Field(None, description="Frames per second; the campaign's if empty.")
    reference_image: ImageRef | None = Field(
        None,
        description="The product's packshot (PNG, JPEG or WebP): an fsspec URL or a path "
        "relative to the feed; the variant ends on it. Empty: none.",
    )


# Feed columns in order; seed and fps are null where the row does not give them.
_FEED_TEXT = ("product_id", "product_name", "locale", "headline", "cta", "prompt")
FEED = pa.schema(
    [(name, pa.string()) for name in (*_FEED_TEXT, "negative_prompt", "format")]
    + [("width", pa.int32()), ("height", pa.int32()), ("duration_s", pa.float32())]
    + [("seed", pa.int64()), ("fps", pa.int32()), ("reference_image", pa.string())]
)
FEED_OPTIONAL = ("negative_prompt", "seed", "fps", "reference_image")


def _read_feed(data: bytes, fmt: str) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt != "csv":
        raise SpecError([("feed", f"format must be 'csv' or 'parquet' (got {fmt!r})")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError([("feed", f"not valid UTF-8: {e}")]) from None
    # Everything as text: the row validation below owns the types and the messages.
    header = next(csv.reader(io.StringIO(text)), [])
    return pacsv.read_csv(
        io.BytesIO(text.encode()),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False
        ),
    )


def load_feed(
    data: bytes,
    fmt: Literal["csv", "parquet"],
    *,
    preset: str = DEFAULT_PRESET,
    images: ImageAccess | None = None,
) -> pa.Table:
    """A validated feed table with schema `FEED`; SpecError naming row and column otherwise.

    Sizes are checked against `preset`'s model (the campaign's; `expand_feed` checks them
    again against the preset it expands with). Row numbers count data rows from 1 (the CSV
    header is not a row). Empty cells of the optional columns (negative_prompt, seed, fps)
    mean "not given". `images`: where reference images are read from and relative paths
    resolved (the feed file's directory; default: absolute URLs and paths only); each
    distinct image is opened and checked once, and the table holds its resolved URL.
    """
    geometry = preset_geometry(preset)
    if geometry is None:
        raise SpecError([("preset", f"unknown preset {preset!r}")])
    try:
        raw = _read_feed(data, fmt)
    except SpecError:
        raise
    except Exception as e:  # pyarrow raises several types for malformed files
        raise SpecError([("feed", f"not a readable {fmt.upper()} file: {e}")]) from None
    names = [n.strip() for n in raw.schema.names]
    missing = [n for n in FEED.names if n not in names and n not in FEED_OPTIONAL]
    twice = sorted({n for n in names if names.count(n) > 1 and n in FEED.names})
    if missing or twice:
        problems = [f"missing required column {n!r}" for n in missing]
        raise SpecError(
            [("feed", m) for m in problems + [f"column {n!r} appears twice" for n in twice]]
        )
    raw = raw.rename_columns(names)
    columns = {n: raw.column(n).to_pylist() for n in FEED.names if n in names}
    errors: list[tuple[str, str]] = []
    rows: dict[str, list[Any]] = {n: [] for n in FEED.names}
    context = {"geometry": geometry, "images": images, "images_seen": {}}
    for i in range(raw.num_rows):  # feeds are spreadsheet-sized; per-row messages matter
        row = {n: col[i] for n, col in columns.items()}
        row = {n: v for n, v in row.items() if not (n in FEED_OPTIONAL and v in ("", None))}
        try:
            valid = FeedRow.model_validate(row, context=context)
        except ValidationError as e:
            for path, msg in messages(e, FeedRow.model_fields):
                errors.append((f"feed row {i + 1}, column {path}", msg))
            continue
        for n in FEED.names:
            rows[n].append(getattr(valid, n))
    if errors:
        raise SpecError(errors)
    return pa.table(rows, schema=FEED)


def check_feed_sizes(table: pa.Table, geometry: Geometry) -> None:
    """SpecError naming every row whose width or height `geometry`'s model cannot render.

    Asks the model once per distinct size (a feed has a handful), not once per row.
    """
    errors = []
    for side in ("width", "height"):
        values = table[side].to_numpy()
        for value in np.unique(values):
            problem = geometry.side_problem(int(value))
            if problem:
                rows = np.flatnonzero(values == value)
                errors += [(int(r), f"feed row {r + 1}, column {side}", problem) for r in rows]
    if errors:
        raise SpecError([(path, problem) for _, path, problem in sorted(errors)])


def check_feed_lengths(table: pa.Table, geometry: Geometry, fps: int) -> None:
    """SpecError naming every row too short to carry the watermark (`fps`: the campaign's,
    for rows that give none). Asks once per distinct (duration, fps)."""
    seconds = table["duration_s"].to_numpy().astype(np.float64)
    rates = table["fps"].combine_chunks().fill_null(fps).to_numpy()
    errors = []
    for s, r in {(float(a), int(b)) for a, b in zip(seconds, rates, strict=True)}:
        problem = length_problem(s, r, geometry.frames_for(s, r))
        if problem:
            rows = np.flatnonzero((seconds == s) & (rates == r))
            errors += [(int(i), f"feed row {i + 1}, column duration_s", problem) for i in rows]
    if errors:
        raise SpecError([(path, problem) for _, path, problem in sorted(errors)])
