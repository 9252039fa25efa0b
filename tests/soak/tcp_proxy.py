"""A small loopback TCP proxy in front of PostgreSQL that can add latency, drop or reset connections.

It listens on 127.0.0.1 and forwards to PostgreSQL's unix socket (pgserver
listens on no TCP port), one pair of threads per connection.
"""

from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    def __init__(self, unix_socket: str):
        self.target = unix_socket
        self.latency_s = 0.0
        self.refuse = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._cut: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.latency_s:
                    time.sleep(self.latency_s)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):  # shutdown first: close alone leaves a socket another thread reads
                try:
                    end.shutdown(socket.SHUT_RD if end in self._cut else socket.SHUT_RDWR)  # a cut one: no FIN
                except OSError:
                    pass
                end.close()

    def reset_all(self) -> None:
        """Cut every open connection: the clients see a reset, PostgreSQL sees its client go.

        close() alone does not wake a pump thread blocked in recv() on the socket, so the
        unix socket to PostgreSQL would stay open and its session (with any locks it holds)
        would live on. Shutting the read side down first wakes the thread; the zero linger
        makes the TCP close a reset.
        """
        with self._lock:
            connections, self._connections = self._connections, []
            self._cut.update(c for c in connections if c.family == socket.AF_INET)
        for connection in connections:
            try:
                if connection.family == socket.AF_INET:
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    connection.shutdown(socket.SHUT_RD)
                else:
                    connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self.reset_all()
