// The Protobuf encoding of the Centrifugo front (subprotocol
// `centrifuge-protobuf`) and the `/game` demo, against one development-mode
// `duplex serve`:
//
//   1. /game is served with the page CSP and loads /duplex.js; the echo
//      tester at / links to it;
//   2. raw sockets (Node `ws`): the subprotocol is selected when offered,
//      JSON stays the default; malformed Protobuf, a length prefix past the
//      frame and text on a Protobuf socket are disconnect 3501;
//   3. two Chromium pages on /game exchange binary moves: each page's
//      moves reach the other byte for byte and in order (offsets rising),
//      at most 30 a second per player; markers move, the page shows its
//      round trip; /api/history holds the same bytes (b64data);
//   4. centrifuge-js's Protobuf build (Node, `ws`) and /duplex.js with
//      protocol 'protobuf' (Chromium), each through a TCP proxy the test
//      cuts, run one scenario on one channel and agree: binary publications
//      from both (the same offsets and bytes), both cut while more are
//      published (both recover exactly), history (all, limit + reverse),
//      presence and presence stats;
//   5. JSON and Protobuf clients on one channel: JSON data from either
//      reaches both (objects in JSON, the UTF-8 of the JSON in Protobuf); a
//      binary publication reaches centrifuge-js (JSON) as null data without
//      breaking it and /duplex.js (JSON) as the same bytes (b64data);
//   6. centrifuge-js's own Protobuf browser bundle
//      (dist/centrifuge.protobuf.js) in a Chromium page and its Protobuf
//      build in Node exchange binary publications, byte for byte, in order,
//      with the same offsets.
//
// Everything is on loopback; every wait is on a condition with a deadline;
// every process, proxy, page and client is closed at the end.
//
// Environment: DUPLEX_BIN (binary), CHROMIUM (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { Centrifuge as CentrifugeJson } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import {
  assert, assertEq, check, removeDir, skip, sleep, startDuplex, startProxy,
  summary, tempDir, until, launchChromium,
} from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const RUN = randomBytes(3).toString('hex');

const hex = (b) => Buffer.from(b).toString('hex');

async function api(server, method, body) {
  const r = await fetch(`${server.origin}/api/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const j = await r.json();
  assert(r.status === 200 && j.result !== undefined, `/api/${method}: ${r.status} ${JSON.stringify(j)}`);
  return j.result;
}

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

/** A raw socket; resolves once open. Records messages and the close. */
function rawSocket(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const s = { ws, messages: [], closed: null };
    ws.binaryType = 'nodebuffer';
    ws.on('message', (d, binary) => s.messages.push({ binary, d }));
    ws.on('close', (code, reason) => { s.closed = { code, reason: reason.toString() }; });
    ws.on('open', () => resolve(s));
    ws.on('error', reject);
  });
}

/** A varint-length-delimited frame of raw message bodies. */
function delimited(...bodies) {
  const out = [];
  for (const b of bodies) {
    let n = b.length;
    while (n >= 128) { out.push((n & 127) | 128); n >>>= 7; }
    out.push(n);
    out.push(...b);
  }
  return Buffer.from(out);
}

// ---------------------------------------------------------------- /duplex.js in a page

// Installed in a page that loaded /duplex.js: one client and one
// subscription, every event recorded with payloads as hex.
function installDuplexHelpers() {
  const D = { log: [] };
  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const plain = (x) => JSON.parse(JSON.stringify(x === undefined ? null : x, (k, v) => {
    if (v instanceof Uint8Array) return { hex: toHex(v) };
    if (v instanceof Error) return { code: v.code, message: v.message };
    return v;
  }));
  D.start = (url, channel, opts) => {
    D.c = new Duplex.Client(url || undefined, { minReconnectDelay: 100, maxReconnectDelay: 1000, ...(opts || {}) });
    for (const ev of ['connecting', 'connected', 'disconnected', 'error']) D.c.on(ev, (ctx) => D.log.push({ on: 'client', ev, ctx: plain(ctx) }));
    D.s = D.c.newSubscription(channel, { joinLeave: true });
    for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'gap', 'error']) {
      D.s.on(ev, (ctx) => D.log.push({ on: 'sub', ev, ctx: plain(ctx) }));
    }
    D.s.subscribe();
    D.c.connect();
    return true;
  };
  D.fromHex = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
  D.call = async (method, arg) => {
    try { return { ok: plain(await D.s[method](arg)) }; } catch (e) { return { error: { code: e.code, message: e.message } }; }
  };
  window.D = D;
}

const dlog = (page) => page.evaluate(() => ({ log: window.D.log, state: window.D.c.state, id: window.D.c.id }));
const evs = (log, ev, on = 'sub') => log.filter((e) => e.on === on && e.ev === ev).map((e) => e.ctx);

// ---------------------------------------------------------------- centrifuge-js in Node

const liveNodeClients = new Set();

/** A centrifuge-js client (Protobuf build, or JSON) with a joinLeave subscription. */
function nodeClient(Centrifuge, url, channel) {
  const n = { log: [] };
  n.c = new Centrifuge(url, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 1000 });
  for (const ev of ['connecting', 'connected', 'disconnected', 'error']) n.c.on(ev, (ctx) => n.log.push({ on: 'client', ev, ctx }));
  n.s = n.c.newSubscription(channel, { joinLeave: true });
  for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error']) {
    n.s.on(ev, (ctx) => n.log.push({ on: 'sub', ev, ctx }));
  }
  n.s.subscribe();
  n.c.connect();
  liveNodeClients.add(n);
  return n;
}

// ---------------------------------------------------------------- checks

async function main() {
  const work = tempDir('duplex-game-');
  const servers = [];
  const proxies = [];
  let context;
  try {
    const srv = await startDuplex([]);
    servers.push(srv);
    const ws = `ws://127.0.0.1:${srv.port}/connection/websocket`;

    await check('GET /game (text/html, the page CSP, loads /duplex.js); the echo tester at / links to it', async () => {
      const r = await fetch(srv.origin + '/game', { signal: AbortSignal.timeout(5000) });
      const body = await r.text();
      const problems = [];
      if (r.status !== 200) problems.push(`/game: ${r.status}`);
      if (!/^text\/html/.test(r.headers.get('content-type') || '')) problems.push(`Content-Type ${r.headers.get('content-type')}`);
      if (!/script-src 'self'/.test(r.headers.get('content-security-policy') || '')) problems.push(`CSP ${r.headers.get('content-security-policy')}`);
      if (!/<script src="\/duplex\.js">/.test(body)) problems.push('/game does not load /duplex.js');
      if (/innerHTML/.test(body)) problems.push('/game uses innerHTML');
      const index = await (await fetch(srv.origin + '/', { signal: AbortSignal.timeout(5000) })).text();
      if (!/href="\/game"/.test(index)) problems.push('/ does not link to /game');
      fail(problems);
    });

    await check('raw sockets: centrifuge-protobuf is selected when offered (JSON without it); malformed Protobuf, a length prefix past the frame, text on a Protobuf socket: 3501', async () => {
      const pb = await rawSocket(ws, ['centrifuge-protobuf']);
      assertEq(pb.ws.protocol, 'centrifuge-protobuf', 'selected subprotocol');
      // Command { id: 1, connect: {} }
      pb.ws.send(delimited([0x08, 0x01, 0x22, 0x00]));
      await until(() => pb.messages.length, 5000, 'the connect reply');
      const m = pb.messages[0];
      assert(m.binary && m.d[1] === 0x08 && m.d[2] === 0x01, `a binary reply to id 1: ${hex(m.d)}`);
      pb.ws.close();
      const js = await rawSocket(ws);
      assertEq(js.ws.protocol, '', 'no subprotocol without the offer');
      js.ws.close();
      const cases = [
        ['not a message', Buffer.from([0x05, 0xff, 0xff])],
        ['a length prefix past the frame', Buffer.from([0x7f, 0x08, 0x01])],
        ['text', JSON.stringify({ id: 1, connect: {} })],
      ];
      for (const [what, frame] of cases) {
        const s = await rawSocket(ws, ['centrifuge-protobuf']);
        s.ws.send(frame);
        await until(() => s.closed, 5000, `${what}: closed`);
        assertEq(s.closed.code, 3501, `${what}: close code`);
      }
    });

    if (!existsSync(CHROMIUM)) {
      skip('chromium checks', `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
      return;
    }
    context = await launchChromium(chromium, path.join(work, 'chromium-profile'), CHROMIUM);
    console.log(`chromium ${context.browser()?.version() ?? ''} (${CHROMIUM})`);
    const pageErrors = [];
    const newPage = async () => {
      const p = await context.newPage();
      p.setDefaultTimeout(10000);
      p.on('pageerror', (e) => pageErrors.push(String(e)));
      p.on('console', (m) => {
        if (m.type() === 'error' && !/^WebSocket connection to .* failed/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
      });
      return p;
    };

    // ------------------------------------------------ 3. /game
    await check('/game: two pages see each other\'s binary moves, byte for byte and in order, at most 30 a second each; markers move; the round trip is shown; /api/history holds the same bytes', async () => {
      const room = `r${RUN}`;
      const state = (p) => p.evaluate(() => JSON.parse(JSON.stringify(window.game)));
      const pageB = await newPage();
      await pageB.goto(`${srv.origin}/game?room=${room}`, { waitUntil: 'load' });
      await until(async () => (await state(pageB)).sent.length === 1, 8000, 'B announced itself');
      const pageA = await newPage();
      await pageA.goto(`${srv.origin}/game?room=${room}`, { waitUntil: 'load' });
      await until(async () => { const s = await state(pageA); return s.sent.length === 1 && s.state === 'connected'; }, 8000, 'A announced itself');
      const b0 = await state(pageB);
      await until(async () => Object.keys((await state(pageA)).players).length === 2, 8000, 'A shows B (from history and presence)');
      // A moves with the mouse over its board, B by script, both at once.
      const box = await pageA.locator('#board').boundingBox();
      const t0 = Date.now();
      const mouse = (async () => {
        for (let i = 0; i <= 60; i++) {
          await pageA.mouse.move(box.x + 5 + (box.width - 10) * (i / 60), box.y + box.height * (0.2 + 0.6 * ((i % 10) / 10)));
          await sleep(10);
        }
      })();
      const script = (async () => {
        for (let i = 0; i < 60; i++) {
          await pageB.evaluate((k) => window.game.move(1000 * k + 500, 60000 - 900 * k), i);
          await sleep(10);
        }
      })();
      await Promise.all([mouse, script]);
      const spent = (Date.now() - t0) / 1000;
      await sleep(300); // the last throttled moves
      await until(async () => {
        const [x, y] = [await state(pageA), await state(pageB)];
        return y.received.filter((r) => r.player === x.player).length === x.sent.length
          && x.received.filter((r) => r.player === y.player).length === y.sent.length - b0.sent.length;
      }, 8000, 'every move seen by the other page');
      const A = await state(pageA);
      const B = await state(pageB);
      const bFromA = B.received.filter((r) => r.player === A.player);
      const aFromB = A.received.filter((r) => r.player === B.player);
      const rising = (list) => list.every((r, i) => i === 0 || r.offset > list[i - 1].offset);
      const maxRate = 30 * spent + 3; // 30/s, plus the announce and a slot at each end
      const problems = [
        diff('B saw A\'s moves', bFromA.map((r) => r.hex), A.sent),
        diff('A saw B\'s moves since it came', aFromB.map((r) => r.hex), B.sent.slice(b0.sent.length)),
        rising(B.received) ? null : 'B: offsets not rising',
        rising(A.received) ? null : 'A: offsets not rising',
        bFromA.every((r) => r.client === A.client) ? null : 'B: A\'s moves not from A\'s client',
        A.sent.length >= 10 && A.sent.length <= maxRate ? null : `A sent ${A.sent.length} moves in ${spent.toFixed(2)} s`,
        B.sent.length - b0.sent.length >= 10 && B.sent.length - 1 <= maxRate ? null : `B sent ${B.sent.length - 1} moves in ${spent.toFixed(2)} s`,
        A.sent.every((h) => h.length === 24) ? null : 'moves are not 12 bytes',
        A.rtts.length === A.sent.length ? null : `A measured ${A.rtts.length} round trips for ${A.sent.length} moves`,
        A.rtts.every((r) => r >= 0 && r < 5000) ? null : `round trips ${JSON.stringify(A.rtts.slice(-5))}`,
        A.errors.length || B.errors.length ? `errors ${JSON.stringify([A.errors, B.errors])}` : null,
      ];
      const rtt = await pageA.textContent('#rtt');
      if (!/^\d+ ms \(median \d+ ms\)$/.test(rtt)) problems.push(`#rtt shows ${JSON.stringify(rtt)}`);
      const markers = await pageB.evaluate(() => document.querySelectorAll('#board .marker').length);
      if (markers !== 2) problems.push(`B shows ${markers} markers`);
      // A's marker on B's board is where A's last move put it.
      const last = Buffer.from(A.sent.at(-1), 'hex');
      const want = { x: last.readUInt16LE(4), y: last.readUInt16LE(6) };
      const seen = B.players[A.player];
      if (!seen || seen.x !== want.x || seen.y !== want.y) problems.push(`B has A at ${JSON.stringify(seen)}, A's last move ${JSON.stringify(want)}`);
      const h = await api(srv, 'history', { channel: `game-${room}`, limit: -1 });
      const stored = h.publications.filter((p) => p.data === null && typeof p.b64data === 'string').map((p) => Buffer.from(p.b64data, 'base64').toString('hex'));
      // The channel keeps its last 100 publications (development mode's
      // history_size): A's moves among them are the end of what A sent, in
      // order, and all of them while the room published no more than that.
      const HISTORY = 100;
      const total = A.sent.length + B.sent.length;
      const storedA = stored.filter((x) => A.sent.includes(x));
      problems.push(diff('/api/history (A\'s moves)', storedA, total <= HISTORY ? A.sent : A.sent.slice(A.sent.length - storedA.length)));
      if (stored.length !== Math.min(HISTORY, total)) problems.push(`/api/history holds ${stored.length} moves of ${total} published`);
      console.log(`  A sent ${A.sent.length} moves, B ${B.sent.length - b0.sent.length}, in ${spent.toFixed(2)} s; A's round trips ${JSON.stringify(A.rtts.slice(-5))} ms`);
      fail(problems);
      await pageA.close();
      await until(async () => Object.keys((await state(pageB)).players).length === 1, 8000, 'B drops A\'s marker when A leaves');
      await pageB.close();
    });

    // ------------------------------------------------ 4. centrifuge-js (Protobuf) and duplex.js (Protobuf) agree
    const ch = `same-${RUN}`;
    const proxyD = await startProxy(srv.port);
    const proxyN = await startProxy(srv.port);
    proxies.push(proxyD, proxyN);
    const pageD = await newPage();
    const node = { n: null };
    const published = []; // { offset, hex }
    const snap = async () => ({ d: await dlog(pageD), n: { log: node.n.log, state: node.n.c.state } });
    const pubs = (s) => ({
      d: evs(s.d.log, 'publication').map((p) => ({ offset: p.offset, hex: p.data.hex })),
      n: evs(s.n.log, 'publication').map((p) => ({ offset: p.offset, hex: hex(p.data) })),
    });
    let s;
    const waitBoth = (pred, ms, what) => until(async () => pred(s = await snap()), ms, () => `${what}; duplex.js ${s?.d.state}, centrifuge-js ${s?.n.state}`);
    const other = nodeClient(CentrifugeProtobuf, ws, ch); // publishes while both are away
    let ready = false;

    await check('duplex.js (protocol protobuf, Chromium) and centrifuge-js Protobuf (Node) on one channel: binary publications from both, the same offsets and bytes', async () => {
      await pageD.goto(`${proxyD.origin}/chat`, { waitUntil: 'load' });
      await pageD.evaluate(installDuplexHelpers);
      await pageD.evaluate((c) => window.D.start(null, c, { protocol: 'protobuf' }), ch);
      node.n = nodeClient(CentrifugeProtobuf, proxyN.wsUrl, ch);
      await other.s.ready(5000);
      await waitBoth((x) => evs(x.d.log, 'subscribed').length === 1 && evs(x.n.log, 'subscribed').length === 1, 8000, 'both subscribed');
      for (let i = 0; i < 10; i++) {
        const a = randomBytes(1 + i); a[0] = 0;
        const b = randomBytes(2 + i); b[0] = 0xff;
        const r = await pageD.evaluate((h) => window.D.call('publish', window.D.fromHex(h)), a.toString('hex'));
        assert(r.ok, `duplex.js publish: ${JSON.stringify(r)}`);
        published.push(a.toString('hex'));
        await node.n.s.publish(new Uint8Array(b));
        published.push(b.toString('hex'));
      }
      await waitBoth((x) => { const p = pubs(x); return p.d.length >= 20 && p.n.length >= 20; }, 8000, 'both got 20');
      const p = pubs(s);
      fail([
        diff('duplex.js vs centrifuge-js', p.d, p.n),
        diff('bytes', p.d.map((x) => x.hex), published),
        p.d.every((x, i) => x.offset === i + 1) ? null : `offsets ${JSON.stringify(p.d.map((x) => x.offset))}`,
      ]);
      ready = true;
    });

    if (ready) {
      await check('both cut (proxies) while 10 more binary publications are made: both recover exactly (recovered true), the same 30 in order', async () => {
        for (const p of [proxyD, proxyN]) { p.block(); p.cut(); }
        await waitBoth((x) => x.d.state === 'connecting' && x.n.state === 'connecting', 5000, 'both see the drop');
        for (let i = 0; i < 10; i++) {
          const b = randomBytes(12);
          await other.s.publish(new Uint8Array(b));
          published.push(b.toString('hex'));
        }
        for (const p of [proxyD, proxyN]) p.unblock();
        await waitBoth((x) => { const p = pubs(x); return p.d.length >= 30 && p.n.length >= 30 && x.d.state === 'connected' && x.n.state === 'connected'; },
          12000, 'both back with 30');
        await sleep(200);
        s = await snap();
        const p = pubs(s);
        const d2 = evs(s.d.log, 'subscribed')[1];
        const n2 = evs(s.n.log, 'subscribed')[1];
        fail([
          diff('duplex.js vs centrifuge-js', p.d, p.n),
          diff('bytes', p.d.map((x) => x.hex), published),
          d2 && d2.wasRecovering && d2.recovered ? null : `duplex.js resubscribe ${JSON.stringify(d2)}`,
          n2 && n2.wasRecovering && n2.recovered ? null : `centrifuge-js resubscribe ${JSON.stringify(n2)}`,
          evs(s.d.log, 'gap').length ? 'duplex.js reported a gap' : null,
        ]);
      });

      await check('history (all; limit 5 reverse), presence and presence stats: duplex.js and centrifuge-js agree', async () => {
        const dAll = await pageD.evaluate(() => window.D.call('history', { limit: -1 }));
        const nAll = await node.n.s.history({ limit: -1 });
        const dRev = await pageD.evaluate(() => window.D.call('history', { limit: 5, reverse: true }));
        const nRev = await node.n.s.history({ limit: 5, reverse: true });
        const dPres = await pageD.evaluate(() => window.D.call('presence'));
        const nPres = await node.n.s.presence();
        const dStats = await pageD.evaluate(() => window.D.call('presenceStats'));
        const nStats = await node.n.s.presenceStats();
        const dh = (r) => r.ok.publications.map((p) => ({ offset: p.offset, hex: p.data.hex }));
        const nh = (r) => r.publications.map((p) => ({ offset: p.offset, hex: hex(p.data) }));
        fail([
          diff('history', dh(dAll), nh(nAll)),
          diff('history bytes', dh(dAll).map((x) => x.hex), published),
          diff('history limit 5 reverse', dh(dRev), nh(nRev)),
          dRev.ok.offset === nRev.offset && dRev.ok.epoch === nRev.epoch && dAll.ok.offset === 30 ? null
            : `positions ${JSON.stringify([dAll.ok.offset, dRev.ok.offset, nRev.offset, dRev.ok.epoch, nRev.epoch])}`,
          diff('presence clients', Object.keys(dPres.ok).sort(), Object.keys(nPres.clients).sort()),
          Object.keys(dPres.ok).length === 3 ? null : `presence ${JSON.stringify(dPres.ok)}`,
          dStats.ok.numClients === nStats.numClients && dStats.ok.numUsers === nStats.numUsers && nStats.numClients === 3
            ? null : `stats ${JSON.stringify([dStats.ok, nStats])}`,
        ]);
      });
    }

    // ------------------------------------------------ 5. JSON and Protobuf on one channel
    await check('JSON and Protobuf clients on one channel: JSON data from either reaches both; a binary publication reaches centrifuge-js (JSON) as null data and duplex.js (JSON) as its bytes', async () => {
      const mix = `mix-${RUN}`;
      const json = nodeClient(CentrifugeJson, ws, mix);
      const pb = nodeClient(CentrifugeProtobuf, ws, mix);
      const page = await newPage();
      await page.goto(`${srv.origin}/chat`, { waitUntil: 'load' });
      await page.evaluate(installDuplexHelpers);
      await page.evaluate((c) => window.D.start(null, c), mix);
      await Promise.all([json.s.ready(5000), pb.s.ready(5000)]);
      await until(async () => evs((await dlog(page)).log, 'subscribed').length === 1, 8000, 'duplex.js (JSON) subscribed');
      await json.s.publish({ from: 'json', n: 1 });
      await pb.s.publish(new TextEncoder().encode(JSON.stringify({ from: 'protobuf', n: 2 })));
      const bin = randomBytes(12);
      bin[0] = 0xff; // never JSON
      await pb.s.publish(new Uint8Array(bin));
      await until(async () => evs(json.log, 'publication').length === 3 && evs(pb.log, 'publication').length === 3
        && evs((await dlog(page)).log, 'publication').length === 3, 8000, 'three publications everywhere');
      const j = evs(json.log, 'publication');
      const p = evs(pb.log, 'publication');
      const d = evs((await dlog(page)).log, 'publication');
      const text = (u8) => new TextDecoder().decode(u8);
      fail([
        diff('centrifuge-js JSON', j.map((x) => x.data), [{ from: 'json', n: 1 }, { from: 'protobuf', n: 2 }, null]),
        diff('centrifuge-js Protobuf', p.map((x, i) => (i < 2 ? JSON.parse(text(x.data)) : hex(x.data))), [{ from: 'json', n: 1 }, { from: 'protobuf', n: 2 }, bin.toString('hex')]),
        diff('duplex.js JSON', d.map((x) => x.data), [{ from: 'json', n: 1 }, { from: 'protobuf', n: 2 }, { hex: bin.toString('hex') }]),
        json.c.state === 'connected' ? null : `centrifuge-js (JSON) ${json.c.state}`,
      ]);
      await page.close();
    });

    // ------------------------------------------------ 6. centrifuge-js's own Protobuf browser bundle
    await check('centrifuge-js Protobuf browser bundle (dist/centrifuge.protobuf.js) in Chromium: binary publications both ways with a Node Protobuf client, byte for byte, in order, the same offsets', async () => {
      const chan = `pbweb-${RUN}`;
      // The package's exports do not name its browser bundles: by path.
      const bundle = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules', 'centrifuge', 'dist', 'centrifuge.protobuf.js');
      const node = nodeClient(CentrifugeProtobuf, ws, chan);
      const page = await newPage();
      await page.goto(`${srv.origin}/`, { waitUntil: 'load' });
      // Evaluated through the DevTools protocol: the page's CSP (scripts
      // from 'self' only) is for the page's own scripts, not the test's.
      await page.evaluate(readFileSync(bundle, 'utf8'));
      await page.evaluate(({ url, channel }) => {
        const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
        const log = [];
        const c = new globalThis.Centrifuge(url, { protocol: 'protobuf', minReconnectDelay: 100, maxReconnectDelay: 1000 });
        const s = c.newSubscription(channel);
        s.on('subscribed', () => log.push({ ev: 'subscribed' }));
        s.on('publication', (ctx) => log.push({ ev: 'publication', offset: ctx.offset, hex: toHex(ctx.data) }));
        window.PB = { c, s, log };
        s.subscribe();
        c.connect();
      }, { url: ws, channel: chan });
      const web = () => page.evaluate(() => window.PB.log);
      await until(async () => (await web()).some((e) => e.ev === 'subscribed'), 8000, 'the browser bundle subscribed');
      await node.s.ready(5000);
      const sent = [];
      for (let i = 0; i < 6; i++) {
        const b = randomBytes(12);
        b[0] = 0xfe; // never JSON: a JSON socket would get null data
        sent.push(b.toString('hex'));
        if (i % 2 === 0) await node.s.publish(new Uint8Array(b));
        else await page.evaluate((h) => window.PB.s.publish(new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)))), b.toString('hex'));
      }
      await until(async () => (await web()).filter((e) => e.ev === 'publication').length === sent.length
        && evs(node.log, 'publication').length === sent.length, 8000, 'every publication on both sides');
      const got = (await web()).filter((e) => e.ev === 'publication');
      const nodeGot = evs(node.log, 'publication');
      fail([
        diff('the browser bundle received', got.map((p) => p.hex), sent),
        diff('Node received', nodeGot.map((p) => hex(p.data)), sent),
        diff('offsets', got.map((p) => p.offset), nodeGot.map((p) => p.offset)),
      ]);
      await page.evaluate(() => window.PB.c.disconnect());
      await page.close();
    });

    await check('no uncaught errors in the pages', async () => {
      fail(pageErrors);
    });
  } finally {
    for (const n of liveNodeClients) { try { n.c.disconnect(); } catch { /* closed */ } }
    if (context) await context.close().catch(() => {});
    for (const p of proxies) await p.close();
    for (const s of servers) await s.stop();
    removeDir(work);
  }
}

main()
  .catch((e) => { console.log(`FAIL game suite: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; })
  .finally(() => { const code = summary('game'); process.exit(process.exitCode || code); });
