"""The training loop behind ``parcelscan train`` (single process or ``torchrun`` DDP).

A run lives in ``<project>/<name>/`` (``runs/train/exp``, ``exp2`` … like Ultralytics): ``args.yaml``
(the resolved :class:`TrainConfig`), ``results.csv`` (one row per epoch), ``weights/last.pt`` and
``weights/best.pt``, ``metrics.json`` and PNG plots.

Recipe and why:

* **Loss** = cross-entropy on the tile label + ``mask_weight`` · (BCE + ``dice_weight`` · dice) of the
  heatmap. The mask target is the powder coverage max-pooled to the heatmap's stride-8 cells ("does
  this 16 mm cell contain powder"), so a thin or small concealment stays visible. The mask loss applies
  to samples with ``has_mask``: a clear scan's all-zero mask *is* a valid mask (nothing concealed) and
  teaches the head not to paint benign look-alikes, the false alarms inspectors pay for; a suspect
  without a mask (a station seizure) has no mask loss. Dice is averaged over tiles that contain powder
  only: on an empty target it is 0-or-1 noise, and BCE already penalises any heat there.
* **AdamW** (no weight decay on norms and biases), **cosine LR with linear warm-up**, stepped per
  iteration; **EMA** of the weights (what is validated and saved as the model); gradient clipping.
* **Class-balanced sampling**: each epoch draws as many clear as suspect samples (with replacement), a
  deterministic function of (seed, epoch), sharded over DDP ranks.
* **Validation** is scan-level, exactly as at inference: all tiles of each val scan, max over tiles.
  Each epoch fits the temperature and the threshold for ``target_pfa`` on validation and stores both
  in the checkpoint. **Early stopping / best.pt** on val Pd at the target Pfa or, with ``select_metric: pauc``,
  on the partial ROC area up to ``pauc_max_pfa`` (both on non-twin clears; ties: higher AUC).
* AMP (float16 autocast + GradScaler) on CUDA only; deterministic seeding; tqdm with loss and img/s.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parcelscan import __version__
from parcelscan.datasets.manifest import read_manifest
from parcelscan.datasets.prepared_cache import default_cache_root
from parcelscan.datasets.preprocess import PreprocessSpec
from parcelscan.datasets.torch_dataset import ScanDataset, collate
from parcelscan.errors import ParcelscanError
from parcelscan.model.checkpoint import load_checkpoint, network_config, network_entry, read_checkpoint, save_checkpoint
from parcelscan.model.metadata import git_commit
from parcelscan.model.network import NetworkConfig, build_from_config, build_model
from parcelscan.training import distributed as D
from parcelscan.training import metrics as M
from parcelscan.training import plots
from parcelscan.training.config import TrainConfig, dump_config
from parcelscan.training.evaluate import (
    heatmap_picks,
    operating_point,
    predict_records,
    scan_probabilities,
    screening_summary,
    torch_runner,
    twin_mask,
)
from parcelscan.training.runs import increment_dir, resolve_device

RESULTS_COLUMNS = ["epoch", "train/loss", "train/cls_loss", "train/mask_bce", "train/mask_dice", "val/loss",
                   "val/cls_loss", "val/mask_bce", "val/mask_dice", "val/auc", "val/ap", "val/pd_at_target_pfa",
                   "val/pauc", "val/pfa", "val/twin_alarm_rate", "val/threshold", "val/temperature", "lr",
                   "epoch_time_s", "train_img_per_s"]


# --- small utilities ---------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def compute_record() -> dict[str, Any]:
    """What, besides the recipe and the data, decides a run's bits: the library versions, the CPU instruction set
    oneDNN's kernels are chosen for and the number of intra-op threads (a convolution's weight gradient is summed
    over per-thread partial sums, so 1 and 2 threads round differently from the first step on, and after two
    epochs of a small run most weight tensors differed; README "Session 17 measurements"). A run repeated with the
    same record, recipe and data gives the same weights bit for bit (``tests/test_train_determinism.py``)."""
    return {"torch": str(torch.__version__), "numpy": str(np.__version__), "threads": torch.get_num_threads(),
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "cuda": str(torch.version.cuda) if torch.cuda.is_available() else None}


def data_fingerprint(records: list[Any], root: Path) -> str:
    """sha256 over the manifest lines used (sorted by scan id) and the size of every file they name.

    Sizes, not contents: hashing tens of GB of PNGs would cost minutes per run, and a regenerated or
    edited dataset changes its manifest (seed, provenance) or its compressed file sizes."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.scan_id):
        digest.update(record.to_json().encode())
        names = sorted(record.files.values()) + ([record.mask] if record.mask else [])
        for name in names:
            try:
                size = (root / name).stat().st_size
            except OSError:
                size = -1
            digest.update(f"\n{name}:{size}".encode())
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


# --- losses --------------------------------------------------------------------------------------------------
def mask_targets(masks: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) coverage in [0, 1] → (N, 1, h, w): the largest coverage inside each heatmap cell."""
    return F.adaptive_max_pool2d(masks.unsqueeze(1).float(), size_hw)


def compute_losses(logits: torch.Tensor, heat_logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                   has_mask: torch.Tensor, mask_weight: float = 1.0, dice_weight: float = 1.0,
                   label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """``{"loss", "cls_loss", "mask_bce", "mask_dice"}``; see the module docstring for the definitions."""
    cls_loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    heat = heat_logits.float()
    zero = heat.sum() * 0.0  # keeps the mask head in the graph on batches without masks (DDP needs it)
    selected = has_mask.bool()
    if selected.any():
        target = mask_targets(masks[selected], heat.shape[-2:])
        chosen = heat[selected]
        mask_bce = F.binary_cross_entropy_with_logits(chosen, target)
        positive = target.flatten(1).sum(1) > 0
        if positive.any():
            p = torch.sigmoid(chosen[positive]).flatten(1)
            t = target[positive].flatten(1)
            dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
            mask_dice = dice.mean()
        else:
            mask_dice = zero
    else:
        mask_bce = mask_dice = zero
    loss = cls_loss + mask_weight * (mask_bce + dice_weight * mask_dice)
    return {"loss": loss, "cls_loss": cls_loss.detach(), "mask_bce": mask_bce.detach(), "mask_dice": mask_dice.detach()}


# --- EMA, schedule, sampler --------------------------------------------------------------------------------------
class ModelEMA:
    """Exponential moving average of weights *and* buffers (BatchNorm statistics).

    Effective decay ramps up as ``decay·(1 − exp(−updates/τ))``: early on the average follows the fast-
    changing weights instead of remembering the random initialisation."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 2000.0, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau)) if self.tau > 0 else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)
            else:
                value.copy_(source[key])

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up from ~0 to 1, then cosine from 1 down to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BalancedShardSampler(torch.utils.data.Sampler):
    """Per-epoch indices: class-balanced draws (or a permutation), sharded over DDP ranks.

    Deterministic in (seed, epoch), the same on every rank before sharding, so ranks see disjoint
    samples and a resumed run draws exactly what the uninterrupted run would have drawn."""

    def __init__(self, labels: list[int], balanced: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.labels = np.asarray(labels, np.int64)
        self.balanced, self.seed, self.rank, self.world = balanced, seed, rank, world_size
        self.epoch = 0
        self.per_rank = math.ceil(len(self.labels) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.labels)
        total = self.per_rank * self.world
        counts = np.bincount(self.labels, minlength=2)
        if self.balanced and (counts > 0).sum() == 2:
            weights = 1.0 / counts[self.labels]
            indices = rng.choice(n, size=total, replace=True, p=weights / weights.sum())
        else:
            indices = rng.permutation(n)
            indices = np.resize(indices, total)  # wraps around to an equal share per rank
        return indices

    def __iter__(self):
        return iter(self.epoch_indices()[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


# --- data ----------------------------------------------------------------------------------------------------------
def load_splits(data_dir: Path) -> tuple[list[Any], list[Any]]:
    """(train, val) records, each sorted by scan id: the sampler draws dataset indices, so a set whose manifest
    lines were assembled in another order (``data merge`` of its parts in another order, ``--move``, an
    extension by ``simulate --start``) trains exactly as any other listing of the same scans."""
    records = sorted(read_manifest(data_dir), key=lambda r: r.scan_id)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    if not any(r.split for r in records):
        raise ParcelscanError(f"{data_dir}: the manifest has no splits; run `parcelscan data split {data_dir}` first")
    if not train or not val:
        raise ParcelscanError(f"{data_dir}: need scans in both the train and val splits "
                              f"(have {len(train)} train, {len(val)} val); re-run `parcelscan data split`")
    for name, subset in (("train", train), ("val", val)):
        labels = {r.label for r in subset}
        if labels != {"clear", "suspect"}:
            raise ParcelscanError(f"{data_dir}: the {name} split needs clear and suspect scans (has {sorted(labels)})")
    return train, val


# What a fine-tune may change of its checkpoint's preprocessing: the dark end's ceiling changes what the network
# reads only where the beam is stopped, so a network adapts to it in a few epochs; every other field (pitch, tiles,
# channels, normalisation) changes what every pixel means, and a model is retrained from scratch for it.
FINE_TUNABLE_SPEC_FIELDS = ("attenuation_ceiling",)


def _initial_weights(config: TrainConfig) -> tuple[Any, dict[str, torch.Tensor], NetworkConfig]:
    """(spec, weights, network shape) of ``config.init_from``: fine-tuning keeps the checkpoint's
    preprocessing, arch and network shape; ``config.preprocessing`` may set ``FINE_TUNABLE_SPEC_FIELDS`` and may
    repeat the checkpoint's other values, never change them."""
    source = read_checkpoint(config.init_from)
    if source["arch"] != config.arch:
        raise ParcelscanError(f"init_from {config.init_from} is a {source['arch']} model; set arch: {source['arch']}")
    spec = PreprocessSpec.from_dict(source["preprocessing"])
    if spec.input_kind != config.input_kind:
        raise ParcelscanError(f"init_from {config.init_from} takes {spec.input_kind} input, the config says "
                              f"{config.input_kind}")
    changed = sorted(name for name, value in config.preprocessing.items()
                     if name not in FINE_TUNABLE_SPEC_FIELDS and getattr(spec, name, None) != value)
    if changed:
        raise ParcelscanError(f"init_from {config.init_from}: a fine-tune keeps the checkpoint's preprocessing; "
                              f"the config changes {', '.join(changed)} (only {', '.join(FINE_TUNABLE_SPEC_FIELDS)} "
                              "may change: train from scratch for the rest)")
    spec = dataclasses.replace(spec, **{name: value for name, value in config.preprocessing.items()
                                        if name in FINE_TUNABLE_SPEC_FIELDS})  # validated again
    weights = source["ema"] if source.get("ema") is not None else source["model"]
    return spec, weights, network_config(source)


def make_spec(config: TrainConfig):
    try:
        return PreprocessSpec.for_kind(config.input_kind, **config.preprocessing)
    except TypeError as error:
        raise ParcelscanError(f"config preprocessing: {error}") from error


def build_train_dataset(root: Path, spec: Any, config: TrainConfig):
    """The train split as ``datasets.torch_dataset.ScanDataset``: one tile per scan (the one with the most
    powder for a suspect), tile label from the mask, physical augmentation, seeded by (seed, epoch, index), the
    items in scan-id order (``load_splits``)."""
    return ScanDataset(root, spec, split="train", augment=config.augment, seed=config.seed,
                       tile_flips=config.tile_flips, cache_root=cache_root(root, config),
                       twin_policy=config.twin_policy, crop=config.train_crop,
                       tile_augment=config.tile_augment, sort_by_scan_id=True)


def cache_root(root: Path, config: TrainConfig) -> Path | None:
    """Where prepared scans are cached (``config.cache``), else None."""
    return default_cache_root(root) if config.cache else None


def dataset_labels(dataset: Any) -> list[int]:
    """Scan labels (0 clear, 1 suspect) in dataset order, for class-balanced sampling."""
    return [int(x) for x in dataset.labels]


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    np.random.seed(seed)
    random.seed(seed)


def _unpack(batch: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``torch_dataset.collate`` output → (images, tile labels, masks (N, H, W), has_mask) on ``device``."""
    images, labels, masks, metadata = batch
    has_mask = torch.tensor([bool(m["has_mask"]) for m in metadata])
    images = images.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
    return (images, labels.to(device, non_blocking=True).long(),
            masks[:, 0].to(device, non_blocking=True).float(), has_mask.to(device))


# --- the trainer -----------------------------------------------------------------------------------------------------
class Trainer:
    """One training run; construct, then :meth:`fit`. Used by ``parcelscan train`` and the tests."""

    def __init__(self, config: TrainConfig | None = None, resume: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        """A new run from ``config``, or (``resume``) the run of that ``last.pt`` continued, with only the
        ``overrides`` that do not change the recipe (:data:`RESUME_OVERRIDABLE`)."""
        self.dist = D.env_dist_info()
        self.resume_path = Path(resume) if resume else None
        resumed = None
        if self.resume_path is not None:
            resumed = read_checkpoint(self.resume_path)
            config = _resumed_config(resumed, overrides or {})
        elif config is None:
            raise ValueError("Trainer needs a config or a checkpoint to resume")
        self.config = config.validate()
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.dist = D.init_distributed(self.device.type)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        seed_everything(config.seed, config.deterministic)  # the same initial weights on every rank
        self.data_dir = Path(config.data)
        self.train_records, self.val_records = load_splits(self.data_dir)
        self.init_weights = None
        self.network: NetworkConfig | None = None  # None: a new model of the network's current defaults
        if resumed is not None:
            self.spec = PreprocessSpec.from_dict(resumed["preprocessing"])
            self.network = network_config(resumed)
        elif config.init_from:
            self.spec, self.init_weights, self.network = _initial_weights(config)
            if config.test_time_flips:  # a scoring setting, not a shape: a fine-tune may change it
                self.network = dataclasses.replace(self.network, test_time_flips=config.test_time_flips)
        else:
            self.spec = make_spec(config)
        self.fingerprint = data_fingerprint(self.train_records + self.val_records, self.data_dir)
        if resumed is not None and resumed.get("data_fingerprint") != self.fingerprint and self.dist.is_main:
            print(f"warning: the dataset changed since {self.resume_path} was written (data fingerprint differs)")
        self.compute = compute_record()
        before = (resumed or {}).get("compute")
        if before and before != self.compute and self.dist.is_main:
            changed = ", ".join(f"{k} {before.get(k)} → {v}" for k, v in self.compute.items() if before.get(k) != v)
            print(f"warning: resumed on other compute ({changed}): the run will not be bit-identical to one "
                  "that was never interrupted")
        self._build(resumed)

    # --- setup --------------------------------------------------------------------------------------------
    def _build(self, resumed: dict[str, Any] | None) -> None:
        config = self.config
        self.train_dataset = build_train_dataset(self.data_dir, self.spec, config)
        self.sampler = BalancedShardSampler(dataset_labels(self.train_dataset),
                                            config.balanced_sampling, config.seed, self.dist.rank,
                                            self.dist.world_size)
        generator = torch.Generator()
        generator.manual_seed(config.seed + 1000 * self.dist.rank)
        self.loader = torch.utils.data.DataLoader(
            self.train_dataset, batch_size=config.batch_size, sampler=self.sampler, num_workers=config.workers,
            pin_memory=self.device.type == "cuda", drop_last=len(self.sampler) > config.batch_size,
            worker_init_fn=_worker_init, generator=generator, collate_fn=collate,
            persistent_workers=False)  # workers must see the dataset's set_epoch (augmentation varies per epoch)
        model = (build_from_config(self.network) if self.network is not None
                 else build_model(config.arch, self.spec.in_channels, score_head=config.score_head,
                                  score_topk=config.score_topk, test_time_flips=config.test_time_flips or 1))
        if self.init_weights is not None:
            model.load_state_dict(self.init_weights)
        # channels-last (NHWC) weights and batches: MobileNet's depthwise and 1×1 convolutions run ~1.5× faster
        # forward + backward on 2 CPU cores (oneDNN's blocked kernels; the same on a GPU). Only the memory layout
        # changes: checkpoints load into any layout, and export builds a fresh (contiguous) model from them.
        model = model.to(self.device, memory_format=torch.channels_last)
        self.model = model
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        self.steps_per_epoch = max(1, len(self.loader))
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        min_ratio = config.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, min_ratio))
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if self.dist.enabled:  # DDP broadcasts rank 0's weights here, before the EMA copies them
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self.ddp = model
        self.ema = ModelEMA(model, config.ema_decay, config.ema_tau_steps)
        self.start_epoch = 1
        self.best = {"fitness": (-1.0, -1.0), "epoch": 0}
        self.best_val: tuple[dict[str, float], np.ndarray, np.ndarray] | None = None
        self.stale_epochs = 0
        if resumed is not None:
            model.load_state_dict(resumed["model"])
            self.optimizer.load_state_dict(resumed["optimizer"])
            self.scheduler.load_state_dict(resumed["scheduler"])
            if resumed.get("ema") is not None:
                self.ema.module.load_state_dict(resumed["ema"])
            state = resumed.get("train_state", {})
            self.ema.updates = int(state.get("ema_updates", 0))
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.best = {"fitness": tuple(state.get("best_fitness", (-1.0, -1.0))),
                         "epoch": int(state.get("best_epoch", 0))}
            self.stale_epochs = int(state.get("stale_epochs", 0))
            self.start_epoch = int(resumed["epoch"]) + 1

    # --- one epoch ------------------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        config = self.config
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(epoch)
        torch.manual_seed(config.seed + 7919 * epoch + self.dist.rank)
        self.ddp.train()
        sums = {"loss": 0.0, "cls_loss": 0.0, "mask_bce": 0.0, "mask_dice": 0.0}
        seen = 0
        start = time.perf_counter()
        batches = self.loader
        bar = None
        if self.dist.is_main and config.progress:
            from tqdm import tqdm

            bar = tqdm(batches, total=len(self.loader), desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                       dynamic_ncols=True, leave=False,
                       mininterval=0.1 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
            batches = bar
        for batch in batches:
            images, labels, masks, has_mask = _unpack(batch, self.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
                logits, heat = self.ddp(images)
            losses = compute_losses(logits, heat, labels, masks, has_mask, config.mask_weight, config.dice_weight,
                                    config.label_smoothing)
            if not torch.isfinite(losses["loss"]):
                raise ParcelscanError(f"epoch {epoch}: the loss became {losses['loss'].item()} (lower --lr?)")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            if config.grad_clip_norm > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.model)
            n = images.shape[0]
            seen += n
            for key in sums:
                sums[key] += float(losses[key].detach()) * n
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", cls=f"{sums['cls_loss'] / seen:.4f}",
                                mask=f"{(sums['mask_bce'] + sums['mask_dice']) / seen:.4f}",
                                img_s=f"{seen * self.dist.world_size / max(elapsed, 1e-9):.1f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        means = D.mean_over_ranks([sums[k] / max(seen, 1) for k in sums])
        out = dict(zip(sums, means, strict=True))
        out["img_per_s"] = seen * self.dist.world_size / max(elapsed, 1e-9)
        return out

    def _predict(self, records: list[Any], keep: Any = (), with_masks: bool = False, progress: bool = False):
        """Scan-level predictions of the EMA model on ``records`` (this process only, no collectives)."""
        self.ema.module.eval()
        return predict_records(records, self.data_dir, self.spec, torch_runner(self.ema.module, self.device),
                               batch_tiles=self.config.batch_size, workers=self.config.workers,
                               with_masks=with_masks, keep=keep, progress=progress, desc="val",
                               cache_root=cache_root(self.data_dir, self.config))

    def validate(self) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """Scan-level validation of the EMA model: every rank predicts a shard, every rank gets all results
        (so every rank takes the same early-stopping decision). Returns (metrics, labels, margins)."""
        shard = list(range(self.dist.rank, len(self.val_records), self.dist.world_size))
        outputs = self._predict([self.val_records[i] for i in shard], with_masks=True,
                                progress=self.dist.is_main and self.config.progress)
        gathered = D.all_gather_objects((shard, outputs.margins.tolist(), outputs.mask_bce_sum,
                                         outputs.mask_bce_tiles, outputs.mask_dice_sum, outputs.mask_dice_tiles))
        margins = np.full(len(self.val_records), np.nan)
        bce_sum = bce_n = dice_sum = dice_n = 0
        for part_shard, part_margins, b_sum, b_n, d_sum, d_n in gathered:
            margins[part_shard] = part_margins
            bce_sum, bce_n, dice_sum, dice_n = bce_sum + b_sum, bce_n + b_n, dice_sum + d_sum, dice_n + d_n
        labels = np.array([r.label == "suspect" for r in self.val_records])
        # Pfa (and so the threshold, the temperature and best.pt) is counted on clear scans that are not
        # dual-energy twins of a target: a twin cannot be told from a target by physics (twin_of unknown =
        # not a twin). The twins' alarm rate is reported beside it.
        keep = ~twin_mask(self.val_records)
        if not (~labels[keep]).any():  # every val clear scan a twin: count them rather than have no threshold
            keep = np.ones_like(labels)
        point = operating_point(labels[keep], margins[keep], self.config.target_pfa)
        pd, pfa, threshold_margin = M.pd_at_pfa(labels[keep], margins[keep], self.config.target_pfa)
        twins = twin_mask(self.val_records)
        twin_alarms = float((margins[twins] >= threshold_margin).mean()) if twins.any() else float("nan")
        cls_loss = M.nll_binary(labels, margins, 1.0)
        mask_bce = bce_sum / bce_n if bce_n else 0.0
        mask_dice = dice_sum / dice_n if dice_n else 0.0
        result = {"val/loss": cls_loss + self.config.mask_weight * (mask_bce + self.config.dice_weight * mask_dice),
                  "val/cls_loss": cls_loss, "val/mask_bce": mask_bce, "val/mask_dice": mask_dice,
                  "val/auc": M.roc_auc(labels, margins), "val/ap": M.average_precision(labels, margins),
                  "val/pd_at_target_pfa": pd,
                  "val/pauc": M.partial_auc(labels[keep], margins[keep], self.config.pauc_max_pfa), "val/pfa": pfa,
                  "val/twin_alarm_rate": twin_alarms,
                  "val/threshold": point["threshold"],
                  "val/temperature": point["temperature"], "val/pd_calibrated": point["val_pd"],
                  "val/pfa_calibrated": point["val_pfa"]}
        return result, labels, margins

    # --- checkpoints and files ---------------------------------------------------------------------------------------
    def checkpoint(self, epoch: int, val: dict[str, float]) -> dict[str, Any]:
        metrics = {k.removeprefix("val/"): float(v) for k, v in val.items()}
        return {
            "arch": self.config.arch, "in_channels": self.spec.in_channels, "network": network_entry(self.model),
            "model": _cpu_state(self.model.state_dict()), "ema": _cpu_state(self.ema.state_dict()),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "epoch": epoch, "config": self.config.to_dict(), "preprocessing": self.spec.to_dict(),
            "threshold": float(val["val/threshold"]), "target_pfa": self.config.target_pfa,
            "temperature": float(val["val/temperature"]), "metrics": {"val": metrics},
            "data_fingerprint": self.fingerprint, "git_commit": self.git_commit, "compute": self.compute,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "name": self.run_name,
            "version": f"{__version__}+{self.run_name}.e{epoch}",
            "train_state": {"best_fitness": list(self.best["fitness"]), "best_epoch": self.best["epoch"],
                            "stale_epochs": self.stale_epochs, "ema_updates": self.ema.updates,
                            "scaler": self.scaler.state_dict() if self.use_amp else {}},
        }

    def _prepare_run_dir(self) -> Path:
        if self.resume_path is not None:
            run_dir = self.resume_path.resolve().parent.parent
        elif self.dist.is_main:
            run_dir = increment_dir(self.config.project, self.config.name)
        else:
            run_dir = None
        run_dir = Path(D.broadcast_object(str(run_dir) if run_dir else None))
        self.run_dir = run_dir
        self.run_name = run_dir.name
        self.git_commit = git_commit()
        if self.dist.is_main:
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            dump_config(self.config, run_dir / "args.yaml")
            results = run_dir / "results.csv"
            if self.resume_path is None or not results.exists():
                with open(results, "w", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerow(RESULTS_COLUMNS)
            else:
                _truncate_results(results, self.start_epoch)
        return run_dir

    def _append_results(self, row: dict[str, float]) -> None:
        with open(self.run_dir / "results.csv", "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_fmt(row.get(column, float("nan"))) for column in RESULTS_COLUMNS])

    # --- the loop ------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        config = self.config
        run_dir = self._prepare_run_dir()
        if self.dist.is_main:
            print(f"training {config.arch} on {len(self.train_records)} train / {len(self.val_records)} val scans "
                  f"({self.spec.input_kind}, tiles {self.spec.tile_rows}x{self.spec.tile_cols}), device {self.device}"
                  f"{f', {self.dist.world_size} processes' if self.dist.enabled else ''} → {run_dir}")
            print(f"compute: torch {self.compute['torch']}, {self.compute['threads']} intra-op thread(s), CPU "
                  f"{self.compute['cpu_capability']} (a run repeated with the same compute, recipe and data gives "
                  "the same weights)")
        started = time.perf_counter()
        if not self.dist.enabled and hasattr(self.train_dataset, "fill_cache"):  # decode once, on every core
            filled = self.train_dataset.fill_cache(os.cpu_count() or 1)
            if filled and self.dist.is_main:
                print(f"prepared {filled} scans into the cache in {time.perf_counter() - started:.0f} s")
        epoch = self.start_epoch - 1
        stopped_early = False
        try:
            for epoch in range(self.start_epoch, config.epochs + 1):
                epoch_start = time.perf_counter()
                train = self.train_one_epoch(epoch)
                if epoch % config.val_interval and epoch != config.epochs:
                    continue
                val, labels, margins = self.validate()
                fitness = (val[f"val/{config.select_metric}"], val["val/auc"])
                improved = fitness > self.best["fitness"]
                if improved:
                    self.best = {"fitness": fitness, "epoch": epoch}
                    self.best_val = (val, labels, margins)
                    self.stale_epochs = 0
                else:
                    self.stale_epochs += 1
                row = {"epoch": epoch, **{f"train/{k}": v for k, v in train.items() if k != "img_per_s"}, **val,
                       "lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - epoch_start,
                       "train_img_per_s": train["img_per_s"]}
                if self.dist.is_main:
                    self._append_results(row)
                    checkpoint = self.checkpoint(epoch, val)
                    save_checkpoint(run_dir / "weights" / "last.pt", checkpoint)
                    if improved:
                        save_checkpoint(run_dir / "weights" / "best.pt", checkpoint)
                    if config.save_period and epoch % config.save_period == 0:
                        save_checkpoint(run_dir / "weights" / f"epoch{epoch}.pt", checkpoint)
                    print(f"epoch {epoch}: loss {train['loss']:.4f}, val AUC {val['val/auc']:.4f}, "
                          f"Pd@Pfa{100 * config.target_pfa:g}% {100 * val['val/pd_at_target_pfa']:.2f} %, "
                          f"pAUC@{config.pauc_max_pfa:g} {val['val/pauc']:.4f}, "
                          f"{train['img_per_s']:.1f} img/s{' *' if improved else ''}", flush=True)
                D.barrier()
                if config.patience and self.stale_epochs >= config.patience:
                    stopped_early = True
                    if self.dist.is_main:
                        print(f"early stop: no better val {config.select_metric} for {config.patience} "
                              f"epochs (best epoch {self.best['epoch']})")
                    break
            if self.dist.is_main:
                self.finish(time.perf_counter() - started, epoch, stopped_early)
            D.barrier()
        finally:
            D.cleanup()
        return run_dir

    def finish(self, seconds: float, last_epoch: int, stopped_early: bool) -> None:
        """metrics.json and plots for best.pt, from its validation predictions (rank 0 only)."""
        best_path = self.run_dir / "weights" / "best.pt"
        if not best_path.exists():
            return
        model, info = load_checkpoint(best_path)
        self.ema.module.load_state_dict(model.state_dict())  # training is over: the EMA now holds best.pt
        labels = np.array([r.label == "suspect" for r in self.val_records])
        if self.best_val is not None and self.best["epoch"] == info["epoch"]:
            val, labels, margins = self.best_val
        else:  # best epoch was before a resume: predict again (rank 0 alone, no collectives)
            margins = self._predict(self.val_records).margins
            val = {f"val/{k}": v for k, v in info["metrics"]["val"].items()}
        summary = screening_summary(labels, margins, self.val_records, info["threshold"], info["temperature"],
                                    self.config.target_pfa, n_boot=200, seed=self.config.seed)
        metrics = {"best_epoch": info["epoch"], "last_epoch": last_epoch, "stopped_early": stopped_early,
                   "train_seconds": seconds, "threshold": info["threshold"], "temperature": info["temperature"],
                   "target_pfa": self.config.target_pfa, "data_fingerprint": self.fingerprint,
                   "git_commit": self.git_commit, "device": str(self.device), "compute": self.compute,
                   "world_size": self.dist.world_size,
                   "val": {k.removeprefix("val/"): v for k, v in val.items()}, "val_summary": summary}
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n",
                                                   encoding="utf-8")
        if not self.config.plots:
            return
        scores = scan_probabilities(margins, info["temperature"])
        stored = summary["stored_operating_point"]
        marks = {f"Pfa {k}": (v["pfa"], v["pd"]) for k, v in summary["pd_at_pfa"].items()}
        plots.plot_results(self.run_dir / "results.csv", self.run_dir / "results.png")
        plots.plot_roc(labels, scores, self.run_dir / "roc.png", marks)
        plots.plot_pd_vs_pfa(labels, scores, self.run_dir / "pd_vs_pfa.png", marks)
        plots.plot_confusion(stored["confusion"], self.run_dir / "confusion_matrix.png",
                             f"val threshold {stored['threshold']:.4g}")
        plots.plot_reliability(labels, scan_probabilities(margins, 1.0), scores, self.run_dir / "calibration.png",
                               info["temperature"])
        picks = heatmap_picks(labels, scores, 8)
        chosen = [self.val_records[i] for i in picks]
        shown = self._predict(chosen, keep=range(len(chosen)))
        plots.plot_heatmap_grid(shown, chosen, scan_probabilities(shown.margins, info["temperature"]),
                                self.run_dir / "val_heatmaps.png", info["threshold"])


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _truncate_results(path: Path, start_epoch: int) -> None:
    """On resume, drop rows of epochs after the checkpoint (a run killed after writing a row, before saving)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < start_epoch]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)


RESUME_OVERRIDABLE = ("data", "epochs", "device", "workers", "progress", "plots", "patience")


def _resumed_config(checkpoint: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config; a resumed run may only change settings that leave the recipe alone."""
    if "config" not in checkpoint:
        raise ParcelscanError("the checkpoint has no training config; it cannot be resumed")
    config = TrainConfig.from_dict(checkpoint["config"], "checkpoint config")
    refused = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and v != getattr(config, k))
    if refused:
        raise ParcelscanError(f"--resume continues a run with its own settings; cannot change {', '.join(refused)} "
                              f"(allowed: {', '.join(RESUME_OVERRIDABLE)}); start a new run instead")
    for key, value in overrides.items():
        if key in RESUME_OVERRIDABLE:
            setattr(config, key, value)
    if int(checkpoint.get("epoch", 0)) >= config.epochs:
        raise ParcelscanError(f"the run already finished its {config.epochs} epochs; pass --epochs N (> "
                              f"{checkpoint.get('epoch')}) to train further")
    return config


def train(config: TrainConfig | None = None, resume: str | Path | None = None,
          overrides: dict[str, Any] | None = None) -> Path:
    """Run (or resume) a training; returns the run directory."""
    return Trainer(config, resume, overrides).fit()
