//! Approvals: subtasks a person decides. One that becomes ready is parked (`Waiting`, holding
//! no slot and no worker), announced ([`Update::ApprovalRequested`]) and, with a timeout, given
//! a timer; [`EngineEvent::Signal`] (or the timer, with its `on_timeout`) ends it: approved, it
//! succeeds with the approver's payload as its output; rejected, it fails `permanent` and its
//! dependents are skipped. A decision is recorded like any subtask's end, so it survives a
//! failover; an undecided approval is parked again by the next leader.

use super::*;
use crate::AttemptNo;
use crate::spec::OnTimeout;

/// How a signalled approval ended, for the caller (and a repeated signal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Approved now, or earlier: its output (the payload).
    Approved { output: Arc<str>, earlier: bool },
    /// Rejected now, or earlier: the reason.
    Rejected { reason: String, earlier: bool },
}

/// Why a signal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalError {
    /// The subtask is not an approval.
    NotAnApproval,
    /// It is not waiting for a decision yet (its dependencies have not all succeeded).
    NotYetWaiting,
    /// It ended without a decision (skipped, cancelled).
    Unresolvable(SubtaskState),
}

impl RunEngine {
    /// The approvals of the DAG (computed once; empty for most runs).
    pub(super) fn with_approvals(mut self) -> Self {
        self.approvals = self.dag.indexes().filter(|&i| matches!(self.dag.node(i).work, Work::Approval(_))).collect();
        self
    }

    /// Parks approvals that became ready (after each event, and when a run starts or resumes).
    pub(super) fn park_approvals(&mut self, now_us: u64, out: &mut Vec<Action>) {
        for k in 0..self.approvals.len() {
            let i = self.approvals[k];
            let Work::Approval(spec) = &self.dag.node(i).work else { continue };
            let slot = &mut self.slots[i.index()];
            if slot.state != SubtaskState::Ready {
                continue;
            }
            slot.state = SubtaskState::Waiting;
            slot.attempt = AttemptNo(1);
            slot.first_started_us = Some(now_us);
            slot.started_us = now_us;
            let deadline_us = spec.timeout.map(|t| now_us.saturating_add(t.as_micros() as u64));
            out.push(Action::Publish(Update::ApprovalRequested {
                subtask: i,
                prompt: spec.prompt.clone(),
                deadline_us,
                on_timeout: spec.on_timeout,
            }));
            if let Some(at_us) = deadline_us {
                out.push(Action::ArmTimer { subtask: i, at_us });
            }
        }
    }

    /// True when the run has approvals.
    pub fn has_approvals(&self) -> bool {
        !self.approvals.is_empty()
    }

    /// True when subtask `i` is an approval waiting for a decision.
    pub fn awaits_decision(&self, i: SubtaskIx) -> bool {
        matches!(self.dag.node(i).work, Work::Approval(_))
            && self.slots.get(i.index()).is_some_and(|s| s.state == SubtaskState::Waiting)
    }

    /// What a signal for subtask `i` would be answered with, without applying it: the earlier
    /// decision when there was one, or why it would be refused. `Ok(None)`: it waits.
    pub fn signal_outcome(&self, i: SubtaskIx) -> Result<Option<Decided>, SignalError> {
        if !matches!(self.dag.node(i).work, Work::Approval(_)) {
            return Err(SignalError::NotAnApproval);
        }
        let slot = &self.slots[i.index()];
        match slot.state {
            SubtaskState::Waiting => Ok(None),
            SubtaskState::Blocked | SubtaskState::Ready => Err(SignalError::NotYetWaiting),
            SubtaskState::Succeeded => Ok(Some(Decided::Approved {
                output: slot.output.clone().unwrap_or_else(|| "null".into()),
                earlier: true,
            })),
            SubtaskState::Failed => Ok(Some(Decided::Rejected {
                reason: slot.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
                earlier: true,
            })),
            other => Err(SignalError::Unresolvable(other)),
        }
    }

    /// A decision for approval `subtask` (see [`EngineEvent::Signal`]); ignored unless it waits.
    pub(super) fn decide(
        &mut self,
        subtask: SubtaskIx,
        approve: bool,
        payload: Arc<str>,
        reason: String,
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        if !self.awaits_decision(subtask) {
            return;
        }
        if !approve {
            self.failed(subtask, FailureKind::Permanent, reason, now_us, out);
            return;
        }
        let slot = &mut self.slots[subtask.index()];
        slot.state = SubtaskState::Succeeded;
        slot.finished_us = now_us;
        slot.timing.done_us = Some(now_us);
        slot.output = Some(payload);
        let attempt = slot.attempt;
        let duration_us = now_us.saturating_sub(slot.started_us);
        self.counts.succeeded += 1;
        self.counts.open -= 1;
        out.push(Action::Publish(Update::Succeeded { subtask, attempt, duration_us }));
        out.push(self.persist(subtask));
        self.release_dependents(subtask, now_us);
        self.check_finished(now_us, out);
    }

    /// The timer of approval `subtask` fired: past its deadline it decides as `on_timeout` says.
    pub(super) fn approval_timer(&mut self, subtask: SubtaskIx, now_us: u64, out: &mut Vec<Action>) {
        let Work::Approval(spec) = &self.dag.node(subtask).work else { return };
        let Some(timeout) = spec.timeout else { return };
        let on_timeout = spec.on_timeout;
        let slot = &self.slots[subtask.index()];
        let parked = slot.first_started_us.unwrap_or(now_us);
        if slot.state != SubtaskState::Waiting || now_us < parked.saturating_add(timeout.as_micros() as u64) {
            return;
        }
        let after = crate::spec::format_duration(timeout);
        match on_timeout {
            OnTimeout::Approve => {
                let payload: Arc<str> = serde_json::json!({ "timed_out": true, "after": after }).to_string().into();
                self.decide(subtask, true, payload, String::new(), now_us, out)
            }
            OnTimeout::Reject => self.decide(
                subtask,
                false,
                "null".into(),
                format!("no decision within {after}: rejected (on_timeout)"),
                now_us,
                out,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::engine::{Action, Decided, EngineEvent, RunEngine, RunState, SignalError, SubtaskState, Update};
    use crate::ids::{Fence, RunId, WorkerId};
    use crate::spec::{ApprovalSpec, OnTimeout, RunSpec, SubtaskKind, SubtaskSpec};
    use crate::{Dag, Limits, RetryPolicy};

    fn gate(timeout: Option<Duration>, on_timeout: OnTimeout) -> SubtaskSpec {
        let approval = ApprovalSpec { prompt: "Publish?".into(), timeout, on_timeout };
        SubtaskSpec {
            kind: SubtaskKind::Approval(approval),
            ..SubtaskSpec::tool("gate", "echo", serde_json::json!({}))
        }
    }

    /// gate (an approval), a (a tool call beside it), b (after gate); started and settled at 0.
    fn engine(g: SubtaskSpec) -> (RunEngine, Vec<Action>) {
        let spec = RunSpec::new(
            "approve",
            vec![
                g,
                SubtaskSpec::tool("a", "echo", serde_json::json!({})),
                SubtaskSpec::tool("b", "echo", serde_json::json!({})).after(["gate"]),
            ],
        );
        let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid"));
        let mut e = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 1);
        let mut out = Vec::new();
        e.settle(0, &mut out);
        (e, out)
    }

    fn ix(e: &RunEngine, id: &str) -> crate::SubtaskIx {
        e.dag().index_of(id).expect(id)
    }

    fn run_a(e: &mut RunEngine, out: &mut Vec<Action>) {
        let a = e.pop_ready().expect("a is ready");
        assert_eq!(a, ix(e, "a"), "only the tool call is dispatched");
        e.apply(EngineEvent::Dispatched { subtask: a, worker: WorkerId::from("w"), fence: Fence(1) }, 1, out);
        let done =
            EngineEvent::Succeeded { subtask: a, fence: Fence(1), started_us: 1, finished_us: 2, output: "1".into() };
        e.apply(done, 2, out);
    }

    #[test]
    fn an_approval_parks_without_a_slot_and_an_approval_releases_its_dependents_with_the_payload() {
        let (mut e, out) = engine(gate(None, OnTimeout::Reject));
        let g = ix(&e, "gate");
        let requested = Update::ApprovalRequested {
            subtask: g,
            prompt: "Publish?".into(),
            deadline_us: None,
            on_timeout: OnTimeout::Reject,
        };
        assert!(out.contains(&Action::Publish(requested)), "{out:?}");
        assert_eq!(e.slot(g).state, SubtaskState::Waiting);
        let mut out = Vec::new();
        run_a(&mut e, &mut out);
        assert!(e.pop_ready().is_none(), "b waits for the decision; the approval is never dispatched");
        assert_eq!(e.signal_outcome(ix(&e, "b")), Err(SignalError::NotAnApproval));
        assert_eq!(e.signal_outcome(g), Ok(None));
        let signal =
            EngineEvent::Signal { subtask: g, approve: true, payload: r#"{"ok":true}"#.into(), reason: String::new() };
        e.apply(signal, 10, &mut out);
        assert_eq!(e.slot(g).state, SubtaskState::Succeeded);
        assert_eq!(e.slot(g).output.as_deref(), Some(r#"{"ok":true}"#));
        assert!(out.iter().any(|a| matches!(a, Action::Persist { subtask, .. } if *subtask == g)), "recorded: {out:?}");
        assert_eq!(e.pop_ready(), Some(ix(&e, "b")));
        // A second decision changes nothing; the first is what a repeated signal is told.
        let again = EngineEvent::Signal { subtask: g, approve: false, payload: "null".into(), reason: "no".into() };
        e.apply(again, 11, &mut out);
        assert_eq!(e.slot(g).state, SubtaskState::Succeeded);
        assert_eq!(e.signal_outcome(g), Ok(Some(Decided::Approved { output: r#"{"ok":true}"#.into(), earlier: true })));
    }

    #[test]
    fn a_rejection_fails_the_approval_permanently_and_skips_its_dependents() {
        let (mut e, _) = engine(gate(None, OnTimeout::Reject));
        let g = ix(&e, "gate");
        let mut out = Vec::new();
        run_a(&mut e, &mut out);
        let signal = EngineEvent::Signal {
            subtask: g,
            approve: false,
            payload: "null".into(),
            reason: "rejected: not yet".into(),
        };
        e.apply(signal, 10, &mut out);
        assert_eq!(e.slot(g).state, SubtaskState::Failed);
        assert_eq!(e.slot(g).error.as_ref().map(|f| f.kind), Some(crate::FailureKind::Permanent));
        assert_eq!(e.slot(ix(&e, "b")).state, SubtaskState::Skipped);
        assert_eq!(e.state(), RunState::Failed);
        assert!(matches!(e.signal_outcome(g), Ok(Some(Decided::Rejected { earlier: true, .. }))));
    }

    #[test]
    fn a_timeout_decides_as_on_timeout_says_and_not_before() {
        for (on_timeout, approved) in [(OnTimeout::Approve, true), (OnTimeout::Reject, false)] {
            let (mut e, out) = engine(gate(Some(Duration::from_secs(60)), on_timeout));
            let g = ix(&e, "gate");
            assert!(out.contains(&Action::ArmTimer { subtask: g, at_us: 60_000_000 }), "{out:?}");
            let mut out = Vec::new();
            e.apply(EngineEvent::RetryDue { subtask: g }, 59_000_000, &mut out);
            assert_eq!(e.slot(g).state, SubtaskState::Waiting, "an early timer changes nothing");
            e.apply(EngineEvent::RetryDue { subtask: g }, 60_000_000, &mut out);
            let want = if approved { SubtaskState::Succeeded } else { SubtaskState::Failed };
            assert_eq!(e.slot(g).state, want);
            if approved {
                assert_eq!(e.slot(g).output.as_deref(), Some(r#"{"after":"1m","timed_out":true}"#));
            } else {
                let message = e.slot(g).error.as_ref().map(|f| f.message.clone()).unwrap_or_default();
                assert!(message.contains("no decision within 1m"), "{message}");
            }
        }
    }

    #[test]
    fn a_spec_gets_approvals_from_yaml_and_refuses_bad_ones() {
        let spec: RunSpec = serde_json::from_str(
            r#"{"name": "x", "subtasks": [{"id": "ok", "approval": {"prompt": "Publish?", "timeout": "1h", "on_timeout": "approve"}}]}"#,
        )
        .expect("parses");
        let SubtaskKind::Approval(a) = &spec.subtasks[0].kind else { panic!("an approval") };
        assert_eq!((a.timeout, a.on_timeout), (Some(Duration::from_secs(3600)), OnTimeout::Approve));
        let bad = RunSpec::new("x", vec![gate(Some(Duration::from_secs(8 * 24 * 3600)), OnTimeout::Reject)]);
        let err = Dag::build(&bad, &Limits::default()).expect_err("too long");
        assert!(format!("{err:?}").contains("approval.timeout"), "{err:?}");
    }
}
