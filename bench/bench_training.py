"""train_classifier, whole process: this project (float32, --amp, 2-process DDP) vs the original.

The original's train_classifier comes from the `megadetector` package in
bench/.venv-original (bench/setup_original.sh). Both train the same model on
the same crops with the same flags: EfficientNet-B0 from scratch, batch 64,
224 px, one epoch with its evaluation passes (val, test on a new best, then the
best epoch on train, val and test), --label-weighted (the original's
evaluation needs it). The figure is the wall time of the whole process, start-up
included, and its peak memory: the largest resident set of one process
(ru_maxrss) and the peak of the process tree's proportional set size (PSS,
sampled every second from /proc; pages shared with forked workers counted once).

The crops are generated: --crops JPEGs of 5 labels (shapes and colours on
noise, 150-400 px) at 20 locations named loc_00..., 12 train, 4 val and 4 test
locations, each with every label.

Example:
    bash bench/setup_original.sh
    .venv/bin/python bench/bench_training.py --crops 600 --num-workers 2

Prints a Markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = str(REPO / 'bench' / '.venv-original' / 'bin' / 'python')
LABELS = ('circle', 'square', 'triangle', 'cross', 'ring')


def make_dataset(root: Path, n_crops: int, seed: int = 0) -> tuple[Path, Path]:
    """(dataset folder, crops folder) of ``n_crops`` generated crops."""
    rng = np.random.default_rng(seed)
    data, crops = root / 'dataset', root / 'crops'
    data.mkdir(parents=True)
    locs = [f'loc_{i:02d}' for i in range(20)]
    splits = {'train': locs[:12], 'val': locs[12:16], 'test': locs[16:]}
    rows = []
    for i in range(n_crops):
        loc, label = locs[i % len(locs)], LABELS[(i // len(locs)) % len(LABELS)]
        w, h = (int(v) for v in rng.integers(150, 400, 2))
        noise = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(noise // 2 + 60)
        draw = ImageDraw.Draw(img)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
        k = LABELS.index(label)
        if k == 0:
            draw.ellipse(box, fill=colour)
        elif k == 1:
            draw.rectangle(box, fill=colour)
        elif k == 2:
            draw.polygon([(w / 2, h * 0.2), (w * 0.8, h * 0.8), (w * 0.2, h * 0.8)], fill=colour)
        elif k == 3:
            draw.line((box[0], box[1], box[2], box[3]), fill=colour, width=max(w // 10, 3))
            draw.line((box[0], box[3], box[2], box[1]), fill=colour, width=max(w // 10, 3))
        else:
            draw.ellipse(box, outline=colour, width=max(w // 12, 3))
        path = f'ds/{loc}/img{i:05d}.jpg___crop00_mdv5a.jpg'
        (crops / path).parent.mkdir(parents=True, exist_ok=True)
        img.save(crops / path, quality=90)
        rows.append(f'{path},ds,{loc},{label},{rng.uniform(0.5, 1):.3f},{label}')
    (data / 'classification_ds.csv').write_text(
        'path,dataset,location,dataset_class,confidence,label\n' + '\n'.join(rows) + '\n')
    (data / 'label_index.json').write_text(json.dumps(dict(enumerate(LABELS))))
    (data / 'splits.json').write_text(json.dumps(
        {s: [['ds', loc] for loc in ls] for s, ls in splits.items()}))
    return data, crops


def _children() -> dict[int, list[int]]:
    """Each process's children, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return children


def tree_pss(pid: int) -> int:
    """Proportional set size (shared pages split between their sharers, so forked
    data-loading workers are not counted twice) of ``pid`` and its descendants."""
    children = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f'/proc/{p}/smaps_rollup') as f:
                for line in f:
                    if line.startswith('Pss:'):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return total


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds, peak tree RSS and ru_maxrss (GB) of one command."""
    # a fresh parent per command, so that ru_maxrss is this command's alone
    wrapper = ('import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; '
               'print("MAXRSS", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, '
               'file=sys.stderr); sys.exit(rc)')
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, '-c', wrapper, *cmd], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss(proc.pid))
            time.sleep(1.0)         # light: reading smaps costs the measured process time
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f'{cmd[:4]} failed:\n{err[-3000:]}')
    maxrss_kb = int(err.rsplit('MAXRSS', 1)[1].split()[0])
    return {'seconds': seconds, 'tree_gb': peak[0] / 1e9, 'maxrss_gb': maxrss_kb / 1e6}


def fidelity(work: Path, data: Path, crops: Path, env: dict[str, str]) -> None:
    """evaluate_model, ours and the original's, on the best checkpoint of our float32
    run: the same columns, units and values?"""
    import pandas as pd
    run = next(p for p in (work / 'fp32').iterdir() if p.is_dir())
    compiled = next(run.glob('ckpt_*_compiled.pt'))
    src = work / 'fidelity'
    src.mkdir()
    ckpt = src / compiled.name.replace('_compiled', '')
    shutil.copy(run / ckpt.name, ckpt)
    params = json.loads((run / 'params.json').read_text())
    params.update(dataset_dir=str(data), cropped_images_dir=str(crops))
    (src / 'params.json').write_text(json.dumps(params))
    outs = {}
    # the original first: it traces its own TorchScript file (and would reuse ours)
    for name, python, module in (('original', ORIGINAL,
                                  'megadetector.classification.evaluate_model'),
                                 ('ours', sys.executable, 'classification.evaluate_model')):
        out = src / name
        subprocess.run([python, '-m', module, str(src / 'params.json'), str(ckpt), '-o',
                        str(out), '--splits', 'train', 'val', 'test'], cwd=REPO, env=env,
                       check=True, capture_output=True)
        outs[name] = out
    print('\nevaluate_model on the same checkpoint (ours vs the original):\n')
    for f in ('overall_metrics.csv', 'label_stats.csv'):
        a = pd.read_csv(outs['ours'] / f)
        b = pd.read_csv(outs['original'] / f)
        num = a.select_dtypes('number').columns
        same_nan = (a[num].isna() == b[num].isna()).all().all()
        diff = (a[num] - b[num]).abs().max().max()
        print(f'- {f}: columns identical: {list(a.columns) == list(b.columns)}; '
              f'largest difference {diff:.2g}; empty cells at the same places: {same_nan}')
    for split in ('train', 'val', 'test'):
        a = pd.read_csv(outs['ours'] / f'outputs_{split}.csv.gz')
        b = pd.read_csv(outs['original'] / f'outputs_{split}.csv.gz')
        print(f'- outputs_{split}.csv.gz: columns identical: {list(a.columns) == list(b.columns)}'
              f'; largest probability difference '
              f'{(a.iloc[:, 3:] - b.iloc[:, 3:]).abs().max().max():.2g}; weights equal: '
              f'{bool(((a["weight"] - b["weight"]).abs() < 1e-5).all())}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--crops', type=int, default=600)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--work', default=str(REPO / 'bench' / 'out' / 'training'))
    parser.add_argument('--only', nargs='*', default=[],
                        help='run only these (default: all)')
    parser.add_argument('--skip', nargs='*', default=[],
                        choices=['original', 'fp32', 'amp', 'amp_keep', 'ddp',
                                 'fidelity'])
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    data, crops = make_dataset(work, args.crops)
    common = [str(data), str(crops), '-m', 'efficientnet-b0', '--epochs', '1', '--batch-size',
              '64', '--label-weighted', '--num-workers', str(args.num_workers), '--seed', '0']
    env = {**os.environ, 'PYTHONPATH': ''}
    runs = {
        'original': [ORIGINAL, '-m', 'megadetector.classification.train_classifier', *common,
                     '--logdir', str(work / 'original')],
        'fp32': [sys.executable, '-m', 'classification.train_classifier', *common,
                 '--logdir', str(work / 'fp32')],
        'amp': [sys.executable, '-m', 'classification.train_classifier', *common, '--amp',
                '--logdir', str(work / 'amp')],
        'amp_keep': [sys.executable, '-m', 'classification.train_classifier', *common,
                     '--amp', '--no-recompute-activations',
                     '--logdir', str(work / 'amp_keep')],
        'ddp': [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                '--nproc_per_node', '2', '-m', 'classification.train_classifier', *common,
                '--logdir', str(work / 'ddp')],
    }
    results = {}
    for name, cmd in runs.items():
        if name in args.skip or (args.only and name not in args.only):
            continue
        run_env = {**env, 'OMP_NUM_THREADS': '1'} if name == 'ddp' else env
        results[name] = timed(cmd, run_env)
        print(name, results[name], file=sys.stderr, flush=True)
    base = results.get('original', {}).get('seconds')
    print(f'EfficientNet-B0 from scratch, batch 64, 224 px, {args.crops} crops, 1 epoch + '
          f'evaluation, --num-workers {args.num_workers}:\n')
    print('| run | seconds | vs original | peak RSS, largest process (GB) | '
          'peak PSS, process tree (GB) |')
    print('|---|---|---|---|---|')
    names = {'original': 'original (megadetector 10.0.28)', 'fp32': 'ours, float32',
             'amp': 'ours, --amp (bf16; recomputes activations on a CPU)',
             'amp_keep': 'ours, --amp --no-recompute-activations',
             'ddp': 'ours, 2-process DDP (gloo, 1 thread each)'}
    for name, r in results.items():
        ratio = f'{base / r["seconds"]:.2f}x' if base else '-'
        print(f'| {names[name]} | {r["seconds"]:.1f} | {ratio} | {r["maxrss_gb"]:.2f} | '
              f'{r["tree_gb"]:.2f} |')
    if 'fidelity' not in args.skip and 'fp32' in results:
        fidelity(work, data, crops, env)


if __name__ == '__main__':
    main()
