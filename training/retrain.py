"""Retraining on new seizures without forgetting: ``parcelscan retrain``.

Inspectors' confirmed seizures and false alarms (``parcelscan review export``) are the most valuable
data the project gets, but a model fine-tuned on them alone forgets what it knew. A retraining run:

1. splits the new data (grouped by parcel) into train / val / a **held-out** part it never trains on;
2. mixes the new training scans with a **replay** sample of the original training data
   (``replay_ratio`` original scans per new one) — the classic rehearsal defence against forgetting;
3. fine-tunes from the base checkpoint (its architecture and preprocessing, lower learning rate);
4. evaluates **base and candidate** on the original test split and on the new held-out part, each at its
   own stored operating threshold (Pd at the operating point, as stations run them);
5. exports the candidate to ONNX (parity-checked) and registers it in the model registry with that
   comparison, which ``parcelscan models promote`` then gates on (≤ 0.5 points of Pd lost on the
   original test, Pfa at the candidate's own threshold on the original test not more than
   ``model.registry.MAX_PFA_RISE_POINTS`` above the base's, and better on the new data).

Everything lands in ``runs/retrain/<name>/``: ``data/`` and ``holdout/`` manifests (absolute paths to
the original files, nothing copied), ``train/`` (the training run), ``eval/``, ``model.onnx``,
``comparison.json`` and ``report.md``.

* **Base**: a checkpoint, a registry id, or an ONNX file with its checkpoint beside it (``<model>.pt`` with
  a verified ``<model>.pt.sha256``, as the shipped defaults have; a checkpoint that records the ONNX it
  stands for must match that file's sha256).
* **Recipe**: the fine-tuning run inherits the base's data settings (:data:`INHERITED_SETTINGS`: augment,
  tile flips, the prepared-scan cache, sampling, batch size, loss weights) from the configuration
  stored in its checkpoint; the schedule (epochs, learning rate, warm-up) is retraining's own, and so is
  ``workers`` (DataLoader processes: how fast a run goes on this machine, not what it learns; default 0, the
  batches made in the training process, fastest on 2 cores).
* **Lineage**: the candidate is registered under ``--name`` with the base as its parent; a base given as a
  file that the registry does not know yet is registered first (found again by its sha256 next time).
* **Enough new data** (the rule): the held-out part must hold at least ``min_holdout_suspect`` (default
  :data:`MIN_HOLDOUT_SUSPECT`) suspect scans, else retraining refuses before training — with fewer, the
  gate's "better on the new data" rests on a handful of scans (one scan moves Pd by 20 points or more).
  It warns when no new scan is left for validation (model selection then sees replayed data only) and
  when the held-out part has fewer than :data:`WARN_HOLDOUT_SUSPECT` suspects (Pd in steps over 5 points).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.datatools import record_path
from parcelscan.datasets.manifest import ManifestRecord, read_manifest, write_manifest
from parcelscan.datasets.split import assign_splits
from parcelscan.errors import ParcelscanError
from parcelscan.model.checkpoint import read_checkpoint
from parcelscan.model.export import export_checkpoint
from parcelscan.model.registry import ModelEntry, PromotionGate, Registry
from parcelscan.model.session import read_metadata, sha256_file, sha256_sidecar, verify_sha256
from parcelscan.training.config import TrainConfig
from parcelscan.training.evaluate import evaluate, load_model_for_eval, predict_records, scan_probabilities
from parcelscan.training.runs import increment_dir
from parcelscan.training.train import train

MIN_HOLDOUT_SUSPECT = 5  # fewer held-out suspects: refuse (one scan would move the gate's Pd by ≥ 20 points)
WARN_HOLDOUT_SUSPECT = 20  # fewer: warn (Pd on the new data moves in steps over 5 points)
# The base recipe's data settings a fine-tuning run keeps (TrainConfig fields); the schedule is retraining's own.
INHERITED_SETTINGS = ("augment", "tile_flips", "cache", "balanced_sampling", "batch_size", "mask_weight",
                      "dice_weight", "label_smoothing", "amp", "deterministic")


@dataclass
class RetrainConfig:
    base: str  # checkpoint (.pt) or a registry model id whose checkpoint is stored
    new: str  # directory with manifest.jsonl of the new data (e.g. a review export)
    replay: str | None = None  # original training data (manifest with train/val/test splits)
    original_test: str | None = None  # where the original test split lives (default: the replay directory)
    name: str = "retrain"
    project: str = "runs/retrain"
    epochs: int = 3
    lr: float = 5e-4
    replay_ratio: float = 2.0  # replayed original training scans per new training scan
    max_replay_val: int = 500
    holdout_fraction: float = 0.3
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader processes (0: in the training process, fastest on 2 cores; see train_cli)
    register: bool = True
    registry: str | None = None  # model store directory (default $PARCELSCAN_MODEL_DIR)
    min_holdout_suspect: int = MIN_HOLDOUT_SUSPECT  # the enough-new-data rule (module docstring)
    train_overrides: dict[str, Any] = field(default_factory=dict)  # any other TrainConfig settings


@dataclass
class Base:
    """The model retraining starts from: its checkpoint, and where it came from."""

    checkpoint: Path
    registry_id: str | None = None  # given as a registry id
    onnx: Path | None = None  # given as an ONNX file (its checkpoint lies beside it)


def checkpoint_beside(onnx: Path) -> Path:
    """The checkpoint an ONNX file was exported from, when shipped with it: ``<model>.pt`` (verified by its
    ``.sha256``, and matching the ONNX when it records which file it stands for)."""
    checkpoint = onnx.with_suffix(".pt")
    if not checkpoint.is_file():
        raise ParcelscanError(f"{onnx}: retraining needs the checkpoint (.pt) the model was exported from, and "
                              f"there is none beside it ({checkpoint.name}); give the .pt, or a registry id of a "
                              f"model registered with --checkpoint")
    verify_sha256(checkpoint)
    if sha256_sidecar(onnx).is_file():
        verify_sha256(onnx)
    recorded = (read_checkpoint(checkpoint).get("source") or {}).get("onnx_sha256")
    if recorded is not None and recorded != sha256_file(onnx):
        raise ParcelscanError(f"{checkpoint} was made from another model file than {onnx.name} (sha256 "
                              f"{recorded[:16]}… recorded, {sha256_file(onnx)[:16]}… found)")
    return checkpoint


def resolve_base(base: str, registry_dir: str | None) -> Base:
    """A checkpoint path, an ONNX file with its checkpoint beside it, or a registry id."""
    path = Path(base)
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            return Base(checkpoint_beside(path), onnx=path)
        return Base(path)
    registry = Registry(Path(registry_dir) if registry_dir else None)
    entry = registry.get(base)  # raises a clear error for an unknown id
    if not entry.checkpoint:
        raise ParcelscanError(f"registered model {base} has no stored checkpoint to fine-tune from")
    return Base(registry.directory / entry.checkpoint, registry_id=entry.model_id)


def base_in_registry(registry: Registry, base: Base, log=print) -> str | None:
    """The registry id of the base, registering an ONNX base (with its checkpoint) the registry does not know;
    None for a bare checkpoint the registry does not hold (there is no model file to register)."""
    if base.registry_id is not None:
        return base.registry_id
    entries = registry.entries()
    if base.onnx is not None:
        digest = sha256_file(base.onnx)
        known = [e for e in entries if e.sha256 == digest]
        if known:
            return known[0].model_id
        meta = read_metadata(base.onnx)
        entry = registry.register(base.onnx, name=meta.name, input_kind=meta.input_kind, checkpoint=base.checkpoint,
                                  created=meta.created, data_fingerprint=meta.data_fingerprint,
                                  metrics=dict(meta.metrics))
        log(f"registered the base {base.onnx} as {entry.model_id}")
        return entry.model_id
    digest = sha256_file(base.checkpoint)
    for entry in entries:
        if entry.checkpoint and (registry.directory / entry.checkpoint).is_file() \
                and sha256_file(registry.directory / entry.checkpoint) == digest:
            return entry.model_id
    return None


def _absolute(record: ManifestRecord, root: Path, prefix: str) -> ManifestRecord:
    """A copy whose files point at the originals by absolute path, ids prefixed to keep sets apart."""
    return replace(record, scan_id=f"{prefix}{record.scan_id}", parcel_id=f"{prefix}{record.parcel_id}",
                   files={k: str(record_path(root, v).resolve()) for k, v in record.files.items()},
                   mask=str(record_path(root, record.mask).resolve()) if record.mask else None)


def split_new_data(records: list[ManifestRecord], holdout: float, val: float, seed: int) -> list[ManifestRecord]:
    """Train / val / test(= held out) over the new data, grouped by parcel; existing splits are reassigned
    because review exports carry none and a previous split may not hold out enough."""
    fresh = [replace(r, split=None) for r in records]
    return assign_splits(fresh, val=val, test=holdout, seed=seed, reassign=True)


def plan_datasets(config: RetrainConfig) -> dict[str, Any]:
    """The training mix, validation mix and held-out part (records, nothing written) and their counts."""
    new_dir = Path(config.new)
    new_records = split_new_data(read_manifest(new_dir), config.holdout_fraction, config.val_fraction, config.seed)
    new_train = [_absolute(r, new_dir, "new-") for r in new_records if r.split == "train"]
    new_val = [_absolute(r, new_dir, "new-") for r in new_records if r.split == "val"]
    holdout = [_absolute(r, new_dir, "new-") for r in new_records if r.split == "test"]
    if not new_train or not holdout:
        raise ParcelscanError(f"{new_dir}: too little new data to train and hold out ({len(new_records)} scans)")
    replay_train: list[ManifestRecord] = []
    replay_val: list[ManifestRecord] = []
    if config.replay:
        replay_dir = Path(config.replay)
        original = read_manifest(replay_dir)
        rng = random.Random(config.seed)
        pool = [r for r in original if r.split == "train"]
        count = min(len(pool), round(config.replay_ratio * len(new_train)))
        replay_train = [_absolute(r, replay_dir, "replay-") for r in rng.sample(pool, count)]
        val_pool = [r for r in original if r.split == "val"]
        replay_val = [_absolute(r, replay_dir, "replay-")
                      for r in rng.sample(val_pool, min(len(val_pool), config.max_replay_val))]
    train_set = [replace(r, split="train") for r in new_train + replay_train]
    val_set = [replace(r, split="val") for r in new_val + replay_val]
    if {r.label for r in val_set} != {"clear", "suspect"}:
        raise ParcelscanError("the validation mix needs clear and suspect scans: give --replay (the original "
                              "training data) or more new data")
    counts: dict[str, int] = {}
    for part, records in (("new_train", new_train), ("new_val", new_val), ("new_holdout", holdout),
                          ("replay_train", replay_train), ("replay_val", replay_val)):
        counts[part] = len(records)
        counts[f"{part}_suspect"] = sum(r.label == "suspect" for r in records)
        counts[f"{part}_clear"] = sum(r.label == "clear" for r in records)
    return {"mix": train_set + val_set, "holdout": holdout, "counts": counts}


def write_datasets(plan: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``data/`` (train + val mix) and ``holdout/`` manifests under the run folder."""
    data_dir = run_dir / "data"
    holdout_dir = run_dir / "holdout"
    for directory, records in ((data_dir, plan["mix"]), (holdout_dir, plan["holdout"])):
        directory.mkdir(parents=True, exist_ok=True)
        write_manifest(directory / "manifest.jsonl", records)
    return {"data_dir": data_dir, "holdout_dir": holdout_dir, "counts": plan["counts"]}


def enough_new_data(counts: dict[str, int], min_holdout_suspect: int) -> list[str]:
    """Warnings about the new data (the rule in the module docstring); raises when it cannot support the
    comparison at all."""
    held = counts["new_holdout_suspect"]
    if held < min_holdout_suspect:
        raise ParcelscanError(
            f"too little new data to judge a candidate: the held-out part has {held} suspect scan(s) of "
            f"{counts['new_holdout']} (at least {min_holdout_suspect} needed: with fewer, one scan moves the "
            f"gate's Pd by {100 / max(held, 1):.0f} points); collect more seizures, or lower "
            f"--min-holdout-suspect knowingly")
    warnings = []
    if counts["new_val"] == 0:
        warnings.append("no new scan is left for validation: the best epoch and the threshold are chosen on "
                        "replayed original data only")
    if held < WARN_HOLDOUT_SUSPECT:
        warnings.append(f"the held-out part has only {held} suspect scans: Pd on the new data moves in steps of "
                        f"{100 / held:.1f} points")
    return warnings


def _pd_at_operating_point(model_path: Path, data_dir: Path, name: str, eval_dir: Path, device: str) -> dict:
    _, summary = evaluate(model_path, data_dir, split="test", name=name, project=eval_dir, device=device,
                          plots=False, progress=False, n_boot=200)
    point = summary["stored_operating_point"]
    return {"pd": point["pd"], "pfa": point["pfa"], "threshold": point["threshold"],
            "n_suspect": summary["n_suspect"], "n_clear": summary["n_clear"], "roc_auc": summary.get("roc_auc"),
            "flagged_suspect": int(point["confusion"]["tp"]), "flagged_clear": int(point["confusion"]["fp"])}


def _pd_on_suspects(model_path: Path, data_dir: Path, device: str) -> dict:
    """Pd at the stored threshold on a held-out set that may lack clear scans (ranking metrics need both)."""
    records = [r for r in read_manifest(data_dir) if r.split == "test"]
    model = load_model_for_eval(model_path, device)
    outputs = predict_records(records, data_dir, model.spec, model.runner, fail_closed=True, progress=False,
                              desc="holdout")
    scores = scan_probabilities(outputs.margins, model.temperature)
    labels = np.array([r.label == "suspect" for r in records])
    flagged = scores >= model.threshold
    return {"pd": float(flagged[labels].mean()) if labels.any() else float("nan"),
            "pfa": float(flagged[~labels].mean()) if (~labels).any() else None, "threshold": model.threshold,
            "n_suspect": int(labels.sum()), "n_clear": int((~labels).sum()),
            "flagged_suspect": int(flagged[labels].sum()), "flagged_clear": int(flagged[~labels].sum())}


def evaluate_on(model_path: Path, data_dir: Path, name: str, eval_dir: Path, device: str) -> dict:
    records = [r for r in read_manifest(data_dir) if r.split == "test"]
    if {r.label for r in records} == {"clear", "suspect"}:
        return _pd_at_operating_point(model_path, data_dir, name, eval_dir, device)
    return _pd_on_suspects(model_path, data_dir, device)


def train_settings(config: RetrainConfig, base_info: dict[str, Any], data_dir: Path, run_dir: Path,
                   base_checkpoint: Path) -> dict[str, Any]:
    """The fine-tuning run's TrainConfig settings: the base recipe's data settings, retraining's schedule,
    then ``train_overrides``."""
    recipe = base_info.get("config") or {}
    inherited = {key: recipe[key] for key in INHERITED_SETTINGS if key in recipe}
    settings = {**inherited, "data": str(data_dir), "project": str(run_dir), "name": "train",
                "init_from": str(base_checkpoint), "arch": base_info["arch"],
                "input_kind": base_info["preprocessing"]["input_kind"], "epochs": config.epochs, "lr": config.lr,
                "warmup_epochs": min(0.5, config.epochs / 4), "seed": config.seed, "device": config.device,
                "workers": config.workers,
                "target_pfa": base_info.get("target_pfa") or 0.01, "patience": 0}
    settings.update(config.train_overrides)
    return settings


def retrain(config: RetrainConfig, log=print) -> dict[str, Any]:
    base = resolve_base(config.base, config.registry)
    original_test = Path(config.original_test or config.replay or "")
    if not config.original_test and not config.replay:
        raise ParcelscanError("give --replay (original training data) or --original-test: retraining must be "
                              "checked against the original test set")
    if not any(r.split == "test" for r in read_manifest(original_test)):
        raise ParcelscanError(f"{original_test}: no 'test' split to compare against")
    base_info = read_checkpoint(base.checkpoint)
    plan = plan_datasets(config)
    counts = plan["counts"]
    warnings = enough_new_data(counts, config.min_holdout_suspect)  # refuses before any folder is made
    run_dir = increment_dir(config.project, config.name)
    datasets = write_datasets(plan, run_dir)
    log(f"retrain {run_dir}: " + ", ".join(f"{k} {counts[k]}" for k in
                                           ("new_train", "new_val", "new_holdout", "replay_train", "replay_val")))
    for warning in warnings:
        log(f"warning: {warning}")

    settings = train_settings(config, base_info, datasets["data_dir"], run_dir, base.checkpoint)
    log("fine-tuning with the base recipe's data settings: "
        + ", ".join(f"{k} {settings[k]}" for k in INHERITED_SETTINGS if k in settings))
    train_dir = train(TrainConfig.from_dict(settings, "retraining settings"))
    candidate = train_dir / "weights" / "best.pt"

    eval_dir = run_dir / "eval"
    comparison: dict[str, Any] = {"base": base.registry_id, "base_checkpoint": str(base.checkpoint),
                                  "base_onnx": str(base.onnx) if base.onnx else None,
                                  "candidate_checkpoint": str(candidate), "counts": counts, "warnings": warnings,
                                  "train_settings": {k: settings[k] for k in INHERITED_SETTINGS if k in settings}}
    for key, directory in (("original_test", original_test), ("new_holdout", datasets["holdout_dir"])):
        base_result = evaluate_on(base.checkpoint, directory, f"base-{key}", eval_dir, config.device)
        candidate_result = evaluate_on(candidate, directory, f"candidate-{key}", eval_dir, config.device)
        comparison[key] = {"base_pd": base_result["pd"], "candidate_pd": candidate_result["pd"],
                           "base_pfa": base_result["pfa"], "candidate_pfa": candidate_result["pfa"],
                           "base": base_result, "candidate": candidate_result}
    original = comparison["original_test"]
    gate = PromotionGate(original["base_pd"], original["candidate_pd"], comparison["new_holdout"]["base_pd"],
                         comparison["new_holdout"]["candidate_pd"], original["base_pfa"], original["candidate_pfa"])
    comparison["gate_problems"] = gate.problems()

    onnx_path = run_dir / "model.onnx"
    export_checkpoint(candidate, onnx_path, data=Path(config.new), log=lambda line: None)
    comparison["onnx"] = str(onnx_path)
    if config.register:
        registry = Registry(Path(config.registry) if config.registry else None)
        comparison["base"] = base_in_registry(registry, base, log)
        entry = register_candidate(registry, config.name, onnx_path, candidate, comparison)
        comparison["registered_as"] = entry.model_id
    (run_dir / "comparison.json").write_text(json.dumps(comparison, indent=1, default=str) + "\n")
    (run_dir / "report.md").write_text(render_report(config, comparison))
    comparison["run_dir"] = str(run_dir)
    return comparison


def register_candidate(registry: Registry, name: str, onnx_path: Path, candidate: Path,
                       comparison: dict[str, Any]) -> ModelEntry:
    """``name@<next version>``, child of the base, with the comparison the promotion gate reads."""
    info = read_checkpoint(candidate)
    return registry.register(onnx_path, name=name, input_kind=info["preprocessing"]["input_kind"],
                             checkpoint=candidate, parent=comparison["base"],
                             data_fingerprint=info.get("data_fingerprint"),
                             metrics={"pd_at_operating_point": comparison["original_test"]["candidate_pd"]},
                             comparison={k: comparison[k] for k in ("base", "original_test", "new_holdout")})


def _rate(value: float | None, count: int | None, total: int | None) -> str:
    """``93.3 % (14/15)``: a percentage is read with the counts it rests on."""
    if value is None or value != value or not total:
        return "-"
    return f"{100 * value:.1f} % ({count}/{total})"


def render_report(config: RetrainConfig, comparison: dict[str, Any]) -> str:
    counts = comparison["counts"]
    lines = [f"# Retraining report: {config.name}", "",
             f"Base: `{comparison.get('base_onnx') or comparison['base_checkpoint']}`"
             + (f" (registry `{comparison['base']}`)" if comparison.get("base") else "")
             + f"; candidate: `{comparison['candidate_checkpoint']}`", "",
             "| data | scans | suspect | clear |", "|---|---:|---:|---:|"]
    for part in ("new_train", "new_val", "new_holdout", "replay_train", "replay_val"):
        lines.append(f"| {part} | {counts[part]} | {counts.get(part + '_suspect', '-')} | "
                     f"{counts.get(part + '_clear', '-')} |")
    settings = comparison.get("train_settings") or {}
    if settings:
        lines += ["", "Fine-tuned with the base recipe's data settings: "
                  + ", ".join(f"{k} {v}" for k, v in settings.items()) + "."]
    lines += ["", "| set | base Pd | candidate Pd | base Pfa | candidate Pfa |", "|---|---|---|---|---|"]
    for key in ("original_test", "new_holdout"):
        base, cand = comparison[key]["base"], comparison[key]["candidate"]
        lines.append(f"| {key} | {_rate(base['pd'], base.get('flagged_suspect'), base.get('n_suspect'))} | "
                     f"{_rate(cand['pd'], cand.get('flagged_suspect'), cand.get('n_suspect'))} | "
                     f"{_rate(base.get('pfa'), base.get('flagged_clear'), base.get('n_clear'))} | "
                     f"{_rate(cand.get('pfa'), cand.get('flagged_clear'), cand.get('n_clear'))} |")
    lines += ["", "Pd and Pfa at each model's own stored operating threshold (flagged / scans in brackets).", ""]
    for warning in comparison.get("warnings") or []:
        lines.append(f"Warning: {warning}.")
    problems = comparison["gate_problems"]
    lines.append("Promotion gate: " + ("passes" if not problems else "fails — " + "; ".join(problems)))
    if comparison.get("registered_as"):
        parent = f", child of `{comparison['base']}`" if comparison.get("base") else ", no registered parent"
        lines.append(f"\nRegistered as `{comparison['registered_as']}`{parent}; promote with "
                     f"`parcelscan models promote {comparison['registered_as']}`.")
    return "\n".join(lines) + "\n"
