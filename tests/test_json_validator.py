"""json_validator: spec validation and MegaDB queries -> queried_images.json."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from classification import json_validator, utils
from classification.taxonomy import parse_label_spec
from data_management.megadb.base import open_megadb
from tests.conftest import read_json


def _spec(tmp_path, spec, name='spec.json'):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


DEMO_SPEC = {'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
             'fox': {'taxa': [{'level': 'genus', 'name': 'vulpes'}]},
             'bird': {'taxa': [{'level': 'class', 'name': 'aves'}]}}


def test_queried_images_match_the_coco_labels(project, megadb, tmp_path):
    spec = _spec(tmp_path, DEMO_SPEC)
    assert json_validator.main([spec, str(project / 'taxonomy.csv'), '--megadb', str(megadb),
                                '-o', str(tmp_path / 'out'), '--json-indent', '1']) == 0
    out = read_json(tmp_path / 'out' / 'queried_images.json')
    assert list(out) == sorted(out)
    # expected straight from the COCO files
    want = {}
    label_of = {'white-tailed deer': 'deer', 'deer': 'deer', 'red fox': 'fox', 'fox': 'fox',
                'wild turkey': 'bird', 'bird': 'bird'}
    for ds in ('demo_forest', 'demo_plains'):
        coco = read_json(project / 'coco' / f'{ds}.json')
        cats = {c['id']: c['name'] for c in coco['categories']}
        for a in coco['annotations']:
            name = cats[a['category_id']]
            if name in label_of:
                want[a['image_id']] = label_of[name]
    assert {k: v['label'] for k, v in out.items()} == {k: [v] for k, v in want.items()}
    sample = next(v for v in out.values() if 'bbox' in v)
    assert set(sample) == {'dataset', 'location', 'class', 'bbox', 'label'}
    assert (tmp_path / 'out' / 'included_dataset_labels.txt').read_text().startswith('bird:')


def test_validate_only_without_output_dir(project, tmp_path, capsys):
    spec = _spec(tmp_path, DEMO_SPEC)
    assert json_validator.main([spec, str(project / 'taxonomy.csv')]) == 0
    assert 'valid' in capsys.readouterr().err


def test_spec_errors_exit_2(project, tmp_path, capsys):
    spec = _spec(tmp_path, {'x': {'taxa': [{'level': 'genus', 'name': 'felis'}]}})
    assert utils.run_cli(lambda: json_validator.main([spec, str(project / 'taxonomy.csv')])) == 2
    assert "label 'x': unknown taxon genus 'felis'" in capsys.readouterr().err


def test_image_level_class_overrides_and_single_class_only(megadb_uri):
    with open_megadb(megadb_uri) as db:
        db.upsert_dataset({'dataset_name': 'd', 'path_prefix': 'pre'})
        db.replace_sequences('d', [
            {'dataset': 'd', 'seq_id': 's1', 'location': 'L', 'class': ['deer'],
             'images': [{'file': 'a.jpg'}, {'file': 'b.jpg', 'class': ['elk']},
                        {'file': 'c.jpg', 'class': ['deer', 'elk']}]}])
        out = json_validator.query_images(db, {'d': {'deer': ['cervid'], 'elk': ['elk']}})
    assert out == {'d/pre/a.jpg': {'dataset': 'd', 'location': 'L', 'class': 'deer',
                                   'label': ['cervid']},
                   'd/pre/b.jpg': {'dataset': 'd', 'location': 'L', 'class': 'elk',
                                   'label': ['elk']}}


def test_mislabeled_images_dropped_or_corrected(tmp_path, megadb_uri):
    with open_megadb(megadb_uri) as db:
        db.upsert_dataset({'dataset_name': 'd'})
        db.replace_sequences('d', [{'dataset': 'd', 'seq_id': 's', 'class': ['deer'],
                                    'images': [{'file': f'{i}.jpg'} for i in range(3)]}])
        (tmp_path / 'mis').mkdir()
        (tmp_path / 'mis' / 'd.csv').write_text('file,correct_class\n0.jpg,\n1.jpg,Elk\n')
        out = json_validator.query_images(db, {'d': {'deer': ['deer'], 'elk': ['elk']}},
                                          str(tmp_path / 'mis'))
    assert {k: v['label'] for k, v in out.items()} == {'d/1.jpg': ['elk'], 'd/2.jpg': ['deer']}


def test_max_count_honours_prioritize_and_seed():
    images = {f'{ds}/{i}.jpg': {'dataset': ds, 'location': 'L', 'class': 'c', 'label': ['a']}
              for ds in ('d1', 'd2', 'd3') for i in range(10)}
    spec = parse_label_spec({'a': {'dataset_labels': {'d1': ['c']}, 'max_count': 15,
                                   'prioritize': [['d2'], ['d3']]}}, 's')
    out = json_validator.sample_max_count(images, spec, seed=1)
    by_ds = Counter(v['dataset'] for v in out.values())
    assert by_ds == {'d2': 10, 'd3': 5}
    assert out == json_validator.sample_max_count(images, spec, seed=1)
    assert out != json_validator.sample_max_count(images, spec, seed=2)
    unlimited = parse_label_spec({'a': {'dataset_labels': {'d1': ['c']}}}, 's')
    assert len(json_validator.sample_max_count(images, unlimited, seed=1)) == 30


def test_min_locs_drops_rare_labels():
    images = {'d/1': {'dataset': 'd', 'location': 'A', 'label': ['x']},
              'd/2': {'dataset': 'd', 'location': 'B', 'label': ['x']},
              'd/3': {'dataset': 'd', 'location': 'A', 'label': ['y']}}
    out, rare = json_validator.drop_rare_labels(images, 2)
    assert rare == ['y'] and sorted(out) == ['d/1', 'd/2']


def test_missing_database_is_a_clear_error(project, tmp_path, capsys):
    spec = _spec(tmp_path, DEMO_SPEC)
    rc = utils.run_cli(lambda: json_validator.main([spec, str(project / 'taxonomy.csv'),
                                                    '--megadb', str(tmp_path / 'no.sqlite'),
                                                    '-o', str(tmp_path)]))
    assert rc == 2 and 'no such database' in capsys.readouterr().err


@pytest.mark.parametrize('flag', ['--seed', '--json-indent'])
def test_flags_parse(flag):
    args = json_validator.parse_args(['s.json', 't.csv', flag, '3'])
    assert getattr(args, flag.lstrip('-').replace('-', '_')) == 3


def test_same_queried_images_from_sqlite_and_cosmos(project, megadb, tmp_path, cosmos_server,
                                                    monkeypatch):
    """The demo project imported into the Cosmos-compatible server gives a
    queried_images.json identical to the SQLite one."""
    from data_management.demo_project import DATASETS
    from data_management.megadb import import_dataset
    from tests.emulators import COSMOS_TEST_KEY
    monkeypatch.setenv('COSMOS_KEY', COSMOS_TEST_KEY)
    monkeypatch.setenv('COSMOS_DATABASE', 'demo-equivalence')
    for ds in DATASETS:
        assert import_dataset.main([cosmos_server.endpoint, '--dataset', ds, '--coco',
                                    str(project / 'coco' / f'{ds}.json'),
                                    '--images-root', str(project / 'images' / ds)]) == 0
    spec = _spec(tmp_path, {**DEMO_SPEC, 'rabbit': {'taxa': [{'level': 'family',
                                                             'name': 'leporidae'}],
                                                    'max_count': 5}})
    for name, uri in (('sqlite', str(megadb)), ('cosmos', cosmos_server.endpoint)):
        assert json_validator.main([spec, str(project / 'taxonomy.csv'), '--megadb', uri,
                                    '-o', str(tmp_path / name), '--seed', '7']) == 0
    a = (tmp_path / 'sqlite' / 'queried_images.json').read_bytes()
    b = (tmp_path / 'cosmos' / 'queried_images.json').read_bytes()
    assert a == b and len(json.loads(a)) > 20


def test_check_blob_exists(tmp_path, azurite, fast_blob_retries):
    from tests.test_taxonomy import TAXONOMY
    url = azurite.create_container('blobcheck', {'pre/a.jpg': b'x', 'pre/c.jpg': b'x'})
    endpoint, sas = url.split('?')
    db_path = str(tmp_path / 'm.sqlite')
    with open_megadb(db_path) as db:
        db.upsert_dataset({'dataset_name': 'ds1', 'storage_account': endpoint.rsplit('/', 1)[0],
                           'container': 'blobcheck', 'container_sas_key': sas,
                           'path_prefix': 'pre'})
        db.replace_sequences('ds1', [{'dataset': 'ds1', 'seq_id': 's', 'location': 'L',
                                      'class': ['elk'], 'images': [
                                          {'file': f'{n}.jpg'} for n in 'abcd']}])
    (tmp_path / 'tax.csv').write_text(TAXONOMY)
    spec = _spec(tmp_path, {'elk': {'dataset_labels': {'ds1': ['elk']}}})
    (tmp_path / 'local' / 'ds1' / 'pre').mkdir(parents=True)
    (tmp_path / 'local' / 'ds1' / 'pre' / 'd.jpg').write_bytes(b'x')
    for flag, want in ((['-c'], ['ds1/pre/a.jpg', 'ds1/pre/c.jpg']),
                       (['-c', str(tmp_path / 'local')],
                        ['ds1/pre/a.jpg', 'ds1/pre/c.jpg', 'ds1/pre/d.jpg'])):
        out = tmp_path / f'out{len(flag)}'
        assert json_validator.main([spec, str(tmp_path / 'tax.csv'), '--megadb', db_path,
                                    '-o', str(out), *flag]) == 0
        assert sorted(read_json(out / 'queried_images.json')) == want
        (log,) = out.glob('json_validator_log_*.json')
        assert 'ds1/pre/b.jpg' in read_json(log)['nonexistent_images']


def test_every_flag_on_the_demo_project_on_both_backends(project, megadb_uri, tmp_path):
    """--allow-multilabel, --single-parent-taxonomy, --min-locs, --json-indent, --seed and
    --mislabeled-images through the command line, on each MegaDB backend."""
    from data_management.demo_project import DATASETS
    from data_management.megadb import import_dataset
    for ds in DATASETS:
        assert import_dataset.main([megadb_uri, '--dataset', ds, '--coco',
                                    str(project / 'coco' / f'{ds}.json')]) == 0
    # 'carnivore' overlaps 'fox': only allowed with --allow-multilabel
    spec = _spec(tmp_path, {**DEMO_SPEC,
                            'carnivore': {'taxa': [{'level': 'order', 'name': 'carnivora'}]},
                            'rabbit': {'taxa': [{'level': 'family', 'name': 'leporidae'}],
                                       'max_count': 10, 'prioritize': [['demo_plains']]}})
    coco = read_json(project / 'coco' / 'demo_forest.json')
    fox_id = next(c['id'] for c in coco['categories'] if c['name'] == 'red fox')
    fox_files = sorted(i['image_id'].split('/', 1)[1] for i in coco['annotations']
                       if i['category_id'] == fox_id)
    mis = tmp_path / 'mislabeled'
    mis.mkdir()
    (mis / 'demo_forest.csv').write_text(f'file,correct_class\n{fox_files[0]},\n'
                                         f'{fox_files[1]},white-tailed deer\n')
    base = [spec, str(project / 'taxonomy.csv'), '--megadb', megadb_uri]
    assert utils.run_cli(lambda: json_validator.main([*base, '-o', str(tmp_path / 'x')])) == 2
    everything = _spec(tmp_path, {'rabbit': {'taxa': [{'level': 'family',
                                                       'name': 'leporidae'}]}}, 'all_spec.json')
    assert json_validator.main([everything, str(project / 'taxonomy.csv'), '--megadb',
                                megadb_uri, '-o', str(tmp_path / 'a')]) == 0
    (tmp_path / 'all.json').write_text((tmp_path / 'a' / 'queried_images.json').read_text())
    out = tmp_path / 'out'
    assert json_validator.main([*base, '-o', str(out), '--allow-multilabel',
                                '--single-parent-taxonomy', '--min-locs', '2',
                                '--json-indent', '2', '--seed', '3', '-m', str(mis)]) == 0
    text = (out / 'queried_images.json').read_text()
    images = json.loads(text)
    assert text.startswith('{\n  "')                              # --json-indent 2
    counts = Counter(lab for e in images.values() for lab in e['label'])
    assert counts['rabbit'] == 10                                   # max_count
    assert counts['carnivore'] > counts['fox'] > 0                  # fox + skunk
    plains_rabbits = sum(1 for k, e in read_json(tmp_path / 'all.json').items()
                         if e['dataset'] == 'demo_plains' and 'rabbit' in e['label'])
    kept = Counter(e['dataset'] for e in images.values() if 'rabbit' in e['label'])
    assert kept['demo_plains'] == min(10, plains_rabbits)           # prioritize
    assert f'demo_forest/{fox_files[0]}' not in images              # dropped
    assert images[f'demo_forest/{fox_files[1]}']['class'] == 'white-tailed deer'   # corrected
    assert images[f'demo_forest/{fox_files[1]}']['label'] == ['deer']
