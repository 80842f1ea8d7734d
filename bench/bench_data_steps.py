"""Measure the table-heavy steps on generated data of realistic size.

- merge_classification_detection_output on N crops (read CSV + JSON, merge, write);
- the random split search of create_classification_dataset (10,000 trials);
- importing COCO Camera Traps JSON into the SQLite MegaDB, and querying it.

Example:
    python bench/bench_data_steps.py --crops 100000 --images 200000 \
        --out bench/out --markdown

Prints a Markdown table (for docs/benchmarks.md) on stdout.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from classification import create_classification_dataset as ccd
from classification import merge_classification_detection_output as mcdo
from classification import utils
from data_management.megadb.base import open_megadb
from data_management.megadb.importers import coco_to_sequences


def bench_merge(out: Path, n_crops: int, n_labels: int = 20) -> float:
    rng = np.random.default_rng(0)
    n_images = n_crops // 2
    images = []
    for i in range(n_images):
        images.append({'file': f'loc{i % 500:03d}/img{i:07d}.jpg', 'max_detection_conf': 0.9,
                       'detections': [{'category': '1', 'conf': 0.9, 'bbox': [0.1, 0.1, 0.2, 0.2]},
                                      {'category': '1', 'conf': 0.8, 'bbox': [0.5, 0.5, 0.2, 0.2]}]})
    doc = {'info': {'format_version': '1.4', 'detector': 'md_v5a.0.0.pt'},
           'detection_categories': {'1': 'animal'}, 'images': images}
    utils.write_json(doc, out / 'detections.json')
    labels = [f'label{k:02d}' for k in range(n_labels)]
    probs = rng.dirichlet(np.ones(n_labels) * 0.3, size=n_crops).astype(np.float32)
    df = pd.DataFrame(probs, columns=labels)
    df.insert(0, 'path', [f'{images[i // 2]["file"]}___crop{i % 2:02d}_mdv5a.jpg'
                          for i in range(n_crops)])
    utils.write_csv(df, out / 'classifier_output.csv.gz', float_format='%.6g')
    utils.write_json(utils.label_index_dict(labels), out / 'label_index.json')
    t = time.perf_counter()
    rc = mcdo.main([str(out / 'classifier_output.csv.gz'), str(out / 'label_index.json'),
                    '-j', str(out / 'detections.json'), '-o', str(out / 'merged.json'),
                    '-n', 'bench', '-t', '0.1'])
    assert rc == 0
    return time.perf_counter() - t


def bench_splits(n_locs: int, n_labels: int, trials: int) -> float:
    rng = np.random.default_rng(1)
    counts = rng.poisson(rng.gamma(0.5, 40, size=(n_locs, n_labels)))
    rows = [(f'{loc}_{k}_{j}', 'ds', f'L{loc}', 'c', 1.0, f'label{k}')
            for loc in range(n_locs) for k in range(n_labels) for j in range(counts[loc, k])]
    df = pd.DataFrame(rows, columns=ccd.CSV_COLUMNS)
    t = time.perf_counter()
    ccd.split_random(df, 0.2, 0.2, seed=0, num_trials=trials)
    return time.perf_counter() - t


def bench_megadb(out: Path, n_images: int) -> tuple[float, float, int]:
    classes = ['deer', 'fox', 'rabbit', 'turkey', 'skunk', 'empty']
    rng = np.random.default_rng(2)
    cat = rng.integers(0, len(classes), size=n_images)
    coco = {'images': [{'id': i, 'file_name': f'loc{i % 300}/img{i}.jpg', 'width': 1920,
                        'height': 1080, 'location': f'loc{i % 300}', 'seq_id': f's{i // 3}',
                        'frame_num': i % 3} for i in range(n_images)],
            'categories': [{'id': k, 'name': c} for k, c in enumerate(classes)],
            'annotations': [{'id': i, 'image_id': i, 'category_id': int(cat[i]),
                             **({'bbox': [100, 100, 300, 200]} if i % 2 else {})}
                            for i in range(n_images)]}
    (out / 'coco.json').write_text(json.dumps(coco))
    db_path = out / 'megadb.sqlite'
    db_path.unlink(missing_ok=True)
    t = time.perf_counter()
    seqs = coco_to_sequences(utils.read_json(out / 'coco.json'), 'bench', 'coco.json')
    with open_megadb(str(db_path)) as db:
        db.upsert_dataset({'dataset_name': 'bench'})
        db.replace_sequences('bench', seqs)
    t_import = time.perf_counter() - t
    t = time.perf_counter()
    with open_megadb(str(db_path)) as db:
        found = sum(len(s['images']) for s in db.query_sequences('bench', ['deer', 'fox']))
    return t_import, time.perf_counter() - t, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--crops', type=int, default=100_000)
    parser.add_argument('--images', type=int, default=200_000)
    parser.add_argument('--split-locations', type=int, default=600)
    parser.add_argument('--split-labels', type=int, default=30)
    parser.add_argument('--trials', type=int, default=10_000)
    parser.add_argument('--out', default='bench/out')
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    utils.setup_logging()
    t_merge = bench_merge(out, args.crops)
    t_split = bench_splits(args.split_locations, args.split_labels, args.trials)
    t_import, t_query, found = bench_megadb(out, args.images)
    print('| step | workload | seconds | rate |')
    print('|---|---|---|---|')
    print(f'| merge_classification_detection_output (whole command) | {args.crops:,} crops | '
          f'{t_merge:.1f} | {args.crops / t_merge:,.0f} crops/s |')
    print(f'| create_classification_dataset --method random | {args.split_locations} locations '
          f'x {args.split_labels} labels, {args.trials:,} trials | {t_split:.1f} | |')
    print(f'| MegaDB import (COCO -> SQLite) | {args.images:,} images | {t_import:.1f} | '
          f'{args.images / t_import:,.0f} images/s |')
    print(f'| MegaDB query (2 of 6 classes) | {found:,} images returned | {t_query:.1f} | '
          f'{found / t_query:,.0f} images/s |')


if __name__ == '__main__':
    main()
