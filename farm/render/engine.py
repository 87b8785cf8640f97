"""The window engine: the sampling loop of one video, independent of where the model runs.

A long latent video is cut along time into overlapping windows (`farm.render.windows`). At each
step every window becomes a stateless `WindowStep` (its latent slice, t, its prompt); an
`Executor` returns their velocities, from any number of model replicas; the engine
applies guidance per window, blends the windows with their weights and takes the sampler
step on the whole latent. Because window-steps carry everything they need, a lost
replica's work is simply sent again, and window-steps of many videos can share a forward.

`sync_every=k` lets each window take k Euler steps on its own between fusions (fewer
exchanges, weaker seams). With k = 1, blending the windows' latents after a step equals
blending their velocities, so the plain samplers of `model.sampling` drive the engine.

For a velocity function that does not mix frames in time, windowed sampling equals
unwindowed sampling exactly: every window computes the same velocity for a shared frame,
and the weights at each frame sum to 1.

A `VideoJob` carries its model's `Geometry` (`model.geometry`): the frame rule that maps
pixel frames to latent frames and storyboard seconds to windows, and the longest window
one forward takes. The engine keeps no copy of those rules; it asks the geometry, and
checks that the executor's model agrees before it samples.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from farm.render.protocols import AdvancesWindows, Executor, RunsRounds, StepExecutor
from farm.render.windows import WindowPlan
from farm.settings import setting_default
from model.generate import SAMPLERS, noise
from model.geometry import Geometry, geometry_of
from model.sampling import euler_step, flow_timesteps


class Segment(BaseModel):
    """One shot of a storyboard: a prompt for the time range [start, end) in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: float = Field(ge=0, description="Start of the shot in seconds.")
    end: float = Field(gt=0, description="End of the shot in seconds (exclusive).")
    prompt: str = Field(min_length=1, description="What this shot shows.")

    @model_validator(mode="after")
    def _ordered(self) -> Segment:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class VideoJob(BaseModel):
    """Everything the engine needs to sample and decode one video."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    geometry: Geometry = Field(
        description="The rendering model's frame rule, strides and longest window "
        "(`model.geometry`); a model reference (preset or checkpoint URL) is read with "
        "`geometry_of`. No default: a job is always for one model."
    )
    prompt: str = Field(description="The prompt, used where no storyboard segment applies.")
    # Frames, size, fps, steps and guidance default for direct engine use (tests, benchmarks):
    # every render path passes its order's; the window layout defaults are the settings'.
    storyboard: tuple[Segment, ...] = Field((), description="Timed prompts (multi-shot).")
    negative_prompt: str = Field("", description="What guidance steers away from.")
    frames: int = Field(17, ge=1, description="Pixel frames, as the model's frame rule allows.")
    height: int = Field(144, ge=1, description="Pixel height, a multiple of the model's multiple.")
    width: int = Field(256, ge=1, description="Pixel width, a multiple of the model's multiple.")
    fps: int = Field(24, ge=1, description="Frames per second (maps storyboard times).")
    steps: int = Field(20, ge=1, description="Denoising steps.")
    guidance: float = Field(4.0, ge=1, description="Classifier-free guidance (1 = off).")
    shift: float | None = Field(
        None,
        gt=0,
        description="Flow-matching timestep shift; None: the model's own schedule (asked of "
        "the executor), which is what every render path uses.",
    )
    seed: int = Field(0, ge=0, description="Noise seed; the same seed gives the same video.")
    sampler: str = Field("euler", description="euler or heun (heun needs sync_every=1).")
    window: int = Field(
        setting_default("window"), ge=1, description="Window length in latent frames."
    )
    overlap: int = Field(
        setting_default("overlap"),
        ge=0,
        description="Overlap of consecutive windows (latent frames).",
    )
    ramp: str = Field("cosine", description="Blend ramp across overlaps: flat, linear, cosine.")
    sync_every: int = Field(1, ge=1, description="Steps each window takes between fusions.")
    decode_chunk: int = Field(
        setting_default("decode_chunk"),
        ge=1,
        description="Latent frames per parallel decode chunk.",
    )

    @field_validator("geometry", mode="before")
    @classmethod
    def _model_reference(cls, value: object) -> object:
        return geometry_of(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> VideoJob:
        self.geometry.check_frames(self.frames)
        self.geometry.check_size(self.width, self.height)
        if self.overlap >= self.window:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than window ({self.window})"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if self.sampler != "euler" and self.sync_every != 1:
            raise ValueError("sync_every > 1 needs the euler sampler")
        return self

    @property
    def latent_frames(self) -> int:
        """Latent frames of this video, by the model's frame rule."""
        return self.geometry.latent_frames(self.frames)

    def plan(self) -> WindowPlan:
        """The window plan over this video's latent frames.

        A window is at most `window` latent frames, and never longer than the model takes
        in one forward (`geometry.max_latent_frames`); a short video is one window.
        """
        T = self.latent_frames
        window = min(self.window, T, self.geometry.max_latent_frames)
        return WindowPlan.make(T, window, min(self.overlap, window - 1), self.ramp)

    def window_prompts(self, plan: WindowPlan) -> list[str]:
        """The prompt of each window: the storyboard shot at the window's middle frame."""
        prompts = []
        for start, stop in plan.windows:
            frame = self.geometry.first_pixel_frame((start + stop - 1) / 2)  # the middle
            middle = frame / self.fps  # seconds
            shot = next((s for s in self.storyboard if s.start <= middle < s.end), None)
            prompts.append(shot.prompt if shot else self.prompt)
        return prompts


@dataclass(frozen=True)
class WindowStep:
    """One stateless unit of work: the guided velocity of one window's latent at time t.

    The step names its window as a range of a latent that all windows of the video share,
    so an executor that ships data ships that latent once per step, not once per window.
    Guidance travels with the step: the conditional and unconditional branches share one
    latent on the way in and one velocity on the way out, and run in one forward.
    """

    latent: Tensor  # (C, T, H, W): the video's latent at this step (or just the window)
    start: int  # the window is latent[:, start:stop]
    stop: int
    t: float
    prompt: str
    negative_prompt: str = ""
    guidance: float = 1.0  # 1 = the conditional velocity alone
    key: tuple = field(default=(), compare=False)  # (video, window), for tracing

    @property
    def x(self) -> Tensor:
        """The window's latent (C, T_w, H, W)."""
        return self.latent[:, self.start : self.stop]


StepRunner = Callable[[list[WindowStep]], list[Tensor]]


def window_velocities(
    run: StepRunner,
    x: Tensor,
    windows: list[tuple[int, int]],
    t: float,
    prompts: list[str],
    negative: str,
    guidance: float,
    video: str = "",
) -> list[Tensor]:
    """Guided velocity [1, C, T_w, H, W] of each window of x [1, C, T, H, W] (CFG per window)."""
    latent = x[0]  # one view shared by every step, so executors ship it once
    steps = [
        WindowStep(latent, a, b, t, p, negative, guidance, (video, i))
        for i, ((a, b), p) in enumerate(zip(windows, prompts, strict=True))
    ]
    return [v[None] for v in run(steps)]


def advance_windows(
    run: StepRunner,
    x: Tensor,
    windows: list[tuple[int, int]],
    ts: list[float],
    prompts: list[str],
    negative: str,
    guidance: float,
) -> list[Tensor]:
    """Cut x into windows and take Euler steps along `ts` on each one independently."""
    xs = [x[:, :, a:b] for a, b in windows]
    for t, t_next in itertools.pairwise(ts):
        ranges = stacked_ranges([w.shape[2] for w in xs])
        vs = window_velocities(run, torch.cat(xs, dim=2), ranges, t, prompts, negative, guidance)
        xs = [euler_step(xw, v, t, t_next) for xw, v in zip(xs, vs, strict=True)]
    return xs


def stacked_ranges(lengths: list[int]) -> list[tuple[int, int]]:
    """Ranges of windows of these lengths laid end to end along time (once they evolve apart)."""
    bounds = list(itertools.accumulate(lengths, initial=0))
    return list(itertools.pairwise(bounds))


class Blender:
    """Accumulates Σ_i w_i · part_i window by window, as results arrive.

    Parts may arrive in any order; they are summed in window order, so the result is the
    same bits whatever the pool did. Frames before `covered` already hold a partial sum,
    so the output needs no zero-fill.
    """

    def __init__(self, plan: WindowPlan):
        self.plan = plan
        self.out: Tensor | None = None
        self.next = 0
        self.covered = 0
        self.waiting: dict[int, Tensor] = {}

    def add(self, index: int, part: Tensor) -> None:
        """Window `index`'s tensor [1, C, T_w, H, W]."""
        self.waiting[index] = part
        while self.next in self.waiting:
            self._blend(self.waiting.pop(self.next))
            self.next += 1

    def _blend(self, part: Tensor) -> None:
        start, stop = self.plan.windows[self.next]
        if self.out is None:
            shape = (*part.shape[:2], self.plan.length, *part.shape[3:])
            self.out = torch.empty(shape, dtype=part.dtype)
        w = self.plan.weights[self.next, start:stop].view(1, 1, -1, 1, 1).to(part.dtype)
        split = max(start, self.covered) - start
        if split:  # overlap with earlier windows: accumulate
            self.out[:, :, start : start + split].addcmul_(part[:, :, :split], w[:, :, :split])
        torch.mul(part[:, :, split:], w[:, :, split:], out=self.out[:, :, start + split : stop])
        self.covered = max(self.covered, stop)

    def result(self) -> Tensor:
        """The blended latent [1, C, T, H, W] once every window has been added."""
        if self.next != len(self.plan.windows):
            raise RuntimeError(f"blend incomplete: {self.next}/{len(self.plan.windows)} windows")
        return self.out


def blend(parts: list[Tensor], plan: WindowPlan) -> Tensor:
    """Σ_i w_i · part_i over the whole latent: parts are [1, C, T_w, H, W] window tensors."""
    blender = Blender(plan)
    for i, part in enumerate(parts):
        blender.add(i, part)
    return blender.result()


def fuse_windows(
    run: StepRunner,
    x: Tensor,
    plan: WindowPlan,
    ts: list[float],
    prompts: list[str],
    negative: str,
    guidance: float,
) -> Tensor:
    """Advance every window of x along `ts` on its own, then blend: one fusion."""
    return blend(advance_windows(run, x, list(plan.windows), ts, prompts, negative, guidance), plan)


def sample_latents(
    executor: StepExecutor,
    job: VideoJob,
    *,
    video: str = "",
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Sample the latent video [1, C, T, H, W] of `job` window by window.

    Euler steps run where the windows are (`AdvancesWindows`): because the weights sum to
    1, x + dt·Σ w_i v_i = Σ w_i (x_i + dt·v_i), so replicas return advanced windows and the
    driver only blends. An executor that `RunsRounds` keeps the latent sharded on its
    replicas for the whole video and exchanges only window overlaps (farm.render.halo); the
    callback then gets None for the latent, which lives there. Heun needs the blended
    velocity itself, so it goes through `executor.velocities` and the sampler.
    """
    shape = (1, *executor.latent_shape(job.frames, job.height, job.width))
    expected = (job.latent_frames, *job.geometry.latent_size(job.width, job.height))
    if tuple(shape[2:]) != expected:  # the job was built for another model's geometry
        raise ValueError(
            f"the executor's model makes a {tuple(shape[2:])} (T, H, W) latent of this video, "
            f"the job's geometry ({job.geometry.describe()}) {expected}"
        )
    x = noise(shape, job.seed)  # drawn once for the whole video: identical on any layout
    plan = job.plan()
    prompts = job.window_prompts(plan)
    ts = job_timesteps(executor, job)
    guide = (prompts, job.negative_prompt, job.guidance)

    if job.sampler != "euler":

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            run = executor.velocities
            return blend(window_velocities(run, x, plan.windows, float(t[0]), *guide, video), plan)

        return SAMPLERS[job.sampler](velocity, x, ts, callback=callback)

    rounds = [
        ts[a : min(a + job.sync_every, job.steps) + 1].tolist()
        for a in range(0, job.steps, job.sync_every)
    ]
    if isinstance(executor, RunsRounds):  # the latent stays sharded on the replicas (halo)

        def on_round(r: int) -> None:
            if callback is not None:
                last = min((r + 1) * job.sync_every, job.steps)
                callback(last - 1, None, ts[last].expand(1))

        return executor.run_rounds(x, plan, rounds, *guide, on_round=on_round)

    if isinstance(executor, AdvancesWindows):
        advance = executor.advance
    else:  # windows advance here, each step's velocities from the executor
        advance = functools.partial(fuse_windows, executor.velocities)
    for r, round_ts in enumerate(rounds):
        x = advance(x, plan, round_ts, *guide)  # sync_every steps, one fusion
        if callback is not None:
            last = min((r + 1) * job.sync_every, job.steps)
            callback(last - 1, x, ts[last].expand(1))
    return x


def job_timesteps(executor: StepExecutor, job: VideoJob) -> Tensor:
    """The job's schedule, float32 [steps + 1]: its own shift if set, else the model's."""
    if job.shift is not None:
        return flow_timesteps(job.steps, job.shift)
    ts = executor.timesteps(job.steps, job.frames, job.height, job.width)
    return torch.as_tensor(ts, dtype=torch.float32)


def decode_video(executor: Executor, z: Tensor, chunk: int) -> Tensor:
    """uint8 frames [F, H, W, 3] of z [1, C, T, H, W], decoded in parallel latent chunks."""
    T = z.shape[2]
    chunks = [(a, min(a + chunk, T)) for a in range(0, T, chunk)]
    return torch.cat(executor.decode_chunks(z, chunks), dim=0)


def render(executor: Executor, job: VideoJob, *, video: str = "", callback=None) -> Tensor:
    """Sample and decode one video: uint8 frames [F, H, W, 3]."""
    z = sample_latents(executor, job, video=video, callback=callback)
    return decode_video(executor, z, job.decode_chunk)
