#!/usr/bin/env python3
"""PyPI `centrifuge-python` (Centrifugo's Python client SDK, `import centrifuge`) against `duplex serve`.

The thing under test is the hub's Centrifugo client protocol v2 (JSON) at
/connection/websocket, driven by the real SDK (`centrifuge.Client`,
`Client.new_subscription`, event handlers, `get_token` callbacks). Every
SDK client records the frames it exchanges (its `_open_transport` is wrapped,
nothing else of the SDK is touched), so a failure can say what was sent and
answered. Server-side publishing goes through the hub's /api/<method> with
`X-API-Key`, as a backend would.

The suite starts two hubs, `duplex serve --listen 127.0.0.1:0 --config FILE`
(one with anonymous connections allowed), parses each port from the
`listening on http://127.0.0.1:PORT` log line and stops them at the end. The
recovery checks put a small asyncio TCP proxy between the SDK and the hub
that the test cuts (no close frame) and refuses for a while. Loopback only,
every wait bounded, waits are on events (a few short quiet windows assert
that something does NOT happen). One line per check; exits non-zero if any
check fails. Helpers shared with centrifugo_api.py live in duplex_py.py.
"""

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import version

import websockets
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ReplyError,
    StreamPosition,
    SubscriptionEventHandler,
    SubscriptionState,
)

import duplex_py
from duplex_py import Duplex, Report, expect, expect_eq, post

SUITE = "pysdk"
SECRET = "interop-hmac-secret-0123456789abcdef"
API_KEY = "interop-api-key"
STEP = 5  # seconds: bound of every single wait (reply, push, event)
QUIET = 0.7  # seconds: window in which something must NOT happen (no reconnect, no push)

CONFIG = f"""
[auth]
token_hmac_secret = "{SECRET}"
api_key = "{API_KEY}"
allow_anonymous = false

[hub]
ping_interval = "25s"
expired_close_delay = "1s"

[channels]
history_size = 0
history_ttl = "0s"
presence = false
join_leave = false
subscribe = "authenticated"
publish = "subscribers"
recovery = false

[namespaces.chat]
history_size = 100
history_ttl = "300s"
presence = true
join_leave = true
subscribe = "authenticated"
publish = "subscribers"
recovery = true

[namespaces.loud]
history_size = 0
history_ttl = "0s"
presence = true
join_leave = true
force_push_join_leave = true
subscribe = "authenticated"
publish = "subscribers"
recovery = false

[namespaces.tiny]
history_size = 2
history_ttl = "300s"
presence = false
join_leave = false
subscribe = "authenticated"
publish = "subscribers"
recovery = true

[namespaces.secret]
history_size = 0
history_ttl = "0s"
presence = true
join_leave = false
subscribe = "token"
publish = "subscribers"
recovery = false
"""

ANON_CONFIG = f"""
[auth]
token_hmac_secret = "{SECRET}"
allow_anonymous = true

[channels]
history_size = 0
presence = true
join_leave = false
subscribe = "anonymous"
publish = "subscribers"
recovery = false
"""

REPORT = Report(SUITE)

# What the two expiry checks' failure means, when they fail that way.
LEEWAY_NOTE = ("With hub.expired_close_delay (1 s here) below auth.token_leeway (5 s, the default) the hub "
               "accepts a token up to the leeway past its exp (answering ttl 1) but closes the connection as soon "
               "as exp + expired_close_delay has passed: a connect/close loop until the leeway runs out.")

# ---------------------------------------------------------------- tokens


def now():
    return int(time.time())


def conn_token(user, ttl=3600, info=None, secret=SECRET, exp=None):
    claims = {"sub": user, "exp": exp if exp is not None else now() + ttl, "iat": now()}
    if info is not None:
        claims["info"] = info
    return duplex_py.hs256(claims, secret)


def sub_token(user, channel, ttl=3600, info=None, exp=None):
    claims = {"sub": user, "channel": channel, "exp": exp if exp is not None else now() + ttl, "iat": now()}
    if info is not None:
        claims["info"] = info
    return duplex_py.hs256(claims, SECRET)


_seq = 0


def uniq(prefix):
    global _seq
    _seq += 1
    return f"{prefix}-{_seq}"


# ---------------------------------------------------------------- event logs


class Log:
    """Events (kind, ctx) in arrival order; until() waits for a condition on them."""

    def __init__(self, name):
        self.name = name
        self.items = []
        self._waiters = set()

    def add(self, kind, ctx):
        self.items.append((kind, ctx))
        for fut in list(self._waiters):
            if not fut.done():
                fut.set_result(None)

    def of(self, kind):
        return [ctx for k, ctx in self.items if k == kind]

    def summary(self, n=12):
        out = []
        for kind, ctx in self.items[-n:]:
            if kind == "publication":
                out.append(f"publication({ctx.pub.offset}: {json.dumps(ctx.pub.data)})")
            elif hasattr(ctx, "code"):
                out.append(f"{kind}({ctx.code}, {getattr(ctx, 'reason', None) or getattr(ctx, 'error', '')})")
            else:
                out.append(kind)
        return ", ".join(out) or "none"

    async def until(self, pred, what, timeout=STEP):
        """Returns pred(items) once truthy; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            v = pred(self.items)
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: {what} not seen within {timeout} s; events: {self.summary()}")
            fut = loop.create_future()
            self._waiters.add(fut)
            try:
                # Woken by every event; at least every 0.1 s for conditions on
                # things outside the log (a get_token call, a recorded frame).
                await asyncio.wait_for(fut, min(left, 0.1))
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(fut)

    async def nth(self, kind, n=1, timeout=STEP):
        """The n-th event of this kind (1-based)."""
        got = await self.until(lambda items: len([1 for k, _ in items if k == kind]) >= n,
                               f"{kind} #{n}", timeout)
        return self.of(kind)[n - 1] if got else None


class ClientEvents(ClientEventHandler):
    def __init__(self, log):
        self.log = log

    async def on_connecting(self, ctx):
        self.log.add("connecting", ctx)

    async def on_connected(self, ctx):
        self.log.add("connected", ctx)

    async def on_disconnected(self, ctx):
        self.log.add("disconnected", ctx)

    async def on_error(self, ctx):
        self.log.add("error", ctx)

    async def on_subscribed(self, ctx):
        self.log.add("server_subscribed", ctx)

    async def on_publication(self, ctx):
        self.log.add("server_publication", ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self, log):
        self.log = log

    async def on_subscribing(self, ctx):
        self.log.add("subscribing", ctx)

    async def on_subscribed(self, ctx):
        self.log.add("subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        self.log.add("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self.log.add("publication", ctx)

    async def on_join(self, ctx):
        self.log.add("join", ctx)

    async def on_leave(self, ctx):
        self.log.add("leave", ctx)

    async def on_error(self, ctx):
        self.log.add("error", ctx)


# ---------------------------------------------------------------- SDK clients with their frames recorded


class RecordedConnection:
    """The SDK's websockets connection; every frame sent or received is recorded."""

    def __init__(self, conn, frames):
        self._conn = conn
        self._frames = frames

    async def send(self, data):
        self._frames.append(("sent", data))
        return await self._conn.send(data)

    async def recv(self, *args, **kwargs):
        data = await self._conn.recv(*args, **kwargs)
        self._frames.append(("recv", data))
        return data

    def __getattr__(self, name):
        return getattr(self._conn, name)


class RecordingClient(Client):
    """centrifuge.Client whose transports are counted and recorded: the SDK opens
    each WebSocket in Client._open_transport (websockets.connect), the only
    method wrapped here."""

    transports = 0
    frames = None

    async def _open_transport(self):
        self.transports += 1
        conn = await super()._open_transport()
        return RecordedConnection(conn, self.frames)


class Peer:
    """One SDK client: events in .log, subscriptions' events in Sub.log, frames in .frames."""

    def __init__(self, name, url, **kwargs):
        self.name = name
        self.log = Log(name)
        self.frames = []
        kwargs.setdefault("timeout", STEP)
        kwargs.setdefault("min_reconnect_delay", 0.1)
        kwargs.setdefault("max_reconnect_delay", 0.5)
        self.client = RecordingClient(url, events=ClientEvents(self.log), proxy=None, name="interop-pysdk", **kwargs)
        self.client.frames = self.frames
        self.subs = {}

    @property
    def transports(self):
        return self.client.transports

    async def connect(self):
        """connect() and wait for `connected`; returns the ConnectedContext."""
        await self.client.connect()
        return await self.log.nth("connected")

    def sub(self, channel, **kwargs):
        s = Sub(self, channel, **kwargs)
        self.subs[channel] = s
        return s

    def messages(self, direction):
        out = []
        for d, data in self.frames:
            if d != direction:
                continue
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            for line in text.split("\n"):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        out.append({"_unparsed": line})
        return out

    def sent(self, method):
        return [m for m in self.messages("sent") if method in m]

    def reply_to(self, cmd):
        """The reply with the command's id (the SDK numbers commands per client, across its connections)."""
        replies = [m for m in self.messages("recv") if m.get("id") == cmd.get("id")]
        return replies[-1] if replies else None

    def exchange(self, method, pred=lambda c: True):
        """'sent X -> answered Y' for the last `method` command matching pred, for failure reports."""
        cmds = [c for c in self.sent(method) if pred(c[method])]
        if not cmds:
            return f"{self.name} sent no {method} command"
        cmd = cmds[-1]
        return f"{self.name} sent {json.dumps(cmd)[:400]} -> answered {json.dumps(self.reply_to(cmd))[:400]}"

    def wire(self, n=10):
        lines = []
        for d, data in self.frames[-n:]:
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            lines.append(f"{d} {text[:300]}")
        return "; ".join(lines) or "no frames"

    async def close(self):
        if self.client.state != ClientState.DISCONNECTED:
            await asyncio.wait_for(self.client.disconnect(), STEP)


class Sub:
    def __init__(self, peer, channel, **kwargs):
        self.peer = peer
        self.channel = channel
        self.log = Log(f"{peer.name}/{channel}")
        self.sub = peer.client.new_subscription(channel, events=SubEvents(self.log), **kwargs)

    async def subscribe(self):
        """subscribe() and wait for `subscribed`; returns the SubscribedContext."""
        n = len(self.log.of("subscribed"))
        await self.sub.subscribe()
        try:
            return await self.log.nth("subscribed", n + 1)
        except AssertionError as e:
            raise AssertionError(f"{e}; {self.peer.exchange('subscribe', lambda s: s['channel'] == self.channel)}") from None

    def pubs(self):
        return [ctx.pub for ctx in self.log.of("publication")]

    def datas(self):
        return [p.data for p in self.pubs()]

    async def pubs_at_least(self, n, timeout=STEP):
        await self.log.until(lambda items: len(self.log.of("publication")) >= n, f"{n} publications", timeout)
        return self.pubs()


# ---------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A loopback TCP proxy to 127.0.0.1:target. cut() aborts every connection
    through it (the SDK sees its TCP connection end, no WebSocket close frame);
    while blocked, new connections are aborted at once."""

    def __init__(self, target):
        self.target = target
        self.blocked = False
        self.accepted = 0
        self.refused = 0
        self.pairs = set()
        self.tasks = set()
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self):
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def _handle(self, reader, writer):
        if self.blocked:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.target), STEP)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self.pairs.add(pair)

        async def pipe(r, w):
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                self._drop(pair)

        for r, w in ((reader, up_writer), (up_reader, writer)):
            t = asyncio.create_task(pipe(r, w))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    def _drop(self, pair):
        for w in pair:
            w.transport.abort()
        self.pairs.discard(pair)

    def cut(self):
        for pair in list(self.pairs):
            self._drop(pair)

    async def close(self):
        self.blocked = True
        self.cut()
        self.server.close()
        await self.server.wait_closed()
        for t in list(self.tasks):
            t.cancel()


# ---------------------------------------------------------------- main


async def main():
    work = tempfile.mkdtemp(prefix="duplex-pysdk-")
    hub = anon = proxy = None
    cleanup = []
    peers = []  # SDK clients, disconnected after the check that made them
    later = []  # ... or after a later check

    def peer(name, url=None, **kwargs):
        p = Peer(name, url or hub_url, **kwargs)
        peers.append(p)
        return p

    async def check(name, fn, timeout=30):
        """A check; the SDK clients it made are disconnected after it."""
        before = len(peers)
        try:
            return await REPORT.check(name, fn, timeout)
        finally:
            for p in peers[before:]:
                try:
                    await p.close()
                except Exception:  # noqa: BLE001
                    pass

    async def api(method, body):
        status, text = await post(hub.port, f"/api/{method}", json.dumps(body).encode(), {"X-API-Key": API_KEY})
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        expect(status == 200 and isinstance(obj, dict) and "result" in obj and "error" not in obj,
               f"POST /api/{method} {json.dumps(body)} answered {status} {text[:300]!r}")
        return obj["result"]

    try:
        async def start():
            nonlocal hub, anon
            for name, text in (("pysdk.toml", CONFIG), ("anon.toml", ANON_CONFIG)):
                with open(os.path.join(work, name), "w") as f:
                    f.write(text)
            hub = await Duplex.start("--config", os.path.join(work, "pysdk.toml"))
            cleanup.append(hub.stop)
            anon = await Duplex.start("--config", os.path.join(work, "anon.toml"))
            cleanup.append(anon.stop)

        if not await REPORT.check("duplex serve starts twice (pysdk.toml, anon.toml with allow_anonymous) and logs its ports",
                                  start):
            return
        hub_url = f"ws://127.0.0.1:{hub.port}/connection/websocket"
        anon_url = f"ws://127.0.0.1:{anon.port}/connection/websocket"

        # ------------------------------------------------ 1. connect
        async def connect_token():
            a = peer("alice", token=conn_token("alice", info={"name": "Alice"}))
            ctx = await a.connect()
            expect(isinstance(ctx.client, str) and ctx.client, f"connected without a client id: {ctx!r}; {a.wire()}")
            expect_eq(a.client.state, ClientState.CONNECTED, "client state")
            expect_eq(a.client.client_id, ctx.client, "client id")
            cmd = a.sent("connect")[0]["connect"]
            expect_eq((cmd.get("name"), "token" in cmd), ("interop-pysdk", True), "what the SDK's connect carried")
            rep = a.reply_to(a.sent("connect")[0])
            expect(rep.get("connect", {}).get("pong") is True, f"connect reply without pong: true: {rep!r}")
            expect_eq(a.transports, 1, "WebSocket connections opened")

        await check("connect with an HS256 token (sub, exp, info): connected, client id, one WebSocket", connect_token)

        async def connect_anonymous():
            a = peer("anon1", url=anon_url)
            ctx = await a.connect()
            expect("token" not in a.sent("connect")[0]["connect"], "the SDK sent a token")
            expect(ctx.client, f"no client id: {ctx!r}")
            s = a.sub("lobby")
            await s.subscribe()
            await s.sub.publish({"hello": "anon"})
            await s.pubs_at_least(1)
            expect_eq(s.datas(), [{"hello": "anon"}], "publications seen by the anonymous client")
            pres = await s.sub.presence()
            expect_eq([(c.client, c.user) for c in pres.clients.values()], [(ctx.client, "")], "presence (user '')")

        await check("connect without a token on a hub with allow_anonymous: connected as user '', subscribe, publish, presence",
                    connect_anonymous)

        async def no_token_refused():
            a = peer("notoken")
            await a.client.connect()
            d = await a.log.nth("disconnected")
            expect_eq((d.code, d.reason), (101, "unauthorized"), f"disconnected event ({a.exchange('connect')})")
            await asyncio.sleep(QUIET)  # quiet window: no reconnect
            expect_eq(a.transports, 1, "WebSocket connections opened (no reconnect)")
            expect_eq(a.client.state, ClientState.DISCONNECTED, "client state")

        await check("connect without a token, anonymous not allowed: connect error 101 -> disconnected 101, no reconnect",
                    no_token_refused)

        async def bad_signature():
            a = peer("forger", token=conn_token("alice", secret="not-the-secret"))
            await a.client.connect()
            d = await a.log.nth("disconnected")
            expect_eq((d.code, d.reason), (3500, "invalid token"),
                      f"disconnected event (SDK client.py _listen: close code 3500..3999 -> no reconnect); {a.wire()}")
            expect(not a.log.of("connected"), f"connected with a forged token; {a.wire()}")
            await asyncio.sleep(QUIET)  # quiet window: no reconnect
            expect_eq(a.transports, 1, "WebSocket connections opened (no reconnect loop)")
            expect_eq(a.client.state, ClientState.DISCONNECTED, "client state")

        await check("connect with a badly signed token: disconnected 3500 'invalid token', one WebSocket, no reconnect loop",
                    bad_signature)

        async def expired_then_get_token():
            calls = []

            async def get_token():
                calls.append(time.monotonic())
                return conn_token("alice")

            a = peer("expired", token=conn_token("alice", exp=now() - 60), get_token=get_token)
            await a.client.connect()
            await a.log.nth("connected", timeout=STEP)
            errs = [e for e in a.log.of("error") if isinstance(e.error, ReplyError)]
            expect(errs and errs[0].error.code == 109, f"no connect error 109 before connecting; events {a.log.summary()}; "
                                                      f"{a.wire()}")
            expect_eq(len(calls), 1, "get_token calls")
            expect_eq(a.transports, 2, "WebSocket connections (refused one, then the one with the new token)")

        await check("connect with an expired token: error 109, the SDK calls get_token and connects with the new one",
                    expired_then_get_token)

        # ------------------------------------------------ 2. publish / subscribe
        async def pubsub():
            ch = uniq("chat:room")
            a = peer("alice", token=conn_token("alice", info={"name": "Alice"}))
            b = peer("bob", token=conn_token("bob", info={"name": "Bob"}))
            await a.connect()
            await b.connect()
            sa, sb = a.sub(ch), b.sub(ch)
            await sa.subscribe()
            await sb.subscribe()
            for n in range(1, 31):
                await sa.sub.publish({"n": n, "text": f"message {n}"})
            want = [{"n": n, "text": f"message {n}"} for n in range(1, 31)]
            for s in (sb, sa):
                pubs = await s.pubs_at_least(30)
                expect_eq([p.data for p in pubs], want, f"{s.log.name}: publications")
                expect_eq([p.offset for p in pubs], list(range(1, 31)), f"{s.log.name}: offsets")

        await check("two SDK clients subscribed to chat:room: 30 publications from one reach both in order, offsets 1..30",
                    pubsub)

        # ------------------------------------------------ 3. presence, join/leave
        async def presence():
            ch = uniq("chat:pres")
            a = peer("alice", token=conn_token("alice", info={"name": "Alice"}))
            b = peer("bob", token=conn_token("bob", info={"name": "Bob"}))
            b2 = peer("bob2", token=conn_token("bob", info={"name": "Bob", "device": 2}))
            ca, cb, cb2 = await a.connect(), await b.connect(), await b2.connect()
            sa = a.sub(ch)
            await sa.subscribe()
            await b.sub(ch).subscribe()
            await b2.sub(ch).subscribe()
            res = await sa.sub.presence()
            got = {k: (v.client, v.user, v.conn_info) for k, v in res.clients.items()}
            want = {ca.client: (ca.client, "alice", {"name": "Alice"}),
                    cb.client: (cb.client, "bob", {"name": "Bob"}),
                    cb2.client: (cb2.client, "bob", {"name": "Bob", "device": 2})}
            expect_eq(got, want, f"presence ({a.exchange('presence')})")
            stats = await sa.sub.presence_stats()
            expect_eq((stats.num_clients, stats.num_users), (3, 2), f"presence_stats ({a.exchange('presence_stats')})")

        await check("presence: 3 clients of 2 users with conn_info from the tokens' info; presence_stats 3 clients, 2 users",
                    presence)

        async def presence_off():
            ch = uniq("news")
            a = peer("alice", token=conn_token("alice"))
            await a.connect()
            s = a.sub(ch)
            await s.subscribe()
            for call in (s.sub.presence, s.sub.presence_stats):
                try:
                    r = await call()
                except ReplyError as e:
                    expect_eq(e.code, 108, f"error code of {call.__name__}")
                else:
                    raise AssertionError(f"{call.__name__} on {ch} (presence off) answered {r!r}")

        await check("presence / presence_stats where presence is off: ReplyError 108", presence_off)

        async def join_leave():
            ch = uniq("chat:jl")
            c = peer("carol", token=conn_token("carol"))
            a = peer("alice", token=conn_token("alice"))
            d = peer("dave", token=conn_token("dave", info={"name": "Dave"}))
            await c.connect()
            await a.connect()
            sc = c.sub(ch, join_leave=True)
            sa = a.sub(ch)
            await sc.subscribe()
            await sa.subscribe()
            cmd = c.sent("subscribe")[-1]["subscribe"]
            expect_eq(cmd.get("join_leave"), True, "carol's subscribe carries join_leave")
            expect("join_leave" not in a.sent("subscribe")[-1]["subscribe"], "alice's subscribe carries join_leave")
            cd = await d.connect()
            sd = d.sub(ch)
            await sd.subscribe()
            join = await sc.log.until(lambda it: [x for k, x in it if k == "join" and x.info.user == "dave"], "join of dave")
            info = join[0].info
            expect_eq((info.client, info.user, info.conn_info), (cd.client, "dave", {"name": "Dave"}), "join info")
            await sd.sub.unsubscribe()
            leave = await sc.log.until(lambda it: [x for k, x in it if k == "leave" and x.info.user == "dave"],
                                       "leave of dave (unsubscribe)")
            expect_eq((leave[0].info.client, leave[0].info.user), (cd.client, "dave"), "leave info")
            await sd.subscribe()
            await sc.log.until(lambda it: len([1 for k, x in it if k == "join" and x.info.user == "dave"]) == 2,
                               "second join of dave")
            await d.client.disconnect()
            await sc.log.until(lambda it: len([1 for k, x in it if k == "leave" and x.info.user == "dave"]) == 2,
                               "leave of dave (disconnect)")
            # Pushes reach a connection in order: once alice has this publication,
            # any join/leave meant for her would have arrived before it.
            await api("publish", {"channel": ch, "data": {"sentinel": 1}})
            await sa.pubs_at_least(1)
            expect_eq([k for k, _ in sa.log.items if k in ("join", "leave")], [],
                      "join/leave events of alice, who did not ask (join_leave false)")

        await check("join/leave (namespace join_leave): the subscriber with join_leave=True gets dave's join and leave "
                    "(unsubscribe, disconnect) with his info; one that did not ask gets none", join_leave)

        async def force_push():
            ch = uniq("loud:room")
            c = peer("carol", token=conn_token("carol"))
            d = peer("dave", token=conn_token("dave"))
            await c.connect()
            cd = await d.connect()
            sc = c.sub(ch)
            await sc.subscribe()
            sd = d.sub(ch)
            await sd.subscribe()
            join = await sc.log.until(lambda it: [x for k, x in it if k == "join" and x.info.user == "dave"], "join of dave")
            expect_eq(join[0].info.client, cd.client, "join client")
            await sd.sub.unsubscribe()
            await sc.log.until(lambda it: [x for k, x in it if k == "leave" and x.info.user == "dave"], "leave of dave")

        await check("force_push_join_leave namespace: a subscriber that did not ask still gets join and leave", force_push)

        # ------------------------------------------------ 4. history
        async def history():
            ch = uniq("chat:hist")
            a = peer("alice", token=conn_token("alice"))
            await a.connect()
            s = a.sub(ch)
            sub_ctx = await s.subscribe()
            for n in range(1, 11):
                await s.sub.publish({"n": n})
            await s.pubs_at_least(10)
            epoch = sub_ctx.stream_position.epoch if sub_ctx.stream_position else None
            expect(epoch, f"subscribed without a stream position (recoverable {sub_ctx.recoverable}); "
                          f"{a.exchange('subscribe')}")

            def ns(res):
                return [(p.offset, p.data["n"]) for p in res.publications]

            res = await s.sub.history()
            expect_eq((ns(res), res.offset, res.epoch), ([], 10, epoch), f"history() ({a.exchange('history')})")
            res = await s.sub.history(limit=3)
            expect_eq(ns(res), [(1, 1), (2, 2), (3, 3)], f"history(limit=3) ({a.exchange('history')})")
            expect_eq((res.offset, res.epoch), (10, epoch), "stream position with limit=3")
            res = await s.sub.history(limit=3, reverse=True)
            expect_eq(ns(res), [(10, 10), (9, 9), (8, 8)], f"history(limit=3, reverse=True) ({a.exchange('history')})")
            res = await s.sub.history(limit=-1)
            expect_eq(ns(res), [(n, n) for n in range(1, 11)], f"history(limit=-1) ({a.exchange('history')})")
            res = await s.sub.history(limit=2, since=StreamPosition(offset=6, epoch=epoch))
            expect_eq(ns(res), [(7, 7), (8, 8)], f"history(limit=2, since=6) ({a.exchange('history')})")
            try:
                r = await s.sub.history(limit=-1, since=StreamPosition(offset=1, epoch="wrong-epoch"))
            except ReplyError as e:
                expect_eq(e.code, 112, "error code for since in another epoch")
            else:
                raise AssertionError(f"history since another epoch answered {r!r}")

        await check("history: position only by default, limit 3, limit 3 reverse, all, since + limit; another epoch -> 112",
                    history)

        async def history_off():
            ch = uniq("news")
            a = peer("alice", token=conn_token("alice"))
            await a.connect()
            s = a.sub(ch)
            await s.subscribe()
            try:
                r = await s.sub.history(limit=5)
            except ReplyError as e:
                expect_eq(e.code, 108, "error code")
            else:
                raise AssertionError(f"history on {ch} (history off) answered {r!r}")

        await check("history where the namespace keeps none: ReplyError 108", history_off)

        # ------------------------------------------------ 5. recovery
        proxy = await TcpProxy(hub.port).start()
        cleanup.append(proxy.close)

        async def drop_and_publish(p, ch, ns):
            """Cuts p's TCP connection (no close frame), publishes ns through the API
            while the proxy refuses connections, then lets the SDK back in."""
            connecting = len(p.log.of("connecting"))
            proxy.blocked = True
            proxy.cut()
            await p.log.until(lambda it: len([1 for k, _ in it if k == "connecting"]) > connecting,
                              "connecting after the TCP drop")
            ctx = p.log.of("connecting")[connecting]
            expect_eq((ctx.code, ctx.reason), (1, "transport closed"),
                      "connecting event after the drop (the SDK's code for a transport closed without a close frame)")
            for n in ns:
                await api("publish", {"channel": ch, "data": {"n": n}})
            proxy.blocked = False

        async def recovery():
            ch = uniq("chat:recover")
            a = peer("alice", url=proxy.url(), token=conn_token("alice"))
            c1 = await a.connect()
            s = a.sub(ch)
            s1 = await s.subscribe()
            expect_eq((s1.recoverable, s1.was_recovering, s1.recovered), (True, False, False),
                      f"first subscribed (recoverable, was_recovering, recovered); {a.exchange('subscribe')}")
            for n in (1, 2, 3):
                await api("publish", {"channel": ch, "data": {"n": n}})
            await s.pubs_at_least(3)
            await drop_and_publish(a, ch, [4, 5, 6, 7, 8])
            s2 = await s.log.nth("subscribed", 2, timeout=10)
            c2 = await a.log.nth("connected", 2)
            expect(c2.client != c1.client, "same client id after the reconnect")
            resub = a.sent("subscribe")[-1]["subscribe"]
            expect(resub.get("recover") is True and resub.get("offset") == 3 and resub.get("epoch") == s1.stream_position.epoch,
                   f"the SDK's resubscribe was {resub!r} (expected recover, offset 3, epoch {s1.stream_position.epoch})")
            expect_eq((s2.was_recovering, s2.recovered), (True, True),
                      f"second subscribed (was_recovering, recovered); {a.exchange('subscribe')}")
            await s.pubs_at_least(8)
            await api("publish", {"channel": ch, "data": {"n": 9}})
            pubs = await s.pubs_at_least(9)
            expect_eq([(p.offset, p.data["n"]) for p in pubs], [(n, n) for n in range(1, 10)],
                      f"(offset, n) of every publication seen (expected the 5 missed once each, in order); "
                      f"{a.exchange('subscribe')}")

        await check("recovery after a TCP drop (no close frame): the SDK resubscribes with recover/offset/epoch, "
                    "gets exactly the 5 missed in order, subscribed ctx was_recovering and recovered true", recovery)

        async def recovery_impossible():
            ch = uniq("tiny:recover")
            a = peer("alice", url=proxy.url(), token=conn_token("alice"))
            await a.connect()
            s = a.sub(ch)
            s1 = await s.subscribe()
            expect_eq(s1.recoverable, True, f"first subscribed: recoverable; {a.exchange('subscribe')}")
            await api("publish", {"channel": ch, "data": {"n": 1}})
            await s.pubs_at_least(1)
            await drop_and_publish(a, ch, [2, 3, 4, 5, 6])
            s2 = await s.log.nth("subscribed", 2, timeout=10)
            expect_eq((s2.was_recovering, s2.recovered), (True, False),
                      f"second subscribed (was_recovering, recovered); {a.exchange('subscribe')}")
            await api("publish", {"channel": ch, "data": {"n": 7}})
            pubs = await s.pubs_at_least(2)
            expect_eq([p.data["n"] for p in pubs], [1, 7], f"publications seen (nothing replayed); {a.exchange('subscribe')}")

        await check("recovery impossible (tiny: history_size 2 < 5 missed): recovered false, was_recovering true, "
                    "nothing replayed", recovery_impossible)

        # ------------------------------------------------ 6. connection token refresh
        # Two clients with the same 3 s token, started together: `ctrl` without
        # get_token, which the hub must drop (3005 once exp + hub.expired_close_delay
        # = 1 s has passed), and `ref` with get_token, which must stay connected
        # past that moment.
        state = {}

        async def expiry_enforced():
            exp = now() + 3
            calls = []

            async def get_token():
                calls.append(time.time())
                return conn_token("erin", ttl=3600)

            ctrl = Peer("ctrl", hub_url, token=conn_token("erin", exp=exp))
            ref = Peer("ref", hub_url, token=conn_token("erin", exp=exp), get_token=get_token)
            later.append(ref)  # closed after the next check
            state.update(ref=ref, calls=calls, exp=exp)
            try:
                await ctrl.connect()
                state["ref_connected"] = await ref.connect()
                rep = ctrl.reply_to(ctrl.sent("connect")[0])["connect"]
                expect(rep.get("expires") is True and 0 < rep.get("ttl", 0) <= 3,
                       f"connect reply for a token expiring in 3 s: {rep!r}")
                closed = await ctrl.log.until(lambda it: [x for k, x in it if k == "connecting" and x.code == 3005],
                                              "connecting(3005) after the token expired", timeout=10)
                state["dropped_at"] = time.time()
                expect_eq(closed[0].reason, "connection expired", "reason")
                # The SDK reconnects (3005 < 3500) with the same token, which has
                # expired: the contract says connect -> error 109; without get_token
                # the SDK then stops (client.py _connection_attempt: "token expired
                # but no get_token function set" -> disconnected UNAUTHORIZED, code 1).
                d = await ctrl.log.nth("disconnected", timeout=10)
                answers = []
                for cmd in ctrl.sent("connect")[1:]:
                    r = ctrl.reply_to(cmd) or {}
                    answers.append(f"error {r['error'].get('code')}" if "error" in r
                                   else f"connected ttl {r.get('connect', {}).get('ttl')}" if "connect" in r else "none")
                closes = len([x for x in ctrl.log.of("connecting") if x.code == 3005])
                accepted = len([x for x in answers if x.startswith("connected")])
                expect(answers and all(x == "error 109" for x in answers),
                       f"after the 3005 close the SDK (client.py _listen: close codes 3000-3499 reconnect) reconnected "
                       f"{len(answers)} times with the same token; the hub accepted it {accepted} times "
                       f"({', '.join(answers[:2])}, ...) and closed each of those connections with 3005 again "
                       f"({closes} connecting(3005) events in all) until it answered {answers[-1]!r}; the SDK "
                       f"stopped {time.time() - exp:.1f} s after exp. {LEEWAY_NOTE}")
                expect_eq(len(ctrl.log.of("connected")), 1, "connected events")
                expect_eq((d.code, d.reason), (1, "unauthorized"), "disconnected event")
            finally:
                await ctrl.close()

        await check("a 3 s connection token without get_token: the hub closes 3005 'connection expired'; "
                    "the SDK's reconnect with that token gets 109, and it stops unauthorized", expiry_enforced)

        async def refresh():
            ref = state.get("ref")
            expect(ref is not None, "no client from the previous check")
            await ref.log.until(lambda it: state["calls"], "get_token call", timeout=10)
            cmds = ref.sent("refresh")
            expect(cmds, f"get_token called but no refresh command; {ref.wire()}")
            await ref.log.until(lambda it: ref.reply_to(cmds[0]) is not None, "refresh reply")
            rep = ref.reply_to(cmds[0])
            expect("refresh" in rep and "error" not in rep, f"refresh answered {rep!r}")
            expect(rep["refresh"].get("ttl", 0) > 3000, f"refresh reply ttl for a 1 h token: {rep!r}")
            # Past the moment the hub dropped the client without get_token (or,
            # if it did not, past exp + token_leeway 5 s + expired_close_delay 1 s), plus 1 s.
            until = state.get("dropped_at") or (state["exp"] + 6)
            wait = until + 1.0 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the condition here is time itself: past the expiry
            expect_eq([k for k, _ in ref.log.items if k in ("connecting", "disconnected")][1:], [],
                      f"connection events after the first connecting; {ref.wire()}")
            expect_eq((ref.client.state, ref.transports), (ClientState.CONNECTED, 1), "state and WebSockets opened")
            s = ref.sub(uniq("chat:refresh"))
            await s.subscribe()
            await api("publish", {"channel": s.channel, "data": "after expiry"})
            await s.pubs_at_least(1)
            expect_eq(ref.client.client_id, state["ref_connected"].client, "client id (same connection)")
            expect_eq(len(state["calls"]), 1, "get_token calls")

        await check("connection token refresh: a 3 s token + get_token; the SDK sends refresh, the hub accepts it, "
                    "the client stays on the same connection past the expiry and still gets publications", refresh)
        for p in later:
            await p.close()
        later.clear()

        # ------------------------------------------------ 7. token-protected namespace
        async def secret_no_token():
            ch = uniq("secret:vault")
            a = peer("alice", token=conn_token("alice"))
            await a.connect()
            s = a.sub(ch)
            await s.sub.subscribe()
            u = await s.log.nth("unsubscribed")
            expect_eq(u.code, 103, f"unsubscribed code; {a.exchange('subscribe')}")
            expect(not s.log.of("subscribed"), "subscribed anyway")
            expect_eq(s.sub.state, SubscriptionState.UNSUBSCRIBED, "subscription state")
            expect("token" not in a.sent("subscribe")[-1]["subscribe"], "the SDK sent a token")

        await check("subscribe = 'token' namespace without a subscription token: unsubscribed with code 103", secret_no_token)

        async def secret_with_token():
            ch = uniq("secret:vault")
            asked = []

            async def get_token(channel):
                asked.append(channel)
                return sub_token("alice", channel, info={"role": "reader"})

            a = peer("alice", token=conn_token("alice", info={"name": "Alice"}))
            ca = await a.connect()
            s = a.sub(ch, get_token=get_token)
            await s.subscribe()
            expect_eq(asked, [ch], "get_token calls (channel)")
            expect(a.sent("subscribe")[-1]["subscribe"].get("token"), "subscribe without the token")
            await api("publish", {"channel": ch, "data": {"secret": 1}})
            await s.pubs_at_least(1)
            expect_eq(s.datas(), [{"secret": 1}], "publications")
            pres = await s.sub.presence()
            got = [(c.client, c.user, c.conn_info, c.chan_info) for c in pres.clients.values()]
            expect_eq(got, [(ca.client, "alice", {"name": "Alice"}, {"role": "reader"})],
                      f"presence with chan_info from the subscription token ({a.exchange('presence')})")

        await check("subscribe = 'token' namespace with Subscription get_token: subscribed, publications, "
                    "chan_info from the token in presence", secret_with_token)

        async def secret_other_user():
            ch = uniq("secret:vault")

            async def get_token(channel):
                return sub_token("bob", channel)

            a = peer("alice", token=conn_token("alice"))
            await a.connect()
            s = a.sub(ch, get_token=get_token)
            await s.sub.subscribe()
            u = await s.log.nth("unsubscribed")
            expect_eq(u.code, 103, f"unsubscribed code; {a.exchange('subscribe')}")

            async def wrong_channel(channel):
                return sub_token("alice", channel + "-other")

            s2 = a.sub(uniq("secret:vault"), get_token=wrong_channel)
            await s2.sub.subscribe()
            u = await s2.log.nth("unsubscribed")
            expect_eq(u.code, 103, f"unsubscribed code (token for another channel); {a.exchange('subscribe')}")

        await check("subscribe = 'token' namespace with another user's or another channel's token: unsubscribed 103",
                    secret_other_user)

        # Subscription tokens expiring in 3 s, two clients started together:
        # `ctrl2` without get_token on its subscription, which the hub must drop
        # (3006 "subscription expired"), and alice with get_token, which must stay
        # subscribed past that moment.
        sstate = {}

        async def sub_expiry_enforced():
            exp = now() + 3
            calls = []

            async def get_token(channel):
                calls.append(time.time())
                return sub_token("alice", channel, exp=exp if len(calls) == 1 else None)

            ctrl = Peer("ctrl2", hub_url, token=conn_token("frank"))
            ref = Peer("alice", hub_url, token=conn_token("alice"))
            later.append(ref)  # closed after the next check
            try:
                await ctrl.connect()
                await ref.connect()
                sr = ref.sub(uniq("secret:vault"), get_token=get_token)
                sstate.update(ref=ref, sub=sr, calls=calls, exp=exp)
                await sr.subscribe()
                ch = uniq("secret:vault")
                sc = ctrl.sub(ch, token=sub_token("frank", ch, exp=exp))
                await sc.subscribe()
                rep = ctrl.reply_to(ctrl.sent("subscribe")[-1])["subscribe"]
                expect(rep.get("expires") is True and 0 < rep.get("ttl", 0) <= 3,
                       f"subscribe reply for a subscription token expiring in 3 s: {rep!r}")
                closed = await ctrl.log.until(lambda it: [x for k, x in it if k == "connecting" and x.code == 3006],
                                              "connecting(3006) after the subscription token expired", timeout=10)
                sstate["dropped_at"] = time.time()
                expect_eq(closed[0].reason, "subscription expired", "reason")
                # The SDK reconnects and resubscribes with the same expired token:
                # 109, and without get_token the subscription stops (client.py
                # _subscribe_steps: "subscription token expired but no get_token
                # function set" -> unsubscribed UNAUTHORIZED, code 1).
                u = await sc.log.nth("unsubscribed", timeout=10)
                answers = []
                for cmd in [c for c in ctrl.sent("subscribe") if c["subscribe"]["channel"] == sc.channel][1:]:
                    r = ctrl.reply_to(cmd) or {}
                    answers.append(f"error {r['error'].get('code')}" if "error" in r
                                   else f"subscribed ttl {r.get('subscribe', {}).get('ttl')}" if "subscribe" in r else "none")
                closes = len([x for x in ctrl.log.of("connecting") if x.code == 3006])
                accepted = len([x for x in answers if x.startswith("subscribed")])
                expect(answers and all(x == "error 109" for x in answers),
                       f"after the 3006 close the SDK reconnected and resubscribed {len(answers)} times with the same "
                       f"subscription token; the hub accepted it {accepted} times ({', '.join(answers[:2])}, ...) and "
                       f"closed each of those connections with 3006 again ({closes} connecting(3006) events in all) "
                       f"until it answered {answers[-1]!r}; the subscription stopped {time.time() - exp:.1f} s after exp. "
                       f"{LEEWAY_NOTE}")
                expect_eq((u.code, u.reason), (1, "unauthorized"), "unsubscribed event")
            finally:
                await ctrl.close()

        await check("a 3 s subscription token without get_token: the hub closes 3006 'subscription expired'; "
                    "the SDK's resubscribe with that token gets 109, and the subscription stops unauthorized",
                    sub_expiry_enforced)

        async def sub_refresh():
            a, s, calls, exp = sstate["ref"], sstate["sub"], sstate["calls"], sstate["exp"]
            rep = a.reply_to(a.sent("subscribe")[-1])["subscribe"]
            expect(rep.get("expires") is True and 0 < rep.get("ttl", 0) <= 3,
                   f"subscribe reply for a subscription token expiring in 3 s: {rep!r}")
            await s.log.until(lambda it: len(calls) >= 2, "get_token call for the refresh", timeout=10)
            await s.log.until(lambda it: a.sent("sub_refresh") and a.reply_to(a.sent("sub_refresh")[0]), "sub_refresh reply")
            rep = a.reply_to(a.sent("sub_refresh")[0])
            expect("sub_refresh" in rep and "error" not in rep, f"sub_refresh answered {rep!r}")
            until = sstate.get("dropped_at") or (exp + 6)
            wait = until + 1.0 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the condition here is time itself: past the expiry
            expect_eq([k for k, _ in s.log.items if k in ("subscribing", "unsubscribed")][1:], [],
                      f"subscription events after the first subscribing; {a.wire()}")
            expect_eq([k for k, _ in a.log.items if k in ("connecting", "disconnected")][1:], [], "connection events")
            await api("publish", {"channel": s.channel, "data": "after expiry"})
            await s.pubs_at_least(1)
            expect_eq(len(calls), 2, "get_token calls")

        await check("subscription token refresh: a 3 s subscription token + get_token; the SDK sends sub_refresh, "
                    "the hub accepts it, still subscribed past the expiry", sub_refresh)
        for p in later:
            await p.close()
        later.clear()

        async def still_alive():
            expect(hub.proc.returncode is None and anon.proc.returncode is None, "a duplex serve exited")
            res = await api("info", {})
            expect(res.get("nodes"), f"info: {res!r}")

        await check("after all of this both hubs still run and the API answers", still_alive)
    finally:
        for p in peers + later:
            try:
                await p.close()
            except Exception:  # noqa: BLE001
                pass
        for stop in reversed(cleanup):
            try:
                await asyncio.wait_for(stop(), 5)
            except Exception:  # noqa: BLE001
                pass
        if REPORT.failed and hub is not None:
            print(f"\n{SUITE}: last lines of the duplex log:\n{hub.tail()}", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    duplex_py.run_suite(REPORT, main, f"python {sys.version.split()[0]}, centrifuge-python {version('centrifuge-python')}, "
                        f"websockets {websockets.__version__}", limit=100)
