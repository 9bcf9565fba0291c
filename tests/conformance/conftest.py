"""Fixtures of the conformance set: gRPC stubs generated from proto/ here (grpcio-tools, as an
integrator would), a real `swarm up`, and a two-coordinator cluster on a real etcd, every process
on free loopback ports and stopped by its PID."""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from types import ModuleType
from typing import Iterator

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def swarm_bin() -> str:
    return os.environ.get("SWARM_BIN") or str(ROOT / "target" / "debug" / "swarm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stubs:
    """The generated modules: `pb` (swarm.v1 messages), `grpc` (its service stubs), `rpc` (the
    google.rpc error details, wire-compatible)."""

    def __init__(self, pb: ModuleType, grpc_mod: ModuleType, rpc: ModuleType) -> None:
        self.pb, self.grpc, self.rpc = pb, grpc_mod, rpc

    def client(self, url: str):
        # A channel of its own per client (grpcio shares connections between channels by default).
        channel = grpc.insecure_channel(url.removeprefix("http://"), options=[("grpc.use_local_subchannel_pool", 1)])
        return channel, self.grpc.SwarmServiceStub(channel)


@pytest.fixture(scope="session")
def stubs() -> Iterator[Stubs]:
    out = pathlib.Path(tempfile.mkdtemp(prefix="swarm-conformance-"))
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{ROOT / 'clients' / 'python' / 'proto'}",
        f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(ROOT / "proto" / "swarm" / "v1" / "swarm.proto"),
        str(ROOT / "clients" / "python" / "proto" / "rpc" / "details.proto"),
    ]
    assert protoc.main(args) == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        yield Stubs(
            importlib.import_module("swarm.v1.swarm_pb2"),
            importlib.import_module("swarm.v1.swarm_pb2_grpc"),
            importlib.import_module("rpc.details_pb2"),
        )
    finally:
        sys.path.remove(str(out))
        shutil.rmtree(out, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_serving(stubs: Stubs, url: str, procs: list[subprocess.Popen[bytes]], workers: int) -> None:
    channel, c = stubs.client(url)
    deadline = time.monotonic() + 60
    try:
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a process exited: {p.args}")
            try:
                if len(c.ListWorkers(stubs.pb.ListWorkersRequest(), timeout=2).workers) >= workers:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not serve within 60 s")
            time.sleep(0.1)
    finally:
        channel.close()


@pytest.fixture(scope="session")
def swarm_url(stubs: Stubs) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [swarm_bin(), "up", "--listen", f"127.0.0.1:{port}", "--workers", "1", "--slots", "8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_serving(stubs, url, [proc], 1)
        yield url
    finally:
        stop(proc)


class Cluster:
    """etcd, two `swarm coordinator`s and one `swarm worker`."""

    def __init__(self, stubs: Stubs) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="swarm-conformance-cluster-"))
        etcd = shutil.which("etcd") or "/usr/bin/etcd"
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self.etcd = subprocess.Popen(
            [etcd, "--name", "c0", "--data-dir", str(self.dir / "etcd"),
             "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"c0=http://127.0.0.1:{peer}", "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.coordinators: list[tuple[subprocess.Popen[bytes], str]] = []
        self.worker: subprocess.Popen[bytes] | None = None
        common = ["--etcd", self.etcd_url, "--lease-ttl", "2s", "--payloads", str(self.dir / "payloads")]
        for i in range(2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = open(self.dir / f"coordinator-{i}.log", "wb")
            proc = subprocess.Popen(
                [swarm_bin(), "coordinator", "--listen", f"127.0.0.1:{port}", "--advertise", url, *common],
                stdout=log,
                stderr=log,
            )
            self.coordinators.append((proc, url))
            if i == 0:
                wait_serving(stubs, url, [self.etcd, proc], 0)
        self.worker = subprocess.Popen(
            [swarm_bin(), "worker", "--id", "w0", "--slots", "16", "--etcd", self.etcd_url,
             "--lease-ttl", "2s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _, url in self.coordinators:
            wait_serving(stubs, url, [self.etcd, self.worker], 1)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.dir.glob("*.log")))

    def close(self) -> None:
        procs = [p for p, _ in self.coordinators] + ([self.worker] if self.worker else []) + [self.etcd]
        for p in procs:
            stop(p)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster(stubs: Stubs) -> Iterator[Cluster]:
    c = Cluster(stubs)
    try:
        yield c
    finally:
        c.close()
