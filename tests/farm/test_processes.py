"""Finding and stopping what is left of a process tree whose root died first."""

import contextlib
import os
import signal
import subprocess
import sys

from farm.processes import descendants, farm_processes, kill_leftovers


def test_orphans_of_the_tree_and_processes_naming_the_marker_are_killed(tmp_path):
    marker = str(tmp_path / "session")
    # A parent whose child ignores SIGTERM and outlives it (a worker, a job's driver).
    parent = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    # Not in the tree, found by the marker on its command line (started after the snapshot).
    named = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
    try:
        tree = descendants({parent.pid})
        assert {parent.pid, child} <= set(tree)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert child in farm_processes(tree, "")  # re-parented, still found by the snapshot
        assert named.pid in farm_processes({}, marker)
        kill_leftovers(tree, marker)
        assert named.wait(timeout=10) == -signal.SIGTERM
        assert farm_processes(tree, marker) == {}  # the child ignored SIGTERM: killed
    finally:
        for pid in (child, named.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
