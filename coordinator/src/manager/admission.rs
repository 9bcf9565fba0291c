//! Admission: the caps that keep the cluster within what it can hold, checked before a run is
//! stored.

use std::time::Duration;

use swarm_proto::ApiError;

use super::Manager;

/// What the cluster admits at once (defaults sized for a 2-core coordinator; see
/// docs/configuration.md). Subtasks per run are capped by spec validation
/// (`Limits::max_subtasks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionCaps {
    /// Runs not yet ended.
    pub max_active_runs: u32,
    /// Subtasks of active runs not yet ended, cluster-wide.
    pub max_queued_subtasks: u64,
    /// Events kept in one run's log; beyond it progress events are counted, not kept (the run
    /// goes on and its final event is always kept).
    pub max_run_events: usize,
}

impl Default for AdmissionCaps {
    fn default() -> Self {
        Self { max_active_runs: 1_000, max_queued_subtasks: 250_000, max_run_events: 1_000_000 }
    }
}

/// What a run asks of the cluster, against the caps and its tenant's quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSize {
    /// Subtasks in its spec.
    pub subtasks: u32,
    /// `limits.max_subagents`, when it has an orchestrator (else 0).
    pub subagents: u32,
    /// `limits.max_tool_calls`, when it has agents (else 0).
    pub tool_calls: u32,
}

impl RunSize {
    /// The size of a validated run.
    pub fn of(dag: &swarm_core::Dag) -> Self {
        let (mut agents, mut orchestrators) = (false, false);
        for node in dag.nodes() {
            match node.work {
                swarm_core::dag::Work::Agent(_) => agents = true,
                swarm_core::dag::Work::Orchestrator(_) => orchestrators = true,
                _ => {}
            }
        }
        let limits = dag.limits();
        Self {
            subtasks: dag.len() as u32,
            subagents: if orchestrators { limits.max_subagents } else { 0 },
            tool_calls: if agents || orchestrators { limits.max_tool_calls } else { 0 },
        }
    }
}

/// How long a refused submit is told to wait before trying again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

impl Manager {
    /// Refuses a run that would take the cluster over an admission cap.
    /// Refuses a placement that no connected worker could ever satisfy (its labels, or more of
    /// a resource than any one has), naming each such subtask. With no worker connected nothing
    /// is judged: they may not have joined yet.
    pub(super) fn placeable(&self, dag: &swarm_core::Dag) -> Result<(), ApiError> {
        use crate::placement::Candidate;
        let workers: Vec<_> = self.registry.candidates().iter().filter(|w| w.alive()).collect();
        if workers.is_empty() {
            return Ok(());
        }
        let mut violations = Vec::new();
        fn subagents(node: &swarm_core::dag::Node) -> Option<&swarm_core::placement::Placement> {
            match &node.work {
                swarm_core::dag::Work::Orchestrator(o) => o.subagent_placement.as_ref(),
                _ => None,
            }
        }
        let placements = dag.nodes().iter().enumerate().flat_map(|(i, node)| {
            [(i, "placement", node.placement.as_deref()), (i, "orchestrator.subagent_placement", subagents(node))]
        });
        // Subtasks placed alike share one placement (see `Dag::build`): judged once.
        let mut judged = std::collections::HashMap::new();
        for (i, field, p) in placements {
            let Some(p) = p else { continue };
            let never = *judged
                .entry(p as *const swarm_core::placement::Placement)
                .or_insert_with(|| workers.iter().all(|w| w.fit(p) == swarm_core::placement::Fit::Never));
            if never {
                violations.push(swarm_core::violation::SpecViolation {
                    field: format!("subtasks[{i}].{field}"),
                    description: format!(
                        "no connected worker could ever run it ({}); the {} connected have: {}",
                        p.describe(),
                        workers.len(),
                        self.registry.placement_summary()
                    ),
                });
                if violations.len() >= swarm_core::dag::MAX_VIOLATIONS {
                    break;
                }
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidSpec(swarm_core::dag::SpecViolations(violations)))
        }
    }

    pub(super) fn admit(&self, size: RunSize, tenant: Option<&str>) -> Result<(), ApiError> {
        let caps = self.config.caps;
        let subtasks = size.subtasks;
        // A tenant's per-run quotas: no retry can help, so a field error, not "busy".
        if let Some((t, q)) = tenant.and_then(|t| self.config.tenants.get(t).map(|q| (t, q))) {
            let over = [
                ("subtasks", size.subtasks, q.max_run_subtasks, "max_run_subtasks"),
                ("limits.max_subagents", size.subagents, q.max_run_subagents, "max_run_subagents"),
                ("limits.max_tool_calls", size.tool_calls, q.max_run_tool_calls, "max_run_tool_calls"),
            ];
            for (field, asked, quota, name) in over {
                if let Some(max) = quota.filter(|&m| asked > m) {
                    return Err(ApiError::invalid(
                        field,
                        format!("{asked} is over tenant {t}'s quota of {max} ({name})"),
                    ));
                }
            }
        }
        let (active, queued) = self
            .runs
            .values()
            .filter(|r| !r.engine.state().is_terminal())
            .fold((0u32, 0u64), |(a, q), r| (a + 1, q + u64::from(r.engine.counts().open)));
        let refuse = |message: String| {
            swarm_telemetry::metrics().runs_refused.add(1, &[]);
            Err(ApiError::Busy { message, retry_after: BUSY_RETRY })
        };
        if active >= caps.max_active_runs {
            return refuse(format!(
                "the cluster is at its cap of {} active runs (--max-active-runs); try again later",
                caps.max_active_runs
            ));
        }
        let quota = tenant.and_then(|t| self.config.tenants.get(t).map(|q| (t, q)));
        if let Some((t, max)) = quota.and_then(|(t, q)| q.max_active_runs.map(|m| (t, m))) {
            let mine = self
                .runs
                .values()
                .filter(|r| !r.engine.state().is_terminal() && r.header.tenant.as_deref() == Some(t))
                .count() as u32;
            if mine >= max {
                return refuse(format!(
                    "tenant {t} has {mine} active runs, its quota (max_active_runs); try again later"
                ));
            }
        }
        if queued + u64::from(subtasks) > caps.max_queued_subtasks {
            return refuse(format!(
                "{queued} subtasks are queued and this run adds {subtasks}: over the cap of {} queued subtasks \
                 (--max-queued-subtasks); try again later",
                caps.max_queued_subtasks
            ));
        }
        Ok(())
    }
}
