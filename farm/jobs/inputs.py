"""A campaign as it enters the farm: parsed once where it arrives, then passed typed.

A campaign arrives as a spec (YAML/JSON: a file, an HTTP body, a dict) or as a copy feed
(CSV/Parquet rows, each a fully specified variant). Where it arrives it becomes a
`Campaign`: the spec (or the feed's campaign defaults) and its expanded variants. Everything
after that (`prepare_campaign`, `submit_campaign`, `farm demo`) takes the `Campaign` and
never parses or expands it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from farm.campaign.spec import CampaignDefaults, CampaignSpec, SpecError

FEED_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class Campaign:
    """A validated campaign and its variants (farm.campaign.tables.VARIANTS)."""

    campaign_id: str
    settings: CampaignSpec | CampaignDefaults  # a spec, or a feed's campaign defaults
    variants: pa.Table

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def spec(self) -> CampaignSpec | None:
        """The spec, or None for a campaign that came as a feed."""
        return self.settings if isinstance(self.settings, CampaignSpec) else None

    def record(self) -> dict[str, Any]:
        """What the manifest keeps as the campaign's spec.json."""
        return self.settings.model_dump(mode="json")

    @classmethod
    def of_spec(cls, spec: CampaignSpec) -> Campaign:
        """The campaign of a validated spec, expanded into its variants."""
        from farm.campaign.expand import campaign_id, expand

        return cls(campaign_id(spec), spec, expand(spec))

    @classmethod
    def of_feed(
        cls, feed: pa.Table, defaults: CampaignDefaults | dict[str, Any] | None = None
    ) -> Campaign:
        """The campaign of a validated feed (`farm.campaign.feed.load_feed`) and its defaults."""
        from farm.campaign.expand import expand_feed

        if not isinstance(defaults, CampaignDefaults):
            defaults = CampaignDefaults.model_validate(defaults or {})
        variants = expand_feed(feed, defaults)
        if not variants.num_rows:
            raise SpecError([("feed", "has no rows")])
        return cls(variants["campaign_id"][0].as_py(), defaults, variants)


def load_campaign(path: str | Path) -> Campaign:
    """A campaign from a feed (.csv/.parquet) or a spec file (.json, else YAML).

    SpecError names the bad field (or feed row and column); OSError if it cannot be read.
    Image paths in it are relative to its directory.
    """
    from farm.campaign.feed import load_feed
    from farm.campaign.images import ImageAccess
    from farm.campaign.spec import load_spec

    path = Path(path)
    suffix = path.suffix.lower()
    data = path.read_bytes()
    images = ImageAccess(base=str(path.resolve().parent))
    if suffix in FEED_SUFFIXES:
        return Campaign.of_feed(load_feed(data, suffix[1:], images=images))
    fmt = "json" if suffix == ".json" else "yaml"
    return Campaign.of_spec(load_spec(data, fmt=fmt, images=images))
