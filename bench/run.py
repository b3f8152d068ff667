"""Roundtable benchmark suite: relay overhead, fan-out to C clients, connect+register, memory,
many rooms in one process, and one room over several processes (the cluster case).

    python bench/run.py            full: C = 10, 100, 500, 1000 in one room, 100 rooms of 10
                                   with 10 answering at once, and 1,000 clients on one process
                                   vs on two with Redis; 3 interleaved runs (~40 min)
    python bench/run.py --quick    C = 10, 100; 10 rooms of 10, 3 answering; 100 clients on one
                                   process vs two; 1 run (~3 min)

Every figure is taken for Roundtable and for a bare python-socketio baseline
(bench/baseline_server.py) in alternation, on the same machine state. Servers are pinned to core
0, the Node load generators (bench/loadgen), the paced upstream (bench/upstream.py) and this
orchestrator to core 1. Raw results: bench/results/<stamp>.json; `bench/report.py` turns them
into docs/performance.md's tables and docs/performance.png (run automatically at the end).

All processes are started in their own process groups and stopped in `finally`; every wait is
bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import openai
import psutil
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":  # bench/cluster.py imports this module as `run`: the same one
    sys.modules.setdefault("run", sys.modules[__name__])
from procs import (
    CLIENT_CORE,
    HAVE_TASKSET,
    NCPU,
    PY,
    ROOT,
    SERVER_CORE,
    LoadGen,
    Procs,
    free_port,
    pinned,
    read_line_prefix,
)

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOADGEN = BENCH / "loadgen" / "loadgen.js"
LOADGEN_CLIENT = ["raw"]  # --client: raw (lean wire-protocol client) or sio (socket.io-client)
# --client-cores: where the load generators and the upstream run. "1": the core the server does
# not use; "all": anywhere (only the server is pinned)
CLIENT_CORES = [CLIENT_CORE]
# --loadgens: at most this many load generator processes (250 clients each at most); connects in
# flight: 200 in all. One process (the default) measured lower p99 for every server than four on
# the same core: bench/results/loadgens-{1,4}.json (docs/performance.md, "The load generator")
LOADGENS = [1]
# the first commit whose server has many rooms (`register` takes "room"); `rev:` servers older
# than it skip the many-rooms case
ROOMS_COMMIT = "38445b5"
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa")

# ---------------------------------------------------------------------------------------------
# servers under test


def server_command(impl: str, port: int, upstream: str) -> tuple[list[str], dict[str, str]]:
    """Command and environment for one implementation: `roundtable`, `baseline`, `node` (the
    socket.io 4.8 reference, bench/loadgen/node_server.js), or
    `exp:<variant>+<variant>` (bench/experiments/launch.py), or `rev:<git revision>` (Roundtable
    as of that commit, from a git worktree under bench/results/, to compare a change side by
    side); `@NAME=value` suffixes add environment settings, e.g.
    `roundtable@WS_COMPRESSION=true`."""
    impl, *extra = impl.split("@")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))},
        "OPENAI_API_KEY": "x",
        "OPENAI_BASE_URL": upstream,
        "OPENAI_MODEL": "bench",
        "LLM_API": "chat",
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(port),
        "MAX_PARTICIPANTS": "5000",
        "RATE_LIMIT_PER_MINUTE": "100000",
        "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **dict(e.split("=", 1) for e in extra),
    }
    if impl == "roundtable":
        cmd = [PY, "-m", "server", "--env-file", "/dev/null", "--port", str(port)]
    elif impl == "baseline":
        cmd = [PY, str(BENCH / "baseline_server.py"), "--port", str(port), "--upstream", upstream]
    elif impl == "node":
        cmd = ["node", str(BENCH / "loadgen" / "node_server.js"), "--port", str(port),
               "--upstream", upstream]
    elif impl.startswith("rev:"):
        cmd = ["env", "-C", str(worktree(impl[4:])), PY, "-m", "server", "--env-file",
               "/dev/null", "--port", str(port)]
    elif impl.startswith("exp:"):
        # bench/experiments/launch.py: Roundtable with monkeypatched variants (never server/)
        cmd = [PY, str(BENCH / "experiments" / "launch.py"), "--variants", impl[4:], "--",
               "--env-file", "/dev/null", "--port", str(port)]
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    return pinned(cmd, SERVER_CORE), env


def worktree(rev: str) -> Path:
    """A checkout of `rev` (made once per commit, kept under bench/results/, which git
    ignores). Named by the commit it resolves to, so `HEAD` or a branch is never served from
    an older checkout."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    path = RESULTS / f"rev-{sha[:12]}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha],
                       check=True, capture_output=True)
    return path


def supports_rooms(impl: str) -> bool:
    """Whether the implementation has many rooms per process (`register` with "room")."""
    name = impl.split("@", 1)[0]
    if name == "roundtable" or name.startswith("exp:"):
        return True
    if name.startswith("rev:"):
        ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor",
                                   ROOMS_COMMIT, name[4:]], capture_output=True)
        return ancestor.returncode == 0
    return False  # the baseline and the Node reference serve one room


class CpuSource(Protocol):
    """What `one_turn` measures: user and system CPU seconds of the server side so far (one
    `Server`, or several processes summed: bench/cluster.py)."""

    def cpu_split(self) -> tuple[float, float]: ...


class Server:
    def __init__(self, procs: Procs, impl: str, upstream: str, log: Path) -> None:
        self.procs, self.impl, self.upstream, self.log = procs, impl, upstream, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None

    async def __aenter__(self) -> Server:
        cmd, env = server_command(self.impl, self.port, self.upstream)
        self.proc = await self.procs.start(cmd, env=env, stdout=False, log=self.log)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.impl} exited at start; see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.impl} not healthy within 20 s; see {self.log}")
                await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            await self.procs.stop(self.proc)

    def cpu(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return t.user + t.system

    def cpu_split(self) -> tuple[float, float]:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return t.user, t.system

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)


# ---------------------------------------------------------------------------------------------
# the upstream script


def script(n: int, room: str | None = None) -> list[str]:
    """n chunks "#0000 word " whose markers let clients time and order-check every chunk; with a
    room, "#0000 @r17 word ", so a chunk that reaches another room's client is caught."""
    tag = f"@{room} " if room else ""
    return [f"#{i:04d} {tag}{WORDS[i % len(WORDS)]} " for i in range(n)]


class Upstream:
    def __init__(self, procs: Procs, log: Path) -> None:
        self.procs, self.log = procs, log
        self.base = ""
        self.admin = ""
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Upstream:
        cmd = pinned([PY, str(BENCH / "upstream.py"), "--port", "0"], CLIENT_CORES[0])
        proc = await self.procs.start(cmd, log=self.log)
        self.base = await read_line_prefix(proc, "BENCH_UPSTREAM", 20)
        self.admin = self.base.rsplit("/v1", 1)[0]
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()

    async def enqueue(self, chunks: list[str], interval: float, key: str | None = None) -> None:
        """Queue one reply; with `key`, for the request whose question names "[bench:<key>]"."""
        assert self.http is not None
        body: dict[str, Any] = {"chunks": chunks, "interval": interval}
        if key:
            body["key"] = key
        async with self.http.post(self.admin + "/_bench/script", json=body) as resp:
            resp.raise_for_status()

    async def last(self, key: str | None = None) -> dict[str, Any]:
        assert self.http is not None
        params = {"key": key} if key else {}
        async with self.http.get(self.admin + "/_bench/last", params=params) as resp:
            data: dict[str, Any] = await resp.json()
            return data


# ---------------------------------------------------------------------------------------------
# statistics


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def hist_merge(hists: list[dict[str, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            out[int(k)] = out.get(int(k), 0) + v
    return out


def hist_pct(hist: dict[int, int], p: float, bucket: float) -> float:
    total = sum(hist.values())
    if not total:
        return math.nan
    need = p / 100 * total
    cum = 0
    for k in sorted(hist):
        cum += hist[k]
        if cum >= need:
            return (k + 1) * bucket  # upper edge of the bucket: never flatters
    return (max(hist) + 1) * bucket


# ---------------------------------------------------------------------------------------------
# relay overhead: first delta at a room client vs. a direct SDK reader of the same upstream


async def relay_session(procs: Procs, up: Upstream, impl: str, runs: int, log: Path,
                        growth_turns: int = 100) -> dict[str, Any]:
    """Phase A: `runs` samples in a fresh room (the room client reconnects before each, so the
    room resets and the thread holds only this turn), alternating with a direct SDK reader.
    Phase B: `growth_turns` turns on one connection: first-delta time as the history grows."""
    chunks = ["#0000 hello ", "#0001 there "]
    sdk = openai.AsyncOpenAI(base_url=up.base, api_key="x", max_retries=0, timeout=20)
    rows: list[dict[str, float]] = []
    growth: list[float] = []
    async with Server(procs, impl, up.base, log) as srv:
        state: dict[str, Any] = {"first": None, "ended": asyncio.Event()}

        async def join() -> socketio.AsyncClient:
            sio = socketio.AsyncClient(reconnection=False)

            @sio.on("message-delta")
            async def on_delta(data: Any) -> None:
                first = state["first"]
                if first is not None and not first.done():
                    first.set_result(time.time())

            @sio.on("ai-end")
            async def on_end(*_: Any) -> None:
                state["ended"].set()

            await sio.connect(srv.url, transports=["websocket"], wait_timeout=10)
            ack = await sio.call("register", {"user_id": "relay", "name": "relay"}, timeout=10)
            if not (isinstance(ack, dict) and ack.get("ok")):
                raise RuntimeError(f"relay client: register refused: {ack}")
            return sio

        async def leave(sio: socketio.AsyncClient) -> None:
            with contextlib.suppress(Exception):
                await sio.disconnect()
            await asyncio.sleep(0.02)  # let the server process the leave (room reset)

        async def direct() -> tuple[float, float]:
            await up.enqueue(chunks, 0.0)
            t_req = time.time()
            t_first = 0.0
            stream = await sdk.chat.completions.create(
                model="bench", stream=True, messages=[{"role": "user", "content": "hi"}])
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content and not t_first:
                        t_first = time.time()
            t0 = (await up.last())["t0"]
            return t_first - t_req, t_first - t0

        async def room(sio: socketio.AsyncClient) -> tuple[float, float]:
            await up.enqueue(chunks, 0.0)
            first: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            state["first"] = first
            state["ended"].clear()
            t_send = time.time()
            await sio.emit("message", {"content": "hi"})
            t_first = await asyncio.wait_for(first, 10)
            await asyncio.wait_for(state["ended"].wait(), 10)
            t0 = (await up.last())["t0"]
            return t_first - t_send, t_first - t0

        try:
            for _ in range(5):  # warm-up: connections, imports, caches
                sio = await join()
                await direct()
                await room(sio)
                await leave(sio)
            for i in range(runs):
                sio = await join()
                try:
                    if i % 2:
                        d, r = await direct(), await room(sio)
                    else:
                        r, d = await room(sio), await direct()
                finally:
                    await leave(sio)
                rows.append({"direct": d[0], "direct_wire": d[1], "room": r[0], "room_wire": r[1]})
            sio = await join()
            try:
                for _ in range(growth_turns):
                    growth.append((await room(sio))[0] * 1000)
            finally:
                await leave(sio)
        finally:
            await sdk.close()
    ms = lambda key: [row[key] * 1000 for row in rows]  # noqa: E731
    over = [(row["room"] - row["direct"]) * 1000 for row in rows]
    over_wire = [(row["room_wire"] - row["direct_wire"]) * 1000 for row in rows]
    out: dict[str, Any] = {"impl": impl, "runs": runs, "loadavg": os.getloadavg()}
    for key, vals in (("room", ms("room")), ("direct", ms("direct")), ("overhead", over),
                      ("room_wire", ms("room_wire")), ("direct_wire", ms("direct_wire")),
                      ("overhead_wire", over_wire)):
        out[key] = {"p50": statistics.median(vals), "p99": pct(vals, 99), "min": min(vals)}
    # first delta after k earlier turns (2k history messages): median of a 5-turn window
    out["growth"] = {str(k): statistics.median(growth[max(0, k - 2):k + 3])
                     for k in sorted({2, 10, 25, 50, 75, growth_turns - 3}) if 0 <= k < len(growth)}
    out["growth_raw"] = growth
    return out


# ---------------------------------------------------------------------------------------------
# fan-out session: C clients in P load-generator processes, one server


async def start_loadgens(procs: Procs, url: str, clients: int, deflate: bool, log: Path,
                         rooms: int = 0) -> list[LoadGen]:
    """Load generators for `clients` clients; with `rooms`, client g (over all processes) joins
    room "r<g % rooms>", otherwise everyone joins the default room."""
    nproc = max(1, min(LOADGENS[0], math.ceil(clients / 250)))
    in_flight = str(max(1, 200 // nproc))
    sizes = [clients // nproc + (1 if i < clients % nproc else 0) for i in range(nproc)]
    gens = []
    for i, n in enumerate(sizes):
        node_flags = os.environ.get("BENCH_LOADGEN_NODE_FLAGS", "").split()  # e.g. --cpu-prof
        where = ["--rooms", str(rooms), "--offset", str(sum(sizes[:i]))] if rooms else []
        cmd = pinned(["node", *node_flags, str(LOADGEN), "--url", url, "--count", str(n),
                      "--id", str(i),
                      "--deflate", "1" if deflate else "0", "--concurrency", in_flight,
                      "--client", LOADGEN_CLIENT[0], *where,
                      "--maxlife", "900"], CLIENT_CORES[0])
        proc = await procs.start(cmd, stdin=True, log=log)
        gens.append(LoadGen(proc, i))
    await asyncio.gather(*(g.wait("ready", 20) for g in gens))
    return gens


async def one_turn(
    up: Upstream, srv: CpuSource, gens: list[LoadGen], n: int, interval: float,
    timeout: float,  # noqa: ASYNC109 - the answer's time limit, passed on to the loadgens
    rooms: list[str] | None = None,
) -> dict[str, Any]:
    """One answer in the default room, or with `rooms` one answer in each of them at once (each
    from its own script naming its room; every other room's clients expect nothing)."""
    if rooms:
        texts = {}
        for room in rooms:
            chunks = script(n, room)
            texts[room] = "".join(chunks)
            await up.enqueue(chunks, interval, key=room)
        expect: dict[str, Any] = {"cmd": "expect", "texts": texts, "timeout": timeout}
        ask: dict[str, Any] = {"cmd": "ask", "rooms": {
            room: f"[bench:{room}] please answer in {n} chunks" for room in rooms}}
    else:
        chunks = script(n)
        await up.enqueue(chunks, interval)
        expect = {"cmd": "expect", "text": "".join(chunks), "timeout": timeout}
        ask = {"cmd": "ask", "content": f"please answer in {n} chunks"}
    for g in gens:
        g.send(expect)
    await asyncio.gather(*(g.wait("armed", 10) for g in gens))
    gen_ps = [psutil.Process(g.proc.pid) for g in gens]
    gen0 = sum(sum(p.cpu_times()[:2]) for p in gen_ps)
    cores0 = psutil.cpu_times(percpu=True)
    (u0, s0), t_a = srv.cpu_split(), time.monotonic()
    cpu0 = u0 + s0
    for g in gens if rooms else gens[:1]:
        g.send(ask)
    dones = await asyncio.gather(*(g.wait("done", timeout + 10) for g in gens))
    (u1, s1), t_b = srv.cpu_split(), time.monotonic()
    cpu1 = u1 + s1
    cores1 = psutil.cpu_times(percpu=True)
    gen1 = sum(sum(p.cpu_times()[:2]) for p in gen_ps)
    busy, steal = [], []
    for a, b in zip(cores0, cores1, strict=True):
        total = sum(b) - sum(a)
        idle = (b.idle + getattr(b, "iowait", 0)) - (a.idle + getattr(a, "iowait", 0))
        busy.append(100 * (total - idle) / total if total > 0 else math.nan)
        # time the hypervisor ran something else on this virtual CPU
        stolen = getattr(b, "steal", 0) - getattr(a, "steal", 0)
        steal.append(100 * stolen / total if total > 0 else math.nan)
    lasts = {room: await up.last(room) for room in rooms} if rooms else {"": await up.last()}
    schedules = {room: {"t0": (last.get("t0") or 0) * 1000,
                        "sent": [s * 1000 for s in last.get("sent", [])]}
                 for room, last in lasts.items()}
    pace_err = [s - (sch["t0"] + i * interval * 1000)
                for sch in schedules.values() for i, s in enumerate(sch["sent"])]
    report: dict[str, Any] = {"cmd": "report", "interval": interval * 1000}
    if rooms:
        report["rooms"] = schedules
    else:
        report.update(schedules[""])
    for g in gens:
        g.send(report)
    reps = await asyncio.gather(*(g.wait("report", 60) for g in gens))
    bucket = reps[0]["bucket_ms"]
    hist = hist_merge([r["hist"] for r in reps])
    hist_wire = hist_merge([r["hist_wire"] for r in reps])
    clients = sum(r["clients"] for r in reps)
    first, spread = chunk_spread(reps, n)
    out = {
        "chunks": n, "interval_s": interval,
        "p50_ms": hist_pct(hist, 50, bucket), "p99_ms": hist_pct(hist, 99, bucket),
        "max_ms": hist_pct(hist, 100, bucket),
        "wire_p50_ms": hist_pct(hist_wire, 50, bucket),
        "wire_p99_ms": hist_pct(hist_wire, 99, bucket),
        "samples": sum(hist.values()), "expected_samples": clients * n,
        "lost_chunks": sum(r["lost_chunks"] for r in reps),
        "lost_chars": sum(r["lost_chars"] for r in reps),
        "extra_chars": sum(r["extra_chars"] for r in reps),
        "text_mismatch_clients": sum(r["text_mismatch_clients"] for r in reps),
        "reordered": sum(r["reordered"] for r in reps),
        "duplicates": sum(r["duplicates"] for r in reps),
        "kept_pace": sum(r["kept_pace"] for r in reps), "clients": clients,
        "not_ended": sum(r["not_ended"] for r in reps),
        "timed_out": any(d["timed_out"] for d in dones),
        "deltas_received": sum(r["deltas"] for r in reps),
        "last_late_max_ms": max(r["last_late_max_ms"] for r in reps),
        "cpu_s": cpu1 - cpu0, "cpu_user_s": u1 - u0, "cpu_sys_s": s1 - s0, "wall_s": t_b - t_a,
        "cpu_us_per_delivery": 1e6 * (cpu1 - cpu0) / max(1, sum(r["deltas"] for r in reps)),
        "cpu_pct": 100 * (cpu1 - cpu0) / max(t_b - t_a, 1e-9),
        "upstream_pace_err_p99_ms": pct(pace_err, 99) if pace_err else None,
        # contention: load generators' CPU (% of one core) and how busy each core was overall
        "loadgen_cpu_pct": 100 * (gen1 - gen0) / max(t_b - t_a, 1e-9),
        "core_busy_pct": busy, "core_steal_pct": steal,
        "upstream_done": all(last.get("done") for last in lasts.values()),
        # per chunk: when its first client got it (the fan-out's start, as late as the
        # upstream and the server's loop made it) and how long until its last client did
        "chunk_first_p50_ms": pct(first, 50) if first else None,
        "chunk_first_p99_ms": pct(first, 99) if first else None,
        "chunk_spread_p50_ms": pct(spread, 50) if spread else None,
        "chunk_spread_p99_ms": pct(spread, 99) if spread else None,
        # when the last client got each of the first 10 chunks; the 10 latest (ms, chunk)
        "chunk_last_head_ms": [round(a + b, 1) for a, b in zip(first, spread, strict=True)][:10],
        "chunk_last_worst": sorted((round(a + b, 1), i) for i, (a, b) in
                                   enumerate(zip(first, spread, strict=True)))[-10:],
        # events of another room's answer at a client (0 unless rooms leak into each other)
        "foreign": sum(r.get("foreign", 0) for r in reps),
        "foreign_clients": sum(r.get("foreign_clients", 0) for r in reps),
        # per server the clients talked to (one unless the load generator had several URLs)
        "groups": group_stats(reps, bucket),
    }
    if rooms:
        out.update(room_ids(reps, rooms))
        out["idle_clients"] = sum(r.get("idle_clients", 0) for r in reps)
        out["rooms_answering"] = len(rooms)
    return out


def group_stats(reps: list[dict[str, Any]], bucket: float) -> dict[str, dict[str, Any]]:
    """Per load-generator URL group (its index in --url): clients, the median and 90th
    percentile of their first delta's arrival after t0, and their chunks' lateness."""
    firsts: dict[str, list[float]] = {}
    hists: dict[str, list[dict[str, int]]] = {}
    counts: dict[str, int] = {}
    for r in reps:
        for g, data in r.get("groups", {}).items():
            firsts.setdefault(g, []).extend(data["first_ms"])
            hists.setdefault(g, []).append(data["hist"])
            counts[g] = counts.get(g, 0) + data["clients"]
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(counts, key=int):
        hist = hist_merge(hists[g])
        out[g] = {"clients": counts[g], "first_delta_clients": len(firsts[g]),
                  "first_p50_ms": statistics.median(firsts[g]) if firsts[g] else None,
                  "first_p90_ms": pct(firsts[g], 90) if firsts[g] else None,
                  "first_min_ms": min(firsts[g]) if firsts[g] else None,
                  "p50_ms": hist_pct(hist, 50, bucket), "p99_ms": hist_pct(hist, 99, bucket)}
    return out


def room_ids(reps: list[dict[str, Any]], rooms: list[str]) -> dict[str, int]:
    """Which answer ids each room's clients saw: every answering room should have seen exactly
    one, its own, and no id should show up in two rooms."""
    seen: dict[str, set[str]] = {}
    for r in reps:
        for room, ids in r.get("answer_ids", {}).items():
            seen.setdefault(room, set()).update(ids)
    rooms_of: dict[str, set[str]] = {}
    for room, ids in seen.items():
        for answer in ids:
            rooms_of.setdefault(answer, set()).add(room)
    return {
        "rooms_with_one_id": sum(1 for room in rooms if len(seen.get(room, ())) == 1),
        "ids_in_several_rooms": sum(1 for where in rooms_of.values() if len(where) > 1),
        "idle_rooms_with_ids": sum(1 for room in seen if room not in rooms),
    }


def chunk_spread(reps: list[dict[str, Any]], n: int) -> tuple[list[float], list[float]]:
    """Per chunk, over all load generators: earliest lateness, and latest minus earliest."""
    first: list[float] = []
    spread: list[float] = []
    for i in range(n):
        lo = [r["chunk_first"][i] for r in reps if r.get("chunk_first") and
              r["chunk_first"][i] is not None]
        hi = [r["chunk_last"][i] for r in reps if r.get("chunk_last") and
              r["chunk_last"][i] is not None]
        if lo and hi:
            first.append(min(lo))
            spread.append(max(hi) - min(lo))
    return first, spread


async def fanout_session(procs: Procs, up: Upstream, impl: str, clients: int, deflate: bool,
                         modes: list[tuple[str, int, float]], log: Path,
                         profile: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"impl": impl, "clients": clients, "deflate": deflate,
                           "loadavg": os.getloadavg()}
    async with Server(procs, impl, up.base, log) as srv:
        await asyncio.sleep(0.5)
        out["rss_idle"] = srv.rss()
        gens = await start_loadgens(procs, srv.url, clients, deflate, log)
        try:
            t_a = time.time()
            for g in gens:
                g.send({"cmd": "connect"})
            conns = await asyncio.gather(*(g.wait("connected", 120) for g in gens))
            out["connect_s"] = max(c["finished"] for c in conns) / 1000 - t_a
            out["connected_ok"] = sum(c["ok"] for c in conns)
            out["connect_failed"] = sum(c["failed"] for c in conns)
            out["connect_errors"] = [e for c in conns for e in c["errors"]][:5]
            await asyncio.sleep(1.0)
            out["rss_connected"] = srv.rss()
            out["rss_per_client_kb"] = (out["rss_connected"] - out["rss_idle"]) / clients / 1024
            await one_turn(up, srv, gens, 20, 0.0, 30)  # warm-up turn
            for name, n, interval in modes:
                timeout = n * interval + (30 if clients <= 100 else 120)
                prof = None
                if profile is not None and name == "paced":
                    prof = await start_profile(procs, srv, profile, n * interval)
                out[name] = await one_turn(up, srv, gens, n, interval, timeout)
                if prof is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(prof.wait(), 30)
                await asyncio.sleep(0.5)
            out["rss_after"] = srv.rss()
            for g in gens:
                g.send({"cmd": "status"})
            stats = await asyncio.gather(*(g.wait("status", 10) for g in gens))
            out["connected_end"] = sum(s["connected"] for s in stats)
            out["disconnects"] = sum(s["disconnects"] for s in stats)
            out["disconnect_reasons"] = sorted({r for s in stats for r in s["disconnect_reasons"]})
        finally:
            for g in gens:
                with contextlib.suppress(Exception):
                    g.send({"cmd": "quit"})
            await asyncio.sleep(0.3)
            for g in gens:
                g.close()
                await procs.stop(g.proc)
    return out


def rooms_plan(rooms: int, answering: int) -> tuple[list[str], list[str]]:
    """The rooms that answer in the measured turn, spread over all rooms, and a different set
    for the warm-up turn."""
    step = max(1, rooms // answering)
    paced = [f"r{(k * step) % rooms}" for k in range(answering)]
    warm = [f"r{(k * step + max(1, step // 2)) % rooms}" for k in range(answering)]
    return paced, warm


async def rooms_session(procs: Procs, up: Upstream, impl: str, rooms: int, per_room: int,
                        answering: int, deflate: bool, n: int, interval: float,
                        log: Path, profile: Path | None = None) -> dict[str, Any]:
    """Many rooms in one server: `rooms` rooms of `per_room` people, `answering` of them
    answering at once (paced), each client checking it gets its own room's answer and nothing
    of any other room's."""
    clients = rooms * per_room
    out: dict[str, Any] = {"impl": impl, "rooms": rooms, "per_room": per_room,
                           "answering": answering, "clients": clients, "deflate": deflate,
                           "loadavg": os.getloadavg()}
    paced, warm = rooms_plan(rooms, answering)
    async with Server(procs, impl, up.base, log) as srv:
        await asyncio.sleep(0.5)
        out["rss_idle"] = srv.rss()
        gens = await start_loadgens(procs, srv.url, clients, deflate, log, rooms=rooms)
        try:
            t_a = time.time()
            for g in gens:
                g.send({"cmd": "connect"})
            conns = await asyncio.gather(*(g.wait("connected", 120) for g in gens))
            out["connect_s"] = max(c["finished"] for c in conns) / 1000 - t_a
            out["connected_ok"] = sum(c["ok"] for c in conns)
            out["connect_errors"] = [e for c in conns for e in c["errors"]][:5]
            await asyncio.sleep(1.0)
            out["rss_connected"] = srv.rss()
            out["rss_per_client_kb"] = (out["rss_connected"] - out["rss_idle"]) / clients / 1024
            out["warmup"] = await one_turn(up, srv, gens, 20, 0.0, 30, rooms=warm)
            prof = await start_profile(procs, srv, profile, n * interval) if profile else None
            out["paced"] = await one_turn(up, srv, gens, n, interval, n * interval + 60,
                                          rooms=paced)
            if prof is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(prof.wait(), 30)
            for g in gens:
                g.send({"cmd": "status"})
            stats = await asyncio.gather(*(g.wait("status", 10) for g in gens))
            out["disconnects"] = sum(s["disconnects"] for s in stats)
            out["disconnect_reasons"] = sorted({r for s in stats for r in s["disconnect_reasons"]})
        finally:
            for g in gens:
                with contextlib.suppress(Exception):
                    g.send({"cmd": "quit"})
            await asyncio.sleep(0.3)
            for g in gens:
                g.close()
                await procs.stop(g.proc)
    return out


def parse_rooms_case(text: str) -> tuple[int, int, int] | None:
    """"100x10:10" -> 100 rooms of 10 people, 10 answering at once; "" or "none" -> None."""
    if text in ("", "none"):
        return None
    shape, _, answering = text.partition(":")
    rooms, _, per_room = shape.partition("x")
    case = int(rooms), int(per_room), int(answering or 1)
    if not (case[0] >= 1 and case[1] >= 1 and 1 <= case[2] <= case[0]):
        raise SystemExit(f"--rooms-case {text!r}: need ROOMSxPEOPLE:ANSWERING, 1 <= ANSWERING "
                         "<= ROOMS")
    return case


async def start_profile(procs: Procs, srv: Server, path: Path, seconds: float
                        ) -> asyncio.subprocess.Process | None:
    """py-spy record of the server while the paced answer streams (if py-spy is installed).
    With BENCH_PERF=1, `perf record -e cpu-clock` instead (`<path>.perf.data`): on-CPU samples
    only (py-spy's are wall-clock, a preempted process included), C and kernel symbols only."""
    if os.environ.get("BENCH_PERF") and shutil.which("perf") and srv.proc is not None:
        cmd = pinned(["perf", "record", "-e", "cpu-clock", "-F", "1000", "-p", str(srv.proc.pid),
                      "-o", str(path.with_suffix(".perf.data")), "--", "sleep",
                      str(max(1, int(seconds) - 1))], CLIENT_CORE)
        return await procs.start(cmd, stdout=False, log=path.with_suffix(".log"))
    spy = Path(PY).parent / "py-spy"
    if not spy.exists() or srv.proc is None:
        return None
    fmt = "raw" if path.suffix == ".txt" else "flamegraph"
    cmd = pinned([str(spy), "record", "-o", str(path), "--format", fmt, "--pid", str(srv.proc.pid),
                  "--duration", str(max(1, int(seconds) - 1)), "--rate", "200", "--nonblocking"],
                 CLIENT_CORE)
    return await procs.start(cmd, stdout=False, log=path.with_suffix(".log"))


# ---------------------------------------------------------------------------------------------
# machine and main


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    import engineio
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "node": node, "platform": platform.platform(),
        "python_socketio": socketio.__version__ if hasattr(socketio, "__version__") else
        _version("python-socketio"), "python_engineio": _version("python-engineio"),
        "aiohttp": aiohttp.__version__, "openai": openai.__version__,
        "socket_io_client": _npm_version("socket.io-client"), "ws": _npm_version("ws"),
        "taskset": HAVE_TASKSET, "loadavg_start": os.getloadavg(),
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "server_dirty": bool(_git("status", "--porcelain", "--", "server")),
        "engineio_module": engineio.__file__,
    }


def _git(*args: str) -> str:
    """Read-only git queries (the bench never changes the repository)."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


def _npm_version(pkg: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((BENCH / "loadgen" / "node_modules" / pkg / "package.json").read_text())
        return str(data["version"])
    return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="C=10,100, 1 run, fewer relay samples")
    p.add_argument("--clients", default=None, help="comma-separated C values")
    p.add_argument("--runs", type=int, default=None, help="interleaved runs (default 3; quick 1)")
    p.add_argument("--impls", default="roundtable,baseline,node",
                   help="implementations, alternated within each run (exp:<variants> for "
                        "bench/experiments/launch.py variants)")
    p.add_argument("--deflate", default=None,
                   help="on,off | on | off (default on,off; quick: on, what browsers offer)")
    p.add_argument("--client", choices=("raw", "sio"), default="raw",
                   help="load-generator client: raw (Engine.IO/Socket.IO wire protocol over ws, "
                        "default) or sio (the official socket.io-client)")
    p.add_argument("--client-cores", choices=("1", "all"), default="1",
                   help="load generators and upstream on core 1 (default) or on any core")
    p.add_argument("--loadgens", type=int, default=1,
                   help="at most this many load generator processes (default 1)")
    p.add_argument("--rooms-case", default=None,
                   help="many rooms: ROOMSxPEOPLE:ANSWERING (default 100x10:10; quick 10x10:3); "
                        "'none' to skip. Paced, deflate as the first --deflate value, for every "
                        "implementation with rooms (roundtable, exp:, rev: from 38445b5 on)")
    p.add_argument("--cluster-case", default=None,
                   help="one room over several processes: PROCESSESxCLIENTS (default 2x1000; "
                        "quick 2x100); 'none' to skip. Each run: one process without Redis, then "
                        "PROCESSES processes + a redis-server (bench/cluster.py). Paced, deflate "
                        "as the first --deflate value")
    p.add_argument("--cluster-impl", default="roundtable",
                   help="server for both sides of the cluster case: roundtable (this working "
                        "tree) or rev:<git revision>")
    p.add_argument("--chunks", type=int, default=500)
    p.add_argument("--interval", type=float, default=0.02, help="paced: seconds between deltas")
    p.add_argument("--modes", default="paced,unpaced")
    p.add_argument("--relay-runs", type=int, default=None, help="relay samples per run")
    p.add_argument("--no-relay", action="store_true")
    p.add_argument("--no-fanout", action="store_true", help="relay overhead only")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the first implementation at the largest C (deflate on, paced) "
                        "and in the many-rooms case, and every server process of the cluster "
                        "case (first run)")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/<stamp>.json)")
    p.add_argument("--no-report", action="store_true", help="skip bench/report.py at the end")
    p.add_argument("--update-docs", action="store_true",
                   help="let report.py rewrite docs/performance.md's results block and PNG "
                        "(default for a full run with default settings)")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> Path:
    clients = [int(c) for c in (args.clients or ("10,100" if args.quick else
                                                 "10,100,500,1000")).split(",")]
    runs = args.runs or (1 if args.quick else 3)
    relay_runs = args.relay_runs or (30 if args.quick else 150)
    growth_turns = 30 if args.quick else 100
    impls = [i for i in args.impls.split(",") if i]
    deflate_arg = args.deflate or ("on" if args.quick else "on,off")
    deflates = [d == "on" for d in deflate_arg.split(",")]
    modes_all = {"paced": ("paced", args.chunks, args.interval),
                 "unpaced": ("unpaced", args.chunks, 0.0)}
    modes = [modes_all[m] for m in args.modes.split(",")]
    rooms_case = parse_rooms_case(args.rooms_case if args.rooms_case is not None else
                                  ("10x10:3" if args.quick else "100x10:10"))
    rooms_impls = [i for i in impls if supports_rooms(i)] if rooms_case else []
    from cluster import cluster_pair, parse_cluster_case
    cluster_case = parse_cluster_case(args.cluster_case if args.cluster_case is not None else
                                      ("2x100" if args.quick else "2x1000"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    out_path = Path(args.out) if args.out else RESULTS / f"{stamp}{suffix}.json"
    log = RESULTS / f"{stamp}.log"
    results: dict[str, Any] = {
        "stamp": stamp, "quick": args.quick, "argv": sys.argv, "machine": machine(),
        "config": {"clients": clients, "runs": runs, "impls": impls, "deflate": deflate_arg,
                   "loadgen_client": LOADGEN_CLIENT[0], "client_cores": CLIENT_CORES[0],
                   "loadgens": LOADGENS[0],
                   "chunks": args.chunks, "interval": args.interval, "modes": args.modes,
                   "relay_runs": relay_runs, "rooms_case": rooms_case,
                   "cluster_case": cluster_case, "cluster_impl": args.cluster_impl},
        "relay": [], "fanout": [], "rooms": [], "cluster": [], "errors": [],
    }

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=1))

    procs = Procs()
    started = time.monotonic()
    try:
        async with Upstream(procs, log) as up:
            for run in range(runs):
                order = impls if run % 2 == 0 else list(reversed(impls))
                if not args.no_relay:
                    for impl in order:
                        print(f"[run {run + 1}/{runs}] relay {impl} ...", flush=True)
                        try:
                            r = await relay_session(procs, up, impl, relay_runs, log, growth_turns)
                            r["run"] = run
                            results["relay"].append(r)
                            print(f"    room p50 {r['room']['p50']:.2f} ms, direct "
                                  f"{r['direct']['p50']:.2f} ms, overhead p50 "
                                  f"{r['overhead']['p50']:.2f} / p99 {r['overhead']['p99']:.2f}"
                                  " ms", flush=True)
                        except Exception as exc:
                            results["errors"].append(f"relay {impl} run {run}: {exc!r}")
                            print(f"    FAILED: {exc!r}", flush=True)
                        save()
                for c in [] if args.no_fanout else clients:
                    for deflate in deflates:
                        for impl in order:
                            on = "on" if deflate else "off"
                            tag = f"[run {run + 1}/{runs}] C={c} deflate={on} {impl}"
                            print(tag + " ...", flush=True)
                            profile = None
                            if (args.profile and impl == impls[0] and c == max(clients)
                                    and deflate and run == 0):
                                profile = RESULTS / f"{stamp}-profile-{safe_name(impl)}-{c}.txt"
                            try:
                                r = await fanout_session(procs, up, impl, c, deflate, modes, log,
                                                         profile)
                                r["run"] = run
                                results["fanout"].append(r)
                                print("    " + summary_line(r, [m[0] for m in modes]), flush=True)
                            except Exception as exc:
                                results["errors"].append(f"{tag}: {exc!r}")
                                print(f"    FAILED: {exc!r}", flush=True)
                            save()
                for impl in [i for i in order if i in rooms_impls]:
                    assert rooms_case is not None
                    nr, per, ans = rooms_case
                    tag = f"[run {run + 1}/{runs}] {nr} rooms x {per}, {ans} answering {impl}"
                    print(tag + " ...", flush=True)
                    profile = None
                    if args.profile and impl == impls[0] and run == 0:
                        profile = RESULTS / f"{stamp}-profile-{safe_name(impl)}-rooms.txt"
                    try:
                        r = await rooms_session(procs, up, impl, nr, per, ans, deflates[0],
                                                args.chunks, args.interval, log, profile)
                        r["run"] = run
                        results["rooms"].append(r)
                        print("    " + summary_line(r, ["paced"]), flush=True)
                    except Exception as exc:
                        results["errors"].append(f"{tag}: {exc!r}")
                        print(f"    FAILED: {exc!r}", flush=True)
                    save()
                if cluster_case:
                    profile = None
                    if args.profile and run == 0:
                        profile = RESULTS / f"{stamp}-profile-cluster.txt"
                    await cluster_pair(procs, up, run, runs, cluster_case, args.cluster_impl,
                                       deflates[0], args.chunks, args.interval, args.quick, log,
                                       results, save, profile)
    finally:
        await procs.stop_all()
        results["elapsed_s"] = time.monotonic() - started
        results["machine"]["loadavg_end"] = os.getloadavg()
        save()
    shown = out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path
    print(f"results: {shown}  ({results['elapsed_s']:.0f} s)", flush=True)
    return out_path


def safe_name(impl: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_+" else "_" for ch in impl)


def summary_line(r: dict[str, Any], modes: list[str]) -> str:
    parts = [f"connect {r['connect_s']:.2f}s ok {r['connected_ok']}/{r['clients']}",
             f"{r['rss_per_client_kb']:.1f} KB/client"]
    for m in modes:
        t = r.get(m)
        if t:
            parts.append(f"{m}: p50 {t['p50_ms']:.1f} p99 {t['p99_ms']:.1f} ms, cpu "
                         f"{t['cpu_pct']:.0f}%, pace {t['kept_pace']}/{t['clients']}, lost "
                         f"{t['lost_chunks']} mism {t['text_mismatch_clients']} reord "
                         f"{t['reordered']}")
            if "rooms_answering" in t:
                parts.append(f"foreign {t['foreign']} ({t['foreign_clients']} clients), ids in "
                             f"several rooms {t['ids_in_several_rooms']}, rooms with their own "
                             f"answer {t['rooms_with_one_id']}/{t['rooms_answering']}, "
                             f"{t['cpu_us_per_delivery']:.1f} us/delivery")
    parts.append(f"disc {r.get('disconnects')}")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out:
        args.out = os.path.abspath(args.out)  # printed relative to the repository
    LOADGEN_CLIENT[0] = args.client
    LOADGENS[0] = args.loadgens
    if args.client_cores == "all":
        CLIENT_CORES[0] = f"0-{NCPU - 1}"
    path = asyncio.run(main_async(args))
    if not args.no_report:
        cmd = [PY, str(BENCH / "report.py"), str(path)]
        standard = (not args.quick and args.clients is None and args.runs is None
                    and args.impls == "roundtable,baseline,node" and args.client == "raw")
        if args.update_docs or standard:
            cmd.append("--update-docs")
        subprocess.run(cmd, cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
