"""Python `websockets` broadcast on any path, compression off: a message
from one client goes to every other client through `websockets.broadcast`
(asyncio implementation), as its documentation's broadcast example does.
Keepalive pings are off (the generator's plain subscribers do answer pings,
but a ping every 20 s is not what is measured).

Usage: python3 broadcast.py [HOST:PORT]   (default 127.0.0.1:9001)
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(ws):
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast((c for c in CLIENTS if c is not ws), message)
    finally:
        CLIENTS.discard(ws)


async def main():
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9001").rsplit(":", 1)
    async with serve(handler, host, int(port), compression=None, ping_interval=None,
                     max_size=64 * 1024 * 1024, backlog=4096) as server:
        print(f"python-websockets-broadcast listening on {host}:{port}", file=sys.stderr, flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
