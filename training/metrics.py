"""Screening metrics, pure numpy (no torch, no sklearn): evaluation of an ONNX model needs neither.

Conventions used everywhere in parcelscan:

* ``labels``: 1 = suspect (concealed powder present), 0 = clear. ``scores``: higher = more suspect.
* **Decision rule**: a scan is flagged *suspect* iff ``score >= threshold`` (a tie with the threshold
  is flagged — fail closed).
* **Pd** (probability of detection) = flagged suspects / suspects; **Pfa** (probability of false alarm)
  = flagged clear scans / clear scans.
* **Threshold for a target Pfa** (:func:`threshold_at_pfa`): the conservative (1 − Pfa) quantile of the
  clear scores, as a float32 (defined in ``model.operating_point``, which the model's stored threshold obeys).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from parcelscan.model.operating_point import (  # the decision rule and threshold live with the model
    allowed_false_alarms,
    as_arrays,
    pd_at_pfa,
    rates_at_threshold,
    threshold_at_pfa,
)

__all__ = ["allowed_false_alarms", "pd_at_pfa", "rates_at_threshold", "threshold_at_pfa"]


# --- ranking metrics -----------------------------------------------------------------------------------
def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pfa, pd, thresholds): one point per distinct score (descending), starting at (0, 0) for +inf."""
    y, s = as_arrays(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both clear and suspect scans")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group]
    fp = (last_of_group + 1) - tp
    thresholds = np.r_[np.inf, s_sorted[last_of_group]]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], thresholds


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    starts = np.r_[0, np.nonzero(np.diff(sorted_values))[0] + 1]
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = 0.5 * (start + 1 + end)
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve = P(score_suspect > score_clear) + ½ P(tie) (Mann–Whitney U)."""
    y, s = as_arrays(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def partial_auc(labels, scores, max_pfa: float = 0.1) -> float:
    """Area under the ROC curve for Pfa in [0, max_pfa], divided by max_pfa (1.0 = perfect, max_pfa/2 = chance).

    The selection number for a low-Pfa detector: it ranks models where the operating point lies, like Pd at
    Pfa 1 %, but averages over every clear scan in the first ``max_pfa`` of the clear scores instead of
    hanging on the one or two scores that set a 1 % quantile (with a few hundred validation clears, one
    false alarm more or less moves Pd at 1 % by tens of points). The curve is the step ROC of
    :func:`roc_curve` with ties spread linearly, so a tie counts half as in :func:`roc_auc`."""
    if not 0.0 < max_pfa <= 1.0:
        raise ValueError(f"max_pfa must be in (0, 1], got {max_pfa}")
    y, s = as_arrays(labels, scores)
    if int(y.sum()) == 0 or int((~y).sum()) == 0:
        return float("nan")
    pfa, pd, _ = roc_curve(y, s)
    stop = int(np.searchsorted(pfa, max_pfa, side="left"))  # first point at or beyond max_pfa (the curve ends at 1)
    x, h = pfa[: stop + 1], pd[: stop + 1]
    if x[-1] > max_pfa:  # cut the last segment at max_pfa (linear between ROC points: ties spread evenly)
        share = (max_pfa - x[-2]) / (x[-1] - x[-2])
        x = np.r_[x[:-1], max_pfa]
        h = np.r_[h[:-1], h[-2] + share * (h[-1] - h[-2])]
    area = float(np.sum(np.diff(x) * 0.5 * (h[1:] + h[:-1])))
    return area / max_pfa


def average_precision(labels, scores) -> float:
    """AP = Σ (R_i − R_{i−1})·P_i over distinct thresholds (step interpolation, no trapezoids)."""
    y, s = as_arrays(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group].astype(np.float64)
    flagged = (last_of_group + 1).astype(np.float64)
    recall = tp / n_pos
    precision = tp / flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --- operating points ------------------------------------------------------------------------------------
def confusion_at(labels, scores, threshold: float) -> dict[str, int]:
    """Counts at the operating point: tp (suspect flagged), fn (suspect missed), fp, tn."""
    y, s = as_arrays(labels, scores)
    flagged = s >= threshold
    return {"tp": int((flagged & y).sum()), "fn": int((~flagged & y).sum()),
            "fp": int((flagged & ~y).sum()), "tn": int((~flagged & ~y).sum())}


# --- uncertainty ---------------------------------------------------------------------------------------------
def bootstrap_ci(statistic: Callable[[np.ndarray, np.ndarray], float], labels, scores, n_boot: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(labels, scores)``.

    Stratified: every replicate resamples the suspect and the clear scans separately with replacement,
    keeping both class counts — the test set's composition is a design choice, not a random quantity.
    Seeded, so a report is reproducible. Replicates where the statistic is NaN are dropped."""
    y, s = as_arrays(labels, scores)
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
    values = np.empty(n_boot, dtype=np.float64)
    for i in range(n_boot):
        index = np.r_[rng.choice(pos, pos.size) if pos.size else pos, rng.choice(neg, neg.size) if neg.size else neg]
        values[i] = statistic(y[index], s[index])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: sensible for small groups and for 0 % or 100 %."""
    if trials <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact bounds, not 1e-17 rounding residue
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def rates_by_group(scores, groups: Sequence[str | None], threshold: float,
                   confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Share flagged (``score >= threshold``) per group, with a Wilson interval.

    Pass the suspect scans grouped by scenario / material for Pd per group, or the clear scans grouped
    by look-alike kind for Pfa per kind."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size != len(groups):
        raise ValueError("scores and groups differ in length")
    keys = np.array(["none" if g is None else str(g) for g in groups], dtype=object)
    out: dict[str, dict[str, float]] = {}
    for key in sorted(set(keys.tolist())):
        member = keys == key
        flagged = int((s[member] >= threshold).sum())
        n = int(member.sum())
        low, high = wilson_interval(flagged, n, confidence)
        out[key] = {"n": n, "flagged": flagged, "rate": flagged / n, "ci_low": low, "ci_high": high}
    return out


# --- calibration -----------------------------------------------------------------------------------------------
def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def expected_calibration_error(labels, probabilities, n_bins: int = 15) -> float:
    """ECE of the suspect probability: Σ_b (n_b/N)·|mean(label)_b − mean(p)_b| over equal-width bins.

    Binary reliability of P(suspect) (not top-label confidence): that is the number an inspector sees.
    Bins are [i/B, (i+1)/B), the last one closed at 1."""
    y, p = as_arrays(labels, probabilities)
    if p.size == 0:
        return float("nan")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        member = bins == b
        total += member.sum() / p.size * abs(y[member].mean() - p[member].mean())
    return float(total)


def nll_binary(labels, margins, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``sigmoid(margin / T)``; margin = logit_suspect − logit_clear."""
    y, z = as_arrays(labels, margins)
    scaled = z / temperature
    return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))


def fit_temperature(labels, margins, t_min: float = 0.05, t_max: float = 20.0, iterations: int = 100) -> float:
    """Temperature T minimising the validation NLL of ``sigmoid(margin / T)``.

    The NLL is convex in w = 1/T (a one-weight logistic regression without bias), so a golden-section
    search over w ∈ [1/t_max, 1/t_min] finds the global optimum; no LBFGS needed. Temperature never
    changes the ranking (AUC, Pd at Pfa) — only how honest the probabilities are."""
    y, z = as_arrays(labels, margins)
    if y.all() or (~y).all():
        return 1.0
    low, high = 1.0 / t_max, 1.0 / t_min
    golden = (math.sqrt(5) - 1) / 2

    def loss(w: float) -> float:
        scaled = z * w
        return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))

    a, b = low, high
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = loss(d)
    return float(1.0 / (0.5 * (a + b)))
