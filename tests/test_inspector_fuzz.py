"""Fuzz: random corruptions of real scan files never crash the inspector and are never cleared.

Start from a physics-simulated clear scan written in the station format (PNG pair) and as a two-page
TIFF. The inspector runs with threshold 1.0, where *every* intact scan is clear by score, so the only
thing that can stop a corrupted file from being cleared is the fail-closed path. Each example corrupts
one file — truncation, flipped bytes, overwritten or inserted or deleted ranges, and PNG header fields
edited *with a recomputed CRC* (so the decoder gets past the checksum and meets the nonsense) — and the
property is:

* ``inspect`` returns a Verdict (never raises); ``manual_inspection`` carries an error and no score;
* ``clear`` only for a file that still decodes to a valid scan, with the score of exactly those pixels;
* PNG is checksummed (chunk CRCs, zlib Adler-32), so for the PNG pair ``clear`` additionally requires the
  original pixels: any change that reaches the image must be detected. An uncompressed TIFF has no
  checksum: a byte changed inside its pixel data *is* a different, valid image, which no reader can
  tell from a real one — there the property is the consistency one above.
"""

from __future__ import annotations

import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from parcelscan.datasets.scans.readers import load_scan
    from parcelscan.datasets.scans.scanfile import write_tiff
    from parcelscan.inference.inspector import Inspector

    built = helpers.build_all(tmp_path_factory.mktemp("fuzz"))
    scan_id = built["ids"]["clear"][0]
    original = load_scan(built["scans"] / f"{scan_id}_low.png")
    source = tmp_path_factory.mktemp("fuzz-source")
    shutil.copy(built["scans"] / f"{scan_id}_low.png", source / "parcel_low.png")
    shutil.copy(built["scans"] / f"{scan_id}_high.png", source / "parcel_high.png")
    write_tiff(original, source / "parcel.tiff")
    inspector = Inspector(built["model"], threshold=1.0)
    reference = inspector.inspect(source / "parcel_low.png")
    assert reference.verdict == "clear"  # so the property below is not vacuous
    assert inspector.inspect(source / "parcel.tiff").verdict == "clear"
    files = {name: (source / name).read_bytes() for name in ("parcel_low.png", "parcel_high.png", "parcel.tiff")}
    return _Base(inspector, original, reference.score, files)


class _Base:
    """The fixture's state, with a short repr (hypothesis prints the arguments of a failing example)."""

    def __init__(self, inspector, original, score: float, files: dict[str, bytes]):
        self.inspector, self.original, self.score, self.files = inspector, original, score, files

    def __repr__(self) -> str:
        return "<fuzz base: one clear scan as PNG pair and TIFF>"


def _fix_png_crc(data: bytearray, chunk_start: int) -> None:
    (length,) = struct.unpack(">I", data[chunk_start:chunk_start + 4])
    body = bytes(data[chunk_start + 4:chunk_start + 8 + length])
    data[chunk_start + 8 + length:chunk_start + 12 + length] = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


# IHDR field → (offset in the file, struct format)
_IHDR_FIELDS = {"width": (16, ">I"), "height": (20, ">I"), "bit_depth": (24, ">B"), "colour_type": (25, ">B"),
                "compression": (26, ">B"), "filter": (27, ">B"), "interlace": (28, ">B")}


@st.composite
def corruptions(draw):
    target = draw(st.sampled_from(["parcel_low.png", "parcel_high.png", "parcel.tiff"]))
    kinds = ["truncate", "flip", "overwrite", "insert", "delete"]
    if target.endswith(".png"):
        kinds.append("ihdr")
    kind = draw(st.sampled_from(kinds))
    if kind == "truncate":
        return target, kind, {"keep": draw(st.integers(0, 60_000))}
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0, 60_000), st.integers(1, 255)), min_size=1, max_size=8))
        return target, kind, {"flips": flips}
    if kind in ("overwrite", "insert"):
        return target, kind, {"at": draw(st.integers(0, 60_000)), "data": draw(st.binary(min_size=1, max_size=64))}
    if kind == "delete":
        return target, kind, {"at": draw(st.integers(0, 60_000)), "length": draw(st.integers(1, 512))}
    field = draw(st.sampled_from(sorted(_IHDR_FIELDS)))
    limit = 0xFFFFFFFF if _IHDR_FIELDS[field][1] == ">I" else 255
    return target, kind, {"field": field, "value": draw(st.integers(0, limit))}


def _apply(data: bytes, kind: str, args: dict) -> bytes:
    buffer = bytearray(data)
    n = len(buffer)
    if kind == "truncate":
        return bytes(buffer[: args["keep"] % n])
    if kind == "flip":
        for offset, mask in args["flips"]:
            buffer[offset % n] ^= mask
        return bytes(buffer)
    if kind == "overwrite":
        at = args["at"] % n
        buffer[at:at + len(args["data"])] = args["data"]
        return bytes(buffer[:max(n, at + len(args["data"]))])
    if kind == "insert":
        at = args["at"] % (n + 1)
        return bytes(buffer[:at] + args["data"] + buffer[at:])
    if kind == "delete":
        at = args["at"] % n
        return bytes(buffer[:at] + buffer[at + args["length"]:])
    offset, fmt = _IHDR_FIELDS[args["field"]]
    buffer[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, args["value"])
    _fix_png_crc(buffer, 8)
    return bytes(buffer)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruption=corruptions())
def test_corrupted_scan_files_are_never_cleared_and_never_crash(base, corruption):
    from parcelscan.datasets.scans.readers import load_scan

    target, kind, args = corruption
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, data in base.files.items():
            (directory / name).write_bytes(_apply(data, kind, args) if name == target else data)
        entry = directory / ("parcel.tiff" if target.endswith(".tiff") else "parcel_low.png")
        verdict = base.inspector.inspect(entry)
        event(f"{target.split('.')[-1]} {kind}: {verdict.verdict}")  # --hypothesis-show-statistics
        assert verdict.verdict in ("clear", "suspect", "manual_inspection")
        if verdict.verdict == "manual_inspection":
            assert verdict.score is None and verdict.error
        if verdict.verdict == "clear":
            decoded = load_scan(entry)  # a clear verdict only for a file that decodes to a valid scan
            assert verdict.score == pytest.approx(base.inspector.inspect(decoded).score, abs=1e-6)
            if target.endswith(".png"):  # checksummed: the image must be the untouched original
                assert np.array_equal(decoded.low, base.original.low), (target, kind, args)
                assert np.array_equal(decoded.high, base.original.high), (target, kind, args)
                assert verdict.score == pytest.approx(base.score, abs=1e-6)
