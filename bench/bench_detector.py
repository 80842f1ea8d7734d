"""run_detector_batch: this project (TorchScript) vs MegaDetector 10.0.28 (.pt), same model.

Without MegaDetector's weights, a small YOLOv5 P6 network (stride 64, 3
classes, Conv / C3 / SPPF / Upsample / Concat / Detect, seeded random weights)
stands in for MDv5a. It is built in bench/.venv-original (bench/setup_original.sh)
with the ``yolov5`` package, its batch-norm statistics and detection head
calibrated on the benchmark's photos so that confidences spread over (0, 1),
and saved twice: ``md_bench.pt`` ({'model': module}, what MegaDetector's
PTDetector loads) and ``md_bench.torchscript``, traced as YOLOv5's
``export.py --include torchscript --dynamic`` does (fused, Detect.dynamic and
Detect.export set, its config.txt with the stride).

Both programs then run on the same photos: the real ones in
../shared/data/real_camera_traps/images (when present) and generated ones
(odd sizes, EXIF orientations 3/6/8, a truncated JPEG, grayscale, progressive,
PNG with and without alpha, a non-image), at each --sizes. A detection is
matched by one of the other side with the same category, IoU >= 0.98 and
confidences within 0.01. Photos where we differ from MegaDetector on purpose
(mirrored EXIF orientations, grayscale with an orientation, CMYK, palette and
16-bit photos) are reported apart. Timing: bench/_timed_run.py (imports before
the clock; model loading included), best of --repeats.

Example:
    bash bench/setup_original.sh
    .venv/bin/python bench/bench_detector.py --sizes 1280 640

The same file, run by bench/.venv-original's Python as
``bench_detector.py build-model OUT PHOTO...``, builds the model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = REPO / 'bench' / '.venv-original' / 'bin' / 'python'
REAL = REPO.parent / 'shared' / 'data' / 'real_camera_traps' / 'images'
IOU_MIN, CONF_TOL = 0.98, 0.01

# the stand-in for MDv5a (yolov5x6): the same building blocks and strides, shallow
MODEL_CFG: dict[str, Any] = {
    'nc': 3, 'depth_multiple': 1.0, 'width_multiple': 1.0,
    'anchors': [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137],
                [140, 301, 303, 264, 238, 542], [436, 615, 739, 380, 925, 792]],
    'backbone': [[-1, 1, 'Conv', [16, 6, 2, 2]],       # 0 P1/2
                 [-1, 1, 'Conv', [32, 3, 2]],          # 1 P2/4
                 [-1, 1, 'C3', [32]],                  # 2
                 [-1, 1, 'Conv', [48, 3, 2]],          # 3 P3/8
                 [-1, 1, 'Conv', [64, 3, 2]],          # 4 P4/16
                 [-1, 1, 'Conv', [96, 3, 2]],          # 5 P5/32
                 [-1, 1, 'Conv', [128, 3, 2]],         # 6 P6/64
                 [-1, 1, 'SPPF', [128, 5]]],           # 7
    'head': [[-1, 1, 'Conv', [96, 1, 1]],              # 8
             [-1, 1, 'nn.Upsample', [None, 2, 'nearest']],
             [[-1, 5], 1, 'Concat', [1]],              # 10 (P5)
             [-1, 1, 'C3', [96, False]],               # 11
             [[3, 4, 11, 7], 1, 'Detect', ['nc', 'anchors']]],
}
# per output row of each anchor (x, y, w, h, objectness, 3 classes): the logits'
# median and half the 16-84 % spread after calibration
HEAD_CENTRE = [0.0, 0.0, 0.0, 0.0, -19.0, 0.0, 0.0, 0.0]
HEAD_SPREAD = [1.0, 1.0, 0.5, 0.5, 1.5, 2.0, 2.0, 2.0]


# ------------------------------------------------- the model (bench/.venv-original only)

def _calibration_batches(photos: Sequence[str], sizes: Sequence[int]) -> list[Any]:
    """The photos at each size, resized as the detectors do (OpenCV INTER_LINEAR, no
    antialiasing: large photos scaled down keep their fine texture)."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image
    batches = []
    for size in sizes:
        h = max(64, size * 3 // 4 // 64 * 64)
        arrays = []
        for path in photos:
            try:
                with Image.open(path) as img:
                    im = np.asarray(img.convert('RGB'))
            except Exception:                              # noqa: BLE001 - not a photo
                continue
            r = min(size / im.shape[1], h / im.shape[0])
            im = cv2.resize(im, (max(1, round(im.shape[1] * r)), max(1, round(im.shape[0] * r))),
                            interpolation=cv2.INTER_LINEAR)
            a = np.full((h, size, 3), 114, np.uint8)
            a[:im.shape[0], :im.shape[1]] = im
            arrays.append(torch.from_numpy(a.transpose(2, 0, 1).copy()))
        for i in range(0, len(arrays), 8):
            batches.append(torch.stack(arrays[i:i + 8]).float() / 255)
    return batches


def build_model(out: Path, photos: Sequence[str], sizes: Sequence[int], seed: int = 0) -> None:
    """Writes md_bench.pt and md_bench.torchscript into ``out``."""
    import torch
    from yolov5.export import export_torchscript
    from yolov5.models.yolo import Detect, DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(json.loads(json.dumps(MODEL_CFG)), ch=3)
    detect = model.model[-1]
    heads = list(detect.m)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d) and not any(mod is h for h in heads):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity='relu')
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None                  # cumulative average over the batches
    batches = _calibration_batches(photos, sizes)
    model.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.03
    model.eval()
    # the head's inputs: whole-photo differences (brightness, colour) are projected
    # out of its weights so that every photo gets some boxes, then each output row
    # is scaled and shifted to HEAD_SPREAD / HEAD_CENTRE over the photos
    seen: dict[int, list[Any]] = {i: [] for i in range(len(heads))}
    hooks = [h.register_forward_hook(
        lambda _m, inp, _o, i=i: seen[i].append(inp[0].detach())) for i, h in enumerate(heads)]
    with torch.no_grad():
        for b in batches:
            model(b)
    for hook in hooks:
        hook.remove()
    centre, spread = torch.tensor(HEAD_CENTRE), torch.tensor(HEAD_SPREAD)
    na, no = detect.na, detect.no
    with torch.no_grad():
        for i, conv in enumerate(heads):
            means = torch.cat([t.mean(dim=(2, 3)) for t in seen[i]])
            _, _, v = torch.linalg.svd(means - means.mean(0), full_matrices=False)
            basis = v[:min(8, v.shape[0] - 1, v.shape[1] // 2)].T            # C x k
            w = conv.weight.view(conv.weight.shape[0], -1)
            w.sub_(w @ basis @ basis.T)
            logits = torch.cat([conv(t).view(t.shape[0], na, no, -1).permute(1, 2, 0, 3)
                                .reshape(na, no, -1) for t in seen[i]], -1)
            sample = logits[..., ::max(1, logits.shape[-1] // 200_000)]
            q = torch.quantile(sample, torch.tensor([0.16, 0.5, 0.84]), dim=-1)
            scale = spread / (q[2] - q[0]).clamp_min(1e-6) * 2
            conv.weight.view(na, no, -1).mul_(scale[..., None])
            bias = conv.bias.view(na, no)
            bias.copy_((bias - q[1]) * scale + centre)
    model.names = {0: 'animal', 1: 'person', 2: 'vehicle'}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({'model': model}, out / 'md_bench.pt')

    # YOLOv5's export.py --include torchscript --dynamic, step by step (its own
    # attempt_load cannot read a local file with the pip package's downloader)
    export = torch.load(out / 'md_bench.pt', map_location='cpu', weights_only=False)['model']
    export = export.float().fuse().eval()
    for m in export.modules():
        if isinstance(m, Detect):
            m.inplace, m.dynamic, m.export = False, True, True
    im = torch.zeros(1, 3, 1280, 1280)
    with torch.no_grad():
        for _ in range(2):
            export(im)
        export_torchscript(export, im, out / 'md_bench.pt', False)
    # the traced model gives the eager model's numbers at other shapes too
    traced = torch.jit.load(str(out / 'md_bench.torchscript'))
    eager = torch.load(out / 'md_bench.pt', weights_only=False)['model'].float().fuse().eval()
    g = torch.Generator().manual_seed(seed)
    for shape in ((768, 1280), (1280, 704), (384, 640)):
        x = torch.rand(1, 3, *shape, generator=g)
        with torch.no_grad():
            if not torch.equal(traced(x)[0], eager(x)[0]):
                raise SystemExit(f'TorchScript and eager outputs differ at {shape}')
    print(f'model written to {out}')


# ---------------------------------------------------------------- photos (project .venv)

def _texture(rng: Any, w: int, h: int) -> Any:
    """A photo-like H x W x 3 uint8 picture: smooth shading at several scales, sharp-edged
    shapes (animals, trunks, a caption bar) and sensor noise."""
    import numpy as np
    from PIL import Image, ImageDraw
    acc = np.zeros((h, w, 3), np.float32)
    for k in range(1, 7):
        n = 2 ** k
        small = rng.normal(size=(n, max(1, n * w // h), 3)).astype(np.float32)
        layers = [np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.Resampling.BILINEAR))
                  for c in range(3)]
        acc += np.stack(layers, -1) / k
    acc = (acc - acc.min()) / (np.ptp(acc) + 1e-6) * 200 + 20
    img = Image.fromarray(acc.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(10, 40))):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1 = x0 + rng.integers(2, max(3, w // 3))
        y1 = y0 + rng.integers(2, max(3, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    draw.rectangle((0, h - max(2, h // 25), w, h), fill=(0, 0, 0))
    for x in range(0, w, max(4, w // 60)):
        draw.text((x, h - max(2, h // 25)), str(int(rng.integers(0, 10))), fill=(255, 255, 255))
    out = np.asarray(img, np.float32) + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def _stored(img: Any, orientation: int) -> Any:
    """The stored picture whose EXIF ``orientation`` makes ``img`` upright."""
    from PIL import Image
    t = Image.Transpose
    inverse = {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
               6: t.ROTATE_90, 7: t.TRANSVERSE, 8: t.ROTATE_270}
    return img.transpose(inverse[orientation])


def _exif(orientation: int) -> bytes:
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def make_photos(folder: Path, seed: int = 0) -> dict[str, str]:
    """Generated photos in ``folder``: {relative name: 'same'} where both programs
    should agree, 'differs' where we differ from MegaDetector on purpose."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    (folder / 'sub').mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}

    def rgb(w: int, h: int) -> Image.Image:
        return Image.fromarray(_texture(rng, w, h))

    for name, (w, h) in {'odd_1001x333.jpg': (1001, 333), 'odd_333x1001.jpg': (333, 1001),
                         'tiny_97x61.jpg': (97, 61), 'big_3264x2448.jpg': (3264, 2448),
                         'wide_1920x1080.jpg': (1920, 1080),
                         'sub/nested_800x600.jpg': (800, 600)}.items():
        rgb(w, h).save(folder / name, quality=90)
        kinds[name] = 'same'
    rgb(1024, 768).save(folder / 'progressive.jpg', quality=85, progressive=True)
    kinds['progressive.jpg'] = 'same'
    for o in (3, 6, 8):
        _stored(rgb(1200, 900), o).save(folder / f'exif{o}.jpg', quality=90, exif=_exif(o))
        kinds[f'exif{o}.jpg'] = 'same'
    _stored(rgb(900, 700), 6).save(folder / 'exif6.png', exif=_exif(6))
    kinds['exif6.png'] = 'same'
    full = folder / 'full.tmp.jpg'
    rgb(1280, 960).save(full, quality=90)
    data = full.read_bytes()
    full.unlink()
    (folder / 'truncated.jpg').write_bytes(data[:len(data) * 55 // 100])
    kinds['truncated.jpg'] = 'same'
    rgb(1000, 750).convert('L').save(folder / 'gray.jpg', quality=90)
    kinds['gray.jpg'] = 'same'
    rgb(700, 500).save(folder / 'photo.png')
    kinds['photo.png'] = 'same'
    rgba = rgb(640, 480).convert('RGBA')
    rgba.putalpha(Image.fromarray(_texture(rng, 640, 480)[..., 0]))
    rgba.save(folder / 'alpha.png')
    kinds['alpha.png'] = 'same'
    (folder / 'broken.jpg').write_bytes(b'not a photo at all')
    kinds['broken.jpg'] = 'same'
    # where MegaDetector is wrong and we differ on purpose
    for o in (2, 5):
        _stored(rgb(1100, 800), o).save(folder / f'mirrored{o}.jpg', quality=90, exif=_exif(o))
        kinds[f'mirrored{o}.jpg'] = 'differs'
    _stored(rgb(1000, 700).convert('L'), 6).save(folder / 'gray_exif6.jpg', quality=90,
                                                 exif=_exif(6))
    kinds['gray_exif6.jpg'] = 'differs'
    rgb(900, 600).convert('CMYK').save(folder / 'cmyk.jpg', quality=90)
    kinds['cmyk.jpg'] = 'differs'
    rgb(800, 600).quantize(64).save(folder / 'palette.png')
    kinds['palette.png'] = 'differs'
    gray16 = (np.asarray(rgb(640, 480).convert('L'), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / 'gray16.png')
    kinds['gray16.png'] = 'differs'
    return kinds


# ------------------------------------------------------------------------- comparison

def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, w, h] boxes; identical boxes (even empty ones) count 1."""
    if list(a) == list(b):
        return 1.0
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_counts(ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]
                 ) -> tuple[int, int, int]:
    """(matched pairs, ours unmatched, theirs unmatched), greedy by confidence."""
    used = [False] * len(theirs)
    matched = 0
    for d in sorted(ours, key=lambda d: -d['conf']):
        best, best_iou = -1, IOU_MIN
        for j, t in enumerate(theirs):
            if used[j] or t['category'] != d['category'] \
                    or abs(t['conf'] - d['conf']) > CONF_TOL + 1e-9:
                continue
            v = iou(d['bbox'], t['bbox'])
            if v >= best_iou:
                best, best_iou = j, v
        if best >= 0:
            used[best] = True
            matched += 1
    return matched, len(ours) - matched, len(theirs) - matched


def compare(ours: dict[str, Any], theirs: dict[str, Any], files: Sequence[str]
            ) -> dict[str, Any]:
    """Match statistics over ``files`` of two batch documents."""
    a = {e['file']: e for e in ours['images']}
    b = {e['file']: e for e in theirs['images']}
    stats: dict[str, Any] = dict.fromkeys(
        ('photos', 'identical_photos', 'ours', 'theirs', 'matched', 'ours_unmatched',
         'theirs_unmatched'), 0)
    stats['failures_differ'] = []
    for f in files:
        x, y = a[f], b[f]
        stats['photos'] += 1
        stats['identical_photos'] += x.get('detections') == y.get('detections') \
            and x.get('failure') == y.get('failure')
        if (x.get('failure') is None) != (y.get('failure') is None):
            stats['failures_differ'].append(f)
        dx, dy = x.get('detections') or [], y.get('detections') or []
        m, ux, uy = match_counts(dx, dy)
        stats['ours'] += len(dx)
        stats['theirs'] += len(dy)
        stats['matched'] += m
        stats['ours_unmatched'] += ux
        stats['theirs_unmatched'] += uy
    return stats


# ------------------------------------------------------------------------------ runs

THREADS: dict[str, str] = {}       # OMP_NUM_THREADS for both programs (--threads)


def timed(python: Path | str, module: str, *args: str) -> float:
    proc = subprocess.run([str(python), str(REPO / 'bench' / '_timed_run.py'), module, *args],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONPATH': '', **THREADS})
    if proc.returncode != 0:
        raise RuntimeError(f'{module} failed:\n{proc.stderr[-3000:]}')
    return float(json.loads(proc.stdout.strip().splitlines()[-1])['seconds'])


def run_both(work: Path, images: Path, label: str, size: int, repeats: int
             ) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    """(our document, MegaDetector's, our seconds, its seconds) for a folder."""
    common = ['--recursive', '--output_relative_filenames', '--image_size', str(size)]
    ours_json, md_json = work / f'ours_{label}_{size}.json', work / f'md_{label}_{size}.json'
    t_ours = min(timed(sys.executable, 'detection.run_detector_batch',
                       str(work / 'md_bench.torchscript'), str(images), str(ours_json),
                       '--quiet', *common) for _ in range(repeats))
    t_md = min(timed(ORIGINAL, 'megadetector.detection.run_detector_batch',
                     str(work / 'md_bench.pt'), str(images), str(md_json), *common)
               for _ in range(repeats))
    return (json.loads(ours_json.read_text()), json.loads(md_json.read_text()), t_ours, t_md)


def _pct(part: int, whole: int) -> str:
    return f'{100 * part / whole:.2f}%' if whole else '-'


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['build-model']:
        parser = argparse.ArgumentParser(prog='bench_detector.py build-model')
        parser.add_argument('out')
        parser.add_argument('photos', nargs='+')
        parser.add_argument('--sizes', type=int, nargs='+', default=[640, 1280])
        parser.add_argument('--seed', type=int, default=0)
        opts = parser.parse_args(argv[1:])
        build_model(Path(opts.out), opts.photos, opts.sizes, opts.seed)
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work', default='bench/out/detector')
    parser.add_argument('--sizes', type=int, nargs='+', default=[1280, 640])
    parser.add_argument('--repeats', type=int, default=1, help='timed runs (best counts)')
    parser.add_argument('--threads', type=int,
                        help='OMP_NUM_THREADS for both programs (default: torch\'s choice)')
    args = parser.parse_args(argv)
    if args.threads:
        THREADS['OMP_NUM_THREADS'] = str(args.threads)
    if not ORIGINAL.exists():
        sys.exit('run bench/setup_original.sh first')
    work = Path(args.work).resolve()
    generated = work / 'generated'
    kinds = make_photos(generated)
    sets = [('generated', generated, [k for k, v in kinds.items() if v == 'same'])]
    calibration = [str(generated / k) for k, v in kinds.items() if v == 'same']
    if REAL.is_dir():                  # read in place, never copied
        real = sorted(p.name for p in REAL.iterdir() if p.is_file())
        sets.insert(0, ('real', REAL, real))
        calibration += [str(REAL / f) for f in real]
    proc = subprocess.run([str(ORIGINAL), __file__, 'build-model', str(work), *calibration],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f'building the model failed:\n{proc.stderr[-3000:]}')
    print(f'### run_detector_batch vs MegaDetector 10.0.28 (match: same category, '
          f'IoU >= {IOU_MIN}, confidence within {CONF_TOL})\n')
    print('| size | photos | identical photos | ours boxes | MD boxes | ours unmatched | '
          'MD unmatched | ours photos/s | MD photos/s |')
    print('|---|---|---|---|---|---|---|---|---|')
    notes = []
    for size in args.sizes:
        for label, folder, files in sets:
            ours, md, t_ours, t_md = run_both(work, folder, label, size, args.repeats)
            n = len(ours['images'])
            s = compare(ours, md, files)
            print(f'| {size} | {label} {s["photos"]} | {s["identical_photos"]} | {s["ours"]} | '
                  f'{s["theirs"]} | {s["ours_unmatched"]} ({_pct(s["ours_unmatched"], s["ours"])})'
                  f' | {s["theirs_unmatched"]} ({_pct(s["theirs_unmatched"], s["theirs"])}) | '
                  f'{n / t_ours:.2f} | {n / t_md:.2f} |')
            if s['failures_differ']:
                notes.append(f'{size} {label}: failures differ for {s["failures_differ"]}')
            if label != 'generated':
                continue
            a = {e['file']: e for e in ours['images']}
            b = {e['file']: e for e in md['images']}
            for f in sorted(k for k, v in kinds.items() if v == 'differs'):
                same = a[f].get('detections') == b[f].get('detections')
                notes.append(f'{size} {f}: ours {_said(a[f])}, MegaDetector {_said(b[f])}'
                             f'{" (identical)" if same else ""}')
    print('\nWhere we differ on purpose (generated photos):\n')
    for note in notes:
        print(f'- {note}')
    print(f'\nphotos/s: every photo of the set (the generated set includes the ones that '
          f'differ and a non-image), model loading included, imports excluded; best of '
          f'{args.repeats}; {os.cpu_count()} CPUs shared, torch threads: '
          f'{args.threads or "default"}.')


def _said(entry: dict[str, Any]) -> str:
    if entry.get('failure'):
        return f'"{entry["failure"]}"'
    return f'{len(entry["detections"])} boxes'


if __name__ == '__main__':
    main()
