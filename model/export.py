"""Checkpoint → one self-contained ONNX file a station can trust.

What ``export_checkpoint`` does, in order, and why:

1. Wraps the eval-mode network (with its test-time flips, when its configuration has them: the views are in the
   graph) so the file's outputs are what a station needs: ``suspect_probability`` (N,) —
   softmax of the temperature-scaled logits, class 1 —, the raw ``logits`` (N, 2), and ``heatmap``
   (N, 1, h, w) as sigmoid probabilities. Input ``scan`` (N, C, tile_rows, tile_cols) float32 with a
   dynamic batch axis and dynamic rows/columns (the backbone is fully convolutional with global
   pooling; the parity check runs a second tile size to prove it).
2. Exports with PyTorch's TorchScript-based exporter at opset 17 (why not the ``torch.export`` one: see
   ``export_onnx``), weights embedded (no external-data file), ``metadata_props`` per ``model.metadata``.
3. **Parity**: torch and onnxruntime on the *same tiles of real scans* (``prepare_scan`` of scans read
   from disk), max abs difference per output printed; above tolerance the export fails and no file is
   left behind.
4. ``--int8``: static QDQ quantisation (onnxruntime.quantization, per-channel int8 weights, uint8
   activations, MinMax calibration on tiles of labelled scans), then Pd/Pfa of FP32 and INT8 on scans
   *not* used for calibration, at the model's operating threshold and at its target Pfa. Refused when
   it costs more than ``MAX_INT8_PD_LOSS_POINTS`` of Pd at the operating point, or moves that point by
   raising Pfa at the model's threshold more than ``MAX_INT8_PFA_RISE_POINTS`` (a quantised model
   whose scores drift upwards "gains" Pd by false alarms: measured on an early checkpoint, Pd 8 % → 33 %
   and Pfa 1.2 % → 9.6 % at the same threshold), or when it is not
   ≥ 10 % faster than FP32 on this CPU at the station's batch sizes, 1 and 8 (interleaved timing;
   batch 32 reported too).
5. Writes the file atomically and ``<file>.sha256`` beside it (``sha256sum`` format).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.manifest import LABELS
from parcelscan.datasets.preprocess import PreprocessSpec, prepare_scan
from parcelscan.datasets.scans.readers import discover_scans
from parcelscan.errors import ParcelscanError
from parcelscan.model.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata, git_commit
from parcelscan.model.operating_point import pd_at_pfa, rates_at_threshold
from parcelscan.model.session import inference_session, read_metadata, run_in_batches, write_sha256
from parcelscan.model.signing import signature_path

OPSET = 17
DEFAULT_TOLERANCE = 1e-4  # max |Δ| of probabilities (suspect_probability, heatmap); logits: relative to their scale
MAX_INT8_PD_LOSS_POINTS = 0.5
MAX_INT8_PFA_RISE_POINTS = 0.5
MIN_INT8_SPEEDUP = 1.10  # INT8 must be ≥ 10 % faster at the station's batch sizes to be worth its risk
STATION_BATCHES = (1, 8)  # one parcel per call, and `inspect --batch 8` (its default); 32 is reported too
PARITY_MAX_SCANS = 16
CALIBRATION_MAX_SCANS = 64


# --- the exported graph --------------------------------------------------------------------------------
def wrap_for_export(model, temperature: float):
    """nn.Module: scan → (suspect_probability, logits, heatmap), the ONNX contract's outputs."""
    import torch
    from torch import nn

    class ExportWrapper(nn.Module):
        def __init__(self, net: nn.Module, temperature: float) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("inv_temperature", torch.tensor(1.0 / float(temperature)))

        def forward(self, scan: torch.Tensor):
            logits, heatmap_logits = self.net(scan)
            probability = torch.softmax(logits * self.inv_temperature, dim=1)[:, 1]
            return probability, logits, torch.sigmoid(heatmap_logits)

    return ExportWrapper(model, temperature).eval()


def read_operating_point(result: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """(threshold, target Pfa, what to keep in the model's metrics) of a ``python -m parcelscan.training.calibrate
    --json`` result; the model path it names is dropped (the model file is the one it goes into)."""
    try:
        threshold, target_pfa = float(result["threshold"]), float(result["target_pfa"])
    except (KeyError, TypeError, ValueError) as error:
        raise ParcelscanError(f"not a calibration result (threshold, target_pfa): {error}") from error
    if not (0.0 <= threshold <= 1.0 and 0.0 < target_pfa < 1.0):
        raise ParcelscanError(f"calibration result out of range: threshold {threshold}, target Pfa {target_pfa}")
    return threshold, target_pfa, {k: v for k, v in result.items() if k != "model"}


def recalibrate_onnx(model: str | Path, out: str | Path, result: dict[str, Any]) -> ModelMetadata:
    """Write ``model`` to ``out`` with the operating point of a calibration ``result``: threshold, target Pfa and
    ``metrics["operating_point"]``; the graph and every weight stay byte for byte what they were, so the scores
    are the same and only the decision moves. A new ``.sha256`` is written; a signature of the old file no longer
    fits and is removed (sign the new one)."""
    model, out = Path(model), Path(out)
    metadata = read_metadata(model)
    metadata.threshold, metadata.target_pfa, metadata.metrics["operating_point"] = read_operating_point(result)
    metadata.extra["recalibrated"] = datetime.now(UTC).isoformat(timespec="seconds")
    if out.resolve() != model.resolve():
        out.write_bytes(model.read_bytes())
    set_props(out, metadata)
    write_sha256(out)
    signature_path(out).unlink(missing_ok=True)
    return metadata


def metadata_from_info(info: dict[str, Any], default_name: str, threshold: float | None = None,
                       operating_point: dict[str, Any] | None = None) -> ModelMetadata:
    """The contract's metadata from a checkpoint's info dict (``load_checkpoint``). ``operating_point``: a
    ``python -m parcelscan.training.calibrate --json`` result; its threshold and target Pfa replace the
    checkpoint's, and it is kept in the metrics (``operating_point``) so the file says where its point came from."""
    preprocessing = info.get("preprocessing")
    if not isinstance(preprocessing, dict):
        raise ParcelscanError("checkpoint has no preprocessing spec: it cannot be exported for stations")
    metrics = dict(info.get("metrics") or {})
    target_pfa = info.get("target_pfa")
    if operating_point is not None:
        if threshold is not None:
            raise ParcelscanError("give --threshold or --threshold-from, not both")
        threshold, target_pfa, metrics["operating_point"] = read_operating_point(operating_point)
    threshold = threshold if threshold is not None else info.get("threshold")
    if threshold is None:
        raise ParcelscanError("checkpoint has no operating threshold (run `parcelscan evaluate` first, or pass "
                              "--threshold)")
    temperature = info.get("temperature")
    return ModelMetadata(
        name=str(info.get("name") or default_name),
        version=str(info.get("version") or "0"),
        created=str(info.get("created") or datetime.now(UTC).isoformat(timespec="seconds")),
        git_commit=str(info.get("git_commit") or git_commit()),
        input_kind=str(preprocessing.get("input_kind", "dual_energy")),
        preprocessing=preprocessing,
        classes=list(info.get("classes") or LABELS),
        threshold=float(threshold),
        target_pfa=target_pfa,
        temperature=float(temperature) if temperature else 1.0,
        metrics=metrics,
        data_fingerprint=str(info.get("data_fingerprint") or "unknown"),
        arch=str(info.get("arch") or "unknown"),
    )


def export_onnx(model, metadata: ModelMetadata, out: Path, example: np.ndarray) -> None:
    """Trace and write the ONNX file (weights embedded) with the metadata; ``example`` is one real batch.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``): on this network it folds BatchNorm into
    the convolutions and maps the squeeze-excitation pooling to GlobalAveragePool, and the resulting
    graph ran 2.5× faster in onnxruntime than the ``torch.export``-based one (which kept 38
    BatchNormalization nodes behind Expand/CastLike chains), and exports in ~3 s instead of ~25 s.
    """
    import onnx
    import torch

    wrapper = wrap_for_export(model, metadata.temperature)
    x = torch.from_numpy(np.ascontiguousarray(example[:2] if len(example) >= 2 else np.repeat(example, 2, 0)))
    dynamic = {"batch": 0, "rows": 2, "cols": 3}
    axes = {INPUT_NAME: {v: k for k, v in dynamic.items()}, "suspect_probability": {0: "batch"},
            "logits": {0: "batch"}, "heatmap": {0: "batch", 2: "heatmap_rows", 3: "heatmap_cols"}}
    log = io.StringIO()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (x,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
                              export_params=True)
    except Exception as error:
        raise ParcelscanError(f"ONNX export failed: {type(error).__name__}: {str(error).splitlines()[0]}\n"
                              f"{log.getvalue()[-2000:]}") from error
    proto = onnx.load_model_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, metadata.to_props())
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(out), save_as_external_data=False)


def set_props(path: Path, metadata: ModelMetadata) -> None:
    """Replace a model file's ``metadata_props`` (the graph and weights are untouched)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata.to_props())
    onnx.save_model(proto, str(path), save_as_external_data=False)


# --- real scans for parity, calibration and evaluation -------------------------------------------------
@dataclass
class ScanTiles:
    scan_id: str
    tiles: np.ndarray
    label: int | None  # 1 suspect, 0 clear, None unknown


def scan_label(meta: dict[str, Any]) -> int | None:
    labels = meta.get("labels") if isinstance(meta, dict) else None
    label = labels.get("label") if isinstance(labels, dict) else None
    return {"suspect": 1, "clear": 0}.get(label) if isinstance(label, str) else None


def load_scan_tiles(directory: Path, spec, limit: int | None = None, need_labels: bool = False) -> list[ScanTiles]:
    """Prepared tiles of the scans under ``directory`` (sorted by scan id; unreadable ones skipped)."""
    directory = Path(directory)
    if not directory.exists():
        raise ParcelscanError(f"scan directory not found: {directory}")
    refs = sorted(discover_scans([directory]), key=lambda ref: ref.scan_id)
    out: list[ScanTiles] = []
    for ref in refs:
        try:
            scan = ref.load()
            prepared = prepare_scan(scan, spec)
        except ParcelscanError:
            continue
        label = scan_label(scan.meta)
        if need_labels and label is None:
            continue
        out.append(ScanTiles(scan.scan_id, prepared.tiles, label))
        if limit is not None and len(out) >= limit:
            break
    return out


# --- parity --------------------------------------------------------------------------------------------
@dataclass
class ParityReport:
    scans: int
    tiles: int
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    other_size: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return all(self.max_abs_diff[k] <= self.tolerance[k] for k in self.max_abs_diff)

    def line(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e} (tol {self.tolerance[k]:.0e})" for k, v in self.max_abs_diff.items())
        return f"parity torch vs onnxruntime on {self.tiles} tiles of {self.scans} real scans: max |Δ| {diffs}"


def _torch_outputs(wrapper, tiles: np.ndarray, batch: int = 8) -> tuple[np.ndarray, ...]:
    import torch

    def run(chunk: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(t.numpy() for t in wrapper(torch.from_numpy(np.ascontiguousarray(chunk))))

    return run_in_batches(run, tiles, batch)


def _ort_outputs(session, tiles: np.ndarray, batch: int = 8) -> tuple[np.ndarray, ...]:
    return run_in_batches(lambda chunk: session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(chunk)}),
                          tiles, batch)


def parity_check(model, metadata: ModelMetadata, onnx_path: Path, scans: list[ScanTiles],
                 tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Max |Δ| torch vs onnxruntime per output, on real tiles (batches of 8 and of 1) and on one
    tile of another size (rows + 64: the dynamic axes really work)."""
    tiles = np.concatenate([s.tiles for s in scans])
    wrapper = wrap_for_export(model, metadata.temperature)
    session = inference_session(onnx_path)
    reference = _torch_outputs(wrapper, tiles)
    got = _ort_outputs(session, tiles, batch=8)
    single = _ort_outputs(session, tiles[:3], batch=1)
    logit_scale = max(1.0, float(np.abs(reference[1]).max()))
    diffs = {name: float(np.abs(g - r).max()) for name, g, r in zip(OUTPUT_NAMES, got, reference, strict=True)}
    for name, g, r in zip(OUTPUT_NAMES, single, reference, strict=True):
        diffs[name] = max(diffs[name], float(np.abs(g - r[:3]).max()))
    # another tile length: pad with the tile's own last rows (air in a padded tile)
    longer = np.concatenate([tiles[:1], tiles[:1, :, -64:, :]], axis=2)
    other_ref = _torch_outputs(wrapper, longer)
    other = _ort_outputs(session, longer)
    for name, g, r in zip(OUTPUT_NAMES, other, other_ref, strict=True):
        diffs[name] = max(diffs[name], float(np.abs(g - r).max()))
    diffs["logits"] /= logit_scale  # logits: relative to their magnitude
    tol = {name: tolerance for name in OUTPUT_NAMES}
    return ParityReport(len(scans), len(tiles), diffs, tol, tuple(longer.shape[2:]))


# --- timing (shared with the benchmarks) --------------------------------------------------------------
def time_sessions(sessions: dict[str, Any], tiles: np.ndarray, batch: int, repeats: int,
                  warmup: int = 3) -> dict[str, float]:
    """Median wall time (ms) of one ``run`` per session on the same batch, runs interleaved so that
    load from other processes hits every contender alike."""
    x = np.ascontiguousarray(np.resize(tiles, (batch, *tiles.shape[1:])))
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, {INPUT_NAME: x})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {INPUT_NAME: x})
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t) * 1000.0) for name, t in times.items()}


# --- INT8 ----------------------------------------------------------------------------------------------
@dataclass
class Int8Report:
    calibration_scans: int
    calibration_tiles: int
    eval_scans: int
    eval_suspect: int
    eval_clear: int
    threshold: float
    target_pfa: float | None
    fp32: dict[str, float]
    int8: dict[str, float]
    pd_loss_points: float
    pfa_rise_points: float
    timing_ms: dict[int, dict[str, float]]  # batch → {"fp32": ms, "int8": ms} per model call (median)
    speedup: dict[int, float]  # batch → FP32 time / INT8 time
    refused: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.refused

    def lines(self) -> list[str]:
        def rates(r: dict[str, float]) -> str:
            text = f"Pd {100 * r['pd']:.2f} % / Pfa {100 * r['pfa']:.2f} % at threshold {self.threshold:.4g}"
            if "pd_at_target" in r:
                text += f"; Pd {100 * r['pd_at_target']:.2f} % at Pfa {100 * (self.target_pfa or 0):.1f} %"
            return text

        return [
            f"INT8 calibration: {self.calibration_tiles} tiles of {self.calibration_scans} scans; evaluation on "
            f"{self.eval_scans} other scans ({self.eval_suspect} suspect, {self.eval_clear} clear)",
            f"  FP32: {rates(self.fp32)}",
            f"  INT8: {rates(self.int8)}",
            f"  at the operating threshold: Pd loss {self.pd_loss_points:+.2f} points (limit "
            f"{MAX_INT8_PD_LOSS_POINTS}), Pfa rise {self.pfa_rise_points:+.2f} points "
            f"(limit {MAX_INT8_PFA_RISE_POINTS})",
            "  speed (FP32 vs INT8 ms per call): " + "; ".join(
                f"batch {b} {t['fp32']:.2f} vs {t['int8']:.2f} (×{self.speedup[b]:.2f})"
                for b, t in self.timing_ms.items()),
        ] + [f"  REFUSED: {r}" for r in self.refused]


class Int8Refused(ParcelscanError):
    """The INT8 model failed its gate; ``report`` says why (the CLI prints the message, exit 2)."""

    def __init__(self, report: Int8Report):
        super().__init__("INT8 export refused: " + "; ".join(report.refused)
                         + " (export without --int8 for the FP32 model)")
        self.report = report


class _TileReader:
    """onnxruntime CalibrationDataReader over prepared tiles, in batches of 8."""

    def __init__(self, tiles: np.ndarray, batch: int = 8):
        self._batches = iter([{INPUT_NAME: np.ascontiguousarray(tiles[i:i + batch])}
                              for i in range(0, len(tiles), batch)])

    def get_next(self):
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, out_path: Path, calibration_tiles: np.ndarray, metadata_props: dict[str, str],
                  workdir: Path) -> None:
    """Static QDQ quantisation; Softmax/Sigmoid heads stay float so scores keep full resolution."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader_cls = type("TileReader", (_TileReader, CalibrationDataReader), {})
    prepared = workdir / "pre.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # folds BatchNorm into Conv
    model = onnx.load(str(prepared))
    keep_float = [node.name for node in model.graph.node if node.op_type in ("Softmax", "Sigmoid")]
    quantize_static(str(prepared), str(workdir / "int8.onnx"), reader_cls(calibration_tiles),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=keep_float)
    quantized = onnx.load(str(workdir / "int8.onnx"))
    onnx.helper.set_model_props(quantized, metadata_props)
    onnx.save_model(quantized, str(out_path), save_as_external_data=False)


def _scan_scores(session, scans: list[ScanTiles]) -> np.ndarray:
    scores = []
    for scan in scans:
        probability = _ort_outputs(session, scan.tiles)[0]
        scores.append(float(np.max(probability)))
    return np.asarray(scores)


def _rates(labels: np.ndarray, scores: np.ndarray, threshold: float, target_pfa: float | None) -> dict[str, float]:
    pd, pfa = rates_at_threshold(labels, scores, threshold)
    out = {"pd": pd, "pfa": pfa}
    if target_pfa:
        out["pd_at_target"], out["pfa_at_target"], _ = pd_at_pfa(labels, scores, target_pfa)
    return out


def evaluate_int8(fp32_path: Path, int8_path: Path, metadata: ModelMetadata, calibration: list[ScanTiles],
                  evaluation: list[ScanTiles], threads: int | None = None) -> Int8Report:
    labels = np.array([s.label for s in evaluation])
    fp32_session, int8_session = inference_session(fp32_path, threads=threads), inference_session(
        int8_path, threads=threads)
    fp32 = _rates(labels, _scan_scores(fp32_session, evaluation), metadata.threshold, metadata.target_pfa)
    int8 = _rates(labels, _scan_scores(int8_session, evaluation), metadata.threshold, metadata.target_pfa)
    loss = 100.0 * (fp32["pd"] - int8["pd"])
    tiles = np.concatenate([s.tiles for s in evaluation[:8]])
    sessions = {"fp32": fp32_session, "int8": int8_session}
    timing = {batch: time_sessions(sessions, tiles, batch=batch, repeats=repeats)
              for batch, repeats in ((1, 60), (8, 15), (32, 6))}
    speedup = {batch: t["fp32"] / t["int8"] for batch, t in timing.items()}
    report = Int8Report(
        calibration_scans=len(calibration), calibration_tiles=int(sum(len(s.tiles) for s in calibration)),
        eval_scans=len(evaluation), eval_suspect=int(labels.sum()), eval_clear=int((labels == 0).sum()),
        threshold=metadata.threshold, target_pfa=metadata.target_pfa, fp32=fp32, int8=int8, pd_loss_points=loss,
        pfa_rise_points=100.0 * (int8["pfa"] - fp32["pfa"]),
        timing_ms=timing, speedup=speedup)
    report.refused = int8_refusals(loss, report.pfa_rise_points, speedup)
    return report


def int8_refusals(pd_loss_points: float, pfa_rise_points: float, speedup: dict[int, float]) -> list[str]:
    """Why an INT8 model must not ship (empty: it may).

    The operating point first: a faster model that misses more, or that alarms more at the same threshold,
    is no deal. Speed where the station runs: at every batch
    size in STATION_BATCHES INT8 must be ≥ MIN_INT8_SPEEDUP times faster (a gain only at batch 32, which a
    station with ~1.2 tiles per parcel never reaches, is not a gain)."""
    refused = []
    if pd_loss_points > MAX_INT8_PD_LOSS_POINTS:
        refused.append(f"INT8 costs {pd_loss_points:.2f} points of Pd at the operating point "
                       f"(limit {MAX_INT8_PD_LOSS_POINTS})")
    if pfa_rise_points > MAX_INT8_PFA_RISE_POINTS:
        refused.append(f"INT8 raises Pfa at the operating threshold by {pfa_rise_points:.2f} points (limit "
                       f"{MAX_INT8_PFA_RISE_POINTS}): its scores no longer match the threshold chosen for the model")
    slow = {b: speedup[b] for b in STATION_BATCHES if speedup[b] < MIN_INT8_SPEEDUP}
    if slow:
        measured = ", ".join(f"×{ratio:.2f} at batch {b}" for b, ratio in sorted(speedup.items()))
        refused.append(f"INT8 is not faster on this CPU where the station runs it ({measured}; needs "
                       f"×{MIN_INT8_SPEEDUP:.2f} at batch {' and '.join(map(str, STATION_BATCHES))}): keep the FP32 "
                       f"model")
    return refused


# --- the whole export ----------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    sha256: str
    metadata: ModelMetadata
    parity: ParityReport
    int8: Int8Report | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "parity": asdict(self.parity),
                "int8": asdict(self.int8) if self.int8 else None, "seconds": round(self.seconds, 1)}


def _split_labelled(scans: list[ScanTiles]) -> tuple[list[ScanTiles], list[ScanTiles]]:
    """Calibration = every other scan (at most CALIBRATION_MAX_SCANS), evaluation = the rest: disjoint."""
    calibration = scans[0::2][:CALIBRATION_MAX_SCANS]
    chosen = {id(s) for s in calibration}
    return calibration, [s for s in scans if id(s) not in chosen]


def export_model(model, info: dict[str, Any], out: str | Path, parity_data: str | Path,
                 int8: bool = False, calibration: str | Path | None = None, threshold: float | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, log: Callable[[str], None] = print,
                 operating_point: dict[str, Any] | None = None) -> ExportResult:
    """Export an eval-mode network with its checkpoint info; see the module docstring for the steps."""
    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ParcelscanError(f"--out must end in .onnx, got {out}")
    if int8 and calibration is None:
        raise ParcelscanError("--int8 needs --calibration DIR (labelled scans to calibrate and check it on)")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = metadata_from_info(info, default_name=out.stem, threshold=threshold, operating_point=operating_point)
    spec = PreprocessSpec.from_dict(metadata.preprocessing)
    if int(info.get("in_channels", spec.in_channels)) != spec.in_channels:
        raise ParcelscanError(f"checkpoint has {info.get('in_channels')} input channels but its preprocessing "
                              f"spec makes {spec.in_channels}")
    model = model.eval()
    flips = int(getattr(getattr(model, "config", None), "test_time_flips", 1))
    if flips > 1:  # the graph scores every tile in this many views (model/network.py); a station sees one model
        metadata.extra["test_time_flips"] = str(flips)
    parity_scans = load_scan_tiles(Path(parity_data), spec, limit=PARITY_MAX_SCANS)
    if not parity_scans:
        raise ParcelscanError(f"no readable scans under {parity_data} for the parity check")
    metadata.extra.update({"opset": str(OPSET), "quantization": "none", "exported": datetime.now(UTC).isoformat(
        timespec="seconds"), "spec_fingerprint": spec.fingerprint()})
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        workdir = Path(tmp)
        fp32_path = workdir / "fp32.onnx"
        export_onnx(model, metadata, fp32_path, np.concatenate([s.tiles for s in parity_scans[:2]]))
        parity = parity_check(model, metadata, fp32_path, parity_scans, tolerance)
        log(parity.line())
        if not parity.ok:
            raise ParcelscanError(f"parity check failed: {parity.line()}; no model written")
        metadata.extra["parity_max_abs_diff"] = json.dumps({k: float(f"{v:.3g}") for k, v in
                                                           parity.max_abs_diff.items()})
        set_props(fp32_path, metadata)  # metadata only: the checked graph is unchanged
        final = fp32_path
        report = None
        if int8:
            labelled = load_scan_tiles(Path(calibration), spec, need_labels=True)
            calib, evaluation = _split_labelled(labelled)
            n_suspect = sum(s.label == 1 for s in evaluation)
            if not calib or n_suspect < 10 or len(evaluation) - n_suspect < 10:
                raise ParcelscanError(f"--calibration {calibration}: need labelled scans (sidecar labels.label) — "
                                      f"found {len(labelled)}, leaving {n_suspect} suspect and "
                                      f"{len(evaluation) - n_suspect} clear for evaluation (≥ 10 each)")
            int8_meta = ModelMetadata(**{**metadata.__dict__, "extra": dict(metadata.extra)})
            int8_meta.extra["quantization"] = "int8-qdq (static, per-channel weights, MinMax calibration)"
            int8_path = workdir / "int8.final.onnx"
            # write once to evaluate it, again below with the evaluation in its metadata
            quantize_int8(fp32_path, int8_path, np.concatenate([s.tiles for s in calib]), int8_meta.to_props(),
                          workdir)
            report = evaluate_int8(fp32_path, int8_path, metadata, calib, evaluation)
            for line in report.lines():
                log(line)
            if not report.accepted:
                raise Int8Refused(report)
            int8_meta.extra["int8_evaluation"] = json.dumps({
                "pd_fp32": report.fp32["pd"], "pd_int8": report.int8["pd"], "pfa_fp32": report.fp32["pfa"],
                "pfa_int8": report.int8["pfa"], "eval_scans": report.eval_scans,
                "pd_at_target_pfa_fp32": report.fp32.get("pd_at_target"),
                "pd_at_target_pfa_int8": report.int8.get("pd_at_target"),
                "speedup": {str(b): round(r, 3) for b, r in report.speedup.items()}})
            set_props(int8_path, int8_meta)
            final, metadata = int8_path, int8_meta
        tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        os.replace(final, tmp_out)
        os.replace(tmp_out, out)
    digest = write_sha256(out)
    return ExportResult(out, digest, metadata, parity, report, time.perf_counter() - started)


def default_parity_data(info: dict[str, Any]) -> Path | None:
    """Where to find real scans when none are named: the training data recorded in the checkpoint, then
    the sample scans shipped in ``examples/``."""
    config = info.get("config") or {}
    for key in ("data", "data_dir"):
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, str) and Path(value).is_dir():
            return Path(value)
    examples = Path(__file__).resolve().parent.parent / "examples"
    return examples if examples.is_dir() and any(examples.iterdir()) else None


def export_checkpoint(checkpoint: str | Path, out: str | Path, data: str | Path | None = None, int8: bool = False,
                      calibration: str | Path | None = None, threshold: float | None = None,
                      tolerance: float = DEFAULT_TOLERANCE, log: Callable[[str], None] = print,
                      operating_point: dict[str, Any] | None = None,
                      test_time_flips: int | None = None) -> ExportResult:
    """``parcelscan export``: load a checkpoint (EMA weights when present) and export it; ``test_time_flips``
    overrides the checkpoint's views per tile (``model.network``: 1, 2 or 4)."""
    from parcelscan.model.checkpoint import load_checkpoint  # loads torch: only when exporting a checkpoint
    from parcelscan.model.network import set_test_time_flips

    model, info = load_checkpoint(checkpoint)
    stored_flips = model.config.test_time_flips
    if test_time_flips is not None and test_time_flips != stored_flips:
        try:
            set_test_time_flips(model, test_time_flips)
        except ValueError as error:
            raise ParcelscanError(f"--test-time-flips: {error}") from error
        # another graph from the same weights: its version says so, and the checkpoint's threshold was chosen for
        # scores of another number of views
        version = str(info.get("version") or "0")
        info = {**info, "version": f"{version}{'.' if '+' in version else '+'}flips{test_time_flips}"}
        if threshold is None and operating_point is None:
            log(f"warning: test-time flips {stored_flips} -> {test_time_flips}: the checkpoint's threshold "
                f"{info.get('threshold')} was chosen for {stored_flips} view(s); calibrate this model "
                "(python -m parcelscan.training.calibrate) and export again with --threshold-from")
    parity_data = data or calibration or default_parity_data(info)
    if parity_data is None:
        raise ParcelscanError("no scans for the parity check: pass --data DIR (station-format scans)")
    return export_model(model, info, out, parity_data, int8=int8, calibration=calibration, threshold=threshold,
                        tolerance=tolerance, log=log, operating_point=operating_point)
