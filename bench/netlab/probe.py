"""A bulk TCP sender and receiver, each run as its own process inside one namespace, so that the
measurement exercises both kernels' TCP over the emulated link and nothing else."""

from __future__ import annotations

import json
import socket
import time

_CHUNK = 64 * 1024
_SAMPLE_EVERY = 0.010


def sink(bind: str, port: int, seconds: float) -> None:
    """Accept one connection and read for `seconds` after its first byte, then close it (which
    also stops the sender). Prints a "listening" line, then the (time, bytes) samples as JSON."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, port))
        listener.listen(1)
        print(json.dumps({"listening": True}), flush=True)
        connection, _ = listener.accept()
    samples: list[tuple[float, int]] = []
    with connection:
        total = 0
        first = None
        last_sample = 0.0
        while True:
            data = connection.recv(_CHUNK)
            now = time.monotonic()
            if not data:
                break
            first = now if first is None else first
            total += len(data)
            if now - last_sample >= _SAMPLE_EVERY:
                samples.append((now - first, total))
                last_sample = now
            if now - first >= seconds:
                break
        if first is not None:
            samples.append((time.monotonic() - first, total))
    print(json.dumps({"samples": samples}), flush=True)


def source(host: str, port: int, seconds: float, congestion_control: str | None) -> None:
    """Send zeros as fast as TCP allows until the receiver closes or `seconds` pass, with the
    namespace's congestion control or the one named (set on the socket, which root may do for
    any algorithm the kernel has)."""
    payload = bytes(_CHUNK)
    deadline = time.monotonic() + seconds
    with socket.socket() as connection:
        connection.settimeout(seconds)
        if congestion_control is not None:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION,
                                  congestion_control.encode())
        connection.connect((host, port))
        try:
            while time.monotonic() < deadline:
                connection.sendall(payload)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # the receiver closed: the measurement is over
