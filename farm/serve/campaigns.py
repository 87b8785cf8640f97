"""What the Api's /v1/campaigns endpoints do, as plain blocking functions.

Submitting parses the body as YAML or JSON (`farm.spec.load_spec`), creates the manifest
and submits the campaign job through Ray's Jobs API (`farm.jobs.submit_campaign`); reads
come straight from the manifest on storage. Errors are `RequestError`s: 4xx naming the
field, 404 for an unknown campaign, 503 when the Jobs API cannot be reached.
"""

from __future__ import annotations

import re
import shlex
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from farm.jobs import CampaignError, cancel_campaign, list_campaigns, submit_campaign
from farm.manifest import Manifest, ManifestNotFound
from farm.serve.schemas import RequestError
from farm.spec import SpecError, load_spec

CAMPAIGN_ID = re.compile(r"^[0-9a-f]{16}$")


def _not_found(cid: str) -> RequestError:
    return RequestError(404, "not_found", f"no campaign with id {cid!r}", "campaign_id")


def _open(root: str, cid: str) -> Manifest:
    if not CAMPAIGN_ID.match(cid):
        raise _not_found(cid)
    try:
        return Manifest.open(root, cid)
    except ManifestNotFound:
        raise _not_found(cid) from None


def submit(body: bytes, content_type: str, *, root: str, jobs_address: str, app: str) -> dict:
    """Validate a spec (JSON or YAML body) and submit its job: {id, job_id}."""
    fmt = "json" if "json" in content_type else "yaml"
    try:
        spec = load_spec(body, fmt=fmt)
    except SpecError as e:
        path, _ = e.errors[0] if e.errors else ("body", "")
        raise RequestError(422, "invalid_campaign", str(e), path) from None
    try:
        cid, sid = submit_campaign(
            spec,
            address=jobs_address,
            root=root,
            serve_app=app,
            python=shlex.quote(sys.executable),  # replicas run the farm's own environment
        )
    except CampaignError as e:
        raise RequestError(409, "conflict", str(e)) from None
    except (ConnectionError, OSError, RuntimeError) as e:
        raise RequestError(503, "jobs_unavailable", f"Ray Jobs API: {e}") from None
    return {"id": cid, "job_id": sid}


def progress(root: str, cid: str) -> dict[str, Any]:
    """Counts by status and by status × locale × format, throughput and ETA."""
    p = _open(root, cid).progress()
    return {
        "id": cid,
        "total": p.total,
        "by_status": p.by_status,
        "groups": p.by_group.to_pylist(),
        "completed_gpu_s": p.completed_gpu_s,
        "throughput_per_s": p.throughput,
        "eta_s": p.eta_s,
    }


def listing(root: str) -> list[dict[str, Any]]:
    """Every campaign under the storage root with its counts."""
    return list_campaigns(root)


def cancel(root: str, cid: str, jobs_address: str) -> dict[str, str]:
    """Ask the campaign's job to stop; the rest of its variants end `cancelled`."""
    _open(root, cid)
    return {"id": cid, "message": cancel_campaign(root, cid, jobs_address)}


def manifest_parquet(root: str, cid: str) -> bytes:
    """The latest state of every variant as one Parquet file (pandas, DuckDB read it)."""
    sink = pa.BufferOutputStream()
    pq.write_table(_open(root, cid).status(), sink)
    return sink.getvalue().to_pybytes()
