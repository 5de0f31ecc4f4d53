// Scale-out: several `duplex serve` nodes over one Redis broker
// (`--broker redis://… --broker-prefix NAME`, or `[broker] url/prefix` in the
// TOML) act as one hub. The real npm `centrifuge` client (with `ws`) and the
// HTTP API (`/api/<method>`, X-API-Key) drive a cluster of 3 nodes and a
// `redis-server` started here on a free loopback port:
//
//   1. publications from clients and the API on every node reach every
//      subscriber on every node exactly once, in offset order;
//   2. Redis SIGKILLed and restarted mid-traffic: publishes fail fast (503),
//      /health is 503 then 200, nothing acknowledged is lost or duplicated;
//   3. a node SIGKILLed: its clients (through a TCP balancer here) reconnect to
//      the others and recover; its presence members expire;
//   4. FLUSHALL: new epoch, unsubscribe 2500, recovered false, no replay;
//   5. presence, presence_stats, join/leave, channels, disconnect across nodes;
//   6. `[broker]` in the TOML, and the prefix separating clusters;
//   7. a Redis Cluster of 3 masters (3 redis-server in cluster mode made one
//      by `redis-cli --cluster create`), nodes with `--broker-cluster` and the
//      masters as seeds: 12 channels (4 on each master, by their slot), every
//      publication once and in offset order everywhere, history and presence
//      from every node, each channel's fan-out a shard channel on the master
//      of its slot (PUBSUB SHARDCHANNELS), none on plain pub/sub;
//   8. Redis SIGSTOPped (accepting, never answering): publish refused 503
//      within the command timeout, /health 503; after SIGCONT, served again.
//
// Every check starts its own redis-server and nodes (a unique prefix each)
// and stops them at its end; redis children are also killed when the process
// exits. Every wait is on an event or a polled condition with a deadline.
//
// Environment: DUPLEX_BIN (binary), REDIS_SERVER (default: redis-server on
// PATH), REDIS_CLI (check 7; default: redis-cli on PATH), SCALEOUT_ONLY=1,3
// (run only these numbered checks), SCALEOUT_LOGS=1 (on a failure print the
// tail of every node's and redis's log; without it only their WARN/ERROR
// lines), CENTRIFUGE_FRAMES=1 (on a
// failure print the last frames of every client), SCALEOUT_NO_BROKER=1 (a
// development aid for the test itself: one node without --broker stands for
// the three, only checks 1 and 5 run).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  API_KEY, SECRET, apiOk, client, connToken, nth, startHub, subscription,
} from './centrifuge.mjs';
import {
  assert, assertEq, check, closedPort, removeDir, skip, sleep, summary,
  tempDir, until,
} from './lib.mjs';

const REDIS_BIN = process.env.REDIS_SERVER || 'redis-server';
const REDIS_CLI = process.env.REDIS_CLI || 'redis-cli';
const NO_BROKER = !!process.env.SCALEOUT_NO_BROKER;
const ONLY = (process.env.SCALEOUT_ONLY || '').split(',').map((s) => s.trim()).filter(Boolean);
const PRESENCE_TTL_S = 6;
// presence_ttl + presence_ttl/3 (the refresh period) + slack.
const PRESENCE_GONE_MS = 12_000;
// "Fail fast, within ~2 s", plus slack for a loaded 2-core machine.
const FAIL_FAST_MS = 3_000;
// run.sh kills the suite after INTEROP_SUITE_TIMEOUT (180 s): checks end before
// this deadline (their timeouts are cut to it; checks left without 15 s skip).
const SUITE_DEADLINE_MS = Number(process.env.INTEROP_SUITE_TIMEOUT || 180) * 1000 - 15_000;
const t0 = Date.now();

const quick = { minReconnectDelay: 100, maxReconnectDelay: 500 };
const uniq = (p) => `${p}-${randomBytes(3).toString('hex')}`;

let unhandled = [];
process.on('unhandledRejection', (e) => { unhandled.push(String(e && e.stack ? e.stack : e)); });

// ---------------------------------------------------------------- redis

const redisProcs = new Set();
process.on('exit', () => {
  for (const p of redisProcs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
});

function respEncode(args) {
  let s = `*${args.length}\r\n`;
  for (const a of args) {
    const b = Buffer.from(String(a));
    s += `$${b.length}\r\n${b.toString('binary')}\r\n`;
  }
  return Buffer.from(s, 'binary');
}

/** One RESP value from buf at i: { value, next }, or null when incomplete. */
function respParse(buf, i = 0) {
  const eol = buf.indexOf('\r\n', i);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[i]);
  const line = buf.toString('utf8', i + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+': return { value: line, next };
    case '-': return { value: new Error(`redis: ${line}`), next };
    case ':': return { value: Number(line), next };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.toString('utf8', next, next + len), next: next + len + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, next };
      const out = [];
      let at = next;
      for (let k = 0; k < count; k++) {
        const r = respParse(buf, at);
        if (!r) return null;
        out.push(r.value);
        at = r.next;
      }
      return { value: out, next: at };
    }
    default: return { value: new Error(`redis: unexpected reply ${JSON.stringify(buf.toString('utf8', i, eol))}`), next };
  }
}

/** Sends one command to redis on `port`; resolves its reply (rejects on an error reply). */
export function redisCmd(port, args, ms = 3000) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`redis ${args[0]} on :${port}: no reply within ${ms} ms`)); }, ms);
    s.on('connect', () => s.write(respEncode(args)));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const r = respParse(buf);
      if (!r) return;
      clearTimeout(timer);
      s.destroy();
      if (r.value instanceof Error) reject(r.value); else resolve(r.value);
    });
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/**
 * A redis-server on 127.0.0.1:port, not started yet: AOF with fsync on every
 * write in `dir` and no RDB snapshots, or with { cluster: true } a Redis
 * Cluster node (no persistence, its nodes-P.conf in `dir`). start() resolves
 * once it answers PING. Returns { port, url, kill(), start(), stop(), log() }.
 */
function redisProcess(dir, port, { cluster = false } = {}) {
  mkdirSync(dir, { recursive: true });
  const r = { port, dir, proc: null, out: '', cluster };
  r.url = cluster ? `redis://127.0.0.1:${r.port}` : `redis://127.0.0.1:${r.port}/0`;
  r.log = () => r.out;
  r.start = async () => {
    const args = [
      '--port', String(r.port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--daemonize', 'no',
      ...(cluster
        ? ['--appendonly', 'no', '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${r.port}.conf`),
          '--cluster-node-timeout', '2000']
        : ['--appendonly', 'yes', '--appendfsync', 'always']),
    ];
    const p = spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    redisProcs.add(p);
    r.proc = p;
    let spawnError;
    p.on('error', (e) => { spawnError = e; });
    p.stdout.on('data', (d) => { r.out += d; });
    p.stderr.on('data', (d) => { r.out += d; });
    p.on('exit', () => redisProcs.delete(p));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (spawnError) throw new Error(`cannot run ${REDIS_BIN}: ${spawnError.message}`);
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`redis-server on :${r.port} exited (${p.exitCode ?? p.signalCode}); log:\n${r.out.trim().split('\n').slice(-10).join('\n')}`);
      }
      try {
        if (await redisCmd(r.port, ['PING'], 1000) === 'PONG') return;
      } catch { /* not yet */ }
      if (Date.now() > deadline) {
        p.kill('SIGKILL');
        throw new Error(`redis-server on :${r.port} does not answer PING within 10 s; log:\n${r.out.trim()}`);
      }
      await sleep(50);
    }
  };
  r.kill = () => new Promise((res) => {
    const p = r.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) { res(); return; }
    p.once('exit', () => res());
    p.kill('SIGKILL');
  });
  r.stop = r.kill;
  return r;
}

/** Starts a standalone redis-server (see redisProcess) on port, a free one when not given. */
async function startRedis(dir, port) {
  const r = redisProcess(dir, port || await closedPort());
  await r.start();
  return r;
}

/** Whether nothing listens on 127.0.0.1:port (by binding it). */
function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A free loopback port P for a cluster node whose bus port P + 10000 is free
 * (and below 65536) too, none of them in `taken` (which gets both).
 */
async function clusterPort(taken) {
  for (let i = 0; i < 100; i++) {
    const p = await closedPort();
    if (p + 10000 > 65535 || taken.has(p) || taken.has(p + 10000)) continue;
    if (!(await portFree(p + 10000))) continue;
    taken.add(p); taken.add(p + 10000);
    return p;
  }
  throw new Error('no free loopback port P with P + 10000 (its cluster bus port) free too, in 100 tries');
}

/**
 * Runs a short-lived tool (redis-cli): resolves { code, signal, out } (stdout
 * and stderr together); killed after ms. A missing binary rejects with `missing`.
 */
function runTool(bin, args, ms, missing) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    redisProcs.add(p);
    let out = '';
    let timedOut = false;
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => { timedOut = true; p.kill('SIGKILL'); }, ms);
    p.on('error', (e) => {
      clearTimeout(timer);
      redisProcs.delete(p);
      reject(new Error(e.code === 'ENOENT' ? missing : `cannot run ${bin}: ${e.message}`));
    });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      redisProcs.delete(p);
      if (timedOut) reject(new Error(`${bin} ${args.join(' ')} still running after ${ms} ms; output:\n${out.trim().split('\n').slice(-15).join('\n')}`));
      else resolve({ code, signal, out });
    });
  });
}

/** CLUSTER INFO of the node on port as an object ({ cluster_state: 'ok', … }). */
async function clusterInfo(port) {
  const text = await redisCmd(port, ['CLUSTER', 'INFO'], 2000);
  return Object.fromEntries(String(text).split('\r\n').filter(Boolean).map((l) => l.split(':')));
}

/**
 * `redis-cli --cluster create` over the started cluster nodes `masters` (no
 * replicas), then waits until every node's CLUSTER INFO says state ok with
 * all of them known and serving slots. Returns slotOwner(slot) -> the master.
 */
async function createRedisCluster(masters) {
  const missing = `cannot run ${REDIS_CLI}: a Redis Cluster is created with redis-cli (Debian: apt-get install redis-tools, which redis-server depends on; or REDIS_CLI=/path/to/redis-cli)`;
  const v = await runTool(REDIS_CLI, ['--version'], 5_000, missing);
  assert(v.code === 0, `${REDIS_CLI} --version exited ${v.code ?? v.signal}: ${v.out.trim()}`);
  const create = await runTool(REDIS_CLI, ['--cluster', 'create', ...masters.map((m) => `127.0.0.1:${m.port}`),
    '--cluster-replicas', '0', '--cluster-yes'], 30_000, missing);
  assert(create.code === 0, `redis-cli --cluster create exited ${create.code ?? create.signal}; output:\n${create.out.trim().split('\n').slice(-15).join('\n')}`);
  const last = new Map();
  await until(async () => {
    const infos = await Promise.all(masters.map((m) => clusterInfo(m.port).catch((e) => ({ error: e.message }))));
    masters.forEach((m, i) => last.set(m.port, infos[i]));
    return infos.every((i) => i.cluster_state === 'ok' && Number(i.cluster_known_nodes) === masters.length && Number(i.cluster_size) === masters.length);
  }, 15_000, () => `redis cluster not ok on every node: ${[...last].map(([p, i]) => `:${p} ${i.error || `state ${i.cluster_state}, known ${i.cluster_known_nodes}, size ${i.cluster_size}, slots ok ${i.cluster_slots_ok}`}`).join('; ')}`, 200);
  // Who serves which slot, as every node sees it (they must agree).
  const views = await Promise.all(masters.map((m) => redisCmd(m.port, ['CLUSTER', 'SLOTS'])));
  const slotRanges = (v) => v.map(([from, to, [, port]]) => ({ from, to, port: Number(port) })).sort((a, b) => a.from - b.from);
  const served = slotRanges(views[0]);
  views.forEach((v, i) => {
    assertEq(JSON.stringify(slotRanges(v)), JSON.stringify(served), `CLUSTER SLOTS of :${masters[i].port} (vs :${masters[0].port})`);
  });
  assertEq(served.reduce((k, r) => k + r.to - r.from + 1, 0), 16384, 'slots covered by CLUSTER SLOTS');
  const byPort = new Map(masters.map((m) => [m.port, m]));
  assertEq(JSON.stringify([...new Set(served.map((r) => r.port))].sort()), JSON.stringify([...byPort.keys()].sort()), 'masters serving slots');
  return (slot) => byPort.get(served.find((r) => slot >= r.from && slot <= r.to).port);
}

// ---------------------------------------------------------------- cluster

function hubToml({ broker } = {}) {
  return `
[auth]
token_hmac_secret = "${SECRET}"
api_key = "${API_KEY}"
allow_anonymous = false

[hub]
presence_ttl = "${PRESENCE_TTL_S}s"

[channels]
history_size = 0
history_ttl = "0s"
presence = false
join_leave = false
subscribe = "authenticated"
publish = "subscribers"
recovery = false

[namespaces.chat]
history_size = 1000
history_ttl = "300s"
presence = true
join_leave = true
subscribe = "authenticated"
publish = "subscribers"
recovery = true
${broker ? `
[broker]
url = "${broker.url}"
prefix = "${broker.prefix}"
${broker.cluster ? 'cluster = true\n' : ''}` : ''}`;
}

async function health(node, ms = 3000) {
  try {
    const r = await fetch(`${node.origin}/health`, { signal: AbortSignal.timeout(ms) });
    await r.text();
    return r.status;
  } catch (e) {
    return `error ${(e.cause && e.cause.code) || e.name || e.message}`;
  }
}

async function waitHealth(nodes, status, ms, why) {
  const last = new Map();
  await until(async () => {
    const got = await Promise.all(nodes.map((n) => health(n, 1500)));
    nodes.forEach((n, i) => last.set(n.name, got[i]));
    return got.every((s) => s === status);
  }, ms, () => `${why}: /health not ${status} on every node: ${[...last].map(([k, v]) => `${k}=${v}`).join(' ')}`, 150);
}

/**
 * Everything a check starts, stopped at its end (also after a failure or a
 * timeout: .closed then tells loops still running to stop).
 */
class Scope {
  constructor(work, name) {
    this.work = work;
    this.name = name;
    this.dir = path.join(work, name);
    mkdirSync(this.dir, { recursive: true });
    this.nodes = [];
    this.redis = [];
    this.clients = [];
    this.proxies = [];
    this.closed = false;
  }

  async redisServer() {
    const r = await startRedis(path.join(this.dir, `redis-${this.redis.length + 1}`));
    this.redis.push(r);
    return r;
  }

  /**
   * `count` redis-server nodes in cluster mode on free loopback ports, made
   * one Redis Cluster of `count` masters by redis-cli. Returns { masters,
   * slotOwner(slot) -> the master serving it, url (the seeds, comma-separated) }.
   */
  async redisCluster(count = 3) {
    const dir = path.join(this.dir, 'redis-cluster');
    const taken = new Set();
    const masters = [];
    for (let i = 0; i < count; i++) masters.push(redisProcess(dir, await clusterPort(taken), { cluster: true }));
    this.redis.push(...masters);
    const started = await Promise.allSettled(masters.map((m) => m.start()));
    const failed = started.find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
    const slotOwner = await createRedisCluster(masters);
    return { masters, slotOwner, url: masters.map((m) => m.url).join(',') };
  }

  /**
   * Starts a duplex node. broker: { url, prefix, via: 'flags' | 'toml',
   * cluster? }, or null for the in-process broker.
   */
  async node(name, broker) {
    const toml = hubToml({ broker: broker && broker.via === 'toml' ? broker : null });
    const args = broker && broker.via !== 'toml'
      ? ['--broker', broker.url, '--broker-prefix', broker.prefix, ...(broker.cluster ? ['--broker-cluster'] : [])]
      : [];
    const s = await startHub(this.dir, name, toml, args);
    const node = { name, server: s, port: s.port, origin: s.origin, hubUrl: s.hubUrl, child: s.child };
    node.log = () => s.log();
    node.stop = () => s.stop();
    node.kill = () => new Promise((res) => {
      if (s.child.exitCode !== null || s.child.signalCode !== null) { res(); return; }
      s.child.once('exit', () => res());
      s.child.kill('SIGKILL');
    });
    this.nodes.push(node);
    return node;
  }

  /**
   * `count` nodes on redis `r` with a prefix of their own, all answering
   * /health 200. Under SCALEOUT_NO_BROKER one node without --broker stands
   * for all of them.
   */
  async cluster(r, count = 3, prefix = uniq(`scaleout-${this.name}`)) {
    let nodes;
    if (NO_BROKER) {
      const one = await this.node(`${this.name}-single`, null);
      nodes = Array.from({ length: count }, (_, i) => ({ ...one, name: `n${i + 1}` }));
    } else {
      nodes = await Promise.all(Array.from({ length: count }, (_, i) => this.node(`n${i + 1}`, { url: r.url, prefix })));
    }
    await waitHealth(nodes, 200, 10_000, 'nodes just started on a working redis');
    nodes.prefix = prefix;
    return nodes;
  }

  client(url, opts, label) {
    const c = client(url, opts, label);
    this.clients.push(c);
    return c;
  }

  async close() {
    this.closed = true;
    for (const c of this.clients) { try { c.disconnect(); } catch { /* gone */ } }
    for (const p of this.proxies) { try { await p.close(); } catch { /* gone */ } }
    const seen = new Set();
    await Promise.all(this.nodes.filter((n) => !seen.has(n.child) && seen.add(n.child)).map((n) => n.stop()));
    await Promise.all(this.redis.map((r) => r.stop()));
  }

  /** After a failure: what the nodes and redis logged, and the clients' last frames. */
  dump() {
    const all = !!process.env.SCALEOUT_LOGS;
    const seen = new Set();
    for (const n of this.nodes) {
      if (seen.has(n.child)) continue;
      seen.add(n.child);
      const lines = n.log().trim().split('\n');
      const shown = all ? lines.slice(-40) : lines.filter((l) => /\b(WARN|ERROR)\b/.test(l)).slice(-8);
      if (shown.length) console.log(`  log of node ${n.name} (:${n.port})${all ? '' : ', WARN/ERROR lines'}:`);
      for (const l of shown) console.log(`    ${l.length > 300 ? l.slice(0, 300) + '…' : l}`);
    }
    if (all) {
      for (const r of this.redis) {
        console.log(`  log of redis :${r.port}:`);
        for (const l of r.log().trim().split('\n').slice(-15)) console.log(`    ${l}`);
      }
    }
    if (process.env.CENTRIFUGE_FRAMES) {
      for (const c of this.clients) {
        console.log(`  frames of ${c.label}:`);
        for (const f of c.frames.items.slice(-25)) {
          for (const line of f.split('\n')) console.log(`    ${line.length > 300 ? line.slice(0, 300) + '…' : line}`);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- TCP balancer

/**
 * A loopback TCP load balancer over nodes: each connection goes to the next
 * node round-robin, skipping nodes that refuse the connection (dead ones).
 * nodeOf(clientPort) names the node index a connection (by the client's local
 * port) was sent to.
 */
function startBalancer(nodes) {
  return new Promise((resolve, reject) => {
    let next = 0;
    const pairs = new Set();
    const route = new Map();
    const srv = net.createServer((c) => {
      c.on('error', () => { /* handled by close */ });
      const clientPort = c.remotePort;
      let attempts = 0;
      const attempt = () => {
        if (c.destroyed) return;
        if (attempts++ >= nodes.length) { c.destroy(); return; }
        const idx = next++ % nodes.length;
        const up = net.connect(nodes[idx].port, '127.0.0.1');
        let open = false;
        up.on('error', () => { if (!open) { up.destroy(); attempt(); } });
        up.once('connect', () => {
          open = true;
          if (c.destroyed) { up.destroy(); return; }
          route.set(clientPort, idx);
          const pair = [c, up];
          pairs.add(pair);
          const end = () => { c.destroy(); up.destroy(); pairs.delete(pair); };
          c.on('close', end); up.on('close', end);
          c.on('error', end); up.on('error', end);
          c.pipe(up); up.pipe(c);
        });
      };
      attempt();
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = srv.address().port;
      resolve({
        port,
        url: `ws://127.0.0.1:${port}/connection/websocket`,
        nodeOf: (clientPort) => route.get(clientPort),
        close: () => new Promise((r) => {
          for (const [c, up] of pairs) { c.destroy(); up.destroy(); }
          srv.close(() => r());
        }),
      });
    });
  });
}

/** A loopback TCP proxy to one port that the test can block and cut. */
function startCutProxy(port) {
  return new Promise((resolve, reject) => {
    const pairs = new Set();
    let blocked = false;
    const srv = net.createServer((c) => {
      if (blocked) { c.destroy(); return; }
      const up = net.connect(port, '127.0.0.1');
      const pair = [c, up];
      pairs.add(pair);
      const end = () => { c.destroy(); up.destroy(); pairs.delete(pair); };
      c.on('error', end); up.on('error', end);
      c.on('close', end); up.on('close', end);
      c.pipe(up); up.pipe(c);
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      resolve({
        url: `ws://127.0.0.1:${srv.address().port}/connection/websocket`,
        block() { blocked = true; },
        unblock() { blocked = false; },
        cut() { for (const [c, up] of pairs) { c.destroy(); up.destroy(); } pairs.clear(); },
        close: () => new Promise((r) => { blocked = true; for (const [c, up] of pairs) { c.destroy(); up.destroy(); } srv.close(() => r()); }),
      });
    });
  });
}

/** The local port of a centrifuge client's current socket (the balancer's key). */
function localPortOf(c) {
  const ws = c.sockets[c.sockets.length - 1];
  const port = ws && ws._socket && ws._socket.localPort;
  assert(port, `${c.label}: cannot read the local port of its socket (ws internals changed?)`);
  return port;
}

// ---------------------------------------------------------------- publications

/**
 * What was published: every publish gets a unique n (in issue order) and ends
 * acknowledged or failed. Publishers of one ledger wait for each answer before
 * the next publish, so each publisher's n increase in its own order.
 */
class Ledger {
  constructor(ch) {
    this.ch = ch;
    this.next = 1;
    this.issued = new Map();
    this.acked = new Map();
    this.failed = new Map();
    this.events = [];
    this.waiters = new Set();
  }
  issue(by) { const n = this.next++; this.issued.set(n, { n, by, t: Date.now() }); return n; }
  ack(n, info) { this.acked.set(n, { ...this.issued.get(n), ...info }); this.event({ ev: 'ack', n }); }
  fail(n, info) { this.failed.set(n, { ...this.issued.get(n), ...info }); this.event({ ev: 'fail', n }); }
  event(e) { this.events.push({ ...e, t: Date.now() }); for (const w of [...this.waiters]) w(); }
  /** Resolves once pred(ledger) holds; rejects after ms. */
  until(pred, ms, what) {
    return new Promise((resolve, reject) => {
      const probe = () => { if (pred(this)) { done(); resolve(); } };
      const timer = setTimeout(() => { done(); reject(new Error(`${what}: not within ${ms} ms (acked ${this.acked.size}, failed ${this.failed.size})`)); }, ms);
      const done = () => { clearTimeout(timer); this.waiters.delete(probe); };
      this.waiters.add(probe);
      probe();
    });
  }
  outcome(n) {
    const a = this.acked.get(n);
    return a ? { ok: true, ...a } : { ok: false, ...this.failed.get(n) };
  }
  ackedSince(t) { return [...this.acked.values()].filter((a) => a.t >= t).length; }
  failedSince(t) { return [...this.failed.values()].filter((a) => a.t >= t).length; }
}

/**
 * POST /api/publish of {n, by} to node; records the outcome in the ledger and
 * returns it: { ok, n, status, ms, offset?, why? }.
 */
async function apiPublish(ledger, node, timeoutMs = 6000) {
  const by = `api@${node.name}`;
  const n = ledger.issue(by);
  const start = Date.now();
  try {
    const r = await fetch(`${node.origin}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
      body: JSON.stringify({ channel: ledger.ch, data: { n, by } }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await r.text();
    const ms = Date.now() - start;
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    if (r.status === 200 && json && json.result && !json.error) {
      ledger.ack(n, { offset: json.result.offset, epoch: json.result.epoch, ms, status: 200 });
    } else {
      ledger.fail(n, { status: r.status, ms, why: text.slice(0, 200) });
    }
  } catch (e) {
    ledger.fail(n, { status: 0, ms: Date.now() - start, why: String((e.cause && e.cause.code) || e.name || e.message) });
  }
  return ledger.outcome(n);
}

/** An API publish that must be acknowledged; returns its n. */
async function mustPublish(ledger, node, what) {
  const o = await apiPublish(ledger, node);
  assert(o.ok, `${what}: publish of n ${o.n} on ${node.name} failed: ${o.status} ${o.why} (${o.ms} ms)`);
  return o.n;
}

/** Subscription.publish of {n, by}; records the outcome and returns it (as apiPublish). */
async function clientPublish(ledger, sub, by) {
  const n = ledger.issue(by);
  const start = Date.now();
  try {
    await sub.publish({ n, by });
    ledger.ack(n, { ms: Date.now() - start, status: 'client' });
  } catch (e) {
    ledger.fail(n, { status: 'client', code: e && e.code, why: e && e.message, ms: Date.now() - start });
  }
  return ledger.outcome(n);
}

/**
 * Publishes through the API round-robin over nodes() every `pace` ms until
 * stop(); stop() resolves once the publish in flight has its answer.
 */
function apiPublisher(scope, ledger, nodes, pace = 40) {
  let stopped = false;
  const done = (async () => {
    let i = 0;
    while (!stopped && !scope.closed) {
      const list = nodes();
      await apiPublish(ledger, list[i++ % list.length]);
      if (!stopped) await sleep(pace); // pacing of the traffic, not a wait on a condition
    }
  })();
  return { stop: () => { stopped = true; return done; } };
}

/** "1-5, 7, 9-12" (at most `max` groups). */
function ranges(ns, max = 20) {
  const s = [...new Set(ns)].sort((a, b) => a - b);
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    out.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j;
  }
  return out.length > max ? `${out.slice(0, max).join(', ')}, … (${out.length - max} more groups)` : out.join(', ');
}

const pubsOf = (s) => s.log.of('publication').map((e) => e.ctx);
const nOf = (p) => (p.data && typeof p.data === 'object' ? p.data.n : undefined);

/** Resolves once every subscription holds every acknowledged n (or after ms: the check then reports). */
async function waitDelivered(subs, ledger, ms) {
  const want = [...ledger.acked.keys()];
  await Promise.all(subs.map((s) => s.log.until((items) => {
    const got = new Set();
    for (const e of items) if (e.ev === 'publication') got.add(nOf(e.ctx));
    return want.every((n) => got.has(n));
  }, ms, 'delivery').catch(() => { /* verify() says what is missing */ })));
}

/**
 * What is wrong with what subscription s received: acknowledged publications
 * missing or duplicated, failed ones seen twice, unknown ones, offsets not
 * increasing by exactly 1, an offset other than the one the API acknowledged,
 * a publisher's publications out of its order.
 */
function problemsOf(s, ledger, { firstOffset } = {}) {
  const pubs = pubsOf(s);
  const problems = [];
  const count = new Map();
  for (const p of pubs) count.set(nOf(p), (count.get(nOf(p)) || 0) + 1);
  const missing = [...ledger.acked.keys()].filter((n) => !count.has(n));
  if (missing.length) problems.push(`missing ${missing.length} of ${ledger.acked.size} acknowledged: n ${ranges(missing)}`);
  const dup = [...count].filter(([, k]) => k > 1).map(([n]) => n);
  if (dup.length) problems.push(`duplicated n ${ranges(dup)}`);
  const unknown = [...count.keys()].filter((n) => !ledger.issued.has(n));
  if (unknown.length) problems.push(`never published: ${JSON.stringify(unknown.slice(0, 10))}`);
  const stillPending = [...count.keys()].filter((n) => ledger.issued.has(n) && !ledger.acked.has(n) && !ledger.failed.has(n));
  if (stillPending.length) problems.push(`(received while their publish had no answer yet: n ${ranges(stillPending)})`);
  if (firstOffset !== undefined && pubs.length && pubs[0].offset !== firstOffset) {
    problems.push(`first offset ${pubs[0].offset} (n ${nOf(pubs[0])}), expected ${firstOffset}`);
  }
  const jumps = [];
  for (let i = 1; i < pubs.length; i++) {
    const a = pubs[i - 1];
    const b = pubs[i];
    if (typeof b.offset !== 'number' || b.offset !== a.offset + 1) {
      jumps.push(`offset ${a.offset} (n ${nOf(a)}) then ${b.offset} (n ${nOf(b)})`);
    }
  }
  if (jumps.length) problems.push(`offsets not consecutive at ${jumps.length} places: ${jumps.slice(0, 5).join('; ')}`);
  const wrongOffset = [];
  for (const p of pubs) {
    const a = ledger.acked.get(nOf(p));
    if (a && a.offset !== undefined && Number(a.offset) !== p.offset) wrongOffset.push(`n ${nOf(p)} at ${p.offset} (API said ${a.offset})`);
  }
  if (wrongOffset.length) problems.push(`offset differs from the publish reply: ${wrongOffset.slice(0, 5).join('; ')}`);
  const lastOf = new Map();
  const disorder = [];
  for (const p of pubs) {
    const info = ledger.issued.get(nOf(p));
    if (!info) continue;
    const prev = lastOf.get(info.by);
    if (prev !== undefined && nOf(p) < prev) disorder.push(`${info.by}: n ${nOf(p)} after n ${prev}`);
    lastOf.set(info.by, Math.max(prev ?? 0, nOf(p)));
  }
  if (disorder.length) problems.push(`a publisher's order broken: ${disorder.slice(0, 5).join('; ')}`);
  return problems;
}

/**
 * Every subscription's problems: { lost (acknowledged n missing from some
 * subscriber), problems, check() (throws when there are problems) }.
 */
function deliveryReport(subs, ledger, opts) {
  const problems = [];
  const lost = new Set();
  for (const s of subs) {
    const p = problemsOf(s, ledger, opts);
    if (p.length) problems.push(`${s.label}: ${p.join('; ')}`);
    const got = new Set(pubsOf(s).map(nOf));
    for (const n of ledger.acked.keys()) if (!got.has(n)) lost.add(n);
  }
  return {
    lost: lost.size,
    problems,
    check() {
      if (problems.length) throw new Error(`${lost.size} acknowledged publication(s) lost somewhere; ${problems.join(' | ')}`);
    },
  };
}

function verifyAll(subs, ledger, opts) {
  const r = deliveryReport(subs, ledger, opts);
  r.check();
  return r.lost;
}

function sub(c, ch, label, opts = {}) {
  const s = subscription(c, ch, opts);
  s.label = label;
  return s;
}

function note(text) { console.log(`  ${text}`); }

// ---------------------------------------------------------------- checks

async function main() {
  console.log(`scaleout: ${NO_BROKER ? 'SCALEOUT_NO_BROKER: one node without --broker stands for the cluster' : `3 duplex nodes per check over ${REDIS_BIN}`}`);
  const work = tempDir('duplex-scaleout-');
  let gateOpen = true;
  try {
    /** A numbered check with its own scope, within the suite's time budget. */
    const scheck = async (num, name, fn, { timeoutMs = 40_000, needsBroker = false } = {}) => {
      const label = `${num}. ${name}`;
      if (ONLY.length && !ONLY.includes(String(num))) return;
      // A check that cannot run is a failure, not a skip: nothing it proves may go unproven.
      const cannot = (why) => check(label, async () => { throw new Error(why); });
      if (!gateOpen) { await cannot('the broker cluster does not start (see above)'); return; }
      if (needsBroker && NO_BROKER) { skip(label, 'SCALEOUT_NO_BROKER is set'); return; }
      const left = SUITE_DEADLINE_MS - (Date.now() - t0);
      if (left < 15_000) { await cannot(`the suite's time budget (${SUITE_DEADLINE_MS / 1000} s) is spent before it could run`); return; }
      timeoutMs = Math.min(timeoutMs, left);
      const scope = new Scope(work, `c${num}`);
      let passed = false;
      await check(label, async () => {
        await fn(scope);
        passed = true;
      }, { timeoutMs });
      if (!passed) scope.dump(); // failed or timed out
      await scope.close();
    };

    // ------------------------------------------------ gate
    if (!NO_BROKER) {
      // Open only once a gate check passed (not after a failure or a timeout).
      gateOpen = false;
      await check('redis-server starts on a free loopback port and answers PING', async () => {
        const s = new Scope(work, 'gate-redis');
        try {
          const r = await s.redisServer();
          assertEq(await redisCmd(r.port, ['SET', 'scaleout:probe', 'x']), 'OK', 'SET');
          assertEq(await redisCmd(r.port, ['GET', 'scaleout:probe']), 'x', 'GET');
          gateOpen = true;
        } finally { await s.close(); }
      }, { timeoutMs: 20_000 });
      if (gateOpen) {
        gateOpen = false;
        await check('duplex serve --broker redis://… --broker-prefix P starts and /health answers 200', async () => {
          const s = new Scope(work, 'gate-node');
          try {
            const r = await s.redisServer();
            await s.cluster(r, 1);
            gateOpen = true;
          } catch (e) { s.dump(); throw e; } finally { await s.close(); }
        }, { timeoutMs: 25_000 });
      }
    }

    // ------------------------------------------------ 1. order and completeness across nodes
    await scheck(1, '3 nodes, 6 clients, 3 client + 3 API publishers interleaved: every publication exactly once, in offset order, everywhere', async (scope) => {
      const r = NO_BROKER ? null : await scope.redisServer();
      const nodes = await scope.cluster(r, 3);
      const ch = uniq('chat:order');
      const ledger = new Ledger(ch);
      const clients = [];
      const subs = [];
      for (let i = 0; i < 6; i++) {
        const node = nodes[i % 3];
        const c = scope.client(node.hubUrl, { token: connToken(`user${i}`) }, `client${i}@${node.name}`);
        const s = sub(c, ch, c.label);
        s.subscribe(); c.connect();
        clients.push(c); subs.push(s);
      }
      const firsts = await Promise.all(subs.map((s) => nth(s, 'subscribed', 1, 10_000)));
      firsts.forEach((f, i) => assertEq(f.recoverable, true, `${subs[i].label}: subscribed ctx recoverable`));
      const M = 30;
      const publishers = [0, 1, 2].map((i) => (async () => {
        for (let k = 0; k < M && !scope.closed; k++) await clientPublish(ledger, subs[i], `client@${nodes[i].name}`);
      })());
      for (const node of nodes) {
        publishers.push((async () => {
          for (let k = 0; k < M && !scope.closed; k++) await apiPublish(ledger, node);
        })());
      }
      await Promise.all(publishers);
      const failed = [...ledger.failed.values()];
      assert(failed.length === 0, `${failed.length} of ${ledger.issued.size} publishes failed with redis up: ${failed.slice(0, 5).map((f) => `n ${f.n} by ${f.by}: ${f.status} ${f.code ?? ''} ${f.why}`).join('; ')}`);
      await waitDelivered(subs, ledger, 15_000);
      // A sentinel last: anything arriving twice before it is caught below.
      await mustPublish(ledger, nodes[1], 'sentinel');
      await waitDelivered(subs, ledger, 8_000);
      verifyAll(subs, ledger, { firstOffset: 1 });
      // History, epoch and top offset are shared: the same from every node.
      const order = pubsOf(subs[0]).map(nOf);
      const hs = await Promise.all(nodes.map((n) => apiOk(n, 'history', { channel: ch, limit: 1000 })));
      hs.forEach((h, i) => {
        assertEq(Number(h.offset), ledger.acked.size, `${nodes[i].name}: /api/history top offset`);
        assertEq(h.epoch, hs[0].epoch, `${nodes[i].name}: /api/history epoch (vs ${nodes[0].name})`);
        const got = (h.publications || []).map(nOf);
        assert(JSON.stringify(got) === JSON.stringify(order),
          `${nodes[i].name}: /api/history order differs from what ${subs[0].label} received: first difference at index ${got.findIndex((n, k) => n !== order[k])}`);
      });
      note(`${ledger.acked.size} publications (${3 * M} by clients, ${3 * M + 1} by the API) on 3 nodes, each received once and in order by 6 subscribers; epoch ${hs[0].epoch}`);
    }, { timeoutMs: 45_000 });

    // ------------------------------------------------ 2. redis killed and restarted
    await scheck(2, 'redis SIGKILLed and restarted mid-traffic: publish fails fast (503), client publish errors, /health 503 then 200, no acknowledged publication lost or duplicated', async (scope) => {
      const r = await scope.redisServer();
      const nodes = await scope.cluster(r, 3);
      const ch = uniq('chat:redis-restart');
      const ledger = new Ledger(ch);
      const subs = [];
      for (let i = 0; i < 3; i++) {
        const c = scope.client(nodes[i].hubUrl, { token: connToken(`user${i}`), ...quick }, `client${i}@${nodes[i].name}`);
        const s = sub(c, ch, c.label);
        s.subscribe(); c.connect();
        subs.push(s);
      }
      await Promise.all(subs.map((s) => nth(s, 'subscribed', 1, 10_000)));
      const pub = apiPublisher(scope, ledger, () => nodes);
      let outageStart;
      try {
        await ledger.until((l) => l.acked.size >= 15, 10_000, '15 acknowledged publishes before the kill');
        const before = await apiOk(nodes[0], 'history', { channel: ch, limit: 0 });
        await r.kill();
        outageStart = Date.now();
        // /health: 503 on every node while redis is down.
        await waitHealth(nodes, 503, 6_000, 'redis SIGKILLed');
        const health503 = Date.now() - outageStart;
        // A client publish gets an error reply (not a timeout) while redis is down.
        const cpStart = Date.now();
        const cp = await clientPublish(ledger, subs[0], `client@${nodes[0].name}`);
        assert(!cp.ok, `${subs[0].label}: a client publish (n ${cp.n}) was acknowledged while redis was down`);
        assert(Date.now() - cpStart <= FAIL_FAST_MS && cp.code !== 1,
          `${subs[0].label}: client publish while redis is down: error ${cp.code} ${cp.why} after ${Date.now() - cpStart} ms (expected an error reply within ${FAIL_FAST_MS} ms, not the SDK's timeout, code 1)`);
        // Down for at least 2 s (the nodes' reconnect backoff reaches ~2 s), with publishes failing meanwhile.
        await ledger.until((l) => l.failedSince(outageStart) >= 4 && Date.now() - outageStart >= 2_000, 12_000, '4 publishes failing during a 2 s outage');
        // Back on the same port, with the AOF of before.
        await r.start();
        const restarted = Date.now();
        await waitHealth(nodes, 200, 12_000, 'redis restarted (nodes reconnect with a backoff up to ~2 s)');
        const health200 = Date.now() - restarted;
        const outageMs = restarted - outageStart;
        await ledger.until((l) => l.ackedSince(restarted) >= 15, 12_000, '15 acknowledged publishes after the restart');
        await pub.stop();
        // A client publish after the restart is acknowledged again.
        const cp2 = await clientPublish(ledger, subs[1], `client@${nodes[1].name}`);
        assert(cp2.ok, `${subs[1].label}: client publish n ${cp2.n} after the restart failed: ${cp2.code} ${cp2.why}`);
        await mustPublish(ledger, nodes[2], 'sentinel after the restart');
        await waitDelivered(subs, ledger, 15_000);
        const after = await apiOk(nodes[1], 'history', { channel: ch, limit: 0 });
        assertEq(after.epoch, before.epoch, 'epoch after the redis restart (the AOF kept the stream)');
        const failedDuring = [...ledger.failed.values()].filter((f) => f.status !== 'client');
        const slow = failedDuring.filter((f) => f.ms > FAIL_FAST_MS);
        const not503 = failedDuring.filter((f) => f.status !== 503);
        const report = deliveryReport(subs, ledger, { firstOffset: 1 });
        const lost = report.lost;
        const seenFailed = [...ledger.failed.keys()].filter((n) => pubsOf(subs[0]).some((p) => nOf(p) === n));
        note(`redis down ${outageMs} ms: ${ledger.acked.size} publishes acknowledged, ${lost} lost, ${failedDuring.length} API publishes failed (max ${Math.max(0, ...failedDuring.map((f) => f.ms))} ms)` +
          `${seenFailed.length ? `, ${seenFailed.length} failed ones delivered anyway (n ${ranges(seenFailed)})` : ''}; /health 503 after ${health503} ms, 200 on all nodes ${health200} ms after the restart`);
        report.check();
        assert(slow.length === 0, `publishes did not fail fast (> ${FAIL_FAST_MS} ms): ${slow.slice(0, 5).map((f) => `n ${f.n} ${f.by} ${f.status} after ${f.ms} ms`).join('; ')}`);
        assert(not503.length === 0, `failed API publishes not answered 503: ${not503.slice(0, 5).map((f) => `n ${f.n} ${f.by}: ${f.status} ${f.why}`).join('; ')}`);
        for (const s of subs) {
          const bad = s.log.of('subscribed').slice(1).filter((e) => !e.ctx.recovered);
          assert(bad.length === 0, `${s.label}: resubscribed without recovery (${JSON.stringify(bad[0] && bad[0].ctx)})`);
          assertEq(s.log.of('unsubscribed').length, 0, `${s.label}: unsubscribed events`);
        }
      } finally {
        await pub.stop();
      }
    }, { timeoutMs: 60_000, needsBroker: true });

    // ------------------------------------------------ 8. a Redis that accepts but never answers
    await scheck(8, 'redis SIGSTOPped (its socket open, no answers): API publish refused 503 within the command timeout, /health 503; after SIGCONT publishes are acknowledged again', async (scope) => {
      const r = await scope.redisServer();
      const nodes = await scope.cluster(r, 1);
      const ledger = new Ledger(uniq('chat:redis-stopped'));
      await mustPublish(ledger, nodes[0], 'before the stop');
      r.proc.kill('SIGSTOP');
      let refused;
      try {
        refused = await apiPublish(ledger, nodes[0]);
        assert(!refused.ok && refused.status === 503 && refused.ms <= FAIL_FAST_MS,
          `publish while redis is stopped: ${refused.ok ? 'acknowledged' : `${refused.status} ${refused.why}`} after ${refused.ms} ms (expected 503 within ${FAIL_FAST_MS} ms)`);
        await waitHealth(nodes, 503, 6_000, 'redis SIGSTOPped');
      } finally {
        r.proc.kill('SIGCONT');
      }
      await waitHealth(nodes, 200, 12_000, 'redis continued');
      await mustPublish(ledger, nodes[0], 'after SIGCONT');
      note(`redis stopped: publish refused 503 after ${refused.ms} ms; acknowledged again after SIGCONT`);
    }, { timeoutMs: 40_000, needsBroker: true });

    // ------------------------------------------------ 3. a node killed
    await scheck(3, 'node SIGKILLed: its clients reconnect through the balancer and recover (recovered true), nothing lost, its presence expires within 12 s', async (scope) => {
      const r = await scope.redisServer();
      const nodes = await scope.cluster(r, 3);
      const lb = await startBalancer(nodes);
      scope.proxies.push(lb);
      const ch = uniq('chat:node-kill');
      const ledger = new Ledger(ch);
      const clients = [];
      const subs = [];
      const placed = new Map();
      for (let i = 0; i < 6; i++) {
        // One at a time, so the balancer's round-robin puts two on each node.
        const c = scope.client(lb.url, { token: connToken(`user${i}`), ...quick }, `client${i}`);
        const s = sub(c, ch, c.label);
        s.subscribe(); c.connect();
        await nth(s, 'subscribed', 1, 10_000);
        const idx = lb.nodeOf(localPortOf(c));
        placed.set(c, idx);
        c.label = s.label = `client${i}(on ${nodes[idx].name})`;
        clients.push(c); subs.push(s);
      }
      const victimIdx = 1;
      const victim = nodes[victimIdx];
      const survivors = nodes.filter((_, i) => i !== victimIdx);
      const victims = clients.filter((c) => placed.get(c) === victimIdx);
      assertEq(victims.length, 2, `clients the balancer put on ${victim.name}`);
      const idsBefore = new Map(await Promise.all(clients.map(async (c) => [c, (await nth(c, 'connected')).client])));
      const presenceIds = async (node) => Object.keys((await apiOk(node, 'presence', { channel: ch })).presence || {}).sort();
      const all6 = [...idsBefore.values()].sort();
      let lastSeen = [];
      await until(async () => { lastSeen = await presenceIds(survivors[0]); return JSON.stringify(lastSeen) === JSON.stringify(all6); },
        5_000, () => `presence on ${survivors[0].name} before the kill: ${JSON.stringify(lastSeen)}, expected ${JSON.stringify(all6)}`);
      const pub = apiPublisher(scope, ledger, () => nodes);
      try {
        await ledger.until((l) => l.acked.size >= 15, 10_000, '15 acknowledged publishes before the kill');
        await victim.kill();
        const killedAt = Date.now();
        // Its clients reconnect through the balancer to a live node and recover.
        const resubs = await Promise.all(victims.map((c) => nth(subs[clients.indexOf(c)], 'subscribed', 2, 12_000)));
        const recoveredMs = Date.now() - killedAt;
        victims.forEach((c, k) => {
          assertEq(`${resubs[k].wasRecovering}/${resubs[k].recovered}`, 'true/true', `${c.label}: subscribed after the kill, wasRecovering/recovered`);
          const now = lb.nodeOf(localPortOf(c));
          assert(now !== victimIdx, `${c.label}: reconnected to the dead node?`);
        });
        for (const c of clients.filter((x) => !victims.includes(x))) {
          assertEq(c.log.of('connecting').length, 1, `${c.label} (not on the killed node): connecting events`);
        }
        const resumed = Date.now();
        await ledger.until((l) => l.ackedSince(resumed) >= 10, 10_000, '10 acknowledged publishes after the clients recovered');
        await pub.stop();
        await mustPublish(ledger, survivors[1], 'sentinel after the recovery');
        await waitDelivered(subs, ledger, 12_000);
        const report = deliveryReport(subs, ledger, { firstOffset: 1 });
        const failed = [...ledger.failed.values()];
        note(`${victim.name} killed: its ${victims.length} clients resubscribed with recovery within ${recoveredMs} ms; ${ledger.acked.size} publishes acknowledged, ${report.lost} lost, ${failed.length} failed (${[...new Set(failed.map((f) => `${f.by}:${f.status || f.why}`))].join(', ') || 'none'})`);
        report.check();
        // Presence: the killed node's members expire, everyone else's stay.
        const idsNow = await Promise.all(clients.map(async (c) => (await nth(c, 'connected', victims.includes(c) ? 2 : 1)).client));
        const expected = idsNow.slice().sort();
        const stale = victims.map((c) => idsBefore.get(c));
        const seen = new Map();
        await until(async () => {
          const got = await Promise.all(survivors.map(presenceIds));
          survivors.forEach((n, i) => seen.set(n.name, got[i]));
          return got.every((g) => JSON.stringify(g) === JSON.stringify(expected));
        }, Math.max(0, killedAt + PRESENCE_GONE_MS - Date.now()), () => `presence ${PRESENCE_GONE_MS} ms after the kill: ${[...seen].map(([k, v]) => `${k}: stale ${JSON.stringify(v.filter((id) => stale.includes(id)))}, missing ${JSON.stringify(expected.filter((id) => !v.includes(id)))}, unknown ${JSON.stringify(v.filter((id) => !expected.includes(id) && !stale.includes(id)))}`).join('; ')}`, 250);
        note(`the killed node's presence members gone from ${survivors.map((n) => n.name).join(' and ')} ${Date.now() - killedAt} ms after the kill (presence_ttl ${PRESENCE_TTL_S} s, bound ${PRESENCE_GONE_MS} ms)`);
      } finally {
        await pub.stop();
      }
    }, { timeoutMs: 50_000, needsBroker: true });

    // ------------------------------------------------ 4. FLUSHALL
    await scheck(4, 'FLUSHALL: new epoch, unsubscribe 2500 then recovered false, nothing replayed, later publications arrive', async (scope) => {
      const r = await scope.redisServer();
      const nodes = await scope.cluster(r, 3);
      const cut = await startCutProxy(nodes[2].port);
      scope.proxies.push(cut);
      const ch = uniq('chat:flush');
      const ledger = new Ledger(ch);
      const a = scope.client(nodes[0].hubUrl, { token: connToken('alice'), ...quick }, `alice@${nodes[0].name}`);
      const b = scope.client(nodes[1].hubUrl, { token: connToken('bob'), ...quick }, `bob@${nodes[1].name}`);
      const c = scope.client(cut.url, { token: connToken('carol'), ...quick }, `carol@${nodes[2].name}(proxied)`);
      const sa = sub(a, ch, a.label);
      const sb = sub(b, ch, b.label);
      const sc = sub(c, ch, c.label);
      const subs = [sa, sb, sc];
      for (const [x, s] of [[a, sa], [b, sb], [c, sc]]) { s.subscribe(); x.connect(); }
      await Promise.all(subs.map((s) => nth(s, 'subscribed', 1, 10_000)));
      for (let k = 0; k < 6; k++) await mustPublish(ledger, nodes[k % 3], 'before the flush');
      await waitDelivered(subs, ledger, 8_000);
      verifyAll(subs, ledger, { firstOffset: 1 });
      const preFlush = new Set(ledger.acked.keys());
      const e1 = (await apiOk(nodes[0], 'history', { channel: ch, limit: 0 })).epoch;
      assert(e1, 'no epoch from /api/history before the flush');
      const countAtFlush = new Map(subs.map((s) => [s, pubsOf(s).length]));
      // carol is away (her TCP connection cut, reconnects refused) during the flush.
      const connectingBefore = c.log.of('connecting').length;
      cut.block(); cut.cut();
      await c.log.until((it) => it.filter((e) => e.ev === 'connecting').length > connectingBefore, 8_000, 'carol connecting after the TCP drop');
      const flushedAt = Date.now();
      assertEq(await redisCmd(r.port, ['FLUSHALL']), 'OK', 'FLUSHALL');
      // Keep publishing until alice and bob are told (whether publications or a
      // periodic position check make the nodes notice the new epoch).
      const describe = (s) => {
        const it = s.log.items;
        const since = pubsOf(s).slice(countAtFlush.get(s));
        return `${s.label}: no subscribing with code 2500 then subscribed again within 12 s of FLUSHALL` +
          ` (subscribing codes ${JSON.stringify(it.filter((e) => e.ev === 'subscribing').map((e) => e.ctx.code))},` +
          ` subscribed x${it.filter((e) => e.ev === 'subscribed').length},` +
          ` unsubscribed ${JSON.stringify(it.filter((e) => e.ev === 'unsubscribed').map((e) => e.ctx.code))};` +
          ` ${since.length} publications since, offsets ${JSON.stringify(since.slice(-10).map((p) => p.offset))};` +
          ` ${ledger.acked.size - preFlush.size} publishes acknowledged since)`;
      };
      const told = Promise.all([sa, sb].map((s) => s.log.until(
        (it) => it.some((e) => e.ev === 'subscribing' && e.ctx.code === 2500 && e.t >= flushedAt) && it.filter((e) => e.ev === 'subscribed').length >= 2,
        12_000, 'told').catch(() => { throw new Error(describe(s)); })));
      let toldDone = false;
      told.then(() => { toldDone = true; }, () => { toldDone = true; });
      while (!toldDone && !scope.closed) {
        await apiPublish(ledger, nodes[(ledger.next) % 3]);
        if (!toldDone) await sleep(150); // pacing of the traffic
      }
      await told;
      const e2 = (await apiOk(nodes[1], 'history', { channel: ch, limit: 0 })).epoch;
      assert(e2 && e2 !== e1, `epoch after FLUSHALL: ${JSON.stringify(e2)} (before: ${JSON.stringify(e1)})`);
      for (const s of [sa, sb]) {
        const ctx = await nth(s, 'subscribed', 2);
        assertEq(`${ctx.wasRecovering}/${ctx.recovered}`, 'true/false', `${s.label}: resubscribe after the 2500 push, wasRecovering/recovered`);
        assertEq(ctx.streamPosition && ctx.streamPosition.epoch, e2, `${s.label}: epoch of the resubscribe`);
      }
      // carol comes back: her recovery from the old epoch fails, visibly.
      cut.unblock();
      const cctx = await nth(sc, 'subscribed', 2, 10_000);
      assertEq(`${cctx.wasRecovering}/${cctx.recovered}`, 'true/false', `${sc.label}: resubscribe after reconnecting, wasRecovering/recovered`);
      assertEq(cctx.streamPosition && cctx.streamPosition.epoch, e2, `${sc.label}: epoch of the resubscribe`);
      // Publications after everyone resubscribed arrive, in order.
      const later = [];
      for (let k = 0; k < 5; k++) {
        later.push(await mustPublish(ledger, nodes[k % 3], 'after the resubscribes'));
      }
      await Promise.all(subs.map((s) => s.log.until((it) => later.every((n) => it.some((e) => e.ev === 'publication' && nOf(e.ctx) === n)), 8_000,
        `${s.label}: the ${later.length} publications made after the resubscribes (n ${ranges(later)})`)));
      for (const s of subs) {
        const pubs = pubsOf(s);
        const after = pubs.slice(countAtFlush.get(s));
        const replayed = after.map(nOf).filter((n) => preFlush.has(n));
        assert(replayed.length === 0, `${s.label}: publications from before FLUSHALL received again after it: n ${ranges(replayed)}`);
        const count = new Map();
        for (const p of pubs) count.set(nOf(p), (count.get(nOf(p)) || 0) + 1);
        const dup = [...count].filter(([, k]) => k > 1).map(([n]) => n);
        assert(dup.length === 0, `${s.label}: duplicated n ${ranges(dup)}`);
        const tail = pubs.filter((p) => later.includes(nOf(p)));
        assertEq(JSON.stringify(tail.map(nOf)), JSON.stringify(later), `${s.label}: order of the publications after the resubscribes`);
        for (let i = 1; i < tail.length; i++) {
          assert(tail[i].offset === tail[i - 1].offset + 1, `${s.label}: offsets after the flush not consecutive: ${tail.map((p) => p.offset).join(',')}`);
        }
        const want = ledger.acked.get(later[0]).offset;
        assertEq(tail[0].offset, Number(want), `${s.label}: offset of n ${later[0]} (from the publish reply, new epoch)`);
      }
      note(`epoch ${e1} -> ${e2}; ${ledger.acked.size - preFlush.size - later.length} publications between FLUSHALL and the resubscribes (some may be unseen: recovered false says so)`);
    }, { timeoutMs: 45_000, needsBroker: true });

    // ------------------------------------------------ 5. presence and the API across nodes
    await scheck(5, 'presence, presence_stats, join/leave, channels (num_clients summed), info (every node) and disconnect of a user on another node', async (scope) => {
      const r = NO_BROKER ? null : await scope.redisServer();
      const nodes = await scope.cluster(r, 3);
      const [n1, n2, n3] = nodes;
      const ch = uniq('chat:presence');
      const alice = scope.client(n1.hubUrl, { token: connToken('alice', { info: { name: 'Alice' } }) }, `alice@${n1.name}`);
      const bob = scope.client(n2.hubUrl, { token: connToken('bob') }, `bob@${n2.name}`);
      const alice2 = scope.client(n3.hubUrl, { token: connToken('alice') }, `alice-2@${n3.name}`);
      const sa = sub(alice, ch, alice.label, { joinLeave: true });
      const sb = sub(bob, ch, bob.label, { joinLeave: true });
      const sa2 = sub(alice2, ch, alice2.label, { joinLeave: true });
      sa.subscribe(); alice.connect();
      const ca = (await nth(alice, 'connected')).client;
      await nth(sa, 'subscribed');
      sb.subscribe(); bob.connect();
      const cb = (await nth(bob, 'connected')).client;
      await nth(sb, 'subscribed');
      const joinOf = (s, id, what) => s.log.until((it) => it.find((e) => e.ev === 'join' && e.ctx.info.client === id), 8_000, what);
      const leaveOf = (s, id, what) => s.log.until((it) => it.find((e) => e.ev === 'leave' && e.ctx.info.client === id), 8_000, what);
      const jb = await joinOf(sa, cb, `${alice.label}: join of bob (${n2.name} -> ${n1.name})`);
      assertEq(jb.ctx.info.user, 'bob', 'join user');
      sa2.subscribe(); alice2.connect();
      const ca2 = (await nth(alice2, 'connected')).client;
      await nth(sa2, 'subscribed');
      await joinOf(sa, ca2, `${alice.label}: join of alice-2 (${n3.name} -> ${n1.name})`);
      await joinOf(sb, ca2, `${bob.label}: join of alice-2 (${n3.name} -> ${n2.name})`);
      const want = [ca, cb, ca2].sort();
      for (const node of nodes) {
        let last;
        await until(async () => {
          last = (await apiOk(node, 'presence', { channel: ch })).presence || {};
          return JSON.stringify(Object.keys(last).sort()) === JSON.stringify(want);
        }, 5_000, () => `${node.name}: /api/presence clients ${JSON.stringify(Object.keys(last || {}).sort())}, expected ${JSON.stringify(want)}`);
        assertEq(last[ca].user, 'alice', `${node.name}: presence user of alice`);
        assertEq(JSON.stringify(last[ca].conn_info), JSON.stringify({ name: 'Alice' }), `${node.name}: presence conn_info of alice`);
        assertEq(last[cb].user, 'bob', `${node.name}: presence user of bob`);
        assertEq(last[ca2].user, 'alice', `${node.name}: presence user of alice-2`);
        const st = await apiOk(node, 'presence_stats', { channel: ch });
        assertEq(`${st.num_clients}/${st.num_users}`, '3/2', `${node.name}: /api/presence_stats num_clients/num_users`);
        const chans = (await apiOk(node, 'channels', {})).channels || {};
        assert(chans[ch], `${node.name}: /api/channels lacks ${ch}: ${JSON.stringify(chans).slice(0, 300)}`);
        assertEq(chans[ch].num_clients, 3, `${node.name}: /api/channels num_clients of ${ch} (one client on each node)`);
        // info: every node of the cluster, each with its own clients.
        const info = await apiOk(node, 'info', {});
        const uids = new Set((info.nodes || []).map((n) => n.uid));
        assertEq(uids.size, 3, `${node.name}: /api/info lists the 3 nodes: ${JSON.stringify(info).slice(0, 400)}`);
        const clients = (info.nodes || []).reduce((a, n) => a + n.num_clients, 0);
        assert(clients >= 3, `${node.name}: /api/info num_clients over the nodes ${clients}, want at least the 3 test clients`);
      }
      const cp = await sb.presence();
      assertEq(JSON.stringify(Object.keys(cp.clients).sort()), JSON.stringify(want), `${bob.label}: client presence`);
      assertEq(JSON.stringify(cp.clients[ca].connInfo), JSON.stringify({ name: 'Alice' }), `${bob.label}: client presence connInfo of alice`);
      const cs = await sb.presenceStats();
      assertEq(`${cs.numClients}/${cs.numUsers}`, '3/2', `${bob.label}: client presenceStats`);
      // Disconnect alice through the node she is not on: both her connections go.
      await apiOk(n2, 'disconnect', { user: 'alice' });
      for (const x of [alice, alice2]) {
        const ev = await x.log.until((it) => it.find((e) => e.ev === 'disconnected' || (e.ev === 'connecting' && e.ctx.code !== 0)), 8_000,
          `${x.label}: disconnected by /api/disconnect {user: alice} on ${n2.name}`);
        assert(ev.ctx.code >= 3000 && ev.ctx.code < 5000, `${x.label}: ${ev.ev} code ${ev.ctx.code} ${ev.ctx.reason}`);
      }
      await leaveOf(sb, ca, `${bob.label}: leave of alice (${n1.name} -> ${n2.name})`);
      await leaveOf(sb, ca2, `${bob.label}: leave of alice-2 (${n3.name} -> ${n2.name})`);
      assertEq(bob.state, 'connected', `${bob.label}: state`);
      assertEq(bob.log.of('connecting').length, 1, `${bob.label}: connecting events`);
      for (const node of nodes) {
        let last;
        await until(async () => {
          last = Object.keys((await apiOk(node, 'presence', { channel: ch })).presence || {});
          return !last.includes(ca) && !last.includes(ca2) && last.includes(cb);
        }, 5_000, () => `${node.name}: /api/presence after the disconnect: ${JSON.stringify(last)} (alice ${ca}, alice-2 ${ca2}, bob ${cb})`);
      }
      // Bob leaves by unsubscribing: the channel is gone from every node's list.
      sb.unsubscribe();
      for (const node of nodes) {
        let last;
        await until(async () => {
          last = (await apiOk(node, 'channels', {})).channels || {};
          return !last[ch];
        }, 5_000, () => `${node.name}: /api/channels still lists ${ch} with nobody subscribed: ${JSON.stringify(last[ch])}`);
      }
    }, { timeoutMs: 40_000 });

    // ------------------------------------------------ 6. [broker] in the TOML, prefixes
    await scheck(6, '[broker] url/prefix in the TOML joins the --broker nodes; another --broker-prefix on the same redis is a separate cluster', async (scope) => {
      const r = await scope.redisServer();
      const prefix = uniq('scaleout-c6');
      const other = uniq('scaleout-c6-other');
      const [na, nb, nc] = await Promise.all([
        scope.node('flags', { url: r.url, prefix, via: 'flags' }),
        scope.node('toml', { url: r.url, prefix, via: 'toml' }),
        scope.node('other-prefix', { url: r.url, prefix: other, via: 'flags' }),
      ]);
      await waitHealth([na, nb, nc], 200, 10_000, 'nodes just started');
      const ch = uniq('chat:prefix');
      const ledger = new Ledger(ch);
      const otherLedger = new Ledger(ch);
      otherLedger.next = 101; // n of the other cluster never collide with this one's
      const subs = [];
      for (const node of [na, nb, nc]) {
        const c = scope.client(node.hubUrl, { token: connToken(`user-${node.name}`) }, `client@${node.name}`);
        const s = sub(c, ch, c.label);
        s.subscribe(); c.connect();
        subs.push(s);
      }
      await Promise.all(subs.map((s) => nth(s, 'subscribed', 1, 10_000)));
      await mustPublish(ledger, nb, `prefix ${prefix}`);
      await mustPublish(ledger, na, `prefix ${prefix}`);
      await mustPublish(otherLedger, nc, `prefix ${other}`);
      await waitDelivered(subs.slice(0, 2), ledger, 8_000);
      await waitDelivered(subs.slice(2), otherLedger, 8_000);
      verifyAll(subs.slice(0, 2), ledger, { firstOffset: 1 });
      verifyAll(subs.slice(2), otherLedger, { firstOffset: 1 });
      const hOther = await apiOk(nc, 'history', { channel: ch, limit: 100 });
      assertEq(JSON.stringify((hOther.publications || []).map(nOf)), '[101]', `${nc.name} (prefix ${other}): /api/history n`);
      const hA = await apiOk(nb, 'history', { channel: ch, limit: 100 });
      assertEq(JSON.stringify((hA.publications || []).map((p) => p.data.by)), JSON.stringify([`api@${nb.name}`, `api@${na.name}`]), `${nb.name} (prefix ${prefix}): /api/history publishers`);
      for (const p of [prefix, other]) {
        const keys = await redisCmd(r.port, ['KEYS', `*${p}*`]);
        assert(Array.isArray(keys) && keys.length > 0, `no redis key contains the prefix ${p} (keys: ${JSON.stringify((await redisCmd(r.port, ['KEYS', '*'])).slice(0, 10))})`);
      }
    }, { timeoutMs: 30_000, needsBroker: true });

    // ------------------------------------------------ 7. Redis Cluster
    await scheck(7, 'Redis Cluster (3 masters): sharded fan-out and history work', async (scope) => {
      const rc = await scope.redisCluster(3);
      const { masters, slotOwner } = rc;
      const prefix = uniq('scaleout-c7');
      const shardOf = (ch) => `${prefix}.{${ch}}`;
      const keyslot = async (name) => Number(await redisCmd(masters[0].port, ['CLUSTER', 'KEYSLOT', name]));
      // 12 channels of the chat namespace (history, recovery, presence), 4 on
      // each master: the slot of a channel's shard channel (its hash tag is
      // the channel) says which master serves it.
      const PER_MASTER = 4;
      const tag = randomBytes(3).toString('hex');
      const onMaster = new Map(masters.map((m) => [m, []]));
      const ownerOf = new Map();
      for (let i = 0; [...onMaster.values()].some((l) => l.length < PER_MASTER); i++) {
        assert(i < 500, `500 channel names do not give ${PER_MASTER} channels on each master: ${masters.map((m) => `:${m.port} ${onMaster.get(m).length}`).join(', ')}`);
        const ch = `chat:shard-${tag}-${i}`;
        const m = slotOwner(await keyslot(shardOf(ch)));
        if (onMaster.get(m).length < PER_MASTER) { onMaster.get(m).push(ch); ownerOf.set(ch, m); }
      }
      const channels = []; // consecutive ones on different masters
      for (let k = 0; k < PER_MASTER; k++) for (const m of masters) channels.push(onMaster.get(m)[k]);
      // 3 nodes with the 3 masters as seeds. allSettled: every node that
      // started is in the scope (and stopped) even when another one fails.
      const started = await Promise.allSettled([1, 2, 3].map((i) => scope.node(`n${i}`, { url: rc.url, prefix, cluster: true })));
      const notStarted = started.find((x) => x.status === 'rejected');
      if (notStarted) throw notStarted.reason;
      const nodes = started.map((x) => x.value);
      await waitHealth(nodes, 200, 15_000, 'nodes just started on a working redis cluster');
      // One client per node, each subscribed to every channel.
      const clients = [];
      const subOf = []; // subOf[i].get(ch): client i's subscription
      const subsOf = new Map(channels.map((ch) => [ch, []]));
      for (let i = 0; i < 3; i++) {
        const c = scope.client(nodes[i].hubUrl, { token: connToken(`user${i}`) }, `client${i}@${nodes[i].name}`);
        const mine = new Map();
        for (const ch of channels) {
          const s = sub(c, ch, `${c.label} ${ch}`);
          s.subscribe();
          mine.set(ch, s);
          subsOf.get(ch).push(s);
        }
        c.connect();
        clients.push(c);
        subOf.push(mine);
      }
      const allSubs = [...subsOf.values()].flat();
      const firsts = new Map(await Promise.all(allSubs.map(async (s) => [s, await nth(s, 'subscribed', 1, 10_000)])));
      for (const [s, f] of firsts) assertEq(f.recoverable, true, `${s.label}: subscribed ctx recoverable`);
      // 6 publishers (a client and the API on every node) at once, each going
      // round all channels K times from its own starting point.
      const ledgers = new Map(channels.map((ch) => [ch, new Ledger(ch)]));
      const K = 4;
      const round = (start) => Array.from({ length: K * channels.length }, (_, j) => channels[(start + j) % channels.length]);
      const publishers = [];
      for (let i = 0; i < 3; i++) {
        publishers.push((async () => {
          for (const ch of round(4 * i)) {
            if (scope.closed) return;
            await clientPublish(ledgers.get(ch), subOf[i].get(ch), `client@${nodes[i].name}`);
          }
        })());
        publishers.push((async () => {
          for (const ch of round(4 * i + 2)) {
            if (scope.closed) return;
            await apiPublish(ledgers.get(ch), nodes[i]);
          }
        })());
      }
      await Promise.all(publishers);
      const all = [...ledgers.values()];
      const failed = all.flatMap((l) => [...l.failed.values()].map((f) => ({ ...f, ch: l.ch })));
      const issued = all.reduce((k, l) => k + l.issued.size, 0);
      assert(failed.length === 0, `${failed.length} of ${issued} publishes failed: ${failed.slice(0, 5).map((f) => `${f.ch} n ${f.n} by ${f.by}: ${f.status} ${f.code ?? ''} ${f.why}`).join('; ')}`);
      await Promise.all(channels.map((ch) => waitDelivered(subsOf.get(ch), ledgers.get(ch), 15_000)));
      // A sentinel last on each channel: anything arriving twice before it is caught below.
      await Promise.all(channels.map((ch, j) => mustPublish(ledgers.get(ch), nodes[j % 3], `sentinel on ${ch}`)));
      await Promise.all(channels.map((ch) => waitDelivered(subsOf.get(ch), ledgers.get(ch), 8_000)));
      const problems = [];
      let lost = 0;
      for (const ch of channels) {
        const r = deliveryReport(subsOf.get(ch), ledgers.get(ch), { firstOffset: 1 });
        lost += r.lost;
        if (r.problems.length) problems.push(`${ch} (slot on :${ownerOf.get(ch).port}): ${r.problems.join(' | ')}`);
      }
      assert(problems.length === 0, `${lost} acknowledged publication(s) lost somewhere; ${problems.slice(0, 4).join(' || ')}${problems.length > 4 ? ` || … and ${problems.length - 4} more channels` : ''}`);
      // History: the same publications, offsets and epoch from every node.
      const histories = await Promise.all(channels.map((ch) => Promise.all(nodes.map((n) => apiOk(n, 'history', { channel: ch, limit: 1000 })))));
      channels.forEach((ch, j) => {
        const l = ledgers.get(ch);
        const epochs = [...new Set([...l.acked.values()].filter((a) => a.epoch !== undefined).map((a) => a.epoch))];
        assertEq(epochs.length, 1, `${ch}: distinct epochs in the publish replies (${JSON.stringify(epochs)})`);
        const order = pubsOf(subOf[0].get(ch)).map(nOf);
        const offsets = JSON.stringify(Array.from({ length: l.acked.size }, (_, k) => k + 1));
        histories[j].forEach((h, i) => {
          const where = `${nodes[i].name}: /api/history of ${ch}`;
          assertEq(Number(h.offset), l.acked.size, `${where}: top offset`);
          assertEq(h.epoch, epochs[0], `${where}: epoch (vs the publish replies)`);
          const got = h.publications || [];
          assert(JSON.stringify(got.map(nOf)) === JSON.stringify(order),
            `${where}: n differ from what ${subOf[0].get(ch).label} received: first difference at index ${got.findIndex((p, k) => nOf(p) !== order[k])} (${got.length} vs ${order.length})`);
          assert(JSON.stringify(got.map((p) => Number(p.offset))) === offsets, `${where}: offsets not 1..${l.acked.size}: ${got.slice(0, 10).map((p) => p.offset).join(',')}…`);
        });
        for (const s of subsOf.get(ch)) {
          const sp = firsts.get(s).streamPosition;
          assertEq(sp && sp.epoch, epochs[0], `${s.label}: epoch when subscribing (vs the publish replies)`);
        }
      });
      // Presence of one channel, from every node: the 3 clients.
      const pch = channels[0];
      const want = (await Promise.all(clients.map(async (c) => (await nth(c, 'connected')).client))).sort();
      for (const node of nodes) {
        let last;
        await until(async () => {
          last = Object.keys((await apiOk(node, 'presence', { channel: pch })).presence || {}).sort();
          return JSON.stringify(last) === JSON.stringify(want);
        }, 5_000, () => `${node.name}: /api/presence of ${pch}: ${JSON.stringify(last)}, expected ${JSON.stringify(want)}`);
        const st = await apiOk(node, 'presence_stats', { channel: pch });
        assertEq(`${st.num_clients}/${st.num_users}`, '3/3', `${node.name}: /api/presence_stats of ${pch} num_clients/num_users`);
      }
      // Keys beside their shard channel: on the master serving the channel's slot
      // (any other master would answer MOVED).
      const keysOn = async (m, keys) => {
        try { return await redisCmd(m.port, ['EXISTS', ...keys]); } catch (e) { return `${e.message}`; }
      };
      for (const ch of channels) {
        const m = ownerOf.get(ch);
        assertEq(await keysOn(m, [`${shardOf(ch)}.s`, `${shardOf(ch)}.m`]), 2, `EXISTS ${shardOf(ch)}.s ${shardOf(ch)}.m on :${m.port}, the master of their slot`);
      }
      assertEq(await keysOn(ownerOf.get(pch), [`${shardOf(pch)}.p`, `${shardOf(pch)}.z`]), 2, `EXISTS ${shardOf(pch)}.p ${shardOf(pch)}.z on :${ownerOf.get(pch).port}, the master of their slot`);
      // Partitioning: each channel's fan-out is a shard channel subscribed on
      // the master serving its slot; nothing on plain pub/sub or patterns.
      const ctl = `${prefix}.control`;
      const ctlOwner = slotOwner(await keyslot(ctl));
      const pubsub = await Promise.all(masters.map(async (m) => ({
        m,
        shard: await redisCmd(m.port, ['PUBSUB', 'SHARDCHANNELS', `${prefix}*`]),
        plain: await redisCmd(m.port, ['PUBSUB', 'CHANNELS', `${prefix}*`]),
        numpat: await redisCmd(m.port, ['PUBSUB', 'NUMPAT']),
      })));
      const layout = () => pubsub.map((x) => `:${x.m.port} shard ${JSON.stringify(x.shard.slice(0, 20))}${x.shard.length > 20 ? '…' : ''}`).join('; ');
      for (const x of pubsub) {
        assert(x.plain.length === 0, `master :${x.m.port}: PUBSUB CHANNELS ${prefix}* lists ${x.plain.length} plain channel(s), fan-out not (only) sharded: ${JSON.stringify(x.plain.slice(0, 5))}`);
        assertEq(x.numpat, 0, `master :${x.m.port}: PUBSUB NUMPAT (pattern subscriptions)`);
      }
      const carrying = pubsub.filter((x) => channels.some((ch) => x.shard.includes(shardOf(ch))));
      assert(carrying.length >= 2, `only ${carrying.length} master(s) carry the test's shard channels: ${layout()}`);
      const misplaced = [];
      for (const ch of channels) {
        const on = pubsub.filter((x) => x.shard.includes(shardOf(ch))).map((x) => `:${x.m.port}`);
        if (JSON.stringify(on) !== JSON.stringify([`:${ownerOf.get(ch).port}`])) misplaced.push(`${shardOf(ch)} on ${JSON.stringify(on)}, slot served by :${ownerOf.get(ch).port}`);
      }
      assert(misplaced.length === 0, `PUBSUB SHARDCHANNELS: ${misplaced.length} of ${channels.length} channels not (only) on the master of their slot: ${misplaced.slice(0, 4).join('; ')} (${layout()})`);
      assert(pubsub.find((x) => x.m === ctlOwner).shard.includes(ctl), `the control channel ${ctl} is not a shard channel on :${ctlOwner.port}, the master of its slot (${layout()})`);
      const byClients = all.reduce((k, l) => k + [...l.acked.values()].filter((a) => a.status === 'client').length, 0);
      const total = all.reduce((k, l) => k + l.acked.size, 0);
      note(`shard channels per master: ${pubsub.map((x) => `:${x.m.port} ${channels.filter((ch) => x.shard.includes(shardOf(ch))).length}${x.m === ctlOwner ? ' + control' : ''}`).join(', ')}; ` +
        `${total} publications (${byClients} by clients, ${total - byClients} by the API) on ${channels.length} channels, each received once and in offset order by ${clients.length} subscribers (one per node, ${allSubs.length} subscriptions); history and presence alike on every node`);
    }, { timeoutMs: 60_000, needsBroker: true });

    if (!ONLY.length) {
      await check('no unhandled rejections', async () => {
        assert(unhandled.length === 0, unhandled.slice(0, 3).join(' | '));
      });
    }
  } finally {
    removeDir(work);
  }
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main().then(
    () => { process.exitCode = summary('scaleout'); setTimeout(() => process.exit(process.exitCode), 200).unref(); },
    (e) => { console.log(`FAIL scaleout suite crashed: ${e && e.stack ? e.stack : e}`); summary('scaleout'); process.exit(1); },
  );
}
