//! The mutating calls' leader-side bodies (`CancelRun`, `SignalRun`) and their audit records.

use tonic::{Response, Status};

use super::*;

impl SwarmApi {
    /// Records a mutating call in the audit log (see [`crate::audit`]).
    pub(super) fn audit<T>(
        &self,
        who: &Principal,
        action: crate::audit::Action,
        run_id: &str,
        result: &Result<T, Status>,
        extra: &[(&str, serde_json::Value)],
    ) {
        self.audit.record(who, action, run_id, result.as_ref().map(|_| ()), extra);
    }

    /// `CancelRun` on the leader.
    pub(super) async fn cancel(
        &self,
        req: pb::CancelRunRequest,
        who: &Principal,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let run_id = run_id(&req.run_id).map_err(|e| to_status(&e))?;
        self.check_visible(&run_id, who).await.map_err(|e| to_status(&e))?;
        tracing::info!(principal = %who.name, run_id = %run_id, "run cancel requested");
        let reason = req.reason;
        let ctx = self.leader().await.map_err(|e| to_status(&e))?;
        let run = ctx
            .manager
            .call(|reply| Command::Cancel { run_id, reason, reply })
            .await
            .and_then(|r| r)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::CancelRunResponse { run: Some(run) }))
    }

    /// `SignalRun` on the leader.
    pub(super) async fn signal(
        &self,
        req: pb::SignalRunRequest,
        who: &Principal,
    ) -> Result<Response<pb::SignalRunResponse>, Status> {
        let id = run_id(&req.run_id).map_err(|e| to_status(&e))?;
        self.check_visible(&id, who).await.map_err(|e| to_status(&e))?;
        tracing::info!(principal = %who.name, run_id = %id, subtask = %req.subtask_id, decision = req.decision, "approval signal");
        let ctx = self.leader().await.map_err(|e| to_status(&e))?;
        let request = req.clone();
        match ctx.manager.call(|reply| Command::Signal { request, reply }).await.and_then(|r| r) {
            Ok(answer) => Ok(Response::new(answer)),
            // The run has ended: its approvals' decisions are in its stored subtasks.
            Err(ApiError::FailedPrecondition(m)) if m == crate::manager::ENDED => {
                self.decided_in_store(&req, who).await.map(Response::new).map_err(|e| to_status(&e))
            }
            Err(e) => Err(to_status(&e)),
        }
    }
}

/// A run id from a request: required, and no longer than any run's.
pub(super) fn run_id(text: &str) -> Result<RunId, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid("run_id", "required"));
    }
    if text.len() > MAX_RUN_ID {
        return Err(ApiError::invalid("run_id", format!("longer than {MAX_RUN_ID} bytes: no run has such an id")));
    }
    Ok(RunId::from(text))
}
