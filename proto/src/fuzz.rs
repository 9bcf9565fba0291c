//! Property tests of every spec parser, on stable Rust: arbitrary wire specs (every number at
//! its edges: NaN, infinities, 1e300, negative durations, `u64::MAX`) and arbitrary YAML and
//! JSON texts go through conversion and validation; whatever is accepted runs in the engine to
//! an end on a simulated clock (random outcomes, retries, backups, cancels) and is summarized.
//! No panic, no hang (a bounded number of steps), and every refusal names a field.

use std::sync::Arc;

use proptest::prelude::*;
use swarm_core::engine::{Action, EngineEvent};
use swarm_core::{Dag, Fence, Limits, RetryPolicy, RunEngine, RunId, RunSpec, WorkerId};

use crate::pb;

/// Mostly unset (0) and sane values; sometimes the worst.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => Just(0.0),
        4 => 0.0..1.0f64,
        1 => prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(1e300),
        Just(-1.0),
        0.0..3.0f64,
        any::<f64>()
        ],
    ]
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    prop_oneof![
        8 => Just(None),
        4 => (0i64..5, 1i32..1_000_000_000).prop_map(|(seconds, nanos)| Some(prost_types::Duration { seconds, nanos })),
        1 => (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Some(prost_types::Duration { seconds, nanos })),
    ]
}

fn retry() -> impl Strategy<Value = Option<pb::RetryPolicy>> {
    prop::option::weighted(
        0.3,
        (
            duration(),
            prop::option::of(float()),
            duration(),
            prop::option::of(prop_oneof![0u32..6, any::<u32>()]),
            prop::option::of(float()),
            prop::collection::vec(any::<i32>(), 0..2),
        )
            .prop_map(
                |(initial_interval, backoff_coefficient, maximum_interval, maximum_attempts, jitter, non_retryable)| {
                    pb::RetryPolicy {
                        initial_interval,
                        backoff_coefficient,
                        maximum_interval,
                        maximum_attempts,
                        jitter,
                        non_retryable,
                    }
                },
            ),
    )
}

/// Mostly `s0`…`s9` (so most specs are valid DAGs), sometimes anything.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![10 => (0u8..10).prop_map(|i| format!("s{i}")), 1 => ".{0,4}"]
}

fn kind() -> impl Strategy<Value = Option<pb::subtask_spec::Kind>> {
    use pb::subtask_spec::Kind;
    let tools = prop::collection::vec(prop_oneof![Just("echo".to_owned()), ".{0,3}".prop_map(String::from)], 0..3);
    prop::option::weighted(
        0.95,
        prop_oneof![
            6 => (prop_oneof![4 => Just("echo".to_owned()), 1 => ".{0,4}".prop_map(String::from)],
                  prop_oneof![4 => Just("{}".to_owned()), 1 => Just("{\"ms\": 1e300}".to_owned()), 1 => ".{0,8}".prop_map(String::from)])
                .prop_map(|(tool, args_json)| Kind::ToolCall(pb::ToolCall { tool, args_json })),
            1 => ("[a-z]{1,6}", prop_oneof![Just("m".to_owned()), ".{0,3}".prop_map(String::from)], tools.clone(), prop::option::of(0u32..12))
                .prop_map(|(input, model, tools, max_steps)| Kind::Agent(pb::AgentSpec {
                    instructions: String::new(), input, model, tools, max_steps,
                })),
            1 => ("[a-z]{1,6}", prop_oneof![Just("m".to_owned()), ".{0,3}".prop_map(String::from)], tools, prop::option::of(0u32..12))
                .prop_map(|(goal, model, tools, max_steps)| Kind::Orchestrator(pb::OrchestratorSpec {
                    subagent_tools: tools.iter().rev().cloned().collect(), goal, model, tools, max_steps,
                    subagent_models: vec![],
                    subagent_artifacts: vec![],
                    subagent_placement: None,
                })),
        ],
    )
}

/// Artifact patterns, good and bad (climbing, absolute, empty, under `inputs/`).
fn outputs() -> impl Strategy<Value = Option<pb::SubtaskOutputs>> {
    let pattern =
        prop::sample::select(vec!["a.md", "data/*.csv", "**", "../../x", "/etc/passwd", "", "inputs/a", "a**"]);
    prop::option::of(prop::collection::vec(pattern.prop_map(String::from), 0..4))
        .prop_map(|v| v.map(|artifacts| pb::SubtaskOutputs { artifacts }))
}

fn subtask() -> impl Strategy<Value = pb::SubtaskSpec> {
    (id(), prop::collection::vec(id(), 0..3), duration(), retry(), kind(), outputs()).prop_map(
        |(id, depends_on, timeout, retry, kind, outputs)| pb::SubtaskSpec {
            id,
            depends_on,
            timeout,
            retry,
            kind,
            outputs,
            placement: None,
        },
    )
}

/// Subtasks `s0`, `s1`, … each depending on earlier ones (valid DAGs), with one of them
/// perhaps replaced by an arbitrary subtask.
fn subtasks() -> impl Strategy<Value = Vec<pb::SubtaskSpec>> {
    (prop::collection::vec((subtask(), prop::collection::vec(any::<u8>(), 0..3)), 0..10), any::<u8>(), any::<bool>())
        .prop_map(|(list, wild, keep_wild)| {
            let n = list.len();
            list.into_iter()
                .enumerate()
                .map(|(i, (mut s, deps))| {
                    if !(keep_wild && usize::from(wild) % n.max(1) == i) {
                        s.id = format!("s{i}");
                        s.depends_on =
                            deps.iter().filter(|_| i > 0).map(|d| format!("s{}", usize::from(*d) % i)).collect();
                        s.depends_on.dedup();
                    }
                    s
                })
                .collect()
        })
}

fn wire_spec() -> impl Strategy<Value = pb::RunSpec> {
    (
        ".{0,8}",
        subtasks(),
        prop::option::weighted(
            0.2,
            (
                prop::option::of(0u32..20),
                prop::option::of(0u32..20_000),
                prop::option::of(0u32..12),
                prop::option::of(0u32..12),
                prop::option::of(any::<u64>()),
            ),
        ),
        prop::option::weighted(
            0.3,
            (
                any::<bool>(),
                prop::option::of(float()),
                prop::option::of(float()),
                prop::option::of(prop_oneof![0u64..100, any::<u64>()]),
                prop::option::of(float()),
            ),
        ),
        retry(),
        prop::collection::btree_map("[a-z]{0,4}", retry().prop_map(Option::unwrap_or_default), 0..2),
        prop_oneof![Just(0u32), any::<u32>()],
        prop_oneof![8 => Just(0u64), 1 => 1u64..10_000, 1 => any::<u64>()],
    )
        .prop_map(
            |(name, subtasks, limits, speculation, retry, tool_retry, max_concurrency, schedule_to_start_ms)| {
                pb::RunSpec {
                    priority: max_concurrency % 12,
                    version: String::new(),
                    name,
                    subtasks,
                    limits: limits.map(|(a, b, c, d, e)| pb::RunLimits {
                        max_subagents: a,
                        max_tool_calls: b,
                        orchestrator_max_steps: c,
                        subagent_max_steps: d,
                        max_tokens: e,
                    }),
                    speculation: speculation.map(|(disabled, quantile, multiplier, min_runtime_ms, max_fraction)| {
                        pb::Speculation { disabled, quantile, multiplier, min_runtime_ms, max_fraction }
                    }),
                    retry,
                    tool_retry: tool_retry.into_iter().collect(),
                    max_concurrency,
                    schedule_to_start_ms,
                }
            },
        )
}

/// Runs `dag` to an end: dispatches what is ready, ends attempts with the `script`'s outcomes
/// (cycled), fires retry timers, starts backups, cancels at a scripted step. Panics if the run
/// does not end within a bounded number of steps.
fn run_to_end(dag: Dag, script: &[u8]) {
    let dag = Arc::new(dag);
    let mut e = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 1, 7);
    let (mut now, mut fence, mut out) = (1_000u64, 0u64, Vec::new());
    let mut running: Vec<(swarm_core::SubtaskIx, Fence)> = Vec::new();
    let mut timers: Vec<(u64, swarm_core::SubtaskIx)> = Vec::new();
    let w = WorkerId::from("w");
    for step in 0..20_000usize {
        if e.state().is_terminal() {
            let s = e.summary(now);
            let _ = pb::RunSummary::from(&s);
            return;
        }
        let b = script.get(step % script.len().max(1)).copied().unwrap_or(0);
        if b == 255 {
            e.apply(EngineEvent::CancelRequested, now, &mut out);
        }
        while let Some(i) = e.pop_dispatchable() {
            fence += 1;
            e.apply(EngineEvent::Dispatched { subtask: i, worker: w.clone(), fence: Fence(fence) }, now, &mut out);
            running.push((i, Fence(fence)));
        }
        if b % 7 == 0 {
            for i in e.speculation_candidates(now, |_| true) {
                fence += 1;
                e.apply(
                    EngineEvent::BackupDispatched { subtask: i, worker: w.clone(), fence: Fence(fence) },
                    now,
                    &mut out,
                );
                running.push((i, Fence(fence)));
            }
        }
        e.expire_unscheduled(now, &mut out);
        if let Some((i, f)) = (!running.is_empty()).then(|| running.remove(usize::from(b) % running.len())) {
            now += u64::from(b) * 1000;
            let (started_us, finished_us) = (now.saturating_sub(u64::from(b) * 900), now);
            let ev = match b % 5 {
                0 | 1 => EngineEvent::Succeeded {
                    subtask: i,
                    fence: f,
                    started_us,
                    finished_us,
                    output: "{}".into(),
                    artifacts: None,
                },
                2 => EngineEvent::Lost { subtask: i, fence: f, reason: "gone".into() },
                k => EngineEvent::Failed {
                    subtask: i,
                    fence: f,
                    kind: [swarm_core::FailureKind::Transient, swarm_core::FailureKind::Permanent][usize::from(k) - 3],
                    message: "x".into(),
                    started_us,
                    finished_us,
                },
            };
            e.apply(ev, now, &mut out);
        } else if let Some(k) = (0..timers.len()).min_by_key(|&k| timers[k].0) {
            let (at, i) = timers.remove(k);
            now = now.max(at);
            e.apply(EngineEvent::RetryDue { subtask: i }, now, &mut out);
        } else {
            // Nothing runs, nothing is due: only a schedule-to-start expiry can move it on.
            now = now.saturating_add(3_600_000_000);
        }
        for a in out.drain(..) {
            if let Action::ArmTimer { subtask, at_us } = a {
                timers.push((at_us, subtask));
            }
        }
    }
    panic!("the run did not end within 20,000 steps: {:?}", e.counts());
}

/// Half the cases keep only what makes a valid spec likely (every subtask a tool call or an
/// agent with sane fields, retry policies and timeouts only where sane), so the engine part
/// sees many runs; the other half are as generated.
fn tamed(mut wire: pb::RunSpec) -> pb::RunSpec {
    use pb::subtask_spec::Kind;
    let sane_duration = |d: &Option<prost_types::Duration>| {
        d.as_ref().is_none_or(|d| (0..5).contains(&d.seconds) && (0..1_000_000_000).contains(&d.nanos))
    };
    let sane_retry = |r: &Option<pb::RetryPolicy>| {
        r.as_ref().is_none_or(|r| {
            sane_duration(&r.initial_interval)
                && sane_duration(&r.maximum_interval)
                && r.backoff_coefficient.is_none_or(|c| (1.0..=3.0).contains(&c))
                && r.maximum_attempts.is_none_or(|n| (1..=6).contains(&n))
                && r.jitter.is_none_or(|j| (0.0..1.0).contains(&j))
        })
    };
    for s in &mut wire.subtasks {
        if !sane_duration(&s.timeout) || s.timeout.as_ref().is_some_and(|d| d.seconds == 0 && d.nanos == 0) {
            s.timeout = None;
        }
        if !sane_retry(&s.retry) {
            s.retry = None;
        }
        match &mut s.kind {
            Some(Kind::ToolCall(t)) => {
                t.tool = "echo".into();
                t.args_json = "{}".into();
            }
            Some(Kind::Agent(a)) => {
                a.model = "m".into();
                a.tools.retain(|t| !t.is_empty());
            }
            Some(Kind::Orchestrator(o)) => {
                o.model = "m".into();
                o.tools.retain(|t| !t.is_empty());
            }
            Some(Kind::Approval(a)) => {
                a.prompt = "ok?".into();
                if !sane_duration(&a.timeout) {
                    a.timeout = None;
                }
                a.on_timeout = a.on_timeout.rem_euclid(3);
                // An approval takes no timeout or retry of its own.
                s.timeout = None;
                s.retry = None;
            }
            None => s.kind = Some(Kind::ToolCall(pb::ToolCall { tool: "echo".into(), args_json: "{}".into() })),
        }
    }
    if !sane_retry(&wire.retry) {
        wire.retry = None;
    }
    wire.tool_retry.retain(|_, r| sane_retry(&Some(r.clone())));
    wire.limits = None;
    if wire.speculation.as_ref().is_some_and(|p| {
        !p.quantile.is_none_or(|q| q > 0.0 && q <= 1.0)
            || !p.multiplier.is_none_or(|m| (1.0..=100.0).contains(&m))
            || p.min_runtime_ms.is_some_and(|ms| ms > 1000)
            || !p.max_fraction.is_none_or(|f| (0.0..=1.0).contains(&f))
    }) {
        wire.speculation = None;
    }
    wire.schedule_to_start_ms %= 100_000;
    wire
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_wire_specs_are_refused_with_fields_or_run_to_an_end(
        wire in wire_spec(),
        script in prop::collection::vec(any::<u8>(), 1..16),
        tame in any::<bool>(),
    ) {
        let wire = if tame { tamed(wire) } else { wire };
        match RunSpec::try_from(wire) {
            Err(crate::ApiError::InvalidSpec(v)) => prop_assert!(v.0.iter().all(|x| !x.field.is_empty())),
            Err(other) => prop_assert!(false, "conversion errors are field violations: {other:?}"),
            Ok(spec) => match Dag::build(&spec, &Limits::default()) {
                Err(v) => prop_assert!(!v.0.is_empty() && v.0.iter().all(|x| !x.field.is_empty())),
                Ok(dag) => run_to_end(dag, &script),
            },
        }
    }

    #[test]
    fn arbitrary_yaml_and_json_texts_never_panic_the_parsers(text in ".{0,200}") {
        if let Ok(spec) = serde_saphyr::from_str::<RunSpec>(&text) {
            let _ = Dag::build(&spec, &Limits::default());
        }
        if let Ok(spec) = serde_json::from_str::<RunSpec>(&text) {
            let _ = Dag::build(&spec, &Limits::default());
        }
    }

    #[test]
    fn specs_shaped_like_the_file_format_parse_or_fail_cleanly(
        fields in prop::collection::vec((
            prop_oneof![Just("timeout"), Just("retry"), Just("depends_on"), Just("args"), Just("tool"), Just("agent")],
            prop_oneof![Just("1e300"), Just("-1"), Just(".nan"), Just("1e400s"), Just("[a, a]"), Just("{jitter: 1e300}"),
                        Just("{}"), Just("99999999999999999999h"), Just("x")],
        ), 0..4),
    ) {
        let mut text = String::from("name: p\nsubtasks:\n  - id: a\n    tool: echo\n");
        for (k, v) in &fields {
            text.push_str(&format!("    {k}: {v}\n"));
        }
        if let Ok(spec) = serde_saphyr::from_str::<RunSpec>(&text)
            && let Ok(dag) = Dag::build(&spec, &Limits::default())
        {
            run_to_end(dag, &[1, 3, 4]);
        }
    }
}
