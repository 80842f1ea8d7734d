"""Taxonomic rollup, allow-lists, and taxonomy descriptions in the Timelapse JSON."""
from __future__ import annotations

import gzip
import io
import json
import re
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classification import merge_classification_detection_output as mcdo
from classification import rollup, utils
from classification.taxonomy import load_taxonomy_csv, parse_label_spec
from tests.conftest import read_json, run_module, snapshot, write

MAMMAL = [('class', 'mammalia'), ('kingdom', 'animalia')]
CARNIVORE = [('order', 'carnivora'), *MAMMAL]
CANID = [('family', 'canidae'), *CARNIVORE]
BIRD = [('class', 'aves'), ('kingdom', 'animalia')]
PHASIANID = [('family', 'phasianidae'), ('order', 'galliformes'), *BIRD]
LINEAGES = {
    'red fox': [('species', 'vulpes vulpes'), ('genus', 'vulpes'), *CANID],
    'swift fox': [('species', 'vulpes velox'), ('genus', 'vulpes'), *CANID],
    'coyote': [('species', 'canis latrans'), ('genus', 'canis'), *CANID],
    'wolf': [('species', 'canis lupus'), ('genus', 'canis'), *CANID],
    'skunk': [('family', 'mephitidae'), *CARNIVORE],
    'deer': [('family', 'cervidae'), ('order', 'artiodactyla'), *MAMMAL],
    'turkey': [('species', 'meleagris gallopavo'), ('genus', 'meleagris'), *PHASIANID],
    'grouse': [('species', 'bonasa umbellus'), ('genus', 'bonasa'), *PHASIANID],
    'bird': BIRD,
    'empty': [],
}
SPEC = {
    'red_fox': {'taxa': [{'level': 'species', 'name': 'vulpes vulpes'}]},
    'swift_fox': {'taxa': [{'level': 'species', 'name': 'vulpes velox'}]},
    'coyote': {'dataset_labels': {'ds': ['coyote']}},
    'wolf': {'taxa': [{'level': 'species', 'name': 'canis lupus'}]},
    'skunk': {'taxa': [{'level': 'family', 'name': 'mephitidae'}]},
    'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
    'turkey': {'taxa': [{'level': 'species', 'name': 'meleagris gallopavo'}],
               'dataset_labels': {'ds': ['bird']}},
    'grouse': {'taxa': [{'level': 'species', 'name': 'bonasa umbellus'}]},
    'empty': {'dataset_labels': {'ds': ['empty']}},
}
LABELS = list(SPEC)
T = 0.8


def taxonomy_csv(lineages: dict[str, list[tuple[str, str]]] = LINEAGES) -> str:
    rows = []
    for k, (query, lineage) in enumerate(lineages.items()):
        literal = repr([(k * 10 + j, level, name, []) for j, (level, name) in enumerate(lineage)])
        rows.append({'dataset_name': 'ds', 'query': query,
                     'taxonomy_level': lineage[0][0] if lineage else '',
                     'scientific_name': lineage[0][1] if lineage else '',
                     'common_name': query, 'source': 'test',
                     'taxonomy_string': literal if lineage else ''})
    return pd.DataFrame(rows).to_csv(index=False)


@pytest.fixture
def tree(tmp_path) -> rollup.LabelTaxa:
    write(tmp_path, 'tax.csv', taxonomy_csv())
    return rollup.label_taxa(LABELS, parse_label_spec(SPEC, 'spec'),
                             load_taxonomy_csv(tmp_path / 'tax.csv', single_parent=True))


def probs_of(**p: float) -> np.ndarray:
    row = np.zeros(len(LABELS))
    for k, v in p.items():
        row[LABELS.index(k)] = v
    return row[None, :]


def answer(lt: rollup.LabelTaxa, row: np.ndarray, threshold: float = T,
           max_level: str | None = None) -> tuple[str, str, str, float]:
    """(outcome, name, level, prob) of one row."""
    df = rollup.rollup_table(['a.jpg'], lt, rollup.rollup(row, lt, threshold, max_level))
    r = df.iloc[0]
    return r['outcome'], r['name'], r['level'], r['prob']


# ---------------------------------------------------------------- labels in the tree

def test_labels_are_placed_by_their_taxa(tree):
    desc = {lab: tree.label_description(i) for i, lab in enumerate(LABELS)}
    assert desc['red_fox'] == 'animalia;mammalia;carnivora;canidae;vulpes;vulpes vulpes'
    assert desc['coyote'] == 'animalia;mammalia;carnivora;canidae;canis;canis latrans'
    # the "bird" dataset label does not pull the turkey up to its class
    assert desc['turkey'] == ('animalia;aves;galliformes;phasianidae;meleagris;'
                              'meleagris gallopavo')
    assert desc['empty'] == 'empty'                 # no taxonomy_string: outside the tree
    assert tree.label_taxon[LABELS.index('empty')] is None
    names = {t.name for t in tree.taxa}
    assert 'canis' in names and 'cervidae' in names and 'empty' not in names


def test_several_taxa_meet_at_their_lowest_common_ancestor(tmp_path):
    write(tmp_path, 'tax.csv', taxonomy_csv())
    tax = load_taxonomy_csv(tmp_path / 'tax.csv', single_parent=True)
    spec = parse_label_spec({
        'canid': {'taxa': [{'level': 'species', 'name': 'vulpes vulpes'},
                           {'level': 'genus', 'name': 'canis'}]},
        'gamebird': {'dataset_labels': {'ds': ['turkey', 'grouse']}},
        'animal': {'taxa': [{'level': 'family', 'name': 'cervidae'},
                            {'level': 'class', 'name': 'aves'}]}}, 'spec')
    lt = rollup.label_taxa(['canid', 'gamebird', 'animal'], spec, tax)
    assert [t.name if t else None for t in lt.label_taxon] == ['canidae', 'phasianidae',
                                                                'animalia']
    assert [t.level if t else None for t in lt.label_taxon] == ['family', 'family', 'kingdom']


@pytest.mark.parametrize('spec, labels, message', [
    (SPEC, [*LABELS, 'ghost'], r"\['ghost'\] are not in the label specification"),
    ({**SPEC, 'wolf': {'taxa': [{'level': 'species', 'name': 'canis dirus'}]}}, LABELS,
     "label 'wolf': taxon species 'canis dirus' is not in the taxonomy CSV"),
    ({**SPEC, 'coyote': {'dataset_labels': {'ds': ['jackal']}}}, LABELS,
     "label 'coyote': dataset label 'jackal' of 'ds' is not in the taxonomy CSV"),
])
def test_labels_the_taxonomy_cannot_place_are_refused(tmp_path, spec, labels, message):
    write(tmp_path, 'tax.csv', taxonomy_csv())
    tax = load_taxonomy_csv(tmp_path / 'tax.csv', single_parent=True)
    with pytest.raises(utils.InputError, match=message):
        rollup.label_taxa(labels, parse_label_spec(spec, 'spec'), tax)


def test_only_taxa_two_labels_meet_at_can_be_answers(tree):
    # animalia holds every label in the tree: never an answer
    ok = {t.name for t, a in zip(tree.taxa, tree.answerable(), strict=True) if a}
    assert ok == {'vulpes', 'canis', 'canidae', 'carnivora', 'mammalia', 'phasianidae'}


# ---------------------------------------------------------------- rollup

@pytest.mark.parametrize('probs, expected', [
    (dict(red_fox=0.85, swift_fox=0.1, deer=0.05), ('label', 'red_fox', 'species', 0.85)),
    (dict(red_fox=0.5, swift_fox=0.35, coyote=0.1, deer=0.05), ('taxon', 'vulpes', 'genus', 0.85)),
    (dict(red_fox=0.5, swift_fox=0.3, deer=0.2), ('taxon', 'vulpes', 'genus', 0.8)),  # exactly T
    (dict(red_fox=0.3, swift_fox=0.2, coyote=0.35, skunk=0.15),
     ('taxon', 'canidae', 'family', 0.85)),
    (dict(red_fox=0.2, swift_fox=0.2, coyote=0.2, skunk=0.3, deer=0.1),
     ('taxon', 'carnivora', 'order', 0.9)),
    (dict(turkey=0.6, grouse=0.25, deer=0.15), ('taxon', 'phasianidae', 'family', 0.85)),
    (dict(skunk=0.4, deer=0.4, turkey=0.2), ('taxon', 'mammalia', 'class', 0.8)),
    (dict(empty=0.5, deer=0.3, turkey=0.2), ('none', '', '', None)),       # animalia: 0.5
    (dict(empty=0.8, deer=0.2), ('label', 'empty', '', 0.8)),
])
def test_rollup_known_answers(tree, probs, expected):
    outcome, name, level, prob = answer(tree, probs_of(**probs))
    assert (outcome, name, level) == expected[:3]
    if expected[3] is None:
        assert np.isnan(prob)
    else:
        assert prob == pytest.approx(expected[3])


def test_rollup_ties_and_low_thresholds(tree):
    # two disjoint taxa reach 0.4: the more specific level wins (genus before family)
    assert answer(tree, probs_of(red_fox=0.2, swift_fox=0.2, turkey=0.2, grouse=0.2,
                                 deer=0.2), 0.4)[:3] == ('taxon', 'vulpes', 'genus')
    # same level: the larger sum, then the first description
    assert answer(tree, probs_of(red_fox=0.25, swift_fox=0.2, coyote=0.2, wolf=0.2,
                                 deer=0.15), 0.4)[1] == 'vulpes'
    assert answer(tree, probs_of(red_fox=0.2, swift_fox=0.2, coyote=0.2, wolf=0.2,
                                 deer=0.2), 0.4)[1] == 'canis'
    # two labels tie at the top, both above T: the first in label order stands
    assert answer(tree, probs_of(coyote=0.5, red_fox=0.5), 0.5)[:2] == ('label', 'red_fox')


def test_max_level_keeps_high_taxa_out(tree):
    row = probs_of(red_fox=0.2, swift_fox=0.2, coyote=0.2, skunk=0.3, deer=0.1)
    assert answer(tree, row, max_level='order')[1] == 'carnivora'
    assert answer(tree, row, max_level='family')[0] == 'none'
    with pytest.raises(utils.InputError, match='unknown taxonomy level'):
        rollup.rollup(row, tree, T, 'clade')
    # the categories a merge lists are the taxa that can be answers, at max_level or below
    names = set(rollup.taxon_category_names(tree).values())
    below_order = set(rollup.taxon_category_names(tree, 'order').values())
    assert 'taxon: carnivora' in below_order and below_order < names
    assert all(tree.taxa[k].level not in ('class', 'phylum', 'kingdom')
               for k in rollup.taxon_category_names(tree, 'order'))


def reference_rollup(lt: rollup.LabelTaxa, p: np.ndarray, t: float) -> tuple[int, int]:
    """The rule of rollup.py written plainly, one row at a time."""
    if p.max() >= t - rollup.TOLERANCE:
        return 0, -1
    members = lt.membership()
    sums = p @ members
    ok = lt.answerable()
    reach = [k for k in range(len(lt.taxa)) if ok[k] and sums[k] >= t - rollup.TOLERANCE]
    lowest = [k for k in reach if not any(
        lt.taxa[k].lineage == lt.taxa[u].lineage[:len(lt.taxa[k].lineage)] and u != k
        for u in reach)]
    if not lowest:
        return 2, -1
    ranks = lt.effective_ranks()
    best = min(lowest, key=lambda k: (-ranks[k], -round(sums[k], 12), k))
    return 1, best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=len(LABELS), max_size=len(LABELS)),
       st.sampled_from([0.3, 0.4, 0.5, 0.6, 0.8, 0.95]))
def test_rollup_agrees_with_a_plain_reading_of_the_rule(tmp_path_factory, weights, t):
    tmp = tmp_path_factory.mktemp('tax')
    write(tmp, 'tax.csv', taxonomy_csv())
    lt = rollup.label_taxa(LABELS, parse_label_spec(SPEC, 'spec'),
                           load_taxonomy_csv(tmp / 'tax.csv', single_parent=True))
    w = np.asarray(weights, dtype=np.float64)
    p = w / w.sum() if w.sum() else w
    got = rollup.rollup(np.stack([p, p]), lt, t)
    code, taxon = reference_rollup(lt, p, t)
    assert got.code.tolist() == [code, code]
    assert got.taxon.tolist() == [taxon, taxon]


def test_rollup_in_chunks_matches_row_by_row(tree, monkeypatch):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(LABELS), 0.5), size=300)
    whole = rollup.rollup(probs, tree, 0.7)
    monkeypatch.setattr(rollup, '_CHUNK_ROWS', 7)
    chunked = rollup.rollup(probs, tree, 0.7)
    assert whole.code.tolist() == chunked.code.tolist()
    assert whole.taxon.tolist() == chunked.taxon.tolist()
    assert set(whole.code.tolist()) == {0, 1, 2}


# ---------------------------------------------------------------- allow-lists

def test_allow_list_csv_and_json_read_the_same(tmp_path):
    csv_path = write(tmp_path, 'allow.csv', 'location,label\n# a comment\ncam_00,deer\n'
                     'cam_00, red_fox\n\nnorth/cam_01/,turkey\n*,deer\n')
    json_path = write(tmp_path, 'allow.json', {'cam_00': ['deer', 'red_fox'],
                                               'north/cam_01': ['turkey'], '*': ['deer']})
    expected = {'cam_00': frozenset({'deer', 'red_fox'}), 'north/cam_01': frozenset({'turkey'}),
                '*': frozenset({'deer'})}
    assert rollup.read_allow_list(csv_path, LABELS) == expected
    assert rollup.read_allow_list(json_path, LABELS) == expected


@pytest.mark.parametrize('name, content, message', [
    ('a.csv', 'location,label\ncam_00,moose\n', r"a.csv:2: 'moose' \(location 'cam_00'\) is "
                                                 'not a classifier label'),
    ('a.csv', 'place,label\ncam_00,deer\n', 'starts with the header location,label'),
    ('a.csv', 'location,label\ncam_00\n', 'expected 2 columns'),
    ('a.csv', 'location,label\n ,deer\n', 'empty location'),
    ('a.csv', 'location,label\n', 'no location,label rows'),
    ('a.csv', b'location,label\n\xff,deer\n', 'not UTF-8'),
    ('a.json', {'cam_00': ['moose']}, "'moose' .* is not a classifier label"),
    ('a.json', {'cam_00': []}, 'non-empty list of label names'),
    ('a.json', {'cam_00': 'deer'}, 'non-empty list of label names'),
    ('a.json', ['deer'], 'non-empty JSON object'),
    ('a.json', {}, 'non-empty JSON object'),
    ('a.json', {'cam_00': ['deer'], 'cam_00/': ['fox']}, 'given twice'),
    ('a.json', '{"cam_00": ["deer"], "cam_00": ["deer"]}', 'given twice'),
    ('a.json', '{"cam_00": [', 'not valid JSON'),
])
def test_bad_allow_lists_are_refused(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(utils.InputError, match=message):
        rollup.read_allow_list(path, LABELS)


def test_a_photo_is_at_its_longest_listed_folder():
    keys = {'north', 'north/cam_01', '*'}
    assert rollup.photo_location('north/cam_01/img.jpg', keys) == 'north/cam_01'
    assert rollup.photo_location('north/cam_02/img.jpg', keys) == 'north'
    assert rollup.photo_location('north\\cam_01\\img.jpg', keys) == 'north/cam_01'
    assert rollup.photo_location('south/img.jpg', keys) == '*'
    assert rollup.photo_location('north.jpg', keys) == '*'
    assert rollup.photo_location('south/img.jpg', {'north'}) is None


def test_allow_list_zeroes_and_rescales():
    labels = ['a', 'b', 'c']
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    allow = {'x': frozenset({'b', 'c'}), 'y/z': frozenset({'a'})}
    out, unmatched, emptied = rollup.apply_allow_list(
        probs, ['x/1.jpg', 'y/z/2.jpg', 'w/3.jpg', 'y/z/4.jpg'], labels, allow)
    np.testing.assert_allclose(out, [[0, 0.6, 0.4], [1, 0, 0], [0.5, 0.3, 0.2], [0, 0, 0]])
    assert (unmatched, emptied) == (1, 1)
    # no crops at all: nothing to filter (this raised KeyError)
    out, unmatched, emptied = rollup.apply_allow_list(np.zeros((0, 3)), [], labels, allow)
    assert out.shape == (0, 3) and (unmatched, emptied) == (0, 0)
    assert rollup.unused_locations([], allow) == ['x', 'y/z']


_names = st.text(string.ascii_letters + string.digits + '_-. ', min_size=1,
                 max_size=12).filter(lambda s: s.strip() and not s.strip().startswith('#'))
_locations = st.lists(_names, min_size=1, max_size=3).map('/'.join)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(_locations, st.lists(st.sampled_from(LABELS), min_size=1, max_size=4),
                       min_size=1, max_size=6))
def test_allow_list_round_trips(tmp_path_factory, mapping):
    tmp = tmp_path_factory.mktemp('allow')
    keys = [rollup._location_key(k) for k in mapping]
    if len(set(keys)) != len(keys) or not all(keys):
        with pytest.raises(utils.InputError):
            rollup.read_allow_list(write(tmp, 'a.json', mapping), LABELS)
        return
    expected = {rollup._location_key(k): frozenset(v) for k, v in mapping.items()}
    rows = pd.DataFrame([(k, lab) for k, v in mapping.items() for lab in v],
                        columns=['location', 'label'])
    assert rollup.read_allow_list(write(tmp, 'a.json', mapping), LABELS) == expected
    assert rollup.read_allow_list(write(tmp, 'a.csv', rows.to_csv(index=False)),
                                  LABELS) == expected
    with gzip.open(tmp / 'a.csv.gz', 'wt') as f:
        f.write(rows.to_csv(index=False))
    assert rollup.read_allow_list(tmp / 'a.csv.gz', LABELS) == expected


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(['a.csv', 'a.json']))
def test_allow_list_reader_never_crashes(tmp_path_factory, data, name):
    """Any bytes: a valid allow-list of known labels, or one InputError."""
    tmp = tmp_path_factory.mktemp('junk')
    try:
        allow = rollup.read_allow_list(write(tmp, name, data), LABELS)
    except utils.InputError as e:
        assert '\n' not in str(e).strip()
        return
    assert allow and all(v and v <= set(LABELS) for v in allow.values())


# ---------------------------------------------------------------- merge

def _detections() -> dict:
    dets = [{'category': '1', 'conf': 0.9, 'bbox': [0.1, 0.1, 0.2, 0.2]}]
    return {'info': {'format_version': '1.4', 'detector': 'md_v5a.0.0.pt'},
            'detection_categories': {'1': 'animal', '2': 'person', '3': 'vehicle'},
            'images': [{'file': f'{loc}/img{k}.jpg', 'max_detection_conf': 0.9,
                        'detections': [dict(d) for d in dets]}
                       for loc in ('cam_00', 'cam_01') for k in range(2)]}


@pytest.fixture
def merge_inputs(tmp_path):
    rows = [dict(red_fox=0.9, deer=0.1), dict(red_fox=0.5, swift_fox=0.35, deer=0.15),
            dict(empty=0.5, deer=0.3, turkey=0.2), dict(red_fox=0.45, deer=0.4, swift_fox=0.15)]
    files = [f'{loc}/img{k}.jpg' for loc in ('cam_00', 'cam_01') for k in range(2)]
    df = pd.DataFrame(np.concatenate([probs_of(**r) for r in rows]), columns=LABELS)
    df.insert(0, 'path', [f'{f}___crop00_mdv5a.0.0.jpg' for f in files])
    return {'csv': write(tmp_path, 'probs.csv', df.to_csv(index=False)),
            'index': write(tmp_path, 'index.json', utils.label_index_dict(LABELS)),
            'det': write(tmp_path, 'det.json', _detections()),
            'tax': write(tmp_path, 'tax.csv', taxonomy_csv()),
            'spec': write(tmp_path, 'spec.json', SPEC), 'dir': tmp_path}


def _merge_args(m, *extra: str, out: str = 'out.json') -> list[str]:
    return [m['csv'], m['index'], '-j', m['det'], '-o', str(m['dir'] / out), '-n', 'clf',
            *extra]


def test_descriptions_in_the_timelapse_json(merge_inputs):
    m = merge_inputs
    assert mcdo.main(_merge_args(m, '--taxonomy-csv', m['tax'], '--label-spec', m['spec'])) == 0
    merged = read_json(m['dir'] / 'out.json')
    cats, desc = merged['classification_categories'], merged['classification_category_descriptions']
    assert set(cats) == set(desc) == {str(i) for i in range(len(LABELS))}
    assert desc['0'] == 'animalia;mammalia;carnivora;canidae;vulpes;vulpes vulpes'
    assert desc[str(LABELS.index('empty'))] == 'empty'
    # descriptions change nothing else
    assert mcdo.main(_merge_args(m, out='plain.json')) == 0
    plain = read_json(m['dir'] / 'plain.json')
    for doc in (merged, plain):
        doc['info'].pop('classification_completion_time')
    merged.pop('classification_category_descriptions')
    assert merged == plain
    from tests.test_cli import assert_valid_megadetector_output
    assert_valid_megadetector_output(m['dir'] / 'out.json')


def test_rollup_in_the_timelapse_json(merge_inputs):
    m = merge_inputs
    write(m['dir'], 'allow.csv', 'location,label\ncam_01,red_fox\ncam_01,deer\n')
    assert mcdo.main(_merge_args(m, '--taxonomy-csv', m['tax'], '--label-spec', m['spec'],
                                 '--rollup-threshold', '0.8')) == 0
    merged = read_json(m['dir'] / 'out.json')
    cats, desc = merged['classification_categories'], merged['classification_category_descriptions']
    assert set(cats) == set(desc)
    lists = [img['detections'][0]['classifications'] for img in merged['images']]
    assert [cats[c] for c, _ in lists[0]] == ['red_fox', 'deer']    # 0.9: no rollup
    top = lists[1][0]
    assert cats[top[0]] == 'taxon: vulpes' and top[1] == 0.85
    assert desc[top[0]] == 'animalia;mammalia;carnivora;canidae;vulpes'
    assert [cats[c] for c, _ in lists[1][1:]] == ['red_fox', 'swift_fox', 'deer']
    assert [cats[c] for c, _ in lists[2]] == ['empty', 'deer', 'turkey']  # no taxon reaches it
    assert cats[lists[3][0][0]] == 'taxon: mammalia' and lists[3][0][1] == 1.0
    assert 'taxon: meleagris' not in cats.values()   # only turkey below: never an answer
    assert 'taxon: animalia' not in cats.values()    # above every label: never an answer
    assert int(top[0]) >= mcdo.TAXON_ID_OFFSET
    assert merged['info']['classifier_metadata']['taxonomic_rollup_threshold'] == 0.8
    from tests.test_cli import assert_valid_megadetector_output
    assert_valid_megadetector_output(m['dir'] / 'out.json')

    # with the allow-list, cam_01's photos only know red_fox and deer
    assert mcdo.main(_merge_args(m, '--taxonomy-csv', m['tax'], '--label-spec', m['spec'],
                                 '--rollup-threshold', '0.8', '--allow-list',
                                 str(m['dir'] / 'allow.csv'))) == 0
    merged = read_json(m['dir'] / 'out.json')
    cats = merged['classification_categories']
    lists = [img['detections'][0]['classifications'] for img in merged['images']]
    assert [cats[c] for c, _ in lists[1]] == ['taxon: vulpes', 'red_fox', 'swift_fox', 'deer']
    assert [(cats[c], p) for c, p in lists[2]] == [('deer', 1.0)]   # empty, turkey: not here
    assert [(cats[c], p) for c, p in lists[3]] == [('taxon: mammalia', 1.0), ('red_fox', 0.5294),
                                                   ('deer', 0.4706)]


def test_true_label_first_then_the_taxon(tree):
    df = pd.DataFrame(probs_of(red_fox=0.5, swift_fox=0.35, deer=0.15), columns=LABELS)
    df.insert(0, 'path', ['cam_00/img0.jpg___crop00_mdv5a.0.0.jpg'])
    df.insert(1, 'label', ['swift_fox'])
    opts = rollup.RollupOptions(label_taxa=tree, threshold=T)
    out = mcdo.merge(df, LABELS, _detections(), 0.1, 'clf', label_pos='first', options=opts)
    cats = out['classification_categories']
    cls = out['images'][0]['detections'][0]['classifications']
    assert [cats[c] for c, _ in cls] == ['label: swift_fox', 'taxon: vulpes', 'red_fox', 'swift_fox',
                                         'deer']
    assert out['classification_category_descriptions'][cls[0][0]] == \
        out['classification_category_descriptions'][str(LABELS.index('swift_fox'))]
    with pytest.raises(utils.InputError, match='need a probability column'):
        mcdo.merge(df[['path', 'label']], LABELS, _detections(), 0.1, 'clf', options=opts)
    with pytest.raises(utils.InputError, match='relative-conf'):
        mcdo.merge(df, LABELS, _detections(), 0.1, 'clf', relative_conf=True, options=opts)


def test_allow_list_alone(merge_inputs):
    m = merge_inputs
    write(m['dir'], 'allow.json', {'cam_00': ['deer']})
    assert mcdo.main(_merge_args(m, '--allow-list', str(m['dir'] / 'allow.json'))) == 0
    merged = read_json(m['dir'] / 'out.json')
    lists = [img['detections'][0]['classifications'] for img in merged['images']]
    deer = str(LABELS.index('deer'))
    assert lists[0] == [[deer, 1.0]] and lists[1] == [[deer, 1.0]]
    assert 'classification_category_descriptions' not in merged


@pytest.mark.parametrize('extra, message', [
    (['--rollup-threshold', '0.8'], '--rollup-threshold needs --taxonomy-csv'),
    (['--taxonomy-csv', 't.csv'], 'go together'),
    (['--taxonomy-csv', 't', '--label-spec', 's', '--rollup-max-level', 'family'],
     '--rollup-max-level needs --rollup-threshold'),
    (['--allow-list', 'a.csv', '--relative-conf'], 'cannot be combined'),
    (['--taxonomy-csv', 't', '--label-spec', 's', '--rollup-threshold', '1.5'], ''),
])
def test_flag_combinations(extra, message, capsys):
    with pytest.raises(SystemExit):
        mcdo.parse_args(['c.csv', 'l.json', '-o', 'o', '-n', 'x', '-j', 'd.json', *extra])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('change, message', [
    ('index', r"label\(s\) \['ghost'\] are not in the label specification"),
    ('spec', "taxon species 'canis dirus' is not in the taxonomy CSV"),
    ('allow', "'ghost' .* is not a classifier label"),
    ('columns', 'probability columns do not match the label index'),
])
def test_inconsistent_inputs_are_refused(merge_inputs, change, message, capsys):
    m = merge_inputs
    extra = ['--taxonomy-csv', m['tax'], '--label-spec', m['spec'], '--rollup-threshold', '0.8']
    if change == 'index':
        write(m['dir'], 'index.json', utils.label_index_dict([*LABELS, 'ghost']))
        df = pd.read_csv(m['csv']).assign(ghost=0.0)
        write(m['dir'], 'probs.csv', df.to_csv(index=False))
    elif change == 'spec':
        write(m['dir'], 'spec.json', {**SPEC, 'wolf': {'taxa': [
            {'level': 'species', 'name': 'canis dirus'}]}})
    elif change == 'allow':
        extra += ['--allow-list', write(m['dir'], 'allow.csv', 'location,label\ncam_00,ghost\n')]
    elif change == 'columns':
        df = pd.read_csv(m['csv']).rename(columns={'wolf': 'dire_wolf'})
        write(m['dir'], 'probs.csv', df.to_csv(index=False))
    before = snapshot(m['dir'])
    rc = utils.run_cli(lambda: mcdo.main(_merge_args(m, *extra)))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith('error: ') and re.search(message, err[0]), err
    assert snapshot(m['dir']) == before                 # nothing written


# ---------------------------------------------------------------- the demo, end to end

def rollup_figures(merged: dict, truth: dict[str, str], lt: rollup.LabelTaxa,
                   taxonomy: dict[str, str], threshold: float) -> dict[str, object]:
    """Over classified detections of photos with an animal: how many keep a label
    reaching the threshold (and how many of those are right), how many rolled up, to
    which levels, how often the rolled-up taxon contains the true label's taxon, and
    how many reached nothing."""
    cats = merged['classification_categories']
    rolled = contains = kept = kept_right = none = 0
    levels: dict[str, int] = {}
    by_name = {t.description: t for t in lt.taxa}
    for img in merged['images']:
        true = truth.get(img['file'], 'empty')
        for d in img.get('detections') or []:
            cls = d.get('classifications')
            if not cls or true == 'empty':
                continue
            top = cls[0][0]
            if int(top) >= mcdo.TAXON_ID_OFFSET:
                rolled += 1
                taxon = by_name[taxonomy[top]]
                levels[taxon.level] = levels.get(taxon.level, 0) + 1
                true_desc = lt.label_description(lt.labels.index(true))
                contains += (true_desc + ';').startswith(taxon.description + ';')
            elif cls[0][1] >= threshold:
                kept += 1
                kept_right += cats[top] == true
            else:
                none += 1
    return {'kept': kept, 'kept_correct': kept_right, 'rolled_up': rolled, 'levels': levels,
            'rolled_up_contains_truth': contains, 'none': none}


def test_demo_project_end_to_end(project, base_logdir, model_files, new_crops, tmp_path):
    from classification import run_classifier
    model, label_index = model_files
    det = project / 'new_photos' / 'detections.json'
    out_csv = tmp_path / 'probs.csv.gz'
    assert run_classifier.main([str(model), str(new_crops), str(out_csv), '-d', str(det),
                                '-t', '0.2', '-c', str(label_index), '--image-size', '32',
                                '--num-workers', '0']) == 0
    labels = utils.load_label_index(label_index)
    truth = read_json(project / 'new_photos' / 'ground_truth.json')
    # every camera of the new photos may see every class but the skunk
    locations = sorted({f.split('/')[0] for f in truth})
    allow = pd.DataFrame([(loc, lab) for loc in locations for lab in labels if lab != 'skunk'],
                         columns=['location', 'label'])
    write(tmp_path, 'allow.csv', allow.to_csv(index=False))
    out = tmp_path / 'merged.json'
    assert mcdo.main([str(out_csv), str(label_index), '-j', str(det), '-o', str(out),
                      '-n', 'demo', '-t', '0.05', '--taxonomy-csv', str(project / 'taxonomy.csv'),
                      '--label-spec', str(base_logdir / 'label_spec.json'),
                      '--rollup-threshold', '0.8', '--allow-list',
                      str(tmp_path / 'allow.csv')]) == 0
    merged = read_json(out)
    cats = merged['classification_categories']
    desc = merged['classification_category_descriptions']
    assert set(cats) == set(desc)
    assert desc[str(labels.index('fox'))].endswith(';canidae;vulpes')
    assert desc[str(labels.index('turkey'))].endswith(';meleagris;meleagris gallopavo')
    skunk = str(labels.index('skunk'))
    lt = rollup.load_label_taxa(labels, base_logdir / 'label_spec.json',
                                project / 'taxonomy.csv')
    n = 0
    for img in merged['images']:
        for d in img.get('detections') or []:
            cls = d.get('classifications')
            if not cls:
                continue
            n += 1
            assert skunk not in [c for c, _ in cls]
            top, p = cls[0]
            if int(top) >= mcdo.TAXON_ID_OFFSET:
                # a taxon first: no label reached 0.8, the taxon's labels did together
                assert p >= 0.8 and all(q < 0.8 for _, q in cls[1:])
                below = sum(q for c, q in cls[1:] if (desc[c] + ';').startswith(desc[top] + ';'))
                assert below == pytest.approx(p, abs=0.05 * len(labels))
    assert n > 0
    from tests.test_cli import assert_valid_megadetector_output
    assert_valid_megadetector_output(out)
    figures = rollup_figures(merged, truth, lt, desc, 0.8)
    print('rollup figures at 0.8 (test fixture model):', json.dumps(figures))
    assert figures['kept'] + figures['rolled_up'] + figures['none'] == sum(
        1 for img in merged['images'] if truth.get(img['file'], 'empty') != 'empty'
        for d in img.get('detections') or [] if d.get('classifications'))
    assert figures['rolled_up'] > 0


def test_rollup_csv_table(tree):
    rows = np.concatenate([probs_of(red_fox=0.9, deer=0.1),
                           probs_of(red_fox=0.5, swift_fox=0.35, deer=0.15),
                           probs_of(empty=0.5, deer=0.3, turkey=0.2)])
    table = rollup.rollup_table(['a', 'b', 'c'], tree, rollup.rollup(rows, tree, T))
    assert table[['outcome', 'name', 'level']].values.tolist() == [
        ['label', 'red_fox', 'species'], ['taxon', 'vulpes', 'genus'], ['none', '', '']]
    assert table['description'][1] == 'animalia;mammalia;carnivora;canidae;vulpes'


# ---------------------------------------------------------------- rollup_classifier_probs

def test_rollup_classifier_probs_writes_one_answer_per_crop(merge_inputs):
    from classification import rollup_classifier_probs as rcp
    m = merge_inputs
    write(m['dir'], 'allow.json', {'cam_01': ['red_fox', 'deer']})
    out = m['dir'] / 'rollup.csv'
    assert rcp.main([m['csv'], m['index'], '--taxonomy-csv', m['tax'], '--label-spec',
                     m['spec'], '-t', '0.8', '--allow-list', str(m['dir'] / 'allow.json'),
                     '-o', str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ['path', 'outcome', 'name', 'level', 'prob', 'description']
    assert table['path'].tolist() == pd.read_csv(m['csv'])['path'].tolist()
    assert table[['outcome', 'name', 'level']].values.tolist() == [
        ['label', 'red_fox', 'species'], ['taxon', 'vulpes', 'genus'],
        ['label', 'deer', 'family'], ['taxon', 'mammalia', 'class']]
    assert table['prob'].tolist() == [0.9, 0.85, 1.0, 1.0]
    # --max-level keeps the class out; the same through a pipe to stdout
    proc = run_module('classification.rollup_classifier_probs', '-', m['index'],
                      '--taxonomy-csv', m['tax'], '--label-spec', m['spec'],
                      '--max-level', 'order', '-o', '-', stdin=Path(m['csv']).read_text())
    piped = pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False)
    assert piped['outcome'].tolist() == ['label', 'taxon', 'none', 'none']
    assert piped['prob'].tolist()[2:] == ['', '']


def test_rollup_classifier_probs_refuses_a_mismatched_index(merge_inputs, capsys):
    from classification import rollup_classifier_probs as rcp
    m = merge_inputs
    write(m['dir'], 'index.json', utils.label_index_dict(LABELS[:-1]))
    before = snapshot(m['dir'])
    rc = utils.run_cli(lambda: rcp.main([m['csv'], m['index'], '--taxonomy-csv', m['tax'],
                                         '--label-spec', m['spec'], '-o',
                                         str(m['dir'] / 'r.csv')]))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'do not match the label index' in err[0]
    assert snapshot(m['dir']) == before


# ---------------------------------------------------------------- review fixes (issue 12)

REMAINDER_SPEC = {
    # propose_label_spec's remainder label: the family less the genus that has its own labels
    'canidae': {'taxa': [{'level': 'family', 'name': 'canidae'}],
                'exclude': {'taxa': [{'level': 'genus', 'name': 'vulpes'}]}},
    'red_fox': {'taxa': [{'level': 'species', 'name': 'vulpes vulpes'}]},
    'swift_fox': {'taxa': [{'level': 'species', 'name': 'vulpes velox'}]},
    'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
    'turkey': {'taxa': [{'level': 'species', 'name': 'meleagris gallopavo'}]},
}


def test_taxon_categories_are_named_apart_from_a_remainder_label(tmp_path):
    labels = list(REMAINDER_SPEC)
    write(tmp_path, 'tax.csv', taxonomy_csv())
    lt = rollup.label_taxa(labels, parse_label_spec(REMAINDER_SPEC, 'spec'),
                           load_taxonomy_csv(tmp_path / 'tax.csv', single_parent=True))
    row = np.zeros((1, len(labels)))
    row[0, [labels.index('canidae'), labels.index('red_fox'), labels.index('deer')]] = \
        [0.5, 0.35, 0.15]
    df = pd.DataFrame(row, columns=labels)
    df.insert(0, 'path', ['cam_00/img0.jpg___crop00_mdv5a.0.0.jpg'])
    out = mcdo.merge(df, labels, _detections(), 0.1, 'clf',
                     options=rollup.RollupOptions(label_taxa=lt, threshold=T))
    cats = out['classification_categories']
    names = list(cats.values())
    assert len(set(names)) == len(names), names
    cls = out['images'][0]['detections'][0]['classifications']
    assert cats[cls[0][0]] == 'taxon: canidae' and cls[0][1] == 0.85
    assert cats[cls[1][0]] == 'canidae'                  # the remainder label, unchanged
    assert int(cls[1][0]) == labels.index('canidae')
    assert 'taxon: vulpes' in names and 'canidae' in names


def test_taxa_of_one_name_at_two_levels_are_told_apart(tmp_path):
    lineages = {'a1': [('species', 'x a'), ('subgenus', 'x'), ('genus', 'x'), *MAMMAL],
                'a2': [('species', 'x b'), ('subgenus', 'x'), ('genus', 'x'), *MAMMAL],
                'c': [('species', 'x c'), ('subgenus', 'y'), ('genus', 'x'), *MAMMAL],
                'deer': LINEAGES['deer']}
    write(tmp_path, 'tax.csv', taxonomy_csv(lineages))
    spec = {'a1': {'taxa': [{'level': 'species', 'name': 'x a'}]},
            'a2': {'taxa': [{'level': 'species', 'name': 'x b'}]},
            'c': {'taxa': [{'level': 'species', 'name': 'x c'}]},
            'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}]}}
    lt = rollup.label_taxa(list(spec), parse_label_spec(spec, 'spec'),
                           load_taxonomy_csv(tmp_path / 'tax.csv', single_parent=True))
    names = rollup.taxon_category_names(lt)
    assert sorted(names.values()) == ['taxon: x (genus)', 'taxon: x (subgenus)']


def test_merge_refuses_category_names_given_twice():
    labels = ['deer', 'label: deer']
    df = pd.DataFrame({'path': ['cam_00/img0.jpg___crop00_mdv5a.0.0.jpg'], 'label': ['deer'],
                       'deer': [0.9], 'label: deer': [0.1]})
    with pytest.raises(utils.InputError, match="category name 'label: deer' is used twice"):
        mcdo.merge(df, labels, _detections(), 0.1, 'clf', label_pos='last')


def test_a_taxon_holding_every_label_is_never_the_answer(tree):
    # probabilities sum to 1: the taxon above every label always reaches any threshold
    assert answer(tree, probs_of(deer=0.5, turkey=0.5))[0] == 'none'
    row = probs_of(deer=0.4, turkey=0.3, grouse=0.3)
    assert answer(tree, row)[0] == 'none'
    assert answer(tree, row, 0.6)[:2] == ('taxon', 'phasianidae')
    ok = {t.name for t, a in zip(tree.taxa, tree.answerable(), strict=True) if a}
    assert 'animalia' not in ok and 'mammalia' in ok


def test_relative_conf_is_recorded_in_the_metadata(tree):
    df = pd.DataFrame(probs_of(red_fox=0.5, swift_fox=0.35, deer=0.15), columns=LABELS)
    df.insert(0, 'path', ['cam_00/img0.jpg___crop00_mdv5a.0.0.jpg'])
    df.insert(1, 'label', ['swift_fox'])
    rel = mcdo.merge(df, LABELS, _detections(), 0.1, 'clf', relative_conf=True)
    assert rel['info']['classifier_metadata']['relative_conf'] is True
    plain = mcdo.merge(df, LABELS, _detections(), 0.1, 'clf')
    assert 'relative_conf' not in plain['info'].get('classifier_metadata', {})


def test_allow_list_csv_with_a_byte_order_mark(tmp_path):
    text = 'location,label\r\ncam_00,deer\r\ncam_00,red_fox\r\n'
    expected = {'cam_00': frozenset({'deer', 'red_fox'})}
    path = tmp_path / 'excel.csv'
    path.write_bytes(text.encode('utf-8-sig'))
    assert rollup.read_allow_list(path, LABELS) == expected
    with gzip.open(tmp_path / 'excel.csv.gz', 'wb') as f:
        f.write(text.encode('utf-8-sig'))
    assert rollup.read_allow_list(tmp_path / 'excel.csv.gz', LABELS) == expected


def test_allow_list_locations_are_normalised(tmp_path):
    path = write(tmp_path, 'a.csv', 'location,label\n./cam_00/,deer\n.//north/./cam_01,turkey\n')
    assert rollup.read_allow_list(path, LABELS) == {'cam_00': frozenset({'deer'}),
                                                    'north/cam_01': frozenset({'turkey'})}
    assert rollup.photo_location('./cam_00/img.jpg', {'cam_00'}) == 'cam_00'


def test_allow_list_locations_matching_no_photo_are_named(caplog):
    photos = ['cam_00/a.jpg', 'Cam_01/b.jpg', 'north/cam_02/c.jpg']
    allow = {'cam_00': frozenset({'deer'}), 'cam_01': frozenset({'deer'}),
             'nowhere': frozenset({'deer'}), 'north': frozenset({'deer'}),
             '*': frozenset({'deer'})}
    assert rollup.unused_locations(photos, allow) == ['cam_01', 'nowhere']
    with caplog.at_level('WARNING'):
        rollup.log_unused_locations(photos, allow)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "'cam_01'" in messages[0] and "'Cam_01'" in messages[0] and 'case' in messages[0]
    assert "'nowhere'" in messages[1] and 'case' not in messages[1]
    caplog.clear()
    many = {f'cam_{k:02d}': frozenset({'deer'}) for k in range(30)}
    with caplog.at_level('WARNING'):
        rollup.log_unused_locations(['elsewhere/a.jpg'], many, limit=20)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 21 and 'cam_00' in messages[0]
    assert '10 more' in messages[-1]


def test_merge_and_rollup_csv_warn_of_unused_locations(merge_inputs, capsys):
    from classification import rollup_classifier_probs as rcp
    m = merge_inputs
    allow = write(m['dir'], 'allow.csv', 'location,label\nCAM_00,deer\n./cam_01/,deer\n')
    assert mcdo.main(_merge_args(m, '--allow-list', str(allow))) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if 'CAM_00' in line]
    assert len(warned) == 1 and 'matches no photo' in warned[0] and "'cam_00'" in warned[0]
    assert not [line for line in err if 'cam_01' in line]
    lists = [img['detections'][0]['classifications'] for img in read_json(
        m['dir'] / 'out.json')['images']]
    deer = str(LABELS.index('deer'))
    assert lists[2] == [[deer, 1.0]]                  # ./cam_01/ applied to cam_01
    assert rcp.main([m['csv'], m['index'], '--taxonomy-csv', m['tax'], '--label-spec',
                     m['spec'], '--allow-list', str(allow), '-o',
                     str(m['dir'] / 'r.csv')]) == 0
    assert [line for line in capsys.readouterr().err.splitlines()
            if 'CAM_00' in line and 'matches no photo' in line]
