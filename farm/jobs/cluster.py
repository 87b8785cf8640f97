"""What the farm's Jobs API client must agree on with the Ray cluster: auth and interpreter.

Interpreter: a campaign job's entrypoint runs ``{python} -m jobs.render_campaign ...`` on the
cluster, through a shell whose PATH is the cluster's, not the venv's. `job_python` names it:
the ``jobs_python`` setting (``FARM_JOBS_PYTHON``) for a cluster with its own environment,
else this process's own interpreter, which is the cluster's when the cluster runs on this
machine from this checkout (`farm serve`, `farm demo`, a local ``ray start --head``).

Auth: Ray (2.60) starts every cluster that ``ray.init()`` creates with token auth on unless
``RAY_AUTH_MODE=disabled``: `farm serve` and `farm demo` run such a Ray, with the token in
``~/.ray/auth_token`` (created there if missing). Ray's ``JobSubmissionClient`` sends a token
only when ``RAY_AUTH_MODE=token`` is set in the client's own environment, so a
``farm campaign ...`` from a fresh shell would be refused (401, "RAY_AUTH_MODE is currently
'disabled'"). The farm's client asks the cluster instead: the dashboard answers
``GET /api/authentication_mode`` without a token, and when it says ``token`` the client sends
the token that Ray's own loader finds (``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``
names, or ``~/.ray/auth_token``; for a remote cluster, the head's token copied there).
A cluster with auth disabled is never sent the token.
"""

from __future__ import annotations

import shlex
import sys

from farm.jobs.options import JobOptions

__all__ = ["RayAuthError", "auth_headers", "cluster_auth_mode", "job_entrypoint", "job_python"]

MODE_PATH = "/api/authentication_mode"  # public on Ray's dashboard: no token needed
TOKEN_PLACES = "RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token"


class RayAuthError(RuntimeError):
    """The cluster wants a Ray token and this machine has none; the message says where to put it."""


def cluster_auth_mode(address: str, timeout_s: float = 10.0) -> str | None:
    """The cluster's RAY_AUTH_MODE ("token" or "disabled"); None if it cannot be asked.

    None covers an address that is not an HTTP(S) URL, a cluster that does not answer (the
    Jobs client then raises its own, clearer connection error) and a Ray too old to say.
    """
    import requests

    if not address.startswith(("http://", "https://")):
        return None
    try:
        reply = requests.get(address.rstrip("/") + MODE_PATH, timeout=timeout_s)
        if reply.status_code != 200:
            return None
        mode = reply.json().get("authentication_mode")
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return mode if isinstance(mode, str) else None


def auth_headers(address: str) -> dict[str, str]:
    """HTTP headers that authenticate this client to the Ray cluster at `address`.

    Empty unless the cluster runs with token auth; then ``{"authorization": "Bearer ..."}``
    with Ray's token, or a `RayAuthError` that says where the token belongs.
    """
    if cluster_auth_mode(address) != "token":
        return {}
    # Ray's own loader (public in ray._raylet, not in ray's top-level API): the same lookup
    # order as every Ray process, whatever RAY_AUTH_MODE this client's environment has.
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    headers = loader.get_token_for_http_header(ignore_auth_mode=True)
    if not headers:
        raise RayAuthError(
            f"the Ray cluster at {address} requires token authentication and no token was "
            f"found in {TOKEN_PLACES}; `ray get-auth-token` on the cluster's head prints it"
        )
    return dict(headers)


def job_python() -> str:
    """The interpreter command a campaign job runs on the cluster (see the module doc)."""
    from farm.settings import get_settings

    return get_settings().jobs_python or sys.executable


def job_entrypoint(root: str, cid: str, options: JobOptions, python: str | None = None) -> str:
    """The campaign job's shell command; `python`: a command line (default `job_python()`)."""
    args = ["-m", "jobs.render_campaign", "--root", root, "--campaign-id", cid]
    return shlex.join([*shlex.split(python or job_python()), *args, *options.argv()])
