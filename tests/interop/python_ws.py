#!/usr/bin/env python3
"""Python `websockets` (asyncio API) against duplex, both roles.

(a) websockets as a client of `duplex serve` over ws:// and wss:// (trusting
    only the server's certificate), compression on;
(b) websockets as an echo server over ws:// and wss://, compression on, driven
    by the `duplex connect` CLI.

One line per check; exits non-zero if any check fails.
"""

import asyncio
import base64
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DUPLEX = os.environ.get("DUPLEX_BIN") or str(REPO / "target" / "debug" / "duplex")
MAX = 64 << 20

TEXTS = ["hello", "héllo wörld ß", "👋🏽🎉 emoji", "漢字かなカナ한국어", ""]
LINES = ["hello, duplex", "héllo wörld ß ∑", "👋🏽🎉 emoji line", "漢字かなカナ한국어 中文"]
BINARY_REPLY = bytes([0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF, 0x0A, 0x0D, 0x41])

# ---------------------------------------------------------------- reporting

passed = failed = 0
failures = []
T0 = time.monotonic()


async def check(name, coro_fn, timeout=60):
    global passed, failed
    start = time.monotonic()
    try:
        await asyncio.wait_for(coro_fn(), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failed += 1
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        failures.append(f"{name}: {why}")
        print(f"FAIL {name} ({(time.monotonic() - start) * 1000:.0f} ms): {why}", flush=True)
        return False
    passed += 1
    print(f"PASS {name} ({(time.monotonic() - start) * 1000:.0f} ms)", flush=True)
    return True


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def pseudo_random(n, seed=1):
    """Incompressible, reproducible bytes."""
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------- processes

CHILDREN = set()  # duplex processes still running, killed if this one is stopped


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

    def __init__(self, proc, log):
        self.proc = proc
        self.log = log
        self.port = None
        self.scheme = None

    @property
    def ws_url(self):
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/echo"

    @classmethod
    async def start(cls, *args, timeout=20):
        env = dict(os.environ, DUPLEX_LOG=os.environ.get("DUPLEX_LOG", "info"), NO_COLOR="1")
        proc = await asyncio.create_subprocess_exec(
            DUPLEX, "serve", "--listen", "127.0.0.1:0", *args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        CHILDREN.add(proc)
        self = cls(proc, [])
        found = asyncio.get_running_loop().create_future()

        async def pump():
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode("utf-8", "replace"))
                self.log.append(text)
                m = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", text)
                if m and not found.done():
                    found.set_result((m.group(1), int(m.group(2))))
            if not found.done():
                found.set_exception(RuntimeError(
                    f"duplex serve {' '.join(args)} exited ({await proc.wait()}) before listening: {''.join(self.log).strip()}"))

        self._pump = asyncio.create_task(pump())
        try:
            self.scheme, self.port = await asyncio.wait_for(asyncio.shield(found), timeout)
        except BaseException:
            await self.stop()
            raise
        return self

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


async def run_connect(args, lines, timeout=20):
    """Runs `duplex connect ARGS`, feeding LINES on stdin then EOF."""
    proc = await asyncio.create_subprocess_exec(
        DUPLEX, "connect", *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, NO_COLOR="1"),
    )
    CHILDREN.add(proc)
    data = "".join(line + "\n" for line in lines).encode()
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"duplex connect {' '.join(args)} still running after {timeout} s")
    finally:
        CHILDREN.discard(proc)
    return proc.returncode, out, err.decode("utf-8", "replace")


def closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_cert(d):
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
         "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return cert, key


def make_ca_and_leaf(d):
    """A CA certificate and a leaf (CA:FALSE) for localhost/127.0.0.1 signed by it."""
    p = lambda n: os.path.join(d, n)  # noqa: E731
    run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Duplex Test CA",
        "-days", "2", "-keyout", p("ca.key"), "-out", p("ca.pem"))
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", p("leaf.key"), "-out", p("leaf.csr"))
    with open(p("leaf.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", p("leaf.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", p("leaf.ext"), "-out", p("leaf.pem"))
    return p("ca.pem"), p("leaf.pem"), p("leaf.key")


# ---------------------------------------------------------------- (a) client


async def client_echo(url, ssl_ctx=None):
    async with connect(url, ssl=ssl_ctx, compression="deflate", max_size=MAX, proxy=None,
                       open_timeout=10, close_timeout=5) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        expect("permessage-deflate" in ext, f"Sec-WebSocket-Extensions in the 101 = {ext!r}")
        for t in TEXTS:
            await ws.send(t)
            got = await ws.recv()
            expect_eq(type(got), str, f"type of the echo of {t!r}")
            expect_eq(got, t, "text echo")
        for n in [0, 1, 125, 126, 65536, 1 << 20]:
            b = pseudo_random(n, n)
            await ws.send(b)
            got = await ws.recv()
            expect_eq(type(got), bytes, f"type of the echo of {n} B")
            expect(got == b, f"binary echo of {n} B differs (got {len(got)} B)")
        z = b"duplex " * (1 << 17)
        await ws.send(z)
        expect((await ws.recv()) == z, "compressible ~1 MiB echo differs")
        await ws.close(1000, "bye")
    expect(ws.protocol.close_rcvd is not None, "no close frame received")
    expect_eq(ws.protocol.close_rcvd.code, 1000, "close code received from the server")
    expect_eq(ws.protocol.close_sent.code, 1000, "close code sent")


# ---------------------------------------------------------------- (b) server


def select_chat(_conn, offered):
    return "chat.v1" if "chat.v1" in offered else None


class EchoServer:
    """websockets echo server. 'binary please' → BINARY_REPLY, 'close 4001' →
    close 4001, anything else echoed. Each connection is recorded."""

    def __init__(self):
        self.seen = []

    async def handler(self, ws):
        rec = {
            "request": ws.request.headers,
            "response": ws.response.headers,
            "subprotocol": ws.subprotocol,
            "messages": [],
            "close": None,
            "done": asyncio.Event(),
        }
        self.seen.append(rec)
        try:
            async for msg in ws:
                rec["messages"].append(msg)
                if msg == "binary please":
                    await ws.send(BINARY_REPLY)
                elif msg == "close 4001":
                    await ws.close(4001, "as asked")
                else:
                    await ws.send(msg)
        except ConnectionClosed:
            pass  # recorded below; the client's exit code is what is checked
        finally:
            rec["close"] = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
            rec["done"].set()

    async def start(self, ssl_ctx=None):
        # A select_subprotocol callback rather than subprotocols=[...]: with the
        # latter, websockets answers 400 to a client that offers none.
        self.server = await serve(self.handler, "127.0.0.1", 0, ssl=ssl_ctx, compression="deflate",
                                  select_subprotocol=select_chat, max_size=MAX)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'wss' if ssl_ctx else 'ws'}://127.0.0.1:{port}/"
        return self

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


def describe(code, out, err):
    return f"exit {code}, stdout={out[:300]!r}, stderr={err[:500]!r}"


async def connect_lines(srv, args, lines, want_code=0):
    code, out, err = await run_connect([*args, srv.url], lines)
    expect_eq(code, want_code, f"duplex connect exit code ({describe(code, out, err)})")
    return out


async def line_check(srv, args):
    before = len(srv.seen)
    out = await connect_lines(srv, args, LINES)
    expect_eq(out.decode("utf-8", "replace").splitlines(), LINES, "stdout lines")
    expect(len(srv.seen) > before, "the server saw no connection")
    rec = srv.seen[before]
    await asyncio.wait_for(rec["done"].wait(), 5)
    expect_eq(rec["close"], 1000, "close code seen by the server")
    ext = rec["response"].get("Sec-WebSocket-Extensions", "")
    expect("permessage-deflate" in ext, f"negotiated extensions = {ext!r} (offered {rec['request'].get('Sec-WebSocket-Extensions')!r})")
    expect_eq(rec["messages"], LINES, "messages received by the server")


# ---------------------------------------------------------------- main


async def main():
    work = tempfile.mkdtemp(prefix="duplex-python-")
    cert, key = make_cert(work)
    cleanup = []
    try:
        # ------------------------------------------------ (a) websockets as client
        plain = tls = None

        async def start_plain():
            nonlocal plain
            plain = await Duplex.start()
            cleanup.append(plain.stop)

        await check("duplex serve starts (ws://)", start_plain)
        if plain:
            await check("websockets client → duplex serve ws://: deflate negotiated, text/binary echo byte-exact, close 1000",
                        lambda: client_echo(plain.ws_url))

            async def foreign_origin():
                try:
                    async with connect(plain.ws_url, origin="http://evil.example", proxy=None, open_timeout=10):
                        pass
                except InvalidStatus as e:
                    expect_eq(e.response.status_code, 403, "status")
                    return
                raise AssertionError("a foreign Origin was accepted")

            await check("websockets client with a foreign Origin is refused with 403 (default policy)", foreign_origin)

        async def start_tls():
            nonlocal tls
            tls = await Duplex.start("--tls-cert", cert, "--tls-key", key)
            cleanup.append(tls.stop)
            expect_eq(tls.scheme, "https", "scheme in the log")

        await check("duplex serve --tls-cert c.pem --tls-key k.pem starts (https)", start_tls)
        if tls:
            ctx = ssl.create_default_context(cafile=cert)  # trusts only this certificate
            await check("websockets client → duplex serve wss:// (trusting only its certificate): deflate, echo, close 1000",
                        lambda: client_echo(tls.ws_url, ctx))

            async def untrusted():
                try:
                    async with connect(tls.ws_url, ssl=ssl.create_default_context(), proxy=None, open_timeout=10):
                        pass
                except ssl.SSLCertVerificationError:
                    return
                raise AssertionError("an untrusted certificate was accepted")

            await check("websockets client with the default trust store refuses the self-signed certificate", untrusted)

        async def subprotocol():
            s = await Duplex.start("--subprotocol", "chat.v1")
            cleanup.append(s.stop)
            async with connect(s.ws_url, subprotocols=["x.unknown", "chat.v1"], proxy=None, open_timeout=10) as ws:
                expect_eq(ws.subprotocol, "chat.v1", "negotiated subprotocol")
                await ws.send("ok")
                expect_eq(await ws.recv(), "ok", "echo")

        await check("websockets client offering x.unknown, chat.v1 to duplex serve --subprotocol chat.v1 gets chat.v1", subprotocol)

        # ------------------------------------------------ (b) websockets as server
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        ws_srv = await EchoServer().start()
        wss_srv = await EchoServer().start(server_ctx)
        cleanup += [ws_srv.stop, wss_srv.stop]

        await check("duplex connect → websockets server ws://: lines echoed in order, exit 0, server saw 1000, deflate",
                    lambda: line_check(ws_srv, []))
        await check("duplex connect --ca c.pem → websockets server wss://: lines echoed, exit 0, server saw 1000, deflate",
                    lambda: line_check(wss_srv, ["--ca", cert]))
        ca, leaf, leaf_key = make_ca_and_leaf(work)
        leaf_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf_ctx.load_cert_chain(leaf, leaf_key)
        ca_srv = await EchoServer().start(leaf_ctx)
        cleanup.append(ca_srv.stop)
        await check("duplex connect --ca ca.pem → websockets server wss:// with a leaf certificate signed by that CA",
                    lambda: line_check(ca_srv, ["--ca", ca]))
        await check("duplex connect --insecure → websockets server wss://: lines echoed, exit 0, server saw 1000",
                    lambda: line_check(wss_srv, ["--insecure"]))

        async def binary_b64():
            out = await connect_lines(ws_srv, [], ["binary please"])
            expect_eq(out.decode().splitlines(), [base64.b64encode(BINARY_REPLY).decode()], "stdout lines")

        await check("duplex connect: binary message from the server printed as base64", binary_b64)

        async def binary_b64_tls():
            out = await connect_lines(wss_srv, ["--insecure"], ["binary please", "after"])
            expect_eq(out.decode().splitlines(), [base64.b64encode(BINARY_REPLY).decode(), "after"], "stdout lines")

        await check("duplex connect --insecure over wss://: base64 binary line then text, in order", binary_b64_tls)

        async def subprotocol_cli():
            before = len(ws_srv.seen)
            out = await connect_lines(ws_srv, ["--subprotocol", "x.unknown", "--subprotocol", "chat.v1"], ["hi"])
            expect_eq(out.decode().splitlines(), ["hi"], "stdout lines")
            expect_eq(ws_srv.seen[before]["subprotocol"], "chat.v1", "subprotocol selected by the server")

        await check("duplex connect --subprotocol x.unknown --subprotocol chat.v1: server selects chat.v1", subprotocol_cli)

        async def close_4001():
            await connect_lines(ws_srv, [], ["close 4001"], want_code=3)

        await check("duplex connect: server closes with 4001 → exit 3", close_4001)
    finally:
        for stop in reversed(cleanup):
            try:
                await stop()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import websockets

    signal.signal(signal.SIGTERM, on_term)
    print(f"python {sys.version.split()[0]}, websockets {websockets.__version__}", flush=True)
    try:
        asyncio.run(asyncio.wait_for(main(), 150))
    except Exception as e:  # noqa: BLE001
        failed += 1
        failures.append(f"suite aborted: {type(e).__name__}: {e}")
        print(f"FAIL python websockets suite aborted: {type(e).__name__}: {e}", flush=True)
    kill_children()
    if failures:
        print("\npython websockets: failures:")
        for f in failures:
            print(f"  - {f}")
    print(f"\npython websockets: {passed} passed, {failed} failed, 0 skipped ({time.monotonic() - T0:.1f} s)")
    sys.exit(1 if failed else 0)
