// The demo page: sign in (GET /token), then one WebSocket to /ws/<room>?token=...
// Reconnects by itself with backoff when the broker restarts; a refused token is shown.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;
let session = null; // {name, room, token}
let retry = 0;
let pending = null; // the timer of the next reconnection attempt

function show(text, kind = "") {
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  $("log").append(item);
  item.scrollIntoView({block: "end"});
}

function status(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

async function signIn(name, room, forged = false) {
  const reply = await fetch(`/token?name=${encodeURIComponent(name)}`);
  const body = await reply.json();
  if (!reply.ok) { status(body.error || "cannot sign in", "error"); return; }
  session = {name, room, forged, token: forged ? body.token.slice(0, -4) + "AAAA" : body.token};
  $("chat").hidden = false;
  // Signing in again replaces the session: the old socket closes without reconnecting.
  clearTimeout(pending);
  if (socket) { socket.onclose = null; socket.close(); }
  retry = 0;
  connect();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws/${encodeURIComponent(session.room)}?token=${session.token}`;
  let opened = false;
  status("connecting...");
  socket = new WebSocket(url);
  socket.onopen = () => { opened = true; retry = 0; status(`connected as ${session.name} in ${session.room}`, "ok"); };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (!opened) {
      // Refused before the upgrade: the broker answered the handshake with an HTTP error.
      show("refused at connect time: the token was not accepted, or the broker is down", "error");
      if (session.forged) { status("refused: the token is forged", "error"); return; }
    }
    const delay = Math.min(30, 2 ** retry++);
    status(`disconnected (code ${event.code}); reconnecting in ${delay} s`, "error");
    pending = setTimeout(reconnect, delay * 1000);
  };
}

async function reconnect() {
  // A restarted demo signs with a new secret, and tokens expire: ask for a fresh one first.
  // If the broker is still down, connect() fails too and schedules the next attempt.
  const mine = session;
  if (!mine.forged) {
    try {
      const reply = await fetch(`/token?name=${encodeURIComponent(mine.name)}`);
      if (reply.ok) mine.token = (await reply.json()).token;
    } catch (error) { /* still down */ }
  }
  if (session === mine) connect(); // unless the user signed in again meanwhile
}

function receive(message) {
  switch (message.type) {
    case "said": show(`${message.name}: ${message.text}`); break;
    case "joined": show(`${message.name} joined`, "notice"); break;
    case "left": show(`${message.name} left`, "notice"); break;
    case "announcement": show(`📣 ${message.name}: ${message.text}`, "announcement"); break;
    case "error": show(`error (${message.code}): ${message.reason}`, "error"); break;
    default: show(JSON.stringify(message));
  }
}

function send(type, text) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({type, text}));
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("name").value.trim(), $("room").value.trim());
});
$("badtoken").addEventListener("click", () => signIn($("name").value.trim() || "mallory", $("room").value.trim(), true));
$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  send("chat.say", $("text").value);
  $("text").value = "";
});
$("flood").addEventListener("click", () => { for (let n = 1; n <= 10; n++) send("chat.say", `flood ${n}`); });
$("announce").addEventListener("submit", (event) => {
  event.preventDefault();
  send("chat.announce", $("announcement").value);
  $("announcement").value = "";
});
