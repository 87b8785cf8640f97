"""What the Api's /v1/campaigns endpoints do, as plain blocking functions.

Submitting parses the body as YAML or JSON (`farm.campaign.spec.load_spec`) once, holds
the spec to the deployment's limits and the tenant's prompt policy, and hands the typed,
expanded campaign (`farm.jobs.inputs.Campaign`) to `farm.jobs.client.submit_campaign`,
which creates the manifest and submits the campaign job through Ray's Jobs API; reads
come straight from the manifest on storage, joined with the campaign's latest job from
the Jobs API (`state`, `job`, `resumable`: a job that died with work left is ``stalled``
until resumed, never "running"). Errors are `RequestError`s: 4xx naming the field, 404 for
an unknown campaign, 503 when the Jobs API cannot be reached for a submit or resume.

Tenants: each tenant's campaigns live under its own storage root (`tenant_root`): the
farm's root for tenant ``default`` (the local demo, the CLI), ``{root}/tenants/{name}``
for the others. Campaign ids are content hashes of the spec, so two tenants submitting
the same spec get two campaigns, each with its own job (job ids and lookups name the
storage root: `farm.jobs.state.submission_id`), and another tenant's campaign id is
simply not found (404). Tenant names are checked path-safe in the settings and again here.

Prompt policy: a campaign is refused at submit (422 ``policy_violation``) when any of its
variants' text would break the tenant's policy, with ``param`` naming the spec field the
text comes from (``locales.en-US.prompt``) and the message naming the product. Refusing
the whole campaign up front spends no GPU time and leaves no half-rendered campaign.

Quotas: a campaign that would take the tenant past its max_concurrent_campaigns or
max_queued_variants is refused at submit with a 429 ``quota_exceeded``
(`farm.serve.quotas`), before its manifest is written; the Api checks the daily GPU budget.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from farm.campaign.manifest import Manifest, ManifestNotFound
from farm.campaign.spec import CampaignSpec, SpecError, fill, load_spec
from farm.jobs.client import CampaignError, cancel_campaign, resume_campaign, submit_campaign
from farm.jobs.inputs import Campaign
from farm.jobs.options import JobOptions
from farm.jobs.state import (
    TERMINAL_JOB,
    campaign_jobs,
    campaign_status,
    cancel_requested,
    list_campaigns,
    root_jobs,
)
from farm.policy import PolicyViolation, PromptPolicy
from farm.serve.quotas import campaign_usage, check_campaign
from farm.serve.wire import ANONYMOUS_TENANT, Limits, RequestError
from farm.settings import TENANT_NAME, Quota

# The media types POST /v1/campaigns reads, and how (anything else is a 415).
SPEC_TYPES = {
    "application/json": "json",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
}
CAMPAIGN_ID = re.compile(r"[0-9a-f]{16}")  # with fullmatch: "$" would let a "\n" through
# Product ids, format names and locale codes name variants and may name files: letters,
# digits, - and _ only (checked again here, whatever the spec's own rules let through).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def tenant_root(root: str, tenant: str) -> str:
    """Where `tenant`'s campaigns and outputs live: the root itself for ``default``."""
    if tenant == ANONYMOUS_TENANT:
        return root
    if not TENANT_NAME.fullmatch(tenant):  # settings refuse these; never build a path of one
        raise RequestError(403, "forbidden", "tenant name is not usable as a storage path")
    return f"{root.rstrip('/')}/tenants/{tenant}"


def _not_found(cid: str) -> RequestError:
    return RequestError(404, "not_found", f"no campaign with id {cid!r}", "campaign_id")


def _open(root: str, cid: str) -> Manifest:
    if not CAMPAIGN_ID.fullmatch(cid):
        raise _not_found(cid)
    try:
        return Manifest.open(root, cid)
    except ManifestNotFound:
        raise _not_found(cid) from None


def spec_text(spec: CampaignSpec) -> Iterator[tuple[str, str, str]]:
    """(spec field, product id, text) for the text of every variant, as rendered.

    Prompts are given filled in (per product and locale), so a blocked name that comes
    from a product name shows up in the prompt that would be rendered.
    """
    yield "brand", "", spec.brand
    for i, product in enumerate(spec.products):
        yield f"products[{i}].name", product.id, product.name
        yield f"products[{i}].description", product.id, product.description
    for code, copy in spec.locales.items():
        yield f"locales.{code}.headline", "", copy.headline
        yield f"locales.{code}.cta", "", copy.cta
        yield f"locales.{code}.negative_prompt", "", copy.negative_prompt
        for product in spec.products:
            values = spec.prompt_values(product, code)
            yield f"locales.{code}.prompt", product.id, fill(copy.prompt, values)
            for j, shot in enumerate(spec.storyboard):
                yield f"storyboard[{j}].prompt", product.id, fill(shot.prompt, values)


def check_spec(spec: CampaignSpec, limits: Limits, policy: PromptPolicy) -> None:
    """Refuse (4xx naming the field) a spec over the limits or against the prompt policy."""
    if spec.output_root is not None:
        raise RequestError(
            422,
            "invalid_campaign",
            "output_root: not allowed over the API; outputs go under the tenant's storage",
            "output_root",
        )
    names = [(f"products[{i}].id", p.id) for i, p in enumerate(spec.products)]
    names += [(f"formats[{i}].name", f.name) for i, f in enumerate(spec.formats)]
    names += [(f"locales.{code!r}", code) for code in spec.locales]
    for field, name in names:
        if not NAME.fullmatch(name):
            message = f"{field}: {name!r} must be letters, digits, - and _ only"
            raise RequestError(422, "invalid_campaign", message, field)
    count = len(spec.products) * len(spec.locales) * len(spec.formats) * len(spec.durations)
    limits.check_variants("seeds", count * spec.seeds)
    limits.check_steps("steps", spec.steps)
    for i, seconds in enumerate(spec.durations):
        limits.check_seconds(f"durations[{i}]", seconds)
    for i, fmt in enumerate(spec.formats):
        limits.check_size(f"formats[{i}]", fmt.width, fmt.height)
    for field, product, text in spec_text(spec):
        if field.endswith("prompt"):
            try:
                limits.check_prompt(field, text)
            except RequestError as e:
                e.message = e.message + (f" (product {product})" if product else "")
                raise
        rule = policy.violation(text)
        if rule is not None:
            where = f" for product {product}" if product else ""
            message = f"{PolicyViolation(field, rule)}{where}"
            raise RequestError(422, "policy_violation", message, field)


def submit(
    body: bytes,
    content_type: str,
    *,
    root: str,
    jobs_address: str,
    app: str,
    python: str = "",
    tenant: str = ANONYMOUS_TENANT,
    limits: Limits | None = None,
    policy: PromptPolicy | None = None,
    quota: Quota | None = None,
    model: str | None = None,
) -> dict:
    """Validate a spec (JSON or YAML body) and submit the tenant's job: {id, job_id}.

    A body that is not JSON or YAML at all, or not a mapping, is a 400 with param ``body``.
    The spec renders with the served `model` (its default; naming another is a 422).
    """
    fmt = body_format(content_type)
    try:
        spec = load_spec(body, fmt=fmt, model=model)
    except SpecError as e:
        path, _ = e.errors[0] if e.errors else ("spec", "")
        if path == "spec":  # the document as a whole: unreadable, or not a mapping
            raise RequestError(400, "invalid_body", str(e), "body") from None
        raise RequestError(422, "invalid_campaign", str(e), path) from None
    check_spec(spec, limits or Limits(), policy or PromptPolicy())
    campaign = Campaign.of_spec(spec)  # parsed once, here; the job client takes it typed
    base = tenant_root(root, tenant)
    if quota is not None:
        check_quota(
            quota, tenant, base, jobs_address, campaign.campaign_id, campaign.variants.num_rows
        )
    try:
        cid, sid = submit_campaign(
            campaign,
            address=jobs_address,
            root=base,
            options=JobOptions(serve_app=app),
            # The jobs_python setting, else the replicas' own environment (the farm's).
            python=python or shlex.quote(sys.executable),
        )
    except CampaignError as e:
        raise RequestError(409, "conflict", str(e)) from None
    except (ConnectionError, OSError, RuntimeError) as e:
        raise RequestError(503, "jobs_unavailable", f"Ray Jobs API: {e}") from None
    return {"id": cid, "job_id": sid}


def body_format(content_type: str) -> str:
    """'json' or 'yaml' for a Content-Type header (`SPEC_TYPES`); a 415 for anything else."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.endswith("+json"):
        media = "application/json"
    if media not in SPEC_TYPES:
        accepted = ", ".join(SPEC_TYPES)
        message = f"Content-Type {media or '(none)'!r} is not a spec type; send one of {accepted}"
        raise RequestError(415, "unsupported_media_type", message, "Content-Type")
    return SPEC_TYPES[media]


def check_quota(
    quota: Quota, tenant: str, base: str, jobs_address: str, cid: str, variants: int
) -> None:
    """Refuse (429) campaign `cid` starting `variants` more past the tenant's running-campaign
    or queued-variant quota (a new campaign, or a resume of a stalled one)."""

    def job_running(cid: str) -> bool:
        try:
            jobs = campaign_jobs(jobs_address, cid, root=base)
        except (ConnectionError, OSError, RuntimeError) as e:
            raise RequestError(503, "jobs_unavailable", f"Ray Jobs API: {e}") from None
        return bool(jobs) and str(jobs[-1].status.value) not in TERMINAL_JOB

    if quota.max_concurrent_campaigns is None and quota.max_queued_variants is None:
        return
    usage = campaign_usage(base, job_running, cancelled=lambda cid: cancel_requested(base, cid))
    check_campaign(quota, tenant, usage, cid, variants)


def progress(
    root: str, cid: str, tenant: str = ANONYMOUS_TENANT, jobs_address: str | None = None
) -> dict[str, Any]:
    """Counts by status and by status × locale × format, throughput, ETA and the job's state.

    `state` and `job` join the manifest with the campaign's latest Ray job (see
    `CampaignJobStatus.state`): a job that died with variants left is ``stalled`` and
    ``resumable``, and then there is no ETA, since nothing is rendering.
    """
    base = tenant_root(root, tenant)
    manifest = _open(base, cid)
    st = campaign_status(base, cid, jobs_address, manifest=manifest)
    p = st.progress
    return {
        "id": cid,
        "total": p.total,
        "by_status": p.by_status,
        "groups": p.by_group.to_pylist(),
        "completed_gpu_s": p.completed_gpu_s,
        "throughput_per_s": p.throughput,
        "eta_s": None if st.state == "stalled" else p.eta_s,
        "pending": st.pending,  # variants a job would still render (retries included)
        "state": st.state,
        "resumable": st.resumable,
        "cancel_requested": st.cancel_requested,
        "job": _job(st.job, st.job_status, st.job_message),
    }


def _job(sid: str | None, status: str | None, message: str) -> dict[str, Any]:
    """The wire form of a campaign's latest job: {id, status (lower case), message}."""
    return {"id": sid, "status": (status or "unknown").lower(), "message": message}


def listing(
    root: str, tenant: str = ANONYMOUS_TENANT, jobs_address: str | None = None
) -> list[dict[str, Any]]:
    """Every campaign of the tenant with its counts, state and latest job (one Jobs API call)."""
    base = tenant_root(root, tenant)
    rows = list_campaigns(base)
    if jobs_address is None or not rows:
        return rows
    jobs = root_jobs(jobs_address, base)
    for row in rows:
        st = campaign_status(base, row["campaign_id"], job=jobs.of(row["campaign_id"]))
        row |= {"state": st.state, "resumable": st.resumable}
        row["job"] = _job(st.job, st.job_status, st.job_message)
    return rows


def resume(
    root: str,
    cid: str,
    jobs_address: str,
    app: str,
    tenant: str = ANONYMOUS_TENANT,
    *,
    python: str = "",
    quota: Quota | None = None,
) -> dict[str, Any]:
    """Start the campaign's next job for the variants left (the running one if any).

    A resume counts against `quota` as a new campaign does: its variants left are queued
    again (a running campaign resumed finds its own job and adds nothing).
    """
    base = tenant_root(root, tenant)
    manifest = _open(base, cid)
    if quota is not None:
        check_quota(quota, tenant, base, jobs_address, cid, manifest.pending().num_rows)
    try:
        sid = resume_campaign(
            cid,
            address=jobs_address,
            root=base,
            options=JobOptions(serve_app=app),
            python=python or shlex.quote(sys.executable),  # as submit
        )
    except CampaignError as e:
        raise RequestError(409, "conflict", str(e)) from None
    except (ConnectionError, OSError, RuntimeError) as e:
        raise RequestError(503, "jobs_unavailable", f"Ray Jobs API: {e}") from None
    return {"id": cid, "job_id": sid}


def cancel(
    root: str, cid: str, jobs_address: str, tenant: str = ANONYMOUS_TENANT
) -> dict[str, str]:
    """Ask the campaign's job to stop; the rest of its variants end `cancelled`."""
    base = tenant_root(root, tenant)
    _open(base, cid)
    try:
        return {"id": cid, "message": cancel_campaign(base, cid, jobs_address)}
    except CampaignError as e:
        raise RequestError(409, "conflict", str(e)) from None
    except (ConnectionError, OSError, RuntimeError) as e:
        raise RequestError(503, "jobs_unavailable", f"Ray Jobs API: {e}") from None


def manifest_parquet(root: str, cid: str, tenant: str = ANONYMOUS_TENANT) -> bytes:
    """The latest state of every variant as one Parquet file (pandas, DuckDB read it)."""
    sink = pa.BufferOutputStream()
    pq.write_table(_open(tenant_root(root, tenant), cid).status(), sink)
    return sink.getvalue().to_pybytes()
