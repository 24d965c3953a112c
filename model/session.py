"""The onnxruntime session a station runs: a verified model file, a chosen provider, a thread count.

A model is only loaded if its ``<model>.onnx.sha256`` (written by ``parcelscan export``, in
``sha256sum`` format) matches the file: a tampered model or one torn by an interrupted copy is refused
with a message that says so, because a station that silently runs the wrong weights clears parcels it
should not. The ``.sha256`` is integrity only (whoever changes the model can recompute it): with
``trusted_keys`` (a station policy's ``[models] trusted_public_keys``) the model must also carry a valid
Ed25519 ``.sig`` by one of them (``model.signing``), and its metadata name and version must be the signed
ones — else it is refused before it scores anything. Provider: CUDA when asked (and refused if onnxruntime
here has none) or, with ``auto``, when available; else CPU. The provider actually used is reported, never assumed.

Also the one place that creates an onnxruntime session (:func:`inference_session`: the station's options
for the station, export's parity and INT8 checks, and reading a file's metadata), and the one function
that runs a scan's tiles through a model in batches (:func:`run_in_batches`: the station, evaluation and
export all use it, so a batch boundary cannot mean different things in each).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.datatools import file_sha256 as sha256_file
from parcelscan.errors import ParcelscanError
from parcelscan.model.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata
from parcelscan.model.signing import ModelSignature, verify_model_signature

DEVICES = ("auto", "cpu", "cuda")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def sha256_sidecar(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".sha256")


def write_sha256(model_path: str | Path) -> str:
    """Write ``<model>.sha256`` in ``sha256sum`` format (``<hex>  <file name>``); returns the hex."""
    model_path = Path(model_path)
    digest = sha256_file(model_path)
    sha256_sidecar(model_path).write_text(f"{digest}  {model_path.name}\n", encoding="utf-8")
    return digest


def verify_sha256(model_path: str | Path) -> str:
    """The model's sha256 if it matches its ``.sha256`` file; otherwise a ParcelscanError that says why."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ParcelscanError(f"model not found: {model_path}")
    sidecar = sha256_sidecar(model_path)
    if not sidecar.is_file():
        raise ParcelscanError(f"{model_path}: refusing an unverified model: {sidecar.name} is missing "
                              f"(`parcelscan export` writes it; never run a model whose origin you cannot check)")
    fields = sidecar.read_text(encoding="utf-8", errors="replace").split()
    if not fields or not _HEX64.match(fields[0]):
        raise ParcelscanError(f"{sidecar}: not a sha256 file (expected '<64 hex digits>  {model_path.name}')")
    expected = fields[0].lower()
    actual = sha256_file(model_path)
    if actual != expected:
        raise ParcelscanError(
            f"{model_path}: refusing the model: its sha256 {actual[:16]}… does not match {sidecar.name} "
            f"({expected[:16]}…) — the file was modified or the copy is incomplete; copy it again from the "
            f"release")
    return actual


def run_in_batches(run: Callable[[np.ndarray], Sequence[np.ndarray]], tiles: np.ndarray,
                   batch: int) -> tuple[np.ndarray, ...]:
    """``run`` on consecutive slices of at most ``batch`` tiles; each output concatenated back, one row per
    tile. A model that returns a different number of rows than it was given tiles is an error (its rows could
    no longer be matched to scans)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(tiles), batch):
        chunk = tiles[start:start + batch]
        outputs = run(chunk)
        if not parts:
            parts = [[] for _ in outputs]
        for k, array in enumerate(outputs):
            array = np.asarray(array)
            if array.shape[0] != len(chunk):
                raise ParcelscanError(f"model returned {array.shape[0]} rows of output {k} for {len(chunk)} tiles")
            parts[k].append(array)
    return tuple(np.concatenate(p) for p in parts)


def inference_session(model_path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                      threads: int | None = None, optimize: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` with the station's options; ``optimize=False`` for reading metadata.

    Onnxruntime errors (a torn or foreign file) become a ParcelscanError naming the file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # Idle onnxruntime threads busy-wait by default; in a station process they would spin on the cores the
    # reader threads need (and on a shared machine on everyone's): measured batch-1 latency 16.2 → 8.4 ms
    # (median, 2 threads, load average ~6 on 2 cores) with spinning off.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_path), options, providers=list(providers))
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ParcelscanError(f"{model_path}: onnxruntime cannot load the model: "
                              f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from error


def read_props(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read with onnxruntime (present in every install)."""
    path = Path(path)
    if not path.is_file():
        raise ParcelscanError(f"model not found: {path}")
    return dict(inference_session(path, optimize=False).get_modelmeta().custom_metadata_map)


def read_metadata(path: str | Path) -> ModelMetadata:
    """The validated :class:`ModelMetadata` of an ONNX file."""
    return ModelMetadata.from_props(read_props(path), source=str(path))


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Provider list for onnxruntime: CUDA first when asked or (auto) available, always CPU as well."""
    if device not in DEVICES:
        raise ParcelscanError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ParcelscanError("--device cuda: this onnxruntime has no CUDA provider "
                              f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu")
    if device == "cuda" or (device == "auto" and has_cuda):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class ModelSession:
    """A loaded, verified model: its metadata, its sha256 and the provider that runs it."""

    path: Path
    sha256: str
    metadata: ModelMetadata
    session: Any  # onnxruntime.InferenceSession
    provider: str
    signature: ModelSignature | None = None  # the trusted signature it was loaded under, if the station asked

    @property
    def model_info(self) -> dict[str, str]:
        """The verdict's ``model`` field."""
        return {"name": self.metadata.name, "version": self.metadata.version, "sha256": self.sha256}

    @property
    def tile_shape(self) -> tuple[int | str, ...]:
        return tuple(self.session.get_inputs()[0].shape)

    def run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, C, H, W) float32 tiles → (suspect_probability (T,), logits (T, 2), heatmap (T, 1, h, w))."""
        tiles = np.ascontiguousarray(tiles, dtype=np.float32)
        probability, logits, heatmap = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles})
        return probability, logits, heatmap


def open_session(model_path: str | Path, device: str = "auto", threads: int | None = None,
                 verify: bool = True, trusted_keys: Sequence[str] = ()) -> ModelSession:
    """Verify, load and describe a model. Raises ParcelscanError with a clear message on any problem.

    ``trusted_keys`` (hex Ed25519 public keys): when any is given, the model is refused unless one of them signed
    these bytes (checked before onnxruntime parses the file) under the name and version its metadata states."""
    import onnxruntime as ort

    model_path = Path(model_path)
    digest = verify_sha256(model_path) if verify else sha256_file(model_path)
    signature = verify_model_signature(model_path, trusted_keys, digest) if trusted_keys else None
    if threads is not None and threads < 1:
        raise ParcelscanError(f"--threads must be >= 1, got {threads}")
    providers = choose_providers(device, ort.get_available_providers())
    session = inference_session(model_path, providers, threads)
    used = session.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise ParcelscanError(f"--device cuda: onnxruntime fell back to {used} (CUDA libraries missing?); "
                              f"use --device cpu or fix the CUDA install")
    metadata = ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), source=str(model_path))
    if signature is not None and (metadata.name, metadata.version) != (signature.name, signature.version):
        raise ParcelscanError(f"{model_path}: refusing the model: it says it is {metadata.name} {metadata.version} "
                              f"but was signed as {signature.name} {signature.version}")
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
        raise ParcelscanError(f"{model_path}: not a parcelscan model: inputs {inputs}, outputs {outputs} "
                              f"(expected {INPUT_NAME!r} → {', '.join(OUTPUT_NAMES)})")
    return ModelSession(model_path, digest, metadata, session, used, signature)
