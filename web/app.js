// The minimal telemed client: sign in, pick a consult, join its room (room.js).
import { openRoom, shareView } from "./room.js";
import { closeViewer, followSharedView, openViewer } from "./viewer.js";
import { ecgButtons } from "./ecg.js";

const $ = (id) => document.getElementById(id);
const state = { token: null };

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
    join.addEventListener("click", () => joinRoom(consult).catch((e) => { $("consults-error").textContent = e.message; }));
    const images = document.createElement("button");
    images.textContent = "Images";
    images.dataset.images = consult.id;
    images.addEventListener("click", () => openViewer({ consult, token: state.token }));
    row.insertCell().append(join, images);
    row.lastChild.append(...ecgButtons(consult, state.token));
  }
}

async function joinRoom(consult) {
  const grant = await api(`/api/consults/${consult.id}/room-token`, { method: "POST" });
  show("room");
  $("room-name").textContent = `— patient ${consult.patient_id}, ${consult.specialty}`;
  // In the room the viewer can share its view, and opens the views the others share.
  const viewing = { consult, token: state.token, share: shareView };
  $("room-images").onclick = () => openViewer(viewing);
  openRoom(grant, () => { closeViewer(); listConsults(); }, (view, sharer) => followSharedView(viewing, view, sharer));
}
