"""A small threaded TCP proxy on 127.0.0.1 for fault tests: put it between an edge and its broker.

    with TcpProxy(broker_port) as proxy:          # listens on proxy.port (a free port)
        ... point the edge at mqtt://127.0.0.1:{proxy.port} ...
        proxy.drop_all()        # close every connection (both sides see a reset/EOF)
        proxy.set_delay(0.2)    # forward each chunk 200 ms late, in order
        proxy.stall()           # stop forwarding without closing (a black hole); resume() undoes it

Two pump threads per connection copy bytes; a stalled pump holds the bytes it read until resumed
or dropped, so a stall looks to both ends like a silent network, not a closed socket.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._flowing = threading.Event()  # cleared while stalled
        self._flowing.set()
        self._closed = threading.Event()
        self.delay = 0.0
        self.accepted = 0  # connections accepted so far (reconnects show up here)
        self.refuse = False  # while set, new connections are closed at once
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True)

    # -- control --------------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def drop_all(self) -> int:
        """Close every open connection; returns how many pairs were cut."""
        with self._lock:
            doomed, self._sockets = self._sockets, []
        for sock in doomed:
            _close(sock)
        return len(doomed) // 2

    def set_delay(self, seconds: float) -> None:
        self.delay = max(0.0, seconds)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets) // 2

    def stop(self) -> None:
        self._closed.set()
        self._flowing.set()
        _close(self._listener)
        self.drop_all()
        self._acceptor.join(5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- pumps ----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst), name="tcp-proxy-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)  # a slow link, not synchronisation
                while not self._flowing.wait(0.1):
                    if self._closed.is_set() or not self._is_open(src):
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(src, dst)

    def _is_open(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._sockets

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets = [s for s in self._sockets if s not in socks]
        for sock in socks:
            _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
