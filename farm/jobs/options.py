"""How a campaign job renders: the one home of every campaign-job default.

The CLI (`farm campaign submit|resume`, `farm demo`), the Api's campaign submit, the job
entrypoint (`jobs.render_campaign`) and the in-job loop (`farm.jobs.loop`) all take a
`JobOptions`; none of them keeps a default of its own.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class JobOptions(BaseModel):
    """Concurrency, retries and where a campaign job's variants render."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(2, ge=1, description="Variants the job renders at once.")
    max_attempts: int = Field(3, ge=1, description="Tries per variant before it stays failed.")
    backoff_s: float = Field(1.0, ge=0, description="Delay before the first retry; doubles.")
    max_backoff_s: float = Field(60.0, ge=0, description="Longest delay between retries.")
    actors: int = Field(2, ge=1, description="Model actors in the job's own pool.")
    preset: str | None = Field(None, description="Model preset (default: the campaign's).")
    serve_app: str | None = Field(
        None, description="Render on this running Serve app's Renderer instead of actors."
    )

    @classmethod
    def given(cls, **options: object) -> JobOptions:
        """Options from those given (None or "" means: the default)."""
        return cls(**{k: v for k, v in options.items() if v is not None and v != ""})

    def argv(self) -> list[str]:
        """The job entrypoint's flags for these options (`jobs.render_campaign`)."""
        args = []
        for name, value in self.model_dump(exclude_none=True).items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        return args
