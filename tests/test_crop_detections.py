"""crop_detections and the shared cropping code: every kind of photo and failure."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from classification import crop_detections, utils
from classification.cropping import load_image
from tests.conftest import REAL_PHOTOS, read_json

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _photo(w=400, h=200):
    """Blue photo with a red block at x 100-200, y 50-150 (normalized [.25, .25, .25, .5])."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:] = BLUE
    arr[50:150, 100:200] = RED
    return Image.fromarray(arr)


def _detections(files, bbox=(0.25, 0.25, 0.25, 0.5), conf=0.9, extra=()):
    images = [{'file': f, 'detections': [{'category': '1', 'conf': conf, 'bbox': list(bbox)},
                                         *extra]} for f in files]
    return {'info': {'detector': 'md_v5a.0.0.pt', 'format_version': '1.4'},
            'detection_categories': {'1': 'animal', '2': 'person'}, 'images': images}


def _run(tmp_path, doc, *flags):
    (tmp_path / 'det.json').write_text(json.dumps(doc))
    rc = utils.run_cli(lambda: crop_detections.main(
        [str(tmp_path / 'det.json'), str(tmp_path / 'crops'), '-i', str(tmp_path / 'img'),
         '--logdir', str(tmp_path / 'logs'), *flags]))
    logs = sorted((tmp_path / 'logs').glob('crop_detections_log_*.json'))
    return rc, (read_json(logs[-1]) if logs else None)


def _mean(path):
    with Image.open(path) as im:
        assert im.mode == 'RGB'
        return np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_crop_is_the_box(tmp_path):
    (tmp_path / 'img' / 'loc').mkdir(parents=True)
    _photo().save(tmp_path / 'img' / 'loc' / 'a.jpg', quality=95)
    rc, log = _run(tmp_path, _detections(['loc/a.jpg']))
    crop = tmp_path / 'crops' / 'loc' / 'a.jpg___crop00_mdv5a.0.0.jpg'
    assert rc == 0 and log['crops_written'] == 1 and log['failures'] == []
    with Image.open(crop) as im:
        assert im.size == (100, 100)
    r, g, b = _mean(crop)
    assert r > 200 and b < 50


def test_square_crop_is_padded_black(tmp_path):
    (tmp_path / 'img').mkdir()
    _photo().save(tmp_path / 'img' / 'a.png')
    # a tall box at the left edge: 40 x 100 px -> 100 x 100 square, half outside
    rc, _ = _run(tmp_path, _detections(['a.png'], bbox=(0.0, 0.25, 0.1, 0.5)),
                 '--square-crops', '-v', '5a')
    with Image.open(tmp_path / 'crops' / 'a.png___crop00_mdv5a.jpg') as im:
        arr = np.asarray(im)
    assert arr.shape[:2] == (100, 100)
    assert arr[:, :20].max() < 20          # left part is padding
    assert arr[:, 40:].mean() > 50         # right part is photo


def test_threshold_keeps_box_indices(tmp_path):
    (tmp_path / 'img').mkdir()
    _photo().save(tmp_path / 'img' / 'a.jpg')
    extra = [{'category': '1', 'conf': 0.95, 'bbox': [0.5, 0.5, 0.2, 0.2]},
             {'category': '2', 'conf': 0.99, 'bbox': [0.1, 0.5, 0.2, 0.2]}]   # a person
    doc = _detections(['a.jpg'], conf=0.1, extra=extra)
    _run(tmp_path, doc, '-t', '0.5', '-v', '5a')
    assert sorted(p.name for p in (tmp_path / 'crops').iterdir()) == ['a.jpg___crop01_mdv5a.jpg']


@pytest.mark.parametrize('orientation, transpose', [
    (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
    (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_is_applied(tmp_path, orientation, transpose):
    (tmp_path / 'img').mkdir()
    stored = _photo().transpose(transpose)  # sideways on disk, upright when the tag is applied
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / 'img' / 'a.jpg', exif=exif.tobytes(), quality=95)
    assert load_image(tmp_path / 'img' / 'a.jpg').size == (400, 200)
    _run(tmp_path, _detections(['a.jpg']), '-v', '5a')
    r, _, b = _mean(tmp_path / 'crops' / 'a.jpg___crop00_mdv5a.jpg')
    assert r > 200 and b < 50


@pytest.mark.parametrize('maker', [
    lambda: _photo().convert('L'),                     # grayscale (night frame)
    lambda: _photo().convert('CMYK'),                  # CMYK JPEG
    lambda: _photo().convert('P'),                     # palette PNG
    lambda: Image.fromarray(np.asarray(_photo().convert('L'), dtype=np.uint16) * 257),
    # ^ 16-bit PNG
    lambda: _photo().convert('RGBA'),
])
def test_other_image_modes_become_rgb(tmp_path, maker):
    (tmp_path / 'img').mkdir()
    img = maker()
    name = 'a.jpg' if img.mode in ('L', 'CMYK') else 'a.png'
    img.save(tmp_path / 'img' / name)
    rc, log = _run(tmp_path, _detections([name]), '-v', '5a')
    assert rc == 0 and log['crops_written'] == 1
    crop = tmp_path / 'crops' / f'{name}___crop00_mdv5a.jpg'
    mean = _mean(crop)
    if img.mode in ('L', 'I;16'):
        assert abs(mean[0] - mean[2]) < 3 and mean.mean() > 40  # gray, red block level
    else:
        assert mean[0] > 180 and mean[2] < 80


def test_bad_photos_are_logged_and_the_run_goes_on(tmp_path, monkeypatch):
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)   # as megadetector sets it
    img = tmp_path / 'img'
    img.mkdir()
    _photo().save(img / 'good.jpg')
    data = (img / 'good.jpg').read_bytes()
    (img / 'truncated.jpg').write_bytes(data[: len(data) // 3])
    (img / 'corrupt.jpg').write_bytes(b'not an image at all')
    doc = _detections(['truncated.jpg', 'corrupt.jpg', 'missing.jpg', 'good.jpg'])
    doc['images'].append({'file': 'zero.jpg', 'detections': [
        {'category': '1', 'conf': 0.9, 'bbox': [0.1, 0.1, 0.0, 0.3]}]})
    doc['images'].append({'file': 'outside.jpg', 'detections': [
        {'category': '1', 'conf': 0.9, 'bbox': [1.2, 0.1, 0.2, 0.3]}]})
    _photo().save(img / 'zero.jpg')
    _photo().save(img / 'outside.jpg')
    rc, log = _run(tmp_path, doc, '-v', '5a', '-n', '3')
    assert rc == 0
    reasons = {f['file']: f['reason'] for f in log['failures']}
    assert set(reasons) == {'truncated.jpg', 'corrupt.jpg', 'missing.jpg', 'zero.jpg',
                            'outside.jpg'}
    assert reasons['missing.jpg'] == 'image not found'
    assert 'zero area' in reasons['zero.jpg'] and 'outside' in reasons['outside.jpg']
    assert log['crops_written'] == 1 and log['crops_invalid_box'] == 2
    assert (tmp_path / 'crops' / 'good.jpg___crop00_mdv5a.jpg').exists()


def test_a_traversal_path_is_skipped_and_logged(tmp_path, capsys):
    """A path leaving the photos folder is refused for that entry only; the rest of
    the run goes on."""
    (tmp_path / 'img').mkdir()
    _photo().save(tmp_path / 'img' / 'a.jpg')
    rc, log = _run(tmp_path, _detections(['../../etc/evil.jpg', 'a.jpg']), '-v', '5a')
    assert rc == 0
    assert 'leave the folder' in capsys.readouterr().err
    reasons = {f['file']: f['reason'] for f in log['failures']}
    assert list(reasons) == ['../../etc/evil.jpg'] and 'refused path' in reasons[
        '../../etc/evil.jpg']
    assert [p.name for p in (tmp_path / 'crops').iterdir()] == ['a.jpg___crop00_mdv5a.jpg']
    assert not (tmp_path.parent / 'etc').exists()


def test_rerun_resumes_and_check_crops_valid_redoes_broken(tmp_path):
    (tmp_path / 'img').mkdir()
    for n in ('a', 'b'):
        _photo().save(tmp_path / 'img' / f'{n}.jpg')
    doc = _detections(['a.jpg', 'b.jpg'])
    _run(tmp_path, doc, '-v', '5a')
    a = tmp_path / 'crops' / 'a.jpg___crop00_mdv5a.jpg'
    b = tmp_path / 'crops' / 'b.jpg___crop00_mdv5a.jpg'
    os.utime(a, (1, 1))
    b.write_bytes(b.read_bytes()[:50])                      # broken by a crash
    _, log = _run(tmp_path, doc, '-v', '5a')
    assert log['crops_skipped_existing'] == 2 and a.stat().st_mtime == 1
    _, log = _run(tmp_path, doc, '-v', '5a', '--check-crops-valid')
    assert log['crops_skipped_existing'] == 1 and log['crops_written'] == 1
    assert a.stat().st_mtime == 1
    with Image.open(b) as im:
        im.load()


def test_each_photo_decoded_once(tmp_path, monkeypatch):
    from classification import cropping
    (tmp_path / 'img').mkdir()
    _photo().save(tmp_path / 'img' / 'a.jpg')
    extra = [{'category': '1', 'conf': 0.9, 'bbox': [0.5, 0.1, 0.2, 0.2]}] * 4
    calls = []
    real = cropping.PhotoFile.decode
    monkeypatch.setattr(cropping.PhotoFile, 'decode',
                        lambda self, boxes=None: calls.append(boxes) or real(self, boxes))
    _run(tmp_path, _detections(['a.jpg'], extra=extra), '-v', '5a')
    assert len(calls) == 1 and len(calls[0]) == 5
    assert len(list((tmp_path / 'crops').iterdir())) == 5


@pytest.mark.skipif(not REAL_PHOTOS.exists(), reason='real camera-trap photos not available')
def test_real_photos(tmp_path):
    det = REAL_PHOTOS / 'md_v5a_detections.json'
    assert crop_detections.main([str(det), str(tmp_path / 'crops'), '-i',
                                 str(REAL_PHOTOS / 'images'), '-t', '0.5', '--square-crops',
                                 '-n', '2', '--logdir', str(tmp_path)]) == 0
    (log,) = tmp_path.glob('crop_detections_log_*.json')
    assert read_json(log)['failures'] == []
    crops = list((tmp_path / 'crops').rglob('*.jpg'))
    assert len(crops) >= 10
    for c in crops[:5]:
        with Image.open(c) as im:
            assert im.mode == 'RGB' and abs(im.width - im.height) <= 1


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('box', [(10, 20, 70, 50), (-15, -5, 40, 60), (50, 30, 130, 95)])
def test_crops_of_rotated_photos_equal_crops_of_the_upright_photo(orientation, box):
    """Cutting the stored pixels and rotating the crop gives exactly the crop of the
    upright photo, for every EXIF orientation, inside and past the edges."""
    from classification.cropping import _UPRIGHT, Photo
    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 255, size=(90, 120, 3), dtype=np.uint8))
    photo = Photo(stored, orientation)
    upright = stored.transpose(_UPRIGHT[orientation]) if orientation != 1 else stored
    assert photo.size == upright.size
    assert np.array_equal(np.asarray(photo.crop(box)), np.asarray(upright.crop(box)))
