#!/usr/bin/env python3
"""Side-by-side WebSocket server benchmarks; writes BENCHMARKS.md.

One command builds everything (release), then for every scenario and every
server starts a fresh server process pinned to CPU 0 and runs the load
generator pinned to CPU 1 (`duplex bench`, and for the echo and handshake
scenarios also `fws-load`, an independent generator built on the
fastwebsockets client, which at depth 16 runs a second time with `--batch`),
rounds interleaved across servers, and writes medians,
spreads (min-max) and ratios to the raw TCP echo of the same round into
BENCHMARKS.md at the repository root, with an SVG chart in bench/chart.svg.

    python3 bench/run.py            # full run (about 10 minutes)
    python3 bench/run.py --quick    # smoke run: short windows, 1 round
    python3 bench/run.py --only broadcast --merge   # one scenario, spliced into BENCHMARKS.md
    python3 bench/run.py --generators fws-load      # echo and handshake with fws-load only

Raw results (one JSON line per run) go to bench/results/ (not committed).
Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
DUPLEX = os.path.join(ROOT, "target", "release", "duplex")
PEERS = os.path.join(BENCH, "target", "release")
# Load generators: `duplex bench` runs every scenario; `fws-load`
# (bench/peers/src/bin/fws-load.rs, on the fastwebsockets client) the echo
# and handshake ones, so that no echo figure rests on one client alone.
# `fws-load-batch` is `fws-load --batch`: it writes every frame it may send
# in one write, as `duplex bench` does, so the depth-16 scenario is measured
# with both write patterns by a client that is not Duplex's (the two
# patterns, not the two clients, are what separate the results there).
GENERATORS = {"duplex bench": [DUPLEX, "bench"], "fws-load": [os.path.join(PEERS, "fws-load")],
              "fws-load-batch": [os.path.join(PEERS, "fws-load")]}
GEN_EXTRA = {"fws-load-batch": ["--batch"]}
GEN_MODES = {"duplex bench": {"echo", "idle", "handshake", "broadcast"}, "fws-load": {"echo", "handshake"},
             "fws-load-batch": {"echo"}}
# Scenarios a generator runs, where not every one of its modes' (with one
# message in flight per connection, batching changes nothing).
GEN_ONLY = {"fws-load-batch": {"bin20d16"}}


def gen_runs(g, key, mode):
    return mode in GEN_MODES[g] and key in GEN_ONLY.get(g, {key})
BROADCAST_CONFIG = os.path.join(BENCH, "duplex-broadcast.toml")
ADDR = "127.0.0.1:9001"
SERVER_CPU = "0"
CLIENT_CPU = "1"
# The round trip of a cache line between the two CPUs, measured before and
# after each measurement (bench/peers/src/bin/core-distance.rs): on this
# machine the host moves its two virtual CPUs between cores that share a
# cache (~90-155 ns) and cores that do not (~350 ns) every few seconds to
# minutes, and a 64 KiB echo costs every server about twice the CPU in the
# second state. So each echo, handshake and broadcast measurement waits
# (--wait-near) until the CPUs are near, and is made again (twice at most)
# if they were not near at its end; the issue-13 targets also compare the
# measurements whose two probes were both near.
CORE_DISTANCE = os.path.join(PEERS, "core-distance")
# A round trip of at most this many ns: the CPUs share a cache ("near").
NEAR_NS = 200

# name -> (command, needs raw-TCP mode, environment additions)
SERVERS = {
    "duplex": ([DUPLEX, "serve", "--listen", ADDR, "--no-deflate", "--max-connections", "20000"], False, {"DUPLEX_LOG": "warn"}),
    "duplex (deflate)": ([DUPLEX, "serve", "--listen", ADDR, "--max-connections", "20000"], False, {"DUPLEX_LOG": "warn"}),
    "duplex (deflate, context takeover)": ([DUPLEX, "serve", "--listen", ADDR, "--max-connections", "20000",
                                            "--deflate-context-takeover"], False, {"DUPLEX_LOG": "warn"}),
    "fastwebsockets": ([os.path.join(PEERS, "fastwebsockets-echo"), ADDR], False, {}),
    "tokio-tungstenite": ([os.path.join(PEERS, "tungstenite-echo"), ADDR], False, {}),
    "node ws": (["node", os.path.join(BENCH, "node", "echo.js"), ADDR], False, {}),
    "uwebsockets": (["node", os.path.join(BENCH, "node", "uws-echo.js"), ADDR], False, {}),
    "raw TCP echo": ([os.path.join(PEERS, "tcp-echo"), ADDR], True, {}),
    "duplex (centrifuge)": ([DUPLEX, "serve", "--listen", ADDR, "--no-deflate", "--config", BROADCAST_CONFIG],
                            False, {"DUPLEX_LOG": "warn"}),
    "node ws broadcast": (["node", os.path.join(BENCH, "node", "broadcast.js"), ADDR], False, {}),
    "python websockets broadcast": (["python3", os.path.join(BENCH, "python", "broadcast.py"), ADDR], False, {}),
    "raw TCP fan-out": ([os.path.join(PEERS, "tcp-fanout"), ADDR], True, {}),
}
# Broadcast: the URL path and the generator's protocol for each server.
BROADCAST_GEN = {
    "duplex (centrifuge)": ("/connection/websocket", ["--protocol", "centrifuge", "--api-key", "bench"]),
    "node ws broadcast": ("/", ["--protocol", "plain"]),
    "python websockets broadcast": ("/", ["--protocol", "plain"]),
    "raw TCP fan-out": ("/", ["--protocol", "plain"]),
}
ECHO_SERVERS = ["duplex", "fastwebsockets", "uwebsockets", "tokio-tungstenite", "node ws", "raw TCP echo"]
WS_SERVERS = ["duplex", "fastwebsockets", "uwebsockets", "tokio-tungstenite", "node ws"]
BROADCAST_SERVERS = ["duplex (centrifuge)", "node ws broadcast", "python websockets broadcast", "raw TCP fan-out"]


def scenarios(quick):
    """(key, title, mode, servers, generator arguments)."""
    w = ["--warmup", "0.3", "--duration", "1"] if quick else ["--warmup", "1", "--duration", "4"]
    hw = ["--warmup", "0.3", "--duration", "1"] if quick else ["--warmup", "1", "--duration", "3"]
    idle_n = "1000" if quick else "10000"
    bw = ["--warmup", "0.5", "--duration", "1", "--hold", "1"] if quick else ["--warmup", "1", "--duration", "4", "--hold", "2"]
    return [
        ("text20", "100 connections x 20 B text, depth 1", "echo", ECHO_SERVERS,
         ["-c", "100", "--depth", "1", "--size", "20", "--text"] + w),
        ("bin20d16", "100 connections x 20 B binary, 16 in flight", "echo", ECHO_SERVERS,
         ["-c", "100", "--depth", "16", "--size", "20"] + w),
        ("64k", "10 connections x 64 KiB binary, depth 1", "echo", ECHO_SERVERS,
         ["-c", "10", "--depth", "1", "--size", "64KiB"] + w),
        ("16m", "4 connections x 16 MiB binary, depth 1", "echo", ECHO_SERVERS,
         ["-c", "4", "--depth", "1", "--size", "16MiB"] + w),
        ("idle", f"{int(idle_n):,} idle connections", "idle", WS_SERVERS,
         ["-c", idle_n, "--concurrency", "64", "--duration", "2"]),
        ("idle-used", f"{int(idle_n):,} idle connections, each after one echoed message", "idle",
         ["duplex", "fastwebsockets", "uwebsockets", "tokio-tungstenite", "node ws"],
         ["-c", idle_n, "--concurrency", "64", "--duration", "2", "--messages", "1"]),
        ("idle-deflate", f"{int(idle_n):,} idle connections, permessage-deflate agreed, "
         "each after one compressed message echoed", "idle",
         ["duplex (deflate)", "duplex (deflate, context takeover)"],
         ["-c", idle_n, "--concurrency", "64", "--duration", "2", "--deflate", "--messages", "1"]),
        ("handshake", "handshakes (connect, upgrade, close), 16 at a time", "handshake", WS_SERVERS,
         ["-c", "16"] + hw),
        ("broadcast", f"broadcast: 1 channel, {int(idle_n):,} subscribers, 100 B publications, "
         "publisher as fast as the server delivers", "broadcast", BROADCAST_SERVERS,
         ["-c", idle_n, "--size", "100", "--window", "32", "--concurrency", "64"] + bw),
    ]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd, cwd=ROOT):
    log("+", " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True)


def build():
    sh(["nice", "-n", "10", "cargo", "build", "--release", "-p", "duplex-cli"])
    sh(["nice", "-n", "10", "cargo", "build", "--release"], cwd=BENCH)
    sh(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=os.path.join(BENCH, "node"))


def wait_port(addr, proc, timeout=10.0):
    host, port = addr.rsplit(":", 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def port_in_use(addr):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def core_distance():
    """The CPUs' cache-line round trip now, in ns (None without the probe)."""
    if not os.path.exists(CORE_DISTANCE):
        return None
    try:
        out = subprocess.run(["taskset", "-c", f"{SERVER_CPU},{CLIENT_CPU}", CORE_DISTANCE, "200"],
                             capture_output=True, text=True, timeout=10)
        return json.loads(out.stdout.strip().splitlines()[-1])["round_trip_ns"]
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return None


def is_near(rtt, best):
    """A round trip of at most NEAR_NS, or of at most 1.5 × the shortest
    seen (`best`): a machine whose CPUs never share a cache is always near."""
    return rtt is not None and best is not None and rtt <= max(NEAR_NS, 1.5 * best)


class Near:
    """Whether the CPUs are near each other now (`is_near`)."""

    def __init__(self, wait_s):
        self.wait_s, self.best = wait_s, None

    def probe(self):
        rtt = core_distance()
        if rtt is not None:
            self.best = rtt if self.best is None else min(self.best, rtt)
        return rtt

    def near(self, rtt):
        return is_near(rtt, self.best)

    def wait(self):
        """Probes until the CPUs are near or `wait_s` has passed; the last probe."""
        deadline = time.time() + self.wait_s
        rtt = self.probe()
        while not self.near(rtt) and rtt is not None and time.time() < deadline:
            time.sleep(1)
            rtt = self.probe()
        return rtt


def run_near(near, server, mode, args, timeout, generator):
    """run_one, started once the CPUs are near each other (`Near.wait`), and
    made again (at most twice more) if they were not near at its end: the
    host moved them meanwhile. Returns the result and its two probes."""
    for _ in range(3 if near.wait_s > 0 else 1):
        before = near.wait()
        j = run_one(server, mode, args, timeout, generator)
        after = near.probe()
        if near.near(before) and near.near(after):
            break
        if before is None or after is None:
            break
        log(f"    the CPUs were not near each other throughout ({before} / {after} ns): again")
    return j, [before, after]


def run_one(server, mode, args, timeout, generator="duplex bench"):
    cmd, raw, env_add = SERVERS[server]
    if port_in_use(ADDR):
        # Never measure whatever else is listening there.
        return {"errors": 1, "first_error": f"{ADDR} already in use before the server started", "exit_code": -1}
    env = dict(os.environ, **env_add)
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(ADDR, proc)
        path, extra = BROADCAST_GEN.get(server, ("/echo", [])) if mode == "broadcast" else ("/echo", [])
        url = f"ws://{ADDR}{path}"
        gen = ["taskset", "-c", CLIENT_CPU] + GENERATORS[generator] + [mode, url,
               "--server-pid", str(proc.pid), "--label", server] + args + extra + GEN_EXTRA.get(generator, [])
        if raw:
            gen.append("--raw-tcp-peer")
        out = subprocess.run(gen, capture_output=True, text=True, timeout=timeout)
        lines = out.stdout.strip().splitlines()
        if len(lines) >= 2:
            log("   ", lines[-2])
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            result = {"errors": 1, "first_error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
        result["exit_code"] = out.returncode
        return result
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {"errors": 1, "first_error": str(e), "exit_code": -1}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ report --

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fmt(v, digits=0):
    if v is None:
        return "–"
    if abs(v) >= 1e6 and digits == 0:
        return f"{v / 1e6:.2f} M"
    if abs(v) >= 1e4 and digits == 0:
        return f"{v / 1e3:.1f} k"
    return f"{v:,.{digits}f}"


def fmt_ms(xs, digits=0):
    m = med(xs)
    lo, hi = spread(xs)
    if m is None:
        return "–"
    if len([x for x in xs if x is not None]) == 1:
        return fmt(m, digits)
    return f"{fmt(m, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def cpu_digits(v):
    if v is None:
        return 2
    return 3 if v < 1 else 2 if v < 100 else 0


def gen_key(key, generator):
    """The key a scenario's results are filed under for one generator:
    `duplex bench`'s under the scenario's own key (as before there were
    two), the others' under KEY@GENERATOR."""
    return key if generator == "duplex bench" else f"{key}@{generator}"


def summarise(results, quick):
    """results: list of dicts with key, server, round, json (and gen)."""
    by = {}
    for r in results:
        by.setdefault((gen_key(r["key"], r.get("gen", "duplex bench")), r["server"]), []).append(r)
    return by


def ratios(by, key, server, ref="raw TCP echo", field="server_cpu_us_per_msg"):
    """Per-round server CPU/msg ratio to the raw TCP echo of the same round."""
    tcp = {r["round"]: r["json"].get(field) for r in by.get((key, ref), [])}
    out = []
    for r in by.get((key, server), []):
        a, b = r["json"].get(field), tcp.get(r["round"])
        if a is not None and b:
            out.append(a / b)
    return out


def core_states(by):
    """Each measurement's core distance: "near" if both of its probes were
    (`is_near`, against the shortest round trip of the results), "far" if
    neither was, None if they disagree (the host moved the CPUs meanwhile)
    or were not made. Keyed by id() of the result record."""
    probes = [x for rs in by.values() for r in rs for x in r.get("core_rtt_ns") or [] if x]
    if not probes:
        return {}
    best = min(probes)
    states = {}
    for rs in by.values():
        for r in rs:
            v = r.get("core_rtt_ns")
            if not v or None in v:
                continue
            near = [is_near(x, best) for x in v]
            states[id(r)] = "near" if all(near) else "far" if not any(near) else None
    return states


def near_values(by, key, server, states, field="server_cpu_us_per_msg"):
    """`server`'s figures from the measurements made with the CPUs near
    each other (both probes), the state most of this machine's time is
    spent in; from every round, so more of them than pairs within rounds."""
    return [r["json"][field] for r in by.get((key, server), [])
            if states.get(id(r)) == "near" and r["json"].get(field) is not None]


def fmt_near(xs):
    """Median (range, count) of near-state figures."""
    return f"{med(xs):.1f} ({min(xs):.1f}–{max(xs):.1f}, {len(xs)} of them)"


def vals(by, key, server, field):
    return [r["json"].get(field) for r in by.get((key, server), [])]


def errors_of(by, key, server):
    rs = by.get((key, server), [])
    n = sum(int(r["json"].get("errors") or 0) for r in rs)
    firsts = {r["json"].get("first_error") for r in rs if r["json"].get("first_error")}
    return n, "; ".join(sorted(firsts))


def tool_versions():
    v = {}
    try:
        lock = open(os.path.join(BENCH, "Cargo.lock")).read()
        for name in ["tokio-tungstenite", "fastwebsockets", "tokio", "hyper"]:
            m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
            if m:
                v[name] = m.group(1)
    except OSError:
        pass
    try:
        pl = json.load(open(os.path.join(BENCH, "node", "package-lock.json")))
        v["ws"] = pl["packages"]["node_modules/ws"]["version"]
    except (OSError, KeyError, ValueError):
        pass
    for name, cmd in [("rustc", ["rustc", "--version"]), ("node", ["node", "--version"]),
                      ("python websockets", ["python3", "-c", "import websockets; print(websockets.__version__)"])]:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            continue
        if out:
            # Not installed: left out rather than reported with no version.
            v[name] = out
    return v


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} × {cpu}, {mem}, Linux {platform.release()}"


def targets(by):
    """(target, measured, met) rows from issue 4."""
    rows = []
    for key, label, limit in [("text20", "20 B text, depth 1: server CPU/msg ≤ 0.85 × raw TCP", 0.85),
                              ("bin20d16", "20 B binary, depth 16: ≤ 0.85 × raw TCP", 0.85),
                              ("64k", "64 KiB: ≤ 1.00 × raw TCP", 1.0),
                              ("16m", "16 MiB: ≤ 1.00 × raw TCP", 1.0)]:
        rs = ratios(by, key, "duplex")
        m = med(rs)
        met = m is not None and m <= limit
        # Rounds on both sides of the line: not a result either way.
        if rs and min(rs) <= limit < max(rs):
            met = "within the spread"
        rows.append((label, "–" if m is None else f"{m:.2f} ({min(rs):.2f}–{max(rs):.2f})", met))
    m = med(vals(by, "idle", "duplex", "rss_bytes_per_conn"))
    rows.append(("Idle RSS per connection ≤ 1 KiB", "–" if m is None else f"{m:,.0f} B", m is not None and m <= 1024))
    m = med(vals(by, "idle-deflate", "duplex (deflate)", "rss_bytes_per_conn"))
    neg = med(vals(by, "idle-deflate", "duplex (deflate)", "deflate_negotiated"))
    rows.append(("Idle with permessage-deflate negotiated (one compressed message echoed first) ≤ 12 KiB",
                 "–" if m is None else f"{m:,.0f} B ({fmt(neg)} negotiated)", m is not None and m <= 12 * 1024))
    d = med(vals(by, "handshake", "duplex", "handshakes_per_s"))
    f = med(vals(by, "handshake", "fastwebsockets", "handshakes_per_s"))
    ok = d is not None and f is not None and d >= 1.1 * f
    dc = med(vals(by, "handshake", "duplex", "server_cpu_us_per_handshake"))
    fc = med(vals(by, "handshake", "fastwebsockets", "server_cpu_us_per_handshake"))
    cpu = "" if dc is None or fc is None else f"; server CPU {dc:.1f} vs {fc:.1f} µs per handshake"
    rows.append(("Handshakes/s ≥ 1.1 × fastwebsockets",
                 "–" if d is None or not f else f"{d:,.0f}/s = {d / f:.2f} ×{cpu}", ok))
    return rows


ECHO_PEERS = ["fastwebsockets", "uwebsockets", "tokio-tungstenite", "node ws"]


def peer_targets(by, generators):
    """(target, measured, met) rows from issue 13: per generator, Duplex's
    server CPU per message at or below the best peer's (both as multiples
    of the raw TCP echo of the same round), and handshakes/s."""
    rows = []
    states = core_states(by)
    for g in generators:
        for key, label in [("text20", "20 B text, depth 1"), ("bin20d16", "20 B binary, depth 16"),
                           ("64k", "64 KiB"), ("16m", "16 MiB")]:
            k = gen_key(key, g)
            d = ratios(by, k, "duplex")
            peers = [(p, ratios(by, k, p)) for p in ECHO_PEERS if ratios(by, k, p)]
            if not d or not peers:
                continue
            best, br = min(peers, key=lambda pr: med(pr[1]))
            met = med(d) <= med(br)
            # Rounds of the two overlapping: the medians' order is within
            # the spread, not a result either way.
            if (met and max(d) > min(br)) or (not met and min(d) <= max(br)):
                met = "within the spread"
            # The same comparison made within each round (the servers of a
            # round ran back to back under the same load), against the peer
            # that comes closest: how often Duplex was at or below it.
            paired = [(p, ratios(by, k, "duplex", p)) for p, _ in peers]
            paired = [(p, rs) for p, rs in paired if rs]
            per_round = ""
            if paired:
                close, cr = max(paired, key=lambda pr: med(pr[1]))
                below = sum(1 for x in cr if x <= 1)
                per_round = (f"; per round, Duplex ÷ {close} {med(cr):.2f} ({min(cr):.2f}–{max(cr):.2f}), "
                             f"at or below in {below} of {len(cr)}")
                dn = near_values(by, k, "duplex", states)
                cn = near_values(by, k, close, states)
                if dn and cn:
                    per_round += (f"; measured with the CPUs near (both probes), server CPU per message "
                                  f"{fmt_near(dn)} vs {fmt_near(cn)} µs")
            rows.append((f"`{g}`, {label}: ≤ best peer × TCP",
                         f"{med(d):.2f} ({min(d):.2f}–{max(d):.2f}) vs {best} {med(br):.2f} "
                         f"({min(br):.2f}–{max(br):.2f}){per_round}", met))
        k = gen_key("handshake", g)
        d = vals(by, k, "duplex", "handshakes_per_s")
        f = vals(by, k, "fastwebsockets", "handshakes_per_s")
        if d and f and None not in d and None not in f:
            r = med(d) / med(f)
            rows.append((f"`{g}`, handshakes/s ≥ 1.1 × fastwebsockets",
                         f"{med(d):,.0f} vs {med(f):,.0f}/s = {r:.2f} ×", r >= 1.1))
        # The rate is the generator's when its core is saturated; the
        # server's CPU per handshake is what says how many handshakes each
        # server could take on a core of its own.
        # As for the echo scenarios, the ratio is taken within each round
        # (the servers of a round ran back to back, under the same load on
        # the machine) and its median and range over the rounds reported.
        dc = vals(by, k, "duplex", "server_cpu_us_per_handshake")
        fc = vals(by, k, "fastwebsockets", "server_cpu_us_per_handshake")
        if dc and fc and None not in dc and None not in fc:
            rs = [1 / x for x in ratios(by, k, "duplex", "fastwebsockets", "server_cpu_us_per_handshake")]
            r = med(rs)
            met = r >= 1.1
            if (met and min(rs) < 1.1) or (not met and max(rs) >= 1.1):
                met = "within the spread"
            rows.append((f"`{g}`, handshakes per server core-second ≥ 1.1 × fastwebsockets "
                         "(its CPU per handshake over Duplex's, per round)",
                         f"{r:.2f} × ({min(rs):.2f}–{max(rs):.2f}); µs per handshake {med(dc):.1f} "
                         f"({min(dc):.1f}–{max(dc):.1f}) vs {med(fc):.1f} ({min(fc):.1f}–{max(fc):.1f})",
                         met))
    return rows


BCAST_REF = "raw TCP fan-out"
BCAST_DUPLEX = "duplex (centrifuge)"
BCAST_WS_PEERS = ["node ws broadcast", "python websockets broadcast"]


def bcast_ratios(by, key, server):
    """Per-round server CPU/delivery ratio to the raw TCP fan-out of the same round."""
    return ratios(by, key, server, BCAST_REF, "server_cpu_us_per_delivery")


def broadcast_targets(by, key, n):
    """(target, measured, met) rows from issue 10."""
    rows = []
    m = med(bcast_ratios(by, key, BCAST_DUPLEX))
    c = med(vals(by, key, BCAST_DUPLEX, "server_cpu_us_per_delivery"))
    t = med(vals(by, key, BCAST_REF, "server_cpu_us_per_delivery"))
    detail = "" if c is None or t is None else f" ({c:.3f} vs {t:.3f} µs per delivery)"
    # A median under the line with rounds above it is not claimed: the
    # target is then within the spread.
    rs = bcast_ratios(by, key, BCAST_DUPLEX)
    met = m is not None and m <= 1.3
    if met and rs and max(rs) > 1.3:
        met = "within the spread"
    rows.append(("Server CPU per delivery ≤ 1.3 × raw TCP fan-out",
                 "–" if m is None else f"{m:.2f}{detail}", met))
    d = med(vals(by, key, BCAST_DUPLEX, "deliveries_per_s"))
    peers = [(s, med(vals(by, key, s, "deliveries_per_s"))) for s in BCAST_WS_PEERS]
    tcp = med(vals(by, key, BCAST_REF, "deliveries_per_s"))
    ok = d is not None and all(v is not None and d > v for _, v in peers)
    others = "; ".join(f"{s.replace(' broadcast', '')} {fmt(v)}/s" for s, v in peers)
    rows.append(("Deliveries/s ahead of every WebSocket peer",
                 "–" if d is None else f"{fmt(d)}/s; {others} (raw TCP fan-out {fmt(tcp)}/s)", ok))
    r = med(vals(by, key, BCAST_DUPLEX, "rss_bytes_per_conn"))
    rows.append((f"Idle subscribed connection ≤ 2 KiB RSS (at {n:,})",
                 "–" if r is None else f"{r:,.0f} B", r is not None and r <= 2048))
    return rows


def broadcast_table(L, by, key, servers, args):
    n = int(args[args.index("-c") + 1])
    L.append("Each server gets its own client traffic: `duplex (centrifuge)` with `--protocol centrifuge` "
             "(connect + subscribe per connection, publications through `POST /api/publish`, "
             "`bench/duplex-broadcast.toml`); the peers with `--protocol plain` (the publisher is one "
             "more connection whose messages the server sends to every other one); the raw TCP fan-out "
             "with `--raw-tcp-peer`. Every delivery is checked, in order, for every subscriber.")
    L.append("")
    L.append("| target (issue 10) | measured | met |")
    L.append("|---|---|---|")
    for t, m, ok in broadcast_targets(by, key, n):
        L.append(f"| {t} | {m} | {ok if isinstance(ok, str) else ('yes' if ok else '**no**')} |")
    L.append("")
    L.append("| server | deliveries/s | server CPU µs/delivery | × TCP fan-out | p50 µs | p99 µs | p99.9 µs "
             "| RSS per subscribed connection, B | of it anonymous | publications/s | server core | generator core | lost | errors |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in servers:
        cpu = vals(by, key, s, "server_cpu_us_per_delivery")
        n_err, first = errors_of(by, key, s)
        lost = sum(int(r["json"].get("lost") or 0) for r in by.get((key, s), []))
        L.append("| " + " | ".join([
            s, fmt_ms(vals(by, key, s, "deliveries_per_s")),
            fmt_ms(cpu, cpu_digits(med(cpu))),
            "1" if s == BCAST_REF else fmt_ms(bcast_ratios(by, key, s), 2),
            fmt_ms(vals(by, key, s, "p50_us")),
            fmt_ms(vals(by, key, s, "p99_us")),
            fmt_ms(vals(by, key, s, "p999_us")),
            fmt_ms(vals(by, key, s, "rss_bytes_per_conn")),
            fmt_ms(vals(by, key, s, "anon_bytes_per_conn")),
            fmt_ms(vals(by, key, s, "publications_per_s")),
            pct(med(vals(by, key, s, "server_cpu_util"))),
            pct(med(vals(by, key, s, "generator_cpu_util"))),
            str(lost),
            str(n_err) + (f" ({esc(first)})" if first else "")]) + " |")


def svg_chart(by, scen, path):
    """Three panels of horizontal bars, hand-written SVG."""
    colors = {"duplex": "#2b6cb0", "duplex (deflate)": "#63b3ed",
              "duplex (deflate, context takeover)": "#90cdf4", "fastwebsockets": "#dd6b20",
              "tokio-tungstenite": "#38a169", "node ws": "#805ad5", "uwebsockets": "#c53030", "raw TCP echo": "#718096",
              "duplex (centrifuge)": "#2b6cb0", "node ws broadcast": "#805ad5",
              "python websockets broadcast": "#d69e2e"}
    panels = []
    echo = [s for s in scen if s[2] == "echo"]
    groups = []
    for key, title, _, servers, _ in echo:
        groups.append((title, [(s, med(ratios(by, key, s))) for s in servers if s != "raw TCP echo"]))
    panels.append(("Server CPU per message, relative to the raw TCP echo (lower is better)", groups, "{:.2f}×", 1.0))
    idle = [s for s in scen if s[2] == "idle"]
    groups = [(title, [(s, med(vals(by, key, s, "rss_bytes_per_conn"))) for s in servers]) for key, title, _, servers, _ in idle]
    panels.append(("Server RSS growth per idle connection, bytes (lower is better)", groups, "{:,.0f} B", None))
    hs = [s for s in scen if s[2] == "handshake"]
    groups = [(title, [(s, med(vals(by, key, s, "handshakes_per_s"))) for s in servers]) for key, title, _, servers, _ in hs]
    panels.append(("Handshakes per second (higher is better)", groups, "{:,.0f}/s", None))
    bc = [s for s in scen if s[2] == "broadcast"]
    if bc:
        groups = [(title, [(s, med(bcast_ratios(by, key, s))) for s in servers if s != BCAST_REF])
                  for key, title, _, servers, _ in bc]
        panels.append(("Server CPU per delivery, relative to the raw TCP fan-out (lower is better)",
                       groups, "{:.2f}×", 1.0))

    width, left, bar_h, gap = 820, 210, 14, 4
    out, y = [], 10
    for ptitle, groups, vfmt, ref in panels:
        out.append(f'<text x="10" y="{y + 14}" font-weight="bold">{esc(ptitle)}</text>')
        y += 26
        vmax = max([v for _, bars in groups for _, v in bars if v is not None] + [ref or 0, 1e-9])
        scale = (width - left - 90) / vmax
        for gtitle, bars in groups:
            out.append(f'<text x="10" y="{y + 11}" font-size="11" fill="#444">{esc(gtitle)}</text>')
            y += 16
            for name, v in bars:
                out.append(f'<text x="{left - 6}" y="{y + 11}" font-size="11" text-anchor="end">{esc(name)}</text>')
                if v is not None:
                    w = max(1.0, v * scale)
                    out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colors.get(name, "#999")}"/>')
                    out.append(f'<text x="{left + w + 4:.1f}" y="{y + 11}" font-size="11">{esc(vfmt.format(v))}</text>')
                else:
                    out.append(f'<text x="{left + 4}" y="{y + 11}" font-size="11" fill="#a00">no result</text>')
                y += bar_h + gap
            if ref is not None:
                x = left + ref * scale
                out.append(f'<line x1="{x:.1f}" y1="{y - len(bars) * (bar_h + gap) - 2}" x2="{x:.1f}" y2="{y}" stroke="#000" stroke-dasharray="3,2"/>')
            y += 6
        y += 10
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
           f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
           + "\n".join(out) + "\n</svg>\n")
    with open(path, "w") as f:
        f.write(svg)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def old_target_rows(path):
    """The rows of the issue-13 targets table in the report at `path`, as
    (target, measured, met, run); a row without a run column takes the date
    of the table's note."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return []
    rows, date, inside = [], "", False
    for line in lines:
        if line.startswith("<!-- scenario:targets13 -->"):
            inside = True
        elif line.startswith("<!-- /scenario:targets13 -->"):
            break
        elif inside:
            m = re.match(r"_From the run of (.+?) \(", line)
            if m:
                date = m.group(1)
            if line.startswith("| `"):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return [tuple(c[:4]) if len(c) >= 4 else (c[0], c[1], c[2], date) for c in rows if len(c) >= 3]


def old_issue4_rows(path):
    """The rows of the issue-4 targets table in the report at `path`, as
    (target, measured, met)."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return []
    rows, inside = [], False
    for line in lines:
        if line.startswith("## Targets (issue 4)"):
            inside = True
        elif inside and (line.startswith("## ") or line.startswith("<!-- scenario:")):
            break
        elif inside and line.startswith("| ") and not line.startswith("| target |"):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            if len(c) == 3:
                rows.append(tuple(c))
    return rows


def target_order(row):
    """Generators in GENERATORS order, then the scenarios in run order."""
    gens = list(GENERATORS)
    g = row[0].split("`")[1] if row[0].startswith("`") else ""
    labels = ["20 B text", "20 B binary", "64 KiB", "16 MiB", "handshakes/s", "handshakes per"]
    at = next((i for i, lab in enumerate(labels) if lab in row[0]), len(labels))
    return (gens.index(g) if g in gens else len(gens), at)


def write_report(results, scen, meta, path, merge=False):
    """Writes the whole report, or with `merge` splices the sections of the
    scenarios in `results` into the report already at `path` (and refreshes
    its notes), leaving everything else there as it is."""
    by = summarise(results, meta["quick"])
    # A run of every scenario also renews the header and the chart when it
    # is spliced in (`--merge` keeps the sections other scripts add).
    full = {s[0] for s in scen} == {s[0] for s in scenarios(meta["quick"])}
    if not merge or full:
        chart = os.path.join(BENCH, "chart.svg")
        svg_chart(by, scen, chart)
    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Generated by `python3 bench/run.py%s` — do not edit by hand; notes on "
             "reading these figures and profiles are in `bench/README.md`." % (" --quick" if meta["quick"] else ""))
    L.append("")
    L.append(f"- Date: {meta['date']}  ")
    L.append(f"- Machine: {meta['machine']}; **shared** with other work during the run "
             f"(load average {meta['load_before']} before, {meta['load_after']} after), so absolute "
             "rates move between runs; ratios within one round move less.  ")
    L.append(f"- Each server: a fresh process per measurement, `taskset -c {SERVER_CPU}`; the load "
             f"generator: one thread, `taskset -c {CLIENT_CPU}` — "
             + " and ".join(f"`{g}`" for g in meta.get("generators", ["duplex bench"]))
             + " (`fws-load`, built on the fastwebsockets client, runs the echo and handshake scenarios; "
             "`bench/README.md` says how the two differ). "
             f"{meta['rounds']} round(s), servers interleaved within each round.  ")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "  ")
    L.append("- Duplex runs as `duplex serve --no-deflate` (release build); peers have no compression. "
             "Every echo is checked byte for byte by the generator.")
    L.append("")
    L.append("Figures are medians over rounds, with the spread (min–max) in parentheses. "
             "**Server CPU/msg** is the server process's user+system CPU time over the measured "
             "window divided by the messages echoed in it; **× TCP** is that figure divided by the raw "
             "TCP echo's from the same round (median over rounds) — the echo of the very same bytes "
             "with no WebSocket work at all. On two cores the generator saturates its core first, so "
             "msgs/s mostly measures the generator; CPU per message is what separates servers.")
    L.append("")
    L.append("![chart](bench/chart.svg)")
    L.append("")
    start4 = len(L)
    L.append("## Targets (issue 4)")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    t4 = [(t, m, ok if isinstance(ok, str) else ('yes' if ok else '**no**')) for t, m, ok in targets(by)]
    if merge:
        # Rows of scenarios this run did not measure stay as they were.
        kept = {row[0]: row for row in old_issue4_rows(path)}
        t4 = [kept.get(t, (t, m, ok)) if m == "–" else (t, m, ok) for t, m, ok in t4]
    for row in t4:
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    issue4 = L[start4:]
    pt = [(t, m, ok if isinstance(ok, str) else ('yes' if ok else '**no**'), meta["date"])
          for t, m, ok in peer_targets(by, meta.get("generators", ["duplex bench"]))]
    if merge and pt:
        # Rows of scenarios this run did not measure stay, with their run.
        fresh = {row[0] for row in pt}
        pt += [row for row in old_target_rows(path) if row[0] not in fresh]
    sections = {"targets4": ("Targets (issue 4)", issue4)}
    if pt:
        start = len(L)
        L.append("<!-- scenario:targets13 -->")
        L.append("## Targets (issue 13): at or below the best peer, with each generator")
        L.append("")
        L.append("| target | Duplex vs the best peer, × raw TCP, median (range); per round, Duplex ÷ the peer closest to it | met | run |")
        L.append("|---|---|---|---|")
        for row in sorted(pt, key=target_order):
            L.append("| " + " | ".join(row) + " |")
        L.append("")
        if merge:
            L.append("_Each row from the run named: `--merge` keeps the rows of scenarios the "
                     "latest run did not measure._")
            L.append("")
        L.append("<!-- /scenario:targets13 -->")
        L.append("")
        sections["targets13"] = ("Targets (issue 13): at or below the best peer, with each generator", L[start:])
    for key, title, mode, servers, args in scen:
        start = len(L)
        L.append(f"<!-- scenario:{key} -->")
        L.append(f"## {title}")
        L.append("")
        if merge:
            L.append(f"_Measured {meta['date']} with `python3 bench/run.py --only {key} --merge"
                     f"{' --quick' if meta['quick'] else ''}`: {meta['rounds']} round(s), load average "
                     f"{meta['load_before']} before, {meta['load_after']} after; "
                     + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "._")
            L.append("")
        gens = [g for g in meta.get("generators", ["duplex bench"]) if gen_runs(g, key, mode)]
        for g in gens:
            section_table(L, by, key, title, mode, servers, args, g, len(gens) > 1)
        L.append(f"<!-- /scenario:{key} -->")
        L.append("")
        sections[key] = (title, L[start:])
    L.append(f"Total run time: {meta['elapsed']:.0f} s.")
    L.append("")
    notes = os.path.join(BENCH, "notes.md")
    notes_text = open(notes).read().rstrip() if os.path.exists(notes) else ""
    if merge:
        old = open(path).read().split("\n")
        if full:
            old = splice_header(old, L)
        L = splice(old, sections, notes_text)
    elif notes_text:
        # Hand-written analysis (profiles, what each change bought), kept
        # in bench/notes.md and carried into every regenerated report.
        L.append(notes_text)
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def section_table(L, by, key, title, mode, servers, args, g, several):
    """One scenario's table for the results of generator `g`."""
    prog = "fws-load" if g == "fws-load-batch" else g
    cmd = f"`{prog} {mode} URL {' '.join(args + GEN_EXTRA.get(g, []))}`"
    L.append(f"Generator **`{g}`**: {cmd}" if several else cmd)
    L.append("")
    key = gen_key(key, g)
    if mode == "echo":
        L.append("| server | server CPU µs/msg | × TCP | msgs/s | MB/s | p50 µs | p99 µs | server core | generator core | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for s in servers:
            cpu = vals(by, key, s, "server_cpu_us_per_msg")
            rt = ratios(by, key, s)
            n, first = errors_of(by, key, s)
            L.append("| " + " | ".join([
                s, fmt_ms(cpu, cpu_digits(med(cpu))),
                "1" if s == "raw TCP echo" else fmt_ms(rt, 2),
                fmt_ms(vals(by, key, s, "msgs_per_s")),
                fmt_ms(vals(by, key, s, "mb_per_s"), 1),
                fmt_ms(vals(by, key, s, "p50_us")),
                fmt_ms(vals(by, key, s, "p99_us")),
                pct(med(vals(by, key, s, "server_cpu_util"))),
                pct(med(vals(by, key, s, "generator_cpu_util"))),
                str(n) + (f" ({esc(first)})" if first else "")]) + " |")
    elif mode == "idle":
        L.append("| server | RSS growth per connection, bytes | of it anonymous | opened | deflate agreed | open time, s | server CPU µs per connection opened | errors |")
        L.append("|---|---|---|---|---|---|---|---|")
        for s in servers:
            n, first = errors_of(by, key, s)
            L.append("| " + " | ".join([
                s, fmt_ms(vals(by, key, s, "rss_bytes_per_conn")),
                fmt_ms(vals(by, key, s, "anon_bytes_per_conn")),
                fmt(med(vals(by, key, s, "opened"))),
                fmt(med(vals(by, key, s, "deflate_negotiated"))),
                fmt_ms(vals(by, key, s, "open_s"), 2),
                fmt_ms(vals(by, key, s, "server_cpu_us_per_conn"), 1),
                str(n) + (f" ({esc(first)})" if first else "")]) + " |")
    elif mode == "broadcast":
        broadcast_table(L, by, key, servers, args)
    else:
        L.append("| server | handshakes/s | upgrade p50 µs | p99 µs | server CPU µs per handshake | server core | generator core | errors |")
        L.append("|---|---|---|---|---|---|---|---|")
        for s in servers:
            n, first = errors_of(by, key, s)
            L.append("| " + " | ".join([
                s, fmt_ms(vals(by, key, s, "handshakes_per_s")),
                fmt_ms(vals(by, key, s, "p50_us")),
                fmt_ms(vals(by, key, s, "p99_us")),
                fmt_ms(vals(by, key, s, "server_cpu_us_per_handshake"), 1),
                pct(med(vals(by, key, s, "server_cpu_util"))),
                pct(med(vals(by, key, s, "generator_cpu_util"))),
                str(n) + (f" ({esc(first)})" if first else "")]) + " |")

    L.append("")


def splice_header(old, new):
    """`old` with its header (from the date to the line on how Duplex
    runs) replaced by the one in `new`."""
    def span(lines):
        i = next((n for n, line in enumerate(lines) if line.startswith("- Date: ")), None)
        j = next((n for n, line in enumerate(lines) if line.startswith("- Duplex runs as ")), None)
        return (i, j + 1) if i is not None and j is not None and i < j else None
    o, n = span(old), span(new)
    if o and n:
        old[o[0]:o[1]] = new[n[0]:n[1]]
    return old


def splice(old, sections, notes_text):
    """The lines of report `old` with each scenario section replaced by the
    new one (found by its markers, or by its heading in a report written
    before there were markers; a new section goes before the run time
    line), and the notes at the end replaced by `notes_text`."""
    def tail_at():
        for i, line in enumerate(old):
            if line.startswith("Total run time:"):
                return i
        return len(old)
    for key, (title, lines) in sections.items():
        begin, end = f"<!-- scenario:{key} -->", f"<!-- /scenario:{key} -->"
        if begin in old and end in old:
            i, j = old.index(begin), old.index(end) + 2
        elif f"## {title}" in old:
            i = old.index(f"## {title}")
            j = i + 1
            while j < len(old) and not (old[j].startswith("## ") or old[j].startswith("<!-- scenario:")
                                        or old[j].startswith("Total run time:")):
                j += 1
        elif key == "targets13":
            # Before the first scenario.
            i = j = next((n for n, line in enumerate(old) if line.startswith("<!-- scenario:")), tail_at())
        else:
            i = j = tail_at()
        old[i:j] = lines
    if notes_text:
        first = notes_text.split("\n")[0]
        if first in old:
            old[old.index(first):] = notes_text.split("\n") + [""]
        else:
            old += notes_text.split("\n") + [""]
    return old


def pct(v):
    return "–" if v is None else f"{100 * v:.0f}%"


def loadavg():
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short windows, 1,000 idle connections, 1 round")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--only", help="comma-separated scenario keys to run")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--merge", action="store_true",
                    help="splice the scenarios run into the existing report instead of rewriting it "
                         "(with --only; the chart is left as it is)")
    ap.add_argument("--generators", default="duplex,fws-load,fws-load-batch",
                    help="comma-separated: duplex (`duplex bench`, every scenario), fws-load "
                         "(echo and handshake only) and fws-load-batch (fws-load --batch, the "
                         "depth-16 scenario only); default all three")
    ap.add_argument("--wait-near", type=float, default=90, metavar="SECONDS",
                    help="before each echo, handshake and broadcast measurement, wait up to this long for "
                         "the CPUs to be near each other (0: do not wait); default 90")
    ap.add_argument("--report-only", metavar="JSONL",
                    help="rewrite the report from a previous run's bench/results/*.jsonl")
    a = ap.parse_args()
    generators = []
    for g in a.generators.split(","):
        g = "duplex bench" if g.strip() == "duplex" else g.strip()
        if g not in GENERATORS:
            ap.error(f"unknown generator {g!r} (duplex, fws-load, fws-load-batch)")
        generators.append(g)
    rounds = a.rounds or (1 if a.quick else 3)
    if a.report_only:
        meta = json.load(open(a.report_only.replace(".jsonl", ".meta.json")))
        results = [json.loads(line) for line in open(a.report_only)]
        keys = {r["key"] for r in results}
        scen = [s for s in scenarios(meta["quick"]) if s[0] in keys]
        write_report(results, scen, meta, a.out, a.merge)
        log(f"wrote {a.out} from {a.report_only}")
        return
    if not a.no_build:
        build()
    scen = scenarios(a.quick)
    if a.only:
        keep = set(a.only.split(","))
        scen = [s for s in scen if s[0] in keep]
    t0 = time.time()
    meta = {"quick": a.quick, "rounds": rounds, "load_before": loadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "versions": tool_versions(), "generators": generators}
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    raw_path = os.path.join(BENCH, "results", time.strftime("run-%Y%m%d-%H%M%S.jsonl"))
    results = []
    near = Near(a.wait_near)
    with open(raw_path, "w") as raw:
        for rnd in range(rounds):
            for key, title, mode, servers, args in scen:
                # Rotate the order each round so no server always runs first.
                order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
                for g in [g for g in generators if gen_runs(g, key, mode)]:
                    for s in order:
                        log(f"[round {rnd + 1}/{rounds}] {title}: {s} ({g})")
                        timeout = 120 if mode in ("idle", "broadcast") else 60
                        if mode in ("echo", "handshake", "broadcast"):
                            j, probes = run_near(near, s, mode, args, timeout, g)
                        else:
                            j, probes = run_one(s, mode, args, timeout, g), None
                        rec = {"key": key, "server": s, "round": rnd, "gen": g, "json": j}
                        if probes:
                            rec["core_rtt_ns"] = probes
                        results.append(rec)
                        raw.write(json.dumps(rec) + "\n")
                        raw.flush()
    meta["elapsed"] = time.time() - t0
    meta["load_after"] = loadavg()
    with open(raw_path.replace(".jsonl", ".meta.json"), "w") as f:
        json.dump(meta, f)
    write_report(results, scen, meta, a.out, a.merge)
    log(f"wrote {a.out}{'' if a.merge else ', bench/chart.svg'} and {raw_path}")


if __name__ == "__main__":
    # On SIGTERM, unwind so the running server is stopped (run_one's finally).
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
