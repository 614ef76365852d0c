// The ECG view: follows one ambulance stream live (GET /ecg/follow/{id}, docs/ecg-stream.md)
// and shows its tracing on standard paper (25 mm/s, 10 mm/mV) with each beat's label, the
// heart rate, the rhythm, ST deviation and signal quality per lead, and the alerts as banners
// that stay until the expert acknowledges them.
const $ = (id) => document.getElementById(id);

const WINDOW_S = 10; // on screen at once, as on a 12-lead printout
const MM_PER_S = 25, MM_PER_MV = 10, PX_PER_MM = 4;
const RHYTHM_ROW_MM = 40, LEAD_ROW_MM = 30;
const NO_SAMPLE = -32768; // WFDB's "no value", sent as is by monitors (docs/ecg-stream.md)
const TWELVE_LEAD_COLUMNS = [["I", "II", "III"], ["aVR", "aVL", "aVF"], ["V1", "V2", "V3"], ["V4", "V5", "V6"]];
const RHYTHM_LEADS = ["II", "MLII"]; // the usual rhythm strip; otherwise the first lead
// A heart rate is shown as current only while beats keep coming (the asystole alarm's delay).
const NO_BEAT_S = 4;
const FLAG_TEXT = { lead_off: "lead off", saturated: "saturated", noise: "noisy", wander: "baseline wander" };
const ALERT_TEXT = { VT: "VT — ventricular tachycardia", VF: "VF — ventricular fibrillation" };
// What an alert is and where; the posterior STEMI equivalent is read from ST depression, not
// elevation, and wants posterior leads to confirm it: the banner says so.
function alertText(alert) {
  const leads = alert.leads.length ? ` in ${alert.leads.join(", ")}` : "";
  if (alert.criterion === "posterior") {
    return `STEMI equivalent, posterior: ST depression with upright T${leads} (record V7–V9 to confirm)`;
  }
  return `${ALERT_TEXT[alert.kind] ?? alert.kind}${leads}`;
}
const qualityText = (flags) => flags.map((flag) => FLAG_TEXT[flag] ?? flag).join(", ");

let view = null; // the stream being followed

window.telemedEcg = { state }; // for tests and debugging

// -- opening and closing ----------------------------------------------------------------------

// One button per ECG stream attached to the consult (the crew names it on POST /api/ecg/streams).
export function ecgButtons(consult, token) {
  const streams = (consult.attachments || []).filter((attachment) => attachment.kind === "ecg");
  return streams.map((attachment, index) => {
    const button = document.createElement("button");
    button.textContent = streams.length > 1 ? `ECG ${index + 1}` : "ECG";
    button.dataset.ecg = attachment.ref;
    button.addEventListener("click", () => openEcg(attachment.ref, token, `patient ${consult.patient_id}`));
    return button;
  });
}

export function openEcg(streamId, token, title) {
  closeEcg();
  view = {
    streamId, token, socket: null, refusal: null, retry: 0, queue: Promise.resolve(),
    format: null, trace: null, layout: null, paper: null, drawPending: false, markers: 0,
    beats: [], analysedTo: 0, rhythm: null, rhythmNow: null, st: null, quality: null, alerts: new Map(),
    complete: false, error: null,
  };
  for (const id of ["ecg-alerts", "ecg-leads", "ecg-error"]) $(id).replaceChildren();
  $("ecg-title").textContent = `— ${title}`;
  $("ecg").hidden = false;
  showFindings();
  setStatus("Connecting…");
  connect();
  $("ecg").scrollIntoView();
}

export function closeEcg() {
  if (!view) return;
  const { socket } = view;
  view = null; // first, so the socket's close is not taken for a dropped link
  socket?.close(1000);
  $("ecg").hidden = true;
}

$("ecg-close").addEventListener("click", closeEcg);

// The recording as stored so far, as a file for the PACS (DICOM) or analysis tools (WFDB, a
// zip); the server audits it. Fetched with the token, then handed to the browser as a download.
async function download(format) {
  const streamId = view.streamId;
  const response = await apiGet(`/api/ecg/streams/${encodeURIComponent(streamId)}/export?format=${format}`);
  const disposition = response.headers.get("Content-Disposition") || "";
  const link = document.createElement("a");
  link.download = /filename="([^"]+)"/.exec(disposition)?.[1] ?? `ecg-${streamId}`;
  link.href = URL.createObjectURL(await response.blob());
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

for (const id of ["ecg-export-dicom", "ecg-export-wfdb"]) {
  $(id).addEventListener("click", (event) => {
    $("ecg-error").textContent = view?.error ?? "";
    download(event.currentTarget.dataset.format).catch((error) => {
      if (view) $("ecg-error").textContent = `Cannot download this ECG: ${error.message}`;
    });
  });
}

// A GET with the token; a refusal becomes an Error carrying the problem's detail.
async function apiGet(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${view.token}` } });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || problem.title || response.statusText);
  }
  return response;
}

// -- the follow socket ------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ecg/follow/${encodeURIComponent(view.streamId)}`);
  view.socket = socket;
  // Browsers cannot set headers on WebSockets: the token comes in the first message.
  const follow = { type: "follow", token: view.token, seconds: WINDOW_S };
  socket.addEventListener("open", () => socket.send(JSON.stringify(follow)));
  // Handled one at a time, in order: a message may wait for the stream's format to be fetched.
  const current = view;
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    current.queue = current.queue.then(() => view === current && handle(message))
      .catch((error) => { if (view === current) fail(error.message); });
  });
  socket.addEventListener("close", (event) => closed(socket, event));
}

async function handle(message) {
  if (message.type === "stream") {
    view.retry = 0;
    describe(message);
    for (const alert of message.alerts) addAlert(alert); // raised before we joined
    setStatus(view.format ? "" : "Waiting for the first samples…");
  } else if (message.type === "samples") {
    // A follower that came before the first frame learns the leads and rate from the stream.
    if (!view.format && message.samples.length) describe(await fetchStream());
    if (!view.format) return;
    view.trace.add(message.first_sample, message.samples);
    view.complete ||= message.complete;
    setStatus("");
    requestDraw();
  } else if (message.type === "analysis") {
    analysed(message);
  } else if (message.type === "error") {
    view.refusal = message; // the server closes with 1008 next
  }
}

// 1008 is a refusal (unknown stream, bad token, not our patient): final. Any other close of a
// stream still running is a dropped link: follow again, backing off; the server resends the
// recent samples and the alerts so far, beats analysed meanwhile are missed.
function closed(socket, event) {
  if (socket !== view?.socket) return;
  view.socket = null;
  if (event.code === 1008) {
    fail(view.refusal ? `${view.refusal.message} (${view.refusal.code})` : "the server refused to follow this stream");
    return;
  }
  if (view.complete) return;
  const delay = Math.min(500 * 2 ** view.retry, 5000);
  view.retry += 1;
  setStatus(`Connection lost (${event.code}); reconnecting…`);
  const current = view;
  setTimeout(() => { if (view === current) connect(); }, delay);
}

async function fetchStream() {
  return (await apiGet(`/api/ecg/streams/${encodeURIComponent(view.streamId)}`)).json();
}

function fail(text) {
  view.error = `Cannot follow this ECG: ${text}`;
  $("ecg-error").textContent = view.error;
  setStatus("");
}

// -- what the stream tells ----------------------------------------------------------------------

// The stream's format (from the `stream` message or GET /api/ecg/streams/{id}) sizes the paper.
function describe(info) {
  if (view.format || !info.fs) return;
  view.format = { fs: info.fs, leads: info.leads, gain: info.gain };
  view.trace = new Trace(Math.ceil(WINDOW_S * info.fs), info.leads.length);
  view.layout = layoutFor(info.leads);
  const canvas = $("ecg-trace");
  canvas.width = WINDOW_S * MM_PER_S * PX_PER_MM;
  canvas.height = view.layout.heightMm * PX_PER_MM;
  view.paper = drawPaper(canvas.width, canvas.height);
  showLeads();
  requestDraw();
}

function analysed(message) {
  view.beats.push(...message.beats);
  view.analysedTo = message.up_to_sample;
  for (const episode of message.rhythms) {
    // The latest call: the episode reaching furthest, an overlay (VT, pause) over its base.
    const { rhythm } = view;
    if (!rhythm || episode.end > rhythm.end || (episode.end === rhythm.end && episode.start > rhythm.start)) {
      view.rhythm = episode;
    }
  }
  if ("rhythm_now" in message) view.rhythmNow = message.rhythm_now; // null: none open now
  view.st = message.st_mv ?? view.st;
  view.quality = message.quality ?? view.quality;
  for (const alert of message.alerts) addAlert(alert);
  showFindings();
  showLeads();
  requestDraw();
}

function heartRate() {
  const last = view.beats.at(-1);
  if (!last || view.analysedTo - last.sample > NO_BEAT_S * view.format.fs) return null;
  return last.hr_avg_bpm ?? last.hr_bpm;
}

function state() {
  if (!view) return null;
  return {
    streamId: view.streamId, leads: view.format?.leads ?? [], fs: view.format?.fs ?? null,
    samples: view.trace?.end ?? 0, complete: view.complete, error: view.error,
    beats: view.beats.map(({ sample, label }) => ({ sample, label })), markers: view.markers,
    heartRate: view.format ? heartRate() : null,
    rhythm: view.rhythmNow?.label ?? view.rhythm?.label ?? null,
    st: view.st, quality: view.quality, alerts: [...view.alerts.values()],
  };
}

// -- the page around the tracing ----------------------------------------------------------------

const clock = (seconds) => `${Math.floor(seconds / 60)}:${(seconds % 60).toFixed(1).padStart(4, "0")}`;

// text, or else how far the stream has come.
function setStatus(text) {
  const { format, trace, complete } = view;
  $("ecg-status").textContent = text || (format && `${complete ? "Recording complete" : "Live"} — `
    + `${format.leads.length} leads at ${format.fs} Hz, ${clock(trace.end / format.fs)} received`);
}

function showFindings() {
  const rate = view.format ? heartRate() : null;
  const last = view.beats.at(-1);
  $("ecg-hr").textContent = rate !== null ? `${Math.round(rate)} bpm`
    : last ? `no beat for ${((view.analysedTo - last.sample) / view.format.fs).toFixed(0)} s` : "—";
  const { rhythm, rhythmNow, format } = view;
  $("ecg-rhythm").textContent = rhythmNow ? `${rhythmNow.label} since ${clock(rhythmNow.since / format.fs)}`
    : rhythm ? `${rhythm.label} (${clock(rhythm.start / format.fs)}–${clock(rhythm.end / format.fs)})`
    : "not called yet";
}

// Per lead: ST deviation in mm at 10 mm/mV (none for a lead that is off: its value means
// nothing), the signal's quality; leads an alert names stand out.
function showLeads() {
  if (!view.format) return;
  const alerted = new Set([...view.alerts.values()].flatMap((alert) => alert.leads));
  $("ecg-leads").replaceChildren(...view.format.leads.map((lead) => {
    const row = document.createElement("tr");
    row.dataset.lead = lead;
    const st = view.st?.[lead];
    const quality = view.quality?.[lead];
    row.classList.toggle("alerted", alerted.has(lead));
    row.classList.toggle("poor", Boolean(quality?.flags.length));
    const off = quality?.flags.includes("lead_off");
    const stText = st == null || off ? "—" : `${st >= 0 ? "+" : ""}${(st * MM_PER_MV).toFixed(1)} mm`;
    const signal = !quality ? "—" : quality.flags.length ? qualityText(quality.flags) : `ok (SQI ${quality.sqi})`;
    for (const text of [lead, stText, signal]) row.insertCell().textContent = text;
    return row;
  }));
}

function addAlert(alert) {
  const key = `${alert.kind}@${alert.sample}`;
  if (view.alerts.has(key)) return;
  view.alerts.set(key, { ...alert, raised_at: alert.raised_at ?? new Date().toISOString(), acknowledged: false });
  showAlerts();
  showLeads();
}

function showAlerts() {
  $("ecg-alerts").replaceChildren(...[...view.alerts.values()].map((alert) => {
    const banner = document.createElement("div");
    banner.className = alert.acknowledged ? "ecg-alert acknowledged" : "ecg-alert";
    banner.dataset.kind = alert.kind;
    const at = view.format ? ` at ${clock(alert.sample / view.format.fs)} of the recording` : "";
    const raised = `, raised ${new Date(alert.raised_at).toLocaleTimeString()}${alert.acknowledged ? " · acknowledged" : ""}`;
    const text = document.createElement("span");
    text.textContent = `${alertText(alert)}${at}${raised}`;
    banner.append(text);
    if (!alert.acknowledged) {
      const acknowledge = document.createElement("button");
      acknowledge.textContent = "Acknowledge";
      acknowledge.addEventListener("click", () => { alert.acknowledged = true; showAlerts(); });
      banner.append(acknowledge);
    }
    return banner;
  }));
}

// -- the tracing ----------------------------------------------------------------------------------

// The last WINDOW_S seconds of every lead, addressed by the stream's sample numbers.
class Trace {
  constructor(capacity, leads) {
    Object.assign(this, { capacity, leads, end: 0 });
    this.values = new Int16Array(capacity * leads).fill(NO_SAMPLE);
  }

  get start() { return Math.max(0, this.end - this.capacity); }

  at(sample, lead) { return this.values[(sample % this.capacity) * this.leads + lead]; }

  add(first, rows) {
    const end = Math.max(this.end, first + rows.length);
    const oldest = end - this.capacity; // anything before has scrolled off
    // Samples never received (a gap) show as no signal, never as what was there before.
    for (let sample = Math.max(this.end, oldest); sample < first; sample += 1) this.put(sample, null);
    rows.forEach((row, i) => { if (first + i >= oldest) this.put(first + i, row); });
    this.end = end;
  }

  put(sample, row) {
    const offset = (sample % this.capacity) * this.leads;
    for (let lead = 0; lead < this.leads; lead += 1) this.values[offset + lead] = row ? row[lead] : NO_SAMPLE;
  }
}

// Cells on the paper (mm): the rhythm lead large across the whole window, then every lead
// small, in the standard 3 x 4 grid (2.5 s each) for a 12-lead stream, else a row each.
function layoutFor(leads) {
  const rhythm = Math.max(0, leads.findIndex((name) => RHYTHM_LEADS.includes(name)));
  const cells = [{ lead: rhythm, column: 0, columns: 1, top: 0, height: RHYTHM_ROW_MM, rhythm: true }];
  const twelve = TWELVE_LEAD_COLUMNS.flat().every((name) => leads.includes(name));
  const columns = twelve ? TWELVE_LEAD_COLUMNS : [leads];
  columns.forEach((names, column) => names.forEach((name, row) => cells.push({
    lead: leads.indexOf(name), column, columns: columns.length, top: RHYTHM_ROW_MM + row * LEAD_ROW_MM, height: LEAD_ROW_MM,
  })));
  return { cells, heightMm: RHYTHM_ROW_MM + Math.max(...columns.map((names) => names.length)) * LEAD_ROW_MM };
}

// ECG paper, drawn once: 1 mm squares, every fifth line bold.
function drawPaper(width, height) {
  const paper = Object.assign(document.createElement("canvas"), { width, height });
  const ctx = paper.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  const line = (mm, [x0, y0], [x1, y1]) => {
    ctx.strokeStyle = mm % 5 === 0 ? "#eea2a2" : "#fbe0e0";
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
  };
  for (let mm = 0; mm * PX_PER_MM <= width; mm += 1) line(mm, [mm * PX_PER_MM + 0.5, 0], [mm * PX_PER_MM + 0.5, height]);
  for (let mm = 0; mm * PX_PER_MM <= height; mm += 1) line(mm, [0, mm * PX_PER_MM + 0.5], [width, mm * PX_PER_MM + 0.5]);
  return paper;
}

function requestDraw() {
  if (view.drawPending || !view.format) return;
  view.drawPending = true;
  const current = view;
  requestAnimationFrame(() => {
    current.drawPending = false;
    if (view === current) draw();
  });
}

function draw() {
  const ctx = $("ecg-trace").getContext("2d");
  ctx.drawImage(view.paper, 0, 0);
  const { trace } = view;
  const pxPerSample = (MM_PER_S * PX_PER_MM) / view.format.fs;
  for (const cell of view.layout.cells) {
    // A cell shows its column's share of the window: all of it, or a quarter in the 12-lead grid.
    const span = Math.floor(trace.capacity / cell.columns);
    const from = trace.start + cell.column * span;
    const left = cell.column * span * pxPerSample, top = cell.top * PX_PER_MM, height = cell.height * PX_PER_MM;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, span * pxPerSample, height);
    ctx.clip(); // a tall QRS stays in its own cell
    drawLead(ctx, cell.lead, from, Math.min(trace.end, from + span), pxPerSample, top + height / 2, cell.rhythm);
    drawLabel(ctx, cell, left, top);
    if (cell.rhythm) view.markers = drawBeats(ctx, pxPerSample, top);
    ctx.restore();
  }
}

function drawLead(ctx, lead, from, to, pxPerSample, middle, large) {
  const { trace } = view;
  // Centred on its mean: a monitor's DC offset or slow wander would push it off its row; the
  // shape (and ST against PR) is what is read.
  let sum = 0, count = 0;
  for (let s = from; s < to; s += 1) {
    const value = trace.at(s, lead);
    if (value !== NO_SAMPLE) { sum += value; count += 1; }
  }
  const pxPerUnit = (MM_PER_MV * PX_PER_MM) / view.format.gain[lead];
  ctx.beginPath();
  let drawing = false;
  for (let s = from; s < to; s += 1) {
    const value = trace.at(s, lead);
    if (value === NO_SAMPLE) { drawing = false; continue; }
    const x = (s - trace.start) * pxPerSample, y = middle - (value - sum / count) * pxPerUnit;
    if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    drawing = true;
  }
  ctx.strokeStyle = "#111";
  ctx.lineWidth = large ? 1.5 : 1.2;
  ctx.stroke();
}

function drawLabel(ctx, cell, x, top) {
  const name = view.format.leads[cell.lead];
  const flags = view.quality?.[name]?.flags ?? [];
  const text = flags.length ? `${name} · ${qualityText(flags)}` : name;
  ctx.font = `600 ${cell.rhythm ? 15 : 13}px system-ui, sans-serif`;
  ctx.fillStyle = flags.length ? "#b00020" : "#1d2733";
  ctx.fillText(text, x + 6, top + 16);
}

// Each beat on screen marked with its label over the rhythm strip; returns how many.
function drawBeats(ctx, pxPerSample, top) {
  const { trace } = view;
  let shown = 0;
  ctx.font = "700 14px system-ui, sans-serif";
  ctx.textAlign = "center";
  for (let i = view.beats.length - 1; i >= 0 && view.beats[i].sample >= trace.start; i -= 1) {
    const beat = view.beats[i];
    if (beat.sample >= trace.end) continue;
    ctx.fillStyle = beat.label === "N" ? "#0f4c5c" : "#b00020";
    ctx.fillText(beat.label, (beat.sample - trace.start) * pxPerSample, top + 34);
    shown += 1;
  }
  return shown;
}
