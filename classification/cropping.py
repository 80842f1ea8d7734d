"""Decoding photos and writing crops, shared by detect_and_crop and crop_detections.

Each photo is decoded once (EXIF orientation applied, any mode converted to
RGB) however many boxes it has; crops already on disk are skipped, so an
interrupted run resumes; a photo that cannot be read is reported, not raised.
"""
from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from classification import utils

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


@dataclass
class Photo:
    """A decoded photo as stored (any mode) and its EXIF orientation.

    Crops are taken in upright coordinates, as MegaDetector's boxes are, but
    cut from the stored pixels first: only the crop is rotated and converted
    to RGB, never the whole photo.
    """
    image: Image.Image
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) upright."""
        w, h = self.image.size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)

    def _to_stored(self, x: float, y: float) -> tuple[float, float]:
        ws, hs = self.image.size
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

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        """RGB crop of an upright-coordinates box (parts outside are black)."""
        if self.orientation not in _UPRIGHT:
            return to_rgb(self.image.crop(box))
        (x0, y0), (x1, y1) = self._to_stored(box[0], box[1]), self._to_stored(box[2], box[3])
        stored = (int(min(x0, x1)), int(min(y0, y1)), int(max(x0, x1)), int(max(y0, y1)))
        return to_rgb(self.image.crop(stored).transpose(_UPRIGHT[self.orientation]))

    def upright(self) -> Image.Image:
        """The whole photo, upright, in RGB."""
        w, h = self.size
        return self.crop((0, 0, w, h))


def open_photo(source: Any) -> Photo:
    """Decodes a photo (path or file object) once, keeping its EXIF orientation.

    Raises OSError / UnidentifiedImageError for truncated or non-image files.
    """
    if isinstance(source, (str, os.PathLike)):
        source = io.BytesIO(Path(source).read_bytes())   # one read, not dozens of small ones
    with Image.open(source) as img:
        img.load()
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        return Photo(img, orientation if orientation in _UPRIGHT else 1)


def load_image(source: Any) -> Image.Image:
    """Opens a photo (path or file object), applies its EXIF orientation, returns RGB."""
    return open_photo(source).upright()


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
                   opener: Callable[[ImageJob], Photo] | None = None) -> CropReport:
    """Makes every missing crop of one photo; never raises for a bad photo."""
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
        if opener is not None:
            photo = opener(job)
        elif job.source is not None:
            photo = open_photo(job.source)
        else:
            raise FileNotFoundError(job.key)
    except FileNotFoundError:
        report.failures[job.key] = 'image not found'
        return report
    except ImageUnavailable as e:
        report.failures[job.key] = str(e)
        return report
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        report.failures[job.key] = f'cannot decode image: {e}'
        return report
    bad_boxes = []
    for task in todo:
        box = utils.crop_box(task.bbox, *photo.size, square)
        if box is None:
            report.crops_invalid_box += 1
            bad_boxes.append(task.out_path.name)
            continue
        try:
            save_jpeg(photo.crop(box), task.out_path)
        except OSError as e:
            report.failures[job.key] = f'cannot write crop {task.out_path}: {e}'
            return report
        report.crops_written += 1
    if bad_boxes:
        report.failures[job.key] = ('box has zero area or lies outside the image: '
                                    + ', '.join(bad_boxes))
    return report


def run_crop_jobs(jobs: Sequence[ImageJob], square: bool, check_valid: bool, threads: int,
                  opener: Callable[[ImageJob], Photo] | None = None) -> CropReport:
    """Crops all jobs on ``threads`` threads (Pillow decodes without the GIL).

    A truncated photo is a failure, never a partly grey crop, even if another
    library turned on Pillow's global LOAD_TRUNCATED_IMAGES (megadetector does).
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    total = CropReport()
    with tqdm(total=len(jobs), unit='img', desc='cropping', file=None,
              disable=None) as bar:
        def one(job: ImageJob) -> CropReport:
            return crop_one_image(job, square, check_valid, opener)

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
    """Writes ``<logdir>/<prefix>_log_<YYYYmmdd_HHMMSS>.json`` with every failed image."""
    stamp = time.strftime('%Y%m%d_%H%M%S')
    path = Path(logdir) / f'{prefix}_log_{stamp}.json'
    doc: dict[str, Any] = {
        'images': report.images, 'crops_written': report.crops_written,
        'crops_skipped_existing': report.crops_skipped,
        'crops_invalid_box': report.crops_invalid_box,
        'failures': [{'file': k, 'reason': v} for k, v in sorted(report.failures.items())],
    }
    if extra:
        doc.update(extra)
    utils.write_json(doc, path, indent=1)
    return path
