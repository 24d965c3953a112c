"""DICOS Threat Detection Reports from ``inspect --tdr``: read back with pydicom and checked against the verdict,
the shield check and heatmap computed here, the README's attribute table, and the DX objects they reference
(read by the project's own DICOS reader). The model is the shipped default, the scans ``examples/scans``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag

from parcelscan.cli import main
from parcelscan.datasets.preprocess import heatmap_to_scan
from parcelscan.datasets.scans.dicos import DICOS_DX_FOR_PROCESSING, read_dicos, write_dicos
from parcelscan.datasets.scans.dicos_tdr import DICOS_TDR, PRIVATE_VERDICT_JSON, dx_reference, write_tdr
from parcelscan.datasets.scans.dicos_tdr import UNKNOWN as TDR_UNKNOWN
from parcelscan.datasets.scans.readers import discover_scans, load_scan
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.opaque import check_opaque
from parcelscan.inference.tdr import HEAT_ALARM_LEVEL, TILE_DESCRIPTION, build_report

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "scans"
README = ROOT / "README.md"
MODEL = ROOT / "model" / "default" / "parcelscan-dual.onnx"
PRIVATE = (0x0011, "PARCELSCAN 1")


# --- helpers ---------------------------------------------------------------------------------------------
def _inspect(*args) -> tuple[int, list[dict], str]:
    """The real command line: exit code, verdict lines, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["inspect", "--model", str(MODEL), "--threads", "1", *map(str, args)])
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.strip()], err.getvalue()


def _tdr(directory: Path, scan_id: str) -> pydicom.Dataset:
    return pydicom.dcmread(directory / f"{scan_id}_tdr.dcs")


def _verdict_json(ds: pydicom.Dataset) -> dict:
    return json.loads(ds.private_block(*PRIVATE)[PRIVATE_VERDICT_JSON].value)


def _pto_mask(item: pydicom.Dataset, shape: tuple[int, int]) -> np.ndarray:
    """A PTO's region as a scan-sized mask, decoded from its ROI bitmap (row-major, LSB first)."""
    roi = item.PTORepresentationSequence[0].ThreatROIVoxelSequence[0]
    x, y, z = (float(v) for v in roi.ThreatROIBase)
    width, height, depth = (float(v) for v in roi.ThreatROIExtents)
    assert z == 0 and depth == 0 and width > 0 and height > 0
    x, y, width, height = int(x), int(y), int(width), int(height)
    bits = np.unpackbits(np.frombuffer(roi.ThreatROIBitmap, np.uint8), bitorder="little")
    assert bits[width * height:].sum() == 0  # padding only after the region's bits
    box = bits[:width * height].reshape(height, width).astype(bool)
    # the box is tight: every edge row and column holds a region pixel
    assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
    mask = np.zeros(shape, dtype=bool)
    mask[y:y + height, x:x + width] = box
    return mask


def _dicom_dt(scanned_at: str) -> str:
    moment = datetime.fromisoformat(scanned_at.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y%m%d%H%M%S.%f") + "+0000"


def _readme_table() -> list[dict[str, str]]:
    """Rows of the README's DICOS TDR attribute table (continuation rows inherit the attribute name)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("### DICOS Threat Detection Report")
    section = text[start:text.index("\n### ", start + 10)]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows, name = [], ""
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        row = dict(zip(header, cells, strict=True))
        name = row["Attribute"] or name
        row["Attribute"] = name
        rows.append(row)
    return rows


def _tag(text: str) -> int:
    group, element = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", text).groups()
    return int(group, 16) << 16 | int(element, 16)


def _levels(ds: pydicom.Dataset) -> dict[str, list[pydicom.Dataset]]:
    """The README's 'Where' levels → the datasets at that level in one report."""
    ptos = list(ds.get("ThreatSequence", []))
    representations = [r for p in ptos for r in p.PTORepresentationSequence]
    return {"report": [ds], "PTO": ptos,
            "assessment": [a for p in ptos for a in p.ATDAssessmentSequence],
            "representation": representations,
            "reference": [r for rep in representations for r in rep.ReferencedInstanceSequence],
            "ROI": [r for rep in representations for r in rep.ThreatROIVoxelSequence]}


def _keywords(ds: pydicom.Dataset) -> set[str]:
    """Every standard keyword written in a dataset, nested sequences included."""
    found = set()
    for element in ds:
        if element.tag.is_private:
            continue
        found.add(element.keyword)
        if element.VR == "SQ":
            for item in element.value:
                found |= _keywords(item)
    return found


# --- the station run on the example scans -----------------------------------------------------------------
@pytest.fixture(scope="module")
def station(tmp_path_factory):
    """``inspect examples/scans --tdr OUT`` once, plus what the test computes itself from the same scans."""
    out = tmp_path_factory.mktemp("tdr")
    code, verdicts, err = _inspect(EXAMPLES, "--tdr", out, "--station", "sort-01")
    captured: dict[str, tuple] = {}
    # the same model, threads and batches as the command (batch composition can move a float's last bits)
    inspector = Inspector(MODEL, threads=1)
    inspector.on_outputs = lambda verdict, outputs: captured.__setitem__(verdict.scan_id, (verdict, outputs))
    list(inspector.inspect_many(discover_scans([EXAMPLES]), batch=8, workers=1))
    return {"out": out, "code": code, "verdicts": {v["scan_id"]: v for v in verdicts}, "err": err,
            "captured": captured}


def test_every_scan_has_a_report_that_states_its_verdict(station):
    verdicts = station["verdicts"]
    assert len(verdicts) == 7 and station["code"] == 1  # suspects, nothing unanalysed
    kinds = {v["verdict"] for v in verdicts.values()}
    assert kinds == {"clear", "suspect"}
    for scan_id, verdict in verdicts.items():
        ds = _tdr(station["out"], scan_id)
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == DICOS_TDR
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "TDR" and ds.TDRType == "MACHINE" and ds.OOIType == "CARGO"
        assert ds.AlarmDecision == {"clear": "CLEAR", "suspect": "ALARM"}[verdict["verdict"]]
        assert ds.AbortFlag == "SUCCESS" and "AbortReason" not in ds
        assert ds.AlarmDecisionTime == _dicom_dt(verdict["scanned_at"])
        assert ds.StationName == "sort-01"
        model = verdict["model"]
        assert list(ds.ThreatDetectionAlgorithmAndVersion) == [
            "parcelscan", f"{model['name']} {model['version']}", "model_sha256", model["sha256"],
            "policy_sha256", verdict["policy_sha256"], "threshold", f"{verdict['threshold']:.6g}"]
        assert ds.TotalProcessingTime == pytest.approx(verdict["latency_ms"], rel=1e-3, abs=0.01)
        ptos = list(ds.get("ThreatSequence", []))
        assert ds.NumberOfTotalObjects == len(ptos) and ds.NumberOfAlarmObjects == len(ptos)
        assert (len(ptos) > 0) == (verdict["verdict"] == "suspect")
        assert [p.PotentialThreatObjectID for p in ptos] == list(range(1, len(ptos) + 1))
        stored = _verdict_json(ds)
        assert {k: v for k, v in stored.items() if k != "latency_ms"} == \
            {k: v for k, v in verdict.items() if k != "latency_ms"}


def test_regions_are_the_heatmap_and_shield_regions_of_the_scan(station):
    """Powder PTOs cover exactly the pixels where the model's heatmap ≥ 0.5 (when the score alarmed); shield
    PTOs exactly the opaque regions ``check_opaque`` finds; every box, bitmap, centre and probability agrees."""
    checked = {"powder": 0, "shield": 0}
    for scan_id, verdict in station["verdicts"].items():
        if verdict["verdict"] != "suspect":
            continue
        ds = _tdr(station["out"], scan_id)
        _, outputs = station["captured"][scan_id]
        scan = load_scan(EXAMPLES / f"{scan_id}_low.png")
        shape = scan.low.shape
        heat = heatmap_to_scan(outputs.tile_heatmaps, outputs.prepared)
        opaque = check_opaque(scan)
        powder, shield = np.zeros(shape, bool), np.zeros(shape, bool)
        n_shield = 0
        for item in ds.ThreatSequence:
            assessment = item.ATDAssessmentSequence[0]
            mask = _pto_mask(item, shape)
            representation = item.PTORepresentationSequence[0]
            rows, cols = np.nonzero(mask)
            assert list(representation.CenterOfPTO) == pytest.approx([cols.mean(), rows.mean(), 0], abs=1e-3)
            corners = [cols.min(), rows.min(), 0, cols.max() + 1, rows.max() + 1, 0]
            assert list(representation.BoundingPolygon) == corners
            if assessment.ATDAbilityAssessment == "SHIELD":
                assert (assessment.ThreatCategory, assessment.ATDAssessmentFlag) == ("ANOMALY", "UNKNOWN")
                assert "ATDAssessmentProbability" not in assessment
                assert not (shield & mask).any()
                shield |= mask
                n_shield += 1
            else:
                assert (assessment.ThreatCategory, assessment.ATDAbilityAssessment, assessment.ATDAssessmentFlag) \
                    == ("CONTRABAND", "NO_INTERFERENCE", "THREAT")
                assert assessment.ATDAssessmentProbability == pytest.approx(float(heat[mask].max()), abs=1e-6)
                powder |= mask
        score_alarm = verdict["score"] >= verdict["threshold"]
        assert any(r.startswith("shield alarm") for r in verdict["reasons"]) == opaque.alarm
        np.testing.assert_array_equal(shield, opaque.mask)
        assert n_shield == opaque.regions
        np.testing.assert_array_equal(powder, (heat >= HEAT_ALARM_LEVEL) if score_alarm else np.zeros(shape, bool))
        checked["powder"] += int(powder.any())
        checked["shield"] += n_shield
    assert checked["powder"] >= 1 and checked["shield"] >= 2  # the examples exercise both kinds


def test_a_shield_only_alarm_reports_shield_regions_alone(station):
    shield_only = [v for v in station["verdicts"].values() if v["verdict"] == "suspect" and v["score"] < v["threshold"]]
    assert shield_only  # sim31-000415 and -000592: suspect by the shield alarm alone
    for verdict in shield_only:
        ds = _tdr(station["out"], verdict["scan_id"])
        assessments = [p.ATDAssessmentSequence[0] for p in ds.ThreatSequence]
        assert {(a.ThreatCategory, a.ATDAbilityAssessment, a.ATDAssessmentFlag) for a in assessments} == \
            {("ANOMALY", "SHIELD", "UNKNOWN")}


def test_referenced_dx_pair_is_the_scan_and_readable_by_our_reader(station):
    for scan_id in station["verdicts"]:
        ds = _tdr(station["out"], scan_id)
        low_path, high_path = station["out"] / f"{scan_id}_low.dcs", station["out"] / f"{scan_id}_high.dcs"
        dx = [pydicom.dcmread(p, stop_before_pixels=True) for p in (low_path, high_path)]
        assert ds.StudyInstanceUID == dx[0].StudyInstanceUID == dx[1].StudyInstanceUID
        assert (ds.StudyDate, ds.StudyTime) == (dx[0].StudyDate, dx[0].StudyTime)  # one scan, one scan date
        assert ds.PatientID == dx[0].PatientID
        for item in ds.get("ThreatSequence", []):
            refs = item.PTORepresentationSequence[0].ReferencedInstanceSequence
            assert [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in refs] == \
                [(DICOS_DX_FOR_PROCESSING, d.SOPInstanceUID) for d in dx]
        original, written = load_scan(EXAMPLES / f"{scan_id}_low.png"), read_dicos(low_path)
        np.testing.assert_array_equal(written.low, original.low)
        np.testing.assert_array_equal(written.high, original.high)


def test_readme_table_is_the_dictionary_and_the_files(station):
    rows = _readme_table()
    documented = set()
    for row in rows:
        if row["Keyword"] == "—":
            continue
        tag = _tag(row["Tag"])
        assert keyword_for_tag(tag) == row["Keyword"], row
        assert dictionary_VR(tag) == row["VR"], row
        documented.add(row["Keyword"])
    reports = [_tdr(station["out"], scan_id) for scan_id in station["verdicts"]]
    for ds in reports:
        assert _keywords(ds) <= documented, _keywords(ds) - documented  # nothing written goes undocumented
        assert ds.private_block(*PRIVATE)[PRIVATE_VERDICT_JSON].VR == "UT"
        levels = _levels(ds)
        for row in rows:
            if row["Keyword"] == "—" or row["When"] == "if known":
                continue
            required = row["When"] == "always" or (row["When"] == "ALARM" and ds.AlarmDecision == "ALARM") or \
                (row["When"] == "ABORT" and ds.AbortFlag == "ABORT")
            for level in levels[row["Where"]]:
                assert (row["Keyword"] in level) == required, (row, ds.AlarmDecision)
    assert any(ds.AlarmDecision == "ALARM" for ds in reports) and any(ds.AlarmDecision == "CLEAR" for ds in reports)


def test_dicos_input_is_referenced_by_its_own_uids(tmp_path):
    source, out = tmp_path / "dicos", tmp_path / "tdr"
    for scan_id in ("sim31-000074", "sim31-000141"):
        write_dicos(load_scan(EXAMPLES / f"{scan_id}_low.png"), source)
    code, verdicts, _ = _inspect(source, "--tdr", out)
    assert code == 1 and len(verdicts) == 2
    assert sorted(p.name for p in out.iterdir()) == ["sim31-000074_tdr.dcs", "sim31-000141_tdr.dcs"]  # no DX copy
    for verdict in verdicts:
        ds = _tdr(out, verdict["scan_id"])
        sources = [pydicom.dcmread(source / f"{verdict['scan_id']}_{e}.dcs", stop_before_pixels=True)
                   for e in ("low", "high")]
        assert ds.StudyInstanceUID == sources[0].StudyInstanceUID and ds.PatientID == sources[0].PatientID
        for item in ds.get("ThreatSequence", []):
            refs = item.PTORepresentationSequence[0].ReferencedInstanceSequence
            assert [r.ReferencedSOPInstanceUID for r in refs] == [s.SOPInstanceUID for s in sources]
    assert _tdr(out, "sim31-000074").AlarmDecision == "ALARM"


def test_manual_inspection_is_an_abort_with_its_reason(tmp_path, monkeypatch):
    scans, out = tmp_path / "scans", tmp_path / "tdr"
    scans.mkdir()
    shutil.copy(EXAMPLES / "sim31-000141_low.png", scans / "half_low.png")  # its high image is missing
    for energy in ("low", "high"):
        data = (EXAMPLES / f"sim31-000077_{energy}.png").read_bytes()
        (scans / f"torn_{energy}.png").write_bytes(data[: len(data) // 2] if energy == "low" else data)
    shutil.copy(EXAMPLES / "sim31-000077_rgb.png", tmp_path / "operator.png")  # RGB given to the dual model
    code, verdicts, _ = _inspect(scans, tmp_path / "operator.png", "--tdr", out)
    assert code == 2
    reasons = {"half": "INCOMPLETE_SCAN", "torn": "UNKNOWN_DATATYPE", "operator": "UNKNOWN_DATATYPE"}
    assert {v["scan_id"]: v["verdict"] for v in verdicts} == dict.fromkeys(reasons, "manual_inspection")
    for verdict in verdicts:
        ds = _tdr(out, verdict["scan_id"])
        assert (ds.AbortFlag, ds.AbortReason, ds.AlarmDecision) == ("ABORT", reasons[verdict["scan_id"]], "UNKNOWN")
        assert ds.NumberOfTotalObjects == 0 and "ThreatSequence" not in ds
        assert _verdict_json(ds)["error"] == verdict["error"]

    # read and preprocessed, but the model fails: FAILED_RECON
    inspector = Inspector(MODEL, threads=1)
    reports = []
    inspector.on_outputs = lambda verdict, outputs: reports.append(build_report(verdict, outputs, []))

    def broken(_tiles):
        raise RuntimeError("device lost")

    monkeypatch.setattr(inspector.session, "run", broken)
    verdict = inspector.inspect(EXAMPLES / "sim31-000141_low.png")
    assert verdict.verdict == "manual_inspection"
    assert (reports[0].alarm_decision, reports[0].abort_reason) == (TDR_UNKNOWN, "FAILED_RECON")


def test_score_alarm_without_a_heatmap_region_reports_the_top_tile(tmp_path):
    """sim31-000141 scores ~0.003 (the shipped default since session 15; earlier ones 0.001-0.009): with --threshold
    0.0001 it is suspect, and no heatmap pixel reaches 0.5."""
    code, verdicts, _ = _inspect(EXAMPLES / "sim31-000141_low.png", "--threshold", "0.0001", "--tdr", tmp_path)
    assert code == 1 and verdicts[0]["verdict"] == "suspect"
    ds = _tdr(tmp_path, "sim31-000141")
    (item,) = ds.ThreatSequence
    assessment = item.ATDAssessmentSequence[0]
    assert assessment.ThreatCategoryDescription == TILE_DESCRIPTION
    assert assessment.ATDAssessmentProbability == pytest.approx(verdicts[0]["score"], rel=1e-6)
    roi = item.PTORepresentationSequence[0].ThreatROIVoxelSequence[0]
    width, height = int(roi.ThreatROIExtents[0]), int(roi.ThreatROIExtents[1])
    mask = _pto_mask(item, load_scan(EXAMPLES / "sim31-000141_low.png").low.shape)
    assert mask.sum() == width * height  # the whole tile, in scan pixels


@pytest.mark.parametrize("lower_bound", [False, True])
def test_mass_and_policy_are_written_when_the_verdict_has_them(tmp_path, lower_bound):
    """A measured mass goes on the powder PTO; a lower bound (the beam stopped over part of the body) does not:
    DICOS's Mass cannot say "at least"."""
    captured = []
    inspector = Inspector(MODEL, threads=1)
    inspector.on_outputs = lambda verdict, outputs: captured.append((verdict, outputs))
    verdict = inspector.inspect(EXAMPLES / "sim31-000286_low.png")  # a powder alarm and an opaque region
    _, outputs = captured[0]
    verdict.policy_sha256 = "ab" * 32  # the station policy's (inference.policy)
    verdict.powder_mass_g = [179.5]  # one body (inference.declaration)
    verdict.powder_mass_lower_bound = [lower_bound]
    images = [pydicom.dcmread(p, stop_before_pixels=True) for p in write_dicos(outputs.scan, tmp_path)]
    report = build_report(verdict, outputs, [dx_reference(tmp_path / f"sim31-000286_{e}.dcs") for e in ("low", "high")])
    ds = pydicom.dcmread(write_tdr(report, tmp_path / "r_tdr.dcs"))
    assert list(ds.ThreatDetectionAlgorithmAndVersion)[-4:-2] == ["policy_sha256", "ab" * 32]
    masses = {p.ATDAssessmentSequence[0].ThreatCategory: p.PTORepresentationSequence[0].get("Mass")
              for p in ds.ThreatSequence}
    assert masses["ANOMALY"] is None
    assert masses["CONTRABAND"] is None if lower_bound else masses["CONTRABAND"] == pytest.approx(179.5)
    assert ds.StudyInstanceUID == images[0].StudyInstanceUID


def test_a_report_that_cannot_be_written_leaves_the_verdict_and_the_batch(tmp_path):
    (tmp_path / "sim31-000641_tdr.dcs").mkdir()  # a directory where the report should go: the rename fails
    # --threshold 0.999: both scans clear whatever the shipped model scores (sim31-000641 has no opaque region)
    code, verdicts, err = _inspect(EXAMPLES / "sim31-000641_low.png", EXAMPLES / "sim31-000141_low.png",
                                   "--threshold", "0.999", "--tdr", tmp_path)
    assert code == 0 and [v["verdict"] for v in verdicts] == ["clear", "clear"]
    assert any(r.startswith("DICOS TDR not written") for r in verdicts[0]["reasons"])
    assert "sim31-000641: DICOS TDR not written" in err
    assert _tdr(tmp_path, "sim31-000141").AlarmDecision == "CLEAR"


def test_tdr_directory_that_cannot_be_created_is_a_command_error(tmp_path):
    (tmp_path / "file").write_text("x")
    code, verdicts, err = _inspect(EXAMPLES / "sim31-000077_low.png", "--tdr", tmp_path / "file" / "sub")
    assert code == 2 and verdicts == [] and "--tdr" in err


@pytest.mark.parametrize("version", ["0.2.0+dual.e3", "0.2.0+dual.e10"])  # element lengths of both parities
@pytest.mark.parametrize("threshold", [0.8601, None])
def test_algorithm_values_read_back_within_lo(tmp_path, version, threshold):
    """An odd-length element is padded with one space that a reader counts into its last value: were that a 64-character
    digest, it would read as 65, over LO's limit (pydicom warns; a strict reader refuses). The threshold comes last."""
    import warnings

    from pydicom.dataset import Dataset, FileMetaDataset

    from parcelscan.datasets.scans.dicos_tdr import Algorithm

    values = Algorithm("dual", version, "ab" * 32, threshold, "cd" * 32).values()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.ThreatDetectionAlgorithmAndVersion = values
    ds.save_as(tmp_path / "a.dcs", enforce_file_format=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = list(pydicom.dcmread(tmp_path / "a.dcs", force=True).ThreatDetectionAlgorithmAndVersion)
    assert read == values and read[-2:] == ["threshold", "none" if threshold is None else "0.8601"]
