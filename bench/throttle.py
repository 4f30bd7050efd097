#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that lets each connection's answers through at
most RATE bytes a second: an upstream registry as far away as a real one
(Docker Hub gives a client tens of MB/s), for bench/proxy.sh.

    throttle.py LISTEN_PORT TARGET_HOST:PORT RATE_BYTES_PER_S
Prints the port it listens on (LISTEN_PORT 0: any free one) and serves until killed.
"""
import asyncio
import sys
import time

listen_port, target, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
target_host, target_port = target.rsplit(":", 1)
CHUNK = 64 * 1024


async def pipe(reader, writer, limit):
    start, sent = time.monotonic(), 0
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if limit:
                ahead = sent / limit - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(target_host, int(target_port))
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, up_writer, 0), pipe(up_reader, client_writer, rate))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
