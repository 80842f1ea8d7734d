"""Decoding photos and writing crops, shared by detect_and_crop and crop_detections.

Each photo is decoded once however many boxes it has, and JPEGs only as far as
their boxes need (see PhotoFile.decode); EXIF orientation is applied and any
mode converted to RGB for the crop only. Crops already on disk are skipped, so
an interrupted run resumes; a photo that cannot be read is reported, not raised.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from classification import utils
from classification.utils import PixelBox

try:  # the optional C extension (setup.py); without it photos are decoded whole
    from classification import _jpegregion
except ImportError:  # pragma: no cover - depends on the build
    _jpegregion = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90


@dataclass(frozen=True)
class CropTask:
    """One crop to make: where it goes and its normalized box."""
    out_path: Path
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageJob:
    """All crops of one photo."""
    key: str                     # the name to report (relative image path)
    source: Path | None          # local file (None: only in blob storage)
    crops: tuple[CropTask, ...]


class ImageUnavailable(Exception):
    """A photo could not be fetched; the message is the reason to log."""


@dataclass
class CropReport:
    """What a run did; ``failures`` maps image keys to reasons."""
    images: int = 0
    crops_written: int = 0
    crops_skipped: int = 0       # already there (resume)
    crops_invalid_box: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    def add(self, other: CropReport) -> None:
        self.images += other.images
        self.crops_written += other.crops_written
        self.crops_skipped += other.crops_skipped
        self.crops_invalid_box += other.crops_invalid_box
        self.failures.update(other.failures)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL image: grayscale, palette, CMYK, alpha, 16-bit."""
    if img.mode == 'RGB':
        return img
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith('I;16') or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, 'L').convert('RGB')
    if img.mode in ('RGBA', 'LA', 'PA') or (img.mode == 'P' and 'transparency' in img.info):
        rgba = img.convert('RGBA')
        bg = Image.new('RGB', rgba.size, (0, 0, 0))
        bg.paste(rgba, mask=rgba.getchannel('A'))
        return bg
    return img.convert('RGB')


_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the stored picture upright
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) after the EXIF orientation (5-8 swap the sides)."""
    w, h = stored
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


@dataclass
class Photo:
    """Decoded pixels of a photo as stored (any mode) and its EXIF orientation.

    Crops are taken in upright coordinates, as MegaDetector's boxes are, but
    cut from the stored pixels first: only the crop is rotated and converted
    to RGB, never the whole photo. ``image`` may hold only a region of the
    stored photo (``origin`` is its top-left corner, ``stored_size`` the whole
    photo's size), enough for the boxes it was decoded for.
    """
    image: Image.Image
    orientation: int = 1
    stored_size: tuple[int, int] | None = None
    origin: tuple[int, int] = (0, 0)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole photo, upright."""
        return _upright_size(self.stored_size or self.image.size, self.orientation)

    def stored_box(self, box: PixelBox) -> PixelBox:
        """An upright-coordinates box in the coordinates of the stored pixels."""
        if self.orientation not in _UPRIGHT:
            return box
        (x0, y0), (x1, y1) = self._to_stored(box[0], box[1]), self._to_stored(box[2], box[3])
        return (int(min(x0, x1)), int(min(y0, y1)), int(max(x0, x1)), int(max(y0, y1)))

    def _to_stored(self, x: float, y: float) -> tuple[float, float]:
        ws, hs = self.stored_size or self.image.size
        o = self.orientation
        if o == 2:
            return ws - x, y
        if o == 3:
            return ws - x, hs - y
        if o == 4:
            return x, hs - y
        if o == 5:
            return y, x
        if o == 6:
            return y, hs - x
        if o == 7:
            return ws - y, hs - x
        if o == 8:
            return ws - y, x
        return x, y

    def crop(self, box: PixelBox) -> Image.Image:
        """RGB crop of an upright-coordinates box (parts outside the photo are black)."""
        left, top, right, bottom = self.stored_box(box)
        ox, oy = self.origin
        inside = (left - ox, top - oy, right - ox, bottom - oy)
        cut = self.image if inside == (0, 0, *self.image.size) else self.image.crop(inside)
        if self.orientation in _UPRIGHT:
            cut = cut.transpose(_UPRIGHT[self.orientation])
        return to_rgb(cut)

    def upright(self) -> Image.Image:
        """The whole photo, upright, in RGB (only for a photo decoded whole)."""
        if self.origin != (0, 0) or (self.stored_size not in (None, self.image.size)):
            raise ValueError('only a region of this photo was decoded')
        w, h = self.size
        return self.crop((0, 0, w, h))


def _is_complete_jpeg(data: bytes) -> bool:
    """True if the data end with the EOI marker (trailing padding allowed).

    In entropy-coded JPEG data a 0xFF byte is always followed by 0x00 or a
    restart marker, so FF D9 near the end means the file was not cut short.
    """
    return data.find(b'\xff\xd9', max(0, len(data) - 64)) != -1


class PhotoFile:
    """A photo's bytes with its header parsed (size, mode, EXIF), not yet decoded.

    Raises OSError / UnidentifiedImageError for non-image data.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._img = Image.open(io.BytesIO(data))
        orientation = self._img.getexif().get(_EXIF_ORIENTATION, 1)
        self.orientation = orientation if orientation in _UPRIGHT else 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) upright."""
        return _upright_size(self._img.size, self.orientation)

    def decode(self, boxes: Sequence[PixelBox] | None = None, scale: int = 1) -> Photo:
        """Decodes the photo, or with ``boxes`` (upright pixel boxes) possibly only
        the part of it they need; ``scale`` (1, 2, 4, 8) decodes at that fraction of
        the size (boxes then go to ``Photo.crop`` through ``scale_box``).

        A complete baseline or progressive 8-bit RGB/grayscale JPEG is decoded
        by region (classification._jpegregion: libjpeg-turbo skips the inverse
        DCT and colour conversion outside the boxes and stops after their last
        row, and scales with its scaled inverse DCT as Pillow's draft mode does);
        at scale 1 the pixels inside the boxes are identical to a full decode's.
        Anything else, or anything the region decoder rejects, is decoded whole
        by Pillow (which then decides whether the photo is readable) and reduced
        by box averaging.
        """
        whole = Photo(self._img, self.orientation)
        if boxes and _jpegregion is None and self._img.format == 'JPEG':
            warn_no_region_decoder()
        if boxes and _jpegregion is not None and self._img.format == 'JPEG' \
                and self._img.mode in ('RGB', 'L') and _is_complete_jpeg(self.data):
            sw, sh = self._img.size
            stored = [whole.stored_box(b) for b in boxes]
            left, top = max(0, min(b[0] for b in stored)), max(0, min(b[1] for b in stored))
            right = min(sw, max(b[2] for b in stored))
            bottom = min(sh, max(b[3] for b in stored))
            if left < right and top < bottom:
                try:
                    pixels, mode, w, h, x, y = _jpegregion.decode_region(
                        self.data, left, top, right, bottom, scale)
                except (OSError, ValueError) as e:
                    logger.debug('region decoding failed (%s); decoding whole', e)
                else:
                    if mode == self._img.mode:
                        # only the boxes' union, unpacked straight from the wider
                        # decoded rows (no zero-fill, no second copy)
                        scaled = (-(-sw // scale), -(-sh // scale))
                        left, top, right, bottom = scale_box((left, top, right, bottom), scale)
                        right, bottom = min(scaled[0], right), min(scaled[1], bottom)
                        channels = 3 if mode == 'RGB' else 1
                        start = ((top - y) * w + (left - x)) * channels
                        union = Image.new(mode, (right - left, bottom - top), None)
                        union.frombytes(memoryview(pixels)[start:], 'raw', mode, w * channels, 1)
                        return Photo(union, self.orientation, scaled, (left, top))
        self._img.load()
        if scale > 1:
            return Photo(self._img.reduce(scale), self.orientation)
        return whole


_region_warned = threading.Lock()     # taken for good by the first warning


def warn_no_region_decoder() -> None:
    """Says once per process that the compiled JPEG region decoder is missing (its
    build was skipped), so photos are decoded whole, about 1.6x slower."""
    if not _region_warned.acquire(blocking=False):
        return
    logger.warning('the JPEG region decoder (classification._jpegregion) is not built, so '
                   'photos are decoded whole (about 1.6x slower); build it with '
                   '`pip install -e .` where a C compiler and libjpeg headers are installed')


def scale_box(box: PixelBox, scale: int) -> PixelBox:
    """A pixel box in a photo decoded at 1/``scale`` (covering the box)."""
    if scale == 1:
        return box
    return (box[0] // scale, box[1] // scale, -(-box[2] // scale), -(-box[3] // scale))


def open_photo(source: Any) -> Photo:
    """Decodes a whole photo (path, bytes or file object), keeping its EXIF orientation.

    Raises OSError / UnidentifiedImageError for truncated or non-image files.
    """
    if isinstance(source, (str, os.PathLike)):
        data = Path(source).read_bytes()       # one read, not dozens of small ones
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read()
    return PhotoFile(data).decode()


def load_image(source: Any) -> Image.Image:
    """Opens a photo (path or file object), applies its EXIF orientation, returns RGB."""
    return open_photo(source).upright()


def add_crop_flags(parser: argparse.ArgumentParser) -> None:
    """The cropping flags that crop_detections and detect_and_crop share."""
    parser.add_argument('--square-crops', action='store_true',
                        help='crop the smallest square around each box, padded with black')
    parser.add_argument('--check-crops-valid', action='store_true',
                        help='decode existing crops and redo the broken ones')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.0,
                        help='crop detections with at least this confidence (default: 0)')
    parser.add_argument('-n', '--threads', type=utils.positive_int, default=1,
                        help='threads reading and cropping photos (default: 1)')


def crop_is_valid(path: Path) -> bool:
    """True if ``path`` is a complete, decodable image."""
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def save_jpeg(img: Image.Image, path: Path) -> None:
    """Writes a JPEG atomically."""
    with utils.atomic_path(path) as tmp:
        img.save(tmp, 'JPEG', quality=JPEG_QUALITY)


def crop_one_image(job: ImageJob, square: bool, check_valid: bool,
                   fetch: Callable[[ImageJob], bytes] | None = None) -> CropReport:
    """Makes every missing crop of one photo; never raises for a bad photo.

    The photo is decoded once, and only as much of it as the missing crops need.
    """
    report = CropReport(images=1)
    todo = []
    for task in job.crops:
        exists = task.out_path.exists()
        if exists and (not check_valid or crop_is_valid(task.out_path)):
            report.crops_skipped += 1
        else:
            todo.append(task)
    if not todo:
        return report
    try:
        if fetch is not None:
            data = fetch(job)
        elif job.source is not None:
            data = job.source.read_bytes()
        else:
            raise FileNotFoundError(job.key)
        photo_file = PhotoFile(data)
        boxes = [(task, utils.crop_box(task.bbox, *photo_file.size, square)) for task in todo]
        valid = [b for _, b in boxes if b is not None]
        photo = photo_file.decode(valid) if valid else None
    except FileNotFoundError:
        report.failures[job.key] = 'image not found'
        return report
    except ImageUnavailable as e:
        report.failures[job.key] = str(e)
        return report
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        # Pillow names the in-memory file it was given; say which photo instead
        report.failures[job.key] = 'cannot decode image: ' + re.sub(
            r'\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>', '', str(e))
        return report
    bad_boxes = []
    for task, box in boxes:
        if box is None:
            report.crops_invalid_box += 1
            bad_boxes.append(task.out_path.name)
            continue
        assert photo is not None
        try:
            save_jpeg(photo.crop(box), task.out_path)
        except OSError as e:
            if utils.is_output_error(e):
                raise           # a full or read-only disk: the run stops, in one line
            report.failures[job.key] = f'cannot write crop {task.out_path}: {e}'
            return report
        report.crops_written += 1
    if bad_boxes:
        report.failures[job.key] = ('box has zero area or lies outside the image: '
                                    + ', '.join(bad_boxes))
    return report


def run_crop_jobs(jobs: Sequence[ImageJob], square: bool, check_valid: bool, threads: int,
                  fetch: Callable[[ImageJob], bytes] | None = None) -> CropReport:
    """Crops all jobs on ``threads`` threads (Pillow decodes without the GIL).

    A truncated photo is a failure, never a partly grey crop, even if another
    library turned on Pillow's global LOAD_TRUNCATED_IMAGES (megadetector does).
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    total = CropReport()
    with tqdm(total=len(jobs), unit='img', desc='cropping', file=None,
              disable=None) as bar:
        def one(job: ImageJob) -> CropReport:
            return crop_one_image(job, square, check_valid, fetch)

        if threads <= 1:
            results: Iterable[CropReport] = map(one, jobs)
        else:
            pool = ThreadPoolExecutor(threads)
            results = pool.map(one, jobs)
        for r in results:
            total.add(r)
            bar.update(1)
        if threads > 1:
            pool.shutdown()
    return total


def write_failure_log(report: CropReport, logdir: str | os.PathLike[str], prefix: str,
                      extra: dict[str, Any] | None = None) -> Path:
    """Writes ``<logdir>/<prefix>_log_<YYYYmmdd_HHMMSS>.json`` with every failed image,
    and logs the run's counts."""
    counts = {'images': report.images, 'crops_written': report.crops_written,
              'crops_skipped_existing': report.crops_skipped,
              'crops_invalid_box': report.crops_invalid_box}
    path = utils.write_failure_log(logdir, prefix, counts, report.failures, extra)
    logger.info('%d images: %d crops written, %d already there, %d failed images; log: %s',
                report.images, report.crops_written, report.crops_skipped,
                len(report.failures), path)
    return path
