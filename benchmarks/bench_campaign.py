"""Campaign expansion + manifest write at 10k / 100k / 1M variants (issue target at 100k: ≤ 2 s).

python -m benchmarks.bench_campaign
"""

from __future__ import annotations

import tempfile
import time

from benchmarks.common import report, table
from farm.campaign.manifest import Manifest
from farm.campaign.spec import load_spec
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import Campaign

LANGS = ["en", "es", "fr", "de", "pt"]
REGIONS = ["US", "GB", "MX", "ES", "FR", "DE", "BR", "CA", "AU", "IN"]
SIZES = [
    ("a", "9:16", 144, 256),
    ("b", "16:9", 256, 144),
    ("c", "1:1", 256, 256),
    ("d", "4:5", 256, 320),
]


def spec(seeds: int):
    """10 products x 50 locales x 4 formats x 5 durations x `seeds` = 10k per seed."""
    copy = {
        "language": "x",
        "headline": "Headline",
        "cta": "Buy",
        "prompt": "A cinematic shot of {product}, {description}, by {brand}: {headline}.",
    }
    return load_spec(
        {
            "name": f"bench-{seeds}",
            "brand": "Acme",
            "products": [
                {"id": f"p{i}", "name": f"Product {i}", "description": "a thing"} for i in range(10)
            ],
            "locales": {
                f"{lang}-{r}": copy | {"headline": f"{lang} {r}"} for lang in LANGS for r in REGIONS
            },
            "formats": [{"name": n, "aspect": a, "width": w, "height": h} for n, a, w, h in SIZES],
            "durations": [1, 2, 5, 10, 15],
            "seeds": seeds,
        }
    )


def main() -> None:
    rows, data = [], []
    for seeds in (1, 10, 100):
        s = spec(seeds)
        start = time.perf_counter()
        campaign = Campaign.of_spec(s)
        expanded = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            prepare_campaign(campaign, tmp)
            written = time.perf_counter()
            progress = Manifest.open(tmp, campaign.campaign_id).progress()
            assert progress.total == campaign.variants.num_rows
        n = campaign.variants.num_rows
        rows.append(
            [
                f"{n:,}",
                f"{expanded - start:.2f}",
                f"{written - expanded:.2f}",
                f"{written - start:.2f}",
                "≤ 2 s" if n == 100_000 else "",
            ]
        )
        data.append({"variants": n, "expand_s": expanded - start, "write_s": written - expanded})
    text = "### Expand a spec and write its manifest (local disk)\n\n" + table(
        ["variants", "expand s", "write s", "expand + write s", "target"], rows
    )
    report("campaign", text, data)


if __name__ == "__main__":
    main()
