//! `swarm bench --scenario fork`: a finished run of the swarm DAG (1 planner → 100 chains × 15
//! echo calls → 1 reducer: 1,502 calls) forked `repeat` times at the last call of one chain.
//!
//! Figures (medians): the `ForkRun` call as the client sees it, and the time from sending the
//! request to the first call of the new run starting (the attempt's start as the coordinator
//! recorded it; client and coordinator share this machine's clock), plus the calls each fork
//! made and reused. On the embedded cluster (memory store) or, with `--addr`, a running one
//! (etcd: every reused record is written to etcd before the fork starts).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use swarm_proto::pb;

use crate::client::{self, Client};
use crate::embedded::{Embedded, EmbeddedOptions};

const CHAINS: usize = 100;
const LENGTH: usize = 15;

/// The figures.
#[derive(Debug, Serialize)]
pub struct ForkBench {
    pub forks: usize,
    /// Calls of the original run.
    pub original_calls: u32,
    /// The subtask forked from.
    pub from: String,
    /// `ForkRun`'s round trip (median, max).
    pub fork_rpc_ms: f64,
    pub fork_rpc_max_ms: f64,
    /// Request sent → the new run's first call started (median, max).
    pub first_call_ms: f64,
    pub first_call_max_ms: f64,
    /// Request sent → the new run ended (median).
    pub fork_run_ms: f64,
    /// What each fork made and reused (the same every time, or the bench fails).
    pub calls_made: u32,
    pub calls_reused: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

async fn finished(c: &mut Client, run_id: &str) -> anyhow::Result<pb::Run> {
    tokio::time::timeout(Duration::from_secs(300), client::follow(c, run_id, 0, |_| {})).await??;
    let run = client::get(c, run_id, true).await.map_err(|s| client::status_error(&s))?;
    anyhow::ensure!(run.state == pb::RunState::Succeeded as i32, "run {run_id} did not succeed: {:?}", run.summary);
    Ok(run)
}

async fn measure(c: &mut Client, forks: usize) -> anyhow::Result<ForkBench> {
    let spec = crate::specs::swarm(CHAINS, LENGTH, None);
    let request = pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() };
    let original = c.submit_run(request).await?.into_inner().run_id;
    let run = finished(c, &original).await?;
    let from = format!("agent-0-step-{}", LENGTH - 1);
    let (mut rpc, mut first, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    let (mut made, mut reused) = (0, 0);
    for _ in 0..forks {
        let sent_us = now_us();
        let t = Instant::now();
        let req = pb::ForkRunRequest { run_id: original.clone(), from_subtask: from.clone(), ..Default::default() };
        let resp = c.fork_run(req).await.map_err(|s| client::status_error(&s))?.into_inner();
        rpc.push(t.elapsed().as_secs_f64() * 1000.0);
        let forked = finished(c, &resp.run_id).await?;
        whole.push(t.elapsed().as_secs_f64() * 1000.0);
        let started = forked
            .subtasks
            .iter()
            .filter(|s| s.reused_from.is_empty())
            .filter_map(|s| s.started_at.as_ref().map(swarm_proto::convert::unix_us))
            .min()
            .ok_or_else(|| anyhow::anyhow!("the fork started no call"))?;
        first.push(started.saturating_sub(sent_us) as f64 / 1000.0);
        let s = forked.summary.unwrap_or_default();
        anyhow::ensure!(s.calls_made == 2, "the fork made {} calls, not the 2 downstream of {from}", s.calls_made);
        (made, reused) = (s.calls_made, s.calls_reused);
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(ForkBench {
        forks,
        original_calls: run.summary.map_or(0, |s| s.tool_calls_completed),
        from,
        fork_rpc_ms: median(rpc.clone()),
        fork_rpc_max_ms: max(&rpc),
        first_call_ms: median(first.clone()),
        first_call_max_ms: max(&first),
        fork_run_ms: median(whole),
        calls_made: made,
        calls_reused: reused,
    })
}

/// Runs the bench on the cluster at `addr`, or on an embedded one (4 workers × 64 slots).
pub fn run(addr: Option<&str>, forks: usize) -> anyhow::Result<ForkBench> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        match addr {
            Some(addr) => measure(&mut client::connect(addr).await?, forks).await,
            None => {
                let cluster = Embedded::start(EmbeddedOptions { workers: 4, slots: 64, ..Default::default() }).await?;
                let out = measure(&mut client::connect(&cluster.url()).await?, forks).await;
                cluster.stop().await;
                out
            }
        }
    })
}
