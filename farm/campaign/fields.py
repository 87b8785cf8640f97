"""Field types, render settings and errors shared by campaign specs and copy feeds.

`farm.campaign.spec` and `farm.campaign.feed` both import this module and neither imports
the other, so the two loaders agree on every field and every message: a locale code, a
slug or a pixel size is checked the same way in a YAML spec and in a CSV row.

Sizes are checked against the model that renders them (the spec's `preset`), never
against a copy of its rule: a loader passes that model's `Geometry` in the validation
context (``context={"geometry": ...}``) and `Pixels` asks it, so every bad size is
reported with the other errors and names the model's rule (`formats[1].width: 1000 must be
a positive multiple of ... (model 'small')`). Loaders raise `SpecError` and nothing else.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from farm.settings import setting_default
from model.config import PRESETS
from model.geometry import Geometry, geometry_of

MAX_DURATION_S = 120.0
MAX_SIDE = 4096  # pixels: a sanity bound of the farm, not a model's rule

# BCP-47 subset: language, optional script, optional region (2 letters or UN M.49 digits),
# optional variants. Case is checked too: ids and paths depend on the exact spelling.
_LOCALE = re.compile(
    r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-(?:[A-Z]{2}|[0-9]{3}))?(-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*$"
)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Python's whitespace (str.isspace), spelled out: a pattern written with it means the same
# in JSON Schema's regex dialect (ECMA-262, whose \s differs) as in Python's.
SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_SPACE = f"[^{SPACE}]"
_URL = re.compile(rf"^[a-z][a-z0-9+.-]*://{NOT_SPACE}+$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class SpecError(ValueError):
    """A spec or feed that cannot be used; `.errors` lists every (path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = [f"{path}: {message}" for path, message in errors[:20]]
        if len(errors) > 20:
            lines.append(f"... and {len(errors) - 20} more errors")
        super().__init__("\n".join(lines))


class Issues(ValueError):
    """Cross-field problems raised inside a validator, each with a path relative to it."""

    def __init__(self, issues: list[tuple[str, str]]):
        self.issues = issues
        super().__init__("; ".join(f"{p}: {m}" for p, m in issues))


# --- field types -----------------------------------------------------------------------


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


def _model_side(value: int, info: ValidationInfo) -> int:
    """A width or height the model in the validation context can render."""
    geometry = (info.context or {}).get("geometry")
    problem = geometry.side_problem(value) if geometry is not None else None
    if problem:
        raise ValueError(problem)
    return value


def _image(value: str, info: ValidationInfo) -> str:
    """An acceptable image (farm.campaign.images), as its resolved URL: the context's
    ``images`` (an `ImageAccess`) says where it may come from."""
    from farm.campaign.images import ImageAccess, check_reference

    context = info.context or {}
    access = context.get("images") or ImageAccess()
    seen = context.get("images_seen")  # a feed names one image in many rows: check it once
    if seen is None:
        return check_reference(value, access)
    if value not in seen:
        try:
            seen[value] = (check_reference(value, access), None)
        except ValueError as e:
            seen[value] = (None, str(e))
    resolved, problem = seen[value]
    if problem is not None:
        raise ValueError(problem)
    return resolved


def _color(value: str) -> str:
    if not _COLOR.fullmatch(value):
        raise ValueError(f"must be a colour like #ffffff or #1a2b3c (got {value!r})")
    return value.lower()


def url(value: str) -> str:
    """A URL like https://... or s3://... (a ValueError otherwise)."""
    if not _URL.fullmatch(_text(value)):
        raise ValueError(f"must be a URL like https://... or s3://... (got {value!r})")
    return value


Text = Annotated[str, AfterValidator(_text)]
NonBlank = Annotated[
    str, AfterValidator(_non_blank), Field(json_schema_extra={"pattern": NOT_SPACE})
]
Slug = Annotated[str, AfterValidator(_slug), Field(json_schema_extra={"pattern": _SLUG.pattern})]
LocaleCode = Annotated[
    str, AfterValidator(_locale), Field(json_schema_extra={"pattern": _LOCALE.pattern})
]
Url = Annotated[str, AfterValidator(url), Field(json_schema_extra={"pattern": _URL.pattern})]
# A product photo or logo: an fsspec URL or a path relative to the spec, opened and checked
# where the spec or feed is loaded (farm.campaign.images); the value becomes its resolved URL.
ImageRef = Annotated[
    str,
    AfterValidator(_non_blank),
    AfterValidator(_image),
    Field(json_schema_extra={"pattern": NOT_SPACE}),
]
Color = Annotated[str, AfterValidator(_color), Field(json_schema_extra={"pattern": _COLOR.pattern})]
# The pixel multiple is the model's: checked against the context's Geometry (see above).
Pixels = Annotated[int, Field(ge=1, le=MAX_SIDE), AfterValidator(_model_side)]
Seconds = Annotated[float, Field(gt=0, le=MAX_DURATION_S)]
Fps = Annotated[int, Field(ge=1, le=120)]


class SpecModel(BaseModel):
    """Base of every spec and feed model: frozen, no unknown fields, no inf/nan."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RenderSettings(SpecModel):
    """How every variant is rendered; shared by specs and by feed defaults."""

    # A campaign's defaults (those of an ad in its spec), not a request's or `farm render`'s.
    fps: Fps = Field(24, description="Frames per second.")
    preset: str = Field(
        setting_default("model"),
        description=f"The model: a preset ({', '.join(sorted(PRESETS))}), a checkpoint URL, "
        "or 'diffusers:<dir or URL>' (Wan, LTX-Video, CogVideoX); its frame rule and pixel "
        "multiple decide the valid sizes and frame counts.",
    )
    steps: int = Field(20, ge=1, le=1000, description="Denoising steps.")
    guidance: float = Field(4.0, ge=1, le=50, description="Classifier-free guidance (1 = off).")
    priority: int = Field(
        0, ge=-(2**31), lt=2**31, description="Higher priority is dispatched first."
    )

    @model_validator(mode="after")
    def _known_model(self) -> RenderSettings:
        try:
            geometry_of(self.preset)
        except ValueError as e:
            raise Issues([("preset", str(e))]) from None
        return self

    @property
    def geometry(self) -> Geometry:
        """The frame rule and pixel multiple of the preset's model."""
        return geometry_of(self.preset)


DEFAULT_PRESET: str = RenderSettings.model_fields["preset"].default


def preset_geometry(preset: Any) -> Geometry | None:
    """The geometry of a model reference, None if it names none (its own error reports it)."""
    if not isinstance(preset, str):
        return None
    try:
        return geometry_of(preset)
    except ValueError:
        return None


# --- errors in the user's terms --------------------------------------------------------


def path_of(loc: tuple[Any, ...] | list[Any], rel: str = "") -> str:
    """('formats', 1, 'width') → 'formats[1].width'; dict keys become path parts."""
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("[") and part.endswith("]"):
            continue  # pydantic's mark of an invalid dict key ("[key]"), our union tags
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part).encode(errors="backslashreplace").decode()  # keys may be any text
        out += f".{text}" if out else text
    if rel:
        out += rel if rel.startswith("[") or not out else f".{rel}"
    return out or "spec"


def messages(error: ValidationError, field_names: Iterable[str] = ()) -> list[tuple[str, str]]:
    """pydantic errors → (path, message) in the user's terms; unknown fields get a
    'did you mean' from `field_names`."""
    names = sorted(field_names)
    out = []
    for err in error.errors():
        loc, kind = err["loc"], err["type"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, Issues):
            out.extend((path_of(loc, rel), msg) for rel, msg in cause.issues)
            continue
        if kind == "value_error" and cause is not None:
            msg = str(cause)
        elif kind == "extra_forbidden":
            msg = "unknown field"
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            msg += f"; did you mean {close[0]!r}?" if close else ""
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
        out.append((path_of(loc), msg))
    return out
