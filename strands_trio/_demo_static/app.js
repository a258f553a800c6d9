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
  session = {name, room, forged, token: forged ? token.slice(0, -4) + "AAAA" : token};
  if (previous) previous.close(); // signing in again replaces the session
  $("chat").hidden = false;
  $("log").replaceChildren();
  $("members").replaceChildren();
  sayError("");
  outage = false;
  client = connect(session);
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
  status("connecting...", "waiting");
  chat.on("open", () => {
    status(`connected as ${mine.name} in ${mine.room}`, "ok");
    if (outage) show("reconnected", "notice");
    outage = false;
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
  // The room's last lines, sent privately at every connection: after a broker restart they
  // hold what was said while this page was away. Lines already shown are skipped.
  chat.on("history", (message) => { for (const line of message.lines) showSaid(mine, line); });
  chat.on("joined", (message) => show(`${message.name} joined`, "notice"));
  chat.on("left", (message) => show(`${message.name} left`, "notice"));
  chat.on("announcement", (message) => show(`📣 ${message.name}: ${message.text}`, "announcement"));
  chat.on("members", (message) => {
    $("members").replaceChildren(...message.names.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }));
  });
  return chat;
}

/**
 * Show a chat line ({id, name, text}) once: a line whose id is shown already is skipped, and
 * one older than lines shown goes before them (ids increase in a room), so that the log
 * keeps the room's order whether a line came as "said" or in a "history".
 */
function showSaid(mine, message) {
  const log = $("log");
  const id = String(message.id);
  if ([...log.querySelectorAll("li[data-id]")].some((item) => item.dataset.id === id)) return;
  // A line of ours that was queued is delivered: the room's copy replaces its pending line.
  if (message.name === mine.name) {
    const line = [...log.querySelectorAll("li.pending")].find((item) => item.dataset.text === message.text);
    if (line) line.remove();
  }
  const item = show(`${message.name}: ${message.text}`);
  item.dataset.id = id;
  const later = [...log.querySelectorAll("li[data-id]")].find((other) => Number(other.dataset.id) > message.id);
  if (later) later.before(item);
}

/** Send a typed message; one that cannot go now is queued and shown as pending. */
function send(type, text) {
  if (!client) return false;
  sayError("");
  const before = client.queued;
  client.send(type, {text});
  if (client.queued > before && type === "chat.say") {
    show(`${session.name}: ${text}`, "pending").dataset.text = text; // until the room echoes it
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
  if (send("chat.say", $("text").value)) $("text").value = "";
});
$("flood").addEventListener("click", () => { for (let n = 1; n <= 10; n++) send("chat.say", `flood ${n}`); });
$("announce").addEventListener("submit", (event) => {
  event.preventDefault();
  if (send("chat.announce", $("announcement").value)) $("announcement").value = "";
});
