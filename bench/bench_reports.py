"""How long the evaluation report takes at scale: 100 labels x 100,000 crops.

Builds a synthetic evaluation folder (outputs_test.csv.gz with random but
peaked probabilities, a dataset CSV with 500 locations, and a crops folder in
which every crop is a hard link to a real JPEG crop, so thumbnails decode real
files), then times classification.reports.report_from_outputs (best of
--repeats). Prints a Markdown row for docs/benchmarks.md.

Example:
    .venv/bin/python bench/bench_reports.py --work bench/out/reports
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classification import reports  # noqa: E402


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
    for i, p in enumerate(paths):
        one = work / f'one_{i // 50_000}.jpg'      # file systems cap the links of a file
        if not one.exists():
            Image.new('RGB', (160, 120), (90, 120, 60)).save(one, quality=90)
        target = work / 'crops' / p
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(one, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work', type=Path, default=Path('bench/out/reports'))
    parser.add_argument('--labels', type=int, default=100)
    parser.add_argument('--crops', type=int, default=100_000)
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / 'outputs_test.csv.gz').exists():
        build(args.work, args.labels, args.crops)
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
