"""Campaign specs: the validated input from which every variant is expanded.

A `CampaignSpec` (YAML or JSON) lists products, per-locale copy, formats, durations and
seeds; `farm.campaign.expand` turns it into the cross product. Teams that keep copy in
spreadsheets send a feed instead (CSV or Parquet, one row per variant; `farm.campaign.feed`), which
shares this module's field types, `SpecError` and error messages.

Every error names where it is, in the user's terms: `locales.ar-SA.headline: must not be
empty`, `formats[1].width: must be a multiple of 16 (got 1000)`, `feed row 3, column
width: ...`. Loaders raise `SpecError` and nothing else, whatever the input.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import string
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.config import PRESETS

if TYPE_CHECKING:
    from farm.render.engine import Segment

MAX_DURATION_S = 120.0
MAX_VARIANTS = 1_000_000  # a typo like `seeds: 100000` should fail here, not exhaust memory
ASPECT_TOLERANCE = 0.02
PLACEHOLDERS = ("brand", "description", "headline", "product")

# BCP-47 subset: language, optional script, optional region (2 letters or UN M.49 digits),
# optional variants. Case is checked too: ids and paths depend on the exact spelling.
_LOCALE = re.compile(
    r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-(?:[A-Z]{2}|[0-9]{3}))?(-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*$"
)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ASPECT = re.compile(r"^([1-9][0-9]{0,2}):([1-9][0-9]{0,2})$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


class SpecError(ValueError):
    """A spec or feed that cannot be used; `.errors` lists every (path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = [f"{path}: {message}" for path, message in errors[:20]]
        if len(errors) > 20:
            lines.append(f"... and {len(errors) - 20} more errors")
        super().__init__("\n".join(lines))


class _Issues(ValueError):
    """Cross-field problems raised inside a validator, each with a path relative to it."""

    def __init__(self, issues: list[tuple[str, str]]):
        self.issues = issues
        super().__init__("; ".join(f"{p}: {m}" for p, m in issues))


# --- field types shared by the spec and the feed ---------------------------------------


def _text(value: str) -> str:
    try:  # JSON can carry lone surrogates ("\ud800"), which no file or Arrow column can
        value.encode()
    except UnicodeEncodeError as e:
        raise ValueError(f"must be valid Unicode text (bad character at {e.start})") from None
    return value


def _non_blank(value: str) -> str:
    if not _text(value).strip():
        raise ValueError("must not be empty")
    return value


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(f"must be a slug of lowercase letters, digits, _ and - (got {value!r})")
    return value


def _locale(value: str) -> str:
    if _LOCALE.fullmatch(value):
        return value
    first, *rest = value.replace("_", "-").split("-")
    case = {2: str.upper, 4: str.title}  # en-us → en-US, zh-hant-tw → zh-Hant-TW
    fixed = "-".join([first.lower(), *(case.get(len(p), str.lower)(p) for p in rest)])
    hint = f"; did you mean {fixed!r}?" if _LOCALE.fullmatch(fixed) else ""
    raise ValueError(f"not a BCP-47 locale code like en-US, zh-Hant-TW or es-419{hint}")


def _multiple_of_16(value: int) -> int:
    if value % 16:
        raise ValueError(f"must be a multiple of 16 (got {value})")
    return value


def _url(value: str) -> str:
    if not _URL.fullmatch(_text(value)):
        raise ValueError(f"must be a URL like https://... or s3://... (got {value!r})")
    return value


def template_fields(template: str) -> list[str]:
    """The placeholder names of a prompt template; a ValueError for malformed braces."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"malformed template ({e}); write {{{{ and }}}} for braces") from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:  # only plain {name}: no attribute access, no formatting
            raise ValueError(f"placeholder {{{name}}} must be a plain name, without ! or :")
        fields.append(name)
    return fields


def fill(template: str, values: dict[str, str]) -> str:
    """The template with its placeholders replaced (literal braces are kept verbatim)."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)


def _template(value: str) -> str:
    _non_blank(value)
    unknown = sorted(set(template_fields(value)) - set(PLACEHOLDERS))
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        allowed = ", ".join(f"{{{n}}}" for n in PLACEHOLDERS)
        raise ValueError(f"unknown placeholder(s) {names}; allowed: {allowed}")
    return value


Text = Annotated[str, AfterValidator(_text)]
NonBlank = Annotated[str, AfterValidator(_non_blank)]
Slug = Annotated[str, AfterValidator(_slug), Field(json_schema_extra={"pattern": _SLUG.pattern})]
LocaleCode = Annotated[
    str, AfterValidator(_locale), Field(json_schema_extra={"pattern": _LOCALE.pattern})
]
Template = Annotated[str, AfterValidator(_template)]
Pixels = Annotated[
    int,
    Field(ge=16, le=4096, json_schema_extra={"multipleOf": 16}),
    AfterValidator(_multiple_of_16),
]
Seconds = Annotated[float, Field(gt=0, le=MAX_DURATION_S)]
Fps = Annotated[int, Field(ge=1, le=120)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --- the campaign spec -----------------------------------------------------------------


class Product(_Model):
    """One product the campaign advertises."""

    id: Slug = Field(description="Stable slug, e.g. 'trail-shoe-2'; part of every variant.")
    name: NonBlank = Field(description="Display name, substituted for {product}.")
    description: NonBlank = Field(description="What it is, substituted for {description}.")
    reference_image: Annotated[str, AfterValidator(_url)] | None = Field(
        None, description="Optional URL of a product photo (https://, s3://, gs://, ...)."
    )


class LocaleCopy(_Model):
    """The copy of one locale: on-screen text and the prompt template that renders it."""

    language: NonBlank = Field(description="Display name of the language, e.g. 'Arabic'.")
    headline: NonBlank = Field(description="Headline shown in the video; {headline}.")
    cta: NonBlank = Field(description="Call to action shown at the end, e.g. 'Shop now'.")
    prompt: Template = Field(
        description="Prompt template; placeholders {product} {description} {brand} {headline}."
    )
    negative_prompt: Text = Field("", description="What to steer away from (literal text).")


class Format(_Model):
    """One output format: a named aspect ratio at a pixel size."""

    name: Slug = Field(description="Placement name, e.g. 'reels' or 'youtube'.")
    aspect: str = Field(description="Aspect ratio W:H such as 9:16, 1:1, 4:5 or 16:9.")
    width: Pixels = Field(description="Pixel width, a multiple of 16.")
    height: Pixels = Field(description="Pixel height, a multiple of 16.")

    @model_validator(mode="after")
    def _size_matches_aspect(self) -> Format:
        m = _ASPECT.fullmatch(self.aspect)
        if not m:
            raise _Issues([("aspect", f"must look like 9:16 or 16:9 (got {self.aspect!r})")])
        want = int(m[1]) / int(m[2])
        if abs(self.width / self.height / want - 1) > ASPECT_TOLERANCE:
            size = f"{self.width}x{self.height}"
            raise _Issues([("aspect", f"{size} is not {self.aspect} (within 2%)")])
        return self


class Shot(_Model):
    """One storyboard shot, timed as FRACTIONS of the video's duration (0 = start, 1 = end).

    Fractions, not seconds, because one campaign renders several durations: a shot at
    [0.5, 1) is the second half of the 6 s and of the 15 s cut alike.
    """

    start: float = Field(ge=0, lt=1, description="Start as a fraction of the duration.")
    end: float = Field(gt=0, le=1, description="End (exclusive) as a fraction of the duration.")
    prompt: Template = Field(description="Prompt template of this shot (same placeholders).")

    @model_validator(mode="after")
    def _ordered(self) -> Shot:
        if self.end <= self.start:
            raise _Issues([("end", f"must be after start ({self.end} <= {self.start})")])
        return self


class FailureBudget(_Model):
    """When a campaign job stops dispatching because too many variants fail for good.

    Render farm managers stop a job whose frames keep failing (a broken model, a full disk)
    rather than burn the queue. A variant "fails for good" when its last attempt failed
    and no retry is left. Counted per job run: a resume starts a fresh count.
    """

    max_failures: int | None = Field(
        100, ge=1, description="Stop after this many variants fail for good (null: no limit)."
    )
    max_failure_rate: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="Stop once more than this fraction of the variants finished in the run "
        "failed for good (null: no limit); judged from `min_finished` finished variants on.",
    )
    min_finished: int = Field(
        20, ge=1, description="Finished variants before `max_failure_rate` is judged."
    )

    def exceeded(self, failed: int, finished: int) -> str | None:
        """Why the budget is spent after `failed` of `finished` variants, or None if it is not."""
        if self.max_failures is not None and failed >= self.max_failures:
            return f"{failed} variants failed (failure_budget.max_failures = {self.max_failures})"
        rate = self.max_failure_rate
        if rate is not None and finished >= self.min_finished and failed > rate * finished:
            return (
                f"{failed} of {finished} finished variants failed ({failed / finished:.0%} > "
                f"failure_budget.max_failure_rate = {rate:.0%})"
            )
        return None


class RenderSettings(_Model):
    """How every variant is rendered; shared by specs and by feed defaults."""

    fps: Fps = Field(24, description="Frames per second.")
    preset: str = Field("small", description=f"Model preset, one of {sorted(PRESETS)}.")
    steps: int = Field(20, ge=1, le=1000, description="Denoising steps.")
    guidance: float = Field(4.0, ge=1, le=50, description="Classifier-free guidance (1 = off).")
    priority: int = Field(
        0, ge=-(2**31), lt=2**31, description="Higher priority is dispatched first."
    )

    @model_validator(mode="after")
    def _known_preset(self) -> RenderSettings:
        if self.preset not in PRESETS:
            raise _Issues([("preset", f"unknown preset {self.preset!r}; one of {sorted(PRESETS)}")])
        return self


class CampaignDefaults(RenderSettings):
    """What a feed does not say per row: the campaign's name and render settings."""

    name: NonBlank = Field("feed", description="Campaign name.")
    brand: Text = Field("", description="Brand name (informational for feeds).")


class CampaignSpec(RenderSettings):
    """One ad campaign: products × locales × formats × durations × seeds."""

    name: NonBlank = Field(description="Campaign name.")
    brand: NonBlank = Field(description="Brand name, substituted for {brand}.")
    products: list[Product] = Field(min_length=1, description="Products to advertise.")
    locales: dict[LocaleCode, LocaleCopy] = Field(
        min_length=1, description="Copy per BCP-47 locale code, e.g. 'ar-SA'."
    )
    formats: list[Format] = Field(min_length=1, description="Output formats.")
    durations: list[Seconds] = Field(
        min_length=1, description=f"Video lengths in seconds (0 < d <= {MAX_DURATION_S:g})."
    )
    seeds: int = Field(1, ge=1, le=10_000, description="Seeds (takes) per combination.")
    storyboard: list[Shot] = Field(
        [], description="Optional shots, timed as fractions of the duration, in order."
    )
    output_root: NonBlank | None = Field(
        None, description="Where renders go: a local path or fsspec URL (s3://bucket/...)."
    )
    # Left out of the dump (and so of the campaign id) when unset; the job then uses
    # FailureBudget() defaults.
    failure_budget: FailureBudget | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="When the campaign job stops dispatching after failures "
        "(default: 100 variants, or over 50% once 20 have finished).",
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> CampaignSpec:
        issues = []
        for path, keys in (
            ("products[{}].id", [p.id for p in self.products]),
            ("formats[{}].name", [f.name for f in self.formats]),
            ("durations[{}]", self.durations),
        ):
            for i, key in enumerate(keys):
                if key in keys[:i]:
                    where = path.format(keys.index(key))
                    issues.append((path.format(i), f"duplicate of {where} ({key!r})"))
        for i, shot in enumerate(self.storyboard[1:], start=1):
            if shot.start < self.storyboard[i - 1].end:
                issues.append((f"storyboard[{i}].start", "must not be before the previous end"))
        dims = (self.products, self.locales, self.formats, self.durations)
        count = math.prod(len(d) for d in dims) * self.seeds
        if count > MAX_VARIANTS:
            issues.append(("seeds", f"spec expands to {count:,} variants (max {MAX_VARIANTS:,})"))
        if issues:
            raise _Issues(issues)
        return self

    def prompt_values(self, product: Product, locale: str) -> dict[str, str]:
        """The values of the template placeholders for one (product, locale)."""
        copy = self.locales[locale]
        return {
            "product": product.name,
            "description": product.description,
            "brand": self.brand,
            "headline": copy.headline,
        }

    def storyboard_for(self, product_id: str, locale: str, duration_s: float) -> list[Segment]:
        """The storyboard of one variant as engine segments in absolute seconds."""
        from farm.render.engine import Segment  # lazily: the engine imports torch

        product = next(p for p in self.products if p.id == product_id)
        values = self.prompt_values(product, locale)
        return [
            Segment(
                start=s.start * duration_s, end=s.end * duration_s, prompt=fill(s.prompt, values)
            )
            for s in self.storyboard
        ]


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of a campaign spec (for editors and the CLI)."""
    return CampaignSpec.model_json_schema()


# --- loading ---------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2-style scalars: `no` stays a string (Norwegian!), `9:16` is not 556."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        # Aliases can expand exponentially ("billion laughs"); specs do not need them.
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)


_YamlLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
):
    _YamlLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), _first)


_MODELS = (CampaignSpec, Product, LocaleCopy, Format, Shot, CampaignDefaults)
_FIELD_NAMES = sorted({name for m in _MODELS for name in m.model_fields})


def _path(loc: tuple[Any, ...] | list[Any], rel: str = "") -> str:
    """('formats', 1, 'width') → 'formats[1].width'; dict keys become path parts."""
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic marks an invalid dict key like this
            continue
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part).encode(errors="backslashreplace").decode()  # keys may be any text
        out += f".{text}" if out else text
    if rel:
        out += rel if rel.startswith("[") or not out else f".{rel}"
    return out or "spec"


def _messages(error: ValidationError) -> list[tuple[str, str]]:
    """pydantic errors → (path, message) in the user's terms."""
    out = []
    for err in error.errors():
        loc, kind = err["loc"], err["type"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Issues):
            out.extend((_path(loc, rel), msg) for rel, msg in cause.issues)
            continue
        if kind == "value_error" and cause is not None:
            msg = str(cause)
        elif kind == "extra_forbidden":
            msg = "unknown field"
            close = difflib.get_close_matches(str(loc[-1]), _FIELD_NAMES, n=1)
            msg += f"; did you mean {close[0]!r}?" if close else ""
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
        out.append((_path(loc), msg))
    return out


def parse_document(source: str | bytes, fmt: Literal["yaml", "json"] | None = None) -> Any:
    """YAML or JSON text → Python values; SpecError('spec: not valid ...') otherwise."""
    fmt = fmt or "yaml"  # JSON is (for our purposes) a subset of YAML
    if fmt not in ("yaml", "json") or not isinstance(source, str | bytes):
        raise SpecError([("spec", f"expected YAML or JSON text (got {type(source).__name__})")])
    try:
        text = source.decode("utf-8-sig") if isinstance(source, bytes) else source
        text = text.removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise SpecError([("spec", f"not valid UTF-8: {e}")]) from None
    try:
        return json.loads(text) if fmt == "json" else yaml.load(text, Loader=_YamlLoader)
    except Exception as e:  # any parser failure (incl. RecursionError) is the user's input
        raise SpecError([("spec", f"not valid {fmt.upper()}: {e}".replace("\n", " "))]) from None


def load_spec(
    source: str | bytes | dict[str, Any], *, fmt: Literal["yaml", "json"] | None = None
) -> CampaignSpec:
    """A validated CampaignSpec from YAML/JSON text or a dict; SpecError for anything else."""
    data = source if isinstance(source, dict) else parse_document(source, fmt)
    if not isinstance(data, dict):
        raise SpecError(
            [("spec", f"must be a mapping at the top level (got {type(data).__name__})")]
        )
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_messages(e)) from None
    except RecursionError:
        raise SpecError([("spec", "nested too deeply")]) from None


def __getattr__(name: str) -> Any:
    # `load_feed` lives in farm.campaign.feed; importing it from here still works.
    if name == "load_feed":
        from farm.campaign.feed import load_feed

        return load_feed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
