"""How many photo-level classification errors sequence smoothing fixes.

Reads a Timelapse JSON of merge_classification_detection_output, the true class
of each photo ({file: class}, as the demo's new_photos/ground_truth.json) and
the sequences (--coco or --images-dir, as classify_sequences takes them);
smooths the classifications with classification.sequences exactly as
classify_sequences --smoothed-json does, and compares, photo by photo, the top
label of the most confident classified detection with the true class, before
and after. Photos whose true class is 'empty', or without a classified
detection, are not scored (the rule of the demo's summary). Also scores each
sequence's top label against its photos' true class (the most common one).

Example:
    .venv/bin/python bench/measure_sequences.py \
        demo_output/new_photos/detections_with_classifications.json \
        demo_output/project/new_photos/ground_truth.json \
        --coco demo_output/project/new_photos/coco.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classification import photo_times, sequences, utils  # noqa: E402
from detection.detector_output import read_document  # noqa: E402


def photo_labels(doc: Mapping[str, Any]) -> dict[str, str]:
    """{file: top label of its most confident detection with classifications}."""
    names = doc['classification_categories']
    out = {}
    for img in doc['images']:
        dets = [d for d in img.get('detections') or [] if d.get('classifications')]
        if dets:
            best = max(dets, key=lambda d: d['conf'])
            out[img['file']] = names[str(best['classifications'][0][0])]
    return out


def measure(doc: Mapping[str, Any], truth: Mapping[str, str], grouping: sequences.Grouping,
            threshold: float) -> dict[str, Any]:
    results = sequences.combine(doc, grouping, threshold, 'detections')
    smoothed = sequences.smoothed_document(doc, results, threshold, {}, 'detections')
    before, after = photo_labels(doc), photo_labels(smoothed)
    scored = [f for f in before if truth.get(f, 'empty') != 'empty']
    wrong_before = {f for f in scored if before[f] != truth[f]}
    wrong_after = {f for f in scored if after[f] != truth[f]}
    names = [n for _, n in sequences.category_order(doc, 'detections')]
    seq_scored = seq_right = 0
    for r in results:
        classes = Counter(c for f in r.sequence.files if (c := truth.get(f, 'empty')) != 'empty')
        top = r.top()
        if not classes or top is None:
            continue
        seq_scored += 1
        seq_right += names[top] == classes.most_common(1)[0][0]
    return {'photos': len(doc['images']), 'sequences': len(results),
            'photos_scored': len(scored), 'errors_before': len(wrong_before),
            'errors_after': len(wrong_after), 'fixed': len(wrong_before - wrong_after),
            'broken': len(wrong_after - wrong_before), 'sequences_scored': seq_scored,
            'sequences_right': seq_right}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('detections_json')
    parser.add_argument('ground_truth_json', help='{file: class}')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--coco')
    group.add_argument('--images-dir')
    parser.add_argument('--max-gap-seconds', type=float, default=60.0)
    parser.add_argument('--threshold', type=float, default=0.2)
    args = parser.parse_args(argv)
    doc = read_document(args.detections_json)
    truth = utils.read_json(args.ground_truth_json)
    files = [img['file'] for img in doc['images']]
    if args.coco:
        grouping = sequences.sequences_from_coco(utils.read_json(args.coco), files, args.coco)
    else:
        grouping = sequences.sequences_from_times(
            photo_times.photo_times(args.images_dir, files), args.max_gap_seconds)
    m = measure(doc, truth, grouping, args.threshold)
    print(json.dumps(m, indent=1))
    print(f"photo-level errors: {m['errors_before']} of {m['photos_scored']} before "
          f"smoothing, {m['errors_after']} after ({m['fixed']} fixed, {m['broken']} broken); "
          f"sequences right: {m['sequences_right']} of {m['sequences_scored']}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
