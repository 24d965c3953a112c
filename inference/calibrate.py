"""A station's own operating point, from its own cleared traffic, and the drift monitor that watches it.

The threshold stored in a model was chosen on simulated clear scans; it does not transfer between simulators
and will not transfer between stations (another scanner, other goods, other packaging). ``parcelscan
calibrate`` sets it again for a target Pfa from the parcels *this* station has cleared:

* **inspected-clear parcels**: the ``clear`` lines of ``inspect``'s verdict JSONL (``--verdicts``), and
* **reviewed false alarms**: flagged parcels that the inspectors of the review app decided ``false_alarm``
  (``--review DB``; all inspectors agree, conflicts are left out; read-only).

Both carry the model's score; the new threshold is the model layer's rule (``operating_point.threshold_at_pfa``:
the lowest threshold whose Pfa on these scores is ≤ the target). The Pfa it achieves on them is reported with
its exact (Clopper–Pearson) 95 % interval on the clear count — with 300 cleared parcels and none over the
threshold the upper bound is still 1.2 %, and the report says so. Scores from another model than the one the
calibration is for are refused: a score means nothing across models.

The calibration goes into a station policy file (a copy of ``--policy`` with a ``[calibration]`` table) that
``inspect --policy`` reads: its threshold replaces the model's, and its **flag rate** (the share of *all*
parcels in the verdict files that would be flagged at the new threshold, for any reason) is the centre line of
the drift monitor.

**Drift** (``DriftMonitor``): ``inspect`` and ``--watch`` count flags (any non-clear verdict) over a sliding
window of the last ``drift.window`` parcels (default 500) and raise an alert — one stderr line, and a field of
the summary — when the window's flag rate leaves the p-chart limits p₀ ± ``sigma``·√(p₀(1−p₀)/n) (3σ by
default) around the calibrated rate p₀: a detector going dark, a belt of new goods, a model that no longer
fits. The alert is raised when the rate leaves the limits and again only after it has come back inside.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError
from parcelscan.inference.policy import Calibration, DriftConfig, StationPolicy, dump_policy
from parcelscan.inference.verdict import CLEAR, MANUAL, utc_now
from parcelscan.model.operating_point import threshold_at_pfa

MIN_CLEARED = 20  # fewer cleared parcels than this say nothing about a Pfa


# --- exact binomial interval -----------------------------------------------------------------------------------
def _binomial_tail_at_least(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed in log space (exact to float precision)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lg_n = math.lgamma(n + 1)
    terms = [lg_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion k/n: conservative at 0 and at small n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    alpha = 1.0 - confidence

    def solve(f, target: float) -> float:  # f increasing in p on [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(80):
            mid = (lo + hi) / 2
            if f(mid) < target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: _binomial_tail_at_least(k, n, p), alpha / 2)
    # upper: P(X <= k | p) = alpha/2  <=>  P(X >= k+1 | p) = 1 - alpha/2
    high = 1.0 if k == n else solve(lambda p: _binomial_tail_at_least(k + 1, n, p), 1 - alpha / 2)
    return low, high


# --- the station's traffic ---------------------------------------------------------------------------------------
@dataclass
class Traffic:
    """What calibration reads: cleared scores, and every parcel's (score, flagged for a non-score reason)."""

    cleared: list[float] = field(default_factory=list)
    parcels: list[tuple[float | None, bool]] = field(default_factory=list)
    models: dict[str, int] = field(default_factory=dict)  # model sha256 → parcels seen
    sources: list[str] = field(default_factory=list)
    skipped: int = 0  # lines of another model, or without a score where one was needed


def _flagged_for_another_reason(line: dict[str, Any]) -> bool:
    """A verdict flagged for something other than the score (the shield, a gate, an error, a declaration):
    it stays flagged whatever the threshold."""
    if line.get("verdict") == MANUAL:
        return True
    classes = line.get("reason_classes")
    if classes:
        return any(c not in ("powder", "twin") for c in classes)
    return any(str(r).startswith("shield alarm") for r in line.get("reasons") or [])


def read_verdicts(paths: Iterable[str | Path], traffic: Traffic, model_sha256: str | None) -> Traffic:
    """Verdict JSONL files (``inspect`` output): clear lines are cleared parcels; every line is traffic."""
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ParcelscanError(f"--verdicts {path}: cannot read it: {error}") from error
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                sha = (line.get("model") or {}).get("sha256") or "unknown"
                score = line.get("score")
                verdict = line["verdict"]
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
                raise ParcelscanError(f"--verdicts {path}:{number}: not a verdict line ({error})") from error
            if model_sha256 is not None and not sha.startswith(model_sha256):
                traffic.skipped += 1
                continue
            traffic.models[sha] = traffic.models.get(sha, 0) + 1
            score = float(score) if isinstance(score, (int, float)) and math.isfinite(score) else None
            traffic.parcels.append((score, _flagged_for_another_reason(line)))
            if verdict == CLEAR and score is not None:
                traffic.cleared.append(score)
        traffic.sources.append(str(path))
    return traffic


def read_review(target: str, traffic: Traffic, model_sha256: str | None) -> Traffic:
    """Flagged parcels every inspector decided ``false_alarm`` in the review database (read-only)."""
    try:  # the review extra (sqlalchemy, psycopg): only this source needs it
        from parcelscan.inference.review import store
        from parcelscan.inference.review.db import opened
    except ImportError as error:
        raise ParcelscanError(f"--review needs the review extra: pip install 'parcelscan[review]' ({error})") from error
    with opened(target) as conn:
        rows = conn.execute("SELECT id, score, model_sha256 FROM items ORDER BY id").fetchall()
        for row in rows:
            item_id, score, sha = row[0], row[1], row[2] or "unknown"
            if model_sha256 is not None and not sha.startswith(model_sha256):
                traffic.skipped += 1
                continue
            if store.state_of(store.item_decisions(conn, item_id)) != "false_alarm":
                continue
            if score is None or not math.isfinite(float(score)):
                traffic.skipped += 1
                continue
            traffic.models[sha] = traffic.models.get(sha, 0) + 1
            traffic.cleared.append(float(score))
    traffic.sources.append(str(target))
    return traffic


def calibrate(traffic: Traffic, target_pfa: float, confidence: float = 0.95) -> Calibration:
    """The threshold for ``target_pfa`` on the cleared scores, with what it achieves (module docstring)."""
    if not 0.0 < target_pfa < 1.0:
        raise ParcelscanError(f"--target-pfa must be in (0, 1), got {target_pfa}")
    if len(traffic.models) > 1:
        listing = ", ".join(f"{sha[:12]} ({n})" for sha, n in sorted(traffic.models.items()))
        raise ParcelscanError(f"the traffic comes from {len(traffic.models)} models ({listing}): scores of different "
                              "models cannot share a threshold; pick one with --model SHA256")
    n = len(traffic.cleared)
    if n < MIN_CLEARED:
        raise ParcelscanError(f"only {n} cleared parcels with a score: a threshold for a Pfa needs at least "
                              f"{MIN_CLEARED} (more is better: the interval below shows how much)")
    threshold = threshold_at_pfa(traffic.cleared, target_pfa)
    false_alarms = sum(1 for s in traffic.cleared if s >= threshold)
    low, high = clopper_pearson(false_alarms, n, confidence)
    flag_rate, flag_n = None, len(traffic.parcels)
    if traffic.parcels:
        flagged = sum(1 for score, other in traffic.parcels if other or (score is not None and score >= threshold)
                      or score is None)
        flag_rate = flagged / flag_n
    sha = next(iter(traffic.models), None)
    return Calibration(threshold=threshold, target_pfa=target_pfa, n_clear=n, false_alarms=false_alarms,
                       pfa=false_alarms / n, pfa_low=low, pfa_high=high, flag_rate=flag_rate, flag_rate_n=flag_n,
                       model_sha256=sha if sha and sha != "unknown" else None,
                       source=", ".join(traffic.sources), created=utc_now())


def policy_with_calibration(base: StationPolicy, calibration: Calibration) -> str:
    """The text of a station policy file: ``base``'s settings with ``calibration`` as its [calibration]."""
    data = {k: v for k, v in base.raw.items() if k != "calibration"}
    data.setdefault("name", base.name)
    data["calibration"] = {
        "threshold": calibration.threshold, "target_pfa": calibration.target_pfa, "n_clear": calibration.n_clear,
        "false_alarms": calibration.false_alarms, "pfa": calibration.pfa, "pfa_low": calibration.pfa_low,
        "pfa_high": calibration.pfa_high, "flag_rate": calibration.flag_rate, "flag_rate_n": calibration.flag_rate_n,
        "model_sha256": calibration.model_sha256, "source": calibration.source, "created": calibration.created,
    }
    header = (f"parcelscan station policy, calibrated by `parcelscan calibrate` at {calibration.created}\n"
              f"from {base.path} (sha256 {base.sha256}) and the station's traffic: {calibration.source}.\n"
              "Fields: README \"Station policy\" and inference/policy.py.")
    return dump_policy(data, header)


# --- drift ------------------------------------------------------------------------------------------------------
class DriftMonitor:
    """p-chart of the flag rate over a sliding window (module docstring). ``add`` returns an alert line when
    the window's rate leaves the limits (once per excursion), else None."""

    def __init__(self, rate: float, config: DriftConfig | None = None):
        config = config or DriftConfig()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a calibrated flag rate is a proportion, got {rate}")
        self.rate, self.window, self.sigma = rate, int(config.window), float(config.sigma)
        half = self.sigma * math.sqrt(rate * (1.0 - rate) / self.window)
        self.limits = (max(0.0, rate - half), min(1.0, rate + half))
        self._flags: deque[bool] = deque(maxlen=self.window)
        self._count = 0
        self.seen = 0
        self.alerts: list[str] = []
        self.outside = False

    def add(self, flagged: bool) -> str | None:
        if len(self._flags) == self.window:
            self._count -= self._flags[0]
        self._flags.append(bool(flagged))
        self._count += bool(flagged)
        self.seen += 1
        if len(self._flags) < self.window:
            return None
        observed = self._count / self.window
        low, high = self.limits
        if low <= observed <= high:
            self.outside = False
            return None
        if self.outside:
            return None
        self.outside = True
        side = "above" if observed > high else "below"
        alert = (f"DRIFT: flag rate {observed:.3f} over the last {self.window} parcels (to parcel {self.seen}) is "
                 f"{side} the {self.sigma:g}σ limits {low:.3f}–{high:.3f} around the calibrated {self.rate:.3f}: "
                 "check the scanner and the traffic, then recalibrate (parcelscan calibrate)")
        self.alerts.append(alert)
        return alert

    def summary(self) -> str:
        if not self.alerts:
            window = "" if self.seen >= self.window else f" (fewer than {self.window} parcels: not yet judged)"
            return f"drift: none{window}"
        return f"drift: {len(self.alerts)} alert(s), last: {self.alerts[-1]}"
