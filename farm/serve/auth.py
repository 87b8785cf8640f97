"""Who is asking: bearer-token auth for the Api, one tenant per token.

Every route of the Api's FastAPI app runs `authenticate` (an app-wide dependency), except
the public ones: ``/healthz`` and the OpenAPI docs (``/docs``, ``/redoc``, ``/openapi.json``,
which FastAPI serves outside the dependency system). A client sends
``Authorization: Bearer <token>``; a browser may instead carry the token in the
``farm_token`` cookie (the dashboard). The token's sha256 (`farm.settings.hash_token`) is
looked up in the deployment's token table; an unknown, missing or malformed credential is a
401 ``{"code": "unauthorized"}`` with ``WWW-Authenticate: Bearer``. With
``allow_anonymous`` (the local demo), a request with no credential at all is tenant
``default``; a wrong credential is still a 401.

Routes read the tenant with `current_tenant(request)` (or by declaring
``tenant: str = Depends(authenticate)``: FastAPI runs a dependency once per request).
New routes added to the same app, e.g. ``app.include_router(dashboard_router)``, are
covered automatically because the dependency is on the app itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from farm.serve.wire import ANONYMOUS_TENANT

__all__ = [
    "ANONYMOUS_TENANT",
    "COOKIE",
    "PUBLIC_PATHS",
    "Auth",
    "Unauthorized",
    "authenticate",
    "current_tenant",
    "deployment",
]

COOKIE = "farm_token"
# Route paths (templates, without any Serve route prefix) that need no credential.
PUBLIC_PATHS = frozenset({"/healthz"})


class Unauthorized(HTTPException):
    """401: no valid credential; rendered by the Api as {code: unauthorized, message}."""

    def __init__(self, message: str):
        super().__init__(401, message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Auth:
    """A deployment's token table: sha256 hex of a token -> tenant, and the anonymous rule."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    allow_anonymous: bool = False

    def tenant(self, token: str | None) -> str:
        """The tenant `token` belongs to (None: no credential given); raises Unauthorized."""
        if token is None:
            if self.allow_anonymous:
                return ANONYMOUS_TENANT
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        if not token:
            raise Unauthorized("empty bearer token")
        tenant = self.tokens.get(hashlib.sha256(token.encode("utf-8", "replace")).hexdigest())
        if tenant is None:
            raise Unauthorized("invalid bearer token")
        return tenant


def deployment(request: Request) -> Any:
    """The Api instance serving `request`: under Serve the replica's, in-process the app's.

    In-process use (tests, fuzzing) puts an instance on ``app.state.farm_api``.
    """
    api = getattr(request.app.state, "farm_api", None)
    if api is not None:
        return api
    from ray import serve  # only under Serve

    return serve.get_replica_context().servable_object


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return token.strip()
    return request.cookies.get(COOKIE)


async def authenticate(request: Request) -> str:
    """The requesting tenant (also stored on ``request.state.tenant``); 401 if not allowed."""
    route = request.scope.get("route")
    if getattr(route, "path", None) in PUBLIC_PATHS:
        request.state.tenant = None
        return ""
    auth: Auth = deployment(request).auth
    tenant = auth.tenant(_credential(request))
    request.state.tenant = tenant
    return tenant


def current_tenant(request: Request) -> str:
    """The tenant `authenticate` found for this request (routes behind the auth dependency)."""
    tenant = getattr(request.state, "tenant", None)
    if not tenant:
        raise Unauthorized("request is not authenticated")
    return tenant
