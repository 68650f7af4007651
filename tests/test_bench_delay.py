"""The WAN benchmark's delaying forwarder passes every byte, in order, both ways, late."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server that sends back whatever it gets, then closes when the client does."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    thread.join(timeout=5)


def test_forwarder_delays_each_direction_and_keeps_every_byte(echo_port: int) -> None:
    port, delay_ms = free_port(), 30
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._delay", str(port), "127.0.0.1", str(echo_port),
         str(delay_ms)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        payload = random.Random(7).randbytes(3 << 20)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            start = time.monotonic()
            conn.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            assert time.monotonic() - start >= 2 * delay_ms / 1000  # there and back again

            got = bytearray()

            def receive() -> None:
                while data := conn.recv(65536):
                    got.extend(data)

            reader = threading.Thread(target=receive)
            reader.start()
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)  # the end of the stream travels through too
            reader.join(timeout=30)
        assert bytes(got) == payload
    finally:
        proc.terminate()
        proc.wait()
