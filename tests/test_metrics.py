"""Screening metrics against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from parcelscan.training import metrics as M

# 10 clear and 5 suspect scores, used by several hand-computed cases below.
CLEAR = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
SUSPECT = [0.35, 0.85, 0.9, 0.97, 0.99]
LABELS = [0] * len(CLEAR) + [1] * len(SUSPECT)
SCORES = CLEAR + SUSPECT


def test_threshold_at_pfa_hand_cases():
    # k = floor(0.1·10) = 1 false alarm allowed: threshold just above the 2nd highest clear score (0.9);
    # the suspect scored exactly 0.9 is therefore NOT flagged (its tie partner is clear).
    t = M.threshold_at_pfa(CLEAR, 0.1)
    assert 0.9 < t < 0.9 + 1e-6
    assert t == float(np.nextafter(np.float32(0.9), np.float32(1)))
    assert M.rates_at_threshold(LABELS, SCORES, t) == (0.4, 0.1)
    # k = 2: threshold just above 0.8 → clear 0.9 and 0.95 flagged; suspects 0.85, 0.9, 0.97, 0.99.
    pd, pfa, t2 = M.pd_at_pfa(LABELS, SCORES, 0.2)
    assert (pd, pfa) == (0.8, 0.2) and 0.8 < t2 < 0.8 + 1e-6
    # k = 0: above the highest clear score.
    assert M.pd_at_pfa(LABELS, SCORES, 0.05)[:2] == (0.4, 0.0)
    # k = floor(0.29·100) must be 29, not 28 (floating point: 0.29·100 = 28.999999999999996).
    assert M.allowed_false_alarms(100, 0.29) == 29


def test_threshold_ties_keep_measured_pfa_below_target():
    clear = [0.5, 0.5, 0.5, 0.1]
    t = M.threshold_at_pfa(clear, 0.5)  # k = 2, but 3 scores tie at 0.5: none may be flagged
    assert t > 0.5
    assert M.rates_at_threshold([0, 0, 0, 0], clear, t)[1] == 0.0
    # the decision rule flags a score equal to the threshold
    assert M.rates_at_threshold([1], [t], t)[0] == 1.0


@pytest.mark.parametrize("target", [0.001, 0.01, 0.05, 0.1, 0.3])
def test_measured_pfa_never_exceeds_target_random(target):
    rng = np.random.default_rng(3)
    for size in (7, 100, 1000):
        clear = np.round(rng.normal(size=size), 1)  # rounding makes many ties
        t = M.threshold_at_pfa(clear, target)
        pfa = float((clear >= t).mean())
        assert pfa <= target + 1e-12
        # lowest such threshold: one float32 step lower would either exceed the target or flag nothing new
        lower = float(np.nextafter(np.float32(t), np.float32(-np.inf)))
        assert (clear >= lower).mean() > target or (clear >= lower).sum() == (clear >= t).sum()


def test_threshold_rejects_bad_input():
    with pytest.raises(ValueError):
        M.threshold_at_pfa([], 0.01)
    with pytest.raises(ValueError):
        M.threshold_at_pfa([0.1], 0.0)
    with pytest.raises(ValueError):
        M.threshold_at_pfa([0.1, float("nan")], 0.1)


def test_auc_and_ap_hand_cases():
    labels, scores = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]
    assert M.roc_auc(labels, scores) == 0.75  # 3 of 4 (suspect, clear) pairs ordered correctly
    # AP: at 0.9 recall ½ precision 1; at 0.7 recall 1 precision ⅔
    assert M.average_precision(labels, scores) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert M.roc_auc([1, 0], [0.5, 0.5]) == 0.5  # a tie counts half
    assert M.roc_auc([1, 1, 0], [0.2, 0.9, 0.2]) == 0.75
    # ties across classes share one AP step: {0.5: 1 suspect + 1 clear} → precision ½ at recall 1
    assert M.average_precision([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(M.roc_auc([1, 1], [0.1, 0.2]))
    # 15-score case: suspect 0.35 beats 3 clear, 0.85 beats 8, 0.9 beats 8 and ties 1, 0.97 and 0.99 beat
    # all 10: (3 + 8 + 8.5 + 10 + 10) / 50
    assert M.roc_auc(LABELS, SCORES) == pytest.approx(39.5 / 50)


def test_roc_curve_points():
    pfa, pd, thresholds = M.roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6])
    assert pfa.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert pd.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.9, 0.8, 0.7, 0.6]
    # trapezoidal area under the curve equals the rank AUC
    assert np.trapezoid(pd, pfa) == pytest.approx(M.roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]))


def test_confusion_at():
    t = M.threshold_at_pfa(CLEAR, 0.1)
    assert M.confusion_at(LABELS, SCORES, t) == {"tp": 2, "fn": 3, "fp": 1, "tn": 9}


def test_bootstrap_is_stratified_seeded_and_brackets():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(50)]
    scores = np.r_[rng.normal(0, 1, 200), rng.normal(1.5, 1, 50)]
    low, high = M.bootstrap_ci(M.roc_auc, labels, scores, n_boot=300, seed=1)
    auc = M.roc_auc(labels, scores)
    assert low < auc < high and high - low < 0.3
    assert (low, high) == M.bootstrap_ci(M.roc_auc, labels, scores, n_boot=300, seed=1)
    # stratified: every replicate keeps 50 suspects of 250 scans
    assert M.bootstrap_ci(lambda y, s: y.mean(), labels, scores, n_boot=50) == (0.2, 0.2)
    # a perfectly separating score has a degenerate interval
    assert M.bootstrap_ci(M.roc_auc, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=50) == (1.0, 1.0)


def test_wilson_interval_hand_values():
    z2 = 1.959963984540054 ** 2
    low, high = M.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z2 / (10 + z2))
    low, high = M.wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + z2))
    low, high = M.wilson_interval(5, 10)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.2366, abs=1e-4)


def test_rates_by_group():
    out = M.rates_by_group([0.9, 0.1, 0.8, 0.7], ["tile", "tile", "bottle", None], threshold=0.75)
    assert out["tile"]["n"] == 2 and out["tile"]["flagged"] == 1 and out["tile"]["rate"] == 0.5
    assert out["bottle"]["rate"] == 1.0 and out["none"]["rate"] == 0.0
    assert out["none"]["ci_low"] == 0.0 and 0 < out["none"]["ci_high"] < 1


def test_ece_hand_case():
    # bins of width 0.1: {0.1, 0.1} labels 0 → gap 0.1, weight ½; {0.6} label 1 → gap 0.4, weight ¼;
    # {0.9} label 1 → gap 0.1, weight ¼.  ECE = 0.05 + 0.1 + 0.025
    assert M.expected_calibration_error([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.6], n_bins=10) == pytest.approx(0.175)
    assert M.expected_calibration_error([1, 0], [1.0, 0.0], n_bins=10) == 0.0


def test_fit_temperature_recovers_known_scale():
    rng = np.random.default_rng(0)
    z_true = rng.normal(0, 3, 20000)
    labels = rng.random(z_true.size) < M.sigmoid(z_true)
    margins = 2.5 * z_true  # an over-confident model: the right temperature is 2.5
    t = M.fit_temperature(labels, margins)
    assert t == pytest.approx(2.5, rel=0.05)
    grid = np.linspace(0.5, 6, 2000)
    best = grid[np.argmin([M.nll_binary(labels, margins, g) for g in grid])]
    assert t == pytest.approx(best, abs=0.01)
    assert M.nll_binary(labels, margins, t) < M.nll_binary(labels, margins, 1.0)
    # calibration improves, ranking is unchanged
    before = M.expected_calibration_error(labels, M.sigmoid(margins))
    after = M.expected_calibration_error(labels, M.sigmoid(margins / t))
    assert after < before
    assert M.roc_auc(labels, M.sigmoid(margins / t)) == pytest.approx(M.roc_auc(labels, margins))


def test_partial_auc_hand_cases():
    """The ROC area up to Pfa 0.2, over 0.2. CLEAR/SUSPECT: the first two clear scores from the top are 0.95
    and 0.9; suspects above 0.95: 0.97, 0.99 (Pd 0.4 at Pfa 0); at 0.95 Pd stays 0.4 (Pfa 0.1); at 0.9 one
    suspect ties one clear: the segment to (Pfa 0.2, Pd 0.6) rises linearly. Area = 0.1·0.4 + 0.1·0.5 = 0.09."""
    assert M.partial_auc(LABELS, SCORES, 0.2) == pytest.approx(0.09 / 0.2)
    assert M.partial_auc(LABELS, SCORES, 1.0) == pytest.approx(M.roc_auc(LABELS, SCORES))
    # a cut inside a segment: up to Pfa 0.15 the second step is half taken (Pd 0.4 → 0.5 at 0.15)
    assert M.partial_auc(LABELS, SCORES, 0.15) == pytest.approx((0.1 * 0.4 + 0.05 * 0.45) / 0.15)
    assert M.partial_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.1) == 1.0
    assert M.partial_auc([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2], 0.1) == 0.0
    assert math.isnan(M.partial_auc([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError):
        M.partial_auc(LABELS, SCORES, 0.0)


def test_partial_auc_of_random_scores_is_half_the_range():
    rng = np.random.default_rng(3)
    labels = rng.random(20000) < 0.5
    assert M.partial_auc(labels, rng.random(20000), 0.1) == pytest.approx(0.05, abs=0.01)
