//! Approvals: subtasks a person decides. One that becomes ready is parked (`Waiting`, holding
//! no slot and no worker), announced ([`Update::ApprovalRequested`]) and, with a timeout, given
//! a timer; [`EngineEvent::Signal`] (or the timer, with its `on_timeout`) ends it: approved, it
//! succeeds with the approver's payload as its output; rejected, it fails `permanent` and its
//! dependents are skipped. A decision is recorded like any subtask's end, so it survives a
//! failover; an undecided approval is parked again by the next leader.
//!
//! Agents ask too (`request_approval {question}`): the attempt ends with the turn that asked,
//! the agent waits holding no slot, and the same signal decides; the decision becomes the
//! call's result in its transcript (`{"approved": true, "data": …}` or `{"approved": false,
//! "reason": …}`, stored before the signal is answered) and the agent is ready again. Its
//! transcript is what survives a failover: a last turn asking without an answer parks it
//! again. An agent's question may carry a timeout and the decision that then applies
//! (`request_approval {question, timeout: "10m", on_timeout: approve|reject}`); the timer
//! decides as a person would, the result says `"timed_out": true`, and a warning event names
//! the decision that applied. After a failover the timeout counts again from the new leader's
//! start (a transcript does not hold when the question was put).

use super::*;
use crate::AttemptNo;
use crate::agent::{Message, REQUEST_APPROVAL, Turn};
use crate::spec::OnTimeout;
use crate::spec::Question;
use std::time::Duration;

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
    /// An agent that has not asked (`request_approval`), or not yet.
    NotAsking,
}

/// The longest question an agent may put (longer ones are cut).
pub const MAX_QUESTION_BYTES: usize = 4096;

/// What an agent's `request_approval` call is answered with.
fn decision_result(approve: bool, payload: &str, reason: &str) -> String {
    if approve {
        let data: serde_json::Value = serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
        serde_json::json!({ "approved": true, "data": data }).to_string()
    } else {
        serde_json::json!({ "approved": false, "reason": reason }).to_string()
    }
}

/// A question's timeout and the decision that then applies.
type AskedTimeout = Option<(Duration, OnTimeout)>;

/// The unanswered `request_approval` call of an agent's last turn, if any: (call id, question,
/// its timeout and decision then).
fn unanswered_question(turns: &[Arc<crate::agent::Turn>]) -> Option<(String, String, AskedTimeout)> {
    let last = turns.last()?;
    let answered: std::collections::HashSet<&str> =
        last.messages.iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
    last.messages.iter().flat_map(|m| &m.tool_calls).find_map(|c| {
        (c.name == REQUEST_APPROVAL && !answered.contains(c.id.as_str())).then(|| {
            let (question, timeout) = match Question::parse(&c.arguments) {
                Ok(q) => (q.text, q.timeout.map(|t| (t, q.on_timeout))),
                Err(_) => (String::new(), None),
            };
            (c.id.clone(), question, timeout)
        })
    })
}

/// The timeout and decision then of call `call_id` in `turn` (a `request_approval`), if it
/// asked for one. (The worker refused arguments that do not parse before they got here.)
fn asked_timeout(turn: &Turn, call_id: &str) -> AskedTimeout {
    let call = turn.messages.iter().flat_map(|m| &m.tool_calls).find(|c| c.id == call_id)?;
    let q = Question::parse(&call.arguments).ok()?;
    q.timeout.map(|t| (t, q.on_timeout))
}

/// The last decision in an agent's transcript: the result of its latest `request_approval`.
pub fn decision_in_transcript(turns: &[Arc<crate::agent::Turn>]) -> Option<Decided> {
    let asked: std::collections::HashSet<&str> = turns
        .iter()
        .flat_map(|t| &t.messages)
        .flat_map(|m| &m.tool_calls)
        .filter(|c| c.name == REQUEST_APPROVAL)
        .map(|c| c.id.as_str())
        .collect();
    let result = turns
        .iter()
        .rev()
        .flat_map(|t| t.messages.iter().rev())
        .find(|m| m.tool_call_id.as_deref().is_some_and(|id| asked.contains(id)))?;
    let v: serde_json::Value = serde_json::from_str(result.content.as_deref().unwrap_or("")).ok()?;
    Some(match v.get("approved").and_then(serde_json::Value::as_bool) {
        Some(true) => Decided::Approved { output: v["data"].to_string().into(), earlier: true },
        _ => Decided::Rejected { reason: v["reason"].as_str().unwrap_or_default().to_owned(), earlier: true },
    })
}

impl RunEngine {
    /// The approvals of the DAG (computed once; empty for most runs).
    pub(super) fn with_approvals(mut self) -> Self {
        self.approvals = self.dag.indexes().filter(|&i| matches!(self.dag.node(i).work, Work::Approval(_))).collect();
        self
    }

    /// Parks approvals that became ready (after each event, and when a run starts or resumes),
    /// and announces again the questions of agents a failover found waiting.
    pub(super) fn park_approvals(&mut self, now_us: u64, out: &mut Vec<Action>) {
        for i in std::mem::take(&mut self.announce) {
            let Some(agent) = self.slots[i.index()].agent.as_deref_mut() else { continue };
            let Some((_, prompt)) = agent.asking.clone() else { continue };
            // The timeout counts again from now (see the module docs).
            let deadline = agent.asking_deadline.as_mut().map(|d| {
                d.0 = now_us.saturating_add(d.2.as_micros() as u64);
                *d
            });
            out.push(Action::Publish(Update::ApprovalRequested {
                subtask: i,
                prompt,
                deadline_us: deadline.map(|d| d.0),
                on_timeout: deadline.map_or(OnTimeout::Reject, |d| d.1),
            }));
            if let Some((at_us, _, _)) = deadline {
                out.push(Action::ArmTimer { subtask: i, at_us });
            }
        }
        for k in 0..self.approvals.len() {
            let i = self.approvals[k];
            let Work::Approval(spec) = &self.dag.node(i).work else { continue };
            let slot = &mut self.slots[i.index()];
            if slot.state != SubtaskState::Ready {
                continue;
            }
            slot.state = SubtaskState::Waiting;
            slot.attempt = AttemptNo(1);
            // Parked since then: a failover keeps the time it was first parked (from its
            // record), so a timeout counts from there, not from the new leader's start.
            let parked = *slot.first_started_us.get_or_insert(now_us);
            slot.started_us = parked;
            let deadline_us = spec.timeout.map(|t| parked.saturating_add(t.as_micros() as u64));
            out.push(Action::Publish(Update::ApprovalRequested {
                subtask: i,
                prompt: spec.prompt.clone(),
                deadline_us,
                on_timeout: spec.on_timeout,
            }));
            if let Some(at_us) = deadline_us {
                out.push(Action::ArmTimer { subtask: i, at_us });
            }
            out.push(self.persist(i));
        }
    }

    /// True when the run has approvals.
    pub fn has_approvals(&self) -> bool {
        !self.approvals.is_empty()
    }

    /// True when subtask `i` is an approval, or an agent that asked, waiting for a decision.
    pub fn awaits_decision(&self, i: SubtaskIx) -> bool {
        let Some(slot) = self.slots.get(i.index()) else { return false };
        slot.state == SubtaskState::Waiting
            && (matches!(self.dag.node(i).work, Work::Approval(_))
                || slot.agent.as_ref().is_some_and(|a| a.asking.is_some()))
    }

    /// The question an agent waits on (`request_approval`), if it does.
    pub fn question(&self, i: SubtaskIx) -> Option<&str> {
        let slot = self.slots.get(i.index())?;
        if slot.state != SubtaskState::Waiting {
            return None;
        }
        slot.agent.as_ref()?.asking.as_ref().map(|(_, q)| q.as_str())
    }

    /// An agent asked a person (see [`EngineEvent::AskedApproval`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn asked_approval(
        &mut self,
        subtask: SubtaskIx,
        fence: Fence,
        turn: Arc<Turn>,
        (call_id, question): (String, String),
        (started_us, finished_us): (u64, u64),
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        if !self.is_current(subtask, fence) || self.slots[subtask.index()].agent.is_none() {
            return;
        }
        self.slots[subtask.index()].attempt_ended(started_us, finished_us, false);
        self.counts.running -= 1;
        self.record_turn(subtask, turn, None, out);
        let question = crate::error::bounded_message(question).chars().take(MAX_QUESTION_BYTES).collect::<String>();
        let timeout = self.slots[subtask.index()]
            .agent
            .as_ref()
            .and_then(|a| a.turns.last())
            .and_then(|t| asked_timeout(t, &call_id));
        let deadline = timeout.map(|(t, on)| (now_us.saturating_add(t.as_micros() as u64), on, t));
        let slot = &mut self.slots[subtask.index()];
        slot.state = SubtaskState::Waiting;
        if let Some(agent) = slot.agent.as_deref_mut() {
            agent.asking = Some((call_id, question.clone()));
            agent.asking_deadline = deadline;
        }
        out.push(Action::Publish(Update::ApprovalRequested {
            subtask,
            prompt: question,
            deadline_us: deadline.map(|d| d.0),
            on_timeout: deadline.map_or(OnTimeout::Reject, |d| d.1),
        }));
        if let Some((at_us, _, _)) = deadline {
            out.push(Action::ArmTimer { subtask, at_us });
        }
        self.check_budgets(now_us, out);
    }

    /// After a failover: an agent whose transcript ends asking waits again, and says so.
    pub(super) fn restore_question(&mut self, i: SubtaskIx) {
        let Some(slot) = self.slots.get_mut(i.index()) else { return };
        if slot.state.is_terminal() {
            return;
        }
        let Some(agent) = slot.agent.as_deref_mut() else { return };
        if let Some((call_id, question, timeout)) = unanswered_question(&agent.turns) {
            agent.asking = Some((call_id, question));
            // The deadline is set when it is announced again (park_approvals).
            agent.asking_deadline = timeout.map(|(t, on)| (u64::MAX, on, t));
            slot.state = SubtaskState::Waiting;
            self.announce.push(i);
        }
    }

    /// What a signal for subtask `i` would be answered with, without applying it: the earlier
    /// decision when there was one, or why it would be refused. `Ok(None)`: it waits.
    pub fn signal_outcome(&self, i: SubtaskIx) -> Result<Option<Decided>, SignalError> {
        let slot = &self.slots[i.index()];
        if let Some(agent) = slot.agent.as_deref() {
            if agent.asking.is_some() && slot.state == SubtaskState::Waiting {
                return Ok(None);
            }
            return decision_in_transcript(&agent.turns).map(Some).ok_or(SignalError::NotAsking);
        }
        if !matches!(self.dag.node(i).work, Work::Approval(_)) {
            return Err(SignalError::NotAnApproval);
        }
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
        let slot = &mut self.slots[subtask.index()];
        if let Some(agent) = slot.agent.as_deref_mut()
            && let Some((call_id, _)) = agent.asking.take()
        {
            agent.asking_deadline = None;
            // The decision is the call's result, stored before the signal is answered.
            let result = Message::tool_result(&call_id, decision_result(approve, &payload, &reason));
            agent.turns.push(Arc::new(Turn { messages: vec![result], usage: Default::default(), fence: 0, seq: 0 }));
            let index = agent.turns.len() as u32 - 1;
            slot.state = SubtaskState::Ready;
            slot.ready_since_us = Some(now_us);
            self.ready.push_back(subtask);
            out.push(Action::PersistTurn { subtask, index });
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
        if let Some(agent) = self.slots[subtask.index()].agent.as_deref() {
            self.question_timer(subtask, agent.asking_deadline, now_us, out);
            return;
        }
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

impl RunEngine {
    /// The timer of an agent's question fired: past its deadline the decision it asked for
    /// applies, and a warning says which.
    fn question_timer(
        &mut self,
        subtask: SubtaskIx,
        deadline: Option<(u64, OnTimeout, Duration)>,
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        let Some((at_us, on_timeout, timeout)) = deadline else { return };
        if now_us < at_us || !self.awaits_decision(subtask) {
            return;
        }
        let after = crate::spec::format_duration(timeout);
        let (approve, payload, reason, said) = match on_timeout {
            OnTimeout::Approve => {
                (true, serde_json::json!({ "timed_out": true, "after": after }).to_string(), String::new(), "approved")
            }
            OnTimeout::Reject => {
                (false, "null".to_owned(), format!("no decision within {after}: rejected (on_timeout)"), "rejected")
            }
        };
        out.push(Action::Publish(Update::Warning {
            subtask,
            message: format!("no decision on the agent's question within {after}: {said} (on_timeout)"),
        }));
        self.decide(subtask, approve, payload.into(), reason, now_us, out);
    }
}

#[cfg(test)]
mod tests;
