"""`Link`: the emulated link as a context manager, and `Endpoint`: one of its two namespaces.

The emulator process owns the namespaces and removes them when it ends; the Link owns the
emulator process and every process started through an Endpoint, and stops all of them on exit
(normal, exception, KeyboardInterrupt, or SIGTERM while a link is open).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Self

from . import netns
from .emulator import EmulatorConfig, Side
from .shaper import PipeStats, Shape

LINKEMU = Path(__file__).resolve().parents[1] / "linkemu.py"
SERVER_ADDRESS = "10.77.0.1"
CLIENT_ADDRESS = "10.77.0.2"
_ids = itertools.count(1)


class LinkError(RuntimeError):
    """The link could not be built or its emulator failed."""


def unavailable_reason() -> str | None:
    """Why links cannot be built on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces and TUN devices need root"
    if not os.path.exists(netns.TUN_PATH):
        return f"{netns.TUN_PATH} is missing"
    return None


class _Children:
    """Processes started in the namespaces. Each gets its own session, so stopping its process
    group also stops whatever it started."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen | asyncio.subprocess.Process] = []
        self.closed = False

    def add(self, process: subprocess.Popen | asyncio.subprocess.Process) -> None:
        self._processes.append(process)

    def stop(self, grace: float) -> None:
        """SIGTERM every group still alive, SIGKILL what remains after `grace` seconds."""
        self.closed = True
        alive = [p.pid for p in self._processes if _signal_group(p.pid, signal.SIGTERM)]
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            for process in self._processes:
                if isinstance(process, subprocess.Popen):
                    process.poll()  # reaps it; asyncio's child watcher reaps the others
            alive = [pid for pid in alive if _signal_group(pid, 0)]
            time.sleep(0.02)
        for pid in alive:
            _signal_group(pid, signal.SIGKILL)
        for process in self._processes:
            if isinstance(process, subprocess.Popen):
                process.wait()


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class Endpoint:
    """One side of the link: run processes or open sockets in its namespace."""

    netns: str
    address: str
    peer: str
    _children: _Children = field(repr=False, compare=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run to completion (subprocess.run arguments)."""
        self._check_open()
        return subprocess.run(self.command(argv), check=False, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process that the link stops when it closes (subprocess.Popen arguments)."""
        self._check_open()
        process = subprocess.Popen(self.command(argv), start_new_session=True, **kwargs)
        self._children.add(process)
        return process

    async def spawn(self, *argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
        """Start an asyncio process that the link stops when it closes."""
        self._check_open()
        process = await asyncio.create_subprocess_exec(*self.command(argv),
                                                       start_new_session=True, **kwargs)
        self._children.add(process)
        return process

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket in this namespace, for use from this process (e.g. asyncio's sock= args)."""
        self._check_open()
        with netns.inside(self.netns):
            return socket.socket(family, type)

    def _check_open(self) -> None:
        if self._children.closed:
            raise LinkError("the link is closed")


class _SigtermGuard:
    """While a link is open in a `with` or `async with` block, SIGTERM raises SystemExit instead
    of killing the process outright, so the block unwinds and stops what it started. Installed
    only over the default action and only from the main thread; counted, so nested links work."""

    _lock = threading.Lock()
    _open = 0
    _installed = False

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            cls._open += 1
            if (cls._open == 1 and threading.current_thread() is threading.main_thread()
                    and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
                signal.signal(signal.SIGTERM, cls._exit)
                cls._installed = True

    @classmethod
    def leave(cls) -> None:
        with cls._lock:
            cls._open -= 1
            if (cls._open == 0 and cls._installed
                    and threading.current_thread() is threading.main_thread()
                    and signal.getsignal(signal.SIGTERM) == cls._exit):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                cls._installed = False

    @staticmethod
    def _exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)


class Link:
    """Two namespaces joined by an emulated link: `down` shapes server to client, `up` client to
    server (the same as `down` unless given).

        with Link.symmetric(rate="2mbit", rtt="100ms") as link:
            server = link.server.popen([...])      # listens on link.server.address
            link.client.run(["curl", f"http://{link.server.address}:8080/"])
    """

    def __init__(self, down: Shape, up: Shape | None = None, *, seed: int | None = None,
                 congestion_control: str | None = None, ready_timeout: float = 10.0) -> None:
        self.down = down
        self.up = down if up is None else up
        self.id = f"{os.getpid()}-{next(_ids)}"
        self._children = _Children()
        self.server = Endpoint(f"{netns.PREFIX}server-{self.id}", SERVER_ADDRESS, CLIENT_ADDRESS,
                               self._children)
        self.client = Endpoint(f"{netns.PREFIX}client-{self.id}", CLIENT_ADDRESS, SERVER_ADDRESS,
                               self._children)
        self._config = EmulatorConfig(
            server=Side(self.server.netns, self.server.address, self.server.peer),
            client=Side(self.client.netns, self.client.address, self.client.peer),
            down=self.down, up=self.up, seed=seed, congestion_control=congestion_control)
        self._ready_timeout = ready_timeout
        self._emulator: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    @classmethod
    def symmetric(cls, rate: str | float, rtt: str | float, loss: float = 0.0,
                  queue_bytes: int | None = None, **kwargs: Any) -> Link:
        """The same rate, loss and buffer both ways, and half the RTT each way."""
        return cls(Shape.parse(rate, rtt, loss, queue_bytes), **kwargs)

    def start(self) -> Self:
        """Build the namespaces and start the emulator; on failure nothing is left behind."""
        if self._started:
            raise LinkError("a link starts once")
        reason = unavailable_reason()
        if reason is not None:
            raise LinkError(reason)
        self._started = True
        try:
            self._emulator = subprocess.Popen(
                [sys.executable, str(LINKEMU), "serve", self._config.to_json()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
            reply = self._read_reply(self._ready_timeout)
            if not reply.get("ok"):
                raise LinkError(f"emulator failed to start: {reply.get('error')}")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the processes started in the namespaces, then the emulator (which removes the
        namespaces), then remove anything it left. Safe to call more than once."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        try:
            self._children.stop(grace=2.0)
            if self._emulator is not None:
                self._stop_emulator(self._emulator)
        finally:
            for name in (self.server.netns, self.client.netns):
                netns.delete(name)

    def set(self, down: Shape | None = None, up: Shape | None = None) -> None:
        """Change either direction while running; it applies to packets sent from now on."""
        reply = self._request({"op": "set", "down": None if down is None else down.to_dict(),
                               "up": None if up is None else up.to_dict()})
        if not reply.get("ok"):
            raise LinkError(reply.get("error"))
        self.down = self.down if down is None else down
        self.up = self.up if up is None else up

    def stats(self) -> dict[str, PipeStats]:
        """Packet counters per direction ("down", "up") since the link started."""
        reply = self._request({"op": "stats"})
        return {key: PipeStats(**reply[key]) for key in ("down", "up")}

    def __enter__(self) -> Self:
        _SigtermGuard.enter()
        try:
            return self.start()
        except BaseException:
            _SigtermGuard.leave()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            self.close()
        finally:
            _SigtermGuard.leave()

    async def __aenter__(self) -> Self:
        _SigtermGuard.enter()
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            return await asyncio.shield(starting)
        except BaseException:
            # Cancelled while the thread still builds the link: let it finish, then take it down.
            await asyncio.gather(starting, return_exceptions=True)
            await asyncio.to_thread(self.close)
            _SigtermGuard.leave()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        try:
            await asyncio.to_thread(self.close)
        finally:
            _SigtermGuard.leave()

    def _request(self, message: dict) -> dict:
        with self._lock:
            if self._emulator is None or self._closed:
                raise LinkError("the link is not running")
            assert self._emulator.stdin is not None
            try:
                self._emulator.stdin.write(json.dumps(message).encode() + b"\n")
                self._emulator.stdin.flush()
            except BrokenPipeError as error:
                raise LinkError("the emulator has exited") from error
            return self._read_reply(timeout=5.0)

    def _read_reply(self, timeout: float) -> dict:
        """One JSON line from the emulator within `timeout` seconds."""
        assert self._emulator is not None and self._emulator.stdout is not None
        fd = self._emulator.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise LinkError(f"no answer from the emulator within {timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LinkError(f"the emulator exited (status {self._emulator.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    @staticmethod
    def _stop_emulator(emulator: subprocess.Popen) -> None:
        """Closing its input is the stop request; SIGKILL if it does not finish in time."""
        assert emulator.stdin is not None and emulator.stdout is not None
        try:
            emulator.stdin.close()
        except BrokenPipeError:
            pass
        try:
            emulator.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()
        emulator.stdout.close()
