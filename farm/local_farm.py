"""The embedded default: a whole farm on this machine (local Ray, the Serve app, Jobs).

`farm demo` and `farm serve` run inside it. Every socket it opens listens on 127.0.0.1 only:
Ray runs any code a client sends, so none of its ports (GCS, raylet, object manager,
dashboard and its agent, metrics, workers and replicas) may face a network. Ray binds its
servers to loopback when the node's own address is 127.0.0.1, so the node is given that
address; the API and the dashboard are given 127.0.0.1 as their hosts.

Jobs attach to this farm's Ray and no other. A job's driver finds its cluster through the
address file in the node's temp directory; Ray writes that file only for `ray start`, and
without it the Jobs API hands drivers any Ray it sees running on the machine (another
user's, a test's). So each local farm has its own temp directory, named by user and API
port, with its GCS address written there.

Shutdown is the same on Ctrl-C, SIGTERM or an error: Serve, then Ray, then any process of
this farm's Ray that outlived it (a job's driver, a worker, an agent still holding its port)
is killed, so a restarted farm finds its ports free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve
from ray.serve import Application

from farm.processes import descendants, kill_leftovers
from farm.serve.app import farm_app
from farm.serve.resources import check_fits, free_resources, serve_app_groups
from farm.settings import Settings, get_settings, setting_default

APP_NAME = setting_default("app_name")  # the name the local farm deploys its app under
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LocalFarm:
    """Where the local farm answers."""

    dashboard_url: str  # Ray dashboard and Jobs API
    api_url: str  # the farm's HTTP API (OpenAPI at /docs)
    app_name: str = APP_NAME
    session_dir: str = ""  # Ray's session directory: every process of this farm names it


def serve_settings(settings_file: str = "") -> Settings:
    """The settings of `farm serve`: `settings_file` if given, else $FARM_SETTINGS_FILE.

    FARM_* environment variables override either file, as they do for ``serve run``.
    """
    return Settings.from_yaml(settings_file) if settings_file else get_settings()


def demo_settings(root: str, model: str) -> Settings:
    """The settings of `farm demo`: the environment's, with its storage root and model.

    No tokens are needed: the demo serves 127.0.0.1 only, as tenant "default"; the Director
    takes no CPU of its own so a small machine's cores go to rendering.
    """
    return Settings(storage_root=root, model=model, director_num_cpus=0, allow_anonymous=True)


def local_app(settings: Settings, jobs_address: str) -> Application:
    """The Serve app a local farm runs: `settings`, submitting campaigns to this Ray."""
    # Both name this process's own Ray and app, whatever the settings say about a cluster;
    # model_copy, as a re-validation would read the environment over a from_yaml's file.
    return farm_app(
        settings.model_copy(update={"jobs_address": jobs_address, "app_name": APP_NAME})
    )


def ray_temp_dir(api_port: int) -> Path:
    """This farm's Ray temp directory (sessions, logs, its address file): one per user and port.

    Short, as Ray's socket paths under it must fit 107 bytes; stable across restarts, so a
    restarted farm's logs sit beside the last run's.
    """
    return Path(tempfile.gettempdir()) / f"farm-{os.getuid()}-{api_port}"


@contextlib.contextmanager
def local_farm(settings: Settings, *, dashboard_port: int, api_port: int) -> Iterator[LocalFarm]:
    """Start local Ray + the Serve app for `settings`; shut both down on exit.

    Raises `farm.serve.resources.Unschedulable` (after stopping Ray) when the app's actors
    at start do not fit this machine. SIGTERM stops the farm as Ctrl-C does.
    """
    temp_dir = ray_temp_dir(api_port)
    with _loopback_node():
        sigterm = _SigtermAsInterrupt()
        context = ray.init(
            address="local",
            _temp_dir=str(temp_dir),
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            dashboard_port=dashboard_port,
            log_to_driver=False,
            _node_ip_address=LOOPBACK,
            # Serve replicas bind one server to all interfaces: the hook moves it to loopback.
            runtime_env={"worker_process_setup_hook": "farm.loopback.bind_replicas_to_loopback"},
        )
        sigterm.arm()  # after ray.init, which installs its own handler
        node = ray._private.worker.global_worker.node
        # What `ray start` writes: the Jobs API gives it to drivers as their RAY_ADDRESS.
        ray._private.utils.write_ray_address(node.gcs_address, str(temp_dir))
        session_dir = node.get_session_dir_path()
        roots = {p.process.pid for infos in node.all_processes.values() for p in infos}
        try:
            # Ray waits forever for actors that cannot be placed: refuse them here instead.
            check_fits(serve_app_groups(settings), free_resources())
            serve.start(http_options={"host": LOOPBACK, "port": api_port})
            # Campaign jobs go to this Ray's Jobs API and render on this app's Renderer pool.
            dashboard = f"http://{context.dashboard_url}"
            serve.run(local_app(settings, dashboard), name=APP_NAME, route_prefix="/")
            yield LocalFarm(dashboard, f"http://{LOOPBACK}:{api_port}", session_dir=session_dir)
        finally:
            sigterm.disarm()  # a SIGTERM during shutdown must not cut it short
            tree = descendants(roots)  # before Ray goes: orphans lose their parent links
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
            kill_leftovers(tree, session_dir)
            sigterm.restore()


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Within the block, Ray takes this machine for a one-node Ray whose address is 127.0.0.1.

    ray.init turns a node address of 127.0.0.1 into the machine's network address unless
    Ray is told it runs no cluster (its switch for Windows and macOS, where that is the
    default). Then the node's servers bind to 127.0.0.1, and the processes it starts
    (workers, job drivers, which inherit the variable) take 127.0.0.1 as theirs too.
    """
    from ray._private import ray_constants

    saved_env = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: this process imported Ray
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved_env


class _SigtermAsInterrupt:
    """While armed, SIGTERM raises KeyboardInterrupt: the farm stops as on Ctrl-C.

    Ray's own handler (set by ray.init) kills the node's processes and exits at once, so
    Serve and the job drivers never get their shutdown and orphans keep Ray's ports.
    Disarmed, SIGTERM is ignored until `restore` puts back the handler from before.
    Only the main thread can set handlers; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.main = threading.current_thread() is threading.main_thread()
        self.previous = signal.getsignal(signal.SIGTERM) if self.main else None
        self.armed = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt(f"signal {signum}")

    def arm(self) -> None:
        if self.main:
            self.armed = True
            signal.signal(signal.SIGTERM, self._handle)

    def disarm(self) -> None:
        self.armed = False

    def restore(self) -> None:
        if self.main:
            signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)
