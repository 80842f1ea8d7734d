"""Sequences: grouping photos (seq_id, or folder and time gap), combining their
classifications, the per-sequence CSV and the smoothed Timelapse JSON."""
from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classification import classify_sequences, photo_times, sequences
from classification.utils import InputError
from tests.conftest import REPO, read_json, run_module, snapshot, write
from tests.test_cli import assert_valid_megadetector_output

T0 = dt.datetime(2025, 7, 1, 6, 0, 0)
CATS = {'0': 'deer', '1': 'fox', '2': 'rabbit'}


def det(conf, classifications=None, category='1'):
    d = {'category': category, 'conf': conf, 'bbox': [0.1, 0.1, 0.2, 0.2]}
    if classifications is not None:
        d['classifications'] = classifications
    return d


def merged_doc(images):
    """A Timelapse JSON as merge_classification_detection_output writes it."""
    return {'info': {'format_version': '1.4', 'detector': 'md_v5a.0.0.pt',
                     'classifier': 'test'},
            'detection_categories': {'1': 'animal', '2': 'person', '3': 'vehicle'},
            'classification_categories': dict(CATS),
            'images': [{'file': f, 'max_detection_conf': max((d['conf'] for d in ds),
                                                             default=0.0),
                        'detections': ds} for f, ds in images]}


def photo(path, when=None):
    """A small JPEG with an EXIF DateTimeOriginal (or none)."""
    from PIL import Image
    exif = Image.Exif()
    if when is not None:
        exif.get_ifd(photo_times.EXIF_IFD)[photo_times.DATETIME_ORIGINAL] = when.strftime(
            photo_times.EXIF_FORMAT)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (16, 16)).save(path, 'JPEG', exif=exif.tobytes())


# ------------------------------------------------------------------ grouping

def test_grouping_by_seq_id():
    coco = {'images': [
        {'file_name': 'a/3.jpg', 'seq_id': 's1', 'frame_num': 2, 'location': 'L1',
         'datetime': '2025-07-01 06:00:04'},
        {'file_name': 'a/1.jpg', 'seq_id': 's1', 'frame_num': 0, 'location': 'L1',
         'datetime': '2025-07-01 06:00:00'},
        {'file_name': 'a/2.jpg', 'seq_id': 's1', 'frame_num': 1, 'location': 'L1'},
        {'file_name': 'b/1.jpg', 'seq_id': 7},                    # integer seq_id, no location
        {'file_name': 'b/2.jpg'},                                 # no seq_id: alone
        {'file_name': 'c/unused.jpg', 'seq_id': 's9'},            # not in the detections
    ]}
    got = sequences.sequences_from_coco(coco, ['a/1.jpg', 'a/2.jpg', 'a/./3.jpg', 'b/1.jpg',
                                               'b/2.jpg'], 'c.json')
    assert [(s.seq_id, s.camera, s.files) for s in got.sequences] == [
        ('s1', 'L1', ('a/1.jpg', 'a/2.jpg', 'a/./3.jpg')),
        ('7', 'b', ('b/1.jpg',)), ('photo:b/2.jpg', 'b', ('b/2.jpg',))]
    first = got.sequences[0]
    assert first.start == T0 and first.end == T0 + dt.timedelta(seconds=4)
    assert got.singletons == 1 and got.unused == 1


@pytest.mark.parametrize('coco, fragment', [
    ([], 'expected a COCO Camera Traps'),
    ({'images': [{'seq_id': 's'}]}, 'images[0] has no "file_name"'),
    ({'images': [{'file_name': 'a.jpg'}, {'file_name': './a.jpg'}]}, 'is listed twice'),
    ({'images': [{'file_name': 'a.jpg', 'seq_id': 1.5}]}, '"seq_id"'),
    ({'images': [{'file_name': 'a.jpg', 'seq_id': True}]}, '"seq_id"'),
    ({'images': [{'file_name': 'a.jpg', 'frame_num': '1'}]}, '"frame_num"'),
    ({'images': [{'file_name': 'x.jpg'}]}, "1 photo(s) of the detections file are not in it, "
                                          "e.g. 'a.jpg'"),
    ({'images': [{'file_name': 'a.jpg', 'seq_id': 's', 'location': 'L1'},
                 {'file_name': 'x.jpg', 'seq_id': 's', 'location': 'L2'}]}, 'spans locations'),
])
def test_coco_files_that_do_not_fit_are_refused(coco, fragment):
    files = ['a.jpg', 'x.jpg'] if 'spans' in fragment else ['a.jpg']
    with pytest.raises(InputError, match=re.escape(fragment)):
        sequences.sequences_from_coco(coco, files, 'c.json')


def test_grouping_by_folder_and_time_gap():
    s = dt.timedelta(seconds=1)
    times = {'cam1/a.jpg': T0, 'cam1/b.jpg': T0 + 60 * s,       # exactly the gap: same
             'cam1/c.jpg': T0 + 121 * s,                        # 61 s later: a new one
             'cam1/d.jpg': T0 + 122 * s,
             'cam2/a.jpg': T0 + 30 * s,                         # near in time, other camera
             'cam1/e.jpg': None, 'top.jpg': T0}                 # no time; no folder
    got = sequences.sequences_from_times(times, 60)
    assert [(q.seq_id, q.files) for q in got.sequences] == [
        ('#0001', ('top.jpg',)),
        ('cam1#0001', ('cam1/a.jpg', 'cam1/b.jpg')),
        ('cam1#0002', ('cam1/c.jpg', 'cam1/d.jpg')),
        ('cam1#0003', ('cam1/e.jpg',)),                         # untimed: last, alone
        ('cam2#0001', ('cam2/a.jpg',))]
    assert got.singletons == 1
    assert got.sequences[3].start is None and got.sequences[2].end == T0 + 122 * s
    # a gap a hair shorter splits the first pair
    assert len(sequences.sequences_from_times(times, 59.999).sequences) == 6


def test_photos_in_time_order_whatever_their_names():
    times = {'c/z.jpg': T0, 'c/a.jpg': T0 + dt.timedelta(seconds=2)}
    (seq,) = sequences.sequences_from_times(times, 5).sequences
    assert seq.files == ('c/z.jpg', 'c/a.jpg')


@pytest.mark.parametrize('gap', [0, -1, float('nan'), float('inf')])
def test_the_gap_must_be_above_zero(gap):
    with pytest.raises(InputError, match='above 0'):
        sequences.sequences_from_times({'a.jpg': T0}, gap)


# ------------------------------------------------------------------ combining

def test_combination_is_the_conf_weighted_mean_of_the_animal_detections():
    doc = merged_doc([
        ('c/1.jpg', [det(0.9, [['0', 0.6], ['1', 0.3]]),
                     det(0.9, [['2', 1.0]], category='2'),         # a person: not combined
                     det(0.5)]),                                   # never classified
        ('c/2.jpg', [det(0.1, [['2', 0.9]]),                      # below the threshold
                     det(0.8, [['1', 0.9]])]),
        ('d/1.jpg', [det(0.1, [['2', 0.9]])]),
    ])
    grouping = sequences.sequences_from_coco(
        {'images': [{'file_name': 'c/1.jpg', 'seq_id': 'A'}, {'file_name': 'c/2.jpg',
                                                              'seq_id': 'A'},
                    {'file_name': 'd/1.jpg', 'seq_id': 'B'}]},
        ['c/1.jpg', 'c/2.jpg', 'd/1.jpg'], 'c.json')
    a, b = sequences.combine(doc, grouping, 0.2, 'd.json')
    assert a.detections == 2
    assert a.probs == pytest.approx((0.9 * 0.6 / 1.7, (0.9 * 0.3 + 0.8 * 0.9) / 1.7, 0.0))
    assert a.top() == 1
    assert b.detections == 0 and b.probs is None and b.top() is None
    table = sequences.results_table([a, b], sequences.category_order(doc, 'd.json'))
    assert list(table.columns) == [*sequences.CSV_COLUMNS, 'deer', 'fox', 'rabbit']
    assert table.loc[0, 'top_label'] == 'fox'
    assert table.loc[0, 'top_probability'] == pytest.approx(0.99 / 1.7)
    assert table.loc[0, 'photos'] == 2 and table.loc[0, 'first_file'] == 'c/1.jpg'
    assert table.loc[1, 'top_label'] == '' and pd.isna(table.loc[1, 'deer'])


def test_faint_boxes_count_less():
    # two faint boxes say fox, one clear box says deer: deer (0.9 against 0.6)
    doc = merged_doc([('c/1.jpg', [det(0.9, [['0', 1.0]])]),
                      ('c/2.jpg', [det(0.3, [['1', 1.0]]), det(0.3, [['1', 1.0]])])])
    grouping = sequences.sequences_from_coco(
        {'images': [{'file_name': 'c/1.jpg', 'seq_id': 'A'}, {'file_name': 'c/2.jpg',
                                                              'seq_id': 'A'}]},
        ['c/1.jpg', 'c/2.jpg'], 'c.json')
    (r,) = sequences.combine(doc, grouping, 0.2, 'd.json')
    assert r.probs == pytest.approx((0.6, 0.4, 0.0)) and r.top() == 0
    # with --threshold 0 and only boxes of conf 0, the plain mean
    doc = merged_doc([('c/1.jpg', [det(0.0, [['0', 1.0]])]),
                      ('c/2.jpg', [det(0.0, [['1', 0.5]])])])
    (r,) = sequences.combine(doc, grouping, 0.0, 'd.json')
    assert r.probs == pytest.approx((0.5, 0.25, 0.0))


def test_a_tie_goes_to_the_lowest_category_id():
    doc = merged_doc([('c/1.jpg', [det(0.9, [['1', 0.5], ['0', 0.5]])])])
    grouping = sequences.sequences_from_times({'c/1.jpg': T0}, 60)
    (r,) = sequences.combine(doc, grouping, 0.2, 'd.json')
    assert r.top() == 0
    assert sequences.classification_list(r.probs, sequences.category_order(doc, 'd')) == [
        ['0', 0.5], ['1', 0.5]]


@pytest.mark.parametrize('bad, fragment', [
    ([['9', 0.5]], 'is not [a category'),
    ([['0', 1.5]], 'is not [a category'),
    ([['0', 'high']], 'is not [a category'),
    ([['0']], 'is not [a category'),
    ({'0': 0.5}, 'must be a list'),
])
def test_malformed_classifications_are_refused(bad, fragment):
    doc = merged_doc([('c/1.jpg', [det(0.9, bad)])])
    grouping = sequences.sequences_from_times({'c/1.jpg': T0}, 60)
    with pytest.raises(InputError, match=re.escape(fragment)):
        sequences.combine(doc, grouping, 0.2, 'd.json')


def test_true_labels_and_rollup_taxa_are_not_combined():
    """merge's "label: X" entries (ids from 1000000, conf 1.0) and rollup taxa (ids
    from 2000000) are not predictions: left out of the vectors, the CSV and the
    top label; in the smoothed JSON the labels stay (last) and the taxa go."""
    doc = merged_doc([
        ('c/1.jpg', [det(0.9, [['2000003', 0.85], ['1', 0.5], ['0', 0.35], ['1000000', 1.0]]),
                     det(0.1, [['2000003', 0.9], ['2', 0.4]])]),        # under the threshold
        ('c/2.jpg', [det(0.9, [['1', 0.6], ['1000000', 1.0]])]),
    ])
    doc['classification_categories'].update(
        {'1000000': 'label: deer', '1000001': 'label: fox', '1000002': 'label: rabbit',
         '2000003': 'taxon: canidae'})
    grouping = sequences.sequences_from_times({'c/1.jpg': T0, 'c/2.jpg': T0}, 60)
    cats = sequences.category_order(doc, 'd.json')
    assert cats == list(CATS.items())
    (r,) = sequences.combine(doc, grouping, 0.2, 'd.json')
    assert r.probs == pytest.approx((0.175, 0.55, 0.0)) and r.top() == 1
    table = sequences.results_table([r], cats)
    assert list(table.columns) == [*sequences.CSV_COLUMNS, 'deer', 'fox', 'rabbit']
    assert table.loc[0, 'top_label'] == 'fox'
    assert table.loc[0, 'top_probability'] == pytest.approx(0.55)
    got = sequences.smoothed_document(doc, [r], 0.2, {}, 'd.json')
    lists = [[d['classifications'] for d in img['detections']] for img in got['images']]
    assert lists == [[[['1', 0.55], ['0', 0.175], ['1000000', 1.0]],
                      [['2000003', 0.9], ['2', 0.4]]],                  # not combined: as it was
                     [[['1', 0.55], ['0', 0.175], ['1000000', 1.0]]]]
    assert got['info']['sequence_smoothing']['rollup_entries_dropped'] == 1
    # without taxa on the combined detections, no count
    doc['images'][0]['detections'][0]['classifications'].pop(0)
    got = sequences.smoothed_document(doc, [r], 0.2, {}, 'd.json')
    assert 'rollup_entries_dropped' not in got['info']['sequence_smoothing']
    # an unknown id is still refused, a label id among them or not
    doc['images'][1]['detections'][0]['classifications'].append(['1000009', 1.0])
    with pytest.raises(InputError, match=re.escape('is not [a category')):
        sequences.combine(doc, grouping, 0.2, 'd.json')


# ------------------------------------------------------------------ the command

def _inputs(t):
    doc = merged_doc([
        ('cam/1.jpg', [det(0.95, [['0', 0.7], ['1', 0.2]])]),
        ('cam/2.jpg', [det(0.9, [['1', 0.6], ['0', 0.35]]), det(0.15, [['2', 0.9]])]),
        ('cam/3.jpg', [det(0.85, [['0', 0.8]])]),
        ('cam/4.jpg', [det(0.7, [['2', 0.9]])]),
        ('cam/5.jpg', []),
    ])
    doc['info']['extra'] = {'kept': True}
    coco = {'images': [{'file_name': f'cam/{i}.jpg', 'seq_id': 'one' if i <= 3 else f'x{i}',
                        'location': 'site'} for i in range(1, 6)]}
    return write(t, 'merged.json', doc), write(t, 'coco.json', coco), doc


def test_sequence_csv_and_smoothed_json(tmp_path):
    merged, coco, doc = _inputs(tmp_path)
    out, smooth = tmp_path / 'o' / 'seq.csv', tmp_path / 'o' / 'smooth.json'
    assert classify_sequences.main([merged, str(out), '--coco', coco, '--smoothed-json',
                                    str(smooth)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table['seq_id']) == ['one', 'x4', 'x5']
    one = table.iloc[0]
    assert (one['camera'], one['first_file'], one['last_file'], one['photos'],
            one['detections']) == ('site', 'cam/1.jpg', 'cam/3.jpg', 3, 3)
    assert one['top_label'] == 'deer'
    deer = (0.95 * 0.7 + 0.9 * 0.35 + 0.85 * 0.8) / 2.7
    fox = (0.95 * 0.2 + 0.9 * 0.6) / 2.7
    assert float(one['deer']) == pytest.approx(deer, abs=1e-5)
    assert float(one['fox']) == pytest.approx(fox, abs=1e-5)
    assert table.iloc[2]['top_label'] == '' and table.iloc[2]['detections'] == 0
    got = read_json(smooth)
    combined = [['0', round(deer, 4)], ['1', round(fox, 4)]]
    by_file = {img['file']: img for img in got['images']}
    for f in ('cam/1.jpg', 'cam/3.jpg'):
        assert by_file[f]['detections'][0]['classifications'] == combined
    assert by_file['cam/2.jpg']['detections'][0]['classifications'] == combined   # was fox
    assert by_file['cam/2.jpg']['detections'][1]['classifications'] == [['2', 0.9]]  # < 0.2
    assert by_file['cam/4.jpg'] == doc['images'][3]
    assert got['info']['extra'] == {'kept': True} and got['info']['classifier'] == 'test'
    assert got['info']['sequence_smoothing']['grouping'] == 'seq_id'
    assert got['info']['sequence_smoothing']['threshold'] == 0.2
    assert got['info']['sequence_smoothing']['sequences'] == 3
    assert got['classification_categories'] == CATS
    assert_valid_megadetector_output(smooth)


def test_csv_to_stdout(tmp_path):
    merged, coco, _ = _inputs(tmp_path)
    proc = run_module('classification.classify_sequences', merged, '-', '--coco', coco)
    table = pd.read_csv(io.StringIO(proc.stdout))
    assert len(table) == 3 and 'INFO' not in proc.stdout and 'INFO' in proc.stderr


def test_exif_times_group_photos_by_folder(tmp_path):
    s = dt.timedelta(seconds=1)
    for name, when in [('a/1.jpg', T0), ('a/2.jpg', T0 + 3 * s), ('a/3.jpg', T0 + 600 * s),
                       ('b/1.jpg', T0 + s), ('b/2.jpg', None)]:
        photo(tmp_path / 'img' / name, when)
    doc = merged_doc([(f, [det(0.9, [['1', 0.9]])]) for f in
                      ('a/1.jpg', 'a/2.jpg', 'a/3.jpg', 'b/1.jpg', 'b/2.jpg')])
    merged = write(tmp_path, 'merged.json', doc)
    out = tmp_path / 'seq.csv'
    assert classify_sequences.main([merged, str(out), '--images-dir', str(tmp_path / 'img'),
                                    '--max-gap-seconds', '10']) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(zip(table['seq_id'], table['photos'], table['start_time'], strict=True)) == [
        ('a#0001', 2, '2025-07-01 06:00:00'), ('a#0002', 1, '2025-07-01 06:10:00'),
        ('b#0001', 1, '2025-07-01 06:00:01'), ('b#0002', 1, '')]


def test_both_outputs_land_together(tmp_path):
    """CSV to stdout with the JSON to a file; both gzipped by their suffix."""
    merged, coco, _ = _inputs(tmp_path)
    proc = run_module('classification.classify_sequences', merged, '-', '--coco', coco,
                      '--smoothed-json', str(tmp_path / 's.json'))
    assert len(pd.read_csv(io.StringIO(proc.stdout))) == 3
    assert read_json(tmp_path / 's.json')['info']['sequence_smoothing']['sequences'] == 3
    out, smooth = tmp_path / 'o' / 'seq.csv.gz', tmp_path / 'o' / 's.json.gz'
    assert classify_sequences.main([merged, str(out), '--coco', coco, '--smoothed-json',
                                    str(smooth)]) == 0
    assert len(pd.read_csv(out)) == 3
    with gzip.open(smooth, 'rt') as f:
        assert len(json.load(f)['images']) == 5
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['s.json.gz', 'seq.csv.gz']


def _merge_for_sequences(t, *extra):
    """merge_classification_detection_output run on four photos of two cameras (one
    animal box each; true labels in the CSV), then classify_sequences with one
    sequence per camera. Returns (CSV table, smoothed JSON, merged JSON)."""
    from classification import merge_classification_detection_output as mcdo
    from classification.utils import label_index_dict
    from tests.test_rollup import LABELS, SPEC, probs_of, taxonomy_csv
    files = [f'{cam}/img{k}.jpg' for cam in ('cam_00', 'cam_01') for k in range(2)]
    rows = [dict(red_fox=0.9, deer=0.1), dict(red_fox=0.5, swift_fox=0.35, deer=0.15),
            dict(empty=0.5, deer=0.3, turkey=0.2), dict(red_fox=0.45, deer=0.4, swift_fox=0.15)]
    probs = pd.DataFrame([probs_of(**r)[0] for r in rows], columns=LABELS)
    probs.insert(0, 'path', [f'{f}___crop00_mdv5a.0.0.jpg' for f in files])
    probs.insert(1, 'label', ['red_fox', 'swift_fox', 'deer', 'deer'])
    detections = merged_doc([(f, [det(0.9)]) for f in files])
    del detections['classification_categories']
    args = [write(t, 'probs.csv', probs.to_csv(index=False)),
            write(t, 'index.json', label_index_dict(LABELS)), '-j',
            write(t, 'det.json', detections), '-o', str(t / 'merged.json'), '-n', 'clf', *extra]
    if '--rollup-threshold' in extra:
        args += ['--taxonomy-csv', write(t, 'tax.csv', taxonomy_csv()),
                 '--label-spec', write(t, 'spec.json', SPEC)]
    assert mcdo.main(args) == 0
    coco = write(t, 'coco.json', {'images': [
        {'file_name': f, 'seq_id': f.split('/')[0], 'location': f.split('/')[0]}
        for f in files]})
    assert classify_sequences.main([str(t / 'merged.json'), str(t / 'seq.csv'), '--coco', coco,
                                    '--smoothed-json', str(t / 's.json')]) == 0
    assert_valid_megadetector_output(t / 's.json')
    return (pd.read_csv(t / 'seq.csv', keep_default_na=False), read_json(t / 's.json'),
            read_json(t / 'merged.json'))


def _check_merged_sequences(table, smooth, merged):
    from tests.test_rollup import LABELS
    assert list(table.columns) == [*sequences.CSV_COLUMNS, *LABELS]
    assert list(table['top_label']) == ['red_fox', 'deer']
    assert list(table['top_probability']) == pytest.approx([0.7, 0.35])
    assert table.loc[0, 'swift_fox'] == pytest.approx(0.175)
    cats = merged['classification_categories']
    for before, after in zip(merged['images'], smooth['images'], strict=True):
        old, new = before['detections'][0], after['detections'][0]['classifications']
        truth = [e for e in old['classifications'] if cats[e[0]].startswith('label: ')]
        assert len(truth) == 1 and truth[0][1] == 1.0
        assert new[-1] == truth[0]                      # the true label, kept, last
        assert all(int(c) < 1000000 for c, _ in new[:-1])
        top = table.set_index('seq_id').loc[before['file'].split('/')[0], 'top_label']
        assert new[0][0] == str(LABELS.index(top))      # the sequence's list first


def test_a_merge_with_true_labels_last(tmp_path):
    from tests.test_rollup import LABELS
    table, smooth, merged = _merge_for_sequences(tmp_path, '--label', 'last')
    assert merged['images'][2]['detections'][0]['classifications'][-1] == [
        str(1000000 + LABELS.index('deer')), 1.0]       # deer's true label, as merge writes it
    _check_merged_sequences(table, smooth, merged)
    assert 'rollup_entries_dropped' not in smooth['info']['sequence_smoothing']


def test_a_merge_with_a_taxonomic_rollup(tmp_path):
    table, smooth, merged = _merge_for_sequences(tmp_path, '--label', 'first',
                                                 '--rollup-threshold', '0.8')
    taxa = [c for img in merged['images'] for c, _ in img['detections'][0]['classifications']
            if int(c) >= 2000000]
    assert len(taxa) == 2                               # vulpes, mammalia: below 0.8
    _check_merged_sequences(table, smooth, merged)
    assert smooth['info']['sequence_smoothing']['rollup_entries_dropped'] == 2


def refused(t, args, fragment):
    before = snapshot(t)
    proc = run_module('classification.classify_sequences', *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if 'error: ' in ln]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert snapshot(t) == before


@pytest.mark.parametrize('case, fragment', [
    ('a photo missing from the COCO file', 'not in it'),
    ('a seq_id over two cameras', 'spans locations'),
    ('detections without classifications', 'no "classification_categories"'),
    ('the CSV is the detections file', 'is also an input'),
    ('CSV and JSON to one file', 'two outputs cannot share'),
    ('both to stdout', 'two outputs cannot share'),
    ('both --coco and --images-dir', 'exactly one of --coco and --images-dir'),
    ('a gap of 0', '--max-gap-seconds'),
    ('a gap with --coco', '--max-gap-seconds goes with --images-dir'),
    ('a photo path leaving the folder', 'would leave'),
    ('no images folder', 'no such folder'),
    ('a --relative-conf merge', 'merged with --relative-conf'),
    ('true labels only', 'no classifier categories'),
    ('the CSV cannot be written', 'File exists'),
])
def test_inconsistent_inputs_are_refused(tmp_path, case, fragment):
    merged, coco, doc = _inputs(tmp_path)
    out, smooth = str(tmp_path / 'seq.csv'), str(tmp_path / 's.json')
    args = [merged, out, '--coco', coco, '--smoothed-json', smooth]
    if case == 'a photo missing from the COCO file':
        c = read_json(tmp_path / 'coco.json')
        c['images'].pop(2)
        write(tmp_path, 'coco.json', c)
    elif case == 'a seq_id over two cameras':
        c = read_json(tmp_path / 'coco.json')
        c['images'][0]['location'] = 'elsewhere'
        write(tmp_path, 'coco.json', c)
    elif case == 'detections without classifications':
        del doc['classification_categories']
        write(tmp_path, 'merged.json', doc)
    elif case == 'the CSV is the detections file':
        args[1] = merged
    elif case == 'CSV and JSON to one file':
        args[-1] = out
    elif case == 'both to stdout':
        args[1] = args[-1] = '-'
    elif case == 'both --coco and --images-dir':
        args += ['--images-dir', str(tmp_path)]
    elif case == 'a gap of 0':
        args = [merged, out, '--images-dir', str(tmp_path), '--max-gap-seconds', '0']
    elif case == 'a gap with --coco':
        args += ['--max-gap-seconds', '5']
    elif case == 'a photo path leaving the folder':
        doc['images'][0]['file'] = '../outside.jpg'
        write(tmp_path, 'merged.json', doc)
        args = [merged, out, '--images-dir', str(tmp_path)]
    elif case == 'no images folder':
        args = [merged, out, '--images-dir', str(tmp_path / 'none')]
    elif case == 'a --relative-conf merge':
        doc['info']['classifier_metadata'] = {'relative_conf': True}
        write(tmp_path, 'merged.json', doc)
    elif case == 'true labels only':
        doc['classification_categories'] = {str(1000000 + int(k)): f'label: {v}'
                                             for k, v in CATS.items()}
        write(tmp_path, 'merged.json', doc)
    elif case == 'the CSV cannot be written':
        # the smoothed JSON could be: it must not land without the CSV
        write(tmp_path, 'blocker', 'a file where a folder should be')
        args[1] = str(tmp_path / 'blocker' / 'seq.csv')
    refused(tmp_path, args, fragment)


# ------------------------------------------------------------------ readers (Hypothesis)

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
IMAGE = st.fixed_dictionaries({}, optional={
    'file_name': st.sampled_from(['a.jpg', './a.jpg', 'b/c.jpg', 'd.jpg']) | JSON,
    'seq_id': st.sampled_from(['s1', 's2', 3]) | JSON,
    'location': st.sampled_from(['L1', 'L2']) | JSON,
    'frame_num': st.integers(-2, 3) | JSON,
    'datetime': st.sampled_from(['2025-07-01 06:00:00', '2025-07-01T06:00:01+02:00',
                                 '2025:07:01 06:00:02', '']) | JSON})


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({'images': st.lists(IMAGE | JSON, max_size=6)})))
def test_any_coco_document_gives_sequences_or_one_input_error(coco):
    files = ['a.jpg', 'b/c.jpg']
    try:
        got = sequences.sequences_from_coco(coco, files, 'c.json')
    except InputError as e:
        assert '\n' not in str(e) and str(e).startswith('c.json: ')
        return
    listed = [f for s in got.sequences for f in s.files]
    assert sorted(listed) == sorted(files)
    assert len({s.seq_id for s in got.sequences}) == len(got.sequences)


@given(st.one_of(st.text(max_size=30), JSON))
def test_any_datetime_value_gives_a_naive_time_or_none(value):
    got = sequences.parse_time(value)
    assert got is None or (isinstance(got, dt.datetime) and got.tzinfo is None)


# ------------------------------------------------------------------ the demo's photos

def test_exif_times_of_the_demo_give_its_sequences(project):
    """Grouping the demo's photos by folder and EXIF time gives back the seq_id of
    its COCO files, for the new photos and the labeled ones."""
    new = project / 'new_photos'
    coco = read_json(new / 'coco.json')
    files = [img['file_name'] for img in coco['images']]
    by_time = sequences.sequences_from_times(photo_times.photo_times(new / 'images', files), 60)
    by_id = sequences.sequences_from_coco(coco, files, 'coco.json')
    assert by_time.singletons == 0 and by_id.singletons == 0
    assert sorted(s.files for s in by_time.sequences) == sorted(s.files for s in by_id.sequences)
    assert len(by_id.sequences) == read_json(project / 'manifest.json')['new_sequences']
    assert max(len(s.files) for s in by_id.sequences) > 1
    truth = read_json(new / 'ground_truth.json')
    for s in by_id.sequences:   # one animal per sequence (a frame may miss it)
        assert len({truth[f] for f in s.files} - {'empty'}) <= 1
    for ds in ('demo_forest', 'demo_plains'):
        labeled = read_json(project / 'coco' / f'{ds}.json')
        names = [img['file_name'] for img in labeled['images']]
        got = sequences.sequences_from_times(
            photo_times.photo_times(project / 'images' / ds, names), 60)
        want = sequences.sequences_from_coco(labeled, names, ds)
        assert sorted(s.files for s in got.sequences) == sorted(s.files for s in want.sequences)


def test_smoothing_fixes_a_wrong_frame_of_the_demo(project, tmp_path):
    """The demo's new photos, with classifications that are right except for one
    frame of a sequence: the smoothed JSON gets that frame right."""
    new = project / 'new_photos'
    doc = read_json(new / 'detections.json')
    truth = read_json(new / 'ground_truth.json')
    names = ['deer', 'fox', 'rabbit', 'turkey', 'skunk']
    doc['classification_categories'] = {str(i): n for i, n in enumerate(names)}
    coco = read_json(new / 'coco.json')
    seq_of = {img['file_name']: img['seq_id'] for img in coco['images']}
    classified = [img for img in doc['images'] if truth[img['file']] != 'empty'
                  and any(d['conf'] >= 0.2 for d in img['detections'])]
    sizes = {s: sum(seq_of[i['file']] == s for i in classified) for s in seq_of.values()}
    victim = next(img for img in classified if sizes[seq_of[img['file']]] >= 3)
    for img in doc['images']:
        for d in img['detections']:
            if d['conf'] >= 0.2 and d['category'] == '1':
                right = names.index(truth[img['file']]) if truth[img['file']] in names else 0
                label = (right + 1) % 5 if img is victim else right
                d['classifications'] = [[str(label), 0.8], [str((label + 2) % 5), 0.2]]
    merged = write(tmp_path, 'merged.json', doc)
    smooth = tmp_path / 'smooth.json'
    assert classify_sequences.main([merged, str(tmp_path / 'seq.csv'), '--images-dir',
                                    str(new / 'images'), '--smoothed-json',
                                    str(smooth)]) == 0
    got = {img['file']: img for img in read_json(smooth)['images']}
    best = max((d for d in got[victim['file']]['detections'] if 'classifications' in d),
               key=lambda d: d['conf'])
    assert names[int(best['classifications'][0][0])] == truth[victim['file']]
    table = pd.read_csv(tmp_path / 'seq.csv', keep_default_na=False)
    assert table['photos'].sum() == len(doc['images'])
    assert_valid_megadetector_output(smooth)
    json.dumps(got)


def test_end_to_end_on_the_demo_with_the_trained_model(project, new_crops, model_files,
                                                       tmp_path):
    """crop -> run_classifier -> merge -> classify_sequences on the demo's new
    photos with the session's trained model; the bench script reads the result."""
    from classification import merge_classification_detection_output, run_classifier
    model, label_index = model_files
    dets = project / 'new_photos' / 'detections.json'
    assert run_classifier.main([str(model), str(new_crops), str(tmp_path / 'c.csv'), '-d',
                                str(dets), '-t', '0.2', '-c', str(label_index),
                                '--image-size', '32', '--num-workers', '0']) == 0
    merged = tmp_path / 'merged.json'
    assert merge_classification_detection_output.main([
        str(tmp_path / 'c.csv'), str(label_index), '-j', str(dets), '-o', str(merged),
        '-n', 'demo', '-t', '0.05']) == 0
    out = tmp_path / 'seq.csv'
    assert classify_sequences.main([str(merged), str(out), '--coco',
                                    str(project / 'new_photos' / 'coco.json'),
                                    '--smoothed-json', str(tmp_path / 's.json')]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    coco = read_json(project / 'new_photos' / 'coco.json')
    assert set(table['seq_id']) == {img['seq_id'] for img in coco['images']}
    labels = set(read_json(label_index).values())
    assert set(table['top_label']) - {''} <= labels and (table['detections'] > 0).any()
    proc = subprocess.run([sys.executable, str(REPO / 'bench' / 'measure_sequences.py'),
                           str(merged), str(project / 'new_photos' / 'ground_truth.json'),
                           '--coco', str(project / 'new_photos' / 'coco.json')],
                          capture_output=True, text=True, check=True)
    assert 'photo-level errors:' in proc.stdout
    m = json.loads(proc.stdout.split('\nphoto-level', 1)[0])
    assert m['photos'] == 12 and m['fixed'] - m['broken'] == m['errors_before'] - m[
        'errors_after']
