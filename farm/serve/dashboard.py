"""The campaign page: `/dashboard` (the tenant's campaigns) and `/dashboard/campaigns/{id}`.

What people look at while a campaign runs: progress by locale × format, throughput and
ETA, failures with their reasons, and a grid of poster thumbnails of finished variants
that open the video. Plain HTML, JS and CSS from `farm/serve/static/` (package data, no
CDN), so the page works offline.

Auth is the Api's (`farm.serve.auth`). The two pages are plain Starlette routes that run
`authenticate` themselves, so that a browser without a valid token gets a 401 whose body
is a small token form (it sets the ``farm_token`` cookie) instead of JSON. Everything
else is an API route under the app-wide auth dependency, 401 JSON without a token:

    GET /dashboard/static/{name}                          the page's JS and CSS
    GET /dashboard/api/campaigns/{id}/variants            finished and failed variants,
                                                          GPU-seconds estimated and measured
    GET /dashboard/media/{campaign_id}/{variant_id}.jpg   poster (JPEG)
    GET /dashboard/media/{campaign_id}/{variant_id}.mp4   video (MP4; Range requests)

The page reads progress, the campaign's state and its job's from the Api's own `GET
/v1/campaigns[/{id}]`; a stalled campaign (its job died with work left) shows why and a
Resume button (`POST /v1/campaigns/{id}/resume`). Ids from the URL
are checked against their exact hex form and files are looked up under the tenant's
storage root (`campaigns.tenant_root`), never from a path in the request or the manifest.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations.

import asyncio
import html
import re
from functools import cache
from importlib import resources
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from farm.campaign import cost
from farm.campaign.manifest import Manifest, ManifestNotFound
from farm.output.render import output_dir
from farm.serve.auth import COOKIE, Unauthorized, authenticate, current_tenant, deployment
from farm.serve.campaigns import CAMPAIGN_ID, tenant_root
from farm.serve.wire import RequestError

__all__ = ["router"]

router = APIRouter()

_STATIC = {  # file name -> media type; nothing else is ever read from the package
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_MEDIA = re.compile(r"([0-9a-f]{20})\.(jpg|mp4)")  # fullmatch: variant id + extension
_MEDIA_TYPES = {"jpg": "image/jpeg", "mp4": "video/mp4"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_VARIANT_COLUMNS = [
    "variant_id",
    "product_id",
    "product_name",
    "locale",
    "format",
    "aspect",
    "width",
    "height",
    "duration_s",
    "status",
    "attempt",
    "error_code",
    "error_message",
]


@cache
def _asset(name: str) -> str:
    return resources.files("farm.serve").joinpath("static", name).read_text(encoding="utf-8")


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", html.escape(value, quote=True))
    return template


def _base(request: Request) -> str:
    """The app's URL prefix (a Serve route prefix), for links inside the page."""
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _page(request: Request, title: str, campaign: str = "") -> HTMLResponse:
    """The page shell (its JS draws it from JSON), or the token form as a 401."""
    try:
        tenant = await authenticate(request)
    except Unauthorized as e:
        body = _fill(_asset("login.html"), BASE=_base(request), MESSAGE=str(e.detail))
        body = body.replace("{{COOKIE}}", COOKIE)
        return HTMLResponse(body, status_code=401, headers=e.headers)
    body = _fill(
        _asset("page.html"), BASE=_base(request), TITLE=title, CAMPAIGN=campaign, TENANT=tenant
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


async def campaigns_page(request: Request) -> HTMLResponse:
    """The tenant's campaigns, each with its progress."""
    return await _page(request, "Campaigns")


async def campaign_page(request: Request) -> HTMLResponse:
    """One campaign: progress by locale × format, ETA, failures, thumbnails."""
    cid = request.path_params["campaign_id"]
    if not CAMPAIGN_ID.fullmatch(cid):
        return HTMLResponse("<!doctype html><title>not found</title>no such campaign", 404)
    return await _page(request, f"Campaign {cid}", cid)


# Plain routes: the app-wide auth dependency applies to API routes only; these two pages
# call `authenticate` themselves so the 401 can be the token form.
router.add_route("/dashboard", campaigns_page, methods=["GET"], include_in_schema=False)
router.add_route(
    "/dashboard/campaigns/{campaign_id}", campaign_page, methods=["GET"], include_in_schema=False
)


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    """The page's script and stylesheet, from the package."""
    if name not in _STATIC:
        raise RequestError(404, "not_found", f"no dashboard file {name!r}", "name")
    return Response(_asset(name), media_type=_STATIC[name])


def _not_found(cid: str) -> RequestError:
    return RequestError(404, "not_found", f"no campaign with id {cid!r}", "campaign_id")


def _variants(root: str, cid: str, options: dict[str, Any], limit: int) -> dict[str, Any]:
    """Finished variants (newest first) and failed ones with reasons, at most `limit` each."""
    try:
        manifest = Manifest.open(root, cid, options or None)
    except ManifestNotFound:
        raise _not_found(cid) from None
    status = manifest.status()
    done = status.filter(pc.equal(status["status"], "completed"))
    done = done.sort_by([("ts", "descending"), ("variant_id", "ascending")])
    failed = status.filter(pc.equal(status["status"], "failed"))
    failed = failed.sort_by([("ts", "descending"), ("variant_id", "ascending")])
    reasons = failed.group_by("error_code").aggregate([("variant_id", "count")]).to_pydict()
    return {
        "cost": _cost(root, options, manifest.variants, done),
        "id": cid,
        "name": manifest.spec.get("name", cid),
        "completed_total": done.num_rows,
        "failed_total": failed.num_rows,
        "failure_reasons": dict(
            zip(map(str, reasons["error_code"]), reasons["variant_id_count"], strict=True)
        ),
        "completed": _rows(done.slice(0, limit)),
        "failed": _rows(failed.slice(0, limit)),
    }


def _cost(root: str, options: dict[str, Any], variants: pa.Table, done: pa.Table) -> dict:
    """GPU-seconds estimated (farm.campaign.cost, from renders of the model measured under
    this root) beside those measured, for the finished variants and the whole campaign."""
    measured = pc.sum(done["gpu_seconds"]).as_py() or 0.0
    out: dict[str, Any] = {"measured_s": measured, "finished": done.num_rows}
    preset = str(variants["preset"][0].as_py()) if variants.num_rows else ""
    cal = cost.load(root, preset, storage_options=options or None) if preset else None
    if cal is None:
        return out | {"estimated_s": None, "estimated_total_s": None, "basis": "not calibrated"}
    return out | {
        "estimated_s": float(cal.seconds_for(cost.variant_work(done).sum())),
        "estimated_total_s": float(cal.seconds_for(cost.variant_work(variants).sum())),
        "basis": cal.describe(),
    }


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.select(_VARIANT_COLUMNS).to_pylist()


@router.get("/dashboard/api/campaigns/{campaign_id}/variants")
async def campaign_variants(
    request: Request,
    campaign_id: str,
    limit: int = Query(200, ge=1, le=2000, description="Most variants of each kind."),
) -> dict[str, Any]:
    """The campaign's finished variants (for thumbnails) and failed ones (with reasons)."""
    if not CAMPAIGN_ID.fullmatch(campaign_id):
        raise _not_found(campaign_id)
    api = deployment(request)
    root = tenant_root(api.root, current_tenant(request))
    return await asyncio.to_thread(_variants, root, campaign_id, api.storage_options, limit)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, stop) of a single `bytes=a-b` Range; None: the whole file."""
    m = _RANGE.fullmatch((header or "").strip())
    if m is None or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):  # the last N bytes
        n = int(m.group(2))
        return max(size - n, 0), size
    start = int(m.group(1))
    stop = min(int(m.group(2)) + 1, size) if m.group(2) else size
    if start >= size or stop <= start:
        raise RequestError(416, "range_not_satisfiable", f"range outside {size} bytes", "Range")
    return start, stop


def _read(url: str, options: dict[str, Any], range_header: str | None) -> tuple[bytes, int, Any]:
    fs, path = fsspec.core.url_to_fs(url, **options)
    size = int(fs.size(path))
    span = _byte_range(range_header, size)
    if span is None:
        return fs.cat_file(path), size, None
    return fs.cat_file(path, start=span[0], end=span[1]), size, span


@router.get("/dashboard/media/{campaign_id}/{file}")
async def campaign_media(request: Request, campaign_id: str, file: str) -> Response:
    """A finished variant's poster (`{variant_id}.jpg`) or video (`{variant_id}.mp4`)."""
    m = _MEDIA.fullmatch(file)
    if not CAMPAIGN_ID.fullmatch(campaign_id) or m is None:
        raise RequestError(404, "not_found", f"no file {file!r} in campaign", "file")
    vid, ext = m.groups()
    api = deployment(request)
    root = tenant_root(api.root, current_tenant(request))
    url = f"{output_dir(root, campaign_id)}/{vid}.{ext}"
    try:
        data, size, span = await asyncio.to_thread(
            _read, url, api.storage_options, request.headers.get("range")
        )
    except FileNotFoundError:
        raise RequestError(404, "not_found", f"no file {file!r} in campaign", "file") from None
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if span is None:
        return Response(data, media_type=_MEDIA_TYPES[ext], headers=headers)
    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
    return Response(data, status_code=206, media_type=_MEDIA_TYPES[ext], headers=headers)
