"""json_to_azcopy_list and save_mislabeled."""
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
