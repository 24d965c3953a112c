"""An on-disk cache of *prepared* scans (model tiles + mask tiles), so training epochs skip decoding.

Decoding two noisy 16-bit PNGs and preprocessing them costs ~20–30 ms of CPU per scan; a training run
on a 2-core machine that re-decodes 20,000 scans every epoch spends as much time there as in the
network. When physics augmentation is off, what an epoch needs of a scan is always the same array, so it
is computed once — by the one preprocessing (``preprocess.prepare_planes``), never a copy of it — and
stored as its exact float32 bytes.

Layout: ``<cache root>/prepared-<spec fingerprint>/<scan_id>.prepared``: one JSON line (the source key, the
geometry of the prepared scan, the arrays' shapes and how their bytes are stored), then the model tiles and the mask
tiles as little-endian float32 bytes, the mask tiles deflated (format 3). Why not ``.npz``: an epoch reads every
entry, and numpy's zip members cost ~0.2 ms each to open and parse, 2.7 ms an entry of 10 members against 0.23 ms
for one read of this file (session 18; batch making was then 22 % of a training step on 2 cores). Why the masks are
deflated: they are a quarter of an entry's bytes and almost all zeros (a clear parcel's are all zeros), 127 kB a
scan that deflate to under 1 kB (stress 424242, session 23) — a cache of 34,560 training scans is 13 GB instead of
17.6 GB, which is the difference between epochs read from memory and epochs read from disk on a 24 GiB machine. The
tiles are noise-filled floats that deflate by only ~20 %, so they stay raw. Deflate is lossless: the arrays read
back are the bytes written, and a run trains on exactly the same numbers with either format. Format-2 entries (all
raw) are still read. An entry is valid only for the
same spec (the fingerprint names the folder) and the same source files: each entry stores a key of the
record's file names, sizes and modification times, and a changed file makes it a miss; so does an entry whose
bytes do not match its header (a torn or foreign file is recomputed). Writes are atomic
(temporary file + rename), so DataLoader workers may fill the cache concurrently and a killed run leaves
no torn entry. Delete the folder to reclaim the space; nothing else refers to it (format 1's ``.npz`` entries
are no longer read).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.preprocess import PreparedScan, PreprocessSpec

CACHE_FORMAT = 3  # 3: the mask tiles deflated; 2: one JSON line + raw float32 bytes (still read); 1: .npz
KEY_VERSION = 2  # what the source key hashes (not how the entry is laid out): format 2 and 3 entries share it
MASK_DEFLATE_LEVEL = 1  # zlib level: zeros deflate as well at 1 as at 9, ~10 times faster to write
SUFFIX = ".prepared"
_FLOAT32 = np.dtype("<f4")
DEFAULT_CACHE_DIRNAME = ".cache"


def default_cache_root(data_root: Path) -> Path:
    """``<dataset>/.cache``: beside the data it describes, ignored by the manifest tools."""
    return Path(data_root) / DEFAULT_CACHE_DIRNAME


def _record_paths(record: Any) -> list[str]:
    names = [str(v) for _, v in sorted(record.files.items()) if v]
    if record.mask:
        names.append(str(record.mask))
    return names


def forget_source_pages(record: Any, root: Path) -> None:
    """Ask the kernel to drop the record's source files from the page cache (``posix_fadvise`` DONTNEED; a no-op where
    the platform lacks it, and nothing changes but memory). Why: filling the cache reads every training scan once
    (31 GB for the dual recipe) and never again, yet those pages, touched twice (written by the simulator, read by the
    fill), outrank the cache's own entries, which every epoch reads. On a 24 GiB machine the epochs then read part of
    the cache from disk (session 23: 6-19 MB/s and up to 30 % I/O wait, one epoch at 74 img/s against 118)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for name in _record_paths(record):
        try:
            descriptor = os.open(root / name, os.O_RDONLY)
        except OSError:
            continue
        try:
            advise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def source_key(record: Any, root: Path) -> str:
    """Hash of the record's file names, sizes and modification times (a missing file → a fresh key)."""
    digest = hashlib.sha256(f"{KEY_VERSION}|{record.scan_id}|{record.label}".encode())
    for name in _record_paths(record):
        try:
            stat = (root / name).stat()
            digest.update(f"|{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"|{name}:missing".encode())
    return digest.hexdigest()[:32]


class PreparedCache:
    """``get``/``put`` of (PreparedScan, mask tiles or None) for one spec under ``root``."""

    def __init__(self, root: str | Path, spec: PreprocessSpec):
        self.spec = spec
        self.directory = Path(root) / f"prepared-{spec.fingerprint()}"

    def path(self, record: Any) -> Path:
        return self.directory / f"{record.scan_id}{SUFFIX}"

    def get(self, record: Any, data_root: Path) -> tuple[PreparedScan, np.ndarray | None] | None:
        """The entry of ``record``; None when absent, stale (another source key) or not a whole entry."""
        try:
            with open(self.path(record), "rb") as handle:
                header = json.loads(handle.readline())
                if header.get("key") != source_key(record, data_root):
                    return None
                if header.get("format") not in (2, 3):
                    return None
                tiles = _read_floats(handle, header["tiles_shape"])
                deflated = header["mask_deflated_bytes"] if header["format"] == 3 else None  # format 2: raw
                masks = None if header["mask_shape"] is None else _read_floats(handle, header["mask_shape"], deflated)
                if handle.read(1):
                    return None  # more bytes than its header says: not an entry this code wrote
            prepared = PreparedScan(
                scan_id=record.scan_id, tiles=tiles,
                tile_origins=[(int(r), int(c)) for r, c in header["tile_origins"]],
                scale=(float(header["scale"][0]), float(header["scale"][1])),
                scan_shape=(int(header["scan_shape"][0]), int(header["scan_shape"][1])),
                content_shape=(int(header["content_shape"][0]), int(header["content_shape"][1])),
                padded_shape=(int(header["padded_shape"][0]), int(header["padded_shape"][1])),
                input_kind=str(header["input_kind"]))
            return prepared, masks
        except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, zlib.error):
            return None  # absent or unreadable: recompute (and overwrite)

    def fetch(self, record: Any, data_root: Path,
              prepare: Callable[[], tuple[PreparedScan, np.ndarray | None]]) -> tuple[PreparedScan, np.ndarray | None]:
        """The cached entry, else ``prepare()`` stored and returned (its errors propagate, nothing is stored)."""
        hit = self.get(record, data_root)
        if hit is not None:
            return hit
        prepared, mask_tiles = prepare()
        self.put(record, data_root, prepared, mask_tiles)
        return prepared, mask_tiles

    def put(self, record: Any, data_root: Path, prepared: PreparedScan, mask_tiles: np.ndarray | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(record)
        tiles = np.ascontiguousarray(prepared.tiles, dtype=_FLOAT32)
        masks = None if mask_tiles is None else np.ascontiguousarray(mask_tiles, dtype=_FLOAT32)
        deflated = None if masks is None else zlib.compress(masks.tobytes(), MASK_DEFLATE_LEVEL)
        header = {"format": CACHE_FORMAT, "key": source_key(record, data_root), "input_kind": prepared.input_kind,
                  "tiles_shape": list(tiles.shape), "mask_shape": None if masks is None else list(masks.shape),
                  "mask_deflated_bytes": None if deflated is None else len(deflated),
                  "tile_origins": [[int(r), int(c)] for r, c in prepared.tile_origins],
                  "scale": [float(prepared.scale[0]), float(prepared.scale[1])],
                  "scan_shape": [int(v) for v in prepared.scan_shape],
                  "content_shape": [int(v) for v in prepared.content_shape],
                  "padded_shape": [int(v) for v in prepared.padded_shape]}
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{SUFFIX}")
        with open(temporary, "wb") as handle:
            handle.write(json.dumps(header).encode() + b"\n")
            handle.write(tiles.tobytes())
            if deflated is not None:
                handle.write(deflated)
        os.replace(temporary, path)


def _read_floats(handle: Any, shape: list[int], deflated_bytes: int | None = None) -> np.ndarray:
    """The next float32 array of ``shape`` from ``handle``, writable: its raw bytes, or ``deflated_bytes`` bytes that
    inflate to exactly them (a short read, or a stream that inflates to another length, raises ValueError)."""
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"negative shape {shape}")
    size = int(np.prod(shape, dtype=np.int64)) * _FLOAT32.itemsize
    if deflated_bytes is None:
        buffer = bytearray(size)
        if handle.readinto(buffer) != len(buffer):
            raise ValueError("entry shorter than its header says")
    else:
        stream = handle.read(int(deflated_bytes))
        if len(stream) != int(deflated_bytes):
            raise ValueError("entry shorter than its header says")
        inflater = zlib.decompressobj()
        buffer = bytearray(inflater.decompress(stream, size + 1))
        if len(buffer) != size or not inflater.eof or inflater.unused_data:
            raise ValueError("deflated array of another length than its header says")
    return np.frombuffer(buffer, dtype=_FLOAT32).reshape(shape)
