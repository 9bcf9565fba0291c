//! Wire ⇄ domain conversions. Decoding failures name the field path (`subtasks[3].tool_call`)
//! and are collected, not stopped at the first, so a client sees every problem at once.

use std::time::Duration;

use swarm_core::agent::{AgentSpec, OrchestratorSpec, RunLimits};
use swarm_core::dag::{SpecViolation, SpecViolations};
use swarm_core::engine::{RunState, SubtaskState};
use swarm_core::retry::RetrySpec;
use swarm_core::spec::Speculation;
use swarm_core::{FailureKind, RunSpec, RunSummary, SubtaskId, SubtaskKind, SubtaskSpec};

use crate::ApiError;

use crate::pb;

impl TryFrom<pb::RunSpec> for RunSpec {
    type Error = ApiError;

    fn try_from(spec: pb::RunSpec) -> Result<Self, ApiError> {
        let (spec, violations) = decode_spec(spec);
        if violations.is_empty() { Ok(spec) } else { Err(ApiError::InvalidSpec(SpecViolations(violations))) }
    }
}

/// Decodes a wire spec, with what the wire form got wrong (a missing `kind`, `args_json` that
/// is not JSON, a negative duration). Each refused value is replaced by a stand-in that passes
/// structural validation, so the caller can validate the rest and report every problem at once.
pub fn decode_spec(spec: pb::RunSpec) -> (RunSpec, Vec<SpecViolation>) {
    {
        let mut violations = Vec::new();
        let mut subtasks = Vec::with_capacity(spec.subtasks.len());
        for (i, s) in spec.subtasks.into_iter().enumerate() {
            let mut bad = |field: &str, description: String| {
                violations.push(SpecViolation { field: format!("subtasks[{i}].{field}"), description })
            };
            let kind = match s.kind {
                Some(pb::subtask_spec::Kind::ToolCall(call)) => {
                    let args = if call.args_json.trim().is_empty() {
                        serde_json::Value::Object(Default::default())
                    } else {
                        match serde_json::from_str(&call.args_json) {
                            Ok(v) => v,
                            Err(e) => {
                                bad("tool_call.args_json", format!("invalid JSON: {e}"));
                                serde_json::Value::Object(Default::default())
                            }
                        }
                    };
                    SubtaskKind::Tool { tool: call.tool, args }
                }
                Some(pb::subtask_spec::Kind::Agent(a)) => SubtaskKind::Agent(AgentSpec {
                    instructions: a.instructions,
                    input: a.input,
                    model: a.model,
                    tools: a.tools,
                    max_steps: a.max_steps,
                }),
                Some(pb::subtask_spec::Kind::Orchestrator(o)) => SubtaskKind::Orchestrator(OrchestratorSpec {
                    goal: o.goal,
                    model: o.model,
                    tools: o.tools,
                    max_steps: o.max_steps,
                    subagent_tools: o.subagent_tools,
                    subagent_models: o.subagent_models,
                    subagent_artifacts: o.subagent_artifacts.clone(),
                    subagent_placement: o.subagent_placement.and_then(|p| {
                        placement(p, &mut |field, why| bad(&format!("orchestrator.subagent_{field}"), why))
                    }),
                }),
                Some(pb::subtask_spec::Kind::Approval(a)) => {
                    let timeout = match a.timeout.map(Duration::try_from) {
                        None => None,
                        Some(Ok(d)) => Some(d),
                        Some(Err(_)) => {
                            bad("approval.timeout", "must not be negative".into());
                            None
                        }
                    };
                    let on_timeout = match pb::Decision::try_from(a.on_timeout) {
                        Ok(pb::Decision::Approve) => swarm_core::spec::OnTimeout::Approve,
                        Ok(pb::Decision::Reject | pb::Decision::Unspecified) => swarm_core::spec::OnTimeout::Reject,
                        Err(_) => {
                            bad("approval.on_timeout", format!("unknown decision {}", a.on_timeout));
                            swarm_core::spec::OnTimeout::Reject
                        }
                    };
                    SubtaskKind::Approval(swarm_core::spec::ApprovalSpec { prompt: a.prompt, timeout, on_timeout })
                }
                None => {
                    bad("kind", "required: set tool_call, agent, orchestrator or approval".into());
                    SubtaskKind::Tool { tool: "(missing)".into(), args: serde_json::Value::Object(Default::default()) }
                }
            };
            let timeout = match s.timeout.map(Duration::try_from) {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(_)) => {
                    bad("timeout", "must not be negative".into());
                    None
                }
            };
            subtasks.push(SubtaskSpec {
                retry: s.retry.map(retry_spec),
                id: SubtaskId::from(s.id),
                kind,
                depends_on: s.depends_on.into_iter().map(SubtaskId::from).collect(),
                timeout,
                outputs: swarm_core::artifact::Outputs {
                    artifacts: s.outputs.map(|o| o.artifacts).unwrap_or_default(),
                },
                placement: s.placement.and_then(|p| placement(p, &mut bad)),
            });
        }
        let limits = match spec.limits {
            None => RunLimits::default(),
            Some(l) => {
                // Present (zero included) is meant: validation refuses what is out of range.
                let d = RunLimits::default();
                RunLimits {
                    max_subagents: l.max_subagents.unwrap_or(d.max_subagents),
                    max_tool_calls: l.max_tool_calls.unwrap_or(d.max_tool_calls),
                    orchestrator_max_steps: l.orchestrator_max_steps.unwrap_or(d.orchestrator_max_steps),
                    subagent_max_steps: l.subagent_max_steps.unwrap_or(d.subagent_max_steps),
                    max_tokens: l.max_tokens,
                }
            }
        };
        let d = Speculation::default();
        let speculation = match spec.speculation {
            None => d,
            Some(p) => {
                // Unset takes the default; anything present (0, NaN and negatives too) goes
                // on to validation, which names the field.
                Speculation {
                    enabled: !p.disabled,
                    quantile: p.quantile.unwrap_or(d.quantile),
                    multiplier: p.multiplier.unwrap_or(d.multiplier),
                    min_runtime_ms: p.min_runtime_ms.unwrap_or(d.min_runtime_ms),
                    max_fraction: p.max_fraction.unwrap_or(d.max_fraction),
                }
            }
        };
        let tool_retry = spec.tool_retry.into_iter().map(|(tool, p)| (tool, retry_spec(p))).collect();
        let spec = RunSpec {
            limits,
            speculation,
            retry: spec.retry.map(retry_spec),
            tool_retry,
            max_concurrency: spec.max_concurrency,
            schedule_to_start_ms: spec.schedule_to_start_ms,
            priority: spec.priority,
            version: (!spec.version.is_empty()).then_some(spec.version),
            name: spec.name,
            subtasks,
        };
        (spec, violations)
    }
}

impl From<&RunSpec> for pb::RunSpec {
    fn from(spec: &RunSpec) -> Self {
        pb::RunSpec {
            name: spec.name.clone(),
            subtasks: spec
                .subtasks
                .iter()
                .map(|s| pb::SubtaskSpec {
                    retry: s.retry.as_ref().map(retry_wire),
                    id: s.id.to_string(),
                    depends_on: s.depends_on.iter().map(ToString::to_string).collect(),
                    timeout: s.timeout.and_then(|d| prost_types::Duration::try_from(d).ok()),
                    outputs: (!s.outputs.is_empty())
                        .then(|| pb::SubtaskOutputs { artifacts: s.outputs.artifacts.clone() }),
                    placement: s.placement.as_ref().map(placement_wire),
                    kind: Some(match &s.kind {
                        SubtaskKind::Tool { tool, args } => pb::subtask_spec::Kind::ToolCall(pb::ToolCall {
                            tool: tool.clone(),
                            args_json: args.to_string(),
                        }),
                        SubtaskKind::Agent(a) => pb::subtask_spec::Kind::Agent(pb::AgentSpec {
                            instructions: a.instructions.clone(),
                            input: a.input.clone(),
                            model: a.model.clone(),
                            tools: a.tools.clone(),
                            max_steps: a.max_steps,
                        }),
                        SubtaskKind::Orchestrator(o) => pb::subtask_spec::Kind::Orchestrator(pb::OrchestratorSpec {
                            goal: o.goal.clone(),
                            model: o.model.clone(),
                            tools: o.tools.clone(),
                            max_steps: o.max_steps,
                            subagent_tools: o.subagent_tools.clone(),
                            subagent_models: o.subagent_models.clone(),
                            subagent_artifacts: o.subagent_artifacts.clone(),
                            subagent_placement: o.subagent_placement.as_ref().map(placement_wire),
                        }),
                        SubtaskKind::Approval(a) => pb::subtask_spec::Kind::Approval(pb::ApprovalSpec {
                            prompt: a.prompt.clone(),
                            timeout: a.timeout.and_then(|d| prost_types::Duration::try_from(d).ok()),
                            on_timeout: match a.on_timeout {
                                swarm_core::spec::OnTimeout::Approve => pb::Decision::Approve,
                                swarm_core::spec::OnTimeout::Reject => pb::Decision::Reject,
                            }
                            .into(),
                        }),
                    }),
                })
                .collect(),
            retry: spec.retry.as_ref().map(retry_wire),
            tool_retry: spec.tool_retry.iter().map(|(t, r)| (t.clone(), retry_wire(r))).collect(),
            max_concurrency: spec.max_concurrency,
            schedule_to_start_ms: spec.schedule_to_start_ms,
            priority: spec.priority,
            version: spec.version.clone().unwrap_or_default(),
            speculation: Some(pb::Speculation {
                disabled: !spec.speculation.enabled,
                quantile: Some(spec.speculation.quantile),
                multiplier: Some(spec.speculation.multiplier),
                min_runtime_ms: Some(spec.speculation.min_runtime_ms),
                max_fraction: Some(spec.speculation.max_fraction),
            }),
            limits: Some(pb::RunLimits {
                max_subagents: Some(spec.limits.max_subagents),
                max_tool_calls: Some(spec.limits.max_tool_calls),
                orchestrator_max_steps: Some(spec.limits.orchestrator_max_steps),
                subagent_max_steps: Some(spec.limits.subagent_max_steps),
                max_tokens: spec.limits.max_tokens,
            }),
        }
    }
}

fn retry_spec(p: pb::RetryPolicy) -> RetrySpec {
    RetrySpec {
        // A present duration is meant, zero included (`initial_interval_ms: 0` retries at once).
        initial_interval_ms: p.initial_interval.map(|d| duration_to_us(&d) / 1000),
        // Present is meant, zero included: anything out of range (0, NaN, negative, huge) goes
        // on to validation, which names the field.
        backoff_coefficient: p.backoff_coefficient,
        maximum_interval_ms: p.maximum_interval.map(|d| duration_to_us(&d) / 1000),
        maximum_attempts: p.maximum_attempts,
        jitter: p.jitter,
        non_retryable: p.non_retryable.into_iter().map(failure_kind).collect(),
    }
}

fn retry_wire(r: &RetrySpec) -> pb::RetryPolicy {
    pb::RetryPolicy {
        initial_interval: r.initial_interval_ms.map(|ms| duration_us(ms.saturating_mul(1000))),
        backoff_coefficient: r.backoff_coefficient,
        maximum_interval: r.maximum_interval_ms.map(|ms| duration_us(ms.saturating_mul(1000))),
        maximum_attempts: r.maximum_attempts,
        jitter: r.jitter,
        non_retryable: r.non_retryable.iter().map(|k| pb::FailureKind::from(*k) as i32).collect(),
    }
}

/// µs since the Unix epoch as a protobuf timestamp.
pub fn timestamp(unix_us: u64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: (unix_us / 1_000_000) as i64, nanos: ((unix_us % 1_000_000) * 1_000) as i32 }
}

/// A protobuf timestamp as µs since the Unix epoch (0 for times before it).
pub fn unix_us(ts: &prost_types::Timestamp) -> u64 {
    if ts.seconds < 0 {
        return 0;
    }
    (ts.seconds as u64).saturating_mul(1_000_000).saturating_add((ts.nanos.max(0) as u64) / 1_000)
}

/// µs as a protobuf duration.
pub fn duration_us(us: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (us / 1_000_000) as i64, nanos: ((us % 1_000_000) * 1_000) as i32 }
}

/// A protobuf duration in µs (negative counts as 0).
pub fn duration_to_us(d: &prost_types::Duration) -> u64 {
    if d.seconds < 0 || d.nanos < 0 {
        return 0;
    }
    // Saturating: a peer may send any i64 (no arithmetic on outside input may panic).
    (d.seconds as u64).saturating_mul(1_000_000).saturating_add(d.nanos as u64 / 1_000)
}

impl From<RunState> for pb::RunState {
    fn from(s: RunState) -> Self {
        match s {
            RunState::Pending => Self::Pending,
            RunState::Running => Self::Running,
            RunState::Succeeded => Self::Succeeded,
            RunState::Failed => Self::Failed,
            RunState::Cancelled => Self::Cancelled,
            RunState::BudgetExceeded => Self::BudgetExceeded,
        }
    }
}

impl From<SubtaskState> for pb::SubtaskState {
    fn from(s: SubtaskState) -> Self {
        match s {
            SubtaskState::Blocked => Self::Blocked,
            SubtaskState::Ready => Self::Ready,
            SubtaskState::Running => Self::Running,
            SubtaskState::Backoff => Self::Backoff,
            SubtaskState::Succeeded => Self::Succeeded,
            SubtaskState::Failed => Self::Failed,
            SubtaskState::Skipped => Self::Skipped,
            SubtaskState::Cancelled => Self::Cancelled,
            SubtaskState::Waiting => Self::Waiting,
        }
    }
}

impl From<FailureKind> for pb::FailureKind {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Transient => Self::Transient,
            FailureKind::Permanent => Self::Permanent,
            FailureKind::Timeout => Self::Timeout,
            FailureKind::Cancelled => Self::Cancelled,
            FailureKind::WorkerLost => Self::WorkerLost,
            FailureKind::ToolReported => Self::ToolReported,
            FailureKind::Internal => Self::Internal,
        }
    }
}

/// A wire failure kind in the domain; unknown values count as transient (retried, bounded
/// by the retry policy), which is the safe reading for a newer worker's new kinds.
pub fn failure_kind(k: i32) -> FailureKind {
    match pb::FailureKind::try_from(k) {
        Ok(pb::FailureKind::Permanent) => FailureKind::Permanent,
        Ok(pb::FailureKind::Timeout) => FailureKind::Timeout,
        Ok(pb::FailureKind::Cancelled) => FailureKind::Cancelled,
        Ok(pb::FailureKind::WorkerLost) => FailureKind::WorkerLost,
        Ok(pb::FailureKind::ToolReported) => FailureKind::ToolReported,
        // A worker cannot fail an attempt as the coordinator's own bug; read it as permanent.
        Ok(pb::FailureKind::Internal) => FailureKind::Permanent,
        _ => FailureKind::Transient,
    }
}

impl From<&RunSummary> for pb::RunSummary {
    fn from(s: &RunSummary) -> Self {
        pb::RunSummary {
            total_subtasks: s.total_subtasks,
            tool_calls_completed: s.tool_calls_completed,
            tool_calls_failed: s.tool_calls_failed,
            tool_calls_skipped: s.tool_calls_skipped,
            attempts: s.attempts,
            wall_time: Some(duration_us(s.wall_us)),
            total_work: Some(duration_us(s.total_work_us)),
            critical_path_time: Some(duration_us(s.critical_path_us)),
            critical_path: s.critical_path.iter().map(ToString::to_string).collect(),
            critical_steps: s.critical_steps,
            total_steps: s.total_steps,
            parallelism: s.parallelism,
            agent_tool_calls: s.agent_tool_calls,
            subagents: s.subagents,
            tokens: s.tokens,
            speculative_attempts: s.speculative_attempts,
            speculative_wins: s.speculative_wins,
            error_kind: s.error.as_ref().map_or(pb::FailureKind::Unspecified, |e| e.kind.into()).into(),
            error_message: s.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
            wall_breakdown: Some(wall_breakdown(&s.wall_breakdown, s.wall_us, s.state.is_terminal())),
            tokens_by_model: s
                .tokens_by_model
                .iter()
                .map(|m| pb::ModelTokens {
                    model: m.model.clone(),
                    input_tokens: m.input_tokens,
                    output_tokens: m.output_tokens,
                })
                .collect(),
            token_budget: s.token_budget.unwrap_or(0),
            calls_reused: s.calls_reused,
            calls_made: s.calls_made,
            agent_resumes: s.agent_resumes,
            agent_resumes_sticky: s.agent_resumes_sticky,
        }
    }
}

fn wall_breakdown(b: &swarm_core::WallBreakdown, wall_us: u64, ended: bool) -> pb::WallBreakdown {
    let (part, subtask, lost) = b.biggest_loss.clone().unwrap_or_default();
    pb::WallBreakdown {
        work: Some(duration_us(b.work_us)),
        waiting_for_slot: Some(duration_us(b.waiting_for_slot_us)),
        dispatch: Some(duration_us(b.dispatch_us)),
        retry_backoff: Some(duration_us(b.retry_backoff_us)),
        failed_attempts: Some(duration_us(b.failed_attempts_us)),
        straggler_wait: Some(duration_us(b.straggler_wait_us)),
        waiting_for_approval: Some(duration_us(b.waiting_for_approval_us)),
        waiting_for_placement: Some(duration_us(b.waiting_for_placement_us)),
        other: Some(duration_us(b.other_us)),
        biggest_loss_part: part,
        biggest_loss_subtask: subtask,
        biggest_loss: Some(duration_us(lost)),
        headline: if ended { b.headline(wall_us) } else { swarm_core::WallBreakdown::headline_running(wall_us) },
    }
}

impl From<&swarm_core::artifact::Artifact> for pb::Artifact {
    fn from(a: &swarm_core::artifact::Artifact) -> Self {
        pb::Artifact { path: a.path.clone(), size: a.size, sha256: a.sha256.clone(), key: a.key.clone() }
    }
}

impl From<pb::Artifact> for swarm_core::artifact::Artifact {
    fn from(a: pb::Artifact) -> Self {
        swarm_core::artifact::Artifact { path: a.path, size: a.size, sha256: a.sha256, key: a.key }
    }
}

/// A wire placement as the domain's; amounts that do not parse are named.
fn placement(p: pb::Placement, bad: &mut impl FnMut(&str, String)) -> Option<swarm_core::placement::Placement> {
    use swarm_core::placement::{Placement, Preference, Quantity};
    let mut resources = std::collections::BTreeMap::new();
    for (name, text) in p.resources {
        match Quantity::parse(&text) {
            Ok(q) => {
                resources.insert(name, q);
            }
            Err(e) => bad(&format!("placement.resources.{name}"), e),
        }
    }
    let placement = Placement {
        labels: p.labels.into_iter().collect(),
        avoid: p.avoid.into_iter().collect(),
        prefer: p
            .prefer
            .into_iter()
            .map(|w| Preference { labels: w.labels.into_iter().collect(), weight: w.weight.unwrap_or(1) })
            .collect(),
        resources,
    };
    (!placement.is_empty()).then_some(placement)
}

fn placement_wire(p: &swarm_core::placement::Placement) -> pb::Placement {
    pb::Placement {
        labels: p.labels.clone().into_iter().collect(),
        avoid: p.avoid.clone().into_iter().collect(),
        prefer: p
            .prefer
            .iter()
            .map(|w| pb::PlacementPreference { labels: w.labels.clone().into_iter().collect(), weight: Some(w.weight) })
            .collect(),
        resources: p.resources.iter().map(|(k, q)| (k.clone(), q.to_text())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_peers_saturate_instead_of_overflowing() {
        let huge = prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 };
        assert_eq!(duration_to_us(&huge), u64::MAX);
        assert_eq!(duration_to_us(&prost_types::Duration { seconds: -5, nanos: 0 }), 0);
        assert_eq!(unix_us(&prost_types::Timestamp { seconds: i64::MAX, nanos: i32::MAX }), u64::MAX);
        assert_eq!(unix_us(&prost_types::Timestamp { seconds: 2, nanos: -7 }), 2_000_000);
        // A present zero interval is kept: it means "retry at once".
        let r = retry_spec(pb::RetryPolicy { initial_interval: Some(duration_us(0)), ..Default::default() });
        assert_eq!(r.initial_interval_ms, Some(0));
        assert_eq!(retry_spec(pb::RetryPolicy::default()).initial_interval_ms, None);
        let r = retry_spec(pb::RetryPolicy { backoff_coefficient: Some(f64::NAN), ..Default::default() });
        assert!(r.backoff_coefficient.is_some_and(f64::is_nan), "passed on for validation to refuse");
    }

    #[test]
    fn decoding_collects_every_field_error() {
        let spec = pb::RunSpec {
            speculation: None,
            limits: None,
            retry: None,
            tool_retry: Default::default(),
            max_concurrency: 0,
            schedule_to_start_ms: 0,
            priority: 0,
            version: String::new(),
            name: "x".into(),
            subtasks: vec![
                pb::SubtaskSpec { id: "a".into(), kind: None, ..Default::default() },
                pb::SubtaskSpec {
                    id: "b".into(),
                    kind: Some(pb::subtask_spec::Kind::ToolCall(pb::ToolCall {
                        tool: "echo".into(),
                        args_json: "{".into(),
                    })),
                    timeout: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
                    ..Default::default()
                },
            ],
        };
        let Err(ApiError::InvalidSpec(v)) = RunSpec::try_from(spec) else { panic!("expected violations") };
        let fields: Vec<_> = v.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, vec!["subtasks[0].kind", "subtasks[1].tool_call.args_json", "subtasks[1].timeout"]);
    }

    #[test]
    fn spec_round_trips_through_the_wire() {
        let spec = RunSpec::new(
            "n",
            vec![
                SubtaskSpec::tool("a", "echo", serde_json::json!({"text": "hi"})),
                SubtaskSpec::tool("b", "sleep", serde_json::json!({"ms": 5})).after(["a"]),
            ],
        );
        assert_eq!(RunSpec::try_from(pb::RunSpec::from(&spec)).expect("valid"), spec);
    }

    #[test]
    fn timestamps_round_trip() {
        let us = 1_700_000_000_123_456;
        assert_eq!(unix_us(&timestamp(us)), us);
        assert_eq!(duration_to_us(&duration_us(1_234_567)), 1_234_567);
    }
}
