"""What every HTML report of the pipeline shares: a self-contained folder
(``index.html``, PNG figures, crop thumbnails) written to a temporary name and
renamed into place, so a failed run leaves the old report as it was. An
existing folder is replaced only if it is a report (it holds ``REPORT_MARK``);
anything else is refused with one line.

The evaluation report (reports.py), the dataset report, the mislabeled-crops
contact sheet and the others build their page bodies with the helpers here and
hand them to :func:`write_report_folder`.
"""
from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from classification import utils

logger = logging.getLogger(__name__)

REPORT_MARK = '.camera-trap-report'       # its text: the report's kind, one of KINDS
EVALUATION, DATASET, LABEL_SPEC, CONTACT_SHEET = (
    'evaluation report', 'dataset report', 'label spec report', 'contact sheet')
KINDS = (EVALUATION, DATASET, LABEL_SPEC, CONTACT_SHEET)
THUMB_SIZE = 112
MAX_THUMBS = 2000

STYLE = '''body{font-family:sans-serif;margin:1.5em;max-width:1400px}
.figs img{max-width:48%;margin:0 1% 1em 0;vertical-align:top}
table.stats{border-collapse:collapse;margin-bottom:1em}
table.stats td,table.stats th{border:1px solid #ccc;padding:2px 6px;font-size:13px}
figure{display:inline-block;margin:2px;text-align:center;font-size:11px}
.cell{margin:4px 0 8px 1em}.missing{font-size:11px;margin-right:6px;color:#666}
.flag{color:#b00;font-weight:bold}'''


class Thumbs:
    """Crop thumbnails written into a report folder's ``thumbs/`` (at most
    ``limit``); each crop is read once."""

    def __init__(self, crops_dir: Path | None, folder: Path, limit: int = MAX_THUMBS,
                 size: int = THUMB_SIZE) -> None:
        self.crops_dir, self.folder, self.limit, self.size = crops_dir, folder, limit, size
        self.n = 0
        self.done: dict[str, str | None] = {}
        (folder / 'thumbs').mkdir(exist_ok=True)

    def __call__(self, crop: str) -> str | None:
        """The thumbnail's path relative to the report, or None (no crops folder,
        a path leaving it, an unreadable crop, or the cap reached)."""
        if crop in self.done:
            return self.done[crop]
        rel = None
        if self.crops_dir is not None and self.n < self.limit:
            from PIL import Image, UnidentifiedImageError
            try:
                with Image.open(utils.safe_join(self.crops_dir, crop)) as img:
                    img.draft('RGB', (self.size, self.size))
                    small = img.convert('RGB')
                small.thumbnail((self.size, self.size))
                rel = f'thumbs/{self.n:05d}.jpg'
                small.save(self.folder / rel, 'JPEG', quality=80)
                self.n += 1
            except (OSError, UnidentifiedImageError, ValueError, utils.InputError,
                    Image.DecompressionBombError):
                rel = None
        self.done[crop] = rel
        return rel


def img(src: str, alt: str, width: int | None = None) -> str:
    """An <img> element, its attributes escaped."""
    size = f' width="{width}"' if width else ''
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}"{size}>'


def figure(thumbs: Thumbs, crop: str, caption: str) -> str:
    """A captioned thumbnail, or the caption alone (its crop path as a tooltip)
    when the crop cannot be shown."""
    src = thumbs(crop)
    if src is None:
        return (f'<span class="missing" title="{html.escape(crop)}">'
                f'{html.escape(caption)}</span>')
    return (f'<figure>{img(src, crop)}<figcaption>{html.escape(caption)}'
            '</figcaption></figure>')


def save_figure(fig: Any, folder: Path, name: str, alt: str) -> str:
    """Saves a matplotlib Figure as ``folder/name`` (PNG) and returns its <img>."""
    fig.savefig(folder / name, dpi=100)
    return img(name, alt)


def check_report_dir(report_dir: str | os.PathLike[str], kind: str | None = None) -> Path:
    """Refuses a report folder that exists and is not a report, or is a report of
    another kind than ``kind`` (it would be replaced). An empty folder is used."""
    target = Path(report_dir)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        mark = target / REPORT_MARK
        if not mark.is_file():
            raise utils.InputError(f'{target}: exists and is not a report folder; give another '
                                   'report folder or move it away')
        found = mark.read_text(encoding='utf-8', errors='replace').strip()
        if kind is not None and found in KINDS and found != kind:
            raise utils.InputError(f'{target}: holds a {found}, not a {kind}; give another '
                                   'report folder or move it away')
    return target


def page(title: str, body: str) -> str:
    """A whole HTML page around ``body``."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>'
            f'<h1>{html.escape(title)}</h1>{body}</body></html>\n')


def write_report_folder(report_dir: str | os.PathLike[str], title: str,
                        build: Callable[[Path], str], kind: str) -> Path:
    """Writes a report folder: ``build(tmp)`` writes its figures into the
    temporary folder ``tmp`` and returns the page body; the folder is then
    renamed onto ``report_dir`` (replacing an older report only) with the
    umask's modes. Returns the path of index.html."""
    target = check_report_dir(report_dir, kind)
    with utils.atomic_dir(target) as tmp:
        body = build(tmp)
        (tmp / 'index.html').write_text(page(title, body), encoding='utf-8')
        (tmp / REPORT_MARK).write_text(f'{kind}\n')
    logger.info('%s: %s', kind, target / 'index.html')
    return target / 'index.html'
