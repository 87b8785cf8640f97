"""Fuzzing the Api from its own OpenAPI: whatever arrives, never a 5xx, never a crash.

Hypothesis draws requests for every operation the app documents (so new routes are fuzzed
too): path ids (hex, tenant-tagged, traversal attempts, any text), query values, auth
headers and bodies built from the operation's JSON schema, bent out of shape at random.
POST /v1/campaigns, which reads its body raw (JSON or YAML), gets the example campaign
with one value replaced by anything, plus raw bytes. The Api runs in this process on a
real Director and Renderer (Serve, tiny model, tiny limits), so valid videos render.

Allowed answers: 2xx, 4xx with a JSON {code, message}, and 503 ``jobs_unavailable``
(no Ray Jobs API is running here, by design: campaigns that pass every check stop there).
An unhandled exception fails the test even if a 500 was sent. Bounded: a few hundred
examples in all, well under a minute after Ray is up.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray import serve

from farm.serve.api import app as api_app
from farm.serve.api import in_process
from farm.serve.app import FarmAppArgs, build_app
from farm.serve.wire import tenant_tag
from farm.settings import hash_token
from tests.helpers.cluster import deployed
from tests.helpers.inprocess import AsgiClient
from tests.helpers.paths import EXAMPLE_SPEC

EXAMPLE = yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8"))
OPENAPI = api_app.openapi()
OPERATIONS = [
    (path, method.upper(), op)
    for path, ops in OPENAPI["paths"].items()
    for method, op in ops.items()
]
TOKEN = "fuzz-token"
LIMITS = {
    "max_seconds": 0.3,
    "max_steps": 2,
    "max_side": 32,
    "max_pixels": 32 * 32,
    "max_prompt_bytes": 200,
    "max_variants": 4,
}
POLICY = {"*": {"blocked_terms": ["Tom Hanks"]}}
# Bodies that pass every check, for the fuzzer to bend (so some requests get all the way).
VALID_BODIES = {
    ("POST", "/v1/videos"): {
        "prompt": "a bottle",
        "size": "16x16",
        "seconds": 0.5,
        "fps": 32,
        "steps": 1,
        "guidance": 1.0,
    }
}
TRAVERSALS = ["..", "../../etc/passwd", "%2e%2e", "/etc/passwd", "..\\x", "a\x00b", "~", "."]
INTERESTING = [
    "",
    " ",
    "16x16",
    "32x16",
    "64x64",
    "0x0",
    "16x",
    "Tom Hanks",
    "ＴＯＭ ＨＡＮＫＳ",
    "\ud800",
    "null",
    "1e309",
    "-1",
    "video",
    "thumbnail",
    *TRAVERSALS,
]
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(INTERESTING),
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _ref(schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = OPENAPI["components"]["schemas"][name]
    return schema


def from_schema(schema: dict) -> st.SearchStrategy[Any]:
    """Values for a JSON schema: mostly of the right type and near its bounds, sometimes not."""
    schema = _ref(schema)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return st.one_of([from_schema(s) for s in options])
    kind = schema.get("type")
    if kind == "object":
        props = {k: from_schema(v) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.integers(min_value=lo, max_value=hi) | st.integers()
    if kind == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        near = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
        return near | st.floats(allow_nan=False)
    if kind == "string":
        return st.sampled_from(INTERESTING) | st.text(max_size=60)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    return ANY_JSON


def _ids() -> st.SearchStrategy[str]:
    hexes = st.text("0123456789abcdef", min_size=0, max_size=34)
    mine = st.text("0123456789abcdef", min_size=22, max_size=22).map(
        lambda h: tenant_tag("acme") + h
    )
    return st.one_of(hexes, mine, st.sampled_from(TRAVERSALS), st.text(max_size=40))


def _spec_variants() -> st.SearchStrategy[bytes]:
    """The example campaign with one value somewhere replaced, as JSON or YAML; or junk."""
    leaves: list[tuple] = []

    def walk(node: Any, at: tuple) -> None:
        leaves.append(at)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*at, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*at, i))

    walk(EXAMPLE, ())

    def mutate(at: tuple, value: Any, as_yaml: bool) -> bytes:
        spec = copy.deepcopy(EXAMPLE)
        if not at:
            spec = value
        else:
            node = spec
            for key in at[:-1]:
                node = node[key]
            node[at[-1]] = value
        if as_yaml:
            return yaml.safe_dump(spec, allow_unicode=True).encode("utf-8", "surrogatepass")
        return json.dumps(spec).encode("utf-8", "surrogatepass")

    mutated = st.builds(mutate, st.sampled_from(leaves), ANY_JSON, st.booleans())
    return st.one_of(
        mutated, st.binary(max_size=200), ANY_JSON.map(lambda v: json.dumps(v).encode())
    )


def _request(path: str, method: str, op: dict) -> st.SearchStrategy[dict]:
    params = op.get("parameters", [])
    path_values = {p["name"]: _ids() for p in params if p["in"] == "path"}
    query_values = {
        p["name"]: st.sampled_from(INTERESTING) | st.text(max_size=20)
        for p in params
        if p["in"] == "query"
    }
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        valid = VALID_BODIES.get((method, path), {})
        body = st.one_of(
            st.builds(
                lambda k, v: json.dumps({**valid, k: v}).encode(), st.text(max_size=12), ANY_JSON
            ),
            st.sampled_from(sorted(valid) or [""]).flatmap(
                lambda k: (
                    st.just(json.dumps(valid).encode())
                    | from_schema(schema).map(lambda v: json.dumps({**valid, **v}).encode())
                )
            ),
            from_schema(schema).map(lambda v: json.dumps(v).encode()),
            ANY_JSON.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=100),
        )
    elif method == "POST":
        body = _spec_variants()
    else:
        body = st.just(b"")
    auth = st.sampled_from(
        [
            {"authorization": f"Bearer {TOKEN}"},  # mostly a good token: get deep
            {"authorization": f"Bearer {TOKEN}"},
            {"authorization": f"Bearer {TOKEN}"},
            {"cookie": f"farm_token={TOKEN}"},
            {"authorization": "Bearer nope"},
            {"authorization": "Basic eDp5"},
            {},
        ]
    )
    content_type = st.sampled_from(["application/json", "application/yaml", "text/plain", ""])
    return st.fixed_dictionaries(
        {
            "path": st.fixed_dictionaries(path_values),
            "query": st.fixed_dictionaries({}, optional=query_values),
            "body": body,
            "auth": auth,
            "content_type": content_type,
        }
    )


@pytest.fixture(scope="module")
def client(serve_http, tmp_path_factory) -> Iterator[AsgiClient]:
    """The Api in process, on a real Serve Director + Renderer (tiny model, tiny limits)."""
    root = tmp_path_factory.mktemp("fuzz") / "root"
    args = FarmAppArgs(
        model="tiny",
        storage_root=str(root),
        renderer_max_replicas=1,
        renderer_threads=1,
        director_num_cpus=0,
        director_max_videos=2,
    )
    with deployed(build_app(args), "fuzz", "/fuzz", http=serve_http):
        director = serve.get_deployment_handle("Director", app_name="fuzz")
        with in_process(
            director,
            str(root),
            limits=LIMITS,
            max_body_bytes=4000,
            tokens={hash_token(TOKEN): "acme"},
            prompt_policy=POLICY,
            jobs_address="http://127.0.0.1:9",
        ) as app:
            c = AsgiClient(app)
            yield c
            c.close()


@pytest.mark.parametrize(
    ("path", "method", "op"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS]
)
def test_operation_never_answers_5xx(client: AsgiClient, path: str, method: str, op: dict):
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_request(path, method, op))
    def run(req: dict) -> None:
        url = path
        for name, value in req["path"].items():
            url = url.replace("{" + name + "}", value)
        # What goes on the wire is bytes: any text (lone surrogates too) as its UTF-8
        # bytes, percent-encoded, so the query string is the ASCII a real client sends.
        query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in req["query"].items()})
        headers = dict(req["auth"])
        if req["content_type"]:
            headers["content-type"] = req["content_type"]
        r = client.request(method, url, headers=headers, body=req["body"], query=query)
        if r.status == 503:  # no Jobs API here: campaigns stop there, /healthz says so
            body = r.json()
            assert body.get("code") == "jobs_unavailable" or body.get("status") == "degraded", (
                r.body
            )
            return
        assert r.status < 500, (method, url, req, r.body)
        if r.status >= 400:
            error = r.json()
            assert isinstance(error["code"], str) and isinstance(error["message"], str), error

    run()
