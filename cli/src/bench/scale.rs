//! `swarm bench --scenario scale`: runs at the size limits.
//!
//! Phase 1 submits one run of 100,000 no-op tool calls (1,000 chains of 100, every chain ready
//! at once); phase 2 one orchestrator (a scripted model) that starts 10,000 subagents of 10
//! no-op calls each (100,000 calls). For each: how long the submission took (validation and
//! the store), throughput, ready → start p50/p99 over the run's subtasks, the first page of
//! `GetRun`, the coordinator's peak resident memory above its level before the phase (per
//! subtask), and its CPU time per call. As in the overload scenario, embedded, the memory is
//! the whole process's (workers, client and the memory store too); with `--addr` and
//! `--coordinator-pid` it is the coordinator's alone.

use std::time::Instant;

use serde::Serialize;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;

use super::Probe;
use crate::client;

/// Subagents of the orchestrator phase.
pub const SUBAGENTS: usize = 10_000;
/// Calls each subagent makes.
pub const CALLS_PER_SUBAGENT: u32 = 10;

/// One phase of the scale benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct ScalePhase {
    pub name: String,
    pub subtasks: u64,
    /// Tool calls made (plain calls and agents' calls).
    pub tool_calls: u64,
    pub subagents: u64,
    /// `SubmitRun` answered (the spec decoded, validated and stored).
    pub submit_ms: f64,
    pub wall_ms: f64,
    pub tool_calls_per_sec: f64,
    /// Ready → attempt started, over every subtask of the run.
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    /// `GetRun` with its first page of subtasks (1,000), after the run ended.
    pub first_page_ms: f64,
    pub rss_before_mb: f64,
    pub rss_peak_mb: f64,
    /// (peak − before) / subtasks of the run.
    pub rss_bytes_per_subtask: f64,
    pub coordinator_cpu_us_per_call: Option<f64>,
}

/// 1,000 independent chains of 100 no-op calls: 100,000 subtasks.
pub fn calls_spec(chains: usize, length: usize) -> RunSpec {
    let mut subtasks = Vec::with_capacity(chains * length);
    for c in 0..chains {
        for s in 0..length {
            let call = SubtaskSpec::tool(format!("c{c}-{s}"), "sleep", serde_json::json!({"ms": 0}));
            subtasks.push(if s == 0 { call } else { call.after([format!("c{c}-{}", s - 1)]) });
        }
    }
    RunSpec::new("scale-calls", subtasks)
}

/// Runs both phases. `model` is a scripted model that starts [`SUBAGENTS`] subagents of
/// [`CALLS_PER_SUBAGENT`] calls (without one, the orchestrator phase is skipped: a cluster
/// reached with `--addr` has its own workers and models).
pub async fn scale(client: &mut client::Client, probe: Probe, model: Option<&str>) -> anyhow::Result<Vec<ScalePhase>> {
    super::submit_and_wait(client, &calls_spec(10, 10)).await?; // warm-up
    let calls = phase(client, probe, "one run of 100,000 calls (1,000 chains × 100)", &calls_spec(1000, 100)).await?;
    let Some(model) = model else {
        eprintln!("scale: the orchestrator phase runs on the embedded cluster only (its scripted model)");
        return Ok(vec![calls]);
    };
    let spec = super::orchestrator(model, SUBAGENTS as u32, SUBAGENTS as u32 * CALLS_PER_SUBAGENT);
    let agents = phase(client, probe, "an orchestrator starting 10,000 subagents × 10 calls", &spec).await?;
    Ok(vec![calls, agents])
}

async fn phase(client: &mut client::Client, probe: Probe, name: &str, spec: &RunSpec) -> anyhow::Result<ScalePhase> {
    let before = probe.rss_bytes().unwrap_or(0);
    let cpu0 = probe.cpu_us();
    let sampler = super::overload::PeakRss::start(probe, before);
    let t0 = Instant::now();
    let req = pb::SubmitRunRequest { spec: Some(spec.into()), ..Default::default() };
    let resp = client::submit(client, req).await.map_err(|s| client::status_error(&s))?;
    let submit_ms = t0.elapsed().as_secs_f64() * 1000.0;
    client::follow(client, &resp.run_id, 0, |_| {}).await?;
    let wall = t0.elapsed().as_secs_f64();
    let peak = sampler.stop().await;
    let cpu1 = probe.cpu_us();
    let t1 = Instant::now();
    let first = client
        .get_run(client::request(pb::GetRunRequest {
            run_id: resp.run_id.clone(),
            include_subtasks: true,
            page_size: 1000,
            page_token: String::new(),
        }))
        .await
        .map_err(|s| client::status_error(&s))?
        .into_inner();
    let first_page_ms = t1.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(first.run.is_some_and(|r| r.subtasks.len() == 1000), "the first page holds 1,000 subtasks");
    let run = client::get(client, &resp.run_id, true).await.map_err(|s| client::status_error(&s))?;
    let json = client::RunJson::from(&run);
    anyhow::ensure!(json.state == "SUCCEEDED", "the {name} run ended {}", json.state);
    let mut waits: Vec<f64> = run
        .subtasks
        .iter()
        .filter_map(|s| {
            let ready = swarm_proto::convert::unix_us(s.ready_at.as_ref()?);
            let started = swarm_proto::convert::unix_us(s.first_started_at.as_ref().or(s.started_at.as_ref())?);
            Some(started.saturating_sub(ready) as f64 / 1000.0)
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let q = |p: f64| waits.get(((waits.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    // Plain calls that succeeded, and the calls agents made (agents are subtasks, not calls).
    let plain =
        run.subtasks.iter().filter(|s| s.kind == "tool" && s.state == pb::SubtaskState::Succeeded as i32).count();
    let calls = plain as u64 + u64::from(json.agent_tool_calls);
    let subtasks = run.subtasks.len() as u64;
    let out = ScalePhase {
        name: name.to_owned(),
        subtasks,
        tool_calls: calls,
        subagents: u64::from(json.subagents),
        submit_ms,
        wall_ms: wall * 1000.0,
        tool_calls_per_sec: calls as f64 / wall,
        wait_p50_ms: q(0.5),
        wait_p99_ms: q(0.99),
        first_page_ms,
        rss_before_mb: before as f64 / (1 << 20) as f64,
        rss_peak_mb: peak as f64 / (1 << 20) as f64,
        rss_bytes_per_subtask: peak.saturating_sub(before) as f64 / subtasks.max(1) as f64,
        coordinator_cpu_us_per_call: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a) as f64 / calls.max(1) as f64),
    };
    eprintln!(
        "scale: {name}: {subtasks} subtasks, {calls} calls ({} subagents); submitted in {:.0} ms, ended after {:.0} ms → \
         {:.0} calls/s; ready→start p50 {:.1} ms, p99 {:.1} ms; first page {:.1} ms; RSS {:.0} → peak {:.0} MiB \
         ({:.0} B per subtask); coordinator CPU {} per call",
        out.subagents,
        out.submit_ms,
        out.wall_ms,
        out.tool_calls_per_sec,
        out.wait_p50_ms,
        out.wait_p99_ms,
        out.first_page_ms,
        out.rss_before_mb,
        out.rss_peak_mb,
        out.rss_bytes_per_subtask,
        out.coordinator_cpu_us_per_call.map_or("n/a".to_owned(), |c| format!("{c:.1} µs")),
    );
    Ok(out)
}
