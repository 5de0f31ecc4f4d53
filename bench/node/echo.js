// Node `ws` echo on any path, permessage-deflate off.
// Usage: node echo.js [HOST:PORT]   (default 127.0.0.1:9001)
'use strict';
const { WebSocketServer } = require('ws');

const [host, port] = (process.argv[2] || '127.0.0.1:9001').split(':');
const wss = new WebSocketServer({
  host,
  port: Number(port),
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => console.error(`node-ws-echo listening on ${host}:${port}`));
