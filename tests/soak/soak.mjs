#!/usr/bin/env node
// Soak and churn test of `duplex serve`, driven by an independent client
// (npm `ws`, from tests/interop/node_modules).
//
// Starts `duplex serve` on a free loopback port, opens N connections
// (most on /echo, a share on /connection/websocket speaking the Centrifugo
// JSON protocol, subscribed to one channel that gets publications through
// /api/publish), keeps echo traffic at a steady rate (each echo connection
// one message every --interval seconds, sizes from 1 B to 256 KiB, text
// and binary, half the connections with permessage-deflate; every echo
// checked byte for byte), and every --churn-every seconds closes and
// reopens --churn of the connections: some with a close handshake (1000),
// some by destroying the socket without a close frame (ws.terminate(),
// half of those with an echo in flight). The server's RSS (VmRSS), open
// file descriptors and CPU time are sampled every second.
//
// Passes when there were 0 errors and the median RSS of the last 10 s is
// within --tolerance of the median RSS of the 10 s after the warm-up.
// Writes the samples and the summary as JSON (--out); tests/soak/chart.py
// draws them. See tests/soak/README.md.

import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const require = createRequire(path.join(repoRoot, 'tests', 'interop', 'package.json'));
const WebSocket = require('ws');

// ---------------------------------------------------------------- options

const opts = {
  seconds: 600,
  connections: 10000,
  churnEvery: 60, // seconds between churn rounds
  churn: 0.1, // share of the connections closed and reopened each round
  unclean: 0.3, // share of the churned ones closed without a close frame
  interval: 10, // seconds between two messages of one echo connection
  hub: 0.1, // share of the connections on /connection/websocket
  publishRate: 2, // publications per second through /api/publish
  deflate: 0.5, // share of the echo connections offering permessage-deflate
  warmup: null, // seconds; default: max(10 % of the run, first churn + 5 s)
  window: 10, // seconds of the two RSS windows compared
  tolerance: 0.05,
  bin: process.env.DUPLEX_BIN || path.join(repoRoot, 'target', 'release', 'duplex'),
  out: null,
  quiet: false,
};

function usage(code) {
  console.log(`usage: node tests/soak/soak.mjs [--minutes M | --seconds S] [--connections N]
  [--churn-every S] [--churn F] [--unclean F] [--interval S] [--hub F] [--publish-rate R]
  [--deflate F] [--warmup S] [--tolerance F] [--bin PATH] [--out FILE.json] [--quiet]`);
  process.exit(code);
}

const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => {
    if (i + 1 >= argv.length) usage(2);
    return argv[++i];
  };
  const num = () => {
    const v = Number(val());
    if (!Number.isFinite(v) || v < 0) usage(2);
    return v;
  };
  switch (a) {
    case '--minutes': opts.seconds = num() * 60; break;
    case '--seconds': opts.seconds = num(); break;
    case '--connections': opts.connections = Math.floor(num()); break;
    case '--churn-every': opts.churnEvery = num(); break;
    case '--churn': opts.churn = num(); break;
    case '--unclean': opts.unclean = num(); break;
    case '--interval': opts.interval = num(); break;
    case '--hub': opts.hub = num(); break;
    case '--publish-rate': opts.publishRate = num(); break;
    case '--deflate': opts.deflate = num(); break;
    case '--warmup': opts.warmup = num(); break;
    case '--tolerance': opts.tolerance = num(); break;
    case '--bin': opts.bin = val(); break;
    case '--out': opts.out = val(); break;
    case '--quiet': opts.quiet = true; break;
    case '-h': case '--help': usage(0); break;
    default: console.error(`soak: unknown argument ${a}`); usage(2);
  }
}
if (opts.warmup === null) opts.warmup = Math.max(0.1 * opts.seconds, opts.churnEvery + 5);
if (opts.warmup + 2 * opts.window > opts.seconds) {
  console.error(`soak: the run (${opts.seconds} s) must be longer than the warm-up (${opts.warmup} s) plus two ${opts.window} s windows`);
  process.exit(2);
}

const ECHO_TIMEOUT_MS = 10_000; // an echo not back by then is an error
const OPEN_TIMEOUT_MS = 10_000; // handshake (and, on the hub, connect + subscribe replies)
const CLOSE_TIMEOUT_MS = 10_000; // a close handshake we started
const CONNECT_CONCURRENCY = 200; // handshakes in flight at once
const DELIVERY_GRACE_MS = 5_000; // an acknowledged publication must reach every subscriber by then
const TICK_MS = 50;
const CHANNEL = 'soak';

const log = (...a) => { if (!opts.quiet) console.log(...a); };

// ---------------------------------------------------------------- errors

const errors = { total: 0, byKind: {}, first: [] };
function error(kind, detail) {
  errors.total++;
  errors.byKind[kind] = (errors.byKind[kind] || 0) + 1;
  if (errors.first.length < 20) {
    const line = `${elapsed().toFixed(1)} s ${kind}: ${detail}`;
    errors.first.push(line);
    console.log(`ERROR ${line}`);
  }
}

// ---------------------------------------------------------------- server

const t0 = Date.now();
const loadBefore = os.loadavg().map((x) => Number(x.toFixed(2)));
// What was measured: the binary's build time and the working tree's commit.
const binBuilt = (() => { try { return statSync(opts.bin).mtime.toISOString(); } catch { return null; } })();
const tree = (() => {
  try {
    const git = (...a) => execFileSync('git', a, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--untracked-files=no') ? '-dirty' : '');
  } catch { return null; }
})();
const elapsed = () => (Date.now() - t0) / 1000;

let server = null; // { child, pid, port, log }
let serverExited = false;
let stopping = false;
const serverWarnings = [];

function startServer() {
  return new Promise((resolve, reject) => {
    // Enough room for every connection plus those still closing during a
    // churn round (loopback peers are exempt from the per-IP limit).
    const maxConns = String(Math.ceil(opts.connections * 1.5) + 100);
    const child = spawn(opts.bin, ['serve', '--listen', '127.0.0.1:0', '--max-connections', maxConns], {
      // No log line per connection; the port comes from serve's own info line.
      env: { ...process.env, DUPLEX_LOG: 'warn,duplex::serve=info', NO_COLOR: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let buf = '';
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) { settled = true; child.kill('SIGKILL'); reject(new Error(`no port from ${opts.bin} within 20 s:\n${buf}`)); }
    }, 20_000);
    child.stderr.on('data', (d) => {
      const text = d.toString();
      if (!settled) {
        buf += text;
        const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf);
        if (m) {
          settled = true;
          clearTimeout(timer);
          server = { child, pid: child.pid, port: Number(m[1]) };
          resolve(server);
        }
        return;
      }
      for (const line of text.split('\n')) {
        if (/\b(WARN|ERROR)\b/.test(line)) {
          serverWarnings.push(line);
          if (!stopping) error('server log', line.replace(/^\S+\s+/, '').slice(0, 300));
        }
      }
    });
    child.on('error', (e) => { if (!settled) { settled = true; reject(e); } });
    child.on('exit', (code, sig) => {
      serverExited = true;
      if (!settled) { settled = true; clearTimeout(timer); reject(new Error(`duplex serve exited (${code ?? sig}):\n${buf}`)); }
      else if (!stopping) error('server exit', `duplex serve exited (${code ?? sig}) during the run`);
    });
  });
}

function killServer() {
  if (server && !serverExited) {
    try { server.child.kill('SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killServer);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killServer(); process.exit(130); });
}

// ---------------------------------------------------------------- /proc sampling

const CLK_TCK = 100;
function procSample(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
    const threads = Number(/Threads:\s+(\d+)/.exec(status)[1]);
    // Fields after the command name: state is field 3; utime 14, stime 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(f[11]) + Number(f[12])) / CLK_TCK;
    const fds = readdirSync(`/proc/${pid}/fd`).length;
    return { rss_kib: rss, threads, cpu_s: cpu, fds };
  } catch {
    return null;
  }
}

async function serverConnections() {
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let n = 0;
    for (const m of text.matchAll(/^duplex_connections\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
    return n;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- payloads

const POOL = Buffer.alloc(512 * 1024);
randomFillSync(POOL);
// Compressible text with multi-byte characters (2, 3 and 4 bytes in UTF-8).
const WORDS = ['echo', 'soak', 'churn', 'duplex', 'café', 'naïve', '€uro', 'Grüße', 'δέλτα', '日本語', '😀', 'WebSocket', '🚀'];
const TEXT_POOL = (() => {
  const parts = [];
  let n = 0;
  let seed = 1;
  while (n < 300_000) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const w = WORDS[seed % WORDS.length];
    parts.push(w);
    n += w.length + 1;
  }
  return Array.from(parts.join(' ')); // code points, so slices never split one
})();

const sizes = { text: 0, small: 0, medium: 0, large: 0 };
let seq = 0;
/** A new message: { data, binary, bytes (what must come back) }. */
function makeMessage(slot) {
  const r = Math.random();
  const tag = `${slot.index}:${slot.generation}:${++seq}:`;
  if (r < 0.6) {
    sizes.text++;
    const len = 1 + Math.floor(Math.random() * 200);
    const off = Math.floor(Math.random() * (TEXT_POOL.length - len));
    const text = tag + TEXT_POOL.slice(off, off + len).join('');
    const bytes = Buffer.from(text, 'utf8');
    return { data: text, binary: false, bytes };
  }
  let len;
  if (r < 0.9) { sizes.small++; len = 1 + Math.floor(Math.random() * 4096); }
  else if (r < 0.99) { sizes.medium++; len = 4096 + Math.floor(Math.random() * 28 * 1024); }
  else { sizes.large++; len = 64 * 1024 + Math.floor(Math.random() * 192 * 1024); }
  const off = Math.floor(Math.random() * (POOL.length - len));
  const bytes = Buffer.concat([Buffer.from(tag), POOL.subarray(off, off + len)]);
  return { data: bytes, binary: true, bytes };
}

// ---------------------------------------------------------------- connections

const stats = {
  opened: 0, reconnects: 0, cleanCloses: 0, finalCloses: 0, uncleanCloses: 0, uncleanInFlight: 0,
  sent: 0, echoed: 0, bytesEchoed: 0, published: 0, delivered: 0, deflateOffered: 0,
};
let echoedThisSecond = 0;

/** One slot per connection; a churned slot opens a new connection (generation + 1). */
class Slot {
  constructor(index, kind) {
    this.index = index;
    this.kind = kind; // 'echo' | 'hub'
    this.generation = 0;
    this.ws = null;
    this.state = 'idle'; // idle | opening | open | closing | closed
    this.pending = []; // echo: messages sent, not yet back
    this.closing = null; // 'clean' | 'unclean' when we started the close
    this.since = 0;
    // hub
    this.subOffset = null;
    this.lastOffset = null;
  }
}

const slots = [];
const nHub = Math.round(opts.connections * opts.hub);
for (let i = 0; i < opts.connections; i++) slots.push(new Slot(i, i < nHub ? 'hub' : 'echo'));

// A small limiter for handshakes in flight.
let inFlight = 0;
const waiting = [];
function openSoon(slot) {
  slot.state = 'opening';
  waiting.push(slot);
  pump();
}
function pump() {
  while (inFlight < CONNECT_CONCURRENCY && waiting.length && !stopping) {
    const slot = waiting.shift();
    inFlight++;
    open(slot, () => { inFlight--; pump(); });
  }
}

function open(slot, done) {
  slot.generation++;
  const gen = slot.generation;
  const url = `ws://127.0.0.1:${server.port}${slot.kind === 'hub' ? '/connection/websocket' : '/echo'}`;
  const deflate = slot.kind === 'echo' && (slot.index % 100) < opts.deflate * 100;
  if (deflate) stats.deflateOffered++;
  const ws = new WebSocket(url, { perMessageDeflate: deflate, handshakeTimeout: OPEN_TIMEOUT_MS });
  slot.ws = ws;
  slot.pending = [];
  slot.closing = null;
  slot.since = Date.now();
  slot.subOffset = null;
  slot.lastOffset = null;
  slot.failed = false;
  let finished = false;
  const finish = () => { if (!finished) { finished = true; done(); } };
  const current = () => slot.ws === ws && slot.generation === gen;

  ws.on('open', () => {
    finish();
    if (!current()) return;
    stats.opened++;
    if (slot.kind === 'echo') {
      slot.state = 'open';
    } else {
      // Stays 'opening' until the connect and subscribe replies.
      ws.send(`{"id":1,"connect":{"name":"soak"}}\n{"id":2,"subscribe":{"channel":"${CHANNEL}"}}`);
    }
  });
  ws.on('unexpected-response', (req, res) => {
    if (!current()) return;
    error('connect', `${url}: HTTP ${res.statusCode}`);
    slot.failed = true;
    res.resume();
    ws.terminate(); // emits 'error' and 'close'
  });
  ws.on('error', (e) => {
    if (!current() || slot.failed || slot.closing === 'unclean' || stopping) return;
    slot.failed = true; // counted once; 'close' follows
    error(finished ? 'socket' : 'connect', `slot ${slot.index} (${slot.kind}): ${e.message}`);
  });
  ws.on('message', (data, isBinary) => {
    if (!current()) return;
    if (slot.kind === 'echo') onEcho(slot, data, isBinary);
    else onHub(slot, ws, data);
  });
  ws.on('close', (code, reason) => {
    finish();
    if (!current()) return;
    const how = slot.closing;
    if (slot.failed) {
      // already counted
    } else if (how === 'clean') {
      if (code !== 1000) error('close', `slot ${slot.index}: our close 1000 answered with ${code} ${reason}`);
      else if (stopping) stats.finalCloses++;
      else stats.cleanCloses++;
    } else if (how === 'unclean') {
      stats.uncleanCloses++;
    } else if (!stopping) {
      error('unexpected close', `slot ${slot.index} (${slot.kind}): ${code} ${reason}`);
    }
    if (slot.pending.length && how !== 'unclean' && !slot.failed && !stopping) {
      error('echo lost', `slot ${slot.index}: ${slot.pending.length} echo(es) not back at close`);
    }
    const failed = slot.failed;
    slot.state = 'closed';
    slot.ws = null;
    slot.pending = [];
    if (stopping) return;
    if (how === 'clean' || how === 'unclean') stats.reconnects++;
    if (failed) setTimeout(() => { if (!stopping) openSoon(slot); }, 1000);
    else openSoon(slot);
  });
}

function onEcho(slot, data, isBinary) {
  const want = slot.pending.shift();
  if (!want) {
    error('echo', `slot ${slot.index}: a message nobody sent (${data.length} B)`);
    return;
  }
  if (want.binary !== isBinary || !want.bytes.equals(data)) {
    error('echo', `slot ${slot.index}: mismatch (sent ${want.bytes.length} B ${want.binary ? 'binary' : 'text'}, got ${data.length} B ${isBinary ? 'binary' : 'text'})`);
    return;
  }
  stats.echoed++;
  stats.bytesEchoed += data.length;
  echoedThisSecond++;
}

function onHub(slot, ws, data) {
  for (const line of data.toString().split('\n')) {
    if (!line) continue;
    let m;
    try { m = JSON.parse(line); } catch { error('hub', `slot ${slot.index}: not JSON: ${line.slice(0, 100)}`); continue; }
    if (!m || typeof m !== 'object') { error('hub', `slot ${slot.index}: ${line.slice(0, 100)}`); continue; }
    if (Object.keys(m).length === 0) { ws.send('{}'); continue; } // ping -> pong
    if (m.error) { error('hub', `slot ${slot.index}: reply ${m.id} error ${JSON.stringify(m.error)}`); continue; }
    if (m.id === 2 && m.subscribe) {
      slot.subOffset = typeof m.subscribe.offset === 'number' ? m.subscribe.offset : null;
      slot.lastOffset = slot.subOffset;
      slot.subscribedAt = Date.now();
      slot.state = 'open';
      continue;
    }
    if (m.id === 1 || m.id === 2) continue;
    const pub = m.push && m.push.channel === CHANNEL && m.push.pub;
    if (pub) {
      const off = pub.offset;
      if (slot.lastOffset !== null && off !== slot.lastOffset + 1) {
        error('hub', `slot ${slot.index}: publication offset ${off} after ${slot.lastOffset}`);
      }
      slot.lastOffset = off;
      stats.delivered++;
    }
    // join / leave pushes and anything else on the channel: ignored
  }
}

// ---------------------------------------------------------------- traffic

// Echo slots are spread over the ticks of one interval, so the rate is steady.
const ticksPerInterval = Math.max(1, Math.round((opts.interval * 1000) / TICK_MS));
const buckets = Array.from({ length: ticksPerInterval }, () => []);
{
  const echoSlots = slots.filter((s) => s.kind === 'echo');
  echoSlots.forEach((s, i) => buckets[Math.floor((i * ticksPerInterval) / echoSlots.length)].push(s));
}
let tickNo = 0;
let tickBase = 0;
let sending = false;

/** Sends for every bucket due: a late timer catches up, so the rate holds under load. */
function tick() {
  const due = Math.floor((Date.now() - tickBase) / TICK_MS);
  while (tickNo < due) {
    const bucket = buckets[tickNo++ % ticksPerInterval];
    if (!sending) continue;
    for (const slot of bucket) {
      if (slot.state !== 'open' || slot.pending.length) continue; // a late echo shows as a timeout
      const msg = makeMessage(slot);
      msg.sentAt = Date.now();
      slot.pending.push(msg);
      slot.ws.send(msg.data, { binary: msg.binary });
      stats.sent++;
    }
  }
}

const acks = []; // [offset, time acknowledged]
let publishing = false;
async function publish() {
  if (!publishing || nHub === 0) return;
  const n = ++stats.published;
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: CHANNEL, data: { n, at: Date.now() } }),
      signal: AbortSignal.timeout(5000),
    });
    const body = await res.json();
    if (res.status !== 200 || !body.result || typeof body.result.offset !== 'number') {
      error('publish', `HTTP ${res.status} ${JSON.stringify(body).slice(0, 200)}`);
    } else {
      acks.push([body.result.offset, Date.now()]);
      if (acks.length > 1000) acks.splice(0, acks.length - 1000);
    }
  } catch (e) {
    if (!stopping) error('publish', e.message);
  }
}

function churn() {
  const open = slots.filter((s) => s.state === 'open' && !s.closing);
  const n = Math.round(opts.connections * opts.churn);
  // A partial Fisher-Yates shuffle picks n at random.
  for (let i = 0; i < n && i < open.length; i++) {
    const j = i + Math.floor(Math.random() * (open.length - i));
    [open[i], open[j]] = [open[j], open[i]];
    const slot = open[i];
    slot.state = 'closing';
    slot.closeStarted = Date.now();
    if (Math.random() < opts.unclean) {
      slot.closing = 'unclean';
      // Half of them with an echo in flight: the server writes to a dead socket.
      if (slot.kind === 'echo' && i % 2 === 0) {
        const msg = makeMessage(slot);
        slot.ws.send(msg.data, { binary: msg.binary });
        stats.sent++;
        stats.uncleanInFlight++;
      }
      slot.ws.terminate();
    } else {
      slot.closing = 'clean';
      slot.ws.close(1000, 'churn');
    }
  }
  log(`${elapsed().toFixed(0)} s: churn: ${Math.min(n, open.length)} connections closed and reopened`);
}

/** Once a second: timeouts of echoes, handshakes, closes and deliveries. */
function checkTimeouts() {
  const now = Date.now();
  let delivered = null; // highest offset acknowledged long enough ago
  for (const [off, at] of acks) if (now - at >= DELIVERY_GRACE_MS) delivered = off;
  for (const slot of slots) {
    if (slot.state === 'open' && slot.kind === 'echo' && slot.pending.length && now - slot.pending[0].sentAt > ECHO_TIMEOUT_MS) {
      error('timeout', `slot ${slot.index}: echo not back after ${ECHO_TIMEOUT_MS} ms`);
      slot.pending = [];
      slot.failed = true;
      slot.ws.terminate();
    } else if (slot.state === 'opening' && slot.ws && now - slot.since > OPEN_TIMEOUT_MS + 1000) {
      error('timeout', `slot ${slot.index} (${slot.kind}): not open after ${OPEN_TIMEOUT_MS} ms`);
      slot.failed = true;
      slot.ws.terminate();
    } else if (slot.state === 'closing' && slot.closing === 'clean' && now - slot.closeStarted > CLOSE_TIMEOUT_MS) {
      error('timeout', `slot ${slot.index}: close handshake not done after ${CLOSE_TIMEOUT_MS} ms`);
      slot.failed = true;
      slot.ws.terminate();
    } else if (slot.state === 'open' && slot.kind === 'hub' && delivered !== null && slot.subOffset !== null
      && delivered > slot.subOffset && now - slot.subscribedAt > DELIVERY_GRACE_MS
      && (slot.lastOffset === null || slot.lastOffset < delivered)) {
      error('delivery', `slot ${slot.index}: publication ${delivered} acknowledged ${DELIVERY_GRACE_MS} ms ago, last received ${slot.lastOffset}`);
      slot.lastOffset = delivered; // report each gap once
    }
  }
}

// ---------------------------------------------------------------- run

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (a) => {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  // A hard bound whatever happens.
  const deadline = setTimeout(() => {
    console.log('soak: FAIL: hard deadline reached');
    killServer();
    process.exit(1);
  }, (opts.seconds + 200) * 1000);
  deadline.unref();

  await startServer();
  const base = procSample(server.pid);
  log(`soak: ${opts.bin} pid ${server.pid} on 127.0.0.1:${server.port}; ${opts.connections} connections `
    + `(${opts.connections - nHub} echo, ${nHub} hub), ${opts.seconds} s, churn ${opts.churn * 100} % every ${opts.churnEvery} s `
    + `(${opts.unclean * 100} % unclean), warm-up ${opts.warmup} s; server RSS at start ${base.rss_kib} KiB`);

  const samples = [];
  let lastServerConns = null;
  const tStart = Date.now(); // the run's clock starts as the connections start opening
  const at = () => (Date.now() - tStart) / 1000;

  for (const s of slots) openSoon(s);
  sending = true;
  publishing = true;
  tickBase = Date.now();
  const tickTimer = setInterval(tick, TICK_MS);
  const pubTimer = nHub && opts.publishRate > 0 ? setInterval(publish, 1000 / opts.publishRate) : null;
  let nextChurn = opts.churnEvery;
  const churnTimes = [];

  let second = 0;
  while (true) {
    second++;
    const due = tStart + second * 1000;
    await sleep(Math.max(0, due - Date.now()));
    if (serverExited) break;
    checkTimeouts();
    if (second % 5 === 0) serverConnections().then((n) => { if (n !== null) lastServerConns = n; });
    const p = procSample(server.pid);
    if (p) {
      const open = slots.reduce((n, s) => n + (s.state === 'open' ? 1 : 0), 0);
      samples.push({ t: second, ...p, open, server_conns: lastServerConns, echoed: echoedThisSecond, errors: errors.total });
      echoedThisSecond = 0;
    }
    if (second >= opts.seconds) break;
    if (second >= nextChurn && opts.churn > 0 && opts.churnEvery > 0) {
      churnTimes.push(second);
      churn();
      nextChurn += opts.churnEvery;
    }
    if (second % 30 === 0 && p) {
      log(`${second} s: RSS ${(p.rss_kib / 1024).toFixed(1)} MiB, ${p.fds} fds, ${samples.at(-1).open} open, `
        + `${stats.echoed} echoed, ${stats.reconnects} reconnects, ${errors.total} errors`);
    }
  }
  const ranFor = at();

  // Wind down: stop sending, let the last echoes come back, close everything
  // cleanly, and check the server lets go of every connection.
  sending = false;
  publishing = false;
  clearInterval(tickTimer);
  if (pubTimer) clearInterval(pubTimer);
  const drainUntil = Date.now() + ECHO_TIMEOUT_MS;
  while (Date.now() < drainUntil && slots.some((s) => s.pending.length && s.state === 'open')) await sleep(100);
  checkTimeouts();
  stopping = true; // from here on, closes are ours
  waiting.length = 0;
  let closing = 0;
  for (const s of slots) {
    if (s.pending.length && s.state === 'open') error('timeout', `slot ${s.index}: echo not back at the end`);
    if (s.ws && s.ws.readyState === WebSocket.OPEN) {
      closing++;
      const ws = s.ws;
      s.closing = 'clean';
      ws.once('close', () => { closing--; }); // the code is checked by the slot's own handler
      ws.close(1000, 'done');
    } else if (s.ws) {
      s.ws.terminate();
    }
  }
  const closeUntil = Date.now() + CLOSE_TIMEOUT_MS;
  while (closing > 0 && Date.now() < closeUntil) await sleep(100);
  if (closing > 0) error('timeout', `${closing} final close handshake(s) not done after ${CLOSE_TIMEOUT_MS} ms`);
  let connsAfter = null;
  let fdsAfter = null;
  const settleUntil = Date.now() + 10_000;
  while (Date.now() < settleUntil && !serverExited) {
    connsAfter = await serverConnections();
    const p = procSample(server.pid);
    fdsAfter = p && p.fds;
    if (connsAfter === 0 && fdsAfter !== null && fdsAfter <= base.fds + 2) break;
    await sleep(250);
  }
  const afterClose = procSample(server.pid);
  // jemalloc returns freed pages after its decay time (10 s): what the server
  // still holds 15 s after the last client left.
  await sleep(15_000);
  const idle = serverExited ? null : procSample(server.pid);
  if (connsAfter !== 0) error('leak', `server still counts ${connsAfter} open connection(s) 10 s after every client closed`);
  if (fdsAfter === null || fdsAfter > base.fds + 2) error('leak', `server holds ${fdsAfter} fds after every client closed (${base.fds} at start)`);

  // Stop the server: SIGINT, a graceful exit with status 0.
  let exitCode = null;
  if (!serverExited) {
    exitCode = await new Promise((resolve) => {
      const hard = setTimeout(() => { server.child.kill('SIGKILL'); resolve('killed'); }, 10_000);
      server.child.once('exit', (code, sig) => { clearTimeout(hard); resolve(code ?? sig); });
      server.child.kill('SIGINT');
    });
    if (exitCode !== 0) error('server exit', `duplex serve exited with ${exitCode} after SIGINT`);
  }

  // ------------------------------------------------------------ summary
  const win = (from, to) => samples.filter((s) => s.t > from && s.t <= to).map((s) => s.rss_kib);
  const rssWarm = median(win(opts.warmup, opts.warmup + opts.window));
  const endT = samples.length ? samples.at(-1).t : 0;
  const rssEnd = median(win(endT - opts.window, endT));
  const ratio = rssWarm && rssEnd ? rssEnd / rssWarm : null;
  const after = samples.filter((s) => s.t > opts.warmup);
  const peak = after.reduce((m, s) => Math.max(m, s.rss_kib), 0);
  const cpuRun = samples.length ? samples.at(-1).cpu_s - base.cpu_s : null;
  const rssOk = ratio !== null && Math.abs(ratio - 1) <= opts.tolerance;
  const summary = {
    pass: errors.total === 0 && rssOk,
    binary: opts.bin,
    binary_built: binBuilt,
    tree,
    connections: opts.connections,
    echo_connections: opts.connections - nHub,
    hub_connections: nHub,
    seconds: opts.seconds,
    ran_s: Number(ranFor.toFixed(1)),
    warmup_s: opts.warmup,
    window_s: opts.window,
    churn_every_s: opts.churnEvery,
    churn_share: opts.churn,
    unclean_share: opts.unclean,
    interval_s: opts.interval,
    churn_rounds: churnTimes.length,
    churn_times: churnTimes,
    messages_sent: stats.sent,
    messages_echoed: stats.echoed,
    bytes_echoed: stats.bytesEchoed,
    message_kinds: sizes,
    handshakes_offering_deflate: stats.deflateOffered,
    publications: stats.published,
    deliveries: stats.delivered,
    connections_opened: stats.opened,
    reconnects: stats.reconnects,
    clean_closes: stats.cleanCloses,
    final_closes: stats.finalCloses,
    unclean_closes: stats.uncleanCloses,
    unclean_with_echo_in_flight: stats.uncleanInFlight,
    errors: errors.total,
    errors_by_kind: errors.byKind,
    first_errors: errors.first,
    server_warnings: serverWarnings.slice(0, 20),
    rss_start_kib: base.rss_kib,
    rss_after_warmup_kib: rssWarm,
    rss_end_kib: rssEnd,
    rss_ratio: ratio === null ? null : Number(ratio.toFixed(4)),
    rss_peak_after_warmup_kib: peak,
    rss_tolerance: opts.tolerance,
    rss_after_all_closed_kib: afterClose ? afterClose.rss_kib : null,
    rss_15s_after_all_closed_kib: idle ? idle.rss_kib : null,
    fds_start: base.fds,
    fds_after_all_closed: fdsAfter,
    server_connections_after_all_closed: connsAfter,
    server_cpu_s: cpuRun === null ? null : Number(cpuRun.toFixed(2)),
    server_exit: exitCode,
    node: process.version,
    ws: require('ws/package.json').version,
    date: new Date(t0).toISOString(),
    load_before: loadBefore,
    load_after: os.loadavg().map((x) => Number(x.toFixed(2))),
    cpus: os.cpus().length,
    mem_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)),
  };
  if (opts.out) writeFileSync(opts.out, JSON.stringify({ summary, samples }, null, 1) + '\n');

  const mib = (k) => (k === null ? '?' : `${(k / 1024).toFixed(1)} MiB`);
  console.log(`\nsoak: ${summary.connections} connections for ${summary.ran_s} s: ${summary.messages_echoed} echoes verified `
    + `(${summary.messages_sent} sent), ${summary.publications} publications, ${summary.deliveries} deliveries, `
    + `${summary.reconnects} reconnects (${summary.clean_closes} clean closes, ${summary.unclean_closes} unclean), ${summary.errors} errors`);
  console.log(`soak: RSS ${mib(rssWarm)} after warm-up (${opts.warmup}–${opts.warmup + opts.window} s), ${mib(rssEnd)} at the end, `
    + `ratio ${summary.rss_ratio} (tolerance ±${opts.tolerance * 100} %), peak ${mib(peak)}; `
    + `after every client closed: ${connsAfter} server connections, ${fdsAfter} fds, RSS ${mib(summary.rss_after_all_closed_kib)}, `
    + `${mib(summary.rss_15s_after_all_closed_kib)} 15 s later (${mib(summary.rss_start_kib)} at start)`);
  if (errors.total) console.log(`soak: errors by kind: ${JSON.stringify(errors.byKind)}`);
  if (opts.out) console.log(`soak: wrote ${opts.out}`);
  console.log(`soak: ${summary.pass ? 'PASS' : 'FAIL'}`);
  return summary.pass ? 0 : 1;
}

main().then((code) => { killServer(); process.exit(code); }, (e) => {
  console.log(`soak: FAIL: ${e.stack || e}`);
  killServer();
  process.exit(1);
});
