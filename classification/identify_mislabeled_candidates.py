r"""List the images whose crops the classifier confidently puts in another class.

Reads ``<logdir>/outputs_<split>.csv.gz`` (written by train_classifier and
evaluate_model: ``path``, ``label``, ``weight`` and one probability column per
class). A crop is a candidate when the top predicted class beats the crop's
label by at least --margin: max_c p(c) - p(label) >= margin. Its source image
(the crop path without the ``___cropNN...`` part) goes to
``<logdir>/mislabeled_candidates_<split>_<dataset>.txt``, one path per line,
sorted and without repeats; the dataset is the first folder of the crop path.
Paths are relative to the dataset's container (for ``azcopy --list-of-files``),
or with --include-dataset-in-filename start with ``<dataset>/`` (for
data_management/megadb/download_images ``txt``).

With --contact-sheet DIR (and --cropped-images-dir, the crops folder of the
run) it also writes a report folder, ``DIR/index.html`` with the candidate
crops as thumbnails, per split and given label, highest margin first, each
captioned with its given label, predicted label and margin (the crop path is
its tooltip): a page to review in minutes. At most --max-thumbnails crops are
shown, those of the highest margins. DIR is replaced only if it is an earlier
report.

Example:
    python -m classification.identify_mislabeled_candidates $BASE_LOGDIR/$LOGDIR \
        --margin 0.95 --splits test --include-dataset-in-filename \
        --contact-sheet $BASE_LOGDIR/$LOGDIR/mislabeled_review \
        --cropped-images-dir $BASE_LOGDIR/../crops
    python -m data_management.megadb.download_images txt \
        $BASE_LOGDIR/$LOGDIR/mislabeled_candidates_test_<dataset>.txt review_images
"""
from __future__ import annotations

import argparse
import html
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from classification import report_pages, utils
from classification.classifier_output import NOT_PROBABILITIES, check_probabilities

logger = logging.getLogger(__name__)

SPLITS = ('train', 'val', 'test')
MAX_THUMBNAILS = 500


@dataclass(frozen=True)
class ContactSheet:
    """Where the contact sheet goes, where the crops are, how many to show."""
    report_dir: Path
    crops_dir: Path
    max_thumbnails: int = MAX_THUMBNAILS


def margins(df: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(max over classes of p(class) - p(label), the class of that max) per row of
    an outputs table."""
    for name in ('path', 'label'):
        if name not in df.columns:
            raise utils.InputError(f'{source}: no "{name}" column')
    df = check_probabilities(df, source)   # each a number from 0 to 1, each crop once
    classes = [c for c in df.columns if c not in NOT_PROBABILITIES]
    label_col = pd.Index(classes).get_indexer(pd.Index(df['label'].astype(str)))
    if (label_col < 0).any():
        row = int(np.flatnonzero(label_col < 0)[0])
        raise utils.InputError(f'{source}: row {row + 2}: label {df["label"].iloc[row]!r} '
                               'has no probability column')
    probs = df[classes].to_numpy(dtype=np.float64)
    top = probs.argmax(axis=1)
    margin = probs[np.arange(len(df)), top] - probs[np.arange(len(df)), label_col]
    return margin, np.asarray(classes, dtype=object)[top] if len(df) else np.array([], object)


def candidate_crops(df: pd.DataFrame, margin: float, source: str) -> pd.DataFrame:
    """The crops at or above the margin: ``path``, ``label`` (given), ``predicted``
    and ``margin``, highest margin first (then by path)."""
    got, predicted = margins(df, source)
    out = pd.DataFrame({'path': df['path'].astype(str).to_numpy(),
                        'label': df['label'].astype(str).to_numpy(),
                        'predicted': predicted, 'margin': got})
    out = out[out['margin'] >= margin]
    return out.sort_values(['margin', 'path'], ascending=[False, True], kind='stable'
                           ).reset_index(drop=True)


def _crops(n: int) -> str:
    return f'{n} crop' if n == 1 else f'{n} crops'


def _thumbnail(thumbs: report_pages.Thumbs, row: pd.Series) -> str:
    """A crop captioned with its given label, predicted label and margin (the crop
    path as tooltip), or the caption alone when the crop cannot be shown."""
    caption = (f'given {html.escape(row["label"])}<br>predicted '
               f'{html.escape(str(row["predicted"]))}<br>margin {row["margin"]:.2f}')
    src = thumbs(row['path'])
    title = html.escape(row['path'])
    if src is None:
        return f'<span class="missing" title="{title}">{caption}</span>'
    # shown at one width: small crops are the ones worth a closer look
    return (f'<figure title="{title}">{report_pages.img(src, row["path"], thumbs.size)}'
            f'<figcaption>{caption}</figcaption></figure>')


def contact_sheet_body(tables: Mapping[str, pd.DataFrame], margin: float,
                       thumbs: report_pages.Thumbs, max_thumbnails: int) -> str:
    """The contact sheet's HTML: per split, per given label (most candidates
    first), the crops by decreasing margin; only the ``max_thumbnails`` crops of
    the highest margins over all splits are shown."""
    everything = pd.concat([t.assign(split=s) for s, t in tables.items()], ignore_index=True)
    shown = set(everything.sort_values(['margin', 'split', 'path'],
                                       ascending=[False, True, True], kind='stable')
                .index[:max_thumbnails])
    total = len(everything)
    parts = [f'<p>Crops whose top predicted label beats their given label by at least '
             f'{margin:.2f} (margin = p(predicted) - p(given)), highest margin first. '
             f'{min(total, max_thumbnails)} of {total} candidate crops shown'
             + (f' (the {max_thumbnails} of the highest margins; raise --max-thumbnails '
                'for more)' if total > max_thumbnails else '') + '. Hover over a crop for '
             'its path.</p>']
    nav = ' | '.join(f'<a href="#{html.escape(s)}">{html.escape(s)}</a> ({len(t)})'
                     for s, t in tables.items())
    parts.append(f'<p>Splits: {nav}</p>')
    offset = 0
    for split, table in tables.items():
        index = pd.RangeIndex(offset, offset + len(table))
        offset += len(table)
        parts.append(f'<h2 id="{html.escape(split)}">{html.escape(split)}: '
                     f'{_crops(len(table))}</h2>')
        if not len(table):
            parts.append('<p>None.</p>')
            continue
        sizes = table['label'].value_counts()
        for label in sorted(sizes.index, key=lambda x: (-sizes[x], x)):
            rows = [k for k in index[(table['label'] == label).to_numpy()] if k in shown]
            hidden = int(sizes[label]) - len(rows)
            parts.append(f'<h3>given {html.escape(label)}: {_crops(int(sizes[label]))}</h3><div>'
                         + ''.join(_thumbnail(thumbs, everything.loc[k]) for k in rows)
                         + '</div>'
                         + (f'<p class="missing">{hidden} more not shown</p>' if hidden else ''))
    return '\n'.join(parts)


def write_contact_sheet(sheet: ContactSheet, tables: Mapping[str, pd.DataFrame],
                        margin: float) -> Path:
    """Writes the contact sheet report folder (tables from candidate_crops, by
    split); returns its index.html."""
    def build(folder: Path) -> str:
        thumbs = report_pages.Thumbs(sheet.crops_dir, folder, limit=sheet.max_thumbnails)
        return contact_sheet_body(tables, margin, thumbs, sheet.max_thumbnails)
    return report_pages.write_report_folder(sheet.report_dir, 'Mislabeled candidates', build,
                                            report_pages.CONTACT_SHEET)


def image_lists(crops: Iterable[str], include_dataset: bool, source: str
                ) -> dict[str, list[str]]:
    """{dataset: sorted unique image paths} of crop paths."""
    out: dict[str, set[str]] = {}
    for crop in crops:
        try:
            image = utils.parse_crop_filename(crop)[0]
        except utils.InputError as e:
            raise utils.InputError(f'{source}: {e}') from e
        try:
            utils.safe_join('<crops folder>', image)
        except utils.InputError as e:
            raise utils.InputError(f'{source}: crop {crop!r}: {e}') from e
        dataset, sep, rest = image.partition('/')
        if not sep or not rest:
            raise utils.InputError(f'{source}: crop {crop!r} is not under a <dataset>/ folder')
        out.setdefault(dataset, set()).add(image if include_dataset else rest)
    return {ds: sorted(files) for ds, files in sorted(out.items())}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('logdir', help='training run folder with outputs_<split>.csv.gz')
    parser.add_argument('--margin', type=utils.probability, default=0.5,
                        help='how far the top class must beat the label (default: 0.5)')
    parser.add_argument('--splits', nargs='+', choices=SPLITS,
                        help='splits to look at (default: each with an outputs file)')
    parser.add_argument('-d', '--include-dataset-in-filename', action='store_true',
                        help='start each path with <dataset>/ (for download_images)')
    parser.add_argument('--contact-sheet', metavar='DIR',
                        help='also write an HTML report folder of the candidate crops here')
    parser.add_argument('-c', '--cropped-images-dir', metavar='CROPS',
                        help='the crops folder of the run (needed by --contact-sheet)')
    parser.add_argument('--max-thumbnails', type=utils.positive_int, default=MAX_THUMBNAILS,
                        help='show at most this many crops on the contact sheet, those of '
                             f'the highest margins (default: {MAX_THUMBNAILS})')
    args = parser.parse_args(argv)
    if (args.contact_sheet is None) != (args.cropped_images_dir is None):
        parser.error('--contact-sheet and --cropped-images-dir go together')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    logdir = Path(args.logdir)
    if not logdir.is_dir():
        raise utils.InputError(f'{logdir}: folder not found')
    splits = args.splits or [s for s in SPLITS if (logdir / f'outputs_{s}.csv.gz').is_file()]
    if not splits:
        raise utils.InputError(f'{logdir}: no outputs_<split>.csv.gz (run evaluate_model)')
    sheet = None
    if args.contact_sheet is not None:
        report_pages.check_report_dir(args.contact_sheet, report_pages.CONTACT_SHEET)
        if not os.path.isdir(args.cropped_images_dir):
            raise utils.InputError(f'--cropped-images-dir {args.cropped_images_dir}: not a '
                                   'folder')
        sheet = ContactSheet(Path(args.contact_sheet), Path(args.cropped_images_dir),
                             args.max_thumbnails)
    tables: dict[str, pd.DataFrame] = {}
    # every split is read and checked before any list is written
    outputs: list[tuple[str, Path, list[str]]] = []
    for split in splits:
        source = str(logdir / f'outputs_{split}.csv.gz')
        df = utils.read_csv(source, dtype={'path': str, 'label': str})
        table = candidate_crops(df, args.margin, source)
        lists = image_lists(table['path'], args.include_dataset_in_filename, source)
        tables[split] = table
        for dataset, files in lists.items():
            try:
                path = utils.safe_join(logdir, f'mislabeled_candidates_{split}_{dataset}.txt')
            except utils.InputError as e:
                raise utils.InputError(f'{source}: dataset folder {dataset!r} cannot name a '
                                       f'file ({e})') from e
            outputs.append((split, path, files))
        if not lists:
            logger.info('%s: no crop beats its label by %.2f or more', split, args.margin)
    if sheet is not None:        # the part more likely to fail first; then the lists, together
        write_contact_sheet(sheet, tables, args.margin)
    utils.write_together([(path, ''.join(f'{f}\n' for f in files))
                          for _, path, files in outputs])
    # lists an earlier run wrote for these splits and this one did not: out of date
    fresh = {path for _, path, _ in outputs}
    for split in splits:
        for old in logdir.glob(f'mislabeled_candidates_{split}_*.txt'):
            if old not in fresh:
                old.unlink()
                logger.info('%s: removed (no candidates of this dataset now)', old)
    for split, path, files in outputs:
        logger.info('%s: %d candidate images -> %s', split, len(files), path)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
