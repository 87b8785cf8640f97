"""The OpenAPI schema is the truth: security, errors, bodies and bounds as the Api enforces them.

No Ray here: the schema is built from the app and a deployment's `Limits`, and the few
requests (405, malformed bodies, the served schema) run the Api's app in this process;
none of them reaches the Director. `test_schemathesis` checks the same schema against the
live farm.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from farm.serve.api import app, in_process
from farm.serve.campaigns import SPEC_TYPES
from farm.serve.openapi import ERRORS, deployment_schema, size_pattern
from farm.serve.wire import Limits, RequestError, VideoRequest
from farm.settings import Settings, hash_token
from model.geometry import geometry_of
from tests.helpers.inprocess import AsgiClient

TINY = geometry_of("tiny")
TOKEN = {"authorization": "Bearer openapi-token"}
SMALL = {"max_seconds": 2.5, "max_steps": 7, "max_side": 64, "max_pixels": 64 * 32}


def _operations(schema: dict) -> Iterator[tuple[str, str, dict]]:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


@pytest.fixture(scope="module")
def schema() -> dict:
    return deployment_schema(app, Limits(), TINY)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[AsgiClient]:
    """The Api in this process with small limits (no Director: no request gets that far)."""
    root = tmp_path_factory.mktemp("openapi")
    tokens = {hash_token("openapi-token"): "acme"}
    with in_process(None, str(root), limits=SMALL, tokens=tokens, model="tiny") as api:
        c = AsgiClient(api)
        yield c
        c.close()


def test_every_operation_but_healthz_needs_the_bearer_token(schema: dict):
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant's token.",
    }
    for method, path, op in _operations(schema):
        if path == "/healthz":
            assert "security" not in op
            continue
        assert {"bearer": []} in op["security"], (method, path)
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"], (method, path)


def test_every_operation_documents_the_errors_it_gives_with_the_error_body(schema: dict):
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "code",
        "message",
        "param",
    }
    documented = set()
    for method, path, op in _operations(schema):
        for status in (*ERRORS.get((method, path), ()), *(() if path == "/healthz" else (401,))):
            response = op["responses"][str(status)]
            assert response["content"]["application/json"]["schema"] == error, (path, status)
        documented.add((method, path))
    assert set(ERRORS) <= documented  # no stale entry names an operation that is gone
    videos = schema["paths"]["/v1/videos"]["post"]["responses"]
    assert {"400", "401", "413", "415", "422", "429", "503"} <= set(videos)
    assert "Retry-After" in videos["429"]["headers"]
    campaigns = schema["paths"]["/v1/campaigns"]["post"]["responses"]
    assert {"400", "401", "409", "413", "415", "422", "429", "503"} <= set(campaigns)
    assert {"404", "409"} <= set(
        schema["paths"]["/v1/videos/{video_id}/content"]["get"]["responses"]
    )
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_campaign_submission_documents_its_body_and_the_manifest_is_parquet(schema: dict):
    body = schema["paths"]["/v1/campaigns"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == set(SPEC_TYPES) >= {"application/json", "application/yaml"}
    spec = body["content"]["application/yaml"]["schema"]
    assert {"name", "brand", "products", "locales", "formats", "durations"} <= set(spec["required"])
    assert "output_root" not in spec["properties"]  # refused over the API
    manifest = schema["paths"]["/v1/campaigns/{campaign_id}/manifest"]["get"]["responses"]["200"]
    assert set(manifest["content"]) == {"application/vnd.apache.parquet"}
    content = schema["paths"]["/v1/videos/{video_id}/content"]["get"]
    assert set(content["responses"]["200"]["content"]) == {"video/mp4", "image/jpeg"}
    (variant,) = [p for p in content["parameters"] if p["name"] == "variant"]
    assert set(variant["schema"]["enum"]) == {"video", "thumbnail"}


def test_maximums_are_the_limits_the_deployment_enforces(schema: dict):
    settings = Settings()
    video = schema["components"]["schemas"]["VideoRequest"]["properties"]
    assert video["seconds"]["maximum"] == settings.max_seconds == 60
    assert video["steps"]["maximum"] == settings.max_steps == 100
    assert video["prompt"]["maxLength"] == settings.max_prompt_bytes

    other = deployment_schema(app, Limits(**SMALL), TINY)
    video = other["components"]["schemas"]["VideoRequest"]
    assert video["properties"]["seconds"]["maximum"] == 2.5
    assert video["properties"]["steps"]["maximum"] == 7
    spec = other["paths"]["/v1/campaigns"]["post"]["requestBody"]["content"]["application/json"]
    assert spec["schema"]["properties"]["steps"]["maximum"] == 7
    assert spec["schema"]["properties"]["durations"]["items"]["maximum"] == 2.5
    assert other["components"]["schemas"]["Format"]["properties"]["width"]["maximum"] == 64
    # The default 256x144 is over max_side=64: leaving size out is refused, so it is required.
    assert "size" in video["required"] and "default" not in video["properties"]["size"]


def test_the_size_pattern_is_exactly_the_sizes_the_deployment_renders():
    limits = Limits(**SMALL)
    pattern = re.compile(size_pattern(limits, TINY))
    for width in range(1, 90):
        for height in (8, 16, 17, 32, 48, 64, 80):
            size = f"{width}x{height}"
            request = VideoRequest(prompt="x", size=size, seconds=1, steps=1)
            try:
                TINY.check_size(width, height)
                limits.check(request)
                accepted = True
            except (ValueError, RequestError):
                accepted = False
            assert bool(pattern.fullmatch(size)) == accepted, size
    for spelling in (" 16X16 ", "16x16", "016x0032", "0" * 40 + "16x16"):
        assert pattern.fullmatch(spelling)
        assert VideoRequest(prompt="x", size=spelling).size in ("16x16", "16x32")
    for spelling in ("+16x16", "1_6x16", "16x16\n", "16 x 16", "١٦x16"):
        assert not pattern.fullmatch(spelling)
        with pytest.raises(ValueError):
            VideoRequest(prompt="x", size=spelling)


def test_the_served_schema_is_the_serving_deployments(client: AsgiClient):
    served = client.get("/openapi.json").json()  # public, like the docs
    video = served["components"]["schemas"]["VideoRequest"]["properties"]
    assert video["seconds"]["maximum"] == SMALL["max_seconds"]
    assert video["steps"]["maximum"] == SMALL["max_steps"]
    assert served["info"]["x-limits"]["max_side"] == SMALL["max_side"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/videos/" + "0" * 32, "DELETE, GET"),
        ("PUT", "/v1/campaigns", "GET, POST"),
        ("OPTIONS", "/v1/videos", "POST"),
        ("DELETE", "/v1/campaigns/" + "0" * 16 + "/cancel", "POST"),
    ],
)
def test_a_405_lists_every_method_of_the_path(client: AsgiClient, method, path, allow):
    r = client.request(method, path, headers=TOKEN)
    assert r.status == 405 and r.json()["code"] == "method_not_allowed"
    assert r.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/v1/videos", "/v1/campaigns"])
def test_a_truncated_json_body_is_a_400_naming_the_body(client: AsgiClient, path):
    body = b'{"prompt": "a red bottle on a table", "seconds": 6'
    headers = TOKEN | {"content-type": "application/json"}
    r = client.post(path, body=body, headers=headers)
    assert r.status == 400, r.body
    assert r.json()["param"] == "body" and r.json()["code"] == "invalid_body"


@pytest.mark.parametrize("path", ["/v1/videos", "/v1/campaigns"])
def test_a_body_of_another_media_type_is_a_415(client: AsgiClient, path):
    headers = TOKEN | {"content-type": "text/plain"}
    r = client.post(path, body=b'{"prompt": "x"}', headers=headers)
    assert r.status == 415 and r.json()["code"] == "unsupported_media_type", r.body
