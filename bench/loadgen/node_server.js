#!/usr/bin/env node
// The Node reference for the benchmark: a bare socket.io 4.8 server (its defaults: no
// per-message compression) that relays the same upstream stream with one `io.to(room).emit`
// per delta: what the "Node socket.io 4.8" row measured, on this machine, in the same run.
//
// Speaks the same subset of docs/protocol.md as bench/baseline_server.py: `register` (ack
// {ok: true}, joins the room), `message` (ack, then a turn: ai-start, message-start,
// message-delta per chunk, message-list, ai-end, all to the room). Reads the upstream's Chat
// Completions SSE stream with Node's fetch. Serves GET /healthz.
//
//   node node_server.js --port N --upstream http://127.0.0.1:M/v1
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function parseArgs(argv) {
  const out = { host: "127.0.0.1", port: 0, upstream: "" };
  for (let i = 2; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  out.port = Number(out.port);
  return out;
}

const args = parseArgs(process.argv);
const ROOM = "room";
const users = new Map();
const turns = [];
let ids = 0;
let working = false;

const httpServer = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "ok", users: users.size }));
  } else if (!req.url.startsWith("/socket.io/")) {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(httpServer, { cors: { origin: "*" } });

io.on("connection", (socket) => {
  socket.on("register", (data, ack) => {
    const name = String((data && data.name) || socket.id);
    users.set(socket.id, name);
    socket.join(ROOM);
    if (typeof ack === "function") {
      ack({ ok: true, user_id: (data && data.user_id) || socket.id, name });
    }
  });
  socket.on("message", (data, ack) => {
    const content = String((data && data.content) || "");
    const id = `m_${++ids}`;
    socket.to(ROOM).emit("message", { id, name: users.get(socket.id), role: "user", content });
    turns.push(content);
    if (typeof ack === "function") ack({ ok: true, id, queued: turns.length });
    work();
  });
  socket.on("disconnect", () => users.delete(socket.id));
});

async function work() {
  if (working) return;
  working = true;
  try {
    while (turns.length) {
      try {
        await turn(turns.shift());
      } catch (err) {
        console.error(`node server: turn failed: ${err}`);
      }
    }
  } finally {
    working = false;
  }
}

async function turn(content) {
  const answerId = `a_${++ids}`;
  const answer = { id: answerId, user_id: null, name: "Node AI", role: "assistant",
                   content: "", created_at: Date.now() };
  io.to(ROOM).emit("ai-start");
  const text = [];
  try {
    const res = await fetch(`${args.upstream}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer x" },
      body: JSON.stringify({
        model: "bench", stream: true,
        messages: [{ role: "system", content: "You are a bench." }, { role: "user", content }],
      }),
    });
    const decoder = new TextDecoder();
    let buffered = "";
    let announced = false;
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) !== -1) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const choice = (JSON.parse(line.slice(6)).choices || [])[0];
          const delta = choice && choice.delta && choice.delta.content;
          if (!delta) continue;
          if (!announced) {
            announced = true;
            io.to(ROOM).emit("message-start", answer);
          }
          text.push(delta);
          io.to(ROOM).emit("message-delta", { id: answerId, delta });
        }
      }
    }
  } finally {
    answer.content = text.join("");
    io.to(ROOM).emit("message-list", [answer]);
    io.to(ROOM).emit("ai-end");
  }
}

httpServer.listen(args.port, args.host);
const stop = () => {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
