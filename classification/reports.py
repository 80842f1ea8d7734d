"""The evaluation report: one self-contained folder (``index.html`` and the PNG
figures and crop thumbnails it shows) that replaces the original's
analyze_classifier_results notebook.

For each split evaluated (``outputs_<split>.csv.gz`` of evaluate_model or
train_classifier) it shows the overall metrics, the row-normalised confusion
matrix with label names, per-label precision / recall / F1 with counts, a
reliability diagram with the expected calibration error (ECE), accuracy per
location (when the dataset CSV is at hand), the most confused label pairs with
example crops, and, per true label, crops grouped by what they were predicted
as. The folder is written as report_pages writes every report: to a temporary
name, renamed into place, replacing only an older report.

A multi-label run (``--multilabel``: one sigmoid per label, comma-separated true
labels) gets the same folder with what fits it: a label counts as predicted at
probability 0.5 or more; the summary gives the exact-match rate (predicted set =
true set), the share of crops whose top label is one of theirs, micro F1, and
macro F1 and the mean average precision (mAP) over the labels with true crops in
the split; per label: precision, recall, F1,
counts and average precision (the area under its precision-recall curve), drawn
as bars; a reliability diagram over every (crop, label) pair (mean probability
against the share that are true); exact match per location; the most frequent
false alarms (a true label, and another label predicted beside it) with
examples; and, per label, crops it missed, crops it was wrongly given and crops
it found.
"""
from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classification import classifier_output, metrics, report_pages, utils

EXAMPLES_PER_CELL = 6
TOLERANCE = 1e-5        # of probabilities just outside 0..1
TOP_PAIRS = 10


@dataclass(frozen=True)
class SplitResult:
    """One split's outputs: crop paths, true label indices, probabilities, and the
    predicted label indices (computed once: a report looks them up thousands of
    times)."""
    name: str
    paths: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    y_pred: np.ndarray


def _read_outputs(path: Path, labels: Sequence[str] | None) -> tuple[pd.DataFrame, list[str],
                                                                     np.ndarray]:
    """An evaluate_model outputs file checked cell by cell: (the table, its label
    columns, its probabilities as an N x C array of numbers from 0 to 1)."""
    df = utils.read_csv(path, dtype={'path': str, 'label': str})
    if 'path' not in df.columns or 'label' not in df.columns:
        raise utils.InputError(f'{path}: needs "path" and "label" columns (an evaluate_model '
                               'output)')
    columns = [c for c in df.columns if c not in classifier_output.NOT_PROBABILITIES]
    if not columns:
        raise utils.InputError(f'{path}: no probability columns (an evaluate_model output)')
    if labels is not None and columns != list(labels):
        raise utils.InputError(f'{path}: its label columns differ from the other splits\'')
    for column in ('path', 'label'):
        empty = np.flatnonzero(df[column].isna().to_numpy())
        if len(empty):
            raise utils.InputError(f'{path}: row {empty[0] + 2}: empty "{column}"')
    probs = df[columns].apply(utils.numbers).to_numpy(dtype=np.float64)
    good = np.isfinite(probs) & (probs >= -TOLERANCE) & (probs <= 1 + TOLERANCE)
    if not good.all():      # float32 outputs may round a hair past 0 or 1
        bad = int(np.flatnonzero(~good.all(axis=1))[0])
        raise utils.InputError(f'{path}: row {bad + 2}: probabilities must be numbers from '
                               '0 to 1')
    return df, columns, probs


def read_split(path: Path, labels: Sequence[str] | None = None) -> tuple[SplitResult,
                                                                        list[str]]:
    """An outputs_<split>.csv.gz file as a SplitResult, and its label columns."""
    df, columns, probs = _read_outputs(path, labels)
    index = {name: i for i, name in enumerate(columns)}
    unknown = sorted(set(df['label']) - set(index))
    if unknown:
        raise utils.InputError(f'{path}: labels {unknown[:5]} have no probability column '
                               '(outputs of a multi-label run need its report: '
                               'multilabel=True)')
    name = path.name.removeprefix('outputs_').split('.')[0]
    return SplitResult(name, df['path'].tolist(), df['label'].map(index).to_numpy(),
                       probs, probs.argmax(axis=1)), columns


def calibration(probs: np.ndarray, y_true: np.ndarray, bins: int = 10
                ) -> tuple[pd.DataFrame, float]:
    """(per confidence bin: mean confidence, accuracy, crops; the expected
    calibration error, the crop-weighted mean gap between the two)."""
    return _binned(probs.max(axis=1), (probs.argmax(axis=1) == y_true).astype(np.float64),
                   bins)


def _binned(conf: np.ndarray, hit: np.ndarray, bins: int) -> tuple[pd.DataFrame, float]:
    """Reliability bins of confidences and whether each was right, and the ECE."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        rows.append({'low': edges[b], 'high': edges[b + 1], 'crops': n,
                     'confidence': float(conf[sel].mean()) if n else np.nan,
                     'accuracy': float(hit[sel].mean()) if n else np.nan})
    table = pd.DataFrame(rows)
    filled = table[table['crops'] > 0]
    ece = float((filled['crops'] * (filled['accuracy'] - filled['confidence']).abs()).sum()
                / max(len(conf), 1))
    return table, ece


def reliability_figure(table: pd.DataFrame, ece: float, title: str,
                       xlabel: str = 'confidence (top probability)',
                       ylabel: str = 'accuracy') -> Any:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    centers = (table['low'] + table['high']) / 2
    ax.bar(centers, table['accuracy'].fillna(0), width=0.1, edgecolor='black',
           label=ylabel)
    ax.plot([0, 1], [0, 1], '--', color='grey', label='perfect calibration')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f'{title} (ECE {ece:.3f})')
    ax.legend(loc='upper left')
    fig.tight_layout()
    return fig


def location_accuracy(paths: Sequence[str], hit: np.ndarray, locations: pd.Series,
                      name: str = 'accuracy') -> pd.DataFrame:
    """The share of crops ``hit`` per (dataset, location) as column ``name``, with
    the crops, worst first."""
    df = pd.DataFrame({'path': paths, 'hit': hit})
    df['location'] = df['path'].map(locations)
    out = df.dropna(subset=['location']).groupby('location')['hit'].agg(['mean', 'size'])
    return out.rename(columns={'mean': name, 'size': 'crops'}).sort_values(name)


def confused_pairs(cm: np.ndarray, labels: Sequence[str], top: int = TOP_PAIRS
                   ) -> list[tuple[int, int, int]]:
    """(true, predicted, crops) of the most frequent off-diagonal cells."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    return [(int(i), int(j), int(off[i, j])) for i, j in
            (np.unravel_index(k, off.shape) for k in order) if off[i, j] > 0]


def _thumb_cell(thumbs: report_pages.Thumbs, crops: Sequence[str], probs: np.ndarray,
                pred: Sequence[int], labels: Sequence[str]) -> str:
    return ''.join(report_pages.figure(thumbs, crop, f'{labels[j]} {p[j]:.2f}')
                   for crop, p, j in zip(crops, probs, pred, strict=True))


def _pairs_table(title: str, heads: tuple[str, str], pairs: Sequence[tuple[int, int, int]],
                 crops_of: Callable[[int, int], np.ndarray], paths: Sequence[str],
                 probs: np.ndarray, labels: Sequence[str], thumbs: report_pages.Thumbs) -> str:
    """A table of label pairs (i, j, crops) with example crops (``crops_of(i, j)``,
    the most probable for j first)."""
    rows = []
    for i, j, count in pairs:
        sel = crops_of(i, j)
        sel = sel[np.argsort(-probs[sel, j], kind='stable')][:EXAMPLES_PER_CELL]
        rows.append(f'<tr><td>{html.escape(labels[i])}</td><td>{html.escape(labels[j])}'
                    f'</td><td>{count}</td><td class="thumbs">' + _thumb_cell(
                        thumbs, [paths[k] for k in sel], probs[sel], [j] * len(sel),
                        labels) + '</td></tr>')
    return (f'<h3>{title}</h3><table class="stats"><tr><th>{heads[0]}</th><th>{heads[1]}'
            '</th><th>crops</th><th>examples</th></tr>' + ''.join(rows) + '</table>')


def split_section(split: SplitResult, labels: Sequence[str], folder: Path, thumbs: report_pages.Thumbs,
                  locations: pd.Series | None) -> str:
    """The HTML of one split, its figures written into ``folder``."""
    n = len(split.paths)
    out = [f'<h2 id="{html.escape(split.name)}">{html.escape(split.name)}: {n} crops</h2>']
    if n == 0:
        return out[0] + '<p>No crops.</p>'
    top1 = float((split.y_true == split.y_pred).mean())
    top3 = float((np.argsort(-split.probs, axis=1)[:, :3] == split.y_true[:, None])
                 .any(axis=1).mean())
    table, ece = calibration(split.probs, split.y_true)
    out.append(f'<p>top-1 accuracy <b>{top1:.2%}</b>, top-3 {top3:.2%}, expected '
               f'calibration error {ece:.3f}</p>')
    cm, stats = metrics.label_stats(split.y_true, split.y_pred, labels, split.name)
    out.append('<div class="figs">'
               + report_pages.save_figure(
                   metrics.confusion_figure(cm, labels, f'{split.name}: confusion matrix'),
                   folder, f'confusion_{split.name}.png', f'{split.name} confusion matrix')
               + report_pages.save_figure(
                   reliability_figure(table, ece, f'{split.name}: reliability'),
                   folder, f'reliability_{split.name}.png', f'{split.name} reliability diagram')
               + '</div>')
    stats = stats.drop(columns=['split'])
    out.append('<h3>Per label</h3>' + stats.to_html(index=False, float_format='{:.3f}'.format,
                                                      na_rep='', classes='stats'))
    if locations is not None:
        acc = location_accuracy(split.paths, split.y_true == split.y_pred, locations)
        if len(acc):
            out.append('<h3>Accuracy per location</h3>' + acc.to_html(
                float_format='{:.3f}'.format, classes='stats'))
    pairs = confused_pairs(cm, labels)
    if pairs:
        out.append(_pairs_table(
            'Most confused pairs', ('true', 'predicted as'), pairs,
            lambda i, j: np.flatnonzero((split.y_true == i) & (split.y_pred == j)),
            split.paths, split.probs, labels, thumbs))
    grids = []
    for i, name in enumerate(labels):
        mine = np.flatnonzero(split.y_true == i)
        if not len(mine):
            continue
        cells = []
        for j in np.unique(split.y_pred[mine]):
            sel = mine[split.y_pred[mine] == j][:EXAMPLES_PER_CELL]
            cells.append(f'<div class="cell"><p>predicted {html.escape(labels[j])} '
                         f'({int((split.y_pred[mine] == j).sum())})</p>' + _thumb_cell(
                             thumbs, [split.paths[k] for k in sel], split.probs[sel],
                             [int(j)] * len(sel), labels) + '</div>')
        grids.append(f'<details><summary>{html.escape(name)} ({len(mine)} crops)</summary>'
                     + ''.join(cells) + '</details>')
    out.append('<h3>Crops of each label, by prediction</h3>' + ''.join(grids))
    return '\n'.join(out)


def write_report(report_dir: str | os.PathLike[str],
                 splits: Sequence[SplitResult] | Sequence[MultiLabelSplit],
                 labels: Sequence[str], crops_dir: str | os.PathLike[str] | None = None,
                 locations: pd.Series | None = None, title: str = 'Evaluation report'
                 ) -> Path:
    """Writes the report folder (see the module docstring); returns index.html."""
    def build(folder: Path) -> str:
        thumbs = report_pages.Thumbs(Path(crops_dir) if crops_dir else None, folder)
        sections = [multilabel_section(s, labels, folder, thumbs, locations)
                    if isinstance(s, MultiLabelSplit)
                    else split_section(s, labels, folder, thumbs, locations) for s in splits]
        nav = ' | '.join(f'<a href="#{html.escape(s.name)}">{html.escape(s.name)}</a>'
                         for s in splits)
        kind = ' (multi-label)' if splits and isinstance(splits[0], MultiLabelSplit) else ''
        return f'<p>{len(labels)} labels{kind}; splits: {nav}</p>' + '\n'.join(sections)
    return report_pages.write_report_folder(report_dir, title, build, report_pages.EVALUATION)


def report_from_outputs(eval_dir: str | os.PathLike[str], report_dir: str | os.PathLike[str],
                        crops_dir: str | os.PathLike[str] | None = None,
                        dataset_csv: str | os.PathLike[str] | None = None,
                        splits: Sequence[str] = ('train', 'val', 'test'),
                        multilabel: bool = False) -> Path | None:
    """The report of the outputs_<split>.csv.gz files in ``eval_dir`` (None when
    there are none); locations come from the dataset CSV when given. With
    ``multilabel`` the outputs are a multi-label run's (sigmoids, label lists)."""
    results: list[Any] = []
    labels = None
    for split in splits:
        path = Path(eval_dir) / f'outputs_{split}.csv.gz'
        if path.is_file():
            if multilabel:
                multi, labels = read_multilabel_split(path, labels)
                results.append(multi)
            else:
                res, labels = read_split(path, labels)
                results.append(res)
    if not results or labels is None:
        return None
    locations = None
    if dataset_csv is not None and Path(dataset_csv).is_file():
        ds = utils.read_csv(dataset_csv, dtype={'path': str, 'dataset': str, 'location': str})
        if {'path', 'dataset', 'location'} <= set(ds.columns):
            locations = pd.Series((ds['dataset'] + '/' + ds['location']).to_numpy(),
                                  index=ds['path'])
            locations = locations[~locations.index.duplicated()]
    return write_report(report_dir, results, labels, crops_dir, locations)


# ---------------------------------------------------------------- multi-label runs

THRESHOLD = metrics.MULTILABEL_THRESHOLD     # a label is predicted at this sigmoid or more


@dataclass(frozen=True)
class MultiLabelSplit:
    """One split of a multi-label run: true label sets (N x C) and sigmoids."""
    name: str
    paths: list[str]
    y_true: np.ndarray      # bool
    probs: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs >= THRESHOLD


def read_multilabel_split(path: Path, labels: Sequence[str] | None = None
                          ) -> tuple[MultiLabelSplit, list[str]]:
    """A multi-label run's outputs_<split>.csv.gz (labels comma-separated, split
    as the training data's are: no spaces trimmed) as a MultiLabelSplit, and its
    label columns."""
    df, columns, probs = _read_outputs(path, labels)
    index = {name: i for i, name in enumerate(columns)}
    y_true = np.zeros((len(df), len(columns)), dtype=bool)
    for row, text in enumerate(df['label']):
        names = str(text).split(',')
        unknown = [n for n in names if n not in index]
        if unknown:
            raise utils.InputError(f'{path}: row {row + 2}: label {unknown[0]!r} has no '
                                   'probability column')
        y_true[row, [index[n] for n in names]] = True
    name = path.name.removeprefix('outputs_').split('.')[0]
    return MultiLabelSplit(name, df['path'].tolist(), y_true, probs), columns


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under the precision-recall curve of ``scores`` ranking the
    ``positive`` items first: precision at each distinct score, weighted by the
    recall it adds (NaN without positives)."""
    positive = positive.astype(bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float('nan')
    order = np.argsort(-scores, kind='mergesort')
    ranked, hits = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_stats(split: MultiLabelSplit, labels: Sequence[str]) -> pd.DataFrame:
    """Per label: precision, recall and F1 at THRESHOLD, counts, average precision."""
    _, stats = metrics.label_stats(split.y_true.astype(np.int64),
                                   split.y_pred.astype(np.int64), labels, split.name)
    stats['average_precision'] = [average_precision(split.probs[:, j], split.y_true[:, j])
                                  for j in range(len(labels))]
    return stats.drop(columns=['split'])


def multilabel_summary(split: MultiLabelSplit, stats: pd.DataFrame) -> dict[str, float]:
    """Exact match, top label among the true ones, micro F1, and macro F1 and mAP
    over the labels that have true crops in the split (a label only ever given
    wrongly counts in micro F1, not in these two means)."""
    yt, yp = split.y_true, split.y_pred
    tp = float((yt & yp).sum())
    both = float(yt.sum() + yp.sum())
    top = split.probs.argmax(axis=1)
    return {'exact_match': float((yt == yp).all(axis=1).mean()),
            'top1_in_true': float(yt[np.arange(len(top)), top].mean()),
            'micro_f1': 2 * tp / both if both else float('nan'),
            # over the labels with true crops in the split (the others' F1 and AP are NaN)
            'macro_f1': float(stats['f1'].mean()),
            'mAP': float(stats['average_precision'].mean())}


def false_alarm_pairs(split: MultiLabelSplit, top: int = TOP_PAIRS
                      ) -> list[tuple[int, int, int]]:
    """(true label, label wrongly predicted beside it, crops), most frequent first."""
    wrong = split.y_pred & ~split.y_true
    counts = split.y_true.astype(np.int64).T @ wrong.astype(np.int64)
    order = np.argsort(counts, axis=None, kind='stable')[::-1][:top]
    return [(int(i), int(j), int(counts[i, j])) for i, j in
            (np.unravel_index(k, counts.shape) for k in order) if counts[i, j] > 0]


def label_scores_figure(stats: pd.DataFrame, title: str) -> Any:
    """Horizontal bars of each label's average precision and F1 (readable at 50+
    labels: the figure grows with them)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    n = len(stats)
    fig = Figure(figsize=(7, max(3.0, 0.28 * n + 1.2)))
    ax = fig.subplots()
    y = np.arange(n)
    ax.barh(y - 0.2, stats['average_precision'].fillna(0), height=0.4,
            label='average precision')
    ax.barh(y + 0.2, stats['f1'].fillna(0), height=0.4, label=f'F1 at {THRESHOLD:g}')
    ax.set_yticks(y, [utils.figure_text(str(v), 40) for v in stats['label']],
                  fontsize=8 if n > 30 else 10)
    ax.set_ylim(n - 0.5, -0.5)          # the first label on top, no empty margins
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.06 * 12 / max(n, 12)), ncol=2)
    fig.tight_layout()
    return fig


def multilabel_section(split: MultiLabelSplit, labels: Sequence[str], folder: Path,
                       thumbs: report_pages.Thumbs, locations: pd.Series | None) -> str:
    """The HTML of one split of a multi-label run (see the module docstring)."""
    n = len(split.paths)
    name = html.escape(split.name)
    out = [f'<h2 id="{name}">{name}: {n} crops</h2>']
    if n == 0:
        return out[0] + '<p>No crops.</p>'
    stats = multilabel_stats(split, labels)
    summary = multilabel_summary(split, stats)
    table, ece = _binned(split.probs.ravel(), split.y_true.ravel().astype(np.float64), 10)
    out.append(f'<p>a label is predicted at probability {THRESHOLD:g} or more; exact match '
               f'<b>{summary["exact_match"]:.2%}</b>, top label among the true ones '
               f'{summary["top1_in_true"]:.2%}, micro F1 {summary["micro_f1"]:.3f}, macro F1 '
               f'{summary["macro_f1"]:.3f}, mAP {summary["mAP"]:.3f}, expected calibration '
               f'error {ece:.3f} (over every crop and label)</p>')
    out.append('<div class="figs">'
               + report_pages.save_figure(
                   label_scores_figure(stats, f'{split.name}: per label'), folder,
                   f'label_scores_{split.name}.png', f'{split.name} per-label scores')
               + report_pages.save_figure(
                   reliability_figure(table, ece, f'{split.name}: reliability',
                                      'probability of a label', 'share of them true'),
                   folder, f'reliability_{split.name}.png', f'{split.name} reliability diagram')
               + '</div>')
    out.append('<h3>Per label</h3>' + stats.to_html(index=False, float_format='{:.3f}'.format,
                                                      na_rep='', classes='stats'))
    if locations is not None:
        acc = location_accuracy(split.paths, (split.y_true == split.y_pred).all(axis=1),
                                locations, 'exact_match')
        if len(acc):
            out.append('<h3>Exact match per location</h3>' + acc.to_html(
                float_format='{:.3f}'.format, classes='stats'))
    pairs = false_alarm_pairs(split)
    if pairs:
        out.append(_pairs_table(
            'Most frequent false alarms', ('true label', 'also predicted'), pairs,
            lambda i, j: np.flatnonzero(split.y_true[:, i] & split.y_pred[:, j]
                                        & ~split.y_true[:, j]),
            split.paths, split.probs, labels, thumbs))
    grids = []
    for j, label in enumerate(labels):
        truth, pred = split.y_true[:, j], split.y_pred[:, j]
        cells = []
        for what, sel in (('missed', truth & ~pred), ('wrongly given', ~truth & pred),
                          ('found', truth & pred)):
            idx = np.flatnonzero(sel)
            if not len(idx):
                continue
            shown = idx[np.argsort(-split.probs[idx, j] if what != 'missed'
                                   else split.probs[idx, j], kind='stable')][:EXAMPLES_PER_CELL]
            cells.append(f'<div class="cell"><p>{what} ({len(idx)})</p>' + _thumb_cell(
                thumbs, [split.paths[k] for k in shown], split.probs[shown],
                [j] * len(shown), labels) + '</div>')
        if cells:
            grids.append(f'<details><summary>{html.escape(label)} ({int(truth.sum())} crops '
                         'with it)</summary>' + ''.join(cells) + '</details>')
    out.append('<h3>Crops of each label: missed, wrongly given, found</h3>' + ''.join(grids))
    return '\n'.join(out)
