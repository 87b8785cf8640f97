"""Wire and configuration models of the Serve app: HTTP request/response bodies, app args.

Nothing here imports Ray, so the API surface can be validated and documented without it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.output.local import frames_for, parse_size
from farm.policy import PromptPolicy

PIXEL_MULTIPLE = 16  # VAE stride x patch size of the farm's presets
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


class VideoRequest(BaseModel):
    """POST /v1/videos: what to render (the HTTP body)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    prompt: str = Field(min_length=1, max_length=4000, description="What the video shows.")
    negative_prompt: str = Field("", max_length=4000, description="What guidance avoids.")
    seconds: float = Field(4.0, gt=0, le=120, description="Length in seconds.")
    size: str = Field("256x144", description="WIDTHxHEIGHT, each a multiple of 16.")
    fps: int = Field(24, ge=1, le=60, description="Frames per second.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Noise seed.")
    steps: int = Field(20, ge=1, le=200, description="Denoising steps.")
    guidance: float = Field(4.0, ge=1, le=30, description="Classifier-free guidance (1 = off).")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        width, height = parse_size(value)
        for name, side in (("width", width), ("height", height)):
            if side < PIXEL_MULTIPLE or side % PIXEL_MULTIPLE:
                raise ValueError(
                    f"{name} {side} must be a positive multiple of {PIXEL_MULTIPLE} (got {value!r})"
                )
        return f"{width}x{height}"

    @property
    def width(self) -> int:
        return parse_size(self.size)[0]

    @property
    def height(self) -> int:
        return parse_size(self.size)[1]

    @property
    def frames(self) -> int:
        return frames_for(self.seconds, self.fps)


class CreateVideoRequest(VideoRequest):
    """What the Director renders: the HTTP body plus the tenant that asked (set by the Api)."""

    tenant: str = Field(ANONYMOUS_TENANT, min_length=1, description="Who asked for it.")

    def video_id(self, model: str, engine: dict[str, Any]) -> str:
        """Content hash of the request (tenant included), the model and the engine layout.

        Same input, same id; the first hex digits are the tenant's tag (`tenant_tag`), so
        the Api tells a tenant's own ids from others' without asking anyone.
        """
        key = {"request": self.model_dump(), "model": model, "engine": engine}
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

    max_seconds: float = 20.0
    max_steps: int = 50
    max_side: int = 1280
    max_pixels: int = 832 * 480
    max_prompt_bytes: int = 2000
    max_variants: int = 100_000

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


class FarmAppArgs(BaseModel):
    """Arguments of `build_app`: from Python, `serve run ... key=value` or a Serve YAML `args`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("tiny", description="Model preset, local dir or fsspec URL.")
    storage_root: str = Field("farm-data", description="Where videos/{id}.mp4|jpg|json go.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options.")
    renderer_min_replicas: int = Field(1, ge=0, description="0 lets the pool scale to zero.")
    renderer_max_replicas: int = Field(1, ge=1)
    renderer_initial_replicas: int | None = Field(None, ge=0)
    renderer_target_ongoing_requests: float = Field(4.0, gt=0)
    renderer_upscale_delay_s: float = Field(2.0, ge=0)
    renderer_downscale_delay_s: float = Field(300.0, ge=0)
    renderer_num_gpus: float = Field(0.0, ge=0)
    renderer_num_cpus: float = Field(1.0, ge=0)
    renderer_threads: int | None = Field(None, ge=1, description="torch threads per replica.")
    renderer_max_batch: int = Field(8, ge=1, description="Rows per model forward.")
    renderer_interactive_threads: int = Field(
        1,
        ge=0,
        description="Model threads a Renderer replica keeps for interactive requests, beside "
        "the one campaign work uses (0: one thread shared by priority).",
    )
    renderer_batch_videos: int = Field(8, ge=1, description="Videos' requests per batch.")
    renderer_batch_wait_s: float = Field(0.02, ge=0, description="Wait for a batch to fill.")
    interactive_headroom: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of the Renderer campaign work leaves to interactive requests: "
        "campaign batches hold at most (1 - headroom) x renderer_batch_videos videos and "
        "campaign forwards at most (1 - headroom) x renderer_max_batch rows.",
    )
    renderer_max_ongoing_requests: int = Field(32, ge=1)
    director_num_cpus: float = Field(1.0, ge=0)
    director_max_videos: int = Field(8, ge=1, description="Videos rendering at once.")
    api_num_cpus: float = Field(0.0, ge=0)
    engine_window: int = Field(16, ge=1)
    engine_overlap: int = Field(4, ge=0)
    engine_decode_chunk: int = Field(16, ge=1)
    max_resends: int = Field(8, ge=0, description="Resends of a call whose replica died.")
    jobs_address: str = Field(
        "http://127.0.0.1:8265", description="Ray Jobs API where campaigns are submitted."
    )
    app_name: str = Field("farm", description="Serve app name campaign jobs render on.")
    max_seconds: float = Field(20.0, gt=0)
    max_steps: int = Field(50, ge=1)
    max_side: int = Field(1280, ge=16)
    max_pixels: int = Field(832 * 480, ge=256, description="Largest width x height.")
    max_prompt_bytes: int = Field(2000, ge=1, description="Longest prompt, UTF-8 bytes.")
    max_variants: int = Field(100_000, ge=1, description="Most variants per campaign.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest HTTP request body.")
    tokens: dict[str, str] = Field(
        default_factory=dict, description="sha256 hex of a bearer token -> tenant name."
    )
    allow_anonymous: bool = Field(
        False, description="Serve requests without a token as tenant 'default' (local demo)."
    )
    prompt_policy: dict[str, PromptPolicy] = Field(
        default_factory=dict, description="Tenant (or '*') -> blocked terms and patterns."
    )

    @model_validator(mode="after")
    def _check(self) -> FarmAppArgs:
        if self.renderer_min_replicas > self.renderer_max_replicas:
            raise ValueError("renderer_min_replicas must be <= renderer_max_replicas")
        if self.engine_overlap >= self.engine_window:
            raise ValueError("engine_overlap must be smaller than engine_window")
        return self

    def engine(self) -> dict[str, int]:
        """VideoJob fields the app fixes for every video."""
        return {
            "window": self.engine_window,
            "overlap": self.engine_overlap,
            "decode_chunk": self.engine_decode_chunk,
        }

    def limits(self) -> Limits:
        """The request bounds of this deployment."""
        return Limits(
            max_seconds=self.max_seconds,
            max_steps=self.max_steps,
            max_side=self.max_side,
            max_pixels=self.max_pixels,
            max_prompt_bytes=self.max_prompt_bytes,
            max_variants=self.max_variants,
        )

    @property
    def bulk_batch_videos(self) -> int:
        """Most campaign videos' requests in one Renderer batch (the headroom left free)."""
        return max(1, int(self.renderer_batch_videos * (1 - self.interactive_headroom)))

    @property
    def bulk_forward_rows(self) -> int:
        """Rows of one campaign forward: the most a user's step waits behind."""
        return max(1, int(self.renderer_max_batch * (1 - self.interactive_headroom)))

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> FarmAppArgs:
        """The app's args from the farm's Settings (`FARM_*` env or YAML), then overrides."""
        shared = {k: getattr(settings, k) for k in cls.model_fields if hasattr(settings, k)}
        engine = {
            "engine_window": settings.window,
            "engine_overlap": settings.overlap,
            "engine_decode_chunk": settings.decode_chunk,
        }
        return cls.model_validate(shared | engine | overrides)
