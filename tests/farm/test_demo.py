"""`farm demo` end to end: local Ray, the Serve app and a Ray Job render a campaign.

These start their own local Ray, as a user's `farm demo` and `farm serve` do, not the
session's shared one (this process steps off it for the module).
"""

from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from farm.campaign.expand import campaign_id
from farm.campaign.manifest import Manifest
from farm.campaign.spec import load_spec
from farm.cli import app
from farm.output.media import probe_mp4
from farm.output.watermark import psnr
from farm.testing.ray_head import free_ports
from tests.helpers.cluster import driver_detached


@pytest.fixture(scope="module", autouse=True)
def own_ray():
    """`farm demo` runs `ray.init` in this process: not while it is a driver of another Ray."""
    with driver_detached():
        yield


def test_demo_renders_every_variant_through_serve_and_a_job(tmp_path):
    """What `make demo` runs (its packshot campaign, cut down) on Serve and a Ray Job: the
    job opens the product images where it runs and every ad ends on its packshot."""
    text = Path("examples/packshot-campaign.yaml").read_text(encoding="utf-8")
    spec = yaml.safe_load(text.replace(": assets/", f": {Path('examples').resolve()}/assets/"))
    spec["products"] = spec["products"][:1]
    spec["locales"] = {k: spec["locales"][k] for k in ("zh-CN", "ar-SA")}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 64, "height": 64}]
    spec |= {"durations": [0.5], "fps": 32, "steps": 2, "preset": "tiny"}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    root = tmp_path / "farm-data"
    dashboard_port, api_port = free_ports(2)
    args = [
        "demo",
        "--spec",
        str(path),
        "--root",
        str(root),
        "--dashboard-port",
        str(dashboard_port),
        "--api-port",
        str(api_port),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cid = campaign_id(load_spec(path.read_bytes()))
    manifest = Manifest.open(str(root), cid)
    assert manifest.progress().by_status["completed"] == 2
    for row in manifest.status().to_pylist():
        info = probe_mp4(Path(row["output_url"]).read_bytes())
        assert (info.width, info.height, info.frames) == (64, 64, row["frames"])

    # One render path: the job on the Serve app's Renderer pool and the in-process demo
    # (the same loop and renderer, a LocalExecutor) write the same video per variant. Not
    # always the same bytes: the Renderer batches window-steps of concurrent videos into
    # one forward, and a matmul's rounding depends on its batch, so compare the pictures.
    local = tmp_path / "in-process"
    args = ["demo", "--in-process", "--spec", str(path), "--root", str(local)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    def videos(m: Manifest) -> dict[str, np.ndarray]:
        return {r["variant_id"]: _frames(r["output_url"]) for r in m.status().to_pylist()}

    served, in_process = videos(manifest), videos(Manifest.open(str(local), cid))
    assert served.keys() == in_process.keys()
    for vid, frames in served.items():
        assert frames.shape == in_process[vid].shape
        assert psnr(in_process[vid], frames) > 40, vid
    # ... and each ad ends on its packshot: the job opened the images where it ran.
    from farm.jobs.inputs import load_campaign

    for v in load_campaign(path).variants.to_pylist():
        frames = served[v["variant_id"]]
        assert psnr(_end_card(v, 64, 64), frames[-1]) > 30, v["variant_id"]


def _frames(path: str) -> np.ndarray:
    """The decoded RGB frames [F, H, W, 3] of an MP4 file."""
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def small_spec_yaml() -> str:
    spec = yaml.safe_load(Path("examples/campaign.yaml").read_text(encoding="utf-8"))
    spec["name"] = "api-campaign"
    spec["products"] = spec["products"][1:]
    spec["locales"] = {k: spec["locales"][k] for k in ("en-US", "zh-CN")}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 64, "height": 64}]
    spec |= {"durations": [0.5], "fps": 32, "steps": 2, "preset": "tiny"}
    return yaml.safe_dump(spec, allow_unicode=True)


def test_campaigns_over_http(tmp_path):
    import io
    import time

    import pyarrow.parquet as pq
    import requests

    from farm.jobs.state import submission_id
    from farm.local_farm import demo_settings, local_farm

    root = str(tmp_path / "farm-data")
    settings = demo_settings(root, "tiny")
    dashboard_port, api_port = free_ports(2)
    with local_farm(settings, dashboard_port=dashboard_port, api_port=api_port) as farm:
        api = f"{farm.api_url}/v1/campaigns"
        r = requests.post(
            api,
            data=small_spec_yaml().encode(),
            timeout=120,
            headers={"content-type": "application/yaml"},
        )
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        assert r.json()["job_id"] == submission_id(cid, root=root)
        deadline = time.monotonic() + 180
        while True:
            progress = requests.get(f"{api}/{cid}", timeout=30).json()
            if progress["by_status"]["completed"] == 2:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(1)
        assert {g["locale"] for g in progress["groups"]} == {"en-US", "zh-CN"}
        table = pq.read_table(io.BytesIO(requests.get(f"{api}/{cid}/manifest", timeout=30).content))
        assert table.num_rows == 2 and set(table["status"].to_pylist()) == {"completed"}
        assert cid in {c["campaign_id"] for c in requests.get(api, timeout=30).json()}
        bad = requests.post(
            api,
            data=small_spec_yaml().replace("fps: 32", "fps: -1").encode(),
            headers={"content-type": "application/yaml"},
            timeout=30,
        )
        assert bad.status_code == 422 and bad.json()["param"] == "fps", bad.text
        assert requests.get(f"{api}/0123456789abcdef", timeout=30).status_code == 404
        assert requests.get(f"{api}/../../etc", timeout=30).status_code == 404


def test_farm_serve_takes_its_settings_from_the_environment(tmp_path):
    import hashlib
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    dashboard_port, api_port = free_ports(2)
    env = os.environ | {
        "FARM_MODEL": "tiny",
        "FARM_STORAGE_ROOT": str(tmp_path / "farm-data"),
        "FARM_RENDERER_MAX_BATCH": "4",
        "FARM_TOKENS": json.dumps({hashlib.sha256(b"demo-token").hexdigest(): "acme"}),
    }
    auth = {"Authorization": "Bearer demo-token"}
    farm_bin = str(Path(sys.executable).parent / "farm")
    cmd = [farm_bin, "serve", "--dashboard-port", str(dashboard_port), "--api-port", str(api_port)]
    # Ctrl-C as a terminal sends it, even where pytest itself runs with SIGINT ignored (a
    # background job): the child then gets the default handler, and its own process group.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    url = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or proxy still starting
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "farm serve did not come up"
            time.sleep(1)
        body = {"prompt": "a cup", "seconds": 0.5, "size": "64x32", "fps": 32, "steps": 2}
        assert requests.post(f"{url}/v1/videos", json=body, timeout=30).status_code == 401
        video = requests.post(f"{url}/v1/videos", json=body, headers=auth, timeout=30).json()
        while video["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline + 120, video
            time.sleep(0.5)
            video = requests.get(f"{url}/v1/videos/{video['id']}", headers=auth, timeout=30)
            video = video.json()
        assert video["status"] == "completed" and video["model"] == "tiny"
        assert (tmp_path / "farm-data" / "videos" / f"{video['id']}.mp4").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # leave no farm behind to block the next Ray
            raise
    assert code == 0  # Ctrl-C shuts the farm down cleanly


def test_the_packshot_example_ends_each_ad_on_its_product(tmp_path):
    """`farm demo --spec examples/packshot-campaign.yaml`: every ad closes on the real packshot."""
    import shutil

    from farm.jobs.inputs import load_campaign

    example = load_campaign("examples/packshot-campaign.yaml").variants
    assert example.num_rows == 12 and {round(s, 3) for s in example["end_card_s"].to_pylist()} == {
        0.4
    }
    spec = yaml.safe_load(Path("examples/packshot-campaign.yaml").read_text(encoding="utf-8"))
    spec["locales"] = {"en-US": spec["locales"]["en-US"]}
    spec["formats"] = [{"name": "square", "aspect": "1:1", "width": 128, "height": 128}]
    spec |= {"durations": [1], "fps": 16, "steps": 2, "preset": "tiny"}
    shutil.copytree("examples/assets", tmp_path / "assets")  # paths are relative to the spec
    path = tmp_path / "packshots.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    root = tmp_path / "farm-data"
    result = CliRunner().invoke(
        app, ["demo", "--in-process", "--spec", str(path), "--root", str(root)]
    )
    assert result.exit_code == 0, result.output
    rows = Manifest.open(str(root), campaign_id_of(path)).status().to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    variants = {v["variant_id"]: v for v in load_campaign(path).variants.to_pylist()}
    for row in rows:
        v = variants[row["variant_id"]]
        frames = _frames(row["output_url"])
        card = _end_card(v, 128, 128)
        assert psnr(card, frames[-1]) > 30 and psnr(card, frames[0]) < 20, v["product_id"]


def _end_card(v: dict, width: int, height: int) -> np.ndarray:
    """The end card a variant row asks for, drawn straight from its images (1:1 formats)."""
    from farm.campaign.images import open_image
    from farm.output.endcard import render_card

    card, _ = render_card(
        width,
        height,
        packshot=open_image(v["reference_image"]),
        logo=open_image(v["logo"]),
        cta=v["cta"],
        locale=v["locale"],
        aspect="1:1",
        background=v["end_card_background"],
    )
    return card


def campaign_id_of(path: Path) -> str:
    from farm.jobs.inputs import load_campaign

    return load_campaign(path).campaign_id
