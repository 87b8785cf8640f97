"""The one render path: a variant or a request becomes a finished, decodable ad file.

Every caller (the campaign loop, the Director, `farm render`) goes through `render_video`;
here the path itself, and the Director's files checked byte for byte against it.
"""

import dataclasses
import json
import time
from pathlib import Path

import pytest
import requests

from farm.jobs.inputs import load_campaign
from farm.output.media import probe_mp4
from farm.output.render import (
    RenderRequest,
    output_dir,
    render_video,
    request_order,
    variant_order,
)
from farm.render.executors import LocalExecutor
from model.geometry import geometry_of
from tests.helpers.cluster import deployed

TINY = geometry_of("tiny")


@pytest.fixture(scope="module")
def rows():
    return load_campaign("examples/campaign.yaml").variants.to_pylist()


@pytest.fixture(scope="module")
def executor():
    return LocalExecutor("tiny")


def pick(rows, locale, aspect):
    row = next(r for r in rows if r["locale"] == locale and r["aspect"] == aspect)
    return row | {"steps": 2}  # a short schedule keeps the test fast


@pytest.mark.parametrize(("locale", "aspect"), [("ar-SA", "9:16"), ("zh-CN", "16:9")])
def test_variant_renders_to_a_decodable_ad(rows, executor, tmp_path, locale, aspect):
    row = pick(rows, locale, aspect)
    out = render_video(executor, variant_order(row), output_dir(str(tmp_path), row["campaign_id"]))
    mp4 = Path(out.mp4_url)
    assert mp4.parent == Path(output_dir(str(tmp_path), row["campaign_id"]))
    assert mp4.stem == row["variant_id"]
    info = probe_mp4(mp4.read_bytes())
    assert (info.frames, info.width, info.height) == (row["frames"], row["width"], row["height"])
    sidecar = json.loads(Path(out.sidecar_url).read_text())
    assert sidecar["provenance"]["variant_id"] == row["variant_id"]
    assert sidecar["provenance"]["campaign_id"] == row["campaign_id"]
    assert sidecar["provenance"]["extra"]["headline"] == row["headline"]
    assert sidecar["mp4"]["sha256"] == out.sha256


def test_same_variant_gives_the_same_bytes(rows, executor, tmp_path):
    order = variant_order(pick(rows, "en-US", "9:16"))
    first = render_video(executor, order, str(tmp_path / "a"))
    second = render_video(executor, order, str(tmp_path / "b"))
    assert first.sha256 == second.sha256


def test_copy_is_composited_only_when_the_order_has_some(rows, executor, tmp_path):
    order = variant_order(pick(rows, "en-US", "16:9"))
    with_copy = render_video(executor, order, str(tmp_path / "copy"))
    bare = render_video(executor, dataclasses.replace(order, copy=None), str(tmp_path))
    assert with_copy.sha256 != bare.sha256  # the headline and CTA are in the frames


def test_a_request_takes_its_frames_from_the_models_geometry(executor, tmp_path):
    request = RenderRequest("a red cup", seconds=0.5, fps=16, width=64, height=32, steps=2)
    order = request_order(request, request.video_id(), TINY)
    assert order.frames == TINY.frames_for(0.5, 16) and TINY.is_valid_frames(order.frames)
    assert order.copy is None and order.campaign_id == "adhoc"
    out = render_video(executor, order, str(tmp_path))
    assert Path(out.mp4_url).name == f"{request.video_id()}.mp4"
    assert probe_mp4(Path(out.mp4_url).read_bytes()).frames == order.frames


def test_progress_counts_every_step_and_can_stop_before_anything_is_written(executor, tmp_path):
    request = RenderRequest("a red cup", seconds=0.3, fps=16, width=32, height=32, steps=3)
    order = request_order(request, request.video_id(), TINY)
    seen: list[tuple[int, int]] = []
    render_video(executor, order, str(tmp_path / "done"), on_progress=lambda *p: seen.append(p))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # steps, then decode (before the write)

    class Stop(Exception):
        pass

    def stop_at_the_end(done: int, total: int) -> None:
        if done == total:
            raise Stop

    with pytest.raises(Stop):
        render_video(executor, order, str(tmp_path / "stopped"), on_progress=stop_at_the_end)
    assert not (tmp_path / "stopped").exists()  # a cancelled video leaves no file


# ---- the Director, on a real Serve app, writes what the render path writes ------------------


@pytest.fixture(scope="module")
def farm(serve_http, tmp_path_factory):
    """The farm app at / on the session's Serve (tiny model, one Renderer replica): (url, root)."""
    from farm.serve.app import FarmAppArgs, build_app

    root = tmp_path_factory.mktemp("serve")
    args = FarmAppArgs(
        model="tiny",
        storage_root=str(root),
        renderer_max_replicas=1,
        renderer_threads=1,
        director_num_cpus=0,
        allow_anonymous=True,
    )
    with deployed(build_app(args), "render", "/", http=serve_http):
        yield serve_http, root


@pytest.mark.slow
def test_the_director_writes_what_the_render_path_writes(farm, executor, tmp_path):
    from farm.serve.director import video_order, videos_dir
    from farm.serve.wire import CreateVideoRequest

    url, root = farm
    body = {"prompt": "a green cup", "size": "64x32", "seconds": 0.5, "fps": 32, "steps": 2}
    video = requests.post(f"{url}/v1/videos", json=body, timeout=30).json()
    deadline = time.monotonic() + 120
    while video["status"] in ("queued", "in_progress"):
        assert time.monotonic() < deadline, video
        time.sleep(0.2)
        video = requests.get(f"{url}/v1/videos/{video['id']}", timeout=30).json()
    assert video["status"] == "completed", video
    served = Path(videos_dir(str(root))) / f"{video['id']}.mp4"

    # The same request rendered in this process (LocalExecutor, as `farm render` does):
    # the Renderer pool's window-steps give the very same file.
    order = video_order(CreateVideoRequest(**body), video["id"], TINY)
    local = render_video(executor, order, str(tmp_path))
    assert Path(local.mp4_url).read_bytes() == served.read_bytes()
    assert probe_mp4(served.read_bytes()).frames == TINY.frames_for(0.5, 32)
