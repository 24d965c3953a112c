"""``parcelscan evaluate`` on a checkpoint and on its ONNX export: the report, the same numbers from both,
the ONNX path without PyTorch, unreadable scans counted as flagged, and the summary on known scores."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from parcelscan.cli import main as cli
from parcelscan.datasets.manifest import read_manifest
from parcelscan.training import metrics as M
from parcelscan.training.evaluate import operating_point, scan_probabilities, screening_summary

pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, best.pt) of a 2-epoch run on 32 simulated scans (64×64 tiles at 8 mm pitch)."""
    from parcelscan.training.config import TrainConfig
    from parcelscan.training.train import train

    data = tmp_path_factory.mktemp("scans")
    assert cli(["simulate", "--out", str(data), "--count", "32", "--seed", "21", "--workers", "1",
                "--no-progress"]) == 0
    assert cli(["data", "split", str(data), "--val", "0.25", "--test", "0.25", "--seed", "1"]) == 0
    runs = tmp_path_factory.mktemp("runs")
    config = TrainConfig(data=str(data), project=str(runs), name="eval", epochs=2, batch_size=4, workers=0,
                         device="cpu", preprocessing={"tile_rows": 64, "tile_cols": 64, "pixel_pitch_mm": 8.0},
                         ema_decay=0.9, ema_tau_steps=2.0, patience=0, progress=False, plots=False)
    run_dir = train(config)
    return data, run_dir / "weights" / "best.pt"


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory) -> Path:
    from parcelscan.model.export import export_checkpoint

    data, checkpoint = trained
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_checkpoint(checkpoint, out, data=data, log=lambda line: None)
    return out


def _evaluate(model: Path, data: Path, project: Path, name: str, *extra: str) -> Path:
    assert cli(["evaluate", "--model", str(model), "--data", str(data), "--project", str(project), "--name", name,
                "--bootstrap", "200", "--no-progress", "--device", "cpu", *extra]) == 0
    return project / name


def _predictions(run: Path) -> list[dict[str, str]]:
    with open(run / "predictions.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_checkpoint_report(trained, tmp_path):
    data, checkpoint = trained
    run = _evaluate(checkpoint, data, tmp_path, "ck")
    for name in ("report.md", "metrics.json", "predictions.csv", "roc.png", "pd_vs_pfa.png", "confusion_matrix.png",
                 "calibration.png", "heatmaps.png"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    n_test = metrics["n_scans"]
    assert n_test == len(_predictions(run)) == metrics["n_clear"] + metrics["n_suspect"]
    assert set(metrics["pd_at_pfa"]) == {"0.01", "0.001"}
    for point in ("stored_operating_point", "target_operating_point"):
        confusion = metrics[point]["confusion"]
        assert sum(confusion.values()) == n_test
        assert sum(g["n"] for g in metrics[point]["pd_by_scenario"].values()) == metrics["n_suspect"]
        assert sum(g["n"] for g in metrics[point]["pfa_by_lookalike"].values()) == metrics["n_clear"]
    assert metrics["target_operating_point"]["pfa"] <= 0.01  # threshold picked on this set for Pfa 1 %
    report = (run / "report.md").read_text()
    assert "Pd at fixed Pfa" in report and "Pd per scenario" in report and "ECE" in report
    # a second evaluation with the same name goes to name2
    _evaluate(checkpoint, data, tmp_path, "ck", "--no-plots", "--heatmaps", "0")
    assert (tmp_path / "ck2" / "metrics.json").is_file() and not (tmp_path / "ck2" / "roc.png").exists()


def test_checkpoint_and_onnx_give_the_same_numbers(trained, onnx_model, tmp_path):
    data, checkpoint = trained
    ck = json.loads((_evaluate(checkpoint, data, tmp_path, "ck", "--no-plots") / "metrics.json").read_text())
    ox = json.loads((_evaluate(onnx_model, data, tmp_path, "onnx", "--no-plots") / "metrics.json").read_text())
    assert ck["model_kind"] == "checkpoint" and ox["model_kind"] == "onnx"
    rows_ck, rows_ox = _predictions(tmp_path / "ck"), _predictions(tmp_path / "onnx")
    assert [r["scan_id"] for r in rows_ck] == [r["scan_id"] for r in rows_ox]
    for a, b in zip(rows_ck, rows_ox, strict=True):
        assert float(a["margin"]) == pytest.approx(float(b["margin"]), abs=1e-4)
        assert a["tiles"] == b["tiles"]
    for key in ("roc_auc", "average_precision", "n_scans", "n_clear", "n_suspect"):
        assert ck[key] == pytest.approx(ox[key], abs=1e-9), key
    for pfa in ("0.01", "0.001"):
        assert ck["pd_at_pfa"][pfa]["pd"] == ox["pd_at_pfa"][pfa]["pd"]
        assert ck["pd_at_pfa"][pfa]["pd_ci"] == ox["pd_at_pfa"][pfa]["pd_ci"]
    for point in ("stored_operating_point", "target_operating_point"):
        assert ck[point]["threshold"] == pytest.approx(ox[point]["threshold"], abs=1e-6)
        for key in ("confusion", "pd_by_scenario", "pd_by_material", "pfa_by_lookalike"):
            assert ck[point][key] == ox[point][key], (point, key)
    assert ck["calibration"]["ece_calibrated"] == pytest.approx(ox["calibration"]["ece_calibrated"], abs=1e-6)


def test_onnx_evaluation_needs_no_torch(trained, onnx_model, tmp_path):
    data, _ = trained
    code = ("import sys; sys.modules['torch'] = None; from parcelscan.cli import main; "
            f"sys.exit(main(['evaluate', '--model', {str(onnx_model)!r}, '--data', {str(data)!r}, '--project', "
            f"{str(tmp_path)!r}, '--name', 'nt', '--bootstrap', '50', '--no-progress', '--device', 'cpu']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "nt" / "report.md").is_file()


def test_unreadable_scan_is_flagged_not_cleared(trained, onnx_model, tmp_path):
    data, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    victim = next(r for r in read_manifest(broken) if r.split == "test" and r.label == "clear")
    (broken / victim.files["low"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = _evaluate(onnx_model, broken, tmp_path / "reports", "broken", "--no-plots")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["unreadable_scans"] == 1
    row = next(r for r in _predictions(run) if r["scan_id"] == victim.scan_id)
    assert float(row["probability"]) == 1.0 and row["error"]
    assert metrics["stored_operating_point"]["confusion"]["fp"] >= 1
    assert victim.scan_id in (run / "report.md").read_text()


def test_cli_choices_and_errors(trained, onnx_model, tmp_path, capsys, unsplit_copy):
    data, _ = trained
    assert cli(["evaluate", "--model", str(onnx_model), "--data", str(data), "--split", "all", "--project",
                str(tmp_path), "--name", "all", "--no-progress", "--no-plots", "--bootstrap", "20"]) == 0
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["n_scans"] == 32
    unsplit = unsplit_copy(data)
    assert cli(["evaluate", "--model", str(onnx_model), "--data", str(unsplit), "--project", str(tmp_path)]) == 2
    assert "--split all" in capsys.readouterr().err
    assert cli(["evaluate", "--model", str(tmp_path / "none.onnx"), "--data", str(data), "--project",
                str(tmp_path)]) == 2
    assert "model not found" in capsys.readouterr().err
    assert cli(["evaluate", "--model", str(onnx_model), "--data", str(data), "--target-pfa", "2",
                "--project", str(tmp_path)]) == 2


def test_summary_on_known_scores():
    """Margins chosen so every number can be checked by hand (T = 1: probability = sigmoid(margin))."""
    margins = np.array([-3.0, -2.0, -1.0, 0.0, 2.5,   # clear
                        -0.5, 1.0, 2.0, 3.0, 4.0])    # suspect
    labels = np.array([0] * 5 + [1] * 5)
    records = [SimpleNamespace(scenario="none", material=None, lookalike=k, mass_g=None, mass_fraction=None,
                               provenance={"fill": f} if f else {})
               for k, f in ((None, None), (None, None), ("tile_stack", "grout"), ("tile_stack", "BaSO4"),
                            ("water_bottle", "BaSO4"))]
    records += [SimpleNamespace(scenario=s, material="Nd2O3", lookalike=None, mass_g=g, mass_fraction=f)
                for s, g, f in (("mail_pouch", 15.0, 1.0), ("mail_pouch", 50.0, 1.0), ("water_bottle", 800.0, 0.05),
                                ("water_bottle", 2000.0, 0.3), ("water_bottle", None, None))]
    threshold = float(M.sigmoid(np.array(0.5)))  # flags margins >= 0.5
    s = screening_summary(labels, margins, records, threshold, 1.0, target_pfa=0.2, n_boot=50)
    op = s["stored_operating_point"]
    assert op["confusion"] == {"tp": 4, "fn": 1, "fp": 1, "tn": 4}
    assert op["pd_by_scenario"]["mail_pouch"]["flagged"] == 1 and op["pd_by_scenario"]["water_bottle"]["rate"] == 1
    by_mass = {k: (v["n"], v["flagged"]) for k, v in op["pd_by_mass"].items()}
    assert list(by_mass.items()) == [("< 20 g", (1, 0)), ("20–100 g", (1, 1)), ("500–2000 g", (1, 1)),
                                     ("≥ 2000 g", (1, 1)), ("unknown", (1, 1))]  # 2000 g is in the top band
    by_fraction = {k: (v["n"], v["flagged"]) for k, v in op["pd_by_fraction"].items()}
    assert list(by_fraction.items()) == [("mixed, < 20 %", (1, 1)), ("mixed, 20–99 %", (1, 1)),
                                         ("pure (100 %)", (2, 1)), ("unknown", (1, 1))]
    # without the three look-alike clears (margins -1, 0, 2.5) the highest ordinary clear is -2: Pd 100 %
    ordinary = s["pd_at_pfa_ordinary_clears"]
    assert ordinary["n_clear"] == 2 and ordinary["0.01"]["pd"] == 1.0 and ordinary["0.01"]["pfa"] == 0.0
    fills = {k: (v["n"], v["flagged"]) for k, v in op["pfa_by_lookalike_fill"].items()}
    assert fills == {"none": (2, 0), "grout": (1, 0), "BaSO4": (2, 1)}
    looks = op["pfa_by_lookalike"]
    assert {k: (v["n"], v["flagged"]) for k, v in looks.items()} == {"none": (2, 0), "tile_stack": (2, 0),
                                                                      "water_bottle": (1, 1)}
    assert (looks["none"]["ci_low"], looks["none"]["ci_high"]) == M.wilson_interval(0, 2)
    # Pfa 20 % of 5 clear scans allows 1 false alarm: threshold just above the 2nd highest clear (margin 0)
    target = s["target_operating_point"]
    assert target["confusion"] == {"tp": 4, "fn": 1, "fp": 1, "tn": 4}
    assert s["roc_auc"] == pytest.approx(21 / 25)  # 4 of 25 (suspect, clear) pairs out of order
    # Pfa 1 % and 0.1 % of 5 clear scans allow none: threshold above the highest clear margin 2.5
    assert s["pd_at_pfa"]["0.01"]["pd"] == 0.4 and s["pd_at_pfa"]["0.01"]["allowed_false_alarms"] == 0


def test_operating_point_on_validation():
    rng = np.random.default_rng(0)
    z = rng.normal(-1, 3, 2000)
    labels = rng.random(z.size) < M.sigmoid(z)  # labels drawn from calibrated probabilities sigmoid(z)
    margins = 3 * z  # a model over-confident by 3×
    point = operating_point(labels, margins, 0.01)
    assert point["temperature"] == pytest.approx(3, rel=0.15)
    probabilities = scan_probabilities(margins, point["temperature"])
    assert point["val_pfa"] <= 0.01 and point["val_pfa"] == float((probabilities[~labels] >= point["threshold"]).mean())
    assert point["val_pd"] == M.pd_at_pfa(labels, margins, 0.01)[0]  # temperature never changes Pd at Pfa


def test_twin_summary_counts_pfa_on_non_twin_clears():
    """Scores chosen by hand: the twin (0.95) would set the 1 % threshold if it counted as a clear scan; left
    out of Pfa it is reported as the twin alarm rate instead, and unknown twin_of counts as not a twin."""
    from parcelscan.training.evaluate import twin_summary

    def clear(score, twin_of):
        return score, SimpleNamespace(label="clear", twin_of=twin_of, scenario="none", lookalike="tile_stack",
                                      mass_fraction=None, provenance={"fill": "BaSO4" if twin_of else "grout"})

    def suspect(score, scenario, fraction):
        return score, SimpleNamespace(label="suspect", twin_of=[], scenario=scenario, lookalike=None,
                                      mass_fraction=fraction, provenance={})

    rows = [clear(0.10, []), clear(0.20, None), clear(0.30, []), clear(0.95, ["La2O3"]),
            suspect(0.90, "mail_pouch", 1.0), suspect(0.80, "water_bottle", 0.1), suspect(0.25, "water_bottle", 0.5)]
    scores = np.array([s for s, _ in rows])
    records = [r for _, r in rows]
    labels = np.array([r.label == "suspect" for r in records])
    tw = twin_summary(labels, scores, records, threshold=0.5, pfas=(0.01,))
    assert (tw["n_clear_non_twin"], tw["n_twin"], tw["n_clear_twin_unknown"]) == (3, 1, 1)
    at = tw["at_pfa"]["0.01"]
    assert 0.30 < at["threshold"] <= 0.80  # above the highest non-twin clear, not above the twin
    assert (at["pd"]["flagged"], at["pd"]["n"]) == (2, 3) and at["pfa_non_twin"]["flagged"] == 0
    assert at["twin_alarm_rate"]["rate"] == 1.0 and at["pfa_all_clears"]["flagged"] == 1
    assert at["pd"]["ci"] == list(M.wilson_interval(2, 3))
    assert at["pd_by_fraction"]["mixed, < 20 %"]["flagged"] == 1
    assert tw["roc_auc_non_twin"] == pytest.approx(8 / 9)  # the 0.25 suspect is below the 0.30 clear
    stored = tw["stored"]
    assert stored["pd"]["flagged"] == 2 and stored["pd_by_scenario"]["water_bottle"]["flagged"] == 1
    # a set whose every clear scan is a twin (a retraining's small original test did this) has no Pfa to count
    only_twins = [i for i, r in enumerate(records) if r.label == "suspect" or r.twin_of]
    tw = twin_summary(labels[only_twins], scores[only_twins], [records[i] for i in only_twins], threshold=0.5)
    assert tw["at_pfa"] == {} and tw["n_clear_non_twin"] == 0 and tw["stored"]["twin_alarm_rate"]["flagged"] == 1


def test_opaque_look_alikes_are_named_among_the_false_alarms_and_set_aside_only_beside_the_bar():
    """Hand-chosen scores: an opaque-filled look-alike (0.90, provenance fill_signature.opaque) sets the bar's
    1 % threshold; the report names it among the false alarms, and the set-aside operating point (Pfa on
    the other non-twin clears) is a separate entry, the bar's own numbers unchanged."""
    from parcelscan.training.evaluate import opaque_fill_mask, render_twin_section, twin_summary

    def clear(score, opaque):
        signature = {"opaque": opaque, "pixels": 0 if opaque else 500}
        return score, SimpleNamespace(label="clear", twin_of=[], scenario="none", lookalike="machine_part",
                                      mass_fraction=None, provenance={"fill": "lead shot", "fill_signature": signature})

    def suspect(score):
        return score, SimpleNamespace(label="suspect", twin_of=[], scenario="machine_part", lookalike=None,
                                      mass_fraction=1.0, provenance={})

    rows = [clear(0.10, False), clear(0.20, False), clear(0.90, True), suspect(0.85), suspect(0.95), suspect(0.05)]
    scores = np.array([s for s, _ in rows])
    records = [r for _, r in rows]
    labels = np.array([r.label == "suspect" for r in records])
    assert opaque_fill_mask(records).tolist() == [False, False, True, False, False, False]
    tw = twin_summary(labels, scores, records, threshold=0.5, pfas=(0.01,))
    at = tw["at_pfa"]["0.01"]
    assert tw["n_clear_opaque_fill"] == 1 and at["false_alarms_opaque_fill"] == 0  # threshold above 0.90
    assert at["pd"]["flagged"] == 1  # the bar counts the opaque look-alike: only 0.95 is above it
    aside = tw["opaque_fill_aside"]["0.01"]
    assert 0.20 < aside["threshold"] <= 0.85 and aside["pd"]["flagged"] == 2
    assert aside["pfa_seen_non_twin"]["n"] == 2
    text = "\n".join(render_twin_section(tw))
    assert "Opaque look-alikes" in text and "set aside" in text
    assert "n_clear_opaque_fill" in twin_summary(labels, scores, records, None) and \
        "opaque_fill_aside" not in twin_summary(labels[[0, 1, 3]], scores[[0, 1, 3]], [records[i] for i in (0, 1, 3)],
                                                None)


def test_verdicts_are_scored_from_their_score_only(tmp_path):
    """`evaluate --verdicts`: station output lines → the same twin-aware numbers; a scan without a score
    (manual inspection) counts as flagged; a scan of the set without a verdict is refused."""
    from parcelscan.datasets.manifest import ManifestRecord, write_manifest
    from parcelscan.errors import ParcelscanError
    from parcelscan.training.evaluate import evaluate_verdicts

    data = tmp_path / "set"
    data.mkdir()
    records = [ManifestRecord(f"c{i}", {"low": "x.png", "high": "y.png"}, "clear", "none", None,
                              twin_of=["GeO2"] if i == 3 else []) for i in range(4)]
    records += [ManifestRecord(f"s{i}", {"low": "x.png", "high": "y.png"}, "suspect", "mail_pouch", "Nd2O3",
                               twin_of=[]) for i in range(3)]
    write_manifest(data / "manifest.jsonl", records)
    scores = {"c0": 0.1, "c1": 0.2, "c2": 0.3, "c3": 0.99, "s0": 0.9, "s1": None, "s2": 0.05}
    lines = [json.dumps({"scan_id": k, "score": v, "threshold": 0.5, "verdict": "x", "reasons": ["shield alarm"],
                         "model": {"name": "m", "version": "1", "sha256": "ab"}}) for k, v in scores.items()]
    (tmp_path / "v.jsonl").write_text("\n".join(lines) + "\n")
    run_dir, summary = evaluate_verdicts(tmp_path / "v.jsonl", data, project=tmp_path / "runs", n_boot=20)
    tw = summary["twin_aware"]
    assert summary["unanalysed_scans"] == 1 and tw["n_twin"] == 1
    assert tw["at_pfa"]["0.01"]["pd"]["flagged"] == 2  # s0 and the unanalysed s1; the twin c3 is not a clear here
    assert tw["stored"]["twin_alarm_rate"]["flagged"] == 1 and (run_dir / "report.md").is_file()
    (tmp_path / "short.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ParcelscanError, match="no verdict for 1"):
        evaluate_verdicts(tmp_path / "short.jsonl", data, project=tmp_path / "runs", n_boot=20)


def test_verdicts_report_station_flags_of_every_reason(tmp_path):
    """`evaluate --verdicts` also counts what a belt sees: any non-clear verdict is a flag, whatever its reason
    (a shield alarm on a clear parcel counts although its CNN score is low), split by twins and reason class."""
    from parcelscan.datasets.manifest import ManifestRecord, write_manifest
    from parcelscan.training.evaluate import evaluate_verdicts

    data = tmp_path / "set"
    data.mkdir()
    records = [ManifestRecord(f"c{i}", {"low": "x.png", "high": "y.png"}, "clear", "none", None,
                              twin_of=["GeO2"] if i == 3 else []) for i in range(4)]
    records += [ManifestRecord(f"s{i}", {"low": "x.png", "high": "y.png"}, "suspect", "mail_pouch", "Nd2O3",
                               twin_of=[]) for i in range(2)]
    write_manifest(data / "manifest.jsonl", records)
    verdicts = {"c0": ("clear", []), "c1": ("suspect", ["opaque"]), "c2": ("clear", []),
                "c3": ("suspect", ["powder", "twin"]), "s0": ("suspect", ["powder"]), "s1": ("clear", [])}
    lines = [json.dumps({"scan_id": k, "score": 0.1, "threshold": 0.5, "verdict": v, "reason_classes": c,
                         "model": {"name": "m", "version": "1", "sha256": "ab"}}) for k, (v, c) in verdicts.items()]
    (tmp_path / "v.jsonl").write_text("\n".join(lines) + "\n")
    run_dir, summary = evaluate_verdicts(tmp_path / "v.jsonl", data, project=tmp_path / "runs", n_boot=20)
    station = summary["station"]
    assert (station["clear_all"]["flagged"], station["clear_all"]["n"]) == (2, 4)
    assert (station["clear_non_twin"]["flagged"], station["clear_non_twin"]["n"]) == (1, 3)
    assert station["twins"]["flagged"] == 1 and station["suspects"]["flagged"] == 1
    assert station["clear_by_reason_class"]["opaque"]["flagged"] == 1
    assert station["suspects_by_scenario"]["mail_pouch"]["n"] == 2
    assert "Station flags" in (run_dir / "report.md").read_text()


def test_verdicts_report_the_declaration_measures(tmp_path):
    """`evaluate --verdicts` on a set with declarations: mismatch rates by how each parcel was declared, and the
    powder-mass error on pure-powder suspects with a missed estimate counted as 100 %."""
    from parcelscan.datasets.manifest import ManifestRecord, write_manifest
    from parcelscan.training.evaluate import LOWER_BOUND_ROW, MEASURED_ROW, evaluate_verdicts

    data = tmp_path / "set"
    data.mkdir()
    files = {"low": "x.png", "high": "y.png"}
    records = [ManifestRecord("c0", files, "clear", twin_of=[], declaration_honest=True),
               ManifestRecord("c1", files, "clear", twin_of=[], declaration_honest=True),
               ManifestRecord("c2", files, "clear", twin_of=[]),  # no declaration
               ManifestRecord("s0", files, "suspect", "mail_pouch", "Nd2O3", 100.0, 1.0, twin_of=[],
                              declaration_honest=False, declaration_names_twin=False),
               ManifestRecord("s1", files, "suspect", "water_bottle", "La2O3", 200.0, 1.0, twin_of=[],
                              declaration_honest=False, declaration_names_twin=True),
               ManifestRecord("s2", files, "suspect", "tile_ingredients", "CeO2", 50.0, 0.1, twin_of=[],
                              declaration_honest=False, declaration_names_twin=False)]
    write_manifest(data / "manifest.jsonl", records)
    rows = {"c0": ("consistent", None), "c1": ("mismatch", None), "c2": ("absent", None),
            "s0": ("mismatch", [60.0, 60.0]), "s1": ("consistent", []), "s2": ("consistent", [5.0])}
    lines = [json.dumps({"scan_id": k, "score": 0.1, "threshold": 0.5, "verdict": "clear", "powder_mass_g": m,
                         "powder_mass_lower_bound": None if m is None else [k == "s0" and i == 1
                                                                            for i in range(len(m))],
                         "declaration_check": {"status": status}, "model": {"name": "m", "version": "1"}})
             for k, (status, m) in rows.items()]
    (tmp_path / "v.jsonl").write_text("\n".join(lines) + "\n")
    run_dir, summary = evaluate_verdicts(tmp_path / "v.jsonl", data, project=tmp_path / "runs", n_boot=20)
    dc = summary["declaration"]
    assert dc["status_present"] == 6 and dc["n_declared"] == 5
    assert (dc["mismatch"]["clear_declared"]["flagged"], dc["mismatch"]["clear_declared"]["n"]) == (1, 2)
    assert (dc["mismatch"]["suspect_false_no_twin"]["flagged"], dc["mismatch"]["suspect_false_no_twin"]["n"]) == (1, 2)
    assert dc["mismatch"]["suspect_declared_as_twin"]["n"] == 1
    mass = dc["mass_error"]["all"]  # s0: |120 - 100| / 100 = 0.2; s1 without an estimate: 1.0; s2 is a mixture
    assert mass["n"] == 2 and mass["without_estimate"] == 1 and abs(mass["median"] - 0.6) < 1e-9
    # s0's second body is behind a partly stopped beam: its scan's grams are a lower bound, reported apart
    assert dc["mass_error"][LOWER_BOUND_ROW]["n"] == 1 and MEASURED_ROW not in dc["mass_error"]
    assert "Declaration check" in (run_dir / "report.md").read_text()
