"""A loopback TCP proxy for tests that take a server away and bring it back.

    proxy = TcpProxy("127.0.0.1", 5432)       # listens on a free port of 127.0.0.1
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/db"
    proxy.cut()                               # every open connection closed, new ones refused
    proxy.restore()                           # accepting again, on the same port
    proxy.close()

It runs on threads of its own (one accepting, two per connection copying
bytes), not on the reactor: database drivers connect from worker threads, and
the test's reactor may be busy exactly when the proxy must answer.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable


class TcpProxy:
    """Forwards connections to 127.0.0.1:`port` on to `target`; `cut()` takes the target away."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.accepted = 0  # connections taken, over the proxy's life
        self.refused = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self._listen()

    # --- the switch -------------------------------------------------------------------

    def cut(self) -> None:
        """Close every open connection (both ends) and stop listening: new connections are refused."""
        with self._lock:
            self.refused = True
            listener, self._listener = self._listener, None
            sockets = list(self._open)
            self._open.clear()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            if self._closed or not self.refused:
                return
            self.refused = False
        self._listen()

    def close(self) -> None:
        """Cut, never to come back; wait for the proxy's threads."""
        with self._lock:
            self._closed = True
        self.cut()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    # --- threads ----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        with self._lock:
            self._listener = listener
        self._start(self._accept_loop, listener)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"tcp-proxy-{self.port}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener was closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self.refused:
                    _close(client)
                    _close(upstream)
                    continue
                self._open.update((client, upstream))
                self.accepted += 1
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        # One side finished: finish both, as a server that went away would.
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
