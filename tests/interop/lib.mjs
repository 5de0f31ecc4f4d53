// Shared helpers of the Node interop suites: start and stop `duplex serve`,
// run `duplex connect`, make certificates, launch Chromium kept on loopback,
// wait for conditions, and report checks one per line.

import { spawn, execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const duplexBin = process.env.DUPLEX_BIN || path.join(repoRoot, 'target', 'debug', 'duplex');

// ---------------------------------------------------------------- reporting

const results = { passed: 0, failed: 0, skipped: 0, failures: [] };
const t0 = Date.now();

/** Runs one named check: prints `PASS name (ms)` or `FAIL name: why`. */
export async function check(name, fn, { timeoutMs = 60_000 } = {}) {
  const start = Date.now();
  let timer;
  try {
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    });
    await Promise.race([Promise.resolve().then(fn), timeout]);
    results.passed++;
    console.log(`PASS ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    results.failed++;
    const why = e && e.message ? e.message : String(e);
    results.failures.push(`${name}: ${why}`);
    console.log(`FAIL ${name} (${Date.now() - start} ms): ${why}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Records a check that could not run, with the reason. */
export function skip(name, why) {
  results.skipped++;
  console.log(`SKIP ${name}: ${why}`);
}

/** Prints the suite's closing line and returns the exit code. */
export function summary(suite) {
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (results.failures.length) {
    console.log(`\n${suite}: failures:`);
    for (const f of results.failures) console.log(`  - ${f}`);
  }
  console.log(`\n${suite}: ${results.passed} passed, ${results.failed} failed, ${results.skipped} skipped (${secs} s)`);
  return results.failed ? 1 : 0;
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

export function assertEq(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

// ---------------------------------------------------------------- processes

const children = new Set();
function killAll() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Starts `duplex serve --listen 127.0.0.1:0 ...args` and resolves once its
 * log names the port. Returns { port, scheme, origin, log(), stop() }.
 */
export function startDuplex(args = [], { timeoutMs = 20_000, listen = '127.0.0.1:0' } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(duplexBin, ['serve', '--listen', listen, ...args], {
      env: { ...process.env, DUPLEX_LOG: process.env.DUPLEX_LOG || 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let out = '';
    let settled = false;
    const server = {
      child,
      log: () => out,
      stop: () => new Promise((res) => {
        if (child.exitCode !== null || child.signalCode !== null) { children.delete(child); return res(); }
        const hard = setTimeout(() => child.kill('SIGKILL'), 3000);
        child.once('exit', () => { clearTimeout(hard); children.delete(child); res(); });
        child.kill('SIGINT');
      }),
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`duplex serve ${args.join(' ')} did not report its port within ${timeoutMs} ms; log:\n${out}`));
    }, timeoutMs);
    const onData = (d) => {
      out += d.toString().replace(ANSI, '');
      const m = /listening on (https?):\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        server.scheme = m[1];
        server.port = Number(m[2]);
        server.origin = `${m[1]}://127.0.0.1:${m[2]}`;
        server.wsUrl = `${m[1] === 'https' ? 'wss' : 'ws'}://127.0.0.1:${m[2]}/echo`;
        resolve(server);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`cannot run ${duplexBin}: ${e.message}`));
    });
    child.on('exit', (code, sig) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`duplex serve ${args.join(' ')} exited (${code ?? sig}) before listening; log:\n${out.trim()}`));
    });
  });
}

/**
 * Runs `duplex connect ...args`, writes `input` to its stdin and closes it.
 * Resolves to { code, signal, stdout, stdoutBuf, stderr, ms }; kills it after timeoutMs.
 */
export function runConnect(args, input = '', { timeoutMs = 20_000 } = {}) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const child = spawn(duplexBin, ['connect', ...args], {
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.add(child);
    const out = [];
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => { out.push(d); });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); children.delete(child); reject(e); });
    // 'close' comes once the process has exited and its pipes are drained.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const stdoutBuf = Buffer.concat(out);
      const stdout = stdoutBuf.toString('utf8');
      if (timedOut) {
        reject(new Error(`duplex connect ${args.join(' ')} still running after ${timeoutMs} ms; stdout=${JSON.stringify(stdout)} stderr=${JSON.stringify(stderr)}`));
      } else {
        resolve({ code, signal, stdout, stdoutBuf, stderr, ms: Date.now() - start });
      }
    });
    child.stdin.on('error', () => { /* the peer may exit before reading everything */ });
    child.stdin.end(input);
  });
}

/** A loopback port nothing listens on (bound, then released). */
export function closedPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- files, TLS

export function tempDir(prefix = 'duplex-interop-') {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir) {
  try { rmSync(dir, { recursive: true, force: true }); } catch { /* best effort */ }
}

/** Makes a self-signed certificate for localhost and 127.0.0.1 in dir. */
export function makeCert(dir) {
  const cert = path.join(dir, 'c.pem');
  const key = path.join(dir, 'k.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '2',
    '-keyout', key, '-out', cert,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { cert, key };
}

/** base64(sha256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's
 *  --ignore-certificate-errors-spki-list wants it. */
export function spkiHash(certPemPath) {
  const x = new X509Certificate(readFileSync(certPemPath));
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls cond() until it gives something truthy, which it returns; throws
 * after ms with `what` (a string, or a function giving one).
 */
export async function until(cond, ms, what, every = 25) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) {
      throw new Error(`${typeof what === 'function' ? await what() : what}: not within ${ms} ms`);
    }
    await sleep(every);
  }
}

/**
 * Debian's Chromium (playwright-core's `chromium`, never a downloaded
 * browser) with a profile of its own in `profileDir`, kept on loopback:
 * anything not bound for localhost goes to a SOCKS proxy on a closed
 * loopback port, so it fails at once. `extraArgs` adds flags (an SPKI pin).
 */
export async function launchChromium(chromium, profileDir, executablePath, extraArgs = []) {
  const socksPort = await closedPort();
  return chromium.launchPersistentContext(profileDir, {
    executablePath,
    headless: true,
    timeout: 30000,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--proxy-server=socks5://127.0.0.1:${socksPort}`,
      '--proxy-bypass-list=localhost;127.0.0.0/8;[::1]',
      ...extraArgs,
    ],
  });
}

/**
 * A loopback TCP proxy to `port`, for tests that drop a client's connection:
 * cut() destroys every connection through it (the client sees its TCP
 * connection drop, no close frame); block() makes it destroy new
 * connections at once until unblock(). It keeps the first 64 KiB each
 * client sent, so requests() can say what went through (HTTP/1.1 heads).
 */
export function startProxy(port) {
  return new Promise((resolve, reject) => {
    const live = new Set();
    const all = [];
    let blocked = false;
    let accepted = 0;
    let refused = 0;
    const srv = net.createServer((c) => {
      if (blocked) { refused++; c.destroy(); return; }
      accepted++;
      const up = net.connect(port, '127.0.0.1');
      const rec = { c, up, sent: [], size: 0 };
      live.add(rec);
      all.push(rec);
      c.on('data', (d) => { if (rec.size < 1 << 16) { rec.sent.push(d); rec.size += d.length; } });
      const end = () => { c.destroy(); up.destroy(); live.delete(rec); };
      c.on('error', end); up.on('error', end);
      c.on('close', end); up.on('close', end);
      c.pipe(up); up.pipe(c);
    });
    const cut = () => { for (const r of live) { r.c.destroy(); r.up.destroy(); } live.clear(); };
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const p = srv.address().port;
      resolve({
        port: p,
        origin: `http://127.0.0.1:${p}`,
        wsUrl: `ws://127.0.0.1:${p}/connection/websocket`,
        url: (path = '/connection/websocket') => `ws://127.0.0.1:${p}${path}`,
        block() { blocked = true; },
        unblock() { blocked = false; },
        cut,
        open: () => live.size,
        refused: () => refused,
        stats: () => ({ accepted, refused, open: live.size }),
        /** Every request seen: { target, headers (lower-case names) }, in connection order. */
        requests() {
          const out = [];
          for (const r of all) {
            const text = Buffer.concat(r.sent).toString('latin1');
            for (const m of text.matchAll(/(?:GET|POST|HEAD) (\S+) HTTP\/1\.1\r\n([\s\S]*?)\r\n\r\n/g)) {
              const headers = {};
              for (const line of m[2].split('\r\n')) {
                const i = line.indexOf(':');
                if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
              }
              out.push({ target: m[1], headers });
            }
          }
          return out;
        },
        close: () => new Promise((res) => { blocked = true; cut(); srv.close(() => res()); }),
      });
    });
  });
}
