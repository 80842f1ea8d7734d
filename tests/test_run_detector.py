"""detection/run_detector_batch: YOLOv5-format TorchScript detectors built by the tests."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from classification import utils
from detection import detector as md
from detection import run_detector_batch as rdb
from tests.conftest import read_json


class RedThingDetector(torch.nn.Module):
    """Raw YOLOv5 output (1 x N x 8: cx, cy, w, h, objectness, 3 class scores) for
    the red pixels of the letterboxed input: one 'animal' box around them, a shifted
    duplicate (for NMS to remove), a 'person' box, and a box below any threshold."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        rows = [torch.tensor([10.0, 10.0, 4.0, 4.0, 0.001, 0.5, 0.3, 0.2]),
                torch.tensor([30.0, 30.0, 20.0, 20.0, 0.9, 0.1, 0.5, 0.4])]
        mask = (x[0, 0] > 0.8) & (x[0, 1] < 0.3) & (x[0, 2] < 0.3)
        found = torch.nonzero(mask)
        if found.shape[0] > 0:
            y1, x1 = float(found[:, 0].min()), float(found[:, 1].min())
            y2, x2 = float(found[:, 0].max()) + 1.0, float(found[:, 1].max()) + 1.0
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            rows.append(torch.tensor([cx, cy, w, h, 0.9, 0.95, 0.02, 0.03]))
            rows.append(torch.tensor([cx + 1.0, cy, w, h, 0.8, 0.9, 0.05, 0.05]))
        return (torch.stack(rows).unsqueeze(0),)


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    import warnings
    path = tmp_path_factory.mktemp('md') / 'md_test.torchscript'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)     # TorchScript is the file format
        torch.jit.save(torch.jit.script(RedThingDetector()), str(path))
    return path


def _photo(path, w, h, box, exif_orientation=None):
    """A noisy green photo with a red rectangle at pixel box (l, t, r, b), upright."""
    rng = np.random.default_rng(0)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 1] = rng.integers(90, 160, (h, w))
    arr[box[1]:box[3], box[0]:box[2]] = (230, 20, 20)
    img = Image.fromarray(arr)
    if exif_orientation is None:
        img.save(path, quality=95)
        return
    exif = Image.Exif()
    exif[0x0112] = exif_orientation
    inverse = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
               3: Image.Transpose.ROTATE_180}[exif_orientation]
    img.transpose(inverse).save(path, quality=95, exif=exif.tobytes())


def _expected(w, h, box):
    return [box[0] / w, box[1] / h, (box[2] - box[0]) / w, (box[3] - box[1]) / h]


@pytest.mark.parametrize('w, h, box, orientation', [
    (640, 480, (100, 150, 200, 230), None),        # landscape: padded top and bottom
    (300, 500, (20, 300, 140, 420), None),         # portrait: padded left and right
    (640, 480, (400, 40, 600, 200), 6),            # stored sideways, EXIF-rotated
    (640, 480, (10, 300, 90, 470), 8),
    (256, 256, (0, 0, 64, 64), 3),
])
def test_boxes_map_back_to_the_photo(tmp_path, detector, w, h, box, orientation):
    (tmp_path / 'img').mkdir()
    _photo(tmp_path / 'img' / 'a.jpg', w, h, box, orientation)
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(tmp_path / 'out.json'),
                     '--image-size', '320', '--output-relative-filenames']) == 0
    doc = read_json(tmp_path / 'out.json')
    (entry,) = doc['images']
    assert entry['file'] == 'a.jpg'
    animals = [d for d in entry['detections'] if d['category'] == '1']
    assert len(animals) == 1                        # the shifted duplicate was suppressed
    # 0.9 x 0.95 is 0.85499996 in float32: truncated, as MegaDetector does
    assert animals[0]['conf'] == 0.854
    np.testing.assert_allclose(animals[0]['bbox'], _expected(w, h, box), atol=0.012)
    assert all(len(str(v).split('.')[-1]) <= 4 for v in animals[0]['bbox'])
    person = [d for d in entry['detections'] if d['category'] == '2']
    assert len(person) == 1 and person[0]['conf'] == 0.449      # 0.44999999 in float32
    assert all(d['conf'] >= 0.005 for d in entry['detections'])
    assert doc['detection_categories'] == {'1': 'animal', '2': 'person', '3': 'vehicle'}
    assert doc['info']['detector'] == 'md_test.torchscript'
    assert doc['info']['format_version'] == '1.6'
    assert [d['conf'] for d in entry['detections']] == sorted(
        (d['conf'] for d in entry['detections']), reverse=True)


def test_threshold_failures_lists_and_validator(tmp_path, detector):
    from tests.test_cli import assert_valid_megadetector_output
    (tmp_path / 'img' / 'sub').mkdir(parents=True)
    _photo(tmp_path / 'img' / 'sub' / 'a.jpg', 320, 240, (10, 10, 60, 60))
    (tmp_path / 'img' / 'broken.jpg').write_bytes(b'not a jpeg')
    (tmp_path / 'list.json').write_text(json.dumps(
        [str(tmp_path / 'img' / 'sub' / 'a.jpg'), str(tmp_path / 'img' / 'broken.jpg')]))
    assert rdb.main([str(detector), str(tmp_path / 'list.json'), str(tmp_path / 'o.json'),
                     '--image-size', '160', '--stride', '32', '--threshold', '0.5']) == 0
    doc = read_json(tmp_path / 'o.json')
    broken, a = doc['images']                          # listed by file name, as MegaDetector
    assert [d['category'] for d in a['detections']] == ['1']     # person (0.45) dropped
    assert broken == {'file': str(tmp_path / 'img' / 'broken.jpg'),
                      'failure': md.FAILURE_IMAGE_ACCESS, 'detections': None}
    assert_valid_megadetector_output(tmp_path / 'o.json')
    # a folder, with paths joined to it; subfolders only with --recursive
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(tmp_path / 'f.json'),
                     '--image_size', '192']) == 0
    files = [e['file'] for e in read_json(tmp_path / 'f.json')['images']]
    assert files == [(tmp_path / 'img' / 'broken.jpg').as_posix()]
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(tmp_path / 'f.json'),
                     '--image_size', '160', '--stride', '32', '--recursive', '--use_image_queue',
                     '--include_max_conf', '--quiet']) == 0
    images = read_json(tmp_path / 'f.json')['images']
    assert [e['file'] for e in images] == [(tmp_path / 'img' / 'broken.jpg').as_posix(),
                                           (tmp_path / 'img' / 'sub' / 'a.jpg').as_posix()]
    assert 'max_detection_conf' not in images[0]
    assert images[1]['max_detection_conf'] == max(d['conf'] for d in images[1]['detections'])
    assert images[1]['detections'] == read_json(tmp_path / 'o.json')['images'][1][
        'detections'] + [d for d in images[1]['detections'] if d['conf'] < 0.5]


def test_class_mapping_file(tmp_path, detector):
    (tmp_path / 'img').mkdir()
    _photo(tmp_path / 'img' / 'a.jpg', 200, 200, (20, 20, 80, 80))
    (tmp_path / 'classes.json').write_text(json.dumps({'0': 'deer', '1': 'hiker',
                                                       '2': 'truck'}))
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(tmp_path / 'o.json'),
                     '--image_size', '128', '--class_mapping_filename',
                     str(tmp_path / 'classes.json')]) == 0
    doc = read_json(tmp_path / 'o.json')
    assert doc['detection_categories'] == {'0': 'deer', '1': 'hiker', '2': 'truck'}
    assert sorted(d['category'] for d in doc['images'][0]['detections']) == ['0', '1']


def test_checkpoints_and_resume(tmp_path, detector, monkeypatch):
    (tmp_path / 'img').mkdir()
    for i in range(5):
        _photo(tmp_path / 'img' / f'{i}.jpg', 200, 150, (10 + i, 10, 80, 90))
    ckpt = tmp_path / 'ckpt.json'
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(tmp_path / 'o.json'),
                     '--image-size', '128', '--output-relative-filenames',
                     '--checkpoint-frequency', '2', '--checkpoint-path', str(ckpt)]) == 0
    assert len(read_json(ckpt)['images']) == 4
    full = read_json(tmp_path / 'o.json')
    # resuming reuses the checkpoint's entries and runs the detector on the rest only
    saved = read_json(ckpt)
    saved['images'][0]['detections'] = []             # proof that it was reused
    ckpt.write_text(json.dumps(saved))
    seen = []
    real = md.detect_images
    monkeypatch.setattr(md, 'detect_images',
                        lambda model, files, *a, **k: seen.extend(files) or real(model, files,
                                                                                 *a, **k))
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(tmp_path / 'r.json'),
                     '--image-size', '128', '--output-relative-filenames',
                     '--resume-from-checkpoint', str(ckpt)]) == 0
    assert seen == ['4.jpg']
    resumed = read_json(tmp_path / 'r.json')['images']
    assert resumed[0]['detections'] == [] and resumed[1:] == full['images'][1:]
    # an existing checkpoint is not overwritten without --allow_checkpoint_overwrite
    args = [str(detector), str(tmp_path / 'img'), str(tmp_path / 'o2.json'), '--image_size',
            '128', '--checkpoint_frequency', '2', '--checkpoint_path', str(ckpt)]
    assert utils.run_cli(lambda: rdb.main(args)) == 2
    assert rdb.main([*args, '--allow_checkpoint_overwrite']) == 0
    # default checkpoint names beside the output, found again by 'auto'
    out = tmp_path / 'auto' / 'o.json'
    out.parent.mkdir()
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(out), '--image_size', '128',
                     '--checkpoint_frequency', '1']) == 0
    (auto_ckpt,) = out.parent.glob('md_checkpoint_*.json')
    assert len(read_json(auto_ckpt)['images']) == 5
    seen.clear()
    assert rdb.main([str(detector), str(tmp_path / 'img'), str(out), '--image_size', '128',
                     '--resume_from_checkpoint', 'auto']) == 0
    assert seen == []


def test_pickled_checkpoint_is_explained(tmp_path, capsys):
    torch.save({'model': 'a YOLOv5 pickle'}, tmp_path / 'md_v5a.0.0.pt')
    (tmp_path / 'img').mkdir()
    _photo(tmp_path / 'img' / 'a.jpg', 64, 64, (1, 1, 9, 9))
    rc = utils.run_cli(lambda: rdb.main([str(tmp_path / 'md_v5a.0.0.pt'),
                                         str(tmp_path / 'img'), '-']))
    err = capsys.readouterr().err
    assert rc == 2 and 'export.py' in err and 'Traceback' not in err


class FixedShapeDetector(torch.nn.Module):
    """What YOLOv5's export gives without --dynamic: only its export shape works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 128 or x.shape[3] != 128:
            raise RuntimeError('The size of tensor a (16) must match the size of tensor b (24)')
        return torch.zeros(1, 10, 8)


class CocoDetector(torch.nn.Module):
    """A YOLOv5 model with 80 classes, not MegaDetector's 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 10, 85)


@pytest.mark.parametrize('module, args, message', [
    (FixedShapeDetector, [], '--dynamic'),
    (CocoDetector, [], '80 classes'),
    (RedThingDetector, ['--image_size', '1000'], 'multiple of'),
])
def test_models_that_would_fail_every_photo_are_refused(tmp_path, capsys, module, args,
                                                        message):
    import warnings
    path = tmp_path / 'model.torchscript'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(torch.jit.script(module()), str(path))
    _photo(tmp_path / 'a.jpg', 64, 64, (1, 1, 9, 9))
    rc = utils.run_cli(lambda: rdb.main([str(path), str(tmp_path / 'a.jpg'), '-', *args]))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and 'Traceback' not in err


def test_one_photo_sorted_output_and_metadata(tmp_path, detector, capsys):
    """A single image path is a valid input; the output lists photos by file name and
    carries MegaDetector's metadata for the version the file name says."""
    md_file = tmp_path / 'md_v5a.0.0.torchscript'
    md_file.write_bytes(detector.read_bytes())
    _photo(tmp_path / 'one.jpg', 200, 100, (10, 10, 50, 50))
    assert rdb.main([str(md_file), str(tmp_path / 'one.jpg'), str(tmp_path / 'o.json'),
                     '--image_size', '128']) == 0
    doc = read_json(tmp_path / 'o.json')
    assert [e['file'] for e in doc['images']] == [str(tmp_path / 'one.jpg')]
    meta = doc['info']['detector_metadata']
    assert meta['megadetector_version'] == 'v5a.0.1'
    assert (meta['typical_detection_threshold'], meta['conservative_detection_threshold'],
            meta['image_size']) == (0.2, 0.05, 128)
    names = ['b.jpg', 'a.jpg', 'c.jpg']
    for n in names:
        _photo(tmp_path / n, 64, 64, (1, 1, 9, 9))
    (tmp_path / 'list.txt').write_text(''.join(f'{tmp_path / n}\n' for n in names))
    assert rdb.main([str(md_file), str(tmp_path / 'list.txt'), str(tmp_path / 'l.json'),
                     '--image_size', '128', '--quiet']) == 0
    assert [e['file'] for e in read_json(tmp_path / 'l.json')['images']] == \
        [str(tmp_path / n) for n in sorted(names)]


def test_stride_comes_from_the_yolov5_export(tmp_path):
    """YOLOv5's export.py stores {"shape", "stride", "names"} as config.txt."""
    import warnings
    path = tmp_path / 'model.torchscript'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(torch.jit.script(RedThingDetector()), str(path), _extra_files={
            'config.txt': json.dumps({'shape': [1, 3, 640, 640], 'stride': 32,
                                      'names': {'0': 'animal'}})})
    model = md.load_detector(str(path), torch.device('cpu'))
    assert md.model_stride(model.config) == 32
    assert md.model_stride({}) == md.DEFAULT_STRIDE == 64


def test_detect_and_crop_runs_the_detector_and_caches(tmp_path, detector, monkeypatch):
    """detect_and_crop --run-detector: uncached images go through the detector, their
    results land in mdcache, crops follow; a rerun does not run it again."""
    from classification import detect_and_crop
    images = tmp_path / 'images' / 'ds'
    (images / 'cam').mkdir(parents=True)
    _photo(images / 'cam' / 'a.jpg', 400, 300, (50, 60, 170, 200))
    _photo(images / 'gt.jpg', 200, 200, (0, 0, 10, 10))
    (images / 'broken.jpg').write_bytes(b'not a photo')
    entry = {'dataset': 'ds', 'location': 'L1', 'class': 'elk', 'label': ['elk']}
    queried = {'ds/cam/a.jpg': entry, 'ds/broken.jpg': entry,
               'ds/gt.jpg': {**entry, 'bbox': [{'category': 'animal',
                                                'bbox': [0.0, 0.0, 0.5, 0.5]}]}}
    (tmp_path / 'q.json').write_text(json.dumps(queried))
    args = [str(tmp_path / 'q.json'), str(tmp_path / 'out'), '-c', str(tmp_path / 'mdcache'),
            '-v', '5a', '-p', str(tmp_path / 'crops'), '-i', str(tmp_path / 'images'),
            '-t', '0.5', '--square-crops']
    (tmp_path / 'out').mkdir()
    # without --run-detector the two images are only reported
    assert detect_and_crop.main(args) == 0
    (log,) = (tmp_path / 'out').glob('detect_and_crop_log_*.json')
    assert sorted(read_json(log)['images_without_detections']) == ['ds/broken.jpg',
                                                                  'ds/cam/a.jpg']
    log.unlink()
    calls = []
    real_run = md.run
    monkeypatch.setattr(md, 'run', lambda det, files, *a, **k: calls.append(list(files))
                        or real_run(det, files, *a, **k))
    run_args = [*args, '--run-detector', '--detector-file', str(detector),
                '--detector-image-size', '256', '--resume-file', str(tmp_path / 'resume.json')]
    assert detect_and_crop.main(run_args) == 0
    assert calls == [['ds/broken.jpg', 'ds/cam/a.jpg']]
    cache = read_json(tmp_path / 'mdcache' / 'v5a' / 'ds.json')
    (cached,) = cache['images']                        # the unreadable photo is not cached
    assert cached['file'] == 'cam/a.jpg'
    animal = [d for d in cached['detections'] if d['category'] == '1']
    np.testing.assert_allclose(animal[0]['bbox'], _expected(400, 300, (50, 60, 170, 200)),
                               atol=0.012)
    assert cache['info']['detector'] == 'md_test.torchscript'
    crops = sorted(p.relative_to(tmp_path / 'crops').as_posix()
                   for p in (tmp_path / 'crops').rglob('*.jpg'))
    assert crops == ['ds/cam/a.jpg___crop00_mdv5a.jpg', 'ds/gt.jpg___crop00.jpg']
    (log,) = (tmp_path / 'out').glob('detect_and_crop_log_*.json')
    assert read_json(log)['detector_failures'] == ['ds/broken.jpg']
    assert read_json(log)['images_without_detections'] == ['ds/broken.jpg']
    log.unlink()
    # rerun: only the photo that failed is tried again
    assert detect_and_crop.main(run_args) == 0
    assert calls[1] == ['ds/broken.jpg']


def test_detect_and_crop_detector_flags_are_checked(tmp_path, capsys):
    from classification import detect_and_crop
    base = ['q.json', 'out', '-c', 'mdcache', '-v', '5a']
    with pytest.raises(SystemExit):
        detect_and_crop.parse_args([*base, '--run-detector', '-i', 'images'])
    assert '--detector-file' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        detect_and_crop.parse_args([*base, '--run-detector', '--detector-file', 'x'])
    assert '--images-dir' in capsys.readouterr().err
    queried = {'../../x.jpg': {'dataset': '..', 'location': 'L', 'label': ['c']}}
    (tmp_path / 'q.json').write_text(json.dumps(queried))
    rc = utils.run_cli(lambda: detect_and_crop.main([
        str(tmp_path / 'q.json'), str(tmp_path), '-c', str(tmp_path / 'c'), '-v', '5a',
        '--run-detector', '--detector-file', 'x', '-i', str(tmp_path / 'images')]))
    assert rc == 2 and 'Traceback' not in capsys.readouterr().err
