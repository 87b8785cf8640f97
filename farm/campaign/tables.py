"""Arrow schemas shared by campaign expansion, the manifest and the campaign job.

`VARIANTS` is the schema of `campaigns/{id}/variants.parquet` (one row per variant,
immutable once written). `EVENTS` is the schema of every event part
`campaigns/{id}/events/{seq:012d}.parquet` and of snapshots. Parts are plain Parquet, so
pandas, DuckDB and Ray Data read them directly.
"""

from __future__ import annotations

import pyarrow as pa

STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
TERMINAL = ("completed", "cancelled")  # never re-dispatched
FAILURE_CODES = (
    "invalid_input",
    "policy_violation",
    "model_error",
    "oom",
    "storage_error",
    "timeout",
    "cancelled",
)

VARIANTS = pa.schema(
    [
        ("variant_id", pa.string()),  # content hash: same content, same id
        ("campaign_id", pa.string()),
        ("product_id", pa.string()),
        ("product_name", pa.string()),
        ("locale", pa.string()),  # BCP-47, e.g. "ar-SA"
        ("format", pa.string()),  # format name, e.g. "tiktok"
        ("aspect", pa.string()),  # "9:16"
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("duration_s", pa.float32()),
        ("fps", pa.int32()),
        ("frames", pa.int32()),  # a count the model's frame rule allows
        ("seed", pa.int64()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("headline", pa.string()),
        ("cta", pa.string()),
        ("preset", pa.string()),
        ("steps", pa.int32()),
        ("guidance", pa.float32()),
        ("priority", pa.int32()),
        ("work", pa.float64()),  # latent tokens x forwards (farm.campaign.cost prices it)
        # The product's packshot and the brand's logo (resolved URLs, checked when the spec
        # or feed was loaded; null: none) and the end card (farm.output.endcard): its
        # seconds (0: none, as for every variant without an image) and #rrggbb background.
        ("reference_image", pa.string()),
        ("logo", pa.string()),
        ("end_card_s", pa.float32()),
        ("end_card_background", pa.string()),
    ]
)

# Columns a variants table may lack (one written before they existed): null there, which
# means no image and no end card.
VARIANTS_OPTIONAL = ("reference_image", "logo", "end_card_s", "end_card_background")

EVENTS = pa.schema(
    [
        ("variant_id", pa.string()),
        ("status", pa.string()),  # one of STATUSES
        ("attempt", pa.int32()),  # 1 for the first try
        ("epoch", pa.int64()),  # writer epoch that committed the event
        ("ts", pa.timestamp("us", tz="UTC")),
        ("error_code", pa.string()),  # one of FAILURE_CODES, or null
        ("error_message", pa.string()),
        ("output_url", pa.string()),  # the MP4, for completed
        ("sha256", pa.string()),  # of the MP4, for completed
        ("gpu_seconds", pa.float32()),
        ("worker", pa.string()),
    ]
)
