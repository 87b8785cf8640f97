"""Executors: where the engine's window-steps run.

- `LocalExecutor`: in this process, through one `ModelWorker`.
- `RayExecutor`: a pool of Ray actors, each holding the model once (`num_gpus` per actor
  from settings, 0 on CPU). Window-steps are spread over the pool in batches; a batch
  whose actor dies is sent again to another actor and the dead one is replaced, so the
  video completes with the same result.

The Serve executor (farm/serve) implements the same three methods.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from torch import Tensor

from farm.render.engine import Blender, WindowStep, blend
from farm.render.halo import HaloLayout
from farm.render.worker import ModelWorker, as_tensor

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs window-steps in this process, batching them into forwards of <= max_batch."""

    def __init__(self, model_ref="tiny", *, max_batch: int = 8, device: str = "cpu"):
        self.worker = ModelWorker(model_ref, max_batch=max_batch, device=device)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return self.worker.latent_shape(frames, height, width)

    def model_info(self) -> dict[str, str]:
        return self.worker.model_info()

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        return self.worker.run_steps(steps)

    def advance(self, x, plan, ts, prompts, negative, guidance) -> Tensor:
        return blend(
            self.worker.advance(x, list(plan.windows), ts, prompts, negative, guidance), plan
        )

    def decode_chunks(self, z: Tensor, chunks: list[tuple[int, int]]) -> list[Tensor]:
        return [self.worker.decode_chunk(z, a, b) for a, b in chunks]


ModelActor = ray.remote(ModelWorker)
_DEATH = (RayActorError, ActorDiedError, ActorUnavailableError)


class RayExecutor:
    """Runs window-steps on a pool of Ray actors, resending work whose actor died."""

    def __init__(
        self,
        model_ref: str = "tiny",
        *,
        num_actors: int = 2,
        num_gpus: float = 0.0,
        num_cpus: float = 1.0,
        max_batch: int = 8,
        threads: int | None = 1,
        max_resends: int = 8,
        worker: type = ModelWorker,
    ):
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        self._actor_cls = ModelActor if worker is ModelWorker else ray.remote(worker)
        self._options = {"num_gpus": num_gpus, "num_cpus": num_cpus, "max_restarts": 0}
        self._init = (
            model_ref,
            {"max_batch": max_batch, "threads": threads, "device": "cuda" if num_gpus else "cpu"},
        )
        self.max_batch = max_batch
        self.max_resends = max_resends
        self.actors = [self._spawn() for _ in range(num_actors)]
        self.resent = 0  # batches sent again after their actor died
        self.bytes_sent = 0  # tensor bytes shipped to actors (window latents, prompts aside)
        self.bytes_received = 0
        self.halo_bytes = 0  # overlap frames sent replica to replica (halo exchange)
        self._shapes: dict[tuple, tuple] = {}

    def _spawn(self):
        model_ref, kwargs = self._init
        return self._actor_cls.options(**self._options).remote(model_ref, **kwargs)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        key = (frames, height, width)
        if key not in self._shapes:
            self._shapes[key] = self._run([("latent_shape", key)])[0]
        return self._shapes[key]

    def _per_call(self, guidance: float) -> int:
        """Window-steps per actor call: a guided step is two rows of a forward."""
        return max(1, self.max_batch // (2 if guidance != 1 else 1))

    def _put(self, latent: Tensor):
        """Ship a latent to the object store once; window-steps then refer to it by range."""
        array = latent.detach().contiguous().numpy()
        self.bytes_sent += array.nbytes
        return ray.put(array)

    def model_info(self) -> dict[str, str]:
        """The pool's model (every actor loads the same reference)."""
        if not hasattr(self, "_model_info"):
            self._model_info = self._run([("model_info", ())])[0]
        return self._model_info

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        n = self._per_call(max((s.guidance for s in steps), default=1.0))
        groups: dict[tuple, list[int]] = {}  # steps by the latent (memory) they window
        for i, s in enumerate(steps):
            key = (s.latent.data_ptr(), tuple(s.latent.shape), s.latent.stride())
            groups.setdefault(key, []).append(i)
        calls, order = [], []
        for idx in groups.values():
            ref = self._put(steps[idx[0]].latent)
            for k in range(0, len(idx), n):
                part = [steps[i] for i in idx[k : k + n]]
                fields = ("start", "stop", "t", "prompt", "negative_prompt", "guidance")
                args = tuple([getattr(s, f) for s in part] for f in fields)
                calls.append(("run_arrays", (ref, *args)))
                order += idx[k : k + n]
        out: list = [None] * len(steps)
        for i, v in zip(order, itertools.chain.from_iterable(self._run(calls)), strict=True):
            out[i] = as_tensor(v)
        return out

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
        resends = 0
        for r in range(len(schedule)):
            g = 0
            while g < n:  # confirm round r group by group; resend what failed
                try:
                    ray.get(outs[r][g][-1])
                    g += 1
                except _DEATH as e:
                    if self._replace_dead(e, self.actors[self._owner(g, n)]):
                        resends += 1  # a replica died (not just an input lost with it)
                        if resends > self.max_resends:
                            raise RuntimeError(f"replicas died {resends} times; last: {e}") from e
                    self.resent += 1
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
        """Run (method, args) calls over the pool; resend those whose actor died.

        Returns the results in call order, or hands each to `on_result(i, result)` as it
        arrives (then the list holds None), so the caller works while the pool computes.
        """
        results: list = [None] * len(calls)
        pending: dict = {}
        turn = itertools.count()

        def submit(i: int) -> None:
            actor = self.actors[next(turn) % len(self.actors)]
            method, args = calls[i]
            self.bytes_sent += _tensor_bytes(args)
            pending[getattr(actor, method).remote(*args)] = (i, actor)

        for i in range(len(calls)):
            submit(i)
        resends = 0
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, actor = pending.pop(ref)
            try:
                result = ray.get(ref)
                self.bytes_received += _tensor_bytes(result)
                if on_result is None:
                    results[i] = result
                else:
                    on_result(i, result)
            except _DEATH as e:
                resends += 1
                if resends > self.max_resends:
                    raise RuntimeError(f"window-steps failed {resends} times; last: {e}") from e
                self._replace(actor)
                self.resent += 1
                log.warning("actor died; resending %s call %d", calls[i][0], i)
                submit(i)
        return results

    def _replace(self, dead) -> None:
        if dead in self.actors:
            self.actors[self.actors.index(dead)] = self._spawn()


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors inside (nested lists/tuples of) `obj`."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(o) for o in obj)
    return 0
