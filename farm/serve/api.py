"""The Api ingress deployment: the HTTP face of the farm (FastAPI under `@serve.ingress`).

POST /v1/videos → 201 video; GET /v1/videos/{id}; GET /v1/videos/{id}/content?variant=
video|thumbnail; DELETE /v1/videos/{id} (cancel); POST /v1/campaigns (JSON or YAML spec)
→ 201 {id, job_id}; GET /v1/campaigns; GET /v1/campaigns/{id} (progress, ETA, state and
the latest job's); POST /v1/campaigns/{id}/cancel; POST /v1/campaigns/{id}/resume; GET
/v1/campaigns/{id}/manifest (Parquet); GET /healthz.
Every error is JSON {code, message, param?} (`farm.serve.errors`): bad input is a 4xx
naming the field (a body that is not JSON a 400 with param ``body``, another media type a
415), an unknown id a 404. /openapi.json is the serving deployment's schema, with its
limits, every error each operation gives and the bearer scheme (`farm.serve.openapi`).

Every route but /healthz and the docs needs a tenant's bearer token (`farm.serve.auth`);
videos and campaigns belong to the tenant that made them, and another tenant's id is a 404.
Requests are held to the served model's rules (its `Geometry`: 422 ``invalid_request``
naming the size and the rule), to the deployment's limits (`Limits`: 422
``limit_exceeded`` naming the limit; a body over ``max_body_bytes`` is a 413 before it is
parsed) and prompts to the tenant's prompt policy (`farm.policy`: 422 ``policy_violation``
naming the field) before any GPU time is spent. Ids from the URL are checked against their
exact hex form before they touch a path; nothing from a request becomes a path unchecked.
A tenant over one of its quotas gets a 429 ``quota_exceeded`` with Retry-After naming the
limit, and a Director that does not answer in time a 503 ``busy`` (`farm.serve.quotas`).
"""

# No `from __future__ import annotations`: FastAPI must see the endpoint annotations as
# classes (under `serve.ingress` string annotations resolve against Ray's globals).

import asyncio
import contextlib
import inspect
import re
from collections.abc import Iterator
from typing import Any, Literal

import fsspec
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from ray import serve

from farm.policy import PolicyViolation, PromptPolicy, policy_for
from farm.serve import campaigns, errors, openapi
from farm.serve.auth import Auth, authenticate
from farm.serve.dashboard import router as dashboard_router
from farm.serve.director import videos_dir
from farm.serve.health import JobsHealth
from farm.serve.quotas import (
    DIRECTOR_TIMEOUT_S,
    bounded,
    campaign_usage,
    check_gpu_budget,
    check_videos,
    day_start,
)
from farm.serve.wire import (
    CreateVideoRequest,
    Limits,
    RequestError,
    VideoRequest,
    check_request_geometry,
    owns,
)
from farm.settings import Quota, quota_for, setting_default
from model.geometry import geometry_of

# Auth is app-wide: every route, including routers included later, needs a tenant's token
# (farm.serve.auth exempts /healthz; the docs are served outside the dependency system).
# Routes must be added before `serve.ingress(app)` below, which freezes a copy of the app.
app = FastAPI(title="video farm", version="1", dependencies=[Depends(authenticate)])
Tenant = Depends(authenticate)  # FastAPI runs it once per request however often it is named
app.include_router(dashboard_router)  # /dashboard: the campaign page (farm.serve.dashboard)
_ID = re.compile(r"[0-9a-f]{32}")  # with fullmatch: "$" would let a "\n" through
_CONTENT = {"video": ("mp4", "video/mp4"), "thumbnail": ("jpg", "image/jpeg")}
errors.install(app)  # JSON errors {code, message, param?}, the body limit, 405 Allow
openapi.install(app)  # /openapi.json: the serving deployment's limits, errors, security


def _not_found(video_id: str) -> RequestError:
    return RequestError(404, "not_found", f"no video with id {video_id!r}", "video_id")


@serve.deployment(
    name="Api",
    max_ongoing_requests=200,
    ray_actor_options={"num_cpus": setting_default("api_num_cpus")},
)
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
        jobs_address: str = setting_default("jobs_address"),
        jobs_python: str = setting_default("jobs_python"),
        app_name: str = setting_default("app_name"),
        max_body_bytes: int = setting_default("max_body_bytes"),
        tokens: dict[str, str] | None = None,
        allow_anonymous: bool = setting_default("allow_anonymous"),
        prompt_policy: dict[str, Any] | None = None,
        model: str = setting_default("model"),
        quotas: dict[str, Any] | None = None,
    ):
        self.director = director  # DeploymentHandle of a Director
        self.root = storage_root
        # The served model's frame and size rules, read once (torch-free: its config only).
        self.model = model  # the one model a spec or request may name
        self.geometry = geometry_of(model)
        self.limits = Limits.model_validate(limits or {})
        self.storage_options = dict(storage_options or {})
        self.jobs_address = jobs_address  # Ray's Jobs API, where campaign jobs are submitted
        self.jobs_health = JobsHealth(jobs_address)  # for /healthz
        self.jobs_python = jobs_python  # the jobs' interpreter ("": this replica's)
        self.app_name = app_name  # campaign jobs render on this app's Renderer pool
        self.max_body_bytes = max_body_bytes
        self.auth = Auth(dict(tokens or {}), allow_anonymous)  # read by farm.serve.auth
        self.policies = {
            k: PromptPolicy.model_validate(v) for k, v in (prompt_policy or {}).items()
        }
        self.quotas = {k: Quota.model_validate(v) for k, v in (quotas or {}).items()}

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """Whether the farm takes work: 200 {status: ok, jobs: ok}, else 503 degraded.

        ``jobs`` says whether Ray's Jobs API can take a campaign ("unavailable: <why>"
        otherwise); the check is bounded and cached (`farm.serve.health`).
        """
        jobs = await self.jobs_health.check()
        ok = jobs == "ok"
        body = {"status": "ok" if ok else "degraded", "jobs": jobs}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        """The model this deployment serves, with its frame and size rules."""
        g = self.geometry
        rules = {"frame_rule": g.frame_rule, "pixel_multiple": g.pixel_multiple}
        return {"data": [{"id": self.model, "max_frames": g.max_frames, **rules}]}

    @app.post("/v1/videos", status_code=201)
    async def create(self, body: VideoRequest, tenant: str = Tenant) -> dict[str, Any]:
        """Queue a video (or find the same request's video); 201 with its state."""
        if body.model not in (None, self.model):
            message = f"model: this farm serves {self.model!r}, not {body.model[:80]!r}"
            raise RequestError(422, "invalid_request", message, "model")
        check_request_geometry(body, self.geometry)  # a size the model cannot render at all
        self.limits.check(body)
        self._check_policy(
            tenant, [("prompt", body.prompt), ("negative_prompt", body.negative_prompt)]
        )
        quota = quota_for(self.quotas, tenant)
        if quota.gpu_seconds_per_day is not None:
            check_gpu_budget(quota, tenant, await self._gpu_seconds_today(tenant))
        request = CreateVideoRequest(**body.model_dump(), tenant=tenant)
        create = self.director.create.remote(request.model_dump(), quota.max_concurrent_videos)
        video = await bounded(create, DIRECTOR_TIMEOUT_S, "creating the video")
        if video.get("refused"):  # the Director counts and refuses in one step
            check_videos(quota, tenant, video["unfinished"])
        return video

    @app.get("/v1/videos/{video_id}")
    async def get(
        self,
        video_id: str,
        wait: float = Query(
            0,
            ge=0,
            le=60,
            description="Long poll: answer as soon as the video finishes, or after this "
            "many seconds (0 = at once).",
        ),
        tenant: str = Tenant,
    ) -> dict[str, Any]:
        """A video's status, progress and error."""
        return await self._status(video_id, tenant, wait)

    @app.delete("/v1/videos/{video_id}")
    async def cancel(self, video_id: str, tenant: str = Tenant) -> dict[str, Any]:
        """Cancel a queued or rendering video; returns its state."""
        if not self._mine(video_id, tenant):
            raise _not_found(video_id)
        cancel = self.director.cancel.remote(video_id)
        video = await bounded(cancel, DIRECTOR_TIMEOUT_S, "cancelling the video")
        if video is None:
            raise _not_found(video_id)
        return video

    @app.get("/v1/videos/{video_id}/content")
    async def content(
        self, video_id: str, variant: Literal["video", "thumbnail"] = "video", tenant: str = Tenant
    ) -> Response:
        """The finished MP4 (variant=video) or its JPEG poster (variant=thumbnail)."""
        video = await self._status(video_id, tenant)
        if video["status"] != "completed":
            raise RequestError(
                409, "not_ready", f"video {video_id} is {video['status']}, not completed"
            )
        ext, media_type = _CONTENT[variant]
        url = f"{videos_dir(self.root)}/{video_id}.{ext}"  # video_id: checked 32 hex
        try:
            data = await asyncio.to_thread(self._read, url)
        except FileNotFoundError:
            raise _not_found(video_id) from None
        return Response(content=data, media_type=media_type)

    @app.post("/v1/campaigns", status_code=201)
    async def create_campaign(self, request: Request, tenant: str = Tenant) -> dict[str, Any]:
        """Submit a campaign spec (JSON or YAML body) as a Ray Job: {id, job_id}."""
        kind = request.headers.get("content-type", "")
        campaigns.body_format(kind)  # 415 before anything is read
        body = await request.body()
        if len(body) > self.max_body_bytes:
            raise errors.BodyTooLarge(self.max_body_bytes)
        quota = quota_for(self.quotas, tenant)
        if quota.gpu_seconds_per_day is not None:
            check_gpu_budget(quota, tenant, await self._gpu_seconds_today(tenant))
        return await asyncio.to_thread(
            campaigns.submit,
            body,
            kind,
            root=self.root,
            jobs_address=self.jobs_address,
            app=self.app_name,
            python=self.jobs_python,
            tenant=tenant,
            limits=self.limits,
            policy=policy_for(self.policies, tenant),
            quota=quota,
            model=self.model,
        )

    @app.get("/v1/campaigns")
    async def list_campaigns(self, tenant: str = Tenant) -> list[dict[str, Any]]:
        """Every campaign of the tenant with its counts by status, state and latest job."""
        return await asyncio.to_thread(campaigns.listing, self.root, tenant, self.jobs_address)

    @app.get("/v1/campaigns/{campaign_id}")
    async def campaign(self, campaign_id: str, tenant: str = Tenant) -> dict[str, Any]:
        """Progress by status × locale × format, throughput, ETA, state and latest job."""
        return await asyncio.to_thread(
            campaigns.progress, self.root, campaign_id, tenant, self.jobs_address
        )

    @app.post("/v1/campaigns/{campaign_id}/cancel")
    async def cancel_campaign(self, campaign_id: str, tenant: str = Tenant) -> dict[str, str]:
        """Stop dispatching; variants not finished end `cancelled`."""
        return await asyncio.to_thread(
            campaigns.cancel, self.root, campaign_id, self.jobs_address, tenant
        )

    @app.post("/v1/campaigns/{campaign_id}/resume")
    async def resume_campaign(self, campaign_id: str, tenant: str = Tenant) -> dict[str, Any]:
        """Start a job for the variants left (a stalled campaign); finished ones stay."""
        quota = quota_for(self.quotas, tenant)
        if quota.gpu_seconds_per_day is not None:
            check_gpu_budget(quota, tenant, await self._gpu_seconds_today(tenant))
        return await asyncio.to_thread(
            campaigns.resume,
            self.root,
            campaign_id,
            self.jobs_address,
            self.app_name,
            tenant,
            python=self.jobs_python,
            quota=quota,
        )

    @app.get("/v1/campaigns/{campaign_id}/manifest")
    async def campaign_manifest(self, campaign_id: str, tenant: str = Tenant) -> Response:
        """The latest state of every variant, as Parquet."""
        data = await asyncio.to_thread(campaigns.manifest_parquet, self.root, campaign_id, tenant)
        return Response(content=data, media_type="application/vnd.apache.parquet")

    def _check_policy(self, tenant: str, fields: list[tuple[str, str]]) -> None:
        try:
            policy_for(self.policies, tenant).check(fields)
        except PolicyViolation as e:
            raise RequestError(422, "policy_violation", str(e), e.field) from None

    @staticmethod
    def _mine(video_id: str, tenant: str) -> bool:
        return bool(_ID.fullmatch(video_id)) and owns(tenant, video_id)

    async def _status(self, video_id: str, tenant: str, wait: float = 0) -> dict[str, Any]:
        if not self._mine(video_id, tenant):
            raise _not_found(video_id)
        status = self.director.status.remote(video_id, wait)
        video = await bounded(status, wait + DIRECTOR_TIMEOUT_S, "reading the video's state")
        if video is None:
            raise _not_found(video_id)
        return video

    async def _gpu_seconds_today(self, tenant: str) -> float:
        """What `tenant` spent since UTC midnight: campaign variants and videos (quotas)."""
        since = day_start()
        usage = self.director.usage.remote(tenant, since.timestamp())
        videos = await bounded(usage, DIRECTOR_TIMEOUT_S, "counting the tenant's usage")
        root = campaigns.tenant_root(self.root, tenant)
        spent = await asyncio.to_thread(campaign_usage, root, None, gpu_seconds=True, now=since)
        return videos["render_s"] + spent.gpu_seconds_today

    def _read(self, url: str) -> bytes:
        with fsspec.open(url, "rb", **self.storage_options) as f:
            return f.read()


@contextlib.contextmanager
def in_process(director: Any, storage_root: str, **kwargs: Any) -> Iterator[FastAPI]:
    """The Api's FastAPI app served in this process, without Serve (tests, fuzzing).

    Builds an Api instance from the same arguments as the deployment and binds the
    module's app to it until the block ends; `director` is anything with the Director's
    ``.method.remote(...)`` calls, e.g. a real DeploymentHandle. One binding at a time.
    """
    cls = Api.func_or_class.__bases__[0]  # the class under the ingress wrapper
    instance = cls(director, storage_root, **kwargs)
    app.state.farm_api = instance
    for route in api_routes(app):
        self_param = inspect.signature(route.endpoint).parameters.get("self")
        if self_param is not None:  # serve.ingress looks up the replica's instance here
            app.dependency_overrides[self_param.default.dependency] = lambda: instance
    try:
        yield app
    finally:
        app.state.farm_api = None
        app.dependency_overrides.clear()


def api_routes(router: Any) -> list[APIRoute]:
    """Every APIRoute of `router`, including those of included routers, at any depth."""
    out: list[APIRoute] = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):  # FastAPI >= 0.137 nests included routers
            out.extend(api_routes(route.original_router))
    return out
