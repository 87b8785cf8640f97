"""Wire and configuration models of the Serve app: HTTP request/response bodies, app args.

Nothing here imports Ray, so the API surface can be validated and documented without it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.render_local import frames_for, parse_size

PIXEL_MULTIPLE = 16  # VAE stride x patch size of the farm's presets
VideoStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled"]


class RequestError(Exception):
    """A request the API refuses: HTTP status, machine code, message naming the field."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def body(self) -> dict[str, Any]:
        """The JSON error body: {code, message, param?}."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param:
            out["param"] = self.param
        return out


class CreateVideoRequest(BaseModel):
    """POST /v1/videos: what to render."""

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

    def video_id(self, model: str, engine: dict[str, Any]) -> str:
        """Content hash of the request, the model and the engine layout: same input, same id."""
        key = {"request": self.model_dump(), "model": model, "engine": engine}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


class Limits(BaseModel):
    """Deployment-wide bounds on requests (tighter than the schema's own)."""

    max_seconds: float = 20.0
    max_steps: int = 50
    max_side: int = 1280

    def check(self, request: CreateVideoRequest) -> None:
        """Raise a 422 RequestError naming the first field over its limit."""
        if request.seconds > self.max_seconds:
            raise _too_big("seconds", request.seconds, self.max_seconds)
        if request.steps > self.max_steps:
            raise _too_big("steps", request.steps, self.max_steps)
        if max(request.width, request.height) > self.max_side:
            raise _too_big("size", request.size, f"{self.max_side} px per side")


def _too_big(param: str, value: Any, limit: Any) -> RequestError:
    message = f"{param}: {value} is over the limit {limit}"
    return RequestError(422, "invalid_request", message, param)


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
    renderer_batch_videos: int = Field(8, ge=1, description="Videos' requests per batch.")
    renderer_batch_wait_s: float = Field(0.02, ge=0, description="Wait for a batch to fill.")
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
    tokens: dict[str, str] = Field(
        default_factory=dict, description="sha256 hex of a bearer token -> tenant name."
    )
    allow_anonymous: bool = Field(
        False, description="Serve requests without a token as tenant 'default' (local demo)."
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
            max_seconds=self.max_seconds, max_steps=self.max_steps, max_side=self.max_side
        )

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
