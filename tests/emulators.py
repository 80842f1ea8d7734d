"""Local emulators started by the tests (loopback only): Azurite, and a fault-injecting proxy."""
from __future__ import annotations

import datetime as dt
import http.client
import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AZURITE_ACCOUNT = 'devstoreaccount1'
# Azurite's documented, public development key (not a secret)
AZURITE_KEY = ('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/'
               'KBHBeksoGMGw==')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'emulator exited with code {proc.returncode}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f'emulator did not open port {port} in {timeout} s')


class Emulator:
    """A server process started by the tests; ``stop`` ends it."""
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Azurite(Emulator):
    """Azurite's blob service in memory on a free loopback port."""

    def __init__(self) -> None:
        exe = REPO / 'node_modules' / '.bin' / 'azurite-blob'
        if not exe.exists() or shutil.which('node') is None:
            raise RuntimeError('Azurite is not installed: run `make test` (npm ci) first')
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(exe), '--blobHost', '127.0.0.1', '--blobPort', str(self.port),
             '--inMemoryPersistence', '--skipApiVersionCheck', '--disableTelemetry', '--silent'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        self.connection_string = (
            f'DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};'
            f'AccountKey={AZURITE_KEY};'
            f'BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};')

    def create_container(self, name: str, files: dict[str, bytes]) -> str:
        """Creates a container holding ``files``; returns its read+list SAS URL."""
        from azure.storage.blob import (
            BlobServiceClient,
            ContainerSasPermissions,
            generate_container_sas,
        )
        service = BlobServiceClient.from_connection_string(self.connection_string)
        container = service.create_container(name)
        for blob, data in files.items():
            container.upload_blob(blob, data)
        sas = generate_container_sas(
            AZURITE_ACCOUNT, name, account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
        return f'http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}/{name}?{sas}'



class FaultProxy:
    """An HTTP proxy in front of an emulator that can fail, drop or count requests.

    SAS signatures do not cover host:port, so a container URL is pointed at the
    proxy by swapping the port.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fail_next = 0          # answer this many requests with 503 ServerBusy
        self.drop_next = 0          # close this many connections without an answer
        self.requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests += 1
                    drop, fail = proxy.drop_next > 0, proxy.fail_next > 0
                    if drop:
                        proxy.drop_next -= 1
                    elif fail:
                        proxy.fail_next -= 1
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fail:
                    msg = b'<?xml version="1.0"?><Error><Code>ServerBusy</Code></Error>'
                    self.send_response(503)
                    self.send_header('x-ms-error-code', 'ServerBusy')
                    self.send_header('Content-Length', str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection('127.0.0.1', proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != 'host'}
                headers['Host'] = f'127.0.0.1:{proxy.upstream_port}'
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ('transfer-encoding', 'connection', 'content-length'):
                        self.send_header(k, v)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # dropped connections are the point

        self.server = Server(('127.0.0.1', 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url_for(self, container_url: str) -> str:
        return container_url.replace(f':{self.upstream_port}/', f':{self.port}/')

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# any base64 string: the emulator ignores auth, the SDK only needs to sign with it
COSMOS_TEST_KEY = 'dGVzdC1rZXktZm9yLWEtbG9jYWwtZW11bGF0b3Itb25seQ=='


class CosmosServer(Emulator):
    """@vercel/cosmosdb-server (TLS, in memory) on a free loopback port."""

    def __init__(self) -> None:
        if not (REPO / 'node_modules' / '@vercel' / 'cosmosdb-server').exists():
            raise RuntimeError('cosmosdb-server is not installed: run `make test` (npm ci)')
        self.port = free_port()
        self.proc = subprocess.Popen(['node', str(REPO / 'tests' / 'cosmos_server.js'),
                                      str(self.port)], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        self.endpoint = f'https://127.0.0.1:{self.port}/'

