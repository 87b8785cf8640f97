"""Schemathesis against the live farm: its served OpenAPI schema is the truth, 0 failures.

The whole app (Api, Director, Renderer pool; tiny model, tiny limits) runs on the session's
Serve behind a route prefix, with a real Jobs API, so schema-valid videos render and
schema-valid campaigns become Ray jobs. Schemathesis loads the schema the deployment
serves (its own limits) and runs every phase with every check, as a tenant with a valid
token; the run is bounded (examples per operation, a seed) and must report no failure.

One narrow allowance, stated in the schema itself: a rule JSON Schema cannot express (a
clip's minimum frame count, UTF-8 bytes, a spec's cross-field checks) is listed under the
operation's ``x-rules-beyond-schema``; a schema-valid request refused by such a rule (its
code and param match one listed) is not counted against ``positive_data_acceptance``.
Every other refusal of valid data is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from ray.job_submission import JobStatus, JobSubmissionClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.openapi.checks import RejectedPositiveData

from farm.serve.app import FarmAppArgs, build_app
from farm.settings import hash_token
from tests.helpers.cluster import deployed

TOKEN = "schemathesis-token"
APP = "schemathesis"
PREFIX = "/st"
LIMITS = {
    "max_seconds": 1.0,
    "max_steps": 2,
    "max_side": 32,
    "max_pixels": 32 * 32,
    "max_prompt_bytes": 200,
    "max_variants": 2,
}
# Checks every run reaches (the stateful ones, e.g. use_after_free, need a link to follow).
ALWAYS_RUN = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
}
EXAMPLES = 25  # per operation and phase: about 30 s, well under a minute


@pytest.fixture(scope="module")
def farm(ray_cluster, serve_http, tmp_path_factory) -> Iterator[str]:
    """The farm's base URL (under its route prefix); its campaign jobs stop at the end."""
    root = tmp_path_factory.mktemp("schemathesis") / "root"
    args = FarmAppArgs(
        model="tiny",
        storage_root=str(root),
        renderer_max_replicas=1,
        renderer_threads=1,
        director_num_cpus=0,
        director_max_videos=2,
        tokens={hash_token(TOKEN): "acme"},
        jobs_address=ray_cluster.dashboard_url,
        app_name=APP,
        max_body_bytes=20_000,
        **LIMITS,
    )
    jobs = JobSubmissionClient(ray_cluster.dashboard_url)
    before = {j.submission_id for j in jobs.list_jobs()}
    with deployed(build_app(args), APP, PREFIX, http=serve_http):
        try:
            yield serve_http + PREFIX
        finally:  # before the app goes: a job's renders hold its replicas
            _stop_jobs(jobs, before)


def _stop_jobs(jobs: JobSubmissionClient, before: set[str]) -> None:
    """Stop the campaign jobs the run submitted and wait until they are gone."""
    ours = [j.submission_id for j in jobs.list_jobs() if j.submission_id not in before]
    for sid in ours:
        jobs.stop_job(sid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(
            jobs.get_job_status(sid) in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)
            for sid in ours
        ):
            return
        time.sleep(0.5)


def _beyond_schema(case, failure, response) -> bool:
    """Whether `failure` is valid data refused by a rule the operation lists as beyond schema."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 422:
        return False
    rules = case.operation.definition.raw.get("x-rules-beyond-schema", [])
    error = response.json()
    return any(
        rule["code"] == error.get("code") and re.fullmatch(rule["param"], error.get("param", ""))
        for rule in rules
    )


def _describe(recorder, case_id: str, check) -> str:
    """One failure: the check, what it says, the answer and how to send the request again."""
    info = check.failure_info
    interaction = recorder.interactions.get(case_id)
    answer = ""
    if interaction is not None and interaction.response is not None:
        response = interaction.response
        answer = f"{response.status_code} {response.content[:300]!r}"
    return (
        f"{check.name}: {info.failure.title}: {info.failure.message}\n{answer}\n{info.code_sample}"
    )


def test_the_served_schema_states_the_deployments_limits(farm: str):
    schema = requests.get(f"{farm}/openapi.json", timeout=30).json()
    video = schema["components"]["schemas"]["VideoRequest"]["properties"]
    assert video["seconds"]["maximum"] == LIMITS["max_seconds"]
    assert video["steps"]["maximum"] == LIMITS["max_steps"]
    assert schema["servers"] == [{"url": PREFIX}]


def test_schemathesis_finds_nothing(farm: str):
    config = SchemathesisConfig.from_dict(
        {
            "seed": 19,
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "checks": {"enabled": True},
        }
    )
    schema = schemathesis.openapi.from_url(f"{farm}/openapi.json", config=config, timeout=30)
    schema.config.update(base_url=farm)

    @schema.hook
    def filter_failure(context, failure, case, response) -> bool:
        return not _beyond_schema(case, failure, response)

    failures: list[str] = []
    errors: list[str] = []
    cases = refused = 0
    checked: set[str] = set()
    start = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            refused += sum(event.recorder.filtered_failures.values())
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    checked.add(check.name)
                    if check.failure_info is not None:
                        failures.append(_describe(event.recorder, case_id, check))
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(repr(getattr(event, "value", None) or event.exception))
    elapsed = time.monotonic() - start
    print(
        f"schemathesis: {cases} cases in {elapsed:.0f} s; {refused} refused by rules beyond schema"
    )
    assert not errors, "\n".join(errors)
    assert not failures, "\n\n".join(sorted(set(failures)))
    assert cases >= 100
    assert checked >= ALWAYS_RUN, sorted(ALWAYS_RUN - checked)
