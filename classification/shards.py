"""Shards of a run: ``--shard K/N`` splits the sorted inputs of a step into N
contiguous, equal shares; each shard's output gets a manifest beside it,
``<output>.shard.json`` ({"run", "shard", "shards", ...}), and the readers of
those outputs take every shard file of a run (paths or glob patterns) as one
whole, refusing a missing, repeated or foreign shard.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from classification import utils

MANIFEST_SUFFIX = '.shard.json'


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


def digest(items: Iterable[str]) -> str:
    """A hash of a list of names (the inputs a run was given)."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode() + b'\0')
    return h.hexdigest()


def write_manifest(output: str, manifest: dict[str, Any]) -> None:
    utils.write_json(manifest, output + MANIFEST_SUFFIX, indent=1)


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
        raise utils.InputError(f'{mpath}: not a shard manifest')
    return dict(doc)


def check_shards(paths: Sequence[str], what: str) -> list[str]:
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
                                   f'one {what} run (no .shard.json beside them)')
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
