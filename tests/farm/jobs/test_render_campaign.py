"""The campaign job refuses an actor pool the cluster cannot place instead of waiting forever."""

import pytest

import farm.serve.resources as resources
from farm.serve.resources import Unschedulable


def test_a_pool_too_big_for_the_free_cpus_fails_fast_naming_them(monkeypatch):
    from jobs.render_campaign import _executor

    # The resume without --serve-app: a 2-CPU farm whose Serve app holds both.
    monkeypatch.setattr(resources, "free_resources", lambda: {"CPU": 0.0, "GPU": 0.0})
    with pytest.raises(Unschedulable) as e:
        _executor("tiny", actors=2, serve_app=None)
    assert "actors=2 needs 2 CPUs" in str(e.value) and "has 0 free" in str(e.value)
