"""Competition profiles: one place for ranges, moduli, limits and gateway names."""

from __future__ import annotations

import pytest

from kit.runtime.profiles import AIMO2, PROFILES, get_profile


def test_default_is_aimo2() -> None:
    assert get_profile() is AIMO2
    assert get_profile("AIMO2") is AIMO2
    assert get_profile(AIMO2) is AIMO2


def test_aimo2_contract() -> None:
    p = get_profile("aimo2")
    assert (p.answer_min, p.answer_max, p.modulus) == (0, 999, 1000)
    assert p.per_call_seconds == 1800 and p.total_seconds == 5 * 3600 and p.server_start_seconds == 900
    assert p.gateway_module == "kaggle_evaluation.aimo_2_inference_server"
    assert p.gateway_class == "AIMO2InferenceServer"
    assert p.input_columns == ("id", "problem")


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


def test_every_profile_is_consistent() -> None:
    for p in PROFILES.values():
        assert p.in_range(p.fallback_answer)
        assert p.n_problems > 0 and p.total_seconds > 0
        assert "id" in p.input_columns and "problem" in p.input_columns


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
