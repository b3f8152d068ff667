"""Turn one or more bench/results/*.json files into markdown tables and a plot.

    python bench/report.py bench/results/<stamp>.json [more.json ...] [--update-docs]
    python bench/report.py bench/results/<stamp>.json --cluster [--update-docs]

Always writes bench/results/<stamp>.md and bench/results/<stamp>.png. With --update-docs it also
replaces the block between `<!-- bench:results:start -->` and `<!-- bench:results:end -->` in
docs/performance.md (creating the file if needed) and writes docs/performance.png.
Several files are merged (e.g. a full run plus a re-run): runs are pooled per configuration.
With --cluster only the cluster case's table is rendered (bench/cluster_report.py), and
--update-docs puts it between `<!-- bench:cluster:start -->` and `<!-- bench:cluster:end -->`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_report import table as cluster_table

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
PNG = ROOT / "docs" / "performance.png"


def med(values: list[float]) -> tuple[float, float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return (math.nan, math.nan, math.nan)
    return statistics.median(vals), min(vals), max(vals)


def fmt(t: tuple[float, float, float], digits: int = 1, spread: bool = True) -> str:
    m, lo, hi = t
    if math.isnan(m):
        return "–"
    if not spread or lo == hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def load(paths: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {"relay": [], "fanout": [], "rooms": [], "cluster": [],
                              "errors": [],
                              "machine": None,
                              "stamps": [], "config": None, "elapsed": 0.0}
    for p in paths:
        d = json.loads(p.read_text())
        merged["relay"] += d.get("relay", [])
        merged["fanout"] += d.get("fanout", [])
        merged["rooms"] += d.get("rooms", [])
        merged["cluster"] += d.get("cluster", [])
        merged["errors"] += d.get("errors", [])
        merged["machine"] = merged["machine"] or d.get("machine")
        merged["config"] = merged["config"] or d.get("config")
        merged["stamps"].append(p.name)
        merged["elapsed"] += d.get("elapsed_s", 0.0)
    return merged


def relay_table(data: dict[str, Any]) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in data["relay"]:
        by[r["impl"]].append(r)
    if not by:
        return "_no relay results_\n"
    lines = [
        "| server | runs × samples | first delta at room client p50 / p99 (ms) | direct SDK "
        "reader p50 / p99 (ms) | **relay overhead p50** / p99 (ms) | upstream-write → client, "
        "room − direct p50 / p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for impl, rs in by.items():
        def g(key: str, q: str, rs: list[dict[str, Any]] = rs) -> tuple[float, float, float]:
            return med([r[key][q] for r in rs])
        lines.append(
            f"| {impl} | {len(rs)} × {rs[0]['runs']} | {fmt(g('room', 'p50'), 2, False)} / "
            f"{fmt(g('room', 'p99'), 2, False)} | {fmt(g('direct', 'p50'), 2, False)} / "
            f"{fmt(g('direct', 'p99'), 2, False)} | **{fmt(g('overhead', 'p50'), 2)}** / "
            f"{fmt(g('overhead', 'p99'), 2)} | {fmt(g('overhead_wire', 'p50'), 2)} / "
            f"{fmt(g('overhead_wire', 'p99'), 2)} |")
    lines.append("")
    keys = sorted({k for rs in by.values() for r in rs for k in r.get("growth", {})}, key=int)
    if keys:
        lines.append("First delta at the room client as the room's history grows (same "
                     "connection, k earlier turns = 2k history messages; median of 5 turns, ms):")
        lines.append("")
        lines.append("| server | " + " | ".join(f"k = {k}" for k in keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for impl, rs in by.items():
            cells = [fmt(med([r["growth"].get(k, math.nan) for r in rs]), 1, False)
                     for k in keys]
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def group_fanout(data: dict[str, Any]) -> dict[tuple[int, bool, str], list[dict[str, Any]]]:
    groups: dict[tuple[int, bool, str], list[dict[str, Any]]] = defaultdict(list)
    for r in data["fanout"]:
        groups[(r["clients"], r["deflate"], r["impl"])].append(r)
    return groups


def fanout_tables(data: dict[str, Any], ref: str = "baseline") -> str:
    groups = group_fanout(data)
    if not groups:
        return "_no fan-out results_\n"
    impls = list(dict.fromkeys(k[2] for k in groups))
    base = ref if ref in impls else None
    out = []
    for mode, title in (("paced", "Paced answer (500 deltas at 50 deltas/s)"),
                        ("unpaced", "Unpaced answer (500 deltas as fast as the upstream writes)")):
        if not any(mode in r for rs in groups.values() for r in rs):
            continue
        out.append(f"#### {title}\n")
        out.append("Latency = arrival at the client − when the chunk was due (paced: t0 + i × "
                   "20 ms; unpaced: t0, the first chunk's write), over every chunk at every "
                   "client; *vs upstream write* uses the time the upstream actually wrote it "
                   "instead. CPU = server process CPU time ÷ wall time from the question to the "
                   "last client's ai-end (100 % = one core); µs per delivery = that CPU time ÷ "
                   "deltas received by all clients. Median of runs (min–max).\n")
        out.append(f"| C | deflate | server | p50 (ms) | p99 (ms) | max (ms) | p99 vs upstream "
                   f"write (ms) | server CPU % | CPU µs per delivery | answer took (s) | kept pace "
                   f"| lost / mismatched / reordered | p99 vs {ref} | CPU vs {ref} |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for key in sorted(groups, key=lambda k: (k[0], not k[1], impls.index(k[2]))):
            c, deflate, impl = key
            rs = [r for r in groups[key] if mode in r]
            if not rs:
                continue
            def m(f: str, rs: list[dict[str, Any]] = rs, mode: str = mode
                  ) -> tuple[float, float, float]:
                return med([r[mode].get(f, math.nan) for r in rs])
            pace = f"{min(r[mode]['kept_pace'] for r in rs)}/{rs[0][mode]['clients']}"
            bad = (f"{max(r[mode]['lost_chunks'] for r in rs)} / "
                   f"{max(r[mode]['text_mismatch_clients'] for r in rs)} / "
                   f"{max(r[mode]['reordered'] for r in rs)}")
            vs_p99 = vs_cpu = "–"
            if base and impl != base and (c, deflate, base) in groups:  # ratio vs reference
                brs = [r for r in groups[(c, deflate, base)] if mode in r]
                if brs:
                    vs_p99 = ratio(m("p99_ms")[0], med([r[mode]["p99_ms"] for r in brs])[0])
                    vs_cpu = ratio(m("cpu_pct")[0], med([r[mode]["cpu_pct"] for r in brs])[0])
            out.append(
                f"| {c} | {'on' if deflate else 'off'} | {impl} | {fmt(m('p50_ms'))} | "
                f"{fmt(m('p99_ms'))} | {fmt(m('max_ms'), 0)} | "
                f"{fmt(m('wire_p99_ms'), 1, False)} | "
                f"{fmt(m('cpu_pct'), 0)} | "
                f"{fmt(m('cpu_us_per_delivery'), 1)} | {fmt(m('wall_s'), 1, False)} | {pace} | "
                f"{bad} | {vs_p99} | {vs_cpu} |")
        out.append("")
    out.append("#### Connections and memory\n")
    out.append("Connect + register = from the first connect to the last register ack (50 "
               "connects in flight per load-generator process). Memory per client = (RSS with "
               "C clients registered − RSS idle) ÷ C. Disconnects = any client disconnect during "
               "the session (ping timeouts included).\n")
    out.append("| C | deflate | server | connect + register (s) | registered | server KB per "
               "client | KB per client after the answers | RSS with C clients (MB) | "
               "disconnects | load average (1 min) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(groups, key=lambda k: (k[0], not k[1], impls.index(k[2]))):
        c, deflate, impl = key
        rs = groups[key]
        reasons = sorted({x for r in rs for x in r.get("disconnect_reasons", [])})
        disc = str(max(r.get("disconnects", 0) for r in rs)) + (
            f" ({', '.join(reasons)})" if reasons else "")
        out.append(
            f"| {c} | {'on' if deflate else 'off'} | {impl} | "
            f"{fmt(med([r['connect_s'] for r in rs]), 2)} | "
            f"{min(r['connected_ok'] for r in rs)}/{c} | "
            f"{fmt(med([r['rss_per_client_kb'] for r in rs]), 1)} | "
            f"{fmt(med([(r['rss_after'] - r['rss_idle']) / c / 1024 for r in rs]), 1)} | "
            f"{fmt(med([r['rss_connected'] / 2**20 for r in rs]), 0, False)} | {disc} | "
            f"{fmt(med([r.get('loadavg', [math.nan])[0] for r in rs]), 1)} |")
    out.append("")
    return "\n".join(out) + "\n"


def one_room_us(data: dict[str, Any], impl: str, clients: int, deflate: bool) -> float:
    """Median CPU µs per delivery of the paced one-room answer at `clients` (the same files)."""
    rs = [r for r in group_fanout(data).get((clients, deflate, impl), []) if "paced" in r]
    return med([r["paced"]["cpu_us_per_delivery"] for r in rs])[0]


def rooms_rows(data: dict[str, Any]) -> dict[tuple[int, int, int, bool, str], list[dict[str, Any]]]:
    groups: dict[tuple[int, int, int, bool, str], list[dict[str, Any]]] = defaultdict(list)
    for r in data.get("rooms", []):
        if "paced" in r:
            groups[(r["rooms"], r["per_room"], r["answering"], r["deflate"], r["impl"])].append(r)
    return groups


def rooms_table(data: dict[str, Any]) -> str:
    """The many-rooms case against the one-room fan-out of the same results files."""
    groups = rooms_rows(data)
    if not groups:
        return "_no many-rooms results_\n"
    out = ["Each answering room's answer is 500 deltas at 50 deltas/s from its own upstream stream "
           "(all at once); its chunks name the room, and every client checks that it gets its "
           "own room's answer whole and in order and nothing of any other room (*cross-room*: "
           "events of another room's answer at any client, answer ids seen in two rooms). "
           "Latency is against each room's own schedule. *vs one room* = µs per delivery here ÷ "
           "the paced one-room figure of the same server in the same files, with as many "
           "clients in the one room (C = all) or as many as one room here (C = people). "
           "Median of runs (min–max).\n",
           "| rooms × people | answering | server | p50 (ms) | p99 (ms) | server CPU % | CPU µs "
           "per delivery | vs one room, C = all | vs one room, C = people | kept pace | "
           "lost chars / mismatched / reordered | cross-room events / ids in two rooms | "
           "KB per client | connect + register (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups):
        nr, per, ans, deflate, impl = key
        rs = groups[key]

        def m(f: str, rs: list[dict[str, Any]] = rs) -> tuple[float, float, float]:
            return med([r["paced"].get(f, math.nan) for r in rs])

        us = m("cpu_us_per_delivery")
        vs_all = ratio(us[0], one_room_us(data, impl, nr * per, deflate))
        vs_room = ratio(us[0], one_room_us(data, impl, per, deflate))
        p = [r["paced"] for r in rs]
        pace = f"{min(t['kept_pace'] for t in p)}/{p[0]['clients']}"
        bad = (f"{max(t['lost_chars'] for t in p)} / {max(t['text_mismatch_clients'] for t in p)}"
               f" / {max(t['reordered'] for t in p)}")
        cross = f"{max(t['foreign'] for t in p)} / {max(t['ids_in_several_rooms'] for t in p)}"
        out.append(
            f"| {nr} × {per} | {ans} | {impl} | {fmt(m('p50_ms'))} | {fmt(m('p99_ms'))} | "
            f"{fmt(m('cpu_pct'), 0)} | {fmt(us, 1)} | {vs_all} | {vs_room} | {pace} | {bad} | "
            f"{cross} | {fmt(med([r['rss_per_client_kb'] for r in rs]), 1)} | "
            f"{fmt(med([r['connect_s'] for r in rs]), 2)} |")
    return "\n".join(out) + "\n"


NAMES = {"roundtable": "Roundtable", "baseline": "bare python-socketio", "node": "Node socket.io"}


def targets(data: dict[str, Any]) -> str:
    """The issue's targets, checked against the largest C with deflate offered."""
    groups = group_fanout(data)
    present = list(dict.fromkeys([r["impl"] for r in data["relay"]] + [k[2] for k in groups]))
    known = ["roundtable", "baseline", "node"]
    impls = [i for i in known if i in present] + [i for i in present if i not in known]
    rows = ["| target | " + " | ".join(NAMES.get(i, i) for i in impls) + " |",
            "|---|" + "---|" * len(impls)]

    def rel(impl: str) -> str:
        rs = [r for r in data["relay"] if r["impl"] == impl]
        if not rs:
            return "–"
        v = med([r["overhead"]["p50"] for r in rs])[0]
        return f"{'✅' if v <= 2 else '❌'} {v:.2f} ms"

    rows.append("| relay overhead on first delta ≤ 2 ms median | "
                + " | ".join(rel(i) for i in impls) + " |")
    cmax = max((k[0] for k in groups), default=0)

    def fan(impl: str, f: Callable[[list[dict[str, Any]]], str]) -> str:
        rs = [r for r in groups.get((cmax, True, impl), []) if "paced" in r]
        return f(rs) if rs else "–"

    def pace(rs: list[dict[str, Any]]) -> str:
        ok = all(r["paced"]["kept_pace"] == r["paced"]["clients"] for r in rs)
        lo = min(r["paced"]["kept_pace"] for r in rs)
        return f"{'✅' if ok else '❌'} {lo}/{rs[0]['paced']['clients']} (worst run)"

    def p99(rs: list[dict[str, Any]]) -> str:
        v = med([r["paced"]["p99_ms"] for r in rs])[0]
        return f"{'✅' if v <= 30 else '❌'} {v:.1f} ms"

    def lost(rs: list[dict[str, Any]]) -> str:
        n = max(r["paced"]["lost_chunks"] + r["paced"]["text_mismatch_clients"]
                + r["paced"]["reordered"] for r in rs)
        return f"{'✅' if n == 0 else '❌'} {n}"

    def cpu(rs: list[dict[str, Any]]) -> str:
        v = med([r["paced"]["cpu_pct"] for r in rs])[0]
        return f"{'✅' if v <= 50 else '❌'} {v:.0f} %"

    def mem(rs: list[dict[str, Any]]) -> str:
        v = med([r["rss_per_client_kb"] for r in rs])[0]
        return f"{'✅' if v <= 35 else '❌'} {v:.1f} KB"

    def conn(rs: list[dict[str, Any]]) -> str:
        v = med([r["connect_s"] for r in rs])[0]
        ok = all(r["connected_ok"] == cmax for r in rs) and v <= 10
        return f"{'✅' if ok else '❌'} {v:.2f} s, {min(r['connected_ok'] for r in rs)}/{cmax}"

    def disc(rs: list[dict[str, Any]]) -> str:
        n = max(r.get("disconnects", 0) for r in rs)
        return f"{'✅' if n == 0 else '❌'} {n}"

    for label, f in ((f"{cmax} clients, 50 deltas/s, deflate offered: every client keeps pace",
                      pace), ("… p99 ≤ 30 ms against the schedule", p99),
                     ("… 0 lost / reordered", lost), ("… server ≤ 50 % of one core", cpu),
                     ("≤ 35 KB server memory per connected client", mem),
                     (f"connect + register {cmax} within 10 s, nobody dropped", conn),
                     ("no disconnect (ping timeout) while streaming", disc)):
        rows.append(f"| {label} | " + " | ".join(fan(i, f) for i in impls) + " |")
    rgroups = rooms_rows(data)
    if rgroups:
        case = max(rgroups, key=lambda k: (k[0] * k[1], k[2]))[:4]
        nr, per, ans, deflate = case

        def many(impl: str, f: Callable[[list[dict[str, Any]]], str]) -> str:
            rs = rgroups.get((*case, impl), [])
            return f(rs) if rs else "–"

        def cpu_ratio(rs: list[dict[str, Any]]) -> str:
            us = med([r["paced"]["cpu_us_per_delivery"] for r in rs])[0]
            base = one_room_us(data, rs[0]["impl"], nr * per, deflate)
            if math.isnan(base):
                return f"{us:.1f} µs (no one-room figure)"
            mark = "✅" if us <= 1.2 * base else "❌"
            return f"{mark} {us / base:.2f}× ({us:.1f} vs {base:.1f} µs)"

        def whole(rs: list[dict[str, Any]]) -> str:
            n = max(r["paced"]["lost_chars"] + r["paced"]["text_mismatch_clients"]
                    + r["paced"]["reordered"] + r["paced"]["lost_chunks"] for r in rs)
            return f"{'✅' if n == 0 else '❌'} {n}"

        def cross(rs: list[dict[str, Any]]) -> str:
            n = max(r["paced"]["foreign"] + r["paced"]["ids_in_several_rooms"] for r in rs)
            ok = n == 0 and all(r["paced"]["rooms_with_one_id"] == ans for r in rs)
            return f"{'✅' if ok else '❌'} {n}"

        for label, f in ((f"{nr} rooms of {per}, {ans} answering at 50 deltas/s: CPU per "
                          f"delivered delta within 1.2× of one room of {nr * per}", cpu_ratio),
                         ("… 0 lost / reordered characters at every client", whole),
                         ("… 0 deltas delivered outside their room", cross)):
            rows.append(f"| {label} | " + " | ".join(many(i, f) for i in impls) + " |")
    return "\n".join(rows) + "\n"


def machine_block(data: dict[str, Any]) -> str:
    m = data["machine"] or {}
    la = m.get("loadavg_start")
    le = m.get("loadavg_end")
    return (
        f"- Results: {', '.join(f'`bench/results/{s}`' for s in data['stamps'])} "
        f"({data['elapsed'] / 60:.0f} min)\n"
        f"- Machine: {m.get('nproc')} × {m.get('cpu')} ({m.get('platform')}); "
        f"load average at start {', '.join(f'{x:.1f}' for x in la) if la else '?'}, "
        f"at end {', '.join(f'{x:.1f}' for x in le) if le else '?'}\n"
        f"- Python {m.get('python')} (python-socketio {m.get('python_socketio')}, "
        f"python-engineio {m.get('python_engineio')}, aiohttp {m.get('aiohttp')}, openai "
        f"{m.get('openai')}); Node {m.get('node')} (socket.io-client "
        f"{m.get('socket_io_client')}, ws {m.get('ws')})\n"
        f"- Pinning: servers on core 0, load generators + upstream + orchestrator on core 1 "
        f"(taskset: {m.get('taskset')})\n"
    )


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_fanout(data)
    impls = list(dict.fromkeys(k[2] for k in groups))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {"roundtable": "tab:blue", "baseline": "tab:red", "node": "tab:green"}
    for impl in impls:
        for deflate in (True, False):
            cs = sorted(c for (c, d, i) in groups if i == impl and d == deflate)
            if not cs:
                continue
            style = "-" if deflate else "--"
            label = f"{impl}, deflate {'on' if deflate else 'off'}"
            color = colors.get(impl)
            for ax, mode, field in ((axes[0], "paced", "p99_ms"), (axes[1], "paced", "cpu_pct"),
                                    (axes[2], "paced", "cpu_us_per_delivery")):
                ys, lo, hi = [], [], []
                for c in cs:
                    v = med([r[mode].get(field, math.nan)
                             for r in groups[(c, deflate, impl)] if mode in r])
                    ys.append(v[0])
                    lo.append(v[0] - v[1])
                    hi.append(v[2] - v[0])
                ax.errorbar(cs, ys, yerr=[lo, hi], fmt=style + "o", color=color, label=label,
                            capsize=3, markersize=4)
    axes[0].axhline(30, color="grey", lw=0.8, ls=":")
    axes[0].set_title("p99 latency vs schedule, 50 deltas/s")
    axes[0].set_ylabel("ms (log)")
    axes[0].set_yscale("log")
    axes[1].axhline(50, color="grey", lw=0.8, ls=":")
    axes[1].set_title("server CPU, 50 deltas/s")
    axes[1].set_ylabel("% of one core")
    axes[2].set_title("server CPU per delivered delta, 50 deltas/s")
    axes[2].set_ylabel("µs per client per delta (log)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("clients in the room")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(" vs ".join(NAMES.get(i, i) for i in impls) + " (median of runs, bars = min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict[str, Any]) -> str:
    parts = [machine_block(data), "\n### Targets (benchmarks, not tests)\n\n", targets(data),
             "\n### Relay overhead\n\n", relay_table(data), "\n### Fan-out\n\n",
             fanout_tables(data), "\n### Many rooms\n\n", rooms_table(data)]
    if data["cluster"]:
        parts += ["\n### Several processes (cluster)\n\n", cluster_table(data["cluster"])]
    if data["errors"]:
        parts.append("\nErrors during the run:\n\n" + "\n".join(f"- `{e}`" for e in data["errors"])
                     + "\n")
    return "".join(parts)


def replace_block(name: str, text: str) -> None:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{text}{end}"
    doc = DOC.read_text() if DOC.exists() else "# Performance\n\n"
    if start in doc and end in doc:
        head, rest = doc.split(start, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/report.py")
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--update-docs", action="store_true")
    p.add_argument("--experiments", action="store_true",
                   help="render fan-out tables against --ref and, with --update-docs, put them "
                        "in docs/performance.md's bench:experiments block (no plot)")
    p.add_argument("--ref", default=None, help="reference implementation for the ratios")
    p.add_argument("--cluster", action="store_true",
                   help="only the cluster case's table (with --update-docs: the bench:cluster "
                        "block of docs/performance.md)")
    args = p.parse_args(argv)
    data = load(args.results)
    if args.cluster:
        text = machine_block(data) + "\n" + cluster_table(data["cluster"])
        if data["errors"]:
            text += "\nErrors during the run:\n\n" + "\n".join(f"- `{e}`" for e in
                                                                data["errors"]) + "\n"
        args.results[0].with_suffix(".md").write_text(text)
        print(text)
        if args.update_docs:
            replace_block("cluster", text)
            print(f"updated {DOC.relative_to(ROOT)} (cluster)")
        return 0
    if args.experiments:
        text = machine_block(data) + "\n" + fanout_tables(data, args.ref or "roundtable")
        if data["rooms"]:
            text += "\n#### Many rooms\n\n" + rooms_table(data)
        if data["relay"]:
            text += "\n#### Relay overhead\n\n" + relay_table(data)
        args.results[0].with_suffix(".md").write_text(text)
        print(text)
        if args.update_docs:
            replace_block("experiments", text)
            print(f"updated {DOC.relative_to(ROOT)} (experiments)")
        return 0
    text = render(data)
    first = args.results[0]
    first.with_suffix(".md").write_text(text)
    plot(data, first.with_suffix(".png"))
    print(text)
    if args.update_docs:
        plot(data, PNG)
        replace_block("results", text)
        print(f"updated {DOC.relative_to(ROOT)} and {PNG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
