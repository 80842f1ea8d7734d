"""The dataset report: one self-contained folder (``index.html``, its PNG figures
and crop thumbnails) that shows what a classification dataset holds before a
model is trained on it.

From the files create_classification_dataset writes (``classification_ds.csv``,
``label_index.json``, ``splits.json``) it shows, per label, the crops and
locations in each split; imbalance flags (a label far rarer than the median
label, absent from a split that is in use, with a split share far from the
dataset's, or with all or most of its crops at one location); bar charts of the
crops per label and split; the distribution of detection confidence per label
(a heat map, ground-truth boxes count as 1.0); a grid of sample crops per label
(spread over its locations); and, given a second splits.json, how the two
assignments differ (locations moved, crops per label and split in each, and how
evenly each spreads every label). A crop with several labels (comma-separated)
counts once under each.

Computing (:func:`summarize`, :func:`compare_splits`) is separate from writing
(:func:`write_dataset_report`, through report_pages), so a step can check
everything before it writes anything.
"""
from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classification import report_pages, split_files, utils

logger = logging.getLogger(__name__)

SPLITS = split_files.SPLITS
NO_SPLIT = 'no split'
CSV_NAME = 'classification_ds.csv'
CONFIDENCE_BINS = 20
LABELS_PER_FIGURE = 50
MOVED_SHOWN = 100
REPORT_DIR_NAME = 'dataset_report'
Splits = Mapping[str, Sequence[tuple[str, str]]]


@dataclass(frozen=True)
class ReportSettings:
    """What the report shows and when it flags a label.

    rare_fraction: a label with fewer crops than this fraction of the median
    label's is flagged; dominant_location: so is one with at least this share of
    its crops at one location; share_tolerance: and one whose share of a split
    differs from the dataset's share of that split by more than this fraction of
    it (0.5: a 20% test split flags labels under 10% or over 30% in test).
    """
    samples_per_label: int = 8
    rare_fraction: float = 0.1
    dominant_location: float = 0.9
    share_tolerance: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class SplitComparison:
    """How two location assignments of one dataset differ."""
    names: tuple[str, str]
    moves: pd.DataFrame        # locations: rows = split in the first, columns = in the second
    moved: pd.DataFrame        # the locations whose split differs, most crops first
    per_label: pd.DataFrame    # crops per label and split under each (MultiIndex columns)
    spread: pd.DataFrame       # per file and split: share of crops, mean |label share - it|


@dataclass(frozen=True)
class DatasetSummary:
    """Everything the page shows, computed (no files)."""
    labels: list[str]
    splits: list[str]              # the columns: train, val, test (+ NO_SPLIT if needed)
    in_use: list[str]              # splits that hold locations in splits.json
    table: pd.DataFrame            # per label: crops, locations, and per split
    overview: pd.DataFrame         # per split: locations, crops, share, labels
    flags: dict[str, list[str]]    # label -> reasons (flagged labels only)
    confidence: np.ndarray         # labels x CONFIDENCE_BINS crop counts
    confidence_low: float          # where the bins start (they end at 1)
    confidence_stats: pd.DataFrame
    samples: pd.DataFrame          # label, path, where, split, confidence
    n_crops: int
    n_locations: int
    n_datasets: int
    multilabel: bool
    empty_locations: list[str]     # locations of splits.json with no crops
    settings: ReportSettings
    comparison: SplitComparison | None = None
    has_confidence: bool = True    # the CSV had a confidence column


# ---------------------------------------------------------------- reading

def read_dataset_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """classification_ds.csv, checked: the columns the report needs, a number from 0
    to 1 as each confidence (the column may be absent: summarize then counts each
    crop at 1.0), each crop once."""
    df = utils.read_csv(path, dtype={'path': str, 'dataset': str, 'location': str,
                                     'label': str}, keep_default_na=False)
    missing = sorted({'path', 'dataset', 'location', 'label'} - set(df.columns))
    if missing:
        raise utils.InputError(f'{path}: missing columns {missing} (a create_classification_'
                               'dataset CSV has path, dataset, location, dataset_class, '
                               'confidence, label)')
    if df.empty:
        raise utils.InputError(f'{path}: no crops')
    if 'confidence' in df.columns:       # without one, summarize counts crops at 1.0
        df['confidence'] = utils.confidence_column(df, str(path))
    empty = df['label'].str.contains(r'(?:^|,)\s*(?:,|$)', regex=True)
    if empty.any():
        raise utils.InputError(f'{path}: crop {df["path"][empty].iloc[0]!r} has an empty label')
    utils.check_unique_paths(df, str(path))
    return df


def _csv_labels(df: pd.DataFrame) -> set[str]:
    return {lab for labels in df['label'].unique() for lab in str(labels).split(',')}


def check_consistent(df: pd.DataFrame, csv_name: str, labels: Sequence[str] | None = None,
                     labels_name: str = 'label_index.json',
                     splits: Mapping[str, Splits] | None = None) -> None:
    """Refuses a label index whose labels differ from the CSV's, and a splits.json
    (each of ``splits``, by file name) naming a location with no crops in the CSV."""
    if labels is not None:
        ours = _csv_labels(df)
        extra, lacking = sorted(set(labels) - ours), sorted(ours - set(labels))
        if extra:
            raise utils.InputError(f'{labels_name}: labels {extra[:5]} have no crops in '
                                   f'{csv_name} (a label index of another dataset?)')
        if lacking:
            raise utils.InputError(f'{csv_name}: labels {lacking[:5]} are not in {labels_name}')
    known = set(zip(df['dataset'], df['location'], strict=True))
    for name, doc in (splits or {}).items():
        for split in SPLITS:
            stray = [loc for loc in doc.get(split, []) if loc not in known]
            if stray:
                raise utils.InputError(
                    f'{name}: {split} location {list(stray[0])} has no crops in {csv_name} '
                    f'({len(stray)} such in {split}; splits made for another dataset?)')


# ---------------------------------------------------------------- computing

def _locations(df: pd.DataFrame) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(location code of each row, the (dataset, location) of each code)."""
    keys = pd.MultiIndex.from_arrays([df['dataset'].astype(str), df['location'].astype(str)])
    codes, uniques = keys.factorize()
    return np.asarray(codes), [(str(d), str(loc)) for d, loc in uniques]


def _split_of(locs: Sequence[tuple[str, str]], splits: Splits) -> np.ndarray:
    where = {tuple(loc): s for s in SPLITS for loc in splits.get(s, [])}
    return np.array([where.get(loc, NO_SPLIT) for loc in locs], dtype=object)


def _crop_rows(df: pd.DataFrame, codes: np.ndarray, loc_split: np.ndarray) -> pd.DataFrame:
    """One row per (crop, label): path, label, loc (code), split, confidence."""
    rows = pd.DataFrame({'path': df['path'].to_numpy(), 'label': df['label'].to_numpy(),
                         'loc': codes, 'split': loc_split[codes],
                         'confidence': df['confidence'].to_numpy(dtype=np.float64)})
    if rows['label'].str.contains(',', regex=False).any():
        rows = rows.assign(label=rows['label'].str.split(',')).explode('label',
                                                                       ignore_index=True)
        # a crop labelled 'a,a' is one crop of a
        rows = rows.drop_duplicates(['path', 'label'], ignore_index=True)
    return rows


def _per_split(rows: pd.DataFrame, labels: Sequence[str], split_col: str,
               split_names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(crops, locations) per label x split."""
    g = rows.groupby(['label', split_col], sort=False)
    crops = g.size().unstack(fill_value=0).reindex(index=list(labels), columns=list(split_names),
                                                   fill_value=0)
    locs = g['loc'].nunique().unstack(fill_value=0).reindex(index=list(labels),
                                                            columns=list(split_names), fill_value=0)
    return crops.fillna(0).astype(np.int64), locs.fillna(0).astype(np.int64)


def label_split_table(rows: pd.DataFrame, labels: Sequence[str],
                      split_names: Sequence[str]) -> pd.DataFrame:
    """Per label: crops, locations, and per split its crops, locations and share of
    the label's crops."""
    crops, locs = _per_split(rows, labels, 'split', split_names)
    total = rows.groupby('label', sort=False).agg(crops=('path', 'size'),
                                                  locations=('loc', 'nunique'))
    table = total.reindex(list(labels), fill_value=0).astype(np.int64)
    denom = np.maximum(table['crops'].to_numpy(), 1)
    for s in split_names:
        table[f'{s} crops'] = crops[s].to_numpy()
        table[f'{s} locations'] = locs[s].to_numpy()
        table[f'{s} share'] = crops[s].to_numpy() / denom
    table.index.name = 'label'
    return table


def imbalance_flags(table: pd.DataFrame, top_location: pd.DataFrame, in_use: Sequence[str],
                    settings: ReportSettings) -> dict[str, list[str]]:
    """label -> why it is flagged (labels with no flag are left out).

    ``top_location``: per label, ``where`` (its location with the most crops) and
    ``share`` (that location's share of the label's crops).
    """
    crops = table['crops'].to_numpy(dtype=np.int64)
    median = float(np.median(crops)) if len(crops) else 0.0
    total = max(int(crops.sum()), 1)
    per = {s: table[f'{s} crops'].to_numpy(dtype=np.int64) for s in in_use}
    shares = {s: table[f'{s} share'].to_numpy(dtype=np.float64) for s in in_use}
    overall = {s: per[s].sum() / total for s in in_use}
    unplaced = (table[f'{NO_SPLIT} crops'].to_numpy(dtype=np.int64)
                if f'{NO_SPLIT} crops' in table.columns else np.zeros(len(table), np.int64))
    n_locs = table['locations'].to_numpy(dtype=np.int64)
    where = top_location['where'].astype(str).to_numpy()
    top = top_location['share'].to_numpy(dtype=np.float64)
    flags: dict[str, list[str]] = {}
    for i, label in enumerate(table.index.astype(str)):
        n = int(crops[i])
        if n == 0:
            flags[label] = ['no crops']
            continue
        why: list[str] = []
        if n < settings.rare_fraction * median:
            why.append(f'rare: {n} crops, under {settings.rare_fraction:.0%} of the median '
                       f'label ({median:g})')
        for s in in_use:
            if per[s][i] == 0:
                why.append(f'no {s} crops')
            elif abs(shares[s][i] - overall[s]) > settings.share_tolerance * overall[s]:
                why.append(f'{s} share {shares[s][i]:.0%} (dataset: {overall[s]:.0%})')
        if unplaced[i]:
            why.append(f'{int(unplaced[i])} crops at locations in no split')
        if n_locs[i] == 1:
            why.append(f'all crops at one location ({where[i]})')
        elif top[i] >= settings.dominant_location:
            why.append(f'{top[i]:.0%} of crops at one location ({where[i]})')
        if why:
            flags[label] = why
    return flags


def top_locations(rows: pd.DataFrame, labels: Sequence[str],
                  loc_names: Sequence[str]) -> pd.DataFrame:
    """Per label: the location with most of its crops (``where``) and their ``share``."""
    per = rows.groupby(['label', 'loc'], sort=False).size()
    if per.empty:
        return pd.DataFrame({'where': '', 'share': 0.0}, index=pd.Index(labels, name='label'))
    top = per.groupby(level=0, sort=False).idxmax()
    out = pd.DataFrame({'where': [loc_names[loc] for _, loc in top.to_numpy()],
                        'share': per.groupby(level=0, sort=False).max()
                        / per.groupby(level=0, sort=False).sum()}, index=top.index)
    return out.reindex(list(labels)).fillna({'where': '', 'share': 0.0})


def confidence_floor(confidence: np.ndarray) -> float:
    """Where the confidence axis starts: the lowest confidence rounded down to a
    tenth (at most 0.9), so a dataset cut at 0.8 gets its bins from 0.8 to 1."""
    if not len(confidence):
        return 0.0
    return min(float(np.floor(float(np.min(confidence)) * 10) / 10), 0.9)


def confidence_histograms(rows: pd.DataFrame, labels: Sequence[str], low: float = 0.0,
                          bins: int = CONFIDENCE_BINS) -> np.ndarray:
    """Crops per label (rows, in ``labels`` order) and confidence bin (``bins``
    equal bins from ``low`` to 1; 1.0 falls in the last, anything below ``low``
    in the first)."""
    codes = pd.Categorical(rows['label'], categories=list(labels)).codes.astype(np.int64)
    conf = rows['confidence'].to_numpy(dtype=np.float64)
    keep = (codes >= 0) & np.isfinite(conf)
    scaled = (np.where(keep, conf, low) - low) / max(1.0 - low, 1e-9) * bins
    # rounded first: 0.7 from 0.6 in tenths is 4.9999... in floating point, bin 5 on paper
    which = np.clip(np.floor(np.round(scaled, 9)).astype(np.int64), 0, bins - 1)
    flat = np.bincount(codes[keep] * bins + which[keep], minlength=len(labels) * bins)
    return flat.reshape(len(labels), bins)


def confidence_stats(rows: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Per label: crops, lowest, 10th percentile and median confidence, and the share
    at 1.0 (ground-truth boxes)."""
    g = rows.groupby('label', sort=False)['confidence']
    out = pd.DataFrame({'crops': g.size(), 'lowest': g.min(), '10th percentile': g.quantile(0.1),
                        'median': g.median(),
                        'at 1.0': rows['confidence'].eq(1.0).groupby(rows['label']).mean()})
    out = out.reindex(list(labels))
    out['crops'] = out['crops'].fillna(0).astype(np.int64)
    out.index.name = 'label'
    return out


def sample_crops(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` crops per label, drawn at random (seeded) and spread over the
    label's locations: one from each location before a second from any."""
    if n <= 0 or rows.empty:
        return rows.iloc[:0]
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = rows.iloc[order]
    rank = shuffled.groupby(['label', 'loc'], sort=False).cumcount().to_numpy()
    shuffled = shuffled.assign(rank=rank).sort_values(['label', 'rank'], kind='stable')
    return shuffled.groupby('label', sort=False).head(n).drop(columns='rank')


def _overview(rows: pd.DataFrame, crops_df: pd.DataFrame, split_names: Sequence[str],
              split_of_row: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
    n = max(len(crops_df), 1)
    frame = pd.DataFrame({'split': split_of_row, 'loc': codes})
    g = frame.groupby('split')
    crops = g.size().reindex(list(split_names), fill_value=0)
    out = pd.DataFrame({'locations': g['loc'].nunique().reindex(list(split_names), fill_value=0),
                        'crops': crops, 'share of crops': crops / n,
                        'labels': rows.groupby('split')['label'].nunique()
                        .reindex(list(split_names), fill_value=0)})
    out.index.name = 'split'
    return out.fillna(0).astype({'locations': np.int64, 'crops': np.int64, 'labels': np.int64})


def summarize(df: pd.DataFrame, labels: Sequence[str] | None, splits: Splits,
              settings: ReportSettings = ReportSettings(),
              other: tuple[str, str, Splits] | None = None) -> DatasetSummary:
    """The report's content for a dataset table (the columns of classification_ds.csv;
    a ``confidence`` column is optional), its labels (None: the CSV's, sorted) and its
    location assignment; ``other``: (name of this assignment, name of the other, the
    other assignment) for the comparison. Locations of ``splits`` with no crops are
    listed, not refused (:func:`check_consistent` refuses them in files)."""
    has_confidence = 'confidence' in df.columns
    conf = (utils.numbers(df['confidence']).to_numpy(dtype=np.float64, copy=True)
            if has_confidence else np.ones(len(df)))
    conf[~((conf >= 0) & (conf <= 1))] = np.nan          # unknown: left out of the histograms
    df = df.assign(confidence=conf, path=df['path'].astype(str),
                   label=df['label'].astype(str))
    labels = sorted(_csv_labels(df)) if labels is None else list(labels)
    codes, locs = _locations(df)
    loc_names = [f'{d}/{loc}' for d, loc in locs]
    loc_split = _split_of(locs, splits)
    rows = _crop_rows(df, codes, loc_split)
    split_names = list(SPLITS) + ([NO_SPLIT] if (loc_split == NO_SPLIT).any() else [])
    in_use = [s for s in SPLITS if len(splits.get(s, []))]
    table = label_split_table(rows, labels, split_names)
    known = set(locs)
    empty = [f'{d}/{loc}' for s in SPLITS for d, loc in splits.get(s, [])
             if (d, loc) not in known]
    low = confidence_floor(rows['confidence'].dropna().to_numpy())
    samples = sample_crops(rows, settings.samples_per_label, settings.seed)
    samples = samples.assign(where=[loc_names[c] for c in samples['loc']])
    comparison = None
    if other is not None:
        comparison = compare_splits(rows, labels, locs, codes, (other[0], other[1]),
                                    splits, other[2])
    return DatasetSummary(
        labels=labels, splits=split_names, in_use=in_use, table=table,
        overview=_overview(rows, df, split_names, loc_split[codes], codes),
        flags=imbalance_flags(table, top_locations(rows, labels, loc_names), in_use, settings),
        confidence=confidence_histograms(rows, labels, low), confidence_low=low,
        confidence_stats=confidence_stats(rows, labels), samples=samples,
        n_crops=len(df), n_locations=len(locs), n_datasets=int(df['dataset'].nunique()),
        multilabel=len(rows) != len(df), empty_locations=empty, settings=settings,
        comparison=comparison, has_confidence=has_confidence)


def compare_splits(rows: pd.DataFrame, labels: Sequence[str], locs: Sequence[tuple[str, str]],
                   codes: np.ndarray, names: tuple[str, str], first: Splits,
                   second: Splits) -> SplitComparison:
    """How ``second`` assigns the dataset's locations differently from ``first``
    (rows: :func:`_crop_rows`; locs and codes: :func:`_locations`)."""
    a, b = _split_of(locs, first), _split_of(locs, second)
    order = list(SPLITS) + [NO_SPLIT]
    moves = pd.crosstab(pd.Series(a, name=f'{names[0]} \\ {names[1]}'),
                        pd.Series(b, name=names[1]))
    present = [s for s in order if s in moves.index or s in moves.columns]
    moves = moves.reindex(index=present, columns=present, fill_value=0)
    loc_crops = np.bincount(codes, minlength=len(locs))
    changed = np.flatnonzero(a != b)
    changed = changed[np.argsort(-loc_crops[changed], kind='stable')]
    shown = changed[:MOVED_SHOWN]
    sub = rows[rows['loc'].isin(shown)]
    loc_labels = sub.groupby('loc')['label'].agg(lambda s: ', '.join(sorted(set(s))))
    moved = pd.DataFrame({'dataset': [locs[i][0] for i in shown],
                          'location': [locs[i][1] for i in shown],
                          names[0]: a[shown], names[1]: b[shown],
                          'crops': loc_crops[shown],
                          'labels': loc_labels.reindex(shown).fillna('').to_numpy()})
    per_label = {}
    spread_rows = []
    total = max(len(rows), 1)
    for name, assign in zip(names, (a, b), strict=True):
        split_col = assign[rows['loc'].to_numpy()]
        crops, _ = _per_split(rows.assign(which=split_col), labels, 'which', order)
        crops = crops.loc[:, (crops.sum(axis=0) > 0) | crops.columns.isin(SPLITS)]
        denom = np.maximum(crops.sum(axis=1).to_numpy(), 1)[:, None]
        shares = crops / denom
        per_label[(name, 'crops')] = crops
        per_label[(name, 'share')] = shares
        for s in crops.columns:
            overall = crops[s].sum() / total
            has = crops.sum(axis=1) > 0
            spread_rows.append({'splits': name, 'split': s, 'locations': int((assign == s).sum()),
                                'crops': int(crops[s].sum()), 'share of crops': overall,
                                'labels without crops': int(((crops[s] == 0) & has).sum()),
                                'mean |label share - share|':
                                    float((shares[s][has] - overall).abs().mean())})
    per = pd.concat({f'{n} {kind}': t for (n, kind), t in per_label.items()}, axis=1)
    per.index.name = 'label'
    return SplitComparison(names=names, moves=moves, moved=moved, per_label=per,
                           spread=pd.DataFrame(spread_rows).set_index(['splits', 'split']))


# ---------------------------------------------------------------- figures

def _plain(label: str, width: int = 40) -> str:
    return utils.figure_text(label, width)


def _chunks(n: int) -> list[range]:
    return [range(i, min(i + LABELS_PER_FIGURE, n)) for i in range(0, n, LABELS_PER_FIGURE)]


def counts_figure(table: pd.DataFrame, split_names: Sequence[str], title: str) -> Any:
    """Horizontal stacked bars: crops of each label (rows of ``table``) per split."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    n = len(table)
    fig = Figure(figsize=(8, 0.22 * n + 1.6))
    ax = fig.subplots()
    y = np.arange(n)
    left = np.zeros(n)
    colours = {'train': '#4c72b0', 'val': '#dd8452', 'test': '#55a868', NO_SPLIT: '#999999'}
    for s in split_names:
        width = table[f'{s} crops'].to_numpy(dtype=np.float64)
        ax.barh(y, width, left=left, color=colours.get(s), label=s, height=0.8)
        left += width
    ax.set_yticks(y, [_plain(str(v)) for v in table.index], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('crops')
    ax.set_title(title)
    ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def confidence_figure(hist: np.ndarray, labels: Sequence[str], title: str,
                      low: float = 0.0) -> Any:
    """Heat map: for each label (row), the share of its crops in each confidence bin."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    n, bins = hist.shape
    rows = hist.sum(axis=1, keepdims=True)
    norm = np.divide(hist, rows, out=np.zeros(hist.shape), where=rows > 0)
    fig = Figure(figsize=(8, 0.22 * n + 1.8))
    ax = fig.subplots()
    im = ax.imshow(norm, aspect='auto', cmap='viridis', vmin=0, vmax=max(float(norm.max()), 1e-9),
                   extent=(low, 1, n - 0.5, -0.5), interpolation='nearest')
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the label's crops")
    ax.set_yticks(range(n), [f'{_plain(lab)} ({int(r)})' for lab, r in
                             zip(labels, rows[:, 0], strict=True)], fontsize=8)
    ax.set_xticks(np.linspace(low, 1, int(round((1 - low) * 10)) + 1))
    ax.set_xlabel(f'detection confidence ({bins} bins; ground-truth boxes are 1.0)')
    ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the page

def _percent(x: float) -> str:
    return f'{x:.1%}'


def _table_html(df: pd.DataFrame, index: bool = True) -> str:
    shares = {c: _percent for c in df.columns
              if any(str(part).endswith('share') for part in (c if isinstance(c, tuple) else (c,)))
              or c == 'share of crops'}
    if index and df.index.names[0] is not None:
        df, index = df.reset_index(), False
    return df.to_html(index=index, classes='stats', formatters=shares,  # type: ignore[arg-type]
                      float_format='{:.3f}'.format, na_rep='')


def _flags_html(summary: DatasetSummary) -> str:
    s = summary.settings
    rules = (f'Flagged: a label with fewer crops than {s.rare_fraction:.0%} of the median '
             f'label; no crops in a split in use ({", ".join(summary.in_use) or "none"}); a '
             f'share of a split more than {s.share_tolerance:.0%} away from the dataset\'s '
             f'share of it; at least {s.dominant_location:.0%} of its crops (or all) at '
             'one location; crops at locations in no split.')
    if not summary.flags:
        return f'<p>{html.escape(rules)}</p><p>No label is flagged.</p>'
    items = ''.join(f'<li><b>{html.escape(label)}</b>: <span class="flag">'
                    + html.escape('; '.join(why)) + '</span></li>'
                    for label, why in summary.flags.items())
    return (f'<p>{html.escape(rules)}</p><p>{len(summary.flags)} of {len(summary.labels)} '
            f'labels flagged:</p><ul>{items}</ul>')


def _samples_html(summary: DatasetSummary, thumbs: report_pages.Thumbs) -> str:
    parts = []
    by_label = dict(tuple(summary.samples.groupby('label', sort=False)))
    totals = dict(zip(summary.labels, summary.table['crops'].to_numpy(dtype=np.int64).tolist(),
                      strict=True))
    for label in summary.labels:
        mine = by_label.get(label)
        n = int(totals[label])
        if mine is None:
            parts.append(f'<p>{html.escape(label)}: ' + ('no crops</p>' if n == 0 else
                                                          f'{n} crops, none shown</p>'))
            continue
        figs = ''.join(report_pages.figure(thumbs, path, f'{where} {split} {conf:.2f}')
                       for path, where, split, conf in zip(
                           mine['path'], mine['where'], mine['split'], mine['confidence'],
                           strict=True))
        parts.append(f'<details><summary>{html.escape(label)} ({n} crops; {len(mine)} shown)'
                     f'</summary><div class="cell">{figs}</div></details>')
    return ''.join(parts)


def _comparison_html(c: SplitComparison) -> str:
    a, b = (html.escape(n) for n in c.names)
    out = [f'<h2 id="compare">Splits compared: {a} and {b}</h2>',
           '<p>Each assignment of this dataset\'s locations: the crops and locations in '
           'each split, the labels with no crops in it, and how far the labels\' shares of '
           'it are from the split\'s share of all crops (the mean over labels; lower is '
           'more even).</p>', _table_html(c.spread),
           f'<h3>Locations by split in {a} (rows) and in {b} (columns)</h3>',
           _table_html(c.moves)]
    n_moved = int(c.moves.to_numpy().sum() - np.trace(c.moves.to_numpy()))
    if n_moved:
        shown = '' if n_moved <= len(c.moved) else f' ({len(c.moved)} with most crops shown)'
        out.append(f'<h3>{n_moved} locations in another split{shown}</h3>'
                   + _table_html(c.moved, index=False))
    else:
        out.append('<p>Both assign every location to the same split.</p>')
    out.append('<h3>Crops per label and split in each</h3>' + _table_html(c.per_label))
    return '\n'.join(out)


def build_page(summary: DatasetSummary, folder: Path, crops_dir: Path | None) -> str:
    """The page body; figures and thumbnails are written into ``folder``."""
    thumbs = report_pages.Thumbs(crops_dir, folder)
    multi = (' (crops with several labels count under each)' if summary.multilabel else '')
    nav = ['<a href="#flags">flags</a>', '<a href="#counts">crops per label</a>',
           '<a href="#confidence">detection confidence</a>', '<a href="#samples">samples</a>']
    if summary.comparison is not None:
        nav.append('<a href="#compare">splits compared</a>')
    out = [f'<p>{summary.n_crops} crops of {len(summary.labels)} labels{multi} at '
           f'{summary.n_locations} locations in {summary.n_datasets} datasets. '
           + ' | '.join(nav) + '</p>', _table_html(summary.overview)]
    if summary.empty_locations:
        out.append(f'<p class="flag">{len(summary.empty_locations)} locations of the splits '
                   'have no crops in the dataset, e.g. '
                   f'{html.escape(summary.empty_locations[0])}</p>')
    out.append('<h2 id="flags">Imbalance flags</h2>' + _flags_html(summary))
    figs = []
    for k, chunk in enumerate(_chunks(len(summary.labels)), start=1):
        part = summary.table.iloc[list(chunk)]
        title = 'crops per label and split' + (f' ({k})' if len(summary.labels) >
                                               LABELS_PER_FIGURE else '')
        figs.append(report_pages.save_figure(counts_figure(part, summary.splits, title),
                                             folder, f'counts_{k}.png', title))
    out.append('<h2 id="counts">Crops and locations per label and split</h2>'
               f'<div class="figs">{"".join(figs)}</div>' + _table_html(summary.table))
    figs = []
    for k, chunk in enumerate(_chunks(len(summary.labels)), start=1):
        title = 'detection confidence per label' + (f' ({k})' if len(summary.labels) >
                                                    LABELS_PER_FIGURE else '')
        fig = confidence_figure(summary.confidence[chunk.start:chunk.stop],
                                summary.labels[chunk.start:chunk.stop], title,
                                summary.confidence_low)
        figs.append(report_pages.save_figure(fig, folder, f'confidence_{k}.png', title))
    about = ('Crops of ground-truth boxes have confidence 1.0; detector crops have the '
             'detector\'s confidence (at least the threshold they were made with).'
             if summary.has_confidence else 'The dataset CSV has no confidence column: '
             'every crop is counted at 1.0 here.')
    out.append(f'<h2 id="confidence">Detection confidence per label</h2><p>{about}</p>'
               f'<div class="figs">{"".join(figs)}</div>'
               + _table_html(summary.confidence_stats))
    out.append(f'<h2 id="samples">Sample crops per label</h2><p>Up to '
               f'{summary.settings.samples_per_label} crops per label, drawn from as many of '
               'its locations as possible; captions: location, split, confidence.</p>'
               + _samples_html(summary, thumbs))
    if summary.comparison is not None:
        out.append(_comparison_html(summary.comparison))
    return '\n'.join(out)


def write_dataset_report(report_dir: str | os.PathLike[str], summary: DatasetSummary,
                         crops_dir: str | os.PathLike[str] | None = None,
                         title: str = 'Dataset report') -> Path:
    """Writes the report folder (see the module docstring); returns index.html."""
    crops = Path(crops_dir) if crops_dir is not None else None
    return report_pages.write_report_folder(
        report_dir, title, lambda folder: build_page(summary, folder, crops), report_pages.DATASET)


def report_from_files(base_logdir: str | os.PathLike[str], report_dir: str | os.PathLike[str],
                      crops_dir: str | os.PathLike[str] | None = None,
                      compare: str | os.PathLike[str] | None = None,
                      settings: ReportSettings = ReportSettings(),
                      splits_json: str | os.PathLike[str] | None = None) -> Path:
    """The dataset report of the files in ``base_logdir`` (classification_ds.csv,
    label_index.json, splits.json or ``splits_json``), checked against each other
    (and ``compare``, a second splits.json) before anything is written."""
    report_pages.check_report_dir(report_dir, report_pages.DATASET)
    base = Path(base_logdir)
    csv_path = base / CSV_NAME
    df = read_dataset_csv(csv_path)
    labels = utils.load_label_index(base / 'label_index.json')
    split_path = Path(splits_json) if splits_json is not None else base / 'splits.json'
    docs = {str(split_path): split_files.read_splits(split_path)}
    if compare is not None:
        if Path(compare).resolve() == split_path.resolve():
            raise utils.InputError(f'{compare}: is the splits.json being reported; compare '
                                   'with another')
        docs[str(compare)] = split_files.read_splits(Path(compare))
    check_consistent(df, str(csv_path), labels, str(base / 'label_index.json'), docs)
    other = None
    if compare is not None:
        other = (split_path.name if split_path.name != Path(compare).name else str(split_path),
                 Path(compare).name if split_path.name != Path(compare).name else str(compare),
                 docs[str(compare)])
    summary = summarize(df, labels, docs[str(split_path)], settings, other)
    return write_dataset_report(report_dir, summary, crops_dir)
