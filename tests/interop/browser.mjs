// Chromium (Debian's /usr/bin/chromium, driven by playwright-core) against
// `duplex serve`: the browser's own WebSocket API, run in the demo page that
// the server itself serves, so page and socket share an origin.
//
// Notes on what a browser does (the checks below rely on it):
// - A handshake answered with anything but 101 (the 403 of the Origin
//   policy, a refused subprotocol...) is not visible to the page as a status:
//   the page sees an `error` event then `close` with code 1006, wasClean false.
// - When the page offers subprotocols and the server selects none, Chromium
//   fails the connection ("Sent non-empty 'Sec-WebSocket-Protocol' header but
//   no response was received"): error + close 1006, even if the server
//   answered 101. So offering only unknown subprotocols fails in the browser.

import { chromium } from 'playwright-core';
import http from 'node:http';
import path from 'node:path';
import {
  assert, assertEq, check, closedPort, makeCert, removeDir, skip, spkiHash,
  startDuplex, summary, tempDir, launchChromium,
} from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// In-page helpers, installed after every navigation. Sockets live in the
// page; only plain results cross back to Node.
function installHelpers() {
  if (window.T) return;
  const T = {};
  // Opens a socket; resolves { ok, protocol, extensions, url } on open, or
  // { ok: false, code, wasClean, events } when it closes first.
  T.open = (url, protocols, binaryType = 'arraybuffer', timeoutMs = 10000) => new Promise((resolve) => {
    let ws;
    try {
      ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
    } catch (e) {
      resolve({ ok: false, thrown: String(e) });
      return;
    }
    ws.binaryType = binaryType;
    const events = [];
    const queue = [];
    const waiters = [];
    ws.addEventListener('message', (e) => {
      if (waiters.length) waiters.shift()(e.data); else queue.push(e.data);
    });
    ws.next = (ms = 30000) => (queue.length ? Promise.resolve(queue.shift()) : new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('no message within ' + ms + ' ms')), ms);
      waiters.push((d) => { clearTimeout(t); res(d); });
    }));
    ws.closed = new Promise((r) => ws.addEventListener('close', (e) => r({ code: e.code, reason: e.reason, wasClean: e.wasClean, events })));
    ws.addEventListener('error', () => events.push('error'));
    ws.addEventListener('open', () => {
      events.push('open');
      T.ws = ws;
      resolve({ ok: true, protocol: ws.protocol, extensions: ws.extensions, url: ws.url });
    });
    ws.addEventListener('close', (e) => {
      events.push('close');
      resolve({ ok: false, code: e.code, wasClean: e.wasClean, events });
    });
    setTimeout(() => resolve({ ok: false, timeout: true, readyState: ws.readyState, events }), timeoutMs);
  });
  T.echoUrl = () => (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/echo';
  T.bytes = (n, seed) => {
    // xorshift32: incompressible, reproducible content.
    const b = new Uint8Array(n);
    let x = seed | 1;
    for (let i = 0; i < n; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      b[i] = x & 0xff;
    }
    return b;
  };
  T.asBytes = async (d) => new Uint8Array(d instanceof Blob ? await d.arrayBuffer() : d);
  T.same = (a, b) => {
    if (a.length !== b.length) return 'length ' + b.length + ' != ' + a.length;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return 'byte ' + i + ' differs';
    return null;
  };
  window.T = T;
}

async function gotoDemo(page, url) {
  const resp = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  await page.evaluate(installHelpers);
  return resp;
}

/** Opens a socket from the page; returns what T.open resolved. */
function openFromPage(page, url, protocols, binaryType) {
  return page.evaluate(([u, p, b]) => window.T.open(u, p === null ? undefined : p, b), [url, protocols ?? null, binaryType ?? 'arraybuffer']);
}

async function closeFromPage(page) {
  return page.evaluate(async () => {
    const ws = window.T.ws;
    if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'done');
    return ws.closed;
  });
}

/** A raw upgrade request; resolves the HTTP status the server answered. */
function upgradeStatus(port, host, origin) {
  return new Promise((resolve, reject) => {
    const headers = {
      Host: host,
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
    };
    if (origin) headers.Origin = origin;
    const req = http.request({ host: '127.0.0.1', port, path: '/echo', headers, timeout: 5000 });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];

async function binaryEcho(page, binaryType) {
  return page.evaluate(async ([sizes, bt]) => {
    const T = window.T;
    const r = await T.open(T.echoUrl(), undefined, bt);
    if (!r.ok) return 'could not open: ' + JSON.stringify(r);
    const ws = T.ws;
    const problems = [];
    for (const kind of ['ArrayBuffer', 'Blob']) {
      for (const n of sizes) {
        const sent = T.bytes(n, n + 7);
        ws.send(kind === 'Blob' ? new Blob([sent]) : sent.buffer);
        const d = await ws.next(60000);
        const want = bt === 'blob' ? Blob : ArrayBuffer;
        if (!(d instanceof want)) { problems.push(kind + ' ' + n + ' B: received ' + Object.prototype.toString.call(d)); continue; }
        const diff = T.same(sent, await T.asBytes(d));
        if (diff) problems.push(kind + ' ' + n + ' B: ' + diff);
      }
    }
    ws.close(1000);
    const c = await ws.closed;
    if (c.code !== 1000) problems.push('close code ' + c.code);
    return problems.length ? problems.join('; ') : null;
  }, [SIZES, binaryType]);
}

async function main() {
  const work = tempDir('duplex-browser-');
  const { cert, key } = makeCert(work);
  const spki = spkiHash(cert);
  const unreachable = await closedPort();

  const context = await launchChromium(chromium, path.join(work, 'profile'), CHROMIUM, [`--ignore-certificate-errors-spki-list=${spki}`]);
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(10000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  console.log(`chromium ${context.browser()?.version() ?? ''} (${CHROMIUM})`);

  const servers = [];
  const serve = async (args) => { const s = await startDuplex(args); servers.push(s); return s; };

  try {
    const main = await serve([]);
    const base = main.origin;

    await check('GET / serves the demo page (200, text/html, same-origin echo URL)', async () => {
      const resp = await gotoDemo(page, base + '/');
      assertEq(resp.status(), 200, 'status');
      assert(/text\/html/.test(resp.headers()['content-type'] || ''), 'content-type ' + resp.headers()['content-type']);
      assertEq(await page.inputValue('#url'), `ws://127.0.0.1:${main.port}/echo`, '#url');
      const idx = await page.request.get(base + '/index.html');
      assertEq(idx.status(), 200, 'GET /index.html status');
    });

    await check('text round trips: empty, ASCII, emoji, CJK, mixed, 100k chars', async () => {
      const bad = await page.evaluate(async () => {
        const T = window.T;
        const r = await T.open(T.echoUrl());
        if (!r.ok) return 'could not open: ' + JSON.stringify(r);
        const samples = ['', 'hello', '👋🏽🎉🇫🇷 — emoji', '漢字かなカナ한국어中文', 'mixed é ß ∑ 𝄞 \u0000 nul', '𝄞中é'.repeat(33334)];
        const problems = [];
        for (const s of samples) {
          T.ws.send(s);
          const d = await T.ws.next();
          if (d !== s) problems.push('sent ' + JSON.stringify(s.slice(0, 20)) + ' (' + s.length + ') got ' + JSON.stringify(String(d).slice(0, 20)) + ' (' + String(d).length + ')');
        }
        T.ws.close(1000);
        await T.ws.closed;
        return problems.length ? problems.join('; ') : null;
      });
      assert(!bad, bad);
    });

    await check('ws.extensions contains permessage-deflate', async () => {
      const r = await openFromPage(page, `ws://127.0.0.1:${main.port}/echo`);
      assert(r.ok, 'open failed: ' + JSON.stringify(r));
      assert(/permessage-deflate/.test(r.extensions), 'extensions = ' + JSON.stringify(r.extensions));
      await closeFromPage(page);
    });

    for (const bt of ['arraybuffer', 'blob']) {
      await check(`binary echo byte-exact, binaryType '${bt}': ArrayBuffer and Blob of ${SIZES.join(', ')} B`, async () => {
        const bad = await binaryEcho(page, bt);
        assert(!bad, bad);
      }, { timeoutMs: 90_000 });
    }

    await check('1000 messages arrive in order', async () => {
      const bad = await page.evaluate(async () => {
        const T = window.T;
        const r = await T.open(T.echoUrl());
        if (!r.ok) return 'could not open';
        for (let i = 0; i < 1000; i++) T.ws.send('m' + i);
        for (let i = 0; i < 1000; i++) {
          const d = await T.ws.next();
          if (d !== 'm' + i) return 'message ' + i + ' was ' + d;
        }
        T.ws.close(1000);
        await T.ws.closed;
        return null;
      });
      assert(!bad, bad);
    });

    await check('clean close from the page: close(1000) gives code 1000, wasClean true', async () => {
      const r = await openFromPage(page, `ws://127.0.0.1:${main.port}/echo`);
      assert(r.ok, 'open failed');
      const c = await closeFromPage(page);
      assertEq(c.code, 1000, 'code');
      assertEq(c.wasClean, true, 'wasClean');
    });

    await check('unreachable port (closed loopback port): error then close 1006', async () => {
      const r = await openFromPage(page, `ws://127.0.0.1:${unreachable}/echo`);
      assertEq(r.ok, false, 'opened');
      assertEq(r.code, 1006, 'close code');
      assertEq(r.wasClean, false, 'wasClean');
      assert(r.events.includes('error'), 'no error event: ' + r.events);
    });

    await check('demo page UI: connect, OPEN + extensions shown, send text and bytes, log, disconnect', async () => {
      await gotoDemo(page, base + '/');
      await page.click('#connect');
      await page.waitForSelector('#state[data-state="1"]', { timeout: 10000 });
      assert((await page.textContent('#state')).includes('OPEN (1)'), 'state text ' + await page.textContent('#state'));
      assert(/permessage-deflate/.test(await page.textContent('#extensions')), '#extensions = ' + await page.textContent('#extensions'));
      const msg = 'UI check ✓ 日本語';
      await page.fill('#text', msg);
      await page.click('#send-text');
      await page.waitForFunction((m) => [...document.querySelectorAll('#log li[data-kind="message"]')]
        .some((li) => li.textContent.includes(JSON.stringify(m))), msg, { timeout: 10000 });
      await page.fill('#hex', 'de ad be ef');
      await page.click('#send-binary');
      await page.waitForFunction(() => [...document.querySelectorAll('#log li[data-kind="message"]')]
        .some((li) => /4 bytes: de ad be ef/.test(li.textContent)), null, { timeout: 10000 });
      // Received markup stays text.
      await page.fill('#text', '<img src=x onerror="window.__xss=1"><b id=injected>x</b>');
      await page.click('#send-text');
      await page.waitForFunction(() => [...document.querySelectorAll('#log li[data-kind="message"]')]
        .some((li) => li.textContent.includes('injected')), null, { timeout: 10000 });
      assertEq(await page.evaluate(() => !!document.querySelector('#log img, #injected') || !!window.__xss), false, 'markup from a message was interpreted');
      await page.click('#disconnect');
      await page.waitForSelector('#state[data-state="3"]', { timeout: 10000 });
      const closeLine = await page.evaluate(() => [...document.querySelectorAll('#log li[data-kind="close"]')].map((li) => li.textContent).join('\n'));
      assert(/code=1000/.test(closeLine) && /wasClean=true/.test(closeLine), 'close log line: ' + closeLine);
      if (process.env.INTEROP_SCREENSHOT) await page.screenshot({ path: process.env.INTEROP_SCREENSHOT, fullPage: true });
    });

    // ------------------------------------------------------ subprotocols
    let sub;
    await check('server with --subprotocol chat.v1 starts', async () => { sub = await serve(['--subprotocol', 'chat.v1']); });
    if (sub) {
      await gotoDemo(page, sub.origin + '/');
      await check("page offers ['x.unknown','chat.v1']: ws.protocol === 'chat.v1'", async () => {
        const r = await openFromPage(page, sub.wsUrl, ['x.unknown', 'chat.v1']);
        assert(r.ok, 'open failed: ' + JSON.stringify(r));
        assertEq(r.protocol, 'chat.v1', 'protocol');
        const c = await closeFromPage(page);
        assertEq(c.code, 1000, 'close code');
      });
      await check("page offers only ['x.unknown']: connection fails in the browser (error + close 1006)", async () => {
        const r = await openFromPage(page, sub.wsUrl, ['x.unknown']);
        assertEq(r.ok, false, 'opened (protocol ' + JSON.stringify(r.protocol) + ')');
        assertEq(r.code, 1006, 'close code');
        assert(r.events.includes('error'), 'no error event');
      });
    }

    // ------------------------------------------------------ Origin policy
    await check('default Origin policy: page from http://localhost:P opening ws://127.0.0.1:P/echo fails; server answers 403', async () => {
      await gotoDemo(page, `http://localhost:${main.port}/`);
      const r = await openFromPage(page, `ws://127.0.0.1:${main.port}/echo`);
      assertEq(r.ok, false, 'cross-origin socket opened');
      assertEq(r.code, 1006, 'close code');
      assertEq(await upgradeStatus(main.port, `127.0.0.1:${main.port}`, `http://localhost:${main.port}`), 403, 'raw handshake status');
    });
    await check('default Origin policy: same page opening ws://localhost:P/echo (same host) succeeds; no Origin accepted', async () => {
      const r = await openFromPage(page, `ws://localhost:${main.port}/echo`);
      assert(r.ok, 'same-origin socket failed: ' + JSON.stringify(r));
      await closeFromPage(page);
      assertEq(await upgradeStatus(main.port, `127.0.0.1:${main.port}`, null), 101, 'handshake without Origin');
    });

    await check('--allow-origin http://localhost:P: page from localhost opening ws://127.0.0.1:P succeeds', async () => {
      const port = await closedPort();
      const s = await startDuplex(['--allow-origin', `http://localhost:${port}`], { listen: `127.0.0.1:${port}` });
      servers.push(s);
      await gotoDemo(page, `http://localhost:${s.port}/`);
      const r = await openFromPage(page, `ws://127.0.0.1:${s.port}/echo`);
      assert(r.ok, 'failed: ' + JSON.stringify(r));
      const echoed = await page.evaluate(async () => { window.T.ws.send('hi'); return window.T.ws.next(); });
      assertEq(echoed, 'hi', 'echo');
      await closeFromPage(page);
    });

    await check('--allow-origin http://other.example only: page from localhost fails, that origin gets 101', async () => {
      const s = await serve(['--allow-origin', 'http://other.example']);
      await gotoDemo(page, `http://localhost:${s.port}/`);
      const r = await openFromPage(page, `ws://127.0.0.1:${s.port}/echo`);
      assertEq(r.ok, false, 'opened');
      assertEq(r.code, 1006, 'close code');
      assertEq(await upgradeStatus(s.port, `127.0.0.1:${s.port}`, `http://localhost:${s.port}`), 403, 'localhost origin status');
      assertEq(await upgradeStatus(s.port, `127.0.0.1:${s.port}`, 'http://other.example'), 101, 'allowed origin status');
    });

    // ------------------------------------------------------ wss
    let tls;
    await check('server with --tls-cert/--tls-key starts (https)', async () => {
      tls = await serve(['--tls-cert', cert, '--tls-key', key]);
      assertEq(tls.scheme, 'https', 'scheme in log');
    });
    if (tls) {
      await check('https page (certificate trusted by SPKI pin): wss text + binary echo, deflate', async () => {
        const resp = await gotoDemo(page, tls.origin + '/');
        assertEq(resp.status(), 200, 'status');
        assertEq(await page.evaluate(() => location.protocol), 'https:', 'location.protocol');
        assertEq(await page.inputValue('#url'), `wss://127.0.0.1:${tls.port}/echo`, '#url');
        const bad = await page.evaluate(async () => {
          const T = window.T;
          const r = await T.open(T.echoUrl());
          if (!r.ok) return 'could not open: ' + JSON.stringify(r);
          if (!r.url.startsWith('wss://')) return 'url ' + r.url;
          if (!/permessage-deflate/.test(r.extensions)) return 'extensions ' + r.extensions;
          T.ws.send('over TLS ✓ 漢字');
          if ((await T.ws.next()) !== 'over TLS ✓ 漢字') return 'text differs';
          for (const n of [0, 126, 65536, 1 << 20]) {
            const b = T.bytes(n, 99);
            T.ws.send(b.buffer);
            const diff = T.same(b, await T.asBytes(await T.ws.next()));
            if (diff) return n + ' B: ' + diff;
          }
          T.ws.close(1000);
          const c = await T.ws.closed;
          return c.code === 1000 && c.wasClean ? null : 'close ' + JSON.stringify(c);
        });
        assert(!bad, bad);
      });
      await check('HTTP/2: the https page came over h2 and its wss socket opened inside that connection (RFC 8441 extended CONNECT, counted by the server by HTTP version)', async () => {
        const proto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
        assertEq(proto, 'h2', 'the page\'s protocol (nextHopProtocol)');
        const text = await page.evaluate(async () => (await fetch('/metrics')).text());
        const h2 = /^duplex_websockets_opened_total\{http="2"\} (\d+)/m.exec(text);
        const h1 = /^duplex_websockets_opened_total\{http="1\.1"\} (\d+)/m.exec(text);
        assert(h2 && Number(h2[1]) >= 1, 'no WebSocket over HTTP/2 in /metrics: ' + (text.match(/^duplex_websockets_opened_total.*$/gm) || ['none']).join('; '));
        // The HTTP/1.1 series is there from the start, at 0 until a socket opens over it.
        assert(!h1 || Number(h1[1]) === 0, 'a WebSocket went over HTTP/1.1 beside the h2 connection: ' + h1?.[0]);
      });
      await check('demo page UI over https: connect shows OPEN and wss URL', async () => {
        await page.click('#connect');
        await page.waitForSelector('#state[data-state="1"]', { timeout: 10000 });
        assert((await page.textContent('#socket-url')).startsWith('wss://'), 'socket url');
        await page.click('#disconnect');
        await page.waitForSelector('#state[data-state="3"]', { timeout: 10000 });
      });
      await check('the SPKI pin trusts only that certificate: another self-signed server is refused', async () => {
        const other = await serve(['--tls-self-signed', '--tls-dir', path.join(work, 'other-tls')]);
        const p2 = await context.newPage();
        const err = await p2.goto(other.origin + '/', { timeout: 10000 }).then(() => null, (e) => e.message);
        await p2.close();
        assert(err && /ERR_CERT|chrome-error/.test(err), 'navigation result: ' + err);
        const r = await openFromPage(page, `wss://127.0.0.1:${other.port}/echo`);
        assertEq(r.ok, false, 'wss to the untrusted server opened');
        assertEq(r.code, 1006, 'close code');
      });
    } else {
      skip('wss page checks', 'no TLS server');
    }

    await check('no uncaught errors in the page', async () => {
      assert(pageErrors.length === 0, pageErrors.join('; '));
    });
  } finally {
    await context.close().catch(() => {});
    await Promise.all(servers.map((s) => s.stop()));
    removeDir(work);
  }
}

let code = 1;
try {
  await main();
  code = summary('browser (Chromium)');
} catch (e) {
  console.log(`FAIL browser suite aborted: ${e && e.stack ? e.stack : e}`);
  summary('browser (Chromium)');
  code = 1;
}
process.exit(code);
