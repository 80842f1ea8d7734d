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
16-bit photos) are reported apart.

Ours runs once per --engines setting (``ENGINE[:PRECISION]``, run_detector_batch's
--engine / --precision; default ``torch:fp32 openvino:fp32 openvino:bf16 auto``),
each compared with the one MegaDetector run: one Markdown table per size, with
the parity verdict (at most 1 % of either side's detections unmatched; the
issue asks it of the engine ``auto`` picks, summarized at the end) and photos/s.
Before any timed run each setting runs once, untimed, on one photo (the
warm-up): this makes the ONNX export beside the model (any old one is removed
first, so that the one-time export is timed and reported apart) and shows what
each setting runs as (what ``auto`` picks, or that a model that cannot be
exported fell back to PyTorch), read from the run itself.

Timing: as bench/_timed_run.py (imports before the clock; model loading
included), best of --repeats, each run in a fresh process; the seconds each
program spends loading its model in that run (MegaDetector's load_detector,
our load_predictor) are measured too, and photos/s is also given without them.

--model x6 builds, instead of the stand-in, YOLOv5x6 (the yolov5 package's
models/hub/yolov5x6.yaml, nc=3: MDv5a's architecture and size, ~140 M
parameters), seeded random weights calibrated the same way on its first 3
photos at 1280, stored in half precision as MDv5a's .pt is (``md_x6.pt``,
``md_x6.torchscript`` in bench/out/detector_x6). It runs on the first
--max-photos (default 5) real photos at --sizes (default 1280): its main figure
is speed; its parity is shown too (calibrated at 1280 only, its confidences
saturate at 640: 300 boxes near 1.0 per photo, a parity of little meaning). A model is rebuilt only when its build
(model, photos, sizes, seed) changed (``build.json``; --rebuild forces it).

Examples:
    bash bench/setup_original.sh
    .venv/bin/python bench/bench_detector.py --sizes 1280 640
    .venv/bin/python bench/bench_detector.py --model x6 --max-photos 8

The same file, run by bench/.venv-original's Python as
``bench_detector.py build-model OUT PHOTO...``, builds the model;
``bench_detector.py timed-run MODULE ARGS...`` (either Python) times one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = REPO / 'bench' / '.venv-original' / 'bin' / 'python'
REAL = REPO.parent / 'shared' / 'data' / 'real_camera_traps' / 'images'
IOU_MIN, CONF_TOL = 0.98, 0.01
PARITY_MAX = 0.01                  # of either side's detections unmatched (the bound)
SPEED_TARGET = 4                   # ours (auto) vs MegaDetector photos/s, for the record
ENGINE_CHOICES = ('auto', 'torch', 'openvino', 'onnxruntime')
PRECISION_CHOICES = ('auto', 'fp32', 'bf16')
DEFAULT_ENGINES = ['torch:fp32', 'openvino:fp32', 'openvino:bf16', 'auto']
MODELS: dict[str, dict[str, Any]] = {
    'standin': {'stem': 'md_bench', 'folder': 'detector', 'batch': 8,
                'title': 'the small stand-in model (parity)'},
    'x6': {'stem': 'md_x6', 'folder': 'detector_x6', 'batch': 2,
           'title': 'YOLOv5x6, the size of MDv5a (speed)'},
}
X6_CALIBRATION_PHOTOS = 3          # x6: calibrated on the first 3 photos, at 1280
BUILD_VERSION = 2                  # build.json: a model built by another version is rebuilt

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

def _calibration_batches(photos: Sequence[str], sizes: Sequence[int], batch: int = 8
                         ) -> list[Any]:
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
        for i in range(0, len(arrays), batch):
            batches.append(torch.stack(arrays[i:i + batch]).float() / 255)
    return batches


def _network(model: str) -> Any:
    """The untrained YOLOv5 DetectionModel: the stand-in, or YOLOv5x6 with 3 classes
    (MDv5a's architecture, from the yolov5 package's models/hub/yolov5x6.yaml)."""
    from yolov5.models.yolo import DetectionModel
    if model == 'x6':
        import yolov5
        cfg = Path(yolov5.__file__).parent / 'models' / 'hub' / 'yolov5x6.yaml'
        return DetectionModel(str(cfg), ch=3, nc=3)
    return DetectionModel(json.loads(json.dumps(MODEL_CFG)), ch=3)


def build_model(out: Path, photos: Sequence[str], sizes: Sequence[int], seed: int = 0,
                model_kind: str = 'standin') -> None:
    """Writes <stem>.pt and <stem>.torchscript into ``out`` (MODELS[model_kind]).
    The x6 checkpoint is stored in half precision, as YOLOv5 (and MDv5a) store theirs;
    both programs load it as float32."""
    import copy

    import torch
    from yolov5.export import export_torchscript
    from yolov5.models.yolo import Detect

    stem = MODELS[model_kind]['stem']
    torch.manual_seed(seed)
    model = _network(model_kind)
    detect = model.model[-1]
    heads = list(detect.m)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d) and not any(mod is h for h in heads):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity='relu')
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None                  # cumulative average over the batches
    batches = _calibration_batches(photos, sizes, MODELS[model_kind]['batch'])
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
    seen.clear()
    model.names = {0: 'animal', 1: 'person', 2: 'vehicle'}
    out.mkdir(parents=True, exist_ok=True)
    pt = out / f'{stem}.pt'
    torch.save({'model': copy.deepcopy(model).half() if model_kind == 'x6' else model}, pt)
    del model

    # YOLOv5's export.py --include torchscript --dynamic, step by step (its own
    # attempt_load cannot read a local file with the pip package's downloader).
    # weights_only=False: this is the pickled YOLOv5 module saved just above by this
    # function (the format MegaDetector's .pt files have), never user input
    export = torch.load(pt, map_location='cpu', weights_only=False)['model']
    export = export.float().fuse().eval()
    for m in export.modules():
        if isinstance(m, Detect):
            m.inplace, m.dynamic, m.export = False, True, True
    im = torch.zeros(1, 3, 1280, 1280)
    with torch.no_grad():
        for _ in range(2):
            export(im)
        export_torchscript(export, im, pt, False)
    del export
    # the traced model gives the eager model's numbers at other shapes too
    traced = torch.jit.load(str(out / f'{stem}.torchscript'))
    eager = torch.load(pt, weights_only=False)['model'].float().fuse().eval()  # ours, above
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
         'theirs_unmatched', 'capped'), 0)
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
        stats['capped'] += max(len(dx), len(dy)) >= MAX_DET
    return stats


# ------------------------------------------------------------------------------ runs

THREADS: dict[str, str] = {}       # OMP_NUM_THREADS for both programs (--threads)
MAX_DET = 300                      # both programs keep at most 300 boxes per photo


def _instrument(module: str, record: dict[str, Any]) -> None:
    """Patches the program's model loader (and ours, its ONNX exporter) to record, in
    ``record``, the seconds spent loading the model ('load_seconds'); for ours also
    the engine and precision it was loaded with ('runs_as': 'torch:fp32 (fallback)'
    when ``--engine auto`` fell back to PyTorch) and each ONNX export made
    ('exports': seconds and file)."""
    import importlib
    import inspect
    import time
    record.update(load_seconds=0.0, runs_as=None, exports=[])
    if module.startswith('megadetector.'):
        owner, name = importlib.import_module('megadetector.detection.run_detector'), \
            'load_detector'
    else:
        owner, name = importlib.import_module('detection.detector'), 'load_predictor'
        engines: Any = importlib.import_module('classification.engines')
        export_onnx = engines.export_onnx

        def timed_export(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            path = export_onnx(*a, **k)
            record['exports'].append({'seconds': time.perf_counter() - t0, 'file': str(path)})
            return path
        engines.export_onnx = timed_export           # looked up by engines.onnx_path
    original = getattr(owner, name)
    signature = inspect.signature(original)

    def load(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            loaded = original(*a, **k)
        finally:
            record['load_seconds'] += time.perf_counter() - t0
        if name == 'load_predictor':
            import torch
            bound = signature.bind(*a, **k)
            bound.apply_defaults()
            engine, precision = bound.arguments['engine'], bound.arguments['precision']
            # an ONNX engine runs a function; falling back, the TorchScript module runs
            fell_back = engine != 'torch' and isinstance(getattr(loaded, 'module', None),
                                                         torch.nn.Module)
            record['runs_as'] = 'torch:fp32 (fallback)' if fell_back else f'{engine}:{precision}'
        return loaded
    setattr(owner, name, load)


def timed_run(module: str, args: Sequence[str]) -> None:
    """bench/_timed_run.py's measure (imports before the clock, model loading
    included), with ``_instrument``'s record; printed as JSON."""
    from _timed_run import run_timed
    record = run_timed(module, args, lambda r: _instrument(module, r))
    print(json.dumps(record), file=sys.__stdout__)


def timed(python: Path | str, module: str, *args: str) -> dict[str, Any]:
    """One run in a fresh process: {'seconds', 'load_seconds' (of them, loading the
    model), ours also 'runs_as' and 'exports'} (see ``_instrument``)."""
    proc = subprocess.run([str(python), __file__, 'timed-run', module, *args],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONPATH': '', **THREADS})
    if proc.returncode != 0:
        raise RuntimeError(f'{module} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r['seconds'])


def parse_engine(spec: str) -> tuple[str, str]:
    """'openvino:bf16' -> ('openvino', 'bf16'); 'auto' -> ('auto', 'auto')."""
    engine, _, precision = spec.partition(':')
    precision = precision or 'auto'
    if engine not in ENGINE_CHOICES or precision not in PRECISION_CHOICES:
        raise argparse.ArgumentTypeError(
            f'{spec!r}: expected ENGINE[:PRECISION], ENGINE one of {ENGINE_CHOICES}, '
            f'PRECISION one of {PRECISION_CHOICES}')
    return engine, precision


def _spec(spec: str) -> str:
    parse_engine(spec)
    return spec


def _ours_args(model: Path, images: Path, out: Path, spec: str, size: int) -> list[str]:
    engine, precision = parse_engine(spec)
    return [str(model), str(images), str(out), '--quiet', '--engine', engine,
            '--precision', precision, '--recursive', '--output_relative_filenames',
            '--image_size', str(size)]


def warm_up(model: Path, photo: Path, out: Path, specs: Sequence[str], size: int
            ) -> dict[str, dict[str, Any]]:
    """One untimed run of each setting on one photo, before any timed run: it makes the
    ONNX export beside the model where a setting needs one (timed, in 'exports'),
    and shows what each setting runs as, or why it is refused ('refused')."""
    done: dict[str, dict[str, Any]] = {}
    for spec in specs:
        try:
            done[spec] = timed(sys.executable, 'detection.run_detector_batch',
                               *_ours_args(model, photo, out, spec, size))
        except RuntimeError as e:
            lines = [x for x in str(e).strip().splitlines() if x.strip()]
            done[spec] = {'refused': lines[-1][:300] if lines else 'failed'}
    return done


def _linked(folder: Path, source: Path, files: Sequence[str]) -> Path:
    """``folder`` holding symbolic links to ``files`` of ``source`` (read in place)."""
    if folder.exists():
        shutil.rmtree(folder)
    for f in files:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).symlink_to((source / f).resolve())
    return folder


def _pct(part: int, whole: int) -> str:
    return f'{100 * part / whole:.2f}%' if whole else '-'


def _rate(n: int, seconds: float) -> str:
    return f'{n / seconds:.2f}' if seconds > 0 else '-'


def _ratio(ours: float, theirs: float) -> str:
    """Our speed relative to MegaDetector's from the two times of the same photos."""
    return f'{theirs / ours:.2f}x' if ours > 0 and theirs > 0 else '-'


def parity(s: dict[str, Any]) -> str:
    """The issue's requirement: at most 1 % of either side's detections unmatched."""
    if not s['ours'] and not s['theirs']:
        return 'n/a (no boxes)'
    ok = s['ours_unmatched'] <= PARITY_MAX * s['ours'] \
        and s['theirs_unmatched'] <= PARITY_MAX * s['theirs']
    return 'ok' if ok else 'FAIL'


def _said(entry: dict[str, Any]) -> str:
    if entry.get('failure'):
        return f'"{entry["failure"]}"'
    return f'{len(entry["detections"])} boxes'


def _build(work: Path, kind: str, photos: Sequence[str], sizes: Sequence[int], seed: int,
           rebuild: bool) -> float | None:
    """Builds the model in ``work`` with bench/.venv-original unless the same build is
    there already (build.json); returns its seconds, None when reused."""
    import time
    stem = MODELS[kind]['stem']
    record = work / 'build.json'
    wanted = {'model': kind, 'version': BUILD_VERSION, 'photos': list(photos),
              'sizes': list(sizes), 'seed': seed}
    files = [work / f'{stem}.pt', work / f'{stem}.torchscript']
    if not rebuild and all(f.is_file() for f in files) and record.is_file() \
            and json.loads(record.read_text()) == wanted:
        return None
    record.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([str(ORIGINAL), __file__, 'build-model', str(work), *photos,
                           '--model', kind, '--seed', str(seed),
                           '--sizes', *map(str, sizes)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, **THREADS})
    if proc.returncode != 0:
        sys.exit(f'building the model failed:\n{proc.stderr[-3000:]}')
    record.write_text(json.dumps(wanted))
    return time.perf_counter() - t0


def _log(t0: float, message: str) -> None:
    import time
    print(f'[{time.perf_counter() - t0:6.0f} s] {message}', file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    import time
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['build-model']:
        parser = argparse.ArgumentParser(prog='bench_detector.py build-model')
        parser.add_argument('out')
        parser.add_argument('photos', nargs='+')
        parser.add_argument('--model', choices=tuple(MODELS), default='standin')
        parser.add_argument('--sizes', type=int, nargs='+', default=[640, 1280])
        parser.add_argument('--seed', type=int, default=0)
        opts = parser.parse_args(argv[1:])
        build_model(Path(opts.out), opts.photos, opts.sizes, opts.seed, opts.model)
        return
    if argv[:1] == ['timed-run']:
        timed_run(argv[1], argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', choices=tuple(MODELS), default='standin',
                        help='standin: the small stand-in (parity); x6: YOLOv5x6, the size '
                             'of MDv5a (speed; default --sizes 1280 --max-photos 5)')
    parser.add_argument('--engines', type=_spec, nargs='+', default=DEFAULT_ENGINES,
                        metavar='ENGINE[:PRECISION]',
                        help=f'our --engine/--precision settings to run (default: '
                             f'{" ".join(DEFAULT_ENGINES)})')
    parser.add_argument('--work', help='default: bench/out/detector (standin), '
                                       'bench/out/detector_x6 (x6)')
    parser.add_argument('--sizes', type=int, nargs='+')
    parser.add_argument('--max-photos', type=int,
                        help='the first N photos of each set only (x6: of the real photos, '
                             'else of the generated ones)')
    parser.add_argument('--repeats', type=int, default=1, help='timed runs (best counts)')
    parser.add_argument('--threads', type=int,
                        help='OMP_NUM_THREADS for both programs (default: torch\'s choice)')
    parser.add_argument('--rebuild', action='store_true',
                        help='build the model even if the same build is in --work')
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    kind = args.model
    sizes = args.sizes or ([1280] if kind == 'x6' else [1280, 640])
    max_photos = args.max_photos or (5 if kind == 'x6' else None)
    if args.threads:
        THREADS['OMP_NUM_THREADS'] = str(args.threads)
    if not ORIGINAL.exists():
        sys.exit('run bench/setup_original.sh first')
    work = Path(args.work or REPO / 'bench' / 'out' / MODELS[kind]['folder']).resolve()
    stem = MODELS[kind]['stem']

    # the photos: (label, folder, files compared)
    generated = work / 'generated'
    kinds = make_photos(generated)
    same = [k for k, v in kinds.items() if v == 'same']
    real = sorted(p.name for p in REAL.iterdir() if p.is_file()) if REAL.is_dir() else []
    sets: list[tuple[str, Path, list[str]]] = []
    if real:                           # read in place, never copied
        sets.append(('real', REAL, real))
    if kind == 'standin' or not real:
        sets.append(('generated', generated, same))
    if kind == 'x6':                   # a few photos are enough to spread the head's logits
        calibration = [str(sets[0][1] / f) for f in sets[0][2][:X6_CALIBRATION_PHOTOS]]
        build_sizes = [1280]           # whatever --sizes: one build serves every run
    else:                              # every photo (as before --max-photos existed)
        calibration = [str(generated / k) for k in same] + [str(REAL / f) for f in real]
        build_sizes = [640, 1280]
    if max_photos:
        sets = [(label, _linked(work / f'{label}_first{max_photos}', folder,
                                files[:max_photos]), files[:max_photos])
                for label, folder, files in sets]
    _log(t_start, f'building the {kind} model in {work} (or reusing it)')
    built = _build(work, kind, calibration, build_sizes, 0, args.rebuild)
    model_ts, model_pt = work / f'{stem}.torchscript', work / f'{stem}.pt'

    # the ONNX export, made before any timed run (and made anew, to time it)
    (work / f'{stem}.onnx').unlink(missing_ok=True)
    first = sets[0][1] / sets[0][2][0]
    _log(t_start, f'warm-up: each setting on {first.name} at {sizes[0]} ({" ".join(args.engines)})')
    warm = warm_up(model_ts, first, work / 'warmup.json', list(dict.fromkeys(args.engines)),
                   sizes[0])
    specs = [s for s in warm if 'refused' not in warm[s]]

    print(f'## run_detector_batch vs MegaDetector 10.0.28: {MODELS[kind]["title"]}\n')
    print(f'Match: same category, IoU >= {IOU_MIN}, confidence within {CONF_TOL}; parity '
          f'"ok": at most {PARITY_MAX:.0%} of either side\'s detections unmatched.\n')
    print(f'Model: {model_ts.name} / {model_pt.name} in {work}'
          + (f' (built in {built:.0f} s)' if built is not None else ' (reused)')
          + f'. Warm-up (untimed), each setting on one photo at {sizes[0]}:')
    for spec, w in warm.items():
        if 'refused' in w:
            print(f'- {spec}: refused: {w["refused"]}')
            continue
        made = '; '.join(f'the one-time ONNX export took {e["seconds"]:.1f} s '
                         f'({Path(e["file"]).name})' for e in w['exports'])
        print(f'- {spec}: runs as {w["runs_as"]}; model load {w["load_seconds"]:.1f} s'
              + (f', of which {made}' if made else ''))
    if not any(w.get('exports') for w in warm.values()) and any(
            (w.get('runs_as') or 'torch').split(':')[0] != 'torch' for w in warm.values()):
        print('- no ONNX export was made: an export of this very model was found in the '
              'cache folder (classification.engines.cache_dir)')
    print()

    header = ('| ours: engine (runs as) | photos | identical photos | matched (of ours / MD) | '
              'ours unmatched | MD unmatched | parity | ours photos/s | MD photos/s | '
              'ours / MD | ours photos/s excl. load | MD photos/s excl. load | '
              'ours / MD excl. load |')
    notes: list[str] = []
    summary: list[str] = []
    for size in sizes:
        print(f'### {size} px\n')
        print(header)
        print('|' + '---|' * header.count(' | ') + '---|')
        for label, folder, files in sets:
            md_json = work / f'md_{label}_{size}.json'
            _log(t_start, f'{size} px, {label}: MegaDetector')
            t_md = best([timed(ORIGINAL, 'megadetector.detection.run_detector_batch',
                               str(model_pt), str(folder), str(md_json), '--recursive',
                               '--output_relative_filenames', '--image_size', str(size))
                         for _ in range(args.repeats)])
            md = json.loads(md_json.read_text())
            b = {e['file']: e for e in md['images']}
            for spec in specs:
                engine, precision = parse_engine(spec)
                ours_json = work / f'ours_{engine}-{precision}_{label}_{size}.json'
                _log(t_start, f'{size} px, {label}: ours {spec}')
                try:
                    t_ours = best([timed(sys.executable, 'detection.run_detector_batch',
                                         *_ours_args(model_ts, folder, ours_json, spec, size))
                                   for _ in range(args.repeats)])
                except RuntimeError as e:
                    print(f'| {spec} | {label} | failed: '
                          f'{str(e).strip().splitlines()[-1][:200]} |' + ' |' * 10, flush=True)
                    continue
                if t_ours['exports']:
                    notes.append(f'{size} {label} {spec}: an ONNX export was made in the timed '
                                 f'run ({t_ours["exports"][0]["seconds"]:.1f} s, counted)')
                ours = json.loads(ours_json.read_text())
                n = len(ours['images'])
                s = compare(ours, md, files)
                t, t_load = t_ours['seconds'], t_ours['seconds'] - t_ours['load_seconds']
                m, m_load = t_md['seconds'], t_md['seconds'] - t_md['load_seconds']
                capped = f' ({s["capped"]} at {MAX_DET} boxes)' if s['capped'] else ''
                row = (f'| {spec} ({t_ours["runs_as"]}) | {label} {s["photos"]}{capped} | '
                       f'{s["identical_photos"]} | {s["matched"]} '
                       f'({_pct(s["matched"], s["ours"])} / {_pct(s["matched"], s["theirs"])}) | '
                       f'{s["ours_unmatched"]} of {s["ours"]} '
                       f'({_pct(s["ours_unmatched"], s["ours"])}) | '
                       f'{s["theirs_unmatched"]} of {s["theirs"]} '
                       f'({_pct(s["theirs_unmatched"], s["theirs"])}) | {parity(s)} | '
                       f'{_rate(n, t)} | {_rate(n, m)} | {_ratio(t, m)} | '
                       f'{_rate(n, t_load)} | {_rate(n, m_load)} | {_ratio(t_load, m_load)} |')
                print(row, flush=True)
                if s['failures_differ']:
                    notes.append(f'{size} {label} {spec}: failures differ for '
                                 f'{s["failures_differ"]}')
                if spec == 'auto':
                    summary.append(
                        f'- {size} px, {label}: auto runs as {t_ours["runs_as"]}: parity '
                        f'{parity(s)}; {_ratio(t, m)} MegaDetector\'s photos/s '
                        f'({_ratio(t_load, m_load)} excluding model loading; target for the '
                        f'record >= {SPEED_TARGET}x)')
                if label != 'generated' or spec != (('auto' in specs and 'auto') or specs[0]):
                    continue
                a = {e['file']: e for e in ours['images']}
                for f in sorted(k for k, v in kinds.items() if v == 'differs' and k in a):
                    same_boxes = a[f].get('detections') == b[f].get('detections')
                    notes.append(f'{size} {f} ({spec}): ours {_said(a[f])}, MegaDetector '
                                 f'{_said(b[f])}{" (identical)" if same_boxes else ""}')
        print()
    if summary:
        print('The engine auto picks:\n')
        print('\n'.join(summary) + '\n')
    if notes:
        print('Notes: where we differ on purpose (generated photos), failures that differ:\n')
        print('\n'.join(f'- {note}' for note in notes) + '\n')
    print(f'photos/s: every photo of the set (the generated set includes the ones that '
          f'differ and a non-image), model loading included, imports excluded; "excl. load": '
          f'less the seconds each program spent loading its model in that run (ours: the '
          f'TorchScript file, or the ONNX file compiled by the engine; the ONNX export was '
          f'made in the warm-up); best of {args.repeats}; {os.cpu_count()} CPUs, '
          f'OMP_NUM_THREADS: {args.threads or "default"} (OpenVINO uses its own threads). '
          f'"at {MAX_DET} boxes": photos where either side kept the most boxes a photo can '
          f'have (the last ones kept depend on tiny confidence differences). '
          f'Total {time.perf_counter() - t_start:.0f} s.')


if __name__ == '__main__':
    main()
