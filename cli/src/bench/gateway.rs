//! `swarm bench --scenario gateway`: an orchestrator starts 100 subagents, each 15 model turns
//! against the rate-limited fixture server ([`super::model_server`]) with a tokens-per-minute
//! limit the coordinator's gateway knows. The lower bound of the wall time is total tokens /
//! tpm; the figures are the wall time against it, the 429s the server answered, and the
//! gateway's own cost per call (the same swarm on an unlimited server, through a gateway that
//! never holds a call back, against no gateway at all).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use swarm_coordinator::gateway::Limits;

use super::model_server::{ModelServer, ServerConfig, ServerStats};
use crate::client;
use crate::embedded::{Embedded, EmbeddedOptions};

/// The endpoint's name in the models and the spec.
pub const ENDPOINT: &str = "fixture";

/// The swarm's shape and the limit.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GatewayWorkload {
    pub subagents: usize,
    pub turns: usize,
    pub output_tokens: u64,
    pub latency_ms: u64,
    /// The server's limit.
    pub server_tpm: u64,
    /// The gateway's (normally the same; higher plays a misconfigured gateway that learns the
    /// real limit from 429s).
    pub gateway_tpm: u64,
}

impl Default for GatewayWorkload {
    fn default() -> Self {
        Self {
            subagents: 100,
            turns: 15,
            output_tokens: 100,
            latency_ms: 20,
            server_tpm: 4_000_000,
            gateway_tpm: 4_000_000,
        }
    }
}

/// What one limited swarm did.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayRun {
    pub state: String,
    pub wall_ms: f64,
    pub server: ServerStats,
    /// Model calls the gateway granted (429-refused ones included) and their mean wait.
    pub granted: u64,
    pub throttled: u64,
    pub mean_wait_ms: f64,
    /// Subtask attempts (one per subtask when no model call failed).
    pub attempts: u32,
    pub subtasks: u32,
}

/// The benchmark's figures.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayBench {
    pub workload: GatewayWorkload,
    pub limited: GatewayRun,
    pub total_tokens: u64,
    /// total tokens / tpm.
    pub lower_bound_ms: f64,
    /// wall / lower bound (target ≤ 1.10).
    pub ratio: f64,
    /// 429s / requests.
    pub refused_fraction: f64,
    /// Unlimited server: no gateway, and a gateway that never holds back (medians of 3).
    pub free_wall_ms: f64,
    pub open_gateway_wall_ms: f64,
    /// (open − free) / turns: what the permit round trip adds to each call on the path.
    pub gateway_cost_per_call_ms: f64,
}

fn orchestrator_script(subagents: usize) -> String {
    let mut calls = vec![
        "{name: create_subagent, arguments: {name: sub, system_prompt: \"You work.\", tools: [echo], model: fixture}}"
            .to_owned(),
    ];
    calls.extend(
        (0..subagents).map(|i| format!("{{name: assign_task, arguments: {{subagent: sub, task: \"part {i}\"}}}}")),
    );
    format!("agents:\n  lead:\n    - tool_calls: [{}]\n    - content: merged\n", calls.join(", "))
}

fn spec(w: &GatewayWorkload) -> anyhow::Result<swarm_core::RunSpec> {
    let text = format!(
        "name: gateway-bench\nlimits: {{max_subagents: {n}, max_tool_calls: {calls}, subagent_max_steps: {steps}}}\n\
         subtasks:\n  - id: lead\n    orchestrator: {{goal: \"fan out\", model: scripted, subagent_tools: [echo], subagent_models: [fixture]}}\n",
        n = w.subagents.max(1),
        calls = (w.subagents * w.turns).clamp(1, 10_000),
        steps = w.turns + 1,
    );
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("bench spec: {e}"))
}

/// Runs the swarm once against `server` on a fresh embedded cluster (a gateway over
/// `limits` when given).
pub async fn swarm_once(
    w: &GatewayWorkload,
    server: &ModelServer,
    limits: Option<Limits>,
) -> anyhow::Result<GatewayRun> {
    let mut models = swarm_worker::model::ModelRegistry::new();
    let scripted =
        swarm_worker::model::ScriptedModel::from_yaml(&orchestrator_script(w.subagents)).map_err(anyhow::Error::msg)?;
    models.register("scripted", Arc::new(scripted));
    let endpoint = swarm_worker::model::EndpointConfig {
        base_url: server.base_url(),
        model: "bench".into(),
        timeout_secs: Some(60),
        max_retries: Some(20),
        ..Default::default()
    };
    models.register(ENDPOINT, Arc::new(swarm_worker::model::OpenAiModel::new(&endpoint).map_err(anyhow::Error::msg)?));
    let mut options =
        EmbeddedOptions { workers: 2, slots: w.subagents as u32 + 4, models: Arc::new(models), ..Default::default() };
    if let Some(l) = limits {
        options.coordinator.model_limits = HashMap::from([(ENDPOINT.to_owned(), l)]);
    }
    let cluster = Embedded::start(options).await?;
    let result = async {
        cluster.wait_for_workers(2, Duration::from_secs(10)).await?;
        let mut c = client::connect(&cluster.url()).await?;
        let before = server.stats();
        let started = Instant::now();
        let run = super::submit_and_wait(&mut c, &spec(w)?).await?;
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let after = server.stats();
        let stats = match &cluster.gateway {
            Some(g) => g.stats().await.remove(ENDPOINT).unwrap_or_default(),
            None => Default::default(),
        };
        anyhow::Ok(GatewayRun {
            state: run.state,
            wall_ms,
            server: ServerStats {
                served: after.served - before.served,
                refused_429: after.refused_429 - before.refused_429,
                input_tokens: after.input_tokens - before.input_tokens,
                output_tokens: after.output_tokens - before.output_tokens,
            },
            granted: stats.granted,
            throttled: stats.throttled,
            mean_wait_ms: if stats.granted > 0 {
                stats.waited.as_secs_f64() * 1000.0 / stats.granted as f64
            } else {
                0.0
            },
            attempts: run.attempts,
            subtasks: run.total_subtasks,
        })
    }
    .await;
    cluster.stop().await;
    result
}

/// The whole benchmark.
pub fn run(w: GatewayWorkload) -> anyhow::Result<GatewayBench> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let limited_server = ModelServer::start(ServerConfig {
            rpm: None,
            tpm: Some(w.server_tpm),
            turns: w.turns,
            output_tokens: w.output_tokens,
            latency: Duration::from_millis(w.latency_ms),
        })
        .await?;
        let limits = Limits { tpm: Some(w.gateway_tpm), ..Limits::default() };
        let limited = swarm_once(&w, &limited_server, Some(limits)).await?;
        let total_tokens = limited.server.input_tokens + limited.server.output_tokens;
        let lower_bound_ms = total_tokens as f64 / w.server_tpm as f64 * 60_000.0;
        let requests = limited.server.served + limited.server.refused_429;
        eprintln!(
            "gateway: {} calls, {} tokens in {:.0} ms; lower bound {:.0} ms → {:.3}×; {} × 429 ({:.2} %); mean permit wait {:.0} ms",
            limited.server.served,
            total_tokens,
            limited.wall_ms,
            lower_bound_ms,
            limited.wall_ms / lower_bound_ms,
            limited.server.refused_429,
            100.0 * limited.server.refused_429 as f64 / requests.max(1) as f64,
            limited.mean_wait_ms,
        );
        let open_server = ModelServer::start(ServerConfig {
            rpm: None,
            tpm: None,
            turns: w.turns,
            output_tokens: w.output_tokens,
            latency: Duration::from_millis(w.latency_ms),
        })
        .await?;
        let open = Limits { rpm: Some(100_000_000), ..Limits::default() };
        let (mut free, mut gated) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            free.push(swarm_once(&w, &open_server, None).await?.wall_ms);
            gated.push(swarm_once(&w, &open_server, Some(open)).await?.wall_ms);
        }
        let free_wall_ms = super::median(free);
        let open_gateway_wall_ms = super::median(gated);
        let gateway_cost_per_call_ms = (open_gateway_wall_ms - free_wall_ms) / w.turns as f64;
        eprintln!(
            "gateway cost: unlimited swarm {free_wall_ms:.0} ms without a gateway, {open_gateway_wall_ms:.0} ms through one → {gateway_cost_per_call_ms:.2} ms per call on the path"
        );
        anyhow::Ok(GatewayBench {
            workload: w,
            total_tokens,
            lower_bound_ms,
            ratio: limited.wall_ms / lower_bound_ms,
            refused_fraction: limited.server.refused_429 as f64 / requests.max(1) as f64,
            limited,
            free_wall_ms,
            open_gateway_wall_ms,
            gateway_cost_per_call_ms,
        })
    })
}
