"""The cluster case's figures (bench/cluster.py) as a summary and a markdown table: one process
against several sharing a room over Redis, from the sessions of one results file. Used by
bench/cluster.py (printing) and bench/report.py (tables, docs/performance.md's bench:cluster
block); no dependency beyond the standard library.

Each session is {"mode": "single"|"cluster", "run": k, "paced": one_turn's figures,
"first_delta": {group: ms}, "cpu_by_process": {name: s}, ...}; single and cluster sessions of the
same run form a pair.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

Session = dict[str, Any]

# the targets for the cluster case
P99_MS = 40.0
CPU_RATIO = 1.3
FIRST_DELTA_MS = 3.0


def _med(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def _span(values: list[float], digits: int = 1) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    m = statistics.median(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def pairs(sessions: list[Session]) -> list[tuple[Session, Session]]:
    """(single, cluster) of each run that has both."""
    by_run: dict[int, dict[str, Session]] = {}
    for s in sessions:
        if "paced" in s:
            by_run.setdefault(s["run"], {})[s["mode"]] = s
    return [(r["single"], r["cluster"]) for _, r in sorted(by_run.items())
            if "single" in r and "cluster" in r]


def owner_first(s: Session) -> float:
    """Median first-delta time of the clients on the room's owner process (the single process
    in a single session), ms after t0."""
    return float(s["first_delta"].get(str(s.get("owner_group", 0)), math.nan))


def other_first(s: Session) -> float:
    """The same for the clients on the other process(es): the median of their groups."""
    owner = str(s.get("owner_group", 0))
    rest = [v for g, v in s["first_delta"].items() if g != owner]
    return _med(rest)


def clean(s: Session) -> bool:
    """Every client registered and stayed connected: the session measured what it meant to."""
    return bool(s["connected_ok"] == s["clients"] and not s.get("disconnects"))


def summary(sessions: list[Session]) -> dict[str, Any]:
    """Medians over the clean pairs of each side, per-pair ratios and differences; worst-run
    figures (registered, kept pace, lost, disconnects) over every pair; the targets."""
    every = pairs(sessions)
    ps = [(a, b) for a, b in every if clean(a) and clean(b)]
    cluster = [b for _, b in ps]

    def side(ss: list[Session], f: Callable[[Session], float]) -> list[float]:
        return [f(s) for s in ss]

    def paced(key: str) -> Callable[[Session], float]:
        return lambda s: float(s["paced"][key])

    us = paced("cpu_us_per_delivery")
    out: dict[str, Any] = {"pairs": len(ps), "pairs_run": len(every),
                           "unclean": [(a["run"], a if not clean(a) else b) for a, b in every
                                       if not (clean(a) and clean(b))]}
    for name, k in (("single", 0), ("cluster", 1)):
        ss = [pair[k] for pair in ps]
        worst = [pair[k] for pair in every]
        out[name] = {
            "p50_ms": side(ss, paced("p50_ms")), "p99_ms": side(ss, paced("p99_ms")),
            "cpu_s": side(ss, paced("cpu_s")), "cpu_pct": side(ss, paced("cpu_pct")),
            "cpu_user_s": side(ss, paced("cpu_user_s")), "cpu_sys_s": side(ss, paced("cpu_sys_s")),
            "kb_per_client": side(ss, lambda s: float(s["rss_per_client_kb"])),
            "connect_s": side(ss, lambda s: float(s["connect_s"])),
            "deliveries": side(ss, paced("deltas_received")), "cpu_us": side(ss, us),
            "owner_first_ms": side(ss, owner_first),
            "registered_min": min((s["connected_ok"] for s in worst), default=0),
            "kept_pace_min": min((s["paced"]["kept_pace"] for s in worst), default=0),
            "clients": worst[0]["clients"] if worst else 0,
            "bad_max": max((s["paced"]["lost_chunks"] + s["paced"]["reordered"]
                            + s["paced"]["text_mismatch_clients"] + s["paced"]["duplicates"]
                            for s in worst), default=0),
            "disconnects_max": max((s.get("disconnects", 0) for s in worst), default=0),
        }
    c = out["cluster"]
    c["other_first_ms"] = side(cluster, other_first)
    c["redis_cpu_s"] = [s["cpu_by_process"].get("redis", math.nan) for s in cluster]
    c["owner_cpu_s"] = [s["cpu_by_process"].get("owner", math.nan) for s in cluster]
    c["other_cpu_s"] = [s["cpu_by_process"].get("other", math.nan) for s in cluster]
    c["owner_ok"] = all(b.get("owner_group") == 0 for _, b in every)
    c["redis_calls"] = {cmd: [float(s.get("redis_commands", {}).get(cmd, [math.nan])[0])
                              for s in cluster] for cmd in ("evalsha", "xread", "xadd")}
    c["redis_calls"]["all"] = [float(sum(v[0] for v in s["redis_commands"].values()))
                               if "redis_commands" in s else math.nan for s in cluster]
    out["cpu_ratio_pairs"] = [us(b) / us(a) for a, b in ps if us(a) > 0]
    out["cpu_ratio_of_medians"] = (_med(c["cpu_us"]) / _med(out["single"]["cpu_us"])
                                   if ps else math.nan)
    out["first_other_minus_owner"] = [other_first(b) - owner_first(b) for b in cluster]
    out["first_other_minus_single"] = [other_first(b) - owner_first(a) for a, b in ps]
    out["first_owner_minus_single"] = [owner_first(b) - owner_first(a) for a, b in ps]
    out["targets"] = {
        "kept_pace": bool(every) and c["kept_pace_min"] == c["clients"] == c["registered_min"],
        "p99": _med(c["p99_ms"]) <= P99_MS,
        "lost_reordered": bool(every) and c["bad_max"] == 0,
        "cpu_ratio": out["cpu_ratio_of_medians"] <= CPU_RATIO,
        "first_delta": _med(out["first_other_minus_owner"]) <= FIRST_DELTA_MS,
    }
    return out


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def table(sessions: list[Session]) -> str:
    """Markdown: the figures of both sides and the targets."""
    s = summary(sessions)
    if not s["pairs"]:
        return "_no cluster results_\n"
    a, c, t = s["single"], s["cluster"], s["targets"]
    ratio = s["cpu_ratio_of_medians"]
    rows = [
        f"| figure (median (min–max) of {s['pairs']} pairs; *worst run*: of all "
        f"{s['pairs_run']}) | one process | two processes + Redis | cluster ÷ or − one process |",
        "|---|---|---|---|",
        f"| registered (worst run) | {a['registered_min']}/{a['clients']} | "
        f"{c['registered_min']}/{c['clients']} | – |",
        f"| connect + register all (s) | {_span(a['connect_s'], 2)} | {_span(c['connect_s'], 2)} "
        f"| {_med(c['connect_s']) / _med(a['connect_s']):.2f}× |",
        f"| every client kept pace | {a['kept_pace_min']}/{a['clients']} (worst run) | "
        f"{_mark(t['kept_pace'])} {c['kept_pace_min']}/{c['clients']} (worst run) | – |",
        f"| p50 against the schedule (ms) | {_span(a['p50_ms'])} | {_span(c['p50_ms'])} | "
        f"{_med(c['p50_ms']) - _med(a['p50_ms']):+.1f} ms |",
        f"| p99 against the schedule (ms; cluster ≤ {P99_MS:.0f}) | {_span(a['p99_ms'])} | "
        f"{_mark(t['p99'])} {_span(c['p99_ms'])} | "
        f"{_med(c['p99_ms']) / _med(a['p99_ms']):.2f}× |",
        f"| lost / reordered / mismatched / duplicated (worst run) | {a['bad_max']} | "
        f"{_mark(t['lost_reordered'])} {c['bad_max']} | – |",
        f"| deltas delivered (all clients) | {_span(a['deliveries'], 0)} | "
        f"{_span(c['deliveries'], 0)} | – |",
        f"| CPU s over the answer (server side, summed) | {_span(a['cpu_s'], 2)} | "
        f"{_span(c['cpu_s'], 2)} | {_med(c['cpu_s']) / _med(a['cpu_s']):.2f}× |",
        f"| … user / system | {_span(a['cpu_user_s'], 2)} / {_span(a['cpu_sys_s'], 2)} | "
        f"{_span(c['cpu_user_s'], 2)} / {_span(c['cpu_sys_s'], 2)} | "
        f"{_med(c['cpu_user_s']) / _med(a['cpu_user_s']):.2f}× / "
        f"{_med(c['cpu_sys_s']) / _med(a['cpu_sys_s']):.2f}× |",
        f"| … of which the owner process / the other / redis-server | – | "
        f"{_span(c['owner_cpu_s'], 2)} / {_span(c['other_cpu_s'], 2)} / "
        f"{_span(c['redis_cpu_s'], 2)} | – |",
        *(["| Redis commands during the answer: all / EVALSHA / XREAD / XADD | – | "
            + " / ".join(_span(c["redis_calls"][k], 0) for k in ("all", "evalsha", "xread",
                                                                   "xadd"))
            + " | – |"] if any(not math.isnan(v) for v in c["redis_calls"]["all"]) else []),
        f"| **CPU µs per delivered delta** (cluster ≤ {CPU_RATIO}×) | {_span(a['cpu_us'], 2)} "
        f"| {_span(c['cpu_us'], 2)} | {_mark(t['cpu_ratio'])} **{ratio:.2f}×** (per pair "
        f"{_span(s['cpu_ratio_pairs'], 2)}) |",
        f"| first delta, median client, ms after t0: the owner process | "
        f"{_span(a['owner_first_ms'], 2)} | {_span(c['owner_first_ms'], 2)} | "
        f"{_med(s['first_owner_minus_single']):+.2f} ms |",
        f"| … non-owner process | – | {_span(c['other_first_ms'], 2)} | "
        f"{_med(s['first_other_minus_single']):+.2f} ms |",
        f"| **first-delta overhead, non-owner − owner** (≤ {FIRST_DELTA_MS:.0f} ms median) | – | "
        f"{_mark(t['first_delta'])} **{_span(s['first_other_minus_owner'], 2)} ms** | – |",
        f"| server memory per client (KB, RSS summed) | {_span(a['kb_per_client'])} | "
        f"{_span(c['kb_per_client'])} | "
        f"{_med(c['kb_per_client']) / _med(a['kb_per_client']):.2f}× |",
        f"| disconnects (worst run) | {a['disconnects_max']} | {c['disconnects_max']} | – |",
    ]
    notes = []
    if not c["owner_ok"]:
        notes.append("**Warning:** in some run the room's owner was not the first client's "
                     "process.")
    for run, bad in s["unclean"]:
        warned = bad.get("server_warnings", [])
        notes.append(f"Pair {run + 1} left out of the medians: {bad['mode']} side, "
                     f"{bad['connected_ok']}/{bad['clients']} registered, "
                     f"{bad.get('disconnects', 0)} disconnected "
                     f"({', '.join(bad.get('disconnect_reasons', [])) or 'none'})"
                     + (f"; server log: {'; '.join(_short(w) for w in warned[:4])}"
                        if warned else "") + ".")
    return "\n".join(rows) + "\n" + "".join(f"\n{n}\n" for n in notes)


def _short(line: str) -> str:
    """A log line without its date: `16:11:27,456 WARNING server.cluster.node: …`."""
    return "`" + line.split(" ", 1)[-1].strip() + "`"


def line(session: Session) -> str:
    """One session, for the progress output."""
    t = session["paced"]
    warned = len(session.get("server_warnings", []))
    firsts = ", ".join(f"g{g} {v:.2f}" for g, v in sorted(session["first_delta"].items()))
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in session.get("cpu_by_process", {}).items())
    cmds = session.get("redis_commands")
    redis = (", redis calls " + " ".join(f"{k} {v[0]}" for k, v in sorted(
        cmds.items(), key=lambda kv: -kv[1][0])[:4])) if cmds else ""
    return (f"p50 {t['p50_ms']:.1f} p99 {t['p99_ms']:.1f} ms, pace {t['kept_pace']}/"
            f"{t['clients']}, lost {t['lost_chunks']} reord {t['reordered']} mism "
            f"{t['text_mismatch_clients']}, {t['deltas_received']} deliveries, "
            f"{t['cpu_us_per_delivery']:.2f} us/delivery (cpu s: {cpu}), first delta ms "
            f"after t0: {firsts} (owner group {session.get('owner_group')}), disc "
            f"{session.get('disconnects')}, registered {session.get('connected_ok')}, "
            f"{warned} server warnings{redis}")
