#!/usr/bin/env node
// What an idle /echo connection keeps after echoing messages of a given size.
//
//   node tests/soak/retained.mjs [--deflate] [--connections N] [--bin PATH]
//
// Starts `duplex serve` (release build by default) on a free loopback port,
// opens N connections (npm `ws`), lets the server settle, then runs rounds:
// in each, every connection sends one message and waits for its echo, one
// connection at a time (so at most one message is in flight), and 12 s
// later (past jemalloc's 10 s decay) the server's RSS is read. Prints the
// RSS and its change per connection after each round. The soak section of
// BENCHMARKS.md cites it.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const require = createRequire(path.join(repoRoot, 'tests', 'interop', 'package.json'));
const WebSocket = require('ws');

let n = 5000;
let deflate = false;
let bin = process.env.DUPLEX_BIN || path.join(repoRoot, 'target', 'release', 'duplex');
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--deflate') deflate = true;
  else if (argv[i] === '--connections') n = Number(argv[++i]);
  else if (argv[i] === '--bin') bin = argv[++i];
  else { console.error('usage: node tests/soak/retained.mjs [--deflate] [--connections N] [--bin PATH]'); process.exit(2); }
}

const srv = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--max-connections', String(2 * n + 100)], {
  env: { ...process.env, DUPLEX_LOG: 'warn,duplex::serve=info', NO_COLOR: '1' },
  stdio: ['ignore', 'ignore', 'pipe'],
});
process.on('exit', () => srv.kill('SIGKILL'));
const hard = setTimeout(() => { console.log('retained: timed out'); process.exit(1); }, 300_000);
hard.unref();

const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${srv.pid}/status`, 'utf8'))[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let log = '';
const port = await new Promise((resolve, reject) => {
  srv.on('exit', (c) => reject(new Error(`duplex serve exited (${c}): ${log}`)));
  srv.stderr.on('data', (d) => {
    log += d;
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
    if (m) resolve(Number(m[1]));
  });
});

const socks = [];
for (let i = 0; i < n; i += 200) {
  await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`, { perMessageDeflate: deflate });
    ws.on('open', () => { socks.push(ws); resolve(); });
    ws.on('error', reject);
  })));
}

async function round(size) {
  const buf = Buffer.alloc(size, 7);
  for (let i = 0; i < buf.length; i += 97) buf[i] = i & 255;
  for (const ws of socks) {
    await new Promise((resolve, reject) => {
      ws.once('message', (data) => (data.equals(buf) ? resolve() : reject(new Error('echo differs'))));
      ws.send(buf);
    });
  }
  await sleep(12_000);
  return rss();
}

await sleep(12_000);
const idle = rss();
console.log(`${n} connections on /echo${deflate ? ' (permessage-deflate)' : ''}, idle: RSS ${idle} KiB`);
let prev = idle;
for (const [size, label] of [[100, '100 B'], [100, '100 B again'], [20 * 1024, '20 KiB'], [20 * 1024, '20 KiB again'],
  [100, '100 B'], [200 * 1024, '200 KiB'], [100, '100 B']]) {
  const r = await round(size);
  const per = (k) => ((k * 1024) / n).toFixed(0);
  console.log(`after one ${label.padEnd(12)} each: RSS ${r} KiB, ${per(r - prev).padStart(5)} B per connection vs the round before, `
    + `${per(r - idle).padStart(5)} B vs idle`);
  prev = r;
}
for (const ws of socks) ws.terminate();
process.exit(0);
