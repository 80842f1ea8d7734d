"""cache_batchapi_outputs, detect_and_crop and create_classification_dataset."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from classification import cache_batchapi_outputs, create_classification_dataset, utils
from classification import detect_and_crop as dac
from detection.detector_output import load_cache
from tests.conftest import read_json


def _md(files, conf=0.9):
    return {'info': {'detector': 'md_v5a.0.0.pt'}, 'detection_categories': {'1': 'animal'},
            'images': [{'file': f, 'detections': [{'category': '1', 'conf': conf,
                                                   'bbox': [0.1, 0.1, 0.2, 0.2]}]}
                       for f in files]}


def test_cache_merges_without_losing_images(tmp_path):
    (tmp_path / 'a.json').write_text(json.dumps(_md(['ds/x.jpg', 'ds/y.jpg'], 0.5)))
    (tmp_path / 'b.json').write_text(json.dumps(_md(['y.jpg', 'z.jpg'], 0.7)))
    for f in ('a.json', 'b.json'):
        assert cache_batchapi_outputs.main([str(tmp_path / f), '-f', 'detections', '-d', 'ds',
                                            '-c', str(tmp_path / 'mdcache')]) == 0
    cache = load_cache(tmp_path / 'mdcache', '5a.0.0', 'ds')   # version from info.detector
    confs = {img['file']: img['detections'][0]['conf'] for img in cache['images']}
    assert confs == {'x.jpg': 0.5, 'y.jpg': 0.7, 'z.jpg': 0.7}


def test_cache_stores_each_path_one_way(tmp_path):
    (tmp_path / 'a.json').write_text(json.dumps(_md(['ds/cam/./x.jpg', 'cam//y.jpg', 'z.jpg'])))
    assert cache_batchapi_outputs.main([str(tmp_path / 'a.json'), '-f', 'detections', '-d', 'ds',
                                        '-c', str(tmp_path / 'mdcache')]) == 0
    cache = load_cache(tmp_path / 'mdcache', '5a.0.0', 'ds')
    assert [img['file'] for img in cache['images']] == ['cam/x.jpg', 'cam/y.jpg', 'z.jpg']


def test_cache_rejects_bad_detections(tmp_path, capsys):
    doc = _md(['a.jpg'])
    doc['images'][0]['detections'][0]['bbox'] = [0.1, 0.2]
    (tmp_path / 'a.json').write_text(json.dumps(doc))
    rc = utils.run_cli(lambda: cache_batchapi_outputs.main(
        [str(tmp_path / 'a.json'), '-f', 'detections', '-d', 'ds', '-c', str(tmp_path)]))
    assert rc == 2 and 'a.jpg: detection 0: "bbox"' in capsys.readouterr().err


def test_detect_and_crop_outputs(base_logdir):
    crops = base_logdir.parent / 'crops'
    queried = read_json(base_logdir / 'queried_images.json')
    names = [p.relative_to(crops).as_posix() for p in crops.rglob('*.jpg')]
    gt = [n for n in names if '_mdv' not in n]
    det = [n for n in names if n.endswith('_mdv5a.jpg')]
    assert gt and det and len(gt) + len(det) == len(names)
    for n in gt:
        image, idx, _ = utils.parse_crop_filename(n)
        assert 'bbox' in queried[image] and idx < len(queried[image]['bbox'])
    for n in det:
        image, _, _ = utils.parse_crop_filename(n)
        assert 'bbox' not in queried[image]
    (log,) = base_logdir.glob('detect_and_crop_log_*.json')
    assert read_json(log)['failures'] == []


def test_detect_and_crop_reports_uncached_images(tmp_path):
    queried = {'ds/a.jpg': {'dataset': 'ds', 'location': 'L', 'class': 'c', 'label': ['c']}}
    jobs, missing = dac.plan_jobs(queried, str(tmp_path / 'nocache'), '5a', str(tmp_path),
                                  str(tmp_path / 'crops'), 0.5)
    assert jobs == [] and missing == ['ds/a.jpg']


def test_dataset_csv_and_label_index(base_logdir):
    df = pd.read_csv(base_logdir / 'classification_ds.csv', dtype={'location': str})
    assert list(df.columns) == create_classification_dataset.CSV_COLUMNS
    crops = base_logdir.parent / 'crops'
    assert all((crops / p).exists() for p in df['path'])
    assert (df.loc[~df['path'].str.contains('_mdv'), 'confidence'] == 1.0).all()
    assert (df.loc[df['path'].str.contains('_mdv'), 'confidence'] >= 0.5).all()
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    assert labels == sorted(df['label'].unique())


def test_splits_partition_the_locations(base_logdir):
    df = pd.read_csv(base_logdir / 'classification_ds.csv', dtype={'location': str})
    splits = read_json(base_logdir / 'splits.json')
    locs = [tuple(x) for s in ('train', 'val', 'test') for x in splits[s]]
    assert len(locs) == len(set(locs))
    assert set(locs) == set(zip(df['dataset'], df['location'], strict=True))
    assert all(splits[s] for s in ('train', 'val', 'test'))


def _toy_frame(n_locs=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for loc in range(n_locs):
        for label in ('a', 'b', 'c'):
            for k in range(int(rng.integers(0, 12))):
                rows.append((f'{loc}_{label}_{k}.jpg', f'd{loc % 2}', f'L{loc}', label, 1.0,
                             label))
    return pd.DataFrame(rows, columns=create_classification_dataset.CSV_COLUMNS)


def test_random_split_is_seeded_and_close_to_the_fractions():
    df = _toy_frame()
    a = create_classification_dataset.split_random(df, 0.2, 0.2, seed=1, num_trials=2000)
    b = create_classification_dataset.split_random(df, 0.2, 0.2, seed=1, num_trials=2000)
    assert a == b
    assert [len(a[s]) for s in ('train', 'val', 'test')] == [12, 4, 4]
    summary = create_classification_dataset.split_summary(df, a)
    fracs = summary.div(summary.sum(axis=1), axis=0)
    assert ((fracs['test'] - 0.2).abs() < 0.12).all()


def test_smallest_first_split():
    df = _toy_frame()
    s = create_classification_dataset.split_smallest_first(df, 0.2, 0.2)
    assert sum(len(v) for v in s.values()) == 20 and s['test'] and s['val'] and s['train']
    summary = create_classification_dataset.split_summary(df, s)
    assert (summary['test'] > 0).all()


def _two_dataset_frame():
    """Label 'elk' at 6 locations of dataset 'big' (20 crops each) and 4 of 'pref'
    (30 crops each)."""
    rows = []
    for ds, n_locs, n in (('big', 6, 20), ('pref', 4, 30)):
        for loc in range(n_locs):
            rows += [(f'{ds}/l{loc}/{i}.jpg___crop00.jpg', ds, f'l{loc}', 'elk', 0.9, 'elk')
                     for i in range(n)]
    return pd.DataFrame(rows, columns=create_classification_dataset.CSV_COLUMNS)


def test_smallest_first_fills_test_from_prioritized_datasets(tmp_path):
    df = _two_dataset_frame()
    plain = create_classification_dataset.split_smallest_first(df, 0.0, 0.25)
    assert {d for d, _ in plain['test']} == {'big'}         # smallest locations first
    first = create_classification_dataset.split_smallest_first(
        df, 0.0, 0.25, {'elk': [['pref']]})
    assert {d for d, _ in first['test']} == {'pref'} and len(first['test']) == 2
    # through the command line, from a label specification
    utils.write_csv(df, tmp_path / 'classification_ds.csv')
    spec = {'elk': {'dataset_labels': {'pref': ['elk'], 'big': ['elk']},
                    'max_count': 1000, 'prioritize': [['nothere'], ['pref']]}}
    (tmp_path / 'spec.json').write_text(json.dumps(spec))
    assert create_classification_dataset.main([
        str(tmp_path), '--mode', 'splits', '--val-frac', '0', '--test-frac', '0.25',
        '--method', 'smallest_first', '--label-spec', str(tmp_path / 'spec.json')]) == 0
    assert {d for d, _ in read_json(tmp_path / 'splits.json')['test']} == {'pref'}
    with pytest.raises(SystemExit):
        create_classification_dataset.parse_args([
            str(tmp_path), '--mode', 'splits', '--val-frac', '0.2',
            '--label-spec', str(tmp_path / 'spec.json')])      # needs smallest_first


def test_too_few_locations_is_an_input_error():
    df = _toy_frame(n_locs=2)
    with pytest.raises(utils.InputError, match='locations'):
        create_classification_dataset.split_random(df, 0.4, 0.4, seed=0)


def test_min_locs_and_match_test(base_logdir, tmp_path):
    crops = base_logdir.parent / 'crops'
    args = [str(tmp_path), '--mode', 'csv', 'splits', '-q',
            str(base_logdir / 'queried_images.json'), '-c', str(crops), '--min-locs', '100',
            '--val-frac', '0.2', '--test-frac', '0.2']
    # every label is at fewer than 100 locations: nothing is left
    assert utils.run_cli(lambda: create_classification_dataset.main(args)) == 2
    out = tmp_path / 'matched'
    assert create_classification_dataset.main([
        str(out), '--mode', 'csv', 'splits', '-q', str(base_logdir / 'queried_images.json'),
        '-c', str(crops), '--val-frac', '0.2', '--num-trials', '200', '--match-test',
        str(base_logdir / 'classification_ds.csv'), str(base_logdir / 'splits.json')]) == 0
    old, new = read_json(base_logdir / 'splits.json'), read_json(out / 'splits.json')
    assert new['test'] == old['test']
    assert not {tuple(x) for x in new['train'] + new['val']} & {tuple(x) for x in new['test']}


def test_flag_combinations_are_checked(capsys):
    with pytest.raises(SystemExit):
        create_classification_dataset.parse_args(['out', '--mode', 'splits'])
    assert '--val-frac' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        create_classification_dataset.parse_args(['out', '--mode', 'csv'])


# ---------------------------------------------------------------- split search: matmul scoring

def _score_einsum(assign, counts, fracs):
    """The scoring as first written (the reference): einsum over trials x locations x splits."""
    onehot = (assign[:, :, None] == np.arange(3)).astype(np.float32)
    score = np.zeros(len(assign))
    for mat in (counts, (counts > 0).astype(np.float64)):
        per_split = np.einsum('tls,lk->tsk', onehot, mat.astype(np.float32))
        totals = mat.sum(axis=0)
        frac = per_split / np.maximum(totals, 1)[None, None, :]
        score += np.abs(frac - fracs[None, :, None]).sum(axis=(1, 2))
    return score


def _split_random_before(df, val_frac, test_frac, seed, num_trials, chunk=1000):
    """split_random's search as first written: ranks by a second argsort, einsum scoring."""
    ccd = create_classification_dataset
    locs, _, counts = ccd._count_matrix(df)
    n = len(locs)
    n_test = max(int(round(test_frac * n)), 1) if test_frac > 0 else 0
    n_val = max(int(round(val_frac * n)), 1) if val_frac > 0 else 0
    fracs = np.array([1 - val_frac - test_frac, val_frac, test_frac])
    rng = np.random.default_rng(seed)
    best_score, best = np.inf, np.zeros(n, dtype=np.int64)
    for start in range(0, num_trials, chunk):
        t = min(chunk, num_trials - start)
        ranks = np.argsort(rng.random((t, n)), axis=1).argsort(axis=1)
        assign = np.where(ranks < n_test, 2, np.where(ranks < n_test + n_val, 1, 0))
        scores = _score_einsum(assign, counts, fracs)
        i = int(np.argmin(scores))
        if scores[i] < best_score:
            best_score, best = float(scores[i]), assign[i]
    return ccd._to_splits(locs, best)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_split_score_equals_the_einsum_formula(seed):
    rng = np.random.default_rng(seed)
    n_trials, n_locs, n_labels = 64, 57, 13
    counts = rng.poisson(rng.gamma(0.4, 30, size=(n_locs, n_labels))).astype(np.float64)
    counts[:, 0] = 0                                    # a label with no crops at all
    assign = rng.integers(0, 3, size=(n_trials, n_locs))
    assign[0] = 0                                       # everything in train
    fracs = np.array([0.6, 0.25, 0.15])
    got = create_classification_dataset._score(assign, counts, fracs)
    want = _score_einsum(assign, counts, fracs)
    assert got.shape == (n_trials,)
    assert np.array_equal(got, want)                    # bit for bit: same argmin, same splits


def test_assignments_equal_the_double_argsort():
    rng = np.random.default_rng(3)
    order = np.argsort(rng.random((20, 31)), axis=1)
    ranks = order.argsort(axis=1)
    for n_test, n_val in ((6, 5), (0, 7), (4, 0), (0, 0)):
        want = np.where(ranks < n_test, 2, np.where(ranks < n_test + n_val, 1, 0))
        assert np.array_equal(create_classification_dataset._assignments(order, n_test, n_val),
                              want)


@pytest.mark.parametrize('val_frac, test_frac, seed', [(0.2, 0.2, 123), (0.3, 0.0, 7),
                                                       (0.1, 0.25, 0)])
def test_random_split_same_as_the_einsum_search(monkeypatch, val_frac, test_frac, seed):
    ccd = create_classification_dataset
    df = _toy_frame(n_locs=60, seed=seed)
    new = ccd.split_random(df, val_frac, test_frac, seed=seed, num_trials=2500, chunk=1000)
    assert new == _split_random_before(df, val_frac, test_frac, seed, 2500)
    monkeypatch.setattr(ccd, '_score', _score_einsum)
    assert ccd.split_random(df, val_frac, test_frac, seed=seed, num_trials=2500) == new


# ---------------------------------------------------------------- only animal boxes become crops

def _gt_entry(boxes, cls='deer'):
    return {'dataset': 'ds', 'location': 'L1', 'class': cls, 'label': [cls],
            'bbox': [{**({'category': c} if c is not None else {}), 'bbox': b}
                     for c, b in boxes]}


def test_only_animal_ground_truth_boxes_are_cropped():
    from detection.detector_output import DetectionCache, queried_image_crops
    entry = _gt_entry([('person', [0.0, 0.0, 0.2, 0.5]), ('animal', [0.5, 0.5, 0.3, 0.3]),
                       ('vehicle', [0.1, 0.6, 0.3, 0.3]), (None, [0.6, 0.1, 0.2, 0.2]),
                       ('Animal', [0.3, 0.3, 0.1, 0.1])])
    crops = queried_image_crops('ds/a.jpg', entry, DetectionCache(None, None), 0.5)
    # names keep each box's position among all the image's boxes
    assert [name for name, _, _ in crops] == ['ds/a.jpg___crop01.jpg', 'ds/a.jpg___crop03.jpg',
                                              'ds/a.jpg___crop04.jpg']
    assert crops[0][1:] == ((0.5, 0.5, 0.3, 0.3), 1.0)


def test_image_with_only_person_boxes_gets_no_crops_and_no_detector(tmp_path):
    from detection.detector_output import DetectionCache, queried_image_crops
    (tmp_path / 'a.json').write_text(json.dumps(_md(['a.jpg'])))    # a cached animal box too
    assert cache_batchapi_outputs.main([str(tmp_path / 'a.json'), '-f', 'detections', '-d',
                                        'ds', '-c', str(tmp_path / 'mdcache'), '-v', '5a']) == 0
    entry = _gt_entry([('person', [0.0, 0.0, 0.2, 0.5])], cls='human')
    cache = DetectionCache(tmp_path / 'mdcache', '5a')
    assert queried_image_crops('ds/a.jpg', entry, cache, 0.5) == []
    jobs, missing = dac.plan_jobs({'ds/a.jpg': entry}, str(tmp_path / 'mdcache'), '5a',
                                  str(tmp_path), str(tmp_path / 'crops'), 0.5)
    assert jobs == [] and missing == []                 # not sent to the detector either


def test_person_box_is_not_cropped_nor_in_the_dataset_csv(tmp_path):
    from PIL import Image
    (tmp_path / 'images' / 'ds').mkdir(parents=True)
    Image.new('RGB', (64, 48), (90, 120, 60)).save(tmp_path / 'images' / 'ds' / 'a.jpg')
    queried = {'ds/a.jpg': _gt_entry([('person', [0.0, 0.0, 0.3, 0.6]),
                                      ('animal', [0.4, 0.4, 0.5, 0.5])])}
    (tmp_path / 'queried_images.json').write_text(json.dumps(queried))
    crops = tmp_path / 'crops'
    assert dac.main([str(tmp_path / 'queried_images.json'), str(tmp_path), '-c',
                     str(tmp_path / 'mdcache'), '-v', '5a', '-p', str(crops),
                     '-i', str(tmp_path / 'images')]) == 0
    assert sorted(p.name for p in crops.rglob('*.jpg')) == ['a.jpg___crop01.jpg']
    # a person crop left on disk by an earlier run stays out of the dataset
    Image.new('RGB', (8, 8)).save(crops / 'ds' / 'a.jpg___crop00.jpg')
    out = tmp_path / 'base'
    assert create_classification_dataset.main([
        str(out), '--mode', 'csv', '-q', str(tmp_path / 'queried_images.json'),
        '-c', str(crops)]) == 0
    df = pd.read_csv(out / 'classification_ds.csv')
    assert list(df['path']) == ['ds/a.jpg___crop01.jpg'] and list(df['label']) == ['deer']


def test_coco_person_and_vehicle_boxes_are_not_cropped():
    from data_management.megadb.importers import coco_to_sequences
    from data_management.megadb.schema import image_classes
    from detection.detector_output import DetectionCache, queried_image_crops
    names = ['Deer', 'Homo sapiens', 'human', 'car', 'motorcycle']
    coco = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 100, 'height': 100,
                        'location': 'L1', 'seq_id': 's1'}],
            'categories': [{'id': i, 'name': n} for i, n in enumerate(names)],
            'annotations': [{'id': i, 'image_id': 1, 'category_id': i,
                             'bbox': [10 * i, 10, 10, 10]} for i in range(len(names))]}
    (seq,) = coco_to_sequences(coco, 'ds', 'coco.json')
    (img,) = seq['images']
    assert [b['category'] for b in img['bbox']] == ['animal', 'person', 'person', 'vehicle',
                                                    'vehicle']
    entry = {'dataset': 'ds', 'location': seq['location'], 'class': 'deer', 'label': ['deer'],
             'bbox': img['bbox']}
    assert 'deer' in image_classes(seq, img)
    crops = queried_image_crops('ds/a.jpg', entry, DetectionCache(None, None), 0.5)
    assert [name for name, _, _ in crops] == ['ds/a.jpg___crop00.jpg']
