"""When a photo was taken, from its EXIF tags (what camera traps write).

``DateTimeOriginal`` (in the EXIF sub-IFD) is preferred, then ``DateTime``
(IFD0). Camera traps write local time with no time zone, so the result is a
naive datetime; None when the photo has no readable time. Only the header is
read, not the pixels.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
DATETIME = 0x0132
EXIF_FORMAT = '%Y:%m:%d %H:%M:%S'


def parse_exif_time(value: object) -> dt.datetime | None:
    """An EXIF date-time string (``YYYY:MM:DD HH:MM:SS``, maybe NUL-padded) as a
    datetime; None for anything else (blank, ``0000:00:00 00:00:00``, garbage)."""
    if isinstance(value, bytes):
        value = value.decode('ascii', 'replace')
    if not isinstance(value, str):
        return None
    text = value.strip().strip('\x00').strip()
    try:
        return dt.datetime.strptime(text[:19], EXIF_FORMAT)
    except ValueError:
        return None


def photo_time(path: str | os.PathLike[str]) -> dt.datetime | None:
    """The time ``path`` was taken (see the module docstring); None when the file
    cannot be read or has no valid time."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            found = parse_exif_time(exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL))
            return found if found is not None else parse_exif_time(exif.get(DATETIME))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError,
            Image.DecompressionBombError):
        return None


def photo_times(root: str | os.PathLike[str], files: Iterable[str], threads: int = 8
                ) -> Mapping[str, dt.datetime | None]:
    """{file: time} for photos named relative to ``root`` (read in threads: the
    work is file I/O)."""
    names = list(dict.fromkeys(files))
    base = Path(root)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return dict(zip(names, pool.map(lambda f: photo_time(base / f), names), strict=True))
