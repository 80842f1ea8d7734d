"""run_classifier at archive scale, side by side with the original (bench/.venv-original).

1. Classifier speed end to end (decode + model): the original's run_classifier and
   ours with each engine (torch fp32, ONNX Runtime fp32, OpenVINO fp32 and bf16,
   OpenVINO int8 with --calibration-crops, and what ``--engine auto`` picks) classify the same crop files with the same
   TorchScript model at the model's size, same batch size and workers; crops/s of
   the step (imports excluded, bench/_timed_run.py, best of --repeats) and the
   share of crops whose top-1 label equals the original's (float32).
2. Photos -> classifications: the real photos of ../shared/data/real_camera_traps
   copied to --copies x 15 files (with their detections); the original's
   crop_detections + run_classifier chain vs ours --from-photos (one step), and
   the share of crops whose top-1 label equals the original chain's.

The ONNX exports (and int8 copies) are made once before timing (run_classifier
caches them beside the model file); the one-time export is timed separately.

Models: trained classifiers at 224 px (top-1 agreement means little for random
weights), e.g. from the demo:
    DEMO_DIR=bench/out/demo224 DEMO_IMAGE_SIZE=224 DEMO_EPOCHS=3 bash demo/run_demo.sh
    .venv/bin/python -m classification.train_classifier bench/out/demo224/base_logdir \
        bench/out/demo224/crops -m efficientnet-b0 --image-size 224 --epochs 2 \
        --batch-size 32 --logdir bench/out/demo224/b0 --num-workers 1 --amp
Example:
    .venv/bin/python bench/bench_archive.py --models bench/out/demo224/base_logdir/*/ckpt_*_compiled.pt \
        bench/out/demo224/b0/*/ckpt_*_compiled.pt

Prints Markdown tables for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _timed_run import timed

REPO = Path(__file__).resolve().parents[1]
OURS = sys.executable
ORIGINAL = str(REPO / 'bench' / '.venv-original' / 'bin' / 'python')
REAL = REPO.parent / 'shared' / 'data' / 'real_camera_traps'
ENGINES = [('torch fp32', ['--engine', 'torch', '--precision', 'fp32']),
           ('onnxruntime fp32', ['--engine', 'onnxruntime', '--precision', 'fp32']),
           ('openvino fp32', ['--engine', 'openvino', '--precision', 'fp32']),
           ('openvino bf16', ['--engine', 'openvino', '--precision', 'bf16']),
           ('auto (default)', [])]


def compared() -> list[tuple[str, list[str]]]:
    """The engine runs compared with torch fp32 (the first) for top-1 agreement."""
    return [(name, flags) for name, flags in ENGINES if name != 'auto (default)']


def slug(name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')


def top1(path: Path) -> pd.Series:
    """Top-1 column (label index order in both) per crop, keyed by (photo, box
    index): the original names crops with the raw detector string, ours with its
    version, and its columns by index where ours carry the model's labels."""
    df = pd.read_csv(path)
    df['path'] = df['path'].map(
        lambda p: re.sub(r'___crop(\d\d).*$', r'#\1', os.path.normpath(str(p))))
    df = df.set_index('path').sort_index()
    return pd.Series(df.to_numpy().argmax(axis=1), index=df.index)


def agreement(a: pd.Series, b: pd.Series) -> float:
    common = a.index.intersection(b.index)
    return float((a[common] == b[common]).mean()) if len(common) else float('nan')


def model_size(model: Path) -> int:
    import torch

    from classification import model_files
    _, info, _ = model_files.load_classifier(model, torch.device('cpu'))
    return info.image_size if info else 224


def export_once(model: Path, size: int, calibration: Path | None) -> tuple[float, float]:
    """Seconds of the one-time ONNX export, and of the int8 quantization (0 without
    calibration crops)."""
    import torch

    from classification import engines, model_files, quantize
    m, info, _ = model_files.load_classifier(model, torch.device('cpu'))
    t = time.perf_counter()
    onnx = engines.onnx_path(model, m, torch.zeros(1, 3, size, size),
                             {0: 'n', 2: 'h', 3: 'w'})
    export_s = time.perf_counter() - t
    if calibration is None:
        return export_s, 0.0
    t = time.perf_counter()
    cal = quantize.calibration_set(calibration)
    mean, std = model_files.normalisation(info)
    quantize.int8_model(onnx, quantize.int8_key(engines.file_sha256(model), cal, size, mean,
                                                std), cal, size, mean, std)
    return export_s, time.perf_counter() - t


def bench_engines(model: Path, crops: Path, work: Path, batch: int, workers: int,
                  repeats: int, calibration: Path | None) -> list[str]:
    size = model_size(model)
    export_s, int8_s = export_once(model, size, calibration)
    common = [str(model), str(crops), '', '--image-size', str(size), '--batch-size', str(batch),
              '--num-workers', str(workers)]
    runs: list[tuple[str, str, str, list[str]]] = [
        ('original', ORIGINAL, 'megadetector.classification.run_classifier', [])] + [
        (name, OURS, 'classification.run_classifier', flags) for name, flags in ENGINES]
    times: dict[str, list[float]] = {name: [] for name, *_ in runs}
    for _ in range(repeats):
        for name, python, module, flags in runs:
            args = list(common)
            args[2] = str(work / f'{model.parent.name}_{slug(name)}.csv')
            times[name].append(timed(python, module, *args, *flags))
    n = len(pd.read_csv(work / f'{model.parent.name}_original.csv'))
    ref = top1(work / f'{model.parent.name}_original.csv')
    rows = []
    for name, _python, _module, _flags in runs:
        out = work / f'{model.parent.name}_{slug(name)}.csv'
        best = min(times[name])
        rows.append(f'| {model.name} ({size} px) | {name} | {n} | {n / best:.1f} | '
                    f'{min(times["original"]) / best:.2f}x | {agreement(top1(out), ref):.2%} |')
    rows.append(f'| {model.name} | (one-time ONNX export) | | {export_s:.1f} s | | |')
    if calibration is not None:
        rows.append(f'| {model.name} | (one-time int8 quantization) | | {int8_s:.1f} s | | |')
    return rows


def bench_agreement(model: Path, crops: Path, work: Path) -> str:
    """Top-1 agreement of bf16 and int8 (OpenVINO) and of the other fp32 engines with
    PyTorch float32 on many distinct crops (not timed)."""
    tops = {}
    for name, flags in compared():
        out = work / f'agree_{model.parent.name}_{slug(name)}.csv'
        subprocess.run([OURS, '-m', 'classification.run_classifier', str(model), str(crops),
                        str(out), '--batch-size', '32', '--num-workers', '0', *flags],
                       check=True, cwd=REPO, capture_output=True)
        tops[name] = top1(out)
    ref = tops['torch fp32']
    cells = ' | '.join(f'{agreement(tops[n], ref):.2%}' for n, _ in compared()[1:])
    return f'| {model.name} | {len(ref)} | {cells} |'


def bench_route_agreement(model: Path, photos: Path, dets: Path, work: Path,
                          threshold: float) -> str:
    """Top-1 agreement of ours --from-photos with ours crop_detections +
    run_classifier (both PyTorch float32, then both with the default engine) on the
    same photos (not timed)."""
    tag = f'{model.parent.name}_{dets.stem}'
    crops = work / f'route_crops_{dets.stem}'
    if not crops.exists():
        subprocess.run([OURS, '-m', 'classification.crop_detections', str(dets), str(crops),
                        '--images-dir', str(photos), '--threshold', str(threshold),
                        '--square-crops', '--logdir', str(work)], check=True, cwd=REPO,
                       capture_output=True)
    cells = []
    for name, flags in (('torch fp32', ['--engine', 'torch', '--precision', 'fp32']),
                        ('auto', [])):
        tops = []
        for route, extra in (('two_step', [str(crops), '-d', str(dets)]),
                             ('photos', [str(photos), '--from-photos', '-d', str(dets),
                                         '--square-crops'])):
            out = work / f'route_{tag}_{route}_{slug(name)}.csv'
            subprocess.run([OURS, '-m', 'classification.run_classifier', str(model),
                            extra[0], str(out), *extra[1:], '-t', str(threshold),
                            '--batch-size', '32', '--num-workers', '0', *flags],
                           check=True, cwd=REPO, capture_output=True)
            tops.append(top1(out))
        cells.append(f'{agreement(tops[0], tops[1]):.2%}')
    return f'| {model.name} | {dets.name} | {len(tops[0])} | {" | ".join(cells)} |'


def archive_copy(work: Path, copies: int) -> tuple[Path, Path]:
    """The real photos copied ``copies`` times, and their detections to match."""
    photos = work / 'photos'
    det_path = work / 'detections.json'
    if det_path.exists():
        return photos, det_path
    doc = json.loads((REAL / 'md_v5a_detections.json').read_text())
    images = []
    for c in range(copies):
        for entry in doc['images']:
            src = REAL / 'images' / entry['file']
            name = f'copy{c:03d}/{entry["file"]}'
            (photos / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, photos / name)
            images.append({**entry, 'file': name})
    det_path.write_text(json.dumps({**doc, 'images': images}))
    return photos, det_path


def bench_photos(model: Path, work: Path, copies: int, batch: int, workers: int,
                 threshold: float) -> list[str]:
    photos, dets = archive_copy(work, copies)
    size = model_size(model)
    export_once(model, size, None)
    tag = model.parent.name
    crops = work / f'crops_original_{tag}'
    shutil.rmtree(crops, ignore_errors=True)
    common = ['--image-size', str(size), '--batch-size', str(batch), '--num-workers',
              str(workers)]
    t_crop = timed(ORIGINAL, 'megadetector.classification.crop_detections', str(dets),
                   str(crops), '--images-dir', str(photos), '--threshold', str(threshold),
                   '--square-crops', '--threads', '2', '--logdir', str(work))
    t_cls = timed(ORIGINAL, 'megadetector.classification.run_classifier', str(model),
                  str(crops), str(work / f'orig_{tag}.csv'), '-d', str(dets), *common)
    n = len(pd.read_csv(work / f'orig_{tag}.csv'))
    ref = top1(work / f'orig_{tag}.csv')
    rows = [f'| {model.name} | original crop_detections + run_classifier | {n} | '
            f'{t_crop + t_cls:.1f} ({t_crop:.1f} + {t_cls:.1f}) | {n / (t_crop + t_cls):.1f} '
            '| 1.00x | - |']
    for name, flags in [('ours --from-photos, auto engine', []),
                        ('ours --from-photos, openvino fp32',
                         ['--engine', 'openvino', '--precision', 'fp32']),
                        ('ours --from-photos, torch fp32',
                         ['--engine', 'torch', '--precision', 'fp32'])]:
        out = work / f'ours_{tag}_{slug(name)}.csv'
        t = timed(OURS, 'classification.run_classifier', str(model), str(photos), str(out),
                  '--from-photos', '-d', str(dets), '-t', str(threshold), '--square-crops',
                  *common, *flags)
        rows.append(f'| {model.name} | {name} | {len(pd.read_csv(out))} | {t:.1f} | '
                    f'{n / t:.1f} | {(t_crop + t_cls) / t:.2f}x | '
                    f'{agreement(top1(out), ref):.2%} |')
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', required=True, type=Path,
                        help='trained TorchScript classifiers (e.g. ResNet-18, EfficientNet-B0)')
    parser.add_argument('--work', default='bench/out/archive', type=Path)
    parser.add_argument('--copies', type=int, default=20, help='copies of the 15 real photos')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--num-workers', type=int, default=0)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--threshold', type=float, default=0.2)
    parser.add_argument('--skip-engines', action='store_true')
    parser.add_argument('--agreement-photos', type=Path, nargs=2, action='append',
                        metavar=('PHOTOS', 'DETECTIONS'), default=[],
                        help='photos and their detections for the route agreement table '
                             '(repeatable)')
    parser.add_argument('--only-agreement', action='store_true')
    parser.add_argument('--agreement-crops', type=Path, nargs='+', default=[],
                        help='folders of many distinct crops for the top-1 agreement table')
    parser.add_argument('--calibration-crops', type=Path,
                        help='also run OpenVINO int8, quantized on these crops')
    args = parser.parse_args()
    if args.calibration_crops:
        ENGINES.insert(-1, ('openvino int8', ['--engine', 'openvino', '--precision', 'int8',
                                              '--calibration-crops',
                                              str(args.calibration_crops)]))
    if not Path(ORIGINAL).exists():
        sys.exit('run bench/setup_original.sh first')
    if not REAL.exists():
        sys.exit(f'{REAL} not found')
    args.work.mkdir(parents=True, exist_ok=True)
    photos, dets = archive_copy(args.work, args.copies)
    crops = args.work / 'crops'
    if not crops.exists():
        subprocess.run([OURS, '-m', 'classification.crop_detections', str(dets), str(crops),
                        '--images-dir', str(photos), '--threshold', str(args.threshold),
                        '--square-crops', '--threads', '2', '--logdir', str(args.work)],
                       check=True, cwd=REPO, capture_output=True)
    if args.agreement_photos:
        print('\n### --from-photos vs crop_detections + run_classifier (ours both), '
              'top-1 agreement (not timed)\n')
        print('| model | detections | crops | torch fp32 | default engine |')
        print('|---|---|---|---|---|')
        for model in args.models:
            for photos_dir, dets in args.agreement_photos:
                print(bench_route_agreement(model, photos_dir, dets, args.work,
                                            args.threshold), flush=True)
    if args.only_agreement:
        return
    if not args.skip_engines:
        print(f'### run_classifier end to end ({sum(1 for _ in crops.rglob("*.jpg"))} crops of '
              f'the real photos x {args.copies}, batch {args.batch_size}, --num-workers '
              f'{args.num_workers})\n')
        print('| model | run | crops | crops/s | vs original | top-1 = original fp32 |')
        print('|---|---|---|---|---|---|')
        for model in args.models:
            for row in bench_engines(model, crops, args.work, args.batch_size,
                                     args.num_workers, args.repeats, args.calibration_crops):
                print(row, flush=True)
    for folder in args.agreement_crops:
        names = [n for n, _ in compared()[1:]]
        print(f'\n### top-1 agreement with PyTorch float32 on {folder} (not timed)\n')
        print('| model | crops | ' + ' | '.join(names) + ' |')
        print('|---' * (len(names) + 2) + '|')
        for model in args.models:
            print(bench_agreement(model, folder, args.work), flush=True)
    print(f'\n### photos -> classifications ({args.copies} x 15 real photos, threshold '
          f'{args.threshold}, square crops)\n')
    print('| model | run | crops | seconds | crops/s | vs original | top-1 = original |')
    print('|---|---|---|---|---|---|---|')
    for model in args.models:
        for row in bench_photos(model, args.work, args.copies, args.batch_size,
                                args.num_workers, args.threshold):
            print(row, flush=True)


if __name__ == '__main__':
    main()
