"""Helpers shared by the Python interop suites (centrifugo_api.py, centrifuge_python.py).

- Report: one line per check (PASS / FAIL / SKIP with its duration), the list
  of failures and the closing line "<suite>: N passed, N failed, N skipped (T s)"
  that run.sh reads.
- Duplex: `duplex serve --listen 127.0.0.1:0 ARGS...`, the port parsed from its
  `listening on http://127.0.0.1:PORT` log line, stopped with SIGINT.
- hs256(): a JWT signed with the standard library (hmac + hashlib + base64).
- post(): a plain HTTP POST on loopback (http.client in a thread).
- eventually(): polls a condition within a bound.
- run_suite(): runs a suite's main() bounded in time and exits with its status.

Standard library only: a suite that imports this needs nothing else from here.
"""

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DUPLEX = os.environ.get("DUPLEX_BIN") or str(REPO / "target" / "debug" / "duplex")

# ---------------------------------------------------------------- reporting


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


class Report:
    """Counts and prints the checks of one suite."""

    def __init__(self, suite):
        self.suite = suite
        self.passed = self.failed = self.skipped = 0
        self.failures = []
        self.t0 = time.monotonic()

    async def check(self, name, coro_fn, timeout=30):
        """Runs `coro_fn()` within `timeout` s; PASS unless it raises."""
        start = time.monotonic()
        try:
            await asyncio.wait_for(coro_fn(), timeout)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self.failures.append(f"{name}: {why}")
            print(f"FAIL {name} ({(time.monotonic() - start) * 1000:.0f} ms): {why}", flush=True)
            return False
        self.passed += 1
        print(f"PASS {name} ({(time.monotonic() - start) * 1000:.0f} ms)", flush=True)
        return True

    def skip(self, name, why):
        self.skipped += 1
        print(f"SKIP {name}: {why}", flush=True)

    def abort(self, e):
        """The suite itself failed (crashed or ran out of time)."""
        self.failed += 1
        self.failures.append(f"suite aborted: {type(e).__name__}: {e}")
        print(f"FAIL {self.suite} suite aborted: {type(e).__name__}: {e}", flush=True)

    def finish(self):
        """Prints the failures and the closing line; returns the exit status."""
        if self.failures:
            print(f"\n{self.suite}: failures:")
            for f in self.failures:
                print(f"  - {f}")
        print(f"\n{self.suite}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped "
              f"({time.monotonic() - self.t0:.1f} s)", flush=True)
        return 1 if self.failed else 0


# ---------------------------------------------------------------- duplex serve

CHILDREN = set()


def kill_children(*_):
    for proc in list(CHILDREN):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def on_term(*_):
    kill_children()
    os._exit(143)


class Duplex:
    """`duplex serve --listen 127.0.0.1:0 ...`, port parsed from its log."""

    def __init__(self, proc):
        self.proc = proc
        self.log = []
        self.port = None

    @classmethod
    async def start(cls, *args, timeout=20):
        env = dict(os.environ, DUPLEX_LOG=os.environ.get("DUPLEX_LOG", "info"), NO_COLOR="1")
        proc = await asyncio.create_subprocess_exec(
            DUPLEX, "serve", "--listen", "127.0.0.1:0", *args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        CHILDREN.add(proc)
        self = cls(proc)
        found = asyncio.get_running_loop().create_future()

        async def pump():
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode("utf-8", "replace"))
                self.log.append(text)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
                if m and not found.done():
                    found.set_result(int(m.group(1)))
            if not found.done():
                found.set_exception(RuntimeError(
                    f"duplex serve {' '.join(args)} exited ({await proc.wait()}) before listening: "
                    f"{''.join(self.log).strip()[-1500:]}"))

        self._pump = asyncio.create_task(pump())
        try:
            self.port = await asyncio.wait_for(asyncio.shield(found), timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    def tail(self, n=15):
        return "".join(self.log[-n:]).strip()

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        CHILDREN.discard(self.proc)
        self._pump.cancel()


# ---------------------------------------------------------------- tokens


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(claims, secret):
    """A JWT with header {"alg": "HS256", "typ": "JWT"} and these claims."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


# ---------------------------------------------------------------- HTTP


def http_post(port, path, body, headers, timeout=5):
    """POST to 127.0.0.1:port (no proxy); returns (status, text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


async def post(port, path, body, headers, timeout=5):
    return await asyncio.to_thread(http_post, port, path, body, headers, timeout)


async def eventually(fn, what, timeout=5):
    """Polls the async predicate-with-message `fn` until it returns None."""
    deadline = time.monotonic() + timeout
    while True:
        problem = await fn()
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {problem}")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- main


def run_suite(report, main, banner, limit=150):
    """Prints `banner`, runs `main()` within `limit` s, kills what is left of
    duplex serve, prints the closing line and exits with the suite's status."""
    signal.signal(signal.SIGTERM, on_term)
    print(banner, flush=True)
    try:
        asyncio.run(asyncio.wait_for(main(), limit))
    except Exception as e:  # noqa: BLE001
        report.abort(e)
    kill_children()
    sys.exit(report.finish())
