"""Small shared helpers for every step (no torch here).

- reading and writing JSON / CSV files: gzip by suffix, '-' for stdin/stdout,
  atomic writes (temp file in the target folder, then rename);
- the label index (``label_index.json``) and ``params.json``;
- crop-file naming and the detector-version rule;
- box geometry (normalized boxes to pixel boxes, square crops);
- argparse types, logging set-up and the error type that becomes one stderr line.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import glob
import gzip
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import pandas as pd

logger = logging.getLogger(__name__)

STDIO = '-'


class InputError(Exception):
    """A user mistake (bad file, bad record, bad flag combination).

    ``run_cli`` turns it into one line on stderr and exit code 2; the message is
    kept on one line (a path or a library's message may hold line breaks).
    """

    def __init__(self, message: str) -> None:
        super().__init__(' '.join(str(message).split()))


# errors of the place a step writes to (or reads from): the user's to fix
OUTPUT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                           errno.EDQUOT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                           errno.ENOENT, errno.EEXIST})


def one_line(text: str, longest: int = 300) -> str:
    """A message on one line (library errors, PyTorch's among them, span several),
    a word longer than ``longest`` characters (a 400-digit number from a hostile
    file) shortened to its start and end."""
    return ' '.join(w if len(w) <= longest else f'{w[:longest - 80]}…{w[-60:]}'
                    for w in str(text).split())


def os_error_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else 'a file'
    hint = {errno.ENOSPC: ' (the disk is full)', errno.EDQUOT: ' (over the disk quota)',
            errno.EROFS: ' (a read-only file system)'}.get(e.errno or 0, '')
    return one_line(f'{where}: {e.strerror or e}{hint}')


def is_output_error(e: BaseException) -> bool:
    """An OSError that a user fixes (no permission, a full or read-only disk, ...)."""
    return isinstance(e, OSError) and e.errno in OUTPUT_ERRNOS


def run_cli(main: Callable[[], int]) -> int:
    """Runs a script's main(), mapping user errors to one stderr line and exit code 2:
    an InputError, and an OSError of the file system (no permission, a full or
    read-only disk, a folder where a file is expected)."""
    try:
        return main()
    except InputError as e:
        print(f'error: {one_line(str(e))}', file=sys.stderr)
        return 2
    except OSError as e:
        if not is_output_error(e):
            raise
        print(f'error: {os_error_message(e)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`); not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, 'w')  # noqa: SIM115
        return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (so a handler
    set up once keeps working when stderr is swapped, e.g. under pytest)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    """Logs go to stderr so that stdout stays free for data."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        force=True)
    # the Azure SDK logs every HTTP request at INFO; keep its warnings only
    logging.getLogger('azure').setLevel(logging.WARNING)


# ---------------------------------------------------------------- files

def _is_gzip(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith('.gz')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the current umask (0o666 less the umask)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` on success,
    with the mode a newly created file would have (mkstemp makes it 0600)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{target.name}.', suffix='.tmp', dir=target.parent)
    except OSError as e:     # name the file the user gave, not the temporary name
        raise OSError(e.errno, e.strerror, str(target)) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def open_output_text(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Opens a text output: stdout for '-', else an atomic (and maybe gzipped) file."""
    if str(path) == STDIO:
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp:
        if _is_gzip(path):
            with gzip.open(tmp, 'wt', encoding='utf-8', newline='') as f:
                yield f
        else:
            with open(tmp, 'w', encoding='utf-8', newline='') as f:
                yield f


@contextlib.contextmanager
def open_input_text(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Opens a text input: stdin for '-', gzip by suffix; missing files are InputError."""
    if str(path) == STDIO:
        try:
            yield sys.stdin
        except UnicodeDecodeError as e:
            raise InputError(f'stdin: not UTF-8 text ({e.reason} at byte {e.start})') from e
        return
    try:
        if _is_gzip(path):
            with gzip.open(path, 'rt', encoding='utf-8', newline='') as f:
                yield f
        else:
            with open(path, encoding='utf-8', newline='') as f:
                yield f
    except FileNotFoundError as e:
        raise InputError(f'{path}: file not found') from e
    except IsADirectoryError as e:
        raise InputError(f'{path}: is a folder, expected a file') from e
    except UnicodeDecodeError as e:
        raise InputError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from e
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise InputError(f'{path}: not a complete gzip file ({e})') from e


def read_json(path: str | os.PathLike[str], unique_keys: bool = False) -> Any:
    """Reads JSON from a file (gzip by suffix) or stdin; bad JSON is an InputError.
    With ``unique_keys``, an object with a key given twice is one too (json keeps
    the last silently); for the small files a person writes (label specs, label
    indexes, splits, mappings), not for large detector outputs."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise InputError(f'{path}: key {key!r} is given twice')
            out[key] = value
        return out

    with open_input_text(path) as f:
        try:
            return json.load(f, object_pairs_hook=pairs) if unique_keys else json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f'{path}: not valid JSON ({e})') from e
        except UnicodeDecodeError as e:
            raise InputError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from e
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f'{path}: cannot read ({e})') from e
        except (RecursionError, ValueError) as e:
            # nesting too deep for the parser, or a number with thousands of digits
            raise InputError(f'{path}: not JSON this program reads ({str(e)[:100]})') from e


def check_one_stdin(*inputs: str | os.PathLike[str] | Sequence[str] | None) -> None:
    """Refuses '-' (stdin) for more than one input of a step."""
    flat: list[object] = []
    for given in inputs:
        flat.extend(given if isinstance(given, (list, tuple)) else [given])
    if sum(str(x) == STDIO for x in flat if x is not None) > 1:
        raise InputError("only one input can be read from stdin ('-')")


def check_output_path(path: str | os.PathLike[str],
                      inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuses an output path that is a folder, or that is one of the step's inputs
    (writing it would destroy the input)."""
    if str(path) == STDIO:
        return
    out = Path(path)
    if out.is_dir():
        raise InputError(f'{path}: is a folder; give the output a file name')
    if not out.exists():
        return
    for given in inputs:
        if given is None or str(given) == STDIO:
            continue
        # a quoted glob of shard files stands for the files it matches
        matches = ([given] if Path(given).exists() or not glob.has_magic(str(given))
                   else glob.glob(str(given)))
        for one in matches:
            if Path(one).exists() and os.path.samefile(out, one):
                raise InputError(f'{path}: is also an input of this step ({one}); choose '
                                 'another output')


FAILURE_LOG_VERSION = 1


def failure_entries(failures: Mapping[str, str]) -> list[dict[str, str]]:
    """Per-photo failures as the failure log lists them: ``{"file", "reason"}``,
    sorted by file."""
    return [{'file': k, 'reason': v} for k, v in sorted(failures.items())]


def new_log_path(folder: str | os.PathLike[str], step: str) -> Path:
    """A new ``<folder>/<step>_log_<YYYYmmdd_HHMMSS>[_<n>].json``, reserved by
    creating it empty (exclusively), so that two runs in the same second, or two
    processes, never write over each other's log."""
    import time
    stamp = time.strftime('%Y%m%d_%H%M%S')
    Path(folder).mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = Path(folder) / f'{step}_log_{stamp}{"" if n == 1 else f"_{n}"}.json'
        try:
            with open(path, 'x'):
                return path
        except FileExistsError:
            continue
    raise AssertionError('unreachable')


def write_failure_log(folder: str | os.PathLike[str], step: str, counts: Mapping[str, int],
                      failures: Mapping[str, str], extra: Mapping[str, Any] | None = None
                      ) -> Path:
    """Writes ``<folder>/<step>_log_<YYYYmmdd_HHMMSS>.json``, the one failure-log
    schema of every step (README, "Formats"): ``failure_log_version``, ``step``,
    the step's counts, ``failures`` (``[{"file", "reason"}]``) and any ``extra``
    keys (more lists of ``{"file", "reason"}`` objects, or lists of paths)."""
    path = new_log_path(folder, step)
    doc: dict[str, Any] = {'failure_log_version': FAILURE_LOG_VERSION, 'step': step,
                           **counts, 'failures': failure_entries(failures)}
    doc.update(extra or {})
    write_json(doc, path, indent=1)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_temp_dir(target: Path) -> Path:
    """A new temporary folder beside ``target`` (``.<name>.<pid>.<random>``) in
    which to build it; first removes what killed runs left there: such folders of
    processes no longer alive, and ``.<name>.old``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f'.{glob.escape(target.name)}.*'):
        pid = stale.name[len(target.name) + 2:].split('.', 1)[0]
        if stale.name == f'.{target.name}.old' or (pid.isdigit() and not _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f'.{target.name}.{os.getpid()}.',
                                     dir=target.parent))
    except OSError as e:     # name the folder the user gave, not the temporary name
        raise OSError(e.errno, e.strerror, str(target.parent)) from e


def dir_mode() -> int:
    """The mode a new folder gets under the current umask (0o777 less the umask)."""
    return 0o777 & ~_umask()


def replace_dir(tmp: Path, target: Path) -> None:
    """Puts the finished folder ``tmp`` (made by new_temp_dir) in ``target``'s
    place: the umask's modes on everything in it, then a rename; an older
    ``target`` is moved aside first and removed after."""
    mode, folder_mode = file_mode(), dir_mode()
    for path in tmp.rglob('*'):
        os.chmod(path, folder_mode if path.is_dir() else mode)
    os.chmod(tmp, folder_mode)
    old = None
    if target.exists():
        old = target.with_name(f'.{target.name}.old')
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yields a new temporary folder beside ``target`` (new_temp_dir) to build it
    in; on success puts it in ``target``'s place (replace_dir). The temporary
    folder never outlives the block."""
    tmp = new_temp_dir(target)
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def writable_dir(path: str | os.PathLike[str]) -> Path:
    """Creates the folder ``path`` if needed and checks that files can be written
    in it; OSError (EACCES, EROFS, ...) otherwise, which run_cli reports in one line."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder, prefix='.write-check-'):
        pass
    return folder


def write_json(obj: Any, path: str | os.PathLike[str], indent: int | None = None) -> None:
    """Writes JSON atomically (or to stdout for '-')."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)  # one shot: the C encoder
    with open_output_text(path) as f:
        f.write(text)
        f.write('\n')


def numbers(values: pd.Series) -> pd.Series:
    """``values`` as floats, NaN where a value is not a number (text, an empty
    cell, an integer too large for a float)."""
    try:
        return pd.to_numeric(values, errors='coerce').astype(float)
    except (OverflowError, ValueError, TypeError):
        def one(v: Any) -> float:
            try:
                return float(v)
            except (OverflowError, ValueError, TypeError):
                return math.nan
        return values.map(one).astype(float)


def check_unique_paths(df: pd.DataFrame, source: str) -> None:
    """Refuses a crops table that lists a crop (its ``path``) twice."""
    dup = df['path'].duplicated()
    if dup.any():
        raise InputError(f'{source}: crop {df["path"][dup].iloc[0]!r} is listed twice')


def confidence_column(df: pd.DataFrame, source: str) -> Any:
    """The ``confidence`` column of a crops table (path, ..., confidence) as float64,
    1.0 when the table has none; InputError naming the first crop whose value is
    not a number from 0 to 1."""
    import numpy as np
    if 'confidence' not in df.columns:
        return np.ones(len(df))
    conf = numbers(df['confidence']).to_numpy(dtype=np.float64)
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f'{source}: confidence of {df["path"].iloc[row]!r} is '
                         f'{str(df["confidence"].iloc[row])!r}; it must be a number from 0 to 1')
    return conf


def read_csv(path: str | os.PathLike[str], **kwargs: Any) -> pd.DataFrame:
    """Reads a CSV (gzip by suffix, '-' for stdin); bad files are an InputError.

    Only an empty cell is missing: labels, locations and paths such as ``NA``,
    ``None``, ``null`` or ``nan`` stay text (pandas would make them NaN), and in
    a column of numbers they are refused where the numbers are checked."""
    if 'keep_default_na' not in kwargs and 'na_values' not in kwargs:
        kwargs.update(keep_default_na=False, na_values=[''])
    with open_input_text(path) as f:
        try:
            return pd.read_csv(f, **kwargs)
        except UnicodeDecodeError as e:
            raise InputError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from e
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError,
                zlib.error) as e:
            raise InputError(f'{path}: not a readable CSV file ({e})') from e


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Writes a DataFrame as CSV atomically (gzip by suffix, '-' for stdout)."""
    kwargs.setdefault('index', False)
    if str(path) == STDIO:
        buf = io.StringIO()
        df.to_csv(buf, **kwargs)
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp:
        df.to_csv(tmp, compression='gzip' if _is_gzip(path) else None, **kwargs)


def figure_text(label: str, width: int | None = None) -> str:
    """A label as matplotlib draws it literally: ``$`` escaped (it would start
    mathtext, drawn wrongly or failing), cut to ``width`` characters if given."""
    text = label if width is None or len(label) <= width else label[:width - 1] + '…'
    return text.replace('$', r'\$')


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Writes a text file atomically."""
    with open_output_text(path) as f:
        f.write(text)


def write_lines(lines: Iterable[str], path: str | os.PathLike[str]) -> None:
    """Writes one item per line (a file list for AzCopy or download_images), atomically."""
    write_text(''.join(f'{line}\n' for line in lines), path)


def write_together(outputs: Sequence[tuple[str | os.PathLike[str], str]]) -> None:
    """Writes several (path, text) outputs of one step as one: every file to a
    temporary file beside it (gzip by suffix), and only once all are written and
    closed are they renamed into place; text for stdout ('-') goes last. A failure
    while writing leaves every output as it was (only the renames, which do not
    fail in practice, could part them)."""
    with contextlib.ExitStack() as stack:
        for path, text in outputs:
            if str(path) == STDIO:
                continue
            tmp = stack.enter_context(atomic_path(path))
            opener: Any = gzip.open if _is_gzip(path) else open
            with opener(tmp, 'wt', encoding='utf-8', newline='') as f:
                f.write(text)
        # leaving the stack renames the temporary files (or removes them on an error)
    for path, text in outputs:
        if str(path) == STDIO:
            sys.stdout.write(text)
            sys.stdout.flush()


IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.gif', '.bmp', '.tif', '.tiff', '.webp'})


# ---------------------------------------------------------------- label index and params

def load_label_index(path: str | os.PathLike[str]) -> list[str]:
    """Reads ``{"0": "label_a", "1": "label_b", ...}`` into a list ordered by index."""
    raw = read_json(path, unique_keys=True)
    if not isinstance(raw, dict) or not raw:
        raise InputError(f'{path}: expected a non-empty JSON object {{"0": "label", ...}}')
    try:
        keyed = [(int(k), v) for k, v in raw.items()]
    except ValueError as e:
        raise InputError(f'{path}: keys must be integers 0..n-1 ({e})') from e
    if len({i for i, _ in keyed}) != len(keyed):
        raise InputError(f'{path}: two keys name the same index (e.g. "1" and "01")')
    pairs = sorted(keyed, key=lambda kv: kv[0])
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise InputError(f'{path}: keys must be the integers 0..{len(pairs) - 1} without gaps')
    labels = [v for _, v in pairs]
    if not all(isinstance(v, str) and v for v in labels):
        raise InputError(f'{path}: every label name must be a non-empty string')
    if len(set(labels)) != len(labels):
        raise InputError(f'{path}: label names must be unique')
    return labels


def label_index_dict(labels: Sequence[str]) -> dict[str, str]:
    """The JSON form of a label index."""
    return {str(i): name for i, name in enumerate(labels)}


# ---------------------------------------------------------------- crops and detector versions

_VERSION_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


def detector_version_from_name(detector: str) -> str:
    """The one rule for the ``_mdv<version>`` crop suffix, from ``info.detector``.

    The file name is stripped of folders, a known model extension and a leading
    ``md_v``/``md``/``megadetector_v``/``v``: ``md_v5a.0.0.pt`` -> ``5a.0.0``,
    ``megadetector_v4.1.0.pb`` -> ``4.1.0``, ``v4.1`` -> ``4.1``.
    """
    name = detector.replace('\\', '/').rsplit('/', 1)[-1]
    for ext in ('.pt', '.pb', '.onnx', '.torchscript', '.engine'):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    lowered = name.lower()
    for prefix in ('megadetector_v', 'md_v', 'mdv', 'md', 'v'):
        if lowered.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
            break
    return check_detector_version(name)


def check_detector_version(version: str) -> str:
    """Returns ``version`` if it is safe to put into a file name, else InputError."""
    if not _VERSION_RE.match(version):
        raise InputError(
            f'detector version {version!r} must be letters, digits, ".", "_" or "-" (e.g. 5a)')
    return version


def crop_filename(image_file: str, crop_index: int, detector_version: str | None) -> str:
    """``<image>___cropNN_mdvX.Y.jpg`` (NN: two digits or more, as MegaDetector's
    own crop names); ground-truth crops omit the ``_mdv`` part."""
    if crop_index < 0:
        raise InputError(f'{image_file}: box index {crop_index} is negative')
    suffix = f'_mdv{detector_version}' if detector_version else ''
    return f'{image_file}___crop{crop_index:02d}{suffix}.jpg'


CROP_NAME_RE = re.compile(r'^(?P<image>.+)___crop(?P<idx>\d{2,})(?:_mdv(?P<ver>[^/]+))?\.jpg$')


def parse_crop_filename(crop: str) -> tuple[str, int, str | None]:
    """Inverse of crop_filename: (image file, box index, detector version or None)."""
    m = CROP_NAME_RE.match(crop)
    if m is None:
        raise InputError(f'{crop}: not a crop file name (<image>___cropNN[_mdvX].jpg)')
    return m['image'], int(m['idx']), m['ver']


def safe_join(root: str | os.PathLike[str], relative: str) -> Path:
    """``root/relative``, refusing absolute paths and paths that leave ``root``."""
    rel = relative.replace('\\', '/')
    if any(ord(c) < 32 for c in rel):
        raise InputError(f'{relative!r}: a path with a control character (newline, NUL, ...)')
    if not rel or rel.startswith('/') or re.match(r'^[A-Za-z]:', rel):
        raise InputError(f'{relative!r}: expected a relative image path')
    parts = [p for p in rel.split('/') if p not in ('', '.')]
    if '..' in parts or not parts:
        raise InputError(f'{relative!r}: path would leave the folder {root}')
    return Path(root).joinpath(*parts)


def redact_url(url: str) -> str:
    """A URL without its query string (where SAS tokens live), safe to log."""
    return url.split('?', 1)[0] + ('?<redacted>' if '?' in url else '')


# ---------------------------------------------------------------- geometry

PixelBox = tuple[int, int, int, int]


def crop_box(bbox: Sequence[float], width: int, height: int,
             square: bool = False) -> PixelBox | None:
    """Pixel box (left, top, right, bottom) for a normalized [x, y, w, h] box.

    With ``square``, the smallest square around the box, centred on it; it may
    extend past the image (the crop is padded there). Returns None for a box of
    zero area or one that lies wholly outside the image.
    """
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        return None
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0 or width <= 0 or height <= 0:
        return None
    left, top = x * width, y * height
    right, bottom = (x + w) * width, (y + h) * height
    # clip the box itself to the image; a box wholly outside has nothing to crop
    left, top = max(left, 0.0), max(top, 0.0)
    right, bottom = min(right, float(width)), min(bottom, float(height))
    if right - left < 1 or bottom - top < 1:
        return None
    if square:
        side = max(right - left, bottom - top)
        cx, cy = (left + right) / 2, (top + bottom) / 2
        left, top = cx - side / 2, cy - side / 2
        right, bottom = left + side, top + side
    box = (int(round(left)), int(round(top)), int(round(right)), int(round(bottom)))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


# ---------------------------------------------------------------- argparse types

def probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from e
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f'{text} is not between 0 and 1')
    return v


def _int_at_least(text: str, low: int, too_small: str) -> int:
    try:
        v = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from e
    if v < low:
        raise argparse.ArgumentTypeError(f'{text} {too_small}')
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, 'must be at least 1')


MAX_IMAGE_SIZE = 2048


def image_size(text: str) -> int:
    """argparse type: a classifier input size in pixels, 8 to MAX_IMAGE_SIZE (a
    larger one would only exhaust memory)."""
    value = _int_at_least(text, 8, 'must be at least 8')
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f'{value} is larger than {MAX_IMAGE_SIZE} pixels')
    return value


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, 'must not be negative')


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from e
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f'{text} is not a finite number')
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (refuses nan, inf, 0 and negatives)."""
    v = _finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f'{text} must be above 0')
    return v


def nonneg_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    v = _finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f'{text} must not be negative')
    return v


class _Parser(argparse.ArgumentParser):
    """argparse, which also suggests the closest flag for a mistyped one."""

    def error(self, message: str) -> NoReturn:
        prefix = 'unrecognized arguments: '
        if message.startswith(prefix):
            known = [s for a in self._actions for s in a.option_strings]
            hints = []
            for token in message[len(prefix):].split():
                if token.startswith('-'):
                    close = difflib.get_close_matches(token.split('=')[0], known, n=1,
                                                      cutoff=0.6)
                    if close:
                        hints.append(f'{token}: did you mean {close[0]}?')
            if hints:
                message += ' (' + '; '.join(hints) + ')'
        super().error(message)


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose --help shows the module docstring as written, and
    whose error for a mistyped flag names the closest one."""
    return _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def require_mapping(obj: Any, what: str) -> Mapping[str, Any]:
    """``obj`` if it is a JSON object, else an InputError naming ``what``."""
    if not isinstance(obj, Mapping):
        raise InputError(f'{what}: expected a JSON object, got {type(obj).__name__}')
    return obj
