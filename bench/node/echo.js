// Node `ws` echo on any path, permessage-deflate off.
// Usage: node echo.js [HOST:PORT]   (default 127.0.0.1:9001)
'use strict';
const wss = require('./listen')('node-ws-echo');

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
