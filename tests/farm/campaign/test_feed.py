"""Tests for farm.campaign.feed: copy feeds (CSV/Parquet), and the errors users see."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.campaign.feed import FEED, load_feed
from farm.campaign.spec import SpecError
from tests.helpers.paths import EXAMPLES

EXAMPLE_FEED = (EXAMPLES / "feed.csv").read_bytes()
FEED_HEADER = (
    "product_id,product_name,locale,headline,cta,prompt,negative_prompt,format,"
    "width,height,duration_s,seed,fps"
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_example_feed_with_bom_and_non_latin_text_loads() -> None:
    assert EXAMPLE_FEED.startswith(b"\xef\xbb\xbf")
    table = load_feed(EXAMPLE_FEED, "csv")
    assert table.schema == FEED
    assert table.num_rows == 4
    assert table["product_id"][0].as_py() == "flask-500"  # BOM is not part of the header
    assert table["headline"][1].as_py() == "24小时冰爽，说走就走。"
    assert table["cta"][2].as_py() == "تسوّق الآن"
    assert table["seed"].to_pylist() == [None, 1234, None, None]
    assert table["fps"].to_pylist() == [None, None, 24, 12]
    assert table["negative_prompt"].to_pylist()[3] == ""


def _feed(*rows: str) -> bytes:
    return "\n".join([FEED_HEADER, *rows]).encode()


GOOD_ROW = "p1,Thing,ar-SA,عرض,اشتر,صورة,,tiktok,144,256,2,,"


def test_bad_feed_row_names_row_and_column() -> None:
    bad = "p1,Thing,ar-SA,عرض,اشتر,صورة,,tiktok,1000,256,2,,"
    with pytest.raises(SpecError) as info:
        load_feed(_feed(GOOD_ROW, GOOD_ROW, bad), "csv")
    message = "feed row 3, column width: 1000 must be a positive multiple of 16 (model 'small')"
    assert message in str(info.value)
    assert [p for p, _ in info.value.errors] == ["feed row 3, column width"]


def test_feed_sizes_are_judged_by_the_given_presets_model() -> None:
    bad = "p1,Thing,ar-SA,عرض,اشتر,صورة,,tiktok,144,250,2,,"
    with pytest.raises(SpecError) as info:
        load_feed(_feed(GOOD_ROW, bad), "csv", preset="tiny")
    assert info.value.errors == [
        ("feed row 2, column height", "250 must be a positive multiple of 16 (model 'tiny')")
    ]
    with pytest.raises(SpecError, match="unknown preset 'huge'"):
        load_feed(_feed(GOOD_ROW), "csv", preset="huge")


def test_feed_reports_every_bad_cell() -> None:
    bad = "p1,Thing,ar_SA,,اشتر,صورة,,tiktok,144,256,-1,x,"
    with pytest.raises(SpecError) as info:
        load_feed(_feed(GOOD_ROW, bad), "csv")
    columns = {p.rsplit("column ", 1)[1] for p, _ in info.value.errors}
    assert columns == {"locale", "headline", "duration_s", "seed"}
    assert all(p.startswith("feed row 2,") for p, _ in info.value.errors)


def test_feed_missing_column_is_named() -> None:
    header = FEED_HEADER.replace(",duration_s", "")
    data = "\n".join([header, GOOD_ROW.replace(",2,,", ",,")]).encode()
    with pytest.raises(SpecError, match="missing required column 'duration_s'"):
        load_feed(data, "csv")


def test_feed_optional_columns_may_be_absent() -> None:
    header = FEED_HEADER.replace(",negative_prompt", "").replace(",seed,fps", "")
    table = load_feed(f"{header}\np1,Thing,en,Hi,Buy,A cup,tiktok,144,256,1.5".encode(), "csv")
    assert table.schema == FEED
    row = table.to_pylist()[0]
    assert (row["negative_prompt"], row["seed"], row["fps"], row["duration_s"]) == (
        "",
        None,
        None,
        1.5,
    )


def test_parquet_feed_round_trips() -> None:
    table = load_feed(EXAMPLE_FEED, "csv")
    sink = io.BytesIO()
    pq.write_table(table, sink)
    assert load_feed(sink.getvalue(), "parquet").equals(table)


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", "csv", "feed: not a readable CSV"),
        (b"\xff\xfeA", "csv", "feed: not valid UTF-8"),
        (b"not parquet", "parquet", "feed: not a readable PARQUET"),
        (_feed(GOOD_ROW).replace(b",fps", b",width"), "csv", "column 'width' appears twice"),
        (b"a,b\n1,2", "xlsx", "format must be 'csv' or 'parquet'"),
    ],
)
def test_unreadable_feeds_are_spec_errors(data: bytes, fmt: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_feed(data, fmt)


def _feed_or_spec_error(data: bytes, fmt: Any) -> None:
    try:
        table = load_feed(data, fmt)
    except SpecError as e:
        assert e.errors
    else:
        assert isinstance(table, pa.Table) and table.schema == FEED


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["csv", "parquet"]))
def test_garbage_feed_bytes_are_feed_or_spec_error(data: bytes, fmt: Any) -> None:
    _feed_or_spec_error(data, fmt)


@FUZZ
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=30), max_size=4))
def test_garbage_feed_rows_are_feed_or_spec_error(rows: list[str]) -> None:
    """Rows under a valid header reach the row validation (quotes, commas, blanks)."""
    _feed_or_spec_error(_feed(*rows), "csv")
