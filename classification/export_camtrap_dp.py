r"""Export classified photos as a Camtrap DP 1.0 data package (for GBIF and the
camera-trap platforms).

Reads the Timelapse JSON of merge_classification_detection_output (MegaDetector
boxes with ``classifications``), the photos (for their EXIF times: Camtrap DP
needs when each photo was taken) and a deployments CSV that places each camera
folder (see classification/camtrap_dp.py for its columns), and writes the
folder OUTPUT_DIR:

    datapackage.json   package metadata (Camtrap DP profile 1.0): project,
                       contributor, spatial/temporal/taxonomic coverage
    deployments.csv    one row per deployment; start/end from the CSV, else the
                       times of its first and last photo
    media.csv          one row per photo (timestamp; filePath: the photo's path
                       under the photos folder, after --media-root when given)
    observations.csv   media-level observations: one per box of at least
                       --threshold (animal/human/vehicle with its bbox; an
                       animal's scientificName and classificationProbability
                       from merge's rolled-up taxon, else the classifier's top
                       class), one 'blank' per photo without a box; with
                       --events also event-level observations (below)

Event-level observations (--events): photos are grouped into sequences as
classify_sequences groups them (--coco: each image's seq_id; otherwise per
camera folder, a new sequence after a gap of more than --max-gap-seconds,
default 60, between EXIF times); the event ids are classify_sequences' seq_id
values for the same photos and settings. Each sequence is an event, over its
photos that the package holds: one 'animal'
observation when any of its photos has an animal box (scientificName and
classificationProbability from the conf-weighted mean of its animal
detections' classifications, the classifier's top class; count: the most
animal boxes in one photo), one 'human' (with such a count), one 'vehicle' and
one 'unknown' (a box of another detector category; neither with a count), one
'blank' when none of its photos has a box; the media-level observations carry
its eventID. Ecologists count events, not photos.

Camtrap DP reads a relative filePath as a path inside the package folder:
without --media-root (a URL, or the photos folder relative to where the
package will sit) place the package folder at the photos folder's root. Without
--taxonomy the classifier labels are written as scientific names as they are.
A file merged with --relative-conf is refused.

The folder is written under a temporary name and renamed; an existing folder
is replaced only when it is empty or a package this step wrote. Photos with no
EXIF time, in no deployment folder, taken outside their deployment's given
start or end, or failed by the detector are left out and listed in
``<logdir>/export_camtrap_dp_log_<time>.json`` (the log folder may not be the
package folder or inside it). Camera clocks carry no time zone: --utc-offset
gives theirs.

Example:
    python -m classification.export_camtrap_dp merged.json camtrap_dp \
        --images-dir photos --deployments deployments.csv \
        --title "Forest survey 2024" --contributor "Jane Doe" --utc-offset +02:00 \
        --taxonomy taxa.csv --threshold 0.2 --media-root ../photos --events
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from classification import camtrap_dp, photo_times, sequences, utils
from detection.detector_output import category_kind, read_document, same_file

logger = logging.getLogger(__name__)

DEFAULT_MAX_GAP_SECONDS = 60.0      # as classify_sequences


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('detections_json',
                        help="merge_classification_detection_output's JSON, or '-'")
    parser.add_argument('output_dir', help='the package folder to write')
    parser.add_argument('-i', '--images-dir', required=True,
                        help='folder the photo paths of the JSON are relative to')
    parser.add_argument('-d', '--deployments', required=True,
                        help='CSV: folder,deploymentID,latitude,longitude[,...]')
    parser.add_argument('--title', required=True, help='project title')
    parser.add_argument('--contributor', required=True,
                        help='the contact person or organization')
    parser.add_argument('--utc-offset', type=_offset, required=True,
                        help="time zone of the cameras' clocks: Z, +hh:mm or -hh:mm")
    parser.add_argument('--taxonomy',
                        help='CSV label,scientificName[,taxonRank][,vernacularName] '
                             '(default: none; the classifier labels are then written '
                             'as scientificName as they are)')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.2,
                        help='detection confidence for an observation (default: 0.2)')
    parser.add_argument('--sampling-design', default='opportunistic',
                        choices=[s.value for s in camtrap_dp.SamplingDesign],
                        help='the project\'s sampling design (default: opportunistic)')
    parser.add_argument('--capture-method', default='activityDetection',
                        choices=[c.value for c in camtrap_dp.CaptureMethod],
                        help='how the cameras took photos (default: activityDetection)')
    parser.add_argument('--license', help='data licence, e.g. CC-BY-4.0 or CC0-1.0')
    parser.add_argument('--classified-by',
                        help='classifier name for classifiedBy (default: info.classifier)')
    parser.add_argument('--media-root', type=_media_root,
                        help='prefix of media.filePath: a URL (https://...) or the photos '
                             'folder relative to where the package will sit, e.g. '
                             '../photos (default: none, the paths under --images-dir, '
                             'which Camtrap DP reads as inside the package folder)')
    parser.add_argument('--events', action='store_true',
                        help='also write event-level observations, one event per sequence '
                             'of photos')
    parser.add_argument('--coco',
                        help='with --events: COCO Camera Traps JSON giving each photo\'s '
                             'seq_id (default: sequences from EXIF times)')
    parser.add_argument('--max-gap-seconds', type=utils.positive_float,
                        help='with --events and no --coco: the longest gap within a '
                             f'sequence (default: {DEFAULT_MAX_GAP_SECONDS:g})')
    parser.add_argument('--threads', type=utils.positive_int, default=8,
                        help='threads reading EXIF times (default: 8)')
    parser.add_argument('--logdir', default='.',
                        help='folder for the failure log (default: .)')
    args = parser.parse_args(argv)
    if not args.events and (args.coco is not None or args.max_gap_seconds is not None):
        parser.error('--coco and --max-gap-seconds go with --events')
    if args.coco is not None and args.max_gap_seconds is not None:
        parser.error('--max-gap-seconds goes without --coco (--coco gives the sequences)')
    return args


def _offset(text: str) -> str:
    try:
        return camtrap_dp.check_utc_offset(text)
    except utils.InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _media_root(text: str) -> str:
    try:
        return camtrap_dp.check_media_root(text)
    except utils.InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def check_logdir(logdir: str, output_dir: str) -> None:
    """The failure log may not go into the package folder: the package would no
    longer be only its own files (and the next run would refuse it)."""
    log, out = Path(logdir).resolve(), Path(output_dir).resolve()
    if log == out or out in log.parents:
        raise utils.InputError(f'--logdir {logdir}: is the package folder {output_dir} or '
                               'inside it; give a log folder outside the package')


def events_of(doc: dict[str, Any], exported: list[dict[str, Any]],
              times: Mapping[str, dt.datetime | None], threshold: float,
              coco: str | None, max_gap_seconds: float | None, source: str
              ) -> list[camtrap_dp.Event]:
    """Every photo of ``doc`` grouped into sequences exactly as classify_sequences
    groups them (so the ids match its CSV), each then cut down to its exported
    photos (``exported``) and given their combined classification (none when the
    JSON has no classifier categories). Sequences with no exported photo are
    left out."""
    files = [img['file'] for img in doc['images']]
    if coco is not None:
        grouping = sequences.sequences_from_coco(utils.read_json(coco), files, coco)
        for seq in grouping.sequences:
            if not seq.seq_id.strip() or seq.seq_id != seq.seq_id.strip() or any(
                    ord(c) < 32 for c in seq.seq_id):
                raise utils.InputError(f'{coco}: seq_id {seq.seq_id[:40]!r} is empty or has '
                                       'spaces around it or control characters')
    else:
        gap = DEFAULT_MAX_GAP_SECONDS if max_gap_seconds is None else max_gap_seconds
        grouping = sequences.sequences_from_times({f: times.get(f) for f in files}, gap)
    kept = {same_file(img['file']) for img in exported}
    cut = []
    for seq in grouping.sequences:
        pairs = [(f, t) for f, t in zip(seq.files, seq.times, strict=True)
                 if same_file(f) in kept]
        if pairs:
            cut.append(dataclasses.replace(seq, files=tuple(f for f, _ in pairs),
                                           times=tuple(t for _, t in pairs)))
    grouping = sequences.Grouping(tuple(cut))
    cats = doc.get('classification_categories') or {}
    if not any(category_kind(str(k)) == 'classifier' for k in cats):
        return [camtrap_dp.Event(seq.seq_id, seq.files) for seq in grouping.sequences]
    order = sequences.category_order(doc, source, csv_columns=False)
    results = sequences.combine({**doc, 'images': exported}, grouping, threshold, source,
                                csv_columns=False)
    events = []
    for r in results:
        top = r.top()
        events.append(camtrap_dp.Event(
            r.sequence.seq_id, r.sequence.files,
            None if top is None else order[top][0],
            None if top is None or r.probs is None else r.probs[top]))
    return events


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    utils.check_one_stdin(args.detections_json, args.deployments, args.taxonomy, args.coco)
    camtrap_dp.check_output_dir(args.output_dir)
    check_logdir(args.logdir, args.output_dir)
    deployments = camtrap_dp.read_deployments(args.deployments)
    taxonomy = camtrap_dp.read_taxonomy(args.taxonomy) if args.taxonomy else None
    doc = read_document(args.detections_json)
    camtrap_dp.check_document(doc, args.detections_json)
    settings = camtrap_dp.ExportSettings(
        title=args.title, contributor=args.contributor, utc_offset=args.utc_offset,
        threshold=args.threshold,
        sampling_design=camtrap_dp.SamplingDesign(args.sampling_design),
        capture_method=camtrap_dp.CaptureMethod(args.capture_method),
        license=args.license, classified_by=args.classified_by,
        media_root=args.media_root)
    unsafe: dict[str, str] = {}
    kept = []
    for img in doc['images']:
        try:
            utils.safe_join(args.images_dir, img['file'])
            kept.append(img)
        except utils.InputError as e:
            unsafe[img['file']] = str(e)
    n_images = len(doc['images'])
    times = photo_times.photo_times(args.images_dir, [img['file'] for img in kept], args.threads)
    doc = {**doc, 'images': kept}
    events = None
    if args.events:
        exported = camtrap_dp.exported_images(doc, times, deployments, settings.utc_offset)
        events = events_of(doc, exported, times, settings.threshold, args.coco,
                           args.max_gap_seconds, args.detections_json)
    package = camtrap_dp.build_package(doc, times, deployments, settings, taxonomy,
                                       source=args.detections_json, events=events)
    failures = {**unsafe, **package.failures}
    utils.writable_dir(args.logdir)
    camtrap_dp.write_package(package, args.output_dir)
    tables = package.tables
    log = utils.write_failure_log(
        args.logdir, camtrap_dp.STEP,
        {'images': n_images, 'media': len(tables['media']),
         'observations': len(tables['observations']), 'failed': len(failures)},
        failures)
    for name, why in list(failures.items())[:20]:
        logger.warning('%s: %s', name, why)
    logger.info('wrote %s: %d deployments, %d media, %d observations%s; %d photos left out '
                '(%s)', args.output_dir, len(tables['deployments']), len(tables['media']),
                len(tables['observations']),
                '' if events is None else f' ({sum(bool(e.files) for e in events)} events)',
                len(failures), log)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
