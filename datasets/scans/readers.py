"""One door for every scan file: ``load_scan``, ``discover_scans`` and ``convert_scan``.

Formats (``load_scan`` picks by name, then by content for unknown extensions):

* station pair ``<id>_low.png`` + ``<id>_high.png`` (+ ``<id>.json``): given any of its files,
  including ``<id>_rgb.png`` and ``<id>.json`` (an ``_rgb.png`` next to a pair, TIFF or DICOS scan of
  the same id belongs to that scan);
* two-page TIFF ``<id>.tif(f)`` (16-bit, or float transmission in [0, 1]: see ``scanfile``);
* DICOS DX For Processing objects ``.dcs`` / ``.dcm`` / ``.dicom`` (one per energy, see ``dicos``);
* pseudo-colour images: a lone 8-bit RGB(A) PNG or an 8-bit 3-channel JPEG → ``kind="pseudo_color"``
  (``<id>_rgb.png`` without a dual-energy scan beside it has scan id ``<id>``; a ``<stem>.json``
  sidecar beside it supplies metadata). Alpha must be fully opaque.

Refused, each with one ``ScanReadError`` (subclasses in ``scanfile``) naming the file: missing,
empty, directory, over-large file; a header announcing an image beyond the limits (PNG IHDR, JPEG
SOF, TIFF tags, DICOM Rows/Columns: checked before any pixel is decoded); truncated or corrupt
data; wrong bit depth (8-bit where 16 is expected, 16-bit colour, 12-bit JPEG, signed DICOM);
low/high of different sizes; NaN/inf or out-of-range float TIFFs; a single-energy grey image alone
("single-energy image: a dual-energy pair is needed"); grey 8-bit images; label masks.

What is a scan (``discover``; one rule whether a file is named or found in a folder): files named like a
scan part (``_low.png``, ``_high.png``, ``_rgb.png``, ``.json``, ``.tif(f)``, ``.png``, ``.jpg/.jpeg``,
DICOS extensions) group into scans by id as above; known companions (an owned sidecar or operator image,
``*_mask.png``, ``manifest.jsonl``, ``stats.json``, hidden and temporary files) are silent; any other
file is *unknown* (``Discovery.unknown``: the station prints one line, the exit code is unchanged). A scan
part that cannot be read as a regular file (a FIFO, a device, a socket, a dangling or looping symbolic
link, a directory) makes its scan a ref with a problem — never a hang on a FIFO, never a crash.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from parcelscan.datasets.scans import scanfile
from parcelscan.datasets.scans.colour import pseudocolor_of
from parcelscan.datasets.scans.dicos import (
    DICOS_EXTENSIONS,
    read_dicos,
    read_dicos_header,
    read_dicos_pair,
    write_dicos,
)
from parcelscan.datasets.scans.scanfile import (
    SCAN_FORMAT,
    BitDepthError,
    IncompleteScanError,
    Scan,
    UnsupportedScanError,
    check_file,
    check_size,
    decode_png,
    png_header,
    png_kind,
    read_sidecar_meta,
    read_station_pair,
    read_tiff,
    validate_rgb,
)
from parcelscan.errors import ParcelscanError, ScanReadError

TIFF_EXTENSIONS = (".tif", ".tiff")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
CONVERT_FORMATS = ("pair", "tiff", "dicos", "rgb")
_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".swp", ".crdownload")
# files that travel with scans and are never scans themselves (exact names, lower case)
COMPANION_NAMES = frozenset({"manifest.jsonl", "stats.json"})
# a name ending like this is a scan part: discovery groups it, and if it cannot be read its scan is reported
SCAN_PART_SUFFIXES = ("_low.png", "_high.png", "_rgb.png", ".json", *TIFF_EXTENSIONS, ".png", *JPEG_EXTENSIONS,
                      *DICOS_EXTENSIONS)
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_ERRORS = {cls.__name__: cls for cls in (ScanReadError, scanfile.ScanTooLargeError, BitDepthError,
                                         IncompleteScanError, UnsupportedScanError)}


# --- pseudo-colour images --------------------------------------------------------------------------------
def jpeg_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, precision_bits, components) from the JPEG frame header (SOF), without decoding."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"\xff\xd8":
                raise ScanReadError(f"{path}: not a JPEG file")
            for _ in range(100_000):  # segments and stray bytes before the frame header; bounded
                byte = handle.read(1)
                if not byte:
                    break
                if byte != b"\xff":
                    continue  # extraneous bytes between segments, as libjpeg tolerates
                marker = handle.read(1)
                while marker == b"\xff":  # fill bytes
                    marker = handle.read(1)
                if not marker:
                    break
                code = marker[0]
                if code == 0x01 or 0xD0 <= code <= 0xD7 or code == 0x00:
                    continue  # standalone markers
                if code in (0xD9, 0xDA):
                    raise ScanReadError(f"{path}: corrupt JPEG: image data before any frame header")
                length_bytes = handle.read(2)
                if len(length_bytes) < 2:
                    break
                (length,) = struct.unpack(">H", length_bytes)
                if length < 2:
                    raise ScanReadError(f"{path}: corrupt JPEG segment length")
                if code in _SOF_MARKERS:
                    frame = handle.read(6)
                    if len(frame) < 6:
                        break
                    precision, height, width, components = struct.unpack(">BHHB", frame)
                    return width, height, precision, components
                handle.seek(length - 2, os.SEEK_CUR)
    except OSError as error:
        raise ScanReadError(f"{path}: cannot read: {error.strerror or error}") from error
    raise ScanReadError(f"{path}: truncated or corrupt JPEG (no frame header found)")


def check_jpeg_rgb(path: Path) -> tuple[int, int]:
    """Header checks of a pseudo-colour JPEG: 8-bit, 3 components, within the size limits."""
    width, height, precision, components = jpeg_header(path)
    if height == 0:
        raise UnsupportedScanError(f"{path}: JPEG with its height deferred to a DNL marker is not supported")
    check_size(path, width, height)
    if precision != 8:
        raise BitDepthError(f"{path}: {precision}-bit JPEG; pseudo-colour images are 8-bit")
    if components == 1:
        raise UnsupportedScanError(f"{path}: single-channel grey JPEG: not a pseudo-colour image, and a "
                                   "single-energy image: a dual-energy pair is needed")
    if components != 3:
        raise UnsupportedScanError(f"{path}: JPEG with {components} colour components; RGB (3) is needed")
    return width, height


def check_png_rgb(path: Path) -> tuple[int, int, int]:
    """Header checks of a lone PNG taken as pseudo-colour: 8-bit RGB or RGBA. Returns (width, height, colour)."""
    width, height, bit_depth, colour_type = png_header(path)
    if colour_type == 0 and bit_depth == 16:
        raise UnsupportedScanError(f"{path}: single-energy image: a dual-energy pair is needed (a 16-bit grey PNG "
                                   "alone; name the pair <id>_low.png and <id>_high.png)")
    if colour_type in (2, 6) and bit_depth == 16:
        raise BitDepthError(f"{path}: {png_kind(bit_depth, colour_type)} PNG; pseudo-colour images are 8-bit")
    if colour_type not in (2, 6) or bit_depth != 8:
        raise UnsupportedScanError(f"{path}: {png_kind(bit_depth, colour_type)} PNG is neither a dual-energy pair "
                                   "nor an 8-bit RGB pseudo-colour image")
    return width, height, colour_type


def _rgb_scan_id(path: Path) -> str:
    stem = path.stem
    return stem[: -len("_rgb")] if stem.endswith("_rgb") and len(stem) > 4 else stem


def read_rgb_image(path: Path, scan_id: str | None = None, image_format: str | None = None) -> Scan:
    """A pseudo-colour PNG/JPEG → Scan(kind="pseudo_color"), validated before and after decoding."""
    path = check_file(Path(path))
    image_format = image_format or ("png" if path.suffix.lower() == ".png" else "jpeg")
    if image_format == "png":
        width, height, colour_type = check_png_rgb(path)
        pixels = decode_png(path, width, height)
        if colour_type == 6:
            if pixels.ndim != 3 or pixels.shape[2] != 4:
                raise ScanReadError(f"{path}: truncated or corrupt PNG data")
            if np.any(pixels[..., 3] != 255):
                raise UnsupportedScanError(f"{path}: RGBA image with transparent pixels; an opaque image is needed")
            pixels = np.ascontiguousarray(pixels[..., :3])
    else:
        width, height = check_jpeg_rgb(path)
        with scanfile.decoding(path, "JPEG"), Image.open(path) as image:
            if image.mode != "RGB":
                raise UnsupportedScanError(f"{path}: JPEG decodes to mode {image.mode}; RGB is needed")
            image.load()
            pixels = np.array(image)
        if pixels.shape != (height, width, 3):
            raise ScanReadError(f"{path}: truncated or corrupt JPEG data")
    validate_rgb(pixels, str(path))
    scan_id = scan_id or _rgb_scan_id(path)
    sidecar_path = path.with_name(f"{scan_id}.json")
    meta = read_sidecar_meta(sidecar_path, pixels.shape[:2])
    files = [str(path)] + ([str(sidecar_path)] if sidecar_path.exists() else [])
    return Scan(scan_id, None, None, meta, kind="pseudo_color", rgb=pixels, source_files=files)


# --- one door ------------------------------------------------------------------------------------------
def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as error:
        raise ScanReadError(f"{path}: cannot read: {error.strerror or error}") from error
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicos"
    return None


def _dual_energy_owner(directory: Path, scan_id: str) -> Path | None:
    """The dual-energy scan file of ``scan_id`` in a directory, if any (pair, then TIFF, then DICOS)."""
    names = [f"{scan_id}_low.png", f"{scan_id}_high.png", *(f"{scan_id}{ext}" for ext in TIFF_EXTENSIONS),
             *(f"{scan_id}_{energy}{ext}" for energy in ("low", "high") for ext in DICOS_EXTENSIONS)]
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def load_scan(path: Path | str) -> Scan:
    """Decode any scan file (see the module docstring) into a validated ``Scan``, or raise one
    ``ScanReadError`` naming the file."""
    path = Path(path)
    name, lower = path.name, path.name.lower()
    if path.is_dir():
        raise ScanReadError(f"{path}: is a directory, not a scan file (discover_scans walks directories)")
    if lower.endswith("_mask.png"):
        raise UnsupportedScanError(f"{path}: a label mask, not a scan")
    if lower.endswith(".json"):
        scan_id = path.stem
        owner = _dual_energy_owner(path.parent, scan_id)
        rgb = path.with_name(f"{scan_id}_rgb.png")
        if owner is not None:
            return load_scan(owner)
        if rgb.is_file():
            return read_rgb_image(rgb, scan_id)
        if not path.exists():
            raise ScanReadError(f"{path}: no such file")
        raise IncompleteScanError(f"{path}: sidecar without images: no pair, TIFF, DICOS or RGB image of scan "
                                  f"{scan_id!r} beside it")
    if not path.exists():
        raise ScanReadError(f"{path}: no such file")
    if name.endswith("_low.png"):
        return read_station_pair(path)
    if name.endswith("_high.png"):
        return read_station_pair(path.with_name(f"{name[: -len('_high.png')]}_low.png"), path)
    if name.endswith("_rgb.png"):
        scan_id = name[: -len("_rgb.png")]
        owner = _dual_energy_owner(path.parent, scan_id)
        return load_scan(owner) if owner is not None else read_rgb_image(path, scan_id)
    check_file(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_EXTENSIONS:
        return read_tiff(path)
    if suffix in DICOS_EXTENSIONS:
        return read_dicos(path)
    if suffix == ".png":
        return read_rgb_image(path, image_format="png")
    if suffix in JPEG_EXTENSIONS:
        return read_rgb_image(path, image_format="jpeg")
    content = _sniff(path)
    if content == "tiff":
        return read_tiff(path)
    if content == "dicos":
        return read_dicos(path)
    if content in ("png", "jpeg"):
        return read_rgb_image(path, image_format=content)
    raise UnsupportedScanError(f"{path}: not a scan file (expected a PNG pair, TIFF, DICOS, PNG or JPEG)")


# --- discovery ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanRef:
    """A scan found on disk, not yet decoded: what a station lists before inspecting.

    ``paths``: every file of the scan, the main one first (pair: low, high, then sidecar and operator
    image; DICOS: low, high). ``problem``: what discovery already knows is wrong (half a pair, an
    unreadable DICOS header, a single-energy image …); ``load()`` then raises it as the typed error
    ``error_type``. A ref without a problem can still fail to load (corrupt pixels): ``load()`` decodes.
    ``scan_id`` is the id on disk; a loaded Scan may carry the id stored in its metadata.
    """

    scan_id: str
    kind: str  # "dual_energy" | "pseudo_color" | "unknown"
    format: str  # "pair" | "tiff" | "dicos" | "rgb" | "unknown"
    paths: tuple[Path, ...]
    problem: str | None = None
    error_type: str | None = None  # class name of the error load() raises for ``problem``

    @property
    def ok(self) -> bool:
        return self.problem is None

    def load(self) -> Scan:
        if self.problem is not None:
            raise _ERRORS.get(self.error_type or "", ScanReadError)(self.problem)
        if self.format == "dicos":
            return read_dicos_pair(self.paths[0], self.paths[1])
        return load_scan(self.paths[0])


def not_regular(path: Path) -> str | None:
    """None for a regular file (symbolic links followed); else what it is, in words, for the reason
    of a verdict. Never opens the file: opening a FIFO blocks until a writer comes."""
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        if os.path.islink(path):
            return "a dangling symbolic link"
        if error.errno == errno.ENOENT:
            return "missing"
        return f"not readable ({error.strerror or error})"
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def is_companion(name: str) -> bool:
    """Files that are never scans and need no word: hidden, temporary (a writer still at work), label
    masks, and the manifest/stats files the simulator and dataset tools write beside scans."""
    lower = name.lower()
    return (name.startswith((".", "~", "#")) or name.endswith("~") or lower.endswith(_TEMP_SUFFIXES)
            or lower.endswith("_mask.png") or lower in COMPANION_NAMES)


def is_scan_part_name(name: str) -> bool:
    """Named like a file of a scan (see ``SCAN_PART_SUFFIXES``) and not a known companion."""
    return not is_companion(name) and name.lower().endswith(SCAN_PART_SUFFIXES)


def _problem_ref(scan_id: str, kind: str, fmt: str, paths: Iterable[Path], error: ScanReadError) -> ScanRef:
    return ScanRef(scan_id, kind, fmt, tuple(paths), str(error), type(error).__name__)


def _is_scan_sidecar(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == SCAN_FORMAT


@dataclass
class Discovery:
    """What ``discover`` found: scans (``refs``) and the files that are not scans and not known companions
    (``unknown``: (path, why) — a station says so on stderr, once, and carries on)."""

    refs: list[ScanRef] = field(default_factory=list)
    unknown: list[tuple[Path, str]] = field(default_factory=list)


class _Directory:
    """The files of one directory, sorted into scans; unknown files are collected, unreadable scan parts
    (``broken``: path → what it is) make their scan a problem ref."""

    def __init__(self, directory: Path, names: Iterable[str]) -> None:
        self.directory = directory
        self.lows: dict[str, Path] = {}
        self.highs: dict[str, Path] = {}
        self.rgbs: dict[str, Path] = {}
        self.sidecars: dict[str, Path] = {}
        self.tiffs: list[Path] = []
        self.dicos: list[Path] = []
        self.images: list[Path] = []
        self.broken: dict[Path, str] = {}
        self.unknown: list[tuple[Path, str]] = []
        for name in sorted(set(names)):
            path = directory / name
            if is_companion(name):
                continue
            what = not_regular(path)
            if what == "missing":
                continue  # gone between listing and now (a writer renamed it): nothing to report
            if not is_scan_part_name(name):
                self.unknown.append((path, "not a scan file" if what is None else f"not a scan file ({what})"))
                continue
            if what is not None:
                self.broken[path] = what
            lower, suffix = name.lower(), path.suffix.lower()
            if name.endswith("_low.png"):
                self.lows[name[: -len("_low.png")]] = path
            elif name.endswith("_high.png"):
                self.highs[name[: -len("_high.png")]] = path
            elif name.endswith("_rgb.png"):
                self.rgbs[name[: -len("_rgb.png")]] = path
            elif lower.endswith(".json"):
                self.sidecars[path.stem] = path
            elif suffix in TIFF_EXTENSIONS:
                self.tiffs.append(path)
            elif suffix in DICOS_EXTENSIONS:
                self.dicos.append(path)
            else:  # .png / .jpg / .jpeg
                self.images.append(path)
        self.claimed_sidecars: set[str] = set()
        self.claimed_rgbs: set[str] = set()

    def _extras(self, scan_id: str, with_rgb: bool = True) -> list[Path]:
        extras = []
        if scan_id in self.sidecars:
            extras.append(self.sidecars[scan_id])
            self.claimed_sidecars.add(scan_id)
        if with_rgb and scan_id in self.rgbs and scan_id not in self.claimed_rgbs:
            extras.append(self.rgbs[scan_id])
            self.claimed_rgbs.add(scan_id)
        return extras

    def _checked(self, ref: ScanRef) -> ScanRef:
        """``ref``, or a problem ref when one of its files cannot be read as a regular file."""
        for path in ref.paths:
            if path in self.broken:
                error = ScanReadError(f"{path}: is {self.broken[path]}, not a regular file: this file of scan "
                                      f"{ref.scan_id!r} cannot be read")
                return _problem_ref(ref.scan_id, ref.kind, ref.format, ref.paths, error)
        return ref

    def refs(self) -> list[ScanRef]:
        refs: list[ScanRef] = []
        for scan_id in sorted(set(self.lows) | set(self.highs)):
            low, high = self.lows.get(scan_id), self.highs.get(scan_id)
            present = [p for p in (low, high) if p is not None]
            ref = ScanRef(scan_id, "dual_energy", "pair", tuple(present + self._extras(scan_id)))
            if low is None or high is None:
                missing = f"{scan_id}_low.png" if low is None else f"{scan_id}_high.png"
                energy = "low" if low is None else "high"
                error = IncompleteScanError(f"{present[0]}: the {energy}-energy image {missing} is missing")
                ref = _problem_ref(scan_id, "dual_energy", "pair", ref.paths, error)
            refs.append(self._checked(ref))
        for path in self.tiffs:
            refs.append(self._checked(ScanRef(path.stem, "dual_energy", "tiff", (path, *self._extras(path.stem)))))
        refs.extend(self._dicos_refs())
        for scan_id in sorted(set(self.rgbs) - self.claimed_rgbs):
            refs.append(self._image_ref(self.rgbs[scan_id], scan_id))
        for path in self.images:
            refs.append(self._image_ref(path, path.stem))
        for scan_id in sorted(set(self.sidecars) - self.claimed_sidecars):
            path = self.sidecars[scan_id]
            if path in self.broken:
                refs.append(self._checked(ScanRef(scan_id, "unknown", "unknown", (path,))))
            elif _is_scan_sidecar(path):
                error = IncompleteScanError(f"{path}: sidecar without images: no pair, TIFF, DICOS or RGB image of "
                                            f"scan {scan_id!r} beside it")
                refs.append(_problem_ref(scan_id, "unknown", "unknown", (path,), error))
            else:
                self.unknown.append((path, "not a scan file (JSON that is not a scan sidecar, no scan beside it)"))
        return refs

    def _image_ref(self, path: Path, scan_id: str) -> ScanRef:
        extras = (path, *self._extras(scan_id, False))
        if any(p in self.broken for p in extras):
            return self._checked(ScanRef(scan_id, "unknown", "unknown", extras))
        try:
            if path.suffix.lower() == ".png":
                check_png_rgb(path)
            else:
                check_jpeg_rgb(path)
        except ScanReadError as error:
            return _problem_ref(scan_id, "unknown", "unknown", extras, error)
        return ScanRef(scan_id, "pseudo_color", "rgb", extras)

    def _dicos_refs(self) -> list[ScanRef]:
        refs: list[ScanRef] = []
        groups: dict[tuple, list] = defaultdict(list)
        for path in self.dicos:
            if path in self.broken:
                refs.append(self._checked(ScanRef(path.stem, "unknown", "dicos", (path,))))
                continue
            try:
                header = read_dicos_header(path)
            except ScanReadError as error:
                refs.append(_problem_ref(path.stem, "unknown", "dicos", (path,), error))
                continue
            groups[(header.scan_uid or str(path), header.view)].append(header)
        for members in groups.values():
            lows = [h for h in members if h.energy == "low"]
            highs = [h for h in members if h.energy == "high"]
            if len(lows) == 1 and len(highs) == 1 and len(members) == 2:
                scan_id = lows[0].scan_id
                refs.append(self._checked(ScanRef(scan_id, "dual_energy", "dicos",
                                                  (lows[0].path, highs[0].path, *self._extras(scan_id)))))
                continue
            for header in members:
                if header.energy is None:
                    error: ScanReadError = UnsupportedScanError(
                        f"{header.path}: no energy label (Series Energy 6100,0030/0031): single-energy image: "
                        "a dual-energy pair is needed")
                elif len(members) == 1:
                    want = "high" if header.energy == "low" else "low"
                    error = IncompleteScanError(f"{header.path}: the {want}-energy DX object of this scan (Scan "
                                                f"Instance UID {header.scan_uid or '?'}) is missing")
                else:
                    error = ScanReadError(f"{header.path}: {len(lows)} low- and {len(highs)} high-energy objects share "
                                          f"Scan Instance UID {header.scan_uid}: cannot pair them")
                refs.append(_problem_ref(header.scan_id, "dual_energy", "dicos", (header.path,), error))
        return refs


def _walk(top: Path, failures: list[OSError], exclude: frozenset[str]) -> Iterable[tuple[Path, list[str]]]:
    """(directory, names) under ``top``: files, plus sub-directories named like scan parts (reported as
    such, not entered). Hidden directories and the ``exclude`` real paths are not entered."""
    for directory, dirnames, filenames in os.walk(top, onerror=failures.append):
        scan_parts = [d for d in dirnames if is_scan_part_name(d)]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in scan_parts
                             and os.path.realpath(os.path.join(directory, d)) not in exclude)
        yield Path(directory), filenames + scan_parts


_ID_SUFFIXES = ("_low.png", "_high.png", "_rgb.png", "_mask.png", ".json", ".tiff", ".tif", ".png", ".jpg",
                ".jpeg")


def _scan_siblings(path: Path) -> list[str] | None:
    """The names in a file's directory that can belong to its scan, or None when every file may (a DICOS
    object pairs by UID, whatever its name). Grouping only these keeps a named file — one line of a
    station's stdin list — from costing a walk over a directory of thousands of scans."""
    lower = path.name.lower()
    suffix = next((s for s in _ID_SUFFIXES if lower.endswith(s)), None)
    if suffix is None:
        return None
    prefix = path.name[: -len(suffix)]
    try:
        return [name for name in os.listdir(path.parent) if name.startswith(prefix)]
    except OSError:
        return None


def _named_scan_id(name: str) -> str:
    """The scan id a file name points at (``x_low.png`` → ``x``), for a named file that is not there."""
    lower = name.lower()
    suffix = next((s for s in _ID_SUFFIXES if lower.endswith(s)), None)
    return name[: -len(suffix)] if suffix and len(name) > len(suffix) else Path(name).stem


def scan_key(ref: ScanRef) -> tuple[str, str]:
    """One scan, however it was reached (a directory, any of its files, a link): its format and the real
    path of its main file; named files that are missing key by their folder and scan id (the low and the
    high image of one absent scan are one manual inspection, not two). ``os.path.realpath`` never raises on
    a symbolic link loop (``Path.resolve`` does, which once crashed a whole station run)."""
    main = ref.paths[0]
    if not ref.ok and not os.path.lexists(main):
        return "missing", os.path.join(os.path.realpath(main.parent), ref.scan_id)
    return ref.format, os.path.realpath(main)


def discover(paths: Iterable[Path | str], exclude: Iterable[Path | str] = ()) -> Discovery:
    """Walk files and directories and group their files into scans (see ``ScanRef``), one rule for named
    and found files (module docstring): the same scan is listed once however many of its files are named.

    Pairs group by id (an incomplete pair is reported, never skipped), TIFFs and lone RGB/JPEG images
    are scans of their own, DICOS objects pair by Scan Instance UID. A named file selects the scan it
    belongs to (its partner files are found beside it); a named path that does not exist is a ref with a
    problem; a named companion is silent; a named unknown file goes to ``unknown``. Directories in
    ``exclude`` (e.g. a hot folder's done/ and quarantine/) are not entered.
    """
    excluded = frozenset(os.path.realpath(p) for p in exclude)
    cache: dict[str, tuple[list[ScanRef], list[tuple[Path, str]]]] = {}
    found = Discovery()

    def listed(directory: Path, names: Iterable[str] | None = None) -> tuple[list[ScanRef], list[tuple[Path, str]]]:
        key = os.path.realpath(directory)
        if key not in cache:
            folder = _Directory(directory, os.listdir(directory) if names is None else names)
            cache[key] = (folder.refs(), folder.unknown)
        return cache[key]

    for raw in paths:
        path = Path(raw)
        what = not_regular(path)
        if what == "a directory" and not is_scan_part_name(path.name):
            failures: list[OSError] = []
            for directory, names in _walk(path, failures, excluded):
                refs, unknown = listed(directory, names)
                found.refs.extend(refs)
                found.unknown.extend(unknown)
            for failure in failures:  # an unreadable directory is reported, not silently skipped
                where = Path(failure.filename or path)
                error = ScanReadError(f"{where}: cannot list directory: {failure.strerror or failure}")
                found.refs.append(_problem_ref(where.name, "unknown", "unknown", (where,), error))
            continue
        if is_companion(path.name):
            continue
        if what == "missing" or (what or "").startswith("not readable"):
            why = "no such file or directory" if what == "missing" else what
            found.refs.append(_problem_ref(_named_scan_id(path.name), "unknown", "unknown", (path,),
                                           ScanReadError(f"{path}: {why}")))
            continue
        if not is_scan_part_name(path.name):
            found.unknown.append((path, "not a scan file" if what is None else f"not a scan file ({what})"))
            continue
        candidates = _scan_siblings(path)
        if candidates is None:
            refs = listed(path.parent)[0]
        else:
            refs = _Directory(path.parent, [*candidates, path.name]).refs()
        matches = [ref for ref in refs if any(p.name == path.name for p in ref.paths)]
        found.refs.extend(matches)
        if not matches:
            found.unknown.append((path, "not a scan file"))
    unique: dict[tuple, ScanRef] = {}
    for ref in found.refs:
        unique.setdefault((ref.format, tuple(os.path.realpath(p) for p in ref.paths)), ref)
    found.refs = list(unique.values())
    seen: set[str] = set()
    found.unknown = [(p, why) for p, why in found.unknown if not (str(p) in seen or seen.add(str(p)))]
    return found


def discover_scans(paths: Iterable[Path | str], exclude: Iterable[Path | str] = ()) -> list[ScanRef]:
    """The scans of ``discover`` (unknown files left out: callers that report them use ``discover``)."""
    return discover(paths, exclude).refs


# --- conversion ----------------------------------------------------------------------------------------
def convert_scan(src: Path | str, fmt: str, out_dir: Path | str, profile: str | None = None) -> list[Path]:
    """Write the scan at ``src`` in format ``fmt`` into ``out_dir``; returns the files written.

    ``pair``: ``<id>_low.png``, ``<id>_high.png``, ``<id>.json``; ``tiff``: ``<id>.tiff`` (metadata in
    its description); ``dicos``: ``<id>_low.dcs``, ``<id>_high.dcs`` (metadata in the private scan
    JSON); ``rgb``: the operator image ``<id>_rgb.png`` (pseudo-colour from the pair under the scan's
    profile, or ``profile``) and ``<id>.json``. Pixel values are preserved exactly; every metadata key
    survives pair/tiff/dicos/rgb sidecars. A pseudo-colour scan converts only to ``rgb``.
    """
    if fmt not in CONVERT_FORMATS:
        raise ParcelscanError(f"unknown scan format {fmt!r}: choose one of {', '.join(CONVERT_FORMATS)}")
    src, out_dir = Path(src), Path(out_dir)
    scan = load_scan(src)
    if fmt != "rgb" and scan.kind != "dual_energy":
        raise ParcelscanError(f"{src}: a pseudo-colour scan has no energy channels: it converts only to 'rgb'")
    try:
        scanfile.check_scan_id(scan.scan_id)
    except ValueError as error:
        raise ParcelscanError(f"{src}: cannot write this scan: {error}") from error
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if fmt == "pair":
            files = scanfile.write_station_scan(scan, out_dir)
            return [out_dir / files[key] for key in ("low", "high", "sidecar")]
        if fmt == "tiff":
            path = out_dir / f"{scan.scan_id}.tiff"
            scanfile.write_tiff(scan, path)
            return [path]
        if fmt == "dicos":
            return write_dicos(scan, out_dir)
        rgb = scan.rgb if scan.kind == "pseudo_color" else pseudocolor_of(scan, profile)
        rgb_path, sidecar_path = out_dir / f"{scan.scan_id}_rgb.png", out_dir / f"{scan.scan_id}.json"
        scanfile.write_png(rgb_path, np.ascontiguousarray(rgb))
        scanfile.write_sidecar(sidecar_path, scan)
        return [rgb_path, sidecar_path]
    except OSError as error:
        raise ParcelscanError(f"cannot write to {out_dir}: {error.strerror or error}") from error
