"""The one door for scan files: round trips of every format, each corruption as its typed error naming the
file, decompression bombs refused before decoding, discovery of scans in directories, and a fuzz test."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcelscan.datasets.scans.readers import (
    Discovery,
    ScanRef,
    convert_scan,
    discover,
    discover_scans,
    load_scan,
    scan_key,
)
from parcelscan.datasets.scans.scanfile import (
    BitDepthError,
    IncompleteScanError,
    Scan,
    ScanTooLargeError,
    UnsupportedScanError,
    write_png,
    write_station_scan,
    write_tiff,
)
from parcelscan.errors import ParcelscanError, ScanReadError

META = {"profile": "postal-dual-140", "pixel_pitch_mm": 1.0, "source": "station",
        "labels": {"label": "suspect", "scenario": "book", "note": "Nd₂O₃ ü"}}


def _scan(seed: int = 0, shape: tuple[int, int] = (40, 52), scan_id: str = "s-001") -> Scan:
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    high = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    low[0, 0], high[0, 0] = 0, 65535  # the extremes survive too
    return Scan(scan_id, low, high, dict(META))


def _rgb(seed: int = 0, shape: tuple[int, int] = (40, 52)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int, bit_depth: int = 16, colour_type: int = 0) -> bytes:
    """A PNG whose IHDR (valid CRC) announces width x height, followed by a tiny IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def _jpeg_header_only(width: int, height: int, precision: int = 8, components: int = 3) -> bytes:
    """SOI, a JFIF APP0, a baseline SOF0 announcing width x height, then EOI: no image data."""
    app0 = b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = struct.pack(">BHHB", precision, height, width, components)
    sof += b"".join(struct.pack(">BBB", i + 1, 0x11, 0) for i in range(components))
    return (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9")


def _tiff_header_only(width: int, height: int, pages: int = 2) -> bytes:
    """A little-endian TIFF whose IFDs announce 16-bit width x height pages backed by 2 bytes of data."""
    entries_per_ifd = 9
    ifd_size = 2 + entries_per_ifd * 12 + 4
    data_offset = 8 + pages * ifd_size
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for page in range(pages):
        next_ifd = 8 + (page + 1) * ifd_size if page + 1 < pages else 0
        tags = [(256, 4, width), (257, 4, height), (258, 3, 16), (259, 3, 1), (262, 3, 1),
                (273, 4, data_offset), (277, 3, 1), (278, 4, height), (279, 4, 2)]
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                        else struct.pack("<I", value))
        out += struct.pack("<I", next_ifd)
    return bytes(out + b"\0\0")


# --- round trips ---------------------------------------------------------------------------------------------
def _same_scan(a: Scan, b: Scan) -> None:
    assert a.kind == b.kind == "dual_energy"
    assert a.scan_id == b.scan_id
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)
    assert a.low.dtype == b.low.dtype == np.uint16
    assert a.meta == b.meta


def test_pair_round_trip_from_every_file_of_the_scan(tmp_path):
    scan = _scan()
    write_station_scan(scan, tmp_path, rgb=_rgb())
    for name in ["s-001_low.png", "s-001_high.png", "s-001.json", "s-001_rgb.png"]:
        back = load_scan(tmp_path / name)
        _same_scan(scan, back)
        assert back.source_files == [str(tmp_path / "s-001_low.png"), str(tmp_path / "s-001_high.png"),
                                     str(tmp_path / "s-001.json")]


def test_tiff_round_trip_and_sidecar(tmp_path):
    scan = _scan(1)
    write_tiff(scan, tmp_path / "s-001.tiff")
    _same_scan(scan, load_scan(tmp_path / "s-001.tiff"))
    (tmp_path / "s-001.tiff").rename(tmp_path / "renamed.tif")
    back = load_scan(tmp_path / "renamed.tif")
    assert back.scan_id == "s-001"  # the id travels inside the TIFF


def test_float_tiff_in_unit_range_is_accepted_exactly(tmp_path):
    import tifffile

    scan = _scan(2)
    with tifffile.TiffWriter(tmp_path / "f.tiff") as tiff:
        tiff.write((scan.low / 65535.0).astype(np.float64))
        tiff.write((scan.high / 65535.0).astype(np.float32))
    back = load_scan(tmp_path / "f.tiff")
    np.testing.assert_array_equal(back.low, scan.low)
    np.testing.assert_array_equal(back.high, scan.high)  # float32 keeps 24 bits: rint recovers every level


def test_pseudo_colour_png_and_jpeg(tmp_path):
    import cv2

    rgb = _rgb(3)
    write_png(tmp_path / "export.png", rgb)
    (tmp_path / "export.json").write_text(json.dumps({"pixel_pitch_mm": 2.0}))
    back = load_scan(tmp_path / "export.png")
    assert back.kind == "pseudo_color" and back.low is None and back.high is None
    np.testing.assert_array_equal(back.rgb, rgb)
    assert back.meta == {"pixel_pitch_mm": 2.0} and back.scan_id == "export"
    smooth = np.zeros((48, 64, 3), np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, np.arange(64)[None, :] * 3, 40
    cv2.imwrite(str(tmp_path / "photo.JPG"), smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    back = load_scan(tmp_path / "photo.JPG")
    assert back.kind == "pseudo_color" and back.rgb.shape == (48, 64, 3) and back.rgb.dtype == np.uint8
    assert np.abs(back.rgb.astype(int) - smooth).max() <= 6  # lossy but RGB order right (red stays red)
    with pytest.raises(ValueError, match="no energy channels"):
        back.log_attenuation()


def test_opaque_rgba_png_is_taken_and_lone_rgb_png_is_its_own_scan(tmp_path):
    rgba = np.dstack([_rgb(4), np.full((40, 52), 255, np.uint8)])
    write_png(tmp_path / "a_rgb.png", rgba)
    back = load_scan(tmp_path / "a_rgb.png")
    assert back.kind == "pseudo_color" and back.scan_id == "a"
    np.testing.assert_array_equal(back.rgb, rgba[..., :3])


def test_convert_chain_preserves_pixels_and_metadata(tmp_path):
    scan = _scan(5)
    write_station_scan(scan, tmp_path / "pair0")
    tiff = convert_scan(tmp_path / "pair0" / "s-001_high.png", "tiff", tmp_path / "tiff")
    assert [p.name for p in tiff] == ["s-001.tiff"]
    dicos = convert_scan(tiff[0], "dicos", tmp_path / "dicos")
    assert [p.name for p in dicos] == ["s-001_low.dcs", "s-001_high.dcs"]
    pair = convert_scan(dicos[1], "pair", tmp_path / "pair1")
    assert [p.name for p in pair] == ["s-001_low.png", "s-001_high.png", "s-001.json"]
    for path in (tiff[0], dicos[0], pair[0]):
        _same_scan(scan, load_scan(path))


def test_convert_to_rgb_writes_the_operator_image(tmp_path, profile):
    from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair

    scan = _scan(6)
    write_station_scan(scan, tmp_path)
    rgb_path, sidecar = convert_scan(tmp_path / "s-001_low.png", "rgb", tmp_path / "out")
    back = load_scan(rgb_path)
    assert back.kind == "pseudo_color" and back.meta == scan.meta and sidecar.name == "s-001.json"
    np.testing.assert_array_equal(back.rgb, pseudocolor_from_pair(scan.low, scan.high, profile))
    # beside its pair the operator image belongs to the pair
    convert_scan(tmp_path / "s-001_low.png", "rgb", tmp_path)
    assert load_scan(tmp_path / "s-001_rgb.png").kind == "dual_energy"
    # a pseudo-colour scan has no energies to convert
    with pytest.raises(ParcelscanError, match="converts only to 'rgb'"):
        convert_scan(rgb_path, "pair", tmp_path / "nope")
    with pytest.raises(ParcelscanError, match="unknown scan format"):
        convert_scan(rgb_path, "bmp", tmp_path / "nope")
    assert [p.name for p in convert_scan(rgb_path, "rgb", tmp_path / "again")] == ["s-001_rgb.png", "s-001.json"]


# --- corruption: one typed error, naming the file --------------------------------------------------------
def test_truncated_png(tmp_path):
    write_station_scan(_scan(), tmp_path)
    data = (tmp_path / "s-001_low.png").read_bytes()
    (tmp_path / "s-001_low.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanReadError, match=r"s-001_low\.png.*(truncated|corrupt|broken)"):
        load_scan(tmp_path / "s-001_high.png")
    (tmp_path / "s-001_low.png").write_bytes(data[:20])  # not even a whole header
    with pytest.raises(ScanReadError, match=r"s-001_low\.png"):
        load_scan(tmp_path / "s-001_low.png")


def test_8_bit_where_16_expected(tmp_path):
    scan = _scan()
    write_station_scan(scan, tmp_path)
    write_png(tmp_path / "s-001_high.png", (scan.high >> 8).astype(np.uint8))
    with pytest.raises(BitDepthError, match=r"s-001_high\.png.*16-bit.*8-bit grey"):
        load_scan(tmp_path / "s-001_low.png")


def test_mismatched_pair(tmp_path):
    scan = _scan()
    write_station_scan(scan, tmp_path)
    write_png(tmp_path / "s-001_high.png", scan.high[:30])
    with pytest.raises(ScanReadError, match=r"s-001_low\.png.*differ in size"):
        load_scan(tmp_path / "s-001_low.png")


def test_half_a_pair(tmp_path):
    write_station_scan(_scan(), tmp_path)
    (tmp_path / "s-001_low.png").unlink()
    with pytest.raises(IncompleteScanError, match=r"s-001_high\.png.*low-energy image s-001_low\.png is missing"):
        load_scan(tmp_path / "s-001_high.png")


@pytest.mark.parametrize("name", ["bomb_low.png", "bomb.png"])
def test_100000_by_100000_png_is_refused_before_decoding(tmp_path, name):
    (tmp_path / name).write_bytes(_png_header_only(100_000, 100_000))
    write_station_scan(_scan(scan_id="bomb"), tmp_path / "other")
    shutil.copy(tmp_path / "other" / "bomb_high.png", tmp_path / "bomb_high.png")
    start = time.perf_counter()
    with pytest.raises(ScanTooLargeError, match=rf"{name}.*100000x100000 exceeds the limit"):
        load_scan(tmp_path / name)
    assert time.perf_counter() - start < 1.0


def test_huge_jpeg_header_is_refused_before_decoding(tmp_path):
    (tmp_path / "huge.jpg").write_bytes(_jpeg_header_only(60_000, 60_000))
    start = time.perf_counter()
    with pytest.raises(ScanTooLargeError, match=r"huge\.jpg.*60000x60000"):
        load_scan(tmp_path / "huge.jpg")
    assert time.perf_counter() - start < 1.0


def test_huge_tiff_header_is_refused_before_decoding(tmp_path):
    (tmp_path / "huge.tiff").write_bytes(_tiff_header_only(60_000, 60_000))
    with pytest.raises(ScanTooLargeError, match=r"huge\.tiff.*60000x60000"):
        load_scan(tmp_path / "huge.tiff")
    (tmp_path / "small.tiff").write_bytes(_tiff_header_only(1, 1))  # the crafted file itself parses
    with pytest.raises(ScanReadError, match=r"small\.tiff.*too small"):
        load_scan(tmp_path / "small.tiff")


@pytest.mark.parametrize("header, error, message", [
    (_jpeg_header_only(64, 48, precision=12), BitDepthError, "12-bit JPEG"),
    (_jpeg_header_only(64, 48, components=1), UnsupportedScanError, "single-energy image: a dual-energy pair"),
    (_jpeg_header_only(64, 48, components=4), UnsupportedScanError, "4 colour components"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", ScanReadError, "truncated or corrupt JPEG"),
    (_jpeg_header_only(64, 48), ScanReadError, "unreadable JPEG"),  # a header and no image data
])
def test_bad_jpegs(tmp_path, header, error, message):
    (tmp_path / "x.jpeg").write_bytes(header)
    with pytest.raises(error, match=rf"x\.jpeg.*{message}"):
        load_scan(tmp_path / "x.jpeg")


def test_truncated_jpeg_is_an_error_not_a_grey_half_image(tmp_path):
    import cv2

    _, data = cv2.imencode(".jpg", _rgb(7))
    (tmp_path / "t.jpg").write_bytes(data.tobytes()[: len(data) * 2 // 3])
    with pytest.raises(ScanReadError, match=r"t\.jpg.*truncated"):
        load_scan(tmp_path / "t.jpg")


def test_nan_and_out_of_range_float_tiff(tmp_path):
    import tifffile

    scan = _scan()
    page = (scan.high / 65535.0).astype(np.float32)
    bad = page.copy()
    bad[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tiff", np.stack([page, bad]))
    with pytest.raises(ScanReadError, match=r"nan\.tiff: page 1 contains NaN or infinite"):
        load_scan(tmp_path / "nan.tiff")
    bad[3, 4] = np.inf
    tifffile.imwrite(tmp_path / "inf.tiff", np.stack([bad, page]))
    with pytest.raises(ScanReadError, match=r"inf\.tiff: page 0 contains NaN or infinite"):
        load_scan(tmp_path / "inf.tiff")
    tifffile.imwrite(tmp_path / "range.tiff", np.stack([page * 1.5, page]))
    with pytest.raises(BitDepthError, match=r"range\.tiff.*\[0, 1\]"):
        load_scan(tmp_path / "range.tiff")


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.75, 0.99])
def test_truncated_tiff_is_not_mistaken_for_a_single_page(tmp_path, fraction):
    write_tiff(_scan(), tmp_path / "full.tiff")
    data = (tmp_path / "full.tiff").read_bytes()
    (tmp_path / "cut.tiff").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ScanReadError, match=r"cut\.tiff: .*truncated"):
        load_scan(tmp_path / "cut.tiff")


def test_bad_tiffs(tmp_path):
    import tifffile

    scan = _scan()
    tifffile.imwrite(tmp_path / "eight.tiff", np.stack([scan.low >> 8, scan.high >> 8]).astype(np.uint8))
    with pytest.raises(BitDepthError, match=r"eight\.tiff.*8-bit"):
        load_scan(tmp_path / "eight.tiff")
    tifffile.imwrite(tmp_path / "one.tiff", scan.low)
    with pytest.raises(UnsupportedScanError, match=r"one\.tiff: single-energy image: a dual-energy pair is needed"):
        load_scan(tmp_path / "one.tiff")
    with tifffile.TiffWriter(tmp_path / "three.tiff") as tiff:
        for page in (scan.low, scan.high, scan.low):
            tiff.write(page, photometric="minisblack")
    with pytest.raises(ScanReadError, match=r"three\.tiff.*found 3 page"):
        load_scan(tmp_path / "three.tiff")
    tifffile.imwrite(tmp_path / "rgb.tiff", np.stack([_rgb(), _rgb(1)]), photometric="rgb")
    with pytest.raises(UnsupportedScanError, match=r"rgb\.tiff: page 0 is a colour image"):
        load_scan(tmp_path / "rgb.tiff")
    tifffile.imwrite(tmp_path / "signed.tiff", np.stack([scan.low, scan.high]).astype(np.int16))
    with pytest.raises(BitDepthError, match=r"signed\.tiff.*int16"):
        load_scan(tmp_path / "signed.tiff")
    with tifffile.TiffWriter(tmp_path / "sizes.tiff") as tiff:
        tiff.write(scan.low)
        tiff.write(scan.high[:20])
    with pytest.raises(ScanReadError, match=r"sizes\.tiff.*differ in size"):
        load_scan(tmp_path / "sizes.tiff")


def test_garbage_dicom(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "random.dcm").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ScanReadError, match=r"random\.dcm: not a DICOM/DICOS file"):
        load_scan(tmp_path / "random.dcm")
    (tmp_path / "dicm.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ScanReadError, match=r"dicm\.dcm"):
        load_scan(tmp_path / "dicm.dcm")


def test_single_energy_grey_png(tmp_path):
    write_png(tmp_path / "grey.png", _scan().low)
    with pytest.raises(UnsupportedScanError, match=r"grey\.png: single-energy image: a dual-energy pair is needed"):
        load_scan(tmp_path / "grey.png")


@pytest.mark.parametrize("image, error, message", [
    (np.zeros((40, 52), np.uint8), UnsupportedScanError, "8-bit grey PNG is neither"),
    (np.zeros((40, 52, 3), np.uint16), BitDepthError, "16-bit RGB PNG"),
    (np.zeros((40, 52, 4), np.uint8), UnsupportedScanError, "transparent pixels"),
    (np.zeros((4, 52, 3), np.uint8), ScanReadError, "too small"),
])
def test_other_lone_pngs(tmp_path, image, error, message):
    write_png(tmp_path / "x.png", image)
    with pytest.raises(error, match=rf"x\.png.*{message}"):
        load_scan(tmp_path / "x.png")


def test_empty_file_directory_missing_file_mask_and_unknown_file(tmp_path):
    (tmp_path / "empty.tiff").write_bytes(b"")
    with pytest.raises(ScanReadError, match=r"empty\.tiff: empty file"):
        load_scan(tmp_path / "empty.tiff")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ScanReadError, match=r"dir\.png: is a directory"):
        load_scan(tmp_path / "dir.png")
    with pytest.raises(ScanReadError, match=r"gone_low\.png: no such file"):
        load_scan(tmp_path / "gone_low.png")
    write_png(tmp_path / "s_mask.png", np.zeros((40, 52), np.uint8))
    with pytest.raises(UnsupportedScanError, match=r"s_mask\.png: a label mask"):
        load_scan(tmp_path / "s_mask.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedScanError, match=r"notes\.txt: not a scan file"):
        load_scan(tmp_path / "notes.txt")


def test_sidecar_problems(tmp_path):
    (tmp_path / "orphan.json").write_text(json.dumps({"format": "parcelscan-scan/1", "scan_id": "orphan"}))
    with pytest.raises(IncompleteScanError, match=r"orphan\.json: sidecar without images"):
        load_scan(tmp_path / "orphan.json")
    write_station_scan(_scan(), tmp_path)
    (tmp_path / "s-001.json").write_text("{not json")
    with pytest.raises(ScanReadError, match=r"s-001\.json: unreadable sidecar JSON"):
        load_scan(tmp_path / "s-001_low.png")


def test_unknown_extension_is_sniffed(tmp_path):
    scan = _scan()
    write_tiff(scan, tmp_path / "s.tiff")
    (tmp_path / "s.tiff").rename(tmp_path / "s.scan")
    _same_scan(scan, load_scan(tmp_path / "s.scan"))


# --- discovery -----------------------------------------------------------------------------------------
@pytest.fixture()
def station_dir(tmp_path):
    import cv2
    import tifffile

    root = tmp_path / "incoming"
    write_station_scan(_scan(0, scan_id="pair"), root, rgb=_rgb())
    write_png(root / "pair_mask.png", np.zeros((40, 52), np.uint8))
    write_station_scan(_scan(1, scan_id="half"), root)
    (root / "half_high.png").unlink()
    write_tiff(_scan(2, scan_id="tiffscan"), root / "tiffscan.tiff")
    convert_scan(root / "pair_low.png", "dicos", root / "dicos")
    convert_scan(root / "tiffscan.tiff", "dicos", root / "dicos")
    (root / "dicos" / "tiffscan_high.dcs").unlink()
    (root / "dicos" / "junk.dcm").write_bytes(b"not dicom at all" * 20)
    write_png(root / "export.png", _rgb(3))
    cv2.imwrite(str(root / "photo.jpg"), _rgb(4))
    write_png(root / "grey.png", _scan().low)
    (root / "orphan.json").write_text(json.dumps({"format": "parcelscan-scan/1", "scan_id": "orphan"}))
    (root / "manifest.json").write_text(json.dumps({"not": "a sidecar"}))
    (root / "notes.txt").write_text("x")
    (root / ".hidden_low.png").write_bytes(b"x")
    (root / ".pair_low.png.123.tmp").write_bytes(b"x")
    (root / "upload.png.part").write_bytes(b"x")
    write_station_scan(_scan(5, scan_id="nested"), root / "sub" / "deeper")
    write_station_scan(_scan(6, scan_id="secret"), root / ".cache")
    tifffile.imwrite(root / "sub" / "single.tif", _scan().low)
    return root


def _summary(refs: list[ScanRef]) -> set[tuple[str, str, str, bool]]:
    return {(r.scan_id, r.format, r.kind, r.ok) for r in refs}


def test_discover_groups_files_into_scans(station_dir):
    refs = discover_scans([station_dir])
    assert _summary(refs) == {
        ("pair", "pair", "dual_energy", True),
        ("half", "pair", "dual_energy", False),
        ("tiffscan", "tiff", "dual_energy", True),
        ("pair", "dicos", "dual_energy", True),
        ("tiffscan", "dicos", "dual_energy", False),
        ("junk", "dicos", "unknown", False),
        ("export", "rgb", "pseudo_color", True),
        ("photo", "rgb", "pseudo_color", True),
        ("grey", "unknown", "unknown", False),
        ("orphan", "unknown", "unknown", False),
        ("nested", "pair", "dual_energy", True),
        ("single", "tiff", "dual_energy", True),  # discovery is structural; decoding finds the single page
    }
    by_key = {(r.scan_id, r.format): r for r in refs}
    assert [p.name for p in by_key["pair", "pair"].paths] == ["pair_low.png", "pair_high.png", "pair.json",
                                                              "pair_rgb.png"]
    assert [p.name for p in by_key["pair", "dicos"].paths] == ["pair_low.dcs", "pair_high.dcs"]
    expected_errors = {("half", "pair"): (IncompleteScanError, "high-energy image half_high.png is missing"),
                       ("tiffscan", "dicos"): (IncompleteScanError, "high-energy DX object"),
                       ("junk", "dicos"): (ScanReadError, "not a DICOM/DICOS file"),
                       ("grey", "unknown"): (UnsupportedScanError, "single-energy image"),
                       ("orphan", "unknown"): (IncompleteScanError, "sidecar without images"),
                       ("single", "tiff"): (UnsupportedScanError, "single-energy image")}
    for key, ref in by_key.items():
        if key in expected_errors:
            error, message = expected_errors[key]
            with pytest.raises(error, match=message):
                ref.load()
            if not ref.ok:
                assert message in ref.problem and ref.paths[0].name in ref.problem
        else:
            scan = ref.load()
            assert scan.kind == ref.kind and scan.scan_id == ref.scan_id


def test_discover_named_files_select_their_scan(station_dir):
    refs = discover_scans([station_dir / "pair_high.png", station_dir / "pair.json", station_dir / "pair_mask.png"])
    assert len(refs) == 1 and refs[0].format == "pair" and refs[0].ok
    found = discover([station_dir / "dicos" / "pair_high.dcs", station_dir / "nope.png", station_dir / "notes.txt"])
    assert _summary(found.refs) == {("pair", "dicos", "dual_energy", True), ("nope", "unknown", "unknown", False)}
    with pytest.raises(ScanReadError, match=r"nope\.png: no such file"):
        found.refs[1].load()
    assert [(p.name, why) for p, why in found.unknown] == [("notes.txt", "not a scan file")]
    # a directory and a file in it: each scan once
    assert len(discover_scans([station_dir / "sub", station_dir / "sub" / "deeper" / "nested_low.png"])) == 2


def test_named_files_group_exactly_as_their_directory(station_dir):
    """`inspect DIR/*` and `ls DIR | inspect -` name every file: the scans are those of the directory, once each,
    and the unknown files are the same (issue 11 item 4)."""
    whole = discover([station_dir])
    named = discover(sorted(p for p in station_dir.iterdir() if not p.name.startswith(".")))  # what DIR/* passes
    assert sorted(map(scan_key, named.refs)) == sorted(map(scan_key, whole.refs))
    assert len(named.refs) == len({scan_key(r) for r in named.refs})
    assert sorted(p.name for p, _ in named.unknown) == sorted(p.name for p, _ in whole.unknown if
                                                              p.parent == station_dir)
    assert {p.name for p, _ in whole.unknown} == {"notes.txt", "manifest.json"}  # unknown: one line each
    for companion in ("manifest.jsonl", "stats.json", "pair_mask.png", ".pair_low.png.123.tmp"):
        (station_dir / companion).write_text("{}")
        assert discover([station_dir / companion]) == Discovery()  # known companions: silent


@pytest.mark.parametrize("make", ["fifo", "dangling", "loop", "directory"])
@pytest.mark.parametrize("part", ["low", "high", "sidecar", "rgb", "tiff"])
def test_a_scan_part_that_is_not_a_regular_file_makes_its_scan_a_problem(tmp_path, make, part):
    """Named or found in a folder, a FIFO/dangling link/link loop/directory where a scan file should be is
    that scan's problem (manual inspection) — never a hang, never a crash, the other scans intact."""
    write_station_scan(_scan(0, scan_id="good"), tmp_path)
    if part == "tiff":
        name, scan_id = "bad.tiff", "bad"
    else:
        write_station_scan(_scan(1, scan_id="bad"), tmp_path, rgb=_rgb() if part == "rgb" else None)
        name = {"low": "bad_low.png", "high": "bad_high.png", "sidecar": "bad.json", "rgb": "bad_rgb.png"}[part]
        scan_id = "bad"
    target = tmp_path / name
    target.unlink(missing_ok=True)
    if make == "fifo":
        os.mkfifo(target)
    elif make == "dangling":
        target.symlink_to(tmp_path / "gone.png")
    elif make == "loop":
        target.symlink_to(tmp_path / "loop2.png")
        (tmp_path / "loop2.png").symlink_to(target)
    else:
        target.mkdir()
    what = {"fifo": "a FIFO", "dangling": "a dangling symbolic link", "loop": "a symbolic link loop",
            "directory": "a directory"}[make]
    for paths in ([tmp_path], sorted(tmp_path.iterdir()), [target], [tmp_path / "good_low.png", target]):
        refs = {r.scan_id: r for r in discover_scans(paths)}
        assert refs[scan_id].problem and what in refs[scan_id].problem and name in refs[scan_id].problem, paths
        with pytest.raises(ScanReadError, match=what):
            refs[scan_id].load()
        if len(paths) != 1:
            assert refs["good"].ok and refs["good"].load().scan_id == "good"


def test_unknown_non_regular_files_are_reported_not_fatal(tmp_path):
    write_station_scan(_scan(0, scan_id="good"), tmp_path)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    found = discover([tmp_path, tmp_path / "loop", tmp_path / "pipe"])
    assert [r.scan_id for r in found.refs] == ["good"]
    assert {(p.name, why) for p, why in found.unknown} == {("pipe", "not a scan file (a FIFO)"),
                                                           ("loop", "not a scan file (a symbolic link loop)")}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_discover_reports_an_unreadable_directory(tmp_path):
    write_station_scan(_scan(), tmp_path / "locked")
    (tmp_path / "locked").chmod(0)
    try:
        refs = discover_scans([tmp_path])
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [(r.scan_id, r.ok) for r in refs] == [("locked", False)] and "cannot list directory" in refs[0].problem


def test_discover_pairs_foreign_dicos_by_scan_uid(tmp_path):
    convert_scan(_write_pair(tmp_path), "dicos", tmp_path / "d")
    (tmp_path / "d" / "s-001_low.dcs").rename(tmp_path / "d" / "1.2.3.4.dcm")
    (tmp_path / "d" / "s-001_high.dcs").rename(tmp_path / "d" / "IMG0002.dcm")
    refs = discover_scans([tmp_path / "d"])
    assert _summary(refs) == {("s-001", "dicos", "dual_energy", True)}
    assert [p.name for p in refs[0].paths] == ["1.2.3.4.dcm", "IMG0002.dcm"]  # low first
    _same_scan(_scan(), refs[0].load())
    _same_scan(_scan(), load_scan(tmp_path / "d" / "IMG0002.dcm"))  # partner found by Scan Instance UID


def _write_pair(directory: Path) -> Path:
    write_station_scan(_scan(), directory)
    return directory / "s-001_low.png"


# --- fuzz: corrupted real files give a valid Scan or a ScanReadError, nothing else ---------------------------
@pytest.fixture(scope="module")
def fuzz_sources(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("fuzz")
    scan = _scan(9, shape=(24, 32))
    write_station_scan(scan, root / "pair")
    write_tiff(scan, root / "tiff" / "s-001.tiff") if (root / "tiff").mkdir() is None else None
    convert_scan(root / "pair" / "s-001_low.png", "dicos", root / "dicos")
    (root / "rgb").mkdir()
    write_png(root / "rgb" / "x.png", _rgb(1, (24, 32)))
    cv2.imwrite(str(root / "rgb" / "y.jpg"), _rgb(2, (24, 32)))
    return {"pair": (root / "pair", "s-001_low.png", "s-001_low.png"),
            "pair-high": (root / "pair", "s-001_high.png", "s-001_low.png"),
            "sidecar": (root / "pair", "s-001.json", "s-001_low.png"),
            "tiff": (root / "tiff", "s-001.tiff", "s-001.tiff"),
            "dicos": (root / "dicos", "s-001_high.dcs", "s-001_low.dcs"),
            "png": (root / "rgb", "x.png", "x.png"),
            "jpeg": (root / "rgb", "y.jpg", "y.jpg")}


def _valid(scan: Scan) -> bool:
    if scan.kind == "dual_energy":
        return (scan.low.dtype == scan.high.dtype == np.uint16 and scan.low.ndim == 2
                and scan.low.shape == scan.high.shape)
    return scan.rgb.dtype == np.uint8 and scan.rgb.ndim == 3 and scan.rgb.shape[2] == 3


@settings(max_examples=140, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(["pair", "pair-high", "sidecar", "tiff", "dicos", "png", "jpeg"]),
       cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
       insert=st.one_of(st.none(), st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=16))))
def test_fuzzed_files_never_crash_the_reader(fuzz_sources, source, cut, flips, insert):
    directory, corrupted, opened = fuzz_sources[source]
    data = bytearray((directory / corrupted).read_bytes())
    for position, mask in flips:
        data[min(int(position * len(data)), len(data) - 1)] ^= mask
    if insert is not None:
        at = int(insert[0] * len(data))
        data[at:at] = insert[1]
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        for path in directory.iterdir():
            shutil.copy(path, work_dir / path.name)
        (work_dir / corrupted).write_bytes(bytes(data))
        try:
            scan = load_scan(work_dir / opened)
        except ScanReadError as error:
            assert str(work_dir) in str(error)  # the message names the file
        else:
            assert _valid(scan)


# --- PNG integrity (issue 15 part 2): every CRC and the exact length of the image data are enforced ------------
def _png_pixels_or_error(path: Path) -> np.ndarray | None:
    try:
        scan = load_scan(path)
    except ScanReadError:
        return None
    return np.stack([scan.low, scan.high]) if scan.kind == "dual_energy" else scan.rgb


def test_png_flips_near_the_end_are_refused_or_change_nothing(tmp_path):
    """One flipped bit in the last 60 bytes once changed up to 506 pixels of an accepted scan (Pillow skips
    the image data's CRC). Now every flip is a ScanReadError — or leaves the pixels exactly as they were."""
    write_station_scan(_scan(3, shape=(60, 80)), tmp_path)
    low = tmp_path / "s-001_low.png"
    original, pixels = low.read_bytes(), _png_pixels_or_error(low)
    accepted_changed = 0
    for position in range(len(original) - 60, len(original)):
        for bit in range(8):
            data = bytearray(original)
            data[position] ^= 1 << bit
            low.write_bytes(bytes(data))
            got = _png_pixels_or_error(low)
            accepted_changed += got is not None and not np.array_equal(got, pixels)
    assert accepted_changed == 0


def test_png_whose_image_data_ends_early_is_unreadable(tmp_path):
    """A zlib stream with fewer rows than the header declares (valid CRCs) was zero-filled and accepted."""
    image = _scan(4, shape=(60, 80)).low
    rows = b"".join(b"\0" + image[r].astype(">u2").tobytes() for r in range(40))  # 40 of 60 rows
    ihdr = struct.pack(">IIBBBBB", 80, 60, 16, 0, 0, 0, 0)
    short = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    write_station_scan(_scan(4, shape=(60, 80)), tmp_path)
    (tmp_path / "s-001_high.png").write_bytes(short)
    with pytest.raises(ScanReadError, match="rows missing"):
        load_scan(tmp_path / "s-001_low.png")
    no_end = short[: short.index(b"IEND") - 4]
    (tmp_path / "s-001_high.png").write_bytes(no_end)
    with pytest.raises(ScanReadError, match="no IEND"):
        load_scan(tmp_path / "s-001_low.png")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(["pair", "pair-high", "png"]),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=4))
def test_a_flipped_png_is_refused_or_decodes_exactly(fuzz_sources, source, flips):
    directory, corrupted, opened = fuzz_sources[source]
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        for path in directory.iterdir():
            shutil.copy(path, work_dir / path.name)
        reference = _png_pixels_or_error(work_dir / opened)
        data = bytearray((work_dir / corrupted).read_bytes())
        for position, mask in flips:
            data[min(int(position * len(data)), len(data) - 1)] ^= mask
        (work_dir / corrupted).write_bytes(bytes(data))
        got = _png_pixels_or_error(work_dir / opened)
        assert got is None or np.array_equal(got, reference)
