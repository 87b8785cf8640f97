"""Limits and prompt policy at the Api: every refusal is a 4xx naming the limit or field.

The Api runs in this process with no Director at all (`director=None`): each refusal here
happens before the request could reach one, i.e. before any GPU time is spent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm.serve.api import in_process
from farm.settings import hash_token
from tests.helpers.inprocess import AsgiClient
from tests.helpers.paths import EXAMPLE_SPEC

EXAMPLE = yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8"))
TOKEN = "limits-token"
VIDEO = {"prompt": "a red bottle", "size": "64x32", "seconds": 0.5, "fps": 32, "steps": 2}
LIMITS = {
    "max_seconds": 5.0,
    "max_steps": 10,
    "max_side": 512,
    "max_pixels": 256 * 256,
    "max_prompt_bytes": 600,
    "max_variants": 30,
}
POLICY = {
    "*": {"blocked_terms": ["Tom Hanks"], "blocked_patterns": [r"taylor\s*swift"]},
    "acme": {"blocked_terms": ["习近平"]},
}


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("limits")
    with in_process(
        None,
        str(root),
        limits=LIMITS,
        max_body_bytes=20_000,
        tokens={hash_token(TOKEN): "acme", hash_token("other"): "globex"},
        prompt_policy=POLICY,
        jobs_address="http://127.0.0.1:9",  # nothing listens: no refusal may get that far
    ) as app:
        client = AsgiClient(app, {"authorization": f"Bearer {TOKEN}"})
        yield client
        client.close()


def spec(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data.update(changes)
    return data


VIDEO_LIMITS = [
    ({"seconds": 6}, "seconds", "max_seconds"),
    ({"steps": 11}, "steps", "max_steps"),
    ({"size": "528x16"}, "size", "max_side"),
    ({"size": "512x512"}, "size", "max_pixels"),
    ({"prompt": "瓶" * 201}, "prompt", "max_prompt_bytes"),  # 603 bytes, 201 characters
    ({"negative_prompt": "x" * 601}, "negative_prompt", "max_prompt_bytes"),
]


@pytest.mark.parametrize(("fields", "param", "limit"), VIDEO_LIMITS)
def test_video_over_a_limit_names_it(api: AsgiClient, fields: dict, param: str, limit: str):
    r = api.post("/v1/videos", json={**VIDEO, **fields})
    assert r.status == 422, r.body
    body = r.json()
    assert body["code"] == "limit_exceeded" and body["param"] == param, body
    assert limit in body["message"], body


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "ＴＯＭ　ＨＡＮＫＳ on a beach"}, "prompt"),  # full-width: NFKC
        ({"prompt": "to\u200bm  hanks waves"}, "prompt"),  # zero-width space, case
        ({"prompt": "a Taylor  Swift cameo"}, "prompt"),  # pattern
        ({"negative_prompt": "not 习近平"}, "negative_prompt"),  # acme's own term
    ],
)
def test_video_against_the_policy_names_the_field(api: AsgiClient, fields: dict, param: str):
    r = api.post("/v1/videos", json={**VIDEO, **fields})
    assert r.status == 422, r.body
    body = r.json()
    assert body["code"] == "policy_violation" and body["param"] == param, body


def test_policy_is_per_tenant(api: AsgiClient):
    data = spec()
    data["locales"]["zh-CN"]["headline"] = "习近平"  # acme's own term, not globex's
    r = api.post("/v1/campaigns", json=data)
    assert r.json()["code"] == "policy_violation", r.body
    # globex gets past the policy, up to the (unreachable) Jobs API.
    r = api.post("/v1/campaigns", json=data, headers={"authorization": "Bearer other"})
    assert r.status == 503 and r.json()["code"] == "jobs_unavailable", r.body


def test_announce_is_not_a_blocked_ann_substring(api: AsgiClient):
    from farm.policy import PromptPolicy

    policy = PromptPolicy(blocked_terms=["Ann"])
    assert policy.violation("we announce a new bottle") is None
    assert policy.violation("with ANN, outdoors") is not None


CAMPAIGN_LIMITS = [
    ({"seeds": 3}, "seeds", "max_variants"),  # 2·3·2·1·3 = 36 > 30
    ({"steps": 11}, "steps", "max_steps"),
    ({"durations": [1, 6]}, "durations[1]", "max_seconds"),
    (
        {"formats": [{"name": "big", "aspect": "1:1", "width": 512, "height": 512}]},
        "formats[0]",
        "max_pixels",
    ),
    (
        {"storyboard": [{"start": 0, "end": 1, "prompt": "{product} " + "x" * 600}]},
        "storyboard[0].prompt",
        "max_prompt_bytes",
    ),
]


@pytest.mark.parametrize(("changes", "param", "limit"), CAMPAIGN_LIMITS)
def test_campaign_over_a_limit_names_it(api: AsgiClient, changes: dict, param: str, limit: str):
    r = api.post("/v1/campaigns", json=spec(**changes))
    assert r.status == 422, r.body
    body = r.json()
    assert body["code"] == "limit_exceeded" and body["param"] == param, body
    assert limit in body["message"], body


def test_campaign_prompt_too_long_after_filling_names_the_locale(api: AsgiClient):
    data = spec()
    data["products"][0]["description"] = "steel " * 70  # 420 bytes, fine on its own
    r = api.post("/v1/campaigns", json=data)
    body = r.json()
    assert r.status == 422 and body["code"] == "limit_exceeded", body
    assert body["param"] == "locales.en-US.prompt" and "flask-500" in body["message"], body


def test_campaign_against_the_policy_is_refused_naming_the_field(api: AsgiClient):
    data = spec()
    data["locales"]["en-US"]["prompt"] = "{product} held by tom hanks"
    r = api.post("/v1/campaigns", json=data)
    body = r.json()
    assert r.status == 422 and body["code"] == "policy_violation", body
    assert body["param"] == "locales.en-US.prompt" and "flask-500" in body["message"], body

    data = spec()
    data["products"][1]["name"] = "Taylor Swift Cup"
    body = api.post("/v1/campaigns", json=data).json()
    assert (body["code"], body["param"]) == ("policy_violation", "products[1].name"), body

    data = spec()
    data["locales"]["zh-CN"]["cta"] = "和习近平一起购买"
    yaml_body = yaml.safe_dump(data, allow_unicode=True).encode()
    r = api.post("/v1/campaigns", body=yaml_body, headers={"content-type": "application/yaml"})
    body = r.json()
    assert (body["code"], body["param"]) == ("policy_violation", "locales.zh-CN.cta"), body


def test_campaign_cannot_choose_its_output_root(api: AsgiClient, tmp_path: Path):
    r = api.post("/v1/campaigns", json=spec(output_root=str(tmp_path / "elsewhere")))
    assert r.status == 422 and r.json()["param"] == "output_root", r.body
    assert not (tmp_path / "elsewhere").exists()


def test_body_over_the_limit_is_413_before_parsing(api: AsgiClient):
    big = json.dumps({**VIDEO, "prompt": "x" * 30_000}).encode()
    for path in ("/v1/videos", "/v1/campaigns"):
        r = api.post(path, body=big, headers={"content-type": "application/json"})
        assert r.status == 413 and r.json()["code"] == "too_large", r.body
        assert "max_body_bytes" in r.json()["message"]
    # No Content-Length (chunked): counted as it arrives.
    chunks = [b"{" + b" " * 10_000, b" " * 10_000, b'"prompt": "x"}']
    for path in ("/v1/videos", "/v1/campaigns"):
        r = api.request("POST", path, chunks=chunks, headers={"content-type": "application/json"})
        assert r.status == 413 and r.json()["code"] == "too_large", (path, r.body)
    # Even unauthenticated: the size is refused before anything else is looked at.
    r = api.post("/v1/videos", body=big, headers={"authorization": "Bearer nope"})
    assert r.status == 413


def test_the_app_takes_limits_tokens_and_policy_from_settings():
    from farm.policy import PromptPolicy
    from farm.serve.app import farm_app
    from farm.serve.wire import Limits
    from farm.settings import Settings

    settings = Settings(
        tokens={hash_token("t"): "acme"},
        max_pixels=4096,
        max_prompt_bytes=99,
        max_variants=7,
        max_body_bytes=1234,
        prompt_policy={"*": {"blocked_terms": ["x"]}},
    )
    args = farm_app(settings)._bound_deployment.init_kwargs  # the Api's
    assert args["tokens"] == {hash_token("t"): "acme"} and args["allow_anonymous"] is False
    limits = Limits.model_validate(args["limits"])
    assert (limits.max_pixels, limits.max_prompt_bytes, limits.max_variants) == (4096, 99, 7)
    policy = PromptPolicy.model_validate(args["prompt_policy"]["*"])
    assert args["max_body_bytes"] == 1234 and policy.violation("an x") is not None
