// strands.js 0.1.0
/**
 * strands.js: a browser client for a strands-trio (or PyStrands) broker.
 *
 * One ES module, no build step, no dependencies. The broker serves it at `/strands.js`:
 *
 *     import { StrandsClient } from "/strands.js";
 *     const client = new StrandsClient("/ws/lobby", { token: async () => getToken() });
 *     client.on("chat.said", (message) => show(message.text));
 *     client.send("chat.say", { text: "hi" });
 *     const older = await client.call("chat.history", { before: 20 }); // the handler's return
 *
 * Theory of operation. A client is one logical connection made of successive WebSockets.
 * Each attempt asks the token provider for a token, builds the URL (or the subprotocols),
 * and opens a socket. On open, the sends queued meanwhile are written in order, then "open" is
 * emitted. When a socket closes without client.close(), the close code decides: an auth
 * refusal (4401/4403) stops unless the provider gives a new token, a normal close by the
 * server (1000) or a replaced connection stops, anything else reconnects after a backoff
 * delay (exponential, capped, with jitter). Nothing is dropped silently: every send that is
 * refused or thrown away is reported by an "error" event. See docs/javascript-client.md.
 *
 * Room history (docs/history.md). A message that carries `room`, `offset` and `epoch` is a
 * kept room message: the client remembers, per room, the epoch and the last offset it
 * delivered, delivers each offset once and in order, and holds back a message that comes
 * after a gap while it asks the backend for what is missing (`strands.recover`). After every
 * reconnection it asks for every room it knows; until `strands.recovered` answers, the
 * replayed and the live messages of those rooms are held, then delivered in offset order.
 *
 * Calls. call() sends a typed message with a correlation id (the `replyField`, "ref") and
 * keeps its promise in `_calls` until the backend answers: a `reply` frame with that ref
 * resolves it, an `error` frame with that ref rejects it (and is no global "error" event), and
 * so do its own timeout, the loss of the socket it was written on, or the end of the client.
 * A call made while not open is queued like a send, and leaves the queue if it times out
 * first. See docs/replies.md.
 */

/** The version of this file; the broker sends it as `X-Strands-Version`. */
export const VERSION = "0.1.0";

/** Close codes by which the broker or a backend refuses a connection. */
export const REFUSAL_CODES = Object.freeze([4401, 4403, 4429, 4503, 4504]);

const AUTH_CODES = [4401, 4403];
const LIFECYCLE = ["open", "close", "reconnecting", "refused", "message", "error"];

const CLOSE_WORDS = {
  1000: "closed normally",
  1001: "going away: the broker is shutting down or restarting",
  1002: "protocol error",
  1003: "unsupported data",
  1005: "closed without a status code",
  1006:
    "could not connect or the connection was cut (the broker may be down, unreachable, " +
    "full, or refused the handshake)",
  1007: "invalid data (not UTF-8 text)",
  1008: "policy violation (for instance a client too slow to read its messages)",
  1009: "message too big",
  1010: "a required extension is missing",
  1011: "server error",
  1012: "the server is restarting",
  1013: "try again later",
  1015: "TLS handshake failed",
  4401: "not authenticated: the token is missing, expired or invalid",
  4403: "refused by the backend",
  4429: "too many requests or connections: slow down",
  4503: "no backend is connected to the broker",
  4504: "the backend did not answer in time",
};

/**
 * Words for a WebSocket close code, with the reason when there is one.
 *
 * @param {number} code - The close code (CloseEvent.code).
 * @param {string} [reason] - The close reason (CloseEvent.reason).
 * @returns {string} For example "refused by the backend: banned".
 */
export function explainClose(code, reason) {
  let words = CLOSE_WORDS[code];
  if (words === undefined) {
    if (code >= 4000 && code <= 4999) words = `closed by the application (code ${code})`;
    else if (code >= 3000 && code <= 3999) words = `closed by a library or framework (code ${code})`;
    else words = `closed with code ${code}`;
  }
  return reason ? `${words}: ${reason}` : words;
}

/**
 * The delay before reconnection attempt number `attempt` (1, 2, ...): `minDelay * factor **
 * (attempt - 1)`, capped at `maxDelay`, then drawn uniformly within `[delay * (1 - jitter),
 * delay]` (full jitter).
 *
 * @param {number} attempt - The attempt's number, from 1.
 * @param {{minDelay: number, maxDelay: number, factor: number, jitter: number}} options
 * @param {() => number} [random] - A source of numbers in [0, 1).
 * @returns {number} Milliseconds.
 */
export function backoffDelay(attempt, options, random = Math.random) {
  const { minDelay, maxDelay, factor, jitter } = options;
  const delay = Math.min(maxDelay, minDelay * Math.pow(factor, Math.max(0, attempt - 1)));
  return Math.round(delay * (1 - jitter * random()));
}

/**
 * The WebSocket URL for `url`: absolute `ws(s)://` URLs as they are, `http(s)://` URLs and
 * paths (resolved against `base`) with `http` turned into `ws` and `https` into `wss`; with
 * `tokenIn: "query"` and a token, the token in the query parameter `tokenParam`.
 *
 * @param {string} url - A ws(s):// or http(s):// URL, or a path such as "/ws/lobby".
 * @param {{token?: string|null, tokenIn?: string, tokenParam?: string}} [options]
 * @param {string} [base] - What a path is resolved against (the page's location).
 * @returns {string}
 */
export function buildUrl(url, options = {}, base = globalThis.location?.href) {
  const { token = null, tokenIn = "query", tokenParam = "token" } = options;
  const target = new URL(url, base);
  if (target.protocol === "http:") target.protocol = "ws:";
  else if (target.protocol === "https:") target.protocol = "wss:";
  else if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new TypeError(`strands.js: a WebSocket URL must be ws(s):// or http(s)://, got ${url}`);
  }
  if (tokenIn === "query" && token != null) target.searchParams.set(tokenParam, token);
  return target.href;
}

/**
 * The subprotocols to offer: `["strands", "bearer." + token]` with `tokenIn: "subprotocol"`
 * and a token, otherwise none.
 *
 * @param {string|null} token
 * @param {string} tokenIn
 * @returns {string[]|undefined}
 */
export function subprotocols(token, tokenIn) {
  return tokenIn === "subprotocol" && token != null ? ["strands", `bearer.${token}`] : undefined;
}

/**
 * Why a call() failed: the backend's error code (invalid_message, unknown_type, forbidden,
 * rate_limited, unauthenticated, internal_error, timeout, or the app's own), or the client's
 * (timeout, connection_lost, queue_full, closed, bad_payload, not_json).
 */
export class StrandsCallError extends Error {
  /**
   * @param {string} code - What went wrong, in one word.
   * @param {string} reason - Words for a person.
   * @param {{type?: string, ref?: (string|number), source?: "server"|"client"}} [details]
   */
  constructor(code, reason, details = {}) {
    super(`${details.type ?? "call"} failed: ${code}${reason ? `: ${reason}` : ""}`);
    this.name = "StrandsCallError";
    this.code = code;
    this.reason = reason;
    this.type = details.type;
    this.ref = details.ref;
    /** "server": the backend answered with an error frame; "client": strands.js gave up. */
    this.source = details.source ?? "client";
  }
}

/**
 * A room followed from its start (`follow()`: no epoch yet) takes the epoch of its first
 * message, offset 1, whether it comes live or replayed.
 */
function adoptEpoch(at, epoch, offset) {
  if (at !== undefined && at.epoch === "" && offset === at.offset + 1) at.epoch = epoch;
}

const DEFAULT_RECONNECT = Object.freeze({ minDelay: 250, maxDelay: 2000, factor: 2, jitter: 0.5 });

function checkOptions(options) {
  const { tokenIn = "query", maxQueue = 100, reconnect = {}, typeField = "type" } = options;
  if (tokenIn !== "query" && tokenIn !== "subprotocol") {
    throw new TypeError(`strands.js: tokenIn must be "query" or "subprotocol", got ${tokenIn}`);
  }
  if (!Number.isInteger(maxQueue) || maxQueue < 0) {
    throw new TypeError(`strands.js: maxQueue must be an integer >= 0, got ${maxQueue}`);
  }
  if (typeof typeField !== "string" || !typeField) {
    throw new TypeError("strands.js: typeField must be a non-empty string");
  }
  if (reconnect === false) return false;
  if (reconnect === true) return { ...DEFAULT_RECONNECT };
  const backoff = { ...DEFAULT_RECONNECT, ...reconnect };
  const { minDelay, maxDelay, factor, jitter } = backoff;
  if (!(minDelay >= 0 && maxDelay >= minDelay && factor >= 1 && jitter >= 0 && jitter <= 1)) {
    throw new TypeError(
      "strands.js: reconnect needs 0 <= minDelay <= maxDelay, factor >= 1 and 0 <= jitter <= 1"
    );
  }
  return backoff;
}

/**
 * One logical connection to a broker: reconnects, queues sends while not open, and turns
 * messages, error frames and close codes into events.
 */
export class StrandsClient {
  /**
   * Start connecting at once.
   *
   * @param {string} url - An absolute ws(s):// URL, or a path resolved against the page's
   *     location ("/ws/lobby": http becomes ws, https becomes wss).
   * @param {object} [options]
   * @param {string|null|(() => (string|null|Promise<string|null>))} [options.token] - A token,
   *     or a function giving one, called before every (re)connection; null = no token.
   * @param {"query"|"subprotocol"} [options.tokenIn="query"] - Where the token goes.
   * @param {string} [options.tokenParam="token"] - The query parameter carrying the token.
   * @param {string} [options.typeField="type"] - The JSON field naming a typed message.
   * @param {{minDelay?: number, maxDelay?: number, factor?: number, jitter?: number}|false}
   *     [options.reconnect] - Backoff in milliseconds; false: never reconnect.
   * @param {number} [options.maxQueue=100] - Sends kept while not open.
   * @param {number} [options.recoverTimeout=10000] - Milliseconds to wait for the answer to
   *     a recovery before giving up on it ("recovery_failed" with the reason "timeout").
   * @param {string} [options.replyField="ref"] - The JSON field carrying a call's correlation
   *     id: the backend's `StrandsApp(reply_field=...)`.
   * @throws {TypeError} An option is invalid, or the URL is not a WebSocket URL.
   */
  constructor(url, options = {}) {
    this._reconnect = checkOptions(options);
    this.url = url;
    this._tokenIn = options.tokenIn ?? "query";
    this._tokenParam = options.tokenParam ?? "token";
    this._typeField = options.typeField ?? "type";
    this._maxQueue = options.maxQueue ?? 100;
    this._token = options.token ?? null;
    this._replyField = options.replyField ?? "ref";
    if (typeof this._replyField !== "string" || !this._replyField) {
      throw new TypeError("strands.js: replyField must be a non-empty string");
    }
    /** Calls waiting for their answer, by ref: {resolve, reject, timer, text, type}. */
    this._calls = new Map();
    this._nextRef = 1;
    buildUrl(url, {}); // a bad URL fails here, not in a later attempt
    this._listeners = new Map();
    this._queue = [];
    // What was written on the current socket before the server said anything on it: a
    // refusal then means no backend read it, so it goes back to the queue (see _closedSocket).
    this._unheard = null;
    this._ws = null;
    this._timer = null;
    this._attempt = 0;
    this._lastToken = null;
    this._closed = false;
    this._recoverTimeout = options.recoverTimeout ?? 10000;
    this._rooms = new Map(); // room -> {epoch, offset}: the last message delivered
    this._held = new Map(); // room -> Map(offset -> [data, raw]): waiting for a recovery
    this._recovering = new Set(); // rooms asked for, not answered yet
    this._recoverTimer = null;
    this._wasOpen = false;
    /** @type {"connecting"|"open"|"reconnecting"|"closed"} */
    this.state = "connecting";
    this._connect(undefined);
  }

  /**
   * Where the client is in each room whose kept messages it received: a frozen snapshot
   * `{room: {epoch, offset}}`, offset being the last one delivered.
   *
   * @returns {Readonly<Record<string, Readonly<{epoch: string, offset: number}>>>}
   */
  get rooms() {
    const rooms = {};
    for (const [room, at] of this._rooms) rooms[room] = Object.freeze({ ...at });
    return Object.freeze(rooms);
  }

  /**
   * Follow `room`'s kept messages from its start, before any of them has come: after a
   * reconnection the client then asks for what the room said meanwhile even if it had seen
   * none of its messages (`{epoch: "", offset: 0}` in `strands.recover`: everything since the
   * room's first message, while the backend still keeps it). A room is otherwise followed
   * from its first kept message the client receives. Call it for the room a page is placed in
   * and for each room it joins.
   *
   * @param {string} room
   * @returns {StrandsClient} this, to chain.
   */
  follow(room) {
    if (typeof room !== "string" || !room) {
      throw new TypeError("strands.js: follow(room) takes a room id");
    }
    if (!this._rooms.has(room)) this._rooms.set(room, { epoch: "", offset: 0 });
    return this;
  }

  /**
   * Stop following `room` (a page that left it): its position is forgotten, so no later
   * recovery asks for it, and its messages held for a recovery are dropped.
   *
   * @param {string} room
   * @returns {StrandsClient} this, to chain.
   */
  unfollow(room) {
    this._rooms.delete(room);
    this._held.delete(room);
    this._recovering.delete(room);
    return this;
  }

  /** The number of sends waiting for the connection to open. */
  get queued() {
    return this._queue.length;
  }

  /**
   * Listen to an event: "open", "close", "reconnecting", "refused", "message", "error", or
   * a message type (JSON objects whose typeField is that name).
   *
   * @param {string} name
   * @param {Function} fn
   * @returns {StrandsClient} this, to chain.
   */
  on(name, fn) {
    if (typeof fn !== "function") throw new TypeError("strands.js: a listener must be a function");
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }

  /**
   * Stop listening.
   *
   * @param {string} name
   * @param {Function} fn
   * @returns {StrandsClient} this, to chain.
   */
  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
    return this;
  }

  /**
   * Send a typed message: `{[typeField]: type, ...payload}`.
   *
   * @param {string} type - The message's type, e.g. "chat.say".
   * @param {object} [payload] - Its other fields (a plain object).
   * @returns {boolean} true if written now, false if queued or refused (then an "error"
   *     event says why: "queue_full", "closed", "not_json", "bad_payload").
   */
  send(type, payload = {}) {
    if (typeof type !== "string" || payload === null || typeof payload !== "object" ||
        Array.isArray(payload)) {
      this._clientError("bad_payload", "send(type, payload) takes a string and a plain object");
      return false;
    }
    let text;
    try {
      text = JSON.stringify({ ...payload, [this._typeField]: type });
    } catch (err) {
      this._clientError("not_json", `the payload of ${type} is not JSON: ${err.message}`);
      return false;
    }
    return this.sendRaw(text);
  }

  /**
   * Send a string as it is.
   *
   * @param {string} text
   * @returns {boolean} true if written now, false if queued or refused (see send).
   */
  sendRaw(text) {
    const outcome = this._write(String(text));
    if (outcome === "closed") {
      this._clientError("closed", "the client was closed: nothing is sent any more");
    } else if (outcome === "queue_full") {
      this._clientError(
        "queue_full",
        `${this._queue.length} messages already wait for the connection: this one is not sent`
      );
    }
    return outcome === "sent";
  }

  /**
   * Send a typed message as a call and wait for the backend's answer: what its handler
   * returned (the reply's `data`; null for a handler that returns nothing).
   *
   * @param {string} type - The message's type, e.g. "chat.history".
   * @param {object} [payload] - Its other fields (a plain object; the ref is added).
   * @param {{timeout?: number}} [options] - timeout: milliseconds from now (10000 by default;
   *     Infinity for none), queued time included.
   * @returns {Promise<*>} Resolves with the reply's data; rejects with a StrandsCallError:
   *     the backend's code, or timeout, connection_lost (the socket died while the call was
   *     out: it may or may not have run), queue_full, closed, bad_payload, not_json.
   */
  call(type, payload = {}, { timeout = 10000 } = {}) {
    const fail = (code, reason) =>
      Promise.reject(new StrandsCallError(code, reason, { type, source: "client" }));
    if (typeof type !== "string" || payload === null || typeof payload !== "object" ||
        Array.isArray(payload)) {
      return fail("bad_payload", "call(type, payload) takes a string and a plain object");
    }
    if (!(timeout > 0)) return fail("bad_payload", `timeout must be > 0 ms, got ${timeout}`);
    const ref = this._nextRef++;
    let text;
    try {
      text = JSON.stringify({ ...payload, [this._typeField]: type, [this._replyField]: ref });
    } catch (err) {
      return fail("not_json", `the payload of ${type} is not JSON: ${err.message}`);
    }
    const outcome = this._write(text);
    if (outcome === "closed") return fail("closed", "the client was closed");
    if (outcome === "queue_full") {
      return fail("queue_full", `${this._queue.length} messages already wait for the connection`);
    }
    return new Promise((resolve, reject) => {
      const call = { resolve, reject, text, type, timer: null };
      if (timeout !== Infinity) {
        call.timer = setTimeout(() => {
          const queued = this._queue.indexOf(text);
          if (queued >= 0) this._queue.splice(queued, 1); // never sent: never sent late
          this._settle(ref, new StrandsCallError("timeout", `no answer within ${timeout} ms`,
            { type, ref }));
        }, timeout);
      }
      this._calls.set(ref, call);
    });
  }

  /** The number of calls waiting for their answer. */
  get pendingCalls() {
    return this._calls.size;
  }

  /** Write `text` now, or queue it: "sent", "queued", "queue_full" or "closed". */
  _write(text) {
    if (this._closed) return "closed";
    const ws = this._ws;
    if (this.state === "open" && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(text);
      if (this._unheard) {
        // A refusal comes at once; this many writes without a word means we were accepted.
        if (this._unheard.length < this._maxQueue) this._unheard.push(text);
        else this._unheard = null;
      }
      return "sent";
    }
    if (this._queue.length >= this._maxQueue) return "queue_full";
    this._queue.push(text);
    return "queued";
  }

  /** Resolve (with `data`) or reject (with a StrandsCallError) the call `ref`, once. */
  _settle(ref, error, data) {
    const call = this._calls.get(ref);
    if (!call) return false;
    this._calls.delete(ref);
    clearTimeout(call.timer);
    if (error) call.reject(error);
    else call.resolve(data);
    return true;
  }

  /**
   * Reject the calls no longer in the queue (written on a socket that died: "connection_lost"),
   * or every call ("closed").
   */
  _failCalls(code, reason) {
    for (const [ref, call] of [...this._calls]) {
      if (code === "connection_lost" && this._queue.includes(call.text)) continue;
      this._settle(ref, new StrandsCallError(code, reason, { type: call.type, ref }));
    }
  }

  /**
   * Close for good: no reconnection; queued sends are dropped, with one "error" event
   * ({code: "queue_dropped", count}) if there were any.
   *
   * @param {number} [code=1000]
   * @param {string} [reason="closed by the client"]
   */
  close(code = 1000, reason = "closed by the client") {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    this._timer = null;
    const dropped = this._queue.length;
    this._queue = [];
    this._failCalls("closed", "close() was called before the answer came");
    if (dropped) {
      this._clientError("queue_dropped", `close() dropped ${dropped} queued messages`, dropped);
    }
    const ws = this._ws;
    this.state = "closed";
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      ws.close(code, reason); // onclose emits "close"
    } else {
      this._ws = null;
      this._emit("close", { code, reason, wasClean: true, wasOpen: false,
        explanation: explainClose(code, reason), willReconnect: false, delay: null });
    }
  }

  // ---------------------------------------------------------------- connecting

  async _connect(given) {
    let token = given;
    if (token === undefined) {
      try {
        token = await this._askToken();
      } catch (err) {
        if (this._closed) return;
        this._clientError("token_failed", `the token provider failed: ${err?.message ?? err}`);
        this._retry(null);
        return;
      }
    }
    if (this._closed) return;
    this._lastToken = token;
    let ws;
    try {
      const url = buildUrl(this.url, { token, tokenIn: this._tokenIn, tokenParam: this._tokenParam });
      ws = new WebSocket(url, subprotocols(token, this._tokenIn));
    } catch (err) {
      this._clientError("bad_url", `cannot open a WebSocket: ${err.message}`);
      this.state = "closed";
      this._closed = true;
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this._attempt = 0;
      this.state = "open";
      this._recoverAfterReconnect(ws);
      const queued = this._queue;
      this._queue = [];
      this._unheard = [...queued];
      for (const text of queued) ws.send(text);
      this._emit("open", {});
    };
    ws.onmessage = (event) => {
      if (this._ws === ws) this._unheard = null; // the server has spoken: it accepted us
      this._receive(event.data);
    };
    ws.onclose = (event) => {
      if (this._ws === ws) {
        this._ws = null;
        const unheard = this._unheard;
        this._unheard = null;
        // A refusal comes before anything else on a socket, and means no backend accepted
        // it: whatever the page wrote on it was never read, so it is sent again, first.
        if (unheard?.length && REFUSAL_CODES.includes(event.code)) {
          this._queue = [...unheard, ...this._queue];
        }
        const lost = explainClose(event.code, event.reason);
        this._failCalls("connection_lost", `the connection was lost (${lost}): it may have run`);
      }
      this._closedSocket(event, opened);
    };
  }

  async _askToken() {
    const token = typeof this._token === "function" ? await this._token() : this._token;
    return token == null ? null : String(token);
  }

  async _closedSocket(event, wasOpen) {
    const { code, reason, wasClean } = event;
    const explanation = explainClose(code, reason);
    const closeEvent = { code, reason, wasClean, wasOpen, explanation, willReconnect: false,
      delay: null };
    if (this._closed) {
      this._emit("close", closeEvent);
      return;
    }
    let token;
    let stop = this._reconnect === false || code === 1000 || reason.startsWith("replaced");
    if (!stop && AUTH_CODES.includes(code)) {
      // Refused for who we are: only a new token can change the answer.
      try {
        token = await this._askToken();
      } catch (err) {
        token = this._lastToken;
      }
      stop = typeof this._token !== "function" || token === this._lastToken || this._closed;
    }
    if (stop) {
      this._closed = true;
      this.state = "closed";
      const dropped = this._queue.length;
      this._queue = [];
      this._failCalls("closed", `the connection ended for good: ${explanation}`);
      this._emit("close", closeEvent);
      if (REFUSAL_CODES.includes(code)) this._emit("refused", { code, reason, explanation });
      if (dropped) {
        this._clientError("queue_dropped", `the connection ended: ${dropped} queued messages dropped`, dropped);
      }
      return;
    }
    const delay = this._schedule(token);
    this._emit("close", { ...closeEvent, willReconnect: true, delay });
    if (REFUSAL_CODES.includes(code)) this._emit("refused", { code, reason, explanation });
    this._emit("reconnecting", { attempt: this._attempt, delay });
  }

  _schedule(token) {
    this._attempt += 1;
    const delay = backoffDelay(this._attempt, this._reconnect);
    this.state = "reconnecting";
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect(token);
    }, delay);
    return delay;
  }

  _retry(token) {
    if (this._reconnect === false) {
      this._closed = true;
      this.state = "closed";
      return;
    }
    const delay = this._schedule(token ?? undefined);
    this._emit("reconnecting", { attempt: this._attempt, delay });
  }

  // ---------------------------------------------------------------- receiving

  _receive(raw, parsed) {
    let data = parsed ?? raw;
    if (parsed === undefined && typeof raw === "string") {
      try {
        data = JSON.parse(raw);
      } catch {
        data = raw; // not JSON: delivered as the string it is
      }
    }
    if (this._calls.size && data !== null && typeof data === "object" && this._answer(data)) {
      return; // the answer to a call: its promise, not an event
    }
    if (parsed === undefined && this._history(data, raw)) return; // ordered by _history
    this._emit("message", data, raw);
    if (data === null || typeof data !== "object" || Array.isArray(data)) return;
    const type = data[this._typeField];
    if (typeof type !== "string") return;
    if (type === "error") {
      this._emit("error", { ...data, code: data.code ?? "error", reason: data.reason ?? "",
        source: "server" });
    } else if (!LIFECYCLE.includes(type)) {
      this._emit(type, data);
    }
  }

  // ---------------------------------------------------------------- history and recovery

  /** Take a kept room message or a recovery's answer; false for any other message. */
  _history(data, raw) {
    if (data === null || typeof data !== "object" || Array.isArray(data)) return false;
    if (data[this._typeField] === "strands.recovered") {
      this._recovered(data.rooms);
      return true;
    }
    const { room, offset, epoch } = data;
    if (typeof room !== "string" || !Number.isInteger(offset) || typeof epoch !== "string") {
      return false;
    }
    const at = this._rooms.get(room);
    adoptEpoch(at, epoch, offset);
    if (this._recovering.has(room)) {
      this._hold(room, offset, data, raw);
    } else if (at === undefined) {
      this._rooms.set(room, { epoch, offset }); // the first message seen of this room
      this._receive(raw, data);
    } else if (epoch !== at.epoch || offset > at.offset + 1) {
      // The room's history was lost (another epoch) or messages are missing: ask for them.
      this._hold(room, offset, data, raw);
      this._recover([room]);
    } else if (offset === at.offset + 1) {
      at.offset = offset;
      this._receive(raw, data);
    } // else: delivered already (replayed and live both came): dropped
    return true;
  }

  _hold(room, offset, data, raw) {
    if (!this._held.has(room)) this._held.set(room, new Map());
    this._held.get(room).set(offset, [data, raw]);
  }

  /** Deliver the held messages of `room` that follow its position, in order; true if some
   * remain after a gap. */
  _release(room) {
    const held = this._held.get(room);
    if (!held) return false;
    this._held.delete(room);
    const offsets = [...held.keys()].sort((a, b) => a - b);
    for (const offset of offsets) {
      const [data, raw] = held.get(offset);
      const at = this._rooms.get(room);
      adoptEpoch(at, data.epoch, offset);
      if (at === undefined) {
        this._rooms.set(room, { epoch: data.epoch, offset });
      } else if (data.epoch !== at.epoch || offset <= at.offset) {
        continue; // another epoch's, or delivered already
      } else if (offset > at.offset + 1) {
        for (const later of offsets.filter((n) => n >= offset)) this._hold(room, later, ...held.get(later));
        return true;
      } else {
        at.offset = offset;
      }
      this._receive(raw, data);
    }
    return false;
  }

  /** After a reconnection (not the first connection), ask for every room known. */
  _recoverAfterReconnect(ws) {
    const first = !this._wasOpen;
    this._wasOpen = true;
    if (first) return;
    this._recovering.clear();
    this._recover([...this._rooms.keys()], ws);
  }

  /** Send `strands.recover` for `rooms` (those not being recovered already). */
  _recover(rooms, ws = this._ws) {
    const asked = {};
    for (const room of rooms) {
      const at = this._rooms.get(room);
      if (at === undefined || this._recovering.has(room)) continue;
      asked[room] = { epoch: at.epoch, offset: at.offset };
      this._recovering.add(room);
    }
    if (Object.keys(asked).length === 0 || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ [this._typeField]: "strands.recover", rooms: asked }));
    clearTimeout(this._recoverTimer);
    this._recoverTimer = setTimeout(() => this._recoverTimedOut(), this._recoverTimeout);
  }

  _recovered(rooms) {
    if (rooms === null || typeof rooms !== "object") return;
    for (const [room, answer] of Object.entries(rooms)) {
      if (!this._recovering.delete(room)) continue; // not asked (any more)
      const at = this._rooms.get(room);
      const caughtUp = () => at !== undefined && at.offset >= answer.offset;
      if (answer.recovered) {
        // A room followed from its start takes the epoch of the answer (it had none).
        if (at !== undefined && at.epoch === "" && typeof answer.epoch === "string") {
          at.epoch = answer.epoch;
        }
        this._release(room);
        if (!caughtUp()) this._failed(room, "incomplete", answer);
      } else {
        this._failed(room, answer.reason ?? "not_recovered", answer);
      }
      if (this._held.has(room)) this._recover([room]); // still a gap: ask again
    }
    if (this._recovering.size === 0) {
      clearTimeout(this._recoverTimer);
      this._recoverTimer = null;
    }
    this._emit("recovered", { rooms });
  }

  /** A room could not be recovered: say so, and continue from where the room is now. */
  _failed(room, reason, answer) {
    if (answer && typeof answer.epoch === "string" && answer.epoch &&
        Number.isInteger(answer.offset)) {
      this._rooms.set(room, { epoch: answer.epoch, offset: answer.offset });
    } else {
      this._rooms.delete(room);
    }
    this._emit("recovery_failed", { room, reason });
    this._release(room);
  }

  _recoverTimedOut() {
    this._recoverTimer = null;
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return; // the reconnection asks again
    const rooms = [...this._recovering];
    this._recovering.clear();
    for (const room of rooms) {
      this._emit("recovery_failed", { room, reason: "timeout" });
      // Deliver what came, in order, from the first held message on.
      this._rooms.delete(room);
      this._release(room);
    }
  }

  // ---------------------------------------------------------------- calls

  /** Settle the call a `reply` or `error` frame answers; false if it answers none. */
  _answer(data) {
    const type = data[this._typeField];
    const ref = data[this._replyField];
    if ((type !== "reply" && type !== "error") || !this._calls.has(ref)) return false;
    if (type === "reply") return this._settle(ref, null, data.data ?? null);
    const { code = "error", reason = "" } = data;
    const call = this._calls.get(ref);
    return this._settle(ref, new StrandsCallError(code, reason,
      { type: call.type, ref, source: "server" }));
  }

  _clientError(code, reason, count) {
    const event = { code, reason, source: "client" };
    if (count !== undefined) event.count = count;
    this._emit("error", event);
  }

  _emit(name, ...args) {
    const listeners = this._listeners.get(name);
    if (!listeners || listeners.size === 0) {
      if (name === "error") console.warn("strands.js:", args[0]); // never silent
      return;
    }
    for (const fn of [...listeners]) {
      try {
        fn(...args);
      } catch (err) {
        // One listener's bug must not stop the others, nor the client.
        (globalThis.reportError ?? console.error)(err);
      }
    }
  }
}
