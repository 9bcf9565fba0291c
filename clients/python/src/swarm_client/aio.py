"""The asyncio client: the same API as :class:`swarm_client.Client`, awaitable.

```python
from swarm_client.aio import Client
async with Client("http://127.0.0.1:7070") as client:
    run = await client.submit({"name": "x", "subtasks": [...]})
    async for event in run.events():
        ...
    summary = await run.wait(timeout=60)
```
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, AsyncIterator

import grpc
import grpc.aio

from . import _common as c
from ._proto.swarm.v1 import swarm_pb2 as pb
from ._proto.swarm.v1 import swarm_pb2_grpc as pb_grpc
from .errors import DeadlineExceeded, SwarmError, Unavailable, from_rpc_error

__all__ = ["Client", "Run"]

LEADER_HOPS = 3


class Client:
    """See :class:`swarm_client.Client`."""

    def __init__(
        self,
        target: str = "http://127.0.0.1:7070",
        token: str | None = None,
        *,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self._creds = c.Credentials(token, ca, cert, key)
        self._timeout = timeout
        self._open(target)

    def _open(self, target: str) -> None:
        t = c.Target.parse(target)
        if t.tls:
            self._channel = grpc.aio.secure_channel(t.address, self._creds.channel_credentials(), c.OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(t.address, c.OPTIONS)
        self._stub = pb_grpc.SwarmServiceStub(self._channel)
        self.target = target

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, collect: Any = None) -> Any:
        """``method`` at the leader (followed when a standby names it); ``collect`` reads a
        server stream's answer inside the same retry."""
        for _ in range(LEADER_HOPS + 1):
            try:
                # A list is a client stream's messages (SubmitRunChunked), sent afresh each try.
                sent = iter(request) if isinstance(request, list) else request
                answer = getattr(self._stub, method)(sent, timeout=self._timeout, metadata=self._creds.metadata())
                return await (collect(answer) if collect else answer)
            except grpc.aio.AioRpcError as e:
                err = from_rpc_error(e)
                if isinstance(err, Unavailable) and err.leader and err.leader != self.target:
                    await self.close()
                    self._open(err.leader)
                    continue
                raise err from None
        raise err

    async def submit(self, spec: c.Spec, idempotency_key: str | None = None) -> "Run":
        resp = await self._call(*c.submit_call(c.submit_request(spec, idempotency_key)))
        return Run(self, resp.run_id, created=resp.created)

    async def submit_file(self, path: str | os.PathLike[str], idempotency_key: str | None = None) -> "Run":
        return await self.submit(c.read_spec_file(path), idempotency_key)

    async def get(self, run_id: str, subtasks: bool = False) -> c.RunResult:
        token, pages = "", []
        while True:
            req = pb.GetRunRequest(run_id=run_id, include_subtasks=subtasks, page_token=token)
            resp = await self._call("GetRun", req)
            pages.append(resp.run)
            token = resp.next_page_token
            if not token:
                break
        run = pages[-1]
        if subtasks and len(pages) > 1:
            run = pb.Run()
            run.CopyFrom(pages[-1])
            del run.subtasks[:]
            for p in pages:
                run.subtasks.extend(p.subtasks)
        return c.RunResult.from_proto(run)

    async def list_runs(self, limit: int = 50) -> list[c.RunResult]:
        out: list[c.RunResult] = []
        token = ""
        while len(out) < limit:
            req = pb.ListRunsRequest(page_size=min(1000, limit - len(out)), page_token=token)
            resp = await self._call("ListRuns", req)
            out.extend(c.RunResult.from_proto(r) for r in resp.runs)
            token = resp.next_page_token
            if not token:
                break
        return out[:limit]

    async def cancel(self, run_id: str, reason: str = "") -> c.RunResult:
        resp = await self._call("CancelRun", pb.CancelRunRequest(run_id=run_id, reason=reason))
        return c.RunResult.from_proto(resp.run)

    async def fork(
        self,
        run_id: str,
        from_subtask: str,
        patch: Any = None,
        step: int | None = None,
        idempotency_key: str | None = None,
    ) -> "Run":
        """A new run from a recorded one: everything not downstream of ``from_subtask`` (nor
        changed by ``patch``, a partial spec merged by subtask id: a dict or YAML/JSON text) is
        reused, the rest runs again; ``step`` forks an agent at a turn of its transcript."""
        resp = await self._call("ForkRun", c.fork_request(run_id, from_subtask, patch, step, idempotency_key))
        return Run(self, resp.run_id, created=resp.created)

    async def transcript(self, run_id: str, subtask_id: str) -> dict[str, Any]:
        """An agent's recorded turns (``turns``) and its spec (``agent``)."""
        resp = await self._call("GetTranscript", pb.GetTranscriptRequest(run_id=run_id, subtask_id=subtask_id))
        return {"turns": json.loads(resp.turns_json or "[]"), "agent": json.loads(resp.agent_json or "null")}

    async def signal(
        self, run_id: str, subtask_id: str, approve: bool, data: Any = None, reason: str = ""
    ) -> pb.SignalRunResponse:
        return await self._call("SignalRun", c.signal_request(run_id, subtask_id, approve, data, reason))

    async def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """The files the run's subtasks handed on, each with ``subtask_id``, ``path``, ``size``
        and ``sha256``."""
        run = await self.get(run_id, subtasks=True)
        return [dict(a, subtask_id=t["id"]) for t in run.subtasks for a in t["artifacts"]]

    async def artifact(self, run_id: str, subtask_id: str, path: str) -> bytes:
        """The contents of one artifact (``NotFound`` names what is missing)."""
        request = pb.GetArtifactRequest(run_id=run_id, subtask_id=subtask_id, path=path)

        async def collect(stream: Any) -> bytes:
            return b"".join([chunk.data async for chunk in stream])

        return await self._call("GetArtifact", request, collect)

    async def workers(self) -> list[pb.WorkerInfo]:
        return list((await self._call("ListWorkers", pb.ListWorkersRequest())).workers)

    async def events(
        self, run_id: str, after_seq: int = 0, follow_output: bool = False, timeout: float | None = None
    ) -> AsyncIterator[pb.RunEvent]:
        cursor = c.Cursor(after_seq)
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                stream = self._stub.WatchRun(
                    cursor.request(run_id, follow_output), timeout=left, metadata=self._creds.metadata()
                )
                async for ev in stream:
                    failures = 0
                    if not cursor.saw(ev):
                        continue
                    yield ev
                    if ev.WhichOneof("event") == "run_finished":
                        return
            except grpc.aio.AioRpcError as e:
                err = from_rpc_error(e)
                if isinstance(err, DeadlineExceeded) and deadline is not None:
                    raise TimeoutError(f"run {run_id} did not end within {timeout} s") from None
                if not isinstance(err, Unavailable):
                    raise err from None
                if err.leader and err.leader != self.target:
                    await self.close()
                    self._open(err.leader)
                    continue
            if failures >= c.MAX_RECONNECTS:
                raise SwarmError(grpc.StatusCode.UNAVAILABLE, f"the event stream of {run_id} keeps breaking")
            await asyncio.sleep(c.backoff(failures))
            failures += 1


class Run:
    """A submitted run."""

    def __init__(self, client: Client, run_id: str, created: bool = True) -> None:
        self.client = client
        self.run_id = run_id
        self.created = created

    def __repr__(self) -> str:
        return f"Run({self.run_id!r})"

    def events(self, after_seq: int = 0, follow_output: bool = False) -> AsyncIterator[pb.RunEvent]:
        return self.client.events(self.run_id, after_seq, follow_output)

    async def wait(self, timeout: float | None = None) -> c.RunResult:
        async for _ in self.client.events(self.run_id, timeout=timeout):
            pass
        return await self.client.get(self.run_id)

    async def get(self, subtasks: bool = False) -> c.RunResult:
        return await self.client.get(self.run_id, subtasks)

    async def cancel(self, reason: str = "") -> c.RunResult:
        return await self.client.cancel(self.run_id, reason)
