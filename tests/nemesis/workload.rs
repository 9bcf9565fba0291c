//! What a nemesis round runs: five kinds of runs in turn, each named for its kind (the name is
//! also its idempotency key). The clients of [`super::history`] act on two of them: they cancel
//! every `-cancel` run once it has a result, and approve every `-approve` run's gate.

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};

/// What a client does to a run while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing: it must succeed.
    Plain,
    /// Cancels it once some subtask succeeded: it must end cancelled (unless it ended first).
    Cancel,
    /// Approves its `gate` (with the payload [`approval_payload`]): it must succeed.
    Approve,
}

impl Kind {
    /// The kind of the run named `name`.
    pub fn of(name: &str) -> Self {
        if name.ends_with("-cancel") {
            Self::Cancel
        } else if name.ends_with("-approve") {
            Self::Approve
        } else {
            Self::Plain
        }
    }
}

/// The approval's output the client sends for run `name`.
pub fn approval_payload(name: &str) -> String {
    json!({ "approved_for": name }).to_string()
}

/// `count` chains of `length` non-idempotent calls of `ms` each, each appending its id and its
/// attempt (`stamp`) to the run's file; every chain after `after` when given.
fn appends(name: &str, chains: usize, length: usize, ms: u64, after: Option<&str>) -> Vec<SubtaskSpec> {
    let mut out = Vec::new();
    for c in 0..chains {
        for i in 0..length {
            let id = format!("append-{c}-{i}");
            let args = json!({ "file": format!("{name}.log"), "text": id, "ms": ms, "stamp": true });
            let s = SubtaskSpec::tool(id, "append", args);
            out.push(match (i, after) {
                (0, None) => s,
                (0, Some(a)) => s.after([a]),
                _ => s.after([format!("append-{c}-{}", i - 1)]),
            });
        }
    }
    out
}

/// The workload: run `k` of a nemesis round.
pub fn workload(k: usize) -> RunSpec {
    let mut spec = match k % 5 {
        // Non-idempotent calls in chains: each appends its id to the run's file.
        0 => RunSpec::new(format!("nemesis-{k}"), appends(&format!("nemesis-{k}"), 4, 6, 60, None)),
        // Idempotent calls that fail once and are retried, and plain ones.
        1 => {
            let mut subtasks = Vec::new();
            for i in 0..12 {
                subtasks.push(SubtaskSpec::tool(format!("flaky-{i}"), "flaky", json!({ "fail_times": 1 })));
                subtasks.push(
                    SubtaskSpec::tool(format!("sleep-{i}"), "sleep", json!({ "ms": 100 }))
                        .after([format!("flaky-{i}")]),
                );
            }
            RunSpec::new(format!("nemesis-{k}"), subtasks)
        }
        // An orchestrator and its subagents (scripted model: six helpers, four appends each).
        2 => RunSpec::new(format!("nemesis-{k}"), vec![crate::proc_cluster::lead()]),
        // Chains of appends the client cancels part way.
        3 => {
            let name = format!("nemesis-{k}-cancel");
            RunSpec::new(name.clone(), appends(&name, 4, 8, 300, None))
        }
        // An approval the client gives, then appends.
        _ => {
            let name = format!("nemesis-{k}-approve");
            let gate = SubtaskSpec {
                id: "gate".into(),
                kind: swarm_core::SubtaskKind::Approval(swarm_core::spec::ApprovalSpec {
                    prompt: "go on?".into(),
                    timeout: None,
                    on_timeout: Default::default(),
                }),
                depends_on: vec![],
                timeout: None,
                retry: None,
                outputs: Default::default(),
                placement: None,
            };
            let mut subtasks = vec![gate];
            subtasks.extend(appends(&name, 2, 3, 60, Some("gate")));
            RunSpec::new(name, subtasks)
        }
    };
    spec.retry = Some(swarm_core::retry::RetrySpec {
        maximum_attempts: Some(20),
        initial_interval_ms: Some(50),
        maximum_interval_ms: Some(1000),
        ..Default::default()
    });
    spec
}
