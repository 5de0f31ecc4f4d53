// Chromium half of the centrifuge suite (run from centrifuge.mjs, not alone):
// the SDK's own browser bundle (node_modules/centrifuge/dist/centrifuge.js,
// which sets globalThis.Centrifuge) in a page served by a tiny node:http server
// on 127.0.0.1:0, talking to `duplex serve --allow-origin <that page's origin>`
// with the browser's own WebSocket. Chromium is launched as browser.mjs does.

import { chromium } from 'playwright-core';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  apiOk, connToken, hubConfig, startHub, startProxy,
} from './centrifuge.mjs';
import { assert, assertEq, check, skip, launchChromium } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>centrifuge interop</title>
<script src="/centrifuge.js"></script></head>
<body><p>centrifuge-js against duplex</p></body></html>`;

// In-page helpers: clients and subscriptions live in the page, recorded in
// event logs; only plain results cross back to Node.
function installHelpers() {
  if (window.H) return;
  class Log {
    constructor() { this.items = []; this.waiters = new Set(); }
    push(x) { this.items.push(x); for (const w of [...this.waiters]) w(); }
    until(pred, ms, what) {
      return new Promise((resolve, reject) => {
        let timer;
        const done = () => { clearTimeout(timer); this.waiters.delete(probe); };
        const probe = () => { const v = pred(this.items); if (v) { done(); resolve(v); } };
        timer = setTimeout(() => {
          done();
          const evs = this.items.slice(-12).map((e) => e.ev + (e.ctx && e.ctx.code !== undefined ? '(' + e.ctx.code + ' ' + (e.ctx.reason || '') + ')' : '')).join(', ');
          reject(new Error(what + ': not seen within ' + ms + ' ms; events: ' + (evs || '(none)')));
        }, ms);
        this.waiters.add(probe);
        probe();
      });
    }
  }
  const plain = (x) => JSON.parse(JSON.stringify(x === undefined ? null : x));
  const H = { clients: {}, subs: {} };
  H.client = (name, url, opts) => {
    const c = new Centrifuge(url, opts || {});
    c.log = new Log();
    for (const ev of ['connecting', 'connected', 'disconnected', 'error', 'publication', 'subscribed']) {
      c.on(ev, (ctx) => c.log.push({ ev, ctx }));
    }
    H.clients[name] = c;
    c.connect();
    return true;
  };
  H.sub = (name, clientName, channel, opts) => {
    const s = H.clients[clientName].newSubscription(channel, opts || {});
    s.log = new Log();
    for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'error']) {
      s.on(ev, (ctx) => s.log.push({ ev, ctx }));
    }
    H.subs[name] = s;
    s.subscribe();
    return true;
  };
  const target = (kind, name) => (kind === 'client' ? H.clients[name] : H.subs[name]);
  H.wait = async (kind, name, ev, count, ms) => {
    const e = await target(kind, name).log.until((it) => it.filter((i) => i.ev === ev)[count - 1], ms, name + ': ' + ev + ' #' + count);
    return plain(e.ctx);
  };
  H.count = (kind, name, ev) => target(kind, name).log.items.filter((i) => i.ev === ev).length;
  H.pubs = (name) => plain(H.subs[name].log.items.filter((i) => i.ev === 'publication').map((i) => i.ctx));
  H.waitPubs = async (name, n, ms) => {
    await H.subs[name].log.until((it) => it.filter((i) => i.ev === 'publication').length >= n, ms, name + ': ' + n + ' publications');
    return H.pubs(name);
  };
  H.publishMany = (name, from, to) => {
    const s = H.subs[name];
    const ps = [];
    for (let n = from; n <= to; n++) ps.push(s.publish({ n, text: 'from the page ✓ ' + n }));
    return Promise.all(ps).then(() => true);
  };
  H.presence = async (name) => plain(await H.subs[name].presence());
  H.history = async (name, opts) => plain(await H.subs[name].history(opts));
  H.state = (name) => H.clients[name].state;
  H.closeAll = () => {
    for (const c of Object.values(H.clients)) c.disconnect();
    H.clients = {}; H.subs = {};
    return true;
  };
  window.H = H;
}

function seq(pubs) {
  return JSON.stringify(pubs.map((p) => p.data && p.data.n));
}

function range(a, b) {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

export async function browserChecks({ work, servers, proxies }) {
  if (!existsSync(CHROMIUM)) {
    skip('chromium checks', `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
    return;
  }
  const bundle = readFileSync(path.join(here, 'node_modules', 'centrifuge', 'dist', 'centrifuge.js'));
  const pageServer = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    if (p === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (p === '/centrifuge.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(bundle);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
  const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;

  let context;
  try {
    let hub;
    await check(`hub for the browser starts (--allow-origin ${pageOrigin})`, async () => {
      hub = await startHub(work, 'browser', hubConfig(), ['--allow-origin', pageOrigin]);
      servers.push(hub);
    });
    if (!hub) return;
    const proxy = await startProxy(hub.port);
    proxies.push(proxy);

    context = await launchChromium(chromium, path.join(work, 'chromium-profile'), CHROMIUM);
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(15000);
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    console.log(`chromium ${context.browser()?.version() ?? ''} (${CHROMIUM})`);

    const fresh = async () => {
      await page.goto(pageOrigin + '/', { waitUntil: 'load', timeout: 15000 });
      await page.evaluate(installHelpers);
    };
    const ev = (fn, arg) => page.evaluate(fn, arg);

    await check('chromium: the SDK bundle loads in the page (globalThis.Centrifuge)', async () => {
      await fresh();
      assertEq(await ev(() => typeof Centrifuge), 'function', 'typeof Centrifuge');
    });

    await check('chromium: two clients connect, subscribe, 20 publications from the page reach both in order', async () => {
      await fresh();
      const ch = `chat:browser-${Date.now()}`;
      const args = { url: hub.hubUrl, ch, ta: connToken('page-alice', { info: { in: 'browser' } }), tb: connToken('page-bob') };
      await ev(({ url, ch, ta, tb }) => {
        H.client('a', url, { token: ta });
        H.client('b', url, { token: tb });
        H.sub('sa', 'a', ch);
        H.sub('sb', 'b', ch);
      }, args);
      const [ca] = await Promise.all([
        ev(() => H.wait('client', 'a', 'connected', 1, 8000)),
        ev(() => H.wait('client', 'b', 'connected', 1, 8000)),
      ]);
      assert(ca.client, 'no client id');
      assertEq(ca.transport, 'websocket', 'transport');
      await ev(() => Promise.all([H.wait('sub', 'sa', 'subscribed', 1, 8000), H.wait('sub', 'sb', 'subscribed', 1, 8000)]));
      await ev(() => H.publishMany('sa', 1, 20));
      const [pa, pb] = await Promise.all([ev(() => H.waitPubs('sa', 20, 8000)), ev(() => H.waitPubs('sb', 20, 8000))]);
      assertEq(seq(pa), JSON.stringify(range(1, 20)), 'publisher sequence');
      assertEq(seq(pb), JSON.stringify(range(1, 20)), 'other client sequence');
      assertEq(pb[4].data.text, 'from the page ✓ 5', 'data');
      const pres = await ev(() => H.presence('sb'));
      assertEq(Object.keys(pres.clients).length, 2, 'presence clients');
      assertEq(JSON.stringify(pres.clients[ca.client].connInfo), JSON.stringify({ in: 'browser' }), 'connInfo');
      const hist = await ev(() => H.history('sa', { limit: 3, reverse: true }));
      assertEq(seq(hist.publications), '[20,19,18]', 'history reverse limit 3');
      // A publication from the HTTP API reaches the page too.
      await apiOk(hub, 'publish', { channel: ch, data: { n: 21 } });
      assertEq(seq(await ev(() => H.waitPubs('sb', 21, 8000))).endsWith(',20,21]'), true, 'API publication');
      await ev(() => H.closeAll());
    });

    await check('chromium: TCP drop through a proxy, 4 publications while down, recovered in order (wasRecovering, recovered)', async () => {
      await fresh();
      const ch = `chat:browser-recover-${Date.now()}`;
      await ev(({ url, ch, t }) => {
        H.client('r', url, { token: t, minReconnectDelay: 100, maxReconnectDelay: 400 });
        H.sub('sr', 'r', ch);
      }, { url: proxy.url(), ch, t: connToken('page-carol') });
      const s1 = await ev(() => H.wait('sub', 'sr', 'subscribed', 1, 8000));
      assertEq(s1.recoverable, true, 'recoverable');
      for (const n of [1, 2]) await apiOk(hub, 'publish', { channel: ch, data: { n } });
      await ev(() => H.waitPubs('sr', 2, 8000));
      proxy.block();
      proxy.cut();
      await ev(() => H.wait('client', 'r', 'connecting', 2, 8000));
      for (const n of [3, 4, 5, 6]) await apiOk(hub, 'publish', { channel: ch, data: { n } });
      proxy.unblock();
      const s2 = await ev(() => H.wait('sub', 'sr', 'subscribed', 2, 10000));
      assertEq(s2.wasRecovering, true, 'wasRecovering');
      assertEq(s2.recovered, true, 'recovered');
      await ev(() => H.waitPubs('sr', 6, 8000));
      await apiOk(hub, 'publish', { channel: ch, data: { n: 7 } });
      const pubs = await ev(() => H.waitPubs('sr', 7, 8000));
      assertEq(seq(pubs), JSON.stringify(range(1, 7)), 'sequence seen by the page');
      await ev(() => H.closeAll());
    });

    await check('chromium: a hub without --allow-origin for the page refuses it (client keeps connecting, never connected)', async () => {
      const strictHub = await startHub(work, 'browser-no-origin', hubConfig());
      servers.push(strictHub);
      await fresh();
      await ev(({ url, t }) => H.client('x', url, { token: t, minReconnectDelay: 100, maxReconnectDelay: 200 }), { url: strictHub.hubUrl, t: connToken('page-dave') });
      await ev(() => H.wait('client', 'x', 'error', 2, 8000));
      assertEq(await ev(() => H.count('client', 'x', 'connected')), 0, 'connected events');
      assertEq(await ev(() => H.state('x')), 'connecting', 'state');
      await ev(() => H.closeAll());
      await strictHub.stop();
    });

    await check('chromium: no uncaught errors in the page', async () => {
      assert(pageErrors.length === 0, pageErrors.join('; '));
    });
  } finally {
    if (context) await context.close().catch(() => {});
    await new Promise((r) => pageServer.close(() => r()));
  }
}
