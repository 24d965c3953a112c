"""Shared helpers of the dataset tools: a manifest record → its decoded scan and mask, content hashes.

``data check``, ``data split``, ``data stats``, ``data import`` and the torch Dataset all read scans
through here, so a manifest entry means the same thing everywhere. Only numpy, OpenCV and the readers
(no PyTorch).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.manifest import ManifestRecord
from parcelscan.datasets.scans.readers import load_scan, read_rgb_image
from parcelscan.datasets.scans.scanfile import (
    IncompleteScanError,
    Scan,
    check_file,
    png_header,
    read_png16,
    read_sidecar_meta,
    validate_pair,
)
from parcelscan.errors import ScanReadError


def record_path(root: Path, name: str) -> Path:
    """A file named in a manifest, relative to the manifest's directory (absolute paths are kept)."""
    path = Path(name)
    return path if path.is_absolute() else Path(root) / path


def load_record_scan(record: ManifestRecord, root: Path) -> Any:
    """Decode the scan of a manifest record (a Scan); every failure is a ScanReadError naming the file."""
    files = record.files
    if record.kind == "pseudo_color":
        # read as an image even when a dual-energy pair of the same id lies beside it
        scan = read_rgb_image(check_file(record_path(root, files["rgb"])), record.scan_id)
    elif "tiff" in files:
        scan = load_scan(check_file(record_path(root, files["tiff"])))
    else:
        low = check_file(record_path(root, files["low"]))
        high = record_path(root, files["high"])
        if not high.exists():
            raise IncompleteScanError(f"{low}: missing pair: the high-energy image {files['high']} does not exist")
        check_file(high)
        if high.name == low.name[: -len("_low.png")] + "_high.png" and low.name.endswith("_low.png"):
            scan = load_scan(low)
        else:  # unconventional names: read the pair explicitly
            a, b = read_png16(low), read_png16(high)
            validate_pair(a, b, str(low))
            scan = Scan(record.scan_id, a, b, {})
    if record.kind == "dual_energy" and scan.kind != "dual_energy":
        raise ScanReadError(f"{record.scan_id}: manifest says dual-energy but the files hold a {scan.kind} image")
    sidecar_name = files.get("sidecar")
    if sidecar_name:  # the sidecar the manifest names (pitch, profile) wins
        scan.meta = {**scan.meta, **read_sidecar_meta(record_path(root, sidecar_name), scan.shape)}
    scan.scan_id = record.scan_id
    return scan


def load_record_input(record: ManifestRecord, root: Path, input_kind: str) -> Any:
    """The scan as a model of ``input_kind`` sees it. A pseudo-colour model reading a dual-energy record
    gets the record's operator image (``files.rgb``) when it has one — the image the station shows."""
    if input_kind == "pseudo_color" and record.kind == "dual_energy" and record.files.get("rgb"):
        scan = read_rgb_image(check_file(record_path(root, record.files["rgb"])), record.scan_id)
        if record.files.get("sidecar"):  # the pair's sidecar (pitch) also describes its operator image
            scan.meta = {**scan.meta, **read_sidecar_meta(record_path(root, record.files["sidecar"]), scan.shape)}
        scan.scan_id = record.scan_id
        return scan
    return load_record_scan(record, root)


def load_record_mask(record: ManifestRecord, root: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The record's powder mask as uint8 (non-zero = powder), or None when it has none."""
    if not record.mask:
        return None
    import cv2

    path = check_file(record_path(root, record.mask))
    width, height, bit_depth, colour_type = png_header(path)
    if (height, width) != tuple(shape):
        raise ScanReadError(f"{path}: mask is {width}x{height} but the scan is {shape[1]}x{shape[0]}")
    if colour_type != 0 or bit_depth not in (1, 2, 4, 8):
        raise ScanReadError(f"{path}: a mask must be an 8-bit (or less) greyscale PNG, "
                            f"got {bit_depth}-bit colour type {colour_type}")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.shape != tuple(shape):
        raise ScanReadError(f"{path}: truncated or corrupt mask PNG")
    return mask


def content_hash(scan: Any) -> str:
    """sha256 of the decoded pixels (kind, shape, bytes): the same image re-encoded hashes the same."""
    digest = hashlib.sha256()
    digest.update(scan.kind.encode())
    if scan.kind == "dual_energy":
        for image in (scan.low, scan.high):
            digest.update(repr(image.shape).encode())
            digest.update(np.ascontiguousarray(image, dtype="<u2").tobytes())
    else:
        digest.update(repr(scan.rgb.shape).encode())
        digest.update(np.ascontiguousarray(scan.rgb, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
