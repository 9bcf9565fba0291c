"""What an integrator from another ecosystem relies on, checked with clients and servers no one
here wrote (issue 19): a Python gRPC client whose stubs are generated from proto/ by this test
set. The MCP points run against the reference MCP server (npm) and the OpenTelemetry points
against an OTLP receiver built on opentelemetry-proto, in the Rust suite: tests/it/mcp.rs
(`the_reference_servers_echo_never_shadows_the_built_in`,
`an_http_mcp_server_that_restarts_is_reached_again_at_once`) and tests/it/telemetry.rs."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid

import grpc
import pytest

from conftest import Cluster, Stubs


def tool(stubs: Stubs, sid: str, name: str, args: dict, after: list[str] | None = None):
    return stubs.pb.SubtaskSpec(
        id=sid, tool_call=stubs.pb.ToolCall(tool=name, args_json=json.dumps(args)), depends_on=after or []
    )


def spec(stubs: Stubs, name: str, subtasks: list) -> object:
    return stubs.pb.RunSpec(name=name, subtasks=subtasks)


def watch_all(stubs: Stubs, c, run_id: str, after_seq: int = 0, timeout: float = 60) -> list:
    return list(c.WatchRun(stubs.pb.WatchRunRequest(run_id=run_id, after_seq=after_seq), timeout=timeout))


def violations(stubs: Stubs, e: grpc.RpcError) -> list[tuple[str, str]]:
    raw = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no details on {e.code()}: {e.details()}"
    status = stubs.rpc.Status.FromString(raw)
    out = []
    for any_ in status.details:
        if any_.type_url.endswith("google.rpc.BadRequest"):
            bad = stubs.rpc.BadRequest.FromString(any_.value)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


# 1. WatchRun resumed at (or after) the end of an ended run closes at once.
def test_watch_resumed_at_the_end_of_an_ended_run_closes_at_once(stubs: Stubs, swarm_url: str) -> None:
    channel, c = stubs.client(swarm_url)
    with channel:
        s = spec(stubs, "ends", [tool(stubs, "a", "echo", {"text": "x"}), tool(stubs, "b", "echo", {"text": "y"}, ["a"])])
        run_id = c.SubmitRun(stubs.pb.SubmitRunRequest(spec=s), timeout=10).run_id
        events = watch_all(stubs, c, run_id)
        assert events[-1].WhichOneof("event") == "run_finished"
        last = c.GetRun(stubs.pb.GetRunRequest(run_id=run_id), timeout=10).run.last_seq
        assert last == events[-1].seq
        started = time.monotonic()
        # A deadline far above "at once": a hang fails as DEADLINE_EXCEEDED.
        assert watch_all(stubs, c, run_id, after_seq=last, timeout=10) == []
        assert watch_all(stubs, c, run_id, after_seq=last + 100, timeout=10) == []
        assert time.monotonic() - started < 5
        tail = watch_all(stubs, c, run_id, after_seq=last - 1, timeout=10)
        assert [e.seq for e in tail] == [last]


# 5. An idempotency key reused with another spec is refused, naming the run that holds it.
def test_a_reused_idempotency_key_with_another_spec_is_refused(stubs: Stubs, swarm_url: str) -> None:
    channel, c = stubs.client(swarm_url)
    with channel:
        key = f"conformance-{uuid.uuid4()}"
        first = spec(stubs, "keyed", [tool(stubs, "a", "echo", {"text": "one"})])
        run_id = c.SubmitRun(stubs.pb.SubmitRunRequest(spec=first, idempotency_key=key), timeout=10).run_id
        again = c.SubmitRun(stubs.pb.SubmitRunRequest(spec=first, idempotency_key=key), timeout=10)
        assert again.run_id == run_id
        other = spec(stubs, "keyed", [tool(stubs, "a", "echo", {"text": "two"})])
        with pytest.raises(grpc.RpcError) as e:
            c.SubmitRun(stubs.pb.SubmitRunRequest(spec=other, idempotency_key=key), timeout=10)
        assert e.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS)
        assert run_id in e.value.details()


# 6. Wire-level and structural problems in one answer; a page token never given is refused.
def test_every_problem_of_a_spec_at_once_and_a_forged_page_token(stubs: Stubs, swarm_url: str) -> None:
    channel, c = stubs.client(swarm_url)
    with channel:
        bad = spec(
            stubs,
            "bad",
            [
                stubs.pb.SubtaskSpec(id="a", depends_on=["b"]),  # no kind
                tool(stubs, "b", "echo", {}, ["a"]),
                stubs.pb.SubtaskSpec(id="c", tool_call=stubs.pb.ToolCall(tool="echo", args_json="{nope")),
                tool(stubs, "c", "echo", {}),
            ],
        )
        with pytest.raises(grpc.RpcError) as e:
            c.SubmitRun(stubs.pb.SubmitRunRequest(spec=bad), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [f for f, _ in violations(stubs, e.value)]
        assert "subtasks[0].kind" in fields, fields
        assert "subtasks[2].tool_call.args_json" in fields, fields
        assert "subtasks[3].id" in fields, fields
        assert "subtasks[0].depends_on" in fields, fields  # the cycle a → b → a
        with pytest.raises(grpc.RpcError) as e:
            c.ListRuns(stubs.pb.ListRunsRequest(page_token="garbage"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class Balancer:
    """A loopback TCP balancer over the coordinators (as a Kubernetes Service): each connection
    goes to the next backend that accepts it."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = [(h, int(p)) for h, p in (b.removeprefix("http://").rsplit(":", 1) for b in backends)]
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.next = 0
        self.counts = [0] * len(self.backends)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = None
            for _ in self.backends:
                i = self.next % len(self.backends)
                self.next += 1
                try:
                    up = socket.create_connection(self.backends[i], timeout=2)
                    up.settimeout(None)
                    self.counts[i] += 1
                    break
                except OSError:
                    continue
            if up is None:
                down.close()
                continue
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

    def close(self) -> None:
        self.listener.close()


# 7. Any coordinator serves the API, and a watch through a balancer survives the leader's death.
def test_any_coordinator_serves_and_a_watch_resumes_through_a_balancer(stubs: Stubs, cluster: Cluster) -> None:
    lb = Balancer([url for _, url in cluster.coordinators])
    try:
        # Every connection answers, wherever it lands.
        for _ in range(6):
            channel, c = stubs.client(lb.url)
            with channel:
                c.ListRuns(stubs.pb.ListRunsRequest(), timeout=10)
        assert all(n >= 3 for n in lb.counts), lb.counts
        # Sixty sleeps in six chains: about 3 s of run.
        subtasks = []
        for chain in range(6):
            for step in range(10):
                after = [f"c{chain}-{step - 1}"] if step else []
                subtasks.append(tool(stubs, f"c{chain}-{step}", "sleep", {"ms": 300}, after))
        channel, c = stubs.client(lb.url)
        with channel:
            run_id = c.SubmitRun(stubs.pb.SubmitRunRequest(spec=spec(stubs, "through-lb", subtasks)), timeout=10).run_id
        seen: list = []
        killed = False
        deadline = time.monotonic() + 120
        while not (seen and seen[-1].WhichOneof("event") == "run_finished"):
            assert time.monotonic() < deadline, cluster.logs()
            channel, c = stubs.client(lb.url)
            try:
                after = seen[-1].seq if seen else 0
                for event in c.WatchRun(stubs.pb.WatchRunRequest(run_id=run_id, after_seq=after), timeout=60):
                    seen.append(event)
                    succeeded = sum(e.WhichOneof("event") == "subtask_succeeded" for e in seen)
                    if not killed and succeeded >= 12:
                        leader = c.GetRun(stubs.pb.GetRunRequest(run_id=run_id), timeout=10)  # still answers
                        assert leader.run.run_id == run_id
                        for proc, _ in cluster.coordinators:
                            if leader_of(cluster) == proc:
                                proc.send_signal(signal.SIGKILL)
                                proc.wait()
                        killed = True
            except grpc.RpcError as e:
                # The stream broke with the leader (UNAVAILABLE, or the transport's own error)
                # or no leader is elected yet: resume after the last event seen.
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                    grpc.StatusCode.CANCELLED), e
                time.sleep(0.2)
            finally:
                channel.close()
        assert killed
        seqs = [e.seq for e in seen]
        assert seqs == list(range(1, len(seqs) + 1)), "no event missing or repeated"
        assert seen[-1].run_finished.state == stubs.pb.RUN_STATE_SUCCEEDED, cluster.logs()
    finally:
        lb.close()


def leader_of(cluster: Cluster):
    """The coordinator process that leads now (its log says it was elected and it still runs)."""
    for i, (proc, _) in enumerate(cluster.coordinators):
        log = (cluster.dir / f"coordinator-{i}.log").read_text(errors="replace")
        if proc.poll() is None and "elected leader" in log:
            return proc
    return None
