// The progressive delivery socket of one series (docs/imaging-delivery.md): authenticates with
// its first message (browsers cannot set headers on WebSockets), puts each frame's code stream
// back together from the binary chunks, and reports every resolution level whose end is in.
const HEADER_STRUCT = ">IIIBBH"; // frame_index, offset, total length, level, levels, flags
const LEVEL_END = 1, FRAME_END = 2;
const REFUSALS = new Set(["unauthorized", "forbidden", "not_found"]); // then the server closes, 1008

export class SeriesStream {
  // handlers: series(message), status(message), level(frame, level) when a level's bytes are
  // all in, complete(frame) when the whole stream is, problem(message) for errors that leave
  // the stream running, failed(text) when it stops for good.
  constructor({ study, series, token, view, handlers }) {
    this.handlers = handlers;
    this.frames = new Map(); // frame index -> {info: the `frame` message, bytes, received}
    this.closing = false;
    this.refusal = null;
    this.start = view; // the frame in view when the socket opens
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = `/dicomweb/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}/progressive`;
    this.socket = new WebSocket(`${scheme}://${location.host}${path}`);
    this.socket.binaryType = "arraybuffer";
    this.socket.addEventListener("open", () => this.send({ type: "auth", token, frame_index: this.start, codec: "htj2k" }));
    this.socket.addEventListener("message", (event) => this.receive(event.data));
    this.socket.addEventListener("close", (event) => this.closed(event));
  }

  // The viewer moved: the server plans again from this frame. order "view" asks for its full
  // quality next, which a reader who settled on a slice wants.
  view(frame, order) {
    if (this.socket.readyState === WebSocket.CONNECTING) this.start = frame;
    else this.send({ type: "view", frame_index: frame, ...(order ? { order } : {}) });
  }

  close() {
    this.closing = true;
    this.socket.close(1000);
  }

  // The first `level + 1` levels of a frame's stream: decodable on their own.
  prefix(frame, level) {
    const entry = this.frames.get(frame);
    return entry.bytes.subarray(0, entry.info.level_ends[level]);
  }

  send(message) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  receive(data) {
    if (typeof data !== "string") {
      this.chunk(new DataView(data));
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "series") {
      if (message.header.struct !== HEADER_STRUCT) return this.fail(`unknown chunk header ${message.header.struct}`);
      this.headerSize = message.header.size;
      this.handlers.series(message);
    } else if (message.type === "frame") {
      this.frames.set(message.frame_index, { info: message, bytes: new Uint8Array(message.length), received: 0 });
    } else if (message.type === "status") {
      this.handlers.status(message);
    } else if (message.type === "error") {
      if (REFUSALS.has(message.code)) this.refusal = message;
      else this.handlers.problem(message);
    }
  }

  chunk(view) {
    const frame = view.getUint32(0), offset = view.getUint32(4), level = view.getUint8(12);
    const flags = view.getUint16(14);
    const entry = this.frames.get(frame);
    // Chunks of a frame come in order without gaps; anything else is a broken stream.
    if (!entry || offset !== entry.received || view.getUint32(8) !== entry.info.length) {
      return this.fail(`frame ${frame}: a chunk at byte ${offset} does not follow what came before`);
    }
    const body = new Uint8Array(view.buffer, this.headerSize);
    entry.bytes.set(body, offset);
    entry.received += body.length;
    if (flags & LEVEL_END) this.handlers.level(frame, level);
    if (flags & FRAME_END) this.handlers.complete(frame);
  }

  fail(text) {
    this.close();
    this.handlers.failed(text);
  }

  closed(event) {
    if (this.closing) return;
    if (event.code === 1008 && this.refusal) this.handlers.failed(this.refusal.message);
    else this.handlers.failed(`the image connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
  }
}
