r"""One classification per sequence of photos, from the per-detection ones.

Reads the Timelapse JSON of merge_classification_detection_output (MegaDetector
output with "classifications" on its detections), groups its photos into
sequences (the bursts a camera trap takes each time it fires) and combines the
classifications of each sequence: the mean of the classification vectors of
its animal detections (category "animal", conf at least --threshold, with a
"classifications" list; a category missing from a list counts as 0),
weighted by each detection's conf. Writes one CSV row per sequence and, with --smoothed-json, a
copy of the Timelapse JSON in which each of those detections carries its
sequence's classifications instead of its own (one animal per burst: a
blurred or half-visible frame gets the label of the sharp ones).

Sequences come from one of:
  --coco FILE         a COCO Camera Traps JSON of the same photos: each image's
                      seq_id (file_name = the detections' "file"; location = the
                      camera); an image without seq_id is a sequence of its own.
                      A photo of the detections that it does not list is refused.
  --images-dir DIR    the photos' EXIF times (DateTimeOriginal, else DateTime):
                      per folder, a new sequence where the gap to the previous
                      photo exceeds --max-gap-seconds (default 60); a photo
                      without a readable time is a sequence of its own.

Example:
    python -m classification.classify_sequences detections_with_classifications.json \
        sequences.csv --images-dir new_photos/images --max-gap-seconds 60 \
        --smoothed-json detections_smoothed.json

    python -m classification.classify_sequences merged.json - --coco my_dataset.json

The CSV (or '-' for stdout), one row per sequence, by camera and start time:
  seq_id, camera            the sequence (from seq_id, or <folder>#NNNN) and its
                            location or folder
  first_file, last_file     its first and last photo in time order
  start_time, end_time      YYYY-MM-DD HH:MM:SS, blank when unknown
  photos, detections        photos, and animal detections combined
  top_label, top_probability  the category with the highest mean (blank when
                            the sequence has no animal detection)
  <one column per classifier category>  the mean confidences
Only the classifier's categories (ids below 1000000) are combined: merge's true
labels (--label, "label: <name>") and rollup taxa (--rollup-threshold) are not
predictions. A file merged with --relative-conf is refused. The smoothed JSON
keeps every other field and records the settings in info.sequence_smoothing; a
combined detection keeps its true-label entries (after the sequence's list) and
loses its rollup taxon (counted in rollup_entries_dropped). It opens in
Timelapse as the input does. Both outputs are written, or neither.
"""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from classification import photo_times, sequences, utils
from detection.detector_output import read_document

logger = logging.getLogger(__name__)

DEFAULT_MAX_GAP_SECONDS = 60.0


@dataclass(frozen=True)
class SequenceSettings:
    """How photos are grouped and combined (recorded in the smoothed JSON)."""
    grouping: str                       # 'seq_id' (from --coco) or 'exif_time'
    threshold: float
    max_gap_seconds: float | None       # with 'exif_time' only
    method: str = 'mean of the animal detections\' classifications, weighted by their conf'


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('detections_json',
                        help="merge_classification_detection_output's JSON, or '-'")
    parser.add_argument('output_csv', help="per-sequence CSV, or '-' for stdout")
    parser.add_argument('--coco', help='COCO Camera Traps JSON with the seq_id of each photo')
    parser.add_argument('--images-dir', help='folder of the photos (for their EXIF times)')
    parser.add_argument('--max-gap-seconds', type=utils.positive_float,
                        help='with --images-dir: the longest gap within a sequence '
                             f'(default: {DEFAULT_MAX_GAP_SECONDS:g})')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.2,
                        help='combine animal detections of at least this conf (default: 0.2)')
    parser.add_argument('--smoothed-json',
                        help="also write the JSON with each sequence's classifications on "
                             "its detections ('-' for stdout)")
    parser.add_argument('--json-indent', type=utils.nonneg_int,
                        help='indent the smoothed JSON (default: compact)')
    parser.add_argument('--threads', type=utils.positive_int, default=8,
                        help='threads reading EXIF times (default: 8)')
    args = parser.parse_args(argv)
    if (args.coco is None) == (args.images_dir is None):
        parser.error('give exactly one of --coco and --images-dir')
    if args.coco is not None and args.max_gap_seconds is not None:
        parser.error('--max-gap-seconds goes with --images-dir (--coco gives the sequences)')
    return args


def settings_from(args: argparse.Namespace) -> SequenceSettings:
    if args.coco is not None:
        return SequenceSettings('seq_id', args.threshold, None)
    gap = args.max_gap_seconds if args.max_gap_seconds is not None else DEFAULT_MAX_GAP_SECONDS
    return SequenceSettings('exif_time', args.threshold, gap)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    settings = settings_from(args)
    utils.check_one_stdin(args.detections_json, args.coco)
    if args.smoothed_json is not None and (
            args.smoothed_json == args.output_csv or utils.STDIO not in (
                args.smoothed_json, args.output_csv)
            and Path(args.smoothed_json).resolve() == Path(args.output_csv).resolve()):
        raise utils.InputError(f'{args.output_csv}: given both as the CSV and as '
                               '--smoothed-json (two outputs cannot share one file or stdout)')
    for out in (args.output_csv, args.smoothed_json):
        if out is not None:
            utils.check_output_path(out, [args.detections_json, args.coco])
    doc = read_document(args.detections_json)
    categories = sequences.category_order(doc, args.detections_json)
    files = [img['file'] for img in doc['images']]
    if args.coco is not None:
        grouping = sequences.sequences_from_coco(utils.read_json(args.coco), files, args.coco)
        if grouping.unused:
            logger.info('%d images of %s are not in the detections file (left out)',
                        grouping.unused, args.coco)
        alone = 'photos without a seq_id'
    else:
        if not Path(args.images_dir).is_dir():
            raise utils.InputError(f'{args.images_dir}: no such folder (--images-dir)')
        for f in files:
            utils.safe_join(args.images_dir, f)
        times = photo_times.photo_times(args.images_dir, files, threads=args.threads)
        assert settings.max_gap_seconds is not None      # settings_from sets it for EXIF times
        grouping = sequences.sequences_from_times(times, settings.max_gap_seconds)
        alone = 'photos without a readable time'
    if grouping.singletons:
        logger.warning('%d %s: each is a sequence of its own', grouping.singletons, alone)
    results = sequences.combine(doc, grouping, settings.threshold, args.detections_json)
    outputs = [(args.output_csv, sequences.results_table(results, categories).to_csv(
        index=False, float_format='%.6g'))]
    if args.smoothed_json is not None:
        smoothed = sequences.smoothed_document(doc, results, settings.threshold,
                                               asdict(settings), args.detections_json)
        outputs.insert(0, (args.smoothed_json,
                           json.dumps(smoothed, indent=args.json_indent, ensure_ascii=False)
                           + '\n'))
    utils.write_together(outputs)
    logger.info('%d photos in %d sequences, %d with an animal detection', len(files),
                len(results), sum(r.probs is not None for r in results))
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
