"""A private Ray head with the Jobs API, for tests and benchmarks that need real Ray Jobs.

`ray start --head --block` on loopback with every port chosen free (two local clusters on
one machine otherwise clash on the default agent ports), token auth off for this loopback
cluster (driver and client agree), and a teardown that stops unfinished jobs, the head and
every process left behind that names the head's temp dir or one of `markers`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from farm.jobs.state import TERMINAL_JOB

VENV_BIN = Path(sys.executable).parent
_PORTS = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "runtime-env-agent-port",
)


@dataclass(frozen=True)
class RayHead:
    dashboard_url: str  # Jobs API address
    gcs_address: str  # for ray.init(address=...)
    temp_dir: str
    metrics_port: int  # the node's MetricsExportPort: Prometheus scrapes /metrics here


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _leftovers(markers: list[str]) -> list[int]:
    """PIDs of live processes whose command line names one of `markers`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in markers):
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def ray_head(num_cpus: int = 4, *, markers: tuple[str, ...] = ()) -> Iterator[RayHead]:
    """Start a private head, wait until its Jobs API answers, and clean up after it."""
    from ray.job_submission import JobSubmissionClient

    temp_dir = tempfile.mkdtemp(prefix="farmray-", dir="/tmp")  # short: socket paths
    ports = free_ports(len(_PORTS))
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback test cluster; the client agrees
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run `python`
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--dashboard-host=127.0.0.1"]
    cmd += [f"--{name}={port}" for name, port in zip(_PORTS, ports, strict=True)]
    cmd += [f"--num-cpus={num_cpus}", "--include-dashboard=true", "--disable-usage-stats"]
    cmd += [f"--temp-dir={temp_dir}"]
    log = open(Path(temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 (closed at teardown)
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{ports[1]}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None:
                text = (Path(temp_dir) / "ray-start.log").read_text(errors="replace")
                raise RuntimeError(f"ray start exited {head.returncode}:\n{text[-3000:]}")
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        metrics_port = ports[_PORTS.index("metrics-export-port")]
        yield RayHead(address, f"127.0.0.1:{ports[0]}", temp_dir, metrics_port)
    finally:
        with contextlib.suppress(Exception):  # let jobs end before their cluster does
            client = JobSubmissionClient(address)
            for job in client.list_jobs():
                if str(job.status.value) not in TERMINAL_JOB and job.submission_id:
                    client.stop_job(job.submission_id)
        head.send_signal(signal.SIGTERM)  # --block: kills its GCS, raylet, dashboard, ...
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        time.sleep(1)
        for pid in _leftovers([temp_dir, *markers]):  # workers, job drivers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
