"""The evaluation report: figures, tables and crops, opened in a real headless browser."""
from __future__ import annotations

import os
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
