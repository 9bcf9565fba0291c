"""What the sync and asyncio clients share: targets, credentials, requests and results."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union
from urllib.parse import urlparse

import grpc

from ._proto.swarm.v1 import swarm_pb2 as pb

#: A run spec: a dict in the spec format (docs/api.md; the CLI's YAML as JSON), a proto
#: ``RunSpec``, or YAML/JSON text.
Spec = Union[Mapping[str, Any], "pb.RunSpec", str]

STATES = {v: k.removeprefix("RUN_STATE_") for k, v in pb.RunState.items()}
SUBTASK_STATES = {v: k.removeprefix("SUBTASK_STATE_") for k, v in pb.SubtaskState.items()}
ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED"}
#: Largest message accepted (a run with many large outputs).
MAX_MESSAGE = 64 * 1024 * 1024
#: Largest SubmitRun message the coordinator decodes; a larger request is sent as
#: SubmitRunChunked, in chunks of CHUNK_BYTES (up to 256 MiB in all).
MAX_SUBMIT_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """Where a coordinator is and how to reach it."""

    address: str
    tls: bool

    @staticmethod
    def parse(url: str) -> "Target":
        if "://" not in url:
            url = "http://" + url
        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not a coordinator URL: {url!r} (http://HOST:PORT or https://HOST:PORT)")
        port = u.port or (443 if u.scheme == "https" else 7070)
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return Target(f"{host}:{port}", u.scheme == "https")


@dataclass(frozen=True)
class Credentials:
    """A bearer token and, for https, the CA and (for mTLS) a client certificate and key (PEM
    file paths)."""

    token: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token.strip()}")] if self.token else []


OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # HTTP/2 pings every 10 s (5 s to answer), also while only a watch is open: a link that
    # went silent (a partition, a frozen coordinator) fails and the watch resumes elsewhere.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def submit_request(spec: Spec, idempotency_key: str | None) -> pb.SubmitRunRequest:
    """A SubmitRun request: a proto spec as is; a dict or text as ``spec_text`` (the server
    parses it as the CLI does, so every problem comes back at once, with its field)."""
    req = pb.SubmitRunRequest(idempotency_key=idempotency_key or "")
    if isinstance(spec, pb.RunSpec):
        req.spec.CopyFrom(spec)
    elif isinstance(spec, str):
        req.spec_text = spec
    elif isinstance(spec, Mapping):
        req.spec_text = json.dumps(spec)
    else:
        raise TypeError(f"a spec is a dict, a swarm.v1.RunSpec or YAML/JSON text, not {type(spec).__name__}")
    return req


def submit_call(req: pb.SubmitRunRequest) -> tuple[str, Any]:
    """The method and request that submit ``req``: SubmitRun, or SubmitRunChunked with the
    request's encoding in chunks (a list, iterated afresh by each attempt) when it is over
    the message limit."""
    size = req.ByteSize()
    if size <= MAX_SUBMIT_BYTES - 1024:
        return "SubmitRun", req
    data = req.SerializeToString()
    chunks = [
        pb.SubmitRunChunk(data=data[i : i + CHUNK_BYTES], total_bytes=size if i == 0 else 0)
        for i in range(0, size, CHUNK_BYTES)
    ]
    return "SubmitRunChunked", chunks


def read_spec_file(path: str | os.PathLike[str]) -> str:
    """A spec file's text (YAML or JSON)."""
    return Path(path).read_text(encoding="utf-8")


def _ms(d: Any) -> float:
    return d.seconds * 1000.0 + d.nanos / 1e6


@dataclass
class RunResult:
    """A run as ``GetRun`` (or ``RunFinished``) reports it. ``raw`` is the proto ``Run``."""

    run_id: str
    name: str
    state: str
    total_subtasks: int
    tool_calls_completed: int
    tool_calls_failed: int
    tool_calls_skipped: int
    attempts: int
    wall_ms: float
    total_work_ms: float
    critical_path_ms: float
    critical_path: list[str]
    critical_steps: int
    total_steps: int
    parallelism: float
    tokens: int
    speculative_attempts: int
    error: str
    last_seq: int
    calls_reused: int = 0
    calls_made: int = 0
    spec_version: str = ""
    spec_hash: str = ""
    forked_from: str = ""
    subtasks: list[dict[str, Any]] = field(default_factory=list)
    raw: Any = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"

    @staticmethod
    def from_proto(run: pb.Run) -> "RunResult":
        s = run.summary
        return RunResult(
            run_id=run.run_id,
            name=run.name,
            state=STATES.get(run.state, "UNSPECIFIED"),
            total_subtasks=s.total_subtasks,
            tool_calls_completed=s.tool_calls_completed,
            tool_calls_failed=s.tool_calls_failed,
            tool_calls_skipped=s.tool_calls_skipped,
            attempts=s.attempts,
            wall_ms=_ms(s.wall_time),
            total_work_ms=_ms(s.total_work),
            critical_path_ms=_ms(s.critical_path_time),
            critical_path=list(s.critical_path),
            critical_steps=s.critical_steps,
            total_steps=s.total_steps,
            parallelism=s.parallelism,
            tokens=s.tokens,
            speculative_attempts=s.speculative_attempts,
            error=s.error_message,
            last_seq=run.last_seq,
            calls_reused=s.calls_reused,
            calls_made=s.calls_made,
            spec_version=run.spec_version,
            spec_hash=run.spec_hash,
            forked_from=run.forked_from_run,
            subtasks=[
                {
                    "id": t.id,
                    "state": SUBTASK_STATES.get(t.state, "UNSPECIFIED"),
                    "kind": t.kind,
                    "tool": t.tool,
                    "attempt": t.attempt,
                    "worker_id": t.worker_id,
                    "output": json.loads(t.output_json) if t.output_json else None,
                    "output_ref": t.output_ref,
                    "error": t.error_message,
                    "depends_on": list(t.depends_on),
                    "artifacts": [{"path": a.path, "size": a.size, "sha256": a.sha256} for a in t.artifacts],
                    "reused_from": t.reused_from,
                }
                for t in run.subtasks
            ],
            raw=run,
        )


def fork_request(
    run_id: str, from_subtask: str, patch: Any, step: int | None, idempotency_key: str | None
) -> pb.ForkRunRequest:
    """A ``ForkRunRequest``: ``patch`` is a dict (sent as JSON), YAML/JSON text or None."""
    text = "" if patch is None else patch if isinstance(patch, str) else json.dumps(patch)
    req = pb.ForkRunRequest(
        run_id=run_id, from_subtask=from_subtask, patch=text, idempotency_key=idempotency_key or ""
    )
    if step is not None:
        req.from_step = step
    return req


def signal_request(
    run_id: str, subtask_id: str, approve: bool, data: Any, reason: str
) -> pb.SignalRunRequest:
    return pb.SignalRunRequest(
        run_id=run_id,
        subtask_id=subtask_id,
        decision=pb.APPROVE if approve else pb.REJECT,
        payload_json="" if data is None else json.dumps(data),
        reason=reason,
    )


class Cursor:
    """Where a watcher is: the last durable event and the last partial output seen."""

    def __init__(self, after_seq: int) -> None:
        self.after_seq = after_seq
        self.output_epoch = 0
        self.after_output_seq = 0

    def request(self, run_id: str, follow_output: bool) -> pb.WatchRunRequest:
        return pb.WatchRunRequest(
            run_id=run_id,
            after_seq=self.after_seq,
            follow_output=follow_output,
            output_epoch=self.output_epoch,
            after_output_seq=self.after_output_seq,
        )

    def saw(self, ev: pb.RunEvent) -> bool:
        """Records an event; False when it is one already seen (never yield it twice)."""
        if ev.WhichOneof("event") == "agent_output":
            o = ev.agent_output
            if o.output_epoch == self.output_epoch and o.output_seq <= self.after_output_seq:
                return False
            self.output_epoch, self.after_output_seq = o.output_epoch, o.output_seq
            return True
        if ev.seq <= self.after_seq:
            return False
        self.after_seq = ev.seq
        return True


def backoff(attempt: int) -> float:
    """Seconds before reconnect ``attempt`` (from 0): 0.1 s doubling to 3 s, jittered."""
    return min(3.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2)


#: Reconnects in a row before a watcher gives up.
MAX_RECONNECTS = 30
