// The minimal telemed client: sign in, pick a consult, join its room (docs/signaling.md).
const $ = (id) => document.getElementById(id);
const state = { token: null, socket: null, participantId: null, stream: null, participants: new Map() };

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", ...(state.token ? { Authorization: `Bearer ${state.token}` } : {}) },
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || body.title || response.statusText);
  return body;
}

function show(section) {
  for (const id of ["login", "consults", "room"]) $(id).hidden = id !== section;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const login = await api("/api/login", { method: "POST", body: JSON.stringify(Object.fromEntries(form)) });
    state.token = login.token;
    $("who").textContent = `${login.user.full_name} (${login.user.role})`;
    await listConsults();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
});

async function listConsults() {
  show("consults");
  const rows = $("consult-rows");
  rows.replaceChildren();
  for (const consult of await api("/api/consults")) {
    const row = rows.insertRow();
    for (const value of [consult.patient_id, consult.specialty, consult.urgency, consult.state]) {
      row.insertCell().textContent = value;
    }
    const join = document.createElement("button");
    join.textContent = "Join room";
    join.dataset.consult = consult.id;
    join.addEventListener("click", () => joinRoom(consult.id).catch((e) => { $("consults-error").textContent = e.message; }));
    row.insertCell().append(join);
  }
}

async function joinRoom(consultId) {
  const grant = await api(`/api/consults/${consultId}/room-token`, { method: "POST" });
  show("room");
  $("room-name").textContent = consultId.slice(0, 8);
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    $("local").srcObject = state.stream;
  } catch (error) {
    $("room-error").textContent = `camera/microphone unavailable: ${error.message}`;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/rtc/${grant.room}`);
  state.socket = socket;
  socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "join", token: grant.token })));
  socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => { $("room-error").textContent ||= `disconnected (${event.code})`; });
}

function renderParticipants() {
  $("participants").replaceChildren(...[...state.participants.values()].map((p) => {
    const item = document.createElement("li");
    item.textContent = `${p.name}${p.participant_id === state.participantId ? " (you)" : ""}${p.is_host ? " · host" : ""}`;
    item.dataset.participant = p.participant_id;
    return item;
  }));
}

function handle(message) {
  switch (message.type) {
    case "joined":
    case "admitted":
      state.participantId ||= message.participant_id;
      for (const p of message.participants || []) state.participants.set(p.participant_id, p);
      $("recording").hidden = !message.recording;
      if (message.state === "waiting") $("room-error").textContent = "waiting for the host to admit you";
      renderParticipants();
      break;
    case "participant_joined":
      state.participants.set(message.participant.participant_id, message.participant);
      renderParticipants();
      break;
    case "participant_left":
      state.participants.delete(message.participant_id);
      renderParticipants();
      break;
    case "chat": {
      const line = document.createElement("li");
      line.textContent = `${message.name}: ${message.text}`;
      $("chat").append(line);
      break;
    }
    case "recording":
      $("recording").hidden = !message.on;
      break;
    case "room_closed":
    case "removed":
      $("room-error").textContent = message.type === "removed" ? "removed by the host" : "the consult has ended";
      break;
    case "error":
      $("room-error").textContent = `${message.code}: ${message.message}`;
      break;
  }
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = event.target.elements.text;
  state.socket?.send(JSON.stringify({ type: "chat", text: input.value }));
  input.value = "";
});

$("leave").addEventListener("click", () => {
  state.socket?.send(JSON.stringify({ type: "leave" }));
  state.stream?.getTracks().forEach((track) => track.stop());
  state.participants.clear();
  listConsults();
});
