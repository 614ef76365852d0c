"""Candidate gathering restricted to configured addresses.

aioice gathers on every interface except loopback and has no per-connection setting, so this
gathers each new ICE transport of a peer connection itself, on the named addresses, before
`setLocalDescription` would gather it. Patching `aioice.ice.get_host_addresses` instead would
change every connection in the process.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiortc import RTCPeerConnection


async def gather_on(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Gather host candidates (plus STUN/TURN ones if configured) on `addresses` only."""
    if not addresses:
        return
    gatherers = {t.receiver.transport.transport.iceGatherer for t in pc.getTransceivers()}
    for gatherer in gatherers:
        connection = gatherer._connection
        if gatherer.state != "new" or connection._local_candidates_start:
            continue
        connection._local_candidates_start = True
        connection._local_candidates += await connection.get_component_candidates(
            component=1, addresses=list(addresses))
        connection._local_candidates_end = True
