"""Executors: where the engine's window-steps run.

- `LocalExecutor`: in this process, through one `ModelWorker`.
- `RayExecutor`: a pool of Ray actors, each holding the model once (`num_gpus` per actor
  from settings, 0 on CPU). Window-steps are spread over the pool in batches; a batch
  whose actor dies is sent again to another actor and the dead one is replaced, so the
  video completes with the same result.

Both implement `farm.render.protocols.Executor`; the Serve executor (farm/serve) does too.
Packing window-steps into calls and resending lost calls are `farm.render.dispatch`'s,
shared with the Serve executor.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import ray
import torch
from torch import Tensor

from farm.render.dispatch import (
    REPLICA_DEATH,
    Resender,
    as_tensor,
    forward_rows,
    pack_steps,
    tensor_bytes,
    unpack_velocities,
)
from farm.render.engine import Blender, WindowStep, blend
from farm.render.halo import HaloLayout
from farm.render.worker import ModelWorker
from farm.settings import setting_default
from model import VideoModel

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs window-steps in this process, batching them into forwards of <= max_batch."""

    def __init__(
        self,
        model_ref: str | VideoModel,
        *,
        max_batch: int = setting_default("renderer_max_batch"),
        device: str = "cpu",
        load: dict | None = None,
    ):
        self.worker = ModelWorker(model_ref, max_batch=max_batch, device=device, load=load)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return self.worker.latent_shape(frames, height, width)

    def model_info(self) -> dict[str, str]:
        return self.worker.model_info()

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        return self.worker.timesteps(steps, frames, height, width)

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        return self.worker.run_steps(steps)

    def advance(self, x, plan, ts, prompts, negative, guidance) -> Tensor:
        return blend(
            self.worker.advance(x, list(plan.windows), ts, prompts, negative, guidance), plan
        )

    def decode_chunks(self, z: Tensor, chunks: list[tuple[int, int]]) -> list[Tensor]:
        return [self.worker.decode_chunk(z, a, b) for a, b in chunks]


ModelActor = ray.remote(ModelWorker)


class RayExecutor:
    """Runs window-steps on a pool of Ray actors, resending work whose actor died."""

    def __init__(
        self,
        model_ref: str,
        *,
        num_actors: int = 2,
        num_gpus: float = 0.0,
        num_cpus: float = 1.0,
        max_batch: int = setting_default("renderer_max_batch"),
        threads: int | None = 1,
        max_resends: int = setting_default("max_resends"),
        worker: type = ModelWorker,
        load: dict | None = None,
    ):
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        self._actor_cls = ModelActor if worker is ModelWorker else ray.remote(worker)
        self._options = {"num_gpus": num_gpus, "num_cpus": num_cpus, "max_restarts": 0}
        self._init = (
            model_ref,
            {
                "max_batch": max_batch,
                "threads": threads,
                "device": "cuda" if num_gpus else "cpu",
                **({"load": load} if load else {}),
            },
        )
        self.max_batch = max_batch
        self.resender = Resender(max_resends, pool="Ray actor")
        self.actors = [self._spawn() for _ in range(num_actors)]
        self.bytes_sent = 0  # tensor bytes shipped to actors (window latents, prompts aside)
        self.bytes_received = 0
        self.halo_bytes = 0  # overlap frames sent replica to replica (halo exchange)
        self._shapes: dict[tuple, tuple] = {}
        self._schedules: dict[tuple, list[float]] = {}
        self._model_info: dict[str, str] | None = None

    @property
    def resent(self) -> int:
        """Calls and round tasks sent again after their actor died."""
        return self.resender.resent

    def _spawn(self):
        model_ref, kwargs = self._init
        return self._actor_cls.options(**self._options).remote(model_ref, **kwargs)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        key = (frames, height, width)
        if key not in self._shapes:
            self._shapes[key] = self._run([("latent_shape", key)])[0]
        return self._shapes[key]

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        """The model's schedule for this size (asked of one actor, once per steps and size)."""
        key = (steps, frames, height, width)
        if key not in self._schedules:
            self._schedules[key] = list(self._run([("timesteps", key)])[0])
        return self._schedules[key]

    def _per_call(self, guidance: float) -> int:
        """Window-steps per actor call: a guided step is two rows of a forward."""
        return max(1, self.max_batch // forward_rows(guidance))

    def _put(self, latent: Tensor):
        """Ship a latent to the object store once; window-steps then refer to it by range."""
        array = latent.detach().contiguous().numpy()
        self.bytes_sent += array.nbytes
        return ray.put(array)

    def model_info(self) -> dict[str, str]:
        """The pool's model (every actor loads the same reference)."""
        if self._model_info is None:
            self._model_info = self._run([("model_info", ())])[0]
        return self._model_info

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        n = self._per_call(max((s.guidance for s in steps), default=1.0))
        calls, batches = [], []
        for pack in pack_steps(steps, n):
            ref = self._put(pack.latent)  # once per latent, whatever the number of calls
            calls += [("run_arrays", (ref, *batch.fields)) for batch in pack.batches]
            batches += pack.batches
        return unpack_velocities(len(steps), batches, self._run(calls))

    def advance(self, x, plan, ts, prompts, negative, guidance) -> Tensor:
        """Windows run their steps on the pool and are blended as they come back."""
        n = self._per_call(guidance)
        ref = self._put(x[0])
        windows = list(plan.windows)
        calls = [
            (
                "advance_arrays",
                (ref, windows[k : k + n], ts, prompts[k : k + n], negative, guidance),
            )
            for k in range(0, len(windows), n)
        ]
        blender = Blender(plan)

        def arrived(call: int, parts: list) -> None:
            for j, part in enumerate(parts):
                blender.add(call * n + j, as_tensor(part)[None])

        self._run(calls, on_result=arrived)
        return blender.result()

    def run_rounds(self, x, plan, rounds, prompts, negative, guidance, on_round=None) -> Tensor:
        """Every fusion round of one video with the latent sharded over the pool (farm.render.halo).

        Groups of consecutive windows are pinned to actors in contiguous blocks, so most
        overlaps stay on one replica; only the frames neighbouring groups share travel,
        replica to replica through the object store. The driver ships the noise once,
        then only wires the references of one round into the next, `lookahead` rounds
        ahead, and checks each round by a small token. A task whose actor died fails
        along with those that consumed its outputs; each is sent again, in round order,
        with the same inputs, so the video comes out the same.
        """
        layout = HaloLayout.make(plan, self._per_call(guidance))
        n = len(layout.groups)
        layout_ref = ray.put(layout)
        noise_ref = self._put(x[0])
        schedule = [list(ts) for ts in rounds] + [[]]  # the last entry: the final fusion
        outs: dict[int, list[list]] = {}  # round → per group: refs [*to peers, token]
        frame_bytes = x[0, :, 0].numel() * x.element_size()

        def submit(r: int, g: int) -> None:
            if r == 0:
                received = [noise_ref]
            else:
                received = [outs[r - 1][h][layout.peers[h].index(g)] for h in layout.peers[g]]
            actor = self.actors[g * len(self.actors) // n]
            call = actor.window_round.options(
                num_returns=(len(layout.peers[g]) if schedule[r] else 1) + 1
            )
            prompts_g = [prompts[j] for j in layout.groups[g]]
            outs.setdefault(r, [None] * n)[g] = call.remote(
                layout_ref, g, schedule[r], prompts_g, negative, guidance, *received
            )

        def submit_round(r: int) -> None:
            for g in range(n):
                submit(r, g)
            if schedule[r]:  # count what crosses between replicas
                for g in range(n):
                    for h in layout.peers[g]:
                        if self._owner(g, n) != self._owner(h, n):
                            self.halo_bytes += layout.exchanged_frames(g, h) * frame_bytes

        lookahead = 2
        for r in range(min(lookahead, len(schedule))):
            submit_round(r)
        spent = 0  # resends budget: replicas that died (not inputs lost with them)
        for r in range(len(schedule)):
            g = 0
            while g < n:  # confirm round r group by group; resend what failed
                try:
                    ray.get(outs[r][g][-1])
                    g += 1
                except REPLICA_DEATH as e:
                    died = self._replace_dead(e, self.actors[self._owner(g, n)])
                    spent = self.resender.charge(e, spent, counted=died)
                    log.warning("round %d group %d lost its actor or an input; resending", r, g)
                    submit(r, g)
            outs.pop(r - 1, None)  # inputs of a confirmed round are no longer needed
            if r + lookahead < len(schedule):
                submit_round(r + lookahead)
            if schedule[r] and on_round is not None:
                on_round(r)
        parts = ray.get([refs[0] for refs in outs[len(schedule) - 1]])
        self.bytes_received += sum(p.nbytes for p in parts)
        return torch.from_numpy(np.concatenate(parts, axis=1))[None]

    def _owner(self, g: int, n: int) -> int:
        return g * len(self.actors) // n

    def _replace_dead(self, error: Exception, suspect) -> bool:
        """Replace the actor the error names (else `suspect`, the one that ran the task).

        False when that actor was replaced already: the task lost an input, not its actor.
        """
        dead = getattr(error, "actor_id", None)
        for i, actor in enumerate(self.actors):
            # An ActorHandle has no public id; Ray's own private _actor_id is what the error names.
            if actor._actor_id.hex() == dead or (dead is None and actor is suspect):
                if dead is None:
                    ray.kill(actor)  # unknown state: make sure it does no more work
                self.actors[i] = self._spawn()
                return True
        return False

    def decode_chunks(self, z: Tensor, chunks: list[tuple[int, int]]) -> list[Tensor]:
        z_ref = self._put(z)  # one copy in the object store, read by every actor
        return self._run([("decode_chunk", (z_ref, a, b)) for a, b in chunks])

    def stats(self) -> list[dict]:
        """Counters of every live actor (see ModelWorker.stats)."""
        return ray.get([a.stats.remote() for a in self.actors])

    def close(self) -> None:
        """Kill the pool's actors."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def _run(self, calls: list[tuple[str, tuple]], on_result=None) -> list:
        """Run (method, args) calls over the pool, round robin; resend those whose actor died.

        Results in call order, or each handed to `on_result(i, result)` as it arrives.
        """
        turn = itertools.count()

        def send(call: tuple[str, tuple]) -> tuple:
            actor = self.actors[next(turn) % len(self.actors)]
            method, args = call
            self.bytes_sent += tensor_bytes(args)
            return getattr(actor, method).remote(*args), actor

        def result(sent: tuple):
            value = ray.get(sent[0])
            self.bytes_received += tensor_bytes(value)
            return value

        def first_ready(sent: list[tuple]) -> int:
            refs = [ref for ref, _ in sent]
            (ready,), _ = ray.wait(refs, num_returns=1)
            return refs.index(ready)

        def lost(sent: tuple) -> None:
            dead = sent[1]
            if dead in self.actors:  # not yet replaced by an earlier failure
                self.actors[self.actors.index(dead)] = self._spawn()

        return self.resender.run(
            calls, send, result, first_ready=first_ready, lost=lost, on_result=on_result
        )
