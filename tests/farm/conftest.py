"""Farm fixtures: a real S3-compatible server (moto's standalone server) for the session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

S3_BUCKET = "farm-test"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if with an error status
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {url} within {timeout_s} s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[tuple[str, dict]]:
    """A moto S3 server on 127.0.0.1 with one bucket: yields (url_root, s3fs storage_options)."""
    from farm.testing.ray_head import free_ports

    boto3 = pytest.importorskip("boto3")
    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    # Credentials for boto3 and s3fs alike; the proxy bypass keeps traffic on loopback.
    saved = {k: os.environ.get(k) for k in [*_CREDENTIALS, "NO_PROXY", "no_proxy"]}
    os.environ.update(_CREDENTIALS, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(endpoint + "/", proc)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=S3_BUCKET
        )
        options = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint}}
        yield f"s3://{S3_BUCKET}", options
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
