//! Answers read back from the store: decisions of ended runs, one subtask's status.

use std::sync::Arc;

use swarm_proto::ApiError;
use swarm_proto::pb;

use super::{SwarmApi, store_error};
use crate::auth::Principal;

impl SwarmApi {
    /// A signal for an agent of an ended run: the last decision in its stored transcript.
    async fn agent_decision_in_store(&self, req: &pb::SignalRunRequest) -> Result<pb::SignalRunResponse, ApiError> {
        use swarm_core::engine::Decided;
        let ctx = self.leader().await?;
        let run_id = swarm_core::RunId::from(req.run_id.as_str());
        let mut turns: Vec<(u32, swarm_core::agent::Turn)> = ctx
            .repo
            .turns(&run_id)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|(id, _, _)| id.as_str() == req.subtask_id)
            .map(|(_, n, t)| (n, t))
            .collect();
        turns.sort_by_key(|(n, _)| *n);
        let turns: Vec<Arc<swarm_core::agent::Turn>> = turns.into_iter().map(|(_, t)| Arc::new(t)).collect();
        match swarm_core::engine::decision_in_transcript(&turns) {
            Some(Decided::Approved { output, .. }) => Ok(pb::SignalRunResponse {
                decision: pb::Decision::Approve.into(),
                already_decided: true,
                payload_json: output.to_string(),
                reason: String::new(),
            }),
            Some(Decided::Rejected { reason, .. }) => Ok(pb::SignalRunResponse {
                decision: pb::Decision::Reject.into(),
                already_decided: true,
                payload_json: String::new(),
                reason,
            }),
            None => Err(ApiError::FailedPrecondition(format!(
                "agent {} never had a decision (request_approval) and its run has ended",
                req.subtask_id
            ))),
        }
    }

    /// A signal for an approval of an ended run: its recorded decision, or why there is none.
    pub(super) async fn decided_in_store(
        &self,
        req: &pb::SignalRunRequest,
        who: &Principal,
    ) -> Result<pb::SignalRunResponse, ApiError> {
        let s = self.find_subtask(&req.run_id, &req.subtask_id, who).await?;
        if s.kind == "agent" || s.kind == "orchestrator" {
            return self.agent_decision_in_store(req).await;
        }
        if s.kind != "approval" {
            return Err(ApiError::invalid("subtask_id", format!("{} is not an approval", req.subtask_id)));
        }
        match pb::SubtaskState::try_from(s.state) {
            Ok(pb::SubtaskState::Succeeded) => Ok(pb::SignalRunResponse {
                decision: pb::Decision::Approve.into(),
                already_decided: true,
                payload_json: s.output_json.clone(),
                reason: String::new(),
            }),
            Ok(pb::SubtaskState::Failed) => Ok(pb::SignalRunResponse {
                decision: pb::Decision::Reject.into(),
                already_decided: true,
                payload_json: String::new(),
                reason: s.error_message.clone(),
            }),
            _ => Err(ApiError::FailedPrecondition(format!(
                "approval {} ended without a decision (the run ended first)",
                req.subtask_id
            ))),
        }
    }

    /// One subtask's status, from the run's pages (NOT_FOUND naming what is missing).
    pub(crate) async fn find_subtask(
        &self,
        run_id: &str,
        subtask_id: &str,
        who: &Principal,
    ) -> Result<pb::SubtaskStatus, ApiError> {
        let mut page_token = String::new();
        loop {
            let get = pb::GetRunRequest {
                run_id: run_id.to_owned(),
                include_subtasks: true,
                page_size: 0,
                page_token: std::mem::take(&mut page_token),
            };
            let found = self.get(get, who).await?;
            let mut run = found.run.unwrap_or_default();
            if let Some(i) = run.subtasks.iter().position(|s| s.id == subtask_id) {
                return Ok(run.subtasks.swap_remove(i));
            }
            if found.next_page_token.is_empty() {
                return Err(ApiError::NotFound(format!("subtask {subtask_id} of run {run_id}")));
            }
            page_token = found.next_page_token;
        }
    }
}
