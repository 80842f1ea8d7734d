"""classification.utils: files, naming, geometry, CLI error handling."""
from __future__ import annotations

import gzip
import io
import sys

import pandas as pd
import pytest

from classification import utils


@pytest.mark.parametrize('bbox, expected', [
    ([0.1, 0.2, 0.3, 0.4], (100, 100, 400, 300)),         # 1000 x 500 image
    ([0.0, 0.0, 1.0, 1.0], (0, 0, 1000, 500)),
    ([0.9, 0.9, 0.5, 0.5], (900, 450, 1000, 500)),         # clipped at the edge
])
def test_crop_box_pixels(bbox, expected):
    assert utils.crop_box(bbox, 1000, 500) == expected


def test_crop_box_square_is_centred_and_may_leave_the_image():
    box = utils.crop_box([0.0, 0.4, 0.1, 0.2], 1000, 500, square=True)  # 100 x 100 px at x=0
    assert box is not None
    left, top, right, bottom = box
    assert right - left == bottom - top == 100
    box = utils.crop_box([0.0, 0.0, 0.1, 0.4], 1000, 500, square=True)  # 100 x 200 px
    assert box == (-50, 0, 150, 200)                                    # padded on the left


@pytest.mark.parametrize('bbox', [[0.1, 0.1, 0.0, 0.2], [0.1, 0.1, 0.2, -0.1],
                                  [1.5, 1.5, 0.2, 0.2], [-0.5, 0.1, 0.2, 0.2],
                                  [0.1, 0.1, float('nan'), 0.2], [0.1, 0.2]])
def test_crop_box_rejects_empty_and_outside(bbox):
    assert utils.crop_box(bbox, 1000, 500) is None


def test_crop_names_round_trip():
    name = utils.crop_filename('loc1/img.jpg', 3, '5a')
    assert name == 'loc1/img.jpg___crop03_mdv5a.jpg'
    assert utils.parse_crop_filename(name) == ('loc1/img.jpg', 3, '5a')
    assert utils.crop_filename('a.jpg', 0, None) == 'a.jpg___crop00.jpg'
    assert utils.parse_crop_filename('a.jpg___crop00.jpg') == ('a.jpg', 0, None)
    # a photo may have more than 100 boxes (MegaDetector keeps up to 300): crop100
    assert utils.crop_filename('a.jpg', 100, '5a') == 'a.jpg___crop100_mdv5a.jpg'
    assert utils.parse_crop_filename('a.jpg___crop100_mdv5a.jpg') == ('a.jpg', 100, '5a')
    with pytest.raises(utils.InputError):
        utils.crop_filename('a.jpg', -1, '5a')
    with pytest.raises(utils.InputError):
        utils.parse_crop_filename('a.jpg')


@pytest.mark.parametrize('detector, version', [
    ('md_v5a.0.0.pt', '5a.0.0'), ('md_v4.1.0.pb', '4.1.0'), ('megadetector_v4.1.0.pb', '4.1.0'),
    ('/models/md_v5b.0.0.pt', '5b.0.0'), ('v4.1', '4.1'), ('5a', '5a')])
def test_detector_version_rule(detector, version):
    assert utils.detector_version_from_name(detector) == version


def test_detector_version_refuses_path_characters():
    with pytest.raises(utils.InputError):
        utils.check_detector_version('../5a')


@pytest.mark.parametrize('rel', ['../x.jpg', 'a/../../x.jpg', '/etc/passwd', 'C:/x.jpg', ''])
def test_safe_join_refuses_escapes(tmp_path, rel):
    with pytest.raises(utils.InputError):
        utils.safe_join(tmp_path, rel)


def test_safe_join_keeps_inside(tmp_path):
    assert utils.safe_join(tmp_path, 'a/./b.jpg') == tmp_path / 'a' / 'b.jpg'


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / 'out.json'
    utils.write_json({'a': 1}, target)
    with pytest.raises(RuntimeError), utils.atomic_path(target) as tmp:
        tmp.write_text('partial')
        raise RuntimeError('crash')
    assert utils.read_json(target) == {'a': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.json']


def test_csv_gzip_round_trip_and_stdout(tmp_path, capsys):
    df = pd.DataFrame({'path': ['a', 'b'], 'x': [0.5, 0.25]})
    utils.write_csv(df, tmp_path / 'o.csv.gz')
    with gzip.open(tmp_path / 'o.csv.gz', 'rt') as f:
        assert f.readline().strip() == 'path,x'
    pd.testing.assert_frame_equal(utils.read_csv(tmp_path / 'o.csv.gz'), df)
    utils.write_csv(df, '-')
    assert capsys.readouterr().out.splitlines()[0] == 'path,x'


def test_read_json_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, 'stdin', io.StringIO('{"k": [1]}'))
    assert utils.read_json('-') == {'k': [1]}


def test_bad_inputs_are_input_errors(tmp_path):
    (tmp_path / 'bad.json').write_text('{not json')
    with pytest.raises(utils.InputError, match='bad.json'):
        utils.read_json(tmp_path / 'bad.json')
    with pytest.raises(utils.InputError, match='not found'):
        utils.read_json(tmp_path / 'missing.json')


@pytest.mark.parametrize('content, match', [
    ('{"0": "a", "2": "b"}', 'without gaps'), ('{"x": "a"}', 'integers'),
    ('{"0": "a", "1": "a"}', 'unique'), ('[]', 'object')])
def test_label_index_errors(tmp_path, content, match):
    (tmp_path / 'li.json').write_text(content)
    with pytest.raises(utils.InputError, match=match):
        utils.load_label_index(tmp_path / 'li.json')


def test_run_cli_turns_input_errors_into_exit_2(capsys):
    def main() -> int:
        raise utils.InputError('file x: record 3: bad')
    assert utils.run_cli(main) == 2
    err = capsys.readouterr().err
    assert err.strip() == 'error: file x: record 3: bad'


def test_redact_url():
    assert utils.redact_url('https://a.blob.core.windows.net/c?sv=1&sig=SECRET') == \
        'https://a.blob.core.windows.net/c?<redacted>'


def test_a_full_disk_is_one_line_and_leaves_the_old_output(tmp_path, monkeypatch, capsys):
    """ENOSPC while an output is written: exit 2, one line, the old file as it was,
    no temporary file left."""
    import errno
    out = tmp_path / 'out.json'
    out.write_text('{"old": 1}')
    real_replace = utils.os.replace

    def full(src, dst):
        if str(dst) == str(out):    # the temporary file is written; its rename fails
            raise OSError(errno.ENOSPC, 'No space left on device', str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(utils.os, 'replace', full)

    def main() -> int:
        utils.write_json({'new': 2}, out)
        return 0

    assert utils.run_cli(main) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'disk is full' in err[0]
    assert out.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ['out.json']


def test_outputs_get_the_mode_of_the_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        utils.write_json({}, tmp_path / 'a.json')
        os.umask(0o077)
        utils.write_csv(pd.DataFrame({'x': [1]}), tmp_path / 'b.csv.gz')
    finally:
        os.umask(old)
    assert (tmp_path / 'a.json').stat().st_mode & 0o777 == 0o644
    assert (tmp_path / 'b.csv.gz').stat().st_mode & 0o777 == 0o600


def test_a_mistyped_flag_gets_the_closest_one(capsys):
    parser = utils.make_parser('doc')
    parser.add_argument('--batch-size', type=int)
    parser.add_argument('--threshold', type=float)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(['--treshold', '0.5', '--batchsize', '3'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'did you mean --threshold?' in err and 'did you mean --batch-size?' in err


def test_failure_logs_of_the_same_second_do_not_overwrite_each_other(tmp_path):
    paths = [utils.write_failure_log(tmp_path, 'step', {'n': i}, {f'{i}.jpg': 'bad'})
             for i in range(3)]
    assert len(set(paths)) == 3
    assert sorted(utils.read_json(p)["n"] for p in paths) == [0, 1, 2]
    assert all(p.name.startswith('step_log_') for p in paths)


def test_outputs_written_together_land_together_or_not_at_all(tmp_path, capsys):
    (tmp_path / 'a.txt').write_text('old a')
    (tmp_path / 'blocker').write_text('a file where a folder should be')
    with pytest.raises(OSError):
        utils.write_together([(tmp_path / 'a.txt', 'new a'),
                              (tmp_path / 'blocker' / 'b.txt', 'new b'),
                              ('-', 'to stdout')])
    assert (tmp_path / 'a.txt').read_text() == 'old a'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'blocker']
    assert capsys.readouterr().out == ''
    utils.write_together([(tmp_path / 'a.txt', 'new a'), (tmp_path / 'c.csv.gz', 'x,y\n'),
                          ('-', 'to stdout')])
    assert (tmp_path / 'a.txt').read_text() == 'new a'
    assert gzip.decompress((tmp_path / 'c.csv.gz').read_bytes()) == b'x,y\n'
    assert capsys.readouterr().out == 'to stdout'


def test_a_one_line_message_shortens_only_huge_words():
    huge = '9' * 400
    line = utils.one_line(f"error in\nrow 2: '{huge}' is not a number")
    assert line.startswith('error in row 2: ') and line.endswith(' is not a number')
    assert len(line) < 400 and '…' in line
    path = '/data/' + 'a/' * 100 + 'x.jpg'               # 211 characters: kept whole
    assert utils.one_line(path) == path


def test_an_output_matched_by_an_input_glob_is_refused(tmp_path):
    for k in range(2):
        (tmp_path / f'out_{k}.csv').write_text('x\n')
    with pytest.raises(utils.InputError, match='is also an input of this step'):
        utils.check_output_path(tmp_path / 'out_1.csv', [str(tmp_path / 'out_*.csv')])
    utils.check_output_path(tmp_path / 'other.csv', [str(tmp_path / 'out_*.csv')])
