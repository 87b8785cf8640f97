"""The farm's configuration: one `Settings` object read from the environment and a YAML file.

Every knob of the farm and its one default live here; the Serve app (`farm.serve.app`), its
request limits and the CLI read them from a `Settings`, never from a copy.

Sources, highest priority first:

1. keyword arguments (``Settings(renderer_max_replicas=4)``, ``Settings.from_yaml(p, **kw)``;
   the args of ``serve run farm.serve.app:build_app key=value`` or a Serve config's ``args``);
2. environment variables ``FARM_<FIELD>``, e.g. ``FARM_RENDERER_MAX_REPLICAS=5``. Dict fields
   take JSON (``FARM_STORAGE_OPTIONS='{"anon": true}'``) or one key per variable with the
   nested delimiter ``__`` (``FARM_STORAGE_OPTIONS__ENDPOINT_URL=http://minio:9000``; keys
   are lower-cased because environment names are case-insensitive, and values stay strings);
3. a YAML mapping of field names to values: the file given to `Settings.from_yaml`, else
   the file named by ``$FARM_SETTINGS_FILE``; a missing file is an error, an empty one is {};
4. the defaults below.

Dict fields (``storage_options``, ``tokens``) are merged key by key across these sources, the
higher-priority source winning per key.

Unknown keys are refused (a typo in the YAML file names the bad key), and every invalid value
is reported with the field's name. `get_settings` returns one cached instance for the
process; `reset_settings` drops it (tests, or after changing the environment).

Auth: ``tokens`` maps the sha256 hex of a bearer token (`hash_token`) to a tenant name, so
the settings never hold a usable token. With no tokens the API serves nobody unless
``allow_anonymous`` is true (the local demo sets it); anonymous requests are tenant
``default``. Tenant names become storage path segments, so they are restricted to letters,
digits, ``_`` and ``-``. ``prompt_policy`` maps a tenant (or ``"*"``, every tenant) to a
`farm.policy.PromptPolicy` of blocked terms and patterns.

Quotas: ``quotas`` maps a tenant (or ``"*"``, every tenant) to a `Quota`: how many videos
and campaigns a tenant may have running, how many campaign variants queued, and how many
GPU-seconds it may spend per UTC day. Fields merge per field: a tenant's own entry over
``"*"`` over the `Quota` defaults (`quota_for`). The API answers a request over a quota
with 429 ``quota_exceeded`` naming the limit (`farm.serve.quotas`).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from farm.policy import ALL_TENANTS, PromptPolicy

__all__ = [
    "ENV_PREFIX",
    "SETTINGS_FILE_ENV",
    "TENANT_NAME",
    "Quota",
    "Settings",
    "SettingsFileError",
    "get_settings",
    "hash_token",
    "quota_for",
    "reset_settings",
    "setting_default",
]

ENV_PREFIX = "FARM_"
SETTINGS_FILE_ENV = "FARM_SETTINGS_FILE"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # also a storage path segment

# The file `Settings.from_yaml` is loading, seen by `settings_customise_sources` (a context
# variable, so concurrent loads in threads or tasks don't see each other's file).
_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "farm_settings_yaml_file", default=None
)


class SettingsFileError(ValueError):
    """The settings YAML file is missing, unreadable or not a mapping of field names."""


def hash_token(token: str) -> str:
    """The sha256 hex digest of a bearer token: the key to use in `Settings.tokens`."""
    if not isinstance(token, str) or not token:
        raise ValueError("token must be a non-empty string")
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsFileError(f"settings file {str(path)!r} does not exist") from None
    except OSError as e:
        raise SettingsFileError(f"settings file {str(path)!r} cannot be read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SettingsFileError(f"settings file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsFileError(
            f"settings file {str(path)!r} must hold a mapping of setting names to values, "
            f"got {type(data).__name__}"
        )
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise SettingsFileError(f"settings file {str(path)!r}: keys must be strings, got {bad!r}")
    return data


def _check_tenant(name: str) -> None:
    if not TENANT_NAME.fullmatch(name):
        raise ValueError(
            f"tenant name {name[:70]!r} must be 1-64 letters, digits, _ or -, starting with "
            "a letter or digit"
        )


class Quota(BaseModel):
    """What one tenant may hold at once and spend per day; None is unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_videos: int | None = Field(
        8, ge=0, description="Videos (POST /v1/videos) a tenant may have queued or rendering."
    )
    max_concurrent_campaigns: int | None = Field(
        2, ge=0, description="Campaigns a tenant may have running (a live job, work left)."
    )
    max_queued_variants: int | None = Field(
        10_000,
        ge=0,
        description="Variants a tenant may have waiting across its running campaigns, "
        "counting the campaign being submitted.",
    )
    gpu_seconds_per_day: float | None = Field(
        None,
        gt=0,
        description="Render seconds a tenant may spend per UTC day: its campaign variants' "
        "gpu_seconds plus its videos' render time (None: unlimited).",
    )


def quota_for(quotas: dict[str, Quota], tenant: str) -> Quota:
    """`tenant`'s quota: its own entry's fields over ``"*"``'s over the defaults."""
    fields: dict[str, Any] = {}
    for key in (ALL_TENANTS, tenant):
        entry = quotas.get(key)
        if entry is not None:
            fields |= {name: getattr(entry, name) for name in entry.model_fields_set}
    return Quota(**fields)


def _d(text: str) -> Any:
    return Field(description=text)


class Settings(BaseSettings):
    """Everything the farm reads from its environment; see the module docstring for sources."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # ---- storage and model --------------------------------------------------------------
    storage_root: str = Field(
        "farm-data",
        min_length=1,
        description="Root of the farm's storage (manifests, outputs): a local path or any "
        "fsspec URL such as s3://bucket/prefix.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for storage_root (e.g. endpoint_url, anon).",
    )
    model: str = Field(
        "small",
        min_length=1,
        description="Model to render with: a preset name (e.g. small), a checkpoint URL, or "
        "an open checkpoint as 'diffusers:<local dir or fsspec URL>' (Wan, LTX-Video, "
        "CogVideoX).",
    )
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weights' dtype. auto: the loader's choice (a diffusers checkpoint: "
        "bfloat16 on CUDA, float32 on CPU; the bundled models: float32).",
    )
    text_encoder_device: str = Field(
        "",
        description="Where a diffusers checkpoint's text encoder runs: '' beside the model, "
        "or 'cpu' to keep a large one (UMT5-XXL, about 11 GB) off the GPU.",
    )
    attention: Literal["sdpa", "flash", "xformers"] = Field(
        "sdpa",
        description="Attention of a diffusers checkpoint: torch SDPA, or flash / xformers "
        "(CUDA only).",
    )
    model_cache: str = Field(
        "",
        description="Local directory where a diffusers checkpoint on fsspec storage (s3://...) "
        "is copied once and checked ('': model.diffusers.cache's default, ~/.cache/farm/models).",
    )

    # ---- renderer pool (Ray Serve deployment on the GPU workers) ----------------------------
    renderer_num_gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs per renderer replica; fractions share a GPU, above 1 must be whole.",
    )
    renderer_num_cpus: float = Field(1.0, ge=0, description="CPUs per renderer replica.")
    renderer_threads: int | None = Field(
        None, ge=1, description="torch threads per renderer replica (None: torch's default)."
    )
    renderer_min_replicas: int = Field(
        1, ge=0, description="Fewest renderer replicas; 0 lets the pool scale to zero when idle."
    )
    renderer_max_replicas: int = Field(2, ge=1, description="Most renderer replicas.")
    renderer_initial_replicas: int | None = Field(
        None, ge=0, description="Renderer replicas at start (None: renderer_min_replicas)."
    )
    renderer_target_ongoing_requests: float = Field(
        4.0, gt=0, description="Autoscaling target: ongoing requests per renderer replica."
    )
    renderer_max_ongoing_requests: int = Field(
        32,
        ge=1,
        description="Most requests one renderer replica holds at once (raised to "
        "renderer_batch_videos if lower: a batch of N videos is N requests).",
    )
    renderer_upscale_delay_s: float = Field(
        5.0, ge=0, description="Seconds of sustained load before the pool scales up."
    )
    renderer_downscale_delay_s: float = Field(
        60.0, ge=0, description="Seconds of sustained low load before the pool scales down."
    )
    renderer_max_batch: int = Field(
        8, ge=1, description="Most window-steps (rows) a renderer replica runs as one forward."
    )
    renderer_batch_videos: int = Field(
        8, ge=1, description="Most videos' requests a renderer replica merges into one batch."
    )
    renderer_batch_wait_s: float = Field(
        0.01, ge=0, description="Longest a renderer replica waits to fill a batch, in seconds."
    )
    renderer_interactive_threads: int = Field(
        1,
        ge=0,
        description="Model threads a renderer replica keeps for interactive requests, beside "
        "the one campaign work uses (0: one thread shared by priority).",
    )
    interactive_headroom: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of a renderer replica campaign work leaves to interactive "
        "/v1/videos requests: campaign batches hold at most (1 - headroom) x "
        "renderer_batch_videos videos and campaign forwards at most (1 - headroom) x "
        "renderer_max_batch rows (0 <= headroom < 1).",
    )

    # ---- director, api and the Serve app ----------------------------------------------------
    director_num_cpus: float = Field(1.0, ge=0, description="CPUs per director replica.")
    director_max_videos: int = Field(
        8, ge=1, description="Videos one director replica renders concurrently."
    )
    max_resends: int = Field(
        8, ge=0, description="Times the director resends a call whose renderer replica died."
    )
    api_num_cpus: float = Field(0.0, ge=0, description="CPUs per API (ingress) replica.")
    jobs_address: str = Field(
        "http://127.0.0.1:8265",
        min_length=1,
        description="Ray Jobs API where the API submits campaigns as Ray Jobs.",
    )
    jobs_python: str = Field(
        "",
        description="Interpreter command that `farm campaign submit/resume` jobs run on the "
        "Ray cluster (split like a shell line); empty: the CLI's own interpreter, right for a "
        "Ray on this machine from this venv (farm serve, farm demo, ray start --head).",
    )
    app_name: str = Field(
        "farm",
        min_length=1,
        description="Name of the Serve app whose renderer pool campaign jobs render on "
        "(the name the app is deployed under).",
    )

    # ---- engine defaults --------------------------------------------------------------------
    window: int = Field(16, ge=1, description="Latent frames per denoising window.")
    overlap: int = Field(4, ge=0, description="Latent frames shared by neighbouring windows.")
    decode_chunk: int = Field(16, ge=1, description="Latent frames decoded by the VAE at once.")

    # ---- request limits ---------------------------------------------------------------------
    max_seconds: float = Field(60.0, gt=0, description="Longest video a request may ask for.")
    max_side: int = Field(
        1280, ge=16, description="Longest frame side (width or height) a request may ask for."
    )
    max_pixels: int = Field(
        832 * 480, ge=1, description="Largest frame (width x height) a request may ask for."
    )
    max_steps: int = Field(100, ge=1, description="Most sampler steps a request may ask for.")
    max_variants: int = Field(
        100_000, ge=1, description="Most variants one campaign may expand to."
    )
    max_prompt_bytes: int = Field(2000, ge=1, description="Longest prompt, in UTF-8 bytes.")
    max_body_bytes: int = Field(
        1_000_000, ge=1, description="Largest HTTP request body the API accepts, in bytes."
    )

    # ---- auth -------------------------------------------------------------------------------
    tokens: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 hex of a bearer token (see hash_token) -> tenant name. "
        "Empty: nobody is authenticated, so requests are served only if allow_anonymous.",
    )
    allow_anonymous: bool = Field(
        False, description="Serve requests without a bearer token (local demo only)."
    )
    prompt_policy: dict[str, PromptPolicy] = Field(
        default_factory=dict,
        description="Tenant name (or '*' for every tenant) -> blocked_terms and "
        "blocked_patterns its prompts may not contain (see farm.policy).",
    )
    quotas: dict[str, Quota] = Field(
        default_factory=dict,
        description="Tenant name (or '*' for every tenant) -> its Quota: "
        "max_concurrent_videos, max_concurrent_campaigns, max_queued_variants, "
        "gpu_seconds_per_day (None: unlimited). Fields merge per field: tenant over '*' "
        "over the defaults (8, 2, 10000, unlimited).",
    )

    def model_load(self) -> dict[str, Any]:
        """`ModelWorker`'s load options, as plain values (they travel to actors); the
        worker keeps those its model takes (`farm.render.worker.load_options`)."""
        return {
            "dtype": self.model_dtype,
            "attention": self.attention,
            "text_device": self.text_encoder_device or None,
            "cache_dir": self.model_cache or None,
        }

    # ---- validators -------------------------------------------------------------------------
    @field_validator("storage_root", "model", "jobs_address", "app_name")
    @classmethod
    def _not_blank(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        if not v:
            raise ValueError(f"{info.field_name} must not be blank")
        return v

    @field_validator("renderer_num_gpus")
    @classmethod
    def _whole_gpus_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(
                f"renderer_num_gpus above 1 must be a whole number of GPUs (got {v}); "
                "fractions (0 < n < 1) share one GPU"
            )
        return v

    @field_validator("tokens")
    @classmethod
    def _token_hashes(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for digest, tenant in v.items():
            key = digest.strip().lower()
            if not _SHA256_HEX.fullmatch(key):
                shown = digest if len(digest) <= 12 else digest[:8] + "…"
                raise ValueError(
                    f"key {shown!r} is not a sha256 hex digest (64 hex characters); store "
                    "hash_token(token), never the token itself"
                )
            if not tenant.strip():
                raise ValueError(f"tenant name for token hash {key[:8]}… must not be blank")
            _check_tenant(tenant.strip())
            if key in out:
                raise ValueError(f"token hash {key[:8]}… is listed twice")
            out[key] = tenant.strip()
        return out

    @field_validator("prompt_policy", "quotas")
    @classmethod
    def _per_tenant_keys(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for tenant in v:
            if tenant != ALL_TENANTS:
                try:
                    _check_tenant(tenant)
                except ValueError as e:
                    raise ValueError(f"{info.field_name}: {e} (or '*' for every tenant)") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.renderer_min_replicas > self.renderer_max_replicas:
            raise ValueError(
                f"renderer_min_replicas ({self.renderer_min_replicas}) must be <= "
                f"renderer_max_replicas ({self.renderer_max_replicas})"
            )
        initial = self.renderer_initial_replicas
        if initial is not None and not (
            self.renderer_min_replicas <= initial <= self.renderer_max_replicas
        ):
            raise ValueError(
                f"renderer_initial_replicas ({initial}) must be between renderer_min_replicas "
                f"({self.renderer_min_replicas}) and renderer_max_replicas "
                f"({self.renderer_max_replicas})"
            )
        if self.overlap >= self.window:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than window ({self.window})"
            )
        return self

    # ---- sources ----------------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _yaml_file.get()
        if path is None and os.environ.get(SETTINGS_FILE_ENV):
            path = Path(os.environ[SETTINGS_FILE_ENV])
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=_load_yaml(path)))
        return tuple(sources)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Settings:
        """Settings from a YAML file (instead of ``$FARM_SETTINGS_FILE``).

        Environment variables and `overrides` still take precedence over the file.
        """
        token = _yaml_file.set(Path(path))
        try:
            return cls(**overrides)
        finally:
            _yaml_file.reset(token)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment (and ``$FARM_SETTINGS_FILE``)."""
    return Settings()


def setting_default(name: str) -> Any:
    """The default of the setting `name`, for a signature or model that takes it too."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


def reset_settings() -> None:
    """Forget the cached settings; the next `get_settings` reads the environment again."""
    get_settings.cache_clear()
