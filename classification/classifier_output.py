"""run_classifier's output files: written as results come, resumed after a kill,
split into shards, and read back whole.

While a run is going, rows are appended a batch at a time to ``<output>.part``
(plain CSV after one ``#run`` line naming the run: model, crops, categories,
engine). Rerunning the same command reads that file, keeps its complete rows,
and classifies only the rest; at the end the rows are copied in order into the
output (gzip-compressed if its name ends in ``.gz``), atomically, and the
``.part`` file is removed. Crops that could not be read are kept in the part
file as rows without probabilities (so a resumed run does not retry them) and
left out of the output. A part file of another run is refused, never mixed in.

A shard (``--shard K/N``) output gets a manifest beside it,
``<output>.shard.json`` ({"run", "shard", "shards", "rows"}); ``read_outputs``
takes every shard file of a run (paths or glob patterns) and returns the same
table one unsharded run gives, and refuses a missing, repeated or foreign shard.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from classification import shards, utils
from classification.shards import Shard

logger = logging.getLogger(__name__)

PART_SUFFIX = '.part'
_RUN_PREFIX = '#run '


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator='\n').writerows(rows)
    return buf.getvalue()


def _header(columns: Sequence[str]) -> str:
    return _csv_text([['path', *columns]])


def format_rows(paths: Sequence[str], probs: np.ndarray | None, n_cols: int) -> str:
    """CSV text of rows; ``probs`` None: rows of unreadable crops (no values)."""
    if probs is None:
        return _csv_text([p, *([''] * n_cols)] for p in paths)
    return _csv_text([p, *(f'{v:.6g}' for v in row)]
                     for p, row in zip(paths, probs.tolist(), strict=True))


class PartFile:
    """The growing ``.part`` file of one run (see the module docstring)."""

    def __init__(self, path: Path, run: str, columns: Sequence[str]) -> None:
        self.path, self.run, self.columns = path, run, list(columns)
        self._f: IO[str] | None = None
        self._lock: int | None = None

    def lock(self) -> None:
        """Takes ``<part>.lock`` for this process (until ``close``): a second run
        writing the same output at the same time is refused, not interleaved."""
        import fcntl
        lock_path = Path(f'{self.path}.lock')
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise utils.InputError(f'{self.path}: another run is writing this output now; '
                                   'wait for it to end, or give another output') from e
        self._lock = fd

    def done(self, expected: Collection[str] | None = None) -> set[str]:
        """Crops already in the part file (read or unreadable); cuts a row left
        half-written by a kill. A part file of another run is refused, and so is
        one whose rows are not this run's: a crop not in ``expected`` (the crops
        of this run), a crop twice, a row of another width, or a value that is
        not a probability (an edited or damaged file)."""
        if not self.path.exists():
            return set()
        with open(self.path, encoding='utf-8', newline='') as f:
            run, header = f.readline(), f.readline()
        if not run.startswith(_RUN_PREFIX) or not header.endswith('\n'):
            raise utils.InputError(f'{self.path}: not a run_classifier part file; move it '
                                   'away to start the run')
        if run[len(_RUN_PREFIX):].rstrip('\n') != self.run or header != _header(self.columns):
            raise utils.InputError(
                f'{self.path}: a partial run with another model, crops, categories or '
                'engine; rerun with its settings, or delete it to start again')
        with open(self.path, 'r+b') as f:        # a kill may leave half a row at the end
            size = f.seek(0, os.SEEK_END)
            tail = b''
            while b'\n' not in tail:            # the header ends in one
                f.seek(max(0, size - len(tail) - 4096))
                tail = f.read(size - f.tell())
            complete = size - len(tail) + tail.rfind(b'\n') + 1
            if complete != size:
                f.truncate(complete)
        with open(self.path, encoding='utf-8', newline='') as f:
            f.readline()
            f.readline()
            return self._check_rows(csv.reader(f), expected)

    def _check_rows(self, rows: Iterator[list[str]], expected: Collection[str] | None
                    ) -> set[str]:
        done: set[str] = set()
        width = len(self.columns) + 1
        for n, row in enumerate(rows, 3):
            if not row:
                continue
            problem = None
            if len(row) != width:
                problem = f'{len(row)} values where rows have {width}'
            elif row[0] in done:
                problem = f'crop {row[0]!r} is listed twice'
            elif expected is not None and row[0] not in expected:
                problem = f'crop {row[0]!r} is not one of the crops of this run'
            elif any(row[1:]) and not all(_is_probability(v) for v in row[1:]):
                problem = 'a value that is not a probability'
            if problem:
                raise utils.InputError(f'{self.path}: row {n}: {problem} (a damaged or edited '
                                       'part file); delete it to start the run again')
            done.add(row[0])
        return done

    def append(self, text: str) -> None:
        if self._f is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, 'a', encoding='utf-8', newline='')
            if new:
                self._f.write(f'{_RUN_PREFIX}{self.run}\n{_header(self.columns)}')
        self._f.write(text)
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._lock is not None:
            Path(f'{self.path}.lock').unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def rows(self) -> Iterator[tuple[str, bool]]:
        """(CSV line, whether its crop was read) for every row, in the order written."""
        with open(self.path, encoding='utf-8', newline='') as f:
            next(f)
            next(f)
            for line in f:
                yield line, not _unreadable_row(line, len(self.columns))


def _is_probability(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return 0.0 <= value <= 1.0


def _unreadable_row(line: str, n_cols: int) -> bool:
    return line.endswith(',' * n_cols + '\n')


def part_path(output: str, shard: Shard | None = None) -> Path:
    """``<output>.part``, or for one process's share of a torchrun run
    ``<output>.<K>of<N>.part``."""
    suffix = f'.{shard.k}of{shard.n}{PART_SUFFIX}' if shard else PART_SUFFIX
    return Path(output + suffix)


def finish(output: str, parts: Sequence[PartFile], columns: Sequence[str],
           manifest: dict[str, Any] | None = None) -> tuple[int, int]:
    """Copies the classified rows of ``parts`` (in order) into ``output``
    atomically, writes the shard manifest if given, removes the parts; returns
    (rows written, unreadable crops left out)."""
    n = bad = 0
    with utils.open_output_text(output) as out:
        out.write(_header(columns))
        for part in parts:
            for line, ok in part.rows():
                if ok:
                    out.write(line)
                    n += 1
                else:
                    bad += 1
    if manifest is not None and output != '-':
        shards.write_manifest(output, {**manifest, 'rows': n})
    for part in parts:
        part.close()
        part.path.unlink(missing_ok=True)
    return n, bad


def read_outputs(paths: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """One table from run_classifier outputs: one file, or every shard file of a run
    (paths or glob patterns, any order), the rows as one unsharded run writes them
    (shards hold contiguous shares of the sorted crops)."""
    files = shards.expand(paths)
    if '-' in files and len(files) > 1:
        raise utils.InputError("'-' (stdin) cannot be combined with other files")
    files = shards.check_shards(files, 'run_classifier --shard')
    frames = [check_probabilities(utils.read_csv(p, **kwargs), p) for p in files]
    if len(frames) == 1:
        return frames[0]
    columns = list(frames[0].columns)
    for p, df in zip(files, frames, strict=True):
        if list(df.columns) != columns:
            raise utils.InputError(f'{p}: columns differ from {files[0]}')
    out = pd.concat(frames, ignore_index=True)
    utils.check_unique_paths(out, ', '.join(files))
    return out


# evaluate_model's outputs_<split>.csv.gz also carry the true label and a weight
NOT_PROBABILITIES = ('path', 'label', 'weight')


def check_probabilities(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """A classifier output table, checked: a "path" column naming each crop once,
    and every other column (but "label" and "weight") a number from 0 to 1 in every row;
    the probability columns come back as floats."""
    if 'path' not in df.columns:
        raise utils.InputError(f'{source}: no "path" column (is this run_classifier output?)')
    if df['path'].isna().any():
        raise utils.InputError(f'{source}: row {int(df["path"].isna().to_numpy().argmax()) + 2}'
                               ' has no path')
    utils.check_unique_paths(df, source)
    probs = [c for c in df.columns if c not in NOT_PROBABILITIES]
    if not probs:
        raise utils.InputError(f'{source}: no probability columns')
    for col in probs:
        values = utils.numbers(df[col])
        bad = values.isna() | ~values.between(0.0, 1.0)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise utils.InputError(f'{source}: row {i + 2} ({df["path"].iloc[i]!r}), column '
                                   f'{col!r}: {str(df[col].iloc[i])!r} is not a probability (a '
                                   'number from 0 to 1)')
        df[col] = values.astype(float)
    return df
