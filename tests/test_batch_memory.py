"""The per-batch memory cap (issue 15 part 2, "Memory ... and per batch"): ``inspect`` admits a scan to be read
only while the header estimates of the scans it holds (read ahead by its workers, waiting in the batch, in the
model) stay within the policy's ``max_batch_mb``; one scan over the per-scan cap is manual inspection and the
batch goes on. Small real scans (the samples) and caps of a few MiB: nothing here uses much memory.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from parcelscan.cli import main
from parcelscan.datasets.scans.readers import discover_scans
from parcelscan.datasets.scans.scanfile import Scan
from parcelscan.errors import ParcelscanError
from parcelscan.inference import gates
from parcelscan.inference.inspector import Inspector
from parcelscan.model.registry import SHIPPED_DEFAULT

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"


@pytest.fixture(scope="module")
def refs():
    found = discover_scans([EXAMPLES])
    assert len(found) >= 6
    return found


@pytest.fixture(scope="module")
def estimates(refs):
    spec = Inspector(SHIPPED_DEFAULT, threads=1).spec
    return {ref.scan_id: gates.scan_memory(ref, spec).need_bytes for ref in refs}


def _run(refs, estimates, *, cap: int, scan_cap: int | None = None, workers: int, batch: int = 4):
    """Verdicts of the samples three times over, and at each verdict the estimated bytes of the decoded ``Scan``
    objects alive in the process (found by gc: what the process really holds, not the Inspector's accounting)."""
    inspector = Inspector(SHIPPED_DEFAULT, threads=1, threshold=1.0, max_batch_bytes=cap,
                          max_scan_bytes=cap if scan_cap is None else scan_cap)
    verdicts, alive = [], []
    for verdict in inspector.inspect_many(refs * 3, batch=batch, workers=workers):
        verdicts.append(verdict)
        alive.append(_alive(estimates))
    return inspector, verdicts, alive


def _alive(estimates) -> tuple[int, int]:
    """(decoded scans alive, their estimated bytes); the list of them dies here, so it holds none past the call."""
    scans = [o for o in gc.get_objects() if type(o) is Scan]  # type(), not isinstance: no proxy objects asked
    return len(scans), sum(estimates[s.scan_id] for s in scans)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_batch_of_admissible_scans_stays_within_the_cap(refs, estimates, workers):
    cap = int(2.2 * max(estimates.values()))  # any two samples fit, never three of the biggest
    tight, verdicts, alive = _run(refs, estimates, cap=cap, workers=workers)
    assert 0 < tight.peak_held_bytes <= cap
    assert max(n for n, _ in alive) <= tight.peak_held_scans and max(b for _, b in alive) <= cap
    # every scan analysed, in order, with the scores of an uncapped run
    loose, free, free_alive = _run(refs, estimates, cap=4 << 30, workers=workers)
    assert [v.scan_id for v in verdicts] == [r.scan_id for r in refs * 3] == [v.scan_id for v in free]
    assert all(v.verdict != "manual_inspection" for v in verdicts)
    assert [v.verdict for v in verdicts] == [v.verdict for v in free]
    assert [v.score for v in verdicts] == pytest.approx([v.score for v in free], abs=1e-6)
    # the cap is what held them back: uncapped, the same run holds more at once than the cap allows
    assert loose.peak_held_bytes > cap and max(b for _, b in free_alive) > cap


def test_one_scan_over_the_cap_is_manual_inspection_and_the_batch_goes_on(refs, estimates):
    order = sorted(estimates.values())
    scan_cap = (order[-1] + order[-2]) // 2  # only the biggest sample is over it
    over = [scan_id for scan_id, need in estimates.items() if need > scan_cap]
    assert len(over) == 1
    inspector, verdicts, _ = _run(refs, estimates, cap=2 * scan_cap, scan_cap=scan_cap, workers=2)
    assert inspector.peak_held_bytes <= 2 * scan_cap
    for verdict in verdicts:
        if verdict.scan_id in over:
            assert verdict.verdict == "manual_inspection" and verdict.reason_classes == ["unreadable"]
            assert "memory gate" in verdict.reasons[0] and "MiB per scan" in verdict.error
        else:
            assert verdict.verdict != "manual_inspection" and verdict.score is not None
    assert len(verdicts) == 3 * len(refs)


def test_the_batch_cap_is_never_below_the_scan_cap():
    with pytest.raises(ParcelscanError, match=r"per-batch memory cap .* is below the per-scan cap"):
        Inspector(SHIPPED_DEFAULT, max_scan_bytes=8 << 20, max_batch_bytes=4 << 20)


def test_inspect_max_batch_mb(capsys):
    code = main(["inspect", str(EXAMPLES), "--max-batch-mb", "12", "--max-scan-mb", "6", "--workers", "2",
                 "--threads", "1"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code in (0, 1) and len(lines) == len(list(EXAMPLES.glob("*_low.png")))
    assert "memory cap 12 MiB per batch (--max-batch-mb, over the policy's)" in err
    assert "1024 MiB per scan, 4096 MiB per batch" in err  # the shipped policy's, printed at start
    assert main(["inspect", str(EXAMPLES), "--max-batch-mb", "0"]) == 2
    assert "--max-batch-mb must be a positive number" in capsys.readouterr().err
