"""The media plane's I/O-free parts: RTP rewriting, keyframe spotting and throttling, bandwidth
feedback and active speaker choice, without sockets or clocks."""

from __future__ import annotations

from signaling.sfu.bitrate import BitrateFeedback
from signaling.sfu.forwarder import PacketHistory, RtpRewriter
from signaling.sfu.keyframe import KeyframeRequestThrottle, is_keyframe_start
from signaling.sfu.speaker import ActiveSpeakerDetector


def test_rewriter_keeps_order_across_wrap_and_drops_packets_from_before_the_start() -> None:
    rewriter = RtpRewriter(seq_origin=100, ts_origin=5000)
    assert rewriter.rewrite(65534, 1_000) == (100, 5000)
    assert rewriter.rewrite(65533, 900) is None  # sent before this subscription started
    assert rewriter.rewrite(65535, 4_000) == (101, 8000)
    assert rewriter.rewrite(0, 4_000) == (102, 8000)
    assert rewriter.rewrite(1, 2**32 - 1 + 1_000) == (103, (5000 + 2**32 - 1) % 2**32)


def test_restart_continues_the_subscriber_stream_without_a_hole() -> None:
    rewriter = RtpRewriter(seq_origin=10, ts_origin=0)
    for i in range(5):
        rewriter.rewrite(1000 + i, 3000 * i)
    rewriter.restart(ts_gap=90_000)
    # the source moved on by 700 packets while paused; the subscriber sees seq 15 next
    assert rewriter.rewrite(1700, 3000 * 700) == (15, 3000 * 4 + 90_000)
    assert rewriter.rewrite(1699, 3000 * 699) is None
    assert rewriter.rewrite(1701, 3000 * 701) == (16, 3000 * 5 + 90_000)


def test_packet_history_forgets_overwritten_slots() -> None:
    history = PacketHistory(size=4)
    for seq in range(6):
        history.put(seq, f"p{seq}".encode())
    assert history.get(5) == b"p5" and history.get(2) == b"p2"
    assert history.get(1) is None and history.get(9) is None


def test_vp8_keyframes_are_spotted_from_the_payload_descriptor() -> None:
    # S=1, PID=0, no extension; then a VP8 header whose P bit (inverse keyframe) is 0 or 1
    assert is_keyframe_start("VP8", bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]))
    assert not is_keyframe_start("VP8", bytes([0x10, 0x01, 0x00]))
    assert not is_keyframe_start("VP8", bytes([0x00, 0x00]))  # not the start of a partition
    # X=1 with a 15-bit picture id (I=1, M=1), then a key frame
    assert is_keyframe_start("VP8", bytes([0x90, 0x80, 0x81, 0x23, 0x10]))
    assert not is_keyframe_start("VP8", b"")


def test_h264_keyframes_alone_aggregated_and_fragmented() -> None:
    assert is_keyframe_start("H264", bytes([0x65, 0x88]))  # first slice of an IDR picture
    assert not is_keyframe_start("H264", bytes([0x65, 0x40]))  # a later slice of it
    assert not is_keyframe_start("H264", bytes([0x41, 0x9A]))  # non-IDR slice
    stap_a = bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE])
    assert is_keyframe_start("H264", stap_a)
    assert is_keyframe_start("H264", bytes([0x7C, 0x85, 0x88]))  # FU-A start of an IDR
    assert not is_keyframe_start("H264", bytes([0x7C, 0x85, 0x20]))  # ... of its 2nd slice
    assert not is_keyframe_start("H264", bytes([0x7C, 0x05, 0x88]))  # FU-A middle
    assert not is_keyframe_start("opus", bytes([0x65]))


def test_keyframe_requests_are_throttled_and_held_not_lost() -> None:
    throttle = KeyframeRequestThrottle(interval=0.5)
    assert throttle.request(10.0)
    assert not throttle.request(10.1)
    assert not throttle.poll(10.3)
    assert throttle.poll(10.5)  # the held request goes out when the interval ends
    assert not throttle.poll(10.6)
    assert not throttle.request(10.7)
    throttle.keyframe(10.8)  # a keyframe after the request answers it
    assert not throttle.poll(11.2)


def test_bitrate_target_is_the_slowest_link_under_the_cap() -> None:
    feedback = BitrateFeedback(max_bitrate=2_000_000)
    assert feedback.target() == 2_000_000
    feedback.downlink("a", 800_000)
    feedback.downlink("b", 1_500_000)
    feedback.uplink = 1_000_000
    assert feedback.target() == 800_000
    feedback.forget("a")
    assert feedback.target() == 1_000_000


def test_active_speaker_needs_a_clear_voice_and_does_not_flicker() -> None:
    detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector(hold=1.0)
    for t in range(10):
        detector.observe("cart", 20, t * 0.02)
        detector.observe("expert", 127, t * 0.02)
    assert detector.poll(0.2) and detector.speaker == "cart"
    assert detector.loudness("cart") > 0.8 > detector.loudness("expert")
    for t in range(10, 30):
        detector.observe("expert", 10, t * 0.02)
    assert not detector.poll(0.6)  # inside the hold time
    assert detector.poll(1.3) and detector.speaker == "expert"
    detector.forget("expert")
    assert detector.speaker is None
