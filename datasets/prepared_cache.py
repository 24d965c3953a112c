"""An on-disk cache of *prepared* scans (model tiles + mask tiles), so training epochs skip decoding.

Decoding two noisy 16-bit PNGs and preprocessing them costs ~20–30 ms of CPU per scan; a training run
on a 2-core machine that re-decodes 20,000 scans every epoch spends as much time there as in the
network. When physics augmentation is off, what an epoch needs of a scan is always the same array, so it
is computed once — by the one preprocessing (``preprocess.prepare_planes``), never a copy of it — and
stored as exact float32 ``.npy`` arrays.

Layout: ``<cache root>/prepared-<spec fingerprint>/<scan_id>.npz``. An entry is valid only for the
same spec (the fingerprint names the folder) and the same source files: each entry stores a key of the
record's file names, sizes and modification times, and a changed file makes it a miss. Writes are atomic
(temporary file + rename), so DataLoader workers may fill the cache concurrently and a killed run leaves
no torn entry. Delete the folder to reclaim the space; nothing else refers to it.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.preprocess import PreparedScan, PreprocessSpec

CACHE_FORMAT = 1
DEFAULT_CACHE_DIRNAME = ".cache"


def default_cache_root(data_root: Path) -> Path:
    """``<dataset>/.cache``: beside the data it describes, ignored by the manifest tools."""
    return Path(data_root) / DEFAULT_CACHE_DIRNAME


def _record_paths(record: Any) -> list[str]:
    names = [str(v) for _, v in sorted(record.files.items()) if v]
    if record.mask:
        names.append(str(record.mask))
    return names


def source_key(record: Any, root: Path) -> str:
    """Hash of the record's file names, sizes and modification times (a missing file → a fresh key)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{record.scan_id}|{record.label}".encode())
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
        return self.directory / f"{record.scan_id}.npz"

    def get(self, record: Any, data_root: Path) -> tuple[PreparedScan, np.ndarray | None] | None:
        path = self.path(record)
        try:
            with np.load(path, allow_pickle=False) as entry:
                if str(entry["key"]) != source_key(record, data_root):
                    return None
                tiles = entry["tiles"]
                masks = entry["mask_tiles"] if bool(entry["has_mask"]) else None
                prepared = PreparedScan(
                    scan_id=record.scan_id, tiles=tiles,
                    tile_origins=[(int(r), int(c)) for r, c in entry["tile_origins"]],
                    scale=(float(entry["scale"][0]), float(entry["scale"][1])),
                    scan_shape=(int(entry["scan_shape"][0]), int(entry["scan_shape"][1])),
                    content_shape=(int(entry["content_shape"][0]), int(entry["content_shape"][1])),
                    padded_shape=(int(entry["padded_shape"][0]), int(entry["padded_shape"][1])),
                    input_kind=str(entry["input_kind"]))
                return prepared, masks
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
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
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(temporary, key=np.array(source_key(record, data_root)),
                 tiles=np.ascontiguousarray(prepared.tiles, dtype=np.float32),
                 has_mask=np.array(mask_tiles is not None),
                 mask_tiles=np.zeros((0,), np.float32) if mask_tiles is None
                 else np.ascontiguousarray(mask_tiles, dtype=np.float32),
                 tile_origins=np.array(prepared.tile_origins, dtype=np.int64).reshape(-1, 2),
                 scale=np.array(prepared.scale, dtype=np.float64),
                 scan_shape=np.array(prepared.scan_shape, dtype=np.int64),
                 content_shape=np.array(prepared.content_shape, dtype=np.int64),
                 padded_shape=np.array(prepared.padded_shape, dtype=np.int64),
                 input_kind=np.array(prepared.input_kind))
        os.replace(temporary, path)
