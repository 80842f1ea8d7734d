r"""Merge classifier probabilities into a MegaDetector-format detections JSON.

Adds ``"classifications": [[category_id, confidence], ...]`` (sorted by
decreasing confidence, only those of at least --threshold) to each detection
whose crop was classified, and ``classification_categories`` plus the
classifier's name and time to ``info``. The result opens in Timelapse.

Two input modes:
- --detection-json: MegaDetector output for new photos; crop paths are
  ``<file>___cropNN_mdvX.jpg``. Every field of the detections JSON is kept.
- --queried-images-json with --detector-output-cache-dir and
  --detector-version: crops of a classification dataset (``<dataset>/<file>
  ___cropNN[_mdvX].jpg``, e.g. evaluate_model's outputs_test.csv.gz). Boxes
  come from the detector output cache, or from the ground truth (conf 1.0).
  --datasets keeps some datasets; --samples-per-label samples crops per label.

The CSV holds one probability column per label, a ``label`` column (the true
label), or both. --label first|last adds the true label as category
``1000000 + index`` with confidence 1.0 (named "label: <name>"); with a CSV
of labels only, that is the whole list. --relative-conf replaces each
confidence by how far it exceeds the true label's confidence (for finding
mislabeled images in Timelapse); those are differences, not probabilities, so
``info.classifier_metadata.relative_conf`` is set to true, and later steps
(classify_sequences, export_camtrap_dp) refuse the file. Category names must
be unique: a label named like the "label: X" or "taxon: X" entries is refused.

Example:
    python -m classification.merge_classification_detection_output \
        classifier_output.csv.gz label_index.json \
        --detection-json detections.json --output-json merged.json \
        --classifier-name my-classifier --threshold 0.1

    python -m classification.merge_classification_detection_output \
        run1/outputs_test.csv.gz run1/label_index.json \
        --queried-images-json run1/queried_images.json \
        --detector-output-cache-dir mdcache --detector-version 5a \
        --output-json outputs_test.json --classifier-name mine --label last

Taxonomy (classification/rollup.py has the rules):
- --taxonomy-csv with --label-spec adds ``classification_category_descriptions``
  ({id: taxonomy string, root first, ";"-separated, e.g.
  "animalia;chordata;mammalia;carnivora;canidae;vulpes"}) for every category; a
  label outside the taxonomy is described by its own name.
- --rollup-threshold T: a detection whose top label is below T gets, first in
  its list, the lowest taxon whose labels' summed probability reaches T: category
  ``2000000 + index`` (named "taxon: <name>", e.g. "taxon: canidae", apart from
  a label "canidae"; "taxon: <name> (<level>)" where two taxa share a name), with
  that sum; the categories list the taxa a rollup can answer (two labels or more
  below, not all under one child, and not every label of the tree). The label
  entries follow as without the rollup. Detections whose top label reaches T, or
  for which no taxon does, keep their list as it is.
  --rollup-max-level (e.g. class) keeps taxa above that level out.
- --allow-list FILE: labels allowed per location (a photo's longest listed
  folder prefix, or "*"; case-sensitive, "./" and trailing "/" ignored); other
  labels get 0, the rest are rescaled to sum to 1, before the threshold and the
  rollup. The listed confidences are the rescaled ones. Each listed location
  that matches no photo is logged as a warning.

    python -m classification.merge_classification_detection_output \
        classifier_output.csv.gz label_index.json --detection-json detections.json \
        --output-json merged.json --classifier-name mine \
        --taxonomy-csv taxonomy.csv --label-spec label_spec.json \
        --rollup-threshold 0.8 --allow-list allowed_labels.csv

Inputs: the CSV, or '-' for stdin; its label index JSON. Output: the merged
JSON, or '-' for stdout.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from classification import classifier_output, rollup, utils
from classification.taxonomy import TAXONOMY_LEVELS
from detection.detector_output import (
    DEFAULT_DETECTION_CATEGORIES,
    FORMAT_VERSION,
    LABEL_ID_OFFSET,
    TAXON_ID_OFFSET,
    category_kind,
    detector_name,
    load_cache,
    read_document,
    read_queried_images,
)

logger = logging.getLogger(__name__)



def _version_tuple(v: Any) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(v).split('.'))
    except ValueError:
        return (0,)


def classification_lists(df: pd.DataFrame, label_names: Sequence[str], threshold: float,
                         label_pos: str | None = None, relative_conf: bool = False
                         ) -> list[list[list[Any]]]:
    """Per row: [[category id, confidence], ...] of confidences >= threshold,
    highest first; plus the true label's entry first or last (``label_pos``)."""
    has_preds = all(name in df.columns for name in label_names)
    has_label = 'label' in df.columns
    prob_columns = [c for c in df.columns if c not in classifier_output.NOT_PROBABILITIES]
    extra = [c for c in prob_columns if c not in label_names]
    if extra or (prob_columns and not has_preds):
        missing = [n for n in label_names if n not in df.columns]
        raise utils.InputError(
            'classification CSV: its probability columns do not match the label index ('
            + (f'not in the index: {extra[:5]}' if extra else f'missing: {missing[:5]}') + ')')
    if not has_preds and not has_label:
        raise utils.InputError('classification CSV needs a probability column per label of '
                               'the label index, or a "label" column')
    label_idx = None
    if has_label:
        name_to_idx = {name: i for i, name in enumerate(label_names)}
        unknown = sorted(set(df['label'].astype(str)) - set(name_to_idx))
        if unknown:
            raise utils.InputError(f'classification CSV: labels {unknown[:5]} are not in the '
                                   'label index')
        label_idx = df['label'].astype(str).map(name_to_idx).to_numpy()
    if relative_conf and (label_idx is None or not has_preds):
        raise utils.InputError('--relative-conf needs both a "label" column and probabilities')
    if not has_preds:
        label_pos = label_pos or 'last'
        lists: list[list[list[Any]]] = [[] for _ in range(len(df))]
    else:
        probs = df[list(label_names)].to_numpy(dtype=np.float64)
        if not np.isfinite(probs).all():
            raise utils.InputError('classification CSV: probabilities must be numbers')
        if relative_conf:
            assert label_idx is not None
            own = probs[np.arange(len(probs)), label_idx]
            probs = np.maximum(probs - own[:, None], 0.0)
        order = np.argsort(-probs, axis=1, kind='stable')
        sorted_p = np.round(np.take_along_axis(probs, order, axis=1), 4)
        keep = sorted_p >= threshold
        lists = [[[str(i), p] for i, p, ok in zip(ids, ps, k, strict=True) if ok]
                 for ids, ps, k in zip(order.tolist(), sorted_p.tolist(), keep.tolist(),
                                       strict=True)]
    if label_pos is not None and label_idx is not None:
        for lst, li in zip(lists, label_idx.tolist(), strict=True):
            item = [str(li + LABEL_ID_OFFSET), 1.0]
            if label_pos == 'first':
                lst.insert(0, item)
            else:
                lst.append(item)
    return lists


def check_crop_versions(parsed: pd.DataFrame, detections: Mapping[str, Any]) -> None:
    """Refuses crops named for another detector version than the detections' own
    (``info.detector``): their box indices refer to another detector's boxes. A
    short version that the other extends ("5a" and "5a.0.0") is the same."""
    name = detector_name(detections)
    if name is None:
        return
    want = utils.detector_version_from_name(name)
    for ver in sorted(set(parsed['ver'].dropna())):
        if not (want == ver or want.startswith(f'{ver}.') or ver.startswith(f'{want}.')):
            raise utils.InputError(f'crops of detector version {ver} cannot be merged into '
                                   f'detections of {name} (version {want})')


def _parse_paths(paths: pd.Series) -> pd.DataFrame:
    parsed = paths.astype(str).str.extract(utils.CROP_NAME_RE.pattern)
    bad = parsed['image'].isna()
    if bad.any():
        raise utils.InputError(f'classification CSV: {paths[bad].iloc[0]!r} is not a crop name '
                               '(<image>___cropNN_mdvX.jpg)')
    return parsed


def queried_images_document(crop_paths: pd.Series, queried: Mapping[str, Any], cache_dir: str,
                            version: str) -> dict[str, Any]:
    """A detections document for classification-dataset crops: boxes from the
    detector output cache, or from the ground truth (conf 1.0)."""
    parsed = _parse_paths(crop_paths)
    images: dict[str, dict[str, Any]] = {}
    caches: dict[str, dict[str, Any]] = {}
    categories: dict[str, str] | None = None
    detector = None
    for image, ver in sorted(set(zip(parsed['image'], parsed['ver'].fillna(''),
                                     strict=True))):
        if image in images:
            continue
        ds = image.split('/', 1)[0]
        if ver:
            if ver != version:
                raise utils.InputError(f'crop of {image} is from MegaDetector v{ver}, not '
                                       f'--detector-version {version}')
            if ds not in caches:
                cache = load_cache(cache_dir, version, ds)
                if cache is None:
                    raise utils.InputError(f'no cached detections for dataset {ds} in '
                                           f'{cache_dir}/v{version}')
                cats = dict(cache.get('detection_categories', DEFAULT_DETECTION_CATEGORIES))
                if categories is not None and cats != categories:
                    raise utils.InputError(f'dataset {ds}: detection categories differ between '
                                           'cache files')
                categories = cats
                detector = detector or (cache.get('info') or {}).get('detector')
                caches[ds] = {img['file']: img for img in cache['images']}
            entry = caches[ds].get(image[len(ds) + 1:])
            if entry is None:
                raise utils.InputError(f'{image}: not in the detector output cache of {ds}')
            images[image] = {**entry, 'file': image,
                             'detections': [dict(d) for d in entry.get('detections') or []]}
        else:
            q = queried.get(image)
            if q is None or not q.get('bbox'):
                raise utils.InputError(f'{image}: no ground-truth boxes in the queried images')
            cat_ids = {v: k for k, v in (categories or DEFAULT_DETECTION_CATEGORIES).items()}
            images[image] = {'file': image, 'detections': [
                {'category': cat_ids.get(b.get('category', 'animal'), '1'), 'conf': 1.0,
                 'bbox': b['bbox']} for b in q['bbox']]}
    for img in images.values():
        dets = img.get('detections') or []
        img['max_detection_conf'] = max((d['conf'] for d in dets), default=0.0)
    return {'info': {'format_version': FORMAT_VERSION,
                     **({'detector': detector} if detector else {})},
            'detection_categories': categories or dict(DEFAULT_DETECTION_CATEGORIES),
            'images': [images[k] for k in sorted(images)]}


def apply_taxonomy(probs_df: pd.DataFrame, images: pd.Series, label_names: Sequence[str],
                   options: rollup.RollupOptions, relative_conf: bool = False
                   ) -> tuple[pd.DataFrame, rollup.RollupResult | None]:
    """The allow-list applied to the probability columns (a new table), and the
    rollup of each row (None without a rollup threshold)."""
    if options.allow_list is None and options.threshold is None:
        return probs_df, None
    if relative_conf:
        raise utils.InputError('--relative-conf cannot be combined with --allow-list or '
                               '--rollup-threshold')
    if not any(c not in classifier_output.NOT_PROBABILITIES for c in probs_df.columns):
        raise utils.InputError('--allow-list and --rollup-threshold need a probability column '
                               'per label in the classification CSV')
    missing = [n for n in label_names if n not in probs_df.columns]
    if missing:
        raise utils.InputError('classification CSV: its probability columns do not match the '
                               f'label index (missing: {missing[:5]})')
    probs = probs_df[list(label_names)].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise utils.InputError('classification CSV: probabilities must be numbers')
    if options.allow_list is not None:
        probs = rollup.filter_by_allow_list(probs, images, label_names, options.allow_list)
        probs_df = probs_df.copy()
        probs_df[list(label_names)] = probs
    result = None
    if options.threshold is not None:
        lt = options.label_taxa
        if lt is None or list(lt.labels) != list(label_names):
            raise utils.InputError('the rollup needs the taxa of the label index\'s labels '
                                   '(--taxonomy-csv and --label-spec)')
        result = rollup.rollup(probs, lt, options.threshold, options.max_level)
        counts = np.bincount(result.code, minlength=3)
        logger.info('rollup at %.2f: %d crop(s) keep their label, %d rolled up to a taxon, '
                    '%d reach no taxon', options.threshold, counts[0], counts[1], counts[2])
    return probs_df, result


def _descriptions(categories: Mapping[str, str], lt: rollup.LabelTaxa) -> dict[str, str]:
    out = {}
    for key in categories:
        i = int(key)
        if category_kind(key) == 'taxon':
            out[key] = lt.taxa[i - TAXON_ID_OFFSET].description
        else:                   # a classifier label, or merge --label's copy of one
            out[key] = lt.label_description(i % LABEL_ID_OFFSET)
    return out


def check_unique_names(categories: Mapping[str, str]) -> None:
    """Refuses two categories of one name (later steps, like classify_sequences,
    tell categories apart by name): a label named like merge's ``label: X`` or
    ``taxon: X`` entries."""
    seen: dict[str, str] = {}
    for key, name in categories.items():
        if name in seen:
            raise utils.InputError(f'classification category name {name!r} is used twice '
                                   f'(categories {seen[name]} and {key}); rename the label '
                                   '(the names "label: X" and "taxon: X" are merge\'s own)')
        seen[name] = key


def merge(probs_df: pd.DataFrame, label_names: Sequence[str], detections: Mapping[str, Any],
          threshold: float, classifier_name: str, typical_threshold: float | None = None,
          label_pos: str | None = None, relative_conf: bool = False,
          options: rollup.RollupOptions | None = None) -> dict[str, Any]:
    """Returns a new detections document with classifications; no files, no printing.

    With ``options``: descriptions of the categories, the allow-list applied, and
    a rolled-up taxon (category ``2000000 + index``) first in the list of each
    detection whose top label is below the rollup threshold.
    Raises InputError naming a crop path that matches no detection.
    """
    options = options or rollup.RollupOptions()
    parsed = _parse_paths(probs_df['path'])
    check_crop_versions(parsed, detections)
    probs_df, rolled = apply_taxonomy(probs_df, parsed['image'], label_names, options,
                                      relative_conf)
    lists = classification_lists(probs_df, label_names, threshold, label_pos, relative_conf)
    if rolled is not None:
        at = 1 if label_pos == 'first' else 0
        for row in np.flatnonzero(rolled.code == 1).tolist():
            lists[row].insert(at, [str(TAXON_ID_OFFSET + int(rolled.taxon[row])),
                                   round(float(rolled.prob[row]), 4)])
    # copy only what gets changed: the image and detection dicts (not boxes, not extras)
    out = dict(detections)
    out['images'] = [{**img, 'detections': [dict(d) for d in img['detections']]}
                     if img.get('detections') else dict(img) for img in detections['images']]
    by_file = {img['file']: img for img in out['images']}
    for crop, image, idx, cls in zip(probs_df['path'], parsed['image'], parsed['idx'], lists,
                                     strict=True):
        img = by_file.get(image)
        dets = (img or {}).get('detections') or []
        i = int(idx)
        if img is None or i >= len(dets):
            raise utils.InputError(f'crop {crop!r} matches no detection in the detections JSON')
        dets[i]['classifications'] = cls
    info = dict(out.get('info') or {})
    if _version_tuple(info.get('format_version', '1.0')) < _version_tuple(FORMAT_VERSION):
        info['format_version'] = FORMAT_VERSION
    info['classifier'] = classifier_name
    info['classification_completion_time'] = time.strftime('%Y-%m-%d %H:%M:%S')
    if typical_threshold is not None or options.threshold is not None or relative_conf:
        meta = dict(info.get('classifier_metadata') or {})
        if typical_threshold is not None:
            meta['typical_classification_threshold'] = typical_threshold
        if options.threshold is not None:
            meta['taxonomic_rollup_threshold'] = options.threshold
        if relative_conf:
            # confidences are differences, not probabilities: later steps refuse them
            meta['relative_conf'] = True
        info['classifier_metadata'] = meta
    out['info'] = info
    categories = utils.label_index_dict(label_names)
    if label_pos is not None or not all(n in probs_df.columns for n in label_names):
        categories.update({str(i + LABEL_ID_OFFSET): f'label: {n}'
                           for i, n in enumerate(label_names)})
    if rolled is not None and options.label_taxa is not None:
        categories.update({str(TAXON_ID_OFFSET + k): name for k, name
                           in rollup.taxon_category_names(options.label_taxa,
                                                          options.max_level).items()})
    check_unique_names(categories)
    out['classification_categories'] = categories
    if options.label_taxa is not None:
        out['classification_category_descriptions'] = _descriptions(categories,
                                                                    options.label_taxa)
    logger.info('merged classifications into %d detections', len(probs_df))
    return out


def select_rows(df: pd.DataFrame, datasets: Sequence[str] | None, samples_per_label: int | None,
                seed: int) -> pd.DataFrame:
    """Rows of the given datasets (first path component); then at most
    ``samples_per_label`` random rows per label (all rows of smaller labels)."""
    if datasets:
        ds = df['path'].astype(str).str.split('/', n=1).str[0]
        unknown = sorted(set(datasets) - set(ds))
        if unknown:
            logger.warning('no crops from dataset(s) %s', unknown)
        df = df[ds.isin(datasets)]
    if samples_per_label is not None:
        if 'label' not in df.columns:
            raise utils.InputError('--samples-per-label needs a "label" column in the CSV')
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for _, group in sorted(df.groupby('label').groups.items()):
            idx = np.asarray(group)
            keep.extend(rng.choice(idx, size=min(samples_per_label, len(idx)), replace=False))
        df = df.loc[sorted(keep)]
    return df.reset_index(drop=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('classification_csv', nargs='+',
                        help="run_classifier / evaluate_model CSV, or '-'; or all shard "
                             'files of a run_classifier --shard run (paths or a quoted glob)')
    parser.add_argument('label_names_json', help='label index JSON of the CSV columns')
    parser.add_argument('-o', '--output-json', required=True, help="merged JSON, or '-'")
    parser.add_argument('-n', '--classifier-name', required=True,
                        help='name recorded in info.classifier')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.1,
                        help='leave out categories below this confidence (default: 0.1)')
    parser.add_argument('-d', '--datasets', nargs='*',
                        help='with -q: keep crops of these datasets only')
    parser.add_argument('--typical-confidence-threshold', type=utils.probability,
                        help='a useful default threshold for users, recorded in '
                             'info.classifier_metadata (not applied here)')
    parser.add_argument('-j', '--detection-json',
                        help='MegaDetector output JSON the crops came from')
    parser.add_argument('-q', '--queried-images-json',
                        help='json_validator output (for classification-dataset crops)')
    parser.add_argument('-c', '--detector-output-cache-dir', help='with -q: the mdcache folder')
    parser.add_argument('-v', '--detector-version', help='with -q: MegaDetector version')
    parser.add_argument('-s', '--samples-per-label', type=utils.positive_int,
                        help='keep this many random crops per label')
    parser.add_argument('--seed', type=int, default=123,
                        help='seed for --samples-per-label (default: 123)')
    parser.add_argument('--label', choices=['first', 'last'], default=None,
                        help='add the true label (category 1000000 + index, conf 1.0) first or '
                             'last in each list')
    parser.add_argument('--relative-conf', action='store_true',
                        help='confidence minus the true label\'s confidence (floored at 0); '
                             'recorded as info.classifier_metadata.relative_conf')
    parser.add_argument('--json-indent', type=utils.nonneg_int,
                        help='indent the output JSON (default: compact, fastest)')
    tax = parser.add_argument_group('taxonomy (see classification/rollup.py)')
    tax.add_argument('--taxonomy-csv',
                     help='taxonomy CSV; with --label-spec, writes '
                          'classification_category_descriptions')
    tax.add_argument('--label-spec',
                     help='label specification (JSON, or CSV by its suffix) of the '
                          'classifier\'s labels')
    tax.add_argument('--rollup-threshold', type=utils.probability,
                     help='when no label reaches this probability, put first the lowest taxon '
                          'whose labels\' summed probability does (needs --taxonomy-csv and '
                          '--label-spec)')
    tax.add_argument('--rollup-max-level', choices=TAXONOMY_LEVELS, metavar='LEVEL',
                     help='with --rollup-threshold: never roll up above this level')
    tax.add_argument('--allow-list',
                     help='labels allowed per location (CSV location,label or JSON '
                          '{location: [labels]}); others are zeroed and the rest rescaled')
    args = parser.parse_args(argv)
    if (args.taxonomy_csv is None) != (args.label_spec is None):
        parser.error('--taxonomy-csv and --label-spec go together')
    if args.rollup_threshold is not None and args.taxonomy_csv is None:
        parser.error('--rollup-threshold needs --taxonomy-csv and --label-spec')
    if args.rollup_max_level is not None and args.rollup_threshold is None:
        parser.error('--rollup-max-level needs --rollup-threshold')
    if args.relative_conf and (args.rollup_threshold is not None or args.allow_list):
        parser.error('--relative-conf cannot be combined with --rollup-threshold or '
                     '--allow-list')
    if (args.detection_json is None) == (args.queried_images_json is None):
        parser.error('give exactly one of --detection-json and --queried-images-json')
    if args.queried_images_json and not (args.detector_output_cache_dir
                                         and args.detector_version):
        parser.error('--queried-images-json needs --detector-output-cache-dir and '
                     '--detector-version')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    inputs = [*args.classification_csv, args.label_names_json, args.detection_json,
              args.queried_images_json, args.taxonomy_csv, args.label_spec, args.allow_list]
    utils.check_one_stdin(*inputs)
    # writing over an input (the taxonomy CSV, the allow-list, ...) would destroy it
    utils.check_output_path(args.output_json, inputs)
    df = classifier_output.read_outputs(args.classification_csv,
                                        dtype={'path': str, 'label': str})
    # read after the classifications: in a pipe, the step before writes this file
    # (aggregate_classifier_probs -i) before it closes its output
    labels = utils.load_label_index(args.label_names_json)
    if 'path' not in df.columns:
        raise utils.InputError(f'{args.classification_csv[0]}: no "path" column')
    options = rollup.RollupOptions(
        label_taxa=(rollup.load_label_taxa(labels, args.label_spec, args.taxonomy_csv)
                    if args.taxonomy_csv else None),
        threshold=args.rollup_threshold, max_level=args.rollup_max_level,
        allow_list=rollup.read_allow_list(args.allow_list, labels) if args.allow_list else None)
    df = select_rows(df, args.datasets, args.samples_per_label, args.seed)
    if args.detection_json:
        detections = read_document(args.detection_json)
    else:
        utils.check_detector_version(args.detector_version)
        queried = read_queried_images(args.queried_images_json)
        detections = queried_images_document(df['path'], queried,
                                             args.detector_output_cache_dir,
                                             args.detector_version)
    merged = merge(df, labels, detections, args.threshold, args.classifier_name,
                   args.typical_confidence_threshold, args.label, args.relative_conf, options)
    utils.write_json(merged, args.output_json, indent=args.json_indent)
    if args.output_json != '-':
        logger.info('wrote %d images to %s', len(merged['images']), args.output_json)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
