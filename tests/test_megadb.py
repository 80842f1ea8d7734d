"""MegaDB: the SQLite backend, the COCO importer and the import command."""
from __future__ import annotations

import json

import pytest

from classification import utils
from data_management.megadb import import_dataset
from data_management.megadb.base import open_megadb
from data_management.megadb.importers import coco_to_sequences
from data_management.megadb.schema import check_sequence_doc, image_classes
from tests.conftest import read_json


def _coco():
    return {
        'images': [
            {'id': 1, 'file_name': 'a/1.jpg', 'width': 200, 'height': 100, 'location': 'L1',
             'seq_id': 's1', 'frame_num': 0},
            {'id': 2, 'file_name': 'a/2.jpg', 'width': 200, 'height': 100, 'location': 'L1',
             'seq_id': 's1', 'frame_num': 1},
            {'id': 3, 'file_name': 'b/3.jpg', 'width': 200, 'height': 100, 'location': 'L2',
             'seq_id': 's2'},
            {'id': 4, 'file_name': 'b/4.jpg', 'location': 'L2'},   # unlabeled
        ],
        'categories': [{'id': 0, 'name': 'empty'}, {'id': 1, 'name': 'Deer'},
                       {'id': 2, 'name': 'human'}],
        'annotations': [
            {'id': 'x', 'image_id': 1, 'category_id': 1, 'bbox': [20, 10, 100, 50]},
            {'id': 'y', 'image_id': 2, 'category_id': 1},
            {'id': 'z', 'image_id': 3, 'category_id': 2, 'bbox': [0, 0, 50, 50]},
            {'id': 'w', 'image_id': 3, 'category_id': 1},
        ],
    }


def test_coco_to_sequences():
    seqs = coco_to_sequences(_coco(), 'ds', 'test.json')
    assert [s['seq_id'] for s in seqs] == ['s1', 's2']
    s1 = seqs[0]
    assert s1['location'] == 'L1' and [i['file'] for i in s1['images']] == ['a/1.jpg', 'a/2.jpg']
    assert s1['images'][0]['bbox'] == [{'category': 'animal', 'bbox': [0.1, 0.1, 0.5, 0.5]}]
    assert s1['images'][0]['class'] == ['deer']
    assert 'bbox' not in s1['images'][1]
    s2 = seqs[1]
    assert s2['images'][0]['class'] == ['deer', 'human']
    assert s2['images'][0]['bbox'][0]['category'] == 'person'


@pytest.mark.parametrize('mutate, match', [
    (lambda c: c['annotations'].append({'image_id': 99, 'category_id': 1}), 'unknown image_id'),
    (lambda c: c['annotations'].append({'image_id': 1, 'category_id': 7}), 'unknown category_id'),
    (lambda c: c['annotations'].append({'image_id': 4, 'category_id': 1, 'bbox': [0, 0, 1, 1]}),
     'width'),
    (lambda c: c.pop('images'), 'missing "images"'),
    (lambda c: c['images'].append({'id': 1, 'file_name': 'dup.jpg'}), 'duplicate image id'),
])
def test_bad_coco_names_the_record(mutate, match):
    coco = _coco()
    mutate(coco)
    with pytest.raises(utils.InputError, match=match):
        coco_to_sequences(coco, 'ds', 'test.json')


def test_sequence_checks():
    good = {'dataset': 'd', 'seq_id': 1, 'class': ['Deer'], 'images': [{'file': 'x.jpg'}]}
    assert check_sequence_doc(good, 'r')['class'] == ['deer']
    for bad, match in [({**good, 'images': []}, 'images'),
                       ({**good, 'images': [{'file': '../x.jpg'}]}, 'relative'),
                       ({'dataset': 'd', 'seq_id': 's', 'images': [{'file': 'x'}]}, 'class'),
                       ({**good, 'images': [{'file': 'x', 'bbox': [{'bbox': [0, 0, 5, 1]}]}]},
                        'normalized')]:
        with pytest.raises(utils.InputError, match=match):
            check_sequence_doc(bad, 'r')


def test_image_class_overrides_sequence_class():
    seq = {'class': ['deer'], 'images': [{'file': 'a'}, {'file': 'b', 'class': ['elk']}]}
    assert image_classes(seq, seq['images'][0]) == ['deer']
    assert image_classes(seq, seq['images'][1]) == ['elk']


def test_query_and_reimport_replaces(megadb_uri):
    seqs = coco_to_sequences(_coco(), 'ds', 'test.json')
    with open_megadb(megadb_uri) as db:
        db.upsert_dataset({'dataset_name': 'ds', 'images_root': '/x'})
        assert db.replace_sequences('ds', seqs) == 2
        assert db.replace_sequences('ds', seqs) == 2          # again: no duplicates
        assert [s['seq_id'] for s in db.query_sequences('ds')] == ['s1', 's2']
        assert [s['seq_id'] for s in db.query_sequences('ds', ['human'])] == ['s2']
        assert [s['seq_id'] for s in db.query_sequences('ds', ['deer'])] == ['s1', 's2']
        assert list(db.query_sequences('ds', ['elk'])) == []
        assert list(db.query_sequences('other', ['deer'])) == []
        assert db.dataset_classes('ds') == {'deer': 3, 'human': 1}
        assert db.get_datasets() == {'ds': {'dataset_name': 'ds', 'images_root': '/x'}}
    with open_megadb(megadb_uri) as db:                    # persisted
        assert len(list(db.query_sequences('ds'))) == 2
        db.replace_sequences('ds', seqs[:1])               # a smaller re-import drops the rest
        assert [s['seq_id'] for s in db.query_sequences('ds')] == ['s1']


def test_failed_import_keeps_old_rows(megadb_uri):
    seqs = coco_to_sequences(_coco(), 'ds', 'test.json')
    with open_megadb(megadb_uri) as db:
        db.replace_sequences('ds', seqs)
        with pytest.raises(utils.InputError):
            db.replace_sequences('ds', [seqs[0], seqs[0]])   # duplicate seq_id
        assert len(list(db.query_sequences('ds'))) == 2


def test_import_command(tmp_path, capsys, megadb_uri):
    (tmp_path / 'c.json').write_text(json.dumps(_coco()))
    db = megadb_uri
    assert import_dataset.main([str(db), '--dataset', 'ds', '--coco', str(tmp_path / 'c.json'),
                                '--container-sas-key', 'sv=SECRET']) == 0
    assert 'SECRET' not in capsys.readouterr().err
    seqs = [{'dataset': 'ds2', 'seq_id': 'q', 'class': ['fox'], 'images': [{'file': 'f.jpg'}]}]
    (tmp_path / 's.json').write_text(json.dumps(seqs))
    assert import_dataset.main([str(db), '--dataset', 'ds2', '--sequences',
                                str(tmp_path / 's.json')]) == 0
    with open_megadb(str(db)) as m:
        assert sorted(m.get_datasets()) == ['ds', 'ds2']
    (tmp_path / 'bad.json').write_text('{"images": []}')
    assert utils.run_cli(lambda: import_dataset.main(
        [str(db), '--dataset', 'ds', '--coco', str(tmp_path / 'bad.json')])) == 2
    assert 'missing "annotations"' in capsys.readouterr().err


def test_image_class_hides_sequence_class_on_both_backends(megadb_uri):
    seq = {'dataset': 'd', 'seq_id': 'a/b?#c', 'class': ['deer'],
           'images': [{'file': 'x.jpg', 'class': ['elk']}]}
    with open_megadb(megadb_uri) as db:
        db.replace_sequences('d', [check_sequence_doc(seq, 'r')])
        assert list(db.query_sequences('d', ['deer'])) == []
        assert [s['seq_id'] for s in db.query_sequences('d', ['elk'])] == ['a/b?#c']
        assert db.dataset_classes('d') == {'elk': 1}


def test_demo_database_matches_coco(project, megadb):
    coco = read_json(project / 'coco' / 'demo_forest.json')
    with open_megadb(str(megadb)) as db:
        n_images = sum(len(s['images']) for s in db.query_sequences('demo_forest'))
    assert n_images == len(coco['images'])


def test_import_dataset_entries(tmp_path, megadb_uri, capsys):
    entries = [{'dataset_name': 'a', 'storage_account': 'acct', 'container': 'c',
                'container_sas_key': 'sv=1&sig=SECRET', 'path_prefix': 'p'},
               {'dataset_name': 'b', 'images_root': '/data/b'}]
    (tmp_path / 'e.json').write_text(json.dumps(entries))
    assert import_dataset.main([megadb_uri, '--dataset-entries', str(tmp_path / 'e.json')]) == 0
    assert 'SECRET' not in capsys.readouterr().err
    with open_megadb(megadb_uri) as db:
        assert db.get_datasets() == {e['dataset_name']: e for e in entries}
    (tmp_path / 'bad.json').write_text(json.dumps([{'dataset_name': 'x', 'container': 3}]))
    rc = utils.run_cli(lambda: import_dataset.main([megadb_uri, '--dataset-entries',
                                                    str(tmp_path / 'bad.json')]))
    assert rc == 2 and '[0] (x): "container" must be a string' in capsys.readouterr().err


def test_cosmos_key_from_flag_or_environment(tmp_path, cosmos_server, monkeypatch, capsys):
    from tests.emulators import COSMOS_TEST_KEY
    monkeypatch.delenv('COSMOS_KEY', raising=False)
    monkeypatch.setenv('COSMOS_DATABASE', 'keyflag')
    (tmp_path / 'c.json').write_text(json.dumps(_coco()))
    args = [cosmos_server.endpoint, '--dataset', 'ds', '--coco', str(tmp_path / 'c.json')]
    assert utils.run_cli(lambda: import_dataset.main(args)) == 2
    assert 'COSMOS_KEY' in capsys.readouterr().err
    assert import_dataset.main([*args, '--cosmos-key', COSMOS_TEST_KEY]) == 0
    monkeypatch.setenv('COSMOS_ENDPOINT', cosmos_server.endpoint)
    monkeypatch.setenv('COSMOS_KEY', COSMOS_TEST_KEY)
    with open_megadb('cosmos') as db:
        assert [s['seq_id'] for s in db.query_sequences('ds')] == ['s1', 's2']
