"""A TCP forwarder that delays every byte by a fixed time in each direction.

``python -m benchmarks._delay LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS`` listens on
127.0.0.1 and forwards each connection to the target, holding each chunk back ``DELAY_MS``
before passing it on, both ways: a round trip gains twice the delay, as on a WAN link.
netem would do this in the kernel, but it is not available on these machines; the WAN
benchmark runs this in the master's namespace, in front of the peer's sshd, when given
``--delay-ms``. Order is kept and nothing is dropped; the rate limit stays tbf's.
"""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time

CHUNK = 64 << 10


def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    """Read from ``src`` as fast as it comes; write each chunk to ``dst`` ``delay`` later."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()

    def writer() -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while True:
        try:
            data = src.recv(CHUNK)
        except OSError:
            data = b""
        with ready:
            queue.append((time.monotonic() + delay, data))
            ready.notify()
        if not data:
            break
    thread.join()


def _serve(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    try:
        upstream = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    there = threading.Thread(target=_pump, args=(client, upstream, delay), daemon=True)
    there.start()
    _pump(upstream, client, delay)
    there.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    port, host, target_port, delay_ms = int(argv[0]), argv[1], int(argv[2]), float(argv[3])
    listener = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)  # the benchmark waits for this line
    while True:
        client, _ = listener.accept()
        threading.Thread(
            target=_serve, args=(client, (host, target_port), delay_ms / 1000), daemon=True
        ).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
