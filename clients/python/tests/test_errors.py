"""Error details decoded from what the coordinator sends (no server needed)."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
import grpc

from swarm_client._common import Cursor, Target
from swarm_client._proto.rpc import details_pb2
from swarm_client._proto.swarm.v1 import swarm_pb2 as pb
from swarm_client.errors import InvalidSpec, ResourceExhausted, SwarmError, Unavailable, from_status


def trailer(*details) -> list[tuple[str, bytes]]:
    status = details_pb2.Status(code=3, message="m")
    for d in details:
        a = any_pb2.Any(type_url="type.googleapis.com/google.rpc." + d.DESCRIPTOR.name, value=d.SerializeToString())
        status.details.append(a)
    return [("grpc-status-details-bin", status.SerializeToString())]


def test_violations_retry_info_and_the_leader_hint_are_read() -> None:
    bad = details_pb2.BadRequest(
        field_violations=[
            details_pb2.BadRequest.FieldViolation(field="subtasks[1].depends_on", description="cycle: a → b → a"),
            details_pb2.BadRequest.FieldViolation(field="name", description="required"),
        ]
    )
    e = from_status(grpc.StatusCode.INVALID_ARGUMENT, "invalid", trailer(bad))
    assert isinstance(e, InvalidSpec)
    assert e.violations == [("subtasks[1].depends_on", "cycle: a → b → a"), ("name", "required")]
    retry = details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))
    e = from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailer(retry))
    assert isinstance(e, ResourceExhausted) and e.retry_after.total_seconds() == 2.5
    info = details_pb2.ErrorInfo(reason="NOT_LEADER", metadata={"leader": "http://10.0.0.2:7070"})
    e = from_status(grpc.StatusCode.UNAVAILABLE, "not the leader", trailer(info, retry))
    assert isinstance(e, Unavailable) and e.leader == "http://10.0.0.2:7070"


def test_a_broken_or_hostile_trailer_is_no_details_not_a_crash() -> None:
    for trailers in (None, [], [("grpc-status-details-bin", b"\xff\xfe garbage")], [("other", "x")]):
        e = from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", trailers)
        assert isinstance(e, InvalidSpec) and e.violations == []
    e = from_status(grpc.StatusCode.INTERNAL, "boom", None)
    assert type(e) is SwarmError and e.code == grpc.StatusCode.INTERNAL


def test_targets_and_the_watch_cursor() -> None:
    assert Target.parse("http://127.0.0.1:7070") == Target("127.0.0.1:7070", False)
    assert Target.parse("https://swarm.example") == Target("swarm.example:443", True)
    assert Target.parse("[::1]:9000") == Target("[::1]:9000", False)
    for bad in ("ftp://x:1", "http://", ""):
        try:
            Target.parse(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    cur = Cursor(0)
    ev = lambda seq: pb.RunEvent(seq=seq, run_started=pb.RunStarted())  # noqa: E731
    assert [cur.saw(ev(s)) for s in (1, 2, 2, 1, 3)] == [True, True, False, False, True]
    out = lambda e, s: pb.RunEvent(agent_output=pb.AgentOutput(output_epoch=e, output_seq=s))  # noqa: E731
    assert [cur.saw(out(7, s)) for s in (1, 2, 2)] == [True, True, False]
    assert cur.saw(out(9, 1)), "a new leader's epoch starts over"
    assert cur.request("r", True).after_seq == 3
