"""X-Prometheus-Scrape-Timeout-Seconds: parsed in one pure function, clamped, never trusted."""

from __future__ import annotations

import math

import pytest

from exporter.web.app import MAX_SCRAPE_TIMEOUT_SECONDS, WebOptions, scrape_timeout

OPTIONS = WebOptions(default_timeout=10, timeout_offset=0.5)


@pytest.mark.parametrize("header", ["inf", "+Inf", "1e308", "1e12", "9" * 400])
def test_a_huge_timeout_is_clamped(header: str) -> None:
    value = scrape_timeout(header, OPTIONS)
    assert value == MAX_SCRAPE_TIMEOUT_SECONDS - OPTIONS.timeout_offset


@pytest.mark.parametrize("header", ["nan", "NaN", "-nan", "garbage", "", "0", "-1", "-inf"])
def test_nan_and_nonsense_fall_back_to_the_default(header: str) -> None:
    assert scrape_timeout(header, OPTIONS) == OPTIONS.default_timeout


def test_ordinary_values_keep_the_offset() -> None:
    assert scrape_timeout("4", OPTIONS) == 3.5
    assert scrape_timeout("0.3", OPTIONS) == 0.1
    assert scrape_timeout(str(MAX_SCRAPE_TIMEOUT_SECONDS), OPTIONS) == (
        MAX_SCRAPE_TIMEOUT_SECONDS - OPTIONS.timeout_offset
    )


def test_every_answer_is_finite_and_positive() -> None:
    for header in ("inf", "nan", "1e308", "-0", "1e-320", "0x10", "١٢"):
        value = scrape_timeout(header, OPTIONS)
        assert math.isfinite(value) and 0 < value <= MAX_SCRAPE_TIMEOUT_SECONDS, header
