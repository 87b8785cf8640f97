"""The processes of a local Ray, found from /proc: its process tree and its session marker.

A local farm's Ray is a tree of processes (GCS, raylet, dashboard, agents, workers, job
drivers under the workers). When a parent dies first its children are re-parented and the
tree forgets them, so the tree is taken before shutdown; processes started later are found
by the Ray session directory that every one of them names on its command line.
Each process is recorded with its start time, so a pid reused by another process is
never taken for one of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["descendants", "farm_processes", "kill_leftovers"]

GRACE_S = 5.0  # how long processes get to exit on SIGTERM before they are killed


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, or None (gone, or a zombie: it is dead)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its (new) parent
        return None
    return int(fields[1]), int(fields[19])


def descendants(roots: set[int]) -> dict[int, int]:
    """`roots` and all their descendants now: pid -> start time (to tell a reused pid)."""
    parent: dict[int, int] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            parent[int(entry.name)], started[int(entry.name)] = stat
    tree = {pid for pid in roots if pid in started}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return {pid: started[pid] for pid in tree}


def _naming(marker: str) -> dict[int, int]:
    """Live processes whose command line names `marker`: pid -> start time."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and (stat := _proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat[1]
    return found


def farm_processes(tree: dict[int, int], session_dir: str) -> dict[int, int]:
    """Which of `tree` still live, with every live process that names `session_dir`."""
    alive = {pid: t for pid, t in tree.items() if (s := _proc_stat(pid)) and s[1] == t}
    return alive | (_naming(session_dir) if session_dir else {})


def kill_leftovers(tree: dict[int, int], session_dir: str) -> None:
    """SIGTERM what is left of the farm's Ray, then SIGKILL what ignores it; wait for both."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        left = farm_processes(tree, session_dir)
        left.pop(os.getpid(), None)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = farm_processes(left, "")
