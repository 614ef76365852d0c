// The room's video tiles: one labelled <video> per remote participant with video, a hidden
// <audio> per participant with sound, the local preview, and who is speaking.
const remote = () => document.getElementById("remote");
const selector = (participantId) => `[data-participant="${CSS.escape(participantId)}"]`;

function tile(participantId, name) {
  let figure = remote().querySelector(`figure${selector(participantId)}`);
  if (!figure) {
    figure = document.createElement("figure");
    figure.className = "tile";
    figure.dataset.participant = participantId;
    const video = Object.assign(document.createElement("video"), { autoplay: true, playsInline: true, muted: true });
    video.setAttribute("aria-label", `video of ${name}`);
    const caption = document.createElement("figcaption");
    caption.textContent = name;
    figure.append(video, caption);
    remote().append(figure);
  }
  return figure;
}

function audio(participantId) {
  let element = remote().querySelector(`audio${selector(participantId)}`);
  if (!element) {
    element = Object.assign(document.createElement("audio"), { autoplay: true, hidden: true });
    element.dataset.participant = participantId;
    remote().append(element);
  }
  return element;
}

// A remote participant's track of one kind appears (track) or goes (null).
export function setRemoteTrack(participantId, name, kind, track) {
  if (!track) {
    remote().querySelector(`${kind === "video" ? "figure" : "audio"}${selector(participantId)}`)?.remove();
    return;
  }
  const element = kind === "video" ? tile(participantId, name).querySelector("video") : audio(participantId);
  element.srcObject = new MediaStream([track]);
  element.play().catch(() => {}); // autoplay may wait for the user; the element retries on its own
}

export function removeParticipant(participantId) {
  for (const element of remote().querySelectorAll(selector(participantId))) element.remove();
}

export function renameTile(participantId, name) {
  const figure = remote().querySelector(`figure${selector(participantId)}`);
  if (figure) figure.querySelector("figcaption").textContent = name;
}

export function setVideoMuted(participantId, muted) {
  remote().querySelector(`figure${selector(participantId)}`)?.classList.toggle("muted", muted);
}

// Highlights the speaker everywhere it appears: its tile (or our own) and the participant list.
export function setSpeaking(participantId) {
  for (const element of document.querySelectorAll(".speaking")) element.classList.remove("speaking");
  for (const element of document.querySelectorAll(`#room ${selector(participantId)}:not(audio)`)) {
    element.classList.add("speaking");
  }
}

export function clearTiles() {
  remote().replaceChildren();
}
