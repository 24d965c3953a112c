"""Dataset tools: `data check` (duplicates, leakage, corruption), `data split`, `data import`, `data stats`."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from parcelscan.cli import main
from parcelscan.datasets.check import check_dataset
from parcelscan.datasets.datatools import file_sha256, load_record_scan
from parcelscan.datasets.manifest import ManifestRecord, append_records, read_manifest, write_manifest
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.scans.readers import convert_scan, load_scan
from parcelscan.datasets.scans.scanfile import Scan, write_png, write_station_scan
from parcelscan.datasets.split import assign_splits

SCENARIOS = ("tile_adhesive", "tin_can", "bag_in_clothes")


def make_dataset(root: Path, model, n_parcels: int = 30, rows: int = 72, cols: int = 64, seed: int = 0,
                 views_every: int = 5) -> list[ManifestRecord]:
    """Small simulated parcels (cardboard + water + Nd2O3 powder) written in the station format.

    Every ``views_every``-th parcel is scanned twice (two scans, one parcel_id)."""
    rng = np.random.default_rng(seed)
    materials = [get_material("cardboard"), get_material("water"), get_material("Nd2O3")]
    records = []
    for p in range(n_parcels):
        suspect = p % 2 == 1
        scenario = SCENARIOS[(p // 2) % len(SCENARIOS)] if suspect else "none"
        for view in range(2 if p % views_every == 0 else 1):
            scan_id = f"p{p:03d}v{view}"
            areal = np.zeros((3, rows, cols), np.float32)
            areal[0, 4:-4, 4:-4] = 0.3
            r, c = rng.integers(8, rows - 24), rng.integers(8, cols - 24)
            areal[1, r:r + 16, c:c + 16] = rng.uniform(1, 5)
            mask = np.zeros((rows, cols), np.uint8)
            if suspect:
                r, c = rng.integers(8, rows - 20), rng.integers(8, cols - 20)
                areal[2, r:r + 12, c:c + 12] = 0.3
                mask[r:r + 12, c:c + 12] = 255
            low, high = model.scan(materials, areal, rng)
            files = write_station_scan(Scan(scan_id, low, high, {"pixel_pitch_mm": 1.0}), root)
            mask_name = f"{scan_id}_mask.png"
            write_png(root / mask_name, mask)
            records.append(ManifestRecord(scan_id, files, "suspect" if suspect else "clear", scenario,
                                          "Nd2O3" if suspect else None, 50.0 if suspect else None, None,
                                          mask_name, None, f"parcel{p:03d}"))
    append_records(root / "manifest.jsonl", records)
    return records


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model) -> Path:
    root = tmp_path_factory.mktemp("data") / "set"
    root.mkdir()
    make_dataset(root, model)
    assert main(["data", "split", str(root), "--val", "0.2", "--test", "0.2", "--seed", "1"]) == 0
    return root


@pytest.fixture
def copy_of(dataset, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(dataset, target)
    return target


# --- check --------------------------------------------------------------------------------------------
def test_check_passes_a_clean_split_dataset(dataset, capsys):
    assert main(["data", "check", str(dataset), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 error(s)" in out
    assert "split" in out and "train" in out and "test" in out and "tile_adhesive" in out


def test_check_finds_a_planted_duplicate_across_splits(copy_of, capsys):
    records = read_manifest(copy_of)
    a = next(r for r in records if r.split == "train" and r.label == "clear")
    b = next(r for r in records if r.split == "test" and r.label == "clear")
    # b's images are replaced by a re-encoded copy of a's pixels (different file bytes, same image)
    for role in ("low", "high"):
        write_png(copy_of / b.files[role], cv2.imread(str(copy_of / a.files[role]), cv2.IMREAD_UNCHANGED),
                  compression=9)
    assert main(["data", "check", str(copy_of), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "duplicate image across splits" in ln)
    assert a.scan_id in line and b.scan_id in line and "FAILED" in out


def test_duplicate_within_one_split_is_a_warning(copy_of):
    records = read_manifest(copy_of)
    a, b = [r for r in records if r.split == "train" and r.label == "clear"][:2]
    for role in ("low", "high"):
        shutil.copyfile(copy_of / a.files[role], copy_of / b.files[role])
    report = check_dataset(copy_of, workers=1)
    assert report.ok
    assert any("duplicate image within split train" in w and a.scan_id in w and b.scan_id in w
               for w in report.warnings)


def test_check_finds_a_planted_parcel_leak(copy_of, capsys):
    records = read_manifest(copy_of)
    a = next(r for r in records if r.split == "train")
    b = next(r for r in records if r.split == "val")
    b.parcel_id = a.parcel_id
    write_manifest(copy_of / "manifest.jsonl", records)
    assert main(["data", "check", str(copy_of), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "parcel leak" in ln)
    assert a.parcel_id in line and a.scan_id in line and b.scan_id in line


def test_check_reports_corrupt_files_missing_pairs_and_bit_depth(copy_of, capsys):
    records = read_manifest(copy_of)
    truncated, missing, eight_bit, bad_mask = records[0], records[1], records[2], records[3]
    data = (copy_of / truncated.files["low"]).read_bytes()
    (copy_of / truncated.files["low"]).write_bytes(data[: len(data) // 2])
    (copy_of / missing.files["high"]).unlink()
    low8 = np.full((72, 64), 200, np.uint8)
    write_png(copy_of / eight_bit.files["low"], low8)
    write_png(copy_of / bad_mask.mask, np.zeros((10, 10), np.uint8))
    lines = ["{not json", json.dumps({"scan_id": "x", "files": {}, "label": "maybe"})]
    with open(copy_of / "manifest.jsonl", "a") as handle:
        handle.write("\n".join(lines) + "\n")
    assert main(["data", "check", str(copy_of), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    errors = out[out.index("errors ("):out.index("warnings (") if "warnings (" in out else None]

    def error_for(scan_id: str) -> str:
        return next(ln for ln in errors.splitlines() if ln.strip().startswith(f"{scan_id}:"))

    assert "unreadable" in error_for(truncated.scan_id)
    assert "missing pair half" in error_for(missing.scan_id) and missing.files["high"] in error_for(missing.scan_id)
    assert "16-bit" in error_for(eight_bit.scan_id) and "8-bit" in error_for(eight_bit.scan_id)
    assert "mask" in error_for(bad_mask.scan_id) and "10x10" in error_for(bad_mask.scan_id)
    assert "not valid JSON" in errors and "label must be one of" in errors


def test_check_flags_a_clear_scan_with_powder_in_its_mask(copy_of):
    records = read_manifest(copy_of)
    clear = next(r for r in records if r.label == "clear")
    write_png(copy_of / clear.mask, np.full((72, 64), 255, np.uint8))
    report = check_dataset(copy_of, workers=1)
    assert any(clear.scan_id in e and "labelled clear" in e for e in report.errors)


def test_check_refuses_a_sidecar_that_states_another_size(copy_of):
    """The station's rule (``check_sidecar_shape``): a resampled scan whose sidecar was copied is not a scan of that
    size. The record's own sidecar (the manifest's ``files.sidecar``) is held to it as well."""
    records = read_manifest(copy_of)
    record = records[0]
    sidecar_path = copy_of / record.files["sidecar"]
    sidecar = json.loads(sidecar_path.read_text())
    sidecar_path.write_text(json.dumps({**sidecar, "channels": sidecar["channels"] * 2}))
    report = check_dataset(copy_of, workers=1)
    assert any(record.scan_id in e and f"the sidecar says channels {sidecar['channels'] * 2} but the images have "
               f"{sidecar['channels']}" in e for e in report.errors), report.errors
    assert not any(r.scan_id in " ".join(report.errors) for r in records[1:])


def test_check_without_manifest_is_a_user_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err


# --- split --------------------------------------------------------------------------------------------
def _records(n_parcels: int = 400, seed: int = 0) -> list[ManifestRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_parcels):
        suspect = rng.random() < 0.4
        scenario = SCENARIOS[rng.integers(len(SCENARIOS))] if suspect else "none"
        for v in range(int(rng.integers(1, 4))):
            records.append(ManifestRecord(f"s{p}_{v}", {"low": "a", "high": "b"}, "suspect" if suspect else "clear",
                                          scenario, parcel_id=f"P{p}"))
    return records


def test_split_is_deterministic_group_pure_and_stratified():
    records = _records()
    first = [r.split for r in assign_splits(_records(), 0.1, 0.2, seed=7)]
    again = [r.split for r in assign_splits(_records(), 0.1, 0.2, seed=7)]
    other = [r.split for r in assign_splits(_records(), 0.1, 0.2, seed=8)]
    assert first == again and first != other
    # independent of the order of the manifest
    shuffled = list(reversed(_records()))
    assign_splits(shuffled, 0.1, 0.2, seed=7)
    assert {r.scan_id: r.split for r in shuffled} == {r.scan_id: s for r, s in zip(records, first, strict=True)}

    assign_splits(records, 0.1, 0.2, seed=7)
    parcels = defaultdict(set)
    for r in records:
        parcels[r.parcel_id].add(r.split)
    assert all(len(s) == 1 for s in parcels.values())  # group-pure
    strata = defaultdict(Counter)
    for r in records:
        strata[(r.label, r.scenario)][r.split] += 1
    for counts in strata.values():  # each (label, scenario) stratum near 70/10/20 (parcels of 1–3 scans)
        total = sum(counts.values())
        assert abs(counts["test"] / total - 0.2) < 0.05
        assert abs(counts["val"] / total - 0.1) < 0.05


def test_split_keeps_existing_assignments_and_new_views_join_their_parcel():
    records = assign_splits(_records(200), 0.1, 0.1, seed=1)
    before = {r.scan_id: r.split for r in records}
    test_parcel = next(r.parcel_id for r in records if r.split == "test")
    records.append(ManifestRecord("new_view", {"low": "a", "high": "b"}, "clear", parcel_id=test_parcel))
    records.extend(ManifestRecord(f"new{i}", {"low": "a", "high": "b"}, "clear", parcel_id=f"N{i}") for i in range(50))
    assign_splits(records, 0.1, 0.1, seed=1)
    assert all(r.split == before[r.scan_id] for r in records if r.scan_id in before)
    assert next(r for r in records if r.scan_id == "new_view").split == "test"
    assert Counter(r.split for r in records if r.scan_id.startswith("new"))["train"] > 30


def test_split_cli_rewrites_the_manifest_atomically_and_reproducibly(copy_of, capsys):
    path = copy_of / "manifest.jsonl"
    assert main(["data", "split", str(copy_of), "--val", "0.2", "--test", "0.2", "--seed", "3", "--reassign"]) == 0
    first = path.read_bytes()
    assert main(["data", "split", str(copy_of), "--val", "0.2", "--test", "0.2", "--seed", "3", "--reassign"]) == 0
    assert path.read_bytes() == first
    out = capsys.readouterr().out
    assert "train" in out and "parcels" in out
    assert not list(copy_of.glob(".manifest.jsonl.*"))  # no temp file left
    assert main(["data", "split", str(copy_of), "--val", "0.6", "--test", "0.5"]) == 2


# --- stats --------------------------------------------------------------------------------------------
def test_stats_reports_counts_and_tiles(dataset, capsys):
    assert main(["data", "stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "tile_adhesive" in out and "total model tiles: 36" in out  # 36 scans, one tile each


# --- import -------------------------------------------------------------------------------------------
def _station_files(root: Path, scan_id: str) -> list[Path]:
    return [root / f"{scan_id}{suffix}" for suffix in ("_low.png", "_high.png", ".json")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, dataset) -> dict[str, Path]:
    """Outside data in every layout, made from the simulated data set's scans."""


    base = tmp_path_factory.mktemp("sources")
    records = read_manifest(dataset)
    clear = [r for r in records if r.label == "clear"]
    suspect = [r for r in records if r.label == "suspect"]

    folder = base / "imagefolder"
    (folder / "clear").mkdir(parents=True)
    (folder / "suspect" / "batch2").mkdir(parents=True)
    for path in _station_files(dataset, clear[0].scan_id):
        shutil.copy(path, folder / "clear")
    for path in _station_files(dataset, "p001v0"):  # a suspect by its sidecar, filed under clear/
        shutil.copy(path, folder / "clear")
    sidecar = json.loads((folder / "clear" / "p001v0.json").read_text())
    sidecar["labels"] = {"label": "suspect", "scenario": "tin_can", "material": "Nd2O3"}
    (folder / "clear" / "p001v0.json").write_text(json.dumps(sidecar))
    convert_scan(dataset / clear[1].files["low"], "tiff", folder / "clear")
    rgb = np.dstack([np.full((60, 80), v, np.uint8) for v in (230, 140, 40)])
    cv2.imwrite(str(folder / "clear" / "photo.jpg"), rgb[..., ::-1])
    convert_scan(dataset / suspect[0].files["low"], "dicos", folder / "suspect")
    for path in _station_files(dataset, suspect[1].scan_id):
        shutil.copy(path, folder / "suspect" / "batch2")
    write_png(folder / "suspect" / "xray.png", rgb)

    table = base / "csv"
    table.mkdir()
    for path in _station_files(dataset, suspect[2].scan_id):
        shutil.copy(path, table)
    shutil.copy(folder / "clear" / "photo.jpg", table / "img one.jpg")
    rows = [["path", "label", "scenario", "parcel_id"],
            [f"{suspect[2].scan_id}_high.png", "suspect", "tin_can", "P-77"],
            ["img one.jpg", "clear", "", ""]]
    with open(table / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)

    station = base / "station"
    station.mkdir()
    for record in suspect[3:5] + clear[2:4]:
        for path in _station_files(dataset, record.scan_id):
            shutil.copy(path, station)
        sidecar = json.loads((station / f"{record.scan_id}.json").read_text())
        sidecar["labels"] = {"label": record.label, "scenario": record.scenario, "material": record.material,
                             "mass_g": record.mass_g, "parcel_id": record.parcel_id}
        (station / f"{record.scan_id}.json").write_text(json.dumps(sidecar))
        shutil.copy(dataset / record.mask, station / f"{record.scan_id}_mask.png")
    return {"imagefolder": folder, "csv": table / "labels.csv", "station": station}


def test_import_imagefolder(sources, tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["data", "import", str(sources["imagefolder"]), "--out", str(out)]) == 0
    assert "imported 7 scan(s) into" in capsys.readouterr().out
    records = {r.scan_id: r for r in read_manifest(out)}
    assert len(records) == 7
    kinds = Counter((r.label, r.kind) for r in records.values())
    assert kinds == {("clear", "dual_energy"): 3, ("clear", "pseudo_color"): 1, ("suspect", "dual_energy"): 2,
                     ("suspect", "pseudo_color"): 1}
    for record in records.values():
        assert record.source == "station" and record.split is None
        original = Path(record.provenance["original_path"])
        assert record.provenance["sha256"]["main"] == file_sha256(original)
        assert record.provenance["importer"] == "imagefolder" and record.provenance["imported_at"].endswith("Z")
        imported = load_record_scan(record, out)
        source = load_scan(original)
        if record.kind == "dual_energy":  # copies and conversions are pixel-exact
            assert np.array_equal(imported.low, source.low) and np.array_equal(imported.high, source.high)
            assert imported.meta.get("pixel_pitch_mm") == 1.0
        else:
            assert np.array_equal(imported.rgb, source.rgb) and record.files["rgb"].endswith("_rgb.png")
            assert json.loads((out / record.files["sidecar"]).read_text())["kind"] == "pseudo_color"
    relabelled = next(r for r in records.values() if r.scan_id == "p001v0")  # sidecar says suspect, folder clear
    assert relabelled.label == "clear" and relabelled.scenario == "none" and relabelled.material is None
    photo = next(r for r in records.values() if r.scan_id == "photo")
    assert photo.label == "clear" and photo.scenario == "none"
    assert next(r for r in records.values() if r.scan_id == "xray").scenario == "unknown"
    # importing again adds nothing; the result passes `data check`
    assert main(["data", "import", str(sources["imagefolder"]), "--out", str(out)]) == 0
    assert "7 already imported" in capsys.readouterr().out
    assert len(read_manifest(out)) == 7
    assert main(["data", "check", str(out), "--workers", "1"]) == 0


def test_import_csv(sources, tmp_path, capsys):
    out = tmp_path / "fromcsv"
    assert main(["data", "import", str(sources["csv"]), "--out", str(out)]) == 0
    records = read_manifest(out)
    assert [(r.label, r.kind, r.scenario, r.parcel_id) for r in records] == [
        ("suspect", "dual_energy", "tin_can", "P-77"), ("clear", "pseudo_color", "none", "img-one")]
    assert records[1].scan_id == "img-one"  # a safe id from "img one.jpg"
    assert records[0].provenance["importer"] == "csv"
    bad = sources["csv"].with_name("bad.csv")
    bad.write_text("path,label\nimg one.jpg,maybe\n")
    assert main(["data", "import", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "bad.csv:2: label must be one of" in capsys.readouterr().err


def test_import_station_folder_with_sidecar_labels_and_masks(sources, tmp_path, capsys):
    out = tmp_path / "fromstation"
    assert main(["data", "import", str(sources["station"]), "--out", str(out), "--source", "review"]) == 0
    records = read_manifest(out)
    assert len(records) == 4 and Counter(r.label for r in records) == {"suspect": 2, "clear": 2}
    for record in records:
        assert record.mask == f"{record.scan_id}_mask.png" and (out / record.mask).exists()
        assert record.source == "review" and record.parcel_id.startswith("parcel")
        assert "labels" not in json.loads((out / record.files["sidecar"]).read_text())
    assert all(r.material == "Nd2O3" and r.mass_g == 50.0 for r in records if r.label == "suspect")
    assert main(["data", "check", str(out), "--workers", "1"]) == 0
    # a scan without a label, and a corrupt one
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(sources["station"], unlabelled)
    first = sorted(unlabelled.glob("*.json"))[0]
    first.write_text(json.dumps({k: v for k, v in json.loads(first.read_text()).items() if k != "labels"}))
    assert main(["data", "import", str(unlabelled), "--out", str(tmp_path / "u1")]) == 2
    assert "no label" in capsys.readouterr().err
    corrupt = sorted(unlabelled.glob("*_high.png"))[-1]
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    assert main(["data", "import", str(unlabelled), "--out", str(tmp_path / "u2"), "--skip-bad", "--label",
                 "clear"]) == 1
    out_text = capsys.readouterr().out
    assert "imported 3 scan(s)" in out_text and "1 skipped" in out_text and corrupt.name in out_text


def test_imagefolder_with_an_unknown_class_folder_is_refused(tmp_path, capsys):
    (tmp_path / "src" / "clear").mkdir(parents=True)
    (tmp_path / "src" / "maybe").mkdir()
    assert main(["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 2
    assert "unknown class folder(s) maybe" in capsys.readouterr().err


def test_convert_cli(dataset, tmp_path, capsys):
    record = read_manifest(dataset)[0]
    assert main(["data", "convert", str(dataset / record.files["low"]), "--to", "tiff", "--out", str(tmp_path)]) == 0
    assert f"{record.scan_id}.tiff" in capsys.readouterr().out
    back, original = load_scan(tmp_path / f"{record.scan_id}.tiff"), load_scan(dataset / record.files["low"])
    assert np.array_equal(back.low, original.low) and np.array_equal(back.high, original.high)
    assert main(["data", "convert", str(tmp_path / "nothing.png"), "--to", "tiff", "--out", str(tmp_path)]) == 1
