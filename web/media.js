// The two peer connections of a room (docs/signaling.md, "Media"), LiveKit style:
// the publisher carries our camera and microphone (we offer, the server answers),
// the subscriber carries what we subscribed to (the server offers, we answer).
// This module knows nothing about the page: it reports remote tracks through callbacks.

// Chromium hides host addresses behind mDNS names (*.local) when the page has no camera
// permission; a server cannot resolve those, and learns the address from our ICE checks anyway.
const usable = (candidate) => candidate.candidate === "" || !/ [0-9a-f-]+\.local /i.test(candidate.candidate);

// Holds a connection's trickled candidates until the server can take them: the server refuses
// a candidate for a connection that has no remote description yet (out_of_order).
class Trickle {
  constructor(send, target) {
    this.send = send;
    this.target = target;
    this.held = [];
    this.open = false;
  }

  add(candidate) {
    if (!usable(candidate)) return;
    const message = {
      type: "candidate", target: this.target, candidate: candidate.candidate,
      sdp_mid: candidate.sdpMid, sdp_mline_index: candidate.sdpMLineIndex,
    };
    if (this.open) this.send(message);
    else this.held.push(message);
  }

  release() {
    this.open = true;
    for (const message of this.held.splice(0)) this.send(message);
  }
}

export class RoomMedia {
  // send(message): to the signaling socket; iceServers: from `joined`;
  // onRemote(info, track | null): a remote track (info as in track_published) appears or goes;
  // onError(text): something the user should see.
  constructor({ send, iceServers, selfId, onRemote, onError }) {
    Object.assign(this, { send, iceServers, selfId, onRemote, onError });
    this.publisher = null;
    this.subscriber = null;
    this.connectionId = null;
    this.tracks = new Map(); // track id -> {track_id, participant_id, kind, muted, mid}
    this.mids = {}; // subscriber mid -> track id, from the server's last offer
    this.shown = new Map(); // track id -> {info, track} handed to onRemote
    this.queue = Promise.resolve(); // subscriber offers are answered one at a time
    this.closed = false;
  }

  newConnection(target) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const trickle = new Trickle(this.send, target);
    pc.addEventListener("icecandidate", (event) => event.candidate && trickle.add(event.candidate));
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") this.onError(`${target} connection failed`);
    });
    return { pc, trickle };
  }

  // -- publishing ---------------------------------------------------------------------------

  async publish(stream) {
    const { pc, trickle } = this.newConnection("publisher");
    this.publisher = pc;
    this.publisherTrickle = trickle;
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    this.send({ type: "offer", sdp: pc.localDescription.sdp });
  }

  async publisherAnswer(sdp) {
    if (!this.publisher) return;
    await this.publisher.setRemoteDescription({ type: "answer", sdp });
    this.publisherTrickle.release();
  }

  stopPublishing() {
    this.publisher?.close();
    this.publisher = null;
  }

  // -- subscribing --------------------------------------------------------------------------

  // Tracks from the room snapshot or a track_published event: subscribe to everyone else's.
  tracksPublished(tracks) {
    const wanted = [];
    for (const track of tracks) {
      this.tracks.set(track.track_id, track);
      if (track.participant_id !== this.selfId) wanted.push(track.track_id);
    }
    if (wanted.length) this.send({ type: "subscribe", track_ids: wanted });
  }

  trackUnpublished(trackId) {
    this.tracks.delete(trackId);
    this.showRemote();
  }

  participantLeft(participantId) {
    for (const [id, track] of this.tracks) if (track.participant_id === participantId) this.tracks.delete(id);
    this.showRemote();
  }

  subscriberOffer(message) {
    this.queue = this.queue.then(() => this.answer(message)).catch((error) => this.onError(`subscriber: ${error.message}`));
    return this.queue;
  }

  async answer({ sdp, tracks, connection }) {
    if (this.closed) return;
    if (!this.subscriber || connection !== this.connectionId) this.freshSubscriber(connection);
    const pc = this.subscriber;
    this.mids = tracks || {};
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.send({ type: "answer", sdp: pc.localDescription.sdp });
    this.subscriberTrickle.release();
    this.showRemote();
  }

  freshSubscriber(connection) {
    this.subscriber?.close();
    const { pc, trickle } = this.newConnection("subscriber");
    this.subscriber = pc;
    this.subscriberTrickle = trickle;
    this.connectionId = connection;
    this.mids = {};
    this.showRemote();
  }

  // Hands each live remote track to the page, and withdraws the ones that ended (sections the
  // server made inactive, tracks unpublished, participants gone). One video per participant.
  showRemote() {
    const live = new Map();
    for (const transceiver of this.subscriber?.getTransceivers() || []) {
      const info = this.tracks.get(this.mids[transceiver.mid]);
      if (!info || info.participant_id === this.selfId) continue;
      live.set(info.track_id, { info, track: transceiver.receiver.track });
    }
    for (const [id, old] of this.shown) {
      if (live.get(id)?.track !== old.track) this.onRemote(old.info, null);
    }
    for (const [id, now] of live) {
      if (this.shown.get(id)?.track !== now.track) this.onRemote(now.info, now.track);
    }
    this.shown = live;
  }

  // -- ending -------------------------------------------------------------------------------

  close() {
    this.closed = true;
    this.stopPublishing();
    this.subscriber?.close();
    this.subscriber = null;
    this.tracks.clear();
    this.showRemote();
  }
}
