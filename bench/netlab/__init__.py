"""A user-space emulated slow link between two network namespaces, for benchmarks and tests.

The kernel here has no netem, so packets cross between two TUN devices through a small process
that serialises them at the link rate, holds them for the one-way delay and drops some at random.
Both TCP stacks see a real bottleneck and a real round-trip time.
"""

from .link import Endpoint, Link, LinkError
from .shaper import PipeStats, Shape
from .units import parse_duration, parse_rate

__all__ = ["Endpoint", "Link", "LinkError", "PipeStats", "Shape", "parse_duration", "parse_rate"]
