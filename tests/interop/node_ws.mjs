// Node `ws` against duplex, both roles:
//  (a) ws as a client of `duplex serve` (ws:// and wss://), compression on;
//  (b) ws as an echo server (ws:// and wss://), compression on, driven by the
//      `duplex connect` CLI.

import { readFileSync, existsSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import {
  assert, assertEq, check, closedPort, makeCert, removeDir, runConnect, skip,
  startDuplex, summary, tempDir,
} from './lib.mjs';

const TEXTS = ['hello', 'héllo wörld ß', '👋🏽🎉 emoji', '漢字かなカナ한국어', ''];
const LINES = ['hello, duplex', 'héllo wörld ß ∑', '👋🏽🎉 emoji line', '漢字かなカナ한국어 中文'];
const BINARY_REPLY = Buffer.from([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0x0a, 0x0d, 0x41]);

function pseudoRandom(n, seed = 1) {
  const b = Buffer.alloc(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

// ------------------------------------------------------------ (a) ws client

/** Connects a ws client; resolves { ws, res } once open, rejects on failure. */
function wsConnect(url, opts = {}, protocols = undefined) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { perMessageDeflate: true, maxPayload: 64 << 20, handshakeTimeout: 10000, ...opts });
    let res;
    ws.on('upgrade', (r) => { res = r; });
    ws.on('unexpected-response', (req, r) => {
      reject(Object.assign(new Error(`unexpected response ${r.statusCode}`), { statusCode: r.statusCode }));
      req.destroy();
    });
    ws.once('open', () => {
      const queue = [];
      const waiters = [];
      ws.on('message', (data, isBinary) => {
        const m = { data, isBinary };
        if (waiters.length) waiters.shift()(m); else queue.push(m);
      });
      ws.next = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
      ws.closed = new Promise((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
      resolve({ ws, res });
    });
    ws.once('error', reject);
  });
}

async function clientEcho(url, opts) {
  const { ws, res } = await wsConnect(url, opts);
  const ext = res.headers['sec-websocket-extensions'] || '';
  assert(/permessage-deflate/.test(ext), `Sec-WebSocket-Extensions in the 101 = ${JSON.stringify(ext)}`);
  assert(/permessage-deflate/.test(ws.extensions), `ws.extensions = ${JSON.stringify(ws.extensions)}`);
  for (const t of TEXTS) {
    ws.send(t);
    const m = await ws.next();
    assertEq(m.isBinary, false, `type of echo of ${JSON.stringify(t)}`);
    assertEq(m.data.toString('utf8'), t, 'text echo');
  }
  for (const n of [0, 1, 125, 126, 65536, 1 << 20]) {
    const b = pseudoRandom(n, n + 3);
    ws.send(b);
    const m = await ws.next();
    assertEq(m.isBinary, true, `type of echo of ${n} B`);
    assert(Buffer.compare(Buffer.from(m.data), b) === 0, `binary echo of ${n} B differs (got ${m.data.length} B)`);
  }
  // A compressible 1 MiB message too.
  const z = Buffer.alloc(1 << 20, 'duplex ');
  ws.send(z);
  const mz = await ws.next();
  assert(Buffer.compare(Buffer.from(mz.data), z) === 0, 'compressible 1 MiB echo differs');
  ws.close(1000, 'bye');
  const c = await ws.closed;
  assertEq(c.code, 1000, 'close code seen by the client');
}

// ------------------------------------------------------------ (b) ws server

/**
 * An echo server on ws (optionally over an https server). Text 'binary please'
 * is answered by BINARY_REPLY; 'close 4001' by a close with 4001; 'drop' by
 * dropping the TCP connection. Every connection is recorded.
 */
async function startWsServer(tls) {
  const seen = [];
  let http;
  let wss;
  const handleProtocols = (protocols) => (protocols.has('chat.v1') ? 'chat.v1' : false);
  if (tls) {
    http = https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) });
    wss = new WebSocketServer({ server: http, perMessageDeflate: true, handleProtocols, maxPayload: 64 << 20 });
    await new Promise((r) => http.listen(0, '127.0.0.1', r));
  } else {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true, handleProtocols, maxPayload: 64 << 20 });
    await new Promise((r) => wss.once('listening', r));
  }
  wss.on('connection', (ws, req) => {
    const rec = { headers: req.headers, extensions: ws.extensions, protocol: ws.protocol, messages: [], closeCode: null };
    seen.push(rec);
    rec.closed = new Promise((r) => ws.on('close', (code) => { rec.closeCode = code; r(code); }));
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? null : data.toString('utf8');
      rec.messages.push(isBinary ? data : text);
      if (text === 'binary please') ws.send(BINARY_REPLY);
      else if (text === 'close 4001') ws.close(4001, 'as asked');
      else if (text === 'drop') ws._socket.destroy();
      else ws.send(data, { binary: isBinary });
    });
  });
  const port = (tls ? http : wss).address().port;
  return {
    seen,
    port,
    url: `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}/`,
    close: () => new Promise((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => (http ? http.close(() => r()) : r()));
    }),
  };
}

function expectLines(out, lines) {
  const got = out.stdout.split('\n');
  if (got[got.length - 1] === '') got.pop();
  assertEq(JSON.stringify(got), JSON.stringify(lines), 'stdout lines');
}

function describe(out) {
  return `exit ${out.code}${out.signal ? ' signal ' + out.signal : ''}, stdout=${JSON.stringify(out.stdout.slice(0, 300))}, stderr=${JSON.stringify(out.stderr.slice(0, 500))}`;
}

async function connectRun(server, args, lines, wantCode = 0) {
  const out = await runConnect([...args, server.url], lines.map((l) => l + '\n').join(''));
  assertEq(out.code, wantCode, `duplex connect exit code (${describe(out)})`);
  return out;
}

async function main() {
  const work = tempDir('duplex-node-');
  const cert = makeCert(work);
  const stops = [];
  try {
    // -------------------------------------------------- (a) ws as client
    let plain;
    await check('duplex serve starts (ws://)', async () => { plain = await startDuplex([]); stops.push(plain.stop); });
    if (plain) {
      await check('ws client → duplex serve ws://: deflate negotiated, text/binary echo byte-exact, close 1000', () => clientEcho(plain.wsUrl));
      await check('ws client with a foreign Origin is refused with 403 (default policy)', async () => {
        const r = await wsConnect(plain.wsUrl, { origin: 'http://evil.example' }).then(({ ws }) => { ws.terminate(); return 'opened'; }, (e) => e.statusCode ?? e.message);
        assertEq(r, 403, 'handshake result');
      });
    }

    let selfSigned;
    const tlsDir = path.join(work, 'tls');
    await check('duplex serve --tls-self-signed --tls-dir DIR starts (https) and writes cert.pem, key.pem', async () => {
      selfSigned = await startDuplex(['--tls-self-signed', '--tls-dir', tlsDir]);
      stops.push(selfSigned.stop);
      assertEq(selfSigned.scheme, 'https', 'scheme in the log');
      assert(existsSync(path.join(tlsDir, 'cert.pem')) && existsSync(path.join(tlsDir, 'key.pem')), 'cert.pem/key.pem missing in ' + tlsDir);
    });
    if (selfSigned) {
      const ca = readFileSync(path.join(tlsDir, 'cert.pem'));
      await check('ws client → duplex serve wss:// (trusting only its certificate): deflate, echo, close 1000', () => clientEcho(selfSigned.wsUrl, { ca }));
      await check('ws client → wss://localhost:P (the self-signed certificate names localhost too)', async () => {
        const { ws } = await wsConnect(`wss://localhost:${selfSigned.port}/echo`, { ca, family: 4 });
        ws.send('via localhost');
        assertEq((await ws.next()).data.toString(), 'via localhost', 'echo');
        ws.close(1000);
        assertEq((await ws.closed).code, 1000, 'close code');
      });
      await check('duplex connect --ca DIR/cert.pem → duplex serve --tls-self-signed: echo, exit 0', async () => {
        const out = await runConnect(['--ca', path.join(tlsDir, 'cert.pem'), selfSigned.wsUrl], LINES.map((l) => l + '\n').join(''));
        assertEq(out.code, 0, `exit code (${describe(out)})`);
        expectLines(out, LINES);
      });
      await check('ws client without the certificate trusted is refused (TLS verification)', async () => {
        const r = await wsConnect(selfSigned.wsUrl, {}).then(({ ws }) => { ws.terminate(); return 'opened'; }, (e) => e.code || e.message);
        assert(r !== 'opened', 'an untrusted certificate was accepted');
      });
    }

    await check("ws client offering ['x.unknown','chat.v1'] to duplex serve --subprotocol chat.v1 gets chat.v1", async () => {
      const s = await startDuplex(['--subprotocol', 'chat.v1']);
      stops.push(s.stop);
      const { ws, res } = await wsConnect(s.wsUrl, {}, ['x.unknown', 'chat.v1']);
      assertEq(res.headers['sec-websocket-protocol'], 'chat.v1', 'Sec-WebSocket-Protocol');
      assertEq(ws.protocol, 'chat.v1', 'ws.protocol');
      ws.close(1000);
      await ws.closed;
    });

    // -------------------------------------------------- (b) ws as server
    const servers = {};
    servers.ws = await startWsServer(null);
    servers.wss = await startWsServer(cert);
    stops.push(servers.ws.close, servers.wss.close);

    const lineCheck = async (srv, args) => {
      const before = srv.seen.length;
      const out = await connectRun(srv, args, LINES);
      expectLines(out, LINES);
      const rec = srv.seen[before];
      assert(rec, 'the server saw no connection');
      await Promise.race([rec.closed, new Promise((r) => setTimeout(r, 3000))]);
      assertEq(rec.closeCode, 1000, 'close code seen by the server');
      assert(/permessage-deflate/.test(rec.extensions), `negotiated extensions at the server = ${JSON.stringify(rec.extensions)} (offered ${JSON.stringify(rec.headers['sec-websocket-extensions'])})`);
      assertEq(JSON.stringify(rec.messages), JSON.stringify(LINES), 'messages received by the server');
    };

    await check('duplex connect → ws server ws://: lines echoed in order, exit 0, server saw 1000, deflate', () => lineCheck(servers.ws, []));
    await check('duplex connect --ca c.pem → ws server wss://: lines echoed, exit 0, server saw 1000, deflate', () => lineCheck(servers.wss, ['--ca', cert.cert]));
    await check('duplex connect --insecure → ws server wss://: lines echoed, exit 0', () => lineCheck(servers.wss, ['--insecure']));
    await check('duplex connect without --ca to a self-signed wss:// server: exit 1 (certificate not trusted)', async () => {
      const out = await runConnect([servers.wss.url], 'x\n');
      assertEq(out.code, 1, `exit code (${describe(out)})`);
    });
    await check('duplex connect: binary message from the server printed as base64', async () => {
      const out = await connectRun(servers.ws, [], ['binary please']);
      expectLines(out, [BINARY_REPLY.toString('base64')]);
    });
    await check('duplex connect --binary: binary message from the server written as raw bytes', async () => {
      const out = await connectRun(servers.ws, ['--binary'], ['binary please']);
      assert(out.stdoutBuf.includes(BINARY_REPLY), `stdout bytes ${out.stdoutBuf.toString('hex')}`);
    });
    await check('duplex connect -H, --origin, --subprotocol reach the server', async () => {
      const before = servers.ws.seen.length;
      const out = await connectRun(servers.ws, ['-H', 'X-Duplex-Test: yes 1', '--origin', 'http://example.test', '--subprotocol', 'x.unknown', '--subprotocol', 'chat.v1'], ['hi']);
      expectLines(out, ['hi']);
      const rec = servers.ws.seen[before];
      assertEq(rec.headers['x-duplex-test'], 'yes 1', 'X-Duplex-Test');
      assertEq(rec.headers.origin, 'http://example.test', 'Origin');
      assertEq(rec.headers['sec-websocket-protocol'], 'x.unknown, chat.v1', 'Sec-WebSocket-Protocol offered');
      assertEq(rec.protocol, 'chat.v1', 'protocol selected');
    });
    await check('duplex connect --no-deflate: no permessage-deflate offered', async () => {
      const before = servers.ws.seen.length;
      const out = await connectRun(servers.ws, ['--no-deflate'], ['plain']);
      expectLines(out, ['plain']);
      const rec = servers.ws.seen[before];
      assertEq(rec.headers['sec-websocket-extensions'], undefined, 'Sec-WebSocket-Extensions offered');
    });
    await check('duplex connect: server closes with 4001 → exit 3', async () => {
      await connectRun(servers.ws, [], ['close 4001'], 3);
    });
    await check('duplex connect: server drops the TCP connection → exit 2', async () => {
      await connectRun(servers.ws, [], ['drop'], 2);
    });
    await check('duplex connect to a closed port → exit 1', async () => {
      const port = await closedPort();
      const out = await runConnect([`ws://127.0.0.1:${port}/`], 'x\n');
      assertEq(out.code, 1, `exit code (${describe(out)})`);
    });
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    removeDir(work);
  }
}

let code = 1;
try {
  await main();
  code = summary('node ws');
} catch (e) {
  console.log(`FAIL node ws suite aborted: ${e && e.stack ? e.stack : e}`);
  summary('node ws');
}
process.exit(code);
