"""Photo times from EXIF: DateTimeOriginal, then DateTime; None otherwise."""
from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from classification import photo_times


def _photo(path, original=None, plain=None):
    exif = Image.Exif()
    if plain is not None:
        exif[photo_times.DATETIME] = plain
    if original is not None:
        exif.get_ifd(photo_times.EXIF_IFD)[photo_times.DATETIME_ORIGINAL] = original
    Image.new('RGB', (16, 16)).save(path, 'JPEG', exif=exif.tobytes())


def test_original_time_first_then_plain_time(tmp_path):
    _photo(tmp_path / 'a.jpg', original='2024:05:01 06:30:15', plain='2030:01:01 00:00:00')
    _photo(tmp_path / 'b.jpg', plain='2024:05:01 06:30:20')
    _photo(tmp_path / 'c.jpg', original='0000:00:00 00:00:00')
    _photo(tmp_path / 'd.jpg')
    (tmp_path / 'e.jpg').write_bytes(b'not a photo')
    times = photo_times.photo_times(tmp_path, ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg', 'e.jpg',
                                               'missing.jpg'])
    assert times == {'a.jpg': dt.datetime(2024, 5, 1, 6, 30, 15),
                     'b.jpg': dt.datetime(2024, 5, 1, 6, 30, 20),
                     'c.jpg': None, 'd.jpg': None, 'e.jpg': None, 'missing.jpg': None}


@given(st.one_of(st.text(max_size=30), st.binary(max_size=30), st.integers(), st.none()))
def test_any_tag_value_gives_a_time_or_none(value):
    got = photo_times.parse_exif_time(value)
    assert got is None or isinstance(got, dt.datetime)


def test_nul_padded_values_are_read():
    assert photo_times.parse_exif_time(b'2023:12:31 23:59:59\x00') == dt.datetime(
        2023, 12, 31, 23, 59, 59)
