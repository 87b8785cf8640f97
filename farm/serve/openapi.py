"""The Api's OpenAPI schema as a deployment serves it: what each operation really takes and answers.

FastAPI derives paths, parameters and bodies from the routes. This module adds what the
routes cannot show, each from its owner, never a copy:

1. Security: HTTP bearer (or the dashboard's ``farm_token`` cookie) on every operation but
   the public ones (`farm.serve.auth.PUBLIC_PATHS`).
2. Errors: every status each operation answers (`ERRORS`), each with the JSON error body
   `ErrorBody` {code, message, param?} (`farm.serve.wire.RequestError`).
3. Bodies: ``POST /v1/campaigns`` reads a campaign spec as JSON or YAML
   (`farm.serve.campaigns.SPEC_TYPES`, the handler's own table) with the spec's schema;
   the manifest is Parquet, content MP4 or JPEG.
4. Bounds: the deployment's `Limits` and the served model's pixel multiple become the
   maximums, the size pattern and the prompt lengths, so ``farm_app(settings)`` with other
   limits serves other maximums. The schema states every rule JSON Schema can; the rest
   (a clip's minimum frame count, bytes of UTF-8, a spec's cross-field checks) are listed
   per operation under ``x-rules-beyond-schema`` as (code, param pattern, rule).

`install(app)` replaces FastAPI's /openapi.json route with one that serves the schema of
the deployment answering the request (`deployment_schema`, built once per replica).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.routing import Route

from farm.campaign.fields import MAX_DURATION_S, MAX_SIDE, SPACE
from farm.campaign.images import MAX_PIXELS
from farm.campaign.spec import _ASPECT, CampaignSpec
from farm.output.watermark import MIN_FRAMES, length_problem
from farm.serve.auth import COOKIE, PUBLIC_PATHS, deployment
from farm.serve.campaigns import NAME, SPEC_TYPES
from farm.serve.wire import Limits, RequestError, VideoRequest
from model.geometry import Geometry


class ErrorBody(BaseModel):
    """Every error the Api answers: a machine code, a message, and the field it is about."""

    code: str = Field(description="Machine-readable: not_found, limit_exceeded, ...")
    message: str = Field(description="What is wrong, naming the field and the rule.")
    param: str | None = Field(None, description="The field, parameter or header at fault.")


class Health(BaseModel):
    """GET /healthz: whether the farm takes work."""

    status: str = Field(description="ok, or degraded")
    jobs: str = Field(description="ok, or 'unavailable: <why>' for Ray's Jobs API")


_WHY = {
    400: "The body is not well-formed JSON or YAML (param: body).",
    401: "No valid bearer token (WWW-Authenticate: Bearer).",
    404: "No such resource for this tenant.",
    409: "The resource is not in a state that allows this.",
    413: "The body is over the deployment's max_body_bytes.",
    415: "The Content-Type is not one the operation reads.",
    416: "The Range is outside the file.",
    422: "A field breaks a rule: the schema's, the deployment's limits, the model's or the "
    "tenant's prompt policy; param names the field.",
    429: "Over one of the tenant's quotas (Retry-After; param names the quota).",
    503: "The Director or Ray's Jobs API did not answer in time (busy: Retry-After).",
}
# (method, path) -> the error statuses the operation answers (401 is added where secured).
ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/v1/videos"): (400, 413, 415, 422, 429, 503),
    ("GET", "/v1/videos/{video_id}"): (404, 422, 503),
    ("DELETE", "/v1/videos/{video_id}"): (404, 503),
    ("GET", "/v1/videos/{video_id}/content"): (404, 409, 422, 503),
    ("POST", "/v1/campaigns"): (400, 409, 413, 415, 422, 429, 503),
    ("GET", "/v1/campaigns"): (),
    ("GET", "/v1/models"): (),
    ("GET", "/v1/campaigns/{campaign_id}"): (404,),
    ("POST", "/v1/campaigns/{campaign_id}/cancel"): (404, 503),
    ("POST", "/v1/campaigns/{campaign_id}/resume"): (404, 409, 429, 503),
    ("GET", "/v1/campaigns/{campaign_id}/manifest"): (404,),
    ("GET", "/dashboard/api/campaigns/{campaign_id}/variants"): (404, 422),
    ("GET", "/dashboard/media/{campaign_id}/{file}"): (404, 416),
}
# Success bodies that are not JSON.
MEDIA = {
    ("GET", "/v1/videos/{video_id}/content"): ("video/mp4", "image/jpeg"),
    ("GET", "/v1/campaigns/{campaign_id}/manifest"): ("application/vnd.apache.parquet",),
    ("GET", "/dashboard/media/{campaign_id}/{file}"): ("video/mp4", "image/jpeg"),
}
_BYTES = {"type": "string", "format": "binary"}
# Rules a JSON schema cannot state; a schema-valid request may still be refused by them.
_SHORT = (
    "invalid_request",
    "seconds",
    f"seconds x fps must render at least {MIN_FRAMES} frames (the watermark's minimum)",
)
_PROMPT_BYTES = ("limit_exceeded", r"(negative_)?prompt", "at most max_prompt_bytes UTF-8 bytes")
BEYOND_SCHEMA: dict[tuple[str, str], tuple[tuple[str, str, str], ...]] = {
    ("POST", "/v1/videos"): (
        _SHORT,
        _PROMPT_BYTES,
        ("policy_violation", r"(negative_)?prompt", "the tenant's prompt policy"),
    ),
    ("POST", "/v1/campaigns"): (
        (
            "invalid_campaign",
            r"durations\[\d+\]",
            f"each duration x fps renders at least {MIN_FRAMES} frames (the watermark's minimum)",
        ),
        ("invalid_campaign", r"formats\[\d+\]\.aspect", "width:height matches aspect within 2%"),
        ("invalid_campaign", r"(products\[\d+\]\.id|formats\[\d+\]\.name)", "unique in its list"),
        ("invalid_campaign", r"storyboard\[\d+\]\.(start|end)", "shots in order, start < end"),
        (
            "invalid_campaign",
            r"products\[\d+\]\.reference_image|brand\.logo",
            f"an image (PNG, JPEG or WebP, at most {MAX_PIXELS:,} pixels) on storage this "
            "farm reads images from (farm.campaign.images; by default none)",
        ),
        (
            "limit_exceeded",
            r"seeds",
            "products x locales x formats x durations x seeds <= max_variants",
        ),
        ("limit_exceeded", r"formats\[\d+\]", "width x height <= max_pixels"),
        (
            "limit_exceeded",
            r"(locales\..+|storyboard\[\d+\])\.(negative_)?prompt",
            "the filled-in prompt is at most max_prompt_bytes UTF-8 bytes",
        ),
        ("policy_violation", r".+", "the tenant's prompt policy"),
    ),
}


def _sides(limit: int, multiple: int) -> list[int]:
    return list(range(multiple, limit + 1, multiple))


def size_pattern(limits: Limits, geometry: Geometry) -> str:
    """The exact pattern of the sizes this deployment renders (`farm.serve.wire.SIZE` syntax).

    Sides are multiples of the model's pixel multiple up to max_side, and width x height is
    at most max_pixels: widths are grouped by the tallest height they allow.
    """
    m = geometry.pixel_multiple
    groups: dict[int, list[int]] = {}
    for w in _sides(limits.max_side, m):
        tallest = min(limits.max_side, limits.max_pixels // w // m * m)
        if tallest >= m:
            groups.setdefault(tallest, []).append(w)
    alternatives = [
        f"0*(?:{'|'.join(map(str, ws))})[xX]0*(?:{'|'.join(map(str, _sides(h, m)))})"
        for h, ws in sorted(groups.items(), reverse=True)
    ]
    return "^ *(?:" + "|".join(alternatives) + ") *$"


def shortest_seconds(geometry: Geometry, max_fps: int) -> float:
    """The shortest clip that is long enough for the watermark at some fps up to `max_fps`.

    A true minimum for the schema: anything shorter is refused at every fps (the highest
    fps makes the most frames). Found by bisection on the owners' own rules
    (`Geometry.frames_for`, `farm.output.watermark.length_problem`).
    """

    def long_enough(seconds: float) -> bool:
        frames = geometry.frames_for(seconds, max_fps)
        return length_problem(seconds, max_fps, frames) is None

    lo, hi = 0.0, 1.0
    while not long_enough(hi):
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (lo, mid) if long_enough(mid) else (mid, hi)
    return hi


def _video_request(schema: dict, limits: Limits, geometry: Geometry, model: str) -> None:
    props = schema["properties"]
    props["model"] = {**props["model"], "enum": [model, None]}  # or omitted
    props["seconds"]["minimum"] = shortest_seconds(geometry, props["fps"]["maximum"])
    props["seconds"]["maximum"] = limits.max_seconds
    props["steps"]["maximum"] = limits.max_steps
    props["size"]["pattern"] = size_pattern(limits, geometry)
    for name in ("prompt", "negative_prompt"):  # a character is at least one byte
        props[name]["maxLength"] = limits.max_prompt_bytes
    # A default over this deployment's limits is refused like any value: the field is
    # then required (omitting it is a 422 naming the limit).
    for name in ("seconds", "steps", "size"):
        try:
            limits.check(VideoRequest(prompt="x", **{name: props[name]["default"]}))
        except RequestError:
            schema["required"] = sorted({*schema.get("required", ()), name})
            del props[name]["default"]


_PLACEHOLDER = r"\{\{|\}\}|\{(?:brand|description|headline|product)\}"


def _campaign_spec(defs: dict, limits: Limits, geometry: Geometry, model: str) -> dict:
    """The spec's JSON schema with the rules the farm holds a spec to over the API: the
    served `model` (the only one a spec may name) and its `geometry`."""
    schema = CampaignSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    props = schema["properties"]
    props.pop("output_root")  # refused over the API: outputs go under the tenant's storage
    props["steps"]["maximum"] = min(props["steps"]["maximum"], limits.max_steps)
    seconds = min(MAX_DURATION_S, limits.max_seconds)
    props["durations"]["items"]["maximum"] = seconds
    fps = props["fps"]["maximum"]
    props["durations"]["items"]["minimum"] = shortest_seconds(geometry, fps)
    props["durations"]["uniqueItems"] = True
    props["preset"] |= {"enum": [model], "default": model}
    locales = props["locales"]
    ((code, copy_ref),) = locales.pop("patternProperties").items()
    locales["propertyNames"] = {"pattern": code, "maxLength": 128}  # NAME: 128 at most
    locales["additionalProperties"] = copy_ref
    fmt = defs["Format"]["properties"]
    fmt["aspect"]["pattern"] = _ASPECT.pattern
    for side in ("width", "height"):
        fmt[side]["maximum"] = min(MAX_SIDE, limits.max_side)
        fmt[side]["multipleOf"] = geometry.pixel_multiple
    slug_len = NAME.pattern.rsplit(",", 1)[1].rstrip("}")  # NAME: 1 + up to N characters
    for kind, field in (("Product", "id"), ("Format", "name")):
        defs[kind]["properties"][field]["maxLength"] = int(slug_len) + 1
    text, mark = f"(?:[^{{}}]|{_PLACEHOLDER})", f"(?:[^{{}}{SPACE}]|{_PLACEHOLDER})"
    template = f"^{text}*{mark}{text}*$"  # placeholders known, braces doubled, not blank
    for kind in ("LocaleCopy", "Shot"):  # NonBlank's own pattern is in its JSON schema
        defs[kind]["properties"]["prompt"]["pattern"] = template
    return schema


def _errors(op: dict, key: tuple[str, str], secured: bool) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's HTTPValidationError: ours is ErrorBody
    statuses = ERRORS.get(key, ())
    for status in sorted({*statuses, *((401,) if secured else ())}):
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        response: dict[str, Any] = {"description": _WHY[status], "content": body}
        header = {401: "WWW-Authenticate", 429: "Retry-After"}.get(status)
        if header:
            response["headers"] = {header: {"required": True, "schema": {"type": "string"}}}
        responses[str(status)] = response


def deployment_schema(
    app: FastAPI, limits: Limits, geometry: Geometry, model: str | None = None
) -> dict[str, Any]:
    """The OpenAPI schema of `app` served with these limits by this model (`model`: its
    reference, default the geometry's model name)."""
    model = model or geometry.model
    schema = copy.deepcopy(FastAPI.openapi(app))
    components = schema.setdefault("components", {})
    defs = components.setdefault("schemas", {})
    for body in (ErrorBody, Health):
        defs[body.__name__] = body.model_json_schema()
    defs.pop("HTTPValidationError", None)
    defs.pop("ValidationError", None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "A tenant's token."},
        "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE},
    }
    _video_request(defs["VideoRequest"], limits, geometry, model)
    spec = _campaign_spec(defs, limits, geometry, model)
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            key = (method.upper(), path)
            secured = path not in PUBLIC_PATHS
            if secured:
                op["security"] = [{"bearer": []}, {"cookie": []}]
            _errors(op, key, secured)
            if key in MEDIA:
                ok = next(s for s in op["responses"] if s.startswith("2"))
                op["responses"][ok]["content"] = {m: {"schema": _BYTES} for m in MEDIA[key]}
            if key in BEYOND_SCHEMA:
                op["x-rules-beyond-schema"] = [
                    {"code": c, "param": p, "rule": r} for c, p, r in BEYOND_SCHEMA[key]
                ]
    health = schema["paths"]["/healthz"]["get"]["responses"]
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}
    health["200"] = {"description": "The farm takes work.", "content": body}
    health["503"] = {"description": "Degraded: Ray's Jobs API is unusable.", "content": body}
    campaigns = schema["paths"]["/v1/campaigns"]["post"]
    campaigns["requestBody"] = {
        "required": True,
        "description": "A campaign spec, as JSON or YAML.",
        "content": {media: {"schema": spec} for media in SPEC_TYPES},
    }
    schema["info"]["x-limits"] = limits.model_dump()
    return schema


async def served_schema(request: Request) -> JSONResponse:
    """GET /openapi.json: the schema of the deployment answering (its limits, its model)."""
    api = deployment(request)
    schema = getattr(api, "openapi_schema", None)
    if schema is None:
        schema = deployment_schema(request.app, api.limits, api.geometry, api.model)
        api.openapi_schema = schema  # once per replica: the app and its limits are fixed
    root_path = request.scope.get("root_path", "").rstrip("/")
    if root_path:  # behind a route prefix: clients call the prefixed URLs
        schema = {**schema, "servers": [{"url": root_path}]}
    return JSONResponse(schema)


def install(app: FastAPI) -> None:
    """Serve `served_schema` at ``app.openapi_url`` instead of FastAPI's deployment-blind one."""
    for i, route in enumerate(app.router.routes):
        if isinstance(route, Route) and route.path == app.openapi_url:
            app.router.routes[i] = Route(app.openapi_url, served_schema, include_in_schema=False)
            return
    raise RuntimeError(f"no route {app.openapi_url} to replace")
