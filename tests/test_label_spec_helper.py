"""label_proposals and propose_label_spec: the label-spec helper."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from classification import label_proposals as lp
from classification import propose_label_spec, utils
from classification.taxonomy import csv_spec_to_json, load_taxonomy_csv, parse_label_spec
from tests.browser import assert_renders, needs_browser
from tests.conftest import snapshot

# ---------------------------------------------------------------- hand-made taxonomies


def taxonomy_csv(tmp_path: Path, rows: list[tuple[str, str, list[tuple[str, str]]]],
                 name: str = 'taxonomy.csv') -> Path:
    """A taxonomy CSV of (dataset, query, lineage from the taxon up to the root)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['dataset_name', 'query', 'taxonomy_level', 'scientific_name',
                     'common_name', 'source', 'taxonomy_string'])
    for ds, query, lineage in rows:
        ts = repr([[k, level, nm, []] for k, (level, nm) in enumerate(lineage)]) if lineage \
            else ''
        level, nm = lineage[0] if lineage else ('', '')
        writer.writerow([ds, query, level, nm, '', 'test', ts])
    path = tmp_path / name
    path.write_text(buf.getvalue())
    return path


ROOT = [('kingdom', 'animalia')]
A = [('family', 'fa'), *ROOT]
B = [('family', 'fb'), *ROOT]
SMALL = [('d', 'a1', [('species', 'sa1'), *A]), ('d', 'a2', [('species', 'sa2'), *A]),
         ('d', 'a', A), ('d', 'b1', [('species', 'sb1'), *B]), ('d', 'empty', [])]
COUNTS = {('d', 'a1'): 50, ('d', 'a2'): 60, ('d', 'a'): 5, ('d', 'b1'): 3, ('d', 'empty'): 9}


def summary(p: lp.Proposal) -> list[tuple[str, str, tuple, int]]:
    return [(lab.name, lab.kind, lab.excluded, lab.images) for lab in p.labels]


def test_a_taxon_splits_into_children_that_reach_the_minimum(tmp_path):
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, SMALL))
    p = lp.propose_labels(tax, COUNTS, 40)
    # a1 and a2 are labels; fa's own 5 images and fb's 3 go up to the root, which
    # has 8 < 40; "empty" has no taxon
    assert summary(p) == [('sa1', 'taxon', (), 50), ('sa2', 'taxon', (), 60)]
    assert p.unassigned == ((('d', 'a'), 5), (('d', 'b1'), 3), (('d', 'empty'), 9))
    lp.check_proposal(p, tax)


def test_the_rest_of_a_split_taxon_is_a_label_when_it_reaches_the_minimum(tmp_path):
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, SMALL))
    p = lp.propose_labels(tax, COUNTS, 5)
    assert summary(p) == [('sa1', 'taxon', (), 50), ('sa2', 'taxon', (), 60),
                          ('fa', 'remainder', (('species', 'sa1'), ('species', 'sa2')), 5)]
    assert p.labels[2].dataset_labels == (('d', 'a'),)
    # fb (3 images) is too small: its images stay with the root, which is too small too
    assert p.unassigned == ((('d', 'b1'), 3), (('d', 'empty'), 9))
    assert lp.to_label_spec_json(p)['fa'] == {
        'taxa': [{'level': 'family', 'name': 'fa'}],
        'exclude': {'taxa': [{'level': 'species', 'name': 'sa1'},
                             {'level': 'species', 'name': 'sa2'}]}}
    lp.check_proposal(p, tax)


def test_a_taxon_whose_children_are_all_small_is_one_label(tmp_path):
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, SMALL))
    p = lp.propose_labels(tax, COUNTS, 100)
    assert summary(p) == [('fa', 'taxon', (), 115)]
    assert set(p.labels[0].dataset_labels) == {('d', 'a'), ('d', 'a1'), ('d', 'a2')}
    # with the root reaching the minimum, the small family stays with the root
    p = lp.propose_labels(tax, {**COUNTS, ('d', 'b1'): 100}, 100)
    assert summary(p) == [('fa', 'taxon', (), 115), ('sb1', 'taxon', (), 100)]
    p = lp.propose_labels(tax, {**COUNTS, ('d', 'b1'): 99}, 100)
    assert summary(p) == [('fa', 'taxon', (), 115)] and p.unassigned[0] == (('d', 'b1'), 99)


def test_leftovers_of_a_grandchild_stay_with_the_nearest_label_above(tmp_path):
    d = [('family', 'fd'), ('order', 'oc'), *ROOT]
    rows = [('x', 'd1', [('species', 'sd1'), *d]), ('x', 'd', d),
            ('x', 'c', [('order', 'oc'), *ROOT]), ('y', 'e', [('family', 'fe'), ('order', 'oc'),
                                                               *ROOT])]
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, rows))
    counts = {('x', 'd1'): 100, ('x', 'd'): 10, ('x', 'c'): 80, ('y', 'e'): 10}
    p = lp.propose_labels(tax, counts, 100)
    # fd: sd1 is a label, its own 10 images go up; oc takes them with its 80 and fe's 10
    assert summary(p) == [('sd1', 'taxon', (), 100),
                          ('oc', 'remainder', (('species', 'sd1'),), 100)]
    assert p.labels[1].dataset_labels == (('x', 'c'), ('x', 'd'), ('y', 'e'))
    lp.check_proposal(p, tax)
    assert p.unassigned == ()


def test_no_taxon_with_enough_images_is_refused(tmp_path):
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, SMALL))
    with pytest.raises(utils.InputError, match=r'no taxon has 200 or more images; the most '
                                               r"under one root is 118, under kingdom 'animalia'"):
        lp.propose_labels(tax, COUNTS, 200)


def test_label_names_shared_by_two_levels_get_their_level(tmp_path):
    rows = [('d', 'g', [('genus', 'x'), *ROOT]), ('d', 's', [('subgenus', 'x'), ('genus', 'x'),
                                                             *ROOT]),
            ('d', 'p', [('species', 'path'), *ROOT])]
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, rows))
    p = lp.propose_labels(tax, {('d', 'g'): 5, ('d', 's'): 5, ('d', 'p'): 5}, 5)
    assert [lab.name for lab in p.labels] == ['subgenus x', 'genus x', 'species path']


def test_a_taxon_with_two_parents_needs_the_single_parent_option(tmp_path):
    rows = [('d', 's1', [('species', 'sp'), ('genus', 'g1'), *ROOT]),
            ('d', 's2', [('species', 'sp'), ('genus', 'g2'), *ROOT]),
            ('d', 'g2', [('genus', 'g2'), *ROOT]), ('d', 'x', [('genus', 'g2'), *ROOT])]
    path = taxonomy_csv(tmp_path, rows)
    counts = {('d', 's1'): 50, ('d', 's2'): 50, ('d', 'g2'): 50}
    tax = load_taxonomy_csv(path)
    p = lp.propose_labels(tax, counts, 10)
    with pytest.raises(utils.InputError, match=r'--single-parent-taxonomy.*species sp has '
                                               r'parents genus g1, genus g2'):
        lp.check_proposal(p, tax)
    tax = load_taxonomy_csv(path, single_parent=True)     # sp keeps g1 (a tie, first)
    p = lp.propose_labels(tax, counts, 10)
    lp.check_proposal(p, tax)
    assert summary(p) == [('sp', 'taxon', (), 100), ('g2', 'taxon', (), 50)]


# ---------------------------------------------------------------- properties

@st.composite
def trees(draw: st.DrawFn) -> tuple[list[tuple[str, str, list[tuple[str, str]]]],
                                    dict[tuple[str, str], int], int]:
    """A random taxonomy (a tree: each taxon one parent), counts and a minimum."""
    n = draw(st.integers(1, 25))
    parents = [None] + [draw(st.integers(0, k - 1)) for k in range(1, n)]
    levels = ['kingdom', 'phylum', 'class', 'order', 'family', 'genus', 'species',
              'subspecies', 'variety', 'form']
    depth = [0] * n
    for k in range(1, n):
        depth[k] = depth[parents[k]] + 1     # type: ignore[index]

    def lineage(k: int) -> list[tuple[str, str]]:
        out = []
        node: int | None = k
        while node is not None:
            out.append((levels[min(depth[node], len(levels) - 1)], f't{node}'))
            node = parents[node]
        return out

    rows, counts = [], {}
    for k in range(n):
        for j in range(draw(st.integers(0, 2))):
            ds = draw(st.sampled_from(['d1', 'd2']))
            rows.append((ds, f'q{k}_{j}', lineage(k)))
            counts[(ds, f'q{k}_{j}')] = draw(st.integers(0, 30))
    rows.append(('d1', 'untagged', []))
    counts[('d1', 'untagged')] = draw(st.integers(0, 5))
    return rows, counts, draw(st.integers(1, 60))


@settings(max_examples=150, deadline=None)
@given(trees())
def test_proposal_properties(tmp_path_factory, case):
    rows, counts, n = case
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path_factory.mktemp('t'), rows))
    try:
        p = lp.propose_labels(tax, counts, n)
    except utils.InputError:
        # refused only when nothing can be a label: every root's subtree is under n
        assert all(sum(counts.get(q, 0) for q in tax.dataset_labels_under(*key)) < n
                   for key, node in tax.nodes.items() if not node.parents)
        return
    lp.check_proposal(p, tax)             # json_validator resolves it as intended
    owners = Counter(q for lab in p.labels for q in lab.dataset_labels)
    assert max(owners.values()) == 1      # no dataset label in two labels
    for lab in p.labels:
        assert lab.images >= n
        assert lab.images == sum(counts.get(q, 0) for q in lab.dataset_labels)
        assert (lab.kind == lp.REMAINDER) == bool(lab.excluded)
    # nothing is lost: every image is in a label or listed as unassigned
    unassigned = dict(p.unassigned)
    assert p.images + sum(unassigned.values()) == sum(counts.values())
    assert not set(unassigned) & set(owners)
    # images left over under a root are fewer than n
    tagged_left = sum(v for q, v in unassigned.items() if q != ('d1', 'untagged'))
    roots = [k for k, node in tax.nodes.items() if not node.parents]
    assert tagged_left < n * max(1, len(roots))
    # the CSV form says the same as the JSON form
    csv_text = lp.to_csv_spec(p)
    assert csv_text is not None
    assert parse_label_spec(csv_spec_to_json(csv_text, 'csv'), 'csv') == lp.to_label_specs(p)


def test_the_tree_figure_stays_readable_with_dozens_of_labels(tmp_path):
    rows = []
    for f in range(8):
        fam = [('family', f'family{f}'), ('order', f'order{f % 3}'), ('class', 'c'),
               ('phylum', 'chordata'), *ROOT]
        rows.append(('d', f'f{f}', fam))
        for s in range(8):
            rows.append(('d', f'f{f}s{s}', [('species', f'species {f} {s}'),
                                            ('genus', f'genus{f}'), *fam]))
    tax = load_taxonomy_csv(taxonomy_csv(tmp_path, rows))
    counts = {(ds, q): 20 for ds, q, _ in rows}
    p = lp.propose_labels(tax, counts, 10)
    assert len(p.labels) == 72
    tree = lp.drawn_tree(p)
    # kingdom > phylum > class: the phylum is not drawn (one child, not a label)
    assert ('phylum', 'chordata') not in tree
    assert tree[('kingdom', 'animalia')] == [('class', 'c')]
    assert tree[('class', 'c')] == [('order', f'order{k}') for k in range(3)]
    fig = lp.tree_figure(p, 'many')
    fig.savefig(tmp_path / 'tree.png', dpi=100)
    with Image.open(tmp_path / 'tree.png') as img:
        assert img.height >= 64 * 30 and img.width >= 600     # about 30 px a row
        lo, hi = img.convert('L').getextrema()
        assert hi - lo > 100


# ---------------------------------------------------------------- the script, on the demo

@pytest.fixture(scope='module')
def proposed(project, megadb, tmp_path_factory):
    out = tmp_path_factory.mktemp('proposed')
    assert propose_label_spec.main([str(project / 'taxonomy.csv'), '--megadb', str(megadb),
                                    '--min-images', '10', str(out)]) == 0
    return out


def test_the_proposal_round_trips_through_json_validator(proposed, project, megadb, tmp_path):
    from classification import json_validator
    spec = json.loads((proposed / 'label_spec.json').read_text())
    table = utils.read_csv(proposed / 'label_spec_counts.csv')
    assert list(spec) == list(table['label'])
    assert len(spec) >= 4 and (table['images'] >= 10).all()
    assert set(table['kind']) <= {'taxon', 'remainder'}
    assert json_validator.main([str(proposed / 'label_spec.json'),
                                str(project / 'taxonomy.csv'), '--megadb', str(megadb),
                                '-o', str(tmp_path)]) == 0
    queried = json.loads((tmp_path / 'queried_images.json').read_text())
    got = Counter(lab for e in queried.values() for lab in e['label'])
    # the counts are json_validator's own
    assert got == dict(zip(table['label'], table['images'].astype(int), strict=True))
    # the editable CSV converts to the same specification
    assert csv_spec_to_json((proposed / 'label_spec.csv').read_text(), 'csv') == spec


def test_the_report_shows_the_tree(proposed):
    report = proposed / 'label_spec_report'
    page = (report / 'index.html').read_text()
    assert 'src="taxonomy_tree.png"' in page and 'Images in no label' in page
    with Image.open(report / 'taxonomy_tree.png') as img:
        assert img.width >= 600 and img.height >= 250
        lo, hi = img.convert('L').getextrema()
        assert hi - lo > 100


@needs_browser
def test_the_report_renders_in_a_real_browser(proposed):
    assert_renders(proposed / 'label_spec_report' / 'index.html', min_images=1)


def test_refusals_write_nothing(project, megadb, tmp_path, capsys):
    def refused(*extra: str) -> str:
        before = snapshot(tmp_path)
        code = utils.run_cli(lambda: propose_label_spec.main(
            [str(project / 'taxonomy.csv'), '--megadb', str(megadb), *extra]))
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith('error: ')]
        assert code == 2 and len(errors) == 1 and 'Traceback' not in err, err
        assert snapshot(tmp_path) == before
        return errors[0]

    (tmp_path / 'out' / 'label_spec_report').mkdir(parents=True)
    (tmp_path / 'out' / 'label_spec_report' / 'notes.txt').write_text('keep me')
    assert 'exists and is not a report folder' in refused('-n', '5', str(tmp_path / 'out'))
    assert 'no taxon has 100000 or more images' in refused('-n', '100000',
                                                          str(tmp_path / 'new'))
    assert not (tmp_path / 'new').exists()
    assert 'no such database file' in refused('-n', '5', '--megadb', str(tmp_path / 'x.db'),
                                              str(tmp_path / 'new'))
    (tmp_path / 'file').write_text('x')
    assert 'is a file' in refused('-n', '5', str(tmp_path / 'file'))
