"""Moving a model's operating point: ``python -m parcelscan.training.calibrate [--count-twins]`` picks the threshold
on a clear-only set, ``parcelscan export --recalibrate MODEL.onnx --threshold-from CALIB.json`` writes it into the
model file with the calibration result, the graph and weights untouched."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers

from parcelscan.cli import main
from parcelscan.datasets.manifest import read_manifest
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.simulator.generate import run_simulate
from parcelscan.model.operating_point import threshold_at_pfa
from parcelscan.model.session import read_metadata, sha256_file, verify_sha256
from parcelscan.training.calibrate import calibrate_threshold
from parcelscan.training.calibrate import main as calibrate_main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return helpers.build_all(tmp_path_factory.mktemp("recalibration"))


@pytest.fixture(scope="module")
def clear_set(tmp_path_factory) -> Path:
    """Clear-only stress scans of the default profile: about half carry a look-alike, some of them twins."""
    out = tmp_path_factory.mktemp("calib")
    profile = default_profile()
    args = argparse.Namespace(count=30, seed=11, workers=1, suspect_fraction=0.0, scenarios=None, mix="stress",
                              no_progress=True)
    assert run_simulate(args, profile, out) == 0
    return out


def test_calibrate_counts_twins_only_when_asked(built, clear_set):
    records = read_manifest(clear_set)
    twins = {r.scan_id for r in records if r.twin_of}
    assert 0 < len(twins) < len(records)
    scores = helpers.scan_scores(built["model"], clear_set)
    assert set(scores) == {r.scan_id for r in records}
    target = 0.1
    plain = calibrate_threshold(built["model"], clear_set, target, workers=1)
    counted = calibrate_threshold(built["model"], clear_set, target, workers=1, count_twins=True)
    # the same rule as evaluation, on the non-twin scores or on all of them
    non_twin = [s for scan_id, s in scores.items() if scan_id not in twins]
    assert plain["threshold"] == pytest.approx(threshold_at_pfa(non_twin, target), abs=1e-6)
    assert counted["threshold"] == pytest.approx(threshold_at_pfa(list(scores.values()), target), abs=1e-6)
    assert plain["pfa_over"] == "non-twin clear scans" and counted["pfa_over"] == "all clear scans"
    assert counted["data_identity"]["seed"] == 11 and counted["data_identity"]["mix"] == "stress"
    assert counted["data_identity"]["scans"] == len(records)
    assert counted["n_clear"] == len(records)
    all_alarms = counted["false_alarms"] + counted["twin_alarms"]
    assert all_alarms <= int(target * len(records)) and counted["pfa_all"] == all_alarms / len(records)
    assert plain["false_alarms"] <= int(target * len(non_twin))


def test_recalibrate_moves_only_the_operating_point(built, clear_set, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    calibration = tmp_path / "calibration.json"
    assert calibrate_main(["--model", str(built["model"]), "--data", str(clear_set), "--target-pfa", "0.1",
                           "--count-twins", "--workers", "1", "--json", str(calibration)]) == 0
    result = json.loads(calibration.read_text())
    out = tmp_path / "recalibrated.onnx"
    before = read_metadata(built["model"])
    assert main(["export", "--recalibrate", str(built["model"]), "--threshold-from", str(calibration),
                 "--out", str(out)]) == 0
    assert "weights unchanged" in capsys.readouterr().out
    after = read_metadata(out)
    assert after.threshold == pytest.approx(result["threshold"]) and after.threshold != before.threshold
    assert after.target_pfa == 0.1 and after.metrics["operating_point"]["pfa_over"] == "all clear scans"
    assert "model" not in after.metrics["operating_point"]
    assert after.preprocessing == before.preprocessing and after.temperature == before.temperature
    verify_sha256(out)
    assert sha256_file(out) != sha256_file(built["model"])
    graph_before = onnx.load(str(built["model"])).graph.SerializeToString()
    assert onnx.load(str(out)).graph.SerializeToString() == graph_before  # every weight byte for byte
    scores_before = helpers.scan_scores(built["model"], clear_set)
    assert helpers.scan_scores(out, clear_set) == scores_before


def test_recalibrate_refuses_what_it_cannot_vouch_for(built, tmp_path, capsys):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": 0.5, "target_pfa": 0.01}))
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(built["model"].read_bytes())
    assert main(["export", "--recalibrate", str(copy), "--threshold-from", str(calibration)]) == 2
    assert "sha256" in capsys.readouterr().err  # no .sha256 beside the copy: never re-vouch for it
    assert main(["export", "--recalibrate", str(built["model"])]) == 2
    assert "--threshold-from" in capsys.readouterr().err
    calibration.write_text(json.dumps({"threshold": 0.5}))
    assert main(["export", "--recalibrate", str(built["model"]), "--threshold-from", str(calibration),
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert "not a calibration result" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
