"""PNG plots for training runs and evaluation reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.training import metrics as M


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_roc(labels, scores, path: Path, marks: dict[str, tuple[float, float]] | None = None) -> None:
    """ROC on linear axes and, beside it, on a log Pfa axis — screening lives at Pfa ≤ 1 %."""
    plt = _pyplot()
    pfa, pd, _ = M.roc_curve(labels, scores)
    auc = M.roc_auc(labels, scores)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, log in zip(axes, (False, True), strict=True):
        ax.step(pfa, pd, where="post", label=f"AUC {auc:.4f}")
        for name, (x, y) in (marks or {}).items():
            ax.plot([max(x, 1e-5) if log else x], [y], "o", label=f"{name}: Pd {100 * y:.1f} %")
        ax.set_xlabel("Pfa (false-alarm rate)")
        ax.set_ylabel("Pd (detection rate)")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        if log:
            ax.set_xscale("log")
            ax.set_xlim(max(1e-4, 0.5 / max(1, int((~np.asarray(labels).astype(bool)).sum()))), 1)
            ax.set_title("ROC (log Pfa)")
        else:
            ax.set_xlim(0, 1)
            ax.set_title("ROC")
    axes[0].legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_pd_vs_pfa(labels, scores, path: Path, marks: dict[str, tuple[float, float]] | None = None) -> None:
    """Pd as a function of the target Pfa, with the conservative threshold rule of ``threshold_at_pfa``."""
    plt = _pyplot()
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    n_clear = int((~y).sum())
    targets = np.unique(np.r_[np.geomspace(max(1e-4, 1.0 / n_clear), 0.5, 60), [0.001, 0.01, 0.1]])
    targets = targets[(targets > 0) & (targets < 1)]
    pds = [M.pd_at_pfa(y, s, t)[0] for t in targets]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(targets, pds, "-", label="Pd at target Pfa")
    for name, (x, value) in (marks or {}).items():
        ax.plot([max(x, targets[0])], [value], "o", label=f"{name}: Pd {100 * value:.1f} %")
    ax.set_xscale("log")
    ax.set_xlabel("target Pfa")
    ax.set_ylabel("Pd")
    ax.set_ylim(0, 1.01)
    ax.axvline(0.01, color="grey", lw=0.8, ls="--")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Pd vs Pfa ({n_clear} clear, {int(y.sum())} suspect scans)")
    _save(fig, path)


def plot_confusion(confusion: dict[str, int], path: Path, title: str = "") -> None:
    plt = _pyplot()
    table = np.array([[confusion["tp"], confusion["fn"]], [confusion["fp"], confusion["tn"]]])
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(table / np.maximum(table.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(table):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=12)
    ax.set_xticks([0, 1], ["flagged suspect", "passed clear"])
    ax.set_yticks([0, 1], ["suspect", "clear"])
    ax.set_xlabel("decision")
    ax.set_ylabel("truth")
    ax.set_title(f"confusion at {title}" if title else "confusion at the operating point", fontsize=9)
    _save(fig, path)


def plot_reliability(labels, raw: np.ndarray, calibrated: np.ndarray, path: Path, temperature: float,
                     n_bins: int = 15) -> None:
    plt = _pyplot()
    y = np.asarray(labels).astype(bool)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for name, p in ((f"T=1 (ECE {M.expected_calibration_error(y, raw, n_bins):.3f})", raw),
                    (f"T={temperature:.3g} (ECE {M.expected_calibration_error(y, calibrated, n_bins):.3f})",
                     calibrated)):
        p = np.asarray(p, np.float64)
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        xs = [p[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ys = [y[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ax.plot(xs, ys, "o-", label=name)
    ax.set_xlabel("predicted P(suspect)")
    ax.set_ylabel("observed share suspect")
    ax.legend(fontsize=8)
    ax.set_title("calibration")
    _save(fig, path)


def read_results(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append({k.strip(): float(v) if v not in ("", "nan") else float("nan") for k, v in row.items()})
        return rows


def plot_results(results_csv: Path, path: Path) -> None:
    """Loss curves (train parts, val) and validation metrics per epoch from results.csv."""
    plt = _pyplot()
    rows = read_results(results_csv)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    keys = list(rows[0])
    panels = [("train losses", [k for k in keys if k.startswith("train/") and ("loss" in k or "mask_" in k)]),
              ("validation losses (scan-level)", [k for k in keys if k.startswith("val/") and
                                                  ("loss" in k or "mask_" in k)]),
              ("validation metrics", [k for k in ("val/auc", "val/ap", "val/pd_at_target_pfa", "val/pfa")
                                      if k in keys]),
              ("learning rate", ["lr"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ax.plot(epochs, [r[key] for r in rows], "o-", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=7)
    _save(fig, path)


def plot_heatmap_grid(outputs: Any, records: Sequence[Any], scores: np.ndarray, path: Path, threshold: float,
                      columns: int = 4) -> None:
    """Scans with the model's powder heatmap over the operator image; the labelled mask outlined in green."""
    import cv2

    plt = _pyplot()
    indices = sorted(outputs.heatmaps)
    if not indices:
        return
    rows = (len(indices) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices, strict=False):
        image = outputs.displays[index].astype(np.float32) / 255.0
        heat = np.clip(outputs.heatmaps[index], 0, 1)
        alpha = np.clip((heat - 0.2) / 0.8, 0, 1)[..., None] * 0.65
        blended = image * (1 - alpha) + np.array([1.0, 0.0, 0.8]) * alpha
        ax.imshow(np.clip(blended, 0.0, 1.0))  # float rounding can overshoot 1 by an ulp
        mask = outputs.masks.get(index)
        if mask is not None and mask.any():
            contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                ax.plot(contour[:, 0, 0], contour[:, 0, 1], color="lime", lw=0.8)
        record = records[index]
        verdict = "suspect" if scores[index] >= threshold else "clear"
        what = record.scenario if record.label == "suspect" else (record.lookalike or "clear")
        ax.set_title(f"{record.scan_id}\n{record.label}/{what}: p={float(scores[index]):.4f} → {verdict}",
                     fontsize=7)
    _save(fig, path)
