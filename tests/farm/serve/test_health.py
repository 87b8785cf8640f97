"""The Jobs API check behind /healthz: truthful, bounded in time, cached."""

import asyncio
import http.server
import threading
import time

import pytest

from farm.serve.health import JobsHealth
from farm.testing.ray_head import free_ports


@pytest.fixture
def head():
    """A stand-in for Ray's dashboard head: /api/version answers 200, or hangs when told."""
    hang = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if hang.is_set():
                time.sleep(2)  # past the check's 0.5 s timeout
            self.send_response(200 if self.path == "/api/version" else 404)
            self.end_headers()
            self.wfile.write(b'{"ray_version": "2.60.0"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hang
    server.shutdown()


def test_no_jobs_api_is_unavailable_and_says_where():
    address = f"http://127.0.0.1:{free_ports(1)[0]}"
    result = asyncio.run(JobsHealth(address).check())
    assert result.startswith("unavailable:") and address in result


def test_a_hung_jobs_api_answers_within_the_timeout_and_is_cached(head, monkeypatch):
    import farm.serve.health as health

    monkeypatch.setattr(health, "_head_agent", lambda timeout_s: "ok")  # no Ray here
    address, hang = head
    checker = JobsHealth(address, timeout_s=0.5, ttl_s=60)
    assert asyncio.run(checker.check()) == "ok"
    hang.set()
    assert asyncio.run(checker.check()) == "ok"  # cached: no request at all
    checker = JobsHealth(address, timeout_s=0.5, ttl_s=60)

    async def timed() -> tuple[str, float]:
        start = time.monotonic()
        return await checker.check(), time.monotonic() - start

    result, seconds = asyncio.run(timed())  # (run() itself waits for the hung thread)
    assert seconds < 1.5
    assert result.startswith("unavailable:") and "0.5 s" in result
