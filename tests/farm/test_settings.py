"""farm.settings: defaults, environment and YAML sources, validation messages, hash_token."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from farm.settings import (
    Quota,
    Settings,
    SettingsFileError,
    get_settings,
    hash_token,
    quota_for,
    reset_settings,
    setting_default,
)

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    """No FARM_* variable from the outer environment leaks in; the cache starts empty."""
    for name in list(os.environ):
        if name.upper().startswith("FARM_"):
            monkeypatch.delenv(name)
    reset_settings()
    yield monkeypatch
    reset_settings()


def _error_text(exc: ValidationError) -> str:
    """Every error's location and message, so assertions can look for the field's name."""
    return "\n".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


# ---- defaults ----------------------------------------------------------------------------


def test_defaults():
    s = Settings()
    assert s.model_dump() == {
        "storage_root": "farm-data",
        "storage_options": {},
        "model": "small",
        "model_dtype": "auto",
        "text_encoder_device": "",
        "attention": "sdpa",
        "model_cache": "",
        "renderer_num_gpus": 0.0,
        "renderer_num_cpus": 1.0,
        "renderer_threads": None,
        "renderer_min_replicas": 1,
        "renderer_max_replicas": 2,
        "renderer_initial_replicas": None,
        "renderer_target_ongoing_requests": 4,
        "renderer_max_ongoing_requests": 32,
        "renderer_upscale_delay_s": 5,
        "renderer_downscale_delay_s": 60,
        "renderer_max_batch": 8,
        "renderer_batch_videos": 8,
        "renderer_batch_wait_s": 0.01,
        "renderer_interactive_threads": 1,
        "interactive_headroom": 0.25,
        "director_num_cpus": 1.0,
        "director_max_videos": 8,
        "max_resends": 8,
        "api_num_cpus": 0.0,
        "jobs_address": "http://127.0.0.1:8265",
        "jobs_python": "",
        "app_name": "farm",
        "window": 16,
        "overlap": 4,
        "decode_chunk": 16,
        "max_seconds": 60,
        "max_side": 1280,
        "max_pixels": 832 * 480,
        "max_steps": 100,
        "max_variants": 100_000,
        "max_prompt_bytes": 2000,
        "max_body_bytes": 1_000_000,
        "tokens": {},
        "allow_anonymous": False,
        "prompt_policy": {},
        "quotas": {},
    }


def test_setting_default_is_the_fields_default():
    defaults = Settings()
    assert all(setting_default(n) == getattr(defaults, n) for n in Settings.model_fields)
    assert setting_default("tokens") is not setting_default("tokens")  # a fresh dict each


def test_every_field_is_described():
    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert missing == []


def test_dict_defaults_are_not_shared():
    a, b = Settings(), Settings()
    assert a.storage_options is not b.storage_options
    assert a.tokens is not b.tokens


def test_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.renderer_max_replicas = 9  # type: ignore[misc]
    assert s.model_copy(update={"renderer_max_replicas": 9}).renderer_max_replicas == 9


def test_scale_to_zero_allowed():
    assert Settings(renderer_min_replicas=0).renderer_min_replicas == 0


# ---- environment -------------------------------------------------------------------------


def test_env_override(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("FARM_RENDERER_MAX_REPLICAS", "5")
    clean_env.setenv("FARM_RENDERER_NUM_GPUS", "0.5")
    clean_env.setenv("FARM_ALLOW_ANONYMOUS", "true")
    clean_env.setenv("FARM_STORAGE_ROOT", "s3://bucket/farm")
    s = Settings()
    assert s.renderer_max_replicas == 5
    assert isinstance(s.renderer_max_replicas, int)
    assert s.renderer_num_gpus == 0.5
    assert s.allow_anonymous is True
    assert s.storage_root == "s3://bucket/farm"


def test_env_dict_as_json(clean_env: pytest.MonkeyPatch):
    digest = hash_token("secret-a")
    clean_env.setenv("FARM_STORAGE_OPTIONS", '{"anon": true, "endpoint_url": "http://minio:9000"}')
    clean_env.setenv("FARM_TOKENS", f'{{"{digest}": "acme"}}')
    s = Settings()
    assert s.storage_options == {"anon": True, "endpoint_url": "http://minio:9000"}
    assert s.tokens == {digest: "acme"}


def test_env_dict_nested_delimiter(clean_env: pytest.MonkeyPatch):
    digest = hash_token("secret-b")
    clean_env.setenv("FARM_STORAGE_OPTIONS__ENDPOINT_URL", "http://minio:9000")
    clean_env.setenv("FARM_STORAGE_OPTIONS__REGION_NAME", "us-east-1")
    clean_env.setenv(f"FARM_TOKENS__{digest}", "globex")
    s = Settings()
    assert s.storage_options == {"endpoint_url": "http://minio:9000", "region_name": "us-east-1"}
    assert s.tokens == {digest: "globex"}


def test_unrelated_farm_variables_are_ignored(clean_env: pytest.MonkeyPatch):
    # FARM_FONT_DIR belongs to farm.output.fonts; it must not trip extra="forbid".
    clean_env.setenv("FARM_FONT_DIR", "/usr/share/fonts")
    assert Settings().model == "small"


def test_kwargs_beat_env(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("FARM_RENDERER_MAX_REPLICAS", "5")
    assert Settings(renderer_max_replicas=3).renderer_max_replicas == 3


def test_invalid_env_names_the_field(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("FARM_RENDERER_MAX_REPLICAS", "lots")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "renderer_max_replicas" in _error_text(e.value)


# ---- YAML file ---------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "farm.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_yaml_from_env_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    p = _write(
        tmp_path,
        "renderer_num_gpus: 1\n"
        "renderer_min_replicas: 0\n"
        "renderer_max_replicas: 8\n"
        "storage_root: s3://ads/farm\n"
        "storage_options:\n  anon: false\n  endpoint_url: http://minio:9000\n"
        "model: https://models.example.com/small-v2.safetensors\n",
    )
    clean_env.setenv("FARM_SETTINGS_FILE", str(p))
    s = Settings()
    assert s.renderer_num_gpus == 1.0
    assert (s.renderer_min_replicas, s.renderer_max_replicas) == (0, 8)
    assert s.storage_options == {"anon": False, "endpoint_url": "http://minio:9000"}
    assert s.model == "https://models.example.com/small-v2.safetensors"
    assert get_settings() == s


def test_from_yaml_and_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    p = _write(tmp_path, "window: 8\noverlap: 2\nmax_steps: 50\n")
    clean_env.setenv("FARM_MAX_STEPS", "70")  # env beats the file
    s = Settings.from_yaml(p, overlap=3)  # keyword arguments beat both
    assert (s.window, s.overlap, s.max_steps) == (8, 3, 70)
    # from_yaml's file applies to that call only
    assert Settings().window == 16


def test_from_yaml_beats_env_file(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("max_steps: 10\n")
    clean_env.setenv("FARM_SETTINGS_FILE", str(env_file))
    p = _write(tmp_path, "max_steps: 20\n")
    assert Settings.from_yaml(p).max_steps == 20
    assert Settings().max_steps == 10


def test_empty_yaml_is_defaults(tmp_path: Path):
    assert Settings.from_yaml(_write(tmp_path, "")) == Settings()


def test_yaml_missing_file(tmp_path: Path):
    with pytest.raises(SettingsFileError, match="does not exist"):
        Settings.from_yaml(tmp_path / "nope.yaml")


def test_yaml_not_a_mapping(tmp_path: Path):
    with pytest.raises(SettingsFileError, match="mapping"):
        Settings.from_yaml(_write(tmp_path, "- a\n- b\n"))


def test_yaml_unknown_key_is_named(tmp_path: Path):
    with pytest.raises(ValidationError) as e:
        Settings.from_yaml(_write(tmp_path, "renderer_max_replica: 4\n"))
    assert "renderer_max_replica" in _error_text(e.value)


def test_yaml_invalid_value_is_named(tmp_path: Path):
    with pytest.raises(ValidationError) as e:
        Settings.from_yaml(_write(tmp_path, "interactive_headroom: 1.5\n"))
    assert "interactive_headroom" in _error_text(e.value)


# ---- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"renderer_num_gpus": -1}, "renderer_num_gpus"),
        ({"renderer_num_gpus": 1.5}, "renderer_num_gpus above 1 must be a whole number"),
        ({"renderer_num_cpus": -0.5}, "renderer_num_cpus"),
        ({"renderer_min_replicas": -1}, "renderer_min_replicas"),
        ({"renderer_max_replicas": 0}, "renderer_max_replicas"),
        (
            {"renderer_min_replicas": 3, "renderer_max_replicas": 2},
            "renderer_min_replicas (3) must be <= renderer_max_replicas (2)",
        ),
        ({"renderer_target_ongoing_requests": 0}, "renderer_target_ongoing_requests"),
        ({"renderer_max_batch": 0}, "renderer_max_batch"),
        ({"renderer_batch_wait_s": -1}, "renderer_batch_wait_s"),
        ({"interactive_headroom": 1.0}, "interactive_headroom"),
        ({"interactive_headroom": -0.1}, "interactive_headroom"),
        ({"window": 4, "overlap": 4}, "overlap (4) must be smaller than window (4)"),
        (
            {"renderer_min_replicas": 1, "renderer_initial_replicas": 3},
            "renderer_initial_replicas (3) must be between renderer_min_replicas (1)",
        ),
        ({"renderer_threads": 0}, "renderer_threads"),
        ({"max_side": 8}, "max_side"),
        ({"max_resends": -1}, "max_resends"),
        ({"app_name": " "}, "app_name"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"model": "   "}, "model"),
        ({"storage_root": ""}, "storage_root"),
        ({"tokens": {"not-a-hash": "acme"}}, "is not a sha256 hex digest"),
        ({"tokens": {ABC_SHA256: " "}}, "must not be blank"),
        ({"bogus_field": 1}, "bogus_field"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict, fragment: str):
    with pytest.raises(ValidationError) as e:
        Settings(**kwargs)
    text = _error_text(e.value)
    assert fragment in text, text


def test_tokens_field_errors_are_located():
    with pytest.raises(ValidationError) as e:
        Settings(tokens={"plain-token-value": "acme"})
    assert e.value.errors()[0]["loc"] == ("tokens",)


def test_headroom_bounds():
    assert Settings(interactive_headroom=0).interactive_headroom == 0
    assert Settings(interactive_headroom=0.99).interactive_headroom == 0.99


def test_fractional_and_whole_gpus():
    assert Settings(renderer_num_gpus=0.25).renderer_num_gpus == 0.25
    assert Settings(renderer_num_gpus=2).renderer_num_gpus == 2.0


# ---- auth --------------------------------------------------------------------------------


def test_hash_token():
    assert hash_token("abc") == ABC_SHA256
    assert hash_token("tök") == hashlib.sha256("tök".encode()).hexdigest()
    assert len(hash_token("x")) == 64
    with pytest.raises(ValueError):
        hash_token("")


def test_token_dicts_merge_across_sources(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    a, b = hash_token("a"), hash_token("b")
    p = _write(tmp_path, f"tokens:\n  {a}: acme\n  {b}: old\n")
    clean_env.setenv(f"FARM_TOKENS__{b}", "globex")
    assert Settings.from_yaml(p).tokens == {a: "acme", b: "globex"}


def test_token_hashes_normalised():
    s = Settings(tokens={ABC_SHA256.upper(): " acme "})
    assert s.tokens == {ABC_SHA256: "acme"}
    assert s.tokens[hash_token("abc")] == "acme"


def test_auth_defaults_closed():
    s = Settings()
    assert s.tokens == {} and s.allow_anonymous is False


# ---- get_settings ------------------------------------------------------------------------


def test_get_settings_cached_and_reset(clean_env: pytest.MonkeyPatch):
    first = get_settings()
    assert get_settings() is first
    clean_env.setenv("FARM_DIRECTOR_MAX_VIDEOS", "3")
    assert get_settings().director_max_videos == 8  # cached
    reset_settings()
    assert get_settings().director_max_videos == 3


@pytest.mark.parametrize("tenant", ["../x", "a/b", ".hidden", "a b", "ü", "x" * 65, "*"])
def test_tenant_names_are_path_safe(tenant: str):
    with pytest.raises(ValidationError, match="tenant name"):
        Settings(tokens={ABC_SHA256: tenant})


def test_prompt_policy_from_yaml_and_env(tmp_path, monkeypatch):
    p = _write(tmp_path, "prompt_policy:\n  '*': {blocked_terms: [Tom Hanks]}\n")
    policy = Settings.from_yaml(p).prompt_policy
    assert policy["*"].violation("a TOM HANKS cameo") is not None
    monkeypatch.setenv("FARM_PROMPT_POLICY", '{"acme": {"blocked_patterns": ["ba+d"]}}')
    assert Settings().prompt_policy["acme"].violation("so baaad") is not None
    with pytest.raises(ValidationError, match="not a valid regex"):
        Settings(prompt_policy={"acme": {"blocked_patterns": ["("]}})
    with pytest.raises(ValidationError, match="tenant name"):
        Settings(prompt_policy={"../etc": {}})


def test_quotas_merge_per_field_and_name_the_bad_key(monkeypatch):
    monkeypatch.setenv("FARM_QUOTAS", '{"*": {"gpu_seconds_per_day": 60}, "acme": {}}')
    monkeypatch.setenv("FARM_QUOTAS__ACME__MAX_CONCURRENT_VIDEOS", "1")
    quotas = Settings().quotas
    acme, other = quota_for(quotas, "acme"), quota_for(quotas, "globex")
    assert (acme.max_concurrent_videos, acme.gpu_seconds_per_day) == (1, 60)
    assert (other.max_concurrent_videos, other.gpu_seconds_per_day) == (8, 60)
    assert quota_for({}, "x") == Quota()
    with pytest.raises(ValidationError, match=r"quotas\.acme\.max_queued_variants"):
        Settings(quotas={"acme": {"max_queued_variants": -1}})
    with pytest.raises(ValidationError, match=r"quotas: tenant name '\.\./etc'"):
        Settings(quotas={"../etc": {}})
