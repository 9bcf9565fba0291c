"""A real `swarm up` per test session (a free loopback port; stopped by its PID), and a TCP
proxy that can cut every connection through it."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import threading
import time
from typing import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def swarm_bin() -> str:
    return os.environ.get("SWARM_BIN") or str(ROOT / "target" / "debug" / "swarm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_swarm(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [swarm_bin(), "up", "--listen", f"127.0.0.1:{port}", "--workers", "2", "--slots", "8", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    from swarm_client import Client

    deadline = time.monotonic() + 60
    with Client(url, timeout=2) as c:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"swarm up exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if len(c.workers()) == 2:
                    return proc, url
            except Exception:
                pass
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("swarm up did not serve within 60 s")
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def swarm_url() -> Iterator[str]:
    proc, url = start_swarm()
    try:
        yield url
    finally:
        stop(proc)


class Proxy:
    """Forwards 127.0.0.1:port to the coordinator; `cut()` drops every open connection (the
    client sees its stream break, as with a network fault), new ones are still accepted."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            socks, self.open = self.open, []
            self.cuts += 1
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(swarm_url: str) -> Iterator[Proxy]:
    p = Proxy(swarm_url)
    try:
        yield p
    finally:
        p.close()
