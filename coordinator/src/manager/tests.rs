//! The manager with its parts, on tokio's paused time: a retry backoff, a schedule-to-start
//! limit, a lost heartbeat and a straggler's backup each take seconds of the injected clock and
//! milliseconds of real time. Workers are fakes on the manager's own channels; the store is
//! the memory store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_core::fence::FenceSeq;
use swarm_core::retry::RetrySpec;
use swarm_core::{ConnId, Dag, Limits, RunId, RunSpec, SubtaskSpec};
use swarm_proto::convert::timestamp;
use swarm_proto::pb;
use swarm_store::repo::RunHeader;
use swarm_store::{MemoryStore, RunRepo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::clock::{Clock, TokioClock};

type Inbox = mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>;

/// A manager on a memory store and tokio's clock (also used by the property test in `fuzz`).
pub(super) struct Rig {
    pub(super) manager: ManagerHandle,
    repo: RunRepo,
    pub(super) clock: Arc<dyn Clock>,
    term: CancellationToken,
    tracker: TaskTracker,
}

impl Rig {
    pub(super) fn start(config: ManagerConfig) -> Self {
        Self::start_on(config, Arc::new(MemoryStore::new()))
    }

    /// The same, on a given memory store (to make it full, for one).
    pub(super) fn start_on(config: ManagerConfig, store: Arc<MemoryStore>) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let repo = RunRepo::new(store, swarm_store::repo::DEFAULT_PREFIX);
        let tracker = TaskTracker::new();
        let term = CancellationToken::new();
        let startup =
            Startup { fences: FenceSeq::for_term(1).expect("term"), clock: Some(clock.clone()), ..Startup::default() };
        let manager = spawn(config, repo.clone(), &tracker, term.clone(), startup);
        Self { manager, repo, clock, term, tracker }
    }

    async fn submit(&self, spec: RunSpec) -> RunId {
        let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid spec"));
        let run_id = RunId::from(format!("r-{}", self.clock.now_us()));
        let header = RunHeader::running(run_id.clone(), spec.name.clone(), self.clock.now_us());
        self.repo.create_run(&header, &spec).await.expect("stored");
        let id = run_id.clone();
        self.manager
            .call(|reply| Command::Submit {
                run_id: id,
                dag,
                header: Box::new(header),
                span: tracing::Span::none(),
                reply,
            })
            .await
            .expect("submitted");
        run_id
    }

    async fn join(&self, conn: ConnId, id: &str, slots: u32, tools: &[(&str, bool)]) -> Inbox {
        self.join_holding(conn, id, slots, tools, Vec::new()).await
    }

    /// Joins declaring attempts the worker holds (as a reconnecting worker does).
    async fn join_holding(
        &self,
        conn: ConnId,
        id: &str,
        slots: u32,
        tools: &[(&str, bool)],
        held: Vec<pb::HeldAttempt>,
    ) -> Inbox {
        let (tx, rx) = mpsc::channel(64);
        let hello = pb::WorkerHello {
            held,
            worker_id: id.into(),
            slots,
            tools: tools
                .iter()
                .map(|&(name, idempotent)| pb::ToolInfo { name: name.into(), idempotent, ..Default::default() })
                .collect(),
            ..Default::default()
        };
        self.manager
            .send(Command::WorkerJoined { conn, hello, tx, principal: "anonymous".into() })
            .await
            .expect("joined");
        rx
    }

    async fn report(&self, conn: ConnId, a: &pb::Assignment, started_us: u64, outcome: pb::attempt_report::Outcome) {
        let report = pb::AttemptReport {
            run_id: a.run_id.clone(),
            subtask_id: a.subtask_id.clone(),
            attempt: a.attempt,
            fence: a.fence,
            started_at: Some(timestamp(started_us)),
            finished_at: Some(timestamp(self.clock.now_us())),
            outcome: Some(outcome),
            artifacts: vec![],
        };
        self.manager.send(Command::WorkerReports { conn, reports: vec![report] }).await.expect("report");
    }

    /// The run with every subtask (read from the store once it ended, as the API does). A
    /// run whose end is not yet durable reads as running: this waits (up to a second) for the
    /// outbox to write what the last report changed.
    async fn run(&self, run_id: &RunId) -> pb::Run {
        let mut tries = 0;
        let found = loop {
            let id = run_id.clone();
            let found = self
                .manager
                .call(|reply| Command::Get { run_id: id, page: Some(Page::all()), reply })
                .await
                .expect("get")
                .expect("run");
            tries += 1;
            if found.run.state != pb::RunState::Running as i32 || tries == 100 {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut run = found.run;
        if found.archived {
            // The outbox writes the end a turn later: wait for it.
            self.manager.call(|reply| Command::Stats { reply }).await.expect("stats");
            run.subtasks = crate::recovery::stored_page(&self.repo, &run, Page::all()).await.expect("stored").0;
        }
        run
    }

    pub(super) async fn stop(self) {
        self.term.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The next assignment (or, with `cancels`, cancel) on a worker's stream, skipping the rest.
async fn next(inbox: &mut Inbox) -> pb::coordinator_message::Msg {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(3600), inbox.recv())
            .await
            .expect("a message within the hour")
            .expect("stream open")
            .expect("not an error");
        match msg.msg {
            Some(m @ (pb::coordinator_message::Msg::Assignments(_) | pb::coordinator_message::Msg::Cancels(_))) => {
                return m;
            }
            _ => continue,
        }
    }
}

async fn next_assignment(inbox: &mut Inbox) -> pb::Assignment {
    loop {
        if let pb::coordinator_message::Msg::Assignments(a) = next(inbox).await {
            return a.assignments.into_iter().next().expect("one assignment");
        }
    }
}

fn ok() -> pb::attempt_report::Outcome {
    pb::attempt_report::Outcome::OutputJson("{}".into())
}

fn failed() -> pb::attempt_report::Outcome {
    pb::attempt_report::Outcome::Error(pb::AttemptError {
        kind: pb::FailureKind::Transient as i32,
        message: "flaky".into(),
    })
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_its_backoff_on_the_injected_clock() {
    let rig = Rig::start(ManagerConfig::default());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let mut spec = RunSpec::new("retry", vec![SubtaskSpec::tool("a", "echo", json!({}))]);
    spec.retry = Some(RetrySpec {
        initial_interval_ms: Some(30_000),
        maximum_interval_ms: Some(60_000),
        jitter: Some(0.0),
        ..RetrySpec::default()
    });
    let run_id = rig.submit(spec).await;
    let first = next_assignment(&mut w).await;
    let t0 = rig.clock.now_us();
    rig.report(ConnId(1), &first, t0, failed()).await;
    let second = next_assignment(&mut w).await;
    let waited_ms = (rig.clock.now_us() - t0) / 1000;
    assert!((30_000..30_100).contains(&waited_ms), "the backoff is 30 s, not {waited_ms} ms");
    assert_eq!(second.attempt, 2);
    assert!(second.fence > first.fence);
    rig.report(ConnId(1), &second, rig.clock.now_us(), ok()).await;
    assert_eq!(rig.run(&run_id).await.state, pb::RunState::Succeeded as i32);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_subtask_past_its_schedule_to_start_limit_fails_and_its_dependents_are_skipped() {
    let config = ManagerConfig { no_worker_timeout: Duration::ZERO, ..ManagerConfig::default() };
    let rig = Rig::start(config);
    let _w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let mut spec = RunSpec::new(
        "late",
        vec![SubtaskSpec::tool("a", "missing", json!({})), SubtaskSpec::tool("b", "echo", json!({})).after(["a"])],
    );
    spec.schedule_to_start_ms = 5_000;
    let run_id = rig.submit(spec).await;
    let t0 = rig.clock.now_us();
    let run = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let run = rig.run(&run_id).await;
        if run.state != pb::RunState::Running as i32 {
            break run;
        }
    };
    let waited_ms = (rig.clock.now_us() - t0) / 1000;
    assert!((5_000..6_000).contains(&waited_ms), "{waited_ms} ms");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    assert_eq!(run.subtasks[0].error_kind, pb::FailureKind::Timeout as i32);
    assert!(run.subtasks[0].error_message.contains("schedule-to-start"), "{}", run.subtasks[0].error_message);
    assert_eq!(run.subtasks[1].state, pb::SubtaskState::Skipped as i32);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_attempt_silent_for_three_heartbeats_is_cancelled_and_run_again() {
    let rig = Rig::start(ManagerConfig::default()); // heartbeats every 5 s
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("silent", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let first = next_assignment(&mut w).await;
    let t0 = rig.clock.now_us();
    // Heartbeats for 20 s keep it alive...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rig.manager.send(Command::WorkerHeartbeat { conn: ConnId(1), fences: vec![first.fence] }).await.expect("beat");
    }
    // ...then silence: lost after 15 s more, cancelled on the worker and dispatched again.
    let cancelled = loop {
        if let pb::coordinator_message::Msg::Cancels(c) = next(&mut w).await {
            break c.fences;
        }
    };
    let silent_ms = (rig.clock.now_us() - t0) / 1000 - 20_000;
    assert!((15_000..15_100).contains(&silent_ms), "declared lost after {silent_ms} ms of silence");
    assert_eq!(cancelled, [first.fence]);
    let again = next_assignment(&mut w).await;
    assert!(again.fence > first.fence && again.attempt == 2, "{again:?}");
    rig.report(ConnId(1), &again, rig.clock.now_us(), ok()).await;
    assert_eq!(rig.run(&run_id).await.state, pb::RunState::Succeeded as i32);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_straggler_gets_a_backup_on_another_worker_and_the_loser_is_cancelled() {
    let rig = Rig::start(ManagerConfig::default());
    let mut a = rig.join(ConnId(1), "a", 10, &[("echo", true)]).await;
    let mut b = rig.join(ConnId(2), "b", 10, &[("echo", true)]).await;
    let subtasks = (0..10).map(|i| SubtaskSpec::tool(format!("s{i}").as_str(), "echo", json!({}))).collect();
    let run_id = rig.submit(RunSpec::new("hedge", subtasks)).await;
    // Placement spreads the ten calls over both workers.
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    while on_a.len() + on_b.len() < 10 {
        tokio::select! {
            m = next(&mut a) => if let pb::coordinator_message::Msg::Assignments(x) = m { on_a.extend(x.assignments) },
            m = next(&mut b) => if let pb::coordinator_message::Msg::Assignments(x) = m { on_b.extend(x.assignments) },
        }
    }
    assert!(!on_a.is_empty() && !on_b.is_empty());
    // Nine finish in 100 ms; one on worker a straggles.
    let t0 = rig.clock.now_us();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let straggler = on_a.pop().expect("one on a");
    for x in &on_a {
        rig.report(ConnId(1), x, t0, ok()).await;
    }
    for x in &on_b {
        rig.report(ConnId(2), x, t0, ok()).await;
    }
    // Past 1.5 × the median (150 ms), a backup starts on b.
    let backup = next_assignment(&mut b).await;
    assert!(backup.speculative && backup.subtask_id == straggler.subtask_id, "{backup:?}");
    let after_ms = (rig.clock.now_us() - t0) / 1000;
    assert!((150..400).contains(&after_ms), "backup after {after_ms} ms");
    rig.report(ConnId(2), &backup, rig.clock.now_us(), ok()).await;
    let cancelled = loop {
        if let pb::coordinator_message::Msg::Cancels(c) = next(&mut a).await {
            break c.fences;
        }
    };
    assert_eq!(cancelled, [straggler.fence], "the loser is cancelled");
    let run = rig.run(&run_id).await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.summary.expect("summary").speculative_wins, 1);
    rig.stop().await;
}

fn holding(a: &pb::Assignment) -> pb::HeldAttempt {
    pb::HeldAttempt { run_id: a.run_id.clone(), subtask_id: a.subtask_id.clone(), attempt: a.attempt, fence: a.fence }
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_reconnects_keeps_its_attempt_and_nothing_runs_twice() {
    let rig = Rig::start(ManagerConfig::default());
    let mut w = rig.join(ConnId(1), "w", 4, &[("append", false)]).await;
    let mut other = rig.join(ConnId(2), "other", 4, &[("append", false)]).await;
    let run_id = rig.submit(RunSpec::new("reconnect", vec![SubtaskSpec::tool("a", "append", json!({}))])).await;
    let (first, mut holder, conn, id) = tokio::select! {
        a = next_assignment(&mut w) => (a, w, ConnId(1), "w"),
        a = next_assignment(&mut other) => (a, other, ConnId(2), "other"),
    };
    // The stream drops (a proxy's idle timeout); the worker reconnects 2 s later, declaring it.
    rig.manager.send(Command::WorkerLeft { conn }).await.expect("left");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut back = rig.join_holding(ConnId(3), id, 4, &[("append", false)], vec![holding(&first)]).await;
    rig.report(ConnId(3), &first, rig.clock.now_us(), ok()).await;
    let run = rig.run(&run_id).await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.subtasks[0].attempt, 1, "the same attempt, not a second one");
    // Nothing was dispatched again, to anyone, and nothing cancelled.
    for inbox in [&mut holder, &mut back] {
        while let Ok(Ok(msg)) = inbox.try_recv() {
            assert!(
                !matches!(
                    msg.msg,
                    Some(pb::coordinator_message::Msg::Assignments(_) | pb::coordinator_message::Msg::Cancels(_))
                ),
                "{msg:?}"
            );
        }
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_workers_attempt_runs_again_only_when_it_is_not_coming_back() {
    let rig = Rig::start(ManagerConfig::default()); // heartbeats every 5 s: silent after 15 s
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("gone", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let first = next_assignment(&mut w).await;
    let t0 = rig.clock.now_us();
    rig.manager.send(Command::WorkerLeft { conn: ConnId(1) }).await.expect("left");
    // Another worker is there, but the attempt waits for its worker to come back...
    let mut other = rig.join(ConnId(2), "other", 4, &[("echo", false)]).await;
    let again = next_assignment(&mut other).await;
    let waited_ms = (rig.clock.now_us() - t0) / 1000;
    assert!((15_000..15_100).contains(&waited_ms), "re-run after {waited_ms} ms, the silence limit");
    assert!(again.fence > first.fence && again.attempt == 2);
    rig.report(ConnId(2), &again, rig.clock.now_us(), ok()).await;
    assert_eq!(rig.run(&run_id).await.state, pb::RunState::Succeeded as i32);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_comes_back_without_its_attempt_has_it_run_again_at_once() {
    let rig = Rig::start(ManagerConfig::default());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("restarted", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let first = next_assignment(&mut w).await;
    rig.manager.send(Command::WorkerLeft { conn: ConnId(1) }).await.expect("left");
    // It restarted: it holds nothing. The attempt runs again at once.
    let t0 = rig.clock.now_us();
    let mut back = rig.join(ConnId(2), "w", 4, &[("echo", false)]).await;
    let again = next_assignment(&mut back).await;
    assert!((rig.clock.now_us() - t0) < 100_000, "at once");
    assert!(again.fence > first.fence && again.attempt == 2);
    // A forged claim on another worker's attempt takes nothing over.
    let mut thief = rig.join_holding(ConnId(3), "thief", 4, &[("echo", false)], vec![holding(&again)]).await;
    let cancelled = loop {
        if let pb::coordinator_message::Msg::Cancels(c) = next(&mut thief).await {
            break c.fences;
        }
    };
    assert_eq!(cancelled, [again.fence]);
    rig.report(ConnId(3), &again, rig.clock.now_us(), ok()).await; // ignored: not its attempt
    rig.report(ConnId(2), &again, rig.clock.now_us(), ok()).await;
    let run = rig.run(&run_id).await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.subtasks[0].worker_id, "w");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_attempt_its_worker_cancelled_runs_again() {
    let rig = Rig::start(ManagerConfig::default());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("handed-back", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let first = next_assignment(&mut w).await;
    // Not asked by the coordinator: the worker gave up on it (a drain that timed out).
    let cancelled = pb::attempt_report::Outcome::Error(pb::AttemptError {
        kind: pb::FailureKind::Cancelled as i32,
        message: "drain timeout".into(),
    });
    rig.report(ConnId(1), &first, rig.clock.now_us(), cancelled).await;
    let again = next_assignment(&mut w).await;
    assert_eq!(again.attempt, 2, "run again, not failed");
    rig.report(ConnId(1), &again, rig.clock.now_us(), ok()).await;
    assert_eq!(rig.run(&run_id).await.state, pb::RunState::Succeeded as i32);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_holds_the_manager_up_does_not_make_live_attempts_look_silent() {
    let memory = Arc::new(MemoryStore::new());
    let rig = Rig::start_on(ManagerConfig::default(), memory.clone());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("held", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let a = next_assignment(&mut w).await;
    let mut others = Vec::new();
    for i in 0..100 {
        tokio::time::advance(Duration::from_millis(1)).await; // distinct run ids
        others
            .push(rig.submit(RunSpec::new(format!("o{i}"), vec![SubtaskSpec::tool("x", "missing", json!({}))])).await);
    }
    // The store fills up: writes are kept and retried, the writer's queue fills with one batch
    // per turn (a cancel each), and then the manager waits for it, reading nothing.
    memory.set_quota(Some(0));
    let manager = rig.manager.clone();
    // One cancel per turn: a cancel is answered only once stored, so each is followed by a
    // call answered at the end of its turn (the manager is held up once the queue is full).
    let cancels = tokio::spawn(async move {
        let mut answers = Vec::new();
        for run_id in others {
            let m = manager.clone();
            answers.push(tokio::spawn(async move {
                m.call(|reply| Command::Cancel { run_id, reason: "fill".into(), reply }).await
            }));
            tokio::task::yield_now().await;
            let _ = manager.call(|reply| Command::Stats { reply }).await;
        }
        futures_util::future::join_all(answers).await
    });
    // Held up for longer than the silence limit (15 s), while the worker's beats wait upstream.
    tokio::time::sleep(Duration::from_secs(40)).await;
    memory.set_quota(None);
    // Two turns after the manager is free again: the first would have expired the attempt.
    for _ in 0..2 {
        rig.manager.call(|reply| Command::Stats { reply }).await.expect("stats");
    }
    while let Ok(Ok(msg)) = w.try_recv() {
        if let Some(pb::coordinator_message::Msg::Cancels(c)) = msg.msg {
            assert!(!c.fences.contains(&a.fence), "a live attempt was declared lost because the store was slow");
        }
    }
    rig.manager.send(Command::WorkerHeartbeat { conn: ConnId(1), fences: vec![a.fence] }).await.expect("beat");
    rig.report(ConnId(1), &a, rig.clock.now_us(), ok()).await;
    cancels.await.expect("cancels");
    let run = rig.run(&run_id).await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.subtasks[0].attempt, 1, "the first attempt's result counts: nothing ran twice");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dependent_starts_only_once_its_dependencys_result_is_in_the_store() {
    let memory = Arc::new(MemoryStore::new());
    let rig = Rig::start_on(ManagerConfig::default(), memory.clone());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let spec = RunSpec::new(
        "chain",
        vec![SubtaskSpec::tool("a", "echo", json!({})), SubtaskSpec::tool("b", "echo", json!({})).after(["a"])],
    );
    let run_id = rig.submit(spec).await;
    let a = next_assignment(&mut w).await;
    memory.set_quota(Some(0)); // a's result cannot be written for now
    rig.report(ConnId(1), &a, rig.clock.now_us(), ok()).await;
    let waited = tokio::time::timeout(Duration::from_secs(20), next_assignment(&mut w)).await;
    assert!(waited.is_err(), "b was dispatched while a's result was not durable: a new leader would not know it");
    memory.set_quota(None);
    let b = next_assignment(&mut w).await;
    assert_eq!(b.subtask_id, "b");
    let key = format!("/swarm/v1/subtasks/{run_id}/a");
    assert!(rig.repo.store().get(key.as_bytes()).await.expect("get").is_some(), "a's record is in the store");
    rig.report(ConnId(1), &b, rig.clock.now_us(), ok()).await;
    assert_eq!(rig.run(&run_id).await.state, pb::RunState::Succeeded as i32);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_cannot_claim_or_report_attempts_that_are_not_its_own() {
    let rig = Rig::start(ManagerConfig::default());
    let mut a = rig.join(ConnId(1), "a", 1, &[("echo", false)]).await;
    let spec = RunSpec::new(
        "r",
        vec![SubtaskSpec::tool("x", "echo", json!({})), SubtaskSpec::tool("y", "special", json!({}))],
    );
    let run_id = rig.submit(spec).await;
    let given = next_assignment(&mut a).await;
    // Worker b declares y (not yet dispatched: nobody offered `special`) under a fence of this
    // term it was never given, hoping to have it adopted and report whatever it likes.
    let forged =
        pb::HeldAttempt { run_id: run_id.to_string(), subtask_id: "y".into(), attempt: 1, fence: (1 << 40) | 999 };
    let mut b = rig.join_holding(ConnId(2), "b", 1, &[("special", false)], vec![forged.clone()]).await;
    let mut cancelled = Vec::new();
    let mut dispatched = None;
    while dispatched.is_none() || cancelled.is_empty() {
        match next(&mut b).await {
            pb::coordinator_message::Msg::Cancels(c) => cancelled.extend(c.fences),
            pb::coordinator_message::Msg::Assignments(x) => dispatched = x.assignments.into_iter().next(),
            _ => {}
        }
    }
    let y = dispatched.expect("y");
    assert_eq!(cancelled, [forged.fence], "the forged attempt is refused");
    assert!(y.fence != forged.fence && y.subtask_id == "y", "y is dispatched for real");
    // b reports a made-up output for a's attempt: not its own, ignored.
    let lie = pb::attempt_report::Outcome::OutputJson("\"made up\"".into());
    rig.report(ConnId(2), &given, rig.clock.now_us(), lie).await;
    rig.report(ConnId(1), &given, rig.clock.now_us(), ok()).await;
    rig.report(ConnId(2), &y, rig.clock.now_us(), ok()).await;
    let run = rig.run(&run_id).await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!((run.subtasks[0].output_json.as_str(), run.subtasks[0].worker_id.as_str()), ("{}", "a"));
    rig.stop().await;
}

/// The first `n` assignments to workers `a` (connection 1) and `b` (connection 2).
async fn assignments_of_two(a: &mut Inbox, b: &mut Inbox, n: usize) -> Vec<(ConnId, pb::Assignment)> {
    let mut given = Vec::new();
    while given.len() < n {
        tokio::select! {
            m = next(a) => if let pb::coordinator_message::Msg::Assignments(x) = m { given.extend(x.assignments.into_iter().map(|x| (ConnId(1), x))) },
            m = next(b) => if let pb::coordinator_message::Msg::Assignments(x) = m { given.extend(x.assignments.into_iter().map(|x| (ConnId(2), x))) },
        }
    }
    given
}

/// Whether a straggling call of `tool` gets a backup under `config` (the worker claims the tool
/// is idempotent): nine calls finish in 100 ms, the tenth hangs.
async fn straggler_gets_a_backup(config: ManagerConfig, tool: &str) -> bool {
    let rig = Rig::start(config);
    let mut a = rig.join(ConnId(1), "a", 10, &[(tool, true)]).await;
    let mut b = rig.join(ConnId(2), "b", 10, &[(tool, true)]).await;
    let subtasks = (0..10).map(|i| SubtaskSpec::tool(format!("s{i}").as_str(), tool, json!({}))).collect();
    rig.submit(RunSpec::new("hedge", subtasks)).await;
    let mut given = assignments_of_two(&mut a, &mut b, 10).await;
    let t0 = rig.clock.now_us();
    tokio::time::sleep(Duration::from_millis(100)).await;
    given.pop();
    for (conn, x) in &given {
        rig.report(*conn, x, t0, ok()).await;
    }
    let backup = async {
        loop {
            tokio::select! {
                m = next(&mut a) => if let pb::coordinator_message::Msg::Assignments(x) = m && x.assignments.iter().any(|x| x.speculative) { return },
                m = next(&mut b) => if let pb::coordinator_message::Msg::Assignments(x) = m && x.assignments.iter().any(|x| x.speculative) { return },
            }
        }
    };
    let got = tokio::time::timeout(Duration::from_secs(5), backup).await.is_ok();
    rig.stop().await;
    got
}

#[tokio::test(start_paused = true)]
async fn only_the_coordinator_decides_which_tools_may_run_twice() {
    let untrusting = || ManagerConfig { trust_worker_tool_flags: false, ..ManagerConfig::default() };
    assert!(!straggler_gets_a_backup(untrusting(), "lookup").await, "a worker's claim alone races nothing");
    let declared = ManagerConfig { operator_repeatable: ["lookup".to_owned()].into(), ..untrusting() };
    assert!(straggler_gets_a_backup(declared, "lookup").await, "the operator's --repeatable-tool does");
    assert!(
        !straggler_gets_a_backup(ManagerConfig::default(), "append").await,
        "append is never raced, whatever is claimed"
    );
    assert!(straggler_gets_a_backup(untrusting(), "echo").await, "a built-in read-only tool is");
}

#[tokio::test(start_paused = true)]
async fn a_ready_primary_takes_a_backups_slot_and_the_backup_is_cancelled() {
    let rig = Rig::start(ManagerConfig::default());
    let mut a = rig.join(ConnId(1), "a", 5, &[("echo", true)]).await;
    let mut b = rig.join(ConnId(2), "b", 5, &[("echo", true)]).await;
    let calls = |prefix: &str, n: usize| {
        (0..n).map(|i| SubtaskSpec::tool(format!("{prefix}{i}").as_str(), "echo", json!({}))).collect::<Vec<_>>()
    };
    let first = rig.submit(RunSpec::new("hedged", calls("s", 10))).await;
    let mut given = assignments_of_two(&mut a, &mut b, 10).await;
    // Nine finish in 100 ms; the tenth straggles, and a backup takes a free slot elsewhere.
    let t0 = rig.clock.now_us();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (straggler_conn, straggler) = given.pop().expect("ten");
    for (conn, x) in &given {
        rig.report(*conn, x, t0, ok()).await;
    }
    let (backup_conn, mut backup_inbox, mut other_inbox) =
        if straggler_conn == ConnId(1) { (ConnId(2), b, a) } else { (ConnId(1), a, b) };
    let backup = next_assignment(&mut backup_inbox).await;
    assert!(backup.speculative && backup.subtask_id == straggler.subtask_id, "{backup:?}");
    // Nine ready primaries of another run, eight free slots: the ninth takes the backup's.
    rig.submit(RunSpec::new("primaries", calls("p", 9))).await;
    let mut primaries = 0;
    let mut cancelled = None;
    while primaries < 8 || cancelled.is_none() {
        let (m, from_backup_worker) = tokio::select! {
            m = next(&mut backup_inbox) => (m, true),
            m = next(&mut other_inbox) => (m, false),
        };
        match m {
            pb::coordinator_message::Msg::Assignments(x) => {
                assert!(x.assignments.iter().all(|x| !x.speculative), "no new backup while primaries wait");
                primaries += x.assignments.len();
            }
            pb::coordinator_message::Msg::Cancels(c) => {
                assert!(from_backup_worker, "only the backup is cancelled");
                cancelled = Some(c.fences);
            }
            _ => {}
        }
    }
    assert_eq!(cancelled, Some(vec![backup.fence]), "the backup gives its slot back");
    assert_eq!(primaries, 8);
    // The worker acknowledges the cancel; the ninth primary gets the slot.
    let gone = pb::attempt_report::Outcome::Error(pb::AttemptError {
        kind: pb::FailureKind::Cancelled as i32,
        message: "cancelled".into(),
    });
    rig.report(backup_conn, &backup, rig.clock.now_us(), gone).await;
    let ninth = next_assignment(&mut backup_inbox).await;
    assert!(ninth.subtask_id.starts_with('p') && !ninth.speculative, "{ninth:?}");
    // The straggler, alone, still decides its subtask.
    rig.report(straggler_conn, &straggler, t0, ok()).await;
    let run = rig.run(&first).await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let summary = run.summary.expect("summary");
    assert_eq!((summary.speculative_attempts, summary.speculative_wins), (1, 0));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn get_run_tells_a_result_or_an_end_only_once_it_is_in_the_store() {
    let memory = Arc::new(MemoryStore::new());
    let rig = Rig::start_on(ManagerConfig::default(), memory.clone());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("read-your-writes", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let a = next_assignment(&mut w).await;
    memory.set_quota(Some(0)); // the result and the end cannot be written for now
    rig.report(ConnId(1), &a, rig.clock.now_us(), ok()).await;
    let get = || {
        let (manager, id) = (rig.manager.clone(), run_id.clone());
        async move {
            let found = manager.call(|reply| Command::Get { run_id: id, page: Some(Page::all()), reply }).await;
            found.expect("get").expect("run").run
        }
    };
    // Answered at once (a full store does not hold GetRun up), with nothing a failover now
    // would lose: neither the end nor a's result.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let told = get().await;
    assert_eq!(told.state, pb::RunState::Running as i32, "told ended before its end was stored");
    assert_eq!(told.subtasks[0].state, pb::SubtaskState::Running as i32, "told a result not yet stored");
    assert!(told.subtasks[0].output_json.is_empty());
    memory.set_quota(None);
    while get().await.state == pb::RunState::Running as i32 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let told = rig.run(&run_id).await;
    assert_eq!(told.state, pb::RunState::Succeeded as i32);
    assert_eq!(told.subtasks[0].state, pb::SubtaskState::Succeeded as i32);
    let key = format!("/swarm/v1/subtasks/{run_id}/a");
    assert!(rig.repo.store().get(key.as_bytes()).await.expect("get").is_some(), "what it told is in the store");
    rig.stop().await;
}

/// An acknowledged cancel is durable: a leader that dies right after answering must leave a
/// successor that knows the run was cancelled (the nemesis found a run that ended SUCCEEDED
/// after its cancel had been acknowledged CANCELLED).
#[tokio::test(start_paused = true)]
async fn a_cancel_is_acknowledged_only_once_it_is_in_the_store() {
    let memory = Arc::new(MemoryStore::new());
    let rig = Rig::start_on(ManagerConfig::default(), memory.clone());
    let mut w = rig.join(ConnId(1), "w", 4, &[("echo", false)]).await;
    let run_id = rig.submit(RunSpec::new("cancelled", vec![SubtaskSpec::tool("a", "echo", json!({}))])).await;
    let _a = next_assignment(&mut w).await;
    memory.set_quota(Some(0)); // the end cannot be written for now
    let (manager, id) = (rig.manager.clone(), run_id.clone());
    let mut cancel = tokio::spawn(async move {
        manager.call(|reply| Command::Cancel { run_id: id, reason: "test".into(), reply }).await
    });
    tokio::select! {
        answered = &mut cancel => panic!("answered before the cancel was stored: {answered:?}"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    memory.set_quota(None);
    let told = cancel.await.expect("joined").expect("manager").expect("cancelled");
    assert_eq!(told.state, pb::RunState::Cancelled as i32);
    let header = rig.repo.store().get(format!("/swarm/v1/runs/{run_id}").as_bytes()).await.expect("get");
    assert!(header.is_some_and(|kv| String::from_utf8_lossy(&kv.value).contains("cancelled")), "the end is stored");
    rig.stop().await;
}
