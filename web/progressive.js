// The progressive delivery socket of one series (docs/imaging-delivery.md): authenticates with
// its first message (browsers cannot set headers on WebSockets), puts each frame's code stream
// back together from the binary chunks, reports every resolution level whose end is in and
// every frame whose whole stream matches its SHA-256, and resumes after a dropped connection:
// the next socket's auth message lists the prefixes held (`have`), so nothing is sent twice.
const HEADER_STRUCT = ">IIIBBH"; // frame_index, offset, total length, level, levels, flags
const LEVEL_END = 1, FRAME_END = 2;
const REFUSALS = new Set(["unauthorized", "forbidden", "not_found"]); // then the server closes, 1008
const CLOSE_POLICY = 1008; // a refusal: asking again would be refused again
// The wait before each attempt to resume, in seconds; when they are used up the stream gives
// up. About 45 s in all: a phone in a lift or between cells, not an outage. Any new bytes
// start the count again.
const RETRY_DELAYS_S = [0.5, 1, 2, 4, 8, 10, 10, 10];

export class SeriesStream {
  // handlers: series(message) on every (re)opening, status(message), level(frame, level) when
  // a level's bytes are all in, complete(frame) when the whole stream is in and matches its
  // SHA-256, damaged(frame) when it does not, problem(message) for errors that leave the stream
  // running, reconnecting({attempt, attempts, delay_s}) after an unexpected close, failed(text)
  // when it stops for good.
  constructor({ study, series, token, view, handlers }) {
    this.handlers = handlers;
    this.token = token;
    // frame index -> {info: the `frame` message, bytes, received, verified, damaged}; kept
    // across connections.
    this.frames = new Map();
    this.position = { frame: view, order: null }; // what the next auth message asks for
    this.stats = { connections: 0, streamBytes: 0 }; // for tests and debugging
    this.closing = false;
    this.failures = 0; // unexpected closes since bytes last came in
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = `/dicomweb/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}/progressive`;
    this.url = `${scheme}://${location.host}${path}`;
    this.connect();
  }

  connect() {
    Object.assign(this, { live: false, done: false, refusal: null, retry: null });
    this.stats.connections += 1;
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      const { frame, order } = this.position;
      socket.send(JSON.stringify({ type: "auth", token: this.token, frame_index: frame, codec: "htj2k",
                                   ...(order ? { order } : {}), have: this.held() }));
      this.live = true; // only now: a view message must not go before the auth message
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => this.closed(event));
    this.socket = socket;
  }

  // The viewer moved: the server plans again from this frame. order "view" asks for its full
  // quality next, which a reader who settled on a slice wants. Remembered for a reconnection.
  view(frame, order) {
    this.position = { frame, order: order ?? this.position.order };
    this.send({ type: "view", frame_index: frame, ...(order ? { order } : {}) });
  }

  close() {
    this.closing = true;
    clearTimeout(this.retry);
    this.socket.close(1000);
  }

  // The first `level + 1` levels of a frame's stream: decodable on their own.
  prefix(frame, level) {
    const entry = this.frames.get(frame);
    return entry.bytes.subarray(0, entry.info.level_ends[level]);
  }

  get verifiedCount() {
    let count = 0;
    for (const entry of this.frames.values()) count += entry.verified;
    return count;
  }

  // The `have` list: each frame's prefix held, named by its stream's SHA-256 as announced.
  // Damaged bytes are not claimed, so a reconnection sends that frame again.
  held() {
    return [...this.frames].filter(([, entry]) => entry.received > 0 && !entry.damaged)
      .map(([index, entry]) => ({ frame_index: index, bytes: entry.received, sha256: entry.info.sha256 }));
  }

  send(message) {
    if (this.live) this.socket.send(JSON.stringify(message));
  }

  receive(data) {
    if (this.closing) return; // messages already on their way when the viewer closed
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
      this.announced(message);
    } else if (message.type === "status") {
      this.done = message.plan.phase === "done";
      this.handlers.status(message);
    } else if (message.type === "error") {
      if (REFUSALS.has(message.code)) this.refusal = message;
      else this.handlers.problem(message);
    }
  }

  // After a reconnection the server announces again each frame it goes on with: a prefix of
  // the same stream stays and is continued; another stream, or damaged bytes, start over.
  announced(message) {
    const entry = this.frames.get(message.frame_index);
    if (entry?.info.sha256 === message.sha256 && !entry.damaged) return;
    this.frames.set(message.frame_index, { info: message, bytes: new Uint8Array(message.length), received: 0,
                                           verified: false, damaged: false });
  }

  chunk(view) {
    const frame = view.getUint32(0), offset = view.getUint32(4), level = view.getUint8(12);
    const flags = view.getUint16(14);
    const body = new Uint8Array(view.buffer, this.headerSize);
    this.stats.streamBytes += body.length; // counted before any check: bytes sent twice show here
    const entry = this.frames.get(frame);
    // Chunks of a frame come in order without gaps; anything else is a broken stream.
    if (!entry || offset !== entry.received || view.getUint32(8) !== entry.info.length) {
      return this.fail(`frame ${frame}: a chunk at byte ${offset} does not follow what came before`);
    }
    entry.bytes.set(body, offset);
    entry.received += body.length;
    this.failures = 0; // the link carries bytes again
    if (flags & LEVEL_END) this.handlers.level(frame, level);
    if (flags & FRAME_END) this.check(frame, entry).catch((error) => this.fail(error.message));
  }

  async check(frame, entry) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", entry.bytes));
    if (this.closing || this.frames.get(frame) !== entry) return;
    const hex = Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
    if (hex === entry.info.sha256) {
      entry.verified = true;
      this.handlers.complete(frame);
    } else {
      entry.damaged = true;
      this.handlers.damaged(frame);
    }
  }

  fail(text) {
    this.close();
    this.handlers.failed(text);
  }

  closed(event) {
    this.live = false;
    if (this.closing) return;
    const reason = `${event.code}${event.reason ? `: ${event.reason}` : ""}`;
    if (this.refusal) return this.handlers.failed(this.refusal.message);
    if (event.code === CLOSE_POLICY) {
      return this.handlers.failed(`the server refused the image connection (${reason})`);
    }
    if (this.done) return; // everything was sent and is in: nothing to resume
    if (this.failures === RETRY_DELAYS_S.length) {
      return this.handlers.failed(
        `the image connection was lost and ${this.failures} attempts to resume it failed (${reason})`);
    }
    // ±20 %: viewers dropped together (a server restart) do not all come back at once.
    const delay = RETRY_DELAYS_S[this.failures] * (0.8 + 0.4 * Math.random());
    this.failures += 1;
    this.handlers.reconnecting({ attempt: this.failures, attempts: RETRY_DELAYS_S.length, delay_s: delay });
    this.retry = setTimeout(() => this.connect(), delay * 1000);
  }
}
