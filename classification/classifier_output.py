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
import glob
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from classification import utils

logger = logging.getLogger(__name__)

PART_SUFFIX = '.part'
MANIFEST_SUFFIX = '.shard.json'
_RUN_PREFIX = '#run '


@dataclass(frozen=True)
class Shard:
    """The K-th (1-based) of N shards."""
    k: int = 1
    n: int = 1

    def take(self, items: Sequence[Any]) -> list[Any]:
        """This shard's contiguous share of ``items`` (shares differ by at most one)."""
        total = len(items)
        return list(items[(self.k - 1) * total // self.n: self.k * total // self.n])

    def sub(self, rank: int, world_size: int) -> Shard:
        """Part ``rank`` of ``world_size`` of this shard, as a shard of the whole (its
        contiguous share is exactly that part of this shard's share)."""
        return Shard((self.k - 1) * world_size + rank + 1, self.n * world_size)


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N (an argparse type)."""
    import argparse
    try:
        k_text, n_text = text.split('/')
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected K/N, e.g. 1/4') from None
    if n < 1 or not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f'{text!r}: K must be from 1 to N (shards are '
                                         'numbered 1/N to N/N)')
    return Shard(k, n)


def run_id(**parts: Any) -> str:
    """A short hash naming a run by everything that decides its output."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def format_rows(paths: Sequence[str], probs: np.ndarray | None, n_cols: int) -> str:
    """CSV text of rows; ``probs`` None: rows of unreadable crops (no values)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    if probs is None:
        writer.writerows([p, *([''] * n_cols)] for p in paths)
    else:
        writer.writerows([p, *(f'{v:.6g}' for v in row)]
                         for p, row in zip(paths, probs.tolist(), strict=True))
    return buf.getvalue()


class PartFile:
    """The growing ``.part`` file of one run (see the module docstring)."""

    def __init__(self, path: Path, run: str, columns: Sequence[str]) -> None:
        self.path, self.run, self.columns = path, run, list(columns)
        self._f: IO[str] | None = None

    def done(self) -> set[str]:
        """Crops already in the part file (read or unreadable); cuts a row left
        half-written by a kill. A part file of another run is refused."""
        if not self.path.exists():
            return set()
        with open(self.path, 'rb') as f:
            data = f.read()
        complete = data[:data.rfind(b'\n') + 1]
        lines = complete.decode('utf-8').splitlines()
        if len(lines) < 2 or not lines[0].startswith(_RUN_PREFIX):
            raise utils.InputError(f'{self.path}: not a run_classifier part file; move it '
                                   'away to start the run')
        if lines[0][len(_RUN_PREFIX):] != self.run or next(csv.reader([lines[1]])) != \
                ['path', *self.columns]:
            raise utils.InputError(
                f'{self.path}: a partial run with another model, crops, categories or '
                'engine; rerun with its settings, or delete it to start again')
        if len(complete) != len(data):
            with open(self.path, 'r+b') as f:
                f.truncate(len(complete))
        return {row[0] for row in csv.reader(lines[2:]) if row}

    def append(self, text: str) -> None:
        if self._f is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, 'a', encoding='utf-8', newline='')
            if new:
                header = io.StringIO()
                csv.writer(header, lineterminator='\n').writerow(['path', *self.columns])
                self._f.write(f'{_RUN_PREFIX}{self.run}\n{header.getvalue()}')
        self._f.write(text)
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def rows(self) -> Iterator[tuple[str, bool]]:
        """(CSV line, whether its crop was read) for every row, in the order written."""
        with open(self.path, encoding='utf-8', newline='') as f:
            next(f)
            next(f)
            for line in f:
                yield line, not _unreadable_row(line, len(self.columns))


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
    header = io.StringIO()
    csv.writer(header, lineterminator='\n').writerow(['path', *columns])
    n = bad = 0
    with utils.open_output_text(output) as out:
        out.write(header.getvalue())
        for part in parts:
            for line, ok in part.rows():
                if ok:
                    out.write(line)
                    n += 1
                else:
                    bad += 1
    if manifest is not None and output != '-':
        utils.write_json({**manifest, 'rows': n}, output + MANIFEST_SUFFIX, indent=1)
    for part in parts:
        part.close()
        part.path.unlink(missing_ok=True)
    return n, bad


def expand(paths: Iterable[str]) -> list[str]:
    """Paths with glob patterns expanded (sorted); '-' and plain paths as given."""
    out: list[str] = []
    for p in paths:
        if p != '-' and glob.has_magic(p):
            found = sorted(glob.glob(p))
            if not found:
                raise utils.InputError(f'{p}: no file matches')
            out.extend(found)
        else:
            out.append(p)
    return out


def _manifest(path: str) -> dict[str, Any] | None:
    mpath = path + MANIFEST_SUFFIX
    if path == '-' or not os.path.exists(mpath):
        return None
    doc = utils.require_mapping(utils.read_json(mpath), mpath)
    if not (isinstance(doc.get('run'), str) and all(
            isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool)
            for k in ('shard', 'shards')) and 1 <= doc['shard'] <= doc['shards']):
        raise utils.InputError(f'{mpath}: not a shard manifest of run_classifier')
    return dict(doc)


def check_shards(paths: Sequence[str]) -> list[str]:
    """The files in shard order, if together they are one whole run; refuses
    shards of different runs, a shard missing or given twice, and unsharded files
    among shards or given several at once."""
    twice = next((p for p in paths if paths.count(p) > 1), None)
    if twice is not None:
        raise utils.InputError(f'{twice}: given twice')
    manifests = {p: _manifest(p) for p in paths}
    sharded = {p: m for p, m in manifests.items() if m is not None and m['shards'] > 1}
    if not sharded:
        if len(paths) > 1:
            raise utils.InputError(f'{len(paths)} files given, but they are not shards of '
                                   'one run_classifier --shard run (no .shard.json beside them)')
        return list(paths)
    plain = [p for p in paths if p not in sharded]
    if plain:
        raise utils.InputError(f'{plain[0]}: not a shard, given with shard files')
    runs = {m['run'] for m in sharded.values()}
    if len(runs) > 1:
        raise utils.InputError('the shard files are of different runs (model, crops or '
                               'settings differ): ' + ', '.join(sorted(paths)[:4]))
    n = next(iter(sharded.values()))['shards']
    seen: dict[int, str] = {}
    for p, m in sharded.items():
        if m['shards'] != n:
            raise utils.InputError(f'{p}: shard of {m["shards"]}, others of {n}')
        if m['shard'] in seen:
            raise utils.InputError(f'{p} and {seen[m["shard"]]} are both shard '
                                   f'{m["shard"]}/{n}')
        seen[m['shard']] = p
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        raise utils.InputError(f'shard{"s" if len(missing) > 1 else ""} '
                               f'{", ".join(f"{k}/{n}" for k in missing[:10])} of the run '
                               'not given')
    return [seen[k] for k in range(1, n + 1)]


def read_outputs(paths: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """One table from run_classifier outputs: one file, or every shard file of a run
    (paths or glob patterns, any order), the rows as one unsharded run writes them
    (shards hold contiguous shares of the sorted crops)."""
    files = expand(paths)
    if '-' in files and len(files) > 1:
        raise utils.InputError("'-' (stdin) cannot be combined with other files")
    files = check_shards(files)
    frames = [utils.read_csv(p, **kwargs) for p in files]
    if len(frames) == 1:
        return frames[0]
    columns = list(frames[0].columns)
    for p, df in zip(files, frames, strict=True):
        if list(df.columns) != columns:
            raise utils.InputError(f'{p}: columns differ from {files[0]}')
    return pd.concat(frames, ignore_index=True)
