"""The torch Dataset over a manifest: (tensor, label, mask, metadata), through the one preprocessing.

Training items are **one tile per scan** (every model input has the fixed shape (C, tile_rows,
tile_cols)): a suspect's tile is the one holding the most powder (mask pixels); otherwise a tile is
drawn with the item's seeded generator. A tile's label is *suspect only if the tile holds mask pixels*
when the scan's mask is known (a clear scan's mask is known to be empty); with no mask it is the scan
label. So an augmentation that pushes the powder out of the picture, or a tile of a long parcel far
from the powder, is honestly labelled clear.

Evaluation sees **every tile** of a scan: ``prepared(i)`` gives all tiles of scan i (score = max over
tiles, see ``scan_scores``) and ``all_tiles()`` a flat Dataset of (scan, tile) items for batching.

``tile_flips``: flip the chosen tile and its mask along either axis (p = 0.5 each) — the physics
augmentation's flips (a parcel placed mirrored, or travelling the other way round) at no cost, for runs
without physics augmentation. ``cache_root``: keep unaugmented prepared scans on disk
(``datasets.prepared_cache``), so only the first epoch decodes. ``tile_augment``: the physical augmentation
applied to the chosen (cached) dual-energy tile instead of the scan (``datasets.tile_augment``: calibration
residuals, a lower dose, detector blur, belt stretch; ~3 ms instead of 50–90 ms), so a cached CPU run still
sees a new noise realisation of each parcel every epoch.

``twin_policy`` (training only): what a clear scan whose look-alike fill is a dual-energy **twin** of a
target (manifest ``twin_of`` non-empty, from the simulator's ground truth) teaches. ``negative``: an
ordinary clear scan (the behaviour before twins were labelled). ``ignore``: the scan is left out of the
training items altogether — out of the class loss *and* the mask loss, whose all-zero mask would teach the
heatmap to stay cold on exactly the signature it must see. ``positive``: a positive of the signature task —
tile label suspect, no mask loss (the simulator writes no mask of the look-alike), so when a long scan has
several tiles the chosen tile may miss the fill (label noise, stated). ``twin_of`` null/absent (real or
imported scans, older simulations) means *unknown* and is treated as not a twin under every policy.

``crop`` (training only, 0 = off): train on a ``crop × crop`` window of the chosen tile instead of the whole
tile — a quarter of the compute at ``crop = tile / 2``, which is what makes a 2 mm/px recipe fit on 2 CPU
cores. The network is fully convolutional and (``heatmap_topk``) scores the top cells of its heatmap, so
a model trained on windows scores whole tiles at evaluation, where the threshold is chosen. The window
centre is drawn among the tile's powder pixels for a tile holding powder (jittered by up to a quarter
window), else among its non-air pixels with probability rising with the ``a_excess`` channel (excess
low-energy attenuation over water: high-Z fills, metal, look-alikes) — physics-mined hard negatives
instead of windows of air or plain clutter. The window's label follows its mask like a tile's.

Randomness is a function of (seed, epoch, index) only — the same item is identical across runs and
DataLoader worker counts; call ``set_epoch`` each epoch (non-persistent workers) to vary augmentation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from parcelscan.datasets.augment import DEFAULT_NOMINAL_QUANTA, XrayAugment
from parcelscan.datasets.datatools import load_record_input, load_record_mask
from parcelscan.datasets.manifest import LABELS as CLASSES
from parcelscan.datasets.manifest import ManifestRecord, manifest_path, read_manifest
from parcelscan.datasets.prepared_cache import PreparedCache, forget_source_pages
from parcelscan.datasets.preprocess import (
    PreparedScan,
    PreprocessSpec,
    prepare_mask_array,
    prepare_planes,
    scan_hw,
    scan_pitch_mm,
    scan_planes,
)
from parcelscan.datasets.tile_augment import TileAugment
from parcelscan.errors import ParcelscanError

MIN_TILE_MASK_PX = 1.0  # a tile is suspect when it holds at least one model pixel (4 mm²) of powder
TWIN_POLICIES = ("negative", "ignore", "positive")


def is_twin(record: ManifestRecord) -> bool:
    """A clear scan whose look-alike fill is a dual-energy twin of a target; unknown (None) is not a twin."""
    return record.label == "clear" and bool(record.twin_of)


def nominal_quanta(meta: dict[str, Any], provenance: dict[str, Any] | None = None) -> float:
    """Air quanta per pixel of the scan (sidecar, or the simulator's provenance in the manifest), else the
    default profile's: the dose the quantum-noise augmentation lowers from."""
    provenance = provenance or {}
    for value in (meta.get("air_quanta_per_pixel"), provenance.get("air_quanta_per_pixel")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_NOMINAL_QUANTA


@dataclass
class PreparedItem:
    """All tiles of one scan, for evaluation: tiles (T, C, h, w), masks (T, h, w) or None."""

    prepared: PreparedScan
    tiles: torch.Tensor
    masks: torch.Tensor | None
    label: int
    tile_labels: list[int]
    metadata: dict[str, Any]


_FILLING: ScanDataset | None = None  # the dataset ``fill_cache``'s forked processes prepare from


def _fill_one(index: int) -> None:
    _FILLING._fill(index)


class ScanDataset(Dataset):
    """Scans of a manifest (optionally one split) as model inputs of ``spec``.

    ``augment``: physical augmentation in transmission space (``augment.XrayAugment``).
    ``skip_incompatible``: drop pseudo-colour-only records when the spec is dual-energy instead of
    refusing the manifest.
    ``sort_by_scan_id``: items in scan-id order instead of manifest order (training: a set assembled in another
    order then draws the same scans with the same randomness).
    """

    def __init__(self, manifest_or_dir: str | Path, spec: PreprocessSpec, split: str | list[str] | None = None,
                 augment: bool = False, seed: int = 0, augment_config: Any = None,
                 skip_incompatible: bool = False, tile_flips: bool = False, cache_root: str | Path | None = None,
                 twin_policy: str = "negative", crop: int = 0, tile_augment: bool = False,
                 sort_by_scan_id: bool = False):
        path = manifest_path(Path(manifest_or_dir))
        self.root = path.parent
        self.spec = spec
        records = read_manifest(path)
        if sort_by_scan_id:  # the items' randomness is seeded by their index: make it the scan's, not the line's
            records.sort(key=lambda r: r.scan_id)
        if split is not None:
            wanted = {split} if isinstance(split, str) else set(split)
            records = [r for r in records if r.split in wanted]
        if spec.input_kind == "dual_energy":
            rgb_only = [r for r in records if r.kind != "dual_energy"]
            if rgb_only and not skip_incompatible:
                raise ParcelscanError(f"{path}: {len(rgb_only)} pseudo-colour-only scan(s) "
                                      f"(e.g. {rgb_only[0].scan_id}) cannot feed a dual-energy model; "
                                      "pass skip_incompatible=True to drop them")
            records = [r for r in records if r.kind == "dual_energy"]
        if twin_policy not in TWIN_POLICIES:
            raise ParcelscanError(f"twin_policy must be one of {', '.join(TWIN_POLICIES)}, got {twin_policy!r}")
        self.twin_policy = twin_policy
        if crop and (crop < 32 or crop % 32 or crop > min(spec.tile_rows, spec.tile_cols)):
            raise ParcelscanError(f"crop must be 0 or a multiple of 32 within 32 and the tile size, got {crop}")
        self.crop = int(crop)
        self.twins_left_out = sum(is_twin(r) for r in records) if twin_policy == "ignore" else 0
        if twin_policy == "ignore":
            records = [r for r in records if not is_twin(r)]
        if not records:
            raise ParcelscanError(f"{path}: no scans" + (f" in split {split}" if split else ""))
        self.records: list[ManifestRecord] = records
        self.seed = seed
        self.epoch = 0
        self.augmenter = None
        self.tile_flips = tile_flips
        self.cache = None
        if cache_root is not None:
            self.cache = PreparedCache(cache_root, spec)
        if augment:
            self.augmenter = XrayAugment(spec.input_kind, augment_config)
        self.tile_augmenter = TileAugment(spec) if tile_augment else None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _positive_twin(self, index: int) -> bool:
        return self.twin_policy == "positive" and is_twin(self.records[index])

    def scan_label(self, index: int) -> int:
        """0 clear, 1 suspect; a twin under ``twin_policy: positive`` is a suspect of the signature task."""
        return 1 if self._positive_twin(index) else CLASSES.index(self.records[index].label)

    @property
    def labels(self) -> np.ndarray:
        """Scan labels (0 clear, 1 suspect) in dataset order, as trained (see ``scan_label``)."""
        return np.array([self.scan_label(i) for i in range(len(self.records))], dtype=np.int64)

    def rng(self, index: int) -> np.random.Generator:
        varies = self.augmenter is not None or self.tile_augmenter is not None or self.tile_flips
        return np.random.default_rng([self.seed, self.epoch if varies else 0, index])

    # --- decoding and preparation --------------------------------------------------------------
    def _load(self, index: int, rng: np.random.Generator | None) -> tuple[PreparedScan, np.ndarray | None]:
        augmented = self.augmenter is not None and rng is not None
        if self.cache is None or augmented:
            return self._prepare(index, rng if augmented else None)
        return self.cache.fetch(self.records[index], self.root, lambda: self._prepare(index, None))

    def _prepare(self, index: int, rng: np.random.Generator | None) -> tuple[PreparedScan, np.ndarray | None]:
        """Decode and preprocess scan ``index`` (augmented when ``rng`` is given and augmentation is on)."""
        record = self.records[index]
        scan = load_record_input(record, self.root, self.spec.input_kind)
        planes = scan_planes(scan, self.spec)
        mask = load_record_mask(record, self.root, scan_hw(scan))
        if mask is None and self.known_empty(index):
            mask = np.zeros(planes.shape[:2], np.uint8)
        if self.augmenter is not None and rng is not None:
            quanta = nominal_quanta(scan.meta, record.provenance)
            planes, mask = self.augmenter(planes, mask, rng, nominal_quanta=quanta)
        prepared = prepare_planes(planes, scan_pitch_mm(scan, self.spec), self.spec, record.scan_id)
        mask_tiles = prepare_mask_array(mask, prepared.content_shape, self.spec) if mask is not None else None
        return prepared, mask_tiles

    def fill_cache(self, processes: int) -> int:
        """Prepare every scan the cache lacks, in ``processes`` forked processes; returns how many were prepared.

        Why: a run's first epoch otherwise decodes each scan in the loop, one at a time, while the network waits
        (~25 ms a scan; minutes for 20,000 scans on 2 cores). An entry on disk counts as present here; a stale one
        is still recomputed when read. Nothing to do without a cache, or when every item is augmented anew."""
        if self.cache is None or self.augmenter is not None:
            return 0
        missing = [i for i, record in enumerate(self.records) if not self.cache.path(record).exists()]
        if not missing:
            return 0
        if processes <= 1 or len(missing) < 2 * processes:
            for index in missing:
                self._fill(index)
            return len(missing)
        import multiprocessing

        global _FILLING
        _FILLING = self
        try:  # forked children inherit this dataset; each writes its entries atomically
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                for _ in pool.imap_unordered(_fill_one, missing, chunksize=16):
                    pass
        finally:
            _FILLING = None
        return len(missing)

    def _fill(self, index: int) -> None:
        """Prepare scan ``index`` into the cache, then hand its files' pages back: read once, never again, they would
        otherwise take the memory the epochs' cache needs (``prepared_cache.forget_source_pages``)."""
        self._load(index, None)
        forget_source_pages(self.records[index], self.root)

    def known_empty(self, index: int) -> bool:
        """A clear scan without a mask file: its powder mask is known to be empty."""
        record = self.records[index]
        return record.mask is None and record.label == "clear"

    def has_mask(self, index: int) -> bool:
        record = self.records[index]
        if self._positive_twin(index):
            return False  # its fill carries a target's signature; no mask says where: no mask loss
        return record.mask is not None or record.label == "clear"

    def _tile_label(self, index: int, mask_tiles: np.ndarray | None, tile: int) -> int:
        if self._positive_twin(index):
            return 1
        if mask_tiles is not None:
            return int(mask_tiles[tile].sum() >= MIN_TILE_MASK_PX)
        return CLASSES.index(self.records[index].label)

    def metadata(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        return {"index": index, "scan_id": r.scan_id, "scenario": r.scenario, "material": r.material or "",
                "lookalike": r.lookalike or "", "has_mask": self.has_mask(index), "parcel_id": r.parcel_id,
                "source": r.source, "split": r.split or "", "scan_label": CLASSES.index(r.label),
                "twin": is_twin(r)}

    # --- training items ------------------------------------------------------------------------
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor, dict[str, Any]]:
        rng = self.rng(index)
        prepared, mask_tiles = self._load(index, rng)
        n = prepared.n_tiles
        if mask_tiles is not None and mask_tiles.sum() >= MIN_TILE_MASK_PX:
            tile = int(np.argmax(mask_tiles.reshape(n, -1).sum(axis=1)))
        else:
            tile = int(rng.integers(n)) if n > 1 else 0
        image = prepared.tiles[tile]
        tile_mask = mask_tiles[tile] if mask_tiles is not None else None
        row0 = col0 = 0
        if self.crop:
            row0, col0 = self._crop_origin(image, tile_mask, rng)
            image = image[:, row0:row0 + self.crop, col0:col0 + self.crop]
            tile_mask = tile_mask[row0:row0 + self.crop, col0:col0 + self.crop] if tile_mask is not None else None
        if self.tile_augmenter is not None:
            origin = prepared.tile_origins[tile]
            image, tile_mask = self.tile_augmenter(
                image, tile_mask, rng, scan_pixels_per_model_pixel=prepared.scale[0] * prepared.scale[1],
                nominal_quanta=nominal_quanta({}, self.records[index].provenance),
                content_rows=prepared.content_shape[0] - origin[0] - row0,
                content_cols=prepared.content_shape[1] - origin[1] - col0)
        if self._positive_twin(index):
            label = 1
        elif tile_mask is not None:
            label = int(tile_mask.sum() >= MIN_TILE_MASK_PX)
        else:
            label = self._tile_label(index, None, tile)
        if self.tile_flips:
            for axis in (-2, -1):
                if rng.random() < 0.5:
                    image = np.flip(image, axis=axis)
                    tile_mask = np.flip(tile_mask, axis=axis) if tile_mask is not None else None
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if tile_mask is not None:
            mask = torch.from_numpy(np.ascontiguousarray(tile_mask, dtype=np.float32))[None]
        else:
            mask = torch.zeros((1, *image.shape[-2:]), dtype=torch.float32)
        metadata = self.metadata(index) | {"tile_index": tile, "n_tiles": n,
                                           "tile_row0": prepared.tile_origins[tile][0] + row0,
                                           "tile_col0": prepared.tile_origins[tile][1] + col0}
        return image, label, mask, metadata

    def _crop_origin(self, image: np.ndarray, tile_mask: np.ndarray | None,
                     rng: np.random.Generator) -> tuple[int, int]:
        """(row0, col0) of the training window (see the module docstring: powder, else excess-weighted)."""
        rows, cols = image.shape[-2:]
        size = self.crop
        if tile_mask is not None and tile_mask.sum() >= MIN_TILE_MASK_PX:
            candidates = np.flatnonzero(tile_mask > 0)
            centre = int(rng.choice(candidates))
            jitter = rng.integers(-(size // 4), size // 4 + 1, size=2)
            r, c = centre // cols + int(jitter[0]), centre % cols + int(jitter[1])
        else:
            weight = (np.abs(image).sum(axis=0) > 0.05).astype(np.float64)  # non-air (air is 0 in every channel)
            if "a_excess" in self.spec.channels:
                excess = image[self.spec.channels.index("a_excess")]
                weight *= 0.25 + np.clip(excess, 0.0, 4.0)
            total = weight.sum()
            if total > 0:
                centre = int(rng.choice(weight.size, p=(weight / total).ravel()))
                r, c = centre // cols, centre % cols
            else:
                r, c = int(rng.integers(rows)), int(rng.integers(cols))
        row0 = int(np.clip(r - size // 2, 0, rows - size))
        col0 = int(np.clip(c - size // 2, 0, cols - size))
        return row0, col0

    # --- evaluation: every tile -----------------------------------------------------------------
    def prepared(self, index: int) -> PreparedItem:
        """All tiles of scan ``index`` (no augmentation), for scoring with a max over tiles."""
        prepared, mask_tiles = self._load(index, None)
        tile_labels = [self._tile_label(index, mask_tiles, t) for t in range(prepared.n_tiles)]
        return PreparedItem(prepared, torch.from_numpy(prepared.tiles),
                            None if mask_tiles is None else torch.from_numpy(mask_tiles),
                            CLASSES.index(self.records[index].label), tile_labels, self.metadata(index))

    def all_tiles(self) -> TileDataset:
        return TileDataset(self)


class TileDataset(Dataset):
    """Every tile of every scan of a ScanDataset, unaugmented, as (tensor, tile label, mask, metadata).

    Metadata carries ``index`` (the scan) and ``tile_index``; aggregate with ``scan_scores``. Tile counts
    come from decoding each scan once at construction; the last decoded scan is cached, so a sequential
    sampler decodes each scan once more."""

    def __init__(self, scans: ScanDataset):
        self.scans = scans
        self.items: list[tuple[int, int]] = []
        for index in range(len(scans)):
            prepared, _ = scans._load(index, None)
            self.items.extend((index, t) for t in range(prepared.n_tiles))
        self._cache: tuple[int, PreparedItem] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, torch.Tensor, dict[str, Any]]:
        index, tile = self.items[item]
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, self.scans.prepared(index))
        prepared = self._cache[1]
        if prepared.masks is not None:
            mask = prepared.masks[tile][None]
        else:
            mask = torch.zeros((1, *prepared.tiles.shape[2:]), dtype=torch.float32)
        metadata = prepared.metadata | {"tile_index": tile, "n_tiles": prepared.prepared.n_tiles,
                                        "tile_row0": prepared.prepared.tile_origins[tile][0],
                                        "tile_col0": prepared.prepared.tile_origins[tile][1]}
        return prepared.tiles[tile], prepared.tile_labels[tile], mask, metadata


def scan_scores(tile_scores: np.ndarray | torch.Tensor, scan_indices: np.ndarray | torch.Tensor) -> dict[int, float]:
    """Scan score = max over its tiles: {scan index: score}."""
    scores = np.asarray(tile_scores, dtype=np.float64).ravel()
    indices = np.asarray(scan_indices).ravel()
    out: dict[int, float] = {}
    for index, score in zip(indices.tolist(), scores.tolist(), strict=True):
        out[index] = max(out.get(index, -np.inf), score)
    return out


def collate(batch: list[tuple[torch.Tensor, int, torch.Tensor, dict[str, Any]]]) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Stack images (N, C, h, w), labels (N,) int64, masks (N, 1, h, w); metadata stays a list of dicts."""
    images, labels, masks, metadata = zip(*batch, strict=True)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64), torch.stack(masks), list(metadata)


def class_balanced_weights(dataset: ScanDataset, by_scenario: bool = False) -> np.ndarray:
    """Per-sample weights giving each class (and, with ``by_scenario``, each suspect scenario within the
    suspect class) the same total weight. Mean weight 1."""
    keys = []
    for record in dataset.records:
        keys.append((record.label, record.scenario if by_scenario and record.label == "suspect" else ""))
    per_key = Counter(keys)
    per_class = Counter(k[0] for k in per_key)  # number of distinct keys per class
    weights = np.array([1.0 / (per_class[k[0]] * per_key[k]) for k in keys], dtype=np.float64)
    return weights * (len(weights) / weights.sum())


def balanced_sampler(dataset: ScanDataset, num_samples: int | None = None, seed: int = 0,
                     by_scenario: bool = False) -> WeightedRandomSampler:
    """A WeightedRandomSampler over ``class_balanced_weights`` with its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.as_tensor(class_balanced_weights(dataset, by_scenario), dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples or len(dataset), replacement=True, generator=generator)
