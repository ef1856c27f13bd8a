"""Competition profiles: one place for ranges, moduli, limits and gateway names."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.runtime.profiles import AIMO2, get_profile

REPO = Path(__file__).resolve().parents[1]


def test_default_is_aimo2() -> None:
    assert get_profile() is AIMO2
    assert get_profile("AIMO2") is AIMO2
    assert get_profile(AIMO2) is AIMO2


def test_the_gateway_profiles_say_what_the_design_docs_contract_says() -> None:
    """The profiles are the code's copy of docs/design.md's "Kaggle gateway" contract: a change to either
    alone (a new per-call limit, a renamed server class) fails here."""
    doc = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    aimo2, aimo3 = get_profile("aimo2"), get_profile("aimo3")
    assert f"`{aimo2.gateway_module}.{aimo2.gateway_class}(predict)`" in doc
    assert f"`{aimo3.gateway_module}.{aimo3.gateway_class}(predict)`" in doc
    assert f"must be up within {aimo2.server_start_seconds:.0f} s" in doc
    assert f"within **{aimo2.per_call_seconds:.0f} s**" in doc
    assert f"per-call timeout `60*60*{aimo3.per_call_seconds / 3600:.0f}` s" in doc
    assert f"answers are integers {aimo2.answer_min}–{aimo2.answer_max}" in doc
    assert f"answers {aimo3.answer_min}–{aimo3.answer_max} with no implicit modulus" in doc
    assert aimo2.modulus == aimo2.answer_max + 1 and aimo3.modulus is None
    assert aimo2.total_seconds == aimo3.total_seconds == 5 * 3600 and "5 h of GPU time" in doc
    columns = {c for c in ("id", "problem") if f"(`{c}`" in doc or f"`{c}`," in doc or f"`{c}`;" in doc}
    assert aimo2.input_columns == ("id", "problem") and columns == {"id", "problem"}


def test_aimo3_has_no_implicit_modulus() -> None:
    p = get_profile("aimo3")
    assert (p.answer_min, p.answer_max, p.modulus) == (0, 99999, None)
    assert p.gateway_class == "AIMO3InferenceServer"
    assert p.to_answer("123456") is None  # out of range is an abstention, not 123456 % 100000
    assert p.to_answer("12345") == 12345


@pytest.mark.parametrize(
    ("profile", "text", "expected"),
    [
        ("aimo2", "1234", 234),
        ("aimo2", "-1", 999),
        ("aimo2", r"\frac{1}{2}", None),
        ("aimo1", "2000", 0),
        ("aimo3", "-1", None),
        ("aimo3", "99999", 99999),
    ],
)
def test_to_answer_applies_modulus_and_range(profile: str, text: str, expected: int | None) -> None:
    assert get_profile(profile).to_answer(text) == expected


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown competition profile 'aimo9'.*aimo1"):
        get_profile("aimo9")


def test_overrides_and_validation() -> None:
    short = AIMO2.with_overrides(total_seconds=600)
    assert short.total_seconds == 600 and AIMO2.total_seconds == 5 * 3600
    with pytest.raises(ValueError, match="fallback_answer"):
        AIMO2.with_overrides(fallback_answer=5000)
    with pytest.raises(ValueError, match="modulus"):
        AIMO2.with_overrides(modulus=0)
