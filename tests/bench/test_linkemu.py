"""The emulated link: the queue model on a fake clock, then real links measured the way
`linkemu.py check` measures them (ping, TCP connect, TCP bulk), and clean-up on every exit path."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from netlab import Link, LinkError, Shape, netns, parse_duration, parse_rate
from netlab.link import LINKEMU
from netlab.measure import (
    PING_BYTES,
    SYN_BYTES,
    bulk,
    expected_rtt,
    ping,
    tcp_connect_rtts,
)
from netlab.shaper import Pipe

BENCH_DIR = LINKEMU.parent


# The queue model (no I/O).

def test_units_read_like_tc() -> None:
    assert parse_rate("500kbit") == 500e3
    assert parse_rate("2mbit") == 2e6
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("250us") == pytest.approx(250e-6)
    for bad in ("2mbps", "fast", "-1mbit"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_shape_rejects_impossible_values() -> None:
    for kwargs in ({"rate_bps": 0, "delay_s": 0.05}, {"rate_bps": 1e6, "delay_s": -1},
                   {"rate_bps": 1e6, "delay_s": 0.05, "loss": 1.0},
                   {"rate_bps": 1e6, "delay_s": 0.05, "queue_bytes": 100}):
        with pytest.raises(ValueError):
            Shape(**kwargs)


def test_pipe_serialises_at_the_rate_then_delays() -> None:
    pipe = Pipe(Shape(rate_bps=1e6, delay_s=0.050), random.Random(0))
    for _ in range(3):
        assert pipe.offer(bytes(1250), now=0.0)  # 10 ms each at 1 Mbit/s
    assert pipe.next_due() == pytest.approx(0.060)
    assert pipe.pop_due(0.0599) == []
    assert len(pipe.pop_due(0.0601)) == 1
    assert pipe.next_due() == pytest.approx(0.070)
    assert len(pipe.pop_due(0.0801)) == 2
    assert pipe.next_due() is None
    assert pipe.offer(bytes(1250), now=1.0)  # an idle link starts again at once
    assert pipe.next_due() == pytest.approx(1.060)


def test_pipe_drops_at_the_tail_when_the_queue_is_full() -> None:
    pipe = Pipe(Shape(rate_bps=1e6, delay_s=0.0, queue_bytes=3000), random.Random(0))
    assert [pipe.offer(bytes(1500), now=0.0) for _ in range(3)] == [True, True, False]
    assert pipe.stats.overflowed == 1
    assert pipe.offer(bytes(1500), now=0.012)  # one packet has left the transmitter by then


def test_pipe_loss_is_random_at_the_configured_rate() -> None:
    pipe = Pipe(Shape(rate_bps=1e9, delay_s=0.0, loss=0.05), random.Random(7))
    for i in range(20000):
        pipe.offer(bytes(100), now=i * 1e-3)
    assert pipe.stats.lost / pipe.stats.received == pytest.approx(0.05, abs=0.005)


def test_a_shorter_delay_never_reorders_packets_in_flight() -> None:
    pipe = Pipe(Shape(rate_bps=1e9, delay_s=0.100), random.Random(0))
    pipe.offer(b"first", now=0.0)
    pipe.shape = Shape(rate_bps=1e9, delay_s=0.010)
    pipe.offer(b"second", now=0.001)
    assert pipe.pop_due(0.05) == []
    assert pipe.pop_due(0.2) == [b"first", b"second"]


# Real links.

def assert_gone(link: Link) -> None:
    for name in (link.server.netns, link.client.netns):
        assert not netns.exists(name), name
    devices = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                             check=True).stdout
    assert netns.TUN_NAME not in devices


def test_rtt_matches_the_configuration(needs_links: None) -> None:
    with Link.symmetric("2mbit", "100ms") as link:
        result = ping(link.client, count=20, interval_s=0.02)
        assert result.received == result.sent
        assert result.rtt_avg_s == pytest.approx(expected_rtt(link, PING_BYTES), rel=0.10)
        connects = tcp_connect_rtts(link, count=5)
        assert sum(connects) / len(connects) == pytest.approx(expected_rtt(link, SYN_BYTES),
                                                              rel=0.10)
        stats = link.stats()
        assert stats["down"].late_mean_s < 0.001 and stats["up"].late_mean_s < 0.001
    assert_gone(link)


@pytest.mark.parametrize(("rate", "congestion_control"), [("2mbit", "cubic"), ("8mbit", None)])
def test_tcp_bulk_throughput_matches_the_rate(needs_links: None, rate: str,
                                              congestion_control: str | None) -> None:
    with Link.symmetric(rate, "100ms") as link:
        result = bulk(link, "down", seconds=3.0, warmup_s=1.5,
                      congestion_control=congestion_control)
        assert result.window_s >= 2.5
        assert result.goodput_bps == pytest.approx(parse_rate(rate), rel=0.15)
        assert link.stats()["down"].overflowed > 0  # TCP found the bottleneck and filled it
    assert_gone(link)


def test_each_direction_has_its_own_rate(needs_links: None) -> None:
    with Link(Shape.parse("8mbit", "100ms"), up=Shape.parse("500kbit", "100ms")) as link:
        result = bulk(link, "up", seconds=2.5, warmup_s=1.5)
        assert result.goodput_bps == pytest.approx(500e3, rel=0.15)


def test_random_loss_shows_in_ping(needs_links: None) -> None:
    with Link.symmetric("8mbit", "100ms", loss=0.05, seed=1) as link:
        result = ping(link.client, count=200, interval_s=0.01)
        # 5 % each way loses 9.75 % of echoes; 200 of them put 99.9 % of outcomes in 3-18 %.
        assert 0.03 <= result.loss <= 0.18
        stats = link.stats()
        assert stats["down"].lost + stats["up"].lost == result.sent - result.received


def test_the_link_can_be_reshaped_while_running(needs_links: None) -> None:
    with Link.symmetric("2mbit", "100ms") as link:
        link.set(down=Shape.parse("2mbit", "300ms"), up=Shape.parse("2mbit", "300ms"))
        result = ping(link.client, count=5, interval_s=0.05)
        assert result.rtt_avg_s == pytest.approx(expected_rtt(link, PING_BYTES), rel=0.10)
        assert link.down.delay_s == pytest.approx(0.150)


async def test_async_use_with_a_process_and_a_socket(needs_links: None) -> None:
    async with Link.symmetric("8mbit", "40ms") as link:
        server = await link.server.spawn(
            sys.executable, "-c", "import socket, sys\n"
            "s = socket.create_server((sys.argv[1], 7000)); print('up', flush=True)\n"
            "c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()",
            link.server.address, stdout=asyncio.subprocess.PIPE)
        assert await server.stdout.readline() == b"up\n"
        loop = asyncio.get_running_loop()
        sock = link.client.socket()
        sock.setblocking(False)
        start = time.monotonic()
        await loop.sock_connect(sock, (link.server.address, 7000))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"ecg")
        assert await reader.read() == b"ECG"
        assert time.monotonic() - start == pytest.approx(0.080, abs=0.025)  # two round trips
        writer.close()
        await server.wait()
    assert_gone(link)


def test_clean_up_after_an_exception_and_of_started_processes(needs_links: None) -> None:
    link = Link.symmetric("2mbit", "100ms")
    with pytest.raises(RuntimeError, match="benchmark failed"), link:
        sleeper = link.client.popen(["sleep", "60"])
        raise RuntimeError("benchmark failed")
    assert sleeper.returncode is not None
    assert_gone(link)
    with pytest.raises(LinkError):
        link.client.popen(["true"])
    link.close()  # a second close is harmless


def test_start_failure_leaves_nothing(needs_links: None) -> None:
    link = Link.symmetric("2mbit", "100ms", congestion_control="no-such-algorithm")
    with pytest.raises(LinkError, match="emulator failed to start"):
        link.start()
    assert_gone(link)


OWNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from netlab import Link
    with Link.symmetric("2mbit", "100ms") as link:
        sleeper = link.server.popen(["sleep", "60"])
        print(link.server.netns, link.client.netns, sleeper.pid, flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_clean_up_when_the_owner_is_signalled(needs_links: None, signum: int) -> None:
    """SIGTERM and SIGINT unwind the owner's `with`; after SIGKILL the emulator sees its control
    pipe close and removes the namespaces, killing what still runs in them."""
    with subprocess.Popen([sys.executable, "-c", OWNER, str(BENCH_DIR)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as owner:
        try:
            server, client, sleeper = owner.stdout.readline().split()
            owner.send_signal(signum)
            owner.wait(timeout=10)
            if signum == signal.SIGTERM:
                assert owner.returncode == 128 + signal.SIGTERM  # unwound, not killed outright
            deadline = time.monotonic() + 10
            while (netns.exists(server) or netns.exists(client)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not netns.exists(server) and not netns.exists(client)
            state = subprocess.run(["ps", "-o", "stat=", "-p", sleeper], check=False,
                                   capture_output=True, text=True).stdout.strip()
            assert state[:1] in ("", "Z")  # gone, or a zombie
        finally:
            owner.kill()
