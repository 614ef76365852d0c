// The series viewer: lists a consult's series, opens one over the progressive socket
// (docs/imaging-delivery.md) and shows the slice in view as soon as a first level is in (the
// 1/4-resolution preview, or 1/8 or less on a very slow link), sharper as larger levels come,
// then, labelled diagnostic, once its whole stream is in and matches its SHA-256. A dropped
// connection is resumed where it stopped. Window/level is applied here to the decoded samples.
// In a room it shares its view and follows the views the others share (docs/signaling.md,
// share_view / view).
import { consultSeries, seriesDisplay } from "./dicomweb.js";
import { decode, loadDecoder } from "./htj2k.js";
import { SeriesStream } from "./progressive.js";
import { fullRange, toImageData } from "./render.js";

const $ = (id) => document.getElementById(id);
const SETTLE_MS = 300; // a slice shown this long is being read: ask for its full quality next
const SHARE_EVERY_MS = 100; // the room allows 20 messages a second
const CT_PRESETS = [["Brain", 40, 80], ["Subdural", 75, 215], ["Soft tissue", 40, 400],
                    ["Lung", -600, 1500], ["Bone", 600, 2800]];
const NO_RESCALE = { slope: 1, intercept: 0, center: null, width: null, inverted: false };

const state = {
  consult: null, token: null, share: null, series: null, opening: 0,
  list: null, // Promise of the consult's series (dicomweb.consultSeries)
  stream: null, displays: null, count: 0, view: 0, window: null, status: null,
  linkNote: null, // while the image connection is down: said instead of the measured link
  image: null, // what the canvas shows: {frame, entry, level, image}
  settle: null,
  sharing: false, shareTimer: null, pointer: null,
};

// consult: from /api/consults; token: the access token; share(view): sends share_view to the
// room when the viewer is open in one.
export function openViewer({ consult, token, share = null }, followed = false) {
  $("viewer").hidden = false;
  state.token = token;
  state.share = share;
  $("share-view").hidden = !share;
  if (state.consult?.id !== consult.id) {
    stopSharing();
    closeSeries();
    state.consult = consult;
    $("viewer-title").textContent = `— patient ${consult.patient_id}`;
    state.list = consultSeries(consult, token);
    state.list.then(listSeries, showError);
    if (!followed) state.list.then((all) => all[0] ? openSeries(all[0]) : showError("No images for this consult yet."));
  }
}

// A view someone in the room shares (view: from a `view` event or the room's snapshot; null
// when they stopped sharing; sharer: their name): opens the viewer on it and follows it.
export function followSharedView(context, view, sharer) {
  if (view) openViewer(context, true);
  if (!$("viewer").hidden) followView(view, sharer).catch(showError);
}

export function closeViewer() {
  stopSharing();
  closeSeries();
  Object.assign(state, { consult: null, list: null, share: null });
  $("series-list").replaceChildren();
  $("viewer").hidden = true;
}

function showError(error) {
  $("viewer-error").textContent = error.message ?? error;
}

function listSeries(all) {
  $("series-list").replaceChildren(...all.map((entry) => {
    const button = document.createElement("button");
    button.textContent = `${entry.modality} ${entry.number} ${entry.description} (${entry.instances} images)`;
    button.dataset.series = entry.series;
    button.addEventListener("click", () => openSeries(entry));
    const item = document.createElement("li");
    item.append(button);
    return item;
  }));
}

// -- one series over the progressive socket ---------------------------------------------------

function closeSeries() {
  state.stream?.close();
  clearTimeout(state.settle);
  Object.assign(state, { stream: null, series: null, displays: null, image: null, window: null,
                         count: 0, status: null, linkNote: null });
  $("image-link").textContent = "";
}

// entry: {study, series} and, from the list, modality; opens at `frame`, in `windowing`
// ({center, width}) if given (a followed view).
async function openSeries(entry, frame = 0, windowing = null) {
  closeSeries();
  const opening = ++state.opening; // a newer opening wins over this one's late answers
  Object.assign(state, { series: entry, view: frame, window: windowing });
  $("viewer-error").textContent = "";
  for (const button of $("series-list").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.series === entry.series));
  }
  showImage(null);
  // Slices are checked against their SHA-256 (crypto.subtle) before they are called diagnostic.
  if (!crypto.subtle) return showError("checking slices needs a secure context (https or localhost)");
  try {
    await loadDecoder(); // a one-time download; each level is decoded the moment it is in
  } catch (error) {
    return showError(error);
  }
  if (opening !== state.opening) return;
  state.stream = new SeriesStream({
    study: entry.study, series: entry.series, token: state.token, view: state.view, handlers: {
      series: (message) => seriesOpened(message),
      status: (message) => { state.status = message; showLink(); },
      level: (index, level) => levelIn(index, level),
      complete: (index) => frameVerified(index),
      damaged: (index) => showError(`Slice ${index + 1} arrived damaged (checksum mismatch); it stays a preview.`),
      problem: (message) => showError(`${message.code}: ${message.message}`),
      reconnecting: ({ attempt, attempts }) => showLinkNote(`connection lost · reconnecting… (attempt ${attempt} of ${attempts})`),
      failed: (text) => {
        showLinkNote("not connected");
        showError(`Series ${entry.series} could not be shown: ${text}`);
      },
    },
  });
  try {
    const displays = await seriesDisplay(entry.study, entry.series, state.token);
    if (opening !== state.opening) return;
    state.displays = displays;
    showPresets();
    draw();
    shareSoon();
  } catch (error) {
    if (opening === state.opening) showError(`Series ${entry.series} could not be shown: ${error.message}`);
  }
}

// On the first opening and on every reconnection.
function seriesOpened(message) {
  state.count = message.count;
  showLinkNote(null);
  if (state.view >= message.count) state.view = message.view; // the server said bad_frame_index
  Object.assign($("slice"), { max: String(message.count - 1), value: String(state.view) });
  draw();
}

function levelIn(index, level) {
  const { info } = state.stream.frames.get(index);
  // Every level is worth a look, the smaller ones on slow links; the last waits for its checksum.
  if (index === state.view && level < info.level_ends.length - 1) draw();
}

function frameVerified(index) {
  if (index === state.view) draw();
  showLink();
}

function showLinkNote(text) {
  state.linkNote = text;
  showLink();
}

// The measured link (or why there is none) and how many slices are diagnostic.
function showLink() {
  const { status, stream, linkNote } = state;
  const parts = [linkNote ?? (status && linkText(status))];
  if (state.count) parts.push(`${stream.verifiedCount}/${state.count} slices diagnostic`);
  $("image-link").textContent = parts.filter(Boolean).join(" · ");
  if (status) $("image-link").dataset.view = status.view;
}

function linkText(status) {
  const megabits = status.rate_bps / 1e6;
  const rate = !megabits ? "measuring" : megabits < 1000 ? `${megabits.toFixed(1)} Mbit/s` : `${(megabits / 1000).toFixed(1)} Gbit/s`;
  const rtt = status.rtt_ms === null ? "—" : `${status.rtt_ms} ms`;
  return `link ${rate} · RTT ${rtt}`;
}

// -- drawing --------------------------------------------------------------------------------

// The best we hold of the frame in view: the whole checked stream, else the largest level
// whose bytes are all in, smaller than the 1/4 preview too (on a very slow link the server's
// first look is a 1/8 or 1/16 level).
function bestLevel(entry) {
  const last = entry.info.level_ends.length - 1;
  if (entry.verified) return last;
  let level = -1;
  for (let l = 0; l < last; l += 1) if (entry.info.level_ends[l] <= entry.received) level = l;
  return level;
}

function draw() {
  const entry = state.stream?.frames.get(state.view);
  if (!entry) return showImage(null);
  const level = bestLevel(entry);
  if (level < 0) return showImage(null);
  const last = entry.info.level_ends.length - 1;
  // (A frame's entry is new when a reconnection found its stream changed.)
  if (state.image?.entry !== entry || state.image.level !== level) {
    try {
      state.image = { frame: state.view, entry, level, image: decode(state.stream.prefix(state.view, level), last - level) };
    } catch (error) {
      return showError(error);
    }
  }
  // Until the metadata is in, the stored values over their full range: a first look needs no
  // rescale, and a linear rescale would not change how it looks.
  const display = state.displays ? displayOf(state.view) : NO_RESCALE;
  if (state.displays) state.window ??= storedWindow();
  const windowing = state.window ?? fullRange(state.image.image, NO_RESCALE);
  showImage(entry.info, level === last, toImageData(state.image.image, display, windowing));
}

// info: the frame message (its full size); pixels: ImageData, smaller than that for a preview.
function showImage(info, diagnostic = false, pixels = null) {
  const canvas = $("image");
  const context = canvas.getContext("2d");
  const figure = $("image-figure");
  figure.dataset.frame = state.view;
  showSlice();
  showWindow();
  if (!pixels) {
    figure.dataset.quality = "none";
    $("image-quality").textContent = state.series ? "waiting for this slice…" : "";
    context.clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  [canvas.height, canvas.width] = info.shape;
  if (pixels.width === canvas.width) {
    context.putImageData(pixels, 0, 0);
  } else { // a preview: scaled up to the frame's size
    const small = new OffscreenCanvas(pixels.width, pixels.height);
    small.getContext("2d").putImageData(pixels, 0, 0);
    context.drawImage(small, 0, 0, canvas.width, canvas.height);
  }
  figure.dataset.quality = diagnostic ? "diagnostic" : "preview";
  $("image-quality").textContent = diagnostic ? "diagnostic (lossless)"
    : `preview · 1/${Math.round(canvas.width / pixels.width)} resolution`;
}

function showSlice() {
  $("image-slice").textContent = state.count ? `slice ${state.view + 1} of ${state.count}` : "";
}

function showWindow() {
  const w = state.window;
  $("image-window").textContent = w ? `W ${Math.round(w.width)} L ${Math.round(w.center)}` : "";
}

const displayOf = (frame) => state.displays.get(state.stream.frames.get(frame).info.sop_instance_uid) ?? NO_RESCALE;

// The window stored with the slice in view, else one over all its values.
function storedWindow() {
  const display = displayOf(state.image.frame);
  return display.width > 0 ? { center: display.center, width: display.width } : fullRange(state.image.image, display);
}

function showPresets() {
  const presets = [["Stored", null], ...(state.series.modality === "CT" ? CT_PRESETS : [])];
  $("window-presets").replaceChildren(...presets.map(([name, center, width]) => {
    const button = document.createElement("button");
    button.textContent = name;
    button.addEventListener("click", () => {
      if (state.image) setWindow(center === null ? storedWindow() : { center, width });
    });
    return button;
  }));
}

// -- reading: slices, window, pointer ---------------------------------------------------------

function moveTo(frame) {
  if (state.count) frame = Math.max(0, Math.min(state.count - 1, frame));
  if (!state.series || frame === state.view) return;
  state.view = frame;
  $("slice").value = String(frame);
  state.stream?.view(frame);
  clearTimeout(state.settle);
  state.settle = setTimeout(() => state.stream?.view(frame, "view"), SETTLE_MS);
  draw();
  shareSoon();
}

function setWindow({ center, width }) {
  state.window = { center, width: Math.max(1, width) };
  draw();
  shareSoon();
}

$("slice").addEventListener("input", (event) => moveTo(Number(event.target.value)));
$("image").addEventListener("wheel", (event) => {
  event.preventDefault();
  moveTo(state.view + Math.sign(event.deltaY));
}, { passive: false });
$("image").addEventListener("keydown", (event) => {
  const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1 }[event.key];
  if (!step) return;
  event.preventDefault();
  moveTo(state.view + step);
});

// Dragging sets the window: right for wider, down for a higher centre.
let drag = null;
$("image").addEventListener("pointerdown", (event) => {
  if (!state.window) return;
  $("image").setPointerCapture(event.pointerId);
  drag = { x: event.clientX, y: event.clientY, window: state.window };
});
$("image").addEventListener("pointermove", (event) => {
  const box = $("image").getBoundingClientRect();
  state.pointer = { x: clamp01((event.clientX - box.left) / box.width), y: clamp01((event.clientY - box.top) / box.height) };
  if (!drag) return shareSoon();
  const step = Math.max(1, drag.window.width / 200);
  setWindow({ center: drag.window.center + (event.clientY - drag.y) * step,
              width: drag.window.width + (event.clientX - drag.x) * step });
});
for (const type of ["pointerup", "pointercancel"]) $("image").addEventListener(type, () => { drag = null; });
const clamp01 = (value) => Math.max(0, Math.min(1, value));

// -- reading together -------------------------------------------------------------------------

function currentView() {
  return {
    series: state.series.series, slice: state.view,
    window_center: state.window?.center ?? null, window_width: state.window?.width ?? null,
    pointer_x: state.pointer?.x ?? null, pointer_y: state.pointer?.y ?? null,
  };
}

// While sharing, every change goes to the room, at most every SHARE_EVERY_MS.
function shareSoon() {
  if (!state.sharing || state.shareTimer) return;
  state.shareTimer = setTimeout(() => {
    state.shareTimer = null;
    if (state.sharing && state.series) state.share(currentView());
  }, SHARE_EVERY_MS);
}

// tellRoom false: someone else's view replaced ours in the room, which keeps only one.
function stopSharing(tellRoom = true) {
  if (state.sharing && tellRoom) state.share?.({ series: null });
  state.sharing = false;
  $("share-view").textContent = "Share view";
}

$("share-view").addEventListener("click", () => {
  if (state.sharing) return stopSharing();
  if (!state.series) return;
  state.sharing = true;
  $("share-view").textContent = "Stop sharing";
  state.share(currentView());
});

// view: a `view` event's view (null when sharing ended); sharer: who shares it.
async function followView(view, sharer) {
  $("image-following").textContent = view ? `Following ${sharer ?? "a participant"}'s view` : "";
  $("shared-pointer").hidden = !(view && view.pointer_x !== null && view.pointer_y !== null);
  if (!view) return;
  stopSharing(false);
  const entry = (await state.list).find((s) => s.series === view.series);
  if (!entry) return showError(`The shared series ${view.series} is not among this consult's images.`);
  const windowing = view.window_width > 0 ? { center: view.window_center, width: view.window_width } : null;
  if (state.series?.series !== entry.series) {
    await openSeries(entry, view.slice ?? 0, windowing);
  } else {
    if (windowing) state.window = windowing;
    moveTo(view.slice ?? state.view);
    draw(); // the window, if the slice stayed
  }
  Object.assign($("shared-pointer").style, { left: `${100 * view.pointer_x}%`, top: `${100 * view.pointer_y}%` });
}

$("close-viewer").addEventListener("click", closeViewer);

// For tests and debugging (like window.telemed in room.js): the samples of a checked frame
// exactly as decoded here, what the series socket received (connections opened, code-stream
// bytes; per frame [bytes held, stream length, verified]), and opening a series by its UIDs.
window.telemedViewer = {
  frameSamples(frame) {
    const entry = state.stream?.frames.get(frame);
    return entry?.verified ? decode(entry.bytes, 0).samples : null;
  },
  streamStats() {
    const frames = Object.fromEntries([...state.stream.frames].map(
      ([index, entry]) => [index, [entry.received, entry.info.length, entry.verified]]));
    return { ...state.stream.stats, frames };
  },
  openSeries: (study, series, frame = 0) => openSeries({ study, series }, frame),
};
