//! `swarm bench --scenario artifacts`: 100 producers each hand on 10 files of 10 KB (in the
//! exec sandbox), one reducer depends on all of them and finds the 1,000 files under
//! `inputs/` (an embedded cluster of 4 workers × 64 slots, payloads in a local directory).
//!
//! Figures: the reducer's attempt (placing 1,000 input files, then `find`), the whole run, and
//! the same run without artifacts as a baseline, alternating, `repeat` pairs; medians.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_worker::tools::ToolRegistry;
use swarm_worker::tools::exec::{Exec, Limits, Sandbox, Workspaces};

use crate::embedded::{Embedded, EmbeddedOptions};

const PRODUCERS: usize = 100;
const FILES: usize = 10;
const FILE_BYTES: usize = 10 * 1024;

/// The figures (medians over the pairs).
#[derive(Debug, Serialize)]
pub struct ArtifactsBench {
    pub pairs: usize,
    pub files: usize,
    pub bytes: u64,
    /// The reducer's attempt: the 1,000 files placed in its workspace, then listed.
    pub reducer_ms: f64,
    /// The same reducer without inputs.
    pub reducer_baseline_ms: f64,
    /// The whole run (submit to end), with artifacts and without.
    pub run_ms: f64,
    pub run_baseline_ms: f64,
    /// Files the reducer found (must be 1,000).
    pub found: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn spec(artifacts: bool) -> RunSpec {
    let script =
        format!("i=0; while [ $i -lt {FILES} ]; do head -c {FILE_BYTES} /dev/urandom > out/f$i.bin; i=$((i+1)); done");
    let mut subtasks: Vec<SubtaskSpec> = (0..PRODUCERS)
        .map(|p| {
            let mut s = SubtaskSpec::tool(
                format!("p{p}"),
                "exec",
                json!({"script": format!("mkdir -p out; {script}"), "check": true}),
            );
            if artifacts {
                s.outputs.artifacts = vec!["out/*.bin".into()];
            }
            s
        })
        .collect();
    let ids: Vec<String> = (0..PRODUCERS).map(|p| format!("p{p}")).collect();
    subtasks.push(
        SubtaskSpec::tool(
            "reduce",
            "exec",
            json!({"script": "find inputs -type f 2>/dev/null | wc -l", "check": true}),
        )
        .after(ids),
    );
    RunSpec::new(if artifacts { "artifacts" } else { "no-artifacts" }, subtasks)
}

/// One run: (its wall ms, the reducer's attempt ms, files found).
async fn once(c: &mut crate::client::Client, artifacts: bool) -> anyhow::Result<(f64, f64, u64)> {
    let t = Instant::now();
    let request = pb::SubmitRunRequest { spec: Some((&spec(artifacts)).into()), ..Default::default() };
    let run_id = c.submit_run(request).await?.into_inner().run_id;
    crate::client::follow(c, &run_id, 0, |_| {}).await?;
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    let run = crate::client::get(c, &run_id, true).await.map_err(|s| crate::client::status_error(&s))?;
    anyhow::ensure!(run.state == pb::RunState::Succeeded as i32, "the run failed: {:?}", run.summary);
    let reduce = run.subtasks.iter().find(|s| s.id == "reduce").ok_or_else(|| anyhow::anyhow!("no reducer"))?;
    let us = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, swarm_proto::convert::unix_us);
    let reducer_ms = us(&reduce.finished_at).saturating_sub(us(&reduce.started_at)) as f64 / 1000.0;
    let out: serde_json::Value = serde_json::from_str(&reduce.output_json)?;
    let found = out["stdout"].as_str().unwrap_or_default().trim().parse().unwrap_or(0);
    Ok((wall, reducer_ms, found))
}

/// `pairs` alternating pairs (with artifacts, then without).
pub fn run(pairs: usize) -> anyhow::Result<ArtifactsBench> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let sandbox = Arc::new(Sandbox::probe().await.map_err(|e| anyhow::anyhow!(e))?);
        let root = std::env::temp_dir().join(format!("swarm-bench-artifacts-{}", std::process::id()));
        let workspaces = Workspaces::new(root.join("workspaces"), Duration::from_secs(3600))?;
        let mut tools = ToolRegistry::builtin();
        tools.set_workspaces(workspaces.clone());
        tools.register(Arc::new(Exec::new(sandbox, workspaces, Limits::default())));
        let mut opts = EmbeddedOptions { workers: 4, slots: 64, tools: Some(Arc::new(tools)), ..Default::default() };
        opts.coordinator.payloads =
            swarm_store::payload::PayloadStore::local(&root.join("payloads"), swarm_store::payload::DEFAULT_THRESHOLD)?;
        let cluster = Embedded::start(opts).await?;
        let mut c = crate::client::connect(&cluster.url()).await?;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let mut found = 0;
        for _ in 0..pairs {
            let (wall, reducer, n) = once(&mut c, true).await?;
            found = n;
            with.push((wall, reducer));
            without.push(once(&mut c, false).await?);
        }
        cluster.stop().await;
        let _ = std::fs::remove_dir_all(&root);
        anyhow::Ok(ArtifactsBench {
            pairs,
            files: PRODUCERS * FILES,
            bytes: (PRODUCERS * FILES * FILE_BYTES) as u64,
            reducer_ms: median(with.iter().map(|w| w.1).collect()),
            reducer_baseline_ms: median(without.iter().map(|w| w.1).collect()),
            run_ms: median(with.iter().map(|w| w.0).collect()),
            run_baseline_ms: median(without.iter().map(|w| w.0).collect()),
            found,
        })
    })
}
