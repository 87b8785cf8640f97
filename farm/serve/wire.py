"""Wire and configuration models of the Serve app: HTTP request/response bodies, app args.

Nothing here imports Ray or torch, so the API surface can be validated and documented
without them. The schema checks a request's syntax; what the served model can render (its
pixel multiple, its frame rule) is the model's to say: `check_request_geometry` asks its
`Geometry` (`model.geometry`), and the frame count is `geometry.frames_for(seconds, fps)`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from farm.campaign.fields import NOT_SPACE
from farm.output.watermark import length_problem
from farm.settings import Settings, setting_default
from model.geometry import Geometry

VIDEO_ID_HEX = 32
TENANT_TAG_HEX = 10
ANONYMOUS_TENANT = "default"  # the tenant of requests without a token (allow_anonymous)
VideoStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled"]


class RequestError(Exception):
    """A request the API refuses: HTTP status, machine code, message naming the field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error body: {code, message, param?}."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param:
            out["param"] = self.param
        return out


# The spelling of a size: decimal sides, an x (or X) between, spaces around allowed (which
# sides are valid is the model's and the limits' to say). `farm.serve.openapi` writes the
# same rule, with the valid sides, as the schema's pattern.
SIZE = re.compile(r" *(-?)0*([0-9]{1,6})[xX](-?)0*([0-9]{1,6}) *")


def parse_size(size: str) -> tuple[int, int]:
    """'WxH' → (width, height), with a clear error for anything else (sides unchecked)."""
    m = SIZE.fullmatch(size)
    if m is None:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 256x144; got {size!r}")
    return int(m[1] + m[2]), int(m[3] + m[4])


class VideoRequest(BaseModel):
    """POST /v1/videos: what to render (the HTTP body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The HTTP API's defaults (a 4 s clip in 20 steps), not `farm render`'s (RenderRequest).
    # Lengths, seconds, steps and sizes are bounded by the deployment's `Limits` (their one
    # owner), which `farm.serve.openapi` writes into the served schema.
    prompt: str = Field(
        pattern=NOT_SPACE, description="What the video shows (not blank; surrounding space is cut)."
    )
    negative_prompt: str = Field("", description="What guidance avoids.")
    seconds: float = Field(4.0, gt=0, description="Length in seconds.")
    size: str = Field(
        "256x144", description="WIDTHxHEIGHT, each a multiple of the served model's multiple."
    )
    fps: int = Field(24, ge=1, le=60, description="Frames per second.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Noise seed.")
    steps: int = Field(20, ge=1, description="Denoising steps.")
    guidance: float = Field(4.0, ge=1, le=30, description="Classifier-free guidance (1 = off).")
    model: str | None = Field(
        None,
        description="The model to render with: only the one this deployment serves "
        "(GET /v1/models); omitted, that one.",
    )

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        # Syntax only: which sides are valid is the served model's rule (check_request_geometry).
        width, height = parse_size(value)
        return f"{width}x{height}"

    @property
    def width(self) -> int:
        return parse_size(self.size)[0]

    @property
    def height(self) -> int:
        return parse_size(self.size)[1]

    def frames_for(self, geometry: Geometry) -> int:
        """The frame count `geometry`'s model renders for these seconds at this fps."""
        return geometry.frames_for(self.seconds, self.fps)


def check_request_geometry(request: VideoRequest, geometry: Geometry) -> None:
    """Raise a 422 RequestError (param `size`) unless the served model renders this size,
    or (param `seconds`) when the clip is too short to carry the watermark.

    The message names the side and the model's rule, e.g. ``size: width 60 must be a
    positive multiple of <the model's multiple> (model 'tiny')``.
    """
    try:
        geometry.check_size(request.width, request.height)
    except ValueError as e:
        raise RequestError(422, "invalid_request", f"size: {e}", "size") from None
    # Too short for the watermark (farm.output.watermark owns the minimum length).
    too_short = length_problem(request.seconds, request.fps, request.frames_for(geometry))
    if too_short:
        raise RequestError(422, "invalid_request", f"seconds: {too_short}", "seconds")


class CreateVideoRequest(VideoRequest):
    """What the Director renders: the HTTP body plus the tenant that asked (set by the Api)."""

    tenant: str = Field(ANONYMOUS_TENANT, min_length=1, description="Who asked for it.")

    def video_id(self, model: str, engine: dict[str, Any]) -> str:
        """Content hash of the request (tenant included), the model and the engine layout.

        Same input, same id; the first hex digits are the tenant's tag (`tenant_tag`), so
        the Api tells a tenant's own ids from others' without asking anyone.
        """
        # The request's `model` is the served one or None (the Api checks): `model` counts.
        key = {"request": self.model_dump(exclude={"model"}), "model": model, "engine": engine}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return (tenant_tag(self.tenant) + digest)[:VIDEO_ID_HEX]


def tenant_tag(tenant: str) -> str:
    """The prefix of every video id of `tenant` (40 bits of a hash of its name)."""
    return hashlib.sha256(f"farm-tenant:{tenant}".encode()).hexdigest()[:TENANT_TAG_HEX]


def owns(tenant: str, video_id: str) -> bool:
    """Whether `video_id` is one of `tenant`'s video ids (by its tenant tag)."""
    return len(video_id) == VIDEO_ID_HEX and video_id.startswith(tenant_tag(tenant))


class Limits(BaseModel):
    """Deployment-wide bounds on requests (tighter than the schema's own).

    Each violation is a 422 ``limit_exceeded`` whose param is the field and whose message
    names the limit (``steps: 60 is over the limit max_steps=50``).
    """

    # The defaults are the settings' (farm.settings owns them); the app passes its own.
    max_seconds: float = setting_default("max_seconds")
    max_steps: int = setting_default("max_steps")
    max_side: int = setting_default("max_side")
    max_pixels: int = setting_default("max_pixels")
    max_prompt_bytes: int = setting_default("max_prompt_bytes")
    max_variants: int = setting_default("max_variants")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The request bounds `settings` set."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})

    def check(self, request: VideoRequest) -> None:
        """Raise a 422 RequestError naming the first field over its limit."""
        self.check_seconds("seconds", request.seconds)
        self.check_steps("steps", request.steps)
        self.check_size("size", request.width, request.height)
        self.check_prompt("prompt", request.prompt)
        self.check_prompt("negative_prompt", request.negative_prompt)

    def check_seconds(self, param: str, seconds: float) -> None:
        """Video length against max_seconds."""
        if seconds > self.max_seconds:
            raise over_limit(param, seconds, "max_seconds", self.max_seconds)

    def check_steps(self, param: str, steps: int) -> None:
        """Sampler steps against max_steps."""
        if steps > self.max_steps:
            raise over_limit(param, steps, "max_steps", self.max_steps)

    def check_size(self, param: str, width: int, height: int) -> None:
        """Frame size against max_side (per side) and max_pixels (width x height)."""
        if max(width, height) > self.max_side:
            raise over_limit(param, f"{width}x{height}", "max_side", f"{self.max_side} px")
        if width * height > self.max_pixels:
            raise over_limit(param, f"{width}x{height}", "max_pixels", self.max_pixels)

    def check_prompt(self, param: str, text: str) -> None:
        """Prompt length in UTF-8 bytes against max_prompt_bytes."""
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_prompt_bytes:
            raise over_limit(param, f"{size} bytes", "max_prompt_bytes", self.max_prompt_bytes)

    def check_variants(self, param: str, count: int) -> None:
        """Variants of one campaign against max_variants."""
        if count > self.max_variants:
            raise over_limit(param, f"{count:,} variants", "max_variants", self.max_variants)


def over_limit(param: str, value: Any, limit: str, bound: Any) -> RequestError:
    """The 422 for a value over a deployment limit; the message names the limit."""
    message = f"{param}: {value} is over the limit {limit}={bound}"
    return RequestError(422, "limit_exceeded", message, param)


class VideoError(BaseModel):
    """Why a video failed."""

    code: str
    message: str


class Video(BaseModel):
    """GET /v1/videos/{id}: a video's state."""

    id: str
    object: Literal["video"] = "video"
    status: VideoStatus
    progress: float = Field(ge=0, le=1, description="Steps done / total (decode counts as one).")
    model: str
    size: str
    seconds: float
    created_at: float
    completed_at: float | None = None
    error: VideoError | None = None


class _AppArgs(BaseModel):
    """Overrides of `Settings` given to `build_app`; only the fields set are applied."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _json_dicts(cls, v: Any, info: ValidationInfo) -> Any:
        # `serve run ... key=value` passes strings; dict settings take JSON there, as in
        # their FARM_* environment variables.
        field = Settings.model_fields[info.field_name or ""]
        if isinstance(v, str) and isinstance(field.get_default(call_default_factory=True), dict):
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise ValueError(f"{info.field_name} must be a JSON object") from None
        return v

    def settings(self) -> Settings:
        """The environment's settings (FARM_*, $FARM_SETTINGS_FILE) with these args on top."""
        return Settings(**{name: getattr(self, name) for name in self.model_fields_set})


# One optional field per setting, so a setting and its default live in Settings only.
FarmAppArgs = create_model(
    "FarmAppArgs",
    __base__=_AppArgs,
    __module__=__name__,
    __doc__="Arguments of `build_app` (Python, `serve run ... key=value`, a Serve config's "
    "`args`): any `Settings` fields, applied over the environment's settings.",
    **{
        name: (info.annotation | None, Field(None, description=info.description))
        for name, info in Settings.model_fields.items()
    },
)
