// uWebSockets (uWS.js: uWebSockets' C++ server and event loop, with the
// message handler in JavaScript) echo on any path, compression off.
// Usage: node uws-echo.js [HOST:PORT]   (default 127.0.0.1:9001)
'use strict';
const uWS = require('@trufflesuite/uws-js-unofficial');

const [host, port] = (process.argv[2] || '127.0.0.1:9001').split(':');
uWS.App()
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .listen(host, Number(port), (token) => {
    if (!token) {
      console.error(`uws-echo: cannot listen on ${host}:${port}`);
      process.exit(1);
    }
    console.error(`uws-echo listening on ${host}:${port}`);
  });
