"""The dataset report: its counts and flags against the CSV, the splits comparison,
the page in a real headless browser, its figures, and the refusals."""
from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from classification import create_classification_dataset, dataset_report, utils
from classification import dataset_reports as dr
from tests.browser import assert_renders, needs_browser
from tests.conftest import REPO, snapshot, write

SPLITS = ('train', 'val', 'test')
TRAIN = [('ds', f'L{i}') for i in range(6)]
VAL = [('ds', 'L6'), ('ds', 'L7')]
TEST = [('ds', 'L8'), ('ds', 'L9')]
SPLIT_DOC = {'train': [list(x) for x in TRAIN], 'val': [list(x) for x in VAL],
             'test': [list(x) for x in TEST]}


def _rows(label: str, where: dict[int, int], conf: float = 0.9) -> list[tuple]:
    """``where``: location number -> crops of ``label`` there."""
    return [(f'ds/L{loc}/{label}_{k}.jpg___crop00_mdv5a.jpg', 'ds', f'L{loc}', label, conf,
             label) for loc, n in where.items() for k in range(n)]


def _frame() -> pd.DataFrame:
    """deer and fox: 4 crops at each of the 10 locations (as the splits); elk: 30, all
    at L0 (train); owl: 2 (L1 and L8); bat: 19 at L9 (test) and 1 at L2; one crop
    labelled 'deer,fox'."""
    rows = (_rows('deer', dict.fromkeys(range(10), 4)) + _rows('fox', dict.fromkeys(range(10), 4))
            + _rows('elk', {0: 30}, 1.0) + _rows('owl', {1: 1, 8: 1}, 0.55)
            + _rows('bat', {9: 19, 2: 1}, 0.75))
    rows.append(('ds/L3/both.jpg___crop00_mdv5a.jpg', 'ds', 'L3', 'x', 0.95, 'deer,fox'))
    return pd.DataFrame(rows, columns=create_classification_dataset.CSV_COLUMNS)


def _base(t: Path, df: pd.DataFrame | None = None, splits: object = None,
          labels: list[str] | None = None) -> Path:
    base = t / 'base'
    base.mkdir(parents=True, exist_ok=True)
    df = _frame() if df is None else df
    utils.write_csv(df, base / 'classification_ds.csv')
    utils.write_json(utils.label_index_dict(labels or ['bat', 'deer', 'elk', 'fox', 'owl']),
                     base / 'label_index.json')
    utils.write_json(SPLIT_DOC if splits is None else splits, base / 'splits.json')
    return base


def _crops(t: Path, df: pd.DataFrame) -> Path:
    """A real JPEG for every crop of ``df``, each a distinct colour."""
    root = t / 'crops'
    for i, path in enumerate(df['path']):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (40, 30), (i * 37 % 256, i * 91 % 256, 120)).save(target)
    return root


def _assert_png(path: Path, min_side: int = 300) -> None:
    with Image.open(path) as img:
        assert img.width >= min_side and img.height >= 200
        low, high = img.convert('L').getextrema()
        assert high - low > 100                                 # not blank


def _summary(settings: dr.ReportSettings | None = None, df=None, splits=None):
    doc = SPLIT_DOC if splits is None else splits
    settings = settings or dr.ReportSettings()
    return dr.summarize(_frame() if df is None else df, None,
                        {s: [tuple(x) for x in v] for s, v in doc.items()}, settings)


# ---------------------------------------------------------------- contents

def test_counts_match_the_csv():
    df = _frame()
    summary = _summary()
    split_of = {loc: s for s, locs in SPLIT_DOC.items() for _, loc in locs}
    crops: collections.Counter = collections.Counter()
    locs: dict[tuple[str, str], set] = collections.defaultdict(set)
    for labels, loc in zip(df['label'], df['location'], strict=True):
        for label in labels.split(','):
            crops[label, split_of[loc]] += 1
            locs[label, split_of[loc]].add(loc)
            crops[label, 'all'] += 1
            locs[label, 'all'].add(loc)
    table = summary.table
    assert list(table.index) == ['bat', 'deer', 'elk', 'fox', 'owl']
    for label in table.index:
        assert table.loc[label, 'crops'] == crops[label, 'all']
        assert table.loc[label, 'locations'] == len(locs[label, 'all'])
        for s in SPLITS:
            assert table.loc[label, f'{s} crops'] == crops[label, s]
            assert table.loc[label, f'{s} locations'] == len(locs[label, s])
            assert table.loc[label, f'{s} share'] == pytest.approx(
                crops[label, s] / crops[label, 'all'])
    assert table.loc['deer', 'crops'] == 41 and summary.multilabel
    assert summary.n_crops == len(df) and summary.n_locations == 10
    assert list(summary.overview['crops']) == [
        sum(split_of[loc] == s for loc in df['location']) for s in SPLITS]
    assert list(summary.overview['locations']) == [6, 2, 2]
    assert summary.splits == list(SPLITS) and summary.empty_locations == []


def test_flags_fire_when_they_should_and_not_otherwise():
    flags = _summary(dr.ReportSettings(share_tolerance=10)).flags   # split shares: below
    assert set(flags) == {'elk', 'owl', 'bat'}                      # deer and fox: none
    assert flags['elk'] == ['no val crops', 'no test crops',
                            'all crops at one location (ds/L0)']
    # median label: 30 crops; owl's 2 are under 10% of it, bat's 20 are not
    assert flags['owl'][0].startswith('rare: 2 crops') and 'no val crops' in flags['owl']
    assert flags['bat'] == ['no val crops', '95% of crops at one location (ds/L9)']
    assert _summary(dr.ReportSettings(share_tolerance=10, dominant_location=0.96,
                                      rare_fraction=0.05)).flags['bat'] == ['no val crops']


def test_split_share_flag():
    # a: 8 crops at each location (60/20/20 as the locations); b: 18 in train, 1 in val,
    # 1 in test; so the dataset's shares are 66/17/17
    df = pd.DataFrame(_rows('a', dict.fromkeys(range(10), 8))
                      + _rows('b', {0: 9, 1: 9, 6: 1, 8: 1}),
                      columns=create_classification_dataset.CSV_COLUMNS)
    # b's 90% of train is within half of 66% of it; its 5% of val and test are not
    assert _summary(df=df).flags == {'b': ['val share 5% (dataset: 17%)',
                                           'test share 5% (dataset: 17%)']}
    assert _summary(dr.ReportSettings(share_tolerance=0.05), df=df).flags['a'] == [
        'train share 60% (dataset: 66%)', 'val share 20% (dataset: 17%)',
        'test share 20% (dataset: 17%)']
    assert _summary(dr.ReportSettings(share_tolerance=2.0), df=df).flags == {}


def test_unused_splits_and_unplaced_locations():
    # no val split at all: no label is flagged for having no val crops; L9 is in no split
    doc = {'train': SPLIT_DOC['train'] + SPLIT_DOC['val'], 'test': [['ds', 'L8']]}
    summary = _summary(dr.ReportSettings(share_tolerance=10), splits=doc)
    assert summary.in_use == ['train', 'test'] and summary.splits[-1] == dr.NO_SPLIT
    assert not any('no val' in why for whys in summary.flags.values() for why in whys)
    assert '19 crops at locations in no split' in summary.flags['bat']
    assert summary.table.loc['deer', f'{dr.NO_SPLIT} crops'] == 4


def test_confidence_histograms_per_label():
    summary = _summary()
    assert summary.confidence_low == 0.5                    # owl's 0.55 rounded down
    hist = summary.confidence
    assert hist.shape == (5, dr.CONFIDENCE_BINS)
    assert list(hist.sum(axis=1)) == list(summary.table['crops'])
    labels = summary.labels
    assert hist[labels.index('elk'), -1] == 30             # 1.0 in the last bin
    assert hist[labels.index('owl'), 2] == 2                # 0.55: third bin of 0.025
    assert summary.confidence_stats.loc['elk', 'at 1.0'] == 1.0
    assert summary.confidence_stats.loc['bat', 'median'] == pytest.approx(0.75)


def test_samples_spread_over_locations():
    summary = _summary()
    deer = summary.samples[summary.samples['label'] == 'deer']
    assert len(deer) == 8 and deer['where'].nunique() == 8
    assert len(summary.samples[summary.samples['label'] == 'owl']) == 2
    again = _summary()
    assert list(again.samples['path']) == list(summary.samples['path'])   # seeded


def test_the_splits_comparison(tmp_path):
    other = {'train': [list(x) for x in TRAIN[1:] + VAL], 'val': [['ds', 'L0']],
             'test': [list(x) for x in TEST]}
    summary = dr.summarize(_frame(), None, {s: [tuple(x) for x in v]
                                            for s, v in SPLIT_DOC.items()},
                           other=('A', 'B', {s: [tuple(x) for x in v]
                                             for s, v in other.items()}))
    c = summary.comparison
    assert c is not None
    assert c.moves.loc['train', 'val'] == 1 and c.moves.loc['val', 'train'] == 2
    assert c.moves.loc['train', 'train'] == 5 and c.moves.loc['test', 'test'] == 2
    assert int(np.trace(c.moves.to_numpy())) == 7
    # L0 (elk's 30 and 8 more) moved first: most crops
    assert list(c.moved['location']) == ['L0', 'L6', 'L7']
    assert c.moved.iloc[0]['crops'] == 38 and c.moved.iloc[0]['labels'] == 'deer, elk, fox'
    assert c.per_label.loc['elk', ('B crops', 'val')] == 30
    assert c.per_label.loc['elk', ('A crops', 'train')] == 30
    assert c.per_label.loc['deer', ('B share', 'val')] == pytest.approx(4 / 41)
    spread = c.spread
    assert spread.loc[('A', 'val'), 'labels without crops'] == 3      # elk, owl, bat
    assert spread.loc[('B', 'val'), 'labels without crops'] == 2      # owl, bat
    # and through the files, with the page
    base = _base(tmp_path)
    write(tmp_path, 'other.json', other)
    page = dr.report_from_files(base, tmp_path / 'r', compare=tmp_path / 'other.json')
    text = page.read_text()
    assert 'Splits compared: splits.json and other.json' in text
    assert '3 locations in another split' in text


def test_hostile_label_names_are_escaped(tmp_path):
    df = pd.DataFrame(_rows('<b>x</b>', dict.fromkeys(range(10), 2))
                      + _rows('a$b$', dict.fromkeys(range(10), 2)),
                      columns=create_classification_dataset.CSV_COLUMNS)
    summary = _summary(df=df)
    page = dr.write_dataset_report(tmp_path / 'r', summary).read_text()
    assert '<b>x</b>' not in page and '&lt;b&gt;x&lt;/b&gt;' in page
    _assert_png(tmp_path / 'r' / 'counts_1.png')


# ---------------------------------------------------------------- the command

def test_the_command_writes_the_report(tmp_path):
    base = _base(tmp_path)
    crops = _crops(tmp_path, _frame())
    assert dataset_report.main([str(base), '-c', str(crops)]) == 0
    report = base / 'dataset_report'
    page = (report / 'index.html').read_text()
    for name in ('counts_1.png', 'confidence_1.png'):
        assert f'src="{name}"' in page
        _assert_png(report / name)
    thumbs = sorted((report / 'thumbs').glob('*.jpg'))
    # 8 per label (owl has 2), once each: the 'deer,fox' crop may be a sample of both
    unique = _summary().samples['path'].nunique()
    assert unique in (33, 34) and len(thumbs) == unique
    assert all(f'src="thumbs/{t.name}"' in page for t in thumbs)
    assert 'Imbalance flags' in page and 'all crops at one location (ds/L0)' in page
    # run again: the report is replaced whole
    (report / 'stale.txt').write_text('x')
    assert dataset_report.main([str(base), '-c', str(crops), '--samples-per-label', '1']) == 0
    assert not (report / 'stale.txt').exists()
    unique = _summary(dr.ReportSettings(samples_per_label=1)).samples['path'].nunique()
    assert unique >= 4 and len(list((report / 'thumbs').glob('*.jpg'))) == unique
    assert sorted(p.name for p in base.iterdir()) == [
        'classification_ds.csv', 'dataset_report', 'label_index.json', 'splits.json']


@needs_browser
def test_the_report_renders_in_a_real_browser(tmp_path):
    base = _base(tmp_path)
    crops = _crops(tmp_path, _frame())
    write(tmp_path, 'other.json', {'train': SPLIT_DOC['train'] + SPLIT_DOC['val'],
                                   'test': SPLIT_DOC['test']})
    assert dataset_report.main([str(base), '-c', str(crops), '--compare-splits',
                                str(tmp_path / 'other.json')]) == 0
    images = assert_renders(base / 'dataset_report' / 'index.html', min_images=2 + 33)
    assert {'counts_1.png', 'confidence_1.png'} <= {src for src, _, _ in images}


R = 'classification.dataset_report'
CDS = 'classification.create_classification_dataset'


def _refused(argv: list[str], root: Path, fragment: str, capsys=None) -> None:
    """Runs ``python -m argv`` (in this process with ``capsys``, as run_cli does): exit 2,
    one line naming ``fragment``, nothing under ``root`` changed."""
    before = snapshot(root)
    if capsys is None:
        proc = subprocess.run([sys.executable, '-m', *argv], capture_output=True, text=True,
                              cwd=REPO)
        rc, err = proc.returncode, proc.stderr
    else:
        module = {R: dataset_report, CDS: create_classification_dataset}[argv[0]]
        capsys.readouterr()
        rc = utils.run_cli(lambda: module.main(argv[1:]))
        err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith('error: ') and fragment in lines[0], lines[0]
    assert snapshot(root) == before
    assert not [p for p in root.rglob('*') if p.name.startswith('.dataset_report')]




@pytest.mark.parametrize('case', ['not a report', 'stray location', 'stray compared',
                                  'extra label', 'missing label', 'bad confidence',
                                  'same file', 'no splits'])
def test_bad_input_is_refused_with_one_line(tmp_path, case, capsys):
    df = _frame()
    splits, labels, report = None, None, None
    argv_extra: list[str] = []
    if case == 'not a report':
        report = tmp_path / 'mine'
        write(tmp_path, 'mine/notes.txt', 'keep me')
        fragment = 'exists and is not a report folder'
    elif case == 'stray location':
        splits = {**SPLIT_DOC, 'test': SPLIT_DOC['test'] + [['ds', 'nowhere']]}
        fragment = "test location ['ds', 'nowhere'] has no crops in"
    elif case == 'stray compared':
        write(tmp_path, 'other.json', {'train': [['elsewhere', 'L1']]})
        argv_extra = ['--compare-splits', str(tmp_path / 'other.json')]
        fragment = "other.json: train location ['elsewhere', 'L1'] has no crops"
    elif case == 'extra label':
        labels = ['bat', 'deer', 'elk', 'fox', 'owl', 'yak']
        fragment = "labels ['yak'] have no crops in"
    elif case == 'missing label':
        labels = ['bat', 'deer', 'elk', 'fox']
        fragment = "labels ['owl'] are not in"
    elif case == 'bad confidence':
        df.loc[3, 'confidence'] = 1.5
        fragment = 'it must be a number from 0 to 1'
    elif case == 'same file':
        fragment = 'is the splits.json being reported'
    else:
        fragment = 'splits.json'
    base = _base(tmp_path, df, splits, labels)
    if case == 'same file':
        argv_extra = ['--compare-splits', str(base / 'splits.json')]
    if case == 'no splits':
        (base / 'splits.json').unlink()
    argv = [R, str(base), *argv_extra] + (['--report', str(report)] if report else [])
    # the real command line once; the other cases in this process (as run_cli runs them)
    _refused(argv, tmp_path, fragment, None if case == 'not a report' else capsys)
    assert not (base / 'dataset_report').exists()


@settings(max_examples=60, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from('pathdsloc,label0.9\n"x1 é-'), max_size=200))
def test_the_csv_reader_returns_rows_or_one_input_error(text):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'classification_ds.csv'
        path.write_text('path,dataset,location,confidence,label\n' + text)
        try:
            df = dr.read_dataset_csv(path)
        except utils.InputError as e:
            assert '\n' not in str(e)
            return
        assert len(df) and df['path'].is_unique
        assert ((df['confidence'] >= 0) & (df['confidence'] <= 1)).all()
        summary = dr.summarize(df, None, {})
        assert summary.table['crops'].sum() >= len(df)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ['classification_ds.csv']


# ---------------------------------------------------------------- create_classification_dataset

def test_create_classification_dataset_writes_the_report(base_logdir):
    report = base_logdir / 'dataset_report'
    page = (report / 'index.html').read_text()
    df = pd.read_csv(base_logdir / 'classification_ds.csv', dtype={'location': str,
                                                                  'dataset': str})
    splits = utils.read_json(base_logdir / 'splits.json')
    summary = dr.summarize(df, utils.load_label_index(base_logdir / 'label_index.json'),
                           {s: [tuple(x) for x in v] for s, v in splits.items()})
    assert f'{len(df)} crops of {df["label"].nunique()} labels' in page
    assert summary.table['crops'].sum() == len(df)
    for name in ('counts_1.png', 'confidence_1.png'):
        _assert_png(report / name)
    thumbs = list((report / 'thumbs').glob('*.jpg'))
    assert len(thumbs) == int(np.minimum(summary.table['crops'], 8).sum())
    assert (report / dr.report_pages.REPORT_MARK).is_file()


@needs_browser
def test_the_dataset_report_of_the_pipeline_renders(base_logdir):
    assert_renders(base_logdir / 'dataset_report' / 'index.html', min_images=10)


def test_no_report_and_another_folder(tmp_path):
    df = _frame()
    for name, flags in (('none', ['--no-report']), ('elsewhere', ['--report',
                                                                   str(tmp_path / 'rep')])):
        out = tmp_path / name
        out.mkdir()
        utils.write_csv(df, out / 'classification_ds.csv')
        assert create_classification_dataset.main([
            str(out), '--mode', 'splits', '--val-frac', '0.2', '--test-frac', '0.2',
            '--num-trials', '50', *flags]) == 0
        assert (out / 'splits.json').is_file() and not (out / 'dataset_report').exists()
    page = (tmp_path / 'rep' / 'index.html').read_text()
    assert 'Sample crops per label' in page and 'thumbs/' not in page    # no crops folder
    with pytest.raises(SystemExit):
        create_classification_dataset.parse_args(['o', '--mode', 'splits', '--val-frac', '0.2',
                                                  '--no-report', '--report', 'r'])
    with pytest.raises(SystemExit):
        create_classification_dataset.parse_args(['o', '--mode', 'csv', '-q', 'q', '-c', 'c',
                                                  '--report', 'r'])


def test_create_classification_dataset_refuses_a_folder_that_is_not_a_report(tmp_path, capsys):
    out = tmp_path / 'out'
    write(tmp_path, 'out/dataset_report/notes.txt', 'keep me')
    utils.write_csv(_frame(), out / 'classification_ds.csv')
    _refused([CDS, str(out), '--mode', 'splits', '--val-frac', '0.2', '--num-trials', '50'],
             tmp_path, 'dataset_report: exists and is not a report folder', capsys)
    assert not (out / 'splits.json').exists()


# ---------------------------------------------------------------- after review

def test_a_crop_labelled_twice_with_one_label_counts_once():
    df = pd.DataFrame(_rows('deer', {0: 2}) + _rows('fox', {6: 2}),
                      columns=create_classification_dataset.CSV_COLUMNS)
    df.loc[0, 'label'] = 'deer,deer'
    summary = _summary(df=df)
    assert summary.table.loc['deer', 'crops'].sum() == 2


def test_confidences_on_a_bin_edge_fall_in_that_bin():
    rows = pd.DataFrame({'label': ['a'] * 3, 'confidence': [0.6, 0.7, 0.8]})
    hist = dr.confidence_histograms(rows, ['a'], low=0.6, bins=4)
    assert hist.tolist() == [[1, 1, 1, 0]]


def test_labels_named_like_missing_values_stay_labels(tmp_path):
    df = pd.DataFrame(_rows('None', dict.fromkeys(range(10), 2)) + _rows('NA', {0: 3}),
                      columns=create_classification_dataset.CSV_COLUMNS)
    df['location'] = df['location'].replace('L9', 'NA')
    splits = {**SPLIT_DOC, 'test': [['ds', 'L8'], ['ds', 'NA']]}
    base = _base(tmp_path, df, splits, labels=['NA', 'None'])
    assert dataset_report.main([str(base)]) == 0
    assert create_classification_dataset.main([str(base), '--mode', 'splits', '--val-frac',
                                               '0.2', '--test-frac', '0.2', '--num-trials',
                                               '50']) == 0
    placed = {loc for locs in utils.read_json(base / 'splits.json').values() for _, loc in locs}
    assert 'NA' in placed and len(placed) == 10
    page = (base / 'dataset_report' / 'index.html').read_text()
    assert '>None<' in page and '>NA<' in page and 'nan' not in page.lower().replace(
        'nanoseconds', '')


def test_no_samples_asked_is_not_no_crops(tmp_path):
    base = _base(tmp_path)
    assert dataset_report.main([str(base), '--samples-per-label', '0']) == 0
    page = (base / 'dataset_report' / 'index.html').read_text()
    assert ': no crops' not in page and 'deer: 41 crops, none shown' in page


def test_the_report_folder_cannot_be_the_output_folder(tmp_path, capsys):
    _refused([CDS, str(tmp_path / 'out'), '--mode', 'splits', '--val-frac', '0.2',
              '--report', str(tmp_path / 'out')], tmp_path,
             'the report folder cannot be the output folder or hold it', capsys)
    assert not (tmp_path / 'out').exists()


def test_a_csv_without_confidences_says_so(tmp_path):
    base = _base(tmp_path, _frame().drop(columns=['confidence']))
    assert dataset_report.main([str(base)]) == 0
    page = (base / 'dataset_report' / 'index.html').read_text()
    assert 'has no confidence column' in page and 'Crops of ground-truth boxes' not in page
