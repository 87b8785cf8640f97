"""What the Jobs client agrees on with the cluster: Ray's token auth and the jobs' interpreter.

No Ray cluster here: a stub dashboard answers `/api/authentication_mode` as Ray's does.
`tests/farm/test_readme.py` runs the same against a real `farm serve`.
"""

from __future__ import annotations

import http.server
import json
import shlex
import sys
import threading
from collections.abc import Iterator

import pytest

from farm.jobs.cluster import (
    RayAuthError,
    auth_headers,
    cluster_auth_mode,
    job_entrypoint,
    job_python,
)
from farm.jobs.options import JobOptions
from farm.settings import reset_settings
from farm.testing.ray_head import free_ports


@pytest.fixture
def dashboard() -> Iterator[dict]:
    """A stub Ray dashboard: {"url", "mode"}; set "mode" to what it answers."""
    state = {"mode": "disabled"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/api/authentication_mode":
                self.send_error(404)
                return
            body = json.dumps({"authentication_mode": state["mode"]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def token_env(monkeypatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    """No token anywhere Ray looks (empty HOME) unless the test puts one there."""
    from ray._raylet import AuthenticationTokenLoader

    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    AuthenticationTokenLoader.instance().reset_cache()
    yield monkeypatch
    monkeypatch.undo()
    AuthenticationTokenLoader.instance().reset_cache()


def test_a_cluster_without_token_auth_is_sent_no_token(dashboard, token_env):
    token_env.setenv("RAY_AUTH_TOKEN", "secret-token")
    assert cluster_auth_mode(dashboard["url"]) == "disabled"
    assert auth_headers(dashboard["url"]) == {}


def test_a_token_cluster_gets_the_token_ray_finds_whatever_ray_auth_mode_says(
    dashboard, token_env, tmp_path
):
    from ray._raylet import AuthenticationTokenLoader

    dashboard["mode"] = "token"
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("file-token")
    AuthenticationTokenLoader.instance().reset_cache()
    assert auth_headers(dashboard["url"]) == {"authorization": "Bearer file-token"}
    token_env.setenv("RAY_AUTH_MODE", "disabled")  # the client's own mode does not matter
    token_env.setenv("RAY_AUTH_TOKEN", "env-token")
    AuthenticationTokenLoader.instance().reset_cache()
    assert auth_headers(dashboard["url"] + "/") == {"authorization": "Bearer env-token"}


def test_a_token_cluster_and_no_token_says_where_it_belongs(dashboard, token_env):
    dashboard["mode"] = "token"
    with pytest.raises(RayAuthError, match=r"requires token authentication.*~/.ray/auth_token"):
        auth_headers(dashboard["url"])


def test_a_cluster_that_cannot_be_asked_is_left_to_the_jobs_client(token_env):
    (port,) = free_ports(1)
    assert cluster_auth_mode(f"http://127.0.0.1:{port}", timeout_s=2) is None
    assert auth_headers(f"http://127.0.0.1:{port}") == {}
    assert auth_headers("auto") == {}  # not an HTTP address: Ray resolves it


def test_the_job_runs_this_interpreter_unless_the_setting_names_the_clusters(monkeypatch):
    monkeypatch.delenv("FARM_JOBS_PYTHON", raising=False)
    reset_settings()
    try:
        assert job_python() == sys.executable  # never the bare `python` of a PATH
        line = job_entrypoint("/data root", "abc", JobOptions(), None)
        assert shlex.split(line)[:3] == [sys.executable, "-m", "jobs.render_campaign"]
        assert "/data root" in shlex.split(line)
        monkeypatch.setenv("FARM_JOBS_PYTHON", "/opt/conda/bin/python -X utf8")
        reset_settings()
        line = job_entrypoint("/r", "abc", JobOptions(), None)
        assert shlex.split(line)[:4] == ["/opt/conda/bin/python", "-X", "utf8", "-m"]
        quoted = shlex.quote("/my venv/bin/python")  # what the Api and farm demo pass
        assert (
            shlex.split(job_entrypoint("/r", "abc", JobOptions(), quoted))[0]
            == "/my venv/bin/python"
        )
    finally:
        monkeypatch.delenv("FARM_JOBS_PYTHON", raising=False)
        reset_settings()
