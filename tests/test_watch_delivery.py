"""``inspect --watch`` delivery (issue 11 items 5 and 8): a journal so a restart does not re-emit, exactly once
across a clean stop, at least once after ``kill -9``, optional done/ and quarantine folders (move first, then emit
the final paths, so ``inputs`` always names files that exist), and a watch that cannot work refused before it
says "watching". Real shipped model, real sample scans, the real watch loop."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from parcelscan.cli import main
from parcelscan.errors import ParcelscanError
from parcelscan.inference import gates
from parcelscan.inference import watch as hot
from parcelscan.inference.inspect_cli import add_arguments, run
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.verdict import Verdict, inputs_digest
from parcelscan.model.registry import SHIPPED_DEFAULT

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"
IDS = ["sim31-000074", "sim31-000077", "sim31-000141"]


@pytest.fixture(scope="module")
def inspector():
    return Inspector(SHIPPED_DEFAULT)


def _drop(folder: Path, scan_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("_low.png", "_high.png", ".json", "_rgb.png"):
        shutil.copy(EXAMPLES / f"{scan_id}{suffix}", folder / f"{scan_id}{suffix}")


def _watch_until(inspector, folder: Path, expected: int, emit=None, timeout_s: float = 60.0, **options):
    """Run the real watch loop in a thread until ``expected`` verdicts were emitted (or a timeout), then stop
    it cleanly as SIGTERM does. Returns the emitted verdicts."""
    emitted: list[Verdict] = []
    stop = threading.Event()

    def record(verdict: Verdict) -> None:
        if emit is not None:
            emit(verdict)
        emitted.append(verdict)

    errors: list[BaseException] = []

    def run() -> None:
        try:
            hot.watch(folder, lambda items: inspector.inspect_many(items, batch=4, workers=0), record, stop,
                      poll_s=0.05, settle_s=0.1, **options)
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while len(emitted) < expected and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    time.sleep(0.5)  # anything emitted beyond the expected count would show here
    stop.set()
    thread.join(timeout=60)
    if errors:
        raise errors[0]
    return emitted


def test_a_restart_re_emits_nothing_already_delivered(inspector, tmp_path):
    hot_dir = tmp_path / "hot"
    for scan_id in IDS[:2]:
        _drop(hot_dir, scan_id)
    first = _watch_until(inspector, hot_dir, 2)
    assert sorted(v.scan_id for v in first) == IDS[:2]
    for verdict in first:
        assert verdict.inputs_sha256 == inputs_digest(verdict.inputs)  # the consumers' dedup key, recomputable
    assert _watch_until(inspector, hot_dir, 1, timeout_s=3) == []  # clean stop + restart: exactly once
    _drop(hot_dir, IDS[2])
    assert [v.scan_id for v in _watch_until(inspector, hot_dir, 1)] == [IDS[2]]  # only what is new
    # the journal is compacted on open: one line per delivered scan
    journal = (hot_dir / hot.JOURNAL_NAME).read_text().splitlines()
    assert len([line for line in journal if '"emitted"' in line]) == 3
    assert len(_watch_until(inspector, hot_dir, 3, use_journal=False, timeout_s=20)) == 3  # no journal: all again


def test_done_and_quarantine_move_first_then_emit_the_final_paths(inspector, tmp_path):
    hot_dir, done, quarantine = tmp_path / "hot", tmp_path / "hot" / "done", tmp_path / "quarantine"
    _drop(hot_dir, IDS[0])
    _drop(hot_dir, IDS[1])
    (hot_dir / f"{IDS[1]}_high.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # cannot be analysed
    (hot_dir / "notes.txt").write_text("x")

    def inputs_exist_when_emitted(verdict: Verdict) -> None:
        assert all(os.path.lexists(p) for p in verdict.inputs), verdict.inputs

    emitted = _watch_until(inspector, hot_dir, 2, emit=inputs_exist_when_emitted, done_dir=done,
                           quarantine_dir=quarantine, stale_s=0.5)
    by_id = {v.scan_id: v for v in emitted}
    assert by_id[IDS[0]].verdict in ("clear", "suspect") and by_id[IDS[1]].verdict == "manual_inspection"
    assert all(Path(p).parent == done for p in by_id[IDS[0]].inputs)
    assert all(Path(p).parent == quarantine for p in by_id[IDS[1]].inputs)
    assert sorted(p.name for p in hot_dir.iterdir()) == [hot.JOURNAL_NAME, "done", "notes.txt"]
    # the same scan id arrives again with other content: its files go beside, not over, the first ones
    _drop(hot_dir, IDS[2])
    for suffix in ("_low.png", "_high.png", ".json", "_rgb.png"):
        (hot_dir / f"{IDS[2]}{suffix}").rename(hot_dir / f"{IDS[0]}{suffix}")
    again = _watch_until(inspector, hot_dir, 1, done_dir=done, quarantine_dir=quarantine)
    assert len(again) == 1 and again[0].scan_id == IDS[0]
    assert Path(again[0].inputs[0]).parent == done / again[0].inputs_sha256[:12]
    assert len(set(again[0].inputs) | set(by_id[IDS[0]].inputs)) == 8 and all(map(os.path.exists, again[0].inputs))


def test_a_verdict_lost_between_move_and_emit_is_emitted_after_restart(inspector, tmp_path):
    """The reader of stdout goes away (BrokenPipeError) after the files moved: the verdict never reached anyone.
    The journal's pending entry makes the next run emit it, with the paths the files now have."""
    hot_dir, done = tmp_path / "hot", tmp_path / "done"
    _drop(hot_dir, IDS[0])

    def broken_pipe(_verdict: Verdict) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        _watch_until(inspector, hot_dir, 1, emit=broken_pipe, done_dir=done, timeout_s=20)
    assert not list(hot_dir.glob("*.png")) and len(list(done.glob("*.png"))) == 3  # moved, not delivered
    recovered = _watch_until(inspector, hot_dir, 1, done_dir=done, timeout_s=20)
    assert [v.scan_id for v in recovered] == [IDS[0]]
    assert all(Path(p).parent == done and Path(p).exists() for p in recovered[0].inputs)
    assert _watch_until(inspector, hot_dir, 1, done_dir=done, timeout_s=2) == []  # and then never again


def test_a_watch_that_cannot_work_is_refused_before_watching(tmp_path, capsys):
    assert main(["inspect", "--watch", str(tmp_path / "nonexistent")]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "watching" not in err and "model" not in err
    with pytest.raises(ParcelscanError, match="work with --watch"):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        run(parser.parse_args([str(tmp_path), "--done", str(tmp_path / "d")]))


@pytest.mark.slow
def test_kill_9_loses_no_verdict_and_a_clean_stop_repeats_none(tmp_path):
    """Real processes: ``kill -9`` after the first verdict, restart, SIGTERM once all are out. Every scan has a
    verdict (a repeat is allowed only for a scan in flight at the kill), every ``inputs`` path exists."""
    hot_dir, done = tmp_path / "hot", tmp_path / "done"
    for scan_id in IDS:
        _drop(hot_dir, scan_id)
    env = {**os.environ, "PARCELSCAN_MODEL_DIR": str(tmp_path / "empty-store")}
    command = [sys.executable, "-m", "parcelscan", "inspect", "--watch", str(hot_dir), "--done", str(done),
               "--watch-settle", "0.1", "--batch", "1", "--quiet"]

    def run_until(lines_wanted: int, sig: int) -> list[dict]:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        lines = []
        deadline = time.monotonic() + 120
        while len(lines) < lines_wanted and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(json.loads(line))
        process.send_signal(sig)
        rest, _ = process.communicate(timeout=60)
        return lines + [json.loads(line) for line in rest.splitlines() if line.strip()]

    first = run_until(1, signal.SIGKILL)
    second = run_until(len(IDS) - len(first), signal.SIGTERM)
    got = [v["scan_id"] for v in first + second]
    assert set(got) == set(IDS)  # at least once
    repeats = [scan_id for scan_id in set(got) if got.count(scan_id) > 1]
    assert len(repeats) <= 1  # only the scan in flight at kill -9 may repeat
    for verdict in first + second:
        assert all(Path(p).exists() for p in verdict["inputs"]) and Path(verdict["inputs"][0]).parent == done
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert out.strip() == "" and process.returncode == 0 and "0 scan(s)" in err  # a clean restart repeats none


def test_the_hot_folder_never_decodes_a_scan_over_the_memory_cap(inspector, tmp_path):
    """The hot folder decodes scans itself to see that they are complete: the memory gate runs before that, and
    a refused scan is reported at once (no waiting for it to go stale), as manual inspection."""
    hot_dir = tmp_path / "hot"
    _drop(hot_dir, IDS[0])
    small = Inspector(SHIPPED_DEFAULT, max_scan_bytes=1 << 20)
    emitted = _watch_until(small, hot_dir, 1, stale_s=3600,
                           admit=lambda ref: gates.check_memory(ref, small.spec, small.max_scan_bytes))
    assert len(emitted) == 1 and emitted[0].verdict == "manual_inspection" and "MiB per scan" in emitted[0].error
