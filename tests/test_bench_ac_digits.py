"""`bench/ac_digits.py`'s selection and statistics helpers, on stand-in numbers (no encoder is trained here)."""

import ac_digits as bench
import numpy as np
import pytest

GRID = ["slow close", "fast far", "fast close", "too slow"]
DISTANCE = {"slow close": 0.1, "fast far": 0.9, "fast close": 0.3, "too slow": 0.05}
SECONDS = {"slow close": 12.0, "fast far": 4.0, "fast close": 10.0, "too slow": 30.0}


def within(limit):
    return lambda setting: SECONDS[setting] <= limit


def test_choose_keeps_the_closest_setting_within_the_time_limit():
    # the rule as the bench applies it to AC (common.choose): limit 10 s: "slow close" (12 s) and "too slow" (30 s)
    # are out although closer; "fast close" (10 s, at the limit) beats "fast far"
    chosen, admissible = bench.choose(GRID, DISTANCE.get, within(10.0))
    assert chosen == "fast close"
    assert admissible == ["fast far", "fast close"]


def test_choose_without_a_limit_takes_the_closest_and_says_none_when_nothing_is_fast_enough():
    assert bench.choose(GRID, DISTANCE.get) == ("too slow", GRID)
    assert bench.choose(GRID, DISTANCE.get, within(3.0)) == (None, [])


def stand_in(method_forget, baseline_forget, n=20):
    """One seed's per-image positive alignments: the original aligns forget images at 0.9 and held-out ones at 0.8
    (gap 0.1); the retrained model its forget images at 0.8. Members 1.0 and held-out 0.0 for every model except the
    original, so EMIA's threshold is 1."""
    ones, zeros = np.ones(n), np.zeros(n)
    pa = {"original": {"forget": 0.9 * ones, "heldout": 0.8 * ones, "members": ones}}
    for name, forget in (("retrain", 0.8 * ones), ("AC", method_forget), ("NegGrad", baseline_forget)):
        pa[name] = {"forget": forget, "heldout": zeros, "members": ones}
    return pa


def test_closeness_interval_forgetting_score_by_hand():
    # FS = (0.9 − pa_f) / (0.9 − 0.8): retrained 1.0, AC (0.8) 1.0, NegGrad (0.85) 0.5: |1 − 1| − |0.5 − 1| = −0.5, and
    # every bootstrap draw of constant scores gives the same
    pa = stand_in(0.8 * np.ones(20), 0.85 * np.ones(20))
    value, low, high = bench.closeness_interval([pa, pa], "AC", "NegGrad", "forgetting_score", "accuracy", 50)
    assert value == pytest.approx(-0.5) and low == pytest.approx(-0.5) and high == pytest.approx(-0.5)


def test_closeness_interval_emia_separates_only_what_differs_beyond_resampling():
    # threshold 1: the retrained model's forget scores (0.8) are all below it, EMIA 100; NegGrad's (1.0) none, EMIA 0;
    # AC's half (0.0 and 1.0 alternating), EMIA 50: |50 − 100| − |0 − 100| = −50 on the full sample
    half = np.tile([0.0, 1.0], 10)
    pa = stand_in(half, np.ones(20))
    value, low, high = bench.closeness_interval([pa], "AC", "NegGrad", "emia", "accuracy", num_samples=200)
    assert value == pytest.approx(-50.0)
    assert low <= value <= high < 0  # resampling AC's forget images moves its EMIA, never to NegGrad's distance
    # the other way round the sign flips: NegGrad is farther
    value, low, high = bench.closeness_interval([pa], "NegGrad", "AC", "emia", "accuracy", num_samples=200)
    assert 0 < low <= value == pytest.approx(50.0)
    # a method identical to the baseline is never separated from it
    value, low, high = bench.closeness_interval([stand_in(half, half)], "AC", "NegGrad", "emia", "accuracy", 50)
    assert value == low == high == 0.0
