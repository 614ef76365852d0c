"""The emulator process: owns the two namespaces and their TUN devices, and moves every IP packet
between them through one Pipe per direction.

It runs as its own process (`python bench/linkemu.py serve CONFIG`) so that per-packet Python
never competes with the benchmark for the GIL, and it removes the namespaces whenever it ends:
when its control input closes (including when the process that started it dies), on
SIGTERM/SIGINT, or after an error. Control is one JSON object per line on stdin, one reply per
line on stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import BinaryIO

from . import netns
from .shaper import MTU, Pipe, Shape

_READ_SIZE = 65536
_PR_SET_TIMERSLACK = 29


@dataclass(frozen=True)
class Side:
    """One end of the link: its namespace, its own address and the address across the link."""

    netns: str
    address: str
    peer: str


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator process needs; `down` is server to client, `up` the reverse."""

    server: Side
    client: Side
    down: Shape
    up: Shape
    seed: int | None = None
    congestion_control: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EmulatorConfig:
        data = json.loads(text)
        return cls(server=Side(**data["server"]), client=Side(**data["client"]),
                   down=Shape.from_dict(data["down"]), up=Shape.from_dict(data["up"]),
                   seed=data["seed"], congestion_control=data["congestion_control"])


class Shuttle:
    """The packet loop: reads both TUN fds, offers each packet to its direction's pipe, writes
    packets into the other TUN when they are due, and serves control requests in between."""

    def __init__(self, server_fd: int, client_fd: int, down: Pipe, up: Pipe,
                 control_in: int, control_out: BinaryIO) -> None:
        self._routes = {server_fd: down, client_fd: up}
        self._exits = ((down, client_fd), (up, server_fd))
        self._pipes = {"down": down, "up": up}
        self._control_in = control_in
        self._control_out = control_out
        self._pending = b""

    def run(self) -> None:
        """Loop until the control input closes."""
        readable = [*self._routes, self._control_in]
        while True:
            timeout = self._deliver()
            ready, _, _ = select.select(readable, [], [], timeout)
            for fd in ready:
                if fd == self._control_in:
                    if not self._serve_control():
                        return
                else:
                    self._take(fd)

    def _deliver(self) -> float | None:
        """Write out what is due and return how long until the next packet is."""
        now = time.monotonic()
        for pipe, out_fd in self._exits:
            for packet in pipe.pop_due(now):
                os.write(out_fd, packet)
        due = [when for pipe, _ in self._exits if (when := pipe.next_due()) is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _take(self, fd: int) -> None:
        pipe = self._routes[fd]
        while True:
            try:
                packet = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            pipe.offer(packet, time.monotonic())

    def _serve_control(self) -> bool:
        chunk = os.read(self._control_in, _READ_SIZE)
        if not chunk:
            return False
        self._pending += chunk
        while b"\n" in self._pending:
            line, self._pending = self._pending.split(b"\n", 1)
            _say(self._control_out, self._answer(line))
        return True

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if request["op"] == "set":
                for key in ("down", "up"):
                    if request.get(key) is not None:
                        self._pipes[key].shape = Shape.from_dict(request[key])
                return {"ok": True}
            if request["op"] == "stats":
                counts = {key: pipe.stats.to_dict() for key, pipe in self._pipes.items()}
                return {"ok": True, **counts}
            return {"ok": False, "error": f"unknown op {request['op']!r}"}
        except (ValueError, KeyError, TypeError) as error:
            return {"ok": False, "error": f"bad request: {error}"}


def _tighten_timers() -> None:
    """Ask the kernel to wake the loop within 1 us of its timeout instead of the default 50 us."""
    ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _build(config: EmulatorConfig, teardown: contextlib.ExitStack) -> tuple[int, int]:
    """Create both namespaces with a configured TUN in each; undo is pushed on `teardown`."""
    fds = []
    for side in (config.server, config.client):
        netns.create(side.netns)
        teardown.callback(netns.delete, side.netns)
        fd = netns.open_tun(side.netns)
        teardown.callback(os.close, fd)
        netns.configure(side.netns, side.address, side.peer, MTU, config.congestion_control)
        fds.append(fd)
    return fds[0], fds[1]


def _say(out: BinaryIO, message: dict) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def serve(config: EmulatorConfig) -> None:
    """Build the link, say ready (or why not) on stdout, shuttle packets until stdin closes, then
    tear down."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    _tighten_timers()
    out = sys.stdout.buffer
    seeds = (None, None) if config.seed is None else (f"{config.seed}-down", f"{config.seed}-up")
    with contextlib.ExitStack() as teardown:
        try:
            server_fd, client_fd = _build(config, teardown)
        except Exception as error:
            _say(out, {"ok": False, "error": str(error)})
            raise
        shuttle = Shuttle(server_fd, client_fd,
                          down=Pipe(config.down, random.Random(seeds[0])),
                          up=Pipe(config.up, random.Random(seeds[1])),
                          control_in=sys.stdin.fileno(), control_out=out)
        _say(out, {"ok": True, "event": "ready"})
        shuttle.run()
