// Node `ws` broadcast on any path, permessage-deflate off: a message from
// one client goes to every other client, as the `ws` README's broadcast
// example does it — a loop over `wss.clients` and `ws.send` of one string
// serialised once.
// Usage: node broadcast.js [HOST:PORT]   (default 127.0.0.1:9001)
'use strict';
const { WebSocket } = require('ws');
const wss = require('./listen')('node-ws-broadcast');

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    const message = isBinary ? data : data.toString();
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(message, { binary: isBinary });
      }
    }
  });
  ws.on('error', () => {});
});
