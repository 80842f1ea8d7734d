"""Time the random split search of create_classification_dataset: einsum before, matmul after.

Builds a synthetic classification_ds table (seeded): --locations camera
locations in one dataset and --labels labels; label k is seen at about
0.3 * locations / (k + 1)**0.8 locations (at least 3), so a few labels are
everywhere and most are rare; a location holds a log-normal number of crops
of each label it has (median about 7, a long tail), and a location left
without crops gets one label, drawn by how widespread labels are. Then runs
the whole ``split_random`` search (--num-trials, default: the script's own
default) with the same seed three ways:

- before: the search as it was, kept verbatim below (the inverse permutation
  by a second argsort, candidates scored with ``np.einsum('tls,lk->tsk', ...)``);
- scoring only: the same, with the new matrix-product ``_score``;
- after: ``classification.create_classification_dataset.split_random`` (matrix
  products, and the assignment scattered from one argsort).

It also times the scoring of one chunk of assignments alone, checks that both
scorings give the same scores bit for bit and that all searches pick the same
splits, and prints a Markdown table (for docs/benchmarks.md). Exit status 1
if any result differs.

Example:
    .venv/bin/python bench/bench_split_search.py --locations 5000 --labels 200
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import pandas as pd

from classification import create_classification_dataset as ccd


def synthetic_table(n_locs: int, n_labels: int, seed: int) -> pd.DataFrame:
    """One row per crop, in the classification_ds.csv layout."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_locs, n_labels), dtype=np.int64)
    spread = np.array([min(n_locs, max(3, int(0.3 * n_locs / (k + 1) ** 0.8)))
                       for k in range(n_labels)])
    for k in range(n_labels):
        where = rng.choice(n_locs, spread[k], replace=False)
        counts[where, k] = np.ceil(rng.lognormal(2.0, 1.2, spread[k])).astype(np.int64)
    empty = np.flatnonzero(counts.sum(axis=1) == 0)    # every location gets some crops
    counts[empty, rng.choice(n_labels, len(empty), p=spread / spread.sum())] = np.ceil(
        rng.lognormal(2.0, 1.2, len(empty))).astype(np.int64)
    loc_idx, label_idx = np.nonzero(counts)
    reps = counts[loc_idx, label_idx]
    locs = np.repeat(loc_idx, reps)
    labels = np.repeat(label_idx, reps)
    label_names = np.array([f'label{k:03d}' for k in range(n_labels)])[labels]
    return pd.DataFrame({
        'path': [f'ds/L{loc}/img{i:07d}.jpg___crop00_mdv5a.jpg' for i, loc in enumerate(locs)],
        'dataset': 'ds', 'location': [f'L{loc}' for loc in locs],
        'dataset_class': label_names, 'confidence': 0.9, 'label': label_names})


# ---------------------------------------------------------------- before (kept verbatim)

def score_einsum(assign: np.ndarray, counts: np.ndarray, fracs: np.ndarray) -> np.ndarray:
    onehot = (assign[:, :, None] == np.arange(3)).astype(np.float32)      # T x L x 3
    score = np.zeros(len(assign))
    for mat in (counts, (counts > 0).astype(np.float64)):
        per_split = np.einsum('tls,lk->tsk', onehot, mat.astype(np.float32))  # T x 3 x K
        totals = mat.sum(axis=0)
        frac = per_split / np.maximum(totals, 1)[None, None, :]
        score += np.abs(frac - fracs[None, :, None]).sum(axis=(1, 2))
    return score


ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def split_random_before(df: pd.DataFrame, val_frac: float, test_frac: float, seed: int,
                        num_trials: int = 10_000, chunk: int = 1000,
                        score: ScoreFn = score_einsum) -> dict[str, list[list[str]]]:
    locs, _, counts = ccd._count_matrix(df)
    n = len(locs)
    n_test = max(int(round(test_frac * n)), 1) if test_frac > 0 else 0
    n_val = max(int(round(val_frac * n)), 1) if val_frac > 0 else 0
    fracs = np.array([1 - val_frac - test_frac, val_frac, test_frac])
    rng = np.random.default_rng(seed)
    best_score, best = np.inf, np.zeros(n, dtype=np.int64)
    for start in range(0, num_trials, chunk):
        t = min(chunk, num_trials - start)
        ranks = np.argsort(rng.random((t, n)), axis=1).argsort(axis=1)
        assign = np.where(ranks < n_test, 2, np.where(ranks < n_test + n_val, 1, 0))
        scores = score(assign, counts, fracs)
        i = int(np.argmin(scores))
        if scores[i] < best_score:
            best_score, best = float(scores[i]), assign[i]
    return ccd._to_splits(locs, best)


# ---------------------------------------------------------------- timing

T = TypeVar('T')


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds of the fastest of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def default_num_trials() -> int:
    return int(ccd.parse_args(['out', '--mode', 'splits', '--val-frac', '0.2']).num_trials)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--locations', type=int, default=5000, help='(default: 5000)')
    parser.add_argument('--labels', type=int, default=200, help='(default: 200)')
    parser.add_argument('--num-trials', type=int, default=default_num_trials(),
                        help='random assignments per search (default: the script\'s, '
                             f'{default_num_trials()})')
    parser.add_argument('--chunk', type=int, default=1000,
                        help='assignments scored at once (default: 1000, as the script)')
    parser.add_argument('--val-frac', type=float, default=0.2, help='(default: 0.2)')
    parser.add_argument('--test-frac', type=float, default=0.2, help='(default: 0.2)')
    parser.add_argument('--seed', type=int, default=123,
                        help="split seed (default: 123, the script's)")
    parser.add_argument('--data-seed', type=int, default=0,
                        help='seed of the synthetic table (default: 0)')
    parser.add_argument('--repeats', type=int, default=1,
                        help='runs of each search; the best is reported (default: 1)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    df = synthetic_table(args.locations, args.labels, args.data_seed)
    locs, labels, counts = ccd._count_matrix(df)
    n_pairs = int((counts > 0).sum())

    # one chunk, scoring only
    rng = np.random.default_rng(args.seed)
    n = len(locs)
    order = np.argsort(rng.random((args.chunk, n)), axis=1)
    assign = ccd._assignments(order, max(1, round(args.test_frac * n)),
                              max(1, round(args.val_frac * n)))
    fracs = np.array([1 - args.val_frac - args.test_frac, args.val_frac, args.test_frac])
    t_chunk_before, s_before = best_of(max(args.repeats, 3),
                                       lambda: score_einsum(assign, counts, fracs))
    t_chunk_after, s_after = best_of(max(args.repeats, 3),
                                     lambda: ccd._score(assign, counts, fracs))
    same_scores = np.array_equal(s_before, s_after)

    search = (args.val_frac, args.test_frac, args.seed, args.num_trials, args.chunk)
    t_before, before = best_of(args.repeats, lambda: split_random_before(df, *search))
    t_mid, mid = best_of(args.repeats,
                         lambda: split_random_before(df, *search, score=ccd._score))
    t_after, after = best_of(args.repeats, lambda: ccd.split_random(df, *search))
    same_splits = before == mid == after

    print(f'{len(locs):,} locations x {len(labels)} labels, {n_pairs:,} (location, label) '
          f'pairs with crops, {len(df):,} crops; --val-frac {args.val_frac} --test-frac '
          f'{args.test_frac} --seed {args.seed}; best of {args.repeats} run(s)\n')
    yes = {True: 'yes', False: 'NO'}
    print('| measure | before (einsum) s | after s | speedup | same result |')
    print('|---|---|---|---|---|')
    print(f'| split_random, {args.num_trials:,} trials (whole search) | {t_before:.2f} | '
          f'{t_after:.2f} | {t_before / t_after:.1f}x | {yes[before == after]} |')
    print(f'| the same, only the scoring changed | {t_before:.2f} | {t_mid:.2f} | '
          f'{t_before / t_mid:.1f}x | {yes[before == mid]} |')
    print(f'| scoring one chunk of {args.chunk:,} assignments | {t_chunk_before:.3f} | '
          f'{t_chunk_after:.3f} | {t_chunk_before / t_chunk_after:.1f}x | '
          f'{yes[bool(same_scores)]} |')
    return 0 if same_splits and same_scores else 1


if __name__ == '__main__':
    raise SystemExit(main())
