"""Scan-level prediction and the screening evaluation report (``parcelscan evaluate``).

One prediction path for training validation, evaluation and (in spirit) the station: every scan goes
through ``prepare_scan`` (the spec stored with the model), all its tiles through the network, and the
scan's score is the **max over tiles** — a powder in any part of the parcel flags the parcel. The
scan-level *margin* ``m = max_tiles(logit_suspect − logit_clear)`` is kept; the suspect probability is
``sigmoid(m / T)`` with the temperature ``T`` fitted on validation (a monotone map, so it never changes
which scans are flagged at a given Pfa, only how honest the probability is). Probabilities are rounded
to float32 — the precision a deployed ONNX model emits — before thresholds are chosen or applied.

Checkpoints (``.pt``) run in PyTorch; ONNX files run in onnxruntime and never import torch, so a
station-only install can evaluate a shipped model. Both read the same logits and share every line of
code after that, which is what makes their numbers comparable.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.datatools import load_record_input, load_record_mask
from parcelscan.datasets.manifest import read_manifest
from parcelscan.datasets.prepared_cache import PreparedCache
from parcelscan.datasets.preprocess import PreprocessSpec, heatmap_to_scan, prepare_mask, prepare_scan, scan_hw
from parcelscan.datasets.scans.colour import pseudocolor_of
from parcelscan.errors import ParcelscanError, ScanReadError
from parcelscan.model.session import open_session, run_in_batches, sha256_sidecar
from parcelscan.training import metrics as M
from parcelscan.training import plots
from parcelscan.training.runs import increment_dir, resolve_device

REPORT_PFAS = (0.01, 0.001)
MASK_EPS = 1e-7
# tile runner: float32 tiles (B, C, H, W) → (logits (B, 2) float32, heatmap probabilities (B, 1, h, w))
TileRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# --- reading manifest records ------------------------------------------------------------------------
# A record's scan is read with ``datasets.datatools.load_record_input`` — the training Dataset's loader: a
# pseudo-colour model reads the record's operator image ``files.rgb``, the picture an RGB-only station exports.
def mask_supervision(record: Any, root: Path, shape: tuple[int, int]) -> tuple[np.ndarray | None, bool]:
    """(mask uint8 or None, has_mask): the mask the mask head is scored against.

    Unlike ``datatools.load_record_mask`` (the mask file, or None), a clear scan without a mask file has a
    *known* all-zero mask (nothing concealed), which is real supervision for the mask head; a suspect scan
    without one (e.g. a station seizure) has none."""
    mask = load_record_mask(record, root, shape)
    if mask is not None:
        return mask, True
    if record.label == "clear":
        return np.zeros(shape, np.uint8), True
    return None, False


# --- the prediction engine --------------------------------------------------------------------------
@dataclass
class ScanOutputs:
    """Per-scan results of :func:`predict_records`, in record order."""

    margins: np.ndarray  # (N,) float64; +inf for an unreadable scan (fail closed)
    n_tiles: np.ndarray
    errors: list[str | None]
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # scan-pixel powder probability
    displays: dict[int, np.ndarray] = field(default_factory=dict)  # operator images for plots
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    mask_bce_sum: float = 0.0
    mask_bce_tiles: int = 0
    mask_dice_sum: float = 0.0
    mask_dice_tiles: int = 0
    seconds: float = 0.0

    @property
    def mask_bce(self) -> float:
        return self.mask_bce_sum / self.mask_bce_tiles if self.mask_bce_tiles else float("nan")

    @property
    def mask_dice(self) -> float:
        return self.mask_dice_sum / self.mask_dice_tiles if self.mask_dice_tiles else float("nan")


@dataclass
class _Prepared:
    index: int
    prepared: Any = None
    mask_tiles: np.ndarray | None = None
    display: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: str | None = None


def _prepare_arrays(record: Any, root: Path, spec: Any, with_masks: bool) -> tuple[Any, np.ndarray | None, Any, Any]:
    """(prepared scan, mask tiles or None, decoded scan, full-size mask or None) of one record."""
    scan = load_record_input(record, root, spec.input_kind)
    prepared = prepare_scan(scan, spec)
    mask = mask_tiles = None
    if with_masks:
        mask, has_mask = mask_supervision(record, root, scan_hw(scan))
        if has_mask:
            mask_tiles = prepare_mask(mask, scan, spec)
    return prepared, mask_tiles, scan, mask


def _prepare_one(index: int, record: Any, root: Path, spec: Any, with_masks: bool, keep: bool,
                 cache: Any = None) -> _Prepared:
    try:
        if cache is not None and not keep:  # kept scans also need the operator image and full-size mask
            prepared, mask_tiles = cache.fetch(record, root, lambda: _prepare_arrays(record, root, spec, True)[:2])
            return _Prepared(index, prepared, mask_tiles if with_masks else None)
        prepared, mask_tiles, scan, mask = _prepare_arrays(record, root, spec, with_masks or keep)
        item = _Prepared(index, prepared, mask_tiles if with_masks else None)
        if keep:
            item.mask = mask
            item.display = _display_image(scan)
        return item
    except (ScanReadError, OSError) as error:
        return _Prepared(index, error=str(error))


def _display_image(scan: Any) -> np.ndarray:
    if getattr(scan, "rgb", None) is not None:
        return np.asarray(scan.rgb, dtype=np.uint8)
    return pseudocolor_of(scan)


def _prefetch(records: Sequence[Any], root: Path, spec: Any, workers: int, with_masks: bool,
              keep: set[int], cache: Any = None) -> Iterator[_Prepared]:
    """Prepared scans in record order; decoding runs in threads (OpenCV and numpy release the GIL)."""
    if workers <= 0:
        for index, record in enumerate(records):
            yield _prepare_one(index, record, root, spec, with_masks, index in keep, cache)
        return
    window = max(2, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for index, record in enumerate(records):
            pending.append(pool.submit(_prepare_one, index, record, root, spec, with_masks, index in keep,
                                           cache))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def _block_max(mask_tiles: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """(T, H, W) coverage → (T, h, w): the largest coverage in each heatmap cell (see losses in train.py)."""
    t, height, width = mask_tiles.shape
    h, w = shape_hw
    if height % h or width % w:
        raise ValueError(f"mask {height}x{width} is not a multiple of the heatmap {h}x{w}")
    return mask_tiles.reshape(t, h, height // h, w, width // w).max(axis=(2, 4))


def mask_losses_numpy(heat_prob: np.ndarray, mask_tiles: np.ndarray) -> tuple[float, int, float, int]:
    """(BCE sum over tiles, tiles, dice-loss sum over tiles with powder, those tiles): same definitions as
    the training loss, so validation and training mask losses are comparable."""
    p = np.clip(heat_prob[:, 0].astype(np.float64), MASK_EPS, 1 - MASK_EPS)
    target = _block_max(mask_tiles, p.shape[1:]).astype(np.float64)
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean(axis=(1, 2))
    positive = target.sum(axis=(1, 2)) > 0
    inter = (p * target).sum(axis=(1, 2))
    dice = 1 - (2 * inter + 1) / (p.sum(axis=(1, 2)) + target.sum(axis=(1, 2)) + 1)
    return float(bce.sum()), int(bce.size), float(dice[positive].sum()), int(positive.sum())


def predict_records(records: Sequence[Any], root: Path, spec: Any, run_tiles: TileRunner, batch_tiles: int = 32,
                    workers: int = 2, keep: Sequence[int] = (), with_masks: bool = False, fail_closed: bool = False,
                    progress: bool = False, desc: str = "predict", cache_root: str | Path | None = None) -> ScanOutputs:
    """Run every record through ``prepare_scan`` → tiles → ``run_tiles``; scan margin = max over tiles.

    ``fail_closed``: an unreadable scan gets margin +inf (flagged, as the station sends it to manual
    inspection) and its error is kept; otherwise the first unreadable scan raises. ``cache_root``: read and
    fill the prepared-scan cache (``datasets.prepared_cache``), as training's per-epoch validation does."""
    start = time.perf_counter()
    n = len(records)
    out = ScanOutputs(np.full(n, np.nan), np.zeros(n, np.int64), [None] * n)
    keep_set = set(keep)
    buffer: list[_Prepared] = []

    def flush() -> None:
        if not buffer:
            return
        tiles = np.concatenate([item.prepared.tiles for item in buffer]).astype(np.float32, copy=False)
        all_logits, all_heat = (np.asarray(a, np.float32) for a in run_in_batches(run_tiles, tiles, batch_tiles))
        offset = 0
        for item in buffer:
            count = item.prepared.n_tiles
            tile_logits, tile_heat = all_logits[offset:offset + count], all_heat[offset:offset + count]
            offset += count
            margin = tile_logits[:, 1].astype(np.float64) - tile_logits[:, 0].astype(np.float64)
            out.margins[item.index] = float(margin.max())
            out.n_tiles[item.index] = count
            if item.mask_tiles is not None:
                bce_sum, bce_n, dice_sum, dice_n = mask_losses_numpy(tile_heat, item.mask_tiles)
                out.mask_bce_sum += bce_sum
                out.mask_bce_tiles += bce_n
                out.mask_dice_sum += dice_sum
                out.mask_dice_tiles += dice_n
            if item.index in keep_set:
                out.heatmaps[item.index] = heatmap_to_scan(tile_heat, item.prepared)
                out.displays[item.index] = item.display
                if item.mask is not None:
                    out.masks[item.index] = item.mask
        buffer.clear()

    cache = None
    if cache_root is not None:
        cache = PreparedCache(cache_root, spec)
    iterator = _prefetch(records, root, spec, workers, with_masks, keep_set, cache)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=n, desc=desc, unit="scan", leave=False, dynamic_ncols=True)
    buffered_tiles = 0
    for item in iterator:
        if item.error is not None:
            if not fail_closed:
                raise ParcelscanError(f"{item.error} (run `parcelscan data check` on the dataset)")
            out.errors[item.index] = item.error
            out.margins[item.index] = math.inf
            continue
        buffer.append(item)
        buffered_tiles += item.prepared.n_tiles
        if buffered_tiles >= batch_tiles:
            flush()
            buffered_tiles = 0
    flush()
    out.seconds = time.perf_counter() - start
    return out


def scan_probabilities(margins: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float32 ``sigmoid(margin / T)`` (an unreadable scan, margin +inf, is 1.0 — always flagged)."""
    return M.sigmoid(np.asarray(margins, np.float64) / temperature).astype(np.float32)


def operating_point(labels: np.ndarray, margins: np.ndarray, target_pfa: float) -> dict[str, float]:
    """Fit the temperature, then the threshold on calibrated float32 probabilities for ``target_pfa``.

    Both are chosen on validation and stored with the model. A threshold above 1 (clear scans
    saturating at probability 1.0) cannot be stored as a probability; it is clipped to 1.0 and the
    measured Pfa, now possibly above target, is reported as ``val_pfa``."""
    labels = np.asarray(labels).astype(bool)
    finite = np.isfinite(margins)
    temperature = M.fit_temperature(labels[finite], margins[finite])
    probabilities = scan_probabilities(margins, temperature)
    threshold = min(1.0, M.threshold_at_pfa(probabilities[~labels], target_pfa))
    pd, pfa = M.rates_at_threshold(labels, probabilities, threshold)
    return {"temperature": temperature, "threshold": threshold, "target_pfa": target_pfa,
            "val_pd": pd, "val_pfa": pfa}


# --- runners ---------------------------------------------------------------------------------------
def torch_runner(model: Any, device: Any = "cpu") -> TileRunner:
    import torch

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, heat = model(torch.from_numpy(np.ascontiguousarray(tiles)).to(device))
            return logits.float().cpu().numpy(), torch.sigmoid(heat.float()).cpu().numpy()

    return run


@dataclass
class LoadedModel:
    runner: TileRunner
    spec: Any
    threshold: float
    temperature: float
    target_pfa: float | None
    info: dict[str, Any]
    kind: str  # "checkpoint" | "onnx"


def load_model_for_eval(path: str | Path, device: str = "auto") -> LoadedModel:
    """A checkpoint (.pt, PyTorch) or an ONNX file (onnxruntime only) behind the same runner interface."""
    path = Path(path)
    if not path.is_file():
        raise ParcelscanError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx":
        session = open_session(path, device=device, verify=sha256_sidecar(path).is_file())
        meta = session.metadata

        def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            _, logits, heat = session.run(tiles)
            return logits, heat

        info = {"name": meta.name, "version": meta.version, "arch": meta.arch, "git_commit": meta.git_commit,
                "data_fingerprint": meta.data_fingerprint, "sha256": session.sha256, "provider": session.provider}
        return LoadedModel(run, PreprocessSpec.from_dict(meta.preprocessing), meta.threshold, meta.temperature,
                           meta.target_pfa, info, "onnx")
    from parcelscan.model.checkpoint import load_checkpoint  # loads torch: evaluating an ONNX file needs none

    model, info = load_checkpoint(path)
    torch_device = resolve_device(device)
    model.to(torch_device)
    if info.get("threshold") is None or info.get("temperature") is None:
        raise ParcelscanError(f"{path}: checkpoint has no operating threshold/temperature (it was saved before "
                              f"validation); evaluate best.pt or last.pt of a finished epoch")
    return LoadedModel(torch_runner(model, torch_device), PreprocessSpec.from_dict(info["preprocessing"]),
                       float(info["threshold"]), float(info["temperature"]), info.get("target_pfa"),
                       {k: info.get(k) for k in ("name", "version", "arch", "git_commit", "data_fingerprint",
                                                 "epoch")}, "checkpoint")


# --- the screening summary ----------------------------------------------------------------------------
def _pd_at(target: float) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, s: M.pd_at_pfa(y, s, target)[0]


MASS_BANDS_G = (20.0, 100.0, 500.0, 2000.0)  # concealed-mass bands of the Pd-by-mass table
MASS_BAND_NAMES = ([f"< {MASS_BANDS_G[0]:g} g"] + [f"{a:g}–{b:g} g" for a, b in itertools.pairwise(MASS_BANDS_G)]
                   + [f"≥ {MASS_BANDS_G[-1]:g} g"])
FRACTION_BAND_NAMES = ["mixed, < 20 %", "mixed, 20–99 %", "pure (100 %)"]


def mass_band(mass_g: float | None) -> str:
    """Concealed mass → a band label; screening states detection per threat quantity."""
    if mass_g is None or not math.isfinite(mass_g):
        return "unknown"
    return MASS_BAND_NAMES[int(np.searchsorted(MASS_BANDS_G, mass_g, side="right"))]


def fraction_band(mass_fraction: float | None) -> str:
    """Share of the target material in its fill: pure powder, or mixed into grout, adhesive, water …"""
    if mass_fraction is None or not math.isfinite(mass_fraction):
        return "unknown"
    if mass_fraction >= 0.999:
        return FRACTION_BAND_NAMES[2]
    return FRACTION_BAND_NAMES[1] if mass_fraction >= 0.2 else FRACTION_BAND_NAMES[0]


def lookalike_fill(record: Any) -> str:
    """What a clear parcel's look-alike is filled with (simulator provenance ``fill``), e.g. barite — the
    material is what decides whether dual-energy physics can tell it from a target powder."""
    if not getattr(record, "lookalike", None):
        return "none"
    return str((getattr(record, "provenance", None) or {}).get("fill") or "unknown")


def _group_rates(scores: np.ndarray, records: Sequence[Any], mask: np.ndarray, attribute: str | Callable[[Any], str],
                 threshold: float, order: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """Rates per group; ``attribute`` is a record attribute name or a function of the record. Groups named
    in ``order`` come first, in that order (bands read best in their natural order), the rest sorted."""
    index = np.nonzero(mask)[0]
    if index.size == 0:
        return {}
    key = attribute if callable(attribute) else (lambda record: getattr(record, attribute))
    rates = M.rates_by_group(scores[index], [key(records[i]) for i in index], threshold)
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(rates.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def twin_mask(records: Sequence[Any]) -> np.ndarray:
    """Clear scans whose look-alike fill is a dual-energy twin of a target (manifest ``twin_of`` non-empty).

    ``twin_of`` null or absent (real or imported scans, simulations older than twin labels) is *unknown*
    and counts as not a twin: such a set's Pfa is the plain Pfa over all clear scans."""
    return np.array([getattr(r, "label", None) == "clear" and bool(getattr(r, "twin_of", None)) for r in records],
                    dtype=bool)


def opaque_fill_mask(records: Sequence[Any]) -> np.ndarray:
    """Clear scans that are not twins and whose look-alike fill is *opaque*: seen only through pixels where the
    beam is stopped (simulator provenance ``fill_signature.opaque``; ``simulator/twins.py``).

    Such a fill shows no R at all, so no image score can tell it from a concealment equally hidden (a cavity
    of lead shot in a cast-iron housing against one of powder). It is not a twin (``twin_of`` [] by the
    ground-truth issue's definition: the station's opaque alarm deals with it), so it counts in the detection
    bar's Pfa; the report names how many of the false alarms at each operating point are such fills, and what
    Pd would be with them set aside, beside (never instead of) the bar's own numbers."""
    def opaque(record: Any) -> bool:
        signature = (getattr(record, "provenance", None) or {}).get("fill_signature") or {}
        return bool(signature.get("opaque"))

    return np.array([getattr(r, "label", None) == "clear" and not getattr(r, "twin_of", None) and opaque(r)
                     for r in records], dtype=bool)


def _wilson_rate(flagged: np.ndarray) -> dict[str, Any]:
    n, k = int(flagged.size), int(np.count_nonzero(flagged))
    low, high = M.wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "n": n, "flagged": k, "ci": [low, high]}


def twin_operating_point(y: np.ndarray, scores: np.ndarray, records: Sequence[Any], threshold: float) -> dict[str, Any]:
    """At one threshold: Pd, Pfa over clear scans that are not twins, the twins' alarm rate (each with a
    Wilson 95 % interval), Pd per scenario and per share of target material (mixtures < 20 % apart)."""
    twins = twin_mask(records)
    flagged = scores >= threshold
    return {"threshold": float(threshold), "pd": _wilson_rate(flagged[y]),
            "pfa_non_twin": _wilson_rate(flagged[~y & ~twins]), "pfa_all_clears": _wilson_rate(flagged[~y]),
            "twin_alarm_rate": _wilson_rate(flagged[twins]),
            "pd_by_scenario": _group_rates(scores, records, y, "scenario", threshold),
            "pd_by_fraction": _group_rates(scores, records, y, lambda r: fraction_band(r.mass_fraction), threshold,
                                           FRACTION_BAND_NAMES),
            "twin_alarm_by_fill": _group_rates(scores, records, twins, lookalike_fill, threshold)}


def twin_summary(labels: np.ndarray, scores: np.ndarray, records: Sequence[Any], threshold: float | None,
                 pfas: Sequence[float] = REPORT_PFAS) -> dict[str, Any]:
    """The detection bar's numbers: Pd at a target Pfa where Pfa is counted on clear scans whose ``twin_of``
    is empty (a twin is physically indistinguishable from a target; see ``twin_mask``), the threshold
    chosen on those clears; the twins' alarm rate at the same threshold; and the same at the stored
    threshold. Rates carry Wilson 95 % intervals (fixed threshold). AUC is against non-twin clears."""
    y = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    twins = twin_mask(records)
    keep = y | ~twins
    unknown = sum(getattr(r, "twin_of", None) is None for r in records if getattr(r, "label", None) == "clear")
    ordinary = ~y & ~twins
    out: dict[str, Any] = {"n_suspect": int(y.sum()), "n_clear_non_twin": int(ordinary.sum()),
                           "n_twin": int(twins.sum()), "n_clear_twin_unknown": int(unknown),
                           "roc_auc_non_twin": M.roc_auc(y[keep], scores[keep]) if ordinary.any() and y.any()
                           else float("nan"), "at_pfa": {}}
    opaque = opaque_fill_mask(records)
    out["n_clear_opaque_fill"] = int(opaque.sum())
    for target in pfas if ordinary.any() else ():  # every clear scan a twin: no Pfa to count, nothing to pick
        t = M.threshold_at_pfa(scores[ordinary], target)
        out["at_pfa"][f"{target:g}"] = {"target_pfa": target, **twin_operating_point(y, scores, records, t),
                                        "false_alarms_opaque_fill": int(np.count_nonzero(scores[opaque] >= t))}
    seen = ordinary & ~opaque
    if opaque.any() and seen.any():
        out["opaque_fill_aside"] = {}
        for target in pfas:
            t = M.threshold_at_pfa(scores[seen], target)
            out["opaque_fill_aside"][f"{target:g}"] = {"target_pfa": target, "threshold": float(t),
                                                      "pd": _wilson_rate(scores[y] >= t),
                                                      "pfa_seen_non_twin": _wilson_rate(scores[seen] >= t)}
    if threshold is not None:
        out["stored"] = twin_operating_point(y, scores, records, threshold)
    return out


def screening_summary(labels: np.ndarray, margins: np.ndarray, records: Sequence[Any], threshold: float,
                      temperature: float, target_pfa: float = 0.01, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Every number of the report (see README "Evaluation"): ranking metrics with bootstrap CIs, Pd at fixed
    Pfa with CIs, both operating points with per-scenario / per-material / per-look-alike rates, ECE."""
    y = np.asarray(labels).astype(bool)
    scores = scan_probabilities(margins, temperature)
    n_clear, n_suspect = int((~y).sum()), int(y.sum())
    if n_clear == 0 or n_suspect == 0:
        raise ParcelscanError(f"evaluation needs clear and suspect scans; got {n_clear} clear, {n_suspect} suspect")
    out: dict[str, Any] = {"n_scans": int(y.size), "n_clear": n_clear, "n_suspect": n_suspect,
                           "pfa_resolution": 1.0 / n_clear, "bootstrap": {"replicates": n_boot, "seed": seed,
                                                                          "confidence": 0.95}}
    for key, function in (("roc_auc", M.roc_auc), ("average_precision", M.average_precision)):
        out[key] = function(y, scores)
        out[f"{key}_ci"] = list(M.bootstrap_ci(function, y, scores, n_boot, seed=seed))
    pfas = sorted({*REPORT_PFAS, target_pfa}, reverse=True)
    out["pd_at_pfa"] = {}
    for pfa_target in pfas:
        pd, pfa, t = M.pd_at_pfa(y, scores, pfa_target)
        out["pd_at_pfa"][f"{pfa_target:g}"] = {
            "pd": pd, "pd_ci": list(M.bootstrap_ci(_pd_at(pfa_target), y, scores, n_boot, seed=seed)),
            "pfa": pfa, "threshold": t, "allowed_false_alarms": M.allowed_false_alarms(n_clear, pfa_target)}
    # The same against ordinary clear parcels only: a simulated test set holds benign look-alikes (barite,
    # zircon, lead shot …) in a share of clear parcels far above a real postal stream, and some are
    # dual-energy-identical to target powders; this separates "confused by a twin" from "confused by a parcel".
    ordinary = ~y & np.array([not getattr(r, "lookalike", None) for r in records], dtype=bool)
    if 0 < ordinary.sum() < n_clear:
        keep = y | ordinary
        out["pd_at_pfa_ordinary_clears"] = {"n_clear": int(ordinary.sum())}
        for pfa_target in pfas:
            pd, pfa, t = M.pd_at_pfa(y[keep], scores[keep], pfa_target)
            out["pd_at_pfa_ordinary_clears"][f"{pfa_target:g}"] = {
                "pd": pd, "pd_ci": list(M.bootstrap_ci(_pd_at(pfa_target), y[keep], scores[keep], n_boot, seed=seed)),
                "pfa": pfa, "threshold": t,
                "allowed_false_alarms": M.allowed_false_alarms(int(ordinary.sum()), pfa_target)}

    def point(t: float) -> dict[str, Any]:
        pd, pfa = M.rates_at_threshold(y, scores, t)
        confusion = M.confusion_at(y, scores, t)
        return {"threshold": t, "pd": pd, "pd_ci": list(M.wilson_interval(confusion["tp"], n_suspect)),
                "pfa": pfa, "pfa_ci": list(M.wilson_interval(confusion["fp"], n_clear)), "confusion": confusion,
                "pd_by_scenario": _group_rates(scores, records, y, "scenario", t),
                "pd_by_material": _group_rates(scores, records, y, "material", t),
                "pd_by_mass": _group_rates(scores, records, y, lambda r: mass_band(r.mass_g), t, MASS_BAND_NAMES),
                "pd_by_fraction": _group_rates(scores, records, y, lambda r: fraction_band(r.mass_fraction), t,
                                               FRACTION_BAND_NAMES),
                "pfa_by_lookalike": _group_rates(scores, records, ~y, "lookalike", t),
                "pfa_by_lookalike_fill": _group_rates(scores, records, ~y, lookalike_fill, t)}

    out["stored_operating_point"] = point(threshold)
    out["twin_aware"] = twin_summary(y, scores, records, threshold, pfas)
    out["target_operating_point"] = {"target_pfa": target_pfa, **point(M.threshold_at_pfa(scores[~y], target_pfa))}
    finite = np.isfinite(margins)
    raw = scan_probabilities(margins, 1.0)
    out["calibration"] = {"temperature": temperature, "ece_uncalibrated": M.expected_calibration_error(y, raw),
                          "ece_calibrated": M.expected_calibration_error(y, scores),
                          "nll_uncalibrated": M.nll_binary(y[finite], margins[finite], 1.0),
                          "nll_calibrated": M.nll_binary(y[finite], margins[finite], temperature),
                          "temperature_fitted_on_this_set": M.fit_temperature(y[finite], margins[finite])}
    return out


# --- the evaluate command --------------------------------------------------------------------------------
def select_split(records: list[Any], split: str, data_dir: Path) -> list[Any]:
    """The records of ``split``; ``all`` takes every record (a test set simulated from its own seed needs no
    split)."""
    if split == "all":
        if not records:
            raise ParcelscanError(f"{data_dir}: the manifest is empty")
        return list(records)
    chosen = [r for r in records if r.split == split]
    if not chosen:
        present = sorted({str(r.split) for r in records})
        hint = ("use --split all for a dataset that is all test data, or run `parcelscan data split`"
                if present == ["None"] else f"splits present: {', '.join(present)}")
        raise ParcelscanError(f"{data_dir}: no scans in split {split!r} ({hint})")
    return chosen


def heatmap_picks(labels: np.ndarray, scores: np.ndarray, count: int = 8) -> list[int]:
    """Scans to show: the most confident suspects, the missed suspects, the highest-scoring clear scans."""
    y = np.asarray(labels).astype(bool)
    suspect, clear = np.nonzero(y)[0], np.nonzero(~y)[0]
    picks = list(suspect[np.argsort(-scores[suspect])][: count // 4])
    picks += list(suspect[np.argsort(scores[suspect])][: count // 4])
    picks += list(clear[np.argsort(-scores[clear])][: count // 4])
    picks += list(clear[np.argsort(scores[clear])][: count - len(picks)])
    return sorted({int(i) for i in picks})


def evaluate(model_path: str | Path, data_dir: str | Path, split: str = "test", name: str = "exp",
             project: str | Path = "runs/evaluate", target_pfa: float = 0.01, device: str = "auto",
             workers: int = 2, batch_tiles: int = 32, n_boot: int = 1000, seed: int = 0, plots: bool = True,
             progress: bool = True, heatmaps: int = 8) -> tuple[Path, dict[str, Any]]:
    """Evaluate a model on one split; writes ``report.md``, ``metrics.json`` and PNG plots."""
    if not 0.0 < target_pfa < 1.0:
        raise ParcelscanError(f"--target-pfa must be in (0, 1), got {target_pfa}")
    data_dir = Path(data_dir)
    records = select_split(read_manifest(data_dir), split, data_dir)
    model = load_model_for_eval(model_path, device)
    labels = np.array([r.label == "suspect" for r in records])
    outputs = predict_records(records, data_dir, model.spec, model.runner, batch_tiles=batch_tiles, workers=workers,
                              fail_closed=True, progress=progress, desc=f"evaluate {split}")
    summary = screening_summary(labels, outputs.margins, records, model.threshold, model.temperature, target_pfa,
                                n_boot, seed)
    errors = [(records[i].scan_id, e) for i, e in enumerate(outputs.errors) if e]
    summary.update({"model": str(model_path), "model_kind": model.kind, "model_info": model.info,
                    "data": str(data_dir), "split": split, "unreadable_scans": len(errors),
                    "seconds": outputs.seconds, "scans_per_second": len(records) / max(outputs.seconds, 1e-9),
                    "input_kind": model.spec.input_kind, "stored_target_pfa": model.target_pfa})
    run_dir = increment_dir(project, name)
    scores = scan_probabilities(outputs.margins, model.temperature)
    if plots:
        _evaluation_plots(run_dir, labels, scores, outputs, records, data_dir, model, summary, heatmaps, workers)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (run_dir / "predictions.csv").write_text(_predictions_csv(records, outputs, scores), encoding="utf-8")
    (run_dir / "report.md").write_text(render_report(summary, errors, plots), encoding="utf-8")
    return run_dir, summary


def _predictions_csv(records: Sequence[Any], outputs: ScanOutputs, scores: np.ndarray) -> str:
    lines = ["scan_id,label,scenario,material,lookalike,margin,probability,tiles,error"]
    for i, r in enumerate(records):
        error = (outputs.errors[i] or "").replace(",", ";").replace("\n", " ")
        lines.append(f"{r.scan_id},{r.label},{r.scenario},{r.material or ''},{r.lookalike or ''},"
                     f"{outputs.margins[i]:.6g},{float(scores[i]):.9g},{int(outputs.n_tiles[i])},{error}")
    return "\n".join(lines) + "\n"


def _evaluation_plots(run_dir: Path, labels: np.ndarray, scores: np.ndarray, outputs: ScanOutputs,
                      records: Sequence[Any], data_dir: Path, model: LoadedModel, summary: dict[str, Any],
                      heatmaps: int, workers: int) -> None:
    marks = {f"Pfa {k}": (v["pfa"], v["pd"]) for k, v in summary["pd_at_pfa"].items()}
    stored = summary["stored_operating_point"]
    marks["stored threshold"] = (stored["pfa"], stored["pd"])
    plots.plot_roc(labels, scores, run_dir / "roc.png", marks)
    plots.plot_pd_vs_pfa(labels, scores, run_dir / "pd_vs_pfa.png", marks)
    plots.plot_confusion(stored["confusion"], run_dir / "confusion_matrix.png",
                         f"stored threshold {stored['threshold']:.4g}")
    plots.plot_reliability(labels, scan_probabilities(outputs.margins, 1.0), scores, run_dir / "calibration.png",
                           model.temperature)
    if heatmaps > 0:
        picks = heatmap_picks(labels, scores, heatmaps)
        chosen = [records[i] for i in picks]
        shown = predict_records(chosen, data_dir, model.spec, model.runner, workers=workers,
                                keep=range(len(chosen)), fail_closed=True)
        plots.plot_heatmap_grid(shown, chosen, scan_probabilities(shown.margins, model.temperature),
                                run_dir / "heatmaps.png", model.threshold)


def _fmt_ci(value: float, ci: Sequence[float], percent: bool = True) -> str:
    if percent:
        return f"{100 * value:.2f} % [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"
    return f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _group_table(title: str, groups: dict[str, dict[str, float]], what: str) -> list[str]:
    if not groups:
        return []
    lines = [f"**{title}**", "", f"| group | n | flagged | {what} (95 % Wilson CI) |", "|---|---:|---:|---|"]
    for key, value in groups.items():
        lines.append(f"| {key} | {value['n']} | {value['flagged']} | "
                     f"{_fmt_ci(value['rate'], (value['ci_low'], value['ci_high']))} |")
    return [*lines, ""]


def _rate(value: dict[str, Any]) -> str:
    if not value["n"]:
        return "— (0/0)"
    return f"{_fmt_ci(value['rate'], value['ci'])} ({value['flagged']}/{value['n']})"


def render_twin_section(tw: dict[str, Any]) -> list[str]:
    """Markdown for ``twin_summary``: the detection bar's way of counting (Pfa on non-twin clears)."""
    lines = ["## Pd at Pfa with twins left out of Pfa", "",
             f"Pfa counted on the {tw['n_clear_non_twin']} clear scans whose `twin_of` is empty "
             f"({tw['n_clear_twin_unknown']} of them unknown, counted as not twins); the {tw['n_twin']} twin-filled "
             f"clear scans are reported as the twin alarm rate. AUC against non-twin clears: "
             f"{tw['roc_auc_non_twin']:.4f}. Intervals: Wilson 95 % at the stated threshold.", "",
             "| operating point | threshold | Pd | Pfa (non-twin clears) | Pfa (all clears) | twin alarm rate |",
             "|---|---|---|---|---|---|"]
    points = [(f"Pfa {100 * float(k):g} % (non-twin)", v) for k, v in tw["at_pfa"].items()]
    if "stored" in tw:
        points.append(("stored threshold", tw["stored"]))
    for name, v in points:
        lines.append(f"| {name} | {v['threshold']:.9g} | {_rate(v['pd'])} | {_rate(v['pfa_non_twin'])} | "
                     f"{_rate(v['pfa_all_clears'])} | {_rate(v['twin_alarm_rate'])} |")
    lines.append("")
    if tw.get("n_clear_opaque_fill"):
        lines += [f"**Opaque look-alikes.** {tw['n_clear_opaque_fill']} of the non-twin clear scans hold a look-alike "
                  "whose fill lies only under pixels where the beam is stopped: no image score can tell them from a "
                  "concealment hidden as deeply, and the station's opaque alarm, not the score, deals with them. "
                  "False alarms that are such fills: "
                  + ", ".join(f"{v.get('false_alarms_opaque_fill', 0)} of {v['pfa_non_twin']['flagged']} at "
                              f"Pfa {100 * float(k):g} %" for k, v in tw["at_pfa"].items()) + ".", ""]
        if tw.get("opaque_fill_aside"):
            lines += ["Beside the bar (not instead of it), with those fills set aside and Pfa counted on the other "
                      "non-twin clears:", "", "| operating point | threshold | Pd | Pfa (non-twin, not opaque) |",
                      "|---|---|---|---|"]
            for k, v in tw["opaque_fill_aside"].items():
                lines.append(f"| Pfa {100 * float(k):g} % | {v['threshold']:.9g} | {_rate(v['pd'])} | "
                             f"{_rate(v['pfa_seen_non_twin'])} |")
            lines.append("")
    for name, v in points:
        lines += _group_table(f"Pd per scenario at {name}", v["pd_by_scenario"], "Pd")
        lines += _group_table(f"Pd per share of target material at {name}", v["pd_by_fraction"], "Pd")
        lines += _group_table(f"Twin alarm rate per fill at {name}", v["twin_alarm_by_fill"], "alarm rate")
    return lines


def render_report(summary: dict[str, Any], errors: Sequence[tuple[str, str]], plots: bool) -> str:
    """The Markdown report: the same numbers as metrics.json, for people."""
    s = summary
    info = s.get("model_info", {})
    lines = [f"# Evaluation of {info.get('name') or s['model']} on {s['data']} ({s['split']})", "",
             f"- model: `{s['model']}` ({s['model_kind']}, arch {info.get('arch')}, version {info.get('version')}, "
             f"git {info.get('git_commit')})",
             f"- input kind: {s['input_kind']}; scans: {s['n_scans']} ({s['n_suspect']} suspect, {s['n_clear']} clear)"
             f"; unreadable: {s['unreadable_scans']} (counted as flagged: the station sends them to manual inspection)",
             f"- Pfa resolution of this set: {100 * s['pfa_resolution']:.3g} % (one false alarm)",
             f"- throughput: {s['scans_per_second']:.1f} scans/s", "",
             "Confidence intervals: 95 %, percentile bootstrap stratified by class "
             f"({s['bootstrap']['replicates']} replicates, seed {s['bootstrap']['seed']}) for metrics that re-pick "
             "the threshold; Wilson intervals for rates at a fixed threshold.", "",
             "## Ranking", "", "| metric | value [95 % CI] |", "|---|---|",
             f"| ROC AUC | {_fmt_ci(s['roc_auc'], s['roc_auc_ci'], percent=False)} |",
             f"| average precision | {_fmt_ci(s['average_precision'], s['average_precision_ci'], percent=False)} |",
             "", "## Pd at fixed Pfa (threshold chosen on this set)", "",
             "| target Pfa | Pd [95 % CI] | measured Pfa | false alarms allowed | threshold |",
             "|---|---|---|---:|---|"]
    for key, v in s["pd_at_pfa"].items():
        lines.append(f"| {100 * float(key):g} % | {_fmt_ci(v['pd'], v['pd_ci'])} | {100 * v['pfa']:.3f} % | "
                     f"{v['allowed_false_alarms']} | {v['threshold']:.9g} |")
    ordinary = s.get("pd_at_pfa_ordinary_clears")
    if ordinary:
        lines += ["", f"Against the {ordinary['n_clear']} clear scans *without* a benign look-alike only (ordinary "
                  "parcels; the set's look-alike share is a stress test, not a postal stream):", "",
                  "| target Pfa | Pd [95 % CI] | measured Pfa | false alarms allowed | threshold |",
                  "|---|---|---|---:|---|"]
        for key, v in ordinary.items():
            if key != "n_clear":
                lines.append(f"| {100 * float(key):g} % | {_fmt_ci(v['pd'], v['pd_ci'])} | {100 * v['pfa']:.3f} % | "
                             f"{v['allowed_false_alarms']} | {v['threshold']:.9g} |")
    for title, key in (("At the model's stored operating threshold (chosen on validation)", "stored_operating_point"),
                       (f"At the threshold giving Pfa {100 * s['target_operating_point']['target_pfa']:g} % on this "
                        "set", "target_operating_point")):
        p = s[key]
        c = p["confusion"]
        lines += ["", f"## {title}", "", f"threshold {p['threshold']:.9g}: Pd {_fmt_ci(p['pd'], p['pd_ci'])}, "
                  f"Pfa {_fmt_ci(p['pfa'], p['pfa_ci'])}", "",
                  "| | flagged suspect | passed clear |", "|---|---:|---:|",
                  f"| suspect (powder) | {c['tp']} | {c['fn']} |", f"| clear | {c['fp']} | {c['tn']} |", ""]
        lines += _group_table("Pd per scenario", p["pd_by_scenario"], "Pd")
        lines += _group_table("Pd per material", p["pd_by_material"], "Pd")
        lines += _group_table("Pd per concealed mass", p.get("pd_by_mass", {}), "Pd")
        lines += _group_table("Pd per share of target material in the fill", p.get("pd_by_fraction", {}), "Pd")
        lines += _group_table("Pfa per look-alike kind (clear scans)", p["pfa_by_lookalike"], "Pfa")
        lines += _group_table("Pfa per look-alike fill material (clear scans)", p.get("pfa_by_lookalike_fill", {}),
                              "Pfa")
    if "twin_aware" in s:
        lines += render_twin_section(s["twin_aware"])
    cal = s["calibration"]
    lines += ["## Calibration", "", f"- temperature (fitted on validation, stored): {cal['temperature']:.4g}; "
              f"the temperature that would fit this set: {cal['temperature_fitted_on_this_set']:.4g}",
              f"- ECE (15 bins): {cal['ece_uncalibrated']:.4f} before, {cal['ece_calibrated']:.4f} after "
              "temperature scaling",
              f"- NLL: {cal['nll_uncalibrated']:.4f} before, {cal['nll_calibrated']:.4f} after", ""]
    if plots:
        lines += ["## Plots", "", "![ROC](roc.png) ![Pd vs Pfa](pd_vs_pfa.png)",
                  "![confusion](confusion_matrix.png) ![calibration](calibration.png)", "",
                  "![heatmaps](heatmaps.png)", ""]
    if errors:
        lines += ["## Unreadable scans", ""] + [f"- {scan_id}: {error}" for scan_id, error in errors[:50]] + [""]
    return "\n".join(lines)


# --- scoring the station's verdicts -------------------------------------------------------------------
UNANALYSED_SCORE = 1.0  # a verdict without a CNN score (manual inspection): flagged at every threshold ≤ 1
def read_verdicts(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, float], float | None,
                                            dict[str, Any]]:
    """``parcelscan inspect`` output (one JSON verdict per line) → ({scan_id: verdict}, {scan_id: score},
    threshold, model), the file read and parsed once.

    Only each verdict's CNN ``score`` is read as the score (the detection bar's method: shield and other reasons
    ignored). A scan the station could not analyse has no score: it is counted as flagged (score 1.0, the
    highest probability, as ``evaluate`` scores an unreadable scan), as the station sends it to manual
    inspection. A scan id seen twice is refused (ambiguous)."""
    verdicts: dict[str, dict[str, Any]] = {}
    scores: dict[str, float] = {}
    threshold = None
    model: dict[str, Any] = {"unanalysed": 0}
    unanalysed = 0
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ParcelscanError(f"cannot read verdicts {path}: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            verdict = json.loads(line)
            scan_id = str(verdict["scan_id"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ParcelscanError(f"{path}:{number}: not a verdict line ({error})") from error
        if scan_id in scores:
            raise ParcelscanError(f"{path}:{number}: scan {scan_id} has two verdicts")
        verdicts[scan_id] = verdict
        score = verdict.get("score")
        analysed = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
        scores[scan_id] = float(score) if analysed else UNANALYSED_SCORE
        unanalysed += not analysed
        if threshold is None and isinstance(verdict.get("threshold"), (int, float)):
            threshold = float(verdict["threshold"])
            model = {**dict(verdict.get("model") or {}), "unanalysed": 0}
    model["unanalysed"] = unanalysed
    return verdicts, scores, threshold, model


def station_summary(records: Sequence[Any], verdicts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Station flag rates (Wilson 95 %) over all clears, non-twin clears, twins and suspects, the share of clears
    flagged per reason class, and suspects flagged per scenario: what a sorting belt sees, every reason counted.
    A flag is any verdict other than ``clear`` (the station issue's definition, in any lane); a line without a
    verdict counts as flagged."""
    flags = {r.scan_id: (verdicts[r.scan_id].get("verdict") != "clear",
                         tuple(str(c) for c in verdicts[r.scan_id].get("reason_classes") or ())) for r in records}
    twins = twin_mask(records)
    suspect = np.array([r.label == "suspect" for r in records])
    flagged = np.array([flags[r.scan_id][0] for r in records])
    out: dict[str, Any] = {"clear_all": _wilson_rate(flagged[~suspect]),
                           "clear_non_twin": _wilson_rate(flagged[~suspect & ~twins]),
                           "twins": _wilson_rate(flagged[twins]), "suspects": _wilson_rate(flagged[suspect])}
    classes = sorted({c for r in records for c in flags[r.scan_id][1]})
    out["clear_by_reason_class"] = {
        c: _wilson_rate(np.array([c in flags[r.scan_id][1] for r in records])[~suspect]) for c in classes}
    scenarios = sorted({str(r.scenario) for r in records if r.label == "suspect"})
    out["suspects_by_scenario"] = {
        s: _wilson_rate(flagged[suspect & np.array([str(r.scenario) == s for r in records])]) for s in scenarios}
    return out


def render_station_section(st: dict[str, Any]) -> list[str]:
    """Markdown for ``station_summary``."""
    lines = ["## Station flags (any non-clear verdict, every reason class)", "",
             "| parcels | flagged |", "|---|---|",
             f"| clear, all (twins included) | {_rate(st['clear_all'])} |",
             f"| clear without a twin fill | {_rate(st['clear_non_twin'])} |",
             f"| clear with a twin fill | {_rate(st['twins'])} |",
             f"| suspect | {_rate(st['suspects'])} |", "",
             "| reason class | share of clear parcels carrying it |", "|---|---|"]
    lines += [f"| {c} | {_rate(v)} |" for c, v in st["clear_by_reason_class"].items()]
    lines += ["", "| suspect scenario | flagged |", "|---|---|"]
    lines += [f"| {s} | {_rate(v)} |" for s, v in st["suspects_by_scenario"].items()]
    return [*lines, ""]


MEASURED_ROW = "grams measured (the beam crosses every body)"
LOWER_BOUND_ROW = "grams a lower bound (the beam stopped over part of a body)"


def mass_error(verdict: dict[str, Any], true_g: float) -> float:
    """The declaration issue's mass error of one pure-powder suspect: |Σ ``powder_mass_g`` − true| / true, and 1.0
    (a miss) when the verdict weighs no body."""
    bodies = verdict.get("powder_mass_g") or []
    return abs(sum(float(b) for b in bodies) - true_g) / true_g if bodies else 1.0


def declaration_summary(records: Sequence[Any], verdicts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The declaration issue's measures from the station's verdicts: ``declaration_check.status`` present,
    ``mismatch`` rates (Wilson 95 %) for clear parcels with a declaration and for suspects by how they were
    declared (false naming no twin, declared as a twin, honest), and the error of ``powder_mass_g`` on pure-powder
    suspects (|Σ bodies − true| / true; a suspect without an estimate counts as 100 %) overall, per scenario, and
    apart for the scans whose grams are measured and those where they are a lower bound (a body behind a partly
    stopped beam, ``powder_mass_lower_bound``; verdicts that carry it). None for a set without declarations in its
    manifest."""
    if not any(getattr(r, "declaration_honest", None) is not None for r in records):
        return None

    def mismatch(keep: Callable[[Any], bool]) -> dict[str, Any]:
        chosen = [r for r in records if keep(r)]
        return _wilson_rate(np.array([(verdicts[r.scan_id].get("declaration_check") or {}).get("status")
                                      == "mismatch" for r in chosen], dtype=bool))

    declared = [r for r in records if getattr(r, "declaration_honest", None) is not None]
    out: dict[str, Any] = {
        "status_present": sum(bool((verdicts[r.scan_id].get("declaration_check") or {}).get("status"))
                              for r in records),
        "n_scans": len(records), "n_declared": len(declared),
        "mismatch": {
            "clear_declared": mismatch(lambda r: r.label == "clear" and r.declaration_honest is not None),
            "suspect_false_no_twin": mismatch(lambda r: r.label == "suspect" and r.declaration_honest is False
                                              and not r.declaration_names_twin),
            "suspect_declared_as_twin": mismatch(lambda r: r.label == "suspect" and bool(r.declaration_names_twin)),
            "suspect_honest": mismatch(lambda r: r.label == "suspect" and r.declaration_honest is True)}}
    errors: dict[str, list[float]] = {}
    for r in records:
        if r.label != "suspect" or r.mass_fraction != 1.0 or not r.mass_g:
            continue
        verdict = verdicts[r.scan_id]
        bodies = verdict.get("powder_mass_g") or []
        error = mass_error(verdict, r.mass_g)
        errors.setdefault("all", []).append(error)
        errors.setdefault(str(r.scenario), []).append(error)
        bounds = verdict.get("powder_mass_lower_bound")
        if bodies and isinstance(bounds, list):  # what the number is: a measurement, or a lower bound
            errors.setdefault(LOWER_BOUND_ROW if any(bounds) else MEASURED_ROW, []).append(error)
    out["mass_error"] = {key: {"n": len(v), "median": float(np.median(v)), "p90": float(np.quantile(v, 0.9)),
                               "without_estimate": sum(e == 1.0 for e in v)} for key, v in sorted(errors.items())}
    return out


def render_declaration_section(dc: dict[str, Any]) -> list[str]:
    """Markdown for ``declaration_summary``."""
    names = {"clear_declared": "clear parcels with a declaration",
             "suspect_false_no_twin": "suspects, false declaration naming no twin",
             "suspect_declared_as_twin": "suspects declared as a benign twin",
             "suspect_honest": "suspects declared honestly"}
    lines = ["## Declaration check", "",
             f"`declaration_check.status` present in {dc['status_present']} of {dc['n_scans']} verdicts; "
             f"{dc['n_declared']} parcels carry a declaration.", "",
             "| parcels | `mismatch` |", "|---|---|"]
    lines += [f"| {names[k]} | {_rate(v)} |" for k, v in dc["mismatch"].items()]
    lines += ["", "| pure-powder suspects | n | median error of `powder_mass_g` | 90th percentile | without estimate |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {100 * v['median']:.1f} % | {100 * v['p90']:.1f} % | {v['without_estimate']} |"
              for k, v in dc["mass_error"].items()]
    return [*lines, ""]


def evaluate_verdicts(verdicts: str | Path, data_dir: str | Path, split: str = "all", name: str = "exp",
                      project: str | Path = "runs/evaluate", n_boot: int = 1000, seed: int = 0) -> tuple[Path, dict]:
    """Score a labelled set from the station's own verdicts (``parcelscan inspect DIR > verdicts.jsonl``):
    AUC, Pd at Pfa 1 % / 0.1 % with Pfa on non-twin clears, twin alarm rate, per scenario and mixture band,
    at those thresholds and at the model's stored one (the verdicts' ``threshold``). Every scan of the split
    must have a verdict."""
    data_dir = Path(data_dir)
    records = select_split(read_manifest(data_dir), split, data_dir)
    lines, by_id, threshold, model = read_verdicts(verdicts)
    missing = [r.scan_id for r in records if r.scan_id not in by_id]
    if missing:
        raise ParcelscanError(f"{verdicts}: no verdict for {len(missing)} scan(s) of {data_dir} (e.g. {missing[0]})")
    y = np.array([r.label == "suspect" for r in records])
    scores = np.array([by_id[r.scan_id] for r in records], dtype=np.float64)
    twins = twin_mask(records)
    keep = y | ~twins
    summary: dict[str, Any] = {
        "verdicts": str(verdicts), "data": str(data_dir), "split": split, "model_info": model,
        "n_scans": int(y.size), "n_suspect": int(y.sum()), "n_clear": int((~y).sum()),
        "unanalysed_scans": int(model.pop("unanalysed")),
        "roc_auc_non_twin_ci": list(M.bootstrap_ci(M.roc_auc, y[keep], scores[keep], n_boot, seed=seed)),
        "twin_aware": twin_summary(y, scores, records, threshold),
        "station": station_summary(records, lines),
        "declaration": declaration_summary(records, lines)}
    run_dir = increment_dir(project, name)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tw = summary["twin_aware"]
    lines = [f"# Station verdicts {verdicts} scored against {data_dir} ({split})", "",
             f"- model: {model.get('name')} {model.get('version')} (sha256 {str(model.get('sha256'))[:12]}); "
             f"stored threshold {threshold}",
             f"- scans: {summary['n_scans']} ({summary['n_suspect']} suspect, {summary['n_clear']} clear, of which "
             f"{tw['n_twin']} twin-filled); not analysed (flagged): {summary['unanalysed_scans']}",
             f"- ROC AUC against non-twin clears: {tw['roc_auc_non_twin']:.4f} "
             f"[{summary['roc_auc_non_twin_ci'][0]:.4f}, {summary['roc_auc_non_twin_ci'][1]:.4f}] "
             f"(stratified bootstrap, {n_boot} replicates)", "", *render_twin_section(tw),
             *render_station_section(summary["station"]),
             *(render_declaration_section(summary["declaration"]) if summary["declaration"] else [])]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir, summary
