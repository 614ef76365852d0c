"""Network namespaces and TUN devices: create, enter, configure and remove them.

A TUN device is created from inside its namespace (the calling thread joins it with setns for the
ioctl), so it never exists in the machine's own namespace, and it disappears when its fd closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

PREFIX = "tmlab-"
NETNS_DIR = Path("/run/netns")
TUN_PATH = "/dev/net/tun"
TUN_NAME = "tmlab"

_CLONE_NEWNET = 0x40000000
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def create(name: str) -> None:
    _ip("netns", "add", name)


def delete(name: str) -> None:
    """Kill every process still in the namespace, then remove it; a missing one is already gone.
    Killing first matters: a process left inside would keep the namespace alive, unnamed."""
    if not exists(name):
        return
    pids = subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True,
                          text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "delete", name)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def ours() -> list[str]:
    """The tmlab-* namespaces on this machine, whoever made them."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(path.name for path in NETNS_DIR.iterdir() if path.name.startswith(PREFIX))


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body with the calling thread (only) in namespace `name`; sockets opened there
    stay in it after the thread leaves. Do not await inside: other tasks would run in it too."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def read_sysctl(name: str, key: str) -> str:
    """A net.* sysctl as namespace `name` sees it."""
    with inside(name):
        return Path("/proc/sys", *key.split(".")).read_text().strip()


def _write_sysctl(key: str, value: str) -> None:
    """Write a net.* sysctl of the namespace the calling thread is in."""
    Path("/proc/sys", *key.split(".")).write_text(value)


def open_tun(name: str) -> int:
    """Create the TUN device in namespace `name` and return its non-blocking fd (raw IP packets,
    no packet-info header). IPv6 is off on it, so only the traffic under test crosses the link."""
    with inside(name):
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            request = struct.pack("16sH", TUN_NAME.encode(), _IFF_TUN | _IFF_NO_PI)
            fcntl.ioctl(fd, _TUNSETIFF, request)
            _write_sysctl(f"net.ipv6.conf.{TUN_NAME}.disable_ipv6", "1")
        except BaseException:
            os.close(fd)
            raise
    return fd


def configure(name: str, address: str, peer: str, mtu: int, congestion_control: str | None) -> None:
    """Give the namespace's TUN a point-to-point address and bring it and loopback up."""
    _ip("-n", name, "address", "add", address, "peer", f"{peer}/32", "dev", TUN_NAME)
    _ip("-n", name, "link", "set", "dev", TUN_NAME, "mtu", str(mtu), "up")
    _ip("-n", name, "link", "set", "dev", "lo", "up")
    if congestion_control is not None:
        with inside(name):
            try:
                _write_sysctl("net.ipv4.tcp_congestion_control", congestion_control)
            except PermissionError as error:
                allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text()
                raise OSError(f"a namespace may default only to the machine's allowed congestion "
                              f"controls ({allowed.strip()}); set TCP_CONGESTION on the socket "
                              f"for {congestion_control}") from error
