"""Soak benchmark: a campaign of `tiny` variants with Renderer replicas killed and a driver stop.

    python -m benchmarks.bench_soak --variants 1000      # the issue's size (hours on 2 cores)
    python -m benchmarks.bench_soak --variants 160       # what fits ~10 minutes here

Starts its own Ray head (`ray start --head`, free ports, own temp dir) with a Serve app of
Renderer replicas, then runs the same campaign shape twice as a real Ray Job rendering on
that app (`--serve-app`):

- clean: no faults;
- faults: a Renderer replica is `ray.kill`ed every `--kill-every` seconds, and once
  `--stop-at` of the variants are done the job's driver is SIGKILLed mid-variant (or
  stopped with `stop_job`: `--driver-stop stop`) and the campaign resumed
  (`resume_campaign`, a new writer epoch).

Reported per run: completed %, duplicates (variants with more than one `completed` event),
lost events (completions the job logged that the manifest lacks, gaps in the event seqs,
attempts left `in_progress`, outputs whose sha256 no event records), re-rendered variants
(attempts started more than once), wall time, and the faults run's time over the clean one.
Not in CI or `make bench`: it takes minutes to hours.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import report, table
from farm.testing.ray_head import free_ports, ray_head

APP = "soak"


def _driver_pids(cid: str) -> list[int]:
    """PIDs of this campaign's job driver (`python -m jobs.render_campaign ... cid`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
                if b"jobs.render_campaign" in cmd and cid.encode() in cmd:
                    pids.append(int(entry.name))
    return pids


def write_spec(path: Path, name: str, variants: int) -> Path:
    """4 products x 2 locales x 1 format x seeds: `variants` (a multiple of 8) tiny videos."""
    seeds = max(1, variants // 8)
    products = "\n".join(
        f"  - {{id: {p}, name: Acme {p}, description: a small {p}}}"
        for p in ("cup", "jug", "mug", "pot")
    )
    path.write_text(
        f"""name: {name}
brand: Acme
products:
{products}
locales:
  en-US: {{language: English, headline: Hi, cta: Buy, prompt: "{{product}} on a table"}}
  de-DE: {{language: Deutsch, headline: Hallo, cta: Kaufen, prompt: "{{product}} am Tisch"}}
formats:
  - {{name: square, aspect: "1:1", width: 64, height: 64}}
durations: [0.5]
fps: 32
preset: tiny
steps: 2
guidance: 1
seeds: {seeds}
""",
        encoding="utf-8",
    )
    return path


def audit(manifest, logs: str) -> dict:
    """Completed %, duplicates, lost events and re-renders, from the manifest and job logs."""
    events = manifest.events().to_pylist()
    status = {r["variant_id"]: r for r in manifest.status().to_pylist()}
    completed: dict[str, int] = {}
    started: dict[str, int] = {}
    for e in events:
        if e["status"] == "completed":
            completed[e["variant_id"]] = completed.get(e["variant_id"], 0) + 1
        elif e["status"] == "in_progress":
            started[e["variant_id"]] = started.get(e["variant_id"], 0) + 1
    logged = set(re.findall(r"\] ([0-9a-f]{20}) .*: completed", logs))
    seqs = sorted({e["seq"] for e in events})
    gaps = (seqs[-1] + 1 - len(seqs)) if seqs else 0
    unrecorded = 0
    for r in status.values():
        if r["status"] == "completed":
            data = Path(r["output_url"]).read_bytes()
            unrecorded += hashlib.sha256(data).hexdigest() != r["sha256"]
    lost = {
        "logged_not_in_manifest": len(logged - set(completed)),
        "seq_gaps": gaps,
        "left_in_progress": sum(r["status"] == "in_progress" for r in status.values()),
        "outputs_unrecorded": unrecorded,
    }
    total = len(status)
    return {
        "variants": total,
        "completed_pct": 100.0 * sum(r["status"] == "completed" for r in status.values()) / total,
        "duplicates": sum(n > 1 for n in completed.values()),
        "lost_events": sum(lost.values()),
        "lost_detail": lost,
        "re_rendered": sum(n > 1 for n in started.values()),
        "failed_attempts": sum(e["status"] == "failed" for e in events),
        "problems": len(manifest.problems),
    }


def run_campaign(address: str, root: str, spec: Path, args, faults: bool) -> dict:
    """Submit one campaign job on the Serve app; with `faults`, kill replicas and stop once."""
    import ray
    from ray.job_submission import JobSubmissionClient

    from farm.campaign.manifest import Manifest
    from farm.jobs.client import campaign_logs, resume_campaign, submit_campaign, wait_for

    job = {
        "concurrency": args.concurrency,
        "serve_app": APP,
        "python": sys.executable,
        "max_attempts": 5,
    }
    start = time.perf_counter()
    cid, sid = submit_campaign(spec, address=address, root=root, **job)
    manifest = Manifest.open(root, cid)
    total = manifest.variants.num_rows
    kills: list[float] = []
    done = threading.Event()

    def killer() -> None:
        rng = random.Random(0)
        while not done.wait(args.kill_every):
            replicas = [
                a
                for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(f"SERVE_REPLICA::{APP}#Renderer")
            ]
            if replicas:
                victim = rng.choice(replicas)
                with contextlib.suppress(Exception):
                    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]))
                    kills.append(time.perf_counter() - start)

    stops = 0
    if faults:
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        while manifest.progress().by_status["completed"] < args.stop_at * total:
            time.sleep(0.5)
        client = JobSubmissionClient(address)
        if args.driver_stop == "kill":  # the driver's node is lost: no chance to clean up
            for pid in _driver_pids(cid):
                os.kill(pid, signal.SIGKILL)
        else:  # an operator's stop: SIGTERM, then SIGKILL after Ray's grace period
            client.stop_job(sid)
        assert wait_for(address, sid, timeout=120) in ("STOPPED", "FAILED")
        stops = 1
        sid = resume_campaign(cid, address=address, root=root, **job)
    final = wait_for(address, sid, timeout=args.timeout)
    seconds = time.perf_counter() - start
    done.set()
    result = audit(Manifest.open(root, cid), campaign_logs(address, cid, root=root))
    return {
        **result,
        "final_job_status": final,
        "seconds": round(seconds, 1),
        "replica_kills": len(kills),
        "driver_stops": stops,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=1000, help="Variants per run (x8).")
    parser.add_argument("--replicas", type=int, default=2, help="Renderer replicas.")
    parser.add_argument("--concurrency", type=int, default=4, help="Variants in flight.")
    parser.add_argument("--kill-every", type=float, default=10.0, help="Seconds between kills.")
    parser.add_argument("--stop-at", type=float, default=0.4, help="Stop the job at this share.")
    parser.add_argument("--timeout", type=float, default=7200.0, help="Per-job time limit.")
    parser.add_argument(
        "--driver-stop",
        choices=("kill", "stop"),
        default="kill",
        help="How the driver is stopped: SIGKILL its process, or Ray's stop_job.",
    )
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from farm.serve.renderer import Renderer

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    runs: dict[str, dict] = {}
    try:
        with ray_head(num_cpus=4 + args.replicas) as head:
            address, gcs = head.dashboard_url, head.gcs_address
            ray.init(address=gcs, log_to_driver=False)
            serve.start(http_options={"host": "127.0.0.1", "port": free_ports(1)[0]})
            pool = Renderer.options(num_replicas=args.replicas).bind("tiny", threads=1)
            serve.run(pool, name=APP, route_prefix=None)
            for name, faults in (("clean", False), ("faults", True)):
                spec = write_spec(work / f"{name}.yaml", f"soak-{name}", args.variants)
                runs[name] = run_campaign(address, str(work / "root"), spec, args, faults)
                print(name, runs[name], flush=True)
            serve.shutdown()
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    clean, faulty = runs["clean"], runs["faults"]
    overhead = faulty["seconds"] / clean["seconds"]
    rows = [
        [
            name,
            r["variants"],
            f"{r['completed_pct']:.1f}%",
            r["duplicates"],
            r["lost_events"],
            r["re_rendered"],
            r["failed_attempts"],
            r["replica_kills"],
            r["driver_stops"],
            r["final_job_status"],
            f"{r['seconds']:.0f}",
        ]
        for name, r in runs.items()
    ]
    headers = ["run", "variants", "completed", "duplicates", "lost events", "re-rendered"]
    headers += ["failed attempts", "replica kills", "driver stops", "last job", "wall s"]
    text = table(headers, rows)
    text += (
        f"\n\nTime overhead of the faults run: {overhead:.2f}x the clean run "
        f"({args.replicas} Renderer replicas, concurrency {args.concurrency}, a replica "
        f"killed every {args.kill_every:g} s, the job's driver "
        f"{'SIGKILLed' if args.driver_stop == 'kill' else 'stopped'} at {args.stop_at:.0%} "
        "done and the campaign resumed)."
    )
    report("soak", text, {"args": vars(args), "runs": runs, "overhead": overhead})


if __name__ == "__main__":
    main()
