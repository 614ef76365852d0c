"""Putting the forwarding receiver and sender into aiortc transceivers.

RTCRtpTransceiver has no setter for its receiver and sender, so this is the one place that
writes its private attributes. Everything else in aiortc reaches them through the
`receiver` / `sender` properties, which is what lets the forwarding objects stand in.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

from .receiver import ForwardingReceiver
from .sender import ForwardingSender


def install_receiver(transceiver: RTCRtpTransceiver, receiver: ForwardingReceiver) -> None:
    """Replace a receiver that has not started (no decoder thread exists yet)."""
    current = transceiver.receiver
    if isinstance(current, RTCRtpReceiver) and current._RTCRtpReceiver__decoder_thread is not None:
        raise RuntimeError("the receiver has already started decoding")
    transceiver._RTCRtpTransceiver__receiver = receiver


def install_sender(transceiver: RTCRtpTransceiver, sender: ForwardingSender) -> None:
    """Replace a sender that has no track and has not been negotiated yet."""
    current = transceiver.sender
    if isinstance(current, RTCRtpSender) and current.track is not None:
        raise RuntimeError("the sender already carries a track")
    transceiver._RTCRtpTransceiver__sender = sender


def answer_as_dtls_server(pc: RTCPeerConnection) -> None:
    """Answer `a=setup:passive`, so the server is the DTLS server: aiortc's DTLS client offers
    only ECDSA cipher suites, which a client with an RSA certificate (GStreamer's webrtcbin in
    WHIP devices) cannot accept; as the server, aiortc presents its ECDSA certificate and the
    client chooses. Call before `createAnswer`; roles already negotiated are kept."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport._role == "auto":
            transport._role = "server"
