"""synscope.core.fmt: sizes and rates chosen by a chain of tests say what the table of units says."""

from __future__ import annotations

import pytest

from synscope.core import fmt

SIZES = [0, 1, 999, 999.4, 999.96, 1000, 1001, 1449.9, 999_949, 999_950, 1e6, 1.5e6, 999_949_999, 1e9, 2.5e9, 7.3e12, float("inf")]


def _by_table(n: float, units: tuple[tuple[str, float], ...], smallest: str) -> str:
    """The unit rule as a table: the largest unit n reaches, one decimal; else whole numbers."""
    for unit, factor in units:
        if n >= factor:
            return fmt.fixed(n / factor, 1) + " " + unit
    return fmt.fixed(n, 0) + " " + smallest


@pytest.mark.parametrize("n", SIZES)
def test_size_picks_the_largest_unit_reached(n: float) -> None:
    assert fmt.size(n) == _by_table(n, (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)), "B")


@pytest.mark.parametrize("n", SIZES)
def test_rate_picks_the_largest_unit_reached(n: float) -> None:
    bits = n * 8
    assert fmt.rate(n) == _by_table(bits, (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)), "bit/s")


def test_units_as_engineers_read_them() -> None:
    assert fmt.size(512) == "512 B"
    assert fmt.size(1500) == "1.5 KB"
    assert fmt.size(3.2e6) == "3.2 MB"
    assert fmt.rate(125_000) == "1.0 Mbit/s"
