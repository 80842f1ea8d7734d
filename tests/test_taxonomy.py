"""Label specifications (JSON and CSV) and the taxonomy graph."""
from __future__ import annotations

import json

import pytest

from classification import csv_to_json, utils
from classification.taxonomy import (
    csv_spec_to_json,
    load_taxonomy_csv,
    parse_label_spec,
    resolve_label_spec,
)

TAXONOMY = '''dataset_name,query,taxonomy_level,scientific_name,common_name,source,taxonomy_string
ds1,white-tailed deer,species,odocoileus virginianus,white-tailed deer,x,"[(1, 'species', 'odocoileus virginianus', ['white-tailed deer']), (2, 'genus', 'odocoileus', []), (3, 'family', 'cervidae', ['deer']), (9, 'class', 'mammalia', [])]"
ds1,elk,species,cervus canadensis,elk,x,"[(4, 'species', 'cervus canadensis', ['elk']), (5, 'genus', 'cervus', []), (3, 'family', 'cervidae', ['deer']), (9, 'class', 'mammalia', [])]"
ds2,deer,family,cervidae,deer,x,"[[3, 'family', 'cervidae', ['deer']], [9, 'class', 'mammalia', []]]"
ds2,turkey,species,meleagris gallopavo,wild turkey,x,"[(6, 'species', 'meleagris gallopavo', []), (7, 'class', 'aves', ['birds'])]"
ds2,unknown animal,,,,,
'''


@pytest.fixture
def taxonomy(tmp_path):
    path = tmp_path / 'tax.csv'
    path.write_text(TAXONOMY)
    return load_taxonomy_csv(path)


def test_taxonomy_graph(taxonomy):
    assert taxonomy.dataset_labels_under('family', 'cervidae') == {
        ('ds1', 'white-tailed deer'), ('ds1', 'elk'), ('ds2', 'deer')}
    assert taxonomy.dataset_labels_under('class', 'aves') == {('ds2', 'turkey')}
    assert ('ds2', 'unknown animal') in taxonomy.dataset_labels
    assert taxonomy.node('genus', 'odocoileus').parents == {('family', 'cervidae')}


def test_every_spec_construct(taxonomy):
    spec = parse_label_spec({
        'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}],
                 'exclude': {'dataset_labels': {'ds1': ['elk']}},
                 'max_count': 10, 'prioritize': [['ds2'], ['ds1']]},
        'elk': {'taxa': [{'level': 'genus', 'name': 'cervus', 'datasets': ['ds1']}]},
        'bird': {'taxa': [{'level': 'class', 'name': 'aves'}],
                 'dataset_labels': {'ds2': ['unknown animal']},
                 'exclude': {'taxa': [{'level': 'species', 'name': 'meleagris gallopavo'}]}},
    }, 'spec.json')
    resolved = resolve_label_spec(spec, taxonomy)
    assert resolved == {'deer': {('ds1', 'white-tailed deer'), ('ds2', 'deer')},
                        'elk': {('ds1', 'elk')}, 'bird': {('ds2', 'unknown animal')}}
    assert spec['deer'].max_count == 10 and spec['deer'].prioritize == (('ds2',), ('ds1',))


@pytest.mark.parametrize('spec, match', [
    ({'x': {'taxa': [{'level': 'genus', 'name': 'nope'}]}}, 'unknown taxon'),
    ({'x': {'dataset_labels': {'ds1': ['nope']}}}, 'unknown dataset label'),
    ({'x': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
      'y': {'dataset_labels': {'ds2': ['deer']}}}, 'already in label'),
    ({'x': {'taxa': [{'level': 'family', 'name': 'cervidae'}],
            'exclude': {'taxa': [{'level': 'family', 'name': 'cervidae'}]}}}, 'matches no'),
])
def test_resolve_errors_name_the_label(taxonomy, spec, match):
    with pytest.raises(utils.InputError, match=match):
        resolve_label_spec(parse_label_spec(spec, 's'), taxonomy)


def test_allow_multilabel(taxonomy):
    spec = parse_label_spec({'x': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
                             'y': {'dataset_labels': {'ds2': ['deer']}}}, 's')
    resolved = resolve_label_spec(spec, taxonomy, allow_multilabel=True)
    assert ('ds2', 'deer') in resolved['x'] and ('ds2', 'deer') in resolved['y']


@pytest.mark.parametrize('spec, match', [
    ([], 'non-empty JSON object'), ({'x': {}}, 'selects nothing'),
    ({'x': {'taxa': 'cervidae'}}, 'taxa'), ({'x': {'taxa': [{'level': 'family'}]}}, 'taxa\\[0\\]'),
    ({'x': {'dataset_labels': {'d': ['a']}, 'max_count': 0}}, 'max_count'),
    ({'x': {'dataset_labels': {'d': ['a']}, 'prioritize': [['d']]}}, 'needs "max_count"'),
    ({'x': {'dataset_labels': {'d': ['a']}, 'colour': 1}}, 'unknown key'),
    ({'x': {'dataset_labels': {'d': 'a'}}}, 'list of strings'),
])
def test_spec_syntax_errors(spec, match):
    with pytest.raises(utils.InputError, match=match):
        parse_label_spec(spec, 's')


def test_csv_to_json_every_row_type():
    text = '''output_label,type,content
# a comment
deer,family,cervidae
deer,datasettaxon,ds1|genus|odocoileus
deer,row,ds2|deer
!deer,row,ds1|elk
!deer,species,cervus canadensis
deer,max_count,100
deer,prioritize,"[['ds2'], ['ds1']]"

bird,class,aves
'''
    js = csv_spec_to_json(text, 'spec.csv')
    assert js == {
        'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'},
                          {'level': 'genus', 'name': 'odocoileus', 'datasets': ['ds1']}],
                 'dataset_labels': {'ds2': ['deer']},
                 'exclude': {'dataset_labels': {'ds1': ['elk']},
                             'taxa': [{'level': 'species', 'name': 'cervus canadensis'}]},
                 'max_count': 100, 'prioritize': [['ds2'], ['ds1']]},
        'bird': {'taxa': [{'level': 'class', 'name': 'aves'}]},
    }


@pytest.mark.parametrize('row, match', [
    ('deer,row,ds1', 'row content'), ('deer,datasettaxon,ds1|genus', 'datasettaxon'),
    ('deer,famly,cervidae', 'unknown type'), ('deer,max_count,many', 'integer'),
    ('deer,prioritize,__import__("os")', 'list of lists'), ('deer,family', '3 columns'),
])
def test_csv_errors_name_the_line(row, match):
    with pytest.raises(utils.InputError, match=match) as e:
        csv_spec_to_json(f'output_label,type,content\n{row}\n', 'spec.csv')
    assert 'spec.csv:2' in str(e.value)


def test_csv_prioritize_needs_max_count():
    with pytest.raises(utils.InputError, match='needs "max_count"'):
        csv_spec_to_json('deer,family,cervidae\ndeer,prioritize,"[[\'a\']]"\n', 'spec.csv')


def test_taxonomy_string_is_never_evaluated(tmp_path):
    (tmp_path / 't.csv').write_text(
        'dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\n'
        'ds,x,genus,y,"__import__(\'os\').system(\'echo hi\')"\n')
    with pytest.raises(utils.InputError, match='t.csv:2'):
        load_taxonomy_csv(tmp_path / 't.csv')


def test_taxonomy_csv_missing_column(tmp_path):
    (tmp_path / 't.csv').write_text('dataset_name,query\nds,x\n')
    with pytest.raises(utils.InputError, match='lacks column'):
        load_taxonomy_csv(tmp_path / 't.csv')


def test_csv_to_json_command(tmp_path, capsys):
    (tmp_path / 's.csv').write_text('fox,genus,vulpes\n')
    assert csv_to_json.main([str(tmp_path / 's.csv'), '-']) == 0
    assert json.loads(capsys.readouterr().out) == {'fox': {'taxa': [{'level': 'genus',
                                                                     'name': 'vulpes'}]}}
    (tmp_path / 'bad.csv').write_text('fox,genus\n')
    assert utils.run_cli(lambda: csv_to_json.main([str(tmp_path / 'bad.csv'), '-'])) == 2


def test_single_parent_taxonomy(tmp_path):
    # zebras tagged under genus equus (two rows) and once under a genus "zebra"
    rows = [
        ('ds1', 'zebra', "[(1, 'species', 'equus quagga', []), (2, 'genus', 'equus', [])]"),
        ('ds2', 'plains zebra', "[(1, 'species', 'equus quagga', []), (2, 'genus', 'equus', [])]"),
        ('ds3', 'zebra', "[(1, 'species', 'equus quagga', []), (3, 'genus', 'zebra', [])]"),
    ]
    text = 'dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\n' + ''.join(
        f'{d},{q},species,equus quagga,"{ts}"\n' for d, q, ts in rows)
    (tmp_path / 't.csv').write_text(text)
    dag = load_taxonomy_csv(tmp_path / 't.csv')
    assert dag.node('species', 'equus quagga').parents == {('genus', 'equus'), ('genus', 'zebra')}
    assert len(dag.dataset_labels_under('genus', 'zebra')) == 3
    tree = load_taxonomy_csv(tmp_path / 't.csv', single_parent=True)
    assert tree.node('species', 'equus quagga').parents == {('genus', 'equus')}
    assert tree.dataset_labels_under('genus', 'zebra') == set()
    assert len(tree.dataset_labels_under('genus', 'equus')) == 3
