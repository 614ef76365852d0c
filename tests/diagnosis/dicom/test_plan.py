"""The delivery planner, without I/O: the view first (first look, then the rest), previews of
every frame outward, then full quality outward; re-plans follow the view and never resend."""

from __future__ import annotations

import pytest

from diagnosis.dicom import link, plan
from diagnosis.dicom.link import LinkMeter, TcpInfo
from diagnosis.dicom.plan import DIAGNOSTIC, PREVIEW, FrameLevels, Item, Link

# a CT slice as encoded: six resolution levels, the 1/4-resolution preview is level 3
ENDS = (576, 1600, 4992, 15989, 49597, 133858)


def series(count: int, ends: tuple[int, ...] = ENDS) -> dict[int, FrameLevels]:
    return {i: FrameLevels(i, ends, 3) for i in range(count)}


def sent(items: list[Item]) -> dict[int, int]:
    """What the viewer holds once the items are all sent (checks they are contiguous)."""
    held: dict[int, int] = {}
    for item in items:
        assert item.start == held.get(item.frame_index, 0) and item.end > item.start
        held[item.frame_index] = item.end
    return held


def test_outward_order():
    assert list(plan.outward(3, 7)) == [3, 4, 2, 5, 1, 6, 0]
    assert list(plan.outward(0, 3)) == [0, 1, 2]
    assert list(plan.outward(4, 5)) == [4, 3, 2, 1, 0]
    assert list(plan.outward(0, 1)) == [0]


def test_view_first_then_previews_then_full_outward():
    items = plan.plan(series(5), 5, view=2, have={})
    assert [(i.frame_index, i.start, i.end, i.label) for i in items] == [
        (2, 0, 15989, PREVIEW), (2, 15989, 133858, DIAGNOSTIC),
        (3, 0, 15989, PREVIEW), (1, 0, 15989, PREVIEW), (4, 0, 15989, PREVIEW),
        (0, 0, 15989, PREVIEW),
        (3, 15989, 133858, DIAGNOSTIC), (1, 15989, 133858, DIAGNOSTIC),
        (4, 15989, 133858, DIAGNOSTIC), (0, 15989, 133858, DIAGNOSTIC)]
    assert [i.level for i in items[:3]] == [3, 5, 3]
    assert sent(items) == {i: 133858 for i in range(5)}, "every byte once"


def test_replan_after_the_view_moves_follows_it_and_sends_nothing_twice():
    frames = series(9)
    first = plan.plan(frames, 9, view=1, have={})
    done = first[:6]  # view 1 whole, previews of 2, 0, 3, 4
    held = sent(done)
    moved = plan.plan(frames, 9, view=7, have=held)
    assert [(i.frame_index, i.label) for i in moved[:2]] == [(7, PREVIEW), (7, DIAGNOSTIC)]
    previews = [i.frame_index for i in moved if i.label == PREVIEW and i.frame_index != 7]
    assert previews == [8, 6, 5]  # 4, 3, 2 and 0 had theirs
    fulls = [i.frame_index for i in moved if i.label == DIAGNOSTIC and i.frame_index != 7]
    assert fulls == [8, 6, 5, 4, 3, 2, 0]
    assert all(i.start >= held.get(i.frame_index, 0) for i in moved)
    total = sent(done + moved)
    assert total == {i: 133858 for i in range(9)}


def test_a_partly_sent_item_resumes_where_it_stopped():
    frames = series(3)
    items = plan.plan(frames, 3, view=0, have={0: 100_000, 1: 7000})
    assert [(i.frame_index, i.start, i.end) for i in items[:3]] == [
        (0, 100_000, 133858), (1, 7000, 15989), (2, 0, 15989)]
    assert items[0].label == DIAGNOSTIC and items[1].label == PREVIEW


def test_what_the_client_has_is_not_sent_and_nothing_is_left_when_it_has_everything():
    frames = series(4)
    assert plan.plan(frames, 4, view=3, have={i: 133858 for i in range(4)}) == []
    assert plan.plan(frames, 4, view=3, have={i: 10**9 for i in range(4)}) == []
    items = plan.plan(frames, 4, view=3, have={3: 133858, 2: 15989})
    assert [(i.frame_index, i.start, i.label) for i in items] == [
        (1, 0, PREVIEW), (0, 0, PREVIEW), (2, 15989, DIAGNOSTIC), (1, 15989, DIAGNOSTIC),
        (0, 15989, DIAGNOSTIC)]
    assert items[2] == Item(2, 15989, 133858, DIAGNOSTIC, 5)


def test_only_ready_frames_are_planned():
    frames = {i: f for i, f in series(6).items() if i in (0, 4)}
    items = plan.plan(frames, 6, view=2, have={})
    assert {i.frame_index for i in items} == {0, 4}
    assert [i.frame_index for i in items if i.label == PREVIEW] == [4, 0]


def test_first_look_is_smaller_when_the_link_cannot_carry_the_preview_quickly():
    frame = series(1)[0]
    assert plan.first_look_level(frame, Link()) == 3, "unmeasured: the 1/4 preview"
    assert plan.first_look_level(frame, Link(2_000_000, 0.1)) == 3
    assert plan.first_look_level(frame, Link(500_000, 0.1)) == 3  # 16 kB in 0.26 s
    assert plan.first_look_level(frame, Link(200_000, 0.1)) == 2  # 1/8 first
    assert plan.first_look_level(frame, Link(1_000, 0.1)) == 0
    items = plan.plan(series(2), 2, view=0, have={}, link=Link(200_000, 0.1))
    assert [(i.frame_index, i.start, i.end, i.label) for i in items] == [
        (0, 0, 4992, PREVIEW), (0, 4992, 133858, DIAGNOSTIC), (1, 0, 15989, PREVIEW),
        (1, 15989, 133858, DIAGNOSTIC)]


def test_small_frames_and_single_level_streams():
    tiny = {0: FrameLevels(0, (300,), 0), 1: FrameLevels(1, (80, 200, 700), 0)}
    items = plan.plan(tiny, 2, view=1, have={})
    assert [(i.frame_index, i.start, i.end, i.label) for i in items] == [
        (1, 0, 80, PREVIEW), (1, 80, 700, DIAGNOSTIC), (0, 0, 300, DIAGNOSTIC)]
    assert plan.state(tiny[0], 0) == plan.NONE and plan.state(tiny[0], 300) == DIAGNOSTIC
    assert plan.state(tiny[1], 79) == plan.NONE and plan.state(tiny[1], 80) == PREVIEW
    assert plan.state(None, 5) == plan.NONE


def test_summary_and_estimates_from_the_measured_link():
    frames = series(3)
    link = Link(1_000_000, 0.1)
    items = plan.plan(frames, 3, view=1, have={})
    summary = plan.summarize(items, 1, link)
    assert summary.phase == "view" and summary.items == 6
    assert summary.view_bytes == 133858 and summary.preview_bytes == 2 * 15989
    assert summary.diagnostic_bytes == 2 * (133858 - 15989)
    assert summary.previews_eta_s == pytest.approx((133858 + 2 * 15989) * 8 / 1e6 + 0.1)
    assert summary.done_eta_s == pytest.approx(3 * 133858 * 8 / 1e6 + 0.1)
    later = plan.summarize(items[4:], 1, link)
    assert later.phase == "diagnostic" and later.preview_bytes == 0
    assert plan.summarize(items[2:], 1).previews_eta_s is None, "no rate measured yet"
    assert plan.summarize([], 1).phase == "done"
    assert plan.summarize([], 1, waiting=True).phase == "waiting"
    body = summary.as_dict(items[:1])
    assert body["next"] == [{"frame_index": 1, "start": 0, "end": 15989, "label": PREVIEW,
                             "level": 3}]


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        plan.plan(series(3), 3, view=3, have={})
    with pytest.raises(ValueError):
        FrameLevels(0, (100, 100), 0)
    with pytest.raises(ValueError):
        FrameLevels(0, (100, 200), 2)
    with pytest.raises(ValueError):
        FrameLevels(0, (), 0)


def test_previews_first_puts_the_rest_of_the_view_after_every_preview():
    items = plan.plan(series(3), 3, view=1, have={}, previews_first=True)
    assert [(i.frame_index, i.start, i.end) for i in items] == [
        (1, 0, 15989), (2, 0, 15989), (0, 0, 15989),
        (1, 15989, 133858), (2, 15989, 133858), (0, 15989, 133858)]
    slow = plan.plan(series(2), 2, view=0, have={}, link=Link(200_000, 0.1), previews_first=True)
    assert [(i.frame_index, i.start, i.end) for i in slow] == [
        (0, 0, 4992), (0, 4992, 15989), (1, 0, 15989), (0, 15989, 133858), (1, 15989, 133858)]


def test_link_meter_smooths_kernel_rate_samples_and_falls_back_to_goodput():
    meter = LinkMeter(window_s=1.0)
    assert meter.rate_bps is None and meter.link() == Link(None, None)
    meter.add(0.0, TcpInfo(0.1, 0.1, 0.0, True, 0, 0, 10, 1448))
    meter.add(0.5, TcpInfo(0.1, 0.1, 0.0, True, 62_500, 0, 10, 1448))
    assert meter.goodput_bps == pytest.approx(1_000_000)
    assert meter.rate_bps == pytest.approx(1_000_000), "goodput while no rate sample exists"
    meter.add(0.6, TcpInfo(0.1, 0.1, 2_000_000, False, 70_000, 0, 10, 1448))
    meter.add(0.7, TcpInfo(0.1, 0.1, 1_000_000, False, 80_000, 0, 10, 1448))
    assert meter.rate_bps == pytest.approx(1_700_000)
    meter.add(0.8, TcpInfo(0.12, 0.1, 100_000, True, 80_000, 0, 10, 1448))
    assert meter.rate_bps == pytest.approx(1_700_000), "an app-limited sample is only a floor"
    meter.add(0.9, TcpInfo(0.12, 0.1, 3_000_000, True, 90_000, 0, 10, 1448))
    assert meter.rate_bps == pytest.approx(3_000_000), "...that can raise the estimate"
    assert meter.rtt_s == pytest.approx(0.12) and meter.min_rtt_s == pytest.approx(0.1)
    assert meter.link() == Link(meter.rate_bps, 0.12)
    for n in range(10):  # only the last window counts for goodput
        meter.add(2.0 + n * 0.25, TcpInfo(0.1, 0.1, 0.0, True, 90_000 + n * 12_500, 0, 10, 1448))
    assert meter.goodput_bps == pytest.approx(400_000)


def test_parse_tcp_info_reads_the_linux_layout():
    import struct
    raw = bytearray(232)
    raw[7] = 1  # delivery rate app-limited
    struct.pack_into("=I", raw, 16, 1448)
    struct.pack_into("=I", raw, 68, 101_500)
    struct.pack_into("=I", raw, 80, 42)
    struct.pack_into("=Q", raw, 120, 123_456_789)
    struct.pack_into("=II", raw, 144, 4096, 100_200)
    struct.pack_into("=Q", raw, 160, 62_500)
    assert link.parse_tcp_info(bytes(raw)) == TcpInfo(0.1015, 0.1002, 500_000.0, True,
                                                      123_456_789, 4096, 42, 1448)
    assert link.parse_tcp_info(bytes(100)) is None


# -- order "auto": the rest of the view before the other previews only on fast links -----------

# a CT slice as a JPEG XL pair: the preview's code stream, then the frame's
PAIR = (10_044, 98_707)


def pairs(count: int) -> dict[int, FrameLevels]:
    return {i: FrameLevels(i, PAIR, 0) for i in range(count)}


def test_view_goes_first_when_it_takes_a_tenth_of_the_previews_time_at_most():
    rest, previews = PAIR[1] - PAIR[0], 27 * PAIR[0]  # the view's frame part; 27 previews
    assert not plan.view_goes_first(rest, previews, Link()), "unmeasured: previews first"
    for rate in (500_000, 2_000_000, 8_000_000, 40_000_000):
        assert not plan.view_goes_first(rest, previews, Link(rate, 0.1)), rate
    assert plan.view_goes_first(rest, previews, Link(60_000_000, 0.1))
    assert plan.view_goes_first(rest, previews, Link(1e9, 0.1))
    assert not plan.view_goes_first(rest, previews, Link(1e9, 0.001)), "a LAN: 0.8 vs 0.3 ms"
    # the threshold is the share of the previews' own line time
    line = previews * 8 / 50e6 + 0.1
    assert plan.view_goes_first(rest, previews, Link(50e6, 0.1)) == (
        rest * 8 / 50e6 <= plan.VIEW_FIRST_SHARE * line)
    assert plan.view_goes_first(rest, 0, Link()), "no other previews left: the view goes on"
    assert plan.view_goes_first(0, previews, Link()), "nothing of the view left"
    assert plan.view_goes_first(rest, previews, Link(), plan.VIEW)
    assert not plan.view_goes_first(rest, previews, Link(1e9, 0.1), plan.PREVIEWS)
    with pytest.raises(ValueError):
        plan.view_goes_first(rest, previews, Link(), "sideways")


def test_auto_order_on_slow_and_fast_links():
    frames = pairs(4)
    slow = plan.plan(frames, 4, view=1, have={}, link=Link(2_000_000, 0.1), order=plan.AUTO)
    assert [(i.frame_index, i.end, i.label) for i in slow] == [
        (1, PAIR[0], PREVIEW), (2, PAIR[0], PREVIEW), (0, PAIR[0], PREVIEW),
        (3, PAIR[0], PREVIEW), (1, PAIR[1], DIAGNOSTIC), (2, PAIR[1], DIAGNOSTIC),
        (0, PAIR[1], DIAGNOSTIC), (3, PAIR[1], DIAGNOSTIC)]
    summary = plan.summarize(slow, 1, Link(2_000_000, 0.1))
    assert summary.view_first is False and summary.as_dict()["view_first"] is False
    assert summary.previews_eta_s == pytest.approx(4 * PAIR[0] * 8 / 2e6 + 0.1)
    fast = plan.plan(frames, 4, view=1, have={}, link=Link(1e9, 0.1), order=plan.AUTO)
    assert [(i.frame_index, i.end) for i in fast[:3]] == [(1, PAIR[0]), (1, PAIR[1]), (2, PAIR[0])]
    assert plan.summarize(fast, 1).view_first is True
    unmeasured = plan.plan(frames, 4, view=1, have={}, order=plan.AUTO)
    assert unmeasured == slow, "until the link is measured, previews first"
    # once every preview is there, the view's rest leads what is left, whatever the rate
    held = sent(slow[:4])
    later = plan.plan(frames, 4, view=1, have=held, link=Link(500_000, 0.1), order=plan.AUTO)
    assert [(i.frame_index, i.start) for i in later[:1]] == [(1, PAIR[0])]
    assert plan.summarize(later, 1).view_first is None
    # a view moved to a frame without its preview: its preview, the others', then its rest
    moved = plan.plan(frames, 4, view=3, have={1: PAIR[1], 2: PAIR[0]},
                      link=Link(500_000, 0.1), order=plan.AUTO)
    assert [(i.frame_index, i.start, i.end) for i in moved] == [
        (3, 0, PAIR[0]), (0, 0, PAIR[0]), (3, PAIR[0], PAIR[1]), (2, PAIR[0], PAIR[1]),
        (0, PAIR[0], PAIR[1])]


def test_auto_order_while_frames_are_still_being_made():
    """Only ready frames count: a lone ready view goes on to its full quality (the link would
    idle otherwise) and the previews that become ready then lead again."""
    alone = plan.plan({5: FrameLevels(5, PAIR, 0)}, 9, view=5, have={}, order=plan.AUTO)
    assert [(i.frame_index, i.end) for i in alone] == [(5, PAIR[0]), (5, PAIR[1])]
    frames = {i: FrameLevels(i, PAIR, 0) for i in (4, 5, 6)}
    partly = plan.plan(frames, 9, view=5, have={5: 40_000}, link=Link(2e6, 0.1), order=plan.AUTO)
    assert [(i.frame_index, i.start) for i in partly[:3]] == [(6, 0), (4, 0), (5, 40_000)]
