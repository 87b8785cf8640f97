"""Prompt policy: text a tenant may not render, checked before any GPU time is spent.

A `PromptPolicy` holds blocked terms (words or phrases, e.g. real people's names) and
blocked patterns (regular expressions). Both are matched against *normalised* text
(`normalize`): Unicode NFKC (full-width and compatibility forms fold to plain ones),
case-folded (``ß`` matches ``ss``), invisible format characters such as zero-width spaces
removed, and runs of white space made one space. So ``ＴＯＭ　ＨＡＮＫＳ``,
``TOM  hanks`` and ``To\u200bm Hanks`` all hit the term ``Tom Hanks``.

Terms match whole words where the term begins or ends in an alphabetic script that
separates words with spaces (Latin, Greek, Cyrillic, Armenian), so ``Ann`` does not block
``announce``; in other scripts (CJK, Thai, Arabic, ...) a term matches anywhere.
Patterns are searched case-insensitively in the normalised text and should be written
for it (lower case, single spaces).

The farm keeps one policy per tenant plus ``"*"`` for every tenant (`policy_for`); the API
refuses a video or a campaign whose text violates it with a 422 ``policy_violation``
naming the field (see `PolicyViolation`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ALL_TENANTS", "PolicyViolation", "PromptPolicy", "normalize", "policy_for"]

ALL_TENANTS = "*"
_SPACE = re.compile(r"\s+")
_SPACED_SCRIPTS_END = 0x0590  # below Hebrew: Latin, Greek, Cyrillic, Armenian


class PolicyViolation(ValueError):
    """Text that breaks a tenant's prompt policy: which field and which rule."""

    def __init__(self, field: str, rule: str):
        self.field, self.rule = field, rule
        super().__init__(f"{field}: not allowed by the prompt policy ({rule})")


def normalize(text: str) -> str:
    """Text as the policy sees it: NFKC, case-folded, no format characters, single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFKC", text.casefold())  # casefold can leave non-NFKC
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return _SPACE.sub(" ", text).strip()


def _spaced(c: str) -> bool:
    return c.isalnum() and ord(c) < _SPACED_SCRIPTS_END


def _term_regex(term: str) -> str:
    body = re.escape(term)
    head = r"(?<!\w)" if _spaced(term[0]) else ""
    tail = r"(?!\w)" if _spaced(term[-1]) else ""
    return head + body + tail


class PromptPolicy(BaseModel):
    """Blocked terms and patterns for one tenant (or ``"*"``: every tenant)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    blocked_terms: list[str] = Field(
        default_factory=list,
        description="Words or phrases no prompt may contain (case and Unicode form ignored).",
    )
    blocked_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions searched in the normalised prompt (see farm.policy).",
    )

    @field_validator("blocked_terms")
    @classmethod
    def _terms(cls, terms: list[str]) -> list[str]:
        for i, term in enumerate(terms):
            if not normalize(term):
                raise ValueError(f"blocked_terms[{i}] must not be blank")
        return terms

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"blocked_patterns[{i}] is not a valid regex: {e}") from None
            if re.search(pattern, ""):
                raise ValueError(f"blocked_patterns[{i}] matches empty text: it blocks all")
        return patterns

    @functools.cached_property
    def _compiled(self) -> list[tuple[str, re.Pattern[str]]]:
        rules = [
            (f"blocked term {t!r}", re.compile(_term_regex(normalize(t))))
            for t in self.blocked_terms
        ]
        rules += [
            (f"blocked pattern {p!r}", re.compile(p, re.IGNORECASE)) for p in self.blocked_patterns
        ]
        return rules

    def violation(self, text: str) -> str | None:
        """The first rule `text` breaks, in words, or None when it is allowed."""
        if not text or not self._compiled:
            return None
        norm = normalize(text)
        for rule, regex in self._compiled:
            if regex.search(norm):
                return rule
        return None

    def check(self, fields: Iterable[tuple[str, str]]) -> None:
        """Raise PolicyViolation for the first (field name, text) pair that breaks a rule."""
        for name, text in fields:
            rule = self.violation(text)
            if rule is not None:
                raise PolicyViolation(name, rule)

    def __or__(self, other: PromptPolicy) -> PromptPolicy:
        """Both policies' rules."""
        return PromptPolicy(
            blocked_terms=[*self.blocked_terms, *other.blocked_terms],
            blocked_patterns=[*self.blocked_patterns, *other.blocked_patterns],
        )


def policy_for(policies: Mapping[str, PromptPolicy], tenant: str) -> PromptPolicy:
    """The policy a tenant's prompts are held to: the ``"*"`` rules plus its own."""
    policy = policies.get(ALL_TENANTS, PromptPolicy())
    own = policies.get(tenant) if tenant != ALL_TENANTS else None
    return policy | own if own is not None else policy
