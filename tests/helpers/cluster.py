"""The test session's one local Ray: a private head, this process as its driver, and Serve.

`tests/conftest.py` starts it lazily (fixtures `ray_cluster` and `serve_http`) the first
time a module asks, and stops it once, at session end. Modules share it one after
another: each deploys its own Serve app with `deployed(...)`, which deletes the app and
waits for its CPUs to come back, so the next module finds an empty Serve and the whole
head to itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import ray
import requests
from ray import serve
from ray.serve import Application

from farm.serve.app import FarmAppArgs, build_app
from farm.testing.ray_head import RayHead, free_ports, ray_head

# Logical CPUs of the head: what the hungriest module holds at once (test_reliability's
# three Renderer replicas at 1 CPU each; a Ray Job's driver and its 2 model actors;
# test_app's two Renderers), not the box's cores. Director and Api take 0 in the tests.
HEAD_CPUS = 4


def connect(head: RayHead) -> None:
    """Make this process a driver of `head`, unless it already is one."""
    if not ray.is_initialized():
        ray.init(address=head.gcs_address, log_to_driver=False)


@contextlib.contextmanager
def local_cluster(markers: tuple[str, ...] = ()) -> Iterator[RayHead]:
    """Start the private head and connect this process to it; stop both on exit."""
    with ray_head(num_cpus=HEAD_CPUS, markers=markers) as head:
        connect(head)
        try:
            yield head
        finally:
            ray.shutdown()


@contextlib.contextmanager
def serve_started(head: RayHead) -> Iterator[str]:
    """Start Serve on the head, its HTTP proxy on a free loopback port: yields the base URL."""
    connect(head)
    port = free_ports(1)[0]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):  # the head goes next, and takes Serve with it
            connect(head)
            serve.shutdown()


@contextlib.contextmanager
def driver_detached() -> Iterator[None]:
    """Step off the shared cluster for code that runs its own local Ray in this process.

    `ray.init` refuses a second cluster while this process is a driver of one; after the
    block, the process is connected to the shared cluster again (its Serve keeps running).
    """
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    ray.shutdown()
    try:
        yield
    finally:
        if address is not None:
            ray.shutdown()  # whatever the block left connected
            ray.init(address=address, log_to_driver=False)


def _cpus_free() -> float:
    return ray.available_resources().get("CPU", 0.0)


def _routes(http: str) -> dict[str, str]:
    """The proxy's route table: route prefix -> app name (empty while it is not ready)."""
    r = requests.get(f"{http}/-/routes", timeout=10)
    return r.json() if r.status_code == 200 else {}


def _wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def deployed(
    app: Application, name: str, route_prefix: str | None = None, *, http: str | None = None
) -> Iterator[None]:
    """Run `app` as the Serve application `name`; delete it on exit and wait for its CPUs.

    With `route_prefix` and `http` (the proxy's base URL), returns only once the proxy
    routes the prefix to this app, so the first request does not meet the last module's.
    """
    before = _cpus_free()
    serve.run(app, name=name, route_prefix=route_prefix)
    try:
        if route_prefix is not None and http is not None:
            _wait_until(
                lambda: _routes(http).get(route_prefix) == name,
                timeout_s=60,
                what=f"the proxy to route {route_prefix} to {name}",
            )
        yield
    finally:
        serve.delete(name)  # blocks until the app's replicas are gone
        _wait_until(
            lambda: _cpus_free() >= before, timeout_s=60, what=f"the CPUs of {name} to be free"
        )


def tiny_farm_app(root: object, **settings: object) -> Application:
    """The farm app as the serve tests run it: the tiny model, one single-threaded Renderer
    replica, a Director that takes no CPU of its own; `settings` (any FarmAppArgs) on top."""
    base = {
        "model": "tiny",
        "storage_root": str(root),
        "renderer_max_replicas": 1,
        "renderer_threads": 1,
        "director_num_cpus": 0,
    }
    return build_app(FarmAppArgs(**(base | settings)))
