"""The schedulability check: settings a cluster cannot hold are refused, naming the shortfall."""

import pytest

from farm.serve.resources import ActorGroup, Unschedulable, check_fits, serve_app_groups
from farm.settings import Settings


def test_two_renderers_on_two_cpus_name_the_replicas_and_the_free_cpus():
    # The case: 2 CPUs, Director 1, Renderers 2 x 1: one CPU short.
    settings = Settings(renderer_min_replicas=2)
    with pytest.raises(Unschedulable) as e:
        check_fits(serve_app_groups(settings), {"CPU": 2.0})
    assert str(e.value) == (
        "renderer_min_replicas=2 needs 2 CPUs for Renderer replicas, the cluster has 1 free "
        "(renderer_num_cpus=1)"
    )


def test_gpus_are_checked_like_cpus():
    settings = Settings(renderer_num_gpus=1, renderer_min_replicas=1)
    with pytest.raises(Unschedulable, match=r"needs 1 GPUs .* has 0 free \(renderer_num_gpus=1\)"):
        check_fits(serve_app_groups(settings), {"CPU": 8.0, "GPU": 0.0})


def test_the_director_is_named_when_it_alone_does_not_fit():
    settings = Settings(director_num_cpus=4, renderer_min_replicas=0)
    with pytest.raises(Unschedulable, match=r"the Director replica.*director_num_cpus=4"):
        check_fits(serve_app_groups(settings), {"CPU": 2.0})


def test_settings_that_fit_pass_and_scale_to_zero_needs_no_renderer():
    check_fits(serve_app_groups(Settings()), {"CPU": 2.0})
    check_fits(serve_app_groups(Settings(renderer_min_replicas=0)), {"CPU": 1.0})
    fixed = Settings(renderer_min_replicas=3, renderer_max_replicas=3, director_num_cpus=0)
    with pytest.raises(Unschedulable, match="renderer_min_replicas=3 needs 3 CPUs"):
        check_fits(serve_app_groups(fixed), {"CPU": 2.0})


def test_a_job_pool_names_its_own_knob():
    pool = [ActorGroup("the job's model actors", 2, 1.0, 0.0, "actors", "actor")]
    with pytest.raises(Unschedulable) as e:
        check_fits(pool, {"CPU": 0.0})
    assert str(e.value) == (
        "actors=2 needs 2 CPUs for the job's model actors, the cluster has 0 free "
        "(actor_num_cpus=1)"
    )
