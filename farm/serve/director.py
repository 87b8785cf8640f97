"""The Director deployment: turns video requests into finished files, many at once.

`create` names a video by the content hash of its request and starts it in the background;
each video's engine loop runs in a thread (`asyncio.to_thread`) through a `ServeExecutor`
on the Renderer pool, so the window-steps of all videos in flight meet in the Renderer's
batches. Frames go to `{storage_root}/videos/{id}.mp4|jpg|json`. Status and progress live
in memory; a video whose sidecar is already in storage counts as completed.

Renders run on the Director's own thread pool, one thread per video slot: on the event
loop's default pool they took every thread (it has cpu_count + 4, fewer than
`max_videos` on a small machine), and `create`'s storage check then queued behind whole
renders, so a POST hung for as long as a render took. `create` also enforces a tenant's
concurrent-video quota in the same step that adds the video (`farm.serve.quotas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fsspec
from ray import serve

from farm import metrics
from farm.output.render import RenderOrder, render_video, request_order
from farm.serve.executor import ServeExecutor
from farm.serve.wire import CreateVideoRequest, Video, VideoError
from farm.serve.wire import VideoStatus as Status
from farm.settings import setting_default
from model.geometry import Geometry, geometry_of

log = logging.getLogger(__name__)


def videos_dir(root: str) -> str:
    """Where the app's finished files go."""
    return f"{root.rstrip('/')}/videos"


class Cancelled(Exception):
    """Raised inside a video's engine loop once the video is cancelled."""


@dataclass
class _Video:
    id: str
    request: CreateVideoRequest
    status: Status = "queued"
    progress: float = 0.0
    error: VideoError | None = None
    created_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    render_s: float = 0.0  # wall seconds its render held a slot (the daily GPU budget)
    ended_at: float | None = None  # when its render ended, however it ended
    cancel: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None
    started: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # set once terminal


@serve.deployment(
    name="Director",
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": setting_default("director_num_cpus")},
)
class Director:
    """Video lifecycle: create (idempotent by content), status, cancel; renders in background."""

    def __init__(
        self,
        renderer: Any,
        storage_root: str,
        *,
        model: str = setting_default("model"),
        engine: dict[str, Any] | None = None,
        max_videos: int = setting_default("director_max_videos"),
        storage_options: dict[str, Any] | None = None,
        max_resends: int = setting_default("max_resends"),
    ):
        self.executor = ServeExecutor(renderer, max_resends=max_resends)
        self.root = storage_root
        self.model = model
        self.geometry = geometry_of(model)  # frames for seconds: the model's own rule
        self.engine = dict(engine or {})
        self.storage_options = dict(storage_options or {})
        self.videos: dict[str, _Video] = {}
        self._slots = asyncio.Semaphore(max_videos)
        # One thread per slot, apart from the loop's default pool (see the module docstring).
        self._render_pool = ThreadPoolExecutor(max_videos, thread_name_prefix="render")

    async def create(
        self, request: dict[str, Any], max_unfinished: int | None = None
    ) -> dict[str, Any]:
        """Start rendering `request` (CreateVideoRequest fields); returns the video's state.

        With `max_unfinished`, a new video of a tenant that already has that many queued
        or rendering is not started: the answer is ``{"refused": "max_concurrent_videos",
        "unfinished": n}``. The count and the insert have no await between them, so
        concurrent creates cannot overshoot. A request already known is answered as before.
        """
        req = CreateVideoRequest.model_validate(request)
        video_id = req.video_id(self.model, self.engine)
        video = self.videos.get(video_id)
        if video is not None and video.status in ("queued", "in_progress", "completed"):
            return self._view(video)
        if max_unfinished is not None:
            unfinished = self._unfinished(req.tenant)
            if unfinished >= max_unfinished:
                return {"refused": "max_concurrent_videos", "unfinished": unfinished}
        video = _Video(video_id, req)
        self.videos[video_id] = video
        if await asyncio.to_thread(self._stored, video_id):
            video.status, video.progress, video.completed_at = "completed", 1.0, time.time()
            video.finished.set()
        else:
            video.task = asyncio.create_task(self._run(video))
        metrics.record_unfinished(metrics.ADHOC, (v.status for v in self.videos.values()))
        return self._view(video)

    async def status(self, video_id: str, wait_s: float = 0) -> dict[str, Any] | None:
        """The video's state, or None when this app has never seen it.

        With `wait_s` > 0 an unfinished video's answer waits until it finishes or
        `wait_s` passes (a long poll: one request instead of many).
        """
        video = self.videos.get(video_id)
        if video is None:
            return None
        if wait_s > 0 and video.status in ("queued", "in_progress"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(video.finished.wait(), wait_s)
        return self._view(video)

    async def cancel(self, video_id: str) -> dict[str, Any] | None:
        """Stop a queued or rendering video; finished ones are left as they are."""
        video = self.videos.get(video_id)
        if video is None:
            return None
        if video.status in ("queued", "in_progress"):
            video.cancel.set()
            video.status = "cancelled"
            video.finished.set()
            if video.task is not None and not video.started:
                video.task.cancel()
        return self._view(video)

    async def usage(self, tenant: str, since: float = 0.0) -> dict[str, Any]:
        """`tenant`'s videos unfinished now and the render seconds of those ended after `since`."""
        spent = sum(
            v.render_s
            for v in self.videos.values()
            if v.request.tenant == tenant and v.ended_at is not None and v.ended_at >= since
        )
        return {"unfinished": self._unfinished(tenant), "render_s": spent}

    def _unfinished(self, tenant: str) -> int:
        return sum(
            1
            for v in self.videos.values()
            if v.request.tenant == tenant and v.status in ("queued", "in_progress")
        )

    async def stats(self) -> dict[str, Any]:
        """Videos by status and calls resent after a Renderer replica died."""
        counts: dict[str, int] = {}
        for video in self.videos.values():
            counts[video.status] = counts.get(video.status, 0) + 1
        return {"videos": counts, "resent": self.executor.resent}

    def _view(self, video: _Video) -> dict[str, Any]:
        req = video.request
        return Video(
            id=video.id,
            status=video.status,
            progress=round(video.progress, 4),
            model=self.model,
            size=req.size,
            seconds=req.seconds,
            created_at=video.created_at,
            completed_at=video.completed_at,
            error=video.error,
        ).model_dump(mode="json")

    def _stored(self, video_id: str) -> bool:
        url = f"{videos_dir(self.root)}/{video_id}.json"
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        return fs.exists(path)

    async def _run(self, video: _Video) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            async with self._slots:
                if video.cancel.is_set():
                    return
                video.started = True
                video.status = "in_progress"
                order = video_order(video.request, video.id, self.geometry)
                t0 = time.perf_counter()  # metrics
                render = functools.partial(contextvars.copy_context().run, self._render)
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(self._render_pool, render, video, order)
                except Cancelled:
                    video.status = "cancelled"
                except Exception as e:
                    log.exception("video %s failed", video.id)
                    video.status = "failed"
                    message = f"{type(e).__name__}: {e}"
                    video.error = VideoError(code="render_failed", message=message)
                else:
                    if not video.cancel.is_set():
                        video.status, video.progress = "completed", 1.0
                        video.completed_at = time.time()
                video.finished.set()
                # metrics: render time, frames or failure; videos not yet finished
                seconds = time.perf_counter() - t0
                video.render_s, video.ended_at = seconds, time.time()
                metrics.record_video(video.status, self.model, order, seconds)
                metrics.record_unfinished(metrics.ADHOC, (v.status for v in self.videos.values()))

    def _render(self, video: _Video, order: RenderOrder) -> None:
        """The one render path (farm.output.render), blocking; runs in a worker thread."""

        def on_progress(done: int, total: int) -> None:
            if video.cancel.is_set():
                raise Cancelled(video.id)
            if done < total:  # the last step (encode + write) counts once the file is there
                video.progress = done / total

        render_video(
            self.executor,
            order,
            videos_dir(self.root),
            storage_options=self.storage_options,
            on_progress=on_progress,
            **self.engine,
        )


def video_order(request: CreateVideoRequest, video_id: str, geometry: Geometry) -> RenderOrder:
    """What the Director renders for a request: no copy; size and length in the provenance."""
    extra = {"size": request.size, "seconds": str(request.seconds), "fps": str(request.fps)}
    return request_order(request, video_id, geometry, extra=extra)
