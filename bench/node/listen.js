// The `ws` server every Node peer runs: on any path, at HOST:PORT from the
// first argument (default 127.0.0.1:9001), permessage-deflate off.
'use strict';
const { WebSocketServer } = require('ws');

module.exports = function listen(name) {
  const [host, port] = (process.argv[2] || '127.0.0.1:9001').split(':');
  const wss = new WebSocketServer({
    host,
    port: Number(port),
    perMessageDeflate: false,
    maxPayload: 64 * 1024 * 1024,
  });
  wss.on('listening', () => console.error(`${name} listening on ${host}:${port}`));
  return wss;
};
