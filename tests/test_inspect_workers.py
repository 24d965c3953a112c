"""``inspect --workers N`` takes the fastest correct parallelism (issue 15 part 4).

* Which: named files and folders with N >= 2 → N forked worker processes, each inline; '-', --watch, --tdr and
  --heatmaps (and N <= 1) → threads in one process; ``--processes P`` overrides it (P = 1: the threads).
* The default path (processes) gives the verdicts of one inline process, line for line, in input order — with the
  shipped model, the default policy and the declaration check, on the sample scans dealt in runs of --batch.
* A worker killed mid-run (SIGKILL after its first verdict) loses no verdict: the main process inspects the rest
  of its share, and says so.
* The per-batch memory cap is shared: each worker process holds at most its part of it (never below the per-scan
  cap), read from inside the workers themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import pytest

from parcelscan.errors import ParcelscanError
from parcelscan.inference import inspect_cli
from parcelscan.inference.inspector import Inspector

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    inspect_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_workers_pick_processes_where_the_run_can_fork_and_threads_elsewhere(tmp_path):
    folder = str(SAMPLES)
    assert inspect_cli.parallelism(_args(folder, "--workers", "2")) == (2, 0)
    assert inspect_cli.parallelism(_args(folder, "--workers", "3")) == (3, 0)
    assert inspect_cli.parallelism(_args(folder)) == (1, 1)  # the default: one process, one reader thread
    assert inspect_cli.parallelism(_args(folder, "--workers", "0")) == (1, 0)
    for extra in (["--watch", str(tmp_path)], ["--tdr", str(tmp_path)], ["--heatmaps", str(tmp_path)]):
        assert inspect_cli.parallelism(_args(folder, "--workers", "2", *extra)) == (1, 2), extra
    assert inspect_cli.parallelism(_args(folder, "-", "--workers", "2")) == (1, 2)  # stdin: read as it comes
    # --processes overrides: P processes with --workers threads each; 1 keeps the threads
    assert inspect_cli.parallelism(_args(folder, "--workers", "2", "--processes", "1")) == (1, 2)
    assert inspect_cli.parallelism(_args(folder, "--workers", "1", "--processes", "2")) == (2, 1)
    with pytest.raises(ParcelscanError, match="named files and folders only"):
        inspect_cli.parallelism(_args("-", "--processes", "2"))
    with pytest.raises(ParcelscanError, match=">= 1"):
        inspect_cli.parallelism(_args(folder, "--processes", "0"))


def _inspect(capsys, *argv: str) -> tuple[list[dict], str]:
    """``parcelscan inspect`` in this process: (its verdict lines without the timing fields, its stderr)."""
    from parcelscan import cli

    capsys.readouterr()
    code = cli.main(["inspect", *argv, "--device", "cpu"])
    captured = capsys.readouterr()
    out = []
    for line in captured.out.splitlines():
        data = json.loads(line)
        data.pop("latency_ms")
        data.pop("scanned_at")
        out.append(data)
    assert code in (0, 1)
    return out, captured.err


def test_the_default_path_gives_the_verdicts_of_one_process_in_input_order(capsys):
    one, _ = _inspect(capsys, str(SAMPLES), "--batch", "2", "--workers", "0")
    assert len(one) >= 5
    for workers, batch in (("2", "2"), ("3", "1")):
        many, err = _inspect(capsys, str(SAMPLES), "--batch", batch, "--workers", workers)
        assert f"{workers} worker processes (inline" in err  # the process path was taken, not the threads
        assert many == one, (workers, batch)
    assert [v["scan_id"] for v in one] == sorted(v["scan_id"] for v in one)  # input order: the folder's order
    # fewer runs of --batch than workers: no more processes than runs (one batch: none forked, this one inspects)
    few, err = _inspect(capsys, str(SAMPLES), "--batch", "4", "--workers", "4")
    assert "2 worker processes (inline" in err and few == one
    single, err = _inspect(capsys, str(SAMPLES), "--batch", "8", "--workers", "2")
    assert "worker processes" not in err and single == one


def test_a_killed_worker_process_loses_no_verdict(capsys, monkeypatch):
    """Worker 0 is SIGKILLed right after sending its first verdict (a real kill: no Python cleanup); the main
    process inspects the rest of its share itself, every verdict is there, equal and in order, and stderr says
    which worker died."""
    one, _ = _inspect(capsys, str(SAMPLES), "--batch", "1", "--workers", "0")
    child = inspect_cli._child

    class KillAfterFirst:
        def __init__(self, connection):
            self.connection = connection

        def send(self, verdict) -> None:
            self.connection.send(verdict)
            os.kill(os.getpid(), signal.SIGKILL)

        def close(self) -> None:
            self.connection.close()

    def dying_first_worker(args, policy, items, connection, n, threads):
        first = items and items[0] == shares_first[0]
        child(args, policy, items, KillAfterFirst(connection) if first else connection, n, threads)

    shares_first: list = []
    start = inspect_cli._start_shares

    def remember_first(args, policy, items, n, threads):
        shares_first.append(items[0])
        return start(args, policy, items, n, threads)

    monkeypatch.setattr(inspect_cli, "_child", dying_first_worker)
    monkeypatch.setattr(inspect_cli, "_start_shares", remember_first)
    two, err = _inspect(capsys, str(SAMPLES), "--batch", "1", "--workers", "2")
    assert two == one
    assert "worker process 0 ended with exit code -9" in err


def test_worker_processes_share_the_batch_memory_cap(capsys, monkeypatch, tmp_path):
    """Each of 2 workers holds at most half the batch cap (never less than the scan cap): read inside them."""
    many_calls = Inspector.inspect_many
    report = tmp_path / "caps"
    report.mkdir()

    def recording(self, items, batch=8, workers=1):
        yield from many_calls(self, items, batch=batch, workers=workers)
        (report / f"{os.getpid()}.json").write_text(json.dumps(
            {"max_batch_bytes": self.max_batch_bytes, "max_scan_bytes": self.max_scan_bytes,
             "peak_held_bytes": self.peak_held_bytes}))

    monkeypatch.setattr(Inspector, "inspect_many", recording)
    one, _ = _inspect(capsys, str(SAMPLES), "--batch", "2", "--workers", "0", "--max-scan-mb", "5",
                      "--max-batch-mb", "12")
    for path in report.iterdir():
        path.unlink()
    two, _ = _inspect(capsys, str(SAMPLES), "--batch", "2", "--workers", "2", "--max-scan-mb", "5",
                      "--max-batch-mb", "12")
    assert two == one
    caps = [json.loads(path.read_text()) for path in report.iterdir() if path.stem != str(os.getpid())]
    assert len(caps) == 2  # both workers inspected a share
    for cap in caps:
        assert cap["max_batch_bytes"] == 6 * 2**20 and cap["max_scan_bytes"] == 5 * 2**20
        assert 0 < cap["peak_held_bytes"] <= cap["max_batch_bytes"]
