"""Campaign specs: the validated input from which every variant is expanded.

A `CampaignSpec` (YAML or JSON) lists products, per-locale copy, formats, durations and
seeds; `farm.campaign.expand` turns it into the cross product. Teams that keep copy in
spreadsheets send a feed instead (CSV or Parquet, one row per variant; `farm.campaign.feed`);
both take their field types, `SpecError` and error messages from `farm.campaign.fields`.

Sizes are the model's to judge: the spec's `preset` names the model, and every width and
height is checked against that model's pixel multiple (`model.geometry`), never a copy.
Every error names where it is, in the user's terms, and the rule it breaks:
`locales.ar-SA.headline: must not be empty`, `formats[1].width: 1000 must be a positive
multiple of ... (model 'small')`, with the model's own multiple. Loaders raise `SpecError`
and nothing else, whatever the input.
"""

from __future__ import annotations

import json
import math
import re
import string
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    model_validator,
)

from farm.campaign.branding import Brand, BrandField, EndCard
from farm.campaign.fields import (
    DEFAULT_PRESET,
    MAX_DURATION_S,
    ImageRef,
    Issues,
    LocaleCode,
    NonBlank,
    Pixels,
    RenderSettings,
    Seconds,
    Slug,
    SpecError,
    SpecModel,
    Text,
    messages,
    preset_geometry,
)
from farm.output.watermark import length_problem

if TYPE_CHECKING:
    from farm.campaign.images import ImageAccess
    from farm.render.engine import Segment

__all__ = [
    "Brand",
    "CampaignDefaults",
    "CampaignSpec",
    "EndCard",
    "FailureBudget",
    "Format",
    "LocaleCopy",
    "Product",
    "RenderSettings",
    "Shot",
    "SpecError",
    "fill",
    "load_spec",
    "parse_document",
    "spec_json_schema",
    "template_fields",
]

MAX_VARIANTS = 1_000_000  # a typo like `seeds: 100000` should fail here, not exhaust memory
ASPECT_TOLERANCE = 0.02
PLACEHOLDERS = ("brand", "description", "headline", "product")

_ASPECT = re.compile(r"^([1-9][0-9]{0,2}):([1-9][0-9]{0,2})$")


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
    unknown = sorted(set(template_fields(value)) - set(PLACEHOLDERS))
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        allowed = ", ".join(f"{{{n}}}" for n in PLACEHOLDERS)
        raise ValueError(f"unknown placeholder(s) {names}; allowed: {allowed}")
    return value


Template = Annotated[NonBlank, AfterValidator(_template)]


# --- the campaign spec -----------------------------------------------------------------


class Product(SpecModel):
    """One product the campaign advertises."""

    id: Slug = Field(description="Stable slug, e.g. 'trail-shoe-2'; part of every variant.")
    name: NonBlank = Field(description="Display name, substituted for {product}.")
    description: NonBlank = Field(description="What it is, substituted for {description}.")
    reference_image: ImageRef | None = Field(
        None,
        description="Optional packshot (PNG, JPEG or WebP): an fsspec URL (s3://, gs://, "
        "file://, ...) or a path relative to the spec. Checked when the spec is loaded; "
        "the variants end on it (`end_card`).",
    )


class LocaleCopy(SpecModel):
    """The copy of one locale: on-screen text and the prompt template that renders it."""

    language: NonBlank = Field(description="Display name of the language, e.g. 'Arabic'.")
    headline: NonBlank = Field(description="Headline shown in the video; {headline}.")
    cta: NonBlank = Field(description="Call to action shown at the end, e.g. 'Shop now'.")
    prompt: Template = Field(
        description="Prompt template; placeholders {product} {description} {brand} {headline}."
    )
    negative_prompt: Text = Field("", description="What to steer away from (literal text).")


class Format(SpecModel):
    """One output format: a named aspect ratio at a pixel size."""

    name: Slug = Field(description="Placement name, e.g. 'reels' or 'youtube'.")
    aspect: str = Field(description="Aspect ratio W:H such as 9:16, 1:1, 4:5 or 16:9.")
    width: Pixels = Field(description="Pixel width, a multiple of the model's pixel multiple.")
    height: Pixels = Field(description="Pixel height, a multiple of the model's pixel multiple.")

    @model_validator(mode="after")
    def _size_matches_aspect(self) -> Format:
        m = _ASPECT.fullmatch(self.aspect)
        if not m:
            raise Issues([("aspect", f"must look like 9:16 or 16:9 (got {self.aspect!r})")])
        want = int(m[1]) / int(m[2])
        if abs(self.width / self.height / want - 1) > ASPECT_TOLERANCE:
            size = f"{self.width}x{self.height}"
            raise Issues([("aspect", f"{size} is not {self.aspect} (within 2%)")])
        return self


class Shot(SpecModel):
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
            raise Issues([("end", f"must be after start ({self.end} <= {self.start})")])
        return self


class FailureBudget(SpecModel):
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


class CampaignDefaults(RenderSettings):
    """What a feed does not say per row: the campaign's name and render settings."""

    name: NonBlank = Field("feed", description="Campaign name.")
    brand: Text = Field("", description="Brand name (informational for feeds).")


class CampaignSpec(RenderSettings):
    """One ad campaign: products × locales × formats × durations × seeds."""

    name: NonBlank = Field(description="Campaign name.")
    brand: BrandField = Field(
        description="Brand name, substituted for {brand}; or {name, logo} with a logo."
    )
    products: list[Product] = Field(min_length=1, description="Products to advertise.")
    locales: dict[LocaleCode, LocaleCopy] = Field(
        min_length=1, description="Copy per BCP-47 locale code, e.g. 'ar-SA'."
    )
    formats: list[Format] = Field(min_length=1, description="Output formats.")
    durations: list[Seconds] = Field(
        min_length=1,
        description=f"Video lengths in seconds (0 < d <= {MAX_DURATION_S:g}); each renders "
        "the nearest frame count the model's frame rule allows.",
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

    # Left out of the dump (and so of the campaign id) when unset; EndCard() then applies.
    end_card: EndCard | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="The packshot end card of variants whose product has a reference image "
        "(default: the last 1.5 s, at most half the video, on white).",
    )

    @property
    def brand_name(self) -> str:
        """The brand's name, whether the spec gives a name or a {name, logo}."""
        return self.brand.name if isinstance(self.brand, Brand) else self.brand

    @property
    def logo(self) -> str | None:
        """The resolved URL of the brand's logo, or None."""
        return self.brand.logo if isinstance(self.brand, Brand) else None

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
        geometry = preset_geometry(self.preset)  # the model's pixel multiple decides sizes
        for i, fmt in enumerate(self.formats if geometry else ()):
            for side in ("width", "height"):
                problem = geometry.side_problem(getattr(fmt, side))
                if problem:
                    issues.append((f"formats[{i}].{side}", problem))
        for i, seconds in enumerate(self.durations if geometry else ()):
            frames = geometry.frames_for(seconds, self.fps)
            too_short = length_problem(seconds, self.fps, frames)
            if too_short:
                issues.append((f"durations[{i}]", too_short))
        for i, shot in enumerate(self.storyboard[1:], start=1):
            if shot.start < self.storyboard[i - 1].end:
                issues.append((f"storyboard[{i}].start", "must not be before the previous end"))
        dims = (self.products, self.locales, self.formats, self.durations)
        count = math.prod(len(d) for d in dims) * self.seeds
        if count > MAX_VARIANTS:
            issues.append(("seeds", f"spec expands to {count:,} variants (max {MAX_VARIANTS:,})"))
        if issues:
            raise Issues(issues)
        return self

    def prompt_values(self, product: Product, locale: str) -> dict[str, str]:
        """The values of the template placeholders for one (product, locale)."""
        copy = self.locales[locale]
        return {
            "product": product.name,
            "description": product.description,
            "brand": self.brand_name,
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


_MODELS = (CampaignSpec, Product, LocaleCopy, Format, Shot, CampaignDefaults, Brand, EndCard)
_FIELD_NAMES = sorted({name for m in _MODELS for name in m.model_fields})


def spec_messages(error: ValidationError) -> list[tuple[str, str]]:
    """pydantic errors of a spec → (path, message), with 'did you mean' for spec fields."""
    return messages(error, _FIELD_NAMES)


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
    source: str | bytes | dict[str, Any],
    *,
    fmt: Literal["yaml", "json"] | None = None,
    model: str | None = None,
    images: ImageAccess | None = None,
) -> CampaignSpec:
    """A validated CampaignSpec from YAML/JSON text or a dict; SpecError for anything else.

    `model`: the one model the spec may name (a farm's served model). It is the default,
    and any other `preset` is refused before anything reads it: over the API, a spec never
    makes the farm open a path or URL of its choosing.

    `images`: where its images (`products[].reference_image`, `brand.logo`) are read from
    and relative paths resolved (`farm.campaign.images.ImageAccess`: the spec file's
    directory). Default: absolute URLs and paths only; none at all when `model` is given
    (a served farm says which storage it reads images from).
    """
    from farm.campaign.images import ImageAccess

    if images is None:
        images = ImageAccess.none() if model is not None else ImageAccess()
    data = source if isinstance(source, dict) else parse_document(source, fmt)
    if not isinstance(data, dict):
        raise SpecError(
            [("spec", f"must be a mapping at the top level (got {type(data).__name__})")]
        )
    if model is not None:
        named = data.get("preset", model)
        if named != model:
            shown = repr(named)[:80]
            raise SpecError([("preset", f"this farm serves model {model!r}, not {shown}")])
        data = {**data, "preset": model}
    # The preset decides which sizes are valid, so its geometry checks every size while
    # the fields validate, and a bad size is reported with every other error.
    geometry = preset_geometry(data.get("preset", DEFAULT_PRESET))
    try:
        context = {"geometry": geometry, "images": images}
        return CampaignSpec.model_validate(data, context=context)
    except ValidationError as e:
        raise SpecError(spec_messages(e)) from None
    except RecursionError:
        raise SpecError([("spec", "nested too deeply")]) from None
