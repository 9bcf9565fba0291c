//! `ForkRun` and `GetTranscript` on the leader (see [`crate::fork`]).

use swarm_core::RunId;
use swarm_proto::ApiError;
use swarm_proto::pb;
use swarm_store::repo::Created;

use super::mutations::run_id;
use super::{SwarmApi, idempotency_key, store_error};
use crate::auth::Principal;
use crate::fork::ForkRequest;
use crate::manager::{Command, RunSize, now_us};

impl SwarmApi {
    pub(super) async fn fork(&self, req: pb::ForkRunRequest, who: &Principal) -> Result<pb::ForkRunResponse, ApiError> {
        let source = run_id(&req.run_id)?;
        if req.from_subtask.is_empty() {
            return Err(ApiError::invalid("from_subtask", "required: the subtask to run again from"));
        }
        let key = idempotency_key(req.idempotency_key, who)?;
        // Another tenant's run is not there, as far as this caller can tell.
        self.check_visible(&source, who).await?;
        let ctx = self.leader().await?;
        let fork = ForkRequest { run_id: source, from: req.from_subtask, patch: req.patch, from_step: req.from_step };
        let submitted_us = now_us();
        let new_id = RunId::generate(submitted_us / 1000);
        let mut plan = crate::fork::plan(&ctx.repo, &self.limits, &fork, new_id.clone(), submitted_us).await?;
        let (size, dag, tenant) = (RunSize::of(&plan.run.dag), plan.run.dag.clone(), who.tenant.clone());
        ctx.manager.call(|reply| Command::Admit { size, tenant, dag, reply }).await??;
        let span = crate::telemetry::workflow_span(Some(&tracing::Span::current()), &plan.spec.name, new_id.as_str());
        let header = &mut plan.run.header;
        header.idempotency_key = key;
        header.tenant = who.tenant.clone();
        header.term = ctx.repo.term();
        header.trace_context = swarm_telemetry::inject(&span).into_iter().collect();
        // What the fork reuses is written first, its header last: until then it is invisible.
        ctx.repo.write_batch(&plan.ops).await.map_err(store_error)?;
        match ctx.repo.create_run(&plan.run.header, &plan.spec).await.map_err(store_error)? {
            Created::Existing(existing) => {
                let orphans = ctx.repo.delete_run_ops(&new_id, None);
                if let Err(e) = ctx.repo.write_batch(&orphans).await {
                    tracing::warn!(run_id = %new_id, error = %e, "the records of a fork not made are left behind");
                }
                return Ok(pb::ForkRunResponse { run_id: existing.to_string(), created: false, ..Default::default() });
            }
            Created::New => {}
        }
        tracing::info!(
            principal = %who.name, run_id = %new_id, forked_from = %fork.run_id, from = %fork.from,
            reused = plan.reused, rerun = plan.rerun, "run forked"
        );
        let (reused, rerun) = (plan.reused, plan.rerun);
        let run = Box::new(plan.run);
        ctx.manager.call(|reply| Command::StartFork { run, span, reply }).await?;
        Ok(pb::ForkRunResponse { run_id: new_id.to_string(), reused, rerun, created: true })
    }

    pub(super) async fn transcript(
        &self,
        req: pb::GetTranscriptRequest,
        who: &Principal,
    ) -> Result<pb::GetTranscriptResponse, ApiError> {
        let id = run_id(&req.run_id)?;
        self.check_visible(&id, who).await?;
        let repo = self.reads();
        let spec = repo.spec(&id).await.map_err(store_error)?;
        let spec = spec.ok_or_else(|| ApiError::NotFound(format!("run {id} (or its records were deleted)")))?;
        let mut agent = spec.subtasks.iter().find(|s| s.id.as_str() == req.subtask_id).and_then(|s| match &s.kind {
            swarm_core::SubtaskKind::Agent(a) => serde_json::to_string(a).ok(),
            swarm_core::SubtaskKind::Orchestrator(o) => serde_json::to_string(o).ok(),
            _ => None,
        });
        if agent.is_none() {
            // A subagent: its spec is in its orchestrator's stage.
            let spawns = repo.spawns(&id).await.map_err(store_error)?;
            agent = spawns
                .iter()
                .flat_map(|(_, _, cs)| cs)
                .find(|c| c.id.as_str() == req.subtask_id)
                .and_then(|c| serde_json::to_string(&c.agent).ok());
        }
        let Some(agent_json) = agent else {
            return Err(ApiError::NotFound(format!("agent `{}` of run {id}", req.subtask_id)));
        };
        let turns: Vec<swarm_core::agent::Turn> = repo
            .turns(&id)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|(s, _, _)| s.as_str() == req.subtask_id)
            .map(|(_, _, t)| t)
            .collect();
        let turns_json = serde_json::to_string(&turns).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(pb::GetTranscriptResponse { turns_json, agent_json })
    }
}
