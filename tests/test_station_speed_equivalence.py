"""The station's speed-ups change no verdict (issue 15 part 4).

* The sample scans' verdicts — scores to 1e-6, reasons, reason classes, the declaration check — are those
  recorded in ``station_verdicts_golden.json`` before the speed work (the shipped model and default policy, the
  declaration check hooked as ``inspect`` hooks it). A deliberate change of the model, the policy or a rule
  changes them: regenerate the file then (``parcelscan inspect examples/scans --workers 0 --quiet``, keeping
  the keys the file holds), and say why in the commit.
* Reading ahead and finishing verdicts in threads (``--workers 2``, batches of 8) gives the same verdicts, in the
  same order, as one scan at a time inline, with the declaration check's hook run concurrently.
* The fast inflate (ISA-L) and zlib give the same pixels (and Pillow's), and refuse the same corrupt files:
  a flipped bit anywhere in the image data, a stream with rows missing, a stream longer than the header says.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parcelscan.datasets.scans import scanfile
from parcelscan.datasets.scans.readers import discover_scans
from parcelscan.errors import ScanReadError
from parcelscan.inference.declaration import attach_declaration_check
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "examples" / "scans"
GOLDEN = Path(__file__).with_name("station_verdicts_golden.json")
INFLATERS = [pytest.param(zlib, id="zlib")]
try:
    from isal import isal_zlib

    INFLATERS.append(pytest.param(isal_zlib, id="isal"))
except ImportError:  # the station falls back to zlib; the isal cases cannot run here
    pass


def _station(workers: int, batch: int, items) -> list[dict]:
    inspector = Inspector(None, device="cpu", policy=load_policy(None), threads=1)
    attach_declaration_check(inspector, None)  # as inspect does under the default policy
    verdicts = list(inspector.inspect_many(items, batch=batch, workers=workers))
    out = []
    for verdict in verdicts:
        data = verdict.to_dict()
        data.pop("latency_ms")
        data.pop("scanned_at")
        out.append(data)
    return out


def test_sample_verdicts_are_the_recorded_ones():
    golden = json.loads(GOLDEN.read_text())
    got = {v["scan_id"]: v for v in _station(2, 8, discover_scans([SAMPLES]))}
    assert sorted(got) == sorted(g["scan_id"] for g in golden)
    for want in golden:
        have = got[want["scan_id"]]
        assert have["verdict"] == want["verdict"], want["scan_id"]
        assert have["score"] == pytest.approx(want["score"], abs=1e-6), want["scan_id"]
        for key in ("reasons", "reason_classes", "powder_mass_g", "powder_mass_lower_bound", "declaration_check"):
            assert have[key] == want[key], (want["scan_id"], key)
    assert {g["verdict"] for g in golden} == {"clear", "suspect"}  # both kinds of verdict are covered


def test_threaded_station_equals_inline(tmp_path):
    """Workers reading ahead, verdicts and the declaration check finished in threads: the same verdicts in the
    same order as inline, one scan at a time. One sample carries a declaration, so the check weighs bodies."""
    folder = tmp_path / "scans"
    shutil.copytree(SAMPLES, folder)
    sidecar = folder / "sim31-000077.json"
    meta = json.loads(sidecar.read_text())
    meta["item_id"] = "EE962257862CN"
    meta["declaration"] = {"category": "sale_of_goods", "currency": "USD", "gross_weight_kg": 3.5,
                           "item_id": "EE962257862CN", "origin": "CN",
                           "items": [{"description": "quartz sand", "hs_code": "2505.10", "net_weight_kg": 1.5,
                                      "quantity": 1, "value": 52.65}]}
    sidecar.write_text(json.dumps(meta))
    items = discover_scans([folder]) * 3  # several batches, scans repeated
    inline = _station(0, 1, items)
    threaded = _station(2, 8, items)
    assert [v["scan_id"] for v in threaded] == [v["scan_id"] for v in inline]
    assert threaded == inline
    checks = [v["declaration_check"] for v in inline]
    assert all(c is not None for c in checks)
    assert any(c["status"] != "absent" for c in checks)  # the declared sample was checked, not skipped


def test_inputs_digest_is_of_the_bytes_decoded(tmp_path):
    """The verdict's ``inputs_sha256`` comes from the PNG bytes the reader decoded (no second read of the files)
    and equals the digest recomputed from the files; a file changed after the read gives another digest when
    recomputed, while the verdict keeps naming what was analysed."""
    from parcelscan.datasets.datatools import file_sha256
    from parcelscan.inference.verdict import inputs_digest

    folder = tmp_path / "scans"
    shutil.copytree(SAMPLES, folder)
    ref = discover_scans([folder])[0]
    scan = scanfile.read_station_pair(Path(ref.paths[0]))
    assert {path: file_sha256(Path(path)) for path in scan.source_files[:2]} == scan.source_sha256
    verdict = _station(0, 1, [ref])[0]
    assert verdict["inputs_sha256"] == inputs_digest(verdict["inputs"])
    Path(scan.source_files[1]).write_bytes(Path(scan.source_files[1]).read_bytes() + b"changed")
    assert inputs_digest(scan.source_files, scan.source_sha256) == verdict["inputs_sha256"]
    assert inputs_digest(scan.source_files) != verdict["inputs_sha256"]


def _png(pixels: np.ndarray, raw: bytes | None = None) -> bytes:
    """A 16-bit grey PNG of ``pixels`` (rows filtered Sub), or with ``raw`` as its inflated image data."""
    height, width = pixels.shape
    if raw is None:
        be = pixels.astype(">u2").view(np.uint8).reshape(height, width * 2)
        sub = be.copy()
        sub[:, 2:] = be[:, 2:] - be[:, :-2]
        raw = np.concatenate([np.ones((height, 1), np.uint8), sub], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    data = zlib.compress(raw, 1)
    idats = b"".join(chunk(b"IDAT", data[i:i + 8192]) for i in range(0, len(data), 8192))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idats + chunk(b"IEND", b"")


@pytest.mark.parametrize("inflater", INFLATERS)
def test_inflaters_give_the_same_pixels(monkeypatch, inflater, tmp_path):
    monkeypatch.setattr(scanfile, "_inflate_module", inflater)
    rng = np.random.default_rng(7)
    noisy = rng.integers(0, 65536, (70, 90), dtype=np.uint16)
    path = tmp_path / "noisy_low.png"
    path.write_bytes(_png(noisy))
    assert np.array_equal(scanfile.read_png16(path), noisy)
    for sample in sorted(SAMPLES.glob("*_high.png"))[:3]:
        with Image.open(sample) as image:
            expected = np.asarray(image).astype(np.uint16)
        assert np.array_equal(scanfile.read_png16(sample), expected)


@pytest.mark.parametrize("inflater", INFLATERS)
def test_inflaters_refuse_the_same_corrupt_files(monkeypatch, inflater, tmp_path):
    monkeypatch.setattr(scanfile, "_inflate_module", inflater)
    rng = np.random.default_rng(8)
    pixels = rng.integers(0, 65536, (40, 50), dtype=np.uint16)
    good = _png(pixels)
    stride = 1 + 50 * 2
    raw = np.concatenate([np.ones((40, 1), np.uint8), pixels.astype(">u2").view(np.uint8).reshape(40, 100)],
                         axis=1).tobytes()
    cases = {
        "flipped bit near the end": bytearray(good),
        "rows missing (CRCs right)": _png(pixels, raw[: 30 * stride]),
        "rows added (CRCs right)": _png(pixels, raw + raw[:stride]),
    }
    cases["flipped bit near the end"][-30] ^= 0x04
    for name, data in cases.items():
        path = tmp_path / f"{name.split()[0]}_low.png"
        path.write_bytes(bytes(data))
        with pytest.raises(ScanReadError):
            scanfile.read_png16(path)
    path = tmp_path / "good_low.png"
    path.write_bytes(good)
    assert np.array_equal(scanfile.read_png16(path), pixels)


def _inspect_lines(capsys, *argv: str) -> list[dict]:
    """``parcelscan inspect`` in this process: its verdict lines without the timing fields."""
    from parcelscan import cli

    capsys.readouterr()
    code = cli.main(["inspect", *argv, "--device", "cpu", "--quiet"])
    out = []
    for line in capsys.readouterr().out.splitlines():
        data = json.loads(line)
        data.pop("latency_ms")
        data.pop("scanned_at")
        out.append(data)
    assert code in (0, 1)
    return out


def test_processes_give_the_verdicts_of_one_process_in_input_order(capsys):
    """``--processes 2``: the scans dealt to two forked children in runs of ``--batch``, each with its own model
    session and the declaration check; the verdicts are those of one process, line for line, in the same order."""
    one = _inspect_lines(capsys, str(SAMPLES), "--batch", "2", "--workers", "1")
    two = _inspect_lines(capsys, str(SAMPLES), "--batch", "2", "--workers", "1", "--processes", "2")
    assert len(one) >= 5 and two == one


def test_a_worker_process_that_fails_costs_no_verdict(capsys, monkeypatch):
    """A child that cannot work (here: its Inspector fails to build) hands its share back: the main process
    inspects those scans itself, and every verdict is there, equal, in order."""
    import os

    from parcelscan.inference import inspect_cli

    one = _inspect_lines(capsys, str(SAMPLES), "--batch", "2")
    parent = os.getpid()
    build = inspect_cli._build_inspector

    def failing_in_children(args, policy):
        if os.getpid() != parent:
            raise RuntimeError("no model session in this worker")
        return build(args, policy)

    monkeypatch.setattr(inspect_cli, "_build_inspector", failing_in_children)
    two = _inspect_lines(capsys, str(SAMPLES), "--batch", "2", "--processes", "2")
    assert two == one
