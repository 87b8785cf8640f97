"""The README's campaign commands, in order, against the `farm serve` that the README starts.

The commands are read from README.md's "Run a campaign" code block, so README and test
cannot drift. They run as a new user runs them: from a shell whose PATH has no venv (only
/usr/bin:/bin), calling `.venv/bin/farm` by its path, with Ray's token auth on (a token in
~/.ray/auth_token of a temporary HOME, RAY_AUTH_MODE unset). The only substitutions: free
ports for the farm's, a temporary directory as the repository root whose `examples/` holds
small versions of the README's example files (same names), and `ID` by the printed id.

Another Ray runs on the machine meanwhile (the suite's own head): the farm's jobs must
attach to the farm's Ray, never to another one that Ray's address discovery finds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from farm.campaign.manifest import Manifest
from farm.output.watermark import MIN_FRAMES
from farm.testing.ray_head import free_ports
from tests.helpers.paths import EXAMPLES, REPO

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
CLEAN_PATH = "/usr/bin:/bin"  # no venv: a job must not depend on the caller's PATH
README_PORTS = {"8265": "dashboard", "8000": "api"}
SHORTEST_S = math.ceil(MIN_FRAMES / 8 * 100) / 100  # at 8 fps: the watermark's minimum


def readme_commands() -> list[str]:
    """The shell lines of the README's "Run a campaign" block that runs `farm campaign`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Run a campaign\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    block = next(b for b in blocks if "farm campaign submit" in b)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line]


def small_examples(examples: Path) -> None:
    """The README's example spec and feed, cut to a few 64x64 variants of the shortest length."""
    spec = yaml.safe_load((EXAMPLES / "campaign.yaml").read_text(encoding="utf-8"))
    spec["products"] = spec["products"][:1]
    spec["locales"] = {k: spec["locales"][k] for k in ("en-US", "zh-CN")}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 64, "height": 64}]
    spec |= {"durations": [SHORTEST_S], "fps": 8, "steps": 2}
    spec.pop("storyboard", None)
    examples.mkdir()
    (examples / "campaign.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    rows = list(csv.DictReader(io.StringIO((EXAMPLES / "feed.csv").read_text("utf-8-sig"))))
    small = {"width": "64", "height": "64", "duration_s": str(SHORTEST_S), "fps": "8"}
    rows = [r | small for r in rows[:2]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (examples / "feed.csv").write_text(out.getvalue(), "utf-8")


def user_env(home: Path) -> dict[str, str]:
    """A fresh user's shell: no venv on PATH, no Ray or farm variables, its own HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "FARM_", "VIRTUAL_ENV", "PYTHON"))
    }
    return env | {"PATH": CLEAN_PATH, "HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def farm_processes(root_pid: int, markers: list[str]) -> set[int]:
    """Live (not zombie) descendants of `root_pid`, and processes that name one of `markers`
    in their command line or run in a directory under one (Ray's start in the farm's cwd)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[1] != "Z":
            parents[int(entry.name)] = st[0]
    found = {root_pid} & set(parents)
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    named = {pid for pid in parents if any(m in _cmdline(pid) or m in _cwd(pid) for m in markers)}
    return (found | named) - {os.getpid()}


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if (st := _stat(pid)) and st[1] != "Z"}


def wait_for_farm(proc: subprocess.Popen, log: Path, api: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while "farm up" not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"farm serve exited:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"farm serve not up:\n{log.read_text()[-4000:]}"
        time.sleep(1)
    assert requests.get(f"{api}/healthz", timeout=30).status_code == 200


def test_readme_campaign_commands_run_in_order_against_farm_serve(tmp_path, ray_cluster):
    commands = readme_commands()
    serve_lines = [c for c in commands if re.search(r"\bfarm serve\b", c)]
    assert len(serve_lines) == 1 and commands[0] == serve_lines[0], commands
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(uuid.uuid4().hex)  # Ray's token auth: on
    workdir = tmp_path / "repo"  # stands in for the repository root: README paths resolve
    workdir.mkdir()
    small_examples(workdir / "examples")
    ports = dict(zip(README_PORTS.values(), free_ports(2), strict=True))
    env = user_env(home)

    def localize(line: str) -> str:
        line = line.replace(".venv/bin/", f"{VENV_BIN}/")
        for port, name in README_PORTS.items():
            line = line.replace(f"127.0.0.1:{port}", f"127.0.0.1:{ports[name]}")
        return line

    serve_cmd = localize(serve_lines[0])
    serve_cmd += f" --dashboard-port {ports['dashboard']} --api-port {ports['api']}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # Its own process group; Ctrl-C's default action even where pytest ignores SIGINT.
        farm = subprocess.Popen(
            ["/bin/bash", "-c", f"exec {serve_cmd}"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    dashboard = f"http://127.0.0.1:{ports['dashboard']}"
    markers = [str(tmp_path)]
    seen: set[int] = set()
    try:
        wait_for_farm(farm, log, f"http://127.0.0.1:{ports['api']}")
        # The CLI's default --address is the README's 8265: here the farm's free port.
        cli_env = env | {"RAY_API_SERVER_ADDRESS": dashboard}
        run_readme(commands[1:], localize, workdir, cli_env, farm, markers, seen)
        seen |= farm_processes(farm.pid, markers)
    finally:
        with contextlib.suppress(Exception):  # a failed look must not leave the farm up
            seen |= farm_processes(farm.pid, markers)
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(farm.pid, signal.SIGINT)  # Ctrl-C, as the README says
        try:
            code = farm.wait(timeout=90)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 20
        while alive(seen) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = alive(seen) | farm_processes(farm.pid, markers)
        for pid in left:  # never leave a farm behind to block the next Ray
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert code == 0, log.read_text(errors="replace")[-4000:]
    assert not left, {pid: _cmdline(pid)[:200] for pid in left}


def run_readme(commands, localize, workdir, env, farm, markers, seen) -> None:
    """Run the README's lines in order; check each one's exit code and its effect."""
    root = str(workdir / "farm-data")  # the CLI's and farm serve's default root, here
    cid = sid = ""
    done_before = None
    for line in commands:
        if cid:
            line = re.sub(r"\bID\b", cid, line)
        assert "ID" not in line.split(), f"no campaign id yet for: {line}"
        result = subprocess.run(
            ["/bin/bash", "-c", localize(line)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = result.stdout + result.stderr
        seen |= farm_processes(farm.pid, markers)
        assert result.returncode == 0, f"{line}\nexit {result.returncode}:\n{out[-4000:]}"
        verb = line.split("farm ", 1)[1].split()[:2]
        if verb == ["campaign", "submit"]:
            m = re.search(r"campaign ([0-9a-f]+): job (\S+)", out)
            assert m, out
            manifest = Manifest.open(root, m.group(1))
            progress = manifest.progress()
            assert progress.by_status["completed"] == progress.total > 0, (line, out)
            if not cid:  # the README's ID is the first campaign it submits
                cid, sid = m.group(1), m.group(2)
                done_before = progress.total
        elif verb == ["campaign", "status"]:
            assert cid in out and "completed" in out and "0 to go" in out, out
            assert "SUCCEEDED; finished" in out, out  # the state, with the latest job
        elif verb == ["campaign", "logs"]:
            assert f"=== {sid} (SUCCEEDED) ===" in out, out
        elif verb == ["campaign", "resume"]:
            # Nothing pending: no new job, nothing rendered again.
            assert f"job {sid}" in out, out
            assert Manifest.open(root, cid).progress().by_status["completed"] == done_before
        elif verb == ["campaign", "cancel"]:
            assert "0 pending variants marked cancelled" in out, out
            assert Manifest.open(root, cid).progress().by_status["completed"] == done_before
        elif verb == ["campaign", "validate"]:
            assert "variants" in out and "GPU-seconds" in out, out
        elif verb == ["campaign", "schema"]:
            assert json.loads((workdir / "campaign.schema.json").read_text())["properties"]
        elif verb == ["manifest", "show"]:
            assert cid in out, out
    assert cid, "the README submitted no campaign"
