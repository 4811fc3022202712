"""A fault-injecting TCP proxy between processes and Redis, for the chaos run.

Each route (one process, or a group of them) gets its own loopback port; every route forwards to
one upstream, the current Redis primary. `set_upstream` moves all routes to another primary and
drops their connections, as an HAProxy in front of Sentinel does on a failover. Per route:

- `cut`: every connection dropped (reset) and new ones refused until `heal`: a partition;
- `latency(s)`: every chunk delayed by `s` in each direction (a request/reply costs 2 s more);
- `hold(direction)`: one direction stops ("up": client to Redis, "down": Redis to client); its
  bytes wait in the proxy and go through on `heal`, as TCP delivers them after a one-way outage
  (dropping bytes inside a connection would desynchronise the protocol, which no network does);
- `heal`: all of the above off.

The proxy runs its own asyncio loop in a daemon thread; every method is called from other threads
and returns once the change is in effect.

    proxy = FaultProxy(("127.0.0.1", 6379)).start()
    url = proxy.add("worker-1")          # redis://127.0.0.1:<port>/0
    proxy.cut("worker-1"); ...; proxy.heal("worker-1")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

DIRECTIONS = ("up", "down")
CHUNK_BYTES = 65536
T = TypeVar("T")


@dataclass
class Route:
    name: str
    port: int = 0
    cut: bool = False
    latency_s: float = 0.0
    flowing: dict[str, asyncio.Event] = field(default_factory=dict)
    links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.routes: dict[str, Route] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def add(self, name: str) -> str:
        """A new route; returns the Redis URL a process should use to go through it."""
        async def listen() -> Route:
            route = Route(name, flowing={d: asyncio.Event() for d in DIRECTIONS})
            for event in route.flowing.values():
                event.set()
            route.server = await asyncio.start_server(
                lambda r, w: self._serve(route, r, w), "127.0.0.1", 0)
            route.port = route.server.sockets[0].getsockname()[1]
            return route

        route = self._run(listen)
        self.routes[name] = route
        return f"redis://127.0.0.1:{route.port}/0"

    # -- faults ------------------------------------------------------------------------------------
    def cut(self, name: str) -> None:
        def apply() -> None:
            route = self.routes[name]
            route.cut = True
            _drop(route)
        self._call(apply)

    def latency(self, name: str, seconds: float) -> None:
        self._call(lambda: setattr(self.routes[name], "latency_s", seconds))

    def hold(self, name: str, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")
        self._call(lambda: self.routes[name].flowing[direction].clear())

    def heal(self, name: str) -> None:
        def apply() -> None:
            route = self.routes[name]
            route.cut, route.latency_s = False, 0.0
            for event in route.flowing.values():
                event.set()
        self._call(apply)

    def set_upstream(self, upstream: tuple[str, int]) -> None:
        """Forward every route to `upstream` from now on; open connections are dropped."""
        def apply() -> None:
            self.upstream = upstream
            for route in self.routes.values():
                _drop(route)
        self._call(apply)

    def connections(self, name: str) -> int:
        return self._call(lambda: len(self.routes[name].links))

    def close(self) -> None:
        async def shut() -> None:
            for route in self.routes.values():
                _drop(route)
                if route.server:
                    route.server.close()
            # Connections still being served (one may be opening its upstream) end here, not when the
            # stopped loop's coroutines are collected ("Exception ignored in ... _serve").
            serving = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)
        if self._thread.is_alive():
            self._run(shut)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    # -- the loop ----------------------------------------------------------------------------------
    async def _serve(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if route.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:  # no primary there (down, or between failovers): the client sees a reset
            writer.transport.abort()
            return
        link = (writer, up_writer)
        route.links.add(link)
        pumps = [asyncio.ensure_future(self._pump(route, reader, up_writer, "up")),
                 asyncio.ensure_future(self._pump(route, up_reader, writer, "down"))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            route.links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pump(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                if route.latency_s:
                    await asyncio.sleep(route.latency_s)
                await route.flowing[direction].wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    def _call(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()
        return self._run(wrapped)

    def _run(self, coro_fn: Callable[[], object]) -> T:
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(timeout=10)  # type: ignore[arg-type]


def _drop(route: Route) -> None:
    for client, upstream in list(route.links):
        client.transport.abort()
        upstream.transport.abort()
    route.links.clear()
