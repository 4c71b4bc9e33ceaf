"""The asyncio API: a replica and its orders from a coroutine, in aiomqtt's idiom.

    import asyncio
    from fastbook.aio import Edge

    async def main() -> None:
        async with Edge("bob", broker="mqtt://127.0.0.1:1883") as edge:
            await edge.wait_synced(timeout=10)
            fills = edge.fills()  # from now on: ask before submitting, to miss none
            report = await edge.submit(side="buy", type="market", qty="0.5")
            async for fill in fills:
                print(fill["qty"], "@", fill["price"], fill["liquidity"])
                break

    asyncio.run(main())

It is the same runtime as the thread API, not a second one: an `fastbook.edge.client.Edge` (its
EdgeNode replica on a NodeRunner thread, resends included) with its answers and events handed to
the event loop through `loop.call_soon_threadsafe` and `asyncio.wrap_future`. Nothing here blocks
the loop: reads of the replica are calls on the runner thread awaited as futures, and leaving the
`async with` joins that thread in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastbook.edge import client
from fastbook.transport.config import DEFAULT_BROKER

T = TypeVar("T")
WAKE_FALLBACK = 1.0  # seconds: wait_synced looks again this often even without an event
_CLOSED = object()


class Stream:
    """An async iterator over one kind of event, from its first request on (see Edge.fills); it
    ends when the Edge closes. Unbounded: a reader that stops reading keeps every event."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # every later reader ends too
            raise StopAsyncIteration
        return dict(item)

    def qsize(self) -> int:
        return self._queue.qsize()


class Edge:
    """`async with Edge(client_id, broker=..., market=..., **options) as edge`; `options` are those
    of fastbook.edge.client.Edge (username, password, tls_ca, retry_after, ...)."""

    def __init__(self, client_id: str, broker: str = DEFAULT_BROKER, market: str = "BTC-USD",
                 **options: Any) -> None:
        self.client_id = client_id
        self._args = (client_id, broker, market)
        self._options = options
        self._edge: client.Edge | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, Stream] = {}
        self._waiters: set[asyncio.Event] = set()

    # ---- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Edge:
        if self._edge is not None:
            raise RuntimeError("this Edge is already open")
        self._loop = asyncio.get_running_loop()
        edge = client.Edge(*self._args, **self._options)  # bad arguments raise here, as in the thread API
        edge.add_listener(self._on_event)
        self._edge = edge.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        edge, self._edge = self._edge, None
        if edge is None:
            return
        await asyncio.to_thread(edge.close)  # joins the runner thread: never on the loop
        for stream in self._streams.values():
            stream._queue.put_nowait(_CLOSED)
        self._wake()

    @property
    def sync(self) -> client.Edge:
        """The thread API's Edge underneath (its replica, its runner)."""
        if self._edge is None:
            raise RuntimeError("use the Edge inside `async with Edge(...) as edge:`")
        return self._edge

    # ---- orders ---------------------------------------------------------------------------------

    async def submit(self, order: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Send one order (wire contract, or keyword fields: "op" defaults to "new", the client
        order id is assigned) and return its answer: the accepted/amended/cancelled/cancelled_all
        or rejected report. The edge resends until answered (same id, executed once) and raises
        TimeoutError after its last attempt. Cancelling the await does not withdraw the order."""
        return await asyncio.wrap_future(self.sync.submit(order, **fields))

    # ---- events ---------------------------------------------------------------------------------

    def fills(self) -> Stream:
        """This client's fills (its "trade" reports: qty, price, side, liquidity, remaining) from
        the first call on; every call returns the same stream (one reader takes each fill)."""
        return self._stream("fills")

    def reports(self) -> Stream:
        """Every report of this client (answers, fills, cancels, done) from the first call on."""
        return self._stream("reports")

    def trades(self) -> Stream:
        """The market's public trades from the first call on."""
        return self._stream("trades")

    def _stream(self, name: str) -> Stream:
        if self._edge is None:
            raise RuntimeError("use the Edge inside `async with Edge(...) as edge:`")
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream()
        return stream

    # ---- the replica ----------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        """fn() on the runner thread, awaited without blocking the loop."""
        return await asyncio.wrap_future(self.sync.runner.call_with_result(lambda: (fn(), [])))

    async def state(self) -> tuple[int, int, bool, int]:
        """(version, state_hash, in_sync, lag) at one instant."""
        node = self.sync.node
        return await self._call(lambda: (node.version, node.state_hash, node.in_sync, node.lag))

    async def depth(self, levels: int = 10) -> dict[str, Any]:
        node = self.sync.node
        return await self._call(lambda: node.depth(levels))

    async def own_orders(self) -> list[dict[str, Any]]:
        node = self.sync.node
        return await self._call(node.own_orders)

    async def wait_synced(self, version: int | None = None, timeout: float | None = None) -> int:
        """Wait until the replica follows the log (and is at `version` or later, if given);
        returns its version. TimeoutError after `timeout` seconds; RuntimeError if the runner
        stopped on an error."""
        return await asyncio.wait_for(self._synced(version), timeout)

    async def _synced(self, version: int | None) -> int:
        edge = self.sync
        node = edge.node
        while True:
            changed = asyncio.Event()
            self._waiters.add(changed)  # before reading: an event after the read wakes us
            try:
                now, in_sync, once = await self._call(lambda: (node.version, node.in_sync, node.synced_once))
                if in_sync and once and (version is None or now >= version):
                    return now
                if edge.runner.error is not None:
                    raise RuntimeError(f"the edge stopped: {edge.runner.error}")
                try:
                    await asyncio.wait_for(changed.wait(), WAKE_FALLBACK)
                except asyncio.TimeoutError:
                    pass
            finally:
                self._waiters.discard(changed)

    # ---- from the runner thread -----------------------------------------------------------------

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        """On the runner thread: hand the event to the loop, never block, never raise."""
        loop = self._loop
        if loop is None:
            return
        streams = self._streams
        targets = []
        if kind == "report":
            if "reports" in streams:
                targets.append(streams["reports"])
            if data.get("type") == "trade" and "fills" in streams:
                targets.append(streams["fills"])
        elif kind == "trade" and "trades" in streams:
            targets.append(streams["trades"])
        try:
            for stream in targets:
                loop.call_soon_threadsafe(stream._queue.put_nowait, dict(data))
            if self._waiters:
                loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _wake(self) -> None:
        for event in list(self._waiters):
            event.set()
