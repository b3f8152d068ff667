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


def summary(sessions: list[Session]) -> dict[str, Any]:
    """Medians over runs of each side, per-pair ratios and differences, and the targets."""
    ps = pairs(sessions)
    single = [a for a, _ in ps]
    cluster = [b for _, b in ps]

    def side(ss: list[Session], f: Callable[[Session], float]) -> list[float]:
        return [f(s) for s in ss]

    def paced(key: str) -> Callable[[Session], float]:
        return lambda s: float(s["paced"][key])

    us = paced("cpu_us_per_delivery")
    out: dict[str, Any] = {"pairs": len(ps)}
    for name, ss in (("single", single), ("cluster", cluster)):
        out[name] = {
            "p50_ms": side(ss, paced("p50_ms")), "p99_ms": side(ss, paced("p99_ms")),
            "cpu_s": side(ss, paced("cpu_s")), "cpu_pct": side(ss, paced("cpu_pct")),
            "deliveries": side(ss, paced("deltas_received")), "cpu_us": side(ss, us),
            "owner_first_ms": side(ss, owner_first),
            "kept_pace_min": min((s["paced"]["kept_pace"] for s in ss), default=0),
            "clients": ss[0]["paced"]["clients"] if ss else 0,
            "bad_max": max((s["paced"]["lost_chunks"] + s["paced"]["reordered"]
                            + s["paced"]["text_mismatch_clients"] + s["paced"]["duplicates"]
                            for s in ss), default=0),
            "disconnects_max": max((s.get("disconnects", 0) for s in ss), default=0),
        }
    c = out["cluster"]
    c["other_first_ms"] = side(cluster, other_first)
    c["redis_cpu_s"] = [s["cpu_by_process"].get("redis", math.nan) for s in cluster]
    c["owner_cpu_s"] = [s["cpu_by_process"].get("owner", math.nan) for s in cluster]
    c["other_cpu_s"] = [s["cpu_by_process"].get("other", math.nan) for s in cluster]
    c["owner_ok"] = all(s.get("owner_group") == 0 for s in cluster)
    out["cpu_ratio_pairs"] = [us(b) / us(a) for a, b in ps if us(a) > 0]
    out["cpu_ratio_of_medians"] = (_med(c["cpu_us"]) / _med(out["single"]["cpu_us"])
                                   if ps else math.nan)
    out["first_other_minus_owner"] = [other_first(b) - owner_first(b) for b in cluster]
    out["first_other_minus_single"] = [other_first(b) - owner_first(a) for a, b in ps]
    out["first_owner_minus_single"] = [owner_first(b) - owner_first(a) for a, b in ps]
    out["targets"] = {
        "kept_pace": bool(ps) and c["kept_pace_min"] == c["clients"],
        "p99": _med(c["p99_ms"]) <= P99_MS,
        "lost_reordered": bool(ps) and c["bad_max"] == 0,
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
        f"| figure ({s['pairs']} interleaved pairs, median (min–max)) | one process | "
        f"two processes + Redis | cluster ÷ or − one process |",
        "|---|---|---|---|",
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
        f"| … of which the owner process / the other / redis-server | – | "
        f"{_span(c['owner_cpu_s'], 2)} / {_span(c['other_cpu_s'], 2)} / "
        f"{_span(c['redis_cpu_s'], 2)} | – |",
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
        f"| disconnects (worst run) | {a['disconnects_max']} | {c['disconnects_max']} | – |",
    ]
    note = ("" if c["owner_ok"] else
            "\n**Warning:** in some run the room's owner was not the first client's process.\n")
    return "\n".join(rows) + "\n" + note


def line(session: Session) -> str:
    """One session, for the progress output."""
    t = session["paced"]
    firsts = ", ".join(f"g{g} {v:.2f}" for g, v in sorted(session["first_delta"].items()))
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in session.get("cpu_by_process", {}).items())
    return (f"p50 {t['p50_ms']:.1f} p99 {t['p99_ms']:.1f} ms, pace {t['kept_pace']}/"
            f"{t['clients']}, lost {t['lost_chunks']} reord {t['reordered']} mism "
            f"{t['text_mismatch_clients']}, {t['deltas_received']} deliveries, "
            f"{t['cpu_us_per_delivery']:.2f} us/delivery (cpu s: {cpu}), first delta ms "
            f"after t0: {firsts} (owner group {session.get('owner_group')}), disc "
            f"{session.get('disconnects')}")
