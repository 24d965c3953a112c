"""The station path: verdicts, exit codes, fail-closed inputs, threshold override, shield alarm, sha256,
heatmaps, stdin, the hot folder and the Python API."""

from __future__ import annotations

import io
import json
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers

from parcelscan.errors import ParcelscanError
from parcelscan.inference.verdict import FIELDS, Verdict, combine_exit_codes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return helpers.build_all(tmp_path_factory.mktemp("inspect"))


@pytest.fixture(scope="module")
def inspector(built):
    from parcelscan.inference.inspector import Inspector

    return Inspector(built["model"])


def _run(args, capsys, stdin: str | None = None, monkeypatch=None):
    from parcelscan.cli import main

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return code, helpers.verdict_lines(captured.out), captured.err


def _copy_pair(src: Path, scan_id: str, dst: Path, new_id: str) -> tuple[Path, Path]:
    dst.mkdir(parents=True, exist_ok=True)
    low, high = dst / f"{new_id}_low.png", dst / f"{new_id}_high.png"
    shutil.copy(src / f"{scan_id}_low.png", low)
    shutil.copy(src / f"{scan_id}_high.png", high)
    return low, high


def _png_header_only(path: Path, width: int, height: int, bit_depth: int = 16, colour: int = 0) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)))


# --- the verdict contract ---------------------------------------------------------------------------------
def test_verdict_refuses_an_unearned_clear():
    common = {"scan_id": "s", "inputs": [], "threshold": 0.5, "model": None}
    with pytest.raises(ValueError, match="finite score"):
        Verdict(verdict="clear", score=None, **common)
    with pytest.raises(ValueError, match="finite score"):
        Verdict(verdict="clear", score=float("nan"), **common)
    with pytest.raises(ValueError, match="below the threshold"):
        Verdict(verdict="clear", score=0.5, **common)
    with pytest.raises(ValueError, match="error"):
        Verdict(verdict="clear", score=0.1, error="boom", **common)
    with pytest.raises(ValueError, match="error or a reason"):
        Verdict(verdict="manual_inspection", score=None, **common)
    verdict = Verdict(verdict="clear", score=0.1, **common)
    assert Verdict.from_json(verdict.to_json()) == verdict
    assert list(json.loads(verdict.to_json())) == list(FIELDS)


def test_exit_code_precedence():
    assert combine_exit_codes([]) == 0
    assert combine_exit_codes([0, 0]) == 0
    assert combine_exit_codes([0, 1, 0]) == 1
    assert combine_exit_codes([1, 2, 0]) == 2  # not analysed wins over suspect


# --- CLI on good scans --------------------------------------------------------------------------------------
def test_inspect_directory_lines_follow_the_contract(built, capsys, monkeypatch):
    monkeypatch.setenv("PARCELSCAN_STATION", "sort-7")
    code, lines, err = _run([built["scans"], "--model", built["model"]], capsys)
    ids = built["ids"]
    assert sorted(v["scan_id"] for v in lines) == sorted(ids["clear"] + ids["suspect"] + ids["opaque"])
    for v in lines:
        assert list(v) == list(FIELDS)
        assert v["threshold"] == 0.5 and v["station"] == "sort-7" and v["provider"] == "CPUExecutionProvider"
        assert v["model"]["name"] == "tiny-test" and len(v["model"]["sha256"]) == 64
        assert v["scanned_at"].endswith("Z") and v["latency_ms"] > 0 and v["error"] is None
        assert isinstance(v["score"], float) and 0 <= v["score"] <= 1
        assert all(Path(p).exists() for p in v["inputs"])
        assert v["verdict"] == ("suspect" if v["score"] >= 0.5 or v["scan_id"] in ids["opaque"] else "clear")
    assert code == (1 if any(v["verdict"] == "suspect" for v in lines) else 0)
    assert "provider CPUExecutionProvider" in err and "Traceback" not in err


def test_exit_codes_for_each_case(built, capsys, tmp_path):
    clear_dir = tmp_path / "clear"
    for scan_id in built["ids"]["clear"]:
        _copy_pair(built["scans"], scan_id, clear_dir, scan_id)
    model = ["--model", built["model"]]
    code, lines, _ = _run([clear_dir, *model, "--threshold", "0.999"], capsys)
    assert code == 0 and {v["verdict"] for v in lines} == {"clear"}
    code, lines, _ = _run([clear_dir, *model, "--threshold", "0"], capsys)
    assert code == 1 and {v["verdict"] for v in lines} == {"suspect"}
    (clear_dir / "broken_low.png").write_bytes(b"\x89PNG not really")
    (clear_dir / "broken_high.png").write_bytes(b"\x89PNG not really")
    code, lines, _ = _run([clear_dir, *model, "--threshold", "0"], capsys)
    assert code == 2 and {v["verdict"] for v in lines} == {"suspect", "manual_inspection"}  # 2 wins over 1
    code, lines, err = _run([tmp_path / "nowhere", *model], capsys)
    assert code == 2 and lines[0]["verdict"] == "manual_inspection" and "no such file" in lines[0]["error"]
    (tmp_path / "empty").mkdir()
    code, lines, err = _run([tmp_path / "empty", *model], capsys)
    assert code == 2 and lines == [] and "no scans found" in err
    code, lines, err = _run([clear_dir, "--model", tmp_path / "missing.onnx"], capsys)
    assert code == 2 and lines == [] and err.startswith("parcelscan inspect: error: model not found")
    code, lines, err = _run([], capsys)
    assert code == 2 and "nothing to inspect" in err
    code, lines, err = _run([clear_dir, *model, "--threshold", "1.5"], capsys)
    assert code == 2 and "threshold must be a probability" in err
    (tmp_path / "a-file").write_text("")
    code, lines, err = _run([clear_dir, *model, "--heatmaps", tmp_path / "a-file" / "heat"], capsys)
    assert code == 2 and lines == [] and "--heatmaps" in err and "cannot create" in err


def test_threshold_override_changes_verdicts(built, inspector):
    from parcelscan.datasets.scans.readers import discover_scans
    from parcelscan.inference.inspector import Inspector

    refs = discover_scans([built["scans"]])
    scores = {v.scan_id: v.score for v in inspector.inspect_many(refs)}
    assert inspector.threshold == 0.5  # the model's own operating threshold by default
    plain = sorted(s for k, s in scores.items() if k not in built["ids"]["opaque"])
    assert plain[0] < plain[-1]
    for threshold in (plain[0] - 1e-6, (plain[len(plain) // 2 - 1] + plain[len(plain) // 2]) / 2, plain[-1] + 1e-6):
        custom = Inspector(built["model"], threshold=threshold)
        verdicts = {v.scan_id: v for v in custom.inspect_many(refs)}
        for scan_id, v in verdicts.items():
            assert v.threshold == threshold and v.score == pytest.approx(scores[scan_id], abs=1e-6)
            expected = v.score >= threshold or scan_id in built["ids"]["opaque"]
            assert (v.verdict == "suspect") == expected, (scan_id, v.score, threshold)
    n_suspect = [sum(v.verdict == "suspect" for v in Inspector(built["model"], threshold=t).inspect_many(refs))
                 for t in (0.0, 0.999999)]
    assert n_suspect[0] == len(refs) and n_suspect[1] == len(built["ids"]["opaque"])


# --- fail closed ------------------------------------------------------------------------------------------------
def test_every_bad_input_kind_is_manual_inspection_and_the_batch_goes_on(built, capsys, tmp_path):
    import cv2
    import tifffile

    good_id = built["ids"]["clear"][0]
    bad = tmp_path / "bad"
    low, _ = _copy_pair(built["scans"], good_id, bad, "truncated")
    low.write_bytes(low.read_bytes()[: low.stat().st_size // 2])
    (bad / "garbage_low.png").write_bytes(np.random.default_rng(1).bytes(3000))
    (bad / "garbage_high.png").write_bytes(np.random.default_rng(2).bytes(3000))
    shutil.copy(built["scans"] / f"{good_id}_low.png", bad / "half_low.png")
    scan = cv2.imread(str(built["scans"] / f"{good_id}_low.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(bad / "single-energy.png"), scan)  # a lone 16-bit grey image
    cv2.imwrite(str(bad / "operator-photo.png"), np.full((120, 150, 3), 200, np.uint8))  # RGB to the dual model
    cv2.imwrite(str(bad / "eightbit_low.png"), (scan >> 8).astype(np.uint8))
    cv2.imwrite(str(bad / "eightbit_high.png"), (scan >> 8).astype(np.uint8))
    cv2.imwrite(str(bad / "mismatch_low.png"), scan)
    cv2.imwrite(str(bad / "mismatch_high.png"), scan[:-10])
    cv2.imwrite(str(bad / "tiny_low.png"), scan[:4, :4])
    cv2.imwrite(str(bad / "tiny_high.png"), scan[:4, :4])
    _png_header_only(bad / "bomb_low.png", 100_000, 100_000)
    _png_header_only(bad / "bomb_high.png", 100_000, 100_000)
    nan = (scan / 65535.0).astype(np.float32)
    nan[10:20, 10:20] = np.nan
    tifffile.imwrite(bad / "nan.tiff", np.stack([nan, nan]))
    _, _high = _copy_pair(built["scans"], good_id, bad, "empty")
    (bad / "empty_low.png").write_bytes(b"")
    _copy_pair(built["scans"], good_id, bad, "badpitch")
    (bad / "badpitch.json").write_text(json.dumps({"format": "parcelscan-scan/1", "pixel_pitch_mm": -1}))
    _copy_pair(built["scans"], good_id, bad, "good")  # the batch goes on: this one is analysed
    expected_bad = {"truncated", "garbage", "half", "single-energy", "operator-photo", "eightbit", "mismatch", "tiny",
                    "bomb", "nan", "empty", "badpitch", "ghost"}
    code, lines, err = _run([bad, tmp_path / "ghost_low.png", "--model", built["model"], "--batch", "4"], capsys)
    by_id = {v["scan_id"]: v for v in lines}
    assert set(by_id) == expected_bad | {"good"}
    for scan_id in expected_bad:
        v = by_id[scan_id]
        assert v["verdict"] == "manual_inspection" and v["score"] is None and v["error"], scan_id
        assert v["reasons"] and v["heatmap"] is None
    assert by_id["good"]["verdict"] in ("clear", "suspect") and by_id["good"]["score"] is not None
    assert "single-energy" in by_id["single-energy"]["error"]
    assert "dual-energy model" in by_id["operator-photo"]["error"]
    assert "16-bit" in by_id["eightbit"]["error"] or "8-bit" in by_id["eightbit"]["error"]
    assert "exceeds the limit" in by_id["bomb"]["error"]
    assert "NaN" in by_id["nan"]["error"] or "nan" in by_id["nan"]["error"].lower()
    assert "missing" in by_id["half"]["error"]
    assert code == 2 and "Traceback" not in err


def test_python_api_arrays_and_bad_arrays(built, inspector):
    from parcelscan.datasets.scans.readers import load_scan

    scan = load_scan(built["scans"] / f"{built['ids']['clear'][0]}_low.png")
    by_path = inspector.inspect(built["scans"] / f"{built['ids']['clear'][0]}_low.png")
    by_arrays = inspector.inspect((scan.low, scan.high))
    assert by_arrays.score == pytest.approx(by_path.score, abs=1e-6)  # pitch 1.0 mm is the default anyway
    assert by_arrays.scan_id.startswith("array-") and by_arrays.inputs == []
    assert inspector.inspect(scan).score == pytest.approx(by_path.score, abs=1e-6)
    bad_items = [
        (scan.low.astype(np.float32), scan.high.astype(np.float32)),  # not transmission counts
        (scan.low, scan.high[:-3]),  # wrong size
        np.zeros((64, 64, 3), np.uint8),  # a pseudo-colour image to the dual-energy model
        np.full((64, 64), np.nan, np.float32),  # NaN
        "not/a/file.png",
        42,
    ]
    for item in bad_items:
        v = inspector.inspect(item)
        assert v.verdict == "manual_inspection" and v.score is None and v.error, item


def test_non_finite_model_input_is_never_clear(built, inspector, monkeypatch):
    """If preprocessing ever let NaN through, the inspector stops it before the model."""
    import parcelscan.inference.inspector as station  # the name the inspector calls

    real = station.prepare_scan

    def poisoned(scan, spec):
        prepared = real(scan, spec)
        prepared.tiles[0, 0, 0, 0] = np.nan
        return prepared

    monkeypatch.setattr(station, "prepare_scan", poisoned)
    v = inspector.inspect(built["scans"] / f"{built['ids']['clear'][0]}_low.png")
    assert v.verdict == "manual_inspection" and "NaN" in v.error


# --- the shield alarm -------------------------------------------------------------------------------------------
def test_opaque_scan_is_never_clear(built, inspector):
    from parcelscan.inference.inspector import Inspector

    lenient = Inspector(built["model"], threshold=1.0)  # no score can reach it
    for scan_id in built["ids"]["opaque"]:
        v = lenient.inspect(built["scans"] / f"{scan_id}_low.png")
        assert v.verdict == "suspect" and v.score < 1.0
        assert any(r.startswith("shield alarm: opaque region") and "cm²" in r for r in v.reasons)
    for scan_id in built["ids"]["clear"]:
        assert lenient.inspect(built["scans"] / f"{scan_id}_low.png").verdict == "clear"


def test_opaque_region_area_and_shape_rules():
    from parcelscan.datasets.scans.scanfile import Scan
    from parcelscan.inference.opaque import OPAQUE_GREY_LEVELS, check_opaque

    def scan_with(block: tuple[slice, slice], pitch_mm: float = 1.0, level: int = 3) -> Scan:
        high = np.full((200, 200), 30000, np.uint16)
        high[block] = level
        return Scan("s", high.copy(), high, {"pixel_pitch_mm": pitch_mm})

    # the default threat model's smallest pouch: 1.11 cm², an ellipse 9 x 16 mm (inference/opaque.py)
    assert check_opaque(scan_with((slice(50, 62), slice(50, 68)))).alarm  # 12 x 18 mm: the pouch fits
    assert not check_opaque(scan_with((slice(50, 58), slice(50, 58)))).alarm  # 8 x 8 mm: it does not
    assert not check_opaque(scan_with((slice(20, 180), slice(50, 56)))).alarm  # 6 mm wide, 160 mm long: too narrow
    result = check_opaque(scan_with((slice(40, 64), slice(40, 76)), pitch_mm=0.5))  # 12 x 18 mm again
    assert result.alarm and result.largest_cm2 == pytest.approx(2.16, rel=0.15)
    assert not check_opaque(scan_with((slice(40, 56), slice(40, 56)), pitch_mm=0.5)).alarm  # 8 x 8 mm again
    assert not check_opaque(scan_with((slice(0, 200), slice(100, 102)))).alarm  # a dead 2-channel strip
    assert not check_opaque(scan_with((slice(50, 80), slice(50, 80)), level=OPAQUE_GREY_LEVELS + 40)).alarm
    rgb = np.full((200, 200, 3), 230, np.uint8)
    rgb[60:90, 60:90] = 0  # black in the operator image = opaque
    assert check_opaque(Scan("r", None, None, {}, kind="pseudo_color", rgb=rgb)).alarm


# --- model integrity and providers --------------------------------------------------------------------------
def test_sha256_mismatch_and_missing_hash_are_refused(built, tmp_path, capsys):
    from parcelscan.inference.inspector import Inspector

    model = tmp_path / "copy.onnx"
    shutil.copy(built["model"], model)
    shutil.copy(built["model"].with_name("tiny.onnx.sha256"), tmp_path / "copy.onnx.sha256")
    (tmp_path / "copy.onnx.sha256").write_text((tmp_path / "copy.onnx.sha256").read_text().replace("tiny", "copy"))
    assert Inspector(model).model_info["sha256"] == built["export"].sha256
    data = bytearray(model.read_bytes())
    data[-100] ^= 0x01  # one flipped bit: tampering or a torn copy
    model.write_bytes(bytes(data))
    with pytest.raises(ParcelscanError, match="does not match"):
        Inspector(model)
    code, lines, err = _run([built["scans"], "--model", model], capsys)
    assert code == 2 and lines == [] and "refusing the model" in err and "Traceback" not in err
    (tmp_path / "copy.onnx.sha256").unlink()
    with pytest.raises(ParcelscanError, match="unverified"):
        Inspector(model)


def test_device_choice(built, capsys):
    import onnxruntime as ort

    from parcelscan.model.session import choose_providers

    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        code, lines, err = _run([built["scans"], "--model", built["model"], "--device", "cuda"], capsys)
        assert code == 2 and "no CUDA provider" in err and lines == []
    code, lines, _ = _run([built["scans"], "--model", built["model"], "--device", "cpu", "--threads", "1"], capsys)
    assert {v["provider"] for v in lines} == {"CPUExecutionProvider"}


# --- outputs ----------------------------------------------------------------------------------------------------
def test_heatmaps_for_suspect_scans_only(built, capsys, tmp_path):
    import cv2

    heatmaps = tmp_path / "heat"
    _code, lines, _ = _run([built["scans"], "--model", built["model"], "--heatmaps", heatmaps, "--threshold", "0.2"],
                          capsys)
    suspects = {v["scan_id"] for v in lines if v["verdict"] == "suspect"}
    assert suspects and len(suspects) < len(lines)
    for v in lines:
        if v["verdict"] == "suspect":
            image = cv2.imread(v["heatmap"], cv2.IMREAD_COLOR)
            assert image is not None and image.shape[:2] == (helpers.ROWS, helpers.COLS)
        else:
            assert v["heatmap"] is None
    assert sorted(p.name for p in heatmaps.iterdir()) == sorted(f"{s}_heatmap.png" for s in suspects)


def test_paths_from_stdin(built, capsys, monkeypatch):
    ids = built["ids"]["clear"][:2]
    stdin = "".join(f"{built['scans'] / f'{i}_low.png'}\n" for i in ids) + "\n"
    _code, lines, _ = _run(["-", "--model", built["model"]], capsys, stdin=stdin, monkeypatch=monkeypatch)
    assert [v["scan_id"] for v in lines] == ids


def test_default_model_or_a_clear_error(tmp_path, monkeypatch):
    from parcelscan.inference.inspector import Inspector
    from parcelscan.model.registry import SHIPPED_DEFAULT

    monkeypatch.setenv("PARCELSCAN_MODEL_DIR", str(tmp_path / "empty-store"))
    if SHIPPED_DEFAULT.is_file():
        assert Inspector().metadata.input_kind == "dual_energy"
    else:
        with pytest.raises(ParcelscanError, match="shipped default"):
            Inspector()


# --- the hot folder ---------------------------------------------------------------------------------------------
def test_hot_folder_waits_for_complete_stable_decodable_scans(built, tmp_path, inspector):
    from parcelscan.inference.watch import HotFolder

    src, good = built["scans"], built["ids"]["clear"][0]
    folder = HotFolder(tmp_path, settle_s=0.5, stale_s=30.0)
    shutil.copy(src / f"{good}_low.png", tmp_path / "late_low.png")  # half a pair
    _low, high = _copy_pair(src, good, tmp_path, "torn")
    high.write_bytes(high.read_bytes()[:500])  # still being written
    assert folder.poll(0.0) == [] and folder.poll(1.0) == [] and folder.poll(20.0) == []
    shutil.copy(src / f"{good}_high.png", tmp_path / "late_high.png")  # the partner arrives
    assert folder.poll(21.0) == []  # changed: must settle first
    ready = folder.poll(21.6)
    assert [getattr(r, "scan_id", None) for r in ready] == ["late"] and hasattr(ready[0], "low")  # decoded Scan
    assert folder.poll(22.0) == []  # inspected once
    stale = folder.poll(31.0)  # the torn one never completed: reported, fail closed
    assert [r.scan_id for r in stale] == ["torn"]
    assert inspector.inspect(stale[0]).verdict == "manual_inspection"
    shutil.copy(src / f"{built['ids']['suspect'][0]}_low.png", tmp_path / "late_low.png")  # same id, new scan
    assert folder.poll(40.0) == [] and [r.scan_id for r in folder.poll(41.0)] == ["late"]


@pytest.mark.slow
def test_watch_picks_up_a_new_pair_and_ignores_a_half_written_one(built, tmp_path):
    src, good = built["scans"], built["ids"]["clear"][0]
    hot = tmp_path / "hot"
    hot.mkdir()
    shutil.copy(src / f"{good}_low.png", hot / "halfpair_low.png")
    _low, high = _copy_pair(src, good, hot, "torn")
    high.write_bytes(high.read_bytes()[:700])
    process = subprocess.Popen(
        [sys.executable, "-m", "parcelscan", "inspect", "--watch", str(hot), "--model", str(built["model"]),
         "--watch-settle", "0.3", "--threshold", "0.999"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    lines: dict[str, queue.Queue] = {"out": queue.Queue(), "err": queue.Queue()}

    def pump(stream, sink: queue.Queue) -> None:
        for text in stream:
            sink.put(text)

    pumps = [threading.Thread(target=pump, args=(stream, lines[name]), daemon=True)
             for name, stream in (("out", process.stdout), ("err", process.stderr))]
    for thread in pumps:
        thread.start()

    def read_line(name: str, timeout_s: float = 60.0) -> str:
        try:
            return lines[name].get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no std{name} line from parcelscan inspect --watch within {timeout_s} s") from None

    try:
        while "watching" not in read_line("err"):
            pass
        _copy_pair(src, good, hot / ".incoming", "fresh")  # written elsewhere, then renamed in: complete
        for name in ("fresh_low.png", "fresh_high.png"):
            (hot / ".incoming" / name).rename(hot / name)
        verdict = json.loads(read_line("out"))
        assert verdict["scan_id"] == "fresh" and verdict["verdict"] == "clear"
        time.sleep(1.0)  # the half-written ones stay pending
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    for thread in pumps:
        thread.join(timeout=10)  # drained: the process has exited
    out = "".join(lines["out"].queue)
    err = "".join(lines["err"].queue)
    assert process.returncode == 0  # one clear scan; SIGTERM ends cleanly
    assert out.strip() == "" and "Traceback" not in err  # nothing after the fresh scan: half ones still pending
    assert "1 scan(s): 1 clear" in err


def test_shipped_rgb_model_serves_stations_that_export_only_the_operator_image(tmp_path, capsys, monkeypatch):
    """``inspect --rgb`` picks the shipped pseudo-colour model; the dual-energy default refuses the same
    images (manual inspection, pointing at --rgb); --rgb with --model is an argument error."""
    monkeypatch.setenv("PARCELSCAN_MODEL_DIR", str(tmp_path / "empty-store"))
    examples = Path(__file__).parents[1] / "examples" / "scans"
    rgb_only = tmp_path / "operator-images"
    rgb_only.mkdir()
    for image in sorted(examples.glob("*_rgb.png")):
        shutil.copy(image, rgb_only / image.name.replace("_rgb", ""))
    code, lines, _ = _run(["--rgb", rgb_only], capsys)
    assert len(lines) == 7 and code in (0, 1)
    assert all(v["verdict"] in ("clear", "suspect") and v["error"] is None for v in lines)
    assert {v["model"]["name"] for v in lines} == {"rgb"}
    code, lines, _ = _run([rgb_only], capsys)
    assert code == 2 and all(v["verdict"] == "manual_inspection" and "--rgb" in v["error"] for v in lines)
    code, _, err = _run(["--rgb", "--model", "model/default/parcelscan-dual.onnx", rgb_only], capsys)
    assert code == 2 and "--rgb" in err
