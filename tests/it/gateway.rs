//! The model gateway against a provider that answers 429 above its tokens per minute (the
//! rate-limited fixture server), with an orchestrator fanning out to 100 subagents.

use std::time::Duration;

use swarm_cli::bench::gateway::{GatewayWorkload, swarm_once};
use swarm_cli::bench::model_server::{ModelServer, ServerConfig};
use swarm_coordinator::gateway::Limits;

fn workload(server_tpm: u64, gateway_tpm: u64) -> GatewayWorkload {
    GatewayWorkload { subagents: 100, turns: 5, output_tokens: 50, latency_ms: 10, server_tpm, gateway_tpm }
}

async fn server(w: &GatewayWorkload) -> ModelServer {
    ModelServer::start(ServerConfig {
        rpm: None,
        tpm: Some(w.server_tpm),
        turns: w.turns,
        output_tokens: w.output_tokens,
        latency: Duration::from_millis(w.latency_ms),
    })
    .await
    .expect("model server")
}

fn fraction_429(run: &swarm_cli::bench::gateway::GatewayRun) -> f64 {
    run.server.refused_429 as f64 / (run.server.served + run.server.refused_429) as f64
}

/// The acceptance test: a hundred agents finish with no failed model call and under
/// 5 % of requests refused, where the same swarm without the gateway is refused far more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_agents_under_a_token_limit_finish_with_no_failed_call_and_few_429s() {
    // Token rates against a clock: alone, like the other timing-sensitive tests.
    let _serial = crate::failover::SERIAL.lock().await;
    let w = workload(1_500_000, 1_500_000);
    let limits = Limits { tpm: Some(w.gateway_tpm), ..Limits::default() };
    let s = server(&w).await;
    let run = swarm_once(&w, &s, Some(limits)).await.expect("gated swarm");
    assert_eq!(run.state, "SUCCEEDED");
    // Every subagent once, the orchestrator twice (it resumes after its stage): no attempt
    // failed, so no model call did.
    assert_eq!((run.subtasks, run.attempts), (101, 102), "{run:?}");
    assert_eq!(run.server.served, 500, "every turn answered once: {run:?}");
    assert!(fraction_429(&run) < 0.05, "{run:?}");
    assert!(run.mean_wait_ms > 0.0, "the limit held calls back, or the test proves nothing: {run:?}");

    let s = server(&w).await;
    let free = swarm_once(&w, &s, None).await.expect("ungated swarm");
    assert!(
        fraction_429(&free) > 0.05,
        "without the gateway the same swarm is refused often (the fixture really limits): {free:?}"
    );
}

/// A gateway configured at twice the provider's real limit hears its 429s, slows the whole
/// endpoint, and still no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_set_above_the_real_limit_slows_down_on_429s_and_no_call_fails() {
    // Token rates against a clock: alone, like the other timing-sensitive tests.
    let _serial = crate::failover::SERIAL.lock().await;
    let w = workload(1_500_000, 3_000_000);
    let s = server(&w).await;
    let limits = Limits { tpm: Some(w.gateway_tpm), ..Limits::default() };
    let run = swarm_once(&w, &s, Some(limits)).await.expect("gated swarm");
    assert_eq!(run.state, "SUCCEEDED");
    assert_eq!((run.subtasks, run.attempts), (101, 102), "{run:?}");
    assert!(run.throttled > 0, "the 429s reached the gateway: {run:?}");
    assert_eq!(run.throttled, run.server.refused_429, "each 429 was reported once: {run:?}");
    eprintln!("429s: {:.1} %", 100.0 * fraction_429(&run));
}
