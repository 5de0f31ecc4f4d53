#!/usr/bin/env python3
"""Run the Autobahn|Testsuite against duplex and compare with the expected results.

    python3 tests/autobahn/run.py server|client [--duplex PATH] [--cases GLOBS] [--update]

server: duplex serves an echo endpoint, wstest's fuzzingclient tests it.
client: wstest's fuzzingserver tests `duplex connect --echo`, once per case.

The results (index.json of the report) are reduced to
{case_id: {"behavior": ..., "behaviorClose": ...}} and compared with
tests/autobahn/expected-<role>.json; --update rewrites that file instead.
Standard library only; wstest comes from tests/autobahn/install.sh.
"""

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AGENT = "duplex"
# categories always shown in the summary (others are shown when they occur)
BEHAVIORS = {
    "behavior": ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"],
    "behaviorClose": ["OK", "INFORMATIONAL", "FAILED", "WRONG CODE", "UNCLEAN"],
}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HarnessError(Exception):
    """The harness itself could not do its job (as opposed to a failing case)."""


class OverallTimeout(BaseException):
    pass


class Terminated(BaseException):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------
# child processes: each in its own process group, all killed on the way out

_children = []


def spawn(cmd, log_path, cwd=None, env=None):
    log = open(log_path, "ab")
    log.write(("$ " + " ".join(str(c) for c in cmd) + "\n").encode())
    log.flush()
    try:
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env, start_new_session=True)
    finally:
        log.close()
    _children.append(proc)
    return proc


def stop(proc, grace=5.0):
    """Stop a child started by spawn(): SIGTERM to its group, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # the group may outlive its leader
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    if proc in _children:
        _children.remove(proc)


def stop_all():
    for proc in list(_children):
        stop(proc, grace=3.0)


def _on_signal(signum, _frame):
    if signum == signal.SIGALRM:
        raise OverallTimeout()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Terminated(signum)


# --------------------------------------------------------------------------
# network helpers (127.0.0.1 only)

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout, what, log_path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError("%s exited with code %s before listening on port %d\n%s"
                               % (what, proc.returncode, port, tail(log_path)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise HarnessError("%s did not listen on 127.0.0.1:%d within %d s\n%s"
                       % (what, port, timeout, tail(log_path)))


class TinyWebSocket:
    """Just enough of a WebSocket client to talk to wstest's fuzzingserver."""

    def __init__(self, port, path, timeout):
        self.deadline = time.monotonic() + timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key))
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise HarnessError("WebSocket handshake to %s refused: %s" % (path, lines[0]))
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept:
            raise HarnessError("bad Sec-WebSocket-Accept from %s" % path)

    def _fill(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise HarnessError("WebSocket request timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise HarnessError("WebSocket request timed out") from None
        if not chunk:
            raise EOFError()
        self.buf += chunk

    def _read(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send(self, opcode, payload=b""):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def messages(self):
        """Read until the server closes; return the text/binary messages received."""
        out, parts = [], []
        try:
            while True:
                b0, b1 = self._read(2)
                opcode, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(self._read(2), "big")
                elif n == 127:
                    n = int.from_bytes(self._read(8), "big")
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode in (0, 1, 2):
                    parts.append(payload)
                    if b0 & 0x80:
                        out.append(b"".join(parts).decode("utf-8", "replace"))
                        parts = []
                elif opcode == 8:
                    try:
                        self._send(8, payload[:2])
                    except OSError:
                        pass
                    break
                elif opcode == 9:
                    self._send(10, payload)
        except (EOFError, ConnectionError):
            pass
        finally:
            self.sock.close()
        return out


def ws_get(port, path, timeout):
    return TinyWebSocket(port, path, timeout).messages()


# --------------------------------------------------------------------------
# results

def case_key(case_id):
    return tuple(int(p) if p.isdigit() else 0 for p in case_id.split("."))


def selected(case_id, patterns):
    return any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log at %s)" % path
    return "--- last lines of %s ---\n%s" % (path, "\n".join(text[-lines:]))


def read_results(outdir):
    index = outdir / "index.json"
    if not index.is_file():
        raise HarnessError("no report at %s" % index)
    data = json.loads(index.read_text())
    if AGENT not in data:
        raise HarnessError("report %s has no results for agent %r (agents: %s)"
                           % (index, AGENT, ", ".join(sorted(data)) or "none"))
    return {cid: {"behavior": r.get("behavior"), "behaviorClose": r.get("behaviorClose")}
            for cid, r in data[AGENT].items()}, data[AGENT]


def dump_expected(results):
    """JSON with one case per line, for readable diffs."""
    lines = ["  %s: %s" % (json.dumps(cid), json.dumps(r, sort_keys=True))
             for cid, r in results.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def fmt(r):
    return "%s/%s" % (r["behavior"], r["behaviorClose"]) if r else "(none)"


# --------------------------------------------------------------------------
# the two roles

def run_server_role(args, paths, wstest, deadline):
    """duplex serves, wstest's fuzzingclient tests it."""
    port = free_port()
    duplex_log = paths["logs"] / "duplex.log"
    server = spawn([args.duplex, "serve", "--listen", "127.0.0.1:%d" % port], duplex_log)
    wait_for_port(port, server, 30, "duplex serve", duplex_log)
    print("duplex serve listening on 127.0.0.1:%d" % port, flush=True)

    spec = {
        "outdir": str(paths["outdir"]),
        "servers": [{"agent": AGENT, "url": "ws://127.0.0.1:%d/echo" % port}],
        "cases": args.cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = paths["logs"] / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    wstest_log = paths["logs"] / "wstest.log"
    print("running wstest -m fuzzingclient (log: %s)" % rel(wstest_log), flush=True)
    proc = spawn([wstest, "-m", "fuzzingclient", "-s", spec_path], wstest_log,
                 cwd=paths["logs"])
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise OverallTimeout() from None
    harness = []
    if rc != 0:
        harness.append("wstest fuzzingclient exited with code %d\n%s" % (rc, tail(wstest_log)))
    if server.poll() is not None:
        harness.append("duplex serve exited early with code %s\n%s"
                       % (server.returncode, tail(duplex_log)))
    stop(server)
    return harness, {}


def run_client_role(args, paths, wstest, deadline):
    """wstest's fuzzingserver tests `duplex connect --echo`, one run per case."""
    port = free_port()
    spec = {
        "url": "ws://127.0.0.1:%d" % port,
        "outdir": str(paths["outdir"]),
        "cases": args.cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = paths["logs"] / "fuzzingserver.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    wstest_log = paths["logs"] / "wstest.log"
    env = dict(os.environ, WSTEST_LISTEN_INTERFACE="127.0.0.1")
    server = spawn([wstest, "-m", "fuzzingserver", "-s", spec_path, "--webport", "0"],
                   wstest_log, cwd=paths["logs"], env=env)
    wait_for_port(port, server, 60, "wstest fuzzingserver", wstest_log)
    print("wstest fuzzingserver listening on 127.0.0.1:%d (log: %s)"
          % (port, rel(wstest_log)), flush=True)

    count = json.loads(ws_get(port, "/getCaseCount", 30)[0])
    print("running %d cases with duplex connect --echo" % count, flush=True)
    duplex_log = paths["logs"] / "duplex.log"
    harness, case_harness = [], {}
    nonzero = 0
    for i in range(1, count + 1):
        url = "ws://127.0.0.1:%d/runCase?case=%d&agent=%s" % (port, i, AGENT)
        proc = spawn([args.duplex, "connect", "--echo", url], duplex_log)
        limit = min(args.case_timeout, deadline - time.monotonic())
        try:
            rc = proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            stop(proc)
            if time.monotonic() >= deadline:
                raise OverallTimeout() from None
            case_id = case_id_of(port, i)
            msg = "case %d (%s): duplex connect did not exit within %d s" % (
                i, case_id or "?", args.case_timeout)
            print("  " + msg, flush=True)
            if case_id:
                case_harness[case_id] = msg
            else:
                harness.append(msg)
            continue
        finally:
            if proc in _children:
                stop(proc)
        if rc != 0:
            nonzero += 1
        if server.poll() is not None:
            raise HarnessError("wstest fuzzingserver exited (code %s) during case %d\n%s"
                               % (server.returncode, i, tail(wstest_log)))
        if i % 50 == 0:
            print("  %d/%d cases done" % (i, count), flush=True)
    if nonzero:
        print("note: duplex connect exited non-zero in %d of %d cases (see %s)"
              % (nonzero, count, rel(duplex_log)), flush=True)

    # Asked for explicitly (shutdownOnComplete can lose this reply).
    ws_get(port, "/updateReports?agent=%s" % AGENT, max(30.0, deadline - time.monotonic()))
    stop(server)
    return harness, case_harness


def case_id_of(port, index):
    try:
        msgs = ws_get(port, "/getCaseInfo?case=%d" % index, 10)
        return json.loads(msgs[0]).get("id")
    except Exception:  # best effort, only used to label a timeout
        return None


def rel(path):
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("role", choices=["server", "client"])
    ap.add_argument("--duplex", default=str(REPO / "target" / "debug" / "duplex"),
                    help="duplex binary (default: target/debug/duplex)")
    ap.add_argument("--cases", default="*",
                    help="comma-separated case globs, e.g. '1.*,2.*' (default: '*')")
    ap.add_argument("--update", action="store_true",
                    help="rewrite the expected file with this run's results")
    ap.add_argument("--case-timeout", type=int, default=60,
                    help="seconds per case in the client role (default: 60)")
    ap.add_argument("--timeout", type=int, default=40 * 60,
                    help="overall seconds for the run (default: 2400)")
    args = ap.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()] or ["*"]
    args.duplex = str(Path(args.duplex).resolve())

    label = "autobahn-%s" % args.role
    expected_path = HERE / ("expected-%s.json" % args.role)
    home = Path(os.environ.get("DUPLEX_AUTOBAHN_HOME", REPO / "target" / "autobahn-env"))
    wstest = home / "bin" / "wstest"
    paths = {
        "outdir": REPO / "target" / "autobahn" / "reports" / args.role,
        "logs": REPO / "target" / "autobahn" / "logs" / args.role,
    }

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, _on_signal)
    signal.alarm(args.timeout)
    deadline = time.monotonic() + args.timeout

    harness, case_harness = [], {}
    results = raw = None
    try:
        if not os.access(str(wstest), os.X_OK):
            raise HarnessError("wstest not found at %s: run tests/autobahn/install.sh "
                               "(or set DUPLEX_AUTOBAHN_HOME)" % wstest)
        if not os.access(args.duplex, os.X_OK):
            raise HarnessError("duplex binary not found at %s (cargo build, or --duplex PATH)"
                               % args.duplex)
        # fresh report and log directories: never read a stale index.json
        for d in paths.values():
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        start = time.monotonic()
        role = run_server_role if args.role == "server" else run_client_role
        harness, case_harness = role(args, paths, str(wstest), deadline)
        results, raw = read_results(paths["outdir"])
        print("ran %d cases in %.0f s; report: %s"
              % (len(results), time.monotonic() - start, rel(paths["outdir"] / "index.html")))
    except HarnessError as e:
        harness.append(str(e))
    except OverallTimeout:
        harness.append("overall timeout of %d s reached" % args.timeout)
    except KeyboardInterrupt:
        stop_all()
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Terminated as e:
        stop_all()
        print("\nterminated by signal %d" % e.signum, file=sys.stderr)
        return 128 + e.signum
    finally:
        signal.alarm(0)
        stop_all()

    return report(args, label, expected_path, results or {}, raw or {}, harness, case_harness)


def report(args, label, expected_path, results, raw, harness, case_harness):
    ok = True
    # counts
    print()
    print("%s summary (%d cases, agent %s)" % (label, len(results), AGENT))
    for field in ("behavior", "behaviorClose"):
        counts = {}
        for r in results.values():
            counts[r[field]] = counts.get(r[field], 0) + 1
        names = BEHAVIORS[field] + sorted(set(counts) - set(BEHAVIORS[field]), key=str)
        print("  %-14s %s" % (field + ":", ", ".join("%s %d" % (n, counts.get(n, 0)) for n in names)))

    bad = sorted((cid for cid, r in results.items()
                  if r["behavior"] in ("FAILED", "UNIMPLEMENTED")), key=case_key)
    if bad:
        ok = False
        print("\nFAILED/UNIMPLEMENTED cases:")
        for cid in bad:
            print("  %-10s %-28s %s" % (cid, fmt(results[cid]),
                                        rel(Path(REPO / "target" / "autobahn" / "reports" / args.role
                                                 / str(raw.get(cid, {}).get("reportfile", ""))))))

    # expectations
    expected = None
    if expected_path.is_file():
        expected = json.loads(expected_path.read_text())
    partial = args.cases != ["*"]
    differing = []
    if args.update:
        if harness or not results:
            print("\nnot updating %s: the run did not complete" % rel(expected_path))
        else:
            new = dict(expected or {}) if partial else {}
            if partial:
                new = {cid: r for cid, r in new.items() if not selected(cid, args.cases)}
            new.update(results)
            ordered = {cid: new[cid] for cid in sorted(new, key=case_key)}
            expected_path.write_text(dump_expected(ordered))
            print("\nwrote %d cases to %s" % (len(ordered), rel(expected_path)))
            expected = ordered
    elif expected is None:
        ok = False
        print("\nexpected file %s is missing (create it with --update)" % rel(expected_path))

    if expected is not None and not results and harness:
        print("\nno results to compare with %s" % rel(expected_path))
    elif expected is not None:
        wanted = {cid: r for cid, r in expected.items() if selected(cid, args.cases)}
        for cid in sorted(set(wanted) | set(results), key=case_key):
            e, a = wanted.get(cid), results.get(cid)
            if e is None:
                differing.append("  %-10s not in expected file, got %s" % (cid, fmt(a)))
            elif a is None:
                differing.append("  %-10s expected %s, missing from report" % (cid, fmt(e)))
            elif e != a:
                differing.append("  %-10s expected %-28s got %s" % (cid, fmt(e), fmt(a)))
        if differing:
            ok = False
            print("\n%d cases differ from %s:" % (len(differing), rel(expected_path)))
            print("\n".join(differing))

    if harness or case_harness:
        ok = False
        print("\nharness failures:")
        for msg in harness + [case_harness[c] for c in sorted(case_harness, key=case_key)]:
            print("  " + msg.replace("\n", "\n    "))

    exp = {} if expected is None else expected
    passed = sum(1 for cid, r in results.items()
                 if r["behavior"] in PASSING and exp.get(cid) == r and cid not in case_harness)
    failed = len(results) - passed
    failed += sum(1 for cid in case_harness if cid not in results)
    failed += sum(1 for cid in exp if selected(cid, args.cases) and cid not in results
                  and cid not in case_harness)
    if harness and failed == 0:
        failed = len(harness)
    if failed:
        ok = False
    print()
    print("%s: %d passed, %d failed" % (label, passed, failed))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
