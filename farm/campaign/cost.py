"""What a variant costs to render: the model's work, priced by measured seconds.

The one owner of every render estimate (`farm campaign validate`, the campaign page, the
API's progress):

1. **Work** is the model's own count, exact from the variant: latent tokens (the model's
   `Geometry`) x transformer forwards (steps, x2 with guidance). It is stored with each
   variant (`work` in VARIANTS) and weights the ETA.
2. **Seconds per unit of work** are never assumed. A `Calibration` holds them for one
   model on one device, measured:

   * from finished renders: after each pass the campaign job adds its completed variants'
     render seconds (the manifest's `gpu_seconds`) and their work to
     ``{root}/calibration/{model}/{device}.json`` (`record`);
   * failing that, by a probe on this machine: one render of the campaign's largest
     variant by the engine (its prompts, steps, guidance and size, capped to one window,
     and the decode), timed (`probe`). A probe on a CPU prices a GPU farm high: renders
     replace it as soon as a campaign finishes one.

   An estimate names its calibration (`source`, `device`, `renders`), so the page and the
   CLI show where a number came from beside what was measured.

A calibration file is rewritten whole by each job that records (temp file + rename);
two jobs finishing at once may drop one's update, which the next pass makes good.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.geometry import Geometry, geometry_of

CALIBRATION_DIR = "calibration"


def work_units(
    frames: Any, width: Any, height: Any, geometry: Geometry, steps: Any, guidance: Any
) -> np.ndarray:
    """Latent tokens x transformer forwards of each clip (arrays or numbers), float64."""
    tokens = geometry.latent_tokens(frames, width, height).astype(np.float64)
    forwards = np.asarray(steps, np.float64) * np.where(np.asarray(guidance) > 1, 2.0, 1.0)
    return tokens * forwards


def variant_work(variants: pa.Table) -> np.ndarray:
    """The work of each row of a VARIANTS-like table (preset, frames, size, steps, guidance)."""
    out = np.zeros(variants.num_rows, np.float64)
    presets = variants["preset"].to_numpy(zero_copy_only=False)
    for preset in np.unique(presets):  # a campaign has one; asked once per model
        rows = np.flatnonzero(presets == preset)
        take = variants.take(pa.array(rows))
        out[rows] = work_units(
            take["frames"].to_numpy(),
            take["width"].to_numpy(),
            take["height"].to_numpy(),
            geometry_of(str(preset)),
            take["steps"].to_numpy(),
            take["guidance"].to_numpy(),
        )
    return out


@dataclass(frozen=True)
class Calibration:
    """Measured seconds per unit of work for one model on one device."""

    model: str
    device: str  # e.g. "cpu", "cuda:NVIDIA H200"
    seconds_per_unit: float
    source: str  # "renders": finished variants; "probe": one render timed here
    renders: int = 0  # finished variants behind it (renders)
    seconds: float = 0.0  # their render seconds
    work: float = 0.0  # their work
    updated: float = 0.0  # unix time of the last measurement

    def seconds_for(self, work: Any) -> np.ndarray:
        """Estimated render seconds of `work` (array or number)."""
        return np.asarray(work, np.float64) * self.seconds_per_unit

    def describe(self) -> str:
        """Where the rate comes from, in one line."""
        if self.source == "renders":
            return f"measured on {self.renders} finished renders of {self.model!r} on {self.device}"
        return f"one {self.model!r} render timed on this machine ({self.device}); none finished yet"


def device_label(device: Any) -> str:
    """A device as calibrations name it: 'cpu', 'cuda:<GPU name>', 'mps'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text) or "_"


def calibration_url(root: str, model: str, device: str) -> str:
    """Where the calibration of `model` on `device` lives under a storage root."""
    return posixpath.join(root.rstrip("/"), CALIBRATION_DIR, _slug(model), f"{_slug(device)}.json")


def load(
    root: str, model: str, device: str | None = None, storage_options: dict | None = None
) -> Calibration | None:
    """The stored calibration of `model` (on `device`; else the one measured last), or None."""
    fs, base = fsspec.core.url_to_fs(root, **(storage_options or {}))
    folder = posixpath.join(base.rstrip("/"), CALIBRATION_DIR, _slug(model))
    if device is not None:
        paths = [posixpath.join(folder, f"{_slug(device)}.json")]
    else:
        try:
            paths = [p for p in fs.ls(folder, detail=False) if p.endswith(".json")]
        except FileNotFoundError:
            return None
    found = []
    for path in paths:
        try:
            found.append(Calibration(**json.loads(fs.cat_file(path))))
        except (FileNotFoundError, TypeError, ValueError):  # absent or not a calibration
            continue
    return max(found, key=lambda c: c.updated, default=None)


def record(
    root: str,
    model: str,
    device: str,
    seconds: float,
    work: float,
    renders: int,
    storage_options: dict | None = None,
) -> Calibration:
    """Add finished renders (their seconds and work) to the stored calibration; returns it."""
    if renders < 1 or work <= 0 or seconds <= 0:
        raise ValueError(f"nothing to record: {renders} renders, {seconds} s, {work} work")
    old = load(root, model, device, storage_options)
    if old is not None and old.source == "renders":
        seconds, work, renders = old.seconds + seconds, old.work + work, old.renders + renders
    cal = Calibration(model, device, seconds / work, "renders", renders, seconds, work, time.time())
    url = calibration_url(root, model, device)
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, json.dumps(asdict(cal), indent=2).encode())
    fs.mv(tmp, path)
    return cal


def probe(row: dict[str, Any], device: str = "cpu") -> Calibration:
    """Time one render of a variant (a VARIANTS row) by the engine here, on `device`.

    Its real prompts, steps, guidance and size, and the decode; the clip is capped to one
    window of the model, and the model's load is not timed. Overlay and encoding are left
    out (a small share: they run on CPUs beside the accelerator).
    """
    from farm.output.render import variant_order, video_job
    from farm.render.engine import render
    from farm.render.executors import LocalExecutor

    geometry = geometry_of(str(row["preset"]))
    frames = geometry.pixel_frames(
        min(geometry.latent_frames(int(row["frames"])), geometry.max_latent_frames)
    )
    order = dataclasses.replace(variant_order(row), frames=frames, copy=None)
    executor = LocalExecutor(str(row["preset"]), device=device)
    start = time.perf_counter()
    render(executor, video_job(order), video=order.video_id)
    seconds = time.perf_counter() - start
    work = float(
        work_units(frames, order.width, order.height, geometry, order.steps, order.guidance)
    )
    return Calibration(
        str(row["preset"]),
        executor.model_info().get("device", device_label(device)),
        seconds / work,
        "probe",
        seconds=seconds,
        work=work,
        updated=time.time(),
    )


def calibrate(
    variants: pa.Table,
    root: str | None = None,
    storage_options: dict | None = None,
    device: str | None = None,
) -> Calibration:
    """The campaign's calibration: stored renders of its model under `root`, else a probe.

    The probe renders the campaign's largest variant (capped to one window) on this
    machine's `device` (CUDA when there is one).
    """
    preset = str(variants["preset"][0].as_py())
    if root is not None:
        stored = load(root, preset, device, storage_options)
        if stored is not None:
            return stored
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    largest = int(np.argmax(variant_work(variants)))
    return probe(variants.slice(largest, 1).to_pylist()[0], device)


def estimate(variants: pa.Table, calibration: Calibration) -> dict[str, Any]:
    """Estimated render seconds of the campaign, with where the rate came from."""
    work = variant_work(variants)
    return {
        "est_gpu_s": float(calibration.seconds_for(work.sum())),
        "work": float(work.sum()),
        "seconds_per_unit": calibration.seconds_per_unit,
        "source": calibration.source,
        "device": calibration.device,
        "renders": calibration.renders,
        "basis": calibration.describe(),
    }


def completed_work(status: pa.Table) -> float:
    """The work of the completed rows of a manifest status table."""
    done = status.filter(pc.equal(status["status"], "completed"))
    return float(variant_work(done).sum()) if done.num_rows else 0.0
