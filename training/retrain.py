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
   original test, and better on the new data).

Everything lands in ``runs/retrain/<name>/``: ``data/`` and ``holdout/`` manifests (absolute paths to
the original files, nothing copied), ``train/`` (the training run), ``eval/``, ``model.onnx``,
``comparison.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from parcelscan.datasets.datatools import record_path
from parcelscan.datasets.manifest import ManifestRecord, read_manifest, write_manifest
from parcelscan.errors import ParcelscanError
from parcelscan.training.runs import increment_dir


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
    register: bool = True
    registry: str | None = None  # model store directory (default $PARCELSCAN_MODEL_DIR)
    train_overrides: dict[str, Any] = field(default_factory=dict)  # any other TrainConfig settings


def resolve_base(base: str, registry_dir: str | None) -> tuple[Path, str | None]:
    """(checkpoint path, registry id or None) of the base model."""
    path = Path(base)
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            raise ParcelscanError(f"{base}: retraining needs the checkpoint (.pt) the model was exported from; "
                                  "register models with --checkpoint to keep it")
        return path, None
    from parcelscan.model.registry import Registry

    registry = Registry(Path(registry_dir) if registry_dir else None)
    entry = registry.get(base)  # raises a clear error for an unknown id
    if not entry.checkpoint:
        raise ParcelscanError(f"registered model {base} has no stored checkpoint to fine-tune from")
    return registry.directory / entry.checkpoint, entry.model_id


def _absolute(record: ManifestRecord, root: Path, prefix: str) -> ManifestRecord:
    """A copy whose files point at the originals by absolute path, ids prefixed to keep sets apart."""
    return replace(record, scan_id=f"{prefix}{record.scan_id}", parcel_id=f"{prefix}{record.parcel_id}",
                   files={k: str(record_path(root, v).resolve()) for k, v in record.files.items()},
                   mask=str(record_path(root, record.mask).resolve()) if record.mask else None)


def split_new_data(records: list[ManifestRecord], holdout: float, val: float, seed: int) -> list[ManifestRecord]:
    """Train / val / test(= held out) over the new data, grouped by parcel; existing splits are reassigned
    because review exports carry none and a previous split may not hold out enough."""
    from parcelscan.datasets.split import assign_splits

    fresh = [replace(r, split=None) for r in records]
    return assign_splits(fresh, val=val, test=holdout, seed=seed, reassign=True)


def build_datasets(config: RetrainConfig, run_dir: Path) -> dict[str, Any]:
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
    data_dir = run_dir / "data"
    holdout_dir = run_dir / "holdout"
    for directory, records in ((data_dir, train_set + val_set), (holdout_dir, holdout)):
        directory.mkdir(parents=True, exist_ok=True)
        write_manifest(directory / "manifest.jsonl", records)
    return {"data_dir": data_dir, "holdout_dir": holdout_dir, "counts": {
        "new_train": len(new_train), "new_val": len(new_val), "new_holdout": len(holdout),
        "replay_train": len(replay_train), "replay_val": len(replay_val)}}


def _pd_at_operating_point(model_path: Path, data_dir: Path, name: str, eval_dir: Path, device: str) -> dict:
    from parcelscan.training.evaluate import evaluate

    _, summary = evaluate(model_path, data_dir, split="test", name=name, project=eval_dir, device=device,
                          plots=False, progress=False, n_boot=200)
    point = summary["stored_operating_point"]
    return {"pd": point["pd"], "pfa": point["pfa"], "threshold": point["threshold"],
            "n_suspect": summary["n_suspect"], "n_clear": summary["n_clear"], "roc_auc": summary.get("roc_auc")}


def _pd_on_suspects(model_path: Path, data_dir: Path, device: str) -> dict:
    """Pd at the stored threshold on a held-out set that may lack clear scans (ranking metrics need both)."""
    import numpy as np

    from parcelscan.training.evaluate import load_model_for_eval, predict_records, scan_probabilities

    records = [r for r in read_manifest(data_dir) if r.split == "test"]
    model = load_model_for_eval(model_path, device)
    outputs = predict_records(records, data_dir, model.spec, model.runner, fail_closed=True, progress=False,
                              desc="holdout")
    scores = scan_probabilities(outputs.margins, model.temperature)
    labels = np.array([r.label == "suspect" for r in records])
    flagged = scores >= model.threshold
    return {"pd": float(flagged[labels].mean()) if labels.any() else float("nan"),
            "pfa": float(flagged[~labels].mean()) if (~labels).any() else None, "threshold": model.threshold,
            "n_suspect": int(labels.sum()), "n_clear": int((~labels).sum())}


def evaluate_on(model_path: Path, data_dir: Path, name: str, eval_dir: Path, device: str) -> dict:
    records = [r for r in read_manifest(data_dir) if r.split == "test"]
    if {r.label for r in records} == {"clear", "suspect"}:
        return _pd_at_operating_point(model_path, data_dir, name, eval_dir, device)
    return _pd_on_suspects(model_path, data_dir, device)


def retrain(config: RetrainConfig, log=print) -> dict[str, Any]:
    from parcelscan.training.config import TrainConfig
    from parcelscan.training.train import train

    base_checkpoint, base_id = resolve_base(config.base, config.registry)
    original_test = Path(config.original_test or config.replay or "")
    if not config.original_test and not config.replay:
        raise ParcelscanError("give --replay (original training data) or --original-test: retraining must be "
                              "checked against the original test set")
    if not any(r.split == "test" for r in read_manifest(original_test)):
        raise ParcelscanError(f"{original_test}: no 'test' split to compare against")
    run_dir = increment_dir(config.project, config.name)
    datasets = build_datasets(config, run_dir)
    log(f"retrain {run_dir}: " + ", ".join(f"{k} {v}" for k, v in datasets["counts"].items()))

    from parcelscan.model.checkpoint import read_checkpoint

    base_info = read_checkpoint(base_checkpoint)
    settings = {"data": str(datasets["data_dir"]), "project": str(run_dir), "name": "train",
                "init_from": str(base_checkpoint), "arch": base_info["arch"],
                "input_kind": base_info["preprocessing"]["input_kind"], "epochs": config.epochs, "lr": config.lr,
                "warmup_epochs": min(0.5, config.epochs / 4), "seed": config.seed, "device": config.device,
                "target_pfa": base_info.get("target_pfa") or 0.01, "patience": 0}
    settings.update(config.train_overrides)
    train_dir = train(TrainConfig(**settings))
    candidate = train_dir / "weights" / "best.pt"

    eval_dir = run_dir / "eval"
    comparison: dict[str, Any] = {"base": base_id, "base_checkpoint": str(base_checkpoint),
                                  "candidate_checkpoint": str(candidate), "counts": datasets["counts"]}
    for key, directory in (("original_test", original_test), ("new_holdout", datasets["holdout_dir"])):
        base_result = evaluate_on(base_checkpoint, directory, f"base-{key}", eval_dir, config.device)
        candidate_result = evaluate_on(candidate, directory, f"candidate-{key}", eval_dir, config.device)
        comparison[key] = {"base_pd": base_result["pd"], "candidate_pd": candidate_result["pd"],
                           "base": base_result, "candidate": candidate_result}
    from parcelscan.model.registry import PromotionGate

    gate = PromotionGate(comparison["original_test"]["base_pd"], comparison["original_test"]["candidate_pd"],
                         comparison["new_holdout"]["base_pd"], comparison["new_holdout"]["candidate_pd"])
    comparison["gate_problems"] = gate.problems()

    from parcelscan.model.export import export_checkpoint

    onnx_path = run_dir / "model.onnx"
    export_checkpoint(candidate, onnx_path, data=Path(config.new), log=lambda line: None)
    comparison["onnx"] = str(onnx_path)
    if config.register:
        from parcelscan.model.registry import Registry

        registry = Registry(Path(config.registry) if config.registry else None)
        info = read_checkpoint(candidate)
        entry = registry.register(onnx_path, name=str(info.get("name") or "parcelscan"),
                                  input_kind=info["preprocessing"]["input_kind"], checkpoint=candidate,
                                  parent=base_id, data_fingerprint=info.get("data_fingerprint"),
                                  metrics={"pd_at_operating_point": comparison["original_test"]["candidate_pd"]},
                                  comparison={k: comparison[k] for k in ("base", "original_test", "new_holdout")})
        comparison["registered_as"] = entry.model_id
    (run_dir / "comparison.json").write_text(json.dumps(comparison, indent=1, default=str) + "\n")
    (run_dir / "report.md").write_text(render_report(config, comparison))
    comparison["run_dir"] = str(run_dir)
    return comparison


def render_report(config: RetrainConfig, comparison: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None or value != value else f"{100 * value:.1f} %"

    lines = [f"# Retraining report: {config.name}", "",
             f"Base: `{comparison['base'] or comparison['base_checkpoint']}`; candidate: "
             f"`{comparison['candidate_checkpoint']}`", "",
             "Data: " + ", ".join(f"{k} {v}" for k, v in comparison["counts"].items()), "",
             "| set | base Pd | candidate Pd | base Pfa | candidate Pfa |", "|---|---|---|---|---|"]
    for key in ("original_test", "new_holdout"):
        base, cand = comparison[key]["base"], comparison[key]["candidate"]
        lines.append(f"| {key} | {pct(base['pd'])} | {pct(cand['pd'])} | {pct(base.get('pfa'))} | "
                     f"{pct(cand.get('pfa'))} |")
    lines += ["", "Pd and Pfa at each model's own stored operating threshold.", ""]
    problems = comparison["gate_problems"]
    lines.append("Promotion gate: " + ("passes" if not problems else "fails — " + "; ".join(problems)))
    if comparison.get("registered_as"):
        lines.append(f"\nRegistered as `{comparison['registered_as']}`; promote with "
                     f"`parcelscan models promote {comparison['registered_as']}`.")
    return "\n".join(lines) + "\n"


def config_dict(config: RetrainConfig) -> dict[str, Any]:
    return asdict(config)
