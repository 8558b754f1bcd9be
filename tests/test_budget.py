"""Budget parsing: every accepted form, and malformed budgets as usage errors."""
from __future__ import annotations

import pytest

from hwprune_fx.errors import UserError
from hwprune_fx.search.budget import parse_budget


@pytest.mark.parametrize("text,baseline,expected", [
    ("12ms", 40.0, 12.0), ("800us", 40.0, 0.8), ("0.5s", 900.0, 500.0), ("60%", 40.0, 24.0),
    ("2x", 40.0, 20.0), ("1.6x", 32.0, 20.0), (" 7.5 ms ", 1.0, 7.5),
])
def test_budget_forms(text: str, baseline: float, expected: float) -> None:
    assert parse_budget(text).target_ms(baseline) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["12 parsecs", "-5ms", "0%", "0ms", "100%", "150%", "1x", "0.5x", "", "ms", "12"])
def test_malformed_budgets(text: str) -> None:
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)
