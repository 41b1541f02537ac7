"""Training and evaluation plots with matplotlib (Agg): loss curves, PR curves, per-class AP or accuracy, the
confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cvpipe.paths import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, keep_suffix=True) as tmp:  # the suffix tells savefig the format
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def loss_curves(history: list[dict], path: Path, headline: tuple[str, ...] = (), *, unit_interval: bool = True) -> Path:
    """Every `loss*` column against epochs, and the `headline` val stats that were measured (on a 0–1 axis where
    `unit_interval`)."""
    epochs = [row["epoch"] for row in history]
    losses = [k for k in history[0] if k.startswith("loss")] if history else []
    metrics = [k for k in headline if any(k in row for row in history)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in losses:
        # markers: one epoch is one point, which a line alone does not draw
        axes[0].plot(epochs, [row.get(key, np.nan) for row in history], marker="o", markersize=3, label=key)
    axes[0].set(xlabel="epoch", ylabel="training loss (epoch mean)", title="losses")
    axes[0].legend(fontsize=8)
    for key in metrics:
        points = [(row["epoch"], row[key]) for row in history if key in row and row[key] != ""]
        if points:
            axes[1].plot(*zip(*points), marker="o", label=key)
    axes[1].set(xlabel="epoch", ylabel="val", title="val metrics")
    if metrics and unit_interval:
        axes[1].set_ylim(0, 1)
    if metrics:
        axes[1].legend(fontsize=8)
    return _save(fig, path)


def pr_curves(recall: np.ndarray, precision: dict[str, np.ndarray], ap50: dict[str, float], path: Path, *,
              title: str = "precision–recall at IoU 0.5") -> Path:
    fig, ax = plt.subplots(figsize=(6, 5))
    many = len(precision) > 20  # a legend of every class would outgrow the figure
    for name, p in precision.items():
        ax.plot(recall, p, linewidth=0.8 if many else 1.5, label=None if many else f"{name} AP50 {ap50[name]:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=title + (f" ({len(precision)} classes)" if many else ""),
           xlim=(0, 1), ylim=(0, 1.01))
    if not many:
        ax.legend(fontsize=8)
    return _save(fig, path)


MAX_PLOTTED_CLASSES = 40  # past this, a figure shows the classes that matter, so its size stays bounded


def per_class_ap(per_class: dict[str, float], path: Path, *, metric: str = "AP@[.5:.95]") -> Path:
    """A bar per class; with more than MAX_PLOTTED_CLASSES, the lowest ones (the JSON keeps them all)."""
    items = [(name, 0.0 if np.isnan(v) else v) for name, v in per_class.items()]
    title = f"per-class {metric}"
    if len(items) > MAX_PLOTTED_CLASSES:
        title += f": the {MAX_PLOTTED_CLASSES} lowest of {len(items)} classes"
        items = sorted(items, key=lambda item: item[1])[:MAX_PLOTTED_CLASSES]
    names, values = [name for name, _ in items], [v for _, v in items]
    fig, ax = plt.subplots(figsize=(max(5, 0.4 * len(names) + 2), 4))
    ax.bar(range(len(names)), values)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set(ylabel=metric, title=title, ylim=(0, 1))
    return _save(fig, path)


def most_confused(confusion: np.ndarray, limit: int = MAX_PLOTTED_CLASSES) -> np.ndarray:
    """Indices of at most `limit` classes, those of the largest off-diagonal counts (the most confused pairs),
    in class order; the classes with most examples fill in where there are few mistakes."""
    off = confusion.astype(np.float64).copy()
    np.fill_diagonal(off, 0)
    chosen: list[int] = []
    for flat in np.argsort(off, axis=None)[::-1]:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] <= 0 or len(chosen) >= limit:
            break
        for k in (int(i), int(j)):
            if k not in chosen and len(chosen) < limit:
                chosen.append(k)
    for k in np.argsort(confusion.sum(1))[::-1]:
        if len(chosen) >= limit:
            break
        if int(k) not in chosen:
            chosen.append(int(k))
    return np.array(sorted(chosen))


def confusion_matrix(confusion: np.ndarray, classes: list[str], path: Path, *, unit: str = "images",
                     title: str | None = None) -> Path:
    """Rows: true class, columns: predicted; colour is the row-normalised share, text the count. With more than
    MAX_PLOTTED_CLASSES classes, only the most confused ones (`most_confused`); the JSON keeps the whole matrix."""
    shares = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    title = title or f"confusion matrix (val {unit})"
    if len(classes) > MAX_PLOTTED_CLASSES:
        keep = most_confused(confusion)
        title += f": the {len(keep)} most confused of {len(classes)} classes"
        confusion, shares, classes = confusion[np.ix_(keep, keep)], shares[np.ix_(keep, keep)], [classes[k] for k in keep]
    size = max(4, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    if len(classes) <= 30:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def confidence_curves(conf: np.ndarray, curves: dict[float, dict], iou: float, chosen: float, path: Path) -> Path:
    """Precision, recall and F1 against confidence: per class and all classes pooled at `iou` (solid), all
    classes at IoU 0.5 (dashed) where `iou` is another; the chosen threshold as a vertical line."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    at = curves[iou]
    many = len(at["per_class"]) > 10
    for ax, key in zip(axes, ("precision", "recall", "f1")):
        for name, curve in at["per_class"].items():
            ax.plot(conf, curve[key], linewidth=0.8, alpha=0.5 if many else 0.9, label=None if many else name)
        ax.plot(conf, at["all"][key], color="black", linewidth=2.5, label=f"all classes, IoU {iou:g}")
        for other, c in curves.items():
            if other != iou:
                ax.plot(conf, c["all"][key], color="black", linestyle="--", linewidth=1.5,
                        label=f"all classes, IoU {other:g}")
        ax.axvline(chosen, color="tab:red", linestyle=":", label=f"conf {chosen:.3f}")
        ax.set(xlabel="confidence", ylabel=key if key != "f1" else "F1", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{key if key != 'f1' else 'F1'} against confidence")
    axes[2].legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def error_breakdown(delta: dict[str, float], counts: dict[str, int], base: float, path: Path) -> Path:
    """AP50 gained by fixing each kind of error alone (TIDE), with how many of each there are."""
    kinds = list(delta)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bars = ax.barh(range(len(kinds)), [delta[k] for k in kinds], color="tab:orange")
    ax.set_yticks(range(len(kinds)), [f"{k} ({counts[k]})" for k in kinds])
    ax.invert_yaxis()
    for bar, kind in zip(bars, kinds):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" +{delta[kind]:.3f} → {base + delta[kind]:.3f}",
                va="center", fontsize=8)
    ax.set(xlabel="AP50 gained if this kind of error were fixed", title=f"error breakdown (AP50 {base:.3f}, IoU 0.5)",
           xlim=(0, max(max(delta.values(), default=0) * 1.6, 0.05)))
    return _save(fig, path)
