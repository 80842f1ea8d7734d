"""crop_detections (photos/s) and run_classifier (crops/s): this project vs the original.

The original scripts come from the `megadetector` package in bench/.venv-original
(made by bench/setup_original.sh). Both run the same way: the same inputs and
flags, in-process timing of the step itself (bench/_timed_run.py), best of
--repeats runs. Inputs: the real photos in ../shared/data/real_camera_traps,
and a generated set of full-size photos.

run_classifier: both classify the same crop files (the original's crops) with
the same TorchScript model, image size and batch size; the table gives crops/s
and the share of crops whose top-1 label is identical.

Example:
    bash bench/setup_original.sh
    .venv/bin/python bench/bench_inference.py --model demo_output/.../ckpt_2_compiled.pt

Prints Markdown tables for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from _timed_run import timed

REPO = Path(__file__).resolve().parents[1]
OURS = sys.executable
ORIGINAL = str(REPO / 'bench' / '.venv-original' / 'bin' / 'python')
REAL = REPO.parent / 'shared' / 'data' / 'real_camera_traps'


def bench_crops(detections: Path, images: Path, work: Path, threads: int, repeats: int,
                threshold: float) -> dict[str, float | int]:
    doc = json.loads(detections.read_text())
    animal = {k for k, v in doc['detection_categories'].items() if v == 'animal'}
    n_photos = sum(any(d['conf'] >= threshold and d['category'] in animal
                       for d in img.get('detections') or []) for img in doc['images'])
    times: dict[str, list[float]] = {'ours': [], 'original': []}
    for _ in range(repeats):
        for name, python, module in (('ours', OURS, 'classification.crop_detections'),
                                     ('original', ORIGINAL,
                                      'megadetector.classification.crop_detections')):
            out = work / f'crops_{name}'
            shutil.rmtree(out, ignore_errors=True)
            times[name].append(timed(python, module, str(detections), str(out), '--images-dir',
                                     str(images), '--threshold', str(threshold),
                                     '--square-crops', '--threads', str(threads),
                                     '--logdir', str(work / f'logs_{name}')))
    n_crops = sum(1 for _ in (work / 'crops_ours').rglob('*.jpg'))
    return {'photos': n_photos, 'crops': n_crops, 'ours': min(times['ours']),
            'original': min(times['original'])}


def bench_classifier(model: Path, crops: Path, work: Path, image_size: int, batch_size: int,
                     workers: int, repeats: int, labels: Path | None) -> dict[str, float | int]:
    extra = ['--classifier-categories', str(labels)] if labels else []
    times: dict[str, list[float]] = {'ours': [], 'ours_bf16': [], 'original': []}
    runs = (('ours', OURS, 'classification.run_classifier', []),
            ('ours_bf16', OURS, 'classification.run_classifier', ['--bf16']),
            ('original', ORIGINAL, 'megadetector.classification.run_classifier', []))
    for _ in range(repeats):
        for name, python, module, flags in runs:
            times[name].append(timed(python, module, str(model), str(crops),
                                     str(work / f'{name}.csv'), '--image-size', str(image_size),
                                     '--batch-size', str(batch_size), '--num-workers',
                                     str(workers), *extra, *flags))
    frames = {}
    for name, *_ in runs:
        df = pd.read_csv(work / f'{name}.csv')
        df['path'] = df['path'].map(lambda p: os.path.normpath(str(p)))
        frames[name] = df.set_index('path').sort_index()
    cols = [c for c in frames['original'].columns]
    o = frames['original'][cols].to_numpy()
    result: dict[str, float | int] = {'crops': len(frames['original'])}
    for name in ('ours', 'ours_bf16'):
        f = frames[name].loc[frames['original'].index, cols].to_numpy()
        result[f'{name}_agree'] = float((f.argmax(1) == o.argmax(1)).mean())
        result[f'{name}_maxdiff'] = float(np.abs(f - o).max())
        result[name] = min(times[name])
    result['original'] = min(times['original'])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='TorchScript classifier')
    parser.add_argument('--labels', help='its label index JSON')
    parser.add_argument('--work', default='bench/out/inference')
    parser.add_argument('--generated-photos', type=int, default=120)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=2,
                        help='runs of run_classifier per implementation (best counts)')
    parser.add_argument('--crop-repeats', type=int, default=5,
                        help='runs of crop_detections per implementation (best counts)')
    parser.add_argument('--image-sizes', type=int, nargs='+', default=[224])
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--num-workers', type=int, default=1)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not Path(ORIGINAL).exists():
        sys.exit('run bench/setup_original.sh first')

    gen = work / 'generated'
    if not (gen / 'new_photos' / 'detections.json').exists():
        from data_management.demo_project import generate
        generate(gen, seed=11, locations=6, sequences_per_location=1,
                 new_images=args.generated_photos, new_locations=4)
    sets = [('generated 1920x1080', gen / 'new_photos' / 'detections.json',
             gen / 'new_photos' / 'images')]
    if REAL.exists():
        sets.insert(0, ('real photos (1280x1024 to 5152x3968)', REAL / 'md_v5a_detections.json',
                        REAL / 'images'))
    print('### crop_detections (--square-crops --threshold 0.2 --threads '
          f'{args.threads})\n')
    print('| photos | count | crops | ours s | original s | ours photos/s | original photos/s '
          '| ratio |')
    print('|---|---|---|---|---|---|---|---|')
    for name, det, images in sets:
        r = bench_crops(det, images, work / name.split()[0], args.threads, args.crop_repeats,
                        0.2)
        print(f'| {name} | {r["photos"]} | {r["crops"]} | {r["ours"]:.2f} | '
              f'{r["original"]:.2f} | {r["photos"] / r["ours"]:.1f} | '
              f'{r["photos"] / r["original"]:.1f} | {r["original"] / r["ours"]:.2f}x |',
              flush=True)
    crops = work / 'generated' / 'crops_original'
    print(f'\n### run_classifier (batch {args.batch_size}, --num-workers {args.num_workers}, '
          'same crops, same TorchScript model)\n')
    print('| image size | crops | ours fp32 crops/s | original crops/s | ratio | top-1 agree '
          '| ours bf16 crops/s | bf16 top-1 agree |')
    print('|---|---|---|---|---|---|---|---|')
    for size in args.image_sizes:
        r = bench_classifier(Path(args.model), crops, work, size, args.batch_size,
                             args.num_workers, args.repeats,
                             Path(args.labels) if args.labels else None)
        n = r['crops']
        print(f'| {size} | {n} | {n / r["ours"]:.1f} | {n / r["original"]:.1f} | '
              f'{r["original"] / r["ours"]:.2f}x | {r["ours_agree"]:.2%} | '
              f'{n / r["ours_bf16"]:.1f} | {r["ours_bf16_agree"]:.2%} |', flush=True)


if __name__ == '__main__':
    main()
