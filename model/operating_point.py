"""The operating point: the decision rule and the threshold for a target Pfa, pure numpy.

A model file stores its threshold and the target Pfa it was chosen for (``model.metadata``); training,
evaluation and the INT8 gate of ``model.export`` all compute it with these functions, so the rule lives with
the model it governs (``training.metrics`` builds the rest of the screening metrics on top of it).

* ``labels``: 1 = suspect (concealed powder present), 0 = clear. ``scores``: higher = more suspect.
* **Decision rule**: a scan is flagged *suspect* iff ``score >= threshold`` (a tie with the threshold
  is flagged — fail closed).
* **Pd** (probability of detection) = flagged suspects / suspects; **Pfa** (probability of false alarm)
  = flagged clear scans / clear scans.
* **Threshold for a target Pfa** (:func:`threshold_at_pfa`): with ``N`` clear scores and
  ``k = floor(target·N)`` false alarms allowed, the threshold is the smallest float32 value strictly
  above the (k+1)-th highest clear score. Every clear score tied with that (k+1)-th score therefore
  falls below the threshold, so the measured Pfa is always ``<= target`` — the conservative side of the
  (1 − Pfa) quantile. Float32 because deployed models emit float32 probabilities: the stored threshold
  compares the same way in numpy float64 and in a float32 runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_EPS_COUNT = 1e-9  # guards floor(target·N) against 0.29·100 = 28.999999999999996


def as_arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return y, s


def _next_float32_above(value: float) -> float:
    candidate = np.float32(value)
    while float(candidate) <= value:
        candidate = np.nextafter(candidate, np.float32(np.inf))
    return float(candidate)


def allowed_false_alarms(n_clear: int, target_pfa: float) -> int:
    return math.floor(target_pfa * n_clear + _EPS_COUNT)


def threshold_at_pfa(clear_scores, target_pfa: float) -> float:
    """The lowest threshold whose measured Pfa on ``clear_scores`` is ``<= target_pfa`` (module docstring)."""
    if not 0.0 < target_pfa < 1.0:
        raise ValueError(f"target Pfa must be in (0, 1), got {target_pfa}")
    s = np.sort(np.asarray(clear_scores, dtype=np.float64).ravel())[::-1]
    if s.size == 0:
        raise ValueError("a threshold for a target Pfa needs clear scans")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    k = allowed_false_alarms(s.size, target_pfa)
    return _next_float32_above(float(s[k]))


def rates_at_threshold(labels, scores, threshold: float) -> tuple[float, float]:
    """(Pd, Pfa) with the rule ``score >= threshold`` → suspect; NaN where a class is absent."""
    y, s = as_arrays(labels, scores)
    flagged = s >= threshold
    pd = float(flagged[y].mean()) if y.any() else float("nan")
    pfa = float(flagged[~y].mean()) if (~y).any() else float("nan")
    return pd, pfa


def pd_at_pfa(labels, scores, target_pfa: float) -> tuple[float, float, float]:
    """(Pd, measured Pfa, threshold) at the threshold chosen on these clear scores for ``target_pfa``."""
    y, s = as_arrays(labels, scores)
    threshold = threshold_at_pfa(s[~y], target_pfa)
    pd, pfa = rates_at_threshold(y, s, threshold)
    return pd, pfa, threshold
