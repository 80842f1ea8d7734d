"""Metrics of a classifier, in the original pipeline's units, and the evaluation files.

overall_metrics.csv: split, loss, loss_weighted, acc_top1, acc_top3,
acc_weighted_top1, acc_weighted_top3; losses in nats per crop, accuracies in
percent. Weighted values are sums of weight x value over the sum of the weights
(the weights: label-balancing ones with --label-weighted, else 1).
label_stats.csv: split, label, precision, recall as fractions; precision is 0
for a label never predicted, recall empty (NaN) for a label with no crops.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classification import utils

logger = logging.getLogger(__name__)

MULTILABEL_THRESHOLD = 0.5     # a multi-label run predicts a label at this sigmoid or more

METRIC_COLUMNS = ('loss', 'loss_weighted', 'acc_top1', 'acc_top3', 'acc_weighted_top1',
                  'acc_weighted_top3')


@dataclass
class EpochResult:
    """Metrics of one pass (accuracies as fractions here, percent in files and logs)."""
    loss: float
    acc_top1: float
    acc_top3: float
    loss_weighted: float
    acc_weighted_top1: float
    acc_weighted_top3: float
    probs: np.ndarray | None = None       # N x C, in dataset order
    unreadable: tuple[int, ...] = ()
    # per example: dataset row, true label, top-1 label, its probability
    examples: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    confusion: np.ndarray | None = None   # C x C counts, rows = truth (single-label)

    def metrics(self) -> dict[str, float]:
        """The overall_metrics.csv row (accuracies in percent)."""
        return {'loss': self.loss, 'loss_weighted': self.loss_weighted,
                'acc_top1': 100 * self.acc_top1, 'acc_top3': 100 * self.acc_top3,
                'acc_weighted_top1': 100 * self.acc_weighted_top1,
                'acc_weighted_top3': 100 * self.acc_weighted_top3}

    def selection_accuracy(self, weighted: bool) -> float:
        """The accuracy that picks the best epoch (label-weighted with --label-weighted)."""
        return self.acc_weighted_top1 if weighted else self.acc_top1


def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """N x C 0/1 matrix of each row's label indices."""
    out = np.zeros((len(label_sets), num_classes), dtype=np.float64)
    for i, labels in enumerate(label_sets):
        out[i, list(labels)] = 1.0
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C counts, rows = truth, columns = prediction."""
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def metrics_from_probs(probs: np.ndarray, y: np.ndarray, w: np.ndarray,
                       unreadable: Sequence[int] = ()) -> EpochResult:
    """Loss and top-1/top-3 accuracy, plain and weighted, over the readable rows.

    ``y``: label indices (loss: cross-entropy of the probabilities), or an N x C
    0/1 matrix for multi-label rows (loss: binary cross-entropy summed over
    classes; a hit is a top class that is one of the true ones).
    """
    keep = np.ones(len(y), dtype=bool)
    keep[list(unreadable)] = False
    p, yy, ww = probs[keep], y[keep], w[keep].astype(np.float64)
    if len(yy) == 0:
        nan = float('nan')
        return EpochResult(nan, nan, nan, nan, nan, nan, probs, tuple(unreadable))
    order = np.argsort(-p, axis=1, kind='stable')
    cm = None
    if yy.ndim == 2:
        pc = np.clip(p, 1e-12, 1 - 1e-12)
        loss = -(yy * np.log(pc) + (1 - yy) * np.log(1 - pc)).sum(axis=1)
        hit1 = np.take_along_axis(yy, order[:, :1], axis=1)[:, 0] > 0
        hit3 = np.take_along_axis(yy, order[:, :3], axis=1).max(axis=1) > 0
    else:
        loss = -np.log(np.clip(p[np.arange(len(yy)), yy], 1e-12, None))
        hit1 = order[:, 0] == yy
        hit3 = (order[:, :3] == yy[:, None]).any(axis=1)
        cm = confusion(yy, order[:, 0], p.shape[1])
    tw = max(ww.sum(), 1e-12)
    rows = np.flatnonzero(keep)
    top = order[:, 0]
    true = yy if yy.ndim == 1 else np.where(hit1, top, yy.argmax(axis=1))
    examples = (rows, true.astype(np.int64), top.astype(np.int64),
                p[np.arange(len(p)), top].astype(np.float64))
    return EpochResult(float(loss.mean()), float(hit1.mean()), float(hit3.mean()),
                       float((loss * ww).sum() / tw), float((hit1 * ww).sum() / tw),
                       float((hit3 * ww).sum() / tw), probs, tuple(unreadable), examples, cm)


@dataclass
class RunningMetrics:
    """Sums of a training pass so far: saved in mid-epoch checkpoints and summed
    over ranks, so an epoch's metrics are those of every crop it trained on."""
    sums: np.ndarray          # n, loss, top1, top3
    rows: list[np.ndarray]
    true: list[np.ndarray]
    pred: list[np.ndarray]
    conf: list[np.ndarray]
    confusion: np.ndarray

    @staticmethod
    def empty(num_classes: int) -> RunningMetrics:
        return RunningMetrics(np.zeros(4), [], [], [], [],
                              np.zeros((num_classes, num_classes), dtype=np.int64))

    def add(self, losses: np.ndarray, hit1: np.ndarray, hit3: np.ndarray, rows: np.ndarray,
            true: np.ndarray, pred: np.ndarray, conf: np.ndarray) -> None:
        self.sums += (len(losses), losses.sum(), hit1.sum(), hit3.sum())
        self.rows.append(rows)
        self.true.append(true)
        self.pred.append(pred)
        self.conf.append(conf)
        self.confusion += confusion(true, pred, len(self.confusion))

    def state(self) -> dict[str, Any]:
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        return {'sums': self.sums.copy(), 'rows': cat(self.rows, np.int64),
                'true': cat(self.true, np.int64), 'pred': cat(self.pred, np.int64),
                'conf': cat(self.conf, np.float64), 'confusion': self.confusion.copy()}

    @staticmethod
    def from_state(state: dict[str, Any]) -> RunningMetrics:
        def arr(key: str) -> np.ndarray:
            v = state[key]
            return v.numpy() if hasattr(v, 'numpy') else np.asarray(v)
        return RunningMetrics(arr('sums').astype(np.float64), [arr('rows')], [arr('true')],
                              [arr('pred')], [arr('conf')], arr('confusion').astype(np.int64))



def extreme_examples(true: np.ndarray, pred: np.ndarray, conf: np.ndarray, label: int,
                     n: int) -> dict[str, np.ndarray]:
    """Positions (into the arrays) of a label's most confident examples, at most ``n``
    each: ``tp`` (right), ``fp`` (predicted as the label, wrongly), ``fn`` (of the
    label, predicted as another); most confident first, ties by position."""
    groups = {'tp': (true == label) & (pred == label),
              'fp': (true != label) & (pred == label),
              'fn': (true == label) & (pred != label)}
    out = {}
    for name, mask in groups.items():
        where = np.flatnonzero(mask)
        out[name] = where[np.argsort(-conf[where], kind='stable')[:n]]
    return out


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label from a C x C confusion matrix (rows = truth), with the original's
    zero-division values: precision 0 when never predicted, recall NaN when absent."""
    tp = np.diag(cm).astype(np.float64)
    predicted, present = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, present, out=np.full_like(tp, np.nan), where=present > 0)
    return precision, recall


def label_stats(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str],
                split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(confusion matrix with rows = truth, per-label precision and recall).
    Multi-label (N x C 0/1 matrices): one 2 x 2 matrix per label, [[tn, fp], [fn, tp]]."""
    if y_true.ndim == 2:
        yt, yp = y_true.astype(bool), y_pred.astype(bool)
        tp, fp = (yt & yp).sum(axis=0), (~yt & yp).sum(axis=0)
        fn, tn = (yt & ~yp).sum(axis=0), (~yt & ~yp).sum(axis=0)
        cm = np.stack([np.stack([tn, fp], axis=1), np.stack([fn, tp], axis=1)], axis=1)
        precision = np.divide(tp, tp + fp, out=np.zeros(len(labels)), where=(tp + fp) > 0)
        recall = np.divide(tp, tp + fn, out=np.full(len(labels), np.nan), where=(tp + fn) > 0)
        count, predicted = tp + fn, tp + fp
    else:
        cm = confusion(y_true, y_pred, len(labels))
        precision, recall = precision_recall(cm)
        count, predicted = cm.sum(axis=1), cm.sum(axis=0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(len(labels)),
                   where=np.isfinite(both) & (both > 0))
    f1[~np.isfinite(recall)] = np.nan
    return cm, pd.DataFrame({'split': split, 'label': list(labels), 'precision': precision,
                             'recall': recall, 'f1': f1, 'count': count,
                             'predicted': predicted})


def write_evaluation(out_dir: Path, split_frames: dict[str, pd.DataFrame],
                     results: dict[str, EpochResult], labels: Sequence[str],
                     multilabel: bool = False) -> pd.DataFrame:
    """Writes outputs_<split>.csv.gz (path, label, weight, one probability column per
    label), overall_metrics.csv, confusion_matrices.npz and label_stats.csv; returns
    the overall metrics table.

    The frames are load_split_frames' with a ``weight`` column (the label-balancing
    weight, 1 without --label-weighted). Multi-label: a class counts as predicted when
    its probability is at least 0.5.
    """
    overall, stats, cms = [], [], {}
    for split, df in split_frames.items():
        res = results[split]
        assert res.probs is not None
        keep = np.ones(len(df), dtype=bool)
        keep[list(res.unreadable)] = False
        probs = res.probs[keep]
        sub = df[keep].reset_index(drop=True)
        out = pd.DataFrame({'path': sub['path'], 'label': sub['label'],
                            'weight': sub['weight']})
        out = pd.concat([out, pd.DataFrame(probs, columns=list(labels))], axis=1)
        utils.write_csv(out, out_dir / f'outputs_{split}.csv.gz')
        if multilabel:
            y_hot = multi_hot(sub['label_set'].tolist(), len(labels)).astype(np.int64)
            cms[split], stats_split = label_stats(y_hot, (probs >= MULTILABEL_THRESHOLD)
                                                  .astype(np.int64),
                                                  labels, split)
        else:
            y_true = sub['label_idx'].to_numpy(dtype=np.int64)
            cms[split], stats_split = label_stats(y_true, probs.argmax(axis=1), labels, split)
        stats.append(stats_split)
        overall.append({'split': split, **res.metrics()})
    table = pd.DataFrame(overall, columns=['split', *METRIC_COLUMNS])
    utils.write_csv(table, out_dir / 'overall_metrics.csv')
    utils.write_csv(pd.concat(stats, ignore_index=True), out_dir / 'label_stats.csv')
    with utils.atomic_path(out_dir / 'confusion_matrices.npz') as tmp:
        with open(tmp, 'wb') as f:
            np.savez_compressed(f, **cms)  # type: ignore[arg-type]
    return table


def log_metrics(table: pd.DataFrame) -> None:
    """One log line per split of an overall_metrics table."""
    for row in table.itertuples():
        logger.info('%s: top-1 %.2f%% (label-weighted %.2f%%), top-3 %.2f%%, loss %.3f',
                    row.split, row.acc_top1, row.acc_weighted_top1, row.acc_top3, row.loss)


def confusion_figure(cm: np.ndarray, labels: Sequence[str], title: str) -> Any:
    """A matplotlib figure of the row-normalised confusion matrix (percent of each
    true label's crops), with label names."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) * 100
    n = len(labels)
    side = min(max(4.0, 0.35 * n + 2), 30.0)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap='Blues', vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, label='% of the true label')
    names = [utils.figure_text(name, 40) for name in labels]
    ax.set_xticks(range(n), names, rotation=90, fontsize=max(4, 10 - n // 10))
    ax.set_yticks(range(n), names, fontsize=max(4, 10 - n // 10))
    ax.set_xlabel('predicted label')
    ax.set_ylabel('true label')
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f'{norm[i, j]:.0f}', ha='center', va='center', fontsize=7,
                            color='white' if norm[i, j] > 50 else 'black')
    fig.tight_layout()
    return fig
