"""A small ASGI client for the Api's FastAPI app in this process (no HTTP server, no httpx).

Requests run on one event loop in a background thread, so DeploymentHandle calls made by
the routes work as they do under Serve.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes, unquote


@dataclass(frozen=True)
class Reply:
    """One response: status, lower-case headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class AsgiClient:
    """Send requests to an ASGI app in this process; `close` stops its event loop."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None):
        self.app, self.headers = app, dict(headers or {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        json: Any = None,
        query: str = "",
        chunks: list[bytes] | None = None,
        timeout: float = 60,
    ) -> Reply:
        """Send one request as an HTTP client would put it on the wire.

        `path` may hold any text: its UTF-8 bytes (lone surrogates kept, as a client that
        sends raw bytes can) are percent-encoded into ``raw_path``, and ``path`` is decoded
        from them the way uvicorn does. `query` must already be percent-encoded ASCII.
        """
        all_headers = {**self.headers, **(headers or {})}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers.setdefault("content-type", "application/json")
        parts = chunks if chunks is not None else [body]
        if chunks is None:
            all_headers.setdefault("content-length", str(len(body)))
        coro = self._call(method, path, query, all_headers, parts)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    async def _call(
        self, method: str, path: str, query: str, headers: dict[str, str], parts: list[bytes]
    ) -> Reply:
        pending = list(parts)
        messages: list[dict] = []

        async def receive() -> dict:
            if not pending:
                return {"type": "http.disconnect"}
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: dict) -> None:
            messages.append(message)

        raw = quote_from_bytes(
            path.encode("utf-8", "surrogatepass"), safe="/%?=&:@!$'()*+,;~"
        ).encode("ascii")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw.decode("ascii")),  # as uvicorn: invalid UTF-8 -> U+FFFD
            "raw_path": raw,
            "root_path": "",
            "query_string": query.encode("ascii"),
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            ],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 12345),
            "state": {},
        }
        await self.app(scope, receive, send)
        start = next(m for m in messages if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
        return Reply(start["status"], hdrs, body)
