"""Fetching MegaDB images (``<dataset>/<path>``) from their datasets' blob containers,
or copying them from a dataset's local ``images_root``.

``read_list`` reads the lists of images to fetch; ``download`` fetches them on
threads, atomically, and reports failures instead of stopping. The command line
is data_management/megadb/download_images.py.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from classification import utils
from data_management import azure_blob


def read_list(kind: str, path: str, key: str, save_key: str) -> list[tuple[str, str]]:
    """(image name, relative path to save as) pairs, in list order, without repeats."""
    items: list[tuple[str, str]] = []
    if kind == 'txt':
        with utils.open_input_text(path) as f:
            names = [line.strip() for line in f if line.strip()]
        items = [(n, n) for n in names]
    else:
        doc = utils.read_json(path)
        entries = list(doc) if isinstance(doc, Mapping) else doc
        if not isinstance(entries, list):
            raise utils.InputError(f'{path}: expected a JSON list or object')
        for i, e in enumerate(entries):
            if isinstance(e, str):
                items.append((e, e))
            elif isinstance(e, Mapping) and isinstance(e.get(key), str):
                save = e.get(save_key)
                items.append((e[key], save if isinstance(save, str) and save else e[key]))
            else:
                raise utils.InputError(f'{path}: entry {i} is neither a name nor an object with '
                                       f'a "{key}" string (see --key)')
    seen: set[str] = set()
    out = []
    for name, save in items:
        if '/' not in name:
            raise utils.InputError(f'{path}: {name!r} is not <dataset>/<path>')
        if name not in seen:
            seen.add(name)
            out.append((name, save))
    return out


def fetch_bytes(name: str, entry: Mapping[str, Any], containers: dict[str, Any]) -> bytes:
    """The bytes of one image (``<dataset>/<path>``) from its dataset's local
    ``images_root`` or blob container (opened into ``containers`` on first use).
    Raises FileNotFoundError, azure_blob.BlobNotFound, or the Azure/OS error."""
    dataset, rel = name.split('/', 1)
    if entry.get('images_root'):
        return utils.safe_join(entry['images_root'], rel).read_bytes()
    prefix = str(entry.get('path_prefix') or '').strip('/')
    if dataset not in containers:
        url = azure_blob.dataset_container_url(dict(entry))
        containers[dataset] = azure_blob.open_container(url)
    return azure_blob.download_bytes(containers[dataset], f'{prefix}/{rel}' if prefix else rel)


def failure_reason(e: Exception) -> str:
    """A loggable reason (no secrets) for an exception of ``fetch_bytes``."""
    if isinstance(e, FileNotFoundError):
        return 'not found in the local images root'
    if isinstance(e, azure_blob.BlobNotFound):
        return 'blob not found'
    return azure_blob.safe_error(e)


def fetch_one(name: str, dest: Path, entry: Mapping[str, Any], containers: dict[str, Any]
              ) -> str | None:
    """Copies or downloads one image to dest (atomically); returns a failure reason or None."""
    try:
        if entry.get('images_root'):
            src = utils.safe_join(entry['images_root'], name.split('/', 1)[1])
            with utils.atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
            return None
        data = fetch_bytes(name, entry, containers)
    except Exception as e:  # AzureError and OS errors: log and go on
        return failure_reason(e)
    with utils.atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return None


def download(items: Sequence[tuple[str, str]], store_dir: str, datasets: Mapping[str, Any],
             threads: int, only_new: bool, check_dir: str | None) -> dict[str, Any]:
    """Fetches every item; returns counts and failures."""
    failures: dict[str, str] = {}
    todo: list[tuple[str, Path]] = []
    skipped = 0
    containers: dict[str, Any] = {}
    for name, save in items:
        dataset = name.split('/', 1)[0]
        if dataset not in datasets:
            failures[name] = f'dataset {dataset} is not in the MegaDB'
            continue
        dest = utils.safe_join(store_dir, save)
        if only_new and (dest.exists() or (check_dir and utils.safe_join(check_dir, save)
                                           .exists())):
            skipped += 1
            continue
        entry = datasets[dataset]
        if not entry.get('images_root') and dataset not in containers:
            containers[dataset] = azure_blob.open_container(
                azure_blob.dataset_container_url(entry))
        todo.append((name, dest))
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        results = pool.map(lambda t: fetch_one(t[0], t[1], datasets[t[0].split('/', 1)[0]],
                                               containers), todo)
        for (name, _), reason in zip(todo, results, strict=True):
            if reason is not None:
                failures[name] = reason
    fetched = sum(name not in failures for name, _ in todo)
    return {'requested': len(items), 'downloaded': fetched, 'skipped_existing': skipped,
            'failures': utils.failure_entries(failures)}
