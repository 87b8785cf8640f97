"""`farm demo` end to end: local Ray, the Serve app and a Ray Job render a campaign."""

import socket
from pathlib import Path

import yaml
from typer.testing import CliRunner

from farm.campaign import campaign_id
from farm.cli import app
from farm.manifest import Manifest
from farm.media import probe_mp4
from farm.spec import load_spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_renders_every_variant_through_serve_and_a_job(tmp_path):
    spec = yaml.safe_load(Path("examples/campaign.yaml").read_text(encoding="utf-8"))
    spec["products"] = spec["products"][:1]
    spec["locales"] = {k: spec["locales"][k] for k in ("zh-CN", "ar-SA")}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 64, "height": 64}]
    spec |= {"durations": [0.5], "fps": 8, "steps": 2, "preset": "tiny"}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    root = tmp_path / "farm-data"
    args = [
        "demo",
        "--spec",
        str(path),
        "--root",
        str(root),
        "--dashboard-port",
        str(free_port()),
        "--api-port",
        str(free_port()),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cid = campaign_id(load_spec(path.read_bytes()))
    manifest = Manifest.open(str(root), cid)
    assert manifest.progress().by_status["completed"] == 2
    for row in manifest.status().to_pylist():
        info = probe_mp4(Path(row["output_url"]).read_bytes())
        assert (info.width, info.height, info.frames) == (64, 64, row["frames"])
