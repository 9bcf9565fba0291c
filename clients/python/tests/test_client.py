"""The client against a real `swarm up`: what a Python developer does with it."""

from __future__ import annotations

import asyncio
import pathlib
import re
import tomllib

import grpc
import pytest

import swarm_client
from swarm_client import Client, FailedPrecondition, InvalidSpec, NotFound, ResourceExhausted
from swarm_client.aio import Client as AsyncClient

from conftest import ROOT, start_swarm, stop


def chain(n: int, ms: int, name: str = "chain") -> dict:
    subtasks = [{"id": f"s{i}", "tool": "sleep", "args": {"ms": ms}} for i in range(n)]
    for i in range(1, n):
        subtasks[i]["depends_on"] = [f"s{i - 1}"]
    return {"name": name, "subtasks": subtasks}


def test_the_readme_lines_work_as_written(swarm_url: str) -> None:
    for readme in (ROOT / "README.md", ROOT / "clients" / "python" / "README.md"):
        text = readme.read_text()
        block = re.search(r"```python\n(from swarm_client import Client.*?)```", text, re.S)
        assert block, f"{readme} shows the client"
        code = block.group(1).replace("http://127.0.0.1:7070", swarm_url)
        scope: dict = {}
        exec(compile(code, str(readme), "exec"), scope)
        assert scope["summary"].state == "SUCCEEDED", readme
        assert scope["summary"].tool_calls_completed >= 1


def test_submit_wait_get_list(swarm_url: str) -> None:
    with Client(swarm_url) as client:
        run = client.submit_file(ROOT / "examples" / "small.yaml")
        summary = run.wait(timeout=60)
        assert summary.state == "SUCCEEDED" and summary.succeeded
        assert summary.total_subtasks == summary.tool_calls_completed == 5
        assert summary.wall_ms > 0 and summary.critical_steps >= 3 and summary.critical_path
        full = client.get(run.run_id, subtasks=True)
        assert {s["id"] for s in full.subtasks} >= {"plan", "summarize"}
        assert all(s["state"] == "SUCCEEDED" for s in full.subtasks)
        assert run.run_id in [r.run_id for r in client.list_runs(limit=100)]


def test_every_problem_of_a_bad_spec_comes_back_with_its_field(swarm_url: str) -> None:
    bad = {
        "name": "bad",
        "subtasks": [
            {"id": "a", "tool": "echo", "args": {}, "depends_on": ["b"]},
            {"id": "b", "tool": "echo", "args": {}, "depends_on": ["a"]},
            {"id": "c", "tool": "echo", "args": {}, "depends_on": ["nowhere"]},
        ],
    }
    with Client(swarm_url) as client, pytest.raises(InvalidSpec) as e:
        client.submit(bad)
    fields = " ".join(f for f, _ in e.value.violations)
    text = " ".join(d for _, d in e.value.violations)
    assert len(e.value.violations) >= 2, e.value.violations
    assert "cycle" in text and "nowhere" in text, e.value.violations
    assert "depends_on" in fields, e.value.violations
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_text_that_is_not_a_spec_is_refused_naming_where(swarm_url: str) -> None:
    with Client(swarm_url) as client, pytest.raises(InvalidSpec) as e:
        client.submit("name: x\nsubtasks: [{id: a, tool: echo, args: {}, colour: blue}]\n")
    assert e.value.violations and e.value.violations[0][0] == "spec_text", e.value.violations
    assert "colour" in e.value.violations[0][1]


def test_unknown_runs_and_reused_keys(swarm_url: str) -> None:
    with Client(swarm_url) as client:
        with pytest.raises(NotFound):
            client.get("r-0123456789abc-0123456")
        first = client.submit(chain(1, 1, "keyed"), idempotency_key="py-job-1")
        again = client.submit(chain(1, 1, "keyed"), idempotency_key="py-job-1")
        assert (again.run_id, first.created, again.created) == (first.run_id, True, False)
        with pytest.raises(FailedPrecondition) as e:
            client.submit(chain(2, 1, "keyed"), idempotency_key="py-job-1")
        assert first.run_id in e.value.message


def test_cancel(swarm_url: str) -> None:
    with Client(swarm_url) as client:
        run = client.submit(chain(3, 5000, "long"))
        cancelled = run.cancel("not needed")
        assert cancelled.state in ("CANCELLED", "RUNNING")
        assert run.wait(timeout=30).state == "CANCELLED"


def test_events_resume_after_a_dropped_stream_without_gaps_or_duplicates(swarm_url: str, proxy) -> None:
    with Client(proxy.url) as client:
        run = client.submit(chain(8, 150, "resumed"))
        seqs, kinds = [], []
        for ev in run.events():
            seqs.append(ev.seq)
            kinds.append(ev.WhichOneof("event"))
            if len(seqs) in (4, 9):
                proxy.cut()
        assert proxy.cuts == 2
        final = client.get(run.run_id)
    assert kinds[-1] == "run_finished" and final.state == "SUCCEEDED"
    assert seqs == list(range(1, final.last_seq + 1)), seqs


def test_admission_caps_say_when_to_try_again() -> None:
    proc, url = start_swarm("--max-active-runs", "1")
    try:
        with Client(url) as client:
            client.submit(chain(1, 3000, "first"))
            with pytest.raises(ResourceExhausted) as e:
                client.submit(chain(1, 1, "second"))
            assert e.value.retry_after is not None and e.value.retry_after.total_seconds() > 0
    finally:
        stop(proc)


def test_asyncio(swarm_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(swarm_url) as client:
            run = await client.submit(chain(3, 10, "async"))
            kinds = [ev.WhichOneof("event") async for ev in run.events()]
            assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
            summary = await run.wait(timeout=30)
            assert summary.state == "SUCCEEDED" and summary.tool_calls_completed == 3
            with pytest.raises(NotFound):
                await client.get("r-0123456789abc-0123456")
            with pytest.raises(InvalidSpec):
                await client.submit({"name": "x", "subtasks": []})

    asyncio.run(main())


def test_a_spec_over_the_message_limit_is_sent_in_chunks_sync_and_async(swarm_url: str) -> None:
    text = "x" * (60 * 1024)
    big = {"name": "big", "subtasks": [{"id": f"s{i}", "tool": "echo", "args": {"text": text}} for i in range(300)]}
    with Client(swarm_url) as client:
        summary = client.submit(big).wait(timeout=120)
        assert summary.state == "SUCCEEDED" and summary.tool_calls_completed == 300
        # Every problem still comes back with its field.
        big["subtasks"][0]["depends_on"] = ["nowhere"]
        with pytest.raises(InvalidSpec) as e:
            client.submit(big)
        assert ("subtasks[0].depends_on[0]", "unknown subtask `nowhere`") in e.value.violations

    async def main() -> None:
        async with AsyncClient(swarm_url) as client:
            big["subtasks"][0]["depends_on"] = []
            summary = await (await client.submit(big)).wait(timeout=120)
            assert summary.state == "SUCCEEDED" and summary.tool_calls_completed == 300

    asyncio.run(main())


def test_the_version_is_the_servers() -> None:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    pyproject = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())["project"]["version"]
    assert swarm_client.__version__ == pyproject == cargo
    changelog = (ROOT / "clients" / "python" / "CHANGELOG.md").read_text()
    assert f"## {cargo}" in changelog


def test_the_checked_in_stubs_are_what_the_protos_generate(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    here = ROOT / "clients" / "python"
    subprocess.run(
        [str(here / "generate"), str(tmp_path)], check=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    shipped_root = here / "src"
    shipped = {
        p.relative_to(shipped_root): p.read_bytes()
        for p in (shipped_root / "swarm_client" / "_proto").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert fresh.keys() == shipped.keys()
    stale = [str(k) for k in fresh if fresh[k] != shipped[k]]
    assert not stale, f"regenerate with clients/python/generate: {stale}"


def test_artifacts_are_listed_and_downloaded_sync_and_async(swarm_url: str) -> None:
    spec = {
        "name": "artifacts",
        "subtasks": [
            {
                "id": "make",
                "tool": "exec",
                "args": {"script": "mkdir -p out; printf 'a,b\\n1,2\\n' > out/t.csv", "check": True},
                "outputs": {"artifacts": ["out/*.csv"]},
            },
            {
                "id": "use",
                "tool": "exec",
                "args": {"script": "cat inputs/make/out/t.csv", "check": True},
                "depends_on": ["make"],
            },
        ],
    }
    with Client(swarm_url) as client:
        run = client.submit(spec)
        assert run.wait(timeout=60).succeeded
        listed = client.artifacts(run.run_id)
        assert [(a["subtask_id"], a["path"], a["size"]) for a in listed] == [("make", "out/t.csv", 8)]
        assert client.artifact(run.run_id, "make", "out/t.csv") == b"a,b\n1,2\n"
        used = client.get(run.run_id, subtasks=True)
        assert [s["output"]["stdout"] for s in used.subtasks if s["id"] == "use"] == ["a,b\n1,2\n"]
        with pytest.raises(NotFound):
            client.artifact(run.run_id, "make", "../../etc/passwd")

    async def main() -> bytes:
        async with AsyncClient(swarm_url) as client:
            assert len(await client.artifacts(run.run_id)) == 1
            return await client.artifact(run.run_id, "make", "out/t.csv")

    assert asyncio.run(main()) == b"a,b\n1,2\n"


def test_fork_reuses_what_is_upstream_and_refuses_by_field_sync_and_async(swarm_url: str) -> None:
    spec = chain(3, 5, "forkable")
    spec["version"] = "py-v1"
    with Client(swarm_url) as client:
        original = client.submit(spec).wait(timeout=60)
        assert original.spec_version == "py-v1" and len(original.spec_hash) == 16
        fork = client.fork(original.run_id, "s1", patch={"subtasks": [{"id": "s1", "args": {"ms": 1}}]})
        done = fork.wait(timeout=60)
        assert done.state == "SUCCEEDED" and done.forked_from == original.run_id
        assert (done.calls_reused, done.calls_made) == (1, 2)
        reused = {s["id"]: s["reused_from"] for s in client.get(fork.run_id, subtasks=True).subtasks}
        assert reused == {"s0": original.run_id, "s1": "", "s2": ""}
        with pytest.raises(InvalidSpec) as e:
            client.fork(original.run_id, "s1", patch="subtasks: [{id: s0, depends_on: [s2]}]")
        assert any(f.endswith("depends_on") and d.startswith("cycle: ") for f, d in e.value.violations), e.value
        with pytest.raises(NotFound, match="did you mean `s1`"):
            client.fork(original.run_id, "s11")

    async def main() -> None:
        async with AsyncClient(swarm_url) as client:
            fork = await client.fork(original.run_id, "s2", idempotency_key="py-fork")
            again = await client.fork(original.run_id, "s2", idempotency_key="py-fork")
            assert again.run_id == fork.run_id and not again.created
            assert (await fork.wait(timeout=60)).calls_made == 1

    asyncio.run(main())
