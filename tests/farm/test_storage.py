"""Storage faults: retries over a window, and a campaign that rides out an S3 outage.

The outage is real: the campaign talks to the moto S3 server through a TCP proxy that the
test takes down (connections refused, open ones cut) for a few seconds mid-campaign.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import fsspec
import pytest

from farm import storage
from farm.campaign.manifest import Manifest
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import load_campaign
from farm.jobs.loop import render_concurrently
from farm.jobs.options import JobOptions
from farm.output.media import probe_mp4
from farm.render.executors import LocalExecutor
from farm.testing.ray_head import free_ports
from tests.helpers.campaigns import write_spec


def test_retry_rides_out_transient_errors_and_gives_up_after_the_window(monkeypatch):
    monkeypatch.setattr(storage, "RETRY_DELAY_S", 0.01)
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 6:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert storage.retry(flaky, "flaky", window_s=5) == "ok" and len(calls) == 6
    start = time.monotonic()
    with pytest.raises(storage.StorageUnavailable, match=r"down: failed after \d+ attempts"):
        storage.retry(lambda: (_ for _ in ()).throw(OSError("gone")), "down", window_s=0.3)
    assert time.monotonic() - start >= 0.3  # kept trying for the whole window
    # Errors about the file itself are answers, not outages: raised at once.
    calls.clear()
    with pytest.raises(FileExistsError):
        storage.retry(lambda: calls.append(1) or (_ for _ in ()).throw(FileExistsError()), "x")
    assert calls == [1]


class FlakyProxy:
    """A TCP proxy in front of a server that can be taken down and brought back."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_ports(1)[0]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.refused = 0
        self.up()

    def up(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut every open one, as a crashed endpoint does."""
        self.listener.close()
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # taken down
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_s3_outage_mid_campaign_loses_nothing(s3_server, tmp_path):
    base, options = s3_server
    host, port = options["client_kwargs"]["endpoint_url"].rsplit("//", 1)[1].split(":")
    proxy = FlakyProxy((host, int(port)))
    # Short timeouts so a cut connection is noticed quickly; skip s3fs's listing cache.
    opts = {
        **options,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{proxy.port}"},
        "config_kwargs": {"connect_timeout": 2, "read_timeout": 5},
        "skip_instance_cache": True,
    }
    root = f"{base}/outage-{time.time_ns()}"
    spec = write_spec(tmp_path / "spec.yaml", "s3-outage", products=2, formats=2)
    manifest = prepare_campaign(load_campaign(spec), root, opts)
    reader = Manifest.open(root, manifest.campaign_id, opts)
    seen: list[int] = []
    reader_errors: list[str] = []
    done = threading.Event()

    def read_throughout() -> None:
        while not done.is_set():
            try:
                completed = reader.progress().by_status["completed"]
            except Exception as error:  # any read failure is the finding
                reader_errors.append(repr(error))
                return
            if reader.problems:
                reader_errors.append(f"problems: {reader.problems}")
            seen.append(completed)
            time.sleep(0.1)

    outage: dict[str, float] = {}

    def take_storage_down() -> None:
        while not (seen and seen[-1] >= 1):  # mid-campaign: after the first completion
            time.sleep(0.05)
        outage["start"] = time.monotonic()
        proxy.down()
        time.sleep(3.0)
        proxy.up()
        outage["end"] = time.monotonic()

    watcher = threading.Thread(target=read_throughout, daemon=True)
    watcher.start()
    breaker = threading.Thread(target=take_storage_down, daemon=True)
    breaker.start()
    report = render_concurrently(
        manifest, LocalExecutor("tiny"), root, JobOptions(concurrency=2), storage_options=opts
    )
    finished = time.monotonic()
    breaker.join(timeout=30)
    done.set()
    watcher.join(timeout=30)
    seen.append(reader.progress().by_status["completed"])

    assert "end" in outage and outage["end"] < finished, "the outage must be mid-campaign"
    assert report.completed == 8 and report.failed == 0, report
    assert reader_errors == []
    assert seen == sorted(seen) and seen[-1] == 8  # progress never went backwards
    fresh = Manifest.open(root, manifest.campaign_id, opts)
    events = fresh.events().to_pylist()
    assert fresh.problems == []
    # No event lost: seqs are dense, and every attempt has its start and its outcome.
    assert sorted({e["seq"] for e in events}) == list(range(len(events)))
    for vid in fresh.variants["variant_id"].to_pylist():
        mine = [(e["status"], e["attempt"]) for e in events if e["variant_id"] == vid]
        attempts = max(a for _, a in mine)
        assert [s for s, _ in mine].count("completed") == 1
        assert len(mine) == 2 * attempts  # in_progress + outcome, per attempt
    fs = fsspec.filesystem("s3", **opts)
    for r in fresh.status().to_pylist():
        info = probe_mp4(fs.cat_file(r["output_url"]))
        assert (info.frames, info.width, info.height) == (r["frames"], r["width"], r["height"])
