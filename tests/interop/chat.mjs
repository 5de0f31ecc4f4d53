// The chat page (`/chat`) and the first-party browser client (`/duplex.js`)
// of `duplex serve`, in Chromium (Debian's /usr/bin/chromium through
// playwright-core), next to the npm `centrifuge` SDK (centrifuge-js 5.x) in
// Node, against one development-mode server (no --config: anonymous clients,
// the default namespace with history, presence, join/leave and recovery).
//
//   1. /chat and /duplex.js are served with their types and the page CSP;
//   2. two pages chat in one room: history on entering, messages both ways,
//      markup in a message stays text, presence with nicks from "hello"s;
//   3. one page reaches the server through a TCP proxy the test cuts (its
//      origin is the proxy's): it shows "reconnecting…", the other sees it
//      leave and keeps writing; the page comes back by itself with every
//      message exactly once and in offset order, as /api/history has them,
//      and the other sees it join again; closing it is a leave;
//   4. duplex.js (in a page) and centrifuge-js (in Node), each through its own
//      cuttable proxy, on one channel: the same publications (offsets and
//      data), both cut while publishing continues, both recover the same
//      sequence; the same join/leave of a third client, presence, presence
//      stats and history (limit, reverse, since); after /api/history_remove
//      while both are away both say recovered false (duplex.js: `gap`); the
//      same reaction to API unsubscribe (2000) and to disconnect codes 3003,
//      4004 (reconnect), 3507, 4507 (stay disconnected);
//   5. server pings every second with a 1 s pong timeout (a second server with
//      a config): both clients answer `{}` and stay on their first socket;
//   6. duplex.js with tokens on that server: a valid HS256 token (its user in
//      presence), a bad signature (disconnected 3500, no reconnect), an
//      expired one (error 109, getToken, connected).
//
// Everything is on loopback; every wait is on a condition with a deadline;
// every process, proxy, page and client is closed at the end.
//
// Environment: DUPLEX_BIN (binary), CHROMIUM (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  assert, assertEq, check, makeCert, removeDir, skip, sleep, spkiHash,
  startDuplex, startProxy, summary, tempDir, until, launchChromium,
} from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const RUN = randomBytes(3).toString('hex');
const API_KEY = 'chat-interop-' + RUN;
const SECRET = 'chat-interop-secret-' + RUN;

/** An HS256 JWT of the claims. */
function jwt(claims, secret = SECRET) {
  const b64u = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
  const head = `${b64u({ alg: 'HS256', typ: 'JWT' })}.${b64u(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}
const nowSec = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------- helpers

/** POST /api/<method> that must succeed (dev mode: no key on loopback); returns `result`. */
async function api(server, method, body) {
  const r = await fetch(`${server.origin}/api/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  let j;
  try { j = JSON.parse(text); } catch { j = undefined; }
  assert(r.status === 200 && j && j.result !== undefined && !j.error, `/api/${method} ${JSON.stringify(body)}: ${r.status} ${text.slice(0, 200)}`);
  return j.result;
}


const key = (m) => `${m.offset}|${m.nick}|${m.text}`;
const pubKey = (p) => `${p.offset}|${JSON.stringify(p.data)}`;

/** Lines of what differs between two lists (first difference and lengths). */
function diff(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g === w) return null;
  let i = 0;
  while (i < got.length && i < want.length && JSON.stringify(got[i]) === JSON.stringify(want[i])) i++;
  return `${what}: ${got.length} items vs ${want.length} expected; first difference at ${i}: got ${JSON.stringify(got[i])}, expected ${JSON.stringify(want[i])}`;
}

function fail(problems) {
  const p = problems.filter(Boolean);
  if (p.length) throw new Error(p.join('; '));
}

// ---------------------------------------------------------------- the chat page

/** window.chat of a page, as plain data. */
const chatState = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.chat)));

function describe(c) {
  if (!c) return 'no window.chat';
  return `state ${c.state}, client ${c.client}, reconnects ${c.reconnects}, ${c.messages.length} messages `
    + `(last ${JSON.stringify(c.messages.slice(-3).map(key))}), online ${JSON.stringify(c.online)}, `
    + `joins ${c.joins.length}, leaves ${c.leaves.length}, gaps ${c.gaps.length}, failed ${JSON.stringify(c.failed)}`;
}

/** Waits until pred(window.chat) of the page holds. */
async function waitChat(page, pred, ms, what) {
  let c;
  await until(async () => pred(c = await chatState(page)), ms, () => `${what}; ${describe(c)}`);
  return c;
}

/** Types a message into the page's form and sends it with Enter. */
async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** The room's text messages as /api/history has them (oldest first). */
async function roomHistory(server, room) {
  const h = await api(server, 'history', { channel: room, limit: -1 });
  return (h.publications || [])
    .filter((p) => p.data && typeof p.data.text === 'string')
    .map((p) => ({ offset: p.offset, nick: p.data.nick, text: p.data.text }));
}

// ---------------------------------------------------------------- duplex.js in a page

// Installed in a page that loaded /duplex.js: one client and one subscription,
// every event and frame recorded; only plain data crosses back to Node.
function installDuplexHelpers() {
  const D = { log: [], frames: [], sockets: 0 };
  const plain = (x) => JSON.parse(JSON.stringify(x === undefined ? null : x, (k, v) => (v instanceof Error ? { code: v.code, message: v.message } : v)));
  class Tap extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const n = ++D.sockets;
      this.addEventListener('message', (e) => D.frames.push(`#${n} < ${e.data}`));
      this.addEventListener('close', (e) => D.frames.push(`#${n} closed ${e.code} ${e.reason}`));
    }
    send(data) { D.frames.push(`#${D.sockets} > ${data}`); super.send(data); }
  }
  D.tokenCalls = 0;
  D.start = (url, channel, opts) => {
    const o = { websocket: Tap, minReconnectDelay: 100, maxReconnectDelay: 1000, ...(opts || {}) };
    if (o.freshToken) { const t = o.freshToken; o.getToken = async () => { D.tokenCalls++; return t; }; delete o.freshToken; }
    D.c = new Duplex.Client(url || undefined, o);
    for (const ev of ['connecting', 'connected', 'disconnected', 'error']) D.c.on(ev, (ctx) => D.log.push({ on: 'client', ev, ctx: plain(ctx) }));
    if (channel) {
      D.s = D.c.newSubscription(channel, { joinLeave: true });
      for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'gap', 'error']) {
        D.s.on(ev, (ctx) => D.log.push({ on: 'sub', ev, ctx: plain(ctx) }));
      }
      D.s.subscribe();
    }
    D.c.connect();
    return true;
  };
  D.call = async (method, arg) => {
    try { return { ok: plain(await D.s[method](arg)) }; } catch (e) { return { error: { code: e.code, message: e.message } }; }
  };
  window.D = D;
}

/** Snapshot of the page's duplex.js log. */
const dlog = (page) => page.evaluate(() => ({ log: window.D.log, state: window.D.c.state, id: window.D.c.id, sockets: window.D.sockets, frames: window.D.frames.slice(-30) }));

// ---------------------------------------------------------------- centrifuge-js in Node

const liveNodeClients = new Set();

/** A centrifuge-js client on url (ws transport, frames recorded), optionally with a joinLeave subscription. */
function nodeClient(url, channel) {
  const n = { log: [], frames: [], sockets: 0 };
  class Tap extends WebSocket {
    constructor(u, p) {
      super(u, p);
      const k = ++n.sockets;
      this.addEventListener('message', (e) => n.frames.push(`#${k} < ${String(e.data)}`));
      this.addEventListener('close', (e) => n.frames.push(`#${k} closed ${e.code} ${e.reason}`));
    }
    send(d, ...rest) { n.frames.push(`#${n.sockets} > ${String(d)}`); return super.send(d, ...rest); }
  }
  n.c = new Centrifuge(url, { websocket: Tap, minReconnectDelay: 100, maxReconnectDelay: 1000 });
  for (const ev of ['connecting', 'connected', 'disconnected', 'error']) n.c.on(ev, (ctx) => n.log.push({ on: 'client', ev, ctx }));
  if (channel) {
    n.s = n.c.newSubscription(channel, { joinLeave: true });
    for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error']) {
      n.s.on(ev, (ctx) => n.log.push({ on: 'sub', ev, ctx }));
    }
    n.s.subscribe();
  }
  n.c.connect();
  liveNodeClients.add(n);
  return n;
}

const evs = (log, ev, on = 'sub') => log.filter((e) => e.on === on && e.ev === ev).map((e) => e.ctx);

// ---------------------------------------------------------------- checks

async function main() {
  const work = tempDir('duplex-chat-');
  const servers = [];
  const proxies = [];
  let context;
  try {
    const srv = await startDuplex([]);
    servers.push(srv);
    const proxy = async () => { const p = await startProxy(srv.port); proxies.push(p); return p; };

    await check('GET /chat (text/html) and /duplex.js (text/javascript) with the page CSP (script-src \'self\')', async () => {
      const problems = [];
      for (const [p, type] of [['/chat', /^text\/html/], ['/duplex.js', /^text\/javascript/]]) {
        const r = await fetch(srv.origin + p, { signal: AbortSignal.timeout(5000) });
        const body = await r.text();
        if (r.status !== 200) problems.push(`${p}: ${r.status}`);
        if (!type.test(r.headers.get('content-type') || '')) problems.push(`${p}: Content-Type ${r.headers.get('content-type')}`);
        if (!/script-src 'self'/.test(r.headers.get('content-security-policy') || '')) problems.push(`${p}: CSP ${r.headers.get('content-security-policy')}`);
        if (p === '/duplex.js' && !/Duplex/.test(body)) problems.push('/duplex.js does not define Duplex');
        if (p === '/chat' && !/<script src="\/duplex\.js">/.test(body)) problems.push('/chat does not load /duplex.js');
      }
      fail(problems);
    });

    if (!existsSync(CHROMIUM)) {
      skip('chromium checks', `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
      return;
    }
    // The certificate of the HTTP/2 check, trusted by its SPKI pin only.
    const tls = makeCert(work);
    context = await launchChromium(chromium, path.join(work, 'chromium-profile'), CHROMIUM, [`--ignore-certificate-errors-spki-list=${spkiHash(tls.cert)}`]);
    console.log(`chromium ${context.browser()?.version() ?? ''} (${CHROMIUM})`);
    const pageErrors = [];
    const newPage = async () => {
      const p = await context.newPage();
      p.setDefaultTimeout(10000);
      p.on('pageerror', (e) => pageErrors.push(String(e)));
      // Chromium logs every socket the blocked proxies refuse; anything else is a finding.
      p.on('console', (m) => {
        if (m.type() === 'error' && !/^WebSocket connection to .* failed/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
      });
      return p;
    };

    // ------------------------------------------------ 2, 3. the chat page
    const room = `room-${RUN}`;
    const proxyA = await proxy();
    const proxyB = await proxy();
    let pageA;
    let pageB;
    let ready = false;

    await check('chat: two pages in one room (each through its own proxy): the last messages on entering, messages both ways, markup stays text, presence with nicks', async () => {
      for (let i = 1; i <= 3; i++) await api(srv, 'publish', { channel: room, data: { nick: 'bot', text: `before ${i}` } });
      pageB = await newPage();
      await pageB.goto(`${proxyB.origin}/chat?room=${room}&nick=bob`, { waitUntil: 'load' });
      await waitChat(pageB, (c) => c.state === 'connected' && c.messages.length === 3, 8000, 'bob entered with 3 messages from history');
      pageA = await newPage();
      const resp = await pageA.goto(`${proxyA.origin}/chat?room=${room}&nick=alice`, { waitUntil: 'load' });
      assertEq(resp.status(), 200, '/chat through the proxy');
      const a = await waitChat(pageA, (c) => c.state === 'connected' && c.messages.length === 3 && Object.keys(c.online).length === 2,
        8000, 'alice entered with 3 messages and 2 online');
      await waitChat(pageB, (c) => c.joins.includes(a.client) && c.online[a.client] === 'alice', 8000, "bob sees alice's join and her nick");
      await waitChat(pageA, (c) => Object.values(c.online).includes('bob'), 8000, "alice knows bob's nick (his hello, from history)");
      await say(pageA, 'hi from alice <img src=x onerror="window.__xss=1"><b id=injected>x</b>');
      await waitChat(pageB, (c) => c.messages.length === 4, 8000, "bob gets alice's message");
      await say(pageB, 'hi alice ✓ 日本語');
      const b = await waitChat(pageB, (c) => c.messages.length === 5, 8000, 'bob gets his own message');
      const a2 = await waitChat(pageA, (c) => c.messages.length === 5, 8000, "alice gets bob's message");
      const want = await roomHistory(srv, room);
      fail([
        diff('alice messages', a2.messages.map(key), want.map(key)),
        diff('bob messages', b.messages.map(key), want.map(key)),
      ]);
      const injected = await pageB.evaluate(() => !!document.querySelector('#messages img, #injected') || !!window.__xss);
      assertEq(injected, false, 'markup in a message was interpreted');
      const rows = await pageA.evaluate(() => document.querySelectorAll('#messages li:not(.sys):not(.note)').length);
      assertEq(rows, 5, 'message rows in the page');
      assertEq(await pageA.textContent('#state'), 'connected', '#state text');
      ready = true;
    });

    if (ready) {
      await check("chat: alice's socket cut while bob keeps writing: \"reconnecting…\", bob sees her leave; she comes back by herself with every message once and in order (and what she typed meanwhile is sent), bob sees her join", async () => {
        const before = await chatState(pageA);
        const oldId = before.client;
        proxyA.block();
        proxyA.cut();
        await waitChat(pageA, (c) => c.state === 'reconnecting', 5000, 'alice sees the drop');
        assertEq(await pageA.textContent('#state'), 'reconnecting…', '#state text while away');
        await waitChat(pageB, (c) => c.leaves.includes(oldId) && !(oldId in c.online), 5000, "bob sees alice's leave");
        await say(pageA, 'typed by alice while away'); // sent once she is back
        for (let i = 1; i <= 5; i++) await say(pageB, `while alice is away ${i}`);
        await waitChat(pageB, (c) => c.messages.length === 10, 8000, "bob's 5 messages");
        await until(() => proxyA.refused() >= 1, 5000, 'alice retries (refused by the blocked proxy)');
        proxyA.unblock();
        for (let i = 1; i <= 3; i++) await say(pageB, `as alice comes back ${i}`);
        const a = await waitChat(pageA, (c) => c.state === 'connected' && c.reconnects === 1 && c.messages.length === 14, 12000,
          'alice back with 14 messages');
        const b = await waitChat(pageB, (c) => c.messages.length === 14 && c.joins.includes(a.client) && c.online[a.client] === 'alice',
          8000, "bob sees alice's new connection join, with her nick");
        await sleep(300); // anything late (a duplicate) would land now
        const a2 = await chatState(pageA);
        const want = await roomHistory(srv, room);
        const rows = await pageA.evaluate(() => [...document.querySelectorAll('#messages li:not(.sys):not(.note)')].map((li) => li.textContent));
        fail([
          diff('alice messages', a2.messages.map(key), want.map(key)),
          diff('bob messages', b.messages.map(key), want.map(key)),
          rows.length !== want.length ? `alice shows ${rows.length} message rows, expected ${want.length}` : null,
          a.client === oldId ? 'alice kept her client id' : null,
          a2.subscribed && a2.subscribed.wasRecovering && a2.subscribed.recovered ? null : `alice's resubscribe: ${JSON.stringify(a2.subscribed)}`,
          a2.gaps.length ? `gaps ${JSON.stringify(a2.gaps)}` : null,
          a2.failed.length ? `failed ${JSON.stringify(a2.failed)}` : null,
          want.filter((m) => m.text === 'typed by alice while away' && m.nick === 'alice').length === 1 ? null : 'the message alice typed while away is not in the history once',
          Object.keys(a2.online).length === 2 ? null : `alice's online ${JSON.stringify(a2.online)}`,
        ]);
        assertEq(await pageA.textContent('#state'), 'connected', '#state text after');
        console.log(`  offsets ${want[0].offset}..${want.at(-1).offset} (${want.length} messages, 9 while alice was away or coming back)`);
      });

      await check('chat: bob away while the room\'s history is removed (/api/history_remove): his page says so (gap), keeps what it had, then gets the next message', async () => {
        const before = await chatState(pageB);
        proxyB.block();
        proxyB.cut();
        await waitChat(pageB, (c) => c.state === 'reconnecting', 5000, 'bob sees the drop');
        await api(srv, 'publish', { channel: room, data: { nick: 'bot', text: 'lost 1' } });
        await api(srv, 'publish', { channel: room, data: { nick: 'bot', text: 'lost 2' } });
        await api(srv, 'history_remove', { channel: room });
        await until(() => proxyB.refused() >= 1, 5000, 'bob retries (refused by the blocked proxy)');
        proxyB.unblock();
        const b = await waitChat(pageB, (c) => c.state === 'connected' && c.gaps.length === 1, 12000, 'bob back, with a gap');
        const r = await api(srv, 'publish', { channel: room, data: { nick: 'bot', text: 'after the gap' } });
        const b2 = await waitChat(pageB, (c) => c.messages.length === before.messages.length + 1, 8000, 'bob gets the next message');
        const notes = await pageB.evaluate(() => [...document.querySelectorAll('#messages li.note')].map((li) => li.textContent));
        fail([
          diff('bob messages', b2.messages.map(key), [...before.messages.map(key), `${r.offset}|bot|after the gap`]),
          b.subscribed.wasRecovering && !b.subscribed.recovered ? null : `bob's resubscribe ${JSON.stringify(b.subscribed)}`,
          b.gaps[0].epochChanged === false ? null : `gap ${JSON.stringify(b.gaps[0])}`,
          notes.some((t) => /while you were away/.test(t)) ? null : `no note about the gap in the page: ${JSON.stringify(notes)}`,
        ]);
      });

      await check('chat: alice closes her page: bob sees her leave, presence (page and /api/presence) is bob alone', async () => {
        const a = await chatState(pageA);
        await pageA.close();
        pageA = null;
        const b = await waitChat(pageB, (c) => c.leaves.includes(a.client) && Object.keys(c.online).length === 1, 8000, "bob sees alice's leave");
        const pres = await api(srv, 'presence', { channel: room });
        assertEq(JSON.stringify(Object.keys(pres.presence)), JSON.stringify([b.client]), '/api/presence clients');
        assertEq(await pageB.textContent('#count'), '1', '#count');
      });
    } else {
      skip('chat reconnect checks', 'the two pages did not chat');
    }
    if (pageA) await pageA.close();
    if (pageB) await pageB.close();

    // ------------------------------------------------ 4. duplex.js vs centrifuge-js
    const ch = `interop-${RUN}`;
    const proxyC = await proxy();
    const proxyN = await proxy();
    const pageC = await newPage();
    let node;
    let both = false;
    const snap = async () => ({ d: await dlog(pageC), n: { log: node.log, state: node.c.state, frames: node.frames.slice(-30) } });
    const pubs = (s) => ({ d: evs(s.d.log, 'publication').map(pubKey), n: evs(s.n.log, 'publication').map(pubKey) });
    const say2 = (s) => `duplex.js: ${s.d.state}, events ${s.d.log.slice(-8).map((e) => e.ev + (e.ctx && e.ctx.code !== undefined ? `(${e.ctx.code})` : '')).join(',')}; `
      + `centrifuge-js: ${s.n.state}, events ${s.n.log.slice(-8).map((e) => e.ev + (e.ctx && e.ctx.code !== undefined ? `(${e.ctx.code})` : '')).join(',')}`;
    let s;
    const waitBoth = (pred, ms, what) => until(async () => pred(s = await snap()), ms, () => `${what}; ${s ? say2(s) : ''}`);
    const published = [];
    const publish = async (n) => { const r = await api(srv, 'publish', { channel: ch, data: { n, run: RUN } }); published.push(`${r.offset}|${JSON.stringify({ n, run: RUN })}`); };
    const dropBoth = async (during) => {
      proxyC.block(); proxyN.block();
      proxyC.cut(); proxyN.cut();
      await waitBoth((x) => x.d.state === 'connecting' && x.n.state === 'connecting', 5000, 'both see the drop');
      await during();
      await until(() => proxyC.refused() >= 1 && proxyN.refused() >= 1, 5000, 'both retry against the blocked proxies');
      proxyC.unblock(); proxyN.unblock();
    };

    await check('duplex.js (Chromium) and centrifuge-js (Node) on one channel: the same 20 publications, offsets and data', async () => {
      await pageC.goto(`${proxyC.origin}/chat`, { waitUntil: 'load' });
      assertEq(await pageC.evaluate(() => typeof window.Duplex), 'object', 'typeof Duplex');
      await pageC.evaluate(installDuplexHelpers);
      await pageC.evaluate((c) => window.D.start(null, c), ch);
      node = nodeClient(proxyN.wsUrl, ch);
      await waitBoth((x) => evs(x.d.log, 'subscribed').length === 1 && evs(x.n.log, 'subscribed').length === 1, 8000, 'both subscribed');
      for (let n = 1; n <= 20; n++) await publish(n);
      await waitBoth((x) => { const p = pubs(x); return p.d.length >= 20 && p.n.length >= 20; }, 8000, 'both got 20');
      const p = pubs(s);
      fail([diff('duplex.js', p.d, published), diff('centrifuge-js', p.n, published)]);
      const sub = evs(s.d.log, 'subscribed')[0];
      assertEq(JSON.stringify([sub.recovered, sub.wasRecovering, sub.recoverable, sub.position && sub.position.offset]), '[false,false,true,0]',
        'duplex.js first subscribed [recovered, wasRecovering, recoverable, position.offset]');
      both = true;
    });

    if (both) {
      await check('both cut (proxies) while 10 more are published: both resubscribe with recover, recovered true, the same 30 in order', async () => {
        await dropBoth(async () => { for (let n = 21; n <= 30; n++) await publish(n); });
        await waitBoth((x) => { const p = pubs(x); return p.d.length >= 30 && p.n.length >= 30 && x.d.state === 'connected' && x.n.state === 'connected'; },
          12000, 'both back with 30');
        await sleep(200);
        s = await snap();
        const p = pubs(s);
        const d2 = evs(s.d.log, 'subscribed')[1];
        const n2 = evs(s.n.log, 'subscribed')[1];
        const sent = s.d.frames.map((f) => /^#\d+ > (.*)$/s.exec(f)).filter(Boolean).flatMap((m) => m[1].split('\n')).map((l) => JSON.parse(l)).filter((c) => c.subscribe);
        fail([
          diff('duplex.js', p.d, published), diff('centrifuge-js', p.n, published),
          d2 && d2.wasRecovering && d2.recovered ? null : `duplex.js resubscribe ${JSON.stringify(d2)}`,
          n2 && n2.wasRecovering && n2.recovered ? null : `centrifuge-js resubscribe ${JSON.stringify(n2)}`,
          evs(s.d.log, 'gap').length ? 'duplex.js reported a gap' : null,
          sent.at(-1) && sent.at(-1).subscribe.recover === true && sent.at(-1).subscribe.offset === 20 && sent.at(-1).subscribe.epoch === d2.position.epoch
            ? null : `duplex.js resubscribe command ${JSON.stringify(sent.at(-1))}`,
        ]);
      });

      await check('join/leave of a third client, presence, presence_stats, history (position, limit+reverse, since): duplex.js and centrifuge-js agree (and with /api)', async () => {
        const third = nodeClient(srv.origin.replace('http', 'ws') + '/connection/websocket', ch);
        await until(() => evs(third.log, 'subscribed').length === 1, 8000, 'third subscribed');
        const id3 = evs(third.log, 'connected', 'client')[0].client;
        third.s.unsubscribe();
        await waitBoth((x) => [x.d.log, x.n.log].every((l) => evs(l, 'join').some((j) => j.info.client === id3) && evs(l, 'leave').some((j) => j.info.client === id3)),
          8000, `both see join and leave of ${id3}`);
        third.c.disconnect();
        const dId = s.d.id;
        const nId = (evs(node.log, 'connected', 'client').at(-1) || {}).client;
        const D = (m, a) => pageC.evaluate(([m2, a2]) => window.D.call(m2, a2), [m, a]);
        const N = async (m, a) => { try { return { ok: JSON.parse(JSON.stringify(await node.s[m](a))) } } catch (e) { return { error: { code: e.code, message: e.message } }; } };
        const problems = [];
        const dp = await D('presence'); const np = await N('presence');
        const ap = await api(srv, 'presence', { channel: ch });
        const ids = (x) => JSON.stringify(Object.keys(x || {}).sort());
        const dPres = dp.ok; const nPres = np.ok && np.ok.clients;
        if (ids(dPres) !== ids(nPres) || ids(dPres) !== ids(ap.presence) || ids(dPres) !== JSON.stringify([dId, nId].sort())) {
          problems.push(`presence: duplex.js ${ids(dPres)}, centrifuge-js ${ids(nPres)}, /api ${ids(ap.presence)}, clients ${dId} ${nId}`);
        }
        const ds = await D('presenceStats'); const ns = await N('presenceStats');
        const stats = (r) => (r.ok ? `${r.ok.numClients}/${r.ok.numUsers}` : JSON.stringify(r));
        if (stats(ds) !== '2/1' || stats(ns) !== stats(ds)) {
          problems.push(`presence stats: duplex.js ${JSON.stringify(ds)}, centrifuge-js ${JSON.stringify(ns)}`);
        }
        const hs = (r) => r.ok ? { offset: r.ok.offset, epoch: r.ok.epoch, pubs: (r.ok.publications || []).map(pubKey) } : r;
        const epoch = evs(s.d.log, 'subscribed').at(-1).position.epoch;
        for (const opts of [{}, { limit: 5, reverse: true }, { limit: 5, since: { offset: 10, epoch } }, { limit: -1 }]) {
          const d = hs(await D('history', opts));
          const n = hs(await N('history', opts));
          const a = await api(srv, 'history', { channel: ch, ...opts });
          const want = { offset: a.offset, epoch: a.epoch, pubs: (a.publications || []).map(pubKey) };
          if (JSON.stringify(d) !== JSON.stringify(n) || JSON.stringify(d) !== JSON.stringify(want)) {
            problems.push(`history ${JSON.stringify(opts)}: duplex.js ${JSON.stringify(d).slice(0, 200)}, centrifuge-js ${JSON.stringify(n).slice(0, 200)}, /api ${JSON.stringify(want).slice(0, 200)}`);
          }
        }
        const since = hs(await D('history', { limit: 5, since: { offset: 10, epoch } }));
        if (since.pubs && since.pubs.join(',') !== published.slice(10, 15).join(',')) problems.push(`history since 10: ${since.pubs}`);
        fail(problems);
      });

      await check('/api/history_remove while both are away: both resubscribe with recovered false (duplex.js emits gap), nothing replayed, then the same new publication', async () => {
        const before = pubs(await snap());
        await dropBoth(async () => {
          await publish(31); await publish(32);
          await api(srv, 'history_remove', { channel: ch });
        });
        await waitBoth((x) => evs(x.d.log, 'subscribed').length === 3 && evs(x.n.log, 'subscribed').length === 3, 12000, 'both resubscribed');
        const lost = published.splice(30, 2);
        await publish(33);
        await waitBoth((x) => { const p = pubs(x); return p.d.length > before.d.length && p.n.length > before.n.length; }, 8000, 'both get #33');
        await sleep(200);
        s = await snap();
        const p = pubs(s);
        const d3 = evs(s.d.log, 'subscribed')[2];
        const n3 = evs(s.n.log, 'subscribed')[2];
        const gap = evs(s.d.log, 'gap');
        fail([
          diff('duplex.js', p.d, published), diff('centrifuge-js', p.n, published),
          d3.wasRecovering && !d3.recovered ? null : `duplex.js subscribed ${JSON.stringify(d3)}`,
          n3.wasRecovering && !n3.recovered ? null : `centrifuge-js subscribed ${JSON.stringify(n3)}`,
          gap.length === 1 && gap[0].from && gap[0].from.offset === 30 && gap[0].epochChanged === false ? null : `duplex.js gap events ${JSON.stringify(gap)}`,
        ]);
        console.log(`  lost while away: ${lost.join(', ')}; both then got ${published.at(-1)}`);
      });

      await check('API unsubscribe (2000) and disconnect codes 3003, 4004 (reconnect), 3507, 4507 (stay disconnected): duplex.js does what centrifuge-js does', async () => {
        const problems = [];
        const ids = async () => { const x = await snap(); return { d: x.d.id, n: (evs(x.n.log, 'connected', 'client').at(-1) || {}).client }; };
        let id = await ids();
        for (const cid of [id.d, id.n]) await api(srv, 'unsubscribe', { user: '', client: cid, channel: ch });
        await waitBoth((x) => evs(x.d.log, 'unsubscribed').length === 1 && evs(x.n.log, 'unsubscribed').length === 1, 8000, 'both unsubscribed');
        const du = evs(s.d.log, 'unsubscribed')[0];
        const nu = evs(s.n.log, 'unsubscribed')[0];
        if (du.code !== 2000 || nu.code !== 2000) problems.push(`unsubscribed: duplex.js ${JSON.stringify(du)}, centrifuge-js ${JSON.stringify(nu)}`);
        for (const code of [3003, 4004, 3507, 4507]) {
          id = await ids();
          const count = (x) => ({ d: [evs(x.d.log, 'connected', 'client').length, evs(x.d.log, 'disconnected', 'client').length], n: [evs(x.n.log, 'connected', 'client').length, evs(x.n.log, 'disconnected', 'client').length] });
          const c0 = count(await snap());
          for (const cid of [id.d, id.n]) await api(srv, 'disconnect', { user: '', client: cid, disconnect: { code, reason: `test ${code}` } });
          const moved = (x) => { const c = count(x); return (c.d[0] > c0.d[0] || c.d[1] > c0.d[1]) && (c.n[0] > c0.n[0] || c.n[1] > c0.n[1]); };
          await waitBoth(moved, 8000, `both react to ${code}`);
          await sleep(300); // a reconnect that should not happen would show now
          const c1 = count(s = await snap());
          const outcome = (k) => `${c1[k][0] - c0[k][0]} connected, ${c1[k][1] - c0[k][1]} disconnected`;
          const terminal = (code >= 3500 && code < 4000) || code >= 4500;
          const want = terminal ? '0 connected, 1 disconnected' : '1 connected, 0 disconnected';
          if (outcome('d') !== want || outcome('n') !== want) problems.push(`${code}: duplex.js ${outcome('d')}, centrifuge-js ${outcome('n')}, expected ${want}`);
          const dd = evs(s.d.log, 'disconnected', 'client').at(-1);
          const nd = evs(s.n.log, 'disconnected', 'client').at(-1);
          if (terminal) {
            if (!dd || dd.code !== code || !nd || nd.code !== code) problems.push(`${code}: disconnected duplex.js ${JSON.stringify(dd)}, centrifuge-js ${JSON.stringify(nd)}`);
            await pageC.evaluate(() => window.D.c.connect());
            node.c.connect();
            await waitBoth((x) => x.d.state === 'connected' && x.n.state === 'connected', 8000, `both connected again after ${code}`);
          } else {
            const dc = evs(s.d.log, 'connecting', 'client').at(-1);
            if (!dc || dc.code !== code) problems.push(`${code}: duplex.js connecting ${JSON.stringify(dc)}`);
          }
        }
        fail(problems);
      });
    } else {
      skip('duplex.js vs centrifuge-js: recovery, presence, history, codes', 'the two clients did not both subscribe');
    }
    await pageC.evaluate(() => window.D && window.D.c && window.D.c.disconnect()).catch(() => {});
    if (node) node.c.disconnect();

    // ------------------------------------------------ 5. a configured server: pings, tokens
    let ps;
    await check('server pings every 1 s, pong timeout 1 s: duplex.js and centrifuge-js answer {} and stay on one socket', async () => {
      const file = path.join(work, 'ping.toml');
      writeFileSync(file, `
[auth]
allow_anonymous = true
api_key = "${API_KEY}"
token_hmac_secret = "${SECRET}"

[hub]
ping_interval = "1s"
pong_timeout = "1s"

[channels]
history_size = 10
history_ttl = "60s"
presence = true
join_leave = true
subscribe = "anonymous"
publish = "subscribers"
recovery = true
`);
      ps = await startDuplex(['--config', file]);
      servers.push(ps);
      const page = await newPage();
      try {
        await page.goto(`${ps.origin}/chat`, { waitUntil: 'load' });
        await page.evaluate(installDuplexHelpers);
        await page.evaluate(() => window.D.start(null, 'pings'));
        const n = nodeClient(`ws://127.0.0.1:${ps.port}/connection/websocket`, 'pings');
        const pings = (frames, dir) => frames.filter((f) => new RegExp(`^#1 ${dir} \\{\\}$`).test(f)).length;
        let d;
        await until(async () => { d = await page.evaluate(() => ({ frames: window.D.frames, state: window.D.c.state, sockets: window.D.sockets })); return pings(d.frames, '<') >= 3 && pings(n.frames, '<') >= 3; },
          8000, () => `3 pings each; duplex.js ${d && d.state}, ${d && pings(d.frames, '<')} pings; centrifuge-js ${n.c.state}, ${pings(n.frames, '<')} pings`);
        const connect = d.frames.map((f) => /^#1 < (\{"id":1,"connect".*)$/.exec(f)).find(Boolean);
        fail([
          connect && JSON.parse(connect[1]).connect.ping === 1 ? null : `connect reply ${connect && connect[1]}`,
          d.state === 'connected' && d.sockets === 1 ? null : `duplex.js ${d.state} on ${d.sockets} sockets`,
          n.c.state === 'connected' && n.sockets === 1 ? null : `centrifuge-js ${n.c.state} on ${n.sockets} sockets`,
          pings(d.frames, '>') >= 2 ? null : `duplex.js sent ${pings(d.frames, '>')} pongs`,
          pings(n.frames, '>') >= 2 ? null : `centrifuge-js sent ${pings(n.frames, '>')} pongs`,
        ]);
        n.c.disconnect();
      } finally {
        await page.close().catch(() => {});
      }
    });

    if (ps) {
      await check('duplex.js tokens: a valid HS256 token (user in presence), a bad signature (disconnected 3500, one socket), an expired one (error 109, getToken, connected)', async () => {
        const page = await newPage();
        const run = (opts) => page.evaluate(async ([o, ch]) => {
          window.D.start(null, ch, o);
          const end = Date.now() + 8000;
          const settled = () => window.D.log.find((e) => e.on === 'client' && (e.ev === 'connected' || e.ev === 'disconnected'));
          while (!settled() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
          await new Promise((r) => setTimeout(r, 300)); // a reconnect that should not happen would show now
          const out = { log: window.D.log.map((e) => `${e.on}:${e.ev}${e.ctx && e.ctx.code !== undefined ? '(' + e.ctx.code + ')' : ''}${e.ctx && e.ctx.error ? '(' + e.ctx.error.code + ')' : ''}`), sockets: window.D.sockets, tokenCalls: window.D.tokenCalls, state: window.D.c.state };
          if (out.state === 'connected') out.presence = await window.D.call('presence');
          window.D.c.disconnect();
          return out;
        }, [opts, `tok-${RUN}`]);
        const fresh = async (o) => { await page.goto(`${ps.origin}/chat`, { waitUntil: 'load' }); await page.evaluate(installDuplexHelpers); return run(o); };
        const problems = [];
        try {
          const ok = await fresh({ token: jwt({ sub: 'alice', iat: nowSec(), exp: nowSec() + 3600 }) });
          const users = ok.presence && ok.presence.ok ? Object.values(ok.presence.ok).map((i) => i.user) : [];
          if (ok.state !== 'connected' || JSON.stringify(users) !== '["alice"]') problems.push(`valid token: ${JSON.stringify(ok)}`);
          const bad = await fresh({ token: jwt({ sub: 'mallory', exp: nowSec() + 3600 }, 'not-the-secret') });
          if (bad.state !== 'disconnected' || bad.sockets !== 1 || !bad.log.includes('client:disconnected(3500)')) problems.push(`bad signature: ${JSON.stringify(bad)}`);
          const exp = await fresh({ token: jwt({ sub: 'alice', iat: nowSec() - 120, exp: nowSec() - 60 }), freshToken: jwt({ sub: 'alice', iat: nowSec(), exp: nowSec() + 3600 }) });
          if (exp.state !== 'connected' || exp.tokenCalls !== 1 || !exp.log.includes('client:error(109)')) problems.push(`expired token: ${JSON.stringify(exp)}`);
        } finally {
          await page.close().catch(() => {});
        }
        fail(problems);
      });
    }

    await check('HTTP/2: /chat over https: both pages and their WebSockets ride h2 connections (RFC 8441, counted by the server), messages both ways, permessage-deflate', async () => {
      const hs = await startDuplex(['--tls-cert', tls.cert, '--tls-key', tls.key]);
      servers.push(hs);
      const room = `h2-${RUN}`;
      const [p1, p2] = [await newPage(), await newPage()];
      try {
        await p1.goto(`${hs.origin}/chat?room=${room}&nick=ann`, { waitUntil: 'load' });
        await p2.goto(`${hs.origin}/chat?room=${room}&nick=ben`, { waitUntil: 'load' });
        for (const p of [p1, p2]) {
          assertEq(await p.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2', 'page protocol');
          await waitChat(p, (c) => c.state === 'connected' && c.subscribed, 8000, 'connected over https');
        }
        await say(p1, 'over h2 from ann');
        await say(p2, 'over h2 from ben ✓');
        const want = ['over h2 from ann', 'over h2 from ben ✓'];
        for (const p of [p1, p2]) {
          const c = await waitChat(p, (x) => x.messages.length === 2, 8000, 'both messages');
          assertEq(JSON.stringify(c.messages.map((m) => m.text)), JSON.stringify(want), 'messages');
        }
        // The pages' sockets, as the server counts them: over HTTP/2 only,
        // and each compressed (permessage-deflate negotiated, as logged).
        const metrics = await (await p1.evaluate(async () => (await fetch('/metrics')).text()));
        const h2 = /^duplex_websockets_opened_total\{http="2"\} (\d+)/m.exec(metrics);
        assert(h2 && Number(h2[1]) >= 2, 'WebSockets over HTTP/2: ' + (metrics.match(/^duplex_websockets_opened_total.*$/gm) || ['none']).join('; '));
        // The HTTP/1.1 series is there from the start, at 0 until a socket opens over it.
        const h1 = /^duplex_websockets_opened_total\{http="1\.1"\} (\d+)/m.exec(metrics);
        assert(!h1 || Number(h1[1]) === 0, 'a socket went over HTTP/1.1: ' + h1?.[0]);
        await p1.close();
        await p2.close();
        await until(async () => /path="\/connection\/websocket" http="2" extensions="permessage-deflate/.test(hs.log()), 8000,
          () => 'no HTTP/2 socket with permessage-deflate in the server log:\n' + hs.log().split('\n').filter((l) => /connection closed/.test(l)).join('\n'));
      } finally {
        await p1.close().catch(() => {});
        await p2.close().catch(() => {});
      }
    });

    await check('no uncaught errors in the pages', async () => {
      assert(pageErrors.length === 0, pageErrors.slice(0, 5).join(' | '));
    });
  } finally {
    for (const n of liveNodeClients) { try { n.c.disconnect(); } catch { /* gone */ } }
    if (context) await context.close().catch(() => {});
    for (const p of proxies) await p.close();
    await Promise.all(servers.map((x) => x.stop()));
    removeDir(work);
  }
}

let code = 1;
try {
  await main();
  code = summary('chat');
} catch (e) {
  console.log(`FAIL chat suite aborted: ${e && e.stack ? e.stack : e}`);
  summary('chat');
  code = 1;
}
process.exit(code);
