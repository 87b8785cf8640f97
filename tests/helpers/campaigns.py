"""Tiny campaigns for the job and storage tests, and ways to watch their manifests."""

from __future__ import annotations

import time
from pathlib import Path

from farm.campaign.manifest import Manifest

PRODUCTS = ["cup", "jug", "mug", "pot"]
LOCALES = {
    "en-US": ("English", "Hi", "Buy", "{product} on a table"),
    "de-DE": ("Deutsch", "Hallo", "Kaufen", "{product} auf dem Tisch"),
}
FEED = """product_id,product_name,locale,headline,cta,prompt,format,width,height,duration_s,seed
cup,Acme Cup,en-US,Hot all day,Buy now,a red cup on a table,square,64,64,0.7,7
cup,Acme 杯子,zh-CN,整天保温,立即购买,桌上的红色杯子,square,64,64,0.7,
jug,Acme Jug,de-DE,Immer kalt,Jetzt kaufen,a blue jug on a table,wide,128,64,0.7,
"""


def write_spec(path: Path, name: str, products: int = 2, formats: int = 1) -> Path:
    """A tiny campaign: products x 2 locales x formats, 64x64, 0.5 s at 32 fps (17 frames,
    the watermark's minimum), 2 steps."""
    lines = [f"name: {name}", "brand: Acme", "products:"]
    for p in PRODUCTS[:products]:
        lines.append(f"  - {{id: {p}, name: Acme {p}, description: a small {p}}}")
    lines.append("locales:")
    for code, (language, headline, cta, prompt) in LOCALES.items():
        lines.append(
            f"  {code}: {{language: {language}, headline: {headline}, cta: {cta}, "
            f'prompt: "{prompt}"}}'
        )
    lines.append("formats:")
    for name_, aspect, w, h in [("square", "1:1", 64, 64), ("wide", "2:1", 128, 64)][:formats]:
        lines.append(f'  - {{name: {name_}, aspect: "{aspect}", width: {w}, height: {h}}}')
    lines += ["durations: [0.5]", "fps: 32", "preset: tiny", "steps: 2", "guidance: 1"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_feed(path: Path) -> Path:
    """A three-row CSV feed (two locales of one product, one of another), tiny sizes."""
    path.write_text(FEED, encoding="utf-8")
    return path


def wait_until(predicate, timeout: float = 90.0, what: str = "condition"):
    """Poll `predicate` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(manifest: Manifest) -> dict[str, dict]:
    """The manifest's status rows by variant id."""
    return {r["variant_id"]: r for r in manifest.status().to_pylist()}


def count(manifest: Manifest, status: str) -> int:
    return manifest.progress().by_status[status]


def completed_events(manifest: Manifest) -> dict[str, int]:
    """How many `completed` events each variant has (1 each when nothing was re-rendered)."""
    out: dict[str, int] = {}
    for r in manifest.events().to_pylist():
        if r["status"] == "completed":
            out[r["variant_id"]] = out.get(r["variant_id"], 0) + 1
    return out
