"""Emulated slow links (township, ambulance) between two network namespaces.

    python bench/linkemu.py check --rate 2mbit --rtt 100ms [--loss 0.01]
        build a link, measure ping RTT and loss, TCP connect time and TCP goodput both ways,
        and print them beside the configured values
    python bench/linkemu.py clean
        remove tmlab-* namespaces whose owning process is gone (after a SIGKILL)

`serve`, `tcp-sink` and `tcp-source` are the emulator and probe processes that netlab starts.
Benchmarks use the library: `from netlab import Link` (see netlab/link.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from netlab import Link, netns
from netlab.emulator import EmulatorConfig, serve
from netlab.measure import (
    PING_BYTES,
    SYN_BYTES,
    bulk,
    expected_rtt,
    goodput_ceiling,
    ping,
    tcp_connect_rtts,
)
from netlab.probe import sink, source
from netlab.units import format_rate


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:6.1f} ms"


def check(link: Link, seconds: float, warmup_s: float, pings: int,
          congestion_control: str | None) -> None:
    """Print measured against configured values for a running link."""
    down, up = link.down, link.up
    print(f"configured   {format_rate(down.rate_bps)} down, {format_rate(up.rate_bps)} up, "
          f"RTT {_ms(down.delay_s + up.delay_s).strip()}, loss {down.loss:g} down, {up.loss:g} up, "
          f"queue {down.queue_limit} / {up.queue_limit} bytes")
    result = ping(link.client, count=pings, interval_s=0.05)
    print(f"ping RTT     expected {_ms(expected_rtt(link, PING_BYTES))}   measured avg "
          f"{_ms(result.rtt_avg_s)} (min {_ms(result.rtt_min_s).strip()}, "
          f"max {_ms(result.rtt_max_s).strip()})")
    print(f"ping loss    expected {1 - (1 - down.loss) * (1 - up.loss):6.1%}      measured "
          f"{result.loss:6.1%} ({result.sent - result.received} of {result.sent})")
    if down.loss == up.loss == 0:
        connects = tcp_connect_rtts(link, count=5)
        print(f"TCP connect  expected {_ms(expected_rtt(link, SYN_BYTES))}   measured avg "
              f"{_ms(sum(connects) / len(connects))} over {len(connects)}")
    default = netns.read_sysctl(link.server.netns, "net.ipv4.tcp_congestion_control")
    print(f"TCP sender   congestion control {congestion_control or default}")
    for direction, rate in (("down", down.rate_bps), ("up", up.rate_bps)):
        measured = bulk(link, direction, seconds, warmup_s, congestion_control)
        print(f"TCP {direction:4}     ceiling  {format_rate(goodput_ceiling(rate))}   measured "
              f"{format_rate(measured.goodput_bps)} goodput = {measured.goodput_bps / rate:.1%} "
              f"of the rate (over {measured.window_s:.1f} s after {measured.warmup_s:.1f} s)")
    for direction, counts in link.stats().items():
        print(f"emulator {direction:4} {counts.received} packets in, {counts.lost} lost at random, "
              f"{counts.overflowed} dropped by the full queue, {counts.delivered} delivered, "
              f"late by {_ms(counts.late_mean_s).strip()} on average "
              f"(max {_ms(counts.late_max_s).strip()})")


def clean() -> None:
    """Remove tmlab-* namespaces whose owner (the pid in the name) no longer runs."""
    for name in netns.ours():
        owner = name.rsplit("-", 2)[-2]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            netns.delete(name)
            print(f"removed {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check_args = commands.add_parser("check", help="measure a link against its configuration")
    check_args.add_argument("--rate", default="2mbit", help="e.g. 500kbit, 2mbit, 8mbit")
    check_args.add_argument("--rtt", default="100ms", help="round-trip time, split evenly")
    check_args.add_argument("--loss", type=float, default=0.0,
                            help="drop probability in each direction")
    check_args.add_argument("--queue-bytes", type=int, default=None, help="bottleneck buffer")
    check_args.add_argument("--seconds", type=float, default=5.0, help="TCP measurement window")
    check_args.add_argument("--warmup", type=float, default=2.0, help="TCP time left out first")
    check_args.add_argument("--pings", type=int, default=50)
    check_args.add_argument("--congestion-control", default=None,
                            help="the TCP sender's, e.g. cubic (default: the machine's)")
    commands.add_parser("clean", help="remove namespaces left by killed links")
    serve_args = commands.add_parser("serve", help="(internal) run the emulator process")
    serve_args.add_argument("config", help="EmulatorConfig as JSON")
    sink_args = commands.add_parser("tcp-sink", help="(internal) TCP receiver")
    source_args = commands.add_parser("tcp-source", help="(internal) TCP sender")
    for probe_args in (sink_args, source_args):
        probe_args.add_argument("address")
        probe_args.add_argument("port", type=int)
        probe_args.add_argument("seconds", type=float)
    source_args.add_argument("--congestion-control", default=None)
    args = parser.parse_args(argv)

    if args.command == "check":
        with Link.symmetric(args.rate, args.rtt, args.loss, args.queue_bytes) as link:
            check(link, args.seconds, args.warmup, args.pings, args.congestion_control)
    elif args.command == "clean":
        clean()
    elif args.command == "serve":
        serve(EmulatorConfig.from_json(args.config))
    elif args.command == "tcp-sink":
        sink(args.address, args.port, args.seconds)
    elif args.command == "tcp-source":
        source(args.address, args.port, args.seconds, args.congestion_control)


if __name__ == "__main__":
    sys.exit(main())
