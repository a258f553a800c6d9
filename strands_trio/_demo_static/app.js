// The demo page, on strands.js: sign in (GET /token), then one StrandsClient on /ws/<room>.
// strands.js reconnects (within 1.5 s of the broker being back), asks for a fresh token before
// every connection, and keeps what is sent meanwhile; this file only shows what happens.

const $ = (id) => document.getElementById(id);
let client = null;
let session = null; // {name, room, token, forged}
let outage = false; // a connection was lost and is not back yet: say so once, not per retry

/** Append a line to the chat log; returns it. */
function show(text, kind = "") {
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  $("log").append(item);
  item.scrollIntoView({block: "end"});
  return item;
}

function status(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

/** An error shown next to the sign-in form, or next to the message input. */
function signInError(text) { $("signin-error").textContent = text; }
function sayError(text) { $("say-error").textContent = text; }

let strands = null;
try {
  strands = await import("/strands.js");
} catch (error) {
  signInError(`cannot load /strands.js (${error.message}): is the broker running?`);
}

async function fetchToken(name) {
  const reply = await fetch(`/token?name=${encodeURIComponent(name)}`);
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || `the token endpoint answered ${reply.status}`);
  return body.token;
}

async function signIn(name, room, forged = false) {
  signInError("");
  if (!strands) { signInError("cannot sign in: /strands.js did not load"); return; }
  if (!name) { signInError("Enter a name to sign in: 1 to 32 characters."); $("name").focus(); return; }
  if (!room) { signInError("Enter a room to join."); $("room").focus(); return; }
  let token;
  try {
    token = await fetchToken(name);
  } catch (error) {
    signInError(`cannot sign in: ${error.message === "Failed to fetch" ? "the demo is not reachable" : error.message}`);
    return;
  }
  const previous = client;
  session = {name, room, forged, token: forged ? token.slice(0, -4) + "AAAA" : token, rooms: new Map(), held: [], client: null};
  if (previous) previous.close(); // signing in again replaces the session
  $("chat").hidden = false;
  $("log").replaceChildren();
  sayError("");
  $("older-note").textContent = $("room-error").textContent = "";
  outage = false;
  roomState(session, room);
  renderRooms(session);
  client = session.client = connect(session);
}

function connect(mine) {
  const chat = new strands.StrandsClient(`/ws/${encodeURIComponent(mine.room)}`, {
    // Before every (re)connection: a fresh token (a restarted demo may sign with a new
    // secret, and tokens expire), or the one we have while the broker is down.
    token: async () => {
      if (!mine.forged) {
        try { mine.token = await fetchToken(mine.name); } catch (error) { /* still down */ }
      }
      return mine.token;
    },
    tokenIn: "query",
    reconnect: {minDelay: 250, maxDelay: 1500, factor: 2, jitter: 0.5},
  });
  // Its lines are recovered after a reconnection even if none has come yet (strands.js).
  chat.follow(mine.room);
  status("connecting...", "waiting");
  let opened = false;
  chat.on("open", () => {
    status(`connected as ${mine.name} in ${mine.room}`, "ok");
    if (outage) show("reconnected", "notice");
    outage = false;
    if (!opened) loadOlder(mine, mine.room, true); // the recent lines, once
    // A new connection is in its first room only: join the others again (strands.js has
    // asked for what was missed in every room already).
    else for (const room of mine.rooms.keys()) if (room !== mine.room) joinRoom(mine, room, true);
    opened = true;
  });
  let retrying = false; // the last close will be retried: a refusal then is not final
  chat.on("close", (event) => {
    retrying = event.willReconnect;
    if (mine.forged && !event.wasOpen && event.code === 1006) {
      // A broker that refuses the handshake with an HTTP status (no close code) looks like a
      // broker that is down; this session's token is known to be forged, so say so and stop.
      retrying = false;
      chat.close();
      status(`refused: the forged token was not accepted (${event.explanation})`, "error");
      show("refused at connect time: the forged token was not accepted", "error");
      return;
    }
    if (event.willReconnect && !outage) {
      outage = true;
      show(`connection lost: ${event.explanation}`, "notice");
    } else if (!event.willReconnect && chat.state === "closed" && session === mine) {
      status(`disconnected: ${event.explanation}`, "error");
    }
  });
  chat.on("reconnecting", (event) => {
    if (chat.state === "closed") return; // closed by this page meanwhile
    status(`reconnecting in ${(event.delay / 1000).toFixed(1)} s (attempt ${event.attempt})`, "waiting");
  });
  chat.on("refused", (event) => {
    if (retrying) return; // e.g. no backend yet, during a restart: the status says "reconnecting"
    status(`refused: ${event.explanation}`, "error");
    show(`refused (${event.code}): ${event.explanation}${event.reason ? ` (${event.reason})` : ""}`, "error");
  });
  chat.on("error", (event) => {
    if (session !== mine) return; // the session this client served was replaced
    const text = `error (${event.code}): ${event.reason || "no reason given"}`;
    if (event.source === "server") show(text, "error");
    sayError(text);
  });
  chat.on("said", (message) => showSaid(mine, message));
  // strands.js could not give what was missed in a room (its history was lost, or no longer
  // reaches back): say so, and reload the room's recent lines.
  chat.on("recovery_failed", ({room, reason}) => {
    if (session !== mine) return;
    show(`could not recover what was said in ${room} (${reason}): reloading its recent lines`, "notice");
    // The lines shown are of a history that is gone (another epoch) or has a hole: drop them
    // (strands.js delivers the room's held lines after this event).
    for (const item of linesOf(room)) item.remove();
    loadOlder(mine, room, true);
  });
  chat.on("joined", (message) => show(`${message.name} joined`, "notice").dataset.room = message.room);
  chat.on("left", (message) => show(`${message.name} left`, "notice").dataset.room = message.room);
  chat.on("announcement", (message) => show(`📣 ${message.name}: ${message.text}`, "announcement"));
  chat.on("members", (message) => setMembers(mine, message.room, message.names));
  return chat;
}

/** This session's rooms: the one signed in to first, then the joined ones, in the selector. */
function roomState(mine, room) {
  if (!mine.rooms.has(room)) mine.rooms.set(room, {members: [], more: true});
  return mine.rooms.get(room);
}

function renderRooms(mine) {
  const target = $("target");
  const current = target.value;
  target.replaceChildren(...[...mine.rooms.keys()].map((room) => new Option(room, room)));
  target.value = mine.rooms.has(current) ? current : mine.room;
  $("leave").disabled = target.value === mine.room;
  renderMembers(mine);
}

/** The "Here:" list: who is in the room selected. */
function renderMembers(mine) {
  const state = mine.rooms.get($("target").value);
  $("members").replaceChildren(...(state ? state.members : []).map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    return item;
  }));
}

function setMembers(mine, room, names) {
  if (session !== mine || !mine.rooms.has(room)) return;
  mine.rooms.get(room).members = names;
  if ($("target").value === room) renderMembers(mine);
}

/** The chat lines shown of a room, in the log's order. */
function linesOf(room) {
  return [...$("log").querySelectorAll("li[data-offset]")].filter((item) => item.dataset.room === room);
}

/**
 * Show a chat line ({room, epoch, offset, name, text}) once: one shown already (same room,
 * epoch and offset) is skipped, and one older than lines shown of its room goes before them,
 * so that each room's lines keep their order whether they came live, recovered or loaded.
 */
function showSaid(mine, message, older = false) {
  if (session !== mine) return;
  const {room, epoch, offset} = message;
  const lines = linesOf(room).filter((item) => item.dataset.epoch === epoch);
  if (lines.some((item) => Number(item.dataset.offset) === offset)) return;
  // A line of ours that was queued is delivered: the room's copy replaces its pending line.
  if (!older && message.name === mine.name) {
    const line = [...$("log").querySelectorAll("li.pending")].find((item) => item.dataset.text === message.text);
    if (line) line.remove();
  }
  const item = document.createElement("li");
  item.textContent = `${message.name}: ${message.text}`;
  Object.assign(item.dataset, {room, epoch, offset: String(offset)});
  const later = lines.find((other) => Number(other.dataset.offset) > offset);
  if (later) later.before(item);
  else if (older) $("log").prepend(item);
  else { $("log").append(item); item.scrollIntoView({block: "end"}); }
}

/** Ask for the lines of *room* before the oldest shown (or its recent lines), and show them. */
async function loadOlder(mine, room, recent = false) {
  const note = (text, kind = "error") => { $("older-note").textContent = text; $("older-note").className = kind; };
  note("");
  const shown = linesOf(room);
  const before = recent || !shown.length ? null : Math.min(...shown.map((item) => Number(item.dataset.offset)));
  let page;
  try {
    page = await mine.client.call("chat.older", {room, before});
  } catch (error) {
    if (session === mine) note(`could not load older lines (${error.code}): ${error.reason}`);
    return;
  }
  if (session !== mine) return;
  // Lines of an epoch gone (the backend restarted) cannot be ordered with the new ones.
  if (page.epoch) for (const item of linesOf(room)) if (item.dataset.epoch !== page.epoch) item.remove();
  for (const line of [...page.lines].reverse()) showSaid(mine, {room, epoch: page.epoch, ...line}, true);
  roomState(mine, room).more = page.more;
  if (!recent && !page.lines.length) note(`no older lines in ${room}`, "hint");
}

/** Join another room (a call: the answer is its members), or leave the one selected. */
async function joinRoom(mine, room, quiet = false) {
  $("room-error").textContent = "";
  try {
    const members = await mine.client.call("chat.join", {room});
    if (session !== mine) return;
    roomState(mine, room).members = members.names;
    mine.client.follow(room);
    renderRooms(mine);
    // Lines typed for this room while the connection was down go out now that we are back in it.
    const held = mine.held.filter((payload) => payload.room === room);
    mine.held = mine.held.filter((payload) => payload.room !== room);
    for (const payload of held) mine.client.send("chat.say", payload);
    if (!quiet) { $("target").value = room; renderRooms(mine); loadOlder(mine, room, true); }
  } catch (error) {
    if (session !== mine) return;
    $("room-error").textContent = `cannot join ${room} (${error.code}): ${error.reason}`;
    if (quiet) { mine.rooms.delete(room); renderRooms(mine); }
    if (mine.held.some((payload) => payload.room === room)) {
      sayError(`lines for ${room} were not sent: cannot join it again (${error.reason})`);
      mine.held = mine.held.filter((payload) => payload.room !== room);
    }
  }
}

async function leaveRoom(mine, room) {
  $("room-error").textContent = "";
  try {
    await mine.client.call("chat.leave", {room});
  } catch (error) {
    $("room-error").textContent = `cannot leave ${room} (${error.code}): ${error.reason}`;
    return;
  }
  mine.rooms.delete(room);
  mine.client.unfollow(room); // no recovery of a room left
  renderRooms(mine);
  show(`you left ${room}`, "notice").dataset.room = room;
}

/** Send a typed message; one that cannot go now is queued and shown as pending. */
function send(type, payload) {
  if (!client) return false;
  sayError("");
  const before = client.queued;
  if (type === "chat.say" && client.state !== "open" && payload.room !== session.room) {
    // A new connection is in its first room only: a line for another room waits here until
    // the page has joined that room again (see joinRoom), or the room would refuse it.
    session.held.push(payload);
    const line = show(`${session.name}: ${payload.text}`, "pending");
    Object.assign(line.dataset, {text: payload.text, room: payload.room});
    return true;
  }
  client.send(type, payload);
  if (client.queued > before && type === "chat.say") {
    const line = show(`${session.name}: ${payload.text}`, "pending"); // until the room echoes it
    Object.assign(line.dataset, {text: payload.text, room: payload.room});
  }
  return client.queued > before || client.state === "open";
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("name").value.trim(), $("room").value.trim());
});
$("badtoken").addEventListener("click", () => signIn($("name").value.trim() || "mallory", $("room").value.trim(), true));
$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  // The input is cleared only when the line was sent or queued: nothing typed is lost.
  if (send("chat.say", {text: $("text").value, room: $("target").value})) $("text").value = "";
});
$("flood").addEventListener("click", () => {
  for (let n = 1; n <= 10; n++) send("chat.say", {text: `flood ${n}`, room: $("target").value});
});
$("announce").addEventListener("submit", (event) => {
  event.preventDefault();
  if (send("chat.announce", {text: $("announcement").value})) $("announcement").value = "";
});
$("rooms").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("newroom").value.trim();
  if (!session || !room) return;
  $("newroom").value = "";
  joinRoom(session, room);
});
$("leave").addEventListener("click", () => { if (session) leaveRoom(session, $("target").value); });
$("target").addEventListener("change", () => {
  if (!session) return;
  $("leave").disabled = $("target").value === session.room;
  $("older-note").textContent = "";
  renderMembers(session);
});
$("older").addEventListener("click", () => { if (session) loadOlder(session, $("target").value); });
