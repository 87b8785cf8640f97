"""`farm render`'s request and its defaults, light enough for the CLI to read at start-up."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from farm.settings import setting_default


@dataclass(frozen=True)
class RenderRequest:
    """`farm render`'s request: prompt, look, length and model, outside any campaign.

    Its defaults are `farm render`'s (the CLI shows and uses these): a short clip in few
    steps, quick on a CPU. The HTTP API's are `VideoRequest`'s, a campaign's its spec's.
    """

    prompt: str
    negative_prompt: str = ""
    seconds: float = 1.0
    fps: int = 24
    width: int = 256
    height: int = 144
    steps: int = 12
    guidance: float = 4.0
    seed: int = 0
    preset: str = setting_default("model")

    def video_id(self) -> str:
        """Content hash of the request: the same request names the same file."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]
