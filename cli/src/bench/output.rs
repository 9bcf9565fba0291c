//! `swarm bench --scenario output`: what following an agent swarm's partial output costs, and
//! what not following it saves. The 1,500-call agent swarm (an orchestrator, 100 subagents × 15
//! `sleep` calls of 50 ms, the scripted model) runs `repeat` times each way, alternating: with
//! only a plain watch (as `swarm run` and `swarm watch` without `--follow-output` are), and with
//! a watcher that follows the output. Figures: the partial-output chunks the coordinator
//! received from the workers and their encoded bytes (per run), and the runs' wall times
//! (medians), on an embedded cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use swarm_proto::pb;

use crate::client::{self, Client};
use crate::embedded::{Embedded, EmbeddedOptions};

/// The figures (per run; medians over the repeats).
#[derive(Debug, Serialize)]
pub struct OutputBench {
    pub runs_each: usize,
    pub tool_calls: u32,
    pub unwatched_chunks: u64,
    pub unwatched_bytes: u64,
    pub unwatched_wall_ms: f64,
    pub followed_chunks: u64,
    pub followed_bytes: u64,
    pub followed_wall_ms: f64,
    /// Output events the follower received (per run).
    pub follower_events: u64,
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One run: (output chunks and bytes received, wall ms, output events the follower saw).
async fn one(cluster: &Embedded, c: &mut Client, follow: bool) -> anyhow::Result<(u64, u64, f64, u64, u32)> {
    let spec = super::orchestrator("scripted", 100, 1500);
    let before = cluster.stats().await?;
    let t0 = Instant::now();
    let request = pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() };
    let run_id = c.submit_run(request).await.map_err(|s| client::status_error(&s))?.into_inner().run_id;
    let mut seen = 0u64;
    let watching = client::follow_with(c, &run_id, 0, follow, |ev| {
        seen += u64::from(matches!(ev.event, Some(pb::run_event::Event::AgentOutput(_))));
    });
    tokio::time::timeout(Duration::from_secs(300), watching).await??;
    let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let run = client::get(c, &run_id, false).await.map_err(|s| client::status_error(&s))?;
    anyhow::ensure!(run.state == pb::RunState::Succeeded as i32, "run {run_id} did not succeed");
    let calls = run.summary.map_or(0, |s| s.tool_calls_completed + s.agent_tool_calls);
    let after = cluster.stats().await?;
    Ok((after.output_chunks - before.output_chunks, after.output_bytes - before.output_bytes, wall_ms, seen, calls))
}

pub fn run(repeat: usize) -> anyhow::Result<OutputBench> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut models = swarm_worker::model::ModelRegistry::new();
        models.register("scripted", Arc::new(swarm_worker::model::ScriptedModel::demo(100, 15, 50)));
        let opts = EmbeddedOptions { workers: 2, slots: 64, models: Arc::new(models), ..Default::default() };
        let cluster = Embedded::start(opts).await?;
        let mut c = client::connect(&cluster.url()).await?;
        let (mut unwatched, mut followed) = (Vec::new(), Vec::new());
        let mut calls = 0;
        for _ in 0..repeat {
            unwatched.push(one(&cluster, &mut c, false).await?);
            let r = one(&cluster, &mut c, true).await?;
            calls = r.4;
            followed.push(r);
        }
        cluster.stop().await;
        let pick = |v: &[(u64, u64, f64, u64, u32)], f: fn(&(u64, u64, f64, u64, u32)) -> f64| {
            median(v.iter().map(f).collect::<Vec<_>>())
        };
        Ok(OutputBench {
            runs_each: repeat,
            tool_calls: calls,
            unwatched_chunks: pick(&unwatched, |r| r.0 as f64) as u64,
            unwatched_bytes: pick(&unwatched, |r| r.1 as f64) as u64,
            unwatched_wall_ms: pick(&unwatched, |r| r.2),
            followed_chunks: pick(&followed, |r| r.0 as f64) as u64,
            followed_bytes: pick(&followed, |r| r.1 as f64) as u64,
            followed_wall_ms: pick(&followed, |r| r.2),
            follower_events: pick(&followed, |r| r.3 as f64) as u64,
        })
    })
}
