//! `swarm demo`, `swarm example` and `swarm healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use swarm_cli::client::{self, RunJson};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_cli::{outln, specs};
use swarm_proto::pb;

use super::runs::{exit_for, print_run};
use crate::args::{DemoArgs, ExampleArgs, HealthcheckArgs};

/// `swarm demo`: the 1,500-call swarm and an orchestrated swarm on an embedded cluster.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs { spec, workers, slots, json } = args;
    demo(spec, workers, slots, json).await
}

/// `swarm healthcheck`: exits 0 when the server reports SERVING.
pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let HealthcheckArgs { addr, service } = args;
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    let Ok(channel) = channel else {
        eprintln!("unhealthy: cannot reach {addr}");
        return Ok(ExitCode::FAILURE);
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    match health.check(tonic_health::pb::HealthCheckRequest { service }).await {
        Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 => {
            outln!("SERVING");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            eprintln!("unhealthy: status {}", r.get_ref().status);
            Ok(ExitCode::FAILURE)
        }
        Err(s) => {
            eprintln!("unhealthy: {:?} {}", s.code(), s.message());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `swarm example small|swarm`: prints a run spec.
pub async fn example(args: ExampleArgs) -> anyhow::Result<ExitCode> {
    let ExampleArgs { which } = args;
    let spec = match which.as_str() {
        "small" => specs::small(),
        "swarm" => specs::swarm(100, 15, Some(&|_, _| 50)),
        other => {
            eprintln!("error: unknown example `{other}` (small, swarm)");
            return Ok(ExitCode::from(64));
        }
    };
    outln!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(ExitCode::SUCCESS)
}

async fn demo(spec: Option<PathBuf>, workers: usize, slots: u32, json: bool) -> anyhow::Result<ExitCode> {
    let custom = spec.is_some();
    let spec = match spec {
        Some(path) => specs::load(&path)?,
        None => {
            let ms = specs::lognormal_ms(7, 50.0, 0.5, 100, 15);
            specs::swarm(100, 15, Some(&|c, s| ms[c][s]))
        }
    };
    let mut models = swarm_worker::model::ModelRegistry::new();
    models.register("scripted", Arc::new(swarm_worker::model::ScriptedModel::demo(100, 15, 50)));
    let options = EmbeddedOptions { workers, slots, models: Arc::new(models), ..EmbeddedOptions::default() };
    let cluster = Embedded::start(options).await?;
    cluster.wait_for_workers(workers as u32, Duration::from_secs(10)).await?;
    let mut c = client::connect(&cluster.url()).await?;

    // 1. A DAG of tool calls: 1 planner → 100 chains × 15 calls → 1 reducer.
    if !json {
        eprintln!(
            "swarm demo: {} tool calls on {workers} workers × {slots} slots ({})",
            spec.subtasks.len(),
            cluster.url()
        );
    }
    let run = demo_run(&mut c, &spec).await?;
    print_run(&run, json)?;
    if !json {
        let j = RunJson::from(&run);
        outln!(
            "  one agent doing the same calls in sequence would need ≈ {:.1} ms: the swarm was {:.1}× faster",
            j.total_work_ms,
            j.total_work_ms / j.wall_ms.max(1e-9)
        );
    }
    let mut state = run.state;

    // 2. An orchestrator (scripted model) that spawns 100 subagents making 15 tool calls each.
    if !custom {
        // The default limits (100 subagents, 1,500 calls).
        let mut swarm = swarm_cli::specs::orchestrator("scripted", 100, 1500);
        swarm.name = "orchestrated-swarm".into();
        if let swarm_core::SubtaskKind::Orchestrator(lead) = &mut swarm.subtasks[0].kind {
            lead.goal = "research the question in 100 parts".into();
        }
        if !json {
            eprintln!(
                "\nswarm demo: an orchestrator spawns 100 subagents × 15 tool calls (scripted model, sleep 50 ms)"
            );
        }
        let run = demo_run(&mut c, &swarm).await?;
        print_run(&run, json)?;
        if !json {
            let j = RunJson::from(&run);
            let serial_steps = j.total_steps;
            outln!(
                "  {} subagents, {} tool calls; a single agent doing the same work sequentially: {serial_steps} steps \
                 and ≈ {:.1} s of work, against {} critical steps and {:.2} s here ({:.0}× fewer steps, {:.0}× faster)",
                j.subagents,
                j.agent_tool_calls,
                j.total_work_ms / 1000.0,
                j.critical_steps,
                j.wall_ms / 1000.0,
                serial_steps as f64 / j.critical_steps.max(1) as f64,
                j.total_work_ms / j.wall_ms.max(1e-9)
            );
        }
        if exit_for(run.state) != ExitCode::SUCCESS {
            state = run.state;
        }
    }
    cluster.stop().await;
    Ok(exit_for(state))
}

async fn demo_run(c: &mut client::Client, spec: &swarm_core::RunSpec) -> anyhow::Result<pb::Run> {
    let resp = c
        .submit_run(client::request(pb::SubmitRunRequest {
            spec: Some(spec.into()),
            idempotency_key: String::new(),
            ..Default::default()
        }))
        .await
        .map_err(|s| client::status_error(&s))?
        .into_inner();
    client::follow(c, &resp.run_id, 0, |_| {}).await?;
    client::get(c, &resp.run_id, false).await.map_err(|s| client::status_error(&s))
}
