//! `swarm fork` and `swarm replay`.

use std::process::ExitCode;

use anyhow::Context;
use swarm_cli::client::{self, RunJson};
use swarm_cli::outln;
use swarm_proto::pb;

use crate::args::{ForkArgs, ReplayArgs};

/// `swarm fork RUN --from SUBTASK [--patch FILE] [--step N] [--wait] [--json]`.
pub async fn fork(args: ForkArgs) -> anyhow::Result<ExitCode> {
    let ForkArgs { run, from, patch, step, to, wait, json, idempotency_key } = args;
    let patch = match &patch {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => String::new(),
    };
    let mut c = to.connect().await?;
    let req = pb::ForkRunRequest {
        run_id: run,
        from_subtask: from,
        patch,
        from_step: step,
        idempotency_key: idempotency_key.unwrap_or_default(),
    };
    let resp = c.fork_run(client::request(req)).await.map_err(|s| client::status_error(&s))?.into_inner();
    eprintln!("swarm fork: run {}: {} subtasks reused, {} to run", resp.run_id, resp.reused, resp.rerun);
    if wait {
        return super::runs::wait_and_print(&mut c, &resp.run_id, u64::from(resp.rerun), json, false).await;
    }
    if json {
        let run = client::get(&mut c, &resp.run_id, false).await.map_err(|s| client::status_error(&s))?;
        outln!("{}", serde_json::to_string(&RunJson::from(&run))?);
    } else {
        outln!("{}", resp.run_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `swarm replay RUN [--agent SUBTASK]... [--json]`.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let ReplayArgs { run, agents, to, json } = args;
    let mut c = to.connect().await?;
    let report = swarm_cli::replay::replay_run(&mut c, &run, &agents).await?;
    if json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        for line in report.lines() {
            outln!("{line}");
        }
    }
    Ok(if report.diverged() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
