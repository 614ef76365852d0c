"""What to send next over one viewer's link: an I/O-free planner.

Every frame is one progressive code stream whose resolution levels end at known byte offsets;
a viewer holds a prefix of each (what it had plus what was sent since). The plan, rebuilt
between sends (so it follows the view, newly ready frames and the measured link), is:

1. the frame in view: a first look (the 1/4-resolution preview, or a smaller level when the
   measured rate cannot carry that within FIRST_LOOK_S), then the rest of its stream;
2. a preview (the 1/4-resolution level) of every other frame, outward from the view;
3. the rest of every frame, outward from the view.

The order says where the rest of the view's stream goes: "view" keeps it in 1. (the view is
diagnostic soonest), "previews" moves it to the head of 3. (every preview comes sooner, by the
view's remaining bytes: as much as 25-35 % of all previews on the GE CT), and "auto" (the
default) keeps it in 1. only when the measured link sends it in at most VIEW_FIRST_SHARE of the
time the remaining previews need (bytes / rate + RTT), i.e. on fast links, where it delays the
previews by little; on slower or not yet measured links it goes after the previews.

Items start where the viewer's prefix ends, so nothing already sent is sent again; only
frames that are ready (encoded and verified) are planned. The summary says how far along the
plan is and, from the measured rate and RTT, when previews and full quality will be there.

The measured link (`Link`) comes from `link.LinkMeter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

PREVIEW, DIAGNOSTIC = "preview", "diagnostic"
NONE, UNAVAILABLE = "none", "unavailable"
FIRST_LOOK_S = 0.3
"""Line time the first look may take before a smaller resolution is sent first."""
VIEW, PREVIEWS, AUTO = "view", "previews", "auto"
ORDERS = (AUTO, VIEW, PREVIEWS)
VIEW_FIRST_SHARE = 0.1
"""With order "auto", the rest of the view's stream goes before the other previews when it
takes at most this share of their time on the measured link (the previews' target is 1.2x of
their line: framing and the connection's start take about half of that margin)."""


@dataclass(frozen=True)
class FrameLevels:
    """A frame's code stream as the planner sees it: where each resolution level ends
    (level 0 is the smallest image; the last end is the stream's length) and which level is
    the preview."""
    index: int
    level_ends: tuple[int, ...]
    preview_level: int

    def __post_init__(self) -> None:
        ends = self.level_ends
        if not ends or any(b <= a for a, b in zip(ends, ends[1:])) or ends[0] <= 0:
            raise ValueError(f"frame {self.index}: level ends must rise from above 0: {ends}")
        if not 0 <= self.preview_level < len(ends):
            raise ValueError(f"frame {self.index}: no level {self.preview_level}")

    @property
    def length(self) -> int:
        return self.level_ends[-1]

    @property
    def preview_end(self) -> int:
        return self.level_ends[self.preview_level]

    def level_at(self, offset: int) -> int:
        """The highest level complete within the first `offset` bytes, or -1 for none."""
        return sum(1 for end in self.level_ends if end <= offset) - 1


@dataclass(frozen=True)
class Link:
    """The measured link: delivery rate in bits/s and round-trip time in seconds (None: not
    measured yet)."""
    rate_bps: float | None = None
    rtt_s: float | None = None

    def seconds(self, size: int) -> float | None:
        if not self.rate_bps:
            return None
        return size * 8 / self.rate_bps + (self.rtt_s or 0.0)


@dataclass(frozen=True)
class Item:
    """Bytes [start, end) of one frame's code stream; `level` is the resolution level complete
    once they are there, `label` says whether the frame is then a preview or diagnostic."""
    frame_index: int
    start: int
    end: int
    label: str
    level: int

    @property
    def size(self) -> int:
        return self.end - self.start


def outward(view: int, count: int) -> Iterator[int]:
    """view, view+1, view-1, view+2, view-2, ... within 0..count-1."""
    yield view
    for step in range(1, count):
        if view + step < count:
            yield view + step
        if view - step >= 0:
            yield view - step


def first_look_level(frame: FrameLevels, link: Link, budget_s: float = FIRST_LOOK_S) -> int:
    """The preview level, unless the measured rate carries it in more than `budget_s` of line
    time; then the largest smaller level that fits (at least level 0)."""
    if not link.rate_bps:
        return frame.preview_level
    fits = link.rate_bps * budget_s / 8
    level = frame.preview_level
    while level > 0 and frame.level_ends[level] > fits:
        level -= 1
    return level


def _item(frame: FrameLevels, start: int, end: int) -> Item:
    label = PREVIEW if end < frame.length else DIAGNOSTIC
    return Item(frame.index, start, end, label, frame.level_at(end))


def view_goes_first(rest_bytes: int, preview_bytes: int, link: Link, order: str = AUTO) -> bool:
    """Whether the rest of the view's stream (`rest_bytes`) goes before the `preview_bytes`
    of the other frames' previews still to send."""
    if order not in ORDERS:
        raise ValueError(f"order is one of {', '.join(ORDERS)}, not {order!r}")
    if order != AUTO or rest_bytes <= 0 or preview_bytes <= 0:
        return order != PREVIEWS
    if not link.rate_bps:
        return False
    return rest_bytes * 8 / link.rate_bps <= VIEW_FIRST_SHARE * link.seconds(preview_bytes)


def plan(frames: Mapping[int, FrameLevels], count: int, view: int, have: Mapping[int, int],
         link: Link = Link(), previews_first: bool = False, order: str | None = None
         ) -> list[Item]:
    """The items to send, in order. `frames` holds the ready frames by series index (0 to
    count-1), `have` the bytes of each frame's prefix the viewer holds already. `order` says
    where the rest of the view's stream goes (`view_goes_first`); "view" unless given, or
    "previews" with `previews_first` (a viewer about to scroll)."""
    if not 0 <= view < count:
        raise ValueError(f"frame {view} is not in 0..{count - 1}")
    order = order or (PREVIEWS if previews_first else VIEW)
    indexes = [i for i in outward(view, count) if i in frames]
    held = {i: min(max(0, have.get(i, 0)), frames[i].length) for i in indexes}
    items: list[Item] = []
    if view in frames:
        frame, start = frames[view], held[view]
        look = frame.level_ends[first_look_level(frame, link)]
        if start < look:
            items.append(_item(frame, start, look))
            start = look
        others = sum(max(0, frames[i].preview_end - held[i]) for i in indexes if i != view)
        if start < frame.length and view_goes_first(frame.length - start, others, link, order):
            items.append(_item(frame, start, frame.length))
            start = frame.length
        held[view] = start
    for index in indexes:
        frame = frames[index]
        if held[index] < frame.preview_end:
            items.append(_item(frame, held[index], frame.preview_end))
            held[index] = frame.preview_end
    for index in indexes:
        frame = frames[index]
        if held[index] < frame.length:
            items.append(_item(frame, held[index], frame.length))
    return items


def state(frame: FrameLevels | None, held: int) -> str:
    """What a viewer holding `held` bytes of the frame can show: "diagnostic" (the whole,
    bit-exact stream), "preview" (some reduced resolution), or "none"."""
    if frame is None:
        return NONE
    if held >= frame.length:
        return DIAGNOSTIC
    return PREVIEW if frame.level_at(held) >= 0 else NONE


@dataclass(frozen=True)
class Summary:
    phase: str
    """"view", "previews", "diagnostic" (what the next item is for), "waiting" (for frames
    being made) or "done"."""
    items: int
    view_bytes: int
    preview_bytes: int
    diagnostic_bytes: int
    previews_eta_s: float | None
    done_eta_s: float | None
    view_first: bool | None = None
    """Whether the rest of the view's stream is planned before the other frames' previews
    (None: nothing of the view is left beyond its first look, or no other preview is)."""

    def as_dict(self, next_items: Sequence[Item] = ()) -> dict:
        return {"phase": self.phase, "items": self.items, "view_first": self.view_first,
                "view_bytes": self.view_bytes,
                "preview_bytes": self.preview_bytes, "diagnostic_bytes": self.diagnostic_bytes,
                "previews_eta_s": _round(self.previews_eta_s), "done_eta_s": _round(self.done_eta_s),
                "next": [{"frame_index": i.frame_index, "start": i.start, "end": i.end,
                          "label": i.label, "level": i.level} for i in next_items]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(items: Sequence[Item], view: int, link: Link = Link(),
              waiting: bool = False) -> Summary:
    """Bytes still to send for the view, the previews and full quality, and when (from the
    link) the last preview and the last byte should arrive. With no items, the phase is
    "waiting" while frames are still being made (`waiting`), else "done"."""
    view_bytes = sum(i.size for i in items if i.frame_index == view)
    preview_bytes = sum(i.size for i in items if i.frame_index != view and i.label == PREVIEW)
    diagnostic_bytes = sum(i.size for i in items) - view_bytes - preview_bytes
    if not items:
        phase = "waiting" if waiting else "done"
    elif items[0].frame_index == view:
        phase = "view"
    else:
        phase = "previews" if items[0].label == PREVIEW else "diagnostic"
    last_preview = max((n for n, i in enumerate(items) if i.label == PREVIEW), default=-1)
    previews_eta = link.seconds(sum(i.size for i in items[:last_preview + 1]))
    view_full = next((n for n, i in enumerate(items) if i.frame_index == view
                      and i.label == DIAGNOSTIC), None)
    other_preview = next((n for n, i in enumerate(items) if i.frame_index != view
                          and i.label == PREVIEW), None)
    view_first = None if view_full is None or other_preview is None else view_full < other_preview
    return Summary(phase, len(items), view_bytes, preview_bytes, diagnostic_bytes,
                   previews_eta if last_preview >= 0 else 0.0,
                   link.seconds(sum(i.size for i in items)) if items else 0.0, view_first)
