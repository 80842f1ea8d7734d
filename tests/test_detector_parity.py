"""detection/detector.py against MegaDetector 10.0.28: letterbox geometry by hand, the
pieces that MegaDetector's package has without YOLOv5 (NMS, truncation, photo
loading), and, where bench/.venv-original exists, both run_detector_batch programs
on the same photos with the same (generated) YOLOv5 model."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from detection import detector as md
from tests.conftest import REAL_PHOTOS, REPO, unmatched

ORIGINAL = REPO / 'bench' / '.venv-original' / 'bin' / 'python'


def _bench() -> ModuleType:
    """bench/bench_detector.py (the model builder, photo generator and matching)."""
    spec = importlib.util.spec_from_file_location('bench_detector',
                                                  REPO / 'bench' / 'bench_detector.py')
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- letterbox geometry

@pytest.mark.parametrize('w, h, size, stride, resized, pads', [
    # landscape: 320 x 240, then 16 rows of padding split 8 / 8
    (640, 480, 320, 64, (320, 240), (0, 8, 0, 8)),
    # 1001 x 333 at 1280: gain 1280/1001, height round(425.81) = 426, 854 % 64 = 22
    (1001, 333, 1280, 64, (1280, 426), (0, 11, 0, 11)),
    (333, 1001, 1280, 64, (426, 1280), (11, 0, 11, 0)),
    # scaled up: 97 x 61 -> 640 x 402, 238 % 64 = 46
    (97, 61, 640, 64, (640, 402), (0, 23, 0, 23)),
    # an odd padding: the extra row goes to the bottom (961 rows, 319 % 64 = 63)
    (1000, 751, 1280, 64, (1280, 961), (0, 31, 0, 32)),
    (1920, 1080, 1280, 64, (1280, 720), (0, 24, 0, 24)),
    (4000, 3000, 1280, 64, (1280, 960), (0, 0, 0, 0)),
    (500, 500, 640, 64, (640, 640), (0, 0, 0, 0)),
    # the stride decides the rectangle: 290 spare rows are 2 (32) or 34 (64) of padding
    (640, 350, 640, 32, (640, 350), (0, 1, 0, 1)),
    (640, 350, 640, 64, (640, 350), (0, 17, 0, 17)),
])
def test_letterbox_geometry(w, h, size, stride, resized, pads):
    box = md.letterbox_geometry(w, h, size, stride)
    assert box.resized == resized
    assert (box.left, box.top, box.right, box.bottom) == pads
    in_w, in_h = box.input_size
    assert (in_w, in_h) == (resized[0] + pads[0] + pads[2], resized[1] + pads[1] + pads[3])
    assert in_w % stride == 0 and in_h % stride == 0
    assert max(in_w, in_h) == size                     # the long side fits exactly


@pytest.fixture(scope='module')
def noisy_photo() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)


def test_letterbox_pixels(noisy_photo):
    """OpenCV INTER_LINEAR resize, grey 114 border, / 255 in float32."""
    box = md.letterbox_geometry(500, 300, 256, 64)
    assert box.resized == (256, 154) and box.input_size == (256, 192)
    x = md.letterbox(noisy_photo, box)
    assert x.shape == (1, 3, 192, 256) and x.dtype == torch.float32
    ref = cv2.resize(noisy_photo, (256, 154), interpolation=cv2.INTER_LINEAR)
    inside = x[0, :, box.top:box.top + 154].permute(1, 2, 0).numpy()
    assert np.array_equal(inside, ref.astype(np.float32) / np.float32(255.0))
    grey = np.float32(114) / np.float32(255)
    assert (x[0, :, :box.top] == grey).all() and (x[0, :, box.top + 154:] == grey).all()
    # no resize when the photo already fits, only padding
    small = noisy_photo[:256, :256]
    x = md.letterbox(small, md.letterbox_geometry(256, 256, 256, 64))
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(),
                          small.astype(np.float32) / np.float32(255.0))


def test_boxes_map_back_as_yolov5():
    """scale_boxes with the gain of the padded size, clipped, rounded to pixels, then
    truncated; lowest-confidence-first ties, highest confidence first in the list."""
    box = md.letterbox_geometry(1000, 751, 1280, 64)   # input 1280 x 1024, 31 rows on top
    det = torch.tensor([[100.0, 31.0, 228.0, 159.0, 0.87654, 0.0],
                        [-5.0, 1000.0, 30.0, 1024.0, 0.5, 2.0],
                        [640.0, 500.0, 640.0, 500.0, 0.5, 1.0]])
    got = md.to_md_detections(det, box)
    gain = min(1024 / 751, 1280 / 1000)
    pad_y = (1024 - 751 * gain) / 2
    x1, y1 = round(100 / gain), round((31 - pad_y) / gain)
    x2, y2 = round(228 / gain), round((159 - pad_y) / gain)
    assert got[0] == {'category': '1', 'conf': 0.876, 'bbox': [
        md.truncate(x1 / 1000, 4), md.truncate(y1 / 751, 4),
        md.truncate((x2 - x1) / 1000, 4), md.truncate((y2 - y1) / 751, 4)]}
    # equal confidences: MegaDetector's order (the later row first), boxes clipped
    assert [d['category'] for d in got[1:]] == ['2', '3']
    assert got[2]['bbox'][0] == 0.0 and got[2]['bbox'][1] + got[2]['bbox'][3] <= 1.0
    assert got[1]['bbox'][2:] == [0.0, 0.0]             # a point stays a point
    assert md.to_md_detections(det[:0], box) == []


# ------------------------------------------- MegaDetector's own functions (no YOLOv5)

@pytest.fixture(scope='module')
def megadetector() -> Iterator[dict[str, ModuleType]]:
    """MegaDetector's modules; importing them sets Pillow's LOAD_TRUNCATED_IMAGES
    for the whole process, which is undone afterwards."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        pytorch_detector = pytest.importorskip('megadetector.detection.pytorch_detector')
        vis_utils = pytest.importorskip('megadetector.visualization.visualization_utils')
        ct_utils = pytest.importorskip('megadetector.utils.ct_utils')
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
    yield {'pt': pytorch_detector, 'vis': vis_utils, 'ct': ct_utils}
    ImageFile.LOAD_TRUNCATED_IMAGES = before


def _raw_predictions(seed: int, n: int = 4000, classes: int = 3) -> torch.Tensor:
    """YOLOv5-like raw output: boxes in clusters (so that NMS has work), scores."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(40, 2, generator=g) * 1200
    pick = torch.randint(0, 40, (n,), generator=g)
    xy = centres[pick] + torch.randn(n, 2, generator=g) * 8
    wh = 20 + torch.rand(n, 2, generator=g) * 200
    scores = torch.rand(n, 1 + classes, generator=g) ** 3
    return torch.cat([xy, wh, scores], 1).unsqueeze(0)


@pytest.mark.parametrize('seed, threshold', [(0, 0.005), (1, 0.2), (2, 0.6)])
def test_nms_is_megadetectors(megadetector, seed, threshold):
    pred = _raw_predictions(seed)
    ref = megadetector['pt'].nms(pred, conf_thres=threshold, iou_thres=0.45)[0]
    ours = md.boxes_from_predictions(pred[0], threshold)
    assert 0 < len(ours) <= 300 and torch.equal(ours, ref)
    empty = torch.zeros(1, 10, 8)
    assert md.boxes_from_predictions(empty[0], threshold).shape == (0, 6)


def test_truncation_is_megadetectors(megadetector):
    values = np.random.default_rng(0).random(2000).tolist() + [0.0, 0.1, 0.7, 1.0, 0.2999]
    for digits in (3, 4):
        assert [md.truncate(v, digits) for v in values] == \
            megadetector['ct'].truncate_float_array(values, precision=digits)


def _texture(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255)
                           .astype(np.uint8))


def _with_orientation(img: Image.Image, orientation: int, path: Path, **save: Any) -> None:
    t = Image.Transpose
    inverse = {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 5: t.TRANSPOSE, 6: t.ROTATE_90,
               8: t.ROTATE_270}
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.transpose(inverse[orientation]).save(path, exif=exif.tobytes(), **save)


@pytest.fixture(scope='module')
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp('photos')
    out: dict[str, Path] = {}

    def name(n: str) -> Path:
        out[n] = folder / n
        return out[n]

    _texture(301, 207).save(name('plain.jpg'), quality=90)
    for o in (3, 6, 8):
        _with_orientation(_texture(320, 200, o), o, name(f'exif{o}.jpg'), quality=90)
    _with_orientation(_texture(200, 150, 9), 6, name('exif6.png'))
    full = folder / 'full.jpg.tmp'
    _texture(400, 300, 4).save(full, 'JPEG', quality=90)
    data = full.read_bytes()
    name('truncated.jpg').write_bytes(data[:len(data) // 2])
    _texture(160, 120, 5).convert('L').save(name('gray.jpg'), quality=90)
    rgba = _texture(160, 120, 6).convert('RGBA')
    rgba.putalpha(_texture(160, 120, 7).convert('L'))
    rgba.save(name('alpha.png'))
    # where MegaDetector is wrong
    _with_orientation(_texture(200, 100, 10), 2, name('mirrored2.jpg'), quality=90)
    _with_orientation(_texture(200, 100, 11), 5, name('mirrored5.jpg'), quality=90)
    _with_orientation(_texture(200, 100, 12).convert('L'), 6, name('gray_exif6.jpg'),
                      quality=90)
    _texture(120, 90, 13).convert('CMYK').save(name('cmyk.jpg'), quality=90)
    name('broken.jpg').write_bytes(b'not a photo')
    return out


@pytest.mark.parametrize('name', ['plain.jpg', 'exif3.jpg', 'exif6.jpg', 'exif8.jpg',
                                  'exif6.png', 'truncated.jpg', 'gray.jpg', 'alpha.png'])
def test_photos_decode_as_megadetector(megadetector, photos, name):
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True             # as MegaDetector runs
    try:
        ref = np.asarray(megadetector['vis'].load_image(str(photos[name])))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
    ours = md.read_photo(photos[name])
    assert ImageFile.LOAD_TRUNCATED_IMAGES == before   # no lasting side effect
    assert ours.dtype == np.uint8 and ours.shape == ref.shape and np.array_equal(ours, ref)


def test_truncated_photo_needs_the_flag(photos, monkeypatch):
    """Without LOAD_TRUNCATED_IMAGES Pillow refuses it (so the retry is what reads it;
    importing megadetector anywhere in the session sets the flag, hence the patch)."""
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', False)
    with Image.open(photos['truncated.jpg']) as img, pytest.raises(OSError):
        img.load()
    assert md.read_photo(photos['truncated.jpg']).shape == (300, 400, 3)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_where_we_differ_from_megadetector(megadetector, photos):
    """Mirrored orientations and grayscale photos' orientation are applied (MegaDetector
    ignores them); CMYK is converted (MegaDetector refuses it); non-images fail both."""
    load = megadetector['vis'].load_image
    for name, upright in (('mirrored2.jpg', (200, 100)), ('mirrored5.jpg', (200, 100)),
                          ('gray_exif6.jpg', (200, 100))):
        ours = md.read_photo(photos[name])
        assert ours.shape[1::-1] == upright
        with Image.open(photos[name]) as stored:
            assert np.asarray(load(str(photos[name]))).shape[1::-1] == stored.size
    assert np.array_equal(md.read_photo(photos['mirrored2.jpg']),
                          np.asarray(load(str(photos['mirrored2.jpg'])))[:, ::-1])
    assert md.read_photo(photos['cmyk.jpg']).shape == (90, 120, 3)
    with pytest.raises(AttributeError, match='unsupported mode'):
        load(str(photos['cmyk.jpg']))
    with pytest.raises(OSError):
        md.read_photo(photos['broken.jpg'])


# ---------------------------------- both programs, one model (needs bench/.venv-original)

def _original_has_yolov5() -> bool:
    if not ORIGINAL.exists():
        return False
    return subprocess.run([str(ORIGINAL), '-c', 'import yolov5, megadetector'],
                          capture_output=True).returncode == 0


needs_original = pytest.mark.skipif(not _original_has_yolov5(),
                                    reason='bench/.venv-original with yolov5 (run '
                                           'bench/setup_original.sh)')


@pytest.fixture(scope='module')
def both_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The generated YOLOv5 model, the bench's generated photos, and a runner that
    gives both programs' documents for a folder."""
    bench = _bench()
    work = tmp_path_factory.mktemp('parity')
    kinds = bench.make_photos(work / 'photos', seed=5)
    calibration = [str(work / 'photos' / k) for k, v in kinds.items() if v == 'same']
    proc = subprocess.run([str(ORIGINAL), str(REPO / 'bench' / 'bench_detector.py'),
                           'build-model', str(work), *calibration, '--sizes', '384'],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def run(folder: Path, size: int, *ours_flags: str
            ) -> tuple[dict[str, Any], dict[str, Any]]:
        common = [str(folder), '--recursive', '--output_relative_filenames',
                  '--image_size', str(size)]
        out = work / f'{folder.name}_{size}_{"_".join(ours_flags)}'
        env = {k: v for k, v in os.environ.items() if k != 'PYTEST_CURRENT_TEST'}
        for python, module, model, doc in (
                (sys.executable, 'detection.run_detector_batch', 'md_bench.torchscript',
                 'ours'),
                (str(ORIGINAL), 'megadetector.detection.run_detector_batch', 'md_bench.pt',
                 'md')):
            flags = ours_flags if doc == 'ours' else ()
            p = subprocess.run([python, '-m', module, str(work / model), common[0],
                                str(out / f'{doc}.json'), *common[1:], *flags],
                               capture_output=True, text=True, cwd=REPO,
                               env={**env, 'PYTHONPATH': ''})
            assert p.returncode == 0, p.stderr[-3000:]
        return (json.loads((out / 'ours.json').read_text()),
                json.loads((out / 'md.json').read_text()))

    return {'bench': bench, 'kinds': kinds, 'photos': work / 'photos', 'run': run}


@needs_original
def test_same_detections_as_megadetector(both_programs):
    ours, theirs = both_programs['run'](both_programs['photos'], 384, '--engine', 'torch')
    kinds = both_programs['kinds']
    assert [e['file'] for e in ours['images']] == [e['file'] for e in theirs['images']]
    assert ours['info']['format_version'] == theirs['info']['format_version'] == '1.6'
    assert ours['detection_categories'] == theirs['detection_categories']
    for key in ('megadetector_version', 'typical_detection_threshold',
                'conservative_detection_threshold'):
        assert ours['info']['detector_metadata'][key] == theirs['info']['detector_metadata'][key]
    theirs_by_file = {e['file']: e for e in theirs['images']}
    n_boxes = 0
    for entry in ours['images']:
        if kinds[entry['file']] == 'same':
            assert entry == theirs_by_file[entry['file']], entry['file']
            n_boxes += len(entry['detections'] or [])
    assert n_boxes > 100                               # the model does find things
    assert theirs_by_file['broken.jpg'] == {'file': 'broken.jpg',
                                            'failure': md.FAILURE_IMAGE_ACCESS,
                                            'detections': None}
    # on purpose: MegaDetector refuses CMYK and palette photos, fails on 16-bit ones
    for name in ('cmyk.jpg', 'palette.png', 'gray16.png'):
        assert theirs_by_file[name]['failure'] in (md.FAILURE_IMAGE_ACCESS,
                                                   md.FAILURE_INFERENCE)
        assert next(e for e in ours['images'] if e['file'] == name)['detections'] is not None


@needs_original
@pytest.mark.skipif(not REAL_PHOTOS.exists(), reason='needs ../shared/data/real_camera_traps')
def test_same_detections_on_real_photos(both_programs):
    ours, theirs = both_programs['run'](REAL_PHOTOS / 'images', 384, '--engine', 'torch')
    assert len(ours['images']) >= 10
    assert ours['images'] == theirs['images']


@needs_original
def test_the_default_engine_matches_megadetector(both_programs):
    """With the engine --engine auto picks (OpenVINO float32 here), at most 1% of
    either side's detections lack a match (same category, IoU >= 0.98, confidences
    within 0.01)."""
    folders = [both_programs['photos']] + ([REAL_PHOTOS / 'images'] if REAL_PHOTOS.exists()
                                           else [])
    for folder in folders:
        ours, theirs = both_programs['run'](folder, 384)
        assert [e['file'] for e in ours['images']] == [e['file'] for e in theirs['images']]
        same = {e['file'] for e in ours['images']
                if folder != both_programs['photos'] or both_programs['kinds'][e['file']] == 'same'}
        a = [e for e in ours['images'] if e['file'] in same]
        b = [e for e in theirs['images'] if e['file'] in same]
        for x, y in ((a, b), (b, a)):
            missing, total = unmatched(x, y)
            assert total > 100 and missing <= 0.01 * total, (folder, missing, total)
