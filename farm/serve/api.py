"""The Api ingress deployment: the HTTP face of the farm (FastAPI under `@serve.ingress`).

POST /v1/videos → 201 video; GET /v1/videos/{id}; GET /v1/videos/{id}/content?variant=
video|thumbnail; DELETE /v1/videos/{id} (cancel); POST /v1/campaigns (JSON or YAML spec)
→ 201 {id, job_id}; GET /v1/campaigns; GET /v1/campaigns/{id} (progress, ETA);
POST /v1/campaigns/{id}/cancel; GET /v1/campaigns/{id}/manifest (Parquet); GET /healthz.
Every error is JSON {code, message, param?}: bad input is a 4xx naming the field, an
unknown id a 404.
"""

# No `from __future__ import annotations`: FastAPI must see the endpoint annotations as
# classes (under `serve.ingress` string annotations resolve against Ray's globals).

import asyncio
import inspect
import logging
import re
from typing import Any

import fsspec
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from ray import serve
from starlette.exceptions import HTTPException

from farm.serve import campaigns
from farm.serve.auth import Auth, authenticate
from farm.serve.director import videos_dir
from farm.serve.schemas import CreateVideoRequest, Limits, RequestError

log = logging.getLogger(__name__)

# Auth is app-wide: every route, including routers included later, needs a tenant's token
# (farm.serve.auth exempts /healthz; the docs are served outside the dependency system).
# Routes must be added before `serve.ingress(app)` below, which freezes a copy of the app.
app = FastAPI(title="video farm", version="1", dependencies=[Depends(authenticate)])
_ID = re.compile(r"^[0-9a-f]{32}$")
_CONTENT = {"video": ("mp4", "video/mp4"), "thumbnail": ("jpg", "image/jpeg")}


def _error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(RequestError(status, code, message, param).body(), status_code=status)


@app.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the offending field(s): 'size: Value error, width 70 must be ...'."""
    errors = exc.errors()
    skip = ("body", "query", "path")
    params = [".".join(str(p) for p in e["loc"] if p not in skip) for e in errors]
    message = "; ".join(f"{p or 'body'}: {e['msg']}" for p, e in zip(params, errors, strict=True))
    param = params[0] if params else None
    return _error(422, "invalid_request", message or "invalid request", param)


@app.exception_handler(HTTPException)
async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    code = codes.get(exc.status_code, "http_error")
    body = RequestError(exc.status_code, code, str(exc.detail)).body()
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


@app.exception_handler(Exception)
async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")


def _not_found(video_id: str) -> RequestError:
    return RequestError(404, "not_found", f"no video with id {video_id!r}", "video_id")


@serve.deployment(name="Api", max_ongoing_requests=200, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Api:
    """HTTP ingress: validates requests and asks the Director; serves finished files."""

    def __init__(
        self,
        director: Any,
        storage_root: str,
        *,
        limits: dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        jobs_address: str = "http://127.0.0.1:8265",
        app_name: str = "farm",
        max_body_bytes: int = 1_000_000,
        tokens: dict[str, str] | None = None,
        allow_anonymous: bool = False,
    ):
        self.director = director  # DeploymentHandle of a Director
        self.root = storage_root
        self.limits = Limits.model_validate(limits or {})
        self.storage_options = dict(storage_options or {})
        self.jobs_address = jobs_address  # Ray's Jobs API, where campaign jobs are submitted
        self.app_name = app_name  # campaign jobs render on this app's Renderer pool
        self.max_body_bytes = max_body_bytes
        self.auth = Auth(dict(tokens or {}), allow_anonymous)  # read by farm.serve.auth

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """Liveness of the ingress."""
        return {"status": "ok"}

    @app.post("/v1/videos", status_code=201)
    async def create(self, body: CreateVideoRequest) -> dict[str, Any]:
        """Queue a video (or find the same request's video); 201 with its state."""
        self.limits.check(body)
        return await self.director.create.remote(body.model_dump())

    @app.get("/v1/videos/{video_id}")
    async def get(self, video_id: str) -> dict[str, Any]:
        """A video's status, progress and error."""
        return await self._status(video_id)

    @app.delete("/v1/videos/{video_id}")
    async def cancel(self, video_id: str) -> dict[str, Any]:
        """Cancel a queued or rendering video; returns its state."""
        if not _ID.match(video_id):
            raise _not_found(video_id)
        video = await self.director.cancel.remote(video_id)
        if video is None:
            raise _not_found(video_id)
        return video

    @app.get("/v1/videos/{video_id}/content")
    async def content(self, video_id: str, variant: str = "video") -> Response:
        """The finished MP4 (variant=video) or its JPEG poster (variant=thumbnail)."""
        if variant not in _CONTENT:
            raise RequestError(
                422, "invalid_request", f"variant must be one of {sorted(_CONTENT)}", "variant"
            )
        video = await self._status(video_id)
        if video["status"] != "completed":
            raise RequestError(
                409, "not_ready", f"video {video_id} is {video['status']}, not completed"
            )
        ext, media_type = _CONTENT[variant]
        url = f"{videos_dir(self.root)}/{video_id}.{ext}"
        try:
            data = await asyncio.to_thread(self._read, url)
        except FileNotFoundError:
            raise _not_found(video_id) from None
        return Response(content=data, media_type=media_type)

    @app.post("/v1/campaigns", status_code=201)
    async def create_campaign(self, request: Request) -> dict[str, Any]:
        """Submit a campaign spec (JSON or YAML body) as a Ray Job: {id, job_id}."""
        body = await request.body()
        if len(body) > self.max_body_bytes:
            raise RequestError(413, "too_large", f"body over {self.max_body_bytes} bytes")
        kind = request.headers.get("content-type", "")
        return await asyncio.to_thread(
            campaigns.submit,
            body,
            kind,
            root=self.root,
            jobs_address=self.jobs_address,
            app=self.app_name,
        )

    @app.get("/v1/campaigns")
    async def list_campaigns(self) -> list[dict[str, Any]]:
        """Every campaign in storage with its counts by status."""
        return await asyncio.to_thread(campaigns.listing, self.root)

    @app.get("/v1/campaigns/{campaign_id}")
    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        """Progress by status × locale × format, throughput and ETA."""
        return await asyncio.to_thread(campaigns.progress, self.root, campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/cancel")
    async def cancel_campaign(self, campaign_id: str) -> dict[str, str]:
        """Stop dispatching; variants not finished end `cancelled`."""
        return await asyncio.to_thread(campaigns.cancel, self.root, campaign_id, self.jobs_address)

    @app.get("/v1/campaigns/{campaign_id}/manifest")
    async def campaign_manifest(self, campaign_id: str) -> Response:
        """The latest state of every variant, as Parquet."""
        data = await asyncio.to_thread(campaigns.manifest_parquet, self.root, campaign_id)
        return Response(content=data, media_type="application/vnd.apache.parquet")

    async def _status(self, video_id: str) -> dict[str, Any]:
        if not _ID.match(video_id):
            raise _not_found(video_id)
        video = await self.director.status.remote(video_id)
        if video is None:
            raise _not_found(video_id)
        return video

    def _read(self, url: str) -> bytes:
        with fsspec.open(url, "rb", **self.storage_options) as f:
            return f.read()


def in_process(director: Any, storage_root: str, **kwargs: Any) -> FastAPI:
    """The Api's FastAPI app served in this process, without Serve (tests, fuzzing).

    Builds an Api instance from the same arguments as the deployment and binds the app's
    routes to it; `director` is anything with the Director's `.method.remote(...)` calls,
    e.g. a real DeploymentHandle. Returns the module's app: one binding per process.
    """
    cls = Api.func_or_class.__bases__[0]  # the class under the ingress wrapper
    instance = cls(director, storage_root, **kwargs)
    app.state.farm_api = instance
    for route in api_routes(app):
        self_param = inspect.signature(route.endpoint).parameters.get("self")
        if self_param is not None:  # serve.ingress looks up the replica's instance here
            app.dependency_overrides[self_param.default.dependency] = lambda: instance
    return app


def api_routes(router: Any) -> list[APIRoute]:
    """Every APIRoute of `router`, including those of included routers, at any depth."""
    out: list[APIRoute] = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):  # FastAPI >= 0.137 nests included routers
            out.extend(api_routes(route.original_router))
    return out
