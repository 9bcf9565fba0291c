//! Every field a user can write in a spec reaches the engine as written — from YAML (the CLI's
//! files, `spec_text`), through the proto on the wire (what `swarm submit`, `swarm run` and
//! `RunSpec` clients send) and back — or is refused naming that field. proto3's zero is not
//! "unset" for a field where zero means something, or is out of range.

use prost::Message;
use swarm_core::{Dag, Limits, RunSpec};
use swarm_proto::pb;

const BASE: &str = "name: audit\nsubtasks:\n  - id: a\n    tool: echo\n    args: {text: x}\n";

/// The spec as YAML gives it, and as the coordinator gets it after the wire.
fn both_ways(yaml: &str) -> (RunSpec, RunSpec) {
    let written: RunSpec = crate::yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    let bytes = pb::RunSpec::from(&written).encode_to_vec();
    let wire = pb::RunSpec::decode(bytes.as_slice()).expect("decodes");
    let (arrived, problems) = swarm_proto::convert::decode_spec(wire);
    assert!(problems.is_empty(), "{yaml}: {problems:?}");
    (written, arrived)
}

fn refused_fields(spec: &RunSpec) -> Vec<String> {
    match Dag::build(spec, &Limits::default()) {
        Ok(_) => Vec::new(),
        Err(v) => v.0.into_iter().map(|v| v.field).collect(),
    }
}

/// `yaml` (the base spec with `fragment`) arrives as written, and is refused on `field` (or,
/// when `field` is empty, accepted).
fn arrives_or_is_refused(fragment: &str, yaml: &str, field: &str) {
    let (written, arrived) = both_ways(yaml);
    assert_eq!(arrived, written, "`{fragment}` changed on the wire");
    let refused = refused_fields(&arrived);
    if field.is_empty() {
        assert!(refused.is_empty(), "`{fragment}` refused: {refused:?}");
    } else {
        assert!(refused.iter().any(|f| f == field), "`{fragment}` must be refused on {field}: {refused:?}");
    }
}

/// (what is added to the base spec's run or its subtask `a`, the field a refusal names or ""
/// when the value is valid).
const RUN_FIELDS: &[(&str, &str)] = &[
    ("retry: {maximum_attempts: 0}", "retry.maximum_attempts"),
    ("retry: {maximum_attempts: 2}", ""),
    ("retry: {maximum_attempts: 99999}", "retry.maximum_attempts"),
    ("retry: {backoff_coefficient: 0}", "retry.backoff_coefficient"),
    ("retry: {backoff_coefficient: 1.5}", ""),
    ("retry: {initial_interval_ms: 0}", ""),
    ("retry: {initial_interval_ms: 0, maximum_interval_ms: 0}", ""),
    ("retry: {initial_interval_ms: 50, maximum_interval_ms: 0}", "retry.maximum_interval_ms"),
    ("retry: {jitter: 0}", ""),
    ("tool_retry: {echo: {maximum_attempts: 0}}", "tool_retry.echo.maximum_attempts"),
    ("tool_retry: {echo: {maximum_attempts: 3}}", ""),
    ("limits: {max_subagents: 0}", ""),
    ("limits: {max_tool_calls: 0}", "limits.max_tool_calls"),
    ("limits: {max_tool_calls: 7}", ""),
    ("limits: {orchestrator_max_steps: 0}", "limits.orchestrator_max_steps"),
    ("limits: {subagent_max_steps: 0}", "limits.subagent_max_steps"),
    ("limits: {subagent_max_steps: 3}", ""),
    ("limits: {max_tokens: 0}", "limits.max_tokens"),
    ("limits: {max_tokens: 1000}", ""),
    ("speculation: {quantile: 0}", "speculation.quantile"),
    ("speculation: {quantile: 0.5}", ""),
    ("speculation: {multiplier: 0}", "speculation.multiplier"),
    ("speculation: {min_runtime_ms: 0}", ""),
    ("speculation: {max_fraction: 0}", ""),
    ("speculation: {enabled: false}", ""),
    ("max_concurrency: 0", ""),
    ("max_concurrency: 3", ""),
    ("schedule_to_start_ms: 0", ""),
    ("schedule_to_start_ms: 250", ""),
    ("priority: 0", ""),
    ("priority: 9", ""),
    ("priority: 10", "priority"),
    ("version: v3", ""),
];

const SUBTASK_FIELDS: &[(&str, &str)] = &[
    ("retry: {maximum_attempts: 0}", "subtasks[0].retry.maximum_attempts"),
    ("retry: {maximum_attempts: 1}", ""),
    ("timeout: 0.5", ""),
    ("placement: {prefer: [{labels: {zone: a}, weight: 0}]}", "subtasks[0].placement.prefer[0].weight"),
    ("placement: {prefer: [{labels: {zone: a}, weight: 4}]}", ""),
    ("placement: {prefer: [{labels: {zone: a}}]}", ""),
];

#[test]
fn every_run_field_arrives_as_written_or_is_refused_by_name() {
    for (fragment, field) in RUN_FIELDS {
        arrives_or_is_refused(fragment, &format!("{fragment}\n{BASE}"), field);
    }
}

#[test]
fn every_subtask_field_arrives_as_written_or_is_refused_by_name() {
    for (fragment, field) in SUBTASK_FIELDS {
        arrives_or_is_refused(fragment, &format!("{BASE}    {fragment}\n"), field);
    }
}

#[test]
fn agent_and_orchestrator_step_caps_of_zero_are_refused_by_name() {
    for (kind, body, field) in [
        ("agent", "{model: m, input: go, max_steps: 0}", "subtasks[0].agent.max_steps"),
        ("orchestrator", "{model: m, goal: go, max_steps: 0}", "subtasks[0].orchestrator.max_steps"),
    ] {
        let yaml = format!("name: steps\nsubtasks:\n  - id: a\n    {kind}: {body}\n");
        let (written, arrived) = both_ways(&yaml);
        assert_eq!(arrived, written, "{kind}: changed on the wire");
        assert!(refused_fields(&arrived).iter().any(|f| f == field), "{kind}: {:?}", refused_fields(&arrived));
        let fine = yaml.replace("max_steps: 0", "max_steps: 2");
        let (written, arrived) = both_ways(&fine);
        assert_eq!(arrived, written);
        assert!(refused_fields(&arrived).is_empty(), "{kind}: {:?}", refused_fields(&arrived));
    }
}
