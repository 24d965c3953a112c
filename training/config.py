"""``TrainConfig``: every knob of a training run, one dataclass, saved as the run's ``args.yaml``.

Resolution order: dataclass defaults < ``--config FILE`` (YAML) < explicit command-line flags. The
resolved config is written to ``runs/train/<name>/args.yaml`` and stored in every checkpoint, so a run
can be repeated exactly (``parcelscan train --config runs/train/<name>/args.yaml``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from parcelscan.datasets.preprocess import INPUT_KINDS
from parcelscan.errors import ParcelscanError
from parcelscan.model.session import DEVICES

SELECT_METRICS = ("pd_at_target_pfa", "pauc")  # the val numbers that can pick best.pt (TrainConfig.select_metric)


@dataclass
class TrainConfig:
    """Defaults are the shipped-model recipe; tests shrink ``preprocessing`` tiles and epochs."""

    data: str = ""  # dataset directory holding manifest.jsonl with train/val splits
    name: str = "exp"  # run name under project/; auto-incremented (exp, exp2, exp3 …)
    project: str = "runs/train"
    arch: str = "mobilenet_v3_small"
    input_kind: str = "dual_energy"
    preprocessing: dict[str, Any] = field(default_factory=dict)  # overrides of the PreprocessSpec defaults
    init_from: str = ""  # start from this checkpoint's (EMA) weights and preprocessing: fine-tuning, retraining
    # network head (model/network.py): classifier = global-pooled classification head (the 4 mm default);
    # heatmap_topk = the scan score is the mean of the top score_topk heatmap logits (verdict = localisation)
    score_head: str = "classifier"
    score_topk: int = 4
    # views a tile is scored in by the eval-mode network — validation, and what export writes into the model file:
    # 1, 2 (+ left-right) or 4 (+ up-down, both); model/network.py. 0 = keep init_from's (1 for a new model)
    test_time_flips: int = 0
    epochs: int = 40
    batch_size: int = 32
    workers: int = 2  # DataLoader worker processes per rank
    device: str = "auto"
    seed: int = 0
    deterministic: bool = True
    # optimisation
    lr: float = 2e-3  # AdamW peak learning rate (after warm-up), for batch_size 32; scaled linearly with it
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02  # cosine floor as a fraction of lr
    grad_clip_norm: float = 10.0
    ema_decay: float = 0.999
    ema_tau_steps: float = 2000.0  # EMA warm-up: effective decay = ema_decay·(1 − exp(−step/τ))
    amp: bool = True  # mixed precision, used on CUDA only
    label_smoothing: float = 0.0
    # losses: total = class CE + mask_weight·(BCE + dice_weight·dice) on samples with a mask
    mask_weight: float = 1.0
    dice_weight: float = 1.0
    # data
    # clear scans whose look-alike fill is a dual-energy twin of a target (manifest twin_of, simulator ground
    # truth): negative = ordinary clear; ignore = out of the class and mask losses (left out of training);
    # positive = a suspect of the signature task (no mask loss). Unknown twin_of (null) = not a twin.
    # Default ignore: a twin is physically indistinguishable from a target, so calling it clear teaches the
    # model to suppress the signature it needs (the twins then set the 1 % threshold), while calling it
    # suspect without a mask is tile-label noise on multi-tile scans; ignore removes the contradiction.
    # Measured (docs/model-history.md, arms A/B, 800 held-out scans): ignore AUC 0.928, Pd 40.1 % at Pfa 1 %;
    # negative AUC 0.910, Pd 32.5 % (one seed each).
    twin_policy: str = "ignore"
    train_crop: int = 0  # train on a window of this size (px, multiple of 32) of the chosen tile; 0 = whole tile
    balanced_sampling: bool = True  # draw clear and suspect scans equally often in each epoch
    augment: bool = True  # physical augmentation in transmission space (datasets/augment.py)
    tile_flips: bool = False  # flip model tiles (both axes, p 0.5): the free part of augmentation, for augment: false
    cache: bool = False  # keep prepared scans in <data>/.cache (datasets/prepared_cache.py); used without augment
    # the physics of `augment` on the chosen dual-energy tile, after the cache (datasets/tile_augment.py): calibration
    # residuals, a lower dose, detector blur, belt stretch, ~3 ms per item; for augment: false runs
    tile_augment: bool = False
    # validation and selection
    target_pfa: float = 0.01
    # what picks best.pt and drives early stopping (ties: higher AUC): pd_at_target_pfa = val Pd at the target
    # Pfa; pauc = the ROC area for Pfa <= pauc_max_pfa over pauc_max_pfa, on non-twin clears. With a few hundred
    # val clears Pd at Pfa 1 % hangs on two or three clear scores (arm C's best.pt by it was its worst epoch:
    # docs/model-history.md); the partial area averages over the first 10 % of clears and ranks where the
    # operating point lies.
    select_metric: str = "pd_at_target_pfa"
    pauc_max_pfa: float = 0.1
    patience: int = 10  # epochs without a better selection metric before stopping (0 = never)
    val_interval: int = 1
    save_period: int = 0  # also keep weights/epoch<N>.pt every N epochs (0 = only best.pt and last.pt)
    plots: bool = True
    progress: bool = True

    def validate(self) -> TrainConfig:
        from parcelscan.model.network import ARCHS  # the network module loads torch; a config is read without it

        if self.arch not in ARCHS:
            raise ParcelscanError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.input_kind not in INPUT_KINDS:
            raise ParcelscanError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if self.device not in DEVICES:
            raise ParcelscanError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ParcelscanError(f"{name} must be >= 1")
        if self.workers < 0 or self.patience < 0 or self.save_period < 0 or self.val_interval < 1:
            raise ParcelscanError("workers, patience and save_period must be >= 0, val_interval >= 1")
        if self.select_metric not in SELECT_METRICS:
            raise ParcelscanError(f"select_metric must be one of {', '.join(SELECT_METRICS)}, "
                                  f"got {self.select_metric!r}")
        if not 0.0 < self.pauc_max_pfa <= 1.0:
            raise ParcelscanError(f"pauc_max_pfa must be in (0, 1], got {self.pauc_max_pfa}")
        if not 0.0 < self.target_pfa < 1.0:
            raise ParcelscanError(f"target_pfa must be in (0, 1), got {self.target_pfa}")
        if self.lr <= 0 or not 0.0 <= self.ema_decay < 1.0 or self.warmup_epochs < 0:
            raise ParcelscanError("lr must be > 0, ema_decay in [0, 1), warmup_epochs >= 0")
        from parcelscan.datasets.torch_dataset import TWIN_POLICIES  # loads torch, like ARCHS above
        from parcelscan.model.network import SCORE_HEADS

        if self.score_head not in SCORE_HEADS:
            raise ParcelscanError(f"score_head must be one of {', '.join(SCORE_HEADS)}, got {self.score_head!r}")
        if not 1 <= self.score_topk <= 16:
            raise ParcelscanError(f"score_topk must be within 1-16, got {self.score_topk}")
        from parcelscan.model.network import TEST_TIME_FLIPS

        if self.test_time_flips not in (0, *TEST_TIME_FLIPS):
            raise ParcelscanError(f"test_time_flips must be 0 (keep) or one of {TEST_TIME_FLIPS}, "
                                  f"got {self.test_time_flips}")
        if self.twin_policy not in TWIN_POLICIES:
            raise ParcelscanError(f"twin_policy must be one of {', '.join(TWIN_POLICIES)}, got {self.twin_policy!r}")
        if self.train_crop < 0 or self.train_crop % 32:
            raise ParcelscanError(f"train_crop must be 0 or a multiple of 32, got {self.train_crop}")
        if self.tile_augment and (self.augment or self.input_kind != "dual_energy"):
            raise ParcelscanError("tile_augment is the cached dual-energy runs' augmentation: it needs "
                                  "augment: false and input_kind: dual_energy")
        if not isinstance(self.preprocessing, dict):
            raise ParcelscanError("preprocessing must be a mapping of PreprocessSpec fields")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ParcelscanError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            default = getattr(cls(), key)
            values[key] = _coerce(key, value, default, where)
        return cls(**values)


def _coerce(key: str, value: Any, default: Any, where: str) -> Any:
    """YAML gives ints for floats (``lr: 1``) and strings for paths; reject anything else clearly."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParcelscanError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, dict):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ParcelscanError(f"{where}: {key} must be a mapping")
        return dict(value)
    if not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
        raise ParcelscanError(f"{where}: {key} must be {type(default).__name__}, got {value!r}")
    return value


def load_config(path: str | Path) -> TrainConfig:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ParcelscanError(f"config file not found: {path}") from error
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ParcelscanError(f"unreadable config {path}: {error}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParcelscanError(f"{path}: a config file is a YAML mapping of settings")
    return TrainConfig.from_dict(data, str(path))


def dump_config(config: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
