"""A platform that trickles, hangs mid-body, never ends its body or sends a gzip bomb: a raw
socket server on 127.0.0.1 (http.server would not misbehave this way). The environment's
timeout bounds the whole call and max_response_bytes its body, whatever the platform does."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lookup import PlatformClient
from poller.config.environments import Environment
from poller.errors import CallError

Behaviour = Callable[[socket.socket, threading.Event], None]


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    while not stop.wait(0.5):
        conn.sendall(b" ")  # one byte every half second: no single read ever times out


def hang_mid_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n")
    conn.sendall(b'{"partial": ')
    stop.wait(30)


def endless_chunks(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 65536
    while not stop.is_set():
        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))


BOMB = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in about 64 KiB


def gzip_bomb(conn: socket.socket, stop: threading.Event) -> None:
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    conn.sendall(f"{head}Content-Length: {len(BOMB)}\r\n\r\n".encode() + BOMB)
    stop.wait(30)


class RawServer:
    """Accepts connections and plays `behaviour` on each, until closed."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)  # the request
            with contextlib.suppress(OSError):  # the client gave up: what it should do
                self.behaviour(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], RawServer]]:
    servers: list[RawServer] = []

    def start(behaviour: Behaviour) -> RawServer:
        servers.append(RawServer(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def call(url: str, **environment: object) -> tuple[str, float]:
    """Execute an integration once; the error's text and the seconds it took."""
    env = Environment.model_validate(
        {"base_url": url, "retries": 0, "timeout_seconds": 2, **environment}
    )
    client = PlatformClient("live", env)
    started = time.monotonic()
    try:
        with pytest.raises(CallError) as failure:
            client.execute("x", {}, request_id="r")
    finally:
        client.close()
    return str(failure.value), time.monotonic() - started


@pytest.mark.parametrize("behaviour", [trickle, hang_mid_body], ids=["trickle", "hang"])
def test_a_slow_body_times_out_within_the_environment_timeout(
    serve: Callable[[Behaviour], RawServer], behaviour: Behaviour
) -> None:
    error, seconds = call(serve(behaviour).url)
    assert "HTTP 200 (timed out after 2 s reading the response)" in error
    assert 1.9 < seconds < 3.0


def test_an_endless_body_stops_at_the_cap(serve: Callable[[Behaviour], RawServer]) -> None:
    error, seconds = call(serve(endless_chunks).url, max_response_bytes=1024 * 1024)
    assert "response body over 1,048,576 bytes (max_response_bytes)" in error
    assert seconds < 2.0


def test_a_gzip_bomb_stops_at_the_decoded_cap(serve: Callable[[Behaviour], RawServer]) -> None:
    error, _ = call(serve(gzip_bomb).url)
    assert "response body over 10,485,760 bytes (max_response_bytes)" in error


def test_an_endless_body_is_cut_by_the_run_timeout_too(
    serve: Callable[[Behaviour], RawServer],
) -> None:
    env = Environment.model_validate(
        {"base_url": serve(trickle).url, "retries": 0, "timeout_seconds": 30}
    )
    client = PlatformClient("live", env)
    started = time.monotonic()
    try:
        with pytest.raises(CallError, match=r"timed out after 0?\.?\d+ s reading the response"):
            client.execute("x", {}, request_id="r", deadline=time.monotonic() + 1)
    finally:
        client.close()
    assert time.monotonic() - started < 2.0
