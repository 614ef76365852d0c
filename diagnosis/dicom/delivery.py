"""One viewer's progressive delivery of a series (docs/imaging-delivery.md): `Delivery` sends
each frame's progressive stream (HTJ2K, or JPEG XL pairs where smaller) in the order `plan.plan`
gives (the frame in view first, then a preview of every frame, then full quality outward),
re-planning between chunks when the viewer moves. It measures the link on its own socket
(`link`: TCP_INFO) rather than waiting for replies, and keeps little unsent data queued
(TCP_NOTSENT_LOWAT and a small transport buffer), so a view change takes effect after a
fraction of a second of line time. Code streams come from the app's `Deriver`, made as images
are stored (`ingest`) or else at first viewing. The endpoint is `series_socket`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import struct
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from diagnosis.dicom import plan, progressive
from diagnosis.dicom.link import LinkMeter, read_tcp_info, set_notsent_lowat
from diagnosis.dicom.plan import FrameLevels
from diagnosis.dicom.progressive import Deriver

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IIIBBH")
"""frame_index, offset, total length, level, levels, flags; then the code-stream bytes."""
LEVEL_END, FRAME_END = 1, 2
STATE_CODES = {plan.NONE: "n", plan.PREVIEW: "p", plan.DIAGNOSTIC: "d", plan.UNAVAILABLE: "x"}
STATUS_EVERY_S = 1.0
CHUNK_S, LOWAT_S = 0.1, 0.05
"""A chunk carries about this much line time; the kernel keeps about this much unsent."""
MIN_CHUNK, MAX_CHUNK, READ_MAX = 8 * 1024, 256 * 1024, 1024 * 1024
MIN_LOWAT, MAX_LOWAT, TRANSPORT_HIGH = 8 * 1024, 512 * 1024, 8 * 1024


@dataclass(frozen=True)
class SeriesFrame:
    index: int
    sop_instance_uid: str
    frame_number: int
    source: Path
    sha256: str


def _read(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


class Delivery:
    """One viewer's stream. The handler is the single reader of the socket and calls
    `set_view`, `have` and `tell`; the send task is the single writer; the derive task makes
    frames ready. `stop` cancels and awaits both (their bodies end on any error)."""

    def __init__(self, ws: web.WebSocketResponse, frames: list[SeriesFrame], deriver: Deriver,
                 view: int, transport: Any, order: str = plan.AUTO,
                 codec: str = progressive.HTJ2K) -> None:
        self.ws, self.frames, self.deriver, self.transport = ws, frames, deriver, transport
        self.sock = transport.get_extra_info("socket") if transport is not None else None
        self.view, self.order, self.codec = view, order, codec
        self.meter = LinkMeter()
        self.ready: dict[int, FrameLevels] = {}
        self.streams: dict[int, progressive.Derivative] = {}
        self.failed: set[int] = set()
        self.held: dict[int, int] = {}
        self.sent_bytes = 0
        self._claims: dict[int, tuple[int, str]] = {}
        self._announced: set[int] = set()
        self._outbox: deque[dict] = deque()
        self._wake = asyncio.Event()
        self._status_due, self._status_at, self._derived = False, time.monotonic(), False
        self._lowat = 0
        self._tasks: list[asyncio.Task] = []
        self.started = time.monotonic()

    # -- called by the reader ------------------------------------------------------------------

    def set_view(self, index: int, order: str | None = None) -> None:
        self.view, self._status_due = index, True
        if order is not None:
            self.order = order
        self._wake.set()

    def have(self, index: int, size: int, sha256: str) -> None:
        """The viewer holds the first `size` bytes of the frame's stream `sha256` already."""
        self._claims[index] = (size, sha256)
        self._apply_claim(index)
        self._wake.set()

    def tell(self, message: dict) -> None:
        self._outbox.append(message)
        self._wake.set()

    # -- tasks ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.sock is not None:
            set_notsent_lowat(self.sock, MIN_LOWAT)
            self._lowat = MIN_LOWAT
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=TRANSPORT_HIGH)
        self._tasks = [asyncio.create_task(self._derive_loop(), name="progressive-derive"),
                       asyncio.create_task(self._send_loop(), name="progressive-send")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _derive_loop(self) -> None:
        """Instances in the plan's order (outward from the view), as many at a time as the
        pool has workers."""
        pending: dict[str, list[SeriesFrame]] = {}
        for frame in self.frames:
            pending.setdefault(frame.sha256, []).append(frame)
        for key in list(pending):
            known = self.deriver.known(key, self.codec)
            if known is not None:
                self._made(pending.pop(key), known, None)
        running: dict[asyncio.Task, list[SeriesFrame]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.deriver.workers:
                    rank = {i: r for r, i in enumerate(plan.outward(self.view, len(self.frames)))}
                    key = min(pending, key=lambda k: min(rank[f.index] for f in pending[k]))
                    group = pending.pop(key)
                    task = asyncio.create_task(self.deriver.derivatives(group[0].source, key,
                                                                        self.codec))
                    running[task] = group
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = asyncio.CancelledError() if task.cancelled() else task.exception()
                    self._made(running.pop(task), [] if error else task.result(), error)
                self._wake.set()
        except Exception as exc:
            log.exception("making progressive code streams failed")
            for group in [*pending.values(), *running.values()]:
                self._made(group, [], exc)
        finally:
            for task in running:
                task.cancel()
            self._derived = True
            self._wake.set()

    def _made(self, group: list[SeriesFrame], made: list[progressive.Derivative],
              error: BaseException | None) -> None:
        for frame in group:
            if frame.frame_number <= len(made):
                stream = made[frame.frame_number - 1]
                self.streams[frame.index] = stream
                self.ready[frame.index] = FrameLevels(frame.index, stream.layout.level_ends,
                                                      stream.layout.preview_level)
                self._apply_claim(frame.index)
                continue
            log.warning("no progressive code stream for %s frame %d: %r",
                        frame.sop_instance_uid, frame.frame_number, error)
            self.failed.add(frame.index)
            self.tell({"type": "error", "code": "frame_unavailable", "frame_index": frame.index,
                       "message": f"this frame cannot be coded progressively: {error}"})

    def _apply_claim(self, index: int) -> None:
        claim, stream = self._claims.get(index), self.streams.get(index)
        if claim and stream and claim[1] == stream.sha256:
            self.held[index] = max(self.held.get(index, 0), min(claim[0], stream.layout.length))

    async def _send_loop(self) -> None:
        try:
            while not self.ws.closed:
                self._wake.clear()
                while self._outbox:
                    await self.ws.send_json(self._outbox.popleft())
                self._measure()
                items = plan.plan(self._ready_outward(), len(self.frames), self.view,
                                  self.held, self.meter.link(), order=self.order)
                finished = not items and self._derived
                if self._status_due or finished or self._status_late():
                    await self._send_status(items)
                if items:
                    first = self.sent_bytes == 0
                    await self._send_item(items[0])
                    self._status_due |= first  # the plan, right after the first look
                else:
                    await self._wake.wait()
        except (ConnectionError, RuntimeError):
            pass  # the socket closed under us
        except Exception:
            log.exception("progressive delivery failed")
            await self.ws.close(code=1011, message=b"internal error")

    def _ready_outward(self) -> dict[int, FrameLevels]:
        """Ready frames up to the first one, outward from the view, still being made: what
        goes out keeps the plan's order even while frames are being made (a frame's code
        stream takes milliseconds; sending it takes longer)."""
        chosen = {}
        for index in plan.outward(self.view, len(self.frames)):
            if index in self.ready:
                chosen[index] = self.ready[index]
            elif index not in self.failed:
                break
        return chosen

    def _status_late(self) -> bool:
        return time.monotonic() - self._status_at >= STATUS_EVERY_S

    async def _send_item(self, item: plan.Item) -> None:
        """Chunks of one item (at least one) until it is sent, the view moves, a frame becomes
        ready, a message is waiting, or a status is due; then the caller plans again."""
        frame, stream = self.frames[item.frame_index], self.streams[item.frame_index]
        lay = stream.layout
        if item.frame_index not in self._announced:
            self._announced.add(item.frame_index)
            await self.ws.send_json({
                "type": "frame", "frame_index": frame.index, "sop_instance_uid":
                frame.sop_instance_uid, "frame_number": frame.frame_number, "codec": lay.codec,
                "length": lay.length, "level_ends": list(lay.level_ends),
                "preview_level": lay.preview_level,
                "preview_shape": list(lay.shape_at(lay.preview_level)),
                "shape": list(lay.shape), "dtype": lay.dtype, "sha256": stream.sha256})
        end = min(item.end, item.start + READ_MAX)
        data = await asyncio.to_thread(_read, stream.path, item.start, end)
        if len(data) != end - item.start:
            raise OSError(f"the cached code stream {stream.path} is shorter than its index says")
        position, chunk = item.start, self._chunk_size()
        while position < end:
            level = bisect.bisect_right(lay.level_ends, position)
            cut = min(end, position + chunk, lay.level_ends[level])
            flags = (LEVEL_END if cut == lay.level_ends[level] else 0) | (
                FRAME_END if cut == lay.length else 0)
            await self.ws.send_bytes(HEADER.pack(frame.index, position, lay.length, level,
                                                 lay.levels, flags)
                                     + data[position - item.start:cut - item.start])
            self.sent_bytes += cut - position
            self.held[frame.index] = position = cut
            self._measure()
            if self._wake.is_set() or self._status_late():
                break

    def _chunk_size(self) -> int:
        rate = self.meter.rate_bps
        return 16 * 1024 if not rate else int(min(MAX_CHUNK, max(MIN_CHUNK, rate / 8 * CHUNK_S)))

    def _measure(self) -> None:
        info = read_tcp_info(self.sock)
        if info is None:
            return
        self.meter.add(time.monotonic(), info)
        lowat = int(min(MAX_LOWAT, max(MIN_LOWAT, (self.meter.rate_bps or 0) / 8 * LOWAT_S)))
        if abs(lowat - self._lowat) > self._lowat / 4:
            set_notsent_lowat(self.sock, lowat)
            self._lowat = lowat

    async def _send_status(self, items: list[plan.Item]) -> None:
        self._status_due, self._status_at = False, time.monotonic()
        link, info = self.meter.link(), read_tcp_info(self.sock)
        unsent = self.transport.get_write_buffer_size() if self.transport is not None else 0
        states = "".join(STATE_CODES[plan.UNAVAILABLE if i in self.failed else
                                     plan.state(self.ready.get(i), self.held.get(i, 0))]
                         for i in range(len(self.frames)))
        await self.ws.send_json({
            "type": "status", "view": self.view, "order": self.order, "codec": self.codec,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "rate_bps": _whole(link.rate_bps), "goodput_bps": _whole(self.meter.goodput_bps),
            "rtt_ms": _ms(link.rtt_s), "min_rtt_ms": _ms(self.meter.min_rtt_s),
            "sent_bytes": self.sent_bytes, "acked_bytes": self.meter.bytes_acked,
            "unsent_bytes": unsent + (info.notsent_bytes if info else 0),
            "ready": len(self.ready), "count": len(self.frames), "frames": states,
            "plan": plan.summarize(items, self.view, link, not self._derived).as_dict(items[:3])})


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1e3, 1)
