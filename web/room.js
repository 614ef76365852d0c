// A consult's room (docs/signaling.md): the signaling socket, participants, chat, and media:
// our camera and microphone if the room token allows publishing, everyone else's tracks.
import { RoomMedia } from "./media.js";
import * as tiles from "./tiles.js";

const $ = (id) => document.getElementById(id);
const state = {
  socket: null, participantId: null, iceServers: [], kind: null, onLeave: null, onSharedView: null,
  stream: null, media: null, speaker: null, participants: new Map(),
  grant: null, resumeToken: null, droppedAt: null, retry: null,
};
// The server keeps a dropped participant's seat and media for this long (docs/signaling.md).
const RESUME_GRACE_MS = 30_000;
// For tests and debugging: the current peer connections.
window.telemed = {
  get publisher() { return state.media?.publisher ?? null; },
  get subscriber() { return state.media?.subscriber ?? null; },
};

// -- signaling --------------------------------------------------------------------------------

// grant: from POST /api/consults/{id}/room-token; onLeave: called when the user leaves;
// onSharedView(view, sharer name): an image view someone shares (null: they stopped).
export function openRoom(grant, onLeave, onSharedView = null) {
  resetRoom();
  state.onLeave = onLeave;
  state.onSharedView = onSharedView;
  state.grant = grant;
  connect({ type: "join", token: grant.token });
}

function connect(join) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/rtc/${state.grant.room}`);
  state.socket = socket;
  socket.addEventListener("open", () => send(join));
  socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => socketClosed(socket, event));
}

function send(message) {
  if (state.socket?.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

// Reading images together: everyone else's viewer follows this view (docs/signaling.md).
export function shareView(view) {
  send({ type: "share_view", ...view });
}

// A dropped link (no close from the server, 1006, or 1001 while it restarts) is resumed: the
// media connections keep running meanwhile. 1000 (left, removed, consult ended) and 1008
// (refused) are final.
function socketClosed(socket, event) {
  if (socket !== state.socket) return; // we left on purpose
  state.socket = null;
  state.droppedAt ??= Date.now();
  const final = event.code === 1000 || event.code === 1008 || !state.resumeToken;
  if (!final && Date.now() - state.droppedAt < RESUME_GRACE_MS) {
    $("media-status").textContent = "Connection lost, reconnecting…";
    const attempt = Math.min(2 ** (state.retry ?? 0) * 500, 4000);
    state.retry = (state.retry ?? 0) + 1;
    setTimeout(() => {
      if (state.grant) connect({ type: "join", token: state.grant.token, resume: state.resumeToken });
    }, attempt);
    return;
  }
  endMedia();
  showError($("room-error").textContent || `disconnected (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
}

function showError(text) {
  $("room-error").textContent = text;
}

function resetRoom() {
  Object.assign(state, { participantId: null, kind: null, speaker: null, resumeToken: null,
                         droppedAt: null, retry: null });
  state.participants.clear();
  for (const id of ["chat", "participants", "media-status", "room-error"]) $(id).replaceChildren();
  $("recording").hidden = true;
  $("record").hidden = true;
  tiles.clearTiles();
}

const handlers = {
  joined: enterRoom,
  admitted: enterRoom,
  participant_joined: (m) => updateParticipant(m.participant),
  participant_reconnecting: (m) => updateParticipant({ participant_id: m.participant_id, state: "reconnecting" }),
  participant_resumed: (m) => updateParticipant({ participant_id: m.participant_id, state: "active" }),
  participant_left: participantLeft,
  presenter_changed: presenterChanged,
  track_published: (m) => state.media?.tracksPublished([m.track]),
  track_unpublished: (m) => state.media?.trackUnpublished(m.track_id),
  track_muted: trackMuted,
  mute_requested: (m) => { $("media-status").textContent = `The host muted your ${m.kind === "audio" ? "microphone" : "camera"}.`; },
  offer: (m) => state.media?.subscriberOffer(m),
  answer: (m) => state.media?.publisherAnswer(m.sdp).catch((e) => showError(`media: ${e.message}`)),
  recording: (m) => showRecording(m.on),
  active_speaker: (m) => setSpeaker(m.participant_id),
  chat: addChat,
  view: (m) => state.onSharedView?.(m.view, nameOf(m.participant_id)),
  room_closed: () => showError("the consult has ended"),
  removed: () => showError("removed by the host"),
  error: (m) => {
    if (m.code === "resume_failed") state.resumeToken = null; // the seat is gone: stop trying
    showError(`${m.code}: ${m.message}`);
  },
};

// Only hosts record; everyone is told while it runs (the server says so to all).
function showRecording(on) {
  $("recording").hidden = !on;
  $("record").textContent = on ? "Stop recording" : "Start recording";
  $("record").dataset.on = on ? "1" : "";
}

$("record").addEventListener("click", () => send({ type: "record", on: !$("record").dataset.on }));

function handle(message) {
  handlers[message.type]?.(message);
}

function enterRoom(message) {
  state.participantId ||= message.participant_id;
  if (message.resume_token) state.resumeToken = message.resume_token;
  Object.assign(state, { droppedAt: null, retry: null });
  state.iceServers = message.ice_servers || state.iceServers;
  if (message.state === "waiting") {
    $("media-status").textContent = "Waiting for the host to admit you.";
    return;
  }
  $("media-status").textContent = "";
  state.kind = message.kind;
  $("room-kind").textContent = message.kind === "round" ? "Ward round" : "Consult";
  const present = new Set((message.participants || []).map((p) => p.participant_id));
  for (const id of state.participants.keys()) { // left while our link was down
    if (!present.has(id)) participantLeft({ participant_id: id });
  }
  for (const p of message.participants || []) state.participants.set(p.participant_id, p);
  $("record").hidden = !me()?.is_host;
  showRecording(message.recording);
  renderParticipants();
  startMedia(message.tracks || []);
  const shared = message.shared_view; // a late joiner opens what the others are reading
  if (shared && shared.participant_id !== state.participantId) state.onSharedView?.(shared, nameOf(shared.participant_id));
}

// -- participants -----------------------------------------------------------------------------

const me = () => state.participants.get(state.participantId);
const nameOf = (id) => state.participants.get(id)?.name ?? "guest";

function updateParticipant(change) {
  const known = state.participants.get(change.participant_id);
  state.participants.set(change.participant_id, { ...known, ...change });
  tiles.renameTile(change.participant_id, nameOf(change.participant_id));
  renderParticipants();
}

function participantLeft(message) {
  state.participants.delete(message.participant_id);
  state.media?.participantLeft(message.participant_id);
  tiles.removeParticipant(message.participant_id);
  renderParticipants();
}

function renderParticipants() {
  $("participants").replaceChildren(...[...state.participants.values()].map((p) => {
    const item = document.createElement("li");
    const role = state.kind === "round" ? (p.can_publish ? " · presenter" : " · viewer") : "";
    const away = p.state === "reconnecting" ? " (reconnecting)" : "";
    item.textContent = `${p.name}${p.participant_id === state.participantId ? " (you)" : ""}${p.is_host ? " · host" : ""}${role}${away}`;
    item.dataset.participant = p.participant_id;
    return item;
  }));
  if (state.speaker) tiles.setSpeaking(state.speaker);
}

function setSpeaker(participantId) {
  state.speaker = participantId;
  tiles.setSpeaking(participantId);
}

// In a ward round the presenter role moves: only the new presenter publishes.
function presenterChanged(message) {
  for (const p of state.participants.values()) {
    if (p.participant_id === message.participant_id) p.can_publish = true;
    else if (state.kind === "round") p.can_publish = false;
  }
  renderParticipants();
  if (me()?.can_publish) publishCamera();
  else stopCamera();
}

function addChat(message) {
  const line = document.createElement("li");
  line.textContent = `${message.name}: ${message.text}`;
  $("chat").append(line);
}

// -- media ------------------------------------------------------------------------------------

function startMedia(tracks) {
  state.media ||= new RoomMedia({
    send, iceServers: state.iceServers, selfId: state.participantId,
    onRemote: showRemote,
    onError: (text) => showError(`media: ${text}`),
  });
  state.media.tracksPublished(tracks);
  if (me()?.can_publish) publishCamera();
  else $("media-status").textContent = state.kind === "round"
    ? "You are viewing this ward round: only the presenter shares camera and sound."
    : "Your room token does not allow sharing your camera or sound.";
}

function showRemote(info, track) {
  const id = info.participant_id;
  tiles.setRemoteTrack(id, nameOf(id), info.kind, track);
  if (track && info.kind === "video") tiles.setVideoMuted(id, info.muted);
}

async function publishCamera() {
  if (state.stream || !state.media) return;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (error) {
    showError(`camera/microphone unavailable: ${error.message}`);
    return;
  }
  if (!state.media || state.stream) { // left the room, or published meanwhile
    stream.getTracks().forEach((track) => track.stop());
    return;
  }
  state.stream = stream;
  $("media-status").textContent = "";
  $("local").srcObject = stream;
  $("local-tile").hidden = false;
  $("local-tile").dataset.participant = state.participantId;
  state.media.publish(stream).catch((error) => showError(`media: ${error.message}`));
}

function stopCamera() {
  state.media?.stopPublishing();
  state.stream?.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $("local").srcObject = null;
  $("local-tile").hidden = true;
}

function trackMuted(message) {
  const track = state.media?.tracks.get(message.track_id);
  if (!track) return;
  track.muted = message.muted;
  if (track.kind === "video" && track.participant_id !== state.participantId) {
    tiles.setVideoMuted(track.participant_id, message.muted);
  }
}

function endMedia() {
  stopCamera();
  state.media?.close();
  state.media = null;
  tiles.clearTiles();
}

// -- page controls ----------------------------------------------------------------------------

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = event.target.elements.text;
  send({ type: "chat", text: input.value });
  input.value = "";
});

$("leave").addEventListener("click", () => {
  send({ type: "leave" });
  state.socket = null; // the server closes it; that is no error
  endMedia();
  resetRoom();
  state.onLeave?.();
});
