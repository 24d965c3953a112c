"""Review ingest never turns a non-scan into a queue item.

``parcelscan inspect DIR/*`` used to emit verdicts for a dataset's companion files (``manifest.jsonl``,
``stats.json``, masks, ...) and ingest queued them as junk items at the top of the queue. A verdict line
whose inputs are only such files is counted and named, not queued; a flagged line about a real scan part
that cannot be read is still queued (fail closed); a verdict line with numbers JSON cannot carry is
queued without them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from parcelscan.inference.review.db import connect
from parcelscan.inference.review.ingest import ingest, non_scan_reason
from parcelscan.inference.review.sample import write_sample_results


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return write_sample_results(tmp_path_factory.mktemp("ingest_sample"), rows=60, cols=80)


def flagged_line(sample: Path, scan_id: str, inputs: list[Path], **changes) -> dict:
    base = json.loads(sample.read_text().splitlines()[0])
    return {**base, "scan_id": scan_id, "inputs": [str(p) for p in inputs], "heatmap": None,
            "verdict": "manual_inspection", "score": None, "error": "cannot read", **changes}


def test_companion_and_unknown_files_are_not_queued(tmp_path, sample):
    folder = tmp_path / "dataset"
    shutil.copytree(sample.parent / "scans", folder)
    (folder / "manifest.jsonl").write_text('{"scan_id": "PX-0001"}\n')
    (folder / "stats.json").write_text('{"count": 6}\n')
    shutil.copyfile(folder / "PX-0001_rgb.png", folder / "PX-0001_mask.png")
    (folder / "notes.txt").write_text("not a scan\n")
    (folder / "labels.json").write_text('{"classes": ["clear", "suspect"]}\n')  # a JSON of no scan
    junk = {"manifest": folder / "manifest.jsonl", "stats": folder / "stats.json",
            "PX-0001_mask": folder / "PX-0001_mask.png", "notes": folder / "notes.txt",
            "labels": folder / "labels.json"}
    lines = [flagged_line(sample, scan_id, [path]) for scan_id, path in junk.items()]
    # a real scan named with a companion beside its parts: queued, the companion not among its files
    lines.append(flagged_line(sample, "PX-0002", [folder / "PX-0002_low.png", folder / "PX-0002_high.png",
                                                  folder / "manifest.jsonl"], verdict="suspect", score=0.9))
    # a flagged scan part that cannot be read is still queued: the parcel must be looked at
    lines.append(flagged_line(sample, "GONE-1", [folder / "GONE-1_low.png"]))
    # a sidecar named on its own is a scan part
    lines.append(flagged_line(sample, "PX-0004", [folder / "PX-0004.json"]))
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    conn = connect(tmp_path / "review.sqlite", create=True)
    report = ingest(conn, results)
    queued = {row["scan_id"]: row for row in conn.execute("SELECT * FROM items")}
    conn.close()
    assert set(queued) == {"PX-0002", "GONE-1", "PX-0004"}
    assert report.added == 3 and report.not_scans == 5
    assert "5 not a scan (not queued)" in report.summary()
    for scan_id, path in junk.items():
        assert any(path.name in message for message in report.messages), scan_id
    assert json.loads(queued["PX-0002"]["inputs"]) == [str(folder / "PX-0002_low.png"),
                                                        str(folder / "PX-0002_high.png")]
    assert "manifest.jsonl" not in queued["PX-0002"]["scan_files"]
    assert queued["GONE-1"]["scan_error"] and queued["PX-0004"]["scan_error"] is None


@pytest.mark.parametrize("name,is_scan", [
    ("PX-1_low.png", True), ("PX-1_high.png", True), ("PX-1_rgb.png", True), ("PX-1.tiff", True),
    ("PX-1.dcs", True), ("photo.jpg", True), ("manifest.jsonl", False), ("stats.json", False),
    ("Manifest.JSONL", False), ("PX-1_mask.png", False), ("results.jsonl", False), ("notes.txt", False),
    ("PX-1", False),
])
def test_the_name_rule(tmp_path, name, is_scan):
    assert (non_scan_reason(tmp_path / name) is None) == is_scan


def test_junk_numbers_in_a_verdict_line(tmp_path, sample):
    scans = sample.parent / "scans"
    pair = [scans / "PX-0001_low.png", scans / "PX-0001_high.png"]
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(flagged_line(sample, "PX-0001", pair, verdict="suspect")).replace(
        '"score": null', '"score": Infinity').replace('"threshold": 0.5', '"threshold": NaN') + "\n")
    conn = connect(tmp_path / "review.sqlite", create=True)
    assert ingest(conn, results).added == 1
    row = conn.execute("SELECT score, threshold, verdict_error FROM items").fetchone()
    conn.close()
    assert row["score"] is None and row["threshold"] is None  # unscored: first in the queue
    assert "score Infinity" in row["verdict_error"] and "threshold NaN" in row["verdict_error"]
    for bad in ('"score": true', '"threshold": "high"'):
        text = json.dumps(flagged_line(sample, "PX-0001", pair)).replace('"score": null', '"score": null, "x": 0')
        key, value = bad.split(": ")
        data = json.loads(text)
        data[key.strip('"')] = json.loads(value)
        results.write_text(json.dumps(data) + "\n")
        conn = connect(tmp_path / "review.sqlite")
        with pytest.raises(Exception, match=key.strip('"')):
            ingest(conn, results)
        conn.close()


def test_the_cli_names_each_line_it_did_not_queue(tmp_path, sample):
    import subprocess
    import sys

    (tmp_path / "manifest.jsonl").write_text("{}\n")
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(flagged_line(sample, "manifest", [tmp_path / "manifest.jsonl"])) + "\n")
    done = subprocess.run([sys.executable, "-m", "parcelscan", "review", "ingest", str(results), "--db",
                           str(tmp_path / "review.sqlite")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{results}:1: not queued: manifest.jsonl is a dataset companion file" in done.stderr
    assert "0 added" in done.stdout and "1 not a scan (not queued)" in done.stdout
    assert "queue: 0 undecided" in done.stdout
