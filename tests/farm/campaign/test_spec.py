"""Tests for farm.campaign.spec: campaign specs, and the errors users see."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.campaign.expand import expand
from farm.campaign.spec import (
    CampaignSpec,
    SpecError,
    load_spec,
    spec_json_schema,
    template_fields,
)
from tests.helpers.paths import EXAMPLES

# Its image paths made absolute: these tests load the spec as text, with no directory.
EXAMPLE_YAML = (
    (EXAMPLES / "campaign.yaml")
    .read_text(encoding="utf-8")
    .replace(": assets/", f": {EXAMPLES}/assets/")
)


def example() -> dict[str, Any]:
    """The example spec as a fresh dict, to mutate."""
    return yaml.safe_load(EXAMPLE_YAML)


def errors_of(data: Any, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec(data, **kwargs)
    assert info.value.errors, "a SpecError always lists at least one (path, message)"
    return info.value.errors


# --- the example -----------------------------------------------------------------------


def test_example_spec_loads_with_real_copy() -> None:
    spec = load_spec(EXAMPLE_YAML)
    assert isinstance(spec, CampaignSpec)
    assert [p.id for p in spec.products] == ["flask-500", "trail-cup"]
    assert list(spec.locales) == ["en-US", "zh-CN", "ar-SA"]
    assert spec.locales["zh-CN"].cta == "立即购买"
    assert spec.locales["ar-SA"].cta == "تسوّق الآن"
    assert [(f.aspect, f.width, f.height) for f in spec.formats] == [
        ("9:16", 144, 256),
        ("16:9", 256, 144),
    ]
    assert (spec.durations, spec.seeds, spec.preset, spec.steps, spec.guidance) == (
        [1.0],
        1,
        "small",
        8,
        4.0,
    )


def test_bytes_json_and_dict_sources_agree() -> None:
    from_text = load_spec(EXAMPLE_YAML)
    as_json = json.dumps(example(), ensure_ascii=False)
    assert load_spec(as_json, fmt="json") == from_text
    assert load_spec(("\ufeff" + as_json).encode(), fmt="json") == from_text  # BOM tolerated
    assert load_spec(EXAMPLE_YAML.encode()) == from_text
    assert load_spec(example()) == from_text


def test_yaml_scalars_are_read_as_written() -> None:
    """PyYAML's YAML 1.1 reads `9:16` as 556 and `no` as False; a spec means the text."""
    text = EXAMPLE_YAML.replace('aspect: "9:16"', "aspect: 9:16").replace("zh-CN:", "no:")
    spec = load_spec(text)
    assert spec.formats[0].aspect == "9:16"
    assert "no" in spec.locales  # Norwegian, not False


def test_storyboard_becomes_engine_segments_in_seconds() -> None:
    spec = load_spec(EXAMPLE_YAML)
    shots = spec.storyboard_for("trail-cup", "zh-CN", 10.0)
    assert [(s.start, s.end) for s in shots] == [(0.0, 6.0), (6.0, 10.0)]
    assert shots[0].prompt.startswith("Nordkap Trail Cup slowly turning")
    assert "{" not in shots[1].prompt and "Nordkap logo" in shots[1].prompt


def test_json_schema_describes_every_field() -> None:
    schema = spec_json_schema()
    assert {"products", "locales", "formats", "durations", "preset"} <= set(schema["properties"])
    assert "storyboard" in schema["properties"]
    for name, definition in schema["$defs"].items():
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"
    json.dumps(schema)  # serialisable, for the CLI to print


# --- errors name the path ----------------------------------------------------------------


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


BAD = [
    (("locales", "ar-SA", "headline"), "  ", "locales.ar-SA.headline", "must not be empty"),
    (
        ("formats", 1, "width"),
        1000,
        "formats[1].width",
        "1000 must be a positive multiple of 16 (model 'small')",
    ),
    (("formats", 0, "height"), 8, "formats[0].height", "8 must be a positive multiple of 16"),
    (("formats", 0, "height"), 0, "formats[0].height", "greater than or equal to 1"),
    (("formats", 0, "height"), 160, "formats[0].aspect", "144x160 is not 9:16"),
    (("formats", 0, "aspect"), "tall", "formats[0].aspect", "must look like 9:16"),
    (("locales", "zh-CN", "prompt"), "{product} 只要 {price}", "locales.zh-CN.prompt", "{price}"),
    (("locales", "en-US", "prompt"), "{brand.__class__}", "locales.en-US.prompt", "unknown"),
    (("locales", "en-US", "prompt"), "{product!r}", "locales.en-US.prompt", "plain name"),
    (("locales", "en-US", "prompt"), "oops {product", "locales.en-US.prompt", "malformed"),
    (("preset",), "huge", "preset", "'huge' is neither a preset"),
    (("products", 1, "id"), "flask-500", "products[1].id", "duplicate of products[0].id"),
    (("products", 0, "id"), "Flask 500", "products[0].id", "slug"),
    (("products", 0, "reference_image"), "flask.png", "products[0].reference_image", "relative"),
    (("products", 0, "id"), "flask\n", "products[0].id", "slug"),  # no trailing newline
    (("products", 0, "reference_image"), "memory://x.png", "products[0].reference_image", "exist"),
    (("brand",), {"name": "N", "logo": "l.png"}, "brand.logo", "relative path"),
    (("brand",), {"name": "N", "lgoo": "l.png"}, "brand.lgoo", "did you mean 'logo'"),
    (("end_card",), {"seconds": 1, "background": "white"}, "end_card.background", "#ffffff"),
    (("formats", 0, "aspect"), "9:16\n", "formats[0].aspect", "must look like 9:16"),
    (("durations",), [1, 0], "durations[1]", "greater than 0"),
    (("durations",), [121], "durations[0]", "less than or equal to 120"),
    (("durations",), [2, 2.0], "durations[1]", "duplicate"),
    (("guidance",), 0.5, "guidance", "greater than or equal to 1"),
    (("seeds",), 0, "seeds", "greater than or equal to 1"),
    (("storyboard", 1, "start"), 0.5, "storyboard[1].start", "previous end"),
    (("storyboard", 0, "end"), 0.0, "storyboard[0].end", "greater than 0"),
    (("colour",), "red", "colour", "unknown field"),
    (("products", 0, "descripton"), "x", "products[0].descripton", "did you mean 'description'"),
    (("formats",), [], "formats", "at least 1"),
]


@pytest.mark.parametrize(("where", "value", "path", "message"), BAD, ids=[b[2] for b in BAD])
def test_bad_field_is_named_by_its_path(
    where: tuple[Any, ...], value: Any, path: str, message: str
) -> None:
    data = example()
    _set(data, where, value)
    errors = errors_of(data)
    assert any(p == path and message in m for p, m in errors), errors
    assert f"{path}: " in str(load_spec_error(data))


def test_sizes_are_judged_by_the_presets_model() -> None:
    data = example()
    data["preset"] = "tiny"
    data["formats"][1]["width"] = 252  # 16:9 within 2%
    assert ("formats[1].width", "252 must be a positive multiple of 16 (model 'tiny')") in (
        errors_of(data)
    )
    data["preset"] = "huge"  # no model to ask: the preset itself is the error
    assert [p for p, _ in errors_of(data)] == ["preset"]


def test_a_spec_built_without_the_loader_checks_sizes_too() -> None:
    data = example()
    data["formats"][0].update(width=136, height=240)  # 9:16 within 2%, not multiples of 16
    with pytest.raises(ValueError) as info:
        CampaignSpec.model_validate(data)  # no validation context: the spec asks the model
    message = str(info.value)
    assert "formats[0].width: 136 must be a positive multiple of 16 (model 'small')" in message
    assert "formats[0].height: 240" not in message  # 240 = 15 x 16 is fine
    assert [p for p, _ in errors_of(data)] == ["formats[0].width"]


def load_spec_error(data: Any) -> SpecError:
    try:
        load_spec(data)
    except SpecError as e:
        return e
    raise AssertionError("expected a SpecError")


@pytest.mark.parametrize(
    ("code", "hint"),
    [("en_US", "did you mean 'en-US'"), ("zh-hant-tw", "'zh-Hant-TW'"), ("x", ""), ("en-US\n", "")],
)
def test_bad_locale_code_is_named(code: str, hint: str) -> None:
    data = example()
    data["locales"][code] = data["locales"].pop("en-US")
    ((path, message),) = errors_of(data)
    assert path == f"locales.{code}"
    assert "BCP-47" in message and hint in message


@pytest.mark.parametrize("code", ["ar-SA", "zh-CN", "zh-Hant-TW", "en", "es-419", "sr-Latn-RS"])
def test_good_locale_codes_load(code: str) -> None:
    data = example()
    data["locales"] = {code: data["locales"]["en-US"]}
    assert list(load_spec(data).locales) == [code]


def test_every_error_is_reported_at_once() -> None:
    data = example()
    data["formats"][1]["width"] = 1000
    data["locales"]["ar-SA"]["headline"] = ""
    data["products"][1]["id"] = "BAD ID"
    paths = {p for p, _ in errors_of(data)}
    assert {"formats[1].width", "locales.ar-SA.headline", "products[1].id"} <= paths


def test_missing_field_and_oversized_campaign() -> None:
    data = example()
    del data["brand"]
    assert ("brand", "required field is missing") in errors_of(data)
    data = example()
    data["seeds"] = 10_000
    data["durations"] = list(range(1, 101))
    assert any(p == "seeds" and "expands to" in m for p, m in errors_of(data))


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("name: [unclosed", None, "spec: not valid YAML"),
        ('{"name": }', "json", "spec: not valid JSON"),
        ("- just\n- a list\n", None, "spec: must be a mapping at the top level (got list)"),
        ("", None, "got NoneType"),
        (b"\xff\xfe\x00garbage", None, "spec: not valid UTF-8"),
        ("a: &x [1]\nb: *x\n", None, "aliases"),
    ],
)
def test_unparseable_documents_are_spec_errors(text: str | bytes, fmt: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(text, fmt=fmt)
    assert message in str(info.value)


def test_lone_surrogates_are_refused_where_they_are() -> None:
    data = json.dumps(example()).replace("Shop now", "Shop \\ud800now")
    assert [p for p, _ in errors_of(data, fmt="json")] == ["locales.en-US.cta"]
    data = example()
    data["locales"]["ar-SA"]["negative_prompt"] = "\udcff"
    assert "valid Unicode" in dict(errors_of(data))["locales.ar-SA.negative_prompt"]


def test_template_fields() -> None:
    assert template_fields("{product} by {brand}, {{literal}}") == ["product", "brand"]


# --- hypothesis: nothing but CampaignSpec or SpecError ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _spec_or_spec_error(source: Any, **kwargs: Any) -> None:
    try:
        result = load_spec(source, **kwargs)
    except SpecError as e:
        assert e.errors and all(isinstance(p, str) and isinstance(m, str) for p, m in e.errors)
    else:
        assert isinstance(result, CampaignSpec)
        if len(result.products) * len(result.locales) * result.seeds <= 1000:
            assert expand(result).num_rows > 0  # what validates must also expand


@FUZZ
@given(st.text(max_size=200), st.sampled_from([None, "yaml", "json"]))
def test_garbage_text_is_spec_or_spec_error(text: str, fmt: Any) -> None:
    _spec_or_spec_error(text, fmt=fmt)


@FUZZ
@given(st.binary(max_size=200))
def test_garbage_bytes_are_spec_or_spec_error(data: bytes) -> None:
    _spec_or_spec_error(data)


@FUZZ
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_random_dicts_are_spec_or_spec_error(data: dict[str, Any]) -> None:
    _spec_or_spec_error(data)


def _leaf_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaf_paths(v, (*prefix, k))] or [prefix]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _leaf_paths(v, (*prefix, i))] or [prefix]
    return [prefix]


EXAMPLE_LEAVES = _leaf_paths(example())


@FUZZ
@given(st.sampled_from(EXAMPLE_LEAVES), json_values)
def test_example_with_one_random_leaf_is_spec_or_spec_error(
    path: tuple[Any, ...], value: Any
) -> None:
    """Near-valid specs reach the deep validators, which must not crash either."""
    data = copy.deepcopy(example())
    _set(data, path, value)
    _spec_or_spec_error(data)
    _spec_or_spec_error(json.dumps(data), fmt="json")
