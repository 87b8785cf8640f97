"""The prompt policy: what it blocks, what it lets through, and how tenants combine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from farm.policy import PolicyViolation, PromptPolicy, normalize, policy_for

POLICY = PromptPolicy(
    blocked_terms=["Tom Hanks", "Ann", "习近平", "Straße"],
    blocked_patterns=[r"taylor\s*swift", r"\bdeep ?fake\b"],
)


@pytest.mark.parametrize(
    "text",
    [
        "Tom Hanks on a beach",
        "TOM HANKS",
        "tom\thanks",  # any white space
        "ＴＯＭ　ＨＡＮＫＳ",  # full-width letters and space: NFKC
        "To\u200bm Hanks",  # a zero-width space inside a word
        "\u00a0tom\u00a0hanks\u00a0",  # no-break spaces
        "with Ann.",
        "画面里有习近平在走路",  # no spaces in Chinese: matched anywhere
        "STRASSE",  # casefold: ß is ss
        "Taylor   Swift",
        "taylorswift",
        "a DeepFake of someone",
    ],
)
def test_blocked(text: str):
    assert POLICY.violation(text) is not None


@pytest.mark.parametrize(
    "text",
    ["we announce a bottle", "Tommy Hanksford", "deep fakery", "", "a red bottle", "tom"],
)
def test_allowed(text: str):
    assert POLICY.violation(text) is None


def test_check_names_the_field():
    with pytest.raises(PolicyViolation) as e:
        POLICY.check([("prompt", "a bottle"), ("negative_prompt", "no tom hanks")])
    assert e.value.field == "negative_prompt" and "Tom Hanks" in e.value.rule
    assert str(e.value).startswith("negative_prompt:")


def test_normalize():
    assert normalize("  ＡＢＣ\u200d  def\n") == "abc def"


def test_tenants_get_the_common_rules_plus_their_own():
    policies = {
        "*": PromptPolicy(blocked_terms=["common"]),
        "acme": PromptPolicy(blocked_terms=["acme-only"]),
    }
    acme, globex = policy_for(policies, "acme"), policy_for(policies, "globex")
    assert acme.violation("common") and acme.violation("acme-only")
    assert globex.violation("common") and globex.violation("acme-only") is None
    assert policy_for({}, "acme").violation("anything") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"blocked_terms": ["  "]}, "blocked_terms[0] must not be blank"),
        ({"blocked_patterns": ["("]}, "blocked_patterns[0] is not a valid regex"),
        ({"blocked_patterns": ["x*"]}, "matches empty text"),
        ({"blocked_words": ["x"]}, "Extra inputs"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict, message: str):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PromptPolicy(**kwargs)
