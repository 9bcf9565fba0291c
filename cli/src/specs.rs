//! Run-spec files (YAML or JSON) and generators for the example DAGs.

use std::path::Path;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec, agent};

/// A spec file that cannot be read or is not a spec (its message says which and where): bad
/// usage, as an invalid spec is (the CLI exits 64).
#[derive(Debug)]
pub struct BadSpecFile(String);

impl std::fmt::Display for BadSpecFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadSpecFile {}

/// Reads a spec from a `.yaml`/`.yml` or `.json` file (other names: JSON if it parses, else YAML).
pub fn load(path: &Path) -> anyhow::Result<RunSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| BadSpecFile(format!("reading {}: {e}", path.display())))?;
    parse(&text, path.extension().and_then(|e| e.to_str()))
        .map_err(|e| BadSpecFile(format!("parsing {}: {e:#}", path.display())).into())
}

/// Parses spec text; `ext` picks the format, `None` tries JSON then YAML.
pub fn parse(text: &str, ext: Option<&str>) -> anyhow::Result<RunSpec> {
    match ext {
        Some("json") => Ok(serde_json::from_str(text)?),
        Some("yaml" | "yml") => yaml(text),
        _ => serde_json::from_str(text).or_else(|_| yaml(text)),
    }
}

/// A YAML spec; the parser's message without its own `error: ` (the CLI says that once).
fn yaml(text: &str) -> anyhow::Result<RunSpec> {
    swarm_coordinator::yaml::from_str(text).map_err(|e| {
        let message = e.to_string();
        anyhow::anyhow!("{}", message.strip_prefix("error: ").unwrap_or(&message).to_owned())
    })
}

/// The swarm-shaped DAG: one planner, `chains` chains of `length` sequential tool calls, one
/// reducer. `ms(chain, step)` gives each call's sleep; `None` makes every call an `echo`.
pub fn swarm(chains: usize, length: usize, ms: Option<&dyn Fn(usize, usize) -> u64>) -> RunSpec {
    let mut subtasks = Vec::with_capacity(chains * length + 2);
    let call = |id: String, c: usize, s: usize| match ms {
        Some(f) => SubtaskSpec::tool(id, "sleep", json!({ "ms": f(c, s) })),
        None => SubtaskSpec::tool(id, "echo", json!({ "text": format!("chain {c} step {s}") })),
    };
    subtasks.push(SubtaskSpec::tool("plan", "echo", json!({ "text": "split the task" })));
    for c in 0..chains {
        for s in 0..length {
            let dep = if s == 0 { "plan".to_owned() } else { format!("agent-{c}-step-{}", s - 1) };
            subtasks.push(call(format!("agent-{c}-step-{s}"), c, s).after([dep]));
        }
    }
    let last: Vec<String> = (0..chains).map(|c| format!("agent-{c}-step-{}", length - 1)).collect();
    subtasks.push(SubtaskSpec::tool("reduce", "echo", json!({ "text": "merge the answers" })).after(last));
    RunSpec::new("swarm", subtasks)
}

/// Lognormal sleep durations in ms with the given median and shape, from a fixed seed.
pub fn lognormal_ms(seed: u64, median_ms: f64, sigma: f64, chains: usize, length: usize) -> Vec<Vec<u64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..chains)
        .map(|_| {
            (0..length)
                .map(|_| {
                    // Box–Muller: a standard normal from two uniforms.
                    let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (median_ms * (sigma * z).exp()).round().max(1.0) as u64
                })
                .collect()
        })
        .collect()
}

/// A small DAG for first steps: fan-out, fan-in.
pub fn small() -> RunSpec {
    let text = include_str!("../../examples/small.yaml");
    parse(text, Some("yaml")).unwrap_or_else(|e| panic!("examples/small.yaml is invalid: {e}"))
}

/// An orchestrator `lead` on `model` whose subagents may call `sleep`, with the run's limits.
pub fn orchestrator(model: &str, max_subagents: u32, max_tool_calls: u32) -> RunSpec {
    let lead = SubtaskSpec {
        retry: None,
        outputs: Default::default(),
        id: "lead".into(),
        kind: SubtaskKind::Orchestrator(agent::OrchestratorSpec {
            goal: "split the work".into(),
            model: model.into(),
            tools: vec![],
            max_steps: None,
            subagent_tools: vec!["sleep".into()],
            subagent_models: vec![],
            subagent_artifacts: vec![],
            subagent_placement: None,
        }),
        depends_on: vec![],
        timeout: None,
        placement: None,
    };
    let mut spec = RunSpec::new("agents-bench", vec![lead]);
    spec.limits.max_subagents = max_subagents;
    spec.limits.max_tool_calls = max_tool_calls;
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_core::{Dag, Limits};

    #[test]
    fn swarm_dag_has_the_documented_shape() {
        let spec = swarm(100, 15, None);
        let dag = Dag::build(&spec, &Limits::default()).expect("valid");
        assert_eq!(dag.len(), 1502);
        assert_eq!(dag.longest_path(|_| 1).0, 17);
    }

    #[test]
    fn example_files_parse_and_validate() {
        for (name, text) in [
            ("small.yaml", include_str!("../../examples/small.yaml")),
            ("swarm-1500.yaml", include_str!("../../examples/swarm-1500.yaml")),
            ("small.json", include_str!("../../examples/small.json")),
        ] {
            let ext = name.rsplit('.').next();
            let spec = parse(text, ext).unwrap_or_else(|e| panic!("{name}: {e}"));
            Dag::build(&spec, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn lognormal_is_seeded_and_centred() {
        let a = lognormal_ms(42, 50.0, 0.5, 10, 100);
        assert_eq!(a, lognormal_ms(42, 50.0, 0.5, 10, 100));
        let mut all: Vec<u64> = a.into_iter().flatten().collect();
        all.sort_unstable();
        let median = all[all.len() / 2];
        assert!((40..=60).contains(&median), "median {median}");
    }
}
