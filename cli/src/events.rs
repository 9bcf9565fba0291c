//! Events and agents' partial output as lines for people (`swarm watch`, `swarm run`).

use swarm_proto::convert::duration_to_us;
use swarm_proto::pb;

use crate::client::{failure_kind_name, state_name};

fn ms(d: &Option<prost_types::Duration>) -> f64 {
    d.as_ref().map_or(0.0, |d| (duration_to_us(d) as f64 / 1000.0 * 1000.0).round() / 1000.0)
}

/// An agent's partial output as lines, each prefixed with `[subtask]`: its text, reasoning
/// (`(thinking) …`), tool calls starting (`→ tool`) and ending (`← tool ok|failed`).
pub fn describe_output(o: &pb::AgentOutput) -> String {
    let mut lines = Vec::new();
    for t in &o.tools_finished {
        lines.push(format!("← {} {}", t.tool, if t.failed { "failed" } else { "ok" }));
    }
    for line in o.reasoning.lines().filter(|l| !l.trim().is_empty()) {
        lines.push(format!("(thinking) {line}"));
    }
    lines.extend(o.text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
    for t in &o.tools_started {
        lines.push(format!("→ {t}"));
    }
    lines.iter().map(|l| format!("[{}] {l}", o.subtask_id)).collect::<Vec<_>>().join("\n")
}

/// One line describing an event, for `swarm watch`.
pub fn describe(ev: &pb::RunEvent) -> String {
    use pb::run_event::Event;
    let what = match &ev.event {
        Some(Event::AgentOutput(o)) => return describe_output(o),
        Some(Event::RunStarted(e)) => {
            format!("run started: {} ({} subtasks)", e.name, e.total_subtasks)
        }
        Some(Event::SubtaskStarted(e)) => {
            format!("{} started (attempt {}) on {}", e.subtask_id, e.attempt, e.worker_id)
        }
        Some(Event::SubtaskSucceeded(e)) => {
            format!("{} succeeded in {:.1} ms", e.subtask_id, ms(&e.duration))
        }
        Some(Event::SubtaskFailed(e)) if e.kind == pb::FailureKind::Cancelled as i32 => {
            format!("{} cancelled (attempt {}): {}", e.subtask_id, e.attempt, e.message)
        }
        Some(Event::SubtaskFailed(e)) => format!(
            "{} failed (attempt {}, {}): {}{}",
            e.subtask_id,
            e.attempt,
            pb::FailureKind::try_from(e.kind).map(|k| k.as_str_name()).unwrap_or("?"),
            e.message,
            e.retry_in
                .as_ref()
                .map(|d| format!("; retry in {:.0} ms", duration_to_us(d) as f64 / 1000.0))
                .unwrap_or_default()
        ),
        Some(Event::SubtaskSkipped(e)) => format!("{} skipped: {} failed", e.subtask_id, e.because),
        Some(Event::AgentStep(e)) => format!(
            "{} step {} ({} tool calls); critical steps {}, total {}",
            e.subtask_id, e.steps, e.tool_calls, e.critical_steps, e.total_steps
        ),
        Some(Event::StageStarted(e)) => format!(
            "{} stage {}: {} subagents{}",
            e.subtask_id,
            e.stage,
            e.subagent_ids.len(),
            if e.refused > 0 { format!(" ({} refused: budget)", e.refused) } else { String::new() }
        ),
        Some(Event::BudgetExceeded(e)) => format!("budget exceeded: {}", e.what),
        Some(Event::Speculated(e)) => {
            format!("{} straggles after {:.0} ms: backup attempt on {}", e.subtask_id, ms(&e.after), e.worker_id)
        }
        Some(Event::Warning(e)) => format!("warning ({}): {}", e.subtask_id, e.message),
        Some(Event::ApprovalRequested(e)) => {
            let until = match &e.deadline {
                Some(_) => format!(
                    " (until its deadline, then {})",
                    if e.on_timeout == pb::Decision::Approve as i32 { "approved" } else { "rejected" }
                ),
                None => String::new(),
            };
            format!(
                "{} waits for a decision{until}: {} — swarm signal {} {} --approve|--reject",
                e.subtask_id, e.prompt, ev.run_id, e.subtask_id
            )
        }
        Some(Event::RunFinished(e)) => {
            let s = e.summary.clone().unwrap_or_default();
            let why = if s.error_message.is_empty() {
                String::new()
            } else {
                format!(" ({}: {})", failure_kind_name(s.error_kind), s.error_message)
            };
            format!(
                "run finished {}: {}, {} failed, critical steps {}, parallelism {:.1}{why}",
                state_name(e.state),
                crate::output::plural(u64::from(s.tool_calls_completed), "call ok", "calls ok"),
                s.tool_calls_failed,
                s.critical_steps,
                s.parallelism
            )
        }
        None => "unknown event".into(),
    };
    format!("{:>6} {what}", ev.seq)
}
