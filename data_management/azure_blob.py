"""Azure Blob Storage access for every step, in one place.

A container is given as a URL with a SAS token, as users copy it from the
Azure portal: ``https://<account>.blob.core.windows.net/<container>?<sas>``
(or an emulator's path-style ``http://127.0.0.1:10000/<account>/<container>?<sas>``).
The account and container names come from the SDK's own parsing, so both
styles work. Requests are retried with exponential back-off; SAS tokens are
never printed (``describe`` and ``safe_error`` strip them).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient, ExponentialRetry

from classification.utils import InputError, redact_url

_SECRET_RE = re.compile(r'(sig|se|sp|sv|st|spr|srt|ss|sr|skoid|sktid|skt|ske|sks|skv)=[^&\s\'"]*',
                        re.IGNORECASE)


@dataclass(frozen=True)
class RetrySettings:
    """Exponential back-off: waits ``initial_backoff * increment_base**k`` seconds."""
    retry_total: int = 5
    initial_backoff: float = 1.0
    increment_base: float = 2.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls) -> RetrySettings:
        """Overrides from CT_BLOB_RETRY_TOTAL, CT_BLOB_INITIAL_BACKOFF,
        CT_BLOB_INCREMENT_BASE and CT_BLOB_READ_TIMEOUT (seconds)."""
        env = os.environ
        try:
            return cls(retry_total=int(env.get('CT_BLOB_RETRY_TOTAL', cls.retry_total)),
                       initial_backoff=float(env.get('CT_BLOB_INITIAL_BACKOFF',
                                                     cls.initial_backoff)),
                       increment_base=float(env.get('CT_BLOB_INCREMENT_BASE',
                                                    cls.increment_base)),
                       read_timeout=float(env.get('CT_BLOB_READ_TIMEOUT', cls.read_timeout)))
        except ValueError as e:
            raise InputError(f'bad CT_BLOB_* retry setting: {e}') from e


class BlobNotFound(Exception):
    """The blob does not exist (HTTP 404)."""


def safe_error(e: BaseException) -> str:
    """An exception's message with every SAS query parameter masked."""
    text = f'{type(e).__name__}: {e}'.splitlines()[0]
    return _SECRET_RE.sub(lambda m: f'{m.group(1)}=<redacted>', text)


def describe(url: str) -> str:
    """A container URL safe to log."""
    return redact_url(url)


def dataset_container_url(entry: dict[str, Any]) -> str:
    """The container URL (with SAS) of a MegaDB dataset entry.

    ``storage_account`` is an account name (``https://<name>.blob.core.windows.net``)
    or, for an emulator or a custom domain, the account's endpoint URL.
    """
    account, container = entry.get('storage_account'), entry.get('container')
    if not account or not container:
        raise InputError(f'dataset {entry.get("dataset_name")}: no storage_account/container '
                         'in its MegaDB entry')
    endpoint = (account.rstrip('/') if account.lower().startswith(('https://', 'http://'))
                else f'https://{account}.blob.core.windows.net')
    sas = (entry.get('container_sas_key') or '').lstrip('?')
    return f'{endpoint}/{container}' + (f'?{sas}' if sas else '')


def _retry_policy(retry: RetrySettings) -> ExponentialRetry:
    # the SDK annotates these as int but computes with any number
    return ExponentialRetry(initial_backoff=retry.initial_backoff,  # type: ignore[arg-type]
                            increment_base=retry.increment_base,  # type: ignore[arg-type]
                            retry_total=retry.retry_total, random_jitter_range=0)


def download_blob_url(url: str, retry: RetrySettings | None = None) -> bytes:
    """The content of one blob given by its URL (with SAS); InputError if it cannot
    be read, naming the URL without its token."""
    retry = retry or RetrySettings.from_env()
    try:
        client = BlobClient.from_blob_url(url, retry_policy=_retry_policy(retry),
                                          read_timeout=retry.read_timeout)
        return bytes(client.download_blob(max_concurrency=1).readall())
    except ResourceNotFoundError as e:
        raise InputError(f'{describe(url)}: blob not found') from e
    except (ValueError, AzureError) as e:
        raise InputError(f'{describe(url)}: {safe_error(e)}') from e


def open_container(url: str, retry: RetrySettings | None = None,
                   **client_kwargs: Any) -> ContainerClient:
    """A ContainerClient for a container URL with SAS; bad URLs are InputError."""
    retry = retry or RetrySettings.from_env()
    if not url.lower().startswith(('https://', 'http://')):
        raise InputError(f'container URL {describe(url)} must start with https:// (or http:// '
                         'for an emulator)')
    policy = _retry_policy(retry)
    try:
        client = ContainerClient.from_container_url(
            url, retry_policy=policy, read_timeout=retry.read_timeout, **client_kwargs)
    except (ValueError, AzureError) as e:
        raise InputError(f'container URL {describe(url)}: {safe_error(e)}') from e
    if not client.container_name:
        raise InputError(f'container URL {describe(url)} names no container')
    return client


def download_bytes(container: ContainerClient, blob_name: str) -> bytes:
    """The blob's content; BlobNotFound if missing, AzureError after retries fail."""
    try:
        return bytes(container.download_blob(blob_name, max_concurrency=1).readall())
    except ResourceNotFoundError as e:
        raise BlobNotFound(blob_name) from e


def blob_exists(container: ContainerClient, blob_name: str) -> bool:
    """True if the blob exists."""
    return bool(container.get_blob_client(blob_name).exists())
