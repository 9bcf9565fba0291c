//! Unit tests of the engine's state machine.

use super::*;
use crate::ids::AttemptNo;
use crate::ids::SubtaskIx;
use crate::spec::{Limits, RunSpec, SubtaskSpec};
use serde_json::json;

fn engine(subtasks: Vec<SubtaskSpec>, policy: RetryPolicy) -> RunEngine {
    let dag = Dag::build(&RunSpec::new("t", subtasks), &Limits::default()).expect("valid");
    RunEngine::new(RunId::from("r"), Arc::new(dag), policy, 0, 1)
}
fn t(id: &str) -> SubtaskSpec {
    SubtaskSpec::tool(id, "echo", json!({}))
}
fn dispatch(e: &mut RunEngine, fence: u64, out: &mut Vec<Action>) -> SubtaskIx {
    let i = e.pop_ready().expect("something ready");
    e.apply(EngineEvent::Dispatched { subtask: i, worker: WorkerId::from("w"), fence: Fence(fence) }, 0, out);
    i
}
fn ok(e: &mut RunEngine, i: SubtaskIx, fence: u64, at: u64, out: &mut Vec<Action>) {
    e.apply(
        EngineEvent::Succeeded {
            subtask: i,
            fence: Fence(fence),
            started_us: at,
            finished_us: at + 10,
            output: "1".into(),
            artifacts: None,
        },
        at + 10,
        out,
    );
}

#[test]
fn chain_runs_in_order_and_succeeds() {
    let mut e = engine(vec![t("a"), t("b").after(["a"])], RetryPolicy::default());
    let mut out = vec![];
    let a = dispatch(&mut e, 1, &mut out);
    assert!(e.pop_ready().is_none(), "b must wait for a");
    ok(&mut e, a, 1, 0, &mut out);
    let b = dispatch(&mut e, 2, &mut out);
    ok(&mut e, b, 2, 10, &mut out);
    assert_eq!(e.state(), RunState::Succeeded);
    assert!(out.contains(&Action::Finished { state: RunState::Succeeded }));
    let s = e.summary(30);
    assert_eq!((s.critical_steps, s.total_steps, s.critical_path_us), (2, 2, 20));
}

#[test]
fn started_reports_how_long_the_subtask_waited_since_it_became_ready() {
    let dag = Dag::build(&RunSpec::new("t", vec![t("a"), t("b").after(["a"])]), &Limits::default()).expect("valid");
    let mut e = RunEngine::new(RunId::from("r"), Arc::new(dag), RetryPolicy::default(), 1_000, 1);
    let waited = |out: &[Action]| {
        out.iter().find_map(|a| match a {
            Action::Publish(Update::Started { waited_us, .. }) => Some(*waited_us),
            _ => None,
        })
    };
    let mut out = vec![];
    let a = e.pop_ready().expect("a");
    e.apply(EngineEvent::Dispatched { subtask: a, worker: WorkerId::from("w"), fence: Fence(1) }, 1_250, &mut out);
    assert_eq!(waited(&out), Some(Some(250)), "a was ready at submission");
    ok(&mut e, a, 1, 2_000, &mut out); // b becomes ready at 2_010
    out.clear();
    let b = e.pop_ready().expect("b");
    e.apply(EngineEvent::Dispatched { subtask: b, worker: WorkerId::from("w"), fence: Fence(2) }, 2_400, &mut out);
    assert_eq!(waited(&out), Some(Some(390)));
}

#[test]
fn stale_fence_is_ignored() {
    let mut e = engine(vec![t("a")], RetryPolicy::default());
    let mut out = vec![];
    let a = dispatch(&mut e, 5, &mut out);
    ok(&mut e, a, 4, 0, &mut out);
    assert_eq!(e.slot(a).state, SubtaskState::Running);
    assert_eq!(e.counts().stale_reports, 1);
}

#[test]
fn transient_failure_backs_off_then_retries() {
    let mut e = engine(vec![t("a")], RetryPolicy::default());
    let mut out = vec![];
    let a = dispatch(&mut e, 1, &mut out);
    out.clear();
    e.apply(
        EngineEvent::Failed {
            subtask: a,
            fence: Fence(1),
            kind: FailureKind::Transient,
            message: "x".into(),
            started_us: 0,
            finished_us: 1,
        },
        1_000,
        &mut out,
    );
    let at = out.iter().find_map(|a| if let Action::ArmTimer { at_us, .. } = a { Some(*at_us) } else { None });
    let at = at.expect("a retry timer");
    assert!((1_000 + 80_000..=1_000 + 120_000).contains(&at), "{at}");
    assert!(e.pop_ready().is_none());
    e.apply(EngineEvent::RetryDue { subtask: a }, at, &mut out);
    assert_eq!(dispatch(&mut e, 2, &mut out), a);
    assert_eq!(e.slot(a).attempt, AttemptNo(2));
}

#[test]
fn permanent_failure_skips_dependents_but_other_branches_finish() {
    let mut e = engine(vec![t("a"), t("b").after(["a"]), t("c").after(["b"]), t("x")], RetryPolicy::default());
    let mut out = vec![];
    let first = dispatch(&mut e, 1, &mut out);
    let second = dispatch(&mut e, 2, &mut out);
    let (a, x) = if e.dag().node(first).id.as_str() == "a" { (first, second) } else { (second, first) };
    let (fa, fx) = if a == first { (1, 2) } else { (2, 1) };
    e.apply(
        EngineEvent::Failed {
            subtask: a,
            fence: Fence(fa),
            kind: FailureKind::Permanent,
            message: "bad".into(),
            started_us: 0,
            finished_us: 1,
        },
        1,
        &mut out,
    );
    assert_eq!(e.counts().skipped, 2);
    assert_eq!(e.state(), RunState::Running, "x is still running");
    ok(&mut e, x, fx, 0, &mut out);
    assert_eq!(e.state(), RunState::Failed);
}

#[test]
fn attempts_are_capped_by_policy() {
    let policy = RetryPolicy { maximum_attempts: 2, ..RetryPolicy::default() };
    let mut e = engine(vec![t("a")], policy);
    let mut out = vec![];
    for fence in 1..=2 {
        let a = dispatch(&mut e, fence, &mut out);
        e.apply(EngineEvent::Lost { subtask: a, fence: Fence(fence), reason: "gone".into() }, 0, &mut out);
    }
    assert_eq!(e.state(), RunState::Failed);
}

#[test]
fn restore_resumes_from_recorded_ends_and_adopts_held_attempts() {
    let rec = |state| RestoredSubtask {
        state,
        attempt: AttemptNo(1),
        worker: None,
        started_us: 0,
        finished_us: 5,
        steps: 1,
        output: Some("1".into()),
        output_ref: None,
        artifacts: None,
        error: None,
        ready_us: None,
        first_started_us: None,
        reused: false,
    };
    let dag = Dag::build(
        &RunSpec::new("t", vec![t("a"), t("b").after(["a"]), t("c").after(["b"]), t("x")]),
        &Limits::default(),
    )
    .expect("valid");
    let dag = Arc::new(dag);
    let (a, b, x) = (dag.index_of("a").expect("a"), dag.index_of("b").expect("b"), dag.index_of("x").expect("x"));
    let mut e = RunEngine::restore(
        RunId::from("r"),
        dag.clone(),
        RetryPolicy::default(),
        0,
        1,
        [(a, rec(SubtaskState::Succeeded))],
    );
    let mut out = vec![];
    e.settle(10, &mut out);
    assert_eq!(e.state(), RunState::Running);
    assert_eq!(e.slot(b).state, SubtaskState::Ready, "a's success unblocks b");
    // x was running on a worker under the previous leader: adopt it instead of re-running.
    e.apply(
        EngineEvent::Adopt { subtask: x, worker: WorkerId::from("w"), fence: Fence(7), attempt: AttemptNo(1) },
        10,
        &mut out,
    );
    assert_eq!(e.slot(x).state, SubtaskState::Running);
    let mut ready = vec![];
    while let Some(i) = e.pop_ready() {
        ready.push(i);
    }
    assert_eq!(ready, vec![b], "an adopted subtask is not dispatched again");
    // A finished subtask is never adopted.
    e.apply(
        EngineEvent::Adopt { subtask: a, worker: WorkerId::from("w"), fence: Fence(8), attempt: AttemptNo(2) },
        10,
        &mut out,
    );
    assert_eq!(e.slot(a).state, SubtaskState::Succeeded);
    // Nor is a blocked one: its dependency (b) has not ended, so it was never dispatched.
    let c = dag.index_of("c").expect("c");
    e.apply(
        EngineEvent::Adopt { subtask: c, worker: WorkerId::from("w"), fence: Fence(9), attempt: AttemptNo(1) },
        10,
        &mut out,
    );
    assert_eq!(e.slot(c).state, SubtaskState::Blocked, "a declared attempt of a blocked subtask is refused");
    ok(&mut e, x, 7, 10, &mut out);
    assert_eq!(e.slot(x).state, SubtaskState::Succeeded);
}

#[test]
fn cancel_ends_run_and_cancels_running_attempts() {
    let mut e = engine(vec![t("a"), t("b"), t("c").after(["a"])], RetryPolicy::default());
    let mut out = vec![];
    let a = dispatch(&mut e, 1, &mut out);
    out.clear();
    e.apply(EngineEvent::CancelRequested, 5, &mut out);
    assert_eq!(e.state(), RunState::Cancelled);
    assert!(e.pop_ready().is_none());
    assert_eq!(out.iter().filter(|a| matches!(a, Action::CancelAttempt { .. })).count(), 1);

    // The running one reads CANCELLED with its attempt, stored and said; the rest, never
    // started, SKIPPED with why.
    let slot = e.slot(a);
    assert_eq!((slot.state, slot.attempt), (SubtaskState::Cancelled, AttemptNo(1)));
    assert_eq!(
        slot.error.as_ref().map(|f| (f.kind, f.message.as_str())),
        Some((FailureKind::Cancelled, "the run was cancelled while attempt 1 ran"))
    );
    let persisted: Vec<SubtaskIx> = out
        .iter()
        .filter_map(|x| match x {
            Action::Persist { subtask, .. } => Some(*subtask),
            _ => None,
        })
        .collect();
    assert_eq!(persisted, vec![a], "only what had attempts is stored");
    assert!(out.iter().any(|x| matches!(x, Action::Publish(Update::Failed { subtask, kind: FailureKind::Cancelled, retry_in_us: None, .. }) if *subtask == a)));
    for id in ["b", "c"] {
        let slot = e.slot(e.dag().index_of(id).expect("id"));
        assert_eq!(slot.state, SubtaskState::Skipped, "{id}");
        assert_eq!(slot.error.as_ref().map(|f| f.message.as_str()), Some("not started: the run was cancelled"));
    }
    assert_eq!(e.summary(5).tool_calls_skipped, 2);

    // Rebuilt from what was stored, as an ended run is read back: the same.
    let record = match out.iter().find(|x| matches!(x, Action::Persist { .. })) {
        Some(Action::Persist { record, .. }) => (**record).clone(),
        _ => unreachable!(),
    };
    let mut back = RunEngine::restore(RunId::from("r"), e.dag().clone(), RetryPolicy::default(), 0, 1, [(a, record)]);
    back.skip_unstarted(RunState::Cancelled);
    for i in e.dag().indexes() {
        assert_eq!(
            (back.slot(i).state, back.slot(i).attempt, &back.slot(i).error),
            (e.slot(i).state, e.slot(i).attempt, &e.slot(i).error)
        );
    }
}

/// `n` independent `echo` calls (a hedge budget of n / 10): enough for the latency model; every
/// call takes 100 ms (µs times) unless said otherwise.
fn wide_n(n: usize) -> RunEngine {
    engine((0..n).map(|i| t(&format!("c{i}"))).collect(), RetryPolicy { jitter: 0.0, ..RetryPolicy::default() })
}

/// Dispatches every ready call at `at` with fences from `first`; returns them in order.
fn wide() -> RunEngine {
    wide_n(100)
}

/// What a run of 100 subtasks may spend before its first win: its cap (10 %) or the warm-up.
fn warmup_of_100() -> usize {
    (speculation::WARMUP_HEDGES as usize).min(10)
}

fn dispatch_all(e: &mut RunEngine, first: u64, at: u64, out: &mut Vec<Action>) -> Vec<(SubtaskIx, Fence)> {
    let mut started = Vec::new();
    let mut fence = first;
    while let Some(i) = e.pop_ready() {
        e.apply(EngineEvent::Dispatched { subtask: i, worker: WorkerId::from("w1"), fence: Fence(fence) }, at, out);
        started.push((i, Fence(fence)));
        fence += 1;
    }
    started
}

/// Every call dispatched at 0, the first 60 % finished in 100 ms: the latency model knows the
/// median (100 ms), not yet the 95th percentile, so late is twice the longest call (200 ms).
fn learned(mut e: RunEngine) -> (RunEngine, Vec<(SubtaskIx, Fence)>, Vec<Action>) {
    let mut out = vec![];
    let calls = dispatch_all(&mut e, 1, 0, &mut out);
    for &(i, f) in &calls[..calls.len() * 3 / 5] {
        succeed_at(&mut e, i, f, 0, 100_000, &mut out);
    }
    (e, calls, out)
}

/// The first call speculation would back up at `now`, and its running attempt's fence.
fn first_straggler(e: &RunEngine, calls: &[(SubtaskIx, Fence)], now: u64) -> (SubtaskIx, Fence) {
    let i = e.speculation_candidates(now, |_| true)[0];
    (i, calls.iter().find(|(c, _)| *c == i).expect("call").1)
}

fn start_backup(e: &mut RunEngine, i: SubtaskIx, fence: Fence, now: u64, out: &mut Vec<Action>) {
    e.apply(EngineEvent::BackupDispatched { subtask: i, worker: WorkerId::from("w2"), fence }, now, out);
}

fn succeed_at(e: &mut RunEngine, i: SubtaskIx, fence: Fence, started: u64, finished: u64, out: &mut Vec<Action>) {
    let ev = EngineEvent::Succeeded {
        subtask: i,
        fence,
        started_us: started,
        finished_us: finished,
        output: "1".into(),
        artifacts: None,
    };
    e.apply(ev, finished, out);
}

#[test]
fn a_retried_attempt_is_not_a_straggler_for_its_earlier_attempts() {
    let mut e = wide();
    let mut out = vec![];
    let calls = dispatch_all(&mut e, 1, 0, &mut out);
    // 60 finish in 100 ms: the model's threshold is then max(1.5 × 100, 2 × 100) ms.
    for &(i, f) in &calls[..60] {
        succeed_at(&mut e, i, f, 0, 100_000, &mut out);
    }
    // c60 failed at once and is retried 2 s later; its retry has run 10 ms.
    let (late, f) = calls[60];
    let failed = EngineEvent::Failed {
        subtask: late,
        fence: f,
        kind: FailureKind::Transient,
        message: "503".into(),
        started_us: 0,
        finished_us: 1_000,
    };
    e.apply(failed, 1_000, &mut out);
    e.apply(EngineEvent::RetryDue { subtask: late }, 2_000_000, &mut out);
    let again = e.pop_ready().expect("the retry");
    e.apply(
        EngineEvent::Dispatched { subtask: again, worker: WorkerId::from("w2"), fence: Fence(100) },
        2_000_000,
        &mut out,
    );
    let now = 2_010_000;
    let candidates = e.speculation_candidates(now, |_| true);
    assert!(!candidates.contains(&late), "a retry 10 ms old was taken for a straggler");
    // The 39 still running since 0 are stragglers (2 s against a 200 ms threshold).
    assert_eq!(candidates.len(), warmup_of_100(), "the warm-up budget: {candidates:?}");
}

#[test]
fn speculation_that_never_wins_stops_spending_and_a_win_earns_more() {
    let (mut e, calls, mut out) = learned(wide_n(400));
    let now = 1_000_000;
    let first = e.speculation_candidates(now, |_| true);
    assert_eq!(first.len(), speculation::WARMUP_HEDGES as usize);
    let mut fence = 1_000;
    let mut backups = Vec::new();
    for &i in &first {
        fence += 1;
        e.apply(
            EngineEvent::BackupDispatched { subtask: i, worker: WorkerId::from("w2"), fence: Fence(fence) },
            now,
            &mut out,
        );
        backups.push((i, Fence(fence)));
    }
    // The originals win every race: nothing more is spent.
    for &(i, _) in &backups {
        let original = calls.iter().find(|(c, _)| *c == i).expect("call").1;
        succeed_at(&mut e, i, original, 0, now + 1_000, &mut out);
    }
    // (Later: the four slow originals raised the model's 95th percentile to 1 s.)
    let later = now + 2_000_000;
    assert!(e.speculation_candidates(later, |_| true).is_empty(), "spent without winning");
    // A backup that wins earns HEDGES_PER_WIN more.
    let rest: Vec<SubtaskIx> = calls[240..].iter().map(|c| c.0).filter(|i| !first.contains(i)).collect();
    e.counts.speculative_wins += 1;
    let next = e.speculation_candidates(later, |_| true);
    // Within the run's cap: 10 % of 400 subtasks.
    let cap = 40 - speculation::WARMUP_HEDGES as usize;
    assert_eq!(next.len(), (speculation::HEDGES_PER_WIN as usize).min(rest.len()).min(cap));
}

#[test]
fn a_preempted_backup_is_cancelled_refunded_and_its_late_report_ignored() {
    let (mut e, calls, mut out) = learned(wide());
    let now = 1_000_000;
    let i = e.speculation_candidates(now, |_| true)[0];
    start_backup(&mut e, i, Fence(300), now, &mut out);
    let running = e.counts().running;
    out.clear();
    e.apply(EngineEvent::BackupPreempted { subtask: i, fence: Fence(300) }, now + 1, &mut out);
    assert!(out.contains(&Action::CancelAttempt { worker: WorkerId::from("w2"), fence: Fence(300) }), "{out:?}");
    assert_eq!(e.counts().running, running - 1);
    assert!(e.slot(i).backups.is_empty());
    // Refunded against the run's cap, though not against what wins must earn.
    assert_eq!(
        e.speculation_candidates(now + 2, |_| true).len(),
        warmup_of_100().min(speculation::WARMUP_HEDGES as usize - 1)
    );
    // The cancelled backup's report changes nothing; the original still decides.
    succeed_at(&mut e, i, Fence(300), now, now + 5, &mut out);
    assert_eq!(e.slot(i).state, SubtaskState::Running);
    let original = calls.iter().find(|(c, _)| *c == i).expect("call").1;
    succeed_at(&mut e, i, original, 0, now + 10, &mut out);
    assert_eq!(e.slot(i).state, SubtaskState::Succeeded);
    assert_eq!(e.counts().speculative_wins, 0);
}

#[test]
fn backups_never_count_as_retries_nor_raise_the_backoff() {
    let (mut e, calls, mut out) = learned(wide());
    let now = 1_000_000;
    let (i, original) = first_straggler(&e, &calls, now);
    start_backup(&mut e, i, Fence(500), now, &mut out);
    let fail = |fence| EngineEvent::Failed {
        subtask: i,
        fence,
        kind: FailureKind::Transient,
        message: "503".into(),
        started_us: now,
        finished_us: now + 1,
    };
    // The original fails: dropped, the backup runs on; then the backup fails too.
    e.apply(fail(original), now + 1, &mut out);
    assert_eq!(e.slot(i).state, SubtaskState::Running);
    out.clear();
    e.apply(fail(Fence(500)), now + 2, &mut out);
    // One failure of attempt 1, retried after the policy's first interval (100 ms, no jitter).
    let failed: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Publish(Update::Failed { attempt, retry_in_us, .. }) => Some((attempt.0, *retry_in_us)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(1, Some(100_000))]);
    e.apply(EngineEvent::RetryDue { subtask: i }, now + 100_002, &mut out);
    let again = e.pop_ready().expect("the retry");
    e.apply(
        EngineEvent::Dispatched { subtask: again, worker: WorkerId::from("w3"), fence: Fence(600) },
        now + 100_002,
        &mut out,
    );
    assert_eq!(e.slot(i).attempt.0, 2, "the retry is attempt 2, whatever backups ran");
}

#[test]
fn the_first_finishers_of_a_batch_do_not_make_the_rest_look_late() {
    // 100 calls start together; the 20 fastest finish in 20–39 ms. Those 20 alone would say the
    // 95th percentile is 39 ms and all 80 still running at 60 ms are late; the 80 running are
    // censored samples, so the median is not known yet and nothing is.
    let mut e = wide();
    let mut out = vec![];
    let calls = dispatch_all(&mut e, 1, 0, &mut out);
    for (k, &(i, f)) in calls[..20].iter().enumerate() {
        succeed_at(&mut e, i, f, 0, 20_000 + k as u64 * 1_000, &mut out);
    }
    assert!(e.speculation_candidates(60_000, |_| true).is_empty());
    // When most have finished (by 100 ms) the median is known; the 95th percentile is not (10
    // still run), so late is twice the longest finished call: 200 ms.
    for &(i, f) in &calls[20..90] {
        succeed_at(&mut e, i, f, 0, 100_000, &mut out);
    }
    assert!(e.speculation_candidates(199_000, |_| true).is_empty());
    let late = e.speculation_candidates(201_000, |_| true);
    assert_eq!(late.len(), 10, "the ten calls 10 × slower than the rest: {late:?}");
}

#[test]
fn a_late_backup_gets_another_beside_it_and_the_first_finisher_cancels_the_others() {
    let (mut e, calls, mut out) = learned(wide());
    let now = 1_000_000;
    let (i, original) = first_straggler(&e, &calls, now);
    let running = e.counts().running;
    start_backup(&mut e, i, Fence(500), now, &mut out);
    // The backup is judged on its own clock: not late 150 ms in, late 250 ms in (200 ms).
    assert!(e.speculation_candidates(now + 150_000, |c| c == i).is_empty());
    assert_eq!(e.speculation_candidates(now + 250_000, |c| c == i), vec![i]);
    let ev = EngineEvent::BackupDispatched { subtask: i, worker: WorkerId::from("w3"), fence: Fence(501) };
    e.apply(ev, now + 250_000, &mut out);
    assert_eq!(e.slot(i).backups.len(), 2);
    assert_eq!(e.counts().running, running + 2, "nothing was cancelled for being late");
    // Two backups at most.
    assert!(e.speculation_candidates(now + 900_000, |c| c == i).is_empty());
    // The first backup finishes first: the original and the second backup are cancelled.
    out.clear();
    succeed_at(&mut e, i, Fence(500), now, now + 300_000, &mut out);
    assert_eq!(e.slot(i).state, SubtaskState::Succeeded);
    let cancelled: Vec<Fence> = out
        .iter()
        .filter_map(|a| match a {
            Action::CancelAttempt { fence, .. } => Some(*fence),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![original, Fence(501)]);
    assert_eq!(e.counts().running, running - 1);
    assert_eq!(e.counts().speculative_wins, 1);
    assert_eq!(e.slot(i).timing.straggler_us, now, "the original ran 1 s before the winner started");
    // The losers' late reports change nothing.
    succeed_at(&mut e, i, original, 0, now + 400_000, &mut out);
    succeed_at(&mut e, i, Fence(501), now, now + 400_000, &mut out);
    assert_eq!(e.counts().running, running - 1);
    assert_eq!(e.counts().succeeded, 61);
}

#[test]
fn when_the_original_fails_the_oldest_backup_carries_on_and_the_other_still_races() {
    let (mut e, calls, mut out) = learned(wide());
    let now = 1_000_000;
    let (i, original) = first_straggler(&e, &calls, now);
    let running = e.counts().running;
    start_backup(&mut e, i, Fence(500), now, &mut out);
    start_backup(&mut e, i, Fence(501), now + 250_000, &mut out);
    let lost = EngineEvent::Lost { subtask: i, fence: original, reason: "worker gone".into() };
    e.apply(lost, now + 260_000, &mut out);
    assert_eq!(e.slot(i).state, SubtaskState::Running);
    assert_eq!(e.slot(i).fence, Fence(500));
    assert_eq!(e.slot(i).backups.iter().map(|b| b.fence).collect::<Vec<_>>(), vec![Fence(501)]);
    assert_eq!(e.counts().running, running + 1);
    // The second backup wins over the first, now the current attempt.
    succeed_at(&mut e, i, Fence(501), now + 250_000, now + 270_000, &mut out);
    assert_eq!(e.slot(i).state, SubtaskState::Succeeded);
    assert_eq!(e.slot(i).attempt.0, 1, "no retry was spent");
    assert_eq!(e.counts().running, running - 1);
}
