//! Approvals decided through `SignalRun`: the decision is applied to the run's engine, and the
//! answer waits until the outbox has made it durable, so a failover right after keeps what the
//! caller was told.

use swarm_core::{EngineEvent, RunId};
use swarm_proto::ApiError;
use swarm_proto::pb;
use tokio::sync::oneshot;
use tracing::info;

use super::{Listed, Manager};

/// The largest approval payload (it becomes the approval's output, kept inline).
pub const MAX_SIGNAL_PAYLOAD_BYTES: usize = 64 * 1024;
/// What a signal for an ended run's approval is told by the manager (the API then reads the
/// decision from the store).
pub const ENDED: &str = "the run has ended";

/// Where a `SignalRun` answer goes.
pub(super) type SignalReply = oneshot::Sender<Result<pb::SignalRunResponse, ApiError>>;

/// An answer to send once what it tells is durable.
pub(super) type Answer = Box<dyn FnOnce() + Send>;

impl Manager {
    /// `Command::Signal`: refused at once, or answered once the decision is durable.
    pub(super) fn signal_command(&mut self, request: pb::SignalRunRequest, reply: SignalReply) {
        match self.signal(request) {
            Ok(answer) => self.answer_when_durable(Box::new(move || drop(reply.send(Ok(answer))))),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Sends `answer` once every write handed to the outbox so far has settled.
    pub(super) fn answer_when_durable(&mut self, answer: Answer) {
        self.durable_replies.push((self.outbox.queued(), answer));
    }

    /// Sends the answers whose writes the outbox has settled.
    pub(super) fn answer_settled(&mut self) {
        if self.durable_replies.is_empty() {
            return;
        }
        let settled = self.outbox.settled();
        let (due, wait): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.durable_replies).into_iter().partition(|(mark, _)| *mark <= settled);
        self.durable_replies = wait;
        for (_, answer) in due {
            answer();
        }
    }

    /// Decides an approval of a live run (`SignalRun`); a decided one answers with its first
    /// decision. An ended run's approvals are answered by the API from the store
    /// ([`ApiError::FailedPrecondition`] here says so).
    fn signal(&mut self, request: pb::SignalRunRequest) -> Result<pb::SignalRunResponse, ApiError> {
        use swarm_core::engine::{Decided, SignalError};
        let run_id = RunId::from(request.run_id.as_str());
        let key = match self.listing.get(&run_id) {
            Some(Listed::Live(k)) => *k,
            Some(Listed::Archived { .. }) => return Err(ApiError::FailedPrecondition(ENDED.into())),
            None => return Err(ApiError::NotFound(format!("run {run_id}"))),
        };
        let entry = self.runs.get(&key).ok_or_else(|| ApiError::NotFound(format!("run {run_id}")))?;
        let subtask = entry
            .engine
            .dag()
            .index_of(request.subtask_id.as_str())
            .ok_or_else(|| ApiError::NotFound(format!("subtask {} of run {run_id}", request.subtask_id)))?;
        let approve = match pb::Decision::try_from(request.decision) {
            Ok(pb::Decision::Approve) => true,
            Ok(pb::Decision::Reject) => false,
            _ => return Err(ApiError::invalid("decision", "must be APPROVE or REJECT")),
        };
        let answer = |d: &Decided| match d {
            Decided::Approved { output, earlier } => pb::SignalRunResponse {
                decision: pb::Decision::Approve.into(),
                already_decided: *earlier,
                payload_json: output.to_string(),
                reason: String::new(),
            },
            Decided::Rejected { reason, earlier } => pb::SignalRunResponse {
                decision: pb::Decision::Reject.into(),
                already_decided: *earlier,
                payload_json: String::new(),
                reason: reason.clone(),
            },
        };
        match entry.engine.signal_outcome(subtask) {
            Ok(Some(earlier)) => return Ok(answer(&earlier)),
            Ok(None) => {}
            Err(SignalError::NotAnApproval) => {
                return Err(ApiError::invalid("subtask_id", format!("{} is not an approval", request.subtask_id)));
            }
            Err(SignalError::NotAsking) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "agent {} has not asked for a decision (request_approval)",
                    request.subtask_id
                )));
            }
            Err(SignalError::NotYetWaiting) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "approval {} is not waiting for a decision yet (its dependencies have not all succeeded)",
                    request.subtask_id
                )));
            }
            Err(SignalError::Unresolvable(state)) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "approval {} ended {} without a decision",
                    request.subtask_id,
                    format!("{state:?}").to_uppercase()
                )));
            }
        }
        let payload: std::sync::Arc<str> = if !approve || request.payload_json.trim().is_empty() {
            "null".into()
        } else {
            match serde_json::from_str::<serde_json::Value>(&request.payload_json) {
                Ok(v) => v.to_string().into(),
                Err(e) => return Err(ApiError::invalid("payload_json", format!("invalid JSON: {e}"))),
            }
        };
        if payload.len() > MAX_SIGNAL_PAYLOAD_BYTES {
            return Err(ApiError::invalid(
                "payload_json",
                format!("{} bytes exceed the limit of {MAX_SIGNAL_PAYLOAD_BYTES}", payload.len()),
            ));
        }
        let reason = match request.reason.trim() {
            "" => "rejected by the approver".to_owned(),
            r => format!("rejected: {}", swarm_core::error::bounded_message(r.to_owned())),
        };
        info!(run_id = %run_id, subtask = %request.subtask_id, approve, "approval decided");
        self.apply(key, EngineEvent::Signal { subtask, approve, payload, reason });
        let entry = self.runs.get(&key).ok_or_else(|| ApiError::Internal("signalled run vanished".into()))?;
        match entry.engine.signal_outcome(subtask) {
            Ok(Some(Decided::Approved { output, .. })) => Ok(answer(&Decided::Approved { output, earlier: false })),
            Ok(Some(Decided::Rejected { reason, .. })) => Ok(answer(&Decided::Rejected { reason, earlier: false })),
            _ => Err(ApiError::Internal("the decision was not applied".into())),
        }
    }
}
