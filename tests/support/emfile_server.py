"""A Listener serving /healthz with almost no file descriptors left, to meet EMFILE.

`python -m tests.support.emfile_server FREE SECONDS` listens on a free loopback port,
lowers its open-files limit to FREE above what it holds, prints the port, serves for
SECONDS and exits. The connection limit is deliberately not fitted to the fd limit (as if
something else in the process had used the descriptors), so accept() meets EMFILE."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys

from aiohttp import web

from exporter.logs import setup_logging
from exporter.web.listener import Listener, ListenLimits, track_requests


async def serve(free: int, seconds: float) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(middlewares=[track_requests])
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = Listener(runner, ListenLimits(max_connections=1000), fd_limit=1 << 20)
    await listener.start("127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    held = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (held + free, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    print(port, flush=True)
    await asyncio.sleep(seconds)
    await listener.stop()
    await runner.cleanup()


def main(argv: list[str]) -> int:
    setup_logging("info", "logfmt")
    logging.getLogger("asyncio").setLevel(logging.INFO)
    asyncio.run(serve(int(argv[0]), float(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
