"""The ONNX model contract: what a parcelscan model file says about itself, in ``metadata_props``.

An exported model carries everything a station needs to use it correctly — which input kind it
takes, the exact preprocessing spec (JSON) the tiles must go through, the class names, the operating
threshold and the false-alarm rate it was chosen for, its test metrics and where its training data
came from. The station reads these back with onnxruntime alone (``model.session.read_metadata``), so this
module must never import PyTorch (or onnx: the station install does not have it).

All values are strings on disk (ONNX stores ``StringStringEntryProto``); JSON-valued keys hold JSON.
Extra keys (``format``, ``quantization``, ``parity_max_abs_diff``, ...) ride along in ``extra``.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parcelscan.datasets.preprocess import INPUT_KINDS
from parcelscan.errors import ParcelscanError

MODEL_FORMAT = "parcelscan-onnx/1"
INPUT_NAME = "scan"
OUTPUT_NAMES = ("suspect_probability", "logits", "heatmap")
CONTRACT_KEYS = (
    "name", "version", "created", "git_commit", "input_kind", "preprocessing", "classes", "threshold",
    "target_pfa", "temperature", "metrics", "data_fingerprint", "arch",
)
_JSON_KEYS = ("preprocessing", "classes", "metrics")


@dataclass
class ModelMetadata:
    """The typed view of a model's ``metadata_props`` (see the module docstring)."""

    name: str
    version: str
    created: str
    git_commit: str
    input_kind: str
    preprocessing: dict[str, Any]
    classes: list[str]
    threshold: float
    target_pfa: float | None
    temperature: float
    metrics: dict[str, Any]
    data_fingerprint: str
    arch: str
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        try:
            self.threshold = float(self.threshold)
            self.temperature = float(self.temperature)
            self.target_pfa = None if self.target_pfa is None else float(self.target_pfa)
        except (TypeError, ValueError) as error:
            raise ParcelscanError(f"invalid model metadata: threshold/temperature/target_pfa: {error}") from error
        if self.input_kind not in INPUT_KINDS:
            problems.append(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if not isinstance(self.classes, list) or len(self.classes) != 2 or self.classes[1] != "suspect":
            problems.append(f"classes must be a list of two names ending with 'suspect', got {self.classes!r}")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold must be a probability in [0, 1], got {self.threshold!r}")
        if self.target_pfa is not None and not 0.0 < self.target_pfa < 1.0:
            problems.append(f"target_pfa must be in (0, 1), got {self.target_pfa!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"temperature must be a positive number, got {self.temperature!r}")
        if not isinstance(self.preprocessing, dict) or not self.preprocessing:
            problems.append("preprocessing must be a non-empty JSON object (the preprocessing spec)")
        if not isinstance(self.metrics, dict):
            problems.append("metrics must be a JSON object")
        if problems:
            raise ParcelscanError("invalid model metadata: " + "; ".join(problems))

    # --- to and from metadata_props -------------------------------------------------------------
    def to_props(self) -> dict[str, str]:
        """Every contract key as a string, plus the extras (``format`` is always written)."""
        props = {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "git_commit": self.git_commit,
            "input_kind": self.input_kind,
            "preprocessing": json.dumps(self.preprocessing, sort_keys=True),
            "classes": json.dumps(self.classes),
            "threshold": repr(float(self.threshold)),
            "target_pfa": "" if self.target_pfa is None else repr(float(self.target_pfa)),
            "temperature": repr(float(self.temperature)),
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "data_fingerprint": self.data_fingerprint,
            "arch": self.arch,
        }
        extra = {"format": MODEL_FORMAT, **self.extra}
        for key, value in extra.items():
            if key in CONTRACT_KEYS:
                raise ParcelscanError(f"metadata extra key {key!r} clashes with a contract key")
            props[key] = str(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse and validate; a missing or malformed key is a ParcelscanError naming the file."""
        missing = [key for key in CONTRACT_KEYS if key not in props]
        if missing:
            raise ParcelscanError(f"{source}: not a parcelscan model — metadata lacks {', '.join(missing)} "
                                  f"(export it with `parcelscan export`)")
        parsed: dict[str, Any] = {}
        for key in _JSON_KEYS:
            try:
                parsed[key] = json.loads(props[key])
            except json.JSONDecodeError as error:
                raise ParcelscanError(f"{source}: metadata {key!r} is not valid JSON: {error}") from error
        try:
            threshold = float(props["threshold"])
            temperature = float(props["temperature"])
            target_pfa = float(props["target_pfa"]) if props["target_pfa"] not in ("", "None", "null") else None
        except ValueError as error:
            raise ParcelscanError(f"{source}: metadata threshold/temperature/target_pfa must be numbers: {error}") \
                from error
        extra = {k: v for k, v in props.items() if k not in CONTRACT_KEYS}
        try:
            return cls(
                name=props["name"], version=props["version"], created=props["created"],
                git_commit=props["git_commit"], input_kind=props["input_kind"],
                preprocessing=parsed["preprocessing"], classes=parsed["classes"], threshold=threshold,
                target_pfa=target_pfa, temperature=temperature, metrics=parsed["metrics"],
                data_fingerprint=props["data_fingerprint"], arch=props["arch"], extra=extra,
            )
        except ParcelscanError as error:
            raise ParcelscanError(f"{source}: {error}") from error

    def preprocessing_summary(self) -> str:
        """One line: channels, pitch, tiles (the full spec is in ``--show --json``)."""
        p = self.preprocessing
        try:
            return (f"{p['input_kind']} channels {','.join(p['channels'])} at {p['pixel_pitch_mm']:g} mm/px, tiles "
                    f"{p['tile_rows']}x{p['tile_cols']} (overlap {p['tile_overlap']:g}), spec version {p['version']}")
        except (KeyError, TypeError, ValueError):
            return json.dumps(p, sort_keys=True)

    def summary_lines(self) -> list[str]:
        """Human-readable lines for ``parcelscan export --show``."""
        pfa = "-" if self.target_pfa is None else f"{self.target_pfa:g}"
        lines = [
            f"name:             {self.name}",
            f"version:          {self.version}",
            f"created:          {self.created}",
            f"git commit:       {self.git_commit}",
            f"architecture:     {self.arch}",
            f"input kind:       {self.input_kind}",
            f"classes:          {', '.join(self.classes)}",
            f"threshold:        {self.threshold:.6g} (target Pfa {pfa})",
            f"temperature:      {self.temperature:.6g}",
            f"data fingerprint: {self.data_fingerprint}",
            f"preprocessing:    {self.preprocessing_summary()}",
            f"metrics:          {json.dumps(self.metrics, sort_keys=True)}",
        ]
        lines += [f"{key + ':':<17} {value}" for key, value in sorted(self.extra.items())]
        return lines


def git_commit() -> str:
    """HEAD of the source tree this code runs from, ``-dirty`` when it has uncommitted changes; ``unknown``
    outside a git checkout. The one reader of the commit recorded in checkpoints and model files."""
    source = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("-dirty" if dirty else "")) if head else "unknown"
