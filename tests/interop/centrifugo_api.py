#!/usr/bin/env python3
"""PyPI `cent` (Centrifugo's Python server-API client) against `duplex serve`.

The thing under test is the hub's HTTP server API at /api/<method>, driven by
the real `cent` 5.x package (sync `Client` over requests, `AsyncClient` over
aiohttp). WebSocket delivery is observed by small raw clients speaking the
Centrifugo client protocol v2 (JSON) over Python `websockets`; they only
watch what the API calls cause (publications, unsubscribe pushes, close codes).

The suite starts `duplex serve --listen 127.0.0.1:0 --config api.toml` itself,
parses the port from the `listening on http://127.0.0.1:PORT` log line, and
stops it at the end. Loopback only, every wait bounded. One line per check;
exits non-zero if any check fails. Reporting, starting duplex serve, JWTs and
plain POSTs come from duplex_py.py (shared with centrifuge_python.py).
"""

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time

import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cent import (
    AsyncClient,
    BroadcastRequest,
    CentApiResponseError,
    CentDecodeError,
    CentError,
    CentRequest,
    CentTransportError,
    CentUnauthorizedError,
    ChannelsRequest,
    Client,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    PublishResult,
    StreamPosition,
    UnsubscribeRequest,
)

import duplex_py
from duplex_py import Duplex, Report, eventually, expect, expect_eq, post

SUITE = "api"

SECRET = "interop-hmac-secret-0123456789abcdef"
API_KEY = "interop-api-key"
STEP = 5  # seconds: bound of every single wait (HTTP call, push, close)

CONFIG = f"""
[auth]
token_hmac_secret = "{SECRET}"
api_key = "{API_KEY}"
allow_anonymous = false

[hub]
ping_interval = "25s"

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
"""

# ---------------------------------------------------------------- reporting, duplex serve (duplex_py)

REPORT = Report(SUITE)
check = REPORT.check
skip = REPORT.skip

# ---------------------------------------------------------------- tokens


def hs256(claims, secret=SECRET):
    return duplex_py.hs256(claims, secret)


def conn_token(user, info=None):
    claims = {"sub": user, "exp": int(time.time()) + 3600, "iat": int(time.time())}
    if info is not None:
        claims["info"] = info
    return hs256(claims)


# ---------------------------------------------------------------- observer
# A raw Centrifugo client protocol v2 (JSON) client, used only to watch what
# the server API does: command replies by id, pushes collected, pings ({})
# answered, close code/reason recorded. Frames may hold several
# newline-separated JSON messages.


class Observer:
    def __init__(self, name):
        self.name = name
        self.ws = None
        self.next_id = 0
        self.pending = {}
        self.pushes = []
        self.event = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()
        self.client_id = None

    @classmethod
    async def open(cls, port, user, info=None):
        self = cls(user)
        self.ws = await connect(f"ws://127.0.0.1:{port}/connection/websocket", proxy=None,
                                open_timeout=STEP, close_timeout=2, max_size=16 << 20)
        self.reader = asyncio.create_task(self._read())
        res = await self.call("connect", {"token": conn_token(user, info), "name": "interop-observer"})
        expect(isinstance(res.get("client"), str) and res["client"], f"{user}: connect reply without client id: {res!r}")
        self.client_id = res["client"]
        return self

    async def _read(self):
        try:
            async for msg in self.ws:
                if isinstance(msg, bytes):
                    msg = msg.decode("utf-8", "replace")
                for line in msg.split("\n"):
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    if obj == {}:
                        await self.ws.send("{}")  # ping -> pong
                    elif obj.get("id"):
                        fut = self.pending.pop(obj["id"], None)
                        if fut and not fut.done():
                            fut.set_result(obj)
                    elif "push" in obj:
                        self.pushes.append(obj["push"])
                        self.event.set()
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - a broken frame ends the observer
            self.pushes.append({"_reader_error": repr(e)})
        finally:
            self.closed.set_result((self.ws.close_code, self.ws.close_reason))
            self.event.set()
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(AssertionError(f"{self.name}: connection closed {self.closed.result()}"))

    async def call(self, method, params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, method: params}))
        try:
            reply = await asyncio.wait_for(fut, STEP)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: no reply to {method} within {STEP} s") from None
        if "error" in reply:
            raise AssertionError(f"{self.name}: {method} {params!r} answered {reply!r}")
        return reply.get(method, {})

    async def subscribe(self, *channels):
        for ch in channels:
            await self.call("subscribe", {"channel": ch})

    async def wait_push(self, pred, what, timeout=STEP):
        deadline = time.monotonic() + timeout
        while True:
            for i, p in enumerate(self.pushes):
                if pred(p):
                    del self.pushes[i]
                    return p
            if self.closed.done():
                raise AssertionError(f"{self.name}: connection closed {self.closed.result()} while waiting for {what}")
            self.event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s; last pushes: {self.pushes[-4:]!r}")
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_pub(self, channel, data, timeout=STEP):
        push = await self.wait_push(
            lambda p: p.get("channel") == channel and "pub" in p and p["pub"].get("data") == data,
            f"publication {data!r} in {channel}", timeout)
        return push["pub"]

    def has_pub(self, channel, data):
        return any(p.get("channel") == channel and "pub" in p and p["pub"].get("data") == data for p in self.pushes)

    async def wait_closed(self, timeout=STEP):
        try:
            return await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: connection still open after {timeout} s") from None

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
            self.reader.cancel()


# ---------------------------------------------------------------- cent wrappers


def describe_exc(e):
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if isinstance(e, CentDecodeError) and e.__cause__ is not None:
        text += f" ({' / '.join(str(e.__cause__).splitlines()[:3])})"
    return text


class Api:
    """A `cent.Client` on its own requests.Session (proxies from the
    environment ignored) that remembers the last exchange for failure reports."""

    def __init__(self, base, key, headers=None):
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers.update(headers or {})
        self.session.hooks["response"].append(self._record)
        self.last = None
        self.client = Client(base, key, timeout=STEP, session=self.session)

    def _record(self, r, *_, **__):
        body = r.request.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        self.last = f"request POST {r.request.path_url} {str(body)[:300]} -> {r.status_code} {r.text[:400]!r}"

    def wire(self):
        return self.last or "no HTTP exchange recorded"

    async def raw(self, req, via=None):
        self.last = None
        return await asyncio.to_thread(via or getattr(self.client, req.api_method), req)

    async def call(self, req):
        try:
            res = await self.raw(req)
        except CentError as e:
            raise AssertionError(f"cent raised {describe_exc(e)}; {self.wire()}") from None
        if res is None:
            raise AssertionError(f"cent returned None (no \"result\" object in the answer); {self.wire()}")
        return res

    async def error(self, req, code):
        try:
            res = await self.raw(req)
        except CentApiResponseError as e:
            expect_eq(e.code, code, f"error code ({self.wire()})")
            expect(isinstance(e.message, str) and e.message, f"empty error message ({self.wire()})")
            return e
        except CentError as e:
            raise AssertionError(f"expected CentApiResponseError {code}, cent raised {describe_exc(e)}; {self.wire()}") from None
        raise AssertionError(f"expected CentApiResponseError {code}, got {res!r}; {self.wire()}")

    def close(self):
        self.client.close()


class NopeRequest(CentRequest[PublishResult]):
    """A request for a method the hub does not have (POST /api/nope)."""

    __returning__ = PublishResult
    __api_method__ = "nope"


# ---------------------------------------------------------------- main


async def main():
    work = tempfile.mkdtemp(prefix="duplex-api-")
    cfg = os.path.join(work, "api.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    cleanup = []
    srv = None
    try:
        async def start():
            nonlocal srv
            srv = await Duplex.start("--config", cfg)
            cleanup.append(srv.stop)

        if not await check("duplex serve --config api.toml starts and logs its port", start):
            return
        port = srv.port
        base = f"http://127.0.0.1:{port}/api"
        api = Api(base, API_KEY)
        cleanup.append(lambda: asyncio.to_thread(api.close))

        alice = bob = carol = None
        info_alice = {"name": "Alice"}
        info_bob = {"name": "Bob"}

        async def observers():
            nonlocal alice, bob, carol
            alice = await Observer.open(port, "alice", info_alice)
            cleanup.append(alice.close)
            bob = await Observer.open(port, "bob", info_bob)
            cleanup.append(bob.close)
            carol = await Observer.open(port, "carol")
            cleanup.append(carol.close)
            await alice.subscribe("chat:room", "chat:b1", "chat:b2", "news")
            await bob.subscribe("chat:room", "chat:b1")
            await carol.subscribe("chat:carol")

        if not await check("observers alice, bob, carol connect over /connection/websocket (JWT) and subscribe", observers):
            return

        # ------------------------------------------------ publish
        first = {}

        async def publish_history_on():
            data = {"text": "hello from cent", "n": 1, "nested": {"ok": True, "none": None}}
            res = await api.call(PublishRequest(channel="chat:room", data=data))
            expect(res.offset >= 1, f"offset {res.offset} (history is on, expected >= 1); {api.wire()}")
            expect(isinstance(res.epoch, str) and res.epoch, f"empty epoch with history on; {api.wire()}")
            for obs in (alice, bob):
                pub = await obs.wait_pub("chat:room", data)
                expect_eq(pub.get("offset"), res.offset, f"{obs.name}: offset of the delivered publication")
            first.update(offset=res.offset, epoch=res.epoch)

        await check("cent publish to chat:room (history on): offset >= 1 and epoch; both subscribers get the data with that offset",
                    publish_history_on)

        async def publish_again():
            expect(first, "no first publish to compare with")
            res = await api.call(PublishRequest(channel="chat:room", data={"n": 2}))
            expect_eq(res.offset, first["offset"] + 1, f"offset of the next publication ({api.wire()})")
            expect_eq(res.epoch, first["epoch"], "epoch")
            await alice.wait_pub("chat:room", {"n": 2})

        await check("cent publish again: offset + 1, same epoch", publish_again)

        async def publish_unicode():
            data = {"text": "héllo wörld ß 漢字 👋🏽🎉"}  # json.dumps sends \\u escapes and surrogate pairs
            await api.call(PublishRequest(channel="chat:room", data=data))
            await alice.wait_pub("chat:room", data)

        await check("cent publish of non-ASCII data (sent \\u-escaped, emoji as surrogate pairs) reaches the subscriber unchanged",
                    publish_unicode)

        async def publish_history_off():
            res = await api.call(PublishRequest(channel="news", data="plain news"))
            expect_eq((res.offset, res.epoch), (0, ""), f"offset/epoch with history off ({api.wire()})")
            await alice.wait_pub("news", "plain news")

        await check("cent publish to news (history off): delivered; result has no stream position (offset 0, epoch '')",
                    publish_history_off)

        await check("cent publish to an undeclared namespace (nope:x) raises CentApiResponseError 102",
                    lambda: api.error(PublishRequest(channel="nope:x", data=1), 102))
        await check("cent publish with data=None (cent omits the field) raises CentApiResponseError 107",
                    lambda: api.error(PublishRequest(channel="chat:room", data=None), 107))

        # ------------------------------------------------ broadcast
        async def broadcast():
            data = {"broadcast": 1}
            res = await api.call(BroadcastRequest(channels=["chat:b1", "chat:b2", "news"], data=data))
            expect_eq(len(res.responses), 3, f"number of responses ({api.wire()})")
            for ch, r in zip(["chat:b1", "chat:b2", "news"], res.responses):
                expect(r.error is None, f"{ch}: error {r.error!r} ({api.wire()})")
                expect(r.result is not None, f"{ch}: response without result ({api.wire()})")
            expect(res.responses[0].result.offset >= 1 and res.responses[0].result.epoch,
                   f"chat:b1 (history on) has no stream position ({api.wire()})")
            for ch in ("chat:b1", "chat:b2", "news"):
                await alice.wait_pub(ch, data)
            await bob.wait_pub("chat:b1", data)

        await check("cent broadcast to chat:b1, chat:b2, news: 3 responses without error, every subscriber gets the data",
                    broadcast)

        async def broadcast_partial():
            data = {"broadcast": 2}
            res = await api.call(BroadcastRequest(channels=["chat:b1", "nope:x"], data=data))
            expect_eq(len(res.responses), 2, f"number of responses ({api.wire()})")
            expect(res.responses[0].error is None and res.responses[0].result is not None,
                   f"chat:b1 response {res.responses[0]!r} ({api.wire()})")
            expect(res.responses[1].error is not None, f"nope:x response has no error ({api.wire()})")
            expect_eq(res.responses[1].error.code, 102, "nope:x error code")
            await alice.wait_pub("chat:b1", data)

        await check("cent broadcast to chat:b1 and nope:x: nope:x answers error 102, chat:b1 is published", broadcast_partial)

        # ------------------------------------------------ presence
        async def presence():
            res = await api.call(PresenceRequest(channel="chat:room"))
            got = {k: (v.client, v.user, v.conn_info) for k, v in res.presence.items()}
            want = {alice.client_id: (alice.client_id, "alice", info_alice),
                    bob.client_id: (bob.client_id, "bob", info_bob)}
            expect_eq(got, want, f"presence of chat:room ({api.wire()})")

        await check("cent presence chat:room: alice's and bob's client ids with user and conn_info", presence)

        async def presence_stats():
            res = await api.call(PresenceStatsRequest(channel="chat:room"))
            expect_eq((res.num_clients, res.num_users), (2, 2), f"num_clients, num_users ({api.wire()})")

        await check("cent presence_stats chat:room: 2 clients, 2 users", presence_stats)
        await check("cent presence on news (presence off) raises CentApiResponseError 108",
                    lambda: api.error(PresenceRequest(channel="news"), 108))

        # ------------------------------------------------ history
        hist = {}

        async def fill_history():
            offsets, epochs = [], set()
            for n in range(1, 6):
                r = await api.call(PublishRequest(channel="chat:hist", data={"n": n}))
                offsets.append(r.offset)
                epochs.add(r.epoch)
            expect_eq(offsets, [1, 2, 3, 4, 5], "offsets of 5 publications into a fresh channel")
            expect(len(epochs) == 1 and "" not in epochs, f"epochs {epochs!r}")
            hist["epoch"] = epochs.pop()

        await check("cent publish x5 into a fresh chat:hist: offsets 1..5, one epoch", fill_history)

        def pubs(res):
            return [(p.offset, p.data) for p in res.publications]

        def expect_pubs(res, ns, what):
            expect_eq(pubs(res), [(n, {"n": n}) for n in ns], f"{what} ({api.wire()})")

        async def history_position():
            res = await api.call(HistoryRequest(channel="chat:hist"))
            expect_eq(pubs(res), [], f"publications without limit ({api.wire()})")
            expect_eq((res.offset, res.epoch), (5, hist.get("epoch")), "stream position")

        await check("cent history without limit: no publications, stream position offset 5 + epoch", history_position)

        async def history_all():
            res = await api.call(HistoryRequest(channel="chat:hist", limit=-1))
            expect_pubs(res, [1, 2, 3, 4, 5], "limit -1")
            expect_eq((res.offset, res.epoch), (5, hist.get("epoch")), "stream position")

        await check("cent history limit -1: all 5 publications, oldest first, with data", history_all)

        async def history_limit():
            expect_pubs(await api.call(HistoryRequest(channel="chat:hist", limit=2)), [1, 2], "limit 2")

        await check("cent history limit 2: the 2 oldest", history_limit)

        async def history_reverse():
            expect_pubs(await api.call(HistoryRequest(channel="chat:hist", limit=2, reverse=True)), [5, 4],
                        "limit 2 reverse")

        await check("cent history limit 2 reverse: the 2 newest, newest first", history_reverse)

        async def history_since():
            res = await api.call(HistoryRequest(channel="chat:hist", limit=-1,
                                                since=StreamPosition(offset=2, epoch=hist.get("epoch", ""))))
            expect_pubs(res, [3, 4, 5], "since offset 2")

        await check("cent history since {offset 2, epoch}: publications 3, 4, 5", history_since)

        async def history_since_reverse():
            res = await api.call(HistoryRequest(channel="chat:hist", limit=-1, reverse=True,
                                                since=StreamPosition(offset=4, epoch=hist.get("epoch", ""))))
            expect_pubs(res, [3, 2, 1], "since offset 4 reverse")

        await check("cent history since {offset 4, epoch} reverse: publications 3, 2, 1", history_since_reverse)

        async def history_since_limit():
            res = await api.call(HistoryRequest(channel="chat:hist", limit=1,
                                                since=StreamPosition(offset=3, epoch=hist.get("epoch", ""))))
            expect_pubs(res, [4], "since offset 3 limit 1")

        await check("cent history since {offset 3, epoch} limit 1: publication 4", history_since_limit)

        await check("cent history since a wrong epoch raises CentApiResponseError 112",
                    lambda: api.error(HistoryRequest(channel="chat:hist", limit=-1,
                                                     since=StreamPosition(offset=1, epoch="not-the-epoch")), 112))
        await check("cent history on news (history off) raises CentApiResponseError 108",
                    lambda: api.error(HistoryRequest(channel="news", limit=-1), 108))

        async def history_remove():
            await api.call(HistoryRemoveRequest(channel="chat:hist"))
            res = await api.call(HistoryRequest(channel="chat:hist", limit=-1))
            expect_eq(pubs(res), [], f"publications after history_remove ({api.wire()})")

        await check("cent history_remove chat:hist: history limit -1 then has no publications", history_remove)
        await check("cent history_remove on news (history off) raises CentApiResponseError 108",
                    lambda: api.error(HistoryRemoveRequest(channel="news"), 108))

        # ------------------------------------------------ channels, info
        async def channels_pattern():
            res = await api.call(ChannelsRequest(pattern="chat:*"))
            names = set(res.channels)
            expect({"chat:room", "chat:b1", "chat:b2", "chat:carol"} <= names,
                   f"chat:room, chat:b1, chat:b2, chat:carol missing from {sorted(names)} ({api.wire()})")
            expect(all(n.startswith("chat:") for n in names), f"names outside chat:* in {sorted(names)}")
            expect_eq(res.channels["chat:room"].num_clients, 2, "chat:room num_clients")
            expect_eq(res.channels["chat:b2"].num_clients, 1, "chat:b2 num_clients")

        await check("cent channels pattern chat:*: only chat: channels, with subscriber counts", channels_pattern)

        async def channels_all():
            res = await api.call(ChannelsRequest())
            expect({"news", "chat:room"} <= set(res.channels), f"channels {sorted(res.channels)} ({api.wire()})")
            expect_eq(res.channels["news"].num_clients, 1, "news num_clients")

        await check("cent channels without pattern: includes news and chat:room", channels_all)

        async def info():
            res = await api.call(InfoRequest())
            expect(len(res.nodes) >= 1, f"no nodes ({api.wire()})")
            node = res.nodes[0]
            expect(node.uid and node.name, f"node without uid/name: {node!r}")
            expect(node.num_clients >= 3, f"num_clients {node.num_clients} < 3 observers ({api.wire()})")
            expect(node.num_users >= 3, f"num_users {node.num_users} < 3 ({api.wire()})")
            expect(node.num_channels >= 5, f"num_channels {node.num_channels} < 5 ({api.wire()})")

        await check("cent info: a node with uid, name, num_clients/num_users >= 3, num_channels >= 5", info)

        # ------------------------------------------------ async client
        async def async_client():
            ac = AsyncClient(base, API_KEY, timeout=STEP)
            try:
                res = await ac.publish(PublishRequest(channel="chat:room", data={"from": "aiohttp"}))
                expect(res is not None and res.offset >= 1, f"publish result {res!r}")
                await alice.wait_pub("chat:room", {"from": "aiohttp"})
                stats = await ac.presence_stats(PresenceStatsRequest(channel="chat:room"))
                expect(stats is not None, "presence_stats returned None")
                expect_eq((stats.num_clients, stats.num_users), (2, 2), "presence_stats")
                try:
                    await ac.publish(PublishRequest(channel="nope:x", data=1))
                except CentApiResponseError as e:
                    expect_eq(e.code, 102, "error code")
                else:
                    raise AssertionError("publish to nope:x did not raise")
            finally:
                await ac.close()

        await check("cent AsyncClient (aiohttp): publish delivered, presence_stats, error 102", async_client)

        # ------------------------------------------------ unsubscribe
        async def unsubscribe():
            await api.call(UnsubscribeRequest(user="bob", channel="chat:room"))
            push = await bob.wait_push(lambda p: p.get("channel") == "chat:room" and "unsubscribe" in p,
                                       "unsubscribe push for chat:room")
            expect_eq(push["unsubscribe"].get("code"), 2000, f"unsubscribe code in {push!r}")
            expect_eq(push["unsubscribe"].get("reason"), "server unsubscribe", "unsubscribe reason")
            data = {"after": "unsubscribe"}
            await api.call(PublishRequest(channel="chat:room", data=data))
            await alice.wait_pub("chat:room", data)
            await asyncio.sleep(0.3)
            expect(not bob.has_pub("chat:room", data), "bob still receives chat:room publications")
            expect(not bob.closed.done(), f"bob's connection closed: {bob.closed.result() if bob.closed.done() else ''}")
            await api.call(PublishRequest(channel="chat:b1", data={"still": 1}))
            await bob.wait_pub("chat:b1", {"still": 1})

            async def one_left():
                s = await api.call(PresenceStatsRequest(channel="chat:room"))
                return None if (s.num_clients, s.num_users) == (1, 1) else f"{(s.num_clients, s.num_users)}"

            await eventually(one_left, "presence_stats chat:room after unsubscribe (want 1 client, 1 user)")

        await check("cent unsubscribe bob from chat:room: push 2000 'server unsubscribe', no more chat:room data, "
                    "connection and other subscriptions kept, presence 1", unsubscribe)

        # ------------------------------------------------ disconnect
        async def disconnect_default():
            await api.call(DisconnectRequest(user="bob"))
            code, reason = await bob.wait_closed()
            expect_eq((code, reason), (3503, "force disconnect"), "close code and reason seen by bob")

            async def gone():
                p = await api.call(PresenceRequest(channel="chat:b1"))
                users = sorted(v.user for v in p.presence.values())
                return None if users == ["alice"] else f"users {users}"

            await eventually(gone, "presence of chat:b1 after disconnect")
            expect(not alice.closed.done(), "alice was disconnected too")

        await check("cent disconnect user bob: bob's WebSocket closed with 3503 'force disconnect', presence drops him, "
                    "alice stays", disconnect_default)

        async def disconnect_custom():
            await api.call(DisconnectRequest(user="carol", disconnect=Disconnect(code=4001, reason="bye from cent")))
            code, reason = await carol.wait_closed()
            expect_eq((code, reason), (4001, "bye from cent"), "close code and reason seen by carol")

        await check("cent disconnect user carol with Disconnect(4001, 'bye from cent'): closed with exactly that",
                    disconnect_custom)

        # ------------------------------------------------ auth and HTTP errors
        body_ok = json.dumps({"channel": "chat:room"}).encode()

        async def wrong_key():
            bad = Api(base, "wrong-key")
            try:
                try:
                    res = await bad.raw(PresenceStatsRequest(channel="chat:room"))
                except CentUnauthorizedError:
                    pass
                except CentError as e:
                    raise AssertionError(f"cent raised {describe_exc(e)}, not CentUnauthorizedError; {bad.wire()}") from None
                else:
                    raise AssertionError(f"a wrong key was accepted: {res!r}; {bad.wire()}")
            finally:
                bad.close()
            status, text = await post(port, "/api/presence_stats", body_ok, {"X-API-Key": "wrong-key"})
            expect_eq(status, 401, f"plain POST with X-API-Key: wrong-key (body {text[:200]!r})")
            status, text = await post(port, "/api/presence_stats", body_ok, {"Authorization": "apikey wrong-key"})
            expect_eq(status, 401, f"plain POST with Authorization: apikey wrong-key (body {text[:200]!r})")

        await check("wrong API key: cent raises CentUnauthorizedError; plain POST (X-API-Key or Authorization) gets 401",
                    wrong_key)

        async def missing_key():
            nokey = Api(base, "")  # cent sends no X-API-Key header when the key is empty
            try:
                try:
                    res = await nokey.raw(PresenceStatsRequest(channel="chat:room"))
                except CentUnauthorizedError:
                    pass
                except CentError as e:
                    raise AssertionError(f"cent raised {describe_exc(e)}, not CentUnauthorizedError; {nokey.wire()}") from None
                else:
                    raise AssertionError(f"a request without key was accepted: {res!r}; {nokey.wire()}")
            finally:
                nokey.close()
            status, text = await post(port, "/api/presence_stats", body_ok, {})
            expect_eq(status, 401, f"plain POST without a key (body {text[:200]!r})")

        await check("missing API key: cent raises CentUnauthorizedError; plain POST gets 401", missing_key)

        async def authorization_header():
            via = Api(base, "", headers={"Authorization": f"apikey {API_KEY}"})
            try:
                res = await via.call(PresenceStatsRequest(channel="chat:room"))
                expect_eq(res.num_clients, 1, f"num_clients ({via.wire()})")
                expect(via.session.headers.get("X-API-Key") is None, "cent sent X-API-Key anyway")
            finally:
                via.close()
            status, text = await post(port, "/api/presence_stats", body_ok, {"Authorization": f"apikey {API_KEY}"})
            expect_eq(status, 200, f"plain POST with Authorization: apikey KEY (body {text[:200]!r})")
            expect_eq(json.loads(text).get("result", {}).get("num_clients"), 1, f"num_clients in {text!r}")

        await check("Authorization: apikey KEY (no X-API-Key) is accepted, by cent and by a plain POST", authorization_header)

        async def plain_ok():
            status, text = await post(port, "/api/presence_stats", body_ok, {"X-API-Key": API_KEY})
            expect_eq(status, 200, f"status (body {text[:200]!r})")
            obj = json.loads(text)
            expect("error" not in obj and isinstance(obj.get("result"), dict), f"answer {text!r}")

        await check("plain POST /api/presence_stats with X-API-Key: 200 {\"result\": {...}}", plain_ok)

        async def malformed():
            for body in (b'{"channel": "chat:room"', b"not json at all", b""):
                status, text = await post(port, "/api/publish", body, {"X-API-Key": API_KEY})
                expect_eq(status, 400, f"status for body {body!r} (answer {text[:200]!r})")

        await check("malformed JSON body (truncated, not JSON, empty) with a valid key: 400", malformed)

        async def unknown_method():
            status, text = await post(port, "/api/nope", b"{}", {"X-API-Key": API_KEY})
            expect_eq(status, 404, f"plain POST /api/nope (answer {text[:200]!r})")
            try:
                # Client has no method for it; any Client method sends request.api_method.
                res = await api.raw(NopeRequest(), via=api.client.publish)
            except CentTransportError as e:
                expect_eq(e.status_code, 404, f"CentTransportError.status_code ({api.wire()})")
            except CentError as e:
                raise AssertionError(f"cent raised {describe_exc(e)}, not CentTransportError(404); {api.wire()}") from None
            else:
                raise AssertionError(f"POST /api/nope answered {res!r}; {api.wire()}")

        await check("unknown method /api/nope: 404 (plain POST; cent raises CentTransportError 404)", unknown_method)

        async def still_alive():
            res = await api.call(PublishRequest(channel="chat:room", data={"last": True}))
            expect(res.offset >= 1, f"offset {res.offset}")
            await alice.wait_pub("chat:room", {"last": True})
            expect(srv.proc.returncode is None, "duplex serve exited")

        await check("after all of this the hub still serves: a last publish reaches alice", still_alive)
    finally:
        for stop in reversed(cleanup):
            try:
                await asyncio.wait_for(stop(), 5)
            except Exception:  # noqa: BLE001
                pass
        if REPORT.failed and srv is not None:
            print(f"\n{SUITE}: last lines of the duplex log:\n{srv.tail()}", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import websockets
    from importlib.metadata import version

    duplex_py.run_suite(REPORT, main, f"python {sys.version.split()[0]}, cent {version('cent')}, "
                        f"websockets {websockets.__version__}, requests {requests.__version__}", limit=150)
