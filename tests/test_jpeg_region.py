"""Region-of-interest JPEG decoding (classification/_jpegregion.c) and its use in cropping.

The promise: the pixels of every box are exactly those of a full decode by
Pillow, for every sampling, progressive or not, with restart markers, for all
EXIF orientations; anything unusual falls back to Pillow's full decode.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageFile

from classification import cropping, utils
from tests.conftest import REAL_PHOTOS


@pytest.fixture(autouse=True)
def _big_encoder_buffer(monkeypatch):
    # Pillow writes a noisy progressive JPEG only if its whole output fits the buffer
    monkeypatch.setattr(ImageFile, 'MAXBLOCK', 1 << 24)


def _jpeg(rng, w, h, mode='RGB', **save):
    """A textured photo-like JPEG (smooth shapes plus noise) as bytes."""
    base = rng.integers(0, 255, (h // 9 + 2, w // 9 + 2, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC), dtype=int)
    arr = np.clip(arr + rng.integers(-25, 25, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, 'JPEG', **save)
    return buf.getvalue()


def _full(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(im.mode))


def test_region_decoder_is_built():
    """The fast path exists wherever the project is installed with make (setup.py builds it
    from libjpeg-turbo's headers); without it crops are right but decoding is not faster."""
    from classification import _jpegregion
    assert cropping._jpegregion is _jpegregion and _jpegregion.LIBJPEG_VERSION >= 62


@pytest.mark.parametrize('mode', ['RGB', 'L'])
@pytest.mark.parametrize('subsampling', [0, 1, 2])          # 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize('extra', [{}, {'progressive': True}, {'restart_marker_rows': 1}])
def test_region_pixels_equal_full_decode(mode, subsampling, extra):
    from classification import _jpegregion
    rng = np.random.default_rng(subsampling * 10 + len(extra))
    for w, h in ((333, 251), (64, 48), (17, 9), (600, 40)):
        data = _jpeg(rng, w, h, mode, quality=92, subsampling=subsampling, **extra)
        full = _full(data)
        for _ in range(12):
            left, top = int(rng.integers(0, w)), int(rng.integers(0, h))
            right, bottom = int(rng.integers(left + 1, w + 1)), int(rng.integers(top + 1, h + 1))
            pixels, out_mode, rw, rh, x, y = _jpegregion.decode_region(
                data, left, top, right, bottom)
            assert out_mode == mode
            assert x <= left and y <= top and x + rw >= right and y + rh >= bottom
            assert x + rw <= w and y + rh <= h
            region = np.frombuffer(pixels, np.uint8).reshape(full[y:y + rh, x:x + rw].shape)
            assert np.array_equal(region[top - y:bottom - y, left - x:right - x],
                                  full[top:bottom, left:right]), (w, h, left, top, right, bottom)


@pytest.mark.parametrize('scale', [2, 4, 8])
@pytest.mark.parametrize('subsampling', [0, 2])
def test_scaled_region_equals_pillows_draft_decode(scale, subsampling):
    """decode_region(..., scale) gives the pixels of Pillow's draft (scaled-DCT) decode
    of the whole photo, for a region covering the box in scaled pixels."""
    from classification import _jpegregion
    rng = np.random.default_rng(scale + subsampling)
    w, h = 517, 389
    data = _jpeg(rng, w, h, quality=90, subsampling=subsampling)
    with Image.open(io.BytesIO(data)) as im:
        im.draft('RGB', (w // scale, h // scale))
        full = np.asarray(im.convert('RGB'))
    assert full.shape[:2] == (-(-h // scale), -(-w // scale))
    for _ in range(10):
        left, top = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
        right, bottom = int(rng.integers(left + 1, w + 1)), int(rng.integers(top + 1, h + 1))
        pixels, _, rw, rh, x, y = _jpegregion.decode_region(data, left, top, right, bottom,
                                                           scale)
        sl, st, sr, sb = cropping.scale_box((left, top, right, bottom), scale)
        sr, sb = min(sr, full.shape[1]), min(sb, full.shape[0])
        assert x <= sl and y <= st and x + rw >= sr and y + rh >= sb
        region = np.frombuffer(pixels, np.uint8).reshape(rh, rw, 3)
        assert np.array_equal(region[st - y:sb - y, sl - x:sr - x], full[st:sb, sl:sr])
    with pytest.raises(ValueError, match='scale'):
        _jpegregion.decode_region(data, 0, 0, 10, 10, 3)


def test_region_of_a_large_photo_is_small():
    """A box in the middle of a big photo decodes little more than the box."""
    from classification import _jpegregion
    data = _jpeg(np.random.default_rng(0), 1600, 1200, quality=90)
    _, _, w, h, x, y = _jpegregion.decode_region(data, 700, 500, 900, 700)
    assert w <= 200 + 4 * 16 and h <= 200 + 4 * 16 and x >= 700 - 32 and y >= 500 - 32


def test_region_decoder_refuses_what_it_cannot_do():
    from classification import _jpegregion
    rng = np.random.default_rng(1)
    good = _jpeg(rng, 200, 160, quality=90)
    cmyk = io.BytesIO()
    Image.new('CMYK', (64, 64), (10, 20, 30, 40)).save(cmyk, 'JPEG')
    with pytest.raises(ValueError):
        _jpegregion.decode_region(cmyk.getvalue(), 0, 0, 10, 10)
    with pytest.raises(ValueError):
        _jpegregion.decode_region(good, 50, 50, 40, 60)         # empty box
    with pytest.raises(ValueError):
        _jpegregion.decode_region(good, 300, 300, 400, 400)     # outside the photo
    with pytest.raises(OSError, match='Not a JPEG'):
        _jpegregion.decode_region(b'not a jpeg at all', 0, 0, 1, 1)
    with pytest.raises(OSError):
        _jpegregion.decode_region(good[: len(good) // 2], 0, 0, 200, 160)   # data end early
    with pytest.raises(TypeError):
        _jpegregion.decode_region('text', 0, 0, 1, 1)  # type: ignore[arg-type]


def _exif_jpeg(rng, orientation, w=120, h=90):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(rng, w, h, quality=90, exif=exif.tobytes())


@pytest.mark.parametrize('orientation', range(1, 9))
def test_photo_crops_from_a_region_equal_crops_from_a_full_decode(orientation):
    rng = np.random.default_rng(orientation)
    pf = cropping.PhotoFile(_exif_jpeg(rng, orientation, 240, 180))
    uw, uh = pf.size
    for bbox in ([0.1, 0.2, 0.3, 0.2], [0.0, 0.5, 0.1, 0.5], [0.7, 0.0, 0.3, 0.3],
                 [0.45, 0.45, 0.1, 0.1]):
        for square in (False, True):
            box = utils.crop_box(bbox, uw, uh, square)
            assert box is not None
            region = pf.decode([box])
            whole = cropping.PhotoFile(pf.data).decode()
            assert region.size == whole.size == (uw, uh)
            assert region.image.size != whole.image.size or bbox == [0.7, 0.0, 0.3, 0.3]
            assert np.array_equal(np.asarray(region.crop(box)), np.asarray(whole.crop(box)))


def test_several_boxes_share_one_region():
    rng = np.random.default_rng(5)
    pf = cropping.PhotoFile(_jpeg(rng, 800, 600, quality=90))
    boxes = [(100, 100, 160, 160), (600, 400, 690, 490), (300, 200, 420, 260)]
    photo = pf.decode(boxes)
    whole = cropping.PhotoFile(pf.data).decode()
    for box in boxes:
        assert np.array_equal(np.asarray(photo.crop(box)), np.asarray(whole.crop(box)))
    with pytest.raises(ValueError):
        photo.upright()                      # only part of it was decoded


def test_without_the_extension_photos_are_decoded_whole(monkeypatch):
    rng = np.random.default_rng(6)
    data = _jpeg(rng, 300, 200, quality=90)
    with_ext = cropping.PhotoFile(data).decode([(10, 20, 50, 60)])
    monkeypatch.setattr(cropping, '_jpegregion', None)
    without = cropping.PhotoFile(data).decode([(10, 20, 50, 60)])
    assert without.image.size == (300, 200) and with_ext.image.size != (300, 200)
    assert np.array_equal(np.asarray(with_ext.crop((10, 20, 50, 60))),
                          np.asarray(without.crop((10, 20, 50, 60))))


def test_truncated_photo_fails_even_when_its_boxes_lie_in_the_intact_part(tmp_path):
    """A cut file is reported as before: the region decoder is only used on complete
    JPEGs, and Pillow's full decode gives the reason."""
    rng = np.random.default_rng(7)
    data = _jpeg(rng, 400, 300, quality=90)
    cut = data[: len(data) * 2 // 3]
    job = cropping.ImageJob('cut.jpg', tmp_path / 'cut.jpg', (
        cropping.CropTask(tmp_path / 'crops' / 'c.jpg', (0.1, 0.0, 0.2, 0.1)),))
    (tmp_path / 'cut.jpg').write_bytes(cut)
    (tmp_path / 'crops').mkdir()
    report = cropping.crop_one_image(job, square=False, check_valid=False)
    assert report.crops_written == 0
    assert 'truncated' in report.failures['cut.jpg']


def test_corrupt_region_falls_back_to_pillow(monkeypatch):
    """Data the region decoder warns about are decoded whole by Pillow, so the result is
    whatever Pillow makes of them."""
    rng = np.random.default_rng(8)
    data = bytearray(_jpeg(rng, 400, 300, quality=90))
    start = len(data) // 2
    data[start:start + 300] = bytes(300)
    data = bytes(data)
    photo = cropping.PhotoFile(data).decode([(0, 0, 400, 300)])
    assert photo.image.size == (400, 300) and photo.origin == (0, 0)
    assert np.array_equal(np.asarray(photo.image), _full(data))


@pytest.mark.skipif(not REAL_PHOTOS.exists(), reason='real camera-trap photos not available')
def test_real_photo_crops_equal_full_decode_crops():
    doc = json.loads((REAL_PHOTOS / 'md_v5a_detections.json').read_text())
    checked = 0
    for entry in doc['images']:
        dets = [d for d in entry.get('detections') or [] if d['conf'] >= 0.2]
        if not dets:
            continue
        pf = cropping.PhotoFile((REAL_PHOTOS / 'images' / entry['file']).read_bytes())
        boxes = [b for d in dets if (b := utils.crop_box(d['bbox'], *pf.size, True))]
        region, whole = pf.decode(boxes), cropping.PhotoFile(pf.data).decode()
        for box in boxes:
            assert np.array_equal(np.asarray(region.crop(box)), np.asarray(whole.crop(box)))
            checked += 1
    assert checked >= 10
