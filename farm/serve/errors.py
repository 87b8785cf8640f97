"""How the Api answers what it refuses: every error is JSON {code, message, param?}.

`install(app)` adds the body limit (413 before a body over ``max_body_bytes`` is parsed)
and the exception handlers:

- a `RequestError` is answered as it says (`farm.serve.wire`);
- a body that is not JSON is a 400 ``invalid_body`` with param ``body`` (never the
  parser's character offset); a JSON route sent another Content-Type is a 415;
- any other validation error is a 422 ``invalid_request`` naming the field(s);
- a 405 lists in ``Allow`` every method the path has (FastAPI has one route per method,
  and Starlette would name only the first route's);
- anything unexpected is a 500 ``internal_error``, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from farm.serve.auth import deployment
from farm.serve.wire import RequestError

log = logging.getLogger(__name__)
_CODES = {
    400: "invalid_body",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


class BodyTooLarge(HTTPException):
    """413: a request body over the deployment's max_body_bytes."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is over the limit max_body_bytes={limit}")


class BodyLimit:
    """ASGI middleware: 413 for a body over the deployment's max_body_bytes, unparsed.

    A declared Content-Length over the limit is refused before any of the body is read;
    a chunked body is counted as it arrives and refused at the first byte over.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = deployment(Request(scope)).max_body_bytes
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await _send_json(
                send, RequestError(413, "too_large", BodyTooLarge(limit).detail)
            )
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _send_json(send: Any, error: RequestError) -> None:
    response = JSONResponse(error.body(), status_code=error.status)
    await send(
        {"type": "http.response.start", "status": error.status, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


def _error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(RequestError(status, code, message, param).body(), status_code=status)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 415 for another media type, else 422 naming fields."""
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e for e in errors if e["type"] == "json_invalid").get("ctx", {})
        message = f"body: not valid JSON ({detail.get('error', 'decode error')})"
        return _error(400, "invalid_body", message, "body")
    body_only = [e for e in errors if tuple(e["loc"]) == ("body",)]
    kind = request.headers.get("content-type", "")
    if body_only and body_only[0]["type"] != "missing" and not _is_json(kind):
        message = f"Content-Type {kind or '(none)'!r} is not application/json"
        return _error(415, "unsupported_media_type", message, "Content-Type")
    skip = ("body", "query", "path")
    params = [".".join(str(p) for p in e["loc"] if p not in skip) for e in errors]
    message = "; ".join(f"{p or 'body'}: {e['msg']}" for p, e in zip(params, errors, strict=True))
    param = (params[0] or "body") if params else None
    return _error(422, "invalid_request", message or "invalid request", param)


def _routes(router: Any) -> Iterator[Any]:
    """Every route of `router`, including those of included routers, at any depth."""
    for route in router.routes:
        nested = getattr(route, "original_router", None)  # FastAPI >= 0.137 nests them
        yield from _routes(nested) if nested is not None else (route,)


def allowed_methods(request: Request) -> list[str]:
    """Every method a route of the app answers at this request's path."""
    methods: set[str] = set()
    for route in _routes(request.app.router):
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route_methods)  # PARTIAL: the path matches, the method not
    return sorted(methods)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    code = _CODES.get(exc.status_code, "http_error")
    body = RequestError(exc.status_code, code, str(exc.detail)).body()
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(body, status_code=exc.status_code, headers=headers or None)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")


def install(app: FastAPI) -> None:
    """Add the body limit and the error handlers to `app` (before `serve.ingress` copies it)."""
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _internal)
