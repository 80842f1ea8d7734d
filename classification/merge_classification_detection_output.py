"""Merge classifier probabilities into a MegaDetector-format detections JSON.

Adds ``"classifications": [[category_id, confidence], ...]`` (sorted by
decreasing confidence, only those of at least --threshold) to each detection
whose crop was classified, and ``classification_categories`` plus the
classifier's name and time to ``info``. Every other field of the detections
JSON is kept. The result opens in Timelapse.

Example:
    python -m classification.merge_classification_detection_output \
        classifier_output.csv.gz label_index.json \
        --detection-json detections.json --output-json merged.json \
        --classifier-name my-classifier --threshold 0.1

Inputs: the run_classifier (or aggregate_classifier_probs) CSV, or '-' for
stdin; its label index JSON. Output: the merged JSON, or '-' for stdout.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from classification import utils
from detection.detector_output import FORMAT_VERSION, check_document

logger = logging.getLogger(__name__)

_CROP_PATTERN = r'^(?P<image>.+)___crop(?P<idx>\d{2})(?:_mdv(?P<ver>[^/]+))?\.jpg$'


def _version_tuple(v: Any) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(v).split('.'))
    except ValueError:
        return (0,)


def classification_lists(probs: np.ndarray, threshold: float) -> list[list[list[Any]]]:
    """Per row: [[category id, confidence], ...] of confidences >= threshold, highest first."""
    order = np.argsort(-probs, axis=1, kind='stable')
    sorted_p = np.take_along_axis(probs, order, axis=1)
    keep = sorted_p >= threshold
    out = []
    for ids, ps, k in zip(order.tolist(), np.round(sorted_p, 4).tolist(), keep.tolist(),
                          strict=True):
        out.append([[str(i), p] for i, p, ok in zip(ids, ps, k, strict=True) if ok])
    return out


def merge(probs_df: pd.DataFrame, label_names: Sequence[str], detections: Mapping[str, Any],
          threshold: float, classifier_name: str,
          typical_threshold: float | None = None) -> dict[str, Any]:
    """Returns a new detections document with classifications; no files, no printing.

    Raises InputError naming a crop path that matches no detection.
    """
    missing_cols = [c for c in ['path', *label_names] if c not in probs_df.columns]
    if missing_cols:
        raise utils.InputError(f'classification CSV lacks the column(s) {missing_cols[:5]} '
                               '(does the label index belong to this CSV?)')
    parsed = probs_df['path'].astype(str).str.extract(_CROP_PATTERN)
    bad = parsed['image'].isna()
    if bad.any():
        raise utils.InputError(f'classification CSV: {probs_df["path"][bad].iloc[0]!r} is not a '
                               'crop name (<image>___cropNN_mdvX.jpg)')
    probs = probs_df[list(label_names)].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise utils.InputError('classification CSV: probabilities must be numbers')
    lists = classification_lists(probs, threshold)

    # copy only what gets changed: the image and detection dicts (not boxes, not extras)
    out = dict(detections)
    out['images'] = [{**img, 'detections': [dict(d) for d in img['detections']]}
                     if img.get('detections') else dict(img) for img in detections['images']]
    by_file = {img['file']: img for img in out['images']}
    n_merged = 0
    for crop, image, idx, cls in zip(probs_df['path'], parsed['image'], parsed['idx'], lists,
                                     strict=True):
        img = by_file.get(image)
        dets = (img or {}).get('detections') or []
        i = int(idx)
        if img is None or i >= len(dets):
            raise utils.InputError(f'crop {crop!r} matches no detection in the detections JSON')
        dets[i]['classifications'] = cls
        n_merged += 1
    info = dict(out.get('info') or {})
    if _version_tuple(info.get('format_version', '1.0')) < _version_tuple(FORMAT_VERSION):
        info['format_version'] = FORMAT_VERSION
    info['classifier'] = classifier_name
    info['classification_completion_time'] = time.strftime('%Y-%m-%d %H:%M:%S')
    if typical_threshold is not None:
        meta = dict(info.get('classifier_metadata') or {})
        meta['typical_classification_threshold'] = typical_threshold
        info['classifier_metadata'] = meta
    out['info'] = info
    out['classification_categories'] = utils.label_index_dict(label_names)
    logger.info('merged classifications into %d detections', n_merged)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('classification_csv', help="run_classifier output CSV, or '-'")
    parser.add_argument('label_names_json', help='label index JSON of the CSV columns')
    parser.add_argument('-o', '--output-json', required=True, help="merged JSON, or '-'")
    parser.add_argument('-n', '--classifier-name', required=True,
                        help='name recorded in info.classifier')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.1,
                        help='leave out categories below this confidence (default: 0.1)')
    parser.add_argument('--typical-confidence-threshold', type=utils.probability,
                        help='a useful default threshold for users, recorded in '
                             'info.classifier_metadata (not applied here)')
    parser.add_argument('-j', '--detection-json', required=True,
                        help='MegaDetector output JSON the crops came from')
    parser.add_argument('--json-indent', type=utils.nonneg_int,
                        help='indent the output JSON (default: compact, fastest)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    if args.classification_csv == '-' and args.detection_json == '-':
        raise utils.InputError('only one input can be read from stdin')
    labels = utils.load_label_index(args.label_names_json)
    probs = utils.read_csv(args.classification_csv, dtype={'path': str})
    detections = check_document(utils.read_json(args.detection_json), args.detection_json)
    merged = merge(probs, labels, detections, args.threshold, args.classifier_name,
                   args.typical_confidence_threshold)
    utils.write_json(merged, args.output_json, indent=args.json_indent)
    if args.output_json != '-':
        logger.info('wrote %d images to %s', len(merged['images']), args.output_json)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
