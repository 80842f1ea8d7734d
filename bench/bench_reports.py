"""How long the evaluation and dataset reports take at scale: 100 labels x
100,000 crops.

Builds a synthetic evaluation folder (outputs_test.csv.gz with random but
peaked probabilities, a dataset CSV with 500 locations, and a crops folder in
which every crop is a hard link to a real JPEG crop, so thumbnails decode real
files), then times classification.reports.report_from_outputs (best of
--repeats). --report multilabel times the report of a multi-label run over the
same crops (1 to 3 labels each, sigmoid outputs). With --report dataset (or both) it also writes a dataset folder
(classification_ds.csv with detection confidences and a long-tailed label
distribution, label_index.json, splits.json of the 500 locations) and times
classification.dataset_reports.report_from_files, and the dataset_report
command once end to end (a fresh interpreter: imports included). Prints
Markdown rows for docs/benchmarks.md.

Example:
    .venv/bin/python bench/bench_reports.py --work bench/out/reports --report both
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classification import dataset_reports, reports  # noqa: E402


def build(work: Path, labels: int, crops: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = [f'label_{i:03d}' for i in range(labels)]
    y = rng.integers(0, labels, crops)
    logits = rng.normal(0, 1, (crops, labels))
    logits[np.arange(crops), y] += rng.uniform(0, 6, crops)     # mostly right
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    paths = [f'ds/loc_{i % 500:03d}/img_{i:06d}.jpg___crop00_mdv5a.jpg' for i in range(crops)]
    out = pd.DataFrame(probs.astype(np.float32), columns=names)
    out.insert(0, 'weight', 1.0)
    out.insert(0, 'label', [names[i] for i in y])
    out.insert(0, 'path', paths)
    out.to_csv(work / 'outputs_test.csv.gz', index=False, float_format='%.6g')
    pd.DataFrame({'path': paths, 'dataset': 'ds', 'location': [p.split('/')[1] for p in paths],
                  'label': out['label']}).to_csv(work / 'classification_ds.csv', index=False)
    link_crops(work, paths)


def build_multilabel(work: Path, labels: int, seed: int = 2) -> Path:
    """A multi-label run's outputs over the same crops: 1 to 3 true labels each
    (the single-label outputs' label first), sigmoids mostly above 0.5 for them."""
    rng = np.random.default_rng(seed)
    single = pd.read_csv(work / 'outputs_test.csv.gz', usecols=['path', 'label'])
    names = [f'label_{i:03d}' for i in range(labels)]
    n = len(single)
    y = np.zeros((n, labels), dtype=bool)
    y[np.arange(n), single['label'].map({v: i for i, v in enumerate(names)}).to_numpy()] = True
    for extra in range(2):
        more = rng.uniform(size=n) < 0.3 / (extra + 1)
        y[np.flatnonzero(more), rng.integers(0, labels, int(more.sum()))] = True
    logits = rng.normal(-3, 1.5, (n, labels)) + y * rng.uniform(2, 7, (n, labels))
    out = pd.DataFrame((1 / (1 + np.exp(-logits))).astype(np.float32), columns=names)
    out.insert(0, 'weight', 1.0)
    out.insert(0, 'label', [','.join(names[j] for j in np.flatnonzero(r)) for r in y])
    out.insert(0, 'path', single['path'])
    folder = work / 'multilabel'
    folder.mkdir(exist_ok=True)
    out.to_csv(folder / 'outputs_test.csv.gz', index=False, float_format='%.6g')
    return folder


def link_crops(work: Path, paths: list[str]) -> None:
    """Every crop a hard link to a real JPEG (those already there are kept)."""
    for i, p in enumerate(paths):
        one = work / f'one_{i // 50_000}.jpg'      # file systems cap the links of a file
        if not one.exists():
            Image.new('RGB', (160, 120), (90, 120, 60)).save(one, quality=90)
        target = work / 'crops' / p
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(one, target)


def build_dataset(work: Path, labels: int, crops: int, seed: int = 1) -> Path:
    """The dataset folder of the same crops: labels drawn from a long tail (the
    commonest about 100 times the rarest), confidences of ground-truth boxes (1.0)
    and detections (0.6 to 1), the 500 locations split 300 / 100 / 100."""
    base = work / 'dataset'
    base.mkdir(exist_ok=True)
    src = pd.read_csv(work / 'classification_ds.csv', dtype=str)
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, labels + 1)
    names = [f'label_{i:03d}' for i in range(labels)]
    y = rng.choice(labels, size=len(src), p=weights / weights.sum())
    y[:labels] = np.arange(labels)                      # every label has crops
    conf = np.where(rng.random(len(src)) < 0.3, 1.0, np.round(rng.uniform(0.6, 1, len(src)), 3))
    df = pd.DataFrame({'path': src['path'], 'dataset': src['dataset'],
                       'location': src['location'], 'dataset_class': [names[i] for i in y],
                       'confidence': conf, 'label': [names[i] for i in y]})
    df.to_csv(base / 'classification_ds.csv', index=False)
    (base / 'label_index.json').write_text(json.dumps(
        {str(i): n for i, n in enumerate(sorted(set(df['label'])))}))
    locs = sorted(set(df['location']))
    split = {'train': locs[:300], 'val': locs[300:400], 'test': locs[400:]}
    (base / 'splits.json').write_text(json.dumps(
        {s: [['ds', loc] for loc in v] for s, v in split.items()}))
    return base


def time_dataset_report(work: Path, labels: int, crops: int, repeats: int) -> None:
    base = work / 'dataset'
    if not (base / 'splits.json').exists():
        build_dataset(work, labels, crops)
    link_crops(work, pd.read_csv(base / 'classification_ds.csv', usecols=['path'])['path']
               .tolist())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dataset_reports.report_from_files(base, base / 'dataset_report', work / 'crops')
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'classification.dataset_report', str(base), '-c',
                    str(work / 'crops')], check=True, cwd=Path(__file__).resolve().parents[1])
    command = time.perf_counter() - t
    thumbs = len(list((base / 'dataset_report' / 'thumbs').glob('*.jpg')))
    print(f'| report | labels | crops | thumbnails | seconds (best of {repeats}) | '
          'command, end to end |')
    print('|---|---|---|---|---|---|')
    print(f'| dataset | {labels} | {crops:,} | {thumbs} | {min(times):.1f} | {command:.1f} |')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work', type=Path, default=Path('bench/out/reports'))
    parser.add_argument('--labels', type=int, default=100)
    parser.add_argument('--crops', type=int, default=100_000)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--report', choices=['evaluation', 'dataset', 'both', 'multilabel'],
                        default='evaluation', help='which report to time')
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / 'outputs_test.csv.gz').exists():
        build(args.work, args.labels, args.crops)
    if args.report in ('dataset', 'both'):
        time_dataset_report(args.work, args.labels, args.crops, args.repeats)
    if args.report == 'dataset':
        return
    if args.report == 'multilabel':
        folder = build_multilabel(args.work, args.labels)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            reports.report_from_outputs(folder, folder / 'report', args.work / 'crops',
                                        args.work / 'classification_ds.csv', ['test'],
                                        multilabel=True)
            times.append(time.perf_counter() - t)
        thumbs = len(list((folder / 'report' / 'thumbs').glob('*.jpg')))
        print(f'| report | labels | crops | thumbnails | seconds (best of {args.repeats}) |')
        print('|---|---|---|---|---|')
        print(f'| multi-label evaluation | {args.labels} | {args.crops:,} | {thumbs} | '
              f'{min(times):.1f} |')
        return
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        reports.report_from_outputs(args.work, args.work / 'report', args.work / 'crops',
                                    args.work / 'classification_ds.csv')
        times.append(time.perf_counter() - t)
    thumbs = len(list((args.work / 'report' / 'thumbs').glob('*.jpg')))
    print(f'| labels | crops | thumbnails | seconds (best of {args.repeats}) |')
    print('|---|---|---|---|')
    print(f'| {args.labels} | {args.crops:,} | {thumbs} | {min(times):.1f} |')


if __name__ == '__main__':
    main()
