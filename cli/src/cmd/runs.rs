//! The client commands on runs: `submit`, `get`, `runs`, `cancel` and `watch`; `run` (one spec
//! on a throwaway embedded cluster).

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use swarm_cli::client::{self, RunJson};
use swarm_cli::{outln, specs};
use swarm_proto::pb;

use crate::args::{CancelArgs, GetArgs, RunArgs, RunsArgs, SignalArgs, SubmitArgs, WatchArgs};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};

/// `swarm submit FILE [--wait] [--json]`.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let SubmitArgs { file, to, wait, json, idempotency_key, retry_busy } = args;
    let spec = specs::load(&file)?;
    let mut c = to.connect().await?;
    let total = spec.subtasks.len() as u64;
    let req = pb::SubmitRunRequest {
        spec: Some((&spec).into()),
        idempotency_key: idempotency_key.unwrap_or_default(),
        ..Default::default()
    };
    let deadline = retry_busy.map(|d| tokio::time::Instant::now() + d);
    let resp = loop {
        match client::submit(&mut c, req.clone()).await {
            Ok(r) => break r,
            Err(s) => {
                // Busy (an admission cap, nothing stored): wait what the server asks, jittered.
                let delay = (s.code() == tonic::Code::ResourceExhausted)
                    .then(|| swarm_proto::status::retry_after(&s))
                    .flatten()
                    .map(|d| d.mul_f64(1.0 + fastrand::f64() * 0.5));
                match (delay, deadline) {
                    (Some(d), Some(end)) if tokio::time::Instant::now() + d < end => {
                        eprintln!("swarm: {}; retrying in {} ms", s.message(), d.as_millis());
                        tokio::time::sleep(d).await;
                    }
                    _ => return Err(client::status_error(&s)),
                }
            }
        }
    };
    if !wait {
        if json {
            let run = client::get(&mut c, &resp.run_id, false).await.map_err(|s| client::status_error(&s))?;
            outln!("{}", serde_json::to_string(&RunJson::from(&run))?);
        } else {
            outln!("{}", resp.run_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_and_print(&mut c, &resp.run_id, total, json, false).await
}

/// Follows run `run_id` to its end with a progress bar (on a terminal, without `json`), then
/// prints it; the exit code says how it ended.
/// Follows the run to its end and prints it (with `outputs`, what it produced too).
pub async fn wait_and_print(
    c: &mut client::Client,
    run_id: &str,
    total: u64,
    json: bool,
    outputs: bool,
) -> anyhow::Result<ExitCode> {
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} calls {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    bar.set_message(run_id.to_owned());
    client::follow(c, run_id, 0, |ev| {
        use pb::run_event::Event;
        match &ev.event {
            Some(Event::SubtaskSucceeded(_) | Event::SubtaskSkipped(_)) => bar.inc(1),
            // Said at once (a tool no worker offers, a refused spawn), also with --json:
            // on stderr, so stdout stays one JSON object.
            Some(Event::Warning(w)) => bar.suspend(|| eprintln!("warning: {}: {}", w.subtask_id, w.message)),
            _ => {}
        }
    })
    .await?;
    bar.finish_and_clear();
    let run = client::get(c, run_id, false).await.map_err(|s| client::status_error(&s))?;
    // Which subtasks failed and why (a run that did not succeed), and what the run produced
    // (`swarm run`): from every subtask's status.
    let run = if outputs || !succeeded(&run) {
        client::get(c, run_id, true).await.map_err(|s| client::status_error(&s))?
    } else {
        run
    };
    print_ended(&run, json, false, outputs)?;
    Ok(exit_for(run.state))
}

fn succeeded(run: &pb::Run) -> bool {
    run.state == pb::RunState::Succeeded as i32
}

/// The run as [`print_run`] shows it, and from its subtasks (when fetched): the ones that
/// failed or were cancelled, with their last error (`failures` in JSON), and with `outputs`
/// the outputs: of the final subtasks in text, truncated; of every subtask in JSON. `subtasks`:
/// keep the whole list in JSON (`get --subtasks`).
pub fn print_ended(run: &pb::Run, json: bool, subtasks: bool, outputs: bool) -> anyhow::Result<()> {
    let failed: Vec<&pb::SubtaskStatus> = run
        .subtasks
        .iter()
        .filter(|s| s.state == pb::SubtaskState::Failed as i32 || s.state == pb::SubtaskState::Cancelled as i32)
        .collect();
    if json {
        let mut j = serde_json::to_value(RunJson::from(run))?;
        if !subtasks {
            j.as_object_mut().map(|o| o.remove("subtasks"));
        }
        if !run.subtasks.is_empty() {
            j["failures"] = failed
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id,
                        "state": client::subtask_state_name(s.state),
                        "attempt": s.attempt,
                        "error_kind": client::failure_kind_name(s.error_kind),
                        "error": s.error_message,
                    })
                })
                .collect();
        }
        if outputs {
            let all: serde_json::Map<String, serde_json::Value> = run
                .subtasks
                .iter()
                .filter(|s| !s.output_json.is_empty())
                .map(|s| (s.id.clone(), serde_json::from_str(&s.output_json).unwrap_or(serde_json::Value::Null)))
                .collect();
            j["outputs"] = serde_json::Value::Object(all);
        }
        outln!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    print_run(run, false)?;
    const SHOWN: usize = 10;
    for s in failed.iter().take(SHOWN) {
        let what = if s.state == pb::SubtaskState::Cancelled as i32 { "cancelled" } else { "failed" };
        outln!(
            "  {what}: {} ({}, attempt {}): {}",
            s.id,
            client::failure_kind_name(s.error_kind),
            s.attempt,
            one_line(&s.error_message, 300)
        );
    }
    if failed.len() > SHOWN {
        outln!("  … and {} more (swarm get {} --subtasks)", failed.len() - SHOWN, run.run_id);
    }
    if outputs {
        // The final subtasks (what nothing else in the run depends on; subagents aside) and
        // the orchestrators' merged answers.
        let needed: std::collections::HashSet<&str> =
            run.subtasks.iter().flat_map(|s| s.depends_on.iter().map(String::as_str)).collect();
        let finals = run
            .subtasks
            .iter()
            .filter(|s| s.parent.is_empty() && (!needed.contains(s.id.as_str()) || s.kind == "orchestrator"));
        for s in finals.filter(|s| !s.output_json.is_empty()).take(SHOWN) {
            outln!("  output of {}: {}", s.id, one_line(&answer(&s.output_json), 300));
        }
    }
    Ok(())
}

/// An output as people read it: an agent's `{"answer": …}` as its text.
fn answer(output_json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(output_json) {
        Ok(serde_json::Value::Object(o)) if o.len() == 1 && o.get("answer").is_some_and(|a| a.is_string()) => {
            o["answer"].as_str().unwrap_or_default().to_owned()
        }
        _ => output_json.to_owned(),
    }
}

/// `text` on one line, cut to `max` characters (with `…`).
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max { flat } else { format!("{}…", flat.chars().take(max).collect::<String>()) }
}

/// `swarm run SPEC`: a throwaway embedded cluster (memory store, in-process workers with the
/// given models, script, MCP servers) runs one spec; the output and exit code are `submit
/// --wait`'s.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs { file, kit, workers, slots, json, listen, allow_egress } = args;
    anyhow::ensure!(listen.ip().is_loopback(), "--listen {listen}: swarm run serves loopback only (no authentication)");
    let spec = specs::load(&file)?;
    let egress = swarm_worker::tools::egress::EgressPolicy { allow: allow_egress };
    let (tools, models) = super::server::load_kit(&kit, &egress).await?;
    // The throwaway cluster's tools are known now: a name none of them has is refused at once
    // (not after the schedule-to-start wait), with the nearest name.
    let unknown = unknown_tools(&spec, &tools);
    if !unknown.is_empty() {
        eprintln!("error: {}: the run names tools this cluster does not offer:", file.display());
        for line in unknown {
            eprintln!("  {line}");
        }
        return Ok(ExitCode::from(64));
    }
    let mut options = EmbeddedOptions {
        listen,
        workers,
        slots,
        egress,
        tools: Some(tools),
        models: std::sync::Arc::new(models),
        ..EmbeddedOptions::default()
    };
    options.coordinator.model_limits = super::server::model_limits(kit.models.as_deref())?;
    let cluster = Embedded::start(options).await?;
    let outcome = async {
        cluster.wait_for_workers(workers as u32, std::time::Duration::from_secs(10)).await?;
        let mut c = client::connect(&cluster.url()).await?;
        let total = spec.subtasks.len() as u64;
        let req =
            pb::SubmitRunRequest { spec: Some((&spec).into()), idempotency_key: String::new(), ..Default::default() };
        let resp = client::submit(&mut c, req).await.map_err(|s| client::status_error(&s))?;
        eprintln!("swarm run: run {} on {} (until it ends)", resp.run_id, cluster.url());
        wait_and_print(&mut c, &resp.run_id, total, json, true).await
    }
    .await;
    cluster.stop().await;
    outcome
}

/// Tool subtasks of `spec` whose tool is not in `tools` (an MCP tool also by its bare name),
/// each as `subtasks[i].tool: …; did you mean …?`.
fn unknown_tools(spec: &swarm_core::RunSpec, tools: &swarm_worker::tools::ToolRegistry) -> Vec<String> {
    let names: Vec<String> = tools.infos().map(|t| t.name.clone()).collect();
    let offered =
        |tool: &str| names.iter().any(|n| n == tool || n.rsplit_once("__").is_some_and(|(_, bare)| bare == tool));
    spec.subtasks
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.kind {
            swarm_core::SubtaskKind::Tool { tool, .. } if !offered(tool) => {
                let hint = swarm_core::text::did_you_mean(tool, names.iter().map(String::as_str))
                    .map(|m| format!("; did you mean `{m}`?"))
                    .unwrap_or_default();
                Some(format!("subtasks[{i}].tool: `{tool}` is not a tool of this cluster{hint}"))
            }
            _ => None,
        })
        .collect()
}

/// `swarm get RUN [--subtasks] [--json]`.
pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let GetArgs { run, to, json, subtasks, artifacts } = args;
    let mut c = to.connect().await?;
    let mut run = client::get(&mut c, &run, subtasks || artifacts).await.map_err(|s| client::status_error(&s))?;
    // An ended run that did not succeed says which subtasks failed and why.
    let ended_badly = [pb::RunState::Failed, pb::RunState::Cancelled, pb::RunState::BudgetExceeded]
        .iter()
        .any(|s| *s as i32 == run.state);
    if ended_badly && run.subtasks.is_empty() {
        run = client::get(&mut c, &run.run_id, true).await.map_err(|s| client::status_error(&s))?;
    }
    let listed: Vec<client::ArtifactJson> = run
        .subtasks
        .iter()
        .flat_map(|s| s.artifacts.iter().map(|a| client::ArtifactJson::of(a, Some(&s.id))))
        .collect();
    if artifacts && json {
        let mut j = serde_json::to_value(RunJson::from(&run))?;
        j["artifacts"] = serde_json::to_value(&listed)?;
        if subtasks {
            let rows: Vec<client::SubtaskJson> = run.subtasks.iter().map(client::SubtaskJson::from).collect();
            j["subtasks"] = serde_json::to_value(rows)?;
        }
        outln!("{}", serde_json::to_string(&j)?);
        return Ok(exit_for(run.state));
    }
    print_ended(&run, json, subtasks, false)?;
    if artifacts {
        outln!("artifacts: {}", listed.len());
        for a in &listed {
            outln!("  {:<24} {:<40} {:>10}  {}", a.subtask_id.as_deref().unwrap_or(""), a.path, a.size, a.sha256);
        }
    }
    if subtasks && !json {
        let rows: Vec<client::SubtaskJson> = run.subtasks.iter().map(client::SubtaskJson::from).collect();
        for line in client::subtask_table(&rows) {
            outln!("{line}");
        }
    }
    Ok(exit_for(run.state))
}

/// `swarm runs`: newest first.
pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let RunsArgs { to, limit, json, spec_version } = args;
    let mut c = to.connect().await?;
    let req = pb::ListRunsRequest {
        page_size: limit,
        page_token: String::new(),
        spec_version: spec_version.unwrap_or_default(),
    };
    let resp = c.list_runs(client::request(req)).await.map_err(|s| client::status_error(&s))?.into_inner();
    for run in &resp.runs {
        let j = RunJson::from(run);
        if json {
            outln!("{}", serde_json::to_string(&j)?);
        } else {
            outln!(
                "{}  {:<10} {:<16} {:<12} {}  {}/{} calls{}",
                j.run_id,
                j.state,
                j.name,
                j.spec_version.as_deref().unwrap_or("-"),
                if j.spec_hash.is_empty() { "-" } else { &j.spec_hash },
                j.tool_calls_completed,
                j.total_subtasks,
                j.forked_from.as_ref().map(|f| format!("  (fork of {f})")).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `swarm artifact RUN SUBTASK PATH [-o FILE]`.
pub async fn artifact(args: crate::args::ArtifactArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use std::io::Write;
    let crate::args::ArtifactArgs { run, subtask, path, output, to } = args;
    let mut c = to.connect().await?;
    let req = pb::GetArtifactRequest { run_id: run, subtask_id: subtask, path };
    let mut stream = c.get_artifact(client::request(req)).await.map_err(|s| client::status_error(&s))?.into_inner();
    let to_file = output.as_ref().filter(|p| p.as_os_str() != "-");
    // A file is written whole or not at all: into a temporary beside it, renamed at the end.
    let tmp = to_file.map(|p| p.with_extension("swarm-part"));
    let mut sink: Box<dyn Write + Send> = match &tmp {
        Some(t) => Box::new(std::fs::File::create(t).with_context(|| format!("creating {}", t.display()))?),
        None => Box::new(std::io::stdout()),
    };
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = stream.message().await.map_err(|s| client::status_error(&s))? {
            sink.write_all(&chunk.data)?;
        }
        sink.flush()?;
        Ok(())
    }
    .await;
    drop(sink);
    match (copied, tmp, to_file) {
        (Ok(()), Some(tmp), Some(dest)) => {
            tokio::fs::rename(&tmp, dest).await.with_context(|| format!("writing {}", dest.display()))?
        }
        (Err(e), Some(tmp), _) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        (result, _, _) => result?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `swarm cancel RUN`.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let CancelArgs { run, to, reason } = args;
    let mut c = to.connect().await?;
    let resp = c
        .cancel_run(client::request(pb::CancelRunRequest { run_id: run, reason }))
        .await
        .map_err(|s| client::status_error(&s))?
        .into_inner();
    let run = resp.run.unwrap_or_default();
    outln!("{} {}", run.run_id, client::state_name(run.state));
    Ok(ExitCode::SUCCESS)
}

/// `swarm signal RUN SUBTASK --approve [--data JSON] | --reject [--reason TEXT]`.
pub async fn signal(args: SignalArgs) -> anyhow::Result<ExitCode> {
    let SignalArgs { run, subtask, approve, reject: _, data, reason, to, json } = args;
    if let Some(d) = &data {
        serde_json::from_str::<serde_json::Value>(d).map_err(|e| anyhow::anyhow!("--data is not JSON: {e}"))?;
    }
    let mut c = to.connect().await?;
    let decision = if approve { pb::Decision::Approve } else { pb::Decision::Reject };
    let req = pb::SignalRunRequest {
        run_id: run.clone(),
        subtask_id: subtask.clone(),
        decision: decision.into(),
        payload_json: data.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
    };
    let answer = c.signal_run(client::request(req)).await.map_err(|s| client::status_error(&s))?.into_inner();
    let decided = if answer.decision == pb::Decision::Approve as i32 { "approved" } else { "rejected" };
    if json {
        let out = serde_json::json!({
            "run_id": run,
            "subtask_id": subtask,
            "decision": decided,
            "already_decided": answer.already_decided,
            "output": serde_json::from_str::<serde_json::Value>(&answer.payload_json).ok(),
            "reason": (!answer.reason.is_empty()).then_some(answer.reason.clone()),
        });
        outln!("{out}");
    } else if answer.already_decided {
        outln!(
            "{run} {subtask}: already {decided}{}",
            if answer.reason.is_empty() { String::new() } else { format!(" ({})", answer.reason) }
        );
    } else {
        outln!("{run} {subtask}: {decided}");
    }
    // A signal that did not get its way (decided the other way before) says so in its exit code.
    Ok(if (answer.decision == decision as i32) || !answer.already_decided {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `swarm watch RUN`: every event until the run ends.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let WatchArgs { run, to, after_seq, json, follow_output } = args;
    let mut c = to.connect().await?;
    let mut failed = None;
    client::follow_with(&mut c, &run, after_seq, follow_output, |ev| {
        if json {
            match event_json(ev) {
                Ok(line) => outln!("{line}"),
                Err(e) => failed = Some(e),
            }
        } else {
            let line = swarm_cli::events::describe(ev);
            if !line.is_empty() {
                outln!("{line}");
            }
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(ExitCode::SUCCESS)
}

fn event_json(ev: &pb::RunEvent) -> anyhow::Result<String> {
    if let Some(pb::run_event::Event::AgentOutput(o)) = &ev.event {
        return Ok(serde_json::to_string(&serde_json::json!({
            "run_id": ev.run_id,
            "seq": 0,
            "event": "agent_output",
            "subtask_id": o.subtask_id,
            "attempt": o.attempt,
            "turn": o.turn,
            "text": o.text,
            "reasoning": o.reasoning,
            "offset": o.offset,
            "tools_started": o.tools_started,
            "tools_finished": o.tools_finished.iter().map(|t| serde_json::json!({"tool": t.tool, "failed": t.failed})).collect::<Vec<_>>(),
            "output_seq": o.output_seq,
            "output_epoch": o.output_epoch,
        }))?);
    }
    let text = swarm_cli::events::describe(ev);
    Ok(serde_json::to_string(&serde_json::json!({
        "run_id": ev.run_id,
        "seq": ev.seq,
        "time_us": ev.time.as_ref().map(swarm_proto::convert::unix_us),
        "event": text.trim_start().split_once(' ').map(|(_, rest)| rest).unwrap_or(""),
    }))?)
}

/// 2 when the run ended without succeeding; 0 otherwise (also while it is still running).
pub fn exit_for(state: i32) -> ExitCode {
    let ended_badly = state == pb::RunState::Failed as i32 || state == pb::RunState::Cancelled as i32;
    if ended_badly { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

pub fn print_run(run: &pb::Run, json: bool) -> anyhow::Result<()> {
    let j = RunJson::from(run);
    if json {
        outln!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    outln!("run {} ({}): {}", j.run_id, j.name, j.state);
    if let Some(origin) = &j.forked_from {
        outln!(
            "  fork of {origin} from {}: {} calls reused, {} made",
            j.forked_from_subtask.as_deref().unwrap_or("?"),
            j.calls_reused,
            j.calls_made
        );
    }
    if j.agent_resumes > 0 {
        outln!(
            "  agents resumed {}, {} on the worker that held their workspace",
            swarm_cli::output::plural(u64::from(j.agent_resumes), "time", "times"),
            j.agent_resumes_sticky
        );
    }
    outln!(
        "  subtasks: {} completed, {} failed, {} skipped of {} ({} attempts)",
        j.tool_calls_completed,
        j.tool_calls_failed,
        j.tool_calls_skipped,
        j.total_subtasks,
        j.attempts
    );
    // The critical path is the longest chain of work by time; the breakdown below follows
    // the chain that decided when the run ended (a retry's backoff can make that another).
    let path = if (1..=6).contains(&j.critical_path.len()) {
        format!(" ({})", j.critical_path.join(" → "))
    } else {
        String::new()
    };
    outln!(
        "  wall time {:.1} ms; critical path (longest work by time) {:.1} ms{path}; total work {:.1} ms",
        j.wall_ms,
        j.critical_path_ms,
        j.total_work_ms
    );
    outln!("  critical steps {}; total steps {}; parallelism {:.2}", j.critical_steps, j.total_steps, j.parallelism);
    if let Some(line) = &j.wall_headline {
        outln!("  {line}");
    }
    if let Some(parts) = &j.wall_breakdown_ms {
        let shown: Vec<String> = parts
            .iter()
            .filter(|(_, ms)| **ms >= 0.5)
            .map(|(k, ms)| format!("{k} {}", client::human_ms(*ms as u64)))
            .collect();
        if !shown.is_empty() {
            outln!("  where the wall time went (along the chain that decided the end): {}", shown.join(", "));
        }
    }
    if j.subagents > 0 || j.agent_tool_calls > 0 {
        outln!("  agents: {} subagents, {} tool calls, {} tokens", j.subagents, j.agent_tool_calls, j.tokens);
    }
    if !j.tokens_by_model.is_empty() || j.token_budget.is_some() {
        let mut parts: Vec<String> = j
            .tokens_by_model
            .iter()
            .map(|(model, t)| format!("{model} {} in / {} out", t.input_tokens, t.output_tokens))
            .collect();
        if let (Some(budget), Some(left)) = (j.token_budget, j.tokens_left) {
            parts.push(format!("budget {budget}, {left} left"));
        }
        outln!("  tokens: {}", parts.join("; "));
    }
    Ok(())
}
