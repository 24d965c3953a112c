"""The Python API for integrators: ``Inspector(model).inspect(path_or_arrays) -> Verdict``.

One scan goes through: read (``readers.load_scan``) → one preprocessing (``preprocess.prepare_scan``,
the spec comes from the model file) → the shield-alarm check (``opaque``) → onnxruntime on every tile
→ scan score = max over tiles → verdict. Every failure on the way is caught *for that scan* and turns
into ``manual_inspection`` with the reason; nothing on this path can produce ``clear`` without a finite
model score below the threshold (``Verdict`` itself refuses it).

``inspect_many`` is the station path: reading and preprocessing run in a small thread pool ahead of the
model (OpenCV and onnxruntime release the GIL), and the tiles of ``batch`` scans go through the model
in one call; the verdicts of a batch (and the twin lookup of its powder alarms) are then built in as many
threads, with ``on_outputs`` among them when the hook says it may be called concurrently for different
scans (a ``thread_safe = True`` attribute: the declaration check's does; any other hook is called one scan
after the other in input order, as inline). Verdicts are yielded in input order either way, and are the
same. **Memory per batch**: every scan read ahead or waiting in the batch holds its decoded images,
planes and tiles until its verdict is out; before a scan is read its need is estimated from its headers
(``gates.scan_memory``, the memory gate's own estimate) and it is admitted only while the scans held stay
within the policy's ``max_batch_mb`` (one scan is always admitted when none is held: the per-scan cap, never
above the batch cap, has already bounded it). A scan whose estimate is unknown counts at the per-scan cap; one
over the per-scan cap counts as nothing (the memory gate refuses it before decoding: manual inspection, and the
batch goes on).

**The material a powder alarm looks like**: for a scan the model flags (reason class ``powder``) whose policy
alarms on ``twin``, the bodies the model localises are weighed and looked up (``declaration.observe`` →
``physics.mass.body_mass`` → ``physics.signature.lookup``, from the shipped attenuation tables: no xraydb or
spekpy), and the reason names the largest body's signature — "powder signature consistent with La2O3 — or its
benign twin barite: confirm by XRF or opening" (``verdict.signature_reason``); reason class ``twin`` when a
benign family is within d′ < 4.2. Only flagged scans pay for it; the observation rides on ``ScanOutputs.observed``
for the hooks. ``latency_ms`` of a verdict is the wall time from starting to read that scan until its
verdict was ready, so with batching it includes waiting for the rest of its batch.

This module must not import PyTorch: it is the light station install.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.datasets.preprocess import PreprocessSpec, heatmap_to_scan, prepare_scan, scan_pitch_mm
from parcelscan.datasets.scans.readers import ScanRef, discover_scans, load_scan
from parcelscan.datasets.scans.scanfile import Scan
from parcelscan.errors import ParcelscanError
from parcelscan.inference import gates
from parcelscan.inference.declaration import observe
from parcelscan.inference.heatmap import write_heatmap
from parcelscan.inference.opaque import check_opaque
from parcelscan.inference.policy import StationPolicy, load_policy
from parcelscan.inference.verdict import CLEAR, MANUAL, SUSPECT, Verdict, inputs_digest, signature_reason
from parcelscan.model.registry import default_model_path
from parcelscan.model.session import open_session, run_in_batches

# the station gates whose refusal means "no scanner could have taken this picture" (reason class implausible);
# any other failure (the memory gate, a reader, the model) is "unreadable"
IMPLAUSIBLE_GATES = ("geometry", "size", "physics", "pseudo-colour")
MAX_TILES_PER_RUN = 64  # bounds the memory of one onnxruntime call (64 × 3 × 320 × 320 float32 = 79 MB)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_array_counter = itertools.count(1)
_END = object()


@dataclass
class _Shaped:
    """An in-memory image's shape, for the memory estimate (``gates.scan_memory`` reads ``shape`` and ``meta``)."""

    shape: tuple[int, int]
    kind: str
    meta: dict = field(default_factory=dict)
    scan_id: str = "array"


@dataclass
class MissingInput:
    """A path the user named that does not exist (or could not be listed): reported, never skipped."""

    path: str
    reason: str = "no such file or directory"


@dataclass
class _Staged:
    """A scan after reading, preprocessing and the opaque check (or the error that stopped it)."""

    scan_id: str
    inputs: list[str]
    started: float
    scan: Any = None
    prepared: Any = None
    opaque: Any = None
    error: str | None = None
    gate: str | None = None  # the station gate that refused the scan (``gates``), if one did
    notes: list[str] = field(default_factory=list)
    inputs_sha256: str | None = None
    observed: dict[str, Any] | None = None  # the powder alarm's bodies (``declaration.observe``), when looked up
    observed_pitch_mm: tuple[float, float] | None = None  # the (row, column) pitch ``observed`` was measured at


@dataclass
class ScanOutputs:
    """What a verdict was made from, for reports beyond the verdict line (the DICOS TDR, ``inference.tdr``):
    the decoded scan, the shield check, the preprocessing and the model's per-tile outputs (None where the
    scan never got that far)."""

    scan: Any
    opaque: Any
    prepared: Any
    tile_probabilities: np.ndarray | None
    tile_heatmaps: np.ndarray | None
    observed: dict[str, Any] | None = None  # ``declaration.observe`` of a powder alarm (bodies, signatures), if made
    observed_pitch_mm: tuple[float, float] | None = None  # the pitch ``observed`` was measured at (a hook reusing
    # it checks that its own pitch rule gives the same)


def _describe(item: Any) -> tuple[str, list[str]]:
    """(scan_id, input files) of an item before it is read, for the verdict of an unreadable one."""
    if isinstance(item, MissingInput):
        return Path(item.path).name or item.path, [item.path]
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        name = path.name
        for suffix in ("_low.png", "_high.png", "_rgb.png"):
            if name.endswith(suffix):
                return name[: -len(suffix)], [str(path)]
        return path.stem or name, [str(path)]
    paths = getattr(item, "paths", None)
    if paths is not None:  # a readers.ScanRef
        return str(getattr(item, "scan_id", "") or Path(paths[0]).stem), [str(p) for p in paths]
    scan_id = getattr(item, "scan_id", None)
    if scan_id is not None:  # a Scan
        return str(scan_id), [str(p) for p in (getattr(item, "source_files", None) or [])]
    return f"array-{next(_array_counter)}", []


def _load(item: Any, scan_id: str):
    """Any accepted item → a decoded Scan. Raises ScanReadError / ParcelscanError / ValueError."""
    if isinstance(item, MissingInput):
        raise ParcelscanError(f"{item.path}: {item.reason}")
    if isinstance(item, Scan):
        return item
    if isinstance(item, (str, os.PathLike)):
        return load_scan(Path(item))
    if callable(getattr(item, "load", None)):  # a readers.ScanRef: knows its partner files and any problem
        return item.load()
    if isinstance(item, (tuple, list)) and len(item) == 2:
        low, high = (np.asarray(a) for a in item)
        if low.dtype != np.uint16 or high.dtype != np.uint16:
            raise ParcelscanError(f"{scan_id}: a dual-energy pair must be two uint16 transmission images, "
                                  f"got {low.dtype} and {high.dtype}")
        if low.ndim != 2 or low.shape != high.shape:
            raise ParcelscanError(f"{scan_id}: low and high must be 2-D images of one shape, "
                                  f"got {low.shape} and {high.shape}")
        return Scan(scan_id, low, high, {}, kind="dual_energy")
    if isinstance(item, np.ndarray):
        if item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8:
            return Scan(scan_id, None, None, {}, kind="pseudo_color", rgb=item)
        raise ParcelscanError(f"{scan_id}: an array must be an (H, W, 3) uint8 pseudo-colour image or a "
                              f"(low, high) pair of uint16 images; got {item.dtype} {item.shape}")
    raise ParcelscanError(f"cannot inspect an object of type {type(item).__name__}")


def _error_text(error: BaseException) -> str:
    if isinstance(error, ParcelscanError):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory while analysing the scan"
    return f"internal error while analysing the scan: {type(error).__name__}: {error}"


class Inspector:
    """A loaded, verified model ready to judge scans. Thread-compatible, not thread-safe.

    Without ``model_path`` the registry's promoted model or the shipped default of ``input_kind`` is used
    (``pseudo_color``: the RGB variant, for stations that export only the operator image). ``policy``: the
    station policy (default: the shipped ``policies/default.toml``); ``threshold``, ``max_scan_bytes`` and
    ``max_batch_bytes`` given here override the policy's. A policy that trusts model keys makes an unsigned or
    otherwise signed model a ParcelscanError here, before any scan (``model.signing``)."""

    on_outputs: Callable[[Verdict, ScanOutputs], None] | None = None  # called per scan before its verdict is yielded

    def __init__(self, model_path: str | Path | None = None, threshold: float | None = None, device: str = "auto",
                 threads: int | None = None, heatmap_dir: str | Path | None = None, station: str | None = None,
                 verify: bool = True, input_kind: str = "dual_energy", max_scan_bytes: int | None = None,
                 policy: StationPolicy | None = None, max_batch_bytes: int | None = None):
        self.policy = policy if policy is not None else load_policy()
        self.shield_rule = self.policy.shield_rule
        if model_path is None:
            model_path = default_model_path(input_kind)
            if not Path(model_path).is_file():
                raise ParcelscanError(f"no model given and the shipped default {model_path} is missing "
                                      f"(pass --model MODEL.onnx)")
        self.session = open_session(model_path, device=device, threads=threads, verify=verify,
                                    trusted_keys=self.policy.trusted_public_keys)
        self.metadata = self.session.metadata
        try:
            self.spec = PreprocessSpec.from_dict(self.metadata.preprocessing)
        except ParcelscanError as error:
            raise ParcelscanError(f"{model_path}: its preprocessing spec is unusable: {error}") from error
        if self.spec.input_kind != self.metadata.input_kind:
            raise ParcelscanError(f"{model_path}: metadata input_kind {self.metadata.input_kind} disagrees with "
                                  f"its preprocessing spec ({self.spec.input_kind})")
        self.threshold_source = "--threshold"
        if threshold is None:
            threshold, self.threshold_source = self.policy.station_threshold(self.metadata.threshold,
                                                                             self.session.model_info.get("sha256"))
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ParcelscanError(f"threshold must be a probability in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir else None
        if self.heatmap_dir is not None:
            try:
                self.heatmap_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ParcelscanError(f"--heatmaps {self.heatmap_dir}: cannot create it: "
                                      f"{error.strerror or error}") from error
            if not os.access(self.heatmap_dir, os.W_OK):
                raise ParcelscanError(f"--heatmaps {self.heatmap_dir}: not writable")
        if max_scan_bytes is None:
            max_scan_bytes = self.policy.max_scan_bytes
        if max_scan_bytes <= 0:
            raise ParcelscanError(f"the per-scan memory cap must be positive, got {max_scan_bytes}")
        self.max_scan_bytes = int(max_scan_bytes)
        if max_batch_bytes is None:
            max_batch_bytes = self.policy.max_batch_bytes
        if max_batch_bytes < self.max_scan_bytes:
            raise ParcelscanError(f"the per-batch memory cap ({max_batch_bytes / 2**20:g} MiB) is below the per-scan "
                                  f"cap ({self.max_scan_bytes / 2**20:g} MiB): raise the batch cap (--max-batch-mb, "
                                  "[memory] max_batch_mb) with the scan cap")
        self.max_batch_bytes = int(max_batch_bytes)
        self.peak_held_bytes = 0  # the most estimated bytes of scans held at once (read ahead or in a batch)
        self.peak_held_scans = 0
        self.station = station if station is not None else (os.environ.get("PARCELSCAN_STATION") or None)
        self._check_model_input()
        if self.heatmap_dir is not None:
            self._warm_heatmaps()

    def _warm_heatmaps(self) -> None:
        """Build the operator-image colour table now (~1 s, once per process), not inside the first
        suspect scan's latency. A failure here shows later, per scan, as 'heatmap not written'."""
        if self.spec.input_kind != "dual_energy":
            return
        with contextlib.suppress(Exception):
            air = np.full((8, 8), 65535, np.uint16)
            pseudocolor_from_pair(air, air, default_profile())

    # --- properties ---------------------------------------------------------------------------------
    @property
    def provider(self) -> str:
        return self.session.provider

    @property
    def model_info(self) -> dict[str, str]:
        return self.session.model_info

    def _check_model_input(self) -> None:
        shape = self.session.tile_shape
        expected = (self.spec.in_channels, self.spec.tile_rows, self.spec.tile_cols)
        for got, want, what in zip(shape[1:], expected, ("channels", "tile rows", "tile columns"), strict=True):
            if isinstance(got, int) and got != want:
                raise ParcelscanError(f"{self.session.path}: model input has {got} {what} but its preprocessing "
                                      f"spec makes {want}")

    # --- the API ------------------------------------------------------------------------------------
    def inspect(self, item: Any) -> Verdict:
        """One scan (a path, a ScanRef, a Scan, a (low, high) uint16 pair or an RGB uint8 image) → Verdict."""
        return next(self.inspect_many([item], batch=1, workers=0))

    def inspect_many(self, items: Iterable[Any], batch: int = 8, workers: int = 1) -> Iterator[Verdict]:
        """Verdicts in input order. ``workers`` threads read and preprocess ahead (0: all inline); what is held
        at once stays within ``max_batch_bytes`` (module docstring)."""
        if batch < 1:
            raise ParcelscanError(f"--batch must be >= 1, got {batch}")
        iterator = iter(items)
        # an item taken from ``items`` and not yet admitted, with its cost and the estimate it came from
        waiting: list[tuple[Any, int, gates.MemoryNeed | None]] = []
        held = [0, 0]  # estimated bytes and scans admitted and not yet released

        def admit() -> tuple[Any, int, gates.MemoryNeed | None] | None:
            """The next item if the batch's memory allows it now (always when nothing is held), else None."""
            if not waiting:
                item = next(iterator, _END)
                if item is _END:
                    return None
                waiting.append((item, *self._memory_cost(item)))
            cost = waiting[0][1]
            if held[1] and held[0] + cost > self.max_batch_bytes:
                return None
            held[0] += cost
            held[1] += 1
            self.peak_held_bytes = max(self.peak_held_bytes, held[0])
            self.peak_held_scans = max(self.peak_held_scans, held[1])
            return waiting.pop()

        def release(costs: list[int]) -> None:
            held[0] -= sum(costs)
            held[1] -= len(costs)

        if workers <= 0:
            while True:
                admitted = []
                while len(admitted) < batch and (entry := admit()) is not None:
                    admitted.append(entry)
                if not admitted:
                    return
                chunk = [self._stage(item, need) for item, _, need in admitted]
                yield from self._judge(chunk)
                del chunk  # the decoded scans go before the next ones are read
                release([cost for _, cost, _ in admitted])
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parcelscan-read") as pool, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parcelscan-finish") as finishers:
            pending: deque[tuple[Future, int]] = deque()
            lookahead = batch * 2 + workers

            def refill() -> None:
                while len(pending) < lookahead and (entry := admit()) is not None:
                    pending.append((pool.submit(self._stage, entry[0], entry[2]), entry[1]))

            refill()
            while pending:
                taken = [pending.popleft() for _ in range(min(batch, len(pending)))]
                chunk = [future.result() for future, _ in taken]
                refill()  # read ahead while the model runs, within what the batch cap leaves
                yield from self._judge(chunk, finishers)
                del chunk
                release([cost for _, cost in taken])
                refill()

    def _memory_cost(self, item: Any) -> tuple[int, gates.MemoryNeed | None]:
        """(the bytes ``item`` will hold once read and preprocessed, the header estimate it comes from), before
        decoding (module docstring). The estimate of a scan on disk (a ScanRef, or a path naming one) goes to the
        memory gate, which need not discover the scan and read its headers again."""
        if isinstance(item, MissingInput):
            return 0, None
        if isinstance(item, ScanRef) and not item.ok:
            return 0, None  # refused by the reader before decoding
        target = item
        if isinstance(item, (str, os.PathLike)):
            try:
                refs = discover_scans([item])
            except OSError:
                return 0, None  # the reader reports it
            target = refs[0] if len(refs) == 1 else item
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            shape = np.shape(item[0])
            if len(shape) != 2:
                return 0, None  # refused by _load before anything is allocated
            target = _Shaped((int(shape[0]), int(shape[1])), "dual_energy")
        elif isinstance(item, np.ndarray) and item.ndim == 3:
            target = _Shaped(item.shape[:2], "pseudo_color")
        try:
            found = gates.scan_memory(target, self.spec)
        except Exception:  # an estimate is never worth a verdict: count the worst the scan cap admits
            found = None
        if found is None:
            return self.max_scan_bytes, None
        cost = 0 if found.need_bytes > self.max_scan_bytes else found.need_bytes
        return cost, found if isinstance(target, ScanRef) else None

    # --- stages -------------------------------------------------------------------------------------
    def _check_memory(self, item: Any, need: gates.MemoryNeed | None = None) -> None:
        """The memory gate before decoding, for items that are still files (a path or a ScanRef); ``need``: the
        estimate already made from the headers of this ScanRef."""
        if need is not None:
            gates.check_need(need, self.max_scan_bytes)
            return
        if isinstance(item, (str, os.PathLike)):
            refs = discover_scans([item])
            item = refs[0] if len(refs) == 1 else None
        if isinstance(item, ScanRef):
            gates.check_memory(item, self.spec, self.max_scan_bytes)

    def _stage(self, item: Any, need: gates.MemoryNeed | None = None) -> _Staged:
        """Read, gate, preprocess and check one scan; any failure is recorded, never raised."""
        started = time.perf_counter()
        scan_id, inputs = _describe(item)
        staged = _Staged(scan_id, inputs, started)
        try:
            self._check_memory(item, need)
            scan = _load(item, scan_id)
            staged.scan = scan
            staged.scan_id = str(scan.scan_id or scan_id)
            if getattr(scan, "source_files", None):
                staged.inputs = [str(p) for p in scan.source_files]
            gates.check_scan(scan, self.spec, self.max_scan_bytes, self.policy.air_gain_tolerance)
            prepared = prepare_scan(scan, self.spec)
            tiles = prepared.tiles
            if tiles.ndim != 4 or tiles.shape[0] < 1 or tiles.shape[1:] != (
                    self.spec.in_channels, self.spec.tile_rows, self.spec.tile_cols):
                raise ParcelscanError(f"{scan_id}: preprocessing produced tiles of shape {tiles.shape}, not "
                                      f"(T, {self.spec.in_channels}, {self.spec.tile_rows}, {self.spec.tile_cols})")
            if not np.isfinite(tiles).all():
                raise ParcelscanError(f"{scan_id}: the scan yields NaN or infinite model input")
            staged.prepared = prepared
            staged.opaque = check_opaque(scan, self.spec, self.shield_rule)
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            staged.error = _error_text(error)
            staged.gate = getattr(error, "gate", None)
        staged.inputs_sha256 = inputs_digest(staged.inputs, getattr(staged.scan, "source_sha256", None))
        return staged

    def _judge(self, chunk: list[_Staged], finishers: ThreadPoolExecutor | None = None) -> list[Verdict]:
        """Run the model on the tiles of every good scan in the chunk; build the verdicts (``_finish``): in the
        ``finishers`` threads when given and ``on_outputs`` is absent or says it is ``thread_safe`` (module
        docstring), else one after the other in input order."""
        good = [s for s in chunk if s.error is None]
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if good:
            try:
                tiles = np.concatenate([s.prepared.tiles for s in good])
                p, _, h = run_in_batches(self.session.run, tiles, MAX_TILES_PER_RUN)
                probability = np.asarray(p, dtype=np.float32).reshape(-1)
                heatmap = np.asarray(h, dtype=np.float32)
                if probability.shape[0] != len(tiles) or heatmap.shape[0] != len(tiles):
                    raise ParcelscanError(f"model returned {probability.shape[0]} scores for {len(tiles)} tiles")
                offset = 0
                for staged in good:
                    n = staged.prepared.tiles.shape[0]
                    results[id(staged)] = (probability[offset:offset + n], heatmap[offset:offset + n])
                    offset += n
            except BaseException as error:
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                for staged in good:
                    staged.error = f"inference failed: {_error_text(error)}"
        hook = self.on_outputs
        if finishers is None or len(chunk) < 2 or (hook is not None and not getattr(hook, "thread_safe", False)):
            verdicts = [self._verdict(staged, results.get(id(staged))) for staged in chunk]
            if hook is not None:
                for staged, verdict in zip(chunk, verdicts, strict=True):
                    hook(verdict, self._outputs(staged, results.get(id(staged))))
            return verdicts
        futures = [finishers.submit(self._finish, staged, results.get(id(staged))) for staged in chunk]
        return [future.result() for future in futures]

    def _finish(self, staged: _Staged, result: tuple[np.ndarray, np.ndarray] | None) -> Verdict:
        """One scan's verdict and its thread-safe ``on_outputs`` hook (a finisher thread's work)."""
        verdict = self._verdict(staged, result)
        if self.on_outputs is not None:
            self.on_outputs(verdict, self._outputs(staged, result))
        return verdict

    @staticmethod
    def _outputs(staged: _Staged, result: tuple[np.ndarray, np.ndarray] | None) -> ScanOutputs:
        return ScanOutputs(staged.scan, staged.opaque, staged.prepared, *(result or (None, None)), staged.observed,
                           staged.observed_pitch_mm)

    def _verdict(self, staged: _Staged, result: tuple[np.ndarray, np.ndarray] | None) -> Verdict:
        common = {"scan_id": staged.scan_id, "inputs": staged.inputs, "threshold": self.threshold,
                  "model": self.model_info, "station": self.station, "provider": self.provider,
                  "inputs_sha256": staged.inputs_sha256, "policy_sha256": self.policy.sha256 or None}
        if staged.error is not None or result is None:
            error = staged.error or "no model output for this scan"
            reason = (f"not analysed: refused by the station's {staged.gate} gate, a person must look" if staged.gate
                      else "not analysed: the model gave no score, a person must look")
            reason_class = "implausible" if staged.gate in IMPLAUSIBLE_GATES else "unreadable"
            return Verdict(verdict=MANUAL, score=None, error=error, latency_ms=self._ms(staged),
                           reasons=[reason], reason_classes=[reason_class], **common)
        probability, heatmap = result
        score = float(np.max(probability))
        if not math.isfinite(score) or not np.isfinite(probability).all():
            return Verdict(verdict=MANUAL, score=None, error="the model produced a non-finite score",
                           latency_ms=self._ms(staged), reasons=["not analysed: non-finite model output"],
                           reason_classes=["unreadable"], **common)
        reasons = []
        classes = []
        verdict = CLEAR
        if score >= self.threshold:
            verdict = SUSPECT
            reasons.append(f"score {score:.4f} ≥ threshold {self.threshold:.4f}")
            classes.append("powder")
            if self.policy.alarms_on("twin"):
                words, twin = self._signature(staged, heatmap)
                if words:
                    reasons.append(words)
                if twin:
                    classes.append("twin")
        opaque = staged.opaque
        if opaque is not None and opaque.alarm:
            verdict = SUSPECT
            reasons.append(opaque.reason())
            classes.append("opaque")
        heatmap_path = None
        if verdict == SUSPECT and self.heatmap_dir is not None:
            try:
                heatmap_path = str(self._write_heatmap(staged, heatmap))
            except BaseException as error:
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                reasons.append(f"heatmap not written: {_error_text(error)}")
        if verdict == CLEAR:
            reasons.append(f"score {score:.4f} < threshold {self.threshold:.4f}")
        return Verdict(verdict=verdict, score=score, heatmap=heatmap_path, latency_ms=self._ms(staged),
                       reasons=reasons, reason_classes=classes, **common)

    def _signature(self, staged: _Staged, tile_heatmaps: np.ndarray) -> tuple[str | None, bool]:
        """(reason, twin?) naming the material a powder alarm's region looks like (module docstring). Never
        costs the verdict: a failure here is said in the reason and the alarm stands."""
        if getattr(staged.scan, "low", None) is None or getattr(staged.scan, "high", None) is None:
            return None, False  # an operator image carries no dual-energy signature
        try:
            staged.observed = observe(staged.scan, tile_heatmaps, staged.prepared, self.spec)
            staged.observed_pitch_mm = scan_pitch_mm(staged.scan, self.spec)
            return signature_reason(staged.observed.get("bodies", []))
        except Exception as error:  # the alarm stands whatever happens here
            return f"powder signature not named: {type(error).__name__}: {error}", False

    def _write_heatmap(self, staged: _Staged, tile_heatmaps: np.ndarray) -> Path:
        heat = heatmap_to_scan(tile_heatmaps, staged.prepared)
        mask = staged.opaque.mask if staged.opaque is not None and staged.opaque.alarm else None
        name = _SAFE_NAME.sub("_", staged.scan_id) or "scan"
        return write_heatmap(self.heatmap_dir / f"{name}_heatmap.png", staged.scan, heat, mask)

    @staticmethod
    def _ms(staged: _Staged) -> float:
        return (time.perf_counter() - staged.started) * 1000.0
