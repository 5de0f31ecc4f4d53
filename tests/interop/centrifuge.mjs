// The real npm `centrifuge` client (centrifuge-js 5.x, JSON protocol over
// WebSocket) against the hub of `duplex serve` (`/connection/websocket`,
// Centrifugo client protocol v2) and its HTTP server API (`/api/<method>`).
// Node checks here, with `ws` as the client's WebSocket; the Chromium checks
// (the SDK's browser bundle in a page) are in centrifuge_browser.mjs and run
// at the end of this suite.
//
// Everything is on loopback. Every wait is on an event or a frame, bounded by
// a timeout. JWTs are HS256, signed here with node:crypto.
//
// Environment: DUPLEX_BIN (binary), CENTRIFUGE_FRAMES=1 prints the frames each
// client exchanged when a check fails (=all: after every check),
// CENTRIFUGE_NO_BROWSER=1 skips Chromium.

import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import {
  assert, assertEq, check, closedPort, removeDir, skip, startDuplex, startProxy, summary, tempDir,
} from './lib.mjs';

export { startProxy };

const here = path.dirname(fileURLToPath(import.meta.url));
const SDK_VERSION = JSON.parse(readFileSync(path.join(here, 'node_modules', 'centrifuge', 'package.json'), 'utf8')).version;

export const SECRET = 'interop-hmac-secret-' + randomBytes(6).toString('hex');
export const API_KEY = 'interop-api-key-' + randomBytes(6).toString('hex');

// ---------------------------------------------------------------- JWT, config

const b64u = (s) => Buffer.from(s).toString('base64url');
export const nowSec = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT of the claims. */
export function jwt(claims, secret = SECRET) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** A connection token for user `sub`, valid `ttl` seconds, with extra claims. */
export function connToken(sub, extra = {}, ttl = 3600) {
  return jwt({ sub, iat: nowSec(), exp: nowSec() + ttl, ...extra });
}

export function subToken(sub, channel, extra = {}, ttl = 3600) {
  return jwt({ sub, channel, iat: nowSec(), exp: nowSec() + ttl, ...extra });
}

/** The TOML config of the hub used by most checks. */
export function hubConfig({ allowAnonymous = true, ping = '25s' } = {}) {
  return `
[auth]
token_hmac_secret = "${SECRET}"
api_key = "${API_KEY}"
allow_anonymous = ${allowAnonymous}

[hub]
ping_interval = "${ping}"

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
presence = false
join_leave = false
subscribe = "token"
publish = "subscribers"
recovery = false
`;
}

/** Starts `duplex serve --config <toml> ...args`; the server gets .wsUrl of the hub. */
export async function startHub(dir, name, toml, args = []) {
  const file = path.join(dir, `${name}.toml`);
  writeFileSync(file, toml);
  const s = await startDuplex(['--config', file, ...args]);
  s.hubUrl = `ws://127.0.0.1:${s.port}/connection/websocket`;
  return s;
}

// ---------------------------------------------------------------- HTTP API

/** POST /api/<method>; resolves { status, json, text }. */
export async function api(server, method, body, { key = API_KEY, auth = 'x-api-key', raw } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (key !== null) {
    if (auth === 'authorization') headers.authorization = `apikey ${key}`;
    else headers['x-api-key'] = key;
  }
  const r = await fetch(`${server.origin}/api/${method}`, {
    method: 'POST', headers, body: raw !== undefined ? raw : JSON.stringify(body), signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, json, text };
}

/** An API call that must succeed: returns its `result`. */
export async function apiOk(server, method, body, opts) {
  const r = await api(server, method, body, opts);
  assert(r.status === 200 && r.json && r.json.result !== undefined && !r.json.error,
    `/api/${method} ${JSON.stringify(body)} answered ${r.status} ${r.text.slice(0, 300)}`);
  return r.json.result;
}

// ---------------------------------------------------------------- event logs

/** An append-only log whose waiters are woken by every push. */
export class Log {
  constructor() { this.items = []; this.waiters = new Set(); }
  push(x) {
    this.items.push(x);
    for (const w of [...this.waiters]) w();
  }
  /** Resolves pred(items) once truthy; rejects after ms with `what`. */
  until(pred, ms, what) {
    return new Promise((resolve, reject) => {
      let timer;
      const probe = () => {
        let v;
        try { v = pred(this.items); } catch (e) { done(); reject(e); return; }
        if (v) { done(); resolve(v); }
      };
      const done = () => { clearTimeout(timer); this.waiters.delete(probe); };
      timer = setTimeout(() => {
        done();
        reject(new Error(`${what}: not seen within ${ms} ms; events: ${this.summary()}`));
      }, ms);
      this.waiters.add(probe);
      probe();
    });
  }
  of(ev) { return this.items.filter((e) => e.ev === ev); }
  summary() {
    return this.items.slice(-12).map((e) => `${e.ev}${e.ctx && e.ctx.code !== undefined ? `(${e.ctx.code} ${e.ctx.reason ?? ''})` : ''}`).join(', ') || '(none)';
  }
}

const CLIENT_EVENTS = ['state', 'connecting', 'connected', 'disconnected', 'error', 'message',
  'publication', 'join', 'leave', 'subscribing', 'subscribed', 'unsubscribed'];
const SUB_EVENTS = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error'];

// Clients made by the check in progress: disconnected at its end.
let liveClients = [];
let checkFrames = [];

/**
 * A `ws` WebSocket that records the frames the SDK sends and receives, and
 * counts how many sockets the client opened.
 */
function tappedWebSocket(frames, sockets) {
  return class TappedWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
      const n = sockets.length;
      this.addEventListener('message', (e) => frames.push(`#${n} < ${String(e.data)}`));
      this.addEventListener('close', (e) => frames.push(`#${n} closed ${e.code} ${e.reason}`));
    }
    send(data, ...rest) {
      frames.push(`#${sockets.length} > ${String(data)}`);
      return super.send(data, ...rest);
    }
  };
}

/** A Centrifuge client on `url` using `ws`, with every event recorded in .log. */
export function client(url, opts = {}, label = 'client') {
  const frames = new Log();
  const sockets = [];
  const c = new Centrifuge(url, { websocket: tappedWebSocket(frames, sockets), ...opts });
  c.log = new Log();
  c.frames = frames;
  c.sockets = sockets;
  c.label = label;
  for (const ev of CLIENT_EVENTS) c.on(ev, (ctx) => c.log.push({ ev, ctx, t: Date.now() }));
  liveClients.push(c);
  checkFrames.push({ label, frames });
  return c;
}

/** A subscription with every event recorded in .log; .pubs() lists publication contexts. */
export function subscription(c, channel, opts = {}) {
  const s = c.newSubscription(channel, opts);
  s.log = new Log();
  for (const ev of SUB_EVENTS) s.on(ev, (ctx) => s.log.push({ ev, ctx, t: Date.now() }));
  s.pubs = () => s.log.of('publication').map((e) => e.ctx);
  return s;
}

/** Waits for the count-th `ev` event of a client or subscription; returns its ctx. */
export async function nth(x, ev, count = 1, ms = 8000) {
  const e = await x.log.until((items) => items.filter((i) => i.ev === ev)[count - 1], ms, `${x.label || x.channel}: ${ev} #${count}`);
  return e.ctx;
}

export async function pubsAtLeast(s, n, ms = 8000) {
  await s.log.until((items) => items.filter((i) => i.ev === 'publication').length >= n, ms, `${s.channel}: ${n} publications`);
  return s.pubs();
}

/** Resolves the first reply (with its command) matching pred, waiting for frames. */
export function reply(c, pred, ms = 8000, what = 'reply') {
  return c.frames.until(() => exchanged(c).replies.find(pred), ms, `${c.label}: ${what}`);
}

/** Lets real time pass, for checks about time itself (a token's expiry). */
const elapse = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Replies received by a client, parsed, with the command each answers. */
function exchanged(c) {
  const sent = new Map();
  const replies = [];
  for (const f of c.frames.items) {
    const m = /^#\d+ ([<>]) (.*)$/s.exec(f);
    if (!m) continue;
    for (const line of m[2].split('\n')) {
      if (!line.trim()) continue;
      let obj;
      try { obj = JSON.parse(line); } catch { continue; }
      if (m[1] === '>') { if (obj.id) sent.set(obj.id, obj); } else replies.push({ reply: obj, cmd: obj.id ? sent.get(obj.id) : undefined });
    }
  }
  return { sent: [...sent.values()], replies };
}

let unhandled = [];
process.on('unhandledRejection', (e) => { unhandled.push(String(e && e.stack ? e.stack : e)); });

/** A check whose clients are disconnected at its end; frames printed on failure if asked. */
async function ccheck(name, fn, opts = { timeoutMs: 30_000 }) {
  liveClients = [];
  checkFrames = [];
  let failed = false;
  await check(name, async () => {
    try { await fn(); } catch (e) { failed = true; throw e; }
  }, opts);
  if ((failed && process.env.CENTRIFUGE_FRAMES) || process.env.CENTRIFUGE_FRAMES === 'all') {
    for (const { label, frames } of checkFrames) {
      console.log(`  frames of ${label}:`);
      for (const f of frames.items.slice(-40)) {
        for (const line of f.split('\n')) console.log(`    ${line.length > 400 ? line.slice(0, 400) + '…' : line}`);
      }
    }
  }
  for (const c of liveClients) { try { c.disconnect(); } catch { /* gone */ } }
  liveClients = [];
}

const uniq = (p) => `${p}-${randomBytes(3).toString('hex')}`;
const dataList = (pubs) => pubs.map((p) => JSON.stringify(p.data));

/** Asserts that pubs carry {n} for ns, in that order, with increasing offsets when present. */
function assertSeq(pubs, ns, what) {
  const got = pubs.map((p) => p.data && p.data.n);
  assertEq(JSON.stringify(got), JSON.stringify(ns), `${what}: data.n sequence`);
  for (let i = 1; i < pubs.length; i++) {
    if (pubs[i].offset !== undefined && pubs[i - 1].offset !== undefined) {
      assert(pubs[i].offset > pubs[i - 1].offset, `${what}: offsets not increasing: ${pubs.map((p) => p.offset).join(',')}`);
    }
  }
}

// ---------------------------------------------------------------- checks

async function main() {
  console.log(`centrifuge ${SDK_VERSION} (npm), ws transport, JSON protocol`);
  const work = tempDir('duplex-centrifuge-');
  const servers = [];
  const proxies = [];
  let hub;
  try {
    await check('duplex serve --config (hub, namespaces chat/tiny/secret) starts', async () => {
      hub = await startHub(work, 'main', hubConfig());
      servers.push(hub);
    });
    if (!hub) {
      skip('all centrifuge checks', 'no hub server');
      return;
    }
    const url = hub.hubUrl;

    // ------------------------------------------------ 1. connect / auth
    await ccheck('connect with an HS256 token (sub, exp, info): connected, client id given', async () => {
      const c = client(url, { token: connToken('alice', { info: { name: 'Alice' } }) }, 'alice');
      c.connect();
      const ctx = await nth(c, 'connected');
      assert(typeof ctx.client === 'string' && ctx.client.length > 0, `connected ctx.client = ${JSON.stringify(ctx.client)}`);
      assertEq(ctx.transport, 'websocket', 'transport');
      assertEq(c.state, 'connected', 'state');
      const connect = exchanged(c).replies.find((r) => r.cmd && r.cmd.connect);
      assert(connect && connect.reply.connect, `no connect reply: ${JSON.stringify(connect && connect.reply)}`);
    });

    await ccheck('connect without a token (allow_anonymous = true): connected', async () => {
      const c = client(url, {}, 'anonymous');
      c.connect();
      const ctx = await nth(c, 'connected');
      assert(ctx.client, 'no client id');
      const sent = exchanged(c).sent.find((s) => s.connect);
      assert(sent && sent.connect.token === undefined, 'the SDK sent a token');
    });

    await ccheck('token with a bad signature: disconnected 3500 "invalid token", no reconnect', async () => {
      const c = client(url, { token: jwt({ sub: 'mallory', exp: nowSec() + 3600 }, 'not-the-secret'), minReconnectDelay: 50 }, 'mallory');
      c.connect();
      const ctx = await nth(c, 'disconnected');
      assertEq(ctx.code, 3500, 'disconnected code');
      assertEq(ctx.reason, 'invalid token', 'disconnected reason');
      assertEq(c.state, 'disconnected', 'state');
      assertEq(c.log.of('connected').length, 0, 'connected events');
      assertEq(c.sockets.length, 1, 'sockets opened');
    });

    await ccheck('expired token: error 109, getToken called, reconnects with the new token', async () => {
      let calls = 0;
      const c = client(url, {
        token: jwt({ sub: 'bob', iat: nowSec() - 120, exp: nowSec() - 60 }),
        getToken: async () => { calls++; return connToken('bob'); },
        minReconnectDelay: 50, maxReconnectDelay: 200,
      }, 'bob-expired');
      c.connect();
      await nth(c, 'connected', 1, 10_000);
      assertEq(calls, 1, 'getToken calls');
      const err = c.log.of('error').find((e) => e.ctx.type === 'connect');
      assert(err && err.ctx.error.code === 109, `connect error event: ${JSON.stringify(err && err.ctx)}`);
      assertEq(c.log.of('disconnected').length, 0, 'disconnected events');
    });

    // ------------------------------------------------ 2. publish order
    await ccheck('subscribe; 50 publications from one client reach both subscribers, in order, complete (bursts written by the hub straight into the idle sockets)', async () => {
      const ch = uniq('chat:order');
      const a = client(url, { token: connToken('alice') }, 'alice');
      const b = client(url, { token: connToken('bob') }, 'bob');
      const sa = subscription(a, ch);
      const sb = subscription(b, ch);
      sa.subscribe(); sb.subscribe();
      a.connect(); b.connect();
      await Promise.all([nth(sa, 'subscribed'), nth(sb, 'subscribed')]);
      const N = 50;
      const ns = Array.from({ length: N }, (_, i) => i + 1);
      await Promise.all(ns.map((n) => sa.publish({ n, text: `message ${n} ✓` })));
      const [pa, pb] = await Promise.all([pubsAtLeast(sa, N), pubsAtLeast(sb, N)]);
      assertSeq(pa, ns, 'publisher');
      assertSeq(pb, ns, 'other subscriber');
      assertEq(pa[7].data.text, 'message 8 ✓', 'data text');
      // Nothing more than the N: a sentinel through the API arrives right after.
      await apiOk(hub, 'publish', { channel: ch, data: { n: N + 1 } });
      assertSeq(await pubsAtLeast(sb, N + 1), [...ns, N + 1], 'after sentinel');
      // The SDK's sockets (permessage-deflate agreed, no server context
      // takeover) were idle between publications: the hub wrote the bursts
      // straight into them, compressed once.
      const m = await (await fetch(`http://127.0.0.1:${hub.port}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      const direct = Number((m.match(/^duplex_direct_writes_total (\d+)/m) || [])[1] || 0);
      if (!(direct > 0)) throw new Error(`no direct writes in /metrics (${direct})`);
    });

    // ------------------------------------------------ 3. presence, join/leave
    await ccheck('presence and presence_stats: two clients, conn info from the token', async () => {
      const ch = uniq('chat:presence');
      const a = client(url, { token: connToken('alice', { info: { name: 'Alice', role: 'admin' } }) }, 'alice');
      const b = client(url, { token: connToken('bob') }, 'bob');
      const sa = subscription(a, ch);
      const sb = subscription(b, ch);
      sa.subscribe(); sb.subscribe();
      a.connect(); b.connect();
      const [ca, cb] = await Promise.all([nth(a, 'connected'), nth(b, 'connected')]);
      await Promise.all([nth(sa, 'subscribed'), nth(sb, 'subscribed')]);
      const { clients } = await sa.presence();
      const ids = Object.keys(clients).sort();
      assertEq(JSON.stringify(ids), JSON.stringify([ca.client, cb.client].sort()), 'presence client ids');
      assertEq(clients[ca.client].user, 'alice', 'alice user');
      assertEq(clients[ca.client].client, ca.client, 'alice client');
      assertEq(JSON.stringify(clients[ca.client].connInfo), JSON.stringify({ name: 'Alice', role: 'admin' }), 'alice connInfo');
      assertEq(clients[cb.client].user, 'bob', 'bob user');
      assert(!clients[cb.client].connInfo, `bob has connInfo ${JSON.stringify(clients[cb.client].connInfo)}`);
      const stats = await b.presenceStats(ch);
      assertEq(stats.numClients, 2, 'numClients');
      assertEq(stats.numUsers, 2, 'numUsers');
      // A second connection of alice: 3 clients, still 2 users.
      const a2 = client(url, { token: connToken('alice') }, 'alice-2');
      const sa2 = subscription(a2, ch);
      sa2.subscribe(); a2.connect();
      await nth(sa2, 'subscribed');
      const stats2 = await sa.presenceStats();
      assertEq(`${stats2.numClients}/${stats2.numUsers}`, '3/2', 'numClients/numUsers with alice twice');
    });

    await ccheck('join and leave pushes seen by a subscriber (joinLeave), with client, user, connInfo', async () => {
      const ch = uniq('chat:joinleave');
      const a = client(url, { token: connToken('alice') }, 'alice');
      const sa = subscription(a, ch, { joinLeave: true });
      sa.subscribe(); a.connect();
      await nth(sa, 'subscribed');
      const b = client(url, { token: connToken('bob', { info: { name: 'Bob' } }) }, 'bob');
      const sb = subscription(b, ch, { joinLeave: true });
      sb.subscribe(); b.connect();
      const cb = await nth(b, 'connected');
      await nth(sb, 'subscribed');
      const join = await sa.log.until((it) => it.find((e) => e.ev === 'join' && e.ctx.info.client === cb.client), 8000, 'join of bob');
      assertEq(join.ctx.channel, ch, 'join channel');
      assertEq(join.ctx.info.user, 'bob', 'join user');
      assertEq(JSON.stringify(join.ctx.info.connInfo), JSON.stringify({ name: 'Bob' }), 'join connInfo');
      sb.unsubscribe();
      const leave = await sa.log.until((it) => it.find((e) => e.ev === 'leave' && e.ctx.info.client === cb.client), 8000, 'leave of bob (unsubscribe)');
      assertEq(leave.ctx.info.user, 'bob', 'leave user');
      // A disconnect is a leave too.
      sb.subscribe();
      await nth(sb, 'subscribed', 2);
      await sa.log.until((it) => it.filter((e) => e.ev === 'join' && e.ctx.info.client === cb.client).length === 2, 8000, 'second join of bob');
      b.disconnect();
      await sa.log.until((it) => it.filter((e) => e.ev === 'leave' && e.ctx.info.client === cb.client).length === 2, 8000, 'leave of bob (disconnect)');
    });

    // ------------------------------------------------ 4. history
    await ccheck('history: position only by default, limit, since, reverse (client and HTTP API)', async () => {
      const ch = uniq('chat:history');
      for (let n = 1; n <= 10; n++) await apiOk(hub, 'publish', { channel: ch, data: { n } });
      const a = client(url, { token: connToken('alice') }, 'alice');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect();
      const sub = await nth(sa, 'subscribed');
      assert(sub.recoverable === true, `subscribed ctx recoverable = ${sub.recoverable}`);
      const epoch = sub.streamPosition && sub.streamPosition.epoch;
      assert(epoch, `no epoch in subscribed streamPosition ${JSON.stringify(sub.streamPosition)}`);
      assertEq(sub.streamPosition.offset, 10, 'subscribed streamPosition.offset');

      const pos = await sa.history({});
      assertEq(pos.publications.length, 0, 'publications without limit');
      assertEq(pos.offset, 10, 'offset');
      assertEq(pos.epoch, epoch, 'epoch');

      const first3 = await sa.history({ limit: 3 });
      assertSeq(first3.publications, [1, 2, 3], 'limit 3');
      assertEq(JSON.stringify(first3.publications.map((p) => p.offset)), '[1,2,3]', 'limit 3 offsets');
      assertEq(first3.offset, 10, 'limit 3: stream top offset');

      const since = await a.history(ch, { since: { offset: 5, epoch }, limit: 3 });
      assertSeq(since.publications, [6, 7, 8], 'since 5, limit 3');

      const sinceAll = await a.history(ch, { since: { offset: 7, epoch }, limit: 100 });
      assertSeq(sinceAll.publications, [8, 9, 10], 'since 7, limit 100');

      const rev = await sa.history({ limit: 3, reverse: true });
      assertEq(JSON.stringify(rev.publications.map((p) => p.data.n)), '[10,9,8]', 'reverse, limit 3');

      const all = await sa.history({ limit: 100 });
      assertSeq(all.publications, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'limit 100');

      const viaApi = await apiOk(hub, 'history', { channel: ch, limit: 2, reverse: true });
      assertEq(JSON.stringify((viaApi.publications || []).map((p) => p.data.n)), '[10,9]', 'API history reverse limit 2');
      assertEq(viaApi.epoch, epoch, 'API history epoch');
      assertEq(Number(viaApi.offset), 10, 'API history offset');
    });

    // ------------------------------------------------ 5. recovery
    const proxy = await startProxy(hub.port);
    proxies.push(proxy);
    const viaProxy = proxy.url();
    const quick = { minReconnectDelay: 100, maxReconnectDelay: 400 };

    /** Drops A's TCP connection and publishes `ns` through the API while A is cut off. */
    async function dropAndPublish(a, sa, ch, ns, whileDown = async () => {}) {
      const connectingBefore = a.log.of('connecting').length;
      proxy.block();
      proxy.cut();
      await a.log.until((it) => it.filter((e) => e.ev === 'connecting').length > connectingBefore, 8000, 'connecting after the TCP drop');
      for (const n of ns) await apiOk(hub, 'publish', { channel: ch, data: { n } });
      await whileDown();
      proxy.unblock();
    }

    await ccheck('recovery after a TCP drop: exactly the K missed publications, in order; wasRecovering and recovered true', async () => {
      const ch = uniq('chat:recover');
      const a = client(viaProxy, { token: connToken('alice'), ...quick }, 'alice');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect();
      const s1 = await nth(sa, 'subscribed');
      assertEq(s1.recoverable, true, 'first subscribed: recoverable');
      assertEq(s1.wasRecovering, false, 'first subscribed: wasRecovering');
      for (const n of [1, 2, 3]) await apiOk(hub, 'publish', { channel: ch, data: { n } });
      await pubsAtLeast(sa, 3);
      const c1 = (await nth(a, 'connected')).client;
      const K = [4, 5, 6, 7, 8, 9, 10];
      await dropAndPublish(a, sa, ch, K);
      const s2 = await nth(sa, 'subscribed', 2, 10_000);
      const c2 = (await nth(a, 'connected', 2)).client;
      assert(c2 !== c1, 'same client id after reconnect');
      const resub = exchanged(a).sent.filter((s) => s.subscribe && s.subscribe.channel === ch).pop();
      assert(resub.subscribe.recover === true && resub.subscribe.offset === 3 && resub.subscribe.epoch === s1.streamPosition.epoch,
        `the SDK's resubscribe was ${JSON.stringify(resub)}`);
      assertEq(s2.wasRecovering, true, 'second subscribed: wasRecovering');
      assertEq(s2.recovered, true, 'second subscribed: recovered');
      assertEq(s2.hasRecoveredPublications, true, 'hasRecoveredPublications');
      await pubsAtLeast(sa, 3 + K.length);
      await apiOk(hub, 'publish', { channel: ch, data: { n: 11 } });
      const pubs = await pubsAtLeast(sa, 3 + K.length + 1);
      assertSeq(pubs, [1, 2, 3, ...K, 11], 'all publications seen by A');
      assertEq(JSON.stringify(pubs.map((p) => p.offset)), JSON.stringify([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), 'offsets');
    });

    await ccheck('recovery impossible (history_size 2 < 5 missed): recovered false, no partial replay', async () => {
      const ch = uniq('tiny:recover');
      const a = client(viaProxy, { token: connToken('alice'), ...quick }, 'alice');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect();
      const s1 = await nth(sa, 'subscribed');
      assertEq(s1.recoverable, true, 'first subscribed: recoverable');
      await apiOk(hub, 'publish', { channel: ch, data: { n: 1 } });
      await pubsAtLeast(sa, 1);
      await dropAndPublish(a, sa, ch, [2, 3, 4, 5, 6]);
      const s2 = await nth(sa, 'subscribed', 2, 10_000);
      assertEq(s2.wasRecovering, true, 'wasRecovering');
      assertEq(s2.recovered, false, 'recovered');
      assertEq(s2.hasRecoveredPublications, false, 'hasRecoveredPublications (partial replay)');
      await apiOk(hub, 'publish', { channel: ch, data: { n: 7 } });
      const pubs = await pubsAtLeast(sa, 2);
      assertSeq(pubs, [1, 7], 'publications seen by A (nothing replayed)');
    });

    await ccheck('recovery after /api/history_remove while down: recovered false, nothing replayed', async () => {
      const ch = uniq('chat:removed');
      const a = client(viaProxy, { token: connToken('alice'), ...quick }, 'alice');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect();
      await nth(sa, 'subscribed');
      for (const n of [1, 2]) await apiOk(hub, 'publish', { channel: ch, data: { n } });
      await pubsAtLeast(sa, 2);
      await dropAndPublish(a, sa, ch, [3, 4, 5], async () => {
        await apiOk(hub, 'history_remove', { channel: ch });
        const h = await apiOk(hub, 'history', { channel: ch, limit: 100 });
        assertEq((h.publications || []).length, 0, 'publications left after history_remove');
      });
      const s2 = await nth(sa, 'subscribed', 2, 10_000);
      assertEq(s2.wasRecovering, true, 'wasRecovering');
      assertEq(s2.recovered, false, 'recovered');
      await apiOk(hub, 'publish', { channel: ch, data: { n: 6 } });
      const pubs = await pubsAtLeast(sa, 3);
      assertSeq(pubs, [1, 2, 6], 'publications seen by A');
    });

    // ------------------------------------------------ 6. token refresh
    await ccheck('connection token refresh: exp in 3 s, getToken called, refresh accepted, connected past exp', async () => {
      const exp = nowSec() + 3;
      let calls = 0;
      const a = client(url, {
        token: jwt({ sub: 'alice', iat: nowSec(), exp }),
        getToken: async () => { calls++; return connToken('alice', {}, 60); },
      }, 'alice');
      const ch = uniq('chat:refresh');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect();
      const c1 = (await nth(a, 'connected')).client;
      await nth(sa, 'subscribed');
      const connectReply = exchanged(a).replies.find((r) => r.cmd && r.cmd.connect).reply.connect;
      assert(connectReply.expires && connectReply.ttl > 0 && connectReply.ttl <= 3,
        `connect reply expires/ttl: ${JSON.stringify({ expires: connectReply.expires, ttl: connectReply.ttl })}`);
      // The SDK calls getToken and sends `refresh` after ttl seconds: wait for the reply.
      const refresh = await reply(a, (r) => r.cmd && r.cmd.refresh, 10_000, `reply to a refresh command (getToken calls ${calls})`);
      assert(calls >= 1, 'getToken not called');
      assert(!refresh.reply.error, `refresh error ${JSON.stringify(refresh.reply.error)}`);
      assert(refresh.reply.refresh && refresh.reply.refresh.expires && refresh.reply.refresh.ttl > 3,
        `refresh reply ${JSON.stringify(refresh.reply)}`);
      // Past the first token's exp (+2 s): still the same connection, still working.
      await elapse(exp * 1000 + 2000 - Date.now());
      await apiOk(hub, 'publish', { channel: ch, data: { n: 1 } });
      await pubsAtLeast(sa, 1);
      assertEq(a.state, 'connected', 'state');
      assertEq(a.log.of('connecting').length, 1, "connecting events (only connect()'s)");
      assertEq(a.log.of('disconnected').length, 0, 'disconnected events');
      assertEq(a.sockets.length, 1, 'sockets opened');
      assertEq(a.log.of('connected').length, 1, 'connected events');
      assertEq((await nth(a, 'connected')).client, c1, 'client id');
    }, { timeoutMs: 30_000 });

    // ------------------------------------------------ 7. server-side subscriptions
    await ccheck('server-side subscription (token channels ["news"]): client-level subscribed and publication', async () => {
      const a = client(url, { token: connToken('alice', { channels: ['news'] }) }, 'alice');
      a.connect();
      await nth(a, 'connected');
      const sub = await a.log.until((it) => it.find((e) => e.ev === 'subscribed' && e.ctx.channel === 'news'), 8000, 'client-level subscribed to news');
      assert(sub, 'no subscribed');
      await apiOk(hub, 'publish', { channel: 'news', data: { headline: 'duplex speaks centrifuge' } });
      const pub = await a.log.until((it) => it.find((e) => e.ev === 'publication'), 8000, 'client-level publication');
      assertEq(pub.ctx.channel, 'news', 'publication channel');
      assertEq(pub.ctx.data.headline, 'duplex speaks centrifuge', 'publication data');
      const sent = exchanged(a).sent;
      assert(!sent.some((s) => s.subscribe), 'the client sent a subscribe command');
    });

    // ------------------------------------------------ 8. protected channel
    await ccheck('protected channel (subscribe = "token") without a token: unsubscribed with code 103', async () => {
      const a = client(url, { token: connToken('alice') }, 'alice');
      const s = subscription(a, 'secret:room');
      s.subscribe(); a.connect();
      const u = await nth(s, 'unsubscribed');
      assertEq(u.code, 103, 'unsubscribed code');
      assertEq(s.state, 'unsubscribed', 'state');
      assertEq(s.log.of('subscribed').length, 0, 'subscribed events');
      assertEq(a.state, 'connected', 'client state');
      const reply = exchanged(a).replies.find((r) => r.cmd && r.cmd.subscribe);
      assertEq(reply.reply.error && reply.reply.error.code, 103, 'error code in the reply');
    });

    await ccheck('protected channel with a subscription token (Subscription getToken): subscribed, receives', async () => {
      const a = client(url, { token: connToken('alice') }, 'alice');
      const asked = [];
      const s = subscription(a, 'secret:room', {
        getToken: async (ctx) => { asked.push(ctx.channel); return subToken('alice', ctx.channel, { info: { seat: 7 } }); },
      });
      s.subscribe(); a.connect();
      await nth(s, 'subscribed');
      assertEq(JSON.stringify(asked), '["secret:room"]', 'getToken calls');
      const sent = exchanged(a).sent.find((x) => x.subscribe);
      assert(sent.subscribe.token, 'subscribe command without token');
      await apiOk(hub, 'publish', { channel: 'secret:room', data: { n: 1 } });
      assertSeq(await pubsAtLeast(s, 1), [1], 'publications');
      // Another user's subscription token is refused.
      const b = client(url, { token: connToken('bob') }, 'bob');
      const sb = subscription(b, 'secret:room', { token: subToken('alice', 'secret:room') });
      sb.subscribe(); b.connect();
      const settled = await Promise.race([
        sb.log.until((it) => it.find((e) => e.ev === 'subscribed' || e.ev === 'unsubscribed'), 8000, "bob's subscription with alice's token settles"),
        b.log.until((it) => it.find((e) => e.ev === 'disconnected'), 8000, 'bob disconnected'),
      ]);
      assert(settled.ev !== 'subscribed', 'bob subscribed with a token whose sub is alice');
    });

    // ------------------------------------------------ 9. HTTP API
    await ccheck('HTTP API publish (X-API-Key and Authorization: apikey) reaches WebSocket subscribers', async () => {
      const ch = uniq('chat:api');
      const a = client(url, { token: connToken('alice') }, 'alice');
      const b = client(url, {}, 'anonymous');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect(); b.connect();
      await nth(sa, 'subscribed');
      const r1 = await api(hub, 'publish', { channel: ch, data: { n: 1, s: 'über ✓' } });
      assertEq(r1.status, 200, 'status');
      assert(r1.json && r1.json.result && !r1.json.error, `body ${r1.text}`);
      await apiOk(hub, 'publish', { channel: ch, data: { n: 2 } }, { auth: 'authorization' });
      const pubs = await pubsAtLeast(sa, 2);
      assertSeq(pubs, [1, 2], 'publications');
      assertEq(pubs[0].data.s, 'über ✓', 'utf-8 data');
      const info = await apiOk(hub, 'presence_stats', { channel: ch });
      assertEq(`${info.num_clients}/${info.num_users}`, '1/1', 'API presence_stats num_clients/num_users');
      const chans = await apiOk(hub, 'channels', {});
      assert(chans.channels && Object.prototype.hasOwnProperty.call(chans.channels, ch), `API channels lacks ${ch}: ${JSON.stringify(chans).slice(0, 300)}`);
    });

    await ccheck('HTTP API: wrong or missing key -> 401 and nothing published; malformed JSON -> 400', async () => {
      const ch = uniq('chat:apikey');
      const a = client(url, { token: connToken('alice') }, 'alice');
      const sa = subscription(a, ch);
      sa.subscribe(); a.connect();
      await nth(sa, 'subscribed');
      assertEq((await api(hub, 'publish', { channel: ch, data: { n: 1 } }, { key: 'wrong' })).status, 401, 'wrong X-API-Key');
      assertEq((await api(hub, 'publish', { channel: ch, data: { n: 2 } }, { key: 'wrong', auth: 'authorization' })).status, 401, 'wrong Authorization: apikey');
      assertEq((await api(hub, 'publish', { channel: ch, data: { n: 3 } }, { key: null })).status, 401, 'missing key');
      assertEq((await api(hub, 'publish', null, { raw: '{"channel": ' })).status, 400, 'malformed JSON');
      await apiOk(hub, 'publish', { channel: ch, data: { n: 4 } });
      assertSeq(await pubsAtLeast(sa, 1), [4], 'publications (only the authorized one)');
    });

    await ccheck('HTTP API disconnect {user}: the client gets a server code (>= 3000) and follows its range', async () => {
      const a = client(url, { token: connToken('carol'), minReconnectDelay: 100, maxReconnectDelay: 300 }, 'carol');
      const other = client(url, { token: connToken('dave') }, 'dave');
      a.connect(); other.connect();
      const c1 = (await nth(a, 'connected')).client;
      await nth(other, 'connected');
      await apiOk(hub, 'disconnect', { user: 'carol' });
      const ev = await a.log.until((it) => it.find((e) => e.ev === 'disconnected' || (e.ev === 'connecting' && e.ctx.code !== 0)), 8000, 'disconnect of carol');
      const { code, reason } = ev.ctx;
      assert(code >= 3000 && code < 5000, `${ev.ev} code ${code} ${reason}`);
      const terminal = (code >= 3500 && code < 4000) || code >= 4500;
      assertEq(ev.ev, terminal ? 'disconnected' : 'connecting', `event for code ${code}`);
      if (!terminal) {
        const c2 = (await nth(a, 'connected', 2)).client;
        assert(c2 && c2 !== c1, 'reconnected with a new client id');
      }
      assertEq(other.state, 'connected', 'other user state');
      assertEq(other.log.of('connecting').length, 1, 'other user connecting events');
    });

    // ------------------------------------------------ other server: no anonymous, fast pings
    let strict;
    await check('second hub (allow_anonymous = false, ping_interval 1s) starts', async () => {
      strict = await startHub(work, 'strict', hubConfig({ allowAnonymous: false, ping: '1s' }));
      servers.push(strict);
    });
    if (strict) {
      await ccheck('no token when allow_anonymous = false: refused, client ends disconnected (no reconnect loop)', async () => {
        const c = client(strict.hubUrl, { minReconnectDelay: 50 }, 'anonymous');
        c.connect();
        const ctx = await nth(c, 'disconnected');
        assertEq(c.log.of('connected').length, 0, 'connected events');
        assertEq(c.sockets.length, 1, 'sockets opened');
        assert(ctx.code === 101 || ctx.code >= 3500 && ctx.code < 4000, `disconnected code ${ctx.code} ${ctx.reason}`);
      });

      await ccheck('server pings: connect reply ping 1, {} pings arrive, the client stays connected', async () => {
        const c = client(strict.hubUrl, { token: connToken('dave') }, 'dave');
        c.connect();
        await nth(c, 'connected');
        const reply = exchanged(c).replies.find((r) => r.cmd && r.cmd.connect).reply.connect;
        assertEq(reply.ping, 1, 'connect reply ping');
        const pings = () => exchanged(c).replies.filter((r) => !r.reply.id && !r.reply.push).length;
        await c.frames.until(() => pings() >= 3, 6000, 'three server pings');
        if (reply.pong) {
          const pongs = c.frames.items.filter((f) => /^#\d+ > \{\}$/.test(f)).length;
          assert(pongs >= 2, `pong negotiated but ${pongs} pongs sent`);
        }
        assertEq(c.state, 'connected', 'state');
        assertEq(c.sockets.length, 1, 'sockets opened');
      });

      await ccheck('graceful shutdown (SIGINT): connected clients get 3001 "shutdown" and try to reconnect', async () => {
        const c = client(strict.hubUrl, { token: connToken('erin'), minReconnectDelay: 2000, maxReconnectDelay: 3000 }, 'erin');
        c.connect();
        await nth(c, 'connected');
        const stopped = strict.stop();
        const ctx = await nth(c, 'connecting', 2);
        await stopped;
        assertEq(ctx.code, 3001, 'connecting code');
        assertEq(ctx.reason, 'shutdown', 'connecting reason');
      });
    }

    // ------------------------------------------------ 10. Chromium
    if (process.env.CENTRIFUGE_NO_BROWSER) {
      skip('chromium checks', 'CENTRIFUGE_NO_BROWSER is set');
    } else {
      const { browserChecks } = await import('./centrifuge_browser.mjs');
      await browserChecks({ work, servers, proxies, ccheck });
    }

    await check('no unhandled rejections from the SDK (exceptions in handlers, dispatch errors)', async () => {
      assert(unhandled.length === 0, unhandled.slice(0, 3).join(' | '));
    });
  } finally {
    for (const p of proxies) await p.close();
    await Promise.all(servers.map((s) => s.stop()));
    removeDir(work);
  }
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main().then(
    () => { process.exitCode = summary('centrifuge'); setTimeout(() => process.exit(process.exitCode), 200).unref(); },
    (e) => { console.log(`FAIL centrifuge suite crashed: ${e && e.stack ? e.stack : e}`); summary('centrifuge'); process.exit(1); },
  );
}

export { check, assert, assertEq, skip, closedPort, dataList };
