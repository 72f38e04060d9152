"""A TCP proxy that delays every byte by a fixed time, both ways: the testbed's link delay
(netem is not available on every kernel; this needs nothing but Python).

    python -m deploy.testbed.proxy --listen 10.77.0.11:7100 --connect 127.0.0.1:7100 --delay-ms 20

Data keep their order and are never merged across the delay, so a stream sees the delay
as latency, not as lost bandwidth; the link's bandwidth is the tbf qdisc's business.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

CHUNK = 256 * 1024


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((loop.time() + delay_s, data))
        finally:
            queue.put_nowait((loop.time() + delay_s, b""))  # end of stream, delayed too

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    finally:
        reading.cancel()


async def relay(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    target: tuple[str, int],
    delay_s: float,
) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()  # the service is down: refuse as it would
        return
    try:
        await asyncio.gather(pump(client_r, server_w, delay_s), pump(server_r, client_w, delay_s))
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (client_w, server_w):
            with contextlib.suppress(Exception):
                w.close()


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: relay(r, w, target, delay_s), *listen, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"proxy listening on {listen[0]}:{listen[1]} delay {delay_s * 1e3:g} ms", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m deploy.testbed.proxy", description=__doc__)
    ap.add_argument("--listen", type=host_port, required=True, help="HOST:PORT to accept on")
    ap.add_argument("--connect", type=host_port, required=True, help="HOST:PORT to relay to")
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay [ms]")
    args = ap.parse_args()
    asyncio.run(serve(args.listen, args.connect, args.delay_ms / 1e3))


if __name__ == "__main__":
    main()
