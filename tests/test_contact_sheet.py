"""identify_mislabeled_candidates --contact-sheet: the candidates as thumbnails."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from classification import identify_mislabeled_candidates as imc
from classification import utils
from tests.browser import assert_renders, needs_browser
from tests.conftest import REPO, snapshot

FIGURE = re.compile(r'<figure title="([^"]*)"><img src="([^"]*)" alt="[^"]*" width="112"><figcaption>'
                    r'given ([^<]*)<br>predicted ([^<]*)<br>margin ([0-9.]+)</figcaption>')


def figures(page: str) -> list[tuple[str, str, str, str, float]]:
    """(crop, thumbnail, given, predicted, margin) of each thumbnail, in page order."""
    return [(c, t, g, p, float(m)) for c, t, g, p, m in FIGURE.findall(page)]


def sections(page: str) -> dict[str, str]:
    """The HTML of each split's section."""
    parts = re.split(r'<h2 id="([^"]+)">', page)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# ---------------------------------------------------------------- hand-made outputs

@pytest.fixture
def small_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder with outputs_test/val and a crops folder with those crops."""
    run, crops = tmp_path / 'run', tmp_path / 'crops'
    run.mkdir()
    test = [['ds1/a.jpg___crop00.jpg', 'elk', 1, 0.02, 0.97, 0.01],     # elk->deer .95
            ['ds1/b.jpg___crop00.jpg', 'deer', 1, 0.30, 0.10, 0.60],    # deer->fox .50
            ['ds2/c.jpg___crop00.jpg', 'fox', 1, 0.05, 0.05, 0.90],     # right
            ['ds2/d.jpg___crop00.jpg', 'fox', 1, 0.90, 0.05, 0.05],     # fox->elk .85
            ['ds2/e.jpg___crop00.jpg', 'fox', 1, 0.10, 0.70, 0.20],     # fox->deer .50
            ['ds2/gone.jpg___crop00.jpg', 'elk', 1, 0.0, 0.0, 1.0]]     # no crop file, 1.0
    val = [['ds3/f.jpg___crop00.jpg', 'deer', 1, 0.0, 0.0, 1.0]]
    for split, rows in (('test', test), ('val', val)):
        df = pd.DataFrame(rows, columns=['path', 'label', 'weight', 'elk', 'deer', 'fox'])
        utils.write_csv(df, run / f'outputs_{split}.csv.gz')
        for k, path in enumerate(df['path']):
            if 'gone' not in path:
                (crops / path).parent.mkdir(parents=True, exist_ok=True)
                Image.new('RGB', (150, 90), (40 * k, 90, 160)).save(crops / path)
    return run, crops


def test_the_sheet_groups_by_split_and_given_label_by_margin(small_run):
    run, crops = small_run
    sheet = run / 'sheet'
    assert imc.main([str(run), '--margin', '0.45', '--contact-sheet', str(sheet),
                     '--cropped-images-dir', str(crops)]) == 0
    # the text outputs as before
    assert (run / 'mislabeled_candidates_test_ds1.txt').read_text() == 'a.jpg\nb.jpg\n'
    assert (run / 'mislabeled_candidates_test_ds2.txt').read_text() == 'd.jpg\ne.jpg\ngone.jpg\n'
    page = (sheet / 'index.html').read_text()
    test, val = sections(page)['test'], sections(page)['val']
    # fox (2 candidates) before elk (2, by name: elk first) before deer (1)
    assert re.findall(r'<h3>given (\w+): (\d+) crops?</h3>', test) == [
        ('elk', '2'), ('fox', '2'), ('deer', '1')]
    assert [f[2:] for f in figures(test)] == [('elk', 'deer', 0.95), ('fox', 'elk', 0.85),
                                               ('fox', 'deer', 0.5), ('deer', 'fox', 0.5)]
    # the crop without a file: its caption alone, its path as tooltip
    assert ('<span class="missing" title="ds2/gone.jpg___crop00.jpg">given elk<br>predicted '
            'fox<br>margin 1.00</span>') in test
    assert [f[0] for f in figures(val)] == ['ds3/f.jpg___crop00.jpg']
    assert '6 of 6 candidate crops shown' in page
    for _, thumb, *_ in figures(page):
        with Image.open(sheet / thumb) as img:
            assert max(img.size) <= 112 and img.size[0] > img.size[1]


def test_the_thumbnails_are_capped_keeping_the_highest_margins(small_run):
    run, crops = small_run
    sheet = run / 'sheet'
    assert imc.main([str(run), '--margin', '0.45', '--contact-sheet', str(sheet), '-c',
                     str(crops), '--max-thumbnails', '3']) == 0
    page = (sheet / 'index.html').read_text()
    # margins 1.0 (gone: no file, caption only), 1.0 (val f), .95; .85 and the .5s left out;
    # the splits in the order train, val, test
    assert [f[0] for f in figures(page)] == ['ds3/f.jpg___crop00.jpg', 'ds1/a.jpg___crop00.jpg']
    assert 'gone.jpg' in page and 'ds2/d.jpg' not in page
    assert '3 of 6 candidate crops shown (the 3 of the highest margins' in page
    assert page.count('more not shown') == 2         # fox's 2 and deer's 1 in test
    assert len(list((sheet / 'thumbs').glob('*.jpg'))) == 2


def test_refusals_write_nothing(small_run, capsys):
    run, crops = small_run
    (run / 'mine').mkdir()
    (run / 'mine' / 'notes.txt').write_text('keep me')
    before = snapshot(run)
    for extra, message in (
            (['--contact-sheet', str(run / 'mine'), '-c', str(crops)],
             f'error: {run / "mine"}: exists and is not a report folder; give another report '
             'folder or move it away'),
            (['--contact-sheet', str(run / 'new'), '-c', str(run / 'nothing')],
             f'error: --cropped-images-dir {run / "nothing"}: not a folder')):
        proc = subprocess.run([sys.executable, '-m', 'classification.identify_mislabeled_candidates',
                               str(run), '--margin', '0.45', *extra],
                              capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [message]
        assert snapshot(run) == before and not (run / 'new').exists()
    with pytest.raises(SystemExit) as e:
        imc.parse_args([str(run), '--contact-sheet', str(run / 'new')])
    assert e.value.code == 2
    assert '--contact-sheet and --cropped-images-dir go together' in capsys.readouterr().err


# ---------------------------------------------------------------- a trained run

@pytest.fixture(scope='module')
def sheet_of_run(trained_run, base_logdir, tmp_path_factory):
    run = tmp_path_factory.mktemp('run')
    for f in trained_run.glob('outputs_*.csv.gz'):
        shutil.copy(f, run / f.name)
    assert imc.main([str(run), '--margin', '0.000001', '--contact-sheet', str(run / 'sheet'),
                     '--cropped-images-dir', str(base_logdir.parent / 'crops')]) == 0
    return run


def test_the_sheet_shows_every_misclassified_crop_of_a_run(sheet_of_run):
    page = (sheet_of_run / 'sheet' / 'index.html').read_text()
    shown = sections(page)
    assert list(shown) == [s for s in ('train', 'val', 'test')
                           if (sheet_of_run / f'outputs_{s}.csv.gz').exists()]
    n_total = 0
    for split, html in shown.items():
        df = utils.read_csv(sheet_of_run / f'outputs_{split}.csv.gz',
                            dtype={'path': str, 'label': str})
        probs = df.drop(columns=['path', 'label', 'weight'])
        wrong = df[probs.idxmax(axis=1) != df['label']]
        got = figures(html)
        assert sorted(f[0] for f in got) == sorted(wrong['path'])
        n_total += len(got)
        by_path = df.set_index('path')
        for crop, _, given, predicted, margin in got:
            row = by_path.loc[crop]
            assert given == row['label'] and predicted == probs.loc[df['path'] == crop].iloc[
                0].idxmax()
            assert margin == pytest.approx(row[predicted] - row[given], abs=0.006)
        # within each given label, highest margin first
        for group in re.split(r'<h3>', html)[1:]:
            margins = [f[4] for f in figures(group)]
            assert margins == sorted(margins, reverse=True)
    assert n_total > 0
    assert len(list((sheet_of_run / 'sheet' / 'thumbs').glob('*.jpg'))) == n_total


@needs_browser
def test_the_sheet_renders_in_a_real_browser(sheet_of_run):
    page = sheet_of_run / 'sheet' / 'index.html'
    assert_renders(page, min_images=len(figures(page.read_text())))


def test_lists_of_an_earlier_run_do_not_outlive_it(small_run):
    run, _ = small_run
    assert imc.main([str(run), '--margin', '0.5']) == 0
    assert sorted(p.name for p in run.glob('mislabeled_candidates_*.txt')) == [
        'mislabeled_candidates_test_ds1.txt', 'mislabeled_candidates_test_ds2.txt',
        'mislabeled_candidates_val_ds3.txt']
    (run / 'mislabeled_candidates_train_ds9.txt').write_text('a split not looked at\n')
    # a stricter margin: ds1's elk (0.95) is no longer a candidate, ds2's missing crop
    # (1.0) still is; train was not looked at
    assert imc.main([str(run), '--margin', '0.96', '--splits', 'test', 'val']) == 0
    assert sorted(p.name for p in run.glob('mislabeled_candidates_*.txt')) == [
        'mislabeled_candidates_test_ds2.txt', 'mislabeled_candidates_train_ds9.txt',
        'mislabeled_candidates_val_ds3.txt']
