//! Tests of DAG validation, including a property test against a reference model.

use super::*;
use crate::spec::SubtaskSpec;
use proptest::prelude::*;
use serde_json::json;

fn spec(subtasks: Vec<SubtaskSpec>) -> RunSpec {
    RunSpec::new("t", subtasks)
}
fn t(id: &str) -> SubtaskSpec {
    SubtaskSpec::tool(id, "echo", json!({}))
}
fn violations(s: &RunSpec) -> Vec<(String, String)> {
    Dag::build(s, &Limits::default())
        .expect_err("spec should be invalid")
        .0
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

#[test]
fn valid_chain_orders_topologically() {
    let dag =
        Dag::build(&spec(vec![t("c").after(["b"]), t("a"), t("b").after(["a"])]), &Limits::default()).expect("valid");
    let order: Vec<&str> = dag.topo_order().iter().map(|&i| dag.node(i).id.as_str()).collect();
    assert_eq!(order, vec!["a", "b", "c"]);
}

#[test]
fn duplicate_ids_are_named() {
    let v = violations(&spec(vec![t("a"), t("b"), t("a")]));
    assert_eq!(v, vec![("subtasks[2].id".into(), "duplicate id `a` (first used by subtasks[0])".into())]);
}

#[test]
fn unknown_dependency_is_named() {
    let v = violations(&spec(vec![t("a"), t("b").after(["a", "zz"])]));
    assert_eq!(v, vec![("subtasks[1].depends_on[1]".into(), "unknown subtask `zz`".into())]);
}

#[test]
fn self_edge_is_named() {
    let v = violations(&spec(vec![t("a").after(["a"])]));
    assert_eq!(v, vec![("subtasks[0].depends_on[0]".into(), "subtask `a` depends on itself".into())]);
}

#[test]
fn cycle_is_named_in_execution_order() {
    let v = violations(&spec(vec![t("a").after(["c"]), t("b").after(["a"]), t("c").after(["b"]), t("d")]));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].0, "subtasks[0].depends_on");
    assert_eq!(v[0].1, "cycle: a → b → c → a");
}

#[test]
fn empty_and_oversized_specs_are_rejected() {
    assert_eq!(violations(&spec(vec![]))[0].0, "subtasks");
    let limits = Limits { max_subtasks: 2, ..Limits::default() };
    let err = Dag::build(&spec(vec![t("a"), t("b"), t("c")]), &limits).expect_err("too many");
    assert_eq!(err.0[0].description, "3 subtasks exceed the limit of 2");
    let big = SubtaskSpec::tool("big", "echo", json!({ "text": "x".repeat(70_000) }));
    let v = violations(&spec(vec![big]));
    assert_eq!(v[0].0, "subtasks[0].args");
    assert!(v[0].1.contains("exceed the limit of 65536"), "{}", v[0].1);
}

#[test]
fn all_violations_are_reported_at_once() {
    let v = violations(&spec(vec![t("a").after(["nope"]), t("a"), SubtaskSpec::tool("b c", "", json!([]))]));
    let fields: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        vec!["subtasks[1].id", "subtasks[2].id", "subtasks[2].tool", "subtasks[2].args", "subtasks[0].depends_on[0]"]
    );
}

#[test]
fn deep_chain_does_not_overflow() {
    let n = 50_000;
    let mut subtasks = vec![t("n0")];
    for i in 1..n {
        subtasks.push(t(&format!("n{i}")).after([format!("n{}", i - 1)]));
    }
    subtasks[0].depends_on.push(SubtaskId::from(format!("n{}", n - 1)));
    let limits = Limits { max_subtasks: n, ..Limits::default() };
    let err = Dag::build(&spec(subtasks.clone()), &limits).expect_err("cycle");
    assert!(err.0[0].description.starts_with("cycle: n0 → n1 → n2"), "{}", &err.0[0].description[..40]);
    subtasks[0].depends_on.clear();
    let dag = Dag::build(&spec(subtasks), &limits).expect("valid");
    assert_eq!(dag.longest_path(|_| 1).0, n as u64);
}

#[test]
fn longest_path_follows_weights() {
    // a → {b (5), c (1)} → d
    let dag = Dag::build(
        &spec(vec![t("a"), t("b").after(["a"]), t("c").after(["a"]), t("d").after(["b", "c"])]),
        &Limits::default(),
    )
    .expect("valid");
    let w = [1u64, 5, 1, 1];
    let (total, path) = dag.longest_path(|i| w[i.index()]);
    assert_eq!(total, 7);
    let ids: Vec<&str> = path.iter().map(|&i| dag.node(i).id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b", "d"]);
}

/// Reference: a graph has a cycle iff some node reaches itself (transitive closure).
fn reference_has_cycle(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut reach = vec![vec![false; n]; n];
    for &(a, b) in edges {
        reach[a][b] = true;
    }
    for k in 0..n {
        let via = reach[k].clone();
        for row in reach.iter_mut() {
            if row[k] {
                for (cell, &v) in row.iter_mut().zip(&via) {
                    *cell |= v;
                }
            }
        }
    }
    (0..n).any(|i| reach[i][i])
}

proptest! {
    #[test]
    fn cycle_detector_agrees_with_reference(
        n in 1usize..12,
        raw_edges in proptest::collection::vec((0usize..12, 0usize..12), 0..30),
    ) {
        let edges: Vec<(usize, usize)> = raw_edges
            .into_iter()
            .filter(|&(a, b)| a < n && b < n && a != b)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // edge (a, b): b depends on a.
        let subtasks = (0..n)
            .map(|i| {
                t(&format!("s{i}")).after(edges.iter().filter(|e| e.1 == i).map(|e| format!("s{}", e.0)))
            })
            .collect();
        let result = Dag::build(&spec(subtasks), &Limits::default());
        prop_assert_eq!(result.is_err(), reference_has_cycle(n, &edges));
        if let Err(v) = result {
            // Every named cycle is a real cycle of the graph.
            for violation in v.0 {
                let body = violation.description.strip_prefix("cycle: ").expect("only cycles");
                let ids: Vec<usize> = body.split(" → ").map(|s| s[1..].parse().expect("id")).collect();
                prop_assert_eq!(ids.first(), ids.last());
                for w in ids.windows(2) {
                    prop_assert!(edges.contains(&(w[0], w[1])), "{:?} not an edge", w);
                }
            }
        }
    }
}

#[test]
fn a_million_bad_dependencies_give_a_bounded_list_of_violations() {
    let mut hostile = SubtaskSpec::tool("a", "echo", json!({}));
    hostile.depends_on = (0..1_000_000).map(|_| SubtaskId::from("z")).collect();
    let mut twice = SubtaskSpec::tool("b", "echo", json!({}));
    twice.depends_on = vec![SubtaskId::from("a"); 50_000];
    let spec = RunSpec::new("hostile", vec![hostile, twice]);
    let err = Dag::build(&spec, &Limits::default()).expect_err("refused");
    assert_eq!(err.0.len(), MAX_VIOLATIONS + 1, "the first 100 listed, the rest counted");
    assert_eq!(err.0[0].field, "subtasks[0].depends_on[0]");
    assert_eq!(err.0[0].description, "unknown subtask `z`");
    let last = err.0.last().expect("summary");
    assert_eq!(last.field, "spec");
    assert_eq!(last.description, format!("{} more problems not listed (the first 100 are)", 1_000_000 + 49_999 - 100));
}

#[test]
fn every_out_of_range_number_is_a_named_violation() {
    let text = r#"
name: n
schedule_to_start_ms: 18446744073709551615
speculation: {quantile: .nan, multiplier: 1e300, max_fraction: -1, min_runtime_ms: 99999999999}
subtasks:
  - {id: a, tool: echo, timeout: 100000h}
  - id: b
    agent: {input: hi, model: m, tools: ["", x]}
"#;
    let s: RunSpec = serde_saphyr::from_str(text).expect("parses");
    let fields: Vec<String> = violations(&s).into_iter().map(|(f, _)| f).collect();
    for f in [
        "schedule_to_start_ms",
        "speculation.quantile",
        "speculation.multiplier",
        "speculation.max_fraction",
        "speculation.min_runtime_ms",
        "subtasks[0].timeout",
        "subtasks[1].agent.tools[0]",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
}

#[test]
fn durations_too_large_to_represent_are_parse_errors_not_panics() {
    let huge = format!("{}s", "9".repeat(300));
    assert!(crate::spec::parse_duration(&huge).is_err());
    let yaml = "name: n\nsubtasks:\n  - {id: a, tool: echo, timeout: 1e300}\n";
    assert!(serde_saphyr::from_str::<RunSpec>(yaml).is_err());
    let json = r#"{"subtasks": [{"id": "a", "tool": "echo", "timeout": -1}]}"#;
    assert!(serde_json::from_str::<RunSpec>(json).is_err());
}

#[test]
fn retry_levels_merge_field_by_field_subtask_over_tool_over_run() {
    let text = r#"
name: levels
retry: {maximum_attempts: 3, jitter: 0.1}
tool_retry:
  echo: {initial_interval_ms: 7}
subtasks:
  - {id: a, tool: echo}
  - {id: b, tool: echo, retry: {jitter: 0.0}}
  - {id: c, tool: sleep, retry: {maximum_attempts: 2}}
  - {id: d, tool: sleep}
"#;
    let s: RunSpec = serde_saphyr::from_str(text).expect("parses");
    let dag = Dag::build(&s, &Limits::default()).expect("valid");
    let retry = |id: &str| (*dag.node(dag.index_of(id).expect("id")).retry.clone().expect("a policy")).clone();
    let a = retry("a");
    assert_eq!(
        (a.maximum_attempts, a.initial_interval_ms, a.jitter),
        (Some(3), Some(7), Some(0.1)),
        "the run's attempts reach the tool's level"
    );
    let b = retry("b");
    assert_eq!((b.maximum_attempts, b.initial_interval_ms, b.jitter), (Some(3), Some(7), Some(0.0)));
    let c = retry("c");
    assert_eq!((c.maximum_attempts, c.initial_interval_ms, c.jitter), (Some(2), None, Some(0.1)));
    assert_eq!(retry("d"), s.retry.clone().expect("run retry"));
}
