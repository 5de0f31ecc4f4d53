#!/usr/bin/env python3
"""Draws a soak run (the JSON written by tests/soak/soak.mjs) as an SVG,
and with --benchmarks splices its section into BENCHMARKS.md (between
<!-- soak --> and <!-- /soak -->, or before the run-time line / the notes).

    python3 tests/soak/report.py RESULT.json --svg bench/soak.svg [--benchmarks BENCHMARKS.md --command CMD]

Hand-written SVG in the style of bench/chart.svg (bench/run.py): white
background, sans-serif 12 px, one bold title per panel.
"""
import argparse
import json
import os
import subprocess
import sys

BEGIN, END = "<!-- soak -->", "<!-- /soak -->"
BLUE, ORANGE, GREEN, GREY = "#2b6cb0", "#dd6b20", "#38a169", "#718096"


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt(n):
    return f"{n:,.0f}"


def mib(kib):
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def nice_step(vmax, ticks=5):
    """A round tick step so that about `ticks` steps cover vmax."""
    raw = max(vmax, 1e-9) / ticks
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def panel(out, y, title, series, s, t_max, unit_fmt, band=None, marks=(), zoom=False):
    """One line chart: `series` is [(label, colour, [(t, v), ...])]."""
    width, left, right, height = 820, 70, 20, 170
    x0, x1 = left, width - right
    out.append(f'<text x="10" y="{y + 14}" font-weight="bold">{esc(title)}</text>')
    y += 24
    legend_x = x0
    for label, colour, _ in series:
        out.append(f'<rect x="{legend_x}" y="{y + 2}" width="14" height="3" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 18}" y="{y + 7}" font-size="11">{esc(label)}</text>')
        legend_x += 26 + 6.5 * len(label)
    y += 16
    y0, y1 = y, y + height
    vmax = max([v for _, _, pts in series for _, v in pts if v is not None] + [1e-9])
    if band:
        vmax = max(vmax, band[1])
    lo = 0.0
    if zoom:
        # The axis from just below the lowest value after the warm-up.
        vmin = min([v for _, _, pts in series for t, v in pts if v is not None and t > s["warmup_s"]]
                   + ([band[0]] if band else []))
        step = nice_step((vmax - vmin) * 1.1, 5)
        lo = step * int(vmin * 0.98 / step)
        top = step * (int(vmax * 1.02 / step) + 1)
    else:
        step = nice_step(vmax * 1.08)
        top = step * (int(vmax * 1.08 / step) + 1)
    X = lambda t: x0 + (x1 - x0) * t / t_max
    Y = lambda v: y1 - (y1 - y0) * (min(max(v, lo), top) - lo) / (top - lo)
    # warm-up shading, tolerance band, grid
    warm = s["warmup_s"]
    out.append(f'<rect x="{x0}" y="{y0}" width="{X(warm) - x0:.1f}" height="{height}" fill="#edf2f7"/>')
    out.append(f'<text x="{x0 + 4}" y="{y0 + 12}" font-size="10" fill="#666">warm-up</text>')
    if band:
        b_lo, b_hi = band
        out.append(f'<rect x="{X(warm):.1f}" y="{Y(b_hi):.1f}" width="{x1 - X(warm):.1f}" height="{Y(b_lo) - Y(b_hi):.1f}" '
                   f'fill="{BLUE}" fill-opacity="0.10"/>')
    v = lo
    while v <= top + 1e-9:
        out.append(f'<line x1="{x0}" y1="{Y(v):.1f}" x2="{x1}" y2="{Y(v):.1f}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{x0 - 6}" y="{Y(v) + 4:.1f}" font-size="10" text-anchor="end">{esc(unit_fmt(v))}</text>')
        v += step
    for t in s.get("churn_times", []):
        out.append(f'<line x1="{X(t):.1f}" y1="{y0}" x2="{X(t):.1f}" y2="{y1}" stroke="#a0aec0" stroke-dasharray="2,3"/>')
    for _, colour, pts in series:
        d = " ".join(f"{X(t):.1f},{Y(v):.1f}" for t, v in pts if v is not None)
        if d:
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.3"/>')
    for t0, t1, v, label in marks:
        out.append(f'<line x1="{X(t0):.1f}" y1="{Y(v):.1f}" x2="{X(t1):.1f}" y2="{Y(v):.1f}" stroke="#000" stroke-width="2"/>')
        out.append(f'<text x="{X(t1) + 3 if t1 < t_max * 0.8 else X(t0) - 3:.1f}" y="{Y(v) - 5:.1f}" font-size="10" '
                   f'text-anchor="{"start" if t1 < t_max * 0.8 else "end"}">{esc(label)}</text>')
    out.append(f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#000"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#000"/>')
    tstep = 60 if t_max >= 300 else nice_step(t_max, 10)
    t = 0.0
    while t <= t_max + 1e-9:
        out.append(f'<line x1="{X(t):.1f}" y1="{y1}" x2="{X(t):.1f}" y2="{y1 + 4}" stroke="#000"/>')
        lab = f"{t / 60:g} min" if t_max >= 300 and t % 60 == 0 else f"{t:g} s"
        out.append(f'<text x="{X(t):.1f}" y="{y1 + 16}" font-size="10" text-anchor="middle">{esc(lab)}</text>')
        t += tstep
    return y1 + 30


def svg(result, path):
    s, samples = result["summary"], result["samples"]
    t_max = max([p["t"] for p in samples] + [1])
    out = []
    head = (f'{fmt(s["connections"])} connections, {s["ran_s"]:g} s: {fmt(s["reconnects"])} reconnects '
            f'({fmt(s["unclean_closes"])} unclean), {fmt(s["messages_echoed"])} echoes verified, {fmt(s["errors"])} errors')
    out.append(f'<text x="10" y="18" font-size="11" fill="#444">{esc(head)}</text>')
    warm, win, tol = s["warmup_s"], s["window_s"], s["rss_tolerance"]
    rw, re_ = s["rss_after_warmup_kib"], s["rss_end_kib"]
    band = (rw / 1024 * (1 - tol), rw / 1024 * (1 + tol)) if rw else None
    marks = []
    if rw:
        marks.append((warm, warm + win, rw / 1024, f"{rw / 1024:.1f} MiB"))
    if re_:
        marks.append((t_max - win, t_max, re_ / 1024, f"{re_ / 1024:.1f} MiB ({s['rss_ratio']:.3f}×)"))
    y = panel(out, 28, f"Server RSS, MiB (VmRSS every second; band: ±{tol * 100:g} % of the median after warm-up; "
              "dotted: churn rounds)",
              [("RSS", BLUE, [(p["t"], p["rss_kib"] / 1024) for p in samples])], s, t_max,
              lambda v: f"{v:g}", band=band, marks=marks)
    y = panel(out, y, "The same, zoomed (the axis does not start at 0)",
              [("RSS", BLUE, [(p["t"], p["rss_kib"] / 1024) for p in samples])], s, t_max,
              lambda v: f"{v:g}", band=band, marks=marks, zoom=True)
    y = panel(out, y, "Connections: open at the client, counted by the server (/metrics), server file descriptors",
              [("open (client)", BLUE, [(p["t"], p["open"]) for p in samples]),
               ("server connections", ORANGE, [(p["t"], p.get("server_conns")) for p in samples]),
               ("server fds", GREY, [(p["t"], p["fds"]) for p in samples])], s, t_max, lambda v: f"{v:,.0f}")
    y = panel(out, y, "Echoes verified per second",
              [("echoes/s", GREEN, [(p["t"], p["echoed"]) for p in samples])], s, t_max, lambda v: f"{v:,.0f}")
    text = (f'<svg xmlns="http://www.w3.org/2000/svg" width="820" height="{y}" font-family="sans-serif" font-size="12">\n'
            '<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(out) + "\n</svg>\n")
    with open(path, "w") as f:
        f.write(text)


def git_state(root):
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except OSError:
        return "?"


def section(result, svg_rel, command, root):
    s = result["summary"]
    kinds = s["message_kinds"]
    L = [BEGIN, f"## Soak and churn: {fmt(s['connections'])} connections for {s['ran_s'] / 60:g} minutes", ""]
    L.append(f"_Measured {s['date'][:16].replace('T', ' ')} UTC with `{command}` "
             f"(`{os.path.relpath(s['binary'], root) if os.path.isabs(s['binary']) else s['binary']}`"
             + (f" built {s['binary_built'][:16].replace('T', ' ')} UTC" if s.get("binary_built") else "")
             + f", working tree at {s.get('tree') or git_state(root)} when measured; Node {s['node']}, ws {s['ws']}; "
             f"{s['cpus']} CPUs, {s['mem_gib']} GiB, "
             f"load average {' / '.join(map(str, s['load_before']))} before, {' / '.join(map(str, s['load_after']))} after, "
             "shared with other work). `tests/soak/README.md` describes the method._")
    L.append("")
    L.append(f"One `duplex serve` (defaults, `--max-connections` raised) and one Node process with npm `ws` "
             f"holding {fmt(s['echo_connections'])} connections on `/echo` and {fmt(s['hub_connections'])} on "
             f"`/connection/websocket` (Centrifugo JSON protocol, all subscribed to one channel that gets "
             f"publications through `/api/publish`). Each echo connection sends one message every "
             f"{s['interval_s']:g} s (text 1–200 characters, binary up to 4 KiB, 4–32 KiB, 64–256 KiB), "
             f"half of them with permessage-deflate; every echo is compared byte for byte. Every "
             f"{s['churn_every_s']:g} s, {s['churn_share'] * 100:g} % of the connections close and reopen: "
             f"{100 - s['unclean_share'] * 100:g} % with a close handshake (1000), {s['unclean_share'] * 100:g} % "
             f"by destroying the socket without a close frame (half of those right after sending a message).")
    L.append("")
    L.append("| figure | value |")
    L.append("|---|---|")
    rows = [
        ("connections (echo + hub)", f"{fmt(s['connections'])} ({fmt(s['echo_connections'])} + {fmt(s['hub_connections'])})"),
        ("duration", f"{s['ran_s']:g} s, warm-up {s['warmup_s']:g} s"),
        ("echoes verified / messages sent", f"{fmt(s['messages_echoed'])} / {fmt(s['messages_sent'])} "
         f"({s['bytes_echoed'] / 2 ** 20:,.0f} MiB echoed; text {fmt(kinds['text'])}, ≤ 4 KiB {fmt(kinds['small'])}, "
         f"≤ 32 KiB {fmt(kinds['medium'])}, ≤ 256 KiB {fmt(kinds['large'])})"),
        ("publications / deliveries (hub)", f"{fmt(s['publications'])} / {fmt(s['deliveries'])}"),
        ("churn rounds", fmt(s["churn_rounds"])),
        ("reconnects", fmt(s["reconnects"])),
        ("clean closes (1000) / unclean (no close frame)", f"{fmt(s['clean_closes'])} / {fmt(s['unclean_closes'])} "
         f"({fmt(s['unclean_with_echo_in_flight'])} with an echo in flight)"),
        ("**errors**", f"**{fmt(s['errors'])}**" + (f" ({esc(json.dumps(s['errors_by_kind']))})" if s["errors"] else "")),
        ("RSS at start (no connections)", mib(s["rss_start_kib"])),
        (f"RSS after warm-up (median of {s['warmup_s']:g}–{s['warmup_s'] + s['window_s']:g} s)", mib(s["rss_after_warmup_kib"])),
        (f"RSS at the end (median of the last {s['window_s']:g} s)", mib(s["rss_end_kib"])),
        ("**end / after warm-up**", f"**{s['rss_ratio']:.3f}** (limit {1 + s['rss_tolerance']:.2f})"),
        ("RSS peak after warm-up", mib(s["rss_peak_after_warmup_kib"])),
        ("after every client closed", f"{s['server_connections_after_all_closed']} server connections, "
         f"{s['fds_after_all_closed']} fds ({s['fds_start']} at start), RSS {mib(s['rss_after_all_closed_kib'])}, "
         f"{mib(s.get('rss_15s_after_all_closed_kib'))} 15 s later"),
        ("server CPU time", f"{s['server_cpu_s']:,.1f} s"),
        ("result", "**pass**" if s["pass"] else "**FAIL**"),
    ]
    for k, v in rows:
        L.append(f"| {k} | {v} |")
    L.append("")
    L.append(f"![soak]({svg_rel})")
    L.append(END)
    return L


def splice(text, lines):
    old = text.split("\n")
    if BEGIN in old and END in old:
        i, j = old.index(BEGIN), old.index(END) + 1
        old[i:j] = lines
        return "\n".join(old)
    at = len(old)
    for k, line in enumerate(old):
        if line.startswith("Total run time:") or line.startswith("## Notes and profiles"):
            at = k
            break
    old[at:at] = lines + [""]
    return "\n".join(old)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", help="JSON written by soak.mjs --out")
    ap.add_argument("--svg", required=True, help="where to write the chart")
    ap.add_argument("--benchmarks", help="BENCHMARKS.md to splice the section into")
    ap.add_argument("--command", default="tests/soak/run.sh", help="the command shown in the section")
    a = ap.parse_args()
    result = json.load(open(a.result))
    svg(result, a.svg)
    print(f"soak: wrote {a.svg}")
    if a.benchmarks:
        root = os.path.dirname(os.path.abspath(a.benchmarks))
        rel = os.path.relpath(os.path.abspath(a.svg), root)
        lines = section(result, rel, a.command, root)
        text = open(a.benchmarks).read()
        with open(a.benchmarks, "w") as f:
            f.write(splice(text, lines))
        print(f"soak: wrote its section into {a.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
