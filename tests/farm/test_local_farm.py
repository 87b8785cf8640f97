"""`farm serve` as an operator runs it: loopback only, a clean stop on SIGTERM, honest starts.

Each test starts `farm serve` in a subprocess (its own process group), as a user or a
service manager does, and finds the farm's processes by its process tree and by the Ray
session directory that `farm serve` prints and every one of them names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from farm.processes import descendants, farm_processes
from farm.testing.ray_head import free_ports

FARM = str(Path(sys.executable).parent / "farm")
AGENT_PORT = 52365  # Ray's default dashboard agent port: the one an orphan kept
LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


@dataclass
class Served:
    """A running `farm serve`: its process, ports and what it printed."""

    proc: subprocess.Popen
    api: str
    dashboard_port: int
    api_port: int
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def session_dir(self) -> str:
        for line in self.lines:
            if "Ray logs " in line:
                return line.split("Ray logs ", 1)[1].split()[0].removesuffix("/logs")
        raise AssertionError(f"no session dir printed:\n{self.output()}")


def _start(tmp_path: Path, ports: tuple[int, int], **env: str) -> Served:
    dashboard_port, api_port = ports
    environ = os.environ | {
        "FARM_MODEL": "tiny",
        "FARM_STORAGE_ROOT": str(tmp_path / "farm-data"),
        "FARM_ALLOW_ANONYMOUS": "true",
        "COLUMNS": "400",
        **env,
    }
    cmd = [FARM, "serve", "--dashboard-port", str(dashboard_port), "--api-port", str(api_port)]
    proc = subprocess.Popen(
        cmd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    served = Served(proc, f"http://127.0.0.1:{api_port}", dashboard_port, api_port)

    def read() -> None:
        for line in proc.stdout:
            served.lines.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    return served


def _wait_up(served: Served, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(line.startswith("farm up") for line in served.lines):
        assert served.proc.poll() is None, served.output()
        assert time.monotonic() < deadline, f"farm serve did not come up:\n{served.output()}"
        time.sleep(0.5)


@contextlib.contextmanager
def farm_serve(tmp_path: Path, ports: tuple[int, int], **env: str) -> Iterator[Served]:
    """`farm serve` up; on exit it is stopped, and killed with its Ray if it will not stop."""
    served = _start(tmp_path, ports, **env)
    try:
        _wait_up(served)
        yield served
    finally:
        _stop(served)


def _stop(served: Served) -> None:
    session = next((line for line in served.lines if "Ray logs " in line), None)
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGINT)
        try:
            served.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(served.proc.pid, signal.SIGKILL)
    if session is not None:  # leave no Ray behind to hold ports for the next test
        for pid in farm_processes({}, served.session_dir()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ---- sockets and processes, from /proc ------------------------------------------------------


def _address(hex_addr: str) -> tuple[ipaddress._BaseAddress, int]:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return ipaddress.ip_address(raw[::-1]), int(port, 16)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # host-order words
    address = ipaddress.ip_address(words)
    return address.ipv4_mapped or address, int(port, 16)


def listening() -> dict[str, tuple[ipaddress._BaseAddress, int]]:
    """Every listening TCP socket on this machine: inode -> (address, port)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                out[fields[9]] = _address(fields[1])
    return out


def sockets_of(pids: set[int]) -> dict[tuple[str, int], set[int]]:
    """Listening sockets held by `pids`: (address, port) -> the pids holding it."""
    table = listening()
    held: dict[tuple[str, int], set[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in table:
                        address, port = table[target[8:-1]]
                        held.setdefault((str(address), port), set()).add(pid)
    return held


def tree_of(served: Served) -> dict[int, int]:
    """The farm's live processes: `farm serve`, its descendants, whatever names its session.

    pid -> start time, so `farm_processes(tree_of(...), session)` later says which live on.
    """
    return descendants({served.proc.pid}) | farm_processes({}, served.session_dir())


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    return "?"


def _listened_ports() -> set[int]:
    return {port for _, port in listening().values()}


def campaign_yaml(name: str) -> bytes:
    spec = yaml.safe_load(Path("examples/campaign.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["products"] = spec["products"][:1]
    spec["locales"] = {k: spec["locales"][k] for k in ("en-US", "zh-CN")}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 64, "height": 64}]
    spec |= {"durations": [0.5], "fps": 32, "steps": 2, "preset": "tiny"}
    return yaml.safe_dump(spec, allow_unicode=True).encode()


def _post_campaign(served: Served, name: str) -> tuple[requests.Response, float]:
    start = time.monotonic()
    r = requests.post(
        f"{served.api}/v1/campaigns",
        data=campaign_yaml(name),
        headers={"content-type": "application/yaml"},
        timeout=120,
    )
    return r, time.monotonic() - start


# ---- the tests ---------------------------------------------------------------------------------


def test_every_listening_socket_of_the_farm_is_on_loopback(tmp_path):
    with farm_serve(tmp_path, tuple(free_ports(2))) as served:
        r, _ = _post_campaign(served, "loopback")  # a job's driver listens too
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        seen: dict[tuple[str, int], set[str]] = {}  # socket -> who held it, as seen then
        deadline = time.monotonic() + 180
        while True:  # sample while the job runs: its driver comes and goes
            for key, pids in sockets_of(set(tree_of(served))).items():
                seen.setdefault(key, set()).update(f"{p} {_cmdline(p)}" for p in pids)
            progress = requests.get(f"{served.api}/v1/campaigns/{cid}", timeout=30).json()
            if progress["by_status"]["completed"] == 2:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(0.5)
    ports = {port for _, port in seen}
    assert {served.api_port, served.dashboard_port, AGENT_PORT} <= ports, seen  # we see Ray
    exposed = {
        f"{address}:{port} ({'; '.join(sorted(holders))})"
        for (address, port), holders in seen.items()
        if ipaddress.ip_address(address) not in LOOPBACK
    }
    assert not exposed, "listening beyond loopback:\n" + "\n".join(sorted(exposed))


def test_sigterm_leaves_no_process_and_a_restarted_farm_takes_campaigns_at_once(tmp_path):
    ports = tuple(free_ports(2))
    served = _start(tmp_path, ports)
    try:
        _wait_up(served)
        r, _ = _post_campaign(served, "before-sigterm")  # a job in flight when the signal comes
        assert r.status_code == 201, r.text
        before = tree_of(served)
        assert len(before) > 3, before
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=90) == 0, served.output()
        time.sleep(1)
        left = farm_processes(before, served.session_dir())  # zombies are dead
        assert not left, [_cmdline(p) for p in left]
        busy = {served.api_port, served.dashboard_port, AGENT_PORT} & _listened_ports()
        assert not busy, f"ports still listening after SIGTERM: {busy}"
    finally:
        _stop(served)

    with farm_serve(tmp_path, ports) as again:
        r, seconds = _post_campaign(again, "after-restart")
        assert r.status_code == 201 and seconds < 10, (seconds, r.text)
        health = requests.get(f"{again.api}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok", "jobs": "ok"}


def test_settings_the_machine_cannot_hold_are_refused_at_start(tmp_path):
    cpus = str(os.cpu_count() or 1)  # two such Renderers never fit, whatever the machine
    served = _start(
        tmp_path,
        tuple(free_ports(2)),
        FARM_RENDERER_MIN_REPLICAS="2",
        FARM_RENDERER_NUM_CPUS=cpus,
    )
    try:
        code = served.proc.wait(timeout=120)
        time.sleep(0.2)  # the reader thread takes the last lines
        text = served.output()
        assert code == 2, text
        assert "farm up" not in text
        assert f"renderer_min_replicas=2 needs {2 * int(cpus)} CPUs for Renderer replicas" in text
        assert f"(renderer_num_cpus={cpus})" in text
    finally:
        _stop(served)
