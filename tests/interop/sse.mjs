// The Server-Sent Events front of `duplex serve` (`GET /connection/sse`)
// against real EventSource clients: the npm `eventsource` package (4.x, the
// WHATWG EventSource over Node's fetch) and Chromium's own EventSource
// (Debian's /usr/bin/chromium through playwright-core), in the `/live` demo
// page and in a page of another origin.
//
//   1. eventsource through a TCP proxy the test cuts while it keeps
//      publishing (news, scores): reconnects by itself after the server's
//      `retry: 2000`, sends Last-Event-ID, ends with every publication once
//      and in offset order per channel; every id `<offset>:<epoch>,…` and its
//      offsets match the data;
//   2. `?since=` on a first load replays exactly what came after, per channel;
//   3. a wrong epoch in `since=` for one channel: `unrecovered` for it only,
//      no replay for it; the positions an id carries still recover every
//      channel after such a first load;
//   4. Chromium: `/live?channel=ticker&channel=news` served through a cuttable
//      proxy (the page's origin is the proxy's): after the cut the page
//      reconnects by itself, every news publication once and in order, the
//      dev-mode ticker's ticks consecutive across the cut;
//   5. CORS: other origins 403, `--allow-origin` ones get
//      Access-Control-Allow-Origin and Vary; the stream headers; the same
//      seen from a Chromium page of another loopback origin;
//   6. errors: unknown channel 404, no channel 400, 401/403 without a token
//      where one is needed; tokens in `?token=` and `Authorization: Bearer`;
//   7. `[sse] heartbeat = "1s"`: a `: ping` comment on an idle stream;
//   8. `[sse] mailbox_bytes`: a client that stops reading is ended.
//
// Everything is on loopback; every wait is on an event or a polled condition
// with a deadline; every process, proxy, stream and page is closed at the end.
// JWTs are HS256, signed here with node:crypto.
//
// Environment: DUPLEX_BIN (binary), CHROMIUM (default /usr/bin/chromium),
// SSE_NO_BROWSER=1 skips the Chromium checks.

import { chromium } from 'playwright-core';
import { EventSource } from 'eventsource';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {
  assert, assertEq, check, removeDir, skip, sleep, startDuplex, startProxy,
  summary, tempDir, until, launchChromium,
} from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SECRET = 'sse-interop-secret-' + randomBytes(6).toString('hex');
const API_KEY = 'sse-interop-key-' + randomBytes(6).toString('hex');
const RUN = randomBytes(3).toString('hex');
// What `retry:` the server advises by default, in ms.
const RETRY_MS = 2000;
// An id with a position for each of two channels.
const ID2 = /^\d+:[A-Za-z0-9]+,\d+:[A-Za-z0-9]+$/;

// ---------------------------------------------------------------- helpers

const b64u = (s) => Buffer.from(s).toString('base64url');
const nowSec = () => Math.floor(Date.now() / 1000);

function jwt(claims, secret = SECRET) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const token = (sub, extra = {}, ttl = 3600) => jwt({ sub, iat: nowSec(), exp: nowSec() + ttl, ...extra });

/** POST /api/publish that must be acknowledged: 200 and result.offset; returns { offset, epoch }. */
async function publish(server, channel, data, key) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers['x-api-key'] = key;
  const r = await fetch(`${server.origin}/api/publish`, {
    method: 'POST', headers, body: JSON.stringify({ channel, data }), signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  let j;
  try { j = JSON.parse(text); } catch { j = undefined; }
  assert(r.status === 200 && j && j.result && Number.isInteger(j.result.offset) && j.result.offset > 0,
    `publish to ${channel} answered ${r.status} ${text.slice(0, 200)}`);
  return j.result;
}

/** A channel's current top position through /api/history (limit 0). */
async function top(server, channel) {
  const r = await fetch(`${server.origin}/api/history`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, limit: 0 }), signal: AbortSignal.timeout(5000),
  });
  const j = await r.json();
  assert(r.status === 200 && j.result && typeof j.result.epoch === 'string', `history of ${channel}: ${r.status} ${JSON.stringify(j)}`);
  return { offset: j.result.offset, epoch: j.result.epoch };
}


// Streams opened by the suite, closed at the end whatever happens.
const openStreams = new Set();

/**
 * An npm `eventsource` EventSource on url, recording opens (with times),
 * errors, unnamed events (parsed data + lastEventId + which open it came in)
 * and the named events of the spec.
 */
function nodeStream(url) {
  const es = new EventSource(url);
  const s = { es, url, opens: 0, openTimes: [], errors: [], messages: [], named: [] };
  es.onopen = () => { s.opens++; s.openTimes.push(Date.now()); };
  es.onerror = (e) => { s.errors.push({ code: e.code, message: e.message, t: Date.now() }); };
  es.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { m = { unparsed: e.data }; }
    s.messages.push({ ...m, id: e.lastEventId, open: s.opens });
  };
  for (const type of ['unrecovered', 'unsubscribe', 'disconnect']) {
    es.addEventListener(type, (e) => {
      let d;
      try { d = JSON.parse(e.data); } catch { d = { unparsed: e.data }; }
      s.named.push({ type, data: d, id: e.lastEventId, open: s.opens });
    });
  }
  s.of = (ch) => s.messages.filter((m) => m.channel === ch);
  s.close = () => { es.close(); openStreams.delete(s); };
  s.describe = () => `opens ${s.opens}, errors ${JSON.stringify(s.errors.map((e) => e.message))}, `
    + `received ${JSON.stringify(s.messages.slice(-6).map((m) => `${m.channel}#${m.offset}`))}, named ${JSON.stringify(s.named)}`;
  openStreams.add(s);
  return s;
}

/**
 * GET on the server without an agent; resolves on the response head with
 * { status, headers, body (grows), until(pred, ms, what), text(), close() }.
 */
function rawGet(port, target, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: target, headers, agent: false, timeout: 5000 }, (res) => {
      req.setTimeout(0);
      const r = { status: res.statusCode, headers: res.headers, body: '', ended: false, chunks: [] };
      res.setEncoding('utf8');
      res.on('data', (d) => { r.body += d; r.chunks.push({ t: Date.now(), d }); });
      res.on('end', () => { r.ended = true; });
      res.on('error', () => { /* closed by us */ });
      r.until = (pred, ms, what) => until(() => pred(r.body), ms, () => `${what}; body so far ${JSON.stringify(r.body.slice(-400))}`);
      r.text = async () => { await until(() => r.ended, 5000, 'end of the response'); return r.body; };
      r.close = () => { req.destroy(); openStreams.delete(r); };
      openStreams.add(r);
      resolve(r);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to GET ${target} within 5 s`)));
    req.on('error', reject);
  });
}

const sseUrl = (origin, channels, extra = '') => `${origin}/connection/sse?${channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}${extra}`;

/** Parses `<offset>:<epoch>,…` (`-` stays null). */
function parseId(id) {
  return id.split(',').map((p) => {
    if (p === '-') return null;
    const [o, e] = p.split(':');
    return { offset: Number(o), epoch: e };
  });
}

/**
 * Problems in the ids of `events` (in arrival order) of a stream on
 * `channels`: each must be `<offset>:<epoch>` per channel, the event's own
 * channel at its offset, every other channel at the last offset the stream
 * had sent for it (`start` before any), epochs the channels' epochs.
 */
function idProblems(events, channels, start, epochs) {
  const problems = [];
  const last = { ...start };
  const re = new RegExp(`^${channels.map(() => '\\d+:[A-Za-z0-9]+').join(',')}$`);
  for (const m of events) {
    const what = m.type ? `${m.type} event of ${m.data.channel}` : `event ${m.channel}#${m.offset}`;
    if (!re.test(m.id)) {
      problems.push(`${what}: id ${JSON.stringify(m.id)} is not ${channels.map(() => '<offset>:<epoch>').join(',')}`);
    } else {
      const pos = parseId(m.id);
      channels.forEach((ch, i) => {
        const want = !m.type && ch === m.channel ? m.offset : last[ch];
        if (pos[i].offset !== want) problems.push(`${what}: id ${m.id} has ${ch} at ${pos[i].offset}, expected ${want}`);
        if (epochs[ch] && pos[i].epoch !== epochs[ch]) problems.push(`${what}: id ${m.id} has ${ch} epoch ${pos[i].epoch}, expected ${epochs[ch]}`);
      });
    }
    if (!m.type) last[m.channel] = m.offset;
    else if (m.type === 'unrecovered') last[m.data.channel] = m.data.offset;
  }
  return problems;
}

/** Where a received sequence differs from the expected one (missing, duplicated, out of order). */
function seqProblems(what, got, want) {
  if (JSON.stringify(got) === JSON.stringify(want)) return [];
  const count = new Map();
  for (const g of got) count.set(g, (count.get(g) || 0) + 1);
  const missing = want.filter((w) => !count.has(w));
  const dups = [...count].filter(([, n]) => n > 1).map(([g]) => g);
  const extra = got.filter((g) => !want.includes(g));
  const order = got.some((g, i) => i > 0 && got[i - 1] >= g);
  return [`${what}: got ${got.length} ${JSON.stringify(got.slice(0, 80))}, expected ${want.length}`
    + ` (missing ${JSON.stringify(missing)}, duplicated ${JSON.stringify(dups)}, unexpected ${JSON.stringify(extra)}${order ? ', out of order' : ''})`];
}

function fail(problems) {
  if (problems.length) {
    const shown = problems.slice(0, 6);
    if (problems.length > shown.length) shown.push(`… ${problems.length - shown.length} more`);
    throw new Error(shown.join(' | '));
  }
}

/** The Server-Sent Events requests a proxy carried. */
const sseRequests = (proxy) => proxy.requests().filter((r) => r.target.startsWith('/connection/sse'));

// ---------------------------------------------------------------- configs

const authToml = (allowAnonymous, extra = '') => `
[auth]
token_hmac_secret = "${SECRET}"
api_key = "${API_KEY}"
allow_anonymous = ${allowAnonymous}

[channels]
history_size = 10
history_ttl = "300s"
subscribe = "authenticated"
recovery = true

[namespaces.secret]
history_size = 10
history_ttl = "300s"
subscribe = "token"
recovery = true

[namespaces.open]
history_size = 10
history_ttl = "300s"
subscribe = "anonymous"
recovery = true
${extra}`;

const HEARTBEAT_TOML = `
[auth]
allow_anonymous = true

[channels]
subscribe = "anonymous"

[sse]
heartbeat = "1s"
`;

// A small stream queue, an API key, channels without history.
const SLOW_TOML = `
[auth]
api_key = "${API_KEY}"
allow_anonymous = true

[channels]
subscribe = "anonymous"

[sse]
mailbox_bytes = 65536
`;

const CORS_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>sse cross-origin</title></head>
<body><p>EventSource to another origin</p></body></html>`;

// ---------------------------------------------------------------- main

async function main() {
  const work = tempDir('duplex-sse-');
  const servers = [];
  const proxies = [];
  const serve = async (args) => { const s = await startDuplex(args); servers.push(s); return s; };
  const serveToml = async (name, toml, args = []) => {
    const file = path.join(work, `${name}.toml`);
    writeFileSync(file, toml);
    return serve(['--config', file, ...args]);
  };
  const proxyTo = async (server) => { const p = await startProxy(server.port); proxies.push(p); return p; };

  // A page of another loopback origin (check 5).
  const pageServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(CORS_PAGE);
  });
  await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
  const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;

  let context;
  try {
    // Development mode: the default namespace has history (100) and recovery.
    const dev = await serve([]);
    console.log(`dev-mode server ${dev.origin}; eventsource ${(await import('eventsource/package.json', { with: { type: 'json' } })).default.version}`);

    // ------------------------------------------------ 1. reconnect and recover
    const c1 = { chans: ['news', 'scores'], published: { news: [], scores: [] }, stream: null, proxy: null };
    await check('eventsource: news+scores through a proxy cut while publishing; reconnects by itself after retry: 2000 with Last-Event-ID; every publication once, in offset order per channel', async () => {
      const proxy = c1.proxy = await proxyTo(dev);
      const s = c1.stream = nodeStream(sseUrl(proxy.origin, c1.chans));
      await until(() => s.opens >= 1, 5000, () => `first open; ${s.describe()}`);
      let seq = 0;
      const pub = async () => {
        seq++;
        const ch = c1.chans[(seq - 1) % 2];
        const r = await publish(dev, ch, { seq, ch, run: RUN });
        c1.published[ch].push({ seq, offset: r.offset, epoch: r.epoch });
      };
      for (let i = 0; i < 10; i++) await pub();
      await until(() => s.messages.length >= 10, 5000, () => `the first 10 publications; ${s.describe()}`);
      // Keep publishing every ~50 ms: cut at #20, go on until the client is
      // back and 10 more were published after that.
      const CUT_AT = 20;
      let cutAt = 0;
      let reopenedAt = 0;
      const deadline = Date.now() + 12_000;
      for (;;) {
        await pub();
        if (seq === CUT_AT) { proxy.cut(); cutAt = Date.now(); }
        if (!reopenedAt && s.opens >= 2) reopenedAt = seq;
        if (reopenedAt && seq >= reopenedAt + 10) break;
        assert(Date.now() < deadline, `the EventSource did not reconnect within 12 s of publishing (${seq} published); ${s.describe()}`);
        await sleep(50);
      }
      // A last one on each channel: once both arrived, everything before them has.
      await pub(); await pub();
      const lastSeq = { news: c1.published.news.at(-1).seq, scores: c1.published.scores.at(-1).seq };
      await until(() => c1.chans.every((ch) => s.of(ch).some((m) => m.data && m.data.seq === lastSeq[ch])), 8000,
        () => `the last publication of each channel; ${s.describe()}`);

      const problems = [];
      for (const ch of c1.chans) {
        const got = s.of(ch);
        problems.push(...seqProblems(`${ch} sequence`, got.map((m) => m.data && m.data.seq), c1.published[ch].map((p) => p.seq)));
        problems.push(...seqProblems(`${ch} offsets`, got.map((m) => m.offset), c1.published[ch].map((p) => p.offset)));
      }
      if (s.opens !== 2) problems.push(`opens ${s.opens}, expected 2 (one reconnect)`);
      if (s.named.length) problems.push(`named events ${JSON.stringify(s.named)}`);
      if (s.es.readyState !== 1) problems.push(`readyState ${s.es.readyState} at the end, expected OPEN`);
      // The reconnect waited for the server's advice (2000 ms; the package's own default is 3000).
      const err = s.errors.find((e) => e.t >= cutAt);
      const delay = err && s.openTimes[1] - err.t;
      if (!err) problems.push('no error event after the cut');
      else {
        if (!(delay >= RETRY_MS - 100 && delay < 2900)) problems.push(`reconnected ${delay} ms after the error, expected the advised ${RETRY_MS} ms`);
      }
      const reqs = sseRequests(proxy);
      if (reqs.length !== 2) problems.push(`${reqs.length} SSE requests through the proxy, expected 2`);
      else {
        if (reqs[0].headers['last-event-id'] !== undefined) problems.push(`first request sent Last-Event-ID ${reqs[0].headers['last-event-id']}`);
        const before = s.messages.filter((m) => m.open === 1).at(-1);
        if (reqs[1].headers['last-event-id'] !== before.id) {
          problems.push(`reconnect sent Last-Event-ID ${JSON.stringify(reqs[1].headers['last-event-id'])}, the last id before the cut was ${JSON.stringify(before.id)}`);
        }
        if (!/text\/event-stream/.test(reqs[1].headers.accept || '')) problems.push(`reconnect Accept ${reqs[1].headers.accept}`);
      }
      const during = s.messages.filter((m) => m.open === 2).length;
      if (during < 5) problems.push(`only ${during} events after the reconnect`);
      fail(problems);
      console.log(`  ${seq} publications (news ${c1.published.news.length}, scores ${c1.published.scores.length}); cut at #${CUT_AT}, back at #${reopenedAt} (${delay} ms after the error); Last-Event-ID ${reqs[1].headers['last-event-id']}`);
    });

    await check('eventsource: every event id is <offset>:<epoch>,<offset>:<epoch> (news, scores), the offsets those of the data (before, in the replay after, and after the reconnect)', async () => {
      const s = c1.stream;
      assert(s && s.messages.length > 0, 'the previous check received nothing');
      const epochs = { news: c1.published.news[0]?.epoch, scores: c1.published.scores[0]?.epoch };
      fail(idProblems(s.messages, c1.chans, { news: 0, scores: 0 }, epochs));
    });
    if (c1.stream) c1.stream.close();
    if (c1.proxy) await c1.proxy.close();

    // ------------------------------------------------ 2. since= on a first load
    const c2 = {};
    await check('since= on a first load (eventsource): replays exactly what came after the id, per channel, then live', async () => {
      const chans = ['alpha', 'beta'];
      const s1 = nodeStream(sseUrl(dev.origin, chans));
      await until(() => s1.opens >= 1, 5000, () => `open; ${s1.describe()}`);
      const pubs = { alpha: [], beta: [] };
      const pub = async (ch, n) => { const r = await publish(dev, ch, { ch, n, run: RUN }); pubs[ch].push({ n, ...r }); };
      for (let n = 1; n <= 4; n++) { await pub('alpha', n); await pub('beta', n); }
      await until(() => s1.messages.length >= 8, 5000, () => `8 events; ${s1.describe()}`);
      // After alpha #3 (the 5th event): alpha 3, beta 2.
      const since = s1.messages[4].id;
      s1.close();
      assert(ID2.test(since), `live event id ${JSON.stringify(since)}`);
      const [pa, pb] = parseId(since);
      assertEq(`${pa.offset},${pb.offset}`, `${pubs.alpha[2].offset},${pubs.beta[1].offset}`, `offsets in the id ${since}`);
      for (let n = 5; n <= 6; n++) { await pub('alpha', n); await pub('beta', n); }
      const s2 = nodeStream(sseUrl(dev.origin, chans, `&since=${encodeURIComponent(since)}`));
      await until(() => s2.opens >= 1, 5000, () => `open with since; ${s2.describe()}`);
      await pub('alpha', 7); await pub('beta', 7);
      await until(() => chans.every((ch) => s2.of(ch).some((m) => m.data.n === 7)), 5000, () => `the live publications after the replay; ${s2.describe()}`);
      const problems = [];
      problems.push(...seqProblems('alpha', s2.of('alpha').map((m) => m.data.n), [4, 5, 6, 7]));
      problems.push(...seqProblems('beta', s2.of('beta').map((m) => m.data.n), [3, 4, 5, 6, 7]));
      for (const ch of chans) {
        problems.push(...seqProblems(`${ch} offsets`, s2.of(ch).map((m) => m.offset), pubs[ch].filter((p) => p.n > (ch === 'alpha' ? 3 : 2)).map((p) => p.offset)));
      }
      if (s2.named.length) problems.push(`named events ${JSON.stringify(s2.named)}`);
      if (s2.opens !== 1 || s2.errors.length) problems.push(`opens ${s2.opens}, errors ${s2.errors.length}`);
      c2.events = s2.messages.slice();
      c2.start = { alpha: pa.offset, beta: pb.offset };
      c2.epochs = { alpha: pa.epoch, beta: pb.epoch };
      s2.close();
      fail(problems);
    });

    await check('since= replay: every replayed event id carries the position of both channels (`<offset>:<epoch>,<offset>:<epoch>`, no `-` for a channel with history)', async () => {
      assert(c2.events, 'the previous check did not get that far');
      fail(idProblems(c2.events, ['alpha', 'beta'], c2.start, c2.epochs));
    });

    // ------------------------------------------------ 3. unrecovered
    const c3 = { named: [] };
    await check('since= with a wrong epoch for one channel: `unrecovered` {channel, offset, epoch} for that channel only, no replay for it; the other replays', async () => {
      const problems = [];
      for (const wrong of [1, 0]) { // the wrong epoch on the second, then on the first channel
        const chans = [`gamma-${wrong}`, `delta-${wrong}`];
        for (let n = 1; n <= 3; n++) for (const ch of chans) await publish(dev, ch, { ch, n });
        const tops = await Promise.all(chans.map((ch) => top(dev, ch)));
        // Both from offset 1; the wrong channel with an epoch that is not its.
        const since = chans.map((ch, i) => `1:${i === wrong ? 'WrongEpoch0' : tops[i].epoch}`).join(',');
        const s = nodeStream(sseUrl(dev.origin, chans, `&since=${encodeURIComponent(since)}`));
        await until(() => s.opens >= 1, 5000, () => `open; ${s.describe()}`);
        for (const ch of chans) await publish(dev, ch, { ch, n: 4 });
        await until(() => chans.every((ch) => s.of(ch).some((m) => m.data.n === 4)), 5000, () => `the live publications; ${s.describe()}`);
        const bad = chans[wrong];
        const good = chans[1 - wrong];
        const unrec = s.named.filter((e) => e.type === 'unrecovered');
        if (unrec.length !== 1 || unrec[0].data.channel !== bad) problems.push(`since ${since}: unrecovered events ${JSON.stringify(unrec.map((e) => e.data))}, expected one for ${bad}`);
        else {
          const d = unrec[0].data;
          if (d.offset !== tops[wrong].offset || d.epoch !== tops[wrong].epoch) problems.push(`unrecovered ${JSON.stringify(d)}, expected offset ${tops[wrong].offset} epoch ${tops[wrong].epoch}`);
        }
        problems.push(...seqProblems(`since ${since}: ${bad} (not recovered: live only)`, s.of(bad).map((m) => m.data.n), [4]));
        problems.push(...seqProblems(`since ${since}: ${good} (recovered from 1)`, s.of(good).map((m) => m.data.n), [2, 3, 4]));
        c3.named.push({ chans, since, tops, named: unrec, messages: s.messages.slice() });
        s.close();
      }
      fail(problems);
    });

    await check('unrecovered: the event id still carries the position of every channel (wrong epoch on the first and on the second channel)', async () => {
      assert(c3.named.length === 2, 'the previous check did not get that far');
      const problems = [];
      for (const r of c3.named) {
        for (const e of r.named) {
          if (!ID2.test(e.id)) problems.push(`since ${r.since}: unrecovered event of ${e.data.channel} has id ${JSON.stringify(e.id)}`);
        }
      }
      fail(problems);
    });

    await check('a stream that drops right after its first-load replay recovers every channel from its Last-Event-ID (or says `unrecovered`): no silent gap', async () => {
      // p1 missed two publications, p2 none: the replay is p1's only.
      const chans = ['p1', 'p2'];
      for (let n = 1; n <= 3; n++) await publish(dev, 'p1', { n });
      for (let n = 1; n <= 2; n++) await publish(dev, 'p2', { n });
      const [t1, t2] = await Promise.all(chans.map((ch) => top(dev, ch)));
      const since = `1:${t1.epoch},${t2.offset}:${t2.epoch}`;
      const proxy = await proxyTo(dev);
      const s = nodeStream(sseUrl(proxy.origin, chans, `&since=${encodeURIComponent(since)}`));
      await until(() => s.of('p1').length >= 2, 5000, () => `the replay; ${s.describe()}`);
      const lastId = s.messages.at(-1).id;
      proxy.cut();
      await until(() => s.errors.length >= 1, 5000, () => `an error after the cut; ${s.describe()}`);
      await publish(dev, 'p2', { n: 3 });
      await publish(dev, 'p2', { n: 4 });
      await publish(dev, 'p1', { n: 4 });
      await until(() => s.opens >= 2, 6000, () => `the reconnect; ${s.describe()}`);
      await publish(dev, 'p1', { n: 5 });
      await publish(dev, 'p2', { n: 5 });
      await until(() => chans.every((ch) => s.of(ch).some((m) => m.data.n === 5)), 5000, () => `the live publications; ${s.describe()}`);
      const sent = sseRequests(proxy).map((r) => r.headers['last-event-id']);
      const p2 = s.of('p2').map((m) => m.data.n);
      const unrec = s.named.filter((e) => e.type === 'unrecovered' && e.data.channel === 'p2');
      s.close();
      await proxy.close();
      const problems = seqProblems('p1', s.of('p1').map((m) => m.data.n), [2, 3, 4, 5]);
      if (!unrec.length) problems.push(...seqProblems('p2 (published 3 and 4 while the stream was down)', p2, [3, 4, 5]));
      if (problems.length) problems.push(`last id before the cut ${JSON.stringify(lastId)}; Last-Event-ID sent on reconnect ${JSON.stringify(sent[1])}; no unrecovered event for p2`);
      fail(problems);
    });

    // ------------------------------------------------ 4, 5b. Chromium
    const launch = async () => {
      context = await launchChromium(chromium, path.join(work, 'chromium-profile'), CHROMIUM);
      console.log(`chromium ${context.browser()?.version() ?? ''} (${CHROMIUM})`);
    };
    const noBrowser = process.env.SSE_NO_BROWSER ? 'SSE_NO_BROWSER is set'
      : !existsSync(CHROMIUM) ? `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)` : null;
    const pageErrors = [];
    if (!noBrowser) await launch();

    const browserCheck = async (name, fn) => {
      if (noBrowser) { skip(name, noBrowser); return; }
      await check(name, fn);
    };

    await browserCheck('chromium: /live?channel=ticker&channel=news through a proxy cut while news is published; the page reconnects by itself (Last-Event-ID), every news publication once and in order, ticks consecutive across the cut', async () => {
      const srv = await serve([]); // its own dev-mode server: the ticker starts with this page
      const proxy = await proxyTo(srv);
      const page = await context.newPage();
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      try {
        const resp = await page.goto(`${proxy.origin}/live?channel=ticker&channel=news`, { waitUntil: 'load', timeout: 15000 });
        assertEq(resp.status(), 200, '/live status');
        const live = () => page.evaluate(() => JSON.parse(JSON.stringify(window.live)));
        const describe = (l) => `opens ${l.opens}, errors ${l.errors}, state ${l.state}, last id ${l.lastEventId}, received ${JSON.stringify(l.received.slice(-6))}`;
        let l;
        const waitLive = (pred, ms, what) => until(async () => pred(l = await live()), ms, () => `${what}; ${l ? describe(l) : 'no window.live'}`);
        const ticks = (x) => x.received.filter((r) => r.channel === 'ticker');
        const news = (x) => x.received.filter((r) => r.channel === 'news');
        await waitLive((x) => x.opens >= 1 && ticks(x).length >= 1, 5000, 'open and a first tick');
        const published = [];
        let n = 0;
        const pub = async () => { n++; const r = await publish(srv, 'news', { n, run: RUN }); published.push({ n, offset: r.offset }); };
        for (let i = 0; i < 5; i++) await pub();
        await waitLive((x) => news(x).length >= 5, 5000, 'the first 5 news');
        proxy.cut();
        await waitLive((x) => x.state === 'connecting' && x.errors >= 1, 5000, 'the page sees the drop');
        const idAtCut = l.lastEventId;
        const tickAtCut = ticks(l).at(-1).data.tick;
        // Keep publishing while the page is away and until it is back.
        const deadline = Date.now() + 10_000;
        while ((await live()).opens < 2) {
          await pub();
          assert(Date.now() < deadline, `the page did not reconnect within 10 s; ${describe(await live())}`);
          await sleep(150);
        }
        for (let i = 0; i < 3; i++) await pub();
        await waitLive((x) => news(x).some((r) => r.data.n === n) && ticks(x).length && ticks(x).at(-1).data.tick >= tickAtCut + 4,
          8000, `news #${n} and ticks past ${tickAtCut + 3}`);
        const problems = [];
        problems.push(...seqProblems('news', news(l).map((r) => r.data.n), published.map((p) => p.n)));
        problems.push(...seqProblems('news offsets', news(l).map((r) => r.offset), published.map((p) => p.offset)));
        const t = ticks(l).map((r) => r.data.tick);
        const want = Array.from({ length: t.at(-1) - t[0] + 1 }, (_, i) => t[0] + i);
        problems.push(...seqProblems('ticks', t, want));
        const to = ticks(l).map((r) => r.offset);
        problems.push(...seqProblems('tick offsets', to, Array.from({ length: to.length }, (_, i) => to[0] + i)));
        if (l.unrecovered.length) problems.push(`unrecovered ${JSON.stringify(l.unrecovered)}`);
        if (l.opens !== 2) problems.push(`opens ${l.opens}, expected 2`);
        const reqs = sseRequests(proxy);
        if (reqs.length !== 2) problems.push(`${reqs.length} SSE requests through the proxy, expected 2`);
        else if (reqs[1].headers['last-event-id'] !== idAtCut) {
          problems.push(`reconnect sent Last-Event-ID ${JSON.stringify(reqs[1].headers['last-event-id'])}, the page's last id was ${JSON.stringify(idAtCut)}`);
        }
        if (published.length - 5 < 5) problems.push(`only ${published.length - 5} news published after the cut`);
        fail(problems);
        console.log(`  news 1..${n} (${n - 5} after the cut), ticks ${t[0]}..${t.at(-1)} (cut after tick ${tickAtCut}); Last-Event-ID ${reqs[1]?.headers['last-event-id']}`);
      } finally {
        await page.close().catch(() => {});
        await proxy.close();
      }
    });

    // ------------------------------------------------ 5. CORS
    const good = await serve(['--allow-origin', 'http://good.example', '--allow-origin', pageOrigin]);
    await check('CORS: Origin http://evil.example -> 403 and no stream; --allow-origin http://good.example -> 200 with Access-Control-Allow-Origin and Vary: Origin; stream headers (text/event-stream, no-store, X-Accel-Buffering: no, retry: 2000)', async () => {
      const problems = [];
      const streamHeaders = (what, r) => {
        if (!/^text\/event-stream/.test(r.headers['content-type'] || '')) problems.push(`${what}: Content-Type ${r.headers['content-type']}`);
        if (r.headers['cache-control'] !== 'no-store') problems.push(`${what}: Cache-Control ${r.headers['cache-control']}`);
        if (r.headers['x-accel-buffering'] !== 'no') problems.push(`${what}: X-Accel-Buffering ${r.headers['x-accel-buffering']}`);
      };
      for (const [label, srv] of [['dev server', dev], ['--allow-origin server', good]]) {
        const r = await rawGet(srv.port, '/connection/sse?channel=news', { origin: 'http://evil.example' });
        const body = await r.text();
        if (r.status !== 403) problems.push(`${label}, evil origin: status ${r.status}`);
        if (/event-stream/.test(r.headers['content-type'] || '') || /retry:|data:/.test(body)) problems.push(`${label}, evil origin: a stream (${r.headers['content-type']}, ${JSON.stringify(body.slice(0, 100))})`);
        if (r.headers['access-control-allow-origin'] !== undefined) problems.push(`${label}, evil origin: Access-Control-Allow-Origin ${r.headers['access-control-allow-origin']}`);
      }
      const g = await rawGet(good.port, '/connection/sse?channel=news', { origin: 'http://good.example' });
      if (g.status !== 200) problems.push(`good origin: status ${g.status}`);
      if (g.headers['access-control-allow-origin'] !== 'http://good.example') problems.push(`good origin: Access-Control-Allow-Origin ${g.headers['access-control-allow-origin']}`);
      if (!/(^|,\s*)origin(\s*,|$)/i.test(g.headers.vary || '')) problems.push(`good origin: Vary ${g.headers.vary}`);
      if (g.headers['access-control-allow-credentials'] !== undefined) problems.push(`good origin: Access-Control-Allow-Credentials ${g.headers['access-control-allow-credentials']} (not configured)`);
      streamHeaders('good origin', g);
      await g.until((b) => b.length >= 13, 3000, 'the first bytes of the stream');
      if (!g.body.startsWith(`retry: ${RETRY_MS}\n\n`)) problems.push(`good origin: stream starts ${JSON.stringify(g.body.slice(0, 40))}`);
      const r = await publish(good, 'news', { cors: 1 });
      await g.until((b) => b.includes('"cors":1'), 3000, 'a publication on the allowed stream');
      if (!g.body.includes(`data: {"channel":"news","offset":${r.offset},"data":{"cors":1}}\n\n`)) problems.push(`good origin: event ${JSON.stringify(g.body.slice(-200))}`);
      g.close();
      // No Origin (not a browser) and the same host: streams, without CORS headers.
      for (const [label, headers] of [['no Origin', {}], ['same-host Origin', { origin: dev.origin }]]) {
        const x = await rawGet(dev.port, '/connection/sse?channel=news', headers);
        if (x.status !== 200) problems.push(`${label}: status ${x.status}`);
        streamHeaders(label, x);
        if (label === 'no Origin' && x.headers['access-control-allow-origin'] !== undefined) problems.push(`${label}: Access-Control-Allow-Origin ${x.headers['access-control-allow-origin']}`);
        x.close();
      }
      fail(problems);
    });

    await browserCheck(`chromium: a page of another origin (${pageOrigin}): EventSource to a server that does not allow it -> error, CLOSED, no message; to one started with --allow-origin for it -> open and messages`, async () => {
      // What the refused server answers that origin, seen from Node.
      const probe = await rawGet(dev.port, '/connection/sse?channel=news', { origin: pageOrigin });
      await probe.text();
      assertEq(probe.status, 403, 'status for that origin from the dev server');
      const page = await context.newPage();
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      try {
        await page.goto(pageOrigin + '/', { waitUntil: 'load', timeout: 15000 });
        await page.evaluate(([refused, allowed]) => {
          const mk = (url) => {
            const r = { opens: 0, errors: 0, messages: [], states: [] };
            const es = new EventSource(url);
            es.onopen = () => { r.opens++; };
            es.onerror = () => { r.errors++; r.states.push(es.readyState); };
            es.onmessage = (e) => { r.messages.push(JSON.parse(e.data)); };
            r.state = () => es.readyState;
            r.close = () => es.close();
            return r;
          };
          window.S = { refused: mk(refused), allowed: mk(allowed) };
        }, [sseUrl(dev.origin, ['news']), sseUrl(good.origin, ['news'])]);
        const state = () => page.evaluate(() => {
          const o = {};
          for (const [k, r] of Object.entries(window.S)) o[k] = { opens: r.opens, errors: r.errors, messages: r.messages, states: r.states, readyState: r.state() };
          return o;
        });
        let st;
        await until(async () => { st = await state(); return st.allowed.opens >= 1 && st.refused.errors >= 1; }, 8000,
          () => `the allowed stream open and an error on the refused one; ${JSON.stringify(st)}`);
        const r1 = await publish(good, 'news', { page: 1 });
        await publish(dev, 'news', { page: 1 });
        await until(async () => { st = await state(); return st.allowed.messages.length >= 1; }, 5000, () => `a message on the allowed stream; ${JSON.stringify(st)}`);
        const problems = [];
        const m = st.allowed.messages[0];
        if (!(m.channel === 'news' && m.offset === r1.offset && m.data.page === 1)) problems.push(`allowed: message ${JSON.stringify(m)}`);
        if (st.allowed.errors) problems.push(`allowed: ${st.allowed.errors} errors`);
        if (st.refused.readyState !== 2) problems.push(`refused: readyState ${st.refused.readyState}, expected CLOSED (2)`);
        if (st.refused.opens || st.refused.messages.length) problems.push(`refused: ${st.refused.opens} opens, messages ${JSON.stringify(st.refused.messages)}`);
        await page.evaluate(() => { for (const r of Object.values(window.S)) r.close(); });
        fail(problems);
      } finally {
        await page.close().catch(() => {});
      }
    });

    // ------------------------------------------------ 6. errors
    await check('errors (dev mode): ?channel=nope:x -> 404 JSON (unknown namespace); no channel -> 400 JSON; the same channel twice -> 400', async () => {
      const cases = [
        ['/connection/sse?channel=nope:x', 404, 102],
        ['/connection/sse', 400, 107],
        ['/connection/sse?since=1:abc', 400, 107],
        ['/connection/sse?channel=news&channel=news', 400, 105],
      ];
      const problems = [];
      for (const [target, status, code] of cases) {
        const r = await rawGet(dev.port, target);
        const body = await r.text();
        let j;
        try { j = JSON.parse(body); } catch { j = undefined; }
        if (r.status !== status || !j || !j.error || j.error.code !== code || typeof j.error.message !== 'string') {
          problems.push(`GET ${target}: ${r.status} ${JSON.stringify(body)}, expected ${status} with error code ${code}`);
        }
        if (!/application\/json/.test(r.headers['content-type'] || '')) problems.push(`GET ${target}: Content-Type ${r.headers['content-type']}`);
      }
      fail(problems);
    });

    const strict = await serveToml('strict', authToml(false));
    const anon = await serveToml('anon', authToml(true));
    await check('auth (allow_anonymous = false): no token, bad signature -> 401, expired -> 401 (109); valid HS256 JWT in ?token= and in Authorization: Bearer -> 200 streams that receive', async () => {
      const problems = [];
      const refused = async (label, target, headers, status, code) => {
        const r = await rawGet(strict.port, target, headers);
        const body = await r.text();
        let j;
        try { j = JSON.parse(body); } catch { j = undefined; }
        if (r.status !== status || !j || !j.error || (code && j.error.code !== code)) problems.push(`${label}: ${r.status} ${JSON.stringify(body)}, expected ${status}${code ? ` code ${code}` : ''}`);
      };
      await refused('no token', '/connection/sse?channel=news', {}, 401, 101);
      await refused('bad signature', `/connection/sse?channel=news&token=${jwt({ sub: 'mallory', exp: nowSec() + 60 }, 'not-the-secret')}`, {}, 401, 101);
      await refused('expired', `/connection/sse?channel=news&token=${token('alice', {}, -60)}`, {}, 401, 109);
      await refused('Bearer with a bad signature', '/connection/sse?channel=news', { authorization: `Bearer ${jwt({ sub: 'x' }, 'nope')}` }, 401, 101);
      const viaQuery = await rawGet(strict.port, `/connection/sse?channel=news&token=${token('alice')}`);
      const viaHeader = await rawGet(strict.port, '/connection/sse?channel=news', { authorization: `Bearer ${token('bob')}` });
      for (const [label, r] of [['?token=', viaQuery], ['Authorization: Bearer', viaHeader]]) {
        if (r.status !== 200 || !/^text\/event-stream/.test(r.headers['content-type'] || '')) problems.push(`${label}: ${r.status} ${r.headers['content-type']}`);
      }
      if (!problems.length) {
        const p = await publish(strict, 'news', { auth: 'ok' }, API_KEY);
        for (const [label, r] of [['?token=', viaQuery], ['Authorization: Bearer', viaHeader]]) {
          await r.until((b) => b.includes(`"offset":${p.offset},"data":{"auth":"ok"}`), 3000, `${label}: the publication`);
        }
      }
      viaQuery.close(); viaHeader.close();
      fail(problems);
    });

    await check('auth: subscribe = "token" namespace -> 403 without the channel in the token, 200 with it; "authenticated" namespace without a token (allow_anonymous = true) -> 403; "anonymous" namespace -> 200', async () => {
      const problems = [];
      const expect = async (label, srv, target, headers, status, code) => {
        const r = await rawGet(srv.port, target, headers);
        if (status === 200) {
          if (r.status !== 200 || !/^text\/event-stream/.test(r.headers['content-type'] || '')) problems.push(`${label}: ${r.status} ${r.headers['content-type']}, expected a stream`);
          r.close();
          return;
        }
        const body = await r.text();
        let j;
        try { j = JSON.parse(body); } catch { j = undefined; }
        if (r.status !== status || !j || !j.error || j.error.code !== code) problems.push(`${label}: ${r.status} ${JSON.stringify(body)}, expected ${status} code ${code}`);
      };
      await expect('secret:x, token without channels', strict, `/connection/sse?channel=secret:x&token=${token('alice')}`, {}, 403, 103);
      await expect('secret:x, token for secret:y', strict, `/connection/sse?channel=secret:x&token=${token('alice', { channels: ['secret:y'] })}`, {}, 403, 103);
      await expect('secret:x, token listing it (?token=)', strict, `/connection/sse?channel=secret:x&token=${token('alice', { channels: ['secret:x'] })}`, {}, 200);
      await expect('secret:x, token listing it (Bearer)', strict, '/connection/sse?channel=secret:x', { authorization: `Bearer ${token('alice', { channels: ['secret:x'] })}` }, 200);
      await expect('secret:x anonymous (allow_anonymous = true)', anon, '/connection/sse?channel=secret:x', {}, 403, 103);
      await expect('news anonymous (authenticated namespace, allow_anonymous = true)', anon, '/connection/sse?channel=news', {}, 403, 103);
      await expect('open:x anonymous (anonymous namespace)', anon, '/connection/sse?channel=open:x', {}, 200);
      await expect('news and open:x with a token', anon, `/connection/sse?channel=news&channel=open:x&token=${token('carol')}`, {}, 200);
      fail(problems);
    });

    // ------------------------------------------------ 7. heartbeat
    const hb = await serveToml('heartbeat', HEARTBEAT_TOML);
    await check('[sse] heartbeat = "1s": an idle stream gets `: ping` comments (the first within 3 s), nothing else', async () => {
      const opened = Date.now();
      const r = await rawGet(hb.port, '/connection/sse?channel=quiet');
      assertEq(r.status, 200, 'status');
      await r.until((b) => b.includes(': ping\n\n'), 3000, 'a `: ping` comment');
      const first = Date.now() - opened;
      await r.until((b) => b.split(': ping\n\n').length - 1 >= 2, 2500, 'a second `: ping`');
      r.close();
      assert(/^retry: \d+\n\n(: ping\n\n)+$/.test(r.body), `stream ${JSON.stringify(r.body)}`);
      console.log(`  first ping after ${first} ms`);
    });

    // ------------------------------------------------ 8. a stream that does not read
    const slow = await serveToml('slow', SLOW_TOML);
    await check('[sse] mailbox_bytes: a client that stops reading its stream is ended (slow disconnect counted) while publishing goes on; the server keeps serving streams', async () => {
      const sock = net.connect(slow.port, '127.0.0.1');
      let head = '';
      let tail = '';
      sock.on('error', () => {});
      await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
      sock.write(`GET /connection/sse?channel=firehose HTTP/1.1\r\nHost: 127.0.0.1:${slow.port}\r\n\r\n`);
      await new Promise((r) => {
        const on = (d) => { head += d.toString('latin1'); if (head.includes('retry:')) { sock.off('data', on); r(); } };
        sock.on('data', on);
      });
      assert(/^HTTP\/1\.1 200/.test(head), 'stream answer: ' + head.slice(0, 120));
      sock.pause(); // reads nothing more: the kernel buffers fill, then the stream's queue
      // 8 KiB publications: eight fit the 64 KiB queue, so the queue
      // overflows only once the socket stops taking them.
      const pad = 'x'.repeat(8 * 1024);
      const slowDisconnects = async () => {
        const m = await (await fetch(`${slow.origin}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
        const hit = /^duplex_slow_disconnects_total\{front="sse"\} (\d+)/m.exec(m);
        return hit ? Number(hit[1]) : 0;
      };
      let published = 0;
      for (let i = 0; i < 8000 && (i % 50 !== 0 || (await slowDisconnects()) === 0); i++) {
        const r = await fetch(`${slow.origin}/api/publish`, {
          method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
          body: JSON.stringify({ channel: 'firehose', data: { i, pad } }), signal: AbortSignal.timeout(5000),
        });
        assertEq(r.status, 200, `publish ${i}`);
        await r.text();
        published++;
      }
      assert((await slowDisconnects()) >= 1, `no slow disconnect after ${published} publications of 8 KiB`);
      assert(published > 8, `the queue overflowed after ${published} publications: before the socket filled`);
      // The client drains what the kernel held, then finds the response
      // ended (the last chunk of the chunked body): a browser reconnects.
      sock.on('data', (d) => { tail = (tail + d.toString('latin1')).slice(-64); });
      sock.resume();
      await until(() => tail.endsWith('\r\n0\r\n\r\n'), 10000, () => `the slow stream did not end; last bytes ${JSON.stringify(tail)}`);
      sock.destroy();
      const r = await rawGet(slow.port, '/connection/sse?channel=firehose');
      assertEq(r.status, 200, 'a new stream after the slow one');
      r.close();
      console.log(`  the stream ended after ${published} publications of 8 KiB`);
    });

    await check('no uncaught errors in the pages', async () => {
      assert(pageErrors.length === 0, pageErrors.join('; '));
    });
  } finally {
    for (const s of [...openStreams]) { try { s.close(); } catch { /* gone */ } }
    if (context) await context.close().catch(() => {});
    for (const p of proxies) await p.close();
    pageServer.closeAllConnections();
    await new Promise((r) => pageServer.close(() => r()));
    await Promise.all(servers.map((s) => s.stop()));
    removeDir(work);
  }
}

main().then(
  () => { process.exitCode = summary('sse'); setTimeout(() => process.exit(process.exitCode), 200).unref(); },
  (e) => { console.log(`FAIL sse suite crashed: ${e && e.stack ? e.stack : e}`); summary('sse'); process.exit(1); },
);
