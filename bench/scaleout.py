#!/usr/bin/env python3
"""Scale-out benchmark: several `duplex serve` nodes sharing one channel
through Redis (`--broker`); splices its section into BENCHMARKS.md.

Scenarios, each a fresh set of processes (Redis, nodes) per measurement:

- `local, 1 node`  — no broker: the baseline;
- `redis, 1 node`  — the same node with `--broker redis://…`;
- `redis, 2 nodes`, `redis, 3 nodes` — the publisher posts to node 1, the
  subscribers are spread round-robin over every node (`duplex bench
  broadcast --subscribe-to`), so every publication reaches every node
  through Redis.

Every server process and redis-server run on CPU 0 (`taskset -c 0`), the
generator `duplex bench` on CPU 1: what a two-core machine allows. Rounds
are interleaved (round 1: every scenario and measurement, round 2: …), the
scenario order rotating each round.

    python3 bench/scaleout.py            # full run (about 5 minutes)
    python3 bench/scaleout.py --quick    # smoke run: short windows, 1 round
    python3 bench/scaleout.py --report-only bench/results/scaleout-….jsonl

Raw results (one JSON line per run) go to bench/results/ (not committed).
Standard library only; needs redis-server and taskset.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Formatting and machine facts are those of the other benchmarks.
from run import fmt, fmt_ms, loadavg, machine, med, pct  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
DUPLEX = os.path.join(ROOT, "target", "release", "duplex")
CONFIG = os.path.join(BENCH, "duplex-scaleout.toml")
REPORT = os.path.join(ROOT, "BENCHMARKS.md")
SERVER_CPU = "0"
CLIENT_CPU = "1"
HOST = "127.0.0.1"
BEGIN, END = "<!-- scaleout -->", "<!-- /scaleout -->"
TICK = os.sysconf("SC_CLK_TCK")

# key -> (label, broker, nodes)
SCENARIOS = [
    ("local1", "local, 1 node", False, 1),
    ("redis1", "redis, 1 node", True, 1),
    ("redis2", "redis, 2 nodes", True, 2),
    ("redis3", "redis, 3 nodes", True, 3),
]
LABEL = {k: l for k, l, _, _ in SCENARIOS}
# Redis commands the node heartbeat sends (a pipeline of ZADD,
# ZREMRANGEBYSCORE, PEXPIRE every 2 s) and the PING on the pub/sub
# connection (every 2 s): not per publication.
HEARTBEAT_CMDS = ("zadd", "zremrangebyscore", "ping")


def measurements(quick, subscribers=1000):
    """(key, title, generator arguments). `sat` and `lat` on a channel of
    the namespace `hist` (history kept: the Lua publish script with
    --broker), `sat-nohist` on one without (a plain PUBLISH)."""
    w = ["--warmup", "0.3", "--duration", "1", "--hold", "0.5"] if quick else \
        ["--warmup", "1", "--duration", "4", "--hold", "1"]
    common = ["-c", str(subscribers), "--size", "100", "--concurrency", "64"]
    return [
        ("sat", "saturated fan-out, channel with history (`hist:bench`)",
         common + ["--window", "32", "--channel", "hist:bench"] + w),
        ("sat-nohist", "saturated fan-out, channel without history (`bench`)",
         common + ["--window", "32", "--channel", "bench"] + w),
        ("lat", "paced latency, 200 publications/s, channel with history (`hist:bench`)",
         common + ["--rate", "200", "--channel", "hist:bench"] + w),
    ]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------- processes --

def free_ports(n):
    """n distinct free loopback ports (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_busy_s():
    """{cpu number: (busy, steal) seconds} from /proc/stat: busy is every
    state but idle, iowait and steal, whoever ran."""
    out = {}
    try:
        for line in open("/proc/stat"):
            f = line.split()
            if f and f[0].startswith("cpu") and f[0] != "cpu":
                t = [int(x) for x in f[1:9]]
                user, nice, system, idle, iowait, irq, softirq, steal = t
                out[int(f[0][3:])] = ((user + nice + system + irq + softirq) / TICK, steal / TICK)
    except (OSError, ValueError):
        pass
    return out


def cpu_s(pid):
    """utime + stime of a process, seconds (None once it is gone)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


class Resp:
    """The least of a Redis client: one connection, commands, replies."""

    def __init__(self, port, timeout=2.0):
        self.s = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.s.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise OSError("Redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("Redis: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise OSError("Redis closed the connection")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected Redis reply {line!r}")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._reply()


def commandstats(port):
    """{command: calls} from INFO commandstats."""
    r = Resp(port)
    try:
        text = r.cmd("INFO", "commandstats")
    finally:
        r.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            kv = dict(f.split("=", 1) for f in fields.split(","))
            out[name] = int(kv["calls"])
            if int(kv.get("failed_calls", 0)):
                out[name + " (failed)"] = int(kv["failed_calls"])
    return out


def metrics(port):
    """{metric line name with labels: value} from a node's /metrics."""
    out = {}
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, v = line.rpartition(" ")
                try:
                    out[name] = float(v)
                except ValueError:
                    pass
    return out


def wait_until(check, what, procs, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name, p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} while starting")
        try:
            if check():
                return
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


def health_ok(port):
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class Cluster:
    """Redis (with a broker) and the nodes of one measurement, all on
    SERVER_CPU; stopped by `stop()` whatever happened."""

    def __init__(self, broker, nodes, workdir):
        self.broker, self.n = broker, nodes
        self.workdir = workdir
        self.procs = []  # (name, Popen, log path)
        self.redis_port = None
        self.node_ports = []

    def start(self):
        env = dict(os.environ, DUPLEX_LOG="warn")
        ports = free_ports(self.n + 1)
        if self.broker:
            self.redis_port = ports[-1]
            logp = os.path.join(self.workdir, "redis.log")
            p = subprocess.Popen(
                ["taskset", "-c", SERVER_CPU, "redis-server", "--port", str(self.redis_port),
                 "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", self.workdir],
                stdout=open(logp, "w"), stderr=subprocess.STDOUT, cwd=self.workdir)
            self.procs.append(("redis-server", p, logp))

            def pong():
                r = Resp(self.redis_port, timeout=0.5)
                try:
                    return r.cmd("PING") == "PONG"
                finally:
                    r.close()
            wait_until(pong, "redis-server", self.named())
        for i in range(self.n):
            port = ports[i]
            self.node_ports.append(port)
            cmd = ["taskset", "-c", SERVER_CPU, DUPLEX, "serve", "--listen", f"{HOST}:{port}",
                   "--no-deflate", "--config", CONFIG]
            if self.broker:
                cmd += ["--broker", f"redis://{HOST}:{self.redis_port}"]
            logp = os.path.join(self.workdir, f"node{i + 1}.log")
            p = subprocess.Popen(cmd, env=env, stdout=open(logp, "w"), stderr=subprocess.STDOUT)
            self.procs.append((f"node {i + 1}", p, logp))
        for port in self.node_ports:
            wait_until(lambda: health_ok(port), f"node on port {port}", self.named())

    def named(self):
        return [(name, p) for name, p, _ in self.procs]

    def pids(self):
        return {name: p.pid for name, p, _ in self.procs}

    def dead(self):
        """What exited before its time, with the end of its log."""
        out = []
        for name, p, logp in self.procs:
            if p.poll() is not None:
                tail = ""
                try:
                    tail = " | ".join(open(logp).read().strip().splitlines()[-2:])
                except OSError:
                    pass
                out.append(f"{name} exited with {p.returncode} during the run" + (f": {tail}" if tail else ""))
        return out

    def stop(self):
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=8)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_snapshot(cluster):
    """Every process's CPU time and every core's busy time, now."""
    return {"t": time.time(), "cpu": {n: cpu_s(pid) for n, pid in cluster.pids().items()},
            "cores": cpu_busy_s()}


def snapshot(cluster):
    """Redis commandstats, every node's metrics, every process's CPU."""
    snap = cpu_snapshot(cluster)
    if cluster.broker:
        snap["redis"] = commandstats(cluster.redis_port)
    snap["nodes"] = [metrics(p) for p in cluster.node_ports]
    return snap


def diff(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) - a.get(k, 0)}


def run_one(scen, args, timeout):
    key, label, broker, nodes = scen
    workdir = tempfile.mkdtemp(prefix="duplex-scaleout-")
    cluster = None
    rec = {}
    gen = None
    try:
        for attempt in range(2):
            # A port chosen free may be taken before the process binds it
            # (the generator's own connections use the same range): once
            # more with new ports.
            cluster = Cluster(broker, nodes, workdir)
            try:
                cluster.start()
                break
            except RuntimeError as e:
                cluster.stop()
                if attempt:
                    raise
                log(f"    could not start ({e}); once more")
        urls = [f"ws://{HOST}:{p}/connection/websocket" for p in cluster.node_ports]
        cmd = ["taskset", "-c", CLIENT_CPU, DUPLEX, "bench", "broadcast", urls[0],
               "--server-pid", str(cluster.procs[-nodes][1].pid), "--label", label,
               "--api-key", "bench"] + args
        if nodes > 1:
            for u in urls:
                cmd += ["--subscribe-to", u]
        rec["command"] = cmd
        hold = float(args[args.index("--hold") + 1]) if "--hold" in args else 1.0
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        snaps, err_lines = {}, []

        def read_stderr():
            # "broadcast: N subscribed, holding for …": every subscription
            # (and its Redis traffic) is done, nothing is published yet.
            for line in gen.stderr:
                err_lines.append(line.rstrip())
                if "holding for" in line and "before" not in snaps:
                    t0 = time.time()
                    try:
                        snaps["before"] = snapshot(cluster)
                    except (OSError, RuntimeError, ValueError) as e:
                        snaps["error"] = f"snapshot before publishing: {e}"
                    # CPU figures start at the end of the idle hold (just
                    # before it: the first probe must not come first).
                    time.sleep(max(0.0, t0 + hold - 0.05 - time.time()))
                    snaps["busy_from"] = cpu_snapshot(cluster)
        t = threading.Thread(target=read_stderr, daemon=True)
        t.start()
        # A generator that hangs is killed (and reported) after `timeout`.
        watchdog = threading.Timer(timeout, gen.kill)
        watchdog.start()
        out_lines = []
        for line in gen.stdout:
            out_lines.append(line.rstrip())
            if len(out_lines) == 1:
                # The human line is printed while every connection is
                # still open: the end of the publishing phase.
                try:
                    snaps["after"] = snapshot(cluster)
                except (OSError, RuntimeError, ValueError) as e:
                    snaps["error"] = f"snapshot after publishing: {e}"
        gen.wait()
        watchdog.cancel()
        t.join(timeout=5)
        if out_lines:
            log("   ", out_lines[0])
        try:
            j = json.loads(out_lines[-1])
        except (IndexError, ValueError):
            j = {"errors": 1, "first_error": (err_lines or ["no output"])[-1]}
        j["exit_code"] = gen.returncode
        if gen.returncode < 0:
            j["errors"] = int(j.get("errors") or 0) + 1
            j["first_error"] = f"generator killed after {timeout} s"
        dead = cluster.dead()
        if dead:
            j["errors"] = int(j.get("errors") or 0) + len(dead)
            j["first_error"] = "; ".join(dead + ([j["first_error"]] if j.get("first_error") else []))
        if "error" in snaps:
            j["snapshot_error"] = snaps["error"]
        rec["json"] = j
        if "before" in snaps and "after" in snaps:
            rec["window"] = window_stats(snaps["before"], snaps["after"], j, broker,
                                         snaps.get("busy_from"), hold)
        return rec
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        rec["json"] = {"errors": 1, "first_error": str(e), "exit_code": -1}
        return rec
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def window_stats(a, b, j, broker, c, hold):
    """What happened between "all subscribed" (`a`) and the end of the
    publishing (`b`): publications (counted by node 1's API, so probes
    included), Redis commands and node round trips per publication; and
    from the end of the generator's idle hold (`c`) to `b`, the CPU of
    every process on SERVER_CPU (per delivery, and how busy it kept CPU 0)
    and of each whole core."""
    api = "duplex_api_calls_total{method=\"publish\"}"
    pubs = int(b["nodes"][0].get(api, 0) - a["nodes"][0].get(api, 0))
    w = {"seconds": b["t"] - a["t"], "publications": pubs,
         "probes": pubs - int(j.get("published_total") or 0)}
    deliveries = sum(n.get("duplex_deliveries_total", 0) - m.get("duplex_deliveries_total", 0)
                     for m, n in zip(a["nodes"], b["nodes"]))
    w["deliveries"] = int(deliveries)
    w["node_deliveries"] = [int(n.get("duplex_deliveries_total", 0) - m.get("duplex_deliveries_total", 0))
                            for m, n in zip(a["nodes"], b["nodes"])]
    if c is None:  # no snapshot at the end of the hold: from `a`, less the hold
        c = dict(a, t=a["t"] + hold)
    cpu = {k: (b["cpu"].get(k) or 0) - (c["cpu"].get(k) or 0) for k in c["cpu"]}
    w["cpu_s"] = cpu
    total = sum(cpu.values())
    busy_s = b["t"] - c["t"]
    w["busy_seconds"] = busy_s
    w["cpu0_util"] = total / busy_s if busy_s > 0 else None
    # Everything that ran on each core (ours, other work, interrupts), and
    # the time the hypervisor took (steal).
    for core, key in [(int(SERVER_CPU), "cpu0"), (int(CLIENT_CPU), "cpu1")]:
        ca, cb = c.get("cores", {}).get(core), b.get("cores", {}).get(core)
        if ca and cb and busy_s > 0:
            w[f"{key}_all_util"] = (cb[0] - ca[0]) / busy_s
            w[f"{key}_steal"] = (cb[1] - ca[1]) / busy_s
    if w.get("cpu0_all_util") is not None and w["cpu0_util"] is not None:
        # CPU 0 time not spent by our processes (interrupt time of our own
        # traffic not charged to them included).
        w["cpu0_other_util"] = max(0.0, w["cpu0_all_util"] - w["cpu0_util"])
    w["cpu0_us_per_delivery"] = total * 1e6 / deliveries if deliveries else None
    if broker:
        w["redis_us_per_publication"] = cpu.get("redis-server", 0) * 1e6 / pubs if pubs else None
        rt = [int(n.get("duplex_broker_round_trips", 0) - m.get("duplex_broker_round_trips", 0))
              for m, n in zip(a["nodes"], b["nodes"])]
        w["node_round_trips"] = rt
        c = diff(a["redis"], b["redis"])
        c.pop("info", None)  # our own INFO commandstats
        w["commands"] = c
        calls = {k: v for k, v in c.items() if not k.endswith("(failed)")}
        hb = sum(calls.get(k, 0) for k in HEARTBEAT_CMDS) + calls.get("zadd", 0)  # + its PEXPIRE
        w["heartbeat_commands"] = hb
        w["commands_total"] = sum(calls.values())
        if pubs:
            w["per_pub"] = {
                "evalsha": calls.get("evalsha", 0) / pubs,
                "eval": calls.get("eval", 0) / pubs,
                "publish": calls.get("publish", 0) / pubs,
                "total": w["commands_total"] / pubs,
                "total_no_heartbeat": (w["commands_total"] - hb) / pubs,
                "rt_node1": rt[0] / pubs,
                "rt_others": sum(rt[1:]) / pubs,
            }
    return w


# ---------------------------------------------------------------- report --

def pct_ms(xs):
    """Median percentage with its min–max."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return pct(xs[0])
    return f"{pct(med(xs))} ({100 * min(xs):.0f}–{100 * max(xs):.0f}%)"


def interference_note(results):
    """Runs in which other work took a noticeable share of CPU 0."""
    bad = [r for r in results if (get(r, "window.cpu0_other_util") or 0) > 0.10]
    if not bad:
        return None
    names = {k: t for k, t, _ in measurements(False)}
    items = [f"{names.get(r['meas'], r['meas']).split(',')[0]} / {LABEL[r['scen']]} / round {r['round'] + 1} "
             f"({100 * r['window']['cpu0_other_util']:.0f} %)" for r in bad]
    return ("**Other work on CPU 0** (from `/proc/stat`: CPU 0's busy time over the interval minus our "
            "processes', so interrupt time of our own loopback traffic not charged to them is in it too) took "
            "more than 10 % of CPU 0 in " + f"{len(bad)} of {len(results)} runs: " + "; ".join(items) +
            ". Those runs are in the medians; their spreads show them.")


def get(r, path):
    v = r
    for p in path.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def vals(by, meas, scen, path):
    return [get(r, path) for r in by.get((meas, scen), [])]


def ratio_vals(by, meas, scen, path, ref="local1"):
    base = {r["round"]: get(r, path) for r in by.get((meas, ref), [])}
    out = []
    for r in by.get((meas, scen), []):
        a, b = get(r, path), base.get(r["round"])
        if a is not None and b:
            out.append(a / b)
    return out


def errors_of(by, meas, scen):
    rs = by.get((meas, scen), [])
    n = sum(int(r["json"].get("errors") or 0) for r in rs)
    lost = sum(int(r["json"].get("lost") or 0) for r in rs)
    incomplete = sum(1 for r in rs if not r["json"].get("complete"))
    firsts = sorted({r["json"].get("first_error") for r in rs if r["json"].get("first_error")})
    snap = sorted({r["json"].get("snapshot_error") for r in rs if r["json"].get("snapshot_error")})
    text = str(n)
    if firsts or snap:
        text += " (" + "; ".join(firsts + snap).replace("|", "\\|") + ")"
    return f"{lost}", f"{incomplete} of {len(rs)}", text


def versions():
    v = {}
    try:
        built = datetime.datetime.fromtimestamp(os.path.getmtime(DUPLEX), datetime.timezone.utc)
        v["duplex binary"] = f"target/release/duplex built {built.strftime('%Y-%m-%d %H:%M UTC')}"
    except OSError:
        pass
    for name, cmd in [("tree", ["git", "-C", ROOT, "describe", "--always", "--dirty"]),
                      ("redis-server", ["redis-server", "--version"]), ("rustc", ["rustc", "--version"])]:
        try:
            v[name] = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return v


def saturation_note(by, mk, scen_keys):
    """Which side limited the saturated runs, from the figures."""
    parts, idle = [], []
    for s in scen_keys:
        ours = med(vals(by, mk, s, "window.cpu0_util"))
        every = med(vals(by, mk, s, "window.cpu0_all_util"))
        g = med(vals(by, mk, s, "json.generator_cpu_util"))
        p = med(vals(by, mk, s, "json.publications_per_s"))
        if ours is None or g is None:
            continue
        allw = f" ({pct(every)} with other work)" if every is not None else ""
        parts.append(f"{LABEL[s]}: CPU 0 {pct(ours)}{allw}, generator {pct(g)}, {fmt(p)} publications/s")
        if max(ours, every or 0) < 0.9 and g < 0.9:
            idle.append(s)
    text = ("How busy each side was while publishing (CPU 0: every node and Redis together, from "
            "`/proc`, from the end of the generator's idle hold to its result, and everything that ran "
            "on CPU 0 from `/proc/stat`; generator: its own core in the measured window): "
            + "; ".join(parts) + ".")
    if idle:
        which = "in every scenario" if len(idle) == len(parts) else \
            "for " + "; ".join(LABEL[s] for s in idle)
        text += (f" Neither core is near 100 % {which}: there the rate is set by latency, not CPU — "
                 "the publisher keeps at most 32 publications undelivered and node 1's API answers one "
                 "publish at a time per HTTP connection (with a broker, each after a Redis round trip), so "
                 "publications/s is about 1 ÷ the time one publish takes to be answered, and fewer "
                 "publications in flight means fewer frames per write to each subscriber.")
    return text


def pace_note(by, scen_keys):
    """Which paced runs kept the pace, from the figures."""
    behind = []
    for s in scen_keys:
        rs = by.get(("lat", s), [])
        # Deliveries/s over what the pace asks for (rate x subscribers).
        kept = [r["json"]["deliveries_per_s"] / (r["json"]["rate"] * r["json"]["subscribed"])
                for r in rs if r["json"].get("rate") and r["json"].get("subscribed")
                and r["json"].get("deliveries_per_s") is not None]
        k, c = med(kept), med(vals(by, "lat", s, "window.cpu0_util"))
        if k is not None and k < 0.98:
            behind.append(f"{LABEL[s]} (delivered {100 * k:.0f} % of the pace in the measured window, "
                          f"CPU 0 {pct(c)} busy)")
    lc = med(vals(by, "lat", "local1", "window.cpu0_us_per_delivery"))
    lu = med(vals(by, "lat", "local1", "window.cpu0_util"))
    text = ("Publish→delivery latency counts from each publication's scheduled send time on the "
            "generator's clock, so a server that falls behind the pace shows it as latency. Paced, a "
            "publication reaches each subscriber in a write of its own (nothing to coalesce with), so one "
            "publication to all subscribers takes milliseconds of CPU 0 — what p50 mostly measures")
    if lc is not None and lu is not None:
        text += (f"; `local, 1 node` alone spends {lc:.2f} µs of CPU 0 per delivery here and keeps CPU 0 "
                 f"{pct(lu)} busy, so whatever CPU a scenario adds on that core turns into queueing")
    text += "."
    if behind:
        text += (" Fell behind the pace, so their latency is the age of a growing queue, not the cost of "
                 "a hop: " + "; ".join(behind) + ".")
    return text


def section(results, meta):
    by = {}
    for r in results:
        by.setdefault((r["meas"], r["scen"]), []).append(r)
    meas = {k: (t, a) for k, t, a in measurements(meta["quick"], meta.get("subscribers", 1000))}
    scen_keys = [k for k, _, _, _ in SCENARIOS]
    L = [BEGIN, "## Scale-out through Redis: 1, 2, 3 nodes sharing a channel", ""]
    cmd = meta.get("command") or f"python3 bench/scaleout.py{' --quick' if meta['quick'] else ''}"
    L.append(f"_Measured {meta['date']} with `{cmd}` "
             f"({meta['rounds']} round(s), {meta['elapsed']:.0f} s; load average {meta['load_before']} before, "
             f"{meta['load_after']} after). Machine: {meta['machine']}, shared with other work. "
             + ", ".join(f"working tree at {v} when measured" if k == "tree" else v
                         for k, v in meta["versions"].items()) + "._")
    L.append("")
    L.append("Every node is `duplex serve --no-deflate --config bench/duplex-scaleout.toml` "
             "(`[namespaces.hist]`: history 100 publications for 60 s, no presence, join/leave or recovery), "
             "with `--broker redis://…` in the redis scenarios; redis-server (`--save '' --appendonly no`) "
             "runs on a free loopback port. **All server processes and Redis share CPU 0** (`taskset -c 0`) "
             "and the generator `duplex bench broadcast` runs on CPU 1: that is all a two-core machine "
             "allows, so the 2- and 3-node figures show what Redis costs in CPU, not what more machines "
             "would add. Redis and the nodes are fresh processes for every measurement; rounds are "
             "interleaved (every scenario and measurement in round 1, then round 2, …). The publisher "
             f"posts to node 1; with 2 or 3 nodes the {meta.get('subscribers', 1000):,} subscribers are spread round-robin over all "
             "of them (`--subscribe-to` each node), so every delivery on nodes 2 and 3 came through "
             "Redis. Medians over rounds, min–max in parentheses; **× local** is the ratio to "
             "`local, 1 node` in the same round (median of the per-round ratios).")
    L.append("")
    for mk in ["sat", "sat-nohist"]:
        if not any(k[0] == mk for k in by):
            continue
        title, args = meas[mk]
        L.append(f"### {title[0].upper()}{title[1:]}")
        L.append("")
        L.append(f"`duplex bench broadcast URL {' '.join(args)} [--subscribe-to URL …]`")
        L.append("")
        L.append("| scenario | deliveries/s | × local | CPU 0 µs/delivery (nodes + Redis) | × local "
                 "| node 1 µs/delivery | CPU 0 busy (ours) | other work on CPU 0 | publications/s | p50 µs | p99 µs "
                 "| generator core | lost | incomplete | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in scen_keys:
            if (mk, s) not in by:
                continue
            cpu = vals(by, mk, s, "window.cpu0_us_per_delivery")
            n1 = vals(by, mk, s, "json.server_cpu_us_per_delivery")
            lost, inc, err = errors_of(by, mk, s)
            L.append("| " + " | ".join([
                LABEL[s],
                fmt_ms(vals(by, mk, s, "json.deliveries_per_s")),
                "1" if s == "local1" else fmt_ms(ratio_vals(by, mk, s, "json.deliveries_per_s"), 2),
                fmt_ms(cpu, 3),
                "1" if s == "local1" else fmt_ms(ratio_vals(by, mk, s, "window.cpu0_us_per_delivery"), 2),
                fmt_ms(n1, 3) if s in ("local1", "redis1") else "(n/a: node 1 delivers 1/N)",
                pct(med(vals(by, mk, s, "window.cpu0_util"))),
                pct_ms(vals(by, mk, s, "window.cpu0_other_util")),
                fmt_ms(vals(by, mk, s, "json.publications_per_s")),
                fmt_ms(vals(by, mk, s, "json.p50_us")),
                fmt_ms(vals(by, mk, s, "json.p99_us")),
                pct(med(vals(by, mk, s, "json.generator_cpu_util"))),
                lost, inc, err]) + " |")
        L.append("")
        L.append(saturation_note(by, mk, scen_keys))
        L.append("")
    if any(k[0] == "lat" for k in by):
        title, args = meas["lat"]
        L.append(f"### {title[0].upper()}{title[1:]}")
        L.append("")
        L.append(f"`duplex bench broadcast URL {' '.join(args)} [--subscribe-to URL …]`")
        L.append("")
        L.append("| scenario | p50 µs | × local | p99 µs | × local | p99.9 µs | deliveries/s "
                 "| CPU 0 µs/delivery (nodes + Redis) | CPU 0 busy (ours) | other work on CPU 0 "
                 "| Redis µs CPU/publication | lost | incomplete | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in scen_keys:
            if ("lat", s) not in by:
                continue
            lost, inc, err = errors_of(by, "lat", s)
            L.append("| " + " | ".join([
                LABEL[s],
                fmt_ms(vals(by, "lat", s, "json.p50_us")),
                "1" if s == "local1" else fmt_ms(ratio_vals(by, "lat", s, "json.p50_us"), 2),
                fmt_ms(vals(by, "lat", s, "json.p99_us")),
                "1" if s == "local1" else fmt_ms(ratio_vals(by, "lat", s, "json.p99_us"), 2),
                fmt_ms(vals(by, "lat", s, "json.p999_us")),
                fmt_ms(vals(by, "lat", s, "json.deliveries_per_s")),
                fmt_ms(vals(by, "lat", s, "window.cpu0_us_per_delivery"), 3),
                pct(med(vals(by, "lat", s, "window.cpu0_util"))),
                pct_ms(vals(by, "lat", s, "window.cpu0_other_util")),
                fmt_ms(vals(by, "lat", s, "window.redis_us_per_publication"), 1),
                lost, inc, err]) + " |")
        L.append("")
        L.append(pace_note(by, scen_keys))
        L.append("")
        L.append("**Redis commands and round trips per publication** in the same runs (paced, channel with "
                 "history). Redis side: `INFO commandstats` read over a socket when every subscriber is "
                 "subscribed (the generator's \"holding\" line) and again when the generator prints its "
                 "result, before any connection closes; the difference, without the two `INFO` calls, "
                 "divided by the publications node 1's API accepted in between "
                 "(`duplex_api_calls_total{method=\"publish\"}` from its `/metrics`: the JSON's "
                 "`published_total` plus the generator's probes, listed). Node side: the difference of "
                 "each node's `duplex_broker_round_trips` over the same interval.")
        L.append("")
        L.append("| scenario | publications (probes) | EVALSHA | EVAL | PUBLISH | all commands "
                 "| all without heartbeats | heartbeat commands | round trips, node 1 | round trips, other nodes |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for s in scen_keys:
            if s == "local1" or ("lat", s) not in by:
                continue
            pubs = vals(by, "lat", s, "window.publications")
            probes = vals(by, "lat", s, "window.probes")
            L.append("| " + " | ".join([
                LABEL[s],
                f"{fmt(med(pubs))} ({fmt(med(probes))})",
                fmt_ms(vals(by, "lat", s, "window.per_pub.evalsha"), 3),
                fmt_ms(vals(by, "lat", s, "window.per_pub.eval"), 3),
                fmt_ms(vals(by, "lat", s, "window.per_pub.publish"), 3),
                fmt_ms(vals(by, "lat", s, "window.per_pub.total"), 3),
                fmt_ms(vals(by, "lat", s, "window.per_pub.total_no_heartbeat"), 3),
                fmt(med(vals(by, "lat", s, "window.heartbeat_commands"))),
                fmt_ms(vals(by, "lat", s, "window.per_pub.rt_node1"), 3),
                "–" if s == "redis1" else fmt_ms(vals(by, "lat", s, "window.per_pub.rt_others"), 4),
            ]) + " |")
        L.append("")
        # One run's commands, as counted, for the reader to check.
        for s in scen_keys:
            rs = [r for r in by.get(("lat", s), []) if get(r, "window.commands")]
            if s == "local1" or not rs:
                continue
            r = rs[0]
            c = r["window"]["commands"]
            L.append(f"- {LABEL[s]}, round {r['round'] + 1} ({r['window']['publications']} publications, "
                     f"{r['window']['seconds']:.1f} s): " + ", ".join(
                         f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) + ".")
        L.append("")
        L.append("Redis counts the commands a Lua script runs in `commandstats` too: the publish script "
                 "(`crates/duplex-server/src/broker/redis.rs`, `PUBLISH_LUA`) is one `EVALSHA` from the node "
                 "that runs `HGET`, `HINCRBY`, `XADD`, `PEXPIRE` twice and `PUBLISH` inside Redis — one "
                 "round trip, seven commands counted. The heartbeat commands are each node's pipeline of "
                 "`ZADD`, `ZREMRANGEBYSCORE`, `PEXPIRE` every 2 s (one round trip, counted by the node) and "
                 "the `PING` on its pub/sub connection every 2 s (not counted by the node); they do not "
                 "grow with publications, and \"all without heartbeats\" leaves them out. A node's pub/sub "
                 "connection receives the publications (`PUBLISH` fans out inside Redis), which is neither a "
                 "command nor a round trip: deliveries cost Redis no command at all.")
        L.append("")
    note = interference_note(results)
    if note:
        L.append(note)
        L.append("")
    L.append(END)
    return L


def splice(text, lines):
    """The report with its scale-out section replaced (between the
    markers), or inserted before the run-time line / the notes / the end."""
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


def write_report(results, meta, path):
    lines = section(results, meta)
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    with open(path, "w") as f:
        f.write(splice(text, lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short windows, 1 round")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    ap.add_argument("--only", help="comma-separated measurements to run: sat,sat-nohist,lat")
    ap.add_argument("--subscribers", type=int, default=1000, help="subscriber connections (default 1000)")
    ap.add_argument("--out", default=REPORT)
    ap.add_argument("--report-only", metavar="JSONL",
                    help="rewrite the section from a previous run's bench/results/scaleout-*.jsonl")
    a = ap.parse_args()
    if a.report_only:
        meta = json.load(open(a.report_only.replace(".jsonl", ".meta.json")))
        results = [json.loads(line) for line in open(a.report_only)]
        write_report(results, meta, a.out)
        log(f"wrote {a.out} from {a.report_only}")
        return
    for tool in ["redis-server", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"scaleout.py: {tool} not found")
    if not os.path.exists(DUPLEX):
        sys.exit(f"scaleout.py: {DUPLEX} missing: cargo build --release -p duplex-cli")
    rounds = a.rounds or (1 if a.quick else 3)
    meas = measurements(a.quick, a.subscribers)
    if a.only:
        keep = set(a.only.split(","))
        meas = [m for m in meas if m[0] in keep]
    t0 = time.time()
    meta = {"quick": a.quick, "rounds": rounds, "load_before": loadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "versions": versions(), "subscribers": a.subscribers,
            "command": " ".join(["python3", "bench/scaleout.py"] + sys.argv[1:])}
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    raw_path = os.path.join(BENCH, "results", time.strftime("scaleout-%Y%m%d-%H%M%S.jsonl"))
    results = []
    with open(raw_path, "w") as raw:
        for rnd in range(rounds):
            order = SCENARIOS[rnd % len(SCENARIOS):] + SCENARIOS[:rnd % len(SCENARIOS)]
            for mk, title, args in meas:
                for scen in order:
                    log(f"[round {rnd + 1}/{rounds}] {title}: {scen[1]}")
                    rec = run_one(scen, args, timeout=90)
                    rec.update({"meas": mk, "scen": scen[0], "round": rnd})
                    j = rec["json"]
                    if j.get("errors") or j.get("lost") or not j.get("complete"):
                        log(f"    ERRORS {j.get('errors')}, lost {j.get('lost')}, complete {j.get('complete')}: "
                            f"{j.get('first_error')}")
                    pp = get(rec, "window.per_pub")
                    if pp:
                        log("    per publication: " + ", ".join(f"{k} {v:.3f}" for k, v in pp.items()))
                    results.append(rec)
                    raw.write(json.dumps(rec) + "\n")
                    raw.flush()
    meta["elapsed"] = time.time() - t0
    meta["load_after"] = loadavg()
    with open(raw_path.replace(".jsonl", ".meta.json"), "w") as f:
        json.dump(meta, f)
    write_report(results, meta, a.out)
    log(f"wrote {a.out} and {raw_path} ({meta['elapsed']:.0f} s)")


if __name__ == "__main__":
    # On SIGTERM, unwind so every process started is stopped (run_one's finally).
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
