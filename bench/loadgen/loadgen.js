#!/usr/bin/env node
// Roundtable load generator: N socket.io-client connections (websocket transport) in one process,
// driven by newline-delimited JSON commands on stdin; replies are JSON lines on stdout.
//
//   node loadgen.js --url http://127.0.0.1:PORT --count N --id K [--deflate 1|0] [--concurrency 50]
//                   [--client sio|raw] [--rooms R --offset O]
//
// --client sio (default) uses the official socket.io-client; --client raw speaks the same wire
// protocol (Engine.IO 4 + Socket.IO 5 over a `ws` websocket: open, connect, events, acks,
// ping/pong) with none of the client library's machinery, so that at 1,000 clients on one core
// the clients cost less than the server under test and latency measures the server.
//
// --rooms R (many rooms): the client with global index g = O + i registers into room "r<g % R>"
// (`{"name": ..., "room": "r17"}`), so every room's people join interleaved with the others';
// without it every client registers into the server's default room (no "room" key).
//
// --url may list several servers, comma-separated (the processes of a cluster): the client with
// global index g connects to the (g % n)-th, its `group`. Client 0 then connects and registers
// alone before the others start, so its server is the first where anyone registers. Reports
// give each group's first-delta times and lateness separately (`groups`).
//
// Commands (stdin):
//   {"cmd":"connect"}                    connect + register every client; replies {"event":"connected",...}
//   {"cmd":"expect","text":"...","timeout":S}   arm every client for one answer whose joined deltas must
//                                        equal `text`; replies {"event":"done",...} when every client has
//                                        seen ai-end (or after S seconds)
//   {"cmd":"expect","texts":{"r17":"...",...},"timeout":S}   many rooms: the clients of each listed
//                                        room expect that room's text; every other client expects
//                                        nothing at all
//   {"cmd":"ask","content":"..."}        client 0 sends `message` (the turn trigger)
//   {"cmd":"ask","rooms":{"r17":"...",...}}   the room's first client (global index 17) sends
//                                        `message` in each listed room, if it is one of this process's
//   {"cmd":"report","t0":ms,"interval":ms,"sent":[ms...]}   per-delta lateness for the last answer
//   {"cmd":"report","interval":ms,"rooms":{"r17":{"t0":ms,"sent":[ms...]},...}}   the same, per room
//   {"cmd":"quit"}                       disconnect everyone and exit
//
// Cross-room delivery is detected, not assumed: while armed, a client counts as `foreign` every
// answer event (message-start, message-delta, ai-start, ai-end, message, message-list) that is not
// its own room's: any of them at a client whose room is not answering, a delta or start whose id is
// not the answer's its room announced, and a user message or finished answer that names another
// room (every chunk of room r17's script carries "@r17", its question "[bench:r17]"). The answer
// ids each room's clients saw are reported per room, so one id seen in two rooms shows too.
//
// Deltas carry sequence markers "#0000 " ... ; a client records when each marker first arrived,
// so coalesced deltas (several chunks in one delta) are measured per chunk. All times are
// wall-clock milliseconds (performance.timeOrigin + performance.now()), comparable with Python's
// time.time() on the same machine.
"use strict";

const { io } = require("socket.io-client");
const WebSocket = require("ws");
const { performance } = require("perf_hooks");
const readline = require("readline");

function parseArgs(argv) {
  const out = { url: "", count: 1, id: 0, deflate: 1, concurrency: 50, timeout: 20, client: "sio",
    rooms: 0, offset: 0 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    out[key] = argv[i + 1];
  }
  out.count = Number(out.count);
  out.id = Number(out.id);
  out.deflate = Number(out.deflate);
  out.concurrency = Number(out.concurrency);
  out.timeout = Number(out.timeout);
  out.rooms = Number(out.rooms);
  out.offset = Number(out.offset);
  return out;
}

const args = parseArgs(process.argv);
const URLS = args.url.split(",").filter((u) => u);
const now = () => performance.timeOrigin + performance.now();
const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const MARK = /#(\d{4}) /g;
const BUCKET = 0.1; // ms per histogram bucket
const ROOM_TAG = /@(r\d+) |\[bench:([A-Za-z0-9_-]+)\]/g; // a room named in a chunk or a question

// The small part of socket.io-client's Socket interface this file uses (on, emit with an ack,
// disconnect), over a bare websocket speaking Engine.IO 4 / Socket.IO 5 text packets.
class RawSocket {
  constructor(url, deflate) {
    this.handlers = new Map();
    this.acks = new Map();
    this.nextAck = 0;
    this.connected = false;
    const wsUrl = url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
    this.ws = new WebSocket(wsUrl, { perMessageDeflate: deflate ? { threshold: 1024 } : false });
    this.ws.on("message", (data) => this.onFrame(data.toString()));
    this.ws.on("error", (err) => this.fire("connect_error", err));
    this.ws.on("close", () => {
      if (this.connected) {
        this.connected = false;
        this.fire("disconnect", "transport close");
      }
    });
  }

  on(event, handler) {
    this.handlers.set(event, handler);
  }

  fire(event, ...args) {
    const handler = this.handlers.get(event);
    if (handler) handler(...args);
  }

  emit(event, data, ack) {
    let id = "";
    if (ack) {
      id = String(this.nextAck++);
      this.acks.set(id, ack);
    }
    this.ws.send(`42${id}${JSON.stringify([event, data])}`);
  }

  disconnect() {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send("41");
    this.connected = false;
    this.ws.close();
  }

  onFrame(text) {
    switch (text[0]) {
      case "0": this.ws.send("40"); return; // engine.io open: connect to the namespace
      case "2": this.ws.send("3"); return; // ping
      case "1": return; // close
      case "4": break; // message: a socket.io packet follows
      default: return;
    }
    switch (text[1]) {
      case "0": this.connected = true; this.fire("connect"); return;
      case "1": this.connected = false; this.fire("disconnect", "io server disconnect"); return;
      case "4": this.fire("connect_error", new Error(text.slice(2))); return;
      case "2": { // event: 42[...]
        const args = JSON.parse(text.slice(2));
        this.fire(args[0], args[1]);
        return;
      }
      case "3": { // ack: 43<id>[...]
        const open = text.indexOf("[");
        const ack = this.acks.get(text.slice(2, open));
        if (ack) {
          this.acks.delete(text.slice(2, open));
          ack(JSON.parse(text.slice(open))[0]);
        }
        return;
      }
      default:
    }
  }
}

class Client {
  constructor(index) {
    this.index = index;
    this.name = `lg${args.id}-${index}`;
    this.global = args.offset + index;
    this.room = args.rooms > 0 ? `r${this.global % args.rooms}` : null;
    this.group = this.global % URLS.length; // which of the --url servers it talks to
    this.url = URLS[this.group];
    this.socket = null;
    this.connected = false;
    this.registered = false;
    this.disconnects = [];
    this.reset(0);
  }

  reset(nChunks, expected) {
    this.expected = expected; // this client's room's answer; undefined: its room is not answering
    this.answerId = null;
    this.foreign = 0;
    // the text so far is checked against the expected one as it arrives (keeping 500,000 delta
    // strings alive until the report made V8 pause for ~20 ms every few seconds at 1,000
    // clients): `matched` characters equal the expected text's start, `extra` arrived after
    // the first difference
    this.matched = 0;
    this.diverged = false;
    this.extra = 0;
    this.tail = ""; // last 5 characters seen, so a marker split across deltas is still found
    this.recv = new Float64Array(nChunks); // first arrival of each marker, 0 = never
    this.lastSeq = -1;
    this.reordered = 0;
    this.duplicates = 0;
    this.deltas = 0;
    this.ended = false;
    this.endAt = 0;
    this.firstDeltaAt = 0;
  }

  connect() {
    return new Promise((resolve) => {
      const started = now();
      const opts = {
        transports: ["websocket"],
        reconnection: false,
        forceNew: true,
        timeout: 20000,
        perMessageDeflate: args.deflate ? { threshold: 1024 } : false,
      };
      const socket = args.client === "raw" ? new RawSocket(this.url, args.deflate)
        : io(this.url, opts);
      this.socket = socket;
      let settled = false;
      const finish = (ok, error) => {
        if (settled) return;
        settled = true;
        resolve({ ok, error, ms: now() - started });
      };
      socket.on("connect", () => {
        this.connected = true;
        const hello = { user_id: this.name, name: this.name };
        if (this.room) hello.room = this.room;
        socket.emit("register", hello, (ack) => {
          if (ack && ack.ok) {
            this.registered = true;
            finish(true);
          } else {
            finish(false, `register refused: ${JSON.stringify(ack)}`);
          }
        });
      });
      socket.on("connect_error", (err) => finish(false, `connect_error: ${err.message}`));
      socket.on("disconnect", (reason) => {
        this.connected = false;
        this.disconnects.push({ at: now(), reason });
        finish(false, `disconnect: ${reason}`);
      });
      socket.on("message-start", (msg) => {
        if (!armed) return;
        if (this.expected === undefined) this.foreign += 1;
        else if (this.answerId === null) this.answerId = msg.id;
        else if (msg.id !== this.answerId) this.foreign += 1;
      });
      socket.on("message-delta", (d) => this.onDelta(d));
      socket.on("ai-start", () => {
        if (armed && this.expected === undefined) this.foreign += 1;
      });
      socket.on("message", (msg) => this.checkNamed(msg));
      socket.on("message-list", (list) => this.checkNamed(list));
      socket.on("ai-end", () => {
        if (!armed) return;
        if (this.expected === undefined) {
          this.foreign += 1;
          return;
        }
        if (this.ended) return;
        this.ended = true;
        this.endAt = now();
        pendingEnds -= 1;
        if (pendingEnds === 0) finishExpect();
      });
    });
  }

  // A user message or a finished answer of this turn: foreign if its client's room is idle or it
  // names another room (many-rooms runs only: one-room scripts name no room).
  checkNamed(payload) {
    if (!armed || !this.room) return;
    if (this.expected === undefined) {
      this.foreign += 1;
      return;
    }
    const text = JSON.stringify(payload);
    ROOM_TAG.lastIndex = 0;
    let m;
    while ((m = ROOM_TAG.exec(text)) !== null) {
      if ((m[1] || m[2]) !== this.room) {
        this.foreign += 1;
        return;
      }
    }
  }

  check(delta) {
    const expected = this.expected;
    if (this.diverged) {
      this.extra += delta.length;
    } else if (expected.startsWith(delta, this.matched)) {
      this.matched += delta.length;
    } else {
      let k = 0;
      while (k < delta.length && this.matched + k < expected.length
             && delta.charCodeAt(k) === expected.charCodeAt(this.matched + k)) k++;
      this.matched += k;
      this.extra = delta.length - k;
      this.diverged = true;
    }
  }

  onDelta(d) {
    if (!armed) return;
    const t = now();
    if (this.expected === undefined) {
      this.foreign += 1;
      return;
    }
    if (this.answerId === null) this.answerId = d.id;
    if (d.id !== this.answerId) {
      this.foreign += 1;
      return;
    }
    if (!this.firstDeltaAt) this.firstDeltaAt = t;
    this.deltas += 1;
    this.check(d.delta);
    const scan = this.tail + d.delta;
    this.tail = scan.slice(-5);
    MARK.lastIndex = 0;
    let m;
    while ((m = MARK.exec(scan)) !== null) {
      const seq = Number(m[1]);
      if (seq >= this.recv.length) continue;
      if (this.recv[seq] !== 0) {
        this.duplicates += 1;
        continue;
      }
      this.recv[seq] = t;
      if (seq !== this.lastSeq + 1) this.reordered += 1;
      this.lastSeq = seq;
    }
  }
}

const clients = [];
for (let i = 0; i < args.count; i++) clients.push(new Client(i));
let armed = false;
let nChunks = 0;
let pendingEnds = 0;
let expectTimer = null;

async function connectAll() {
  const started = now();
  const results = new Array(clients.length);
  let next = 0;
  if (URLS.length > 1 && clients.length > 0) {
    results[0] = await clients[0].connect(); // the first registration anywhere is client 0's
    next = 1;
  }
  async function worker() {
    while (next < clients.length) {
      const i = next++;
      results[i] = await clients[i].connect();
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(args.concurrency, clients.length); w++) workers.push(worker());
  await Promise.all(workers);
  const ok = results.filter((r) => r.ok).length;
  const errors = results.filter((r) => !r.ok).map((r) => r.error).slice(0, 5);
  const times = results.map((r) => r.ms).sort((a, b) => a - b);
  send({
    event: "connected", id: args.id, n: clients.length, ok, failed: clients.length - ok,
    started, finished: now(), errors,
    connect_ms_p50: times[Math.floor(times.length * 0.5)] || 0,
    connect_ms_max: times[times.length - 1] || 0,
  });
}

function expect(cmd) {
  const texts = cmd.texts || null;
  const sample = texts ? Object.values(texts)[0] || "" : cmd.text;
  const marks = sample.match(/#\d{4} /g) || [];
  nChunks = marks.length; // every room's script has as many chunks
  for (const c of clients) {
    const text = texts ? texts[c.room] : cmd.text;
    c.reset(text === undefined ? 0 : nChunks, text);
  }
  pendingEnds = clients.filter((c) => c.expected !== undefined && c.registered
                               && c.connected).length;
  armed = true;
  send({ event: "armed", id: args.id, clients: pendingEnds, chunks: nChunks });
  if (pendingEnds === 0) {
    finishExpect();
    return;
  }
  expectTimer = setTimeout(() => finishExpect(true), (cmd.timeout || args.timeout) * 1000);
}

function finishExpect(timedOut = false) {
  if (!armed) return;
  armed = false;
  if (expectTimer) clearTimeout(expectTimer);
  expectTimer = null;
  send({ event: "done", id: args.id, timed_out: timedOut, waiting: pendingEnds, at: now() });
}

function report(cmd) {
  // Lateness of every chunk at every client, against the schedule (t0 + i*interval) and against
  // the time the upstream actually wrote it; histograms in BUCKET-ms buckets.
  const hist = {};
  const histWire = {};
  const add = (h, ms) => {
    const k = Math.max(0, Math.floor(ms / BUCKET));
    h[k] = (h[k] || 0) + 1;
  };
  let minLate = Infinity;
  let lost = 0; // chunks never seen
  let textMismatch = 0;
  let lostChars = 0;
  let extraChars = 0;
  let reordered = 0;
  let duplicates = 0;
  let keptPace = 0;
  let notEnded = 0;
  let deltas = 0;
  let lastLateMax = 0;
  let foreign = 0;
  let foreignClients = 0;
  let answering = 0;
  const answerIds = {}; // room -> the answer ids its clients saw
  // per --url group: every client's first message-delta (ms after t0) and its chunks' lateness
  const groups = {};
  const perClientLastLate = [];
  // per chunk, over this process's clients: the earliest and the latest arrival (lateness, ms);
  // tells a chunk that reached everybody late (a stall before the fan-out) from a wide fan-out
  const chunkFirst = new Array(nChunks).fill(Infinity);
  const chunkLast = new Array(nChunks).fill(-Infinity);
  for (const c of clients) {
    foreign += c.foreign;
    if (c.foreign) foreignClients += 1;
    if (c.answerId !== null) {
      const ids = answerIds[c.room || ""] || (answerIds[c.room || ""] = []);
      if (!ids.includes(c.answerId)) ids.push(c.answerId);
    }
    if (c.expected === undefined) continue; // its room was not answering
    const sched = cmd.rooms ? cmd.rooms[c.room] : cmd;
    if (!sched) continue;
    const expected = c.expected;
    const lastDue = sched.t0 + (nChunks - 1) * cmd.interval;
    answering += 1;
    const grp = groups[c.group] || (groups[c.group] = { clients: 0, first_ms: [], hist: {} });
    grp.clients += 1;
    if (c.firstDeltaAt) grp.first_ms.push(Math.round((c.firstDeltaAt - sched.t0) * 100) / 100);
    if (!c.ended) notEnded += 1;
    deltas += c.deltas;
    reordered += c.reordered;
    duplicates += c.duplicates;
    if (c.diverged || c.matched !== expected.length) {
      textMismatch += 1;
      // characters missing or extra, measured on the longest common prefix
      lostChars += expected.length - c.matched;
      extraChars += c.extra;
    }
    let seenAll = true;
    for (let i = 0; i < nChunks; i++) {
      const t = c.recv[i];
      if (t === 0) {
        lost += 1;
        seenAll = false;
        continue;
      }
      const due = sched.t0 + i * cmd.interval;
      const late = t - due;
      if (late < minLate) minLate = late;
      if (late < chunkFirst[i]) chunkFirst[i] = late;
      if (late > chunkLast[i]) chunkLast[i] = late;
      add(hist, late);
      add(grp.hist, late);
      if (sched.sent && sched.sent.length === nChunks) add(histWire, t - sched.sent[i]);
    }
    const last = nChunks ? c.recv[nChunks - 1] : 0;
    if (seenAll && last) {
      const late = last - lastDue;
      perClientLastLate.push(late);
      if (late > lastLateMax) lastLateMax = late;
      if (late <= 1000) keptPace += 1;
    }
  }
  send({
    event: "report", id: args.id, clients: answering, idle_clients: clients.length - answering,
    chunks: nChunks, bucket_ms: BUCKET, foreign, foreign_clients: foreignClients,
    answer_ids: answerIds, groups,
    hist, hist_wire: histWire, min_late_ms: minLate === Infinity ? null : minLate,
    chunk_first: chunkFirst.map((v) => (Number.isFinite(v) ? Math.round(v * 10) / 10 : null)),
    chunk_last: chunkLast.map((v) => (Number.isFinite(v) ? Math.round(v * 10) / 10 : null)),
    lost_chunks: lost, text_mismatch_clients: textMismatch, lost_chars: lostChars,
    extra_chars: extraChars, reordered, duplicates, kept_pace: keptPace, not_ended: notEnded,
    deltas, last_late_max_ms: lastLateMax,
    disconnects: clients.reduce((a, c) => a + c.disconnects.length, 0),
    disconnect_reasons: [...new Set(clients.flatMap((c) => c.disconnects.map((d) => d.reason)))],
    connected_now: clients.filter((c) => c.connected).length,
  });
}

function askRooms(rooms) {
  // room rK's first client has global index K (clients are dealt to rooms in turn)
  for (const [room, content] of Object.entries(rooms)) {
    const c = clients[Number(room.slice(1)) - args.offset];
    if (!c || c.room !== room) continue; // another process has it
    c.socket.emit("message", { content }, (ack) => send({ event: "asked", id: args.id, room, ack }));
  }
}

function status() {
  send({
    event: "status", id: args.id, connected: clients.filter((c) => c.connected).length,
    registered: clients.filter((c) => c.registered).length,
    disconnects: clients.reduce((a, c) => a + c.disconnects.length, 0),
    disconnect_reasons: [...new Set(clients.flatMap((c) => c.disconnects.map((d) => d.reason)))],
  });
}

function quit() {
  for (const c of clients) if (c.socket) c.socket.disconnect();
  send({ event: "bye", id: args.id });
  setTimeout(() => process.exit(0), 200);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    send({ event: "error", id: args.id, error: `bad command: ${line}` });
    return;
  }
  switch (cmd.cmd) {
    case "connect": connectAll(); break;
    case "expect": expect(cmd); break;
    case "ask":
      if (cmd.rooms) {
        askRooms(cmd.rooms);
        break;
      }
      clients[0].socket.emit("message", { content: cmd.content || "go" }, (ack) =>
        send({ event: "asked", id: args.id, ack }));
      break;
    case "report": report(cmd); break;
    case "status": status(); break;
    case "quit": quit(); break;
    default: send({ event: "error", id: args.id, error: `unknown command ${cmd.cmd}` });
  }
});
rl.on("close", () => quit());
// Never outlive the orchestrator by much: hard stop after --maxlife seconds (default 30 min).
setTimeout(() => process.exit(3), Number(args.maxlife || 1800) * 1000).unref();
send({ event: "ready", id: args.id, count: clients.length, deflate: args.deflate });
