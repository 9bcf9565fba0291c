//! Field checks of [`Dag::build`](super::Dag::build) for agents, orchestrators and approvals.

use crate::spec::{ApprovalSpec, MAX_AGENT_TEXT_BYTES, MAX_AGENT_TOOLS, MAX_NAME_BYTES, SubtaskSpec};

#[allow(clippy::too_many_arguments)]
pub(super) fn check_agent(
    bad: &mut impl FnMut(String, String),
    i: usize,
    kind: &str,
    task: &str,
    instructions: &str,
    model: &str,
    tools: &[String],
    max_steps: Option<u32>,
    cap: u32,
) {
    let what = if kind == "agent" { "input" } else { "goal" };
    if task.trim().is_empty() {
        bad(format!("subtasks[{i}].{kind}.{what}"), "must not be empty".into());
    } else if task.len() > MAX_AGENT_TEXT_BYTES {
        bad(format!("subtasks[{i}].{kind}.{what}"), format!("longer than {MAX_AGENT_TEXT_BYTES} bytes"));
    }
    if instructions.len() > MAX_AGENT_TEXT_BYTES {
        bad(format!("subtasks[{i}].{kind}.instructions"), format!("longer than {MAX_AGENT_TEXT_BYTES} bytes"));
    }
    if model.trim().is_empty() {
        bad(format!("subtasks[{i}].{kind}.model"), "must not be empty".into());
    } else if model.len() > MAX_NAME_BYTES {
        bad(format!("subtasks[{i}].{kind}.model"), format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if tools.len() > MAX_AGENT_TOOLS {
        bad(
            format!("subtasks[{i}].{kind}.tools"),
            format!("{} tools exceed the limit of {MAX_AGENT_TOOLS}", tools.len()),
        );
    } else if let Some(j) = tools.iter().position(|t| t.is_empty() || t.len() > MAX_NAME_BYTES) {
        bad(format!("subtasks[{i}].{kind}.tools[{j}]"), format!("must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    match max_steps {
        Some(0) => bad(format!("subtasks[{i}].{kind}.max_steps"), "must be at least 1".into()),
        Some(n) if n > cap => {
            bad(format!("subtasks[{i}].{kind}.max_steps"), format!("{n} exceeds the run's cap of {cap}"))
        }
        _ => {}
    }
}

/// An approval's prompt and timeout; it takes no `timeout` or `retry` of its own.
pub(super) fn check_approval(bad: &mut impl FnMut(String, String), i: usize, s: &SubtaskSpec, a: &ApprovalSpec) {
    if a.prompt.trim().is_empty() || a.prompt.len() > crate::spec::MAX_PROMPT_BYTES {
        bad(
            format!("subtasks[{i}].approval.prompt"),
            format!("must be 1 to {} bytes of text", crate::spec::MAX_PROMPT_BYTES),
        );
    }
    if a.timeout.is_some_and(|t| t.as_millis() > u128::from(crate::spec::MAX_APPROVAL_TIMEOUT_MS)) {
        bad(
            format!("subtasks[{i}].approval.timeout"),
            format!("must be at most {} h (the run's lifetime)", crate::spec::MAX_APPROVAL_TIMEOUT_MS / 3_600_000),
        );
    }
    if s.timeout.is_some() || s.retry.is_some() {
        bad(
            format!("subtasks[{i}]"),
            "an approval takes no `timeout` or `retry` of its own: use `approval.timeout`".into(),
        );
    }
}

/// The files a subtask hands on: well-formed patterns, not too many; none for an approval.
pub(super) fn check_outputs(bad: &mut impl FnMut(String, String), i: usize, s: &SubtaskSpec) {
    use crate::artifact::{MAX_PATTERNS, check_pattern};
    if let crate::spec::SubtaskKind::Orchestrator(o) = &s.kind {
        if o.subagent_artifacts.len() > MAX_PATTERNS {
            bad(
                format!("subtasks[{i}].orchestrator.subagent_artifacts"),
                format!("{} patterns exceed the limit of {MAX_PATTERNS}", o.subagent_artifacts.len()),
            );
        }
        for (j, p) in o.subagent_artifacts.iter().enumerate().take(MAX_PATTERNS) {
            if let Err(why) = check_pattern(p) {
                bad(format!("subtasks[{i}].orchestrator.subagent_artifacts[{j}]"), why);
            }
        }
    }
    let patterns = &s.outputs.artifacts;
    if patterns.is_empty() {
        return;
    }
    if matches!(s.kind, crate::spec::SubtaskKind::Approval(_)) {
        bad(format!("subtasks[{i}].outputs.artifacts"), "an approval has no workspace to hand files on from".into());
    } else if patterns.len() > MAX_PATTERNS {
        bad(
            format!("subtasks[{i}].outputs.artifacts"),
            format!("{} patterns exceed the limit of {MAX_PATTERNS}", patterns.len()),
        );
    } else {
        for (j, p) in patterns.iter().enumerate() {
            if let Err(why) = check_pattern(p) {
                bad(format!("subtasks[{i}].outputs.artifacts[{j}]"), why);
            }
        }
    }
}

/// A subtask's placement: labels and resource names it may use (amounts were checked as parsed).
pub(super) fn check_placement(bad: &mut impl FnMut(String, String), i: usize, s: &SubtaskSpec) {
    if let Some(p) = &s.placement {
        for (field, why) in p.problems() {
            bad(format!("subtasks[{i}].placement.{field}"), why);
        }
    }
    if let crate::SubtaskKind::Orchestrator(o) = &s.kind
        && let Some(p) = &o.subagent_placement
    {
        for (field, why) in p.problems() {
            bad(format!("subtasks[{i}].orchestrator.subagent_placement.{field}"), why);
        }
    }
}

/// The run's limits: each within its bounds, named by its field.
pub(super) fn check_limits(bad: &mut impl FnMut(String, String), l: &crate::agent::RunLimits) {
    use crate::agent::RunLimits;
    if l.max_subagents > RunLimits::MAX_SUBAGENTS {
        bad("limits.max_subagents".into(), format!("at most {}", RunLimits::MAX_SUBAGENTS));
    }
    if l.max_tool_calls == 0 || l.max_tool_calls > RunLimits::MAX_TOOL_CALLS {
        bad("limits.max_tool_calls".into(), format!("must be in 1..={}", RunLimits::MAX_TOOL_CALLS));
    }
    for (field, cap) in
        [("orchestrator_max_steps", l.orchestrator_max_steps), ("subagent_max_steps", l.subagent_max_steps)]
    {
        if cap == 0 {
            bad(format!("limits.{field}"), "must be at least 1".into());
        }
    }
    if l.max_tokens == Some(0) {
        bad("limits.max_tokens".into(), "must be at least 1 (leave it out for no token budget)".into());
    }
}
