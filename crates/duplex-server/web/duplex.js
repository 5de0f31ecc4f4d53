/*
 * duplex.js — a small browser client for Duplex (served at /duplex.js).
 *
 * It speaks the Centrifugo client protocol v2 over WebSocket, as the npm
 * `centrifuge` SDK does (docs/protocol.md): in JSON (one command per line),
 * or with `protocol: 'protobuf'` in the Protobuf encoding (subprotocol
 * `centrifuge-protobuf`, length-delimited messages of `client.proto`) for
 * binary payloads. One file, no build step, no dependencies; a classic
 * script that sets the global `Duplex`.
 *
 *   <script src="/duplex.js"></script>
 *   const client = new Duplex.Client();   // ws(s)://<this host>/connection/websocket
 *   // or new Duplex.Client(url, { token, getToken, name, data, minReconnectDelay: 250,
 *   //   maxReconnectDelay: 10000, timeout: 10000, protocol: 'json' })  (url: ws(s)://… or a path on this host)
 *   const sub = client.newSubscription('room', { joinLeave: true });
 *   sub.on('publication', (p) => show(p.data));   // { channel, data, offset, info }
 *   sub.on('gap', () => reload());                // publications were lost (see below)
 *   sub.subscribe();
 *   client.connect();
 *   await sub.publish({ text: 'hi' });            // resolves {} once stored
 *   await sub.presence();                         // { CLIENT: { client, user, conn_info?, chan_info? } }
 *   await sub.presenceStats();                    // { numClients, numUsers }
 *   await sub.history({ limit: 50, reverse: true, since: { offset, epoch } });
 *                                                 // { publications, offset, epoch }
 *
 * Client events: `connecting` {code, reason}, `connected` {client, version},
 * `disconnected` {code, reason}, `error` {type, error}, and for server-side
 * subscriptions (the token's `channels`) `subscribed`, `publication`, `gap`.
 * Subscription events: `subscribing` {code, reason}, `subscribed` {channel,
 * recovered, wasRecovering, recoverable, position: {offset, epoch} | null,
 * hasRecoveredPublications}, `publication`, `join` / `leave` {channel, info},
 * `unsubscribed` {code, reason}, `error` {type, error}, and `gap` {channel,
 * from, position, epochChanged}: a resubscribe could not recover what was
 * missed (`recovered: false`) — reload what you show.
 *
 * Protobuf (`protocol: 'protobuf'`): publish a Uint8Array (or an
 * ArrayBuffer) to send bytes as they are; anything else is sent as its JSON
 * text, so JSON clients of the channel see it as JSON. Publications (and
 * history) carry `data` as a Uint8Array: the bytes published, or the UTF-8
 * of JSON published by JSON clients and the HTTP API
 * (`JSON.parse(new TextDecoder().decode(p.data))`); a JSON client gets a
 * binary publication's `data` as a Uint8Array too. `info.conn_info` and
 * `chan_info` are parsed as JSON, as in the JSON protocol. Everything else
 * (events, replies, recovery) is the same in both.
 *
 * Behaviour: anonymous unless `token` / `getToken` (called when there is no
 * token or the server says 109 "token expired", and before a token's ttl runs
 * out, to send `refresh`). Server pings `{}` are answered `{}`; with no ping
 * for `ping + 10 s` the socket is dropped. A dropped connection is retried
 * after a full-jitter exponential backoff (min 250 ms doubling to 10 s);
 * close codes 3500–3999 and 4500+ (and 1009) end in `disconnected`, others
 * reconnect. After a reconnect every subscription is sent again with
 * `recover: true, offset, epoch`: it gets exactly what it missed, or
 * `recovered: false` and a `gap` event. An `unsubscribe` push with code >= 2500
 * ("insufficient state") resubscribes the same way. Publications are
 * deduplicated by offset. Local codes: 0 connect()/disconnect()/subscribe()/
 * unsubscribe() called, 1 timeout, 2 no ping, 3 connection closed.
 */
(function (global) {
  'use strict';

  const VERSION = '1.0.0';
  const LOCAL = { called: 0, timeout: 1, noPing: 2, closed: 3 };

  class DuplexError extends Error {
    constructor(code, message, temporary) {
      super(message);
      this.name = 'DuplexError';
      this.code = code;
      this.temporary = !!temporary;
    }
  }
  const fromReply = (e) => new DuplexError(e.code, e.message || '', e.temporary);

  /** Full jitter: min + random(0, min * 2^step), at most max. */
  function backoff(step, min, max) {
    return Math.min(max, min + Math.floor(Math.random() * Math.min(max, min * Math.pow(2, Math.min(step, 31)))));
  }

  // ------------------------------------------------------------ Protobuf
  // A schema-driven codec for the few messages of client.proto the client
  // uses. Encoding schemas map a JSON name to [field number, type]; decoding
  // schemas map a field number to [JSON name, type], so decoded replies have
  // the JSON protocol's shape. Types: 'u' unsigned varint, 'i' int32, 'b'
  // bool, 's' string, 'y' bytes, 'j' bytes holding JSON, a schema (a nested
  // message), ['rep', schema], ['map', schema] (string keys).
  const utf8 = new TextEncoder();
  const fromUtf8 = new TextDecoder();
  const CH = { channel: [1, 's'] };
  const SUB = { channel: [1, 's'], token: [2, 's'], recover: [3, 'b'], epoch: [6, 's'], offset: [7, 'u'], data: [8, 'y'], join_leave: [11, 'b'] };
  const COMMAND = {
    id: [1, 'u'],
    connect: [4, { token: [1, 's'], data: [2, 'y'], subs: [3, ['map', SUB]], name: [4, 's'], version: [5, 's'] }],
    subscribe: [5, SUB],
    unsubscribe: [6, CH],
    publish: [7, { channel: [1, 's'], data: [2, 'y'] }],
    presence: [8, CH],
    presence_stats: [9, CH],
    history: [10, { channel: [1, 's'], limit: [7, 'i'], since: [8, { offset: [1, 'u'], epoch: [2, 's'] }], reverse: [9, 'b'] }],
    refresh: [14, { token: [1, 's'] }],
    sub_refresh: [15, { channel: [1, 's'], token: [2, 's'] }],
  };
  // (_d: defaults, for the JSON shape: user and client are always there.)
  const INFO = { 1: ['user', 's'], 2: ['client', 's'], 3: ['conn_info', 'j'], 4: ['chan_info', 'j'], _d: { user: '', client: '' } };
  const PUB = { 4: ['data', 'y'], 5: ['info', INFO], 6: ['offset', 'u'] };
  const SUBRES = {
    1: ['expires', 'b'], 2: ['ttl', 'u'], 3: ['recoverable', 'b'], 6: ['epoch', 's'], 7: ['publications', ['rep', PUB]],
    8: ['recovered', 'b'], 9: ['offset', 'u'], 10: ['positioned', 'b'], 12: ['was_recovering', 'b'],
  };
  const CONN = { 1: ['client', 's'], 2: ['version', 's'], 3: ['expires', 'b'], 4: ['ttl', 'u'] };
  const REPLY = {
    1: ['id', 'u'],
    2: ['error', { 1: ['code', 'u'], 2: ['message', 's'], 3: ['temporary', 'b'] }],
    4: ['push', {
      2: ['channel', 's'], 4: ['pub', PUB], 5: ['join', { 1: ['info', INFO] }], 6: ['leave', { 1: ['info', INFO] }],
      7: ['unsubscribe', { 2: ['code', 'u'], 3: ['reason', 's'] }], 11: ['disconnect', { 1: ['code', 'u'], 2: ['reason', 's'] }],
    }],
    5: ['connect', Object.assign({ 6: ['subs', ['map', SUBRES]], 7: ['ping', 'u'], 8: ['pong', 'b'] }, CONN)],
    6: ['subscribe', SUBRES],
    7: ['unsubscribe', {}],
    8: ['publish', {}],
    9: ['presence', { 1: ['presence', ['map', INFO]] }],
    10: ['presence_stats', { 1: ['num_clients', 'u'], 2: ['num_users', 'u'] }],
    11: ['history', { 1: ['publications', ['rep', PUB]], 2: ['epoch', 's'], 3: ['offset', 'u'] }],
    14: ['refresh', CONN],
    15: ['sub_refresh', { 1: ['expires', 'b'], 2: ['ttl', 'u'] }],
  };

  /** A payload as bytes: binary as it is, anything else as its JSON text. */
  function payload(v) {
    if (v instanceof Uint8Array) return v;
    if (v instanceof ArrayBuffer) return new Uint8Array(v);
    if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    return utf8.encode(JSON.stringify(v === undefined ? null : v));
  }

  function putVarint(out, n) {
    if (n < 0) { // int32 below zero: ten bytes of two's complement
      let b = BigInt.asUintN(64, BigInt(n));
      while (b >= 128n) { out.push(Number(b & 127n) | 128); b >>= 7n; }
      out.push(Number(b));
      return;
    }
    while (n >= 128) { out.push((n % 128) | 128); n = Math.floor(n / 128); }
    out.push(n);
  }

  function putBytes(out, bytes) {
    putVarint(out, bytes.length);
    for (let i = 0; i < bytes.length; i++) out.push(bytes[i]);
  }

  /** Appends message `m` (JSON names) per `schema` to `out` (an array of bytes). */
  function encodeMessage(out, m, schema) {
    for (const name in schema) {
      const v = m[name];
      if (v === undefined || v === null || v === '' || v === 0 || v === false) continue;
      const [field, type] = schema[name];
      if (type === 'u' || type === 'i' || type === 'b') {
        putVarint(out, field * 8);
        putVarint(out, type === 'b' ? 1 : Math.trunc(Number(v)));
      } else if (type === 's' || type === 'y') {
        const bytes = type === 's' ? utf8.encode(String(v)) : payload(v);
        if (!bytes.length) continue;
        putVarint(out, field * 8 + 2);
        putBytes(out, bytes);
      } else if (Array.isArray(type)) { // ['map', schema]
        for (const key in v) {
          const entry = [];
          encodeMessage(entry, { k: key, v: v[key] }, { k: [1, 's'], v: [2, type[1]] });
          putVarint(out, field * 8 + 2);
          putBytes(out, entry);
        }
      } else {
        const inner = [];
        encodeMessage(inner, v, type);
        putVarint(out, field * 8 + 2);
        putBytes(out, inner);
      }
    }
  }

  /** One command, length-delimited. */
  function encodeCommand(cmd) {
    const body = [];
    encodeMessage(body, cmd, COMMAND);
    const out = [];
    putBytes(out, body);
    return out;
  }

  function protoError(what) { return new Error('duplex.js: malformed Protobuf reply (' + what + ')'); }

  /** Decodes b[pos, end) per `schema` into an object with JSON names. */
  function decodeMessage(b, pos, end, schema) {
    const m = Object.assign({}, schema._d);
    const varint = () => {
      let n = 0;
      let mul = 1;
      for (;;) {
        if (pos >= end) throw protoError('truncated varint');
        const x = b[pos++];
        n += (x & 127) * mul;
        if (x < 128) return n;
        mul *= 128;
        if (mul > 2 ** 63) throw protoError('varint too long');
      }
    };
    while (pos < end) {
      const key = varint();
      const field = Math.floor(key / 8);
      const wire = key % 8;
      const spec = schema[field];
      if (wire === 0) {
        const v = varint();
        if (spec) m[spec[0]] = spec[1] === 'b' ? v !== 0 : v;
      } else if (wire === 2) {
        const len = varint();
        if (len > end - pos) throw protoError('length past the end');
        const a = pos;
        pos += len;
        if (!spec) continue;
        const [name, type] = spec;
        if (type === 's') m[name] = fromUtf8.decode(b.subarray(a, pos));
        else if (type === 'y') m[name] = b.slice(a, pos);
        else if (type === 'j') {
          const text = fromUtf8.decode(b.subarray(a, pos));
          try { m[name] = JSON.parse(text); } catch (e) { m[name] = b.slice(a, pos); }
        } else if (Array.isArray(type) && type[0] === 'rep') {
          (m[name] = m[name] || []).push(decodeMessage(b, a, pos, type[1]));
        } else if (Array.isArray(type)) { // map entry: key 1, value 2
          const e = decodeMessage(b, a, pos, { 1: ['k', 's'], 2: ['v', type[1]] });
          (m[name] = m[name] || {})[e.k || ''] = e.v || {};
        } else {
          m[name] = decodeMessage(b, a, pos, type);
        }
      } else if (wire === 1 || wire === 5) {
        pos += wire === 1 ? 8 : 4;
        if (pos > end) throw protoError('truncated fixed field');
      } else {
        throw protoError('wire type ' + wire);
      }
    }
    return m;
  }

  /** The replies of a binary frame, as JSON-shaped objects. */
  function decodeReplies(buf) {
    const b = new Uint8Array(buf);
    const out = [];
    let pos = 0;
    while (pos < b.length) {
      let len = 0;
      let mul = 1;
      for (;;) {
        if (pos >= b.length || mul > 2 ** 35) throw protoError('bad length prefix');
        const x = b[pos++];
        len += (x & 127) * mul;
        if (x < 128) break;
        mul *= 128;
      }
      if (len > b.length - pos) throw protoError('length past the end');
      out.push(decodeMessage(b, pos, pos + len, REPLY));
      pos += len;
    }
    return out;
  }

  const defaultUrl = () => (global.location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + global.location.host + '/connection/websocket';

  class Emitter {
    constructor() { this._handlers = {}; }
    on(ev, fn) { (this._handlers[ev] = this._handlers[ev] || []).push(fn); return this; }
    off(ev, fn) { this._handlers[ev] = fn ? (this._handlers[ev] || []).filter((h) => h !== fn) : []; return this; }
    _setState(state, ctx) { this.state = state; this._emit(state, ctx); }
    _emit(ev, ctx) {
      for (const fn of (this._handlers[ev] || []).slice()) {
        // A throwing handler is reported but does not break the client.
        try { fn(ctx); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }
  }

  class Client extends Emitter {
    constructor(url, options) {
      super();
      if (url && typeof url === 'object') { options = url; url = undefined; }
      if (typeof url === 'string' && url.charAt(0) === '/') url = defaultUrl().replace(/\/connection\/websocket$/, url);
      this.url = url || defaultUrl();
      this.options = Object.assign({
        token: '', getToken: null, name: 'duplex.js', data: undefined,
        minReconnectDelay: 250, maxReconnectDelay: 10000, timeout: 10000,
        maxServerPingDelay: 10000, websocket: null, protocol: 'json',
      }, options || {});
      this._pb = this.options.protocol === 'protobuf';
      this.state = 'disconnected';
      this.id = '';                 // the client id the server gave
      this._token = this.options.token || '';
      this._ws = null;
      this._nextId = 1;
      this._calls = new Map();      // id -> { method, resolve, reject, timer }
      this._subs = new Map();       // channel -> Subscription
      this._serverSubs = {};        // channel -> { offset, epoch, recoverable }
      this._attempts = 0;
      this._out = [];
      this._timers = {};
      this._pong = false;
      this._ping = 0;
      this._onOnline = () => {
        if (this.state === 'connecting' && !this._ws) { clearTimeout(this._timers.reconnect); this._open(); }
      };
      if (global.addEventListener) global.addEventListener('online', this._onOnline);
    }

    connect() {
      if (this.state !== 'disconnected') return;
      this._attempts = 0;
      this._setState('connecting', { code: LOCAL.called, reason: 'connect called' });
      this._open();
    }

    disconnect() { this._disconnect(LOCAL.called, 'disconnect called'); }
    getSubscription(channel) { return this._subs.get(channel) || null; }

    newSubscription(channel, options) {
      if (this._subs.has(channel)) throw new Error('duplex.js: already a subscription to ' + channel);
      const s = new Subscription(this, channel, options || {});
      this._subs.set(channel, s);
      return s;
    }

    removeSubscription(sub) {
      if (!sub) return;
      sub.unsubscribe();
      if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
    }

    async _open() {
      clearTimeout(this._timers.reconnect);
      if (!this._token && this.options.getToken) {
        try {
          this._token = (await this.options.getToken()) || '';
        } catch (e) {
          this._emit('error', { type: 'token', error: e });
          if (this.state === 'connecting') this._scheduleReconnect();
          return;
        }
        if (this.state !== 'connecting' || this._ws) return;
        if (!this._token) { this._disconnect(101, 'unauthorized'); return; }
      }
      const WS = this.options.websocket || global.WebSocket;
      let ws;
      try { ws = this._pb ? new WS(this.url, ['centrifuge-protobuf']) : new WS(this.url); } catch (e) {
        this._emit('error', { type: 'transport', error: e });
        this._scheduleReconnect();
        return;
      }
      this._ws = ws;
      if (this._pb) ws.binaryType = 'arraybuffer';
      ws.onopen = () => { if (ws === this._ws) this._sendConnect(); };
      ws.onmessage = (e) => this._onFrame(ws, e.data);
      ws.onclose = (e) => { if (ws === this._ws) this._closed(e.code || 1006, e.reason || 'connection closed'); };
      ws.onerror = () => {};
      this._timers.connect = setTimeout(() => this._drop(LOCAL.timeout, 'connect timeout'), this.options.timeout);
    }

    _sendConnect() {
      const p = { name: this.options.name, version: VERSION };
      if (this._token) p.token = this._token;
      if (this.options.data !== undefined) p.data = this.options.data;
      const subs = {};
      for (const ch in this._serverSubs) {
        const s = this._serverSubs[ch];
        if (s.recoverable) subs[ch] = { recover: true, offset: s.offset, epoch: s.epoch };
      }
      if (Object.keys(subs).length) p.subs = subs;
      this._call('connect', p).then((r) => this._connected(r), (e) => this._connectError(e));
    }

    _connected(r) {
      clearTimeout(this._timers.connect);
      this.id = r.client;
      this._attempts = 0;
      this._pong = !!r.pong;
      this._ping = r.ping || 0;
      this._watchPing();
      this._scheduleRefresh(r);
      this.state = 'connected';
      for (const s of this._subs.values()) if (s.state === 'subscribing') s._send();
      this._emit('connected', { client: r.client, version: r.version, transport: 'websocket' });
      for (const ch in r.subs || {}) {
        const x = r.subs[ch];
        const prev = this._serverSubs[ch];
        this._serverSubs[ch] = { offset: x.offset || 0, epoch: x.epoch || '', recoverable: !!x.recoverable };
        this._emit('subscribed', { channel: ch, recovered: !!x.recovered, wasRecovering: !!x.was_recovering, position: x.epoch ? { offset: x.offset || 0, epoch: x.epoch } : null });
        if (x.was_recovering && !x.recovered) this._emit('gap', { channel: ch, from: prev || null, position: this._serverSubs[ch] });
        for (const p of x.publications || []) this._emit('publication', pubCtx(ch, p));
      }
    }

    _connectError(e) {
      if (this.state !== 'connecting') return;
      this._emit('error', { type: 'connect', error: e });
      if (e.code === 109) this._token = '';
      if (e.code === LOCAL.closed) return; // the socket's close handles it
      if ((e.code === 109 && this.options.getToken) || e.code < 100 || e.temporary) this._drop(e.code, e.message);
      else this._disconnect(e.code, e.message);
    }

    /** Closes the current socket ourselves and handles it as a drop. */
    _drop(code, reason) {
      const ws = this._ws;
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(); } catch (e) { /* already closing */ }
      this._closed(code, reason);
    }

    _closed(code, reason) {
      this._ws = null;
      this._clearTimers();
      this._failCalls();
      const final = (code >= 3500 && code < 4000) || code >= 4500 || code === 1009;
      for (const s of this._subs.values()) s._connectionLost(code, reason);
      if (final) { this._disconnect(code, reason); return; }
      if (this.state === 'connected') this._setState('connecting', { code, reason });
      if (this.state === 'connecting') this._scheduleReconnect();
    }

    _disconnect(code, reason) {
      if (this.state === 'disconnected') return;
      const ws = this._ws;
      this._ws = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try { ws.close(1000, 'client disconnect'); } catch (e) { /* closing */ }
      }
      this._clearTimers();
      clearTimeout(this._timers.reconnect);
      this._failCalls();
      for (const s of this._subs.values()) s._connectionLost(code, reason);
      this._setState('disconnected', { code, reason });
      for (const s of this._subs.values()) s._settle(new DuplexError(LOCAL.closed, 'client disconnected'));
    }

    _scheduleReconnect() {
      clearTimeout(this._timers.reconnect);
      const o = this.options;
      const delay = backoff(this._attempts++, o.minReconnectDelay, o.maxReconnectDelay);
      this._timers.reconnect = setTimeout(() => { if (this.state === 'connecting' && !this._ws) this._open(); }, delay);
    }

    _scheduleRefresh(r) {
      clearTimeout(this._timers.refresh);
      if (!r.expires || !this.options.getToken) return;
      this._timers.refresh = setTimeout(async () => {
        try {
          this._token = (await this.options.getToken()) || '';
          if (this.state === 'connected' && this._token) this._scheduleRefresh(await this._call('refresh', { token: this._token }));
        } catch (e) { this._emit('error', { type: 'refresh', error: e }); }
      }, Math.min(r.ttl * 1000, 2147483647));
    }

    _watchPing() {
      clearTimeout(this._timers.ping);
      if (this._ping > 0) this._timers.ping = setTimeout(() => this._drop(LOCAL.noPing, 'no ping'), this._ping * 1000 + this.options.maxServerPingDelay);
    }

    _clearTimers() { for (const k of ['connect', 'ping', 'refresh']) clearTimeout(this._timers[k]); }

    _failCalls() {
      const calls = [...this._calls.values()];
      this._calls.clear();
      this._out = [];
      for (const c of calls) { clearTimeout(c.timer); c.reject(new DuplexError(LOCAL.closed, 'connection closed', true)); }
    }

    /** Sends one command on the open socket; resolves its reply's body. */
    _call(method, params) {
      return new Promise((resolve, reject) => {
        if (!this._ws || this._ws.readyState !== 1) { reject(new DuplexError(LOCAL.closed, 'not connected', true)); return; }
        const id = this._nextId++;
        const timer = setTimeout(() => {
          if (this._calls.delete(id)) reject(new DuplexError(LOCAL.timeout, method + ' timeout', true));
        }, this.options.timeout);
        this._calls.set(id, { method, resolve, reject, timer });
        const cmd = { id, [method]: params };
        this._line(this._pb ? encodeCommand(cmd) : JSON.stringify(cmd));
      });
    }

    /**
     * Queues a command (a JSON line, or the bytes of a length-delimited
     * Protobuf command); those queued in one task leave in one frame.
     */
    _line(line) {
      this._out.push(line);
      if (this._out.length > 1) return;
      Promise.resolve().then(() => {
        const lines = this._out;
        this._out = [];
        if (!this._ws || this._ws.readyState !== 1) return;
        for (let i = 0; i < lines.length; i += 100) {
          const batch = lines.slice(i, i + 100);
          this._ws.send(this._pb ? new Uint8Array([].concat(...batch)) : batch.join('\n'));
        }
      });
    }

    /** The server's ping: an empty reply, answered with an empty command. */
    _sendPong() { this._line(this._pb ? [0] : '{}'); }

    /** A frame's replies and pushes as objects (null: not a frame of our encoding). */
    _parse(data) {
      if (this._pb) {
        if (typeof data === 'string') return null;
        try { return decodeReplies(data); } catch (e) { this._emit('error', { type: 'protocol', error: e }); return []; }
      }
      if (typeof data !== 'string') return null;
      const out = [];
      for (const line of data.split('\n')) {
        if (!line.trim()) continue;
        try { out.push(JSON.parse(line)); } catch (e) { this._emit('error', { type: 'protocol', error: e }); }
      }
      return out;
    }

    _onFrame(ws, data) {
      if (ws !== this._ws) return;
      const replies = this._parse(data);
      if (!replies) return;
      this._watchPing();
      for (const m of replies) {
        if (ws !== this._ws) return; // a handler closed it
        if (m.id) {
          const c = this._calls.get(m.id);
          if (!c) continue;
          this._calls.delete(m.id);
          clearTimeout(c.timer);
          if (m.error) c.reject(fromReply(m.error)); else c.resolve(m[c.method] || {});
        } else if (m.push) {
          this._onPush(m.push);
        } else if (this._pong) {
          this._sendPong(); // the server's ping
        }
      }
    }

    _onPush(p) {
      const s = this._subs.get(p.channel);
      if (p.pub) {
        if (s) s._onPub(p.pub);
        else if (this._serverSubs[p.channel]) {
          const ss = this._serverSubs[p.channel];
          if (p.pub.offset) { if (p.pub.offset <= ss.offset) return; ss.offset = p.pub.offset; }
          this._emit('publication', pubCtx(p.channel, p.pub));
        }
      } else if (p.join || p.leave) {
        if (s && s.state === 'subscribed') s._emit(p.join ? 'join' : 'leave', { channel: p.channel, info: (p.join || p.leave).info });
      } else if (p.unsubscribe) {
        if (s) s._serverUnsubscribe(p.unsubscribe.code, p.unsubscribe.reason || '');
        else delete this._serverSubs[p.channel];
      } else if (p.disconnect) {
        const d = p.disconnect;
        this._drop(d.code, d.reason || '');
      }
    }
  }

  /** Bytes of base64 (a binary payload as the JSON protocol carries it). */
  function fromBase64(b64) {
    const s = global.atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  // A binary payload reaches JSON clients as `b64data` beside a null `data`.
  const pubCtx = (channel, p) => ({
    channel, data: typeof p.b64data === 'string' ? fromBase64(p.b64data) : p.data, offset: p.offset, info: p.info,
  });

  class Subscription extends Emitter {
    constructor(client, channel, options) {
      super();
      this.client = client;
      this.channel = channel;
      this.options = Object.assign({ joinLeave: false, token: '', data: undefined, since: null }, options);
      this.state = 'unsubscribed';
      this.offset = 0;
      this.epoch = '';
      this._recover = false;  // a position to recover from is known
      this._gen = 0;          // answers to older subscribe commands are ignored
      this._attempts = 0;
      this._waiters = [];
      if (this.options.since) {
        this.offset = this.options.since.offset || 0;
        this.epoch = this.options.since.epoch || '';
        this._recover = true;
      }
    }

    get position() { return this.epoch ? { offset: this.offset, epoch: this.epoch } : null; }

    subscribe() {
      if (this.state !== 'unsubscribed') return;
      this._setState('subscribing', { code: LOCAL.called, reason: 'subscribe called' });
      if (this.client.state === 'connected') this._send();
    }

    unsubscribe() {
      if (this.state === 'unsubscribed') return;
      const was = this.state;
      this._gen++;
      this._unsubscribed(LOCAL.called, 'unsubscribe called');
      if (was === 'subscribed' && this.client.state === 'connected') {
        this.client._call('unsubscribe', { channel: this.channel }).catch(() => {});
      }
    }

    publish(data) { return this._ready().then(() => this.client._call('publish', { channel: this.channel, data })); }

    presence() {
      return this._ready().then(() => this.client._call('presence', { channel: this.channel })).then((r) => r.presence || {});
    }

    presenceStats() {
      return this._ready().then(() => this.client._call('presence_stats', { channel: this.channel }))
        .then((r) => ({ numClients: r.num_clients || 0, numUsers: r.num_users || 0 }));
    }

    /** opts: { limit, since: { offset, epoch }, reverse }. */
    history(opts) {
      const p = Object.assign({ channel: this.channel }, opts || {});
      return this._ready().then(() => this.client._call('history', p)).then((r) => ({
        publications: (r.publications || []).map((x) => pubCtx(this.channel, x)), offset: r.offset || 0, epoch: r.epoch || '',
      }));
    }

    /** Resolves once subscribed (waits at most the client's timeout). */
    _ready() {
      if (this.state === 'subscribed' && this.client.state === 'connected') return Promise.resolve();
      if (this.state === 'unsubscribed') return Promise.reject(new DuplexError(LOCAL.closed, 'not subscribed'));
      return new Promise((resolve, reject) => {
        const w = { resolve, reject };
        w.timer = setTimeout(() => {
          this._waiters = this._waiters.filter((x) => x !== w);
          reject(new DuplexError(LOCAL.timeout, 'not subscribed in time', true));
        }, this.client.options.timeout);
        this._waiters.push(w);
      });
    }

    /** Settles what waits in _ready(): resolved, or rejected with err. */
    _settle(err) {
      const ws = this._waiters;
      this._waiters = [];
      for (const w of ws) { clearTimeout(w.timer); if (err) w.reject(err); else w.resolve(); }
    }

    _send() {
      const o = this.options;
      const p = { channel: this.channel };
      if (o.token) p.token = o.token;
      if (o.data !== undefined) p.data = o.data;
      if (o.joinLeave) p.join_leave = true;
      if (this._recover) { p.recover = true; p.offset = this.offset; p.epoch = this.epoch; }
      const gen = ++this._gen;
      clearTimeout(this._retry);
      this.client._call('subscribe', p).then((r) => this._subscribed(gen, r), (e) => this._subscribeError(gen, e));
    }

    _subscribed(gen, r) {
      if (gen !== this._gen || this.state !== 'subscribing') {
        // Unsubscribed meanwhile: the server has us anyway.
        if (this.state === 'unsubscribed') this.client._call('unsubscribe', { channel: this.channel }).catch(() => {});
        return;
      }
      this._attempts = 0;
      const from = this.position;
      const pubs = r.publications || [];
      if (r.epoch) { this.offset = r.offset || 0; this.epoch = r.epoch; }
      this._recover = !!r.recoverable && !!this.epoch;
      const wasRecovering = !!r.was_recovering;
      const recovered = !!r.recovered;
      this.state = 'subscribed';
      this._emit('subscribed', {
        channel: this.channel, recovered, wasRecovering, recoverable: !!r.recoverable,
        position: this.position, hasRecoveredPublications: pubs.length > 0,
      });
      if (wasRecovering && !recovered) {
        this._emit('gap', { channel: this.channel, from, position: this.position, epochChanged: !!from && from.epoch !== this.epoch });
      }
      // Recovered publications are at or below the reply's offset.
      for (const p of pubs) { if (gen === this._gen && this.state === 'subscribed') this._emit('publication', pubCtx(this.channel, p)); }
      if (this.state === 'subscribed') this._settle();
    }

    _subscribeError(gen, e) {
      if (gen !== this._gen || this.state !== 'subscribing') return;
      if (e.code === LOCAL.closed) return; // resent on the next connection
      this._emit('error', { type: 'subscribe', channel: this.channel, error: e });
      if (e.code < 100 || e.temporary) {
        const delay = backoff(this._attempts++, 500, this.client.options.maxReconnectDelay);
        this._retry = setTimeout(() => { if (this.state === 'subscribing' && this.client.state === 'connected') this._send(); }, delay);
      } else {
        this._unsubscribed(e.code, e.message);
      }
    }

    _onPub(p) {
      if (this.state !== 'subscribed') return;
      if (p.offset) {
        if (p.offset <= this.offset) return; // already seen
        this.offset = p.offset;
      }
      this._emit('publication', pubCtx(this.channel, p));
    }

    _serverUnsubscribe(code, reason) {
      if (this.state === 'unsubscribed') return;
      this._gen++;
      if (code < 2500) { this._unsubscribed(code, reason); return; }
      // Insufficient state: subscribe again at once, recovering.
      this._setState('subscribing', { code, reason });
      if (this.client.state === 'connected') this._send();
    }

    _connectionLost(code, reason) {
      this._gen++;
      clearTimeout(this._retry);
      if (this.state === 'subscribed') this._setState('subscribing', { code, reason });
    }

    _unsubscribed(code, reason) {
      clearTimeout(this._retry);
      this._setState('unsubscribed', { code, reason });
      this._settle(new DuplexError(code, 'unsubscribed: ' + reason));
    }
  }

  global.Duplex = { Client, Subscription, DuplexError, VERSION, backoff, proto: { encodeCommand, decodeReplies } };
})(typeof window !== 'undefined' ? window : globalThis);
