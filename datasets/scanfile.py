"""The station scan format: how a dual-energy scan is stored on disk. The contract every tool shares.

A scan ``<scan_id>`` is

* two 16-bit greyscale PNGs ``<scan_id>_low.png`` and ``<scan_id>_high.png``: air-normalised
  transmission after offset/gain correction, 65535 = unattenuated, 0 = opaque; rows run along the
  belt, columns are detector channels;
* or one 16-bit two-page TIFF ``<scan_id>.tiff`` (page 0 low, page 1 high);
* an optional sidecar ``<scan_id>.json``: ``format``, ``scan_id``, ``profile``, ``pixel_pitch_mm``,
  and for simulated scans ``labels``;
* the operator image ``<scan_id>_rgb.png``: 8-bit screening pseudo-colour (see ``pseudocolor``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from parcelscan.errors import ScanReadError

SCAN_FORMAT = "parcelscan-scan/1"
MAX_PIXELS = 8192 * 16384  # refuse larger images before decoding (decompression bombs)
MAX_SIDE = 65536
_SCAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Scan:
    """A decoded dual-energy scan: two uint16 transmission images and its metadata."""

    scan_id: str
    low: np.ndarray
    high: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.low.shape  # type: ignore[return-value]

    def log_attenuation(self) -> tuple[np.ndarray, np.ndarray]:
        """(A_low, A_high) = −ln(I/I0) as float32; opaque pixels clip at one grey level."""
        from parcelscan.datasets.pseudocolor import transmission_to_log_attenuation

        return transmission_to_log_attenuation(self.low), transmission_to_log_attenuation(self.high)


def check_scan_id(scan_id: str) -> str:
    if not _SCAN_ID.match(scan_id):
        raise ValueError(f"invalid scan id {scan_id!r}: use letters, digits, '.', '_' or '-' (max 128)")
    return scan_id


def validate_pair(low: np.ndarray, high: np.ndarray, source: str) -> None:
    """The checks every reader applies to a decoded pair."""
    for name, image in (("low", low), ("high", high)):
        if image.ndim != 2:
            raise ScanReadError(f"{source}: {name} image must be single-channel 2-D, got shape {image.shape}")
        if image.dtype != np.uint16:
            raise ScanReadError(f"{source}: {name} image must be 16-bit, got {image.dtype}")
        if image.shape[0] < 8 or image.shape[1] < 8:
            raise ScanReadError(f"{source}: {name} image is too small ({image.shape[1]}x{image.shape[0]})")
    if low.shape != high.shape:
        raise ScanReadError(f"{source}: low and high images differ in size: {low.shape} vs {high.shape}")


# --- PNG -------------------------------------------------------------------------------------------
def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit_depth, colour_type) from the IHDR chunk, read without decoding."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(33)
    except OSError as error:
        raise ScanReadError(f"{path}: cannot read: {error.strerror or error}") from error
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ScanReadError(f"{path}: not a PNG file")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    if zlib.crc32(head[12:29]) & 0xFFFFFFFF != struct.unpack(">I", head[29:33])[0]:
        raise ScanReadError(f"{path}: corrupt PNG header (bad CRC)")
    if width == 0 or height == 0 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ScanReadError(f"{path}: image size {width}x{height} exceeds the limit ({MAX_PIXELS} pixels)")
    return width, height, bit_depth, colour_type


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit greyscale PNG as uint16, validated before and after decoding."""
    import cv2

    width, height, bit_depth, colour_type = png_header(path)
    if bit_depth != 16 or colour_type != 0:
        raise ScanReadError(f"{path}: expected a 16-bit greyscale PNG, got {bit_depth}-bit colour type {colour_type}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.shape != (height, width) or image.dtype != np.uint16:
        raise ScanReadError(f"{path}: truncated or corrupt PNG data")
    return image


def write_png(path: Path, image: np.ndarray, compression: int = 1) -> None:
    """Write a PNG atomically (temp file + rename), so a killed writer never leaves a torn file."""
    import cv2

    ok, encoded = cv2.imencode(".png", image if image.ndim == 2 else image[..., ::-1],
                               [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


# --- station pair ------------------------------------------------------------------------------------
def pair_paths(directory: Path, scan_id: str) -> tuple[Path, Path, Path, Path]:
    """(low, high, sidecar, rgb) paths of a scan in a directory."""
    return (directory / f"{scan_id}_low.png", directory / f"{scan_id}_high.png",
            directory / f"{scan_id}.json", directory / f"{scan_id}_rgb.png")


def write_station_scan(scan: Scan, directory: Path, rgb: np.ndarray | None = None) -> dict[str, str]:
    """Write the PNG pair, the sidecar and (if given) the operator image. Returns the file names."""
    check_scan_id(scan.scan_id)
    validate_pair(scan.low, scan.high, scan.scan_id)
    directory.mkdir(parents=True, exist_ok=True)
    low_path, high_path, sidecar_path, rgb_path = pair_paths(directory, scan.scan_id)
    write_png(low_path, scan.low)
    write_png(high_path, scan.high)
    files = {"low": low_path.name, "high": high_path.name}
    if rgb is not None:
        write_png(rgb_path, rgb)
        files["rgb"] = rgb_path.name
    write_sidecar(sidecar_path, scan)
    files["sidecar"] = sidecar_path.name
    return files


def write_sidecar(path: Path, scan: Scan) -> None:
    sidecar = {"format": SCAN_FORMAT, "scan_id": scan.scan_id, "rows": scan.shape[0], "channels": scan.shape[1]}
    sidecar.update(scan.meta)
    write_bytes_atomic(path, (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode())


def read_sidecar(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ScanReadError(f"{path}: unreadable sidecar JSON: {error}") from error
    if not isinstance(data, dict):
        raise ScanReadError(f"{path}: sidecar must be a JSON object")
    return data


def read_station_pair(low_path: Path, high_path: Path | None = None) -> Scan:
    """Read ``<id>_low.png`` + ``<id>_high.png`` (+ ``<id>.json`` when present)."""
    low_path = Path(low_path)
    if not low_path.name.endswith("_low.png"):
        raise ScanReadError(f"{low_path}: a station pair is named <scan_id>_low.png / <scan_id>_high.png")
    scan_id = low_path.name[: -len("_low.png")]
    high_path = Path(high_path) if high_path else low_path.with_name(f"{scan_id}_high.png")
    if not high_path.exists():
        raise ScanReadError(f"{low_path}: the high-energy image {high_path.name} is missing")
    low, high = read_png16(low_path), read_png16(high_path)
    validate_pair(low, high, str(low_path))
    meta = read_sidecar(low_path.with_name(f"{scan_id}.json"))
    return Scan(scan_id, low, high, meta)


# --- TIFF ----------------------------------------------------------------------------------------------
def write_tiff(scan: Scan, path: Path) -> None:
    """Two-page 16-bit TIFF: page 0 low, page 1 high; metadata in the ImageDescription as JSON."""
    import tifffile

    validate_pair(scan.low, scan.high, scan.scan_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    description = json.dumps({"format": SCAN_FORMAT, "scan_id": scan.scan_id, **scan.meta}, sort_keys=True)
    with tifffile.TiffWriter(tmp) as tiff:
        tiff.write(scan.low, photometric="minisblack", description=description, metadata=None)
        tiff.write(scan.high, photometric="minisblack", metadata=None)
    os.replace(tmp, path)


def read_tiff(path: Path) -> Scan:
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            if len(tiff.pages) != 2:
                raise ScanReadError(f"{path}: expected a two-page TIFF (low, high), found {len(tiff.pages)} page(s)")
            pages = []
            for page in tiff.pages:
                height, width = page.shape[:2]
                if height * width > MAX_PIXELS or height > MAX_SIDE or width > MAX_SIDE:
                    raise ScanReadError(f"{path}: image size {width}x{height} exceeds the limit ({MAX_PIXELS} pixels)")
                pages.append(page.asarray())
            description = tiff.pages[0].description or ""
    except ScanReadError:
        raise
    except Exception as error:
        raise ScanReadError(f"{path}: unreadable TIFF: {error}") from error
    low, high = pages
    validate_pair(low, high, str(path))
    try:
        meta = json.loads(description) if description.startswith("{") else {}
    except json.JSONDecodeError:
        meta = {}
    scan_id = str(meta.pop("scan_id", path.stem))
    meta.pop("format", None)
    sidecar = read_sidecar(path.with_suffix(".json"))
    sidecar.pop("scan_id", None)
    sidecar.pop("format", None)
    meta.update(sidecar)
    return Scan(scan_id, low, high, meta)
