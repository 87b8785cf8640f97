"""Is Ray's Jobs API usable? The check behind /healthz, quick, bounded and cached.

A campaign is submitted through the dashboard head (``jobs_address``), which hands it to
the dashboard agent of the head node. Either can be missing while the ingress answers:
the head down, or the agent never registered because its port was taken (an orphan of an
earlier farm holding 52365), when every submit waits about a minute and fails. So the
check asks the head for its version and, on the Api's own cluster, looks the head
node's agent up the way the head does and asks it for its health. It never takes
longer than ``timeout_s``; a result is reused for ``ttl_s`` so probes cost nothing.
"""

from __future__ import annotations

import asyncio
import json
import time

import requests

__all__ = ["JobsHealth", "check_jobs_api"]

OK = "ok"


def check_jobs_api(address: str, timeout_s: float) -> str:
    """The health of Ray's Jobs API at `address`: "ok" or "unavailable: <why>" (blocking)."""
    from farm.jobs.cluster import RayAuthError, auth_headers

    try:
        headers = auth_headers(address)  # the same token a campaign's submission sends
    except RayAuthError as e:
        return f"unavailable: {e}"
    try:
        r = requests.get(f"{address.rstrip('/')}/api/version", headers=headers, timeout=timeout_s)
    except requests.RequestException as e:
        return f"unavailable: {address} does not answer ({type(e).__name__})"
    if r.status_code != 200:
        return f"unavailable: {address}/api/version answered {r.status_code}"
    return _head_agent(timeout_s)


def _head_agent(timeout_s: float) -> str:
    """Whether the head node's dashboard agent, which runs submitted jobs, is up."""
    import ray

    if not ray.is_initialized():  # not inside the cluster (a test's in-process Api)
        return OK
    from ray._private import ray_constants
    from ray.dashboard.consts import DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX
    from ray.experimental.internal_kv import _internal_kv_get

    head = _internal_kv_get(
        ray_constants.KV_HEAD_NODE_ID_KEY, namespace=ray_constants.KV_NAMESPACE_JOB
    )
    if not head:
        return "unavailable: the head node is not registered yet"
    key = f"{DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX}{head.decode()}"
    value = _internal_kv_get(key, namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    if not value:
        return (
            "unavailable: the head node's dashboard agent is not registered (its port "
            "may be held by another process; see dashboard_agent.log)"
        )
    ip, http_port, _ = json.loads(value)
    url = f"http://{ip}:{http_port}/api/local_raylet_healthz"
    try:
        r = requests.get(url, timeout=timeout_s)
    except requests.RequestException as e:
        return f"unavailable: the dashboard agent at {ip}:{http_port} does not answer ({e})"
    if r.status_code != 200:
        return f"unavailable: the dashboard agent at {ip}:{http_port} answered {r.status_code}"
    return OK


class JobsHealth:
    """The Jobs API's health for /healthz: one check at a time, bounded, reused a while."""

    def __init__(self, address: str, *, timeout_s: float = 2.0, ttl_s: float = 5.0):
        self.address = address
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._result: tuple[float, str] | None = None  # (when, result)
        self._running: asyncio.Future | None = None

    async def check(self) -> str:
        """The Jobs API's health, "ok" or "unavailable: <why>", at most `timeout_s` late."""
        now = time.monotonic()
        if self._result is not None and now - self._result[0] < self.ttl_s:
            return self._result[1]
        if self._running is None or self._running.done():
            # One thread at a time: a hung head must not pile up a thread per probe.
            self._running = asyncio.ensure_future(
                asyncio.to_thread(check_jobs_api, self.address, self.timeout_s)
            )
        try:
            # Two requests of timeout_s each at most; the answer waits for neither longer.
            result = await asyncio.wait_for(asyncio.shield(self._running), self.timeout_s)
        except TimeoutError:
            result = f"unavailable: {self.address} did not answer within {self.timeout_s:g} s"
        except Exception as e:
            result = f"unavailable: {type(e).__name__}: {e}"
        self._result = (time.monotonic(), result)
        return result
