"""The evaluation report: figures, tables and crops, opened in a real headless browser."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from classification import reports
from tests.browser import assert_renders, needs_browser
from tests.conftest import REPO, snapshot


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    probs = np.stack([conf, 1 - conf], axis=1)           # always predicts label 0
    calibrated = np.where(rng.uniform(size=20000) < conf, 0, 1)   # right as often as sure
    _, ece = reports.calibration(probs, calibrated)
    assert ece < 0.02
    table, ece = reports.calibration(probs, np.ones(20000, dtype=int))   # never right
    assert ece == pytest.approx(conf.mean(), abs=1e-9)
    assert table['crops'].sum() == 20000 and (table['accuracy'].fillna(0) == 0).all()


# ---------------------------------------------------------------- multi-label runs

@pytest.mark.parametrize('seed', range(5))
def test_average_precision_agrees_with_scikit_learn(seed):
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 8, 300) / 8             # many ties
    positive = rng.uniform(size=300) < 0.3
    assert reports.average_precision(scores, positive) == pytest.approx(
        average_precision_score(positive, scores), abs=1e-12)
    assert reports.average_precision(np.array([0.9, 0.8, 0.1]),
                                     np.array([True, False, True])) == pytest.approx(
        (1 + 2 / 3) / 2)
    assert np.isnan(reports.average_precision(scores, np.zeros(300, dtype=bool)))


def _multi_split() -> reports.MultiLabelSplit:
    # labels a, b, c; crop 0 {a,b} predicted {a}; crop 1 {a} predicted {a,c};
    # crop 2 {c} predicted {c}; crop 3 {b} predicted {a,c}
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=bool)
    p = np.array([[0.9, 0.4, 0.1], [0.8, 0.2, 0.6], [0.1, 0.3, 0.7], [0.55, 0.45, 0.5]])
    return reports.MultiLabelSplit('val', ['c0.jpg', 'c1.jpg', 'c2.jpg', 'c3.jpg'], y, p)


def test_multilabel_figures_by_hand():
    split = _multi_split()
    stats = reports.multilabel_stats(split, ['a', 'b', 'c']).set_index('label')
    assert stats.loc['a', ['precision', 'recall', 'count', 'predicted']].tolist() == [
        2 / 3, 1.0, 2, 3]
    assert stats.loc['b', 'recall'] == 0 and stats.loc['b', 'predicted'] == 0
    # c is predicted for crops 1, 2 and 3 (0.5 counts), true for crop 2 only
    assert stats.loc['c', 'f1'] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    # b scores: crop 3 0.45, crop 0 0.4, crop 2 0.3, crop 1 0.2; the two true crops
    # come first, so precision is 1 at each
    assert stats.loc['b', 'average_precision'] == pytest.approx(1.0)
    summary = reports.multilabel_summary(split, stats.reset_index())
    assert summary['exact_match'] == pytest.approx(1 / 4)      # only crop 2
    assert summary['top1_in_true'] == pytest.approx(3 / 4)     # crop 3's top (a) is wrong
    assert summary['micro_f1'] == pytest.approx(2 * 3 / (5 + 6))
    # false alarms: a true & c predicted (crop 1), b true & a predicted (crop 3),
    # b true & c predicted (crop 3)
    assert sorted(reports.false_alarm_pairs(split)) == [(0, 2, 1), (1, 0, 1), (1, 2, 1)]


def test_multilabel_outputs_are_read_and_checked(tmp_path):
    df = pd.DataFrame({'path': ['x.jpg', 'y.jpg'], 'label': ['a,b', 'c'], 'weight': [1, 1],
                       'a': [0.9, 0.1], 'b': [0.6, 0.2], 'c': [0.1, 0.8]})
    df.to_csv(tmp_path / 'outputs_val.csv.gz', index=False)
    split, labels = reports.read_multilabel_split(tmp_path / 'outputs_val.csv.gz')
    assert labels == ['a', 'b', 'c'] and split.y_true.tolist() == [[True, True, False],
                                                                   [False, False, True]]
    with pytest.raises(reports.utils.InputError, match='multi-label run'):
        reports.report_from_outputs(tmp_path, tmp_path / 'r', splits=['val'])
    df.loc[1, 'label'] = 'c,zebra'
    df.to_csv(tmp_path / 'outputs_val.csv.gz', index=False)
    with pytest.raises(reports.utils.InputError, match="row 3: label 'zebra'"):
        reports.report_from_outputs(tmp_path, tmp_path / 'r', splits=['val'], multilabel=True)
    for column, value, says in [('b', 1.5, 'row 3: probabilities must be numbers from 0 to 1'),
                                ('b', 'NA', 'row 3: probabilities must be numbers'),
                                ('label', '', 'row 3: empty "label"'),
                                ('path', '', 'row 3: empty "path"'),
                                # split as the training data's labels are: ' b' is no label
                                ('label', 'a, b', "row 3: label ' b' has no probability")]:
        bad = df.astype(object).copy()
        bad.loc[1, 'label'] = 'c'
        bad.loc[1, column] = value
        bad.to_csv(tmp_path / 'outputs_val.csv.gz', index=False)
        for multilabel in (True, False) if value != 'a, b' else (True,):
            with pytest.raises(reports.utils.InputError, match=re.escape(says)):
                reports.report_from_outputs(tmp_path, tmp_path / 'r', splits=['val'],
                                            multilabel=multilabel)
    assert not (tmp_path / 'r').exists()
    # label names that matplotlib would read as mathtext are drawn as they are
    odd = df.rename(columns={'a': '$x^$', 'b': 'b<&>'})
    odd['label'] = ['$x^$,b<&>', 'c']
    odd.to_csv(tmp_path / 'outputs_val.csv.gz', index=False)
    page = reports.report_from_outputs(tmp_path, tmp_path / 'r', splits=['val'],
                                       multilabel=True)
    assert page is not None and 'b&lt;&amp;&gt;' in page.read_text()


def test_training_writes_the_report(trained_run):
    report = trained_run / 'report'
    page = (report / 'index.html').read_text()
    for split in ('train', 'val', 'test'):
        for kind in ('confusion', 'reliability'):
            png = report / f'{kind}_{split}.png'
            assert f'src="{png.name}"' in page
            with Image.open(png) as img:
                assert img.width >= 300 and img.height >= 300
                colours = img.convert('L').getextrema()
                assert colours[1] - colours[0] > 100            # not blank
    assert 'Accuracy per location' in page and 'Most confused pairs' in page
    thumbs = list((report / 'thumbs').glob('*.jpg'))
    assert thumbs and all(f'src="thumbs/{t.name}"' in page for t in thumbs)
    stats = pd.read_csv(trained_run / 'label_stats.csv')
    assert {'f1', 'count', 'predicted'} <= set(stats.columns)


@needs_browser
def test_the_report_renders_in_a_real_browser(trained_run):
    assert_renders(trained_run / 'report' / 'index.html', min_images=6)


def test_a_folder_that_is_not_a_report_is_refused(trained_run, tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    before = snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, '-m', 'classification.evaluate_model', str(trained_run / 'params.json'),
         str(compiled), '-o', str(tmp_path / 'ev'), '--report', str(tmp_path / 'mine')],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f'error: {tmp_path / "mine"}: exists and is not a report folder; give another report '
        'folder or move it away']
    assert snapshot(tmp_path) == before and not (tmp_path / 'ev').exists()


def test_a_report_is_replaced_whole(trained_run, tmp_path):
    out = tmp_path / 'report'
    reports.report_from_outputs(trained_run, out)
    (out / 'stale.png').write_bytes(b'x')
    reports.report_from_outputs(trained_run, out, splits=['test'])
    assert not (out / 'stale.png').exists() and not (out / 'confusion_train.png').exists()
    assert (out / 'confusion_test.png').is_file()
    assert [p.name for p in tmp_path.iterdir()] == ['report']     # no temporary folders


def test_outputs_of_another_format_are_refused(tmp_path):
    (tmp_path / 'outputs_test.csv.gz').write_bytes(b'')
    pd.DataFrame({'path': ['a'], 'deer': [1.0]}).to_csv(tmp_path / 'outputs_test.csv.gz',
                                                       index=False)
    with pytest.raises(reports.utils.InputError, match='needs "path" and "label"'):
        reports.report_from_outputs(tmp_path, tmp_path / 'r')
    assert not (tmp_path / 'r').exists()


# ---------------------------------------------------------------- what every report shares

def _body(folder):
    (folder / 'sub').mkdir()
    (folder / 'sub' / 'x.png').write_bytes(b'png')
    return '<p>hello</p>'


def test_a_report_folder_honours_the_umask(tmp_path):
    from classification import report_pages
    old = os.umask(0o027)
    try:
        report_pages.write_report_folder(tmp_path / 'r', 'T', _body, report_pages.DATASET)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / 'r').stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / 'r' / 'sub').stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / 'r' / 'sub' / 'x.png').stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / 'r' / 'index.html').stat().st_mode) == 0o640


def test_what_killed_runs_left_is_removed(tmp_path):
    from classification import report_pages
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f'.r.{dead}.abc').mkdir()               # a run killed while writing
    (tmp_path / '.r.old').mkdir()                       # killed between the renames
    (tmp_path / f'.r.{os.getppid()}.xyz').mkdir()       # a live process's: kept
    report_pages.write_report_folder(tmp_path / 'r', 'T', _body, report_pages.DATASET)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'.r.{os.getppid()}.xyz', 'r']


def test_a_report_of_another_kind_is_not_replaced(tmp_path):
    from classification import report_pages
    report_pages.write_report_folder(tmp_path / 'r', 'T', _body, report_pages.DATASET)
    with pytest.raises(report_pages.utils.InputError, match='holds a dataset report, not a '
                                                            'contact sheet'):
        report_pages.write_report_folder(tmp_path / 'r', 'T', _body,
                                         report_pages.CONTACT_SHEET)
    (tmp_path / 'empty').mkdir()                        # an empty folder is used
    report_pages.write_report_folder(tmp_path / 'empty', 'T', _body, report_pages.EVALUATION)
    assert (tmp_path / 'empty' / 'index.html').is_file()


def test_labels_with_dollar_signs_are_drawn_as_text(tmp_path):
    from classification import metrics
    labels = ['x$\\foo$', 'a$b$', 'plain']
    fig = metrics.confusion_figure(np.eye(3, dtype=np.int64), labels, 'cm')
    fig.savefig(tmp_path / 'cm.png')                    # mathtext would fail on \foo
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        'x\\$\\foo\\$', 'a\\$b\\$', 'plain']
