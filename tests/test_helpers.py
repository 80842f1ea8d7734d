"""json_to_azcopy_list, save_mislabeled and identify_mislabeled_candidates."""
from __future__ import annotations

import json

import pandas as pd

from classification import json_to_azcopy_list, json_validator, save_mislabeled, utils
from data_management.megadb.base import open_megadb


def test_azcopy_lists(tmp_path):
    queried = {'a/x/1.jpg': {'dataset': 'a', 'label': ['l']},
               'a/0.jpg': {'dataset': 'a', 'label': ['l']},
               'b/y.jpg': {'dataset': 'b', 'label': ['l']}}
    (tmp_path / 'q.json').write_text(json.dumps(queried))
    assert json_to_azcopy_list.main([str(tmp_path / 'q.json'), '-o', str(tmp_path / 'o')]) == 0
    assert (tmp_path / 'o' / 'a_images.txt').read_text() == '0.jpg\nx/1.jpg\n'
    assert (tmp_path / 'o' / 'b_images.txt').read_text() == 'y.jpg\n'
    (tmp_path / 'bad.json').write_text(json.dumps({'c/z.jpg': {'dataset': 'a'}}))
    assert utils.run_cli(lambda: json_to_azcopy_list.main([str(tmp_path / 'bad.json')])) == 2


def test_save_mislabeled_merges_without_losing_entries(tmp_path):
    folder = tmp_path / 'megadb_mislabeled'
    folder.mkdir()
    (folder / 'ds1.csv').write_text('file,correct_class\nold/a.jpg,\nold/b.jpg,elk\n')
    export = pd.DataFrame({
        'File': ['b.jpg', 'c.jpg', 'd.jpg', 'e.jpg'],
        'RelativePath': ['ds1/old', 'ds1/new', 'ds2', 'ds1/new'],
        'mislabeled': ['true', 'True', 'true', 'false'],
        'correct_class': ['deer', '', 'fox', 'x']})
    export.to_csv(tmp_path / 'review.csv', index=False)
    assert save_mislabeled.main([str(tmp_path), str(tmp_path / 'review.csv')]) == 0
    ds1 = pd.read_csv(folder / 'ds1.csv', keep_default_na=False)
    assert ds1.to_dict('records') == [{'file': 'new/c.jpg', 'correct_class': ''},
                                      {'file': 'old/a.jpg', 'correct_class': ''},
                                      {'file': 'old/b.jpg', 'correct_class': 'deer'}]
    ds2 = pd.read_csv(folder / 'ds2.csv', keep_default_na=False)
    assert ds2.to_dict('records') == [{'file': 'd.jpg', 'correct_class': 'fox'}]


def test_saved_lists_drive_json_validator(tmp_path):
    """save_mislabeled's output is what json_validator --mislabeled-images reads."""
    pd.DataFrame({'File': ['1.jpg'], 'RelativePath': ['d'], 'mislabeled': ['true'],
                  'correct_class': ['']}).to_csv(tmp_path / 'r.csv', index=False)
    save_mislabeled.main([str(tmp_path), str(tmp_path / 'r.csv')])
    with open_megadb(str(tmp_path / 'm.sqlite')) as db:
        db.upsert_dataset({'dataset_name': 'd'})
        db.replace_sequences('d', [{'dataset': 'd', 'seq_id': 's', 'class': ['deer'],
                                    'images': [{'file': '0.jpg'}, {'file': '1.jpg'}]}])
        out = json_validator.query_images(db, {'d': {'deer': ['deer']}},
                                          str(tmp_path / 'megadb_mislabeled'))
    assert list(out) == ['d/0.jpg']


def _outputs(tmp_path, split, rows):
    df = pd.DataFrame(rows, columns=['path', 'label', 'weight', 'elk', 'deer', 'fox'])
    utils.write_csv(df, tmp_path / f'outputs_{split}.csv.gz')


def test_mislabeled_candidates_by_margin_split_and_dataset(tmp_path, capsys):
    from classification import identify_mislabeled_candidates as imc
    _outputs(tmp_path, 'test', [
        ['ds1/loc/a.jpg___crop00_mdv5a.jpg', 'elk', 1, 0.02, 0.97, 0.01],   # margin .95
        ['ds1/loc/a.jpg___crop01_mdv5a.jpg', 'elk', 1, 0.01, 0.98, 0.01],   # same image
        ['ds1/b.jpg___crop00.jpg', 'deer', 1, 0.30, 0.10, 0.60],            # margin .50
        ['ds2/c.jpg___crop00_mdv5a.jpg', 'fox', 1, 0.05, 0.05, 0.90],       # right
        ['ds2/d.jpg___crop02_mdv5a.jpg', 'fox', 1, 0.90, 0.05, 0.05],       # margin .85
    ])
    _outputs(tmp_path, 'val', [['ds3/e.jpg___crop00.jpg', 'deer', 1, 0.0, 0.0, 1.0]])
    assert imc.main([str(tmp_path), '--margin', '0.5', '--splits', 'test']) == 0
    assert (tmp_path / 'mislabeled_candidates_test_ds1.txt').read_text() == 'b.jpg\nloc/a.jpg\n'
    assert (tmp_path / 'mislabeled_candidates_test_ds2.txt').read_text() == 'd.jpg\n'
    assert not (tmp_path / 'mislabeled_candidates_val_ds3.txt').exists()
    assert imc.main([str(tmp_path), '--margin', '0.9', '-d']) == 0      # every split present
    assert (tmp_path / 'mislabeled_candidates_test_ds1.txt').read_text() == 'ds1/loc/a.jpg\n'
    assert (tmp_path / 'mislabeled_candidates_val_ds3.txt').read_text() == 'ds3/e.jpg\n'
    # the -d list is what download_images txt reads
    from data_management.megadb import downloads
    assert downloads.read_list('txt', str(tmp_path / 'mislabeled_candidates_val_ds3.txt'),
                               'file', 'download_id') == [('ds3/e.jpg', 'ds3/e.jpg')]


def test_mislabeled_candidates_of_a_trained_run(trained_run, tmp_path):
    """On real evaluate outputs: with margin 0+ the candidates are exactly the images
    with a misclassified crop."""
    import shutil

    from classification import identify_mislabeled_candidates as imc
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    assert imc.main([str(run), '--margin', '0.000001', '--splits', 'val', '-d']) == 0
    df = utils.read_csv(run / 'outputs_val.csv.gz', dtype={'path': str, 'label': str})
    probs = df.drop(columns=['path', 'label', 'weight'])
    wrong = df[probs.idxmax(axis=1) != df['label']]
    expected = sorted({utils.parse_crop_filename(p)[0] for p in wrong['path']})
    got = sorted(line for f in run.glob('mislabeled_candidates_val_*.txt')
                 for line in f.read_text().splitlines())
    assert got == expected


def test_mislabeled_candidates_bad_inputs(tmp_path, capsys):
    from classification import identify_mislabeled_candidates as imc
    assert utils.run_cli(lambda: imc.main([str(tmp_path)])) == 2
    assert 'no outputs_<split>.csv.gz' in capsys.readouterr().err
    _outputs(tmp_path, 'test', [['ds1/a.jpg___crop00.jpg', 'moose', 1, 0.2, 0.3, 0.5]])
    assert utils.run_cli(lambda: imc.main([str(tmp_path), '--splits', 'test'])) == 2
    err = capsys.readouterr().err
    assert "row 2: label 'moose' has no probability column" in err and 'Traceback' not in err
    _outputs(tmp_path, 'test', [['a.jpg___crop00.jpg', 'elk', 1, 0.2, 0.3, 0.5]])
    assert utils.run_cli(lambda: imc.main([str(tmp_path), '--splits', 'test',
                                           '--margin', '0.1'])) == 2
    assert 'not under a <dataset>/ folder' in capsys.readouterr().err
    assert utils.run_cli(lambda: imc.main([str(tmp_path), '--splits', 'val'])) == 2
    assert 'outputs_val.csv.gz' in capsys.readouterr().err
