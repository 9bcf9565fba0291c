//! One attempt on this worker: what the worker holds across connections (running attempts and
//! unacknowledged reports), starting an attempt under its cancellation token and timeout, and
//! reporting how it ended.

use super::*;

pub(crate) fn now_us() -> u64 {
    swarm_core::time::unix_now_us()
}

pub(crate) struct Running {
    pub(crate) run_id: String,
    pub(crate) subtask_id: String,
    pub(crate) attempt: u32,
    pub(crate) token: CancellationToken,
}

/// What goes up the stream, in order.
pub(crate) enum Up {
    Report(pb::AttemptReport),
    Step(pb::AgentStepReport),
}

/// What the worker holds across connections.
#[derive(Default)]
pub(crate) struct Held {
    pub(crate) running: Mutex<HashMap<u64, Running>>,
    pub(crate) unacked: Mutex<BTreeMap<u64, pb::AttemptReport>>,
    /// Agent turns not yet acknowledged, by (fence, seq).
    pub(crate) unacked_steps: Mutex<BTreeMap<(u64, u32), pb::AgentStepReport>>,
}

impl Held {
    /// Nothing runs and every report is acknowledged.
    pub(crate) fn idle(&self) -> bool {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            && self.unacked.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    pub(crate) fn declare(&self) -> Vec<pb::HeldAttempt> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let unacked = self.unacked.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .map(|(fence, r)| pb::HeldAttempt {
                run_id: r.run_id.clone(),
                subtask_id: r.subtask_id.clone(),
                attempt: r.attempt,
                fence: *fence,
            })
            .chain(unacked.values().map(|r| pb::HeldAttempt {
                run_id: r.run_id.clone(),
                subtask_id: r.subtask_id.clone(),
                attempt: r.attempt,
                fence: r.fence,
            }))
            .collect()
    }

    pub(crate) fn cancel_all(&self) {
        for r in self.running.lock().unwrap_or_else(|e| e.into_inner()).values() {
            r.token.cancel();
        }
    }
}

/// What starting an attempt needs.
pub(crate) struct AttemptCtx {
    pub(crate) tools: Arc<ToolRegistry>,
    pub(crate) models: Arc<model::ModelRegistry>,
    /// The model gateway's permits.
    pub(crate) gate: Arc<crate::gate::Gate>,
    /// Where agents' partial output goes.
    pub(crate) uplink: Arc<crate::output::Uplink>,
    pub(crate) attempts: TaskTracker,
    pub(crate) held: Arc<Held>,
    pub(crate) reports: mpsc::Sender<Up>,
    /// The shutdown signal: drain.
    pub(crate) shutdown: CancellationToken,
    /// Attempts' parent token: cancelled when the drain is over.
    pub(crate) abort: CancellationToken,
    /// With a store: the lease hold (a fenced worker starts nothing).
    pub(crate) hold: Option<Arc<crate::hold::LeaseHold>>,
    /// The coordinator link artifacts move over, and this worker's id.
    pub(crate) artifacts: Arc<crate::artifacts::ArtifactLink>,
    pub(crate) worker_id: String,
}

pub(crate) fn start_attempt(a: pb::Assignment, ctx: &AttemptCtx) {
    // An attempt is run once: an assignment whose fence this worker runs or has reported is
    // not started again (fences are unique per attempt).
    let known = ctx.held.running.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&a.fence)
        || ctx.held.unacked.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&a.fence);
    if known {
        tracing::warn!(fence = a.fence, subtask_id = %a.subtask_id, "an assignment of an attempt already held; not started again");
        return;
    }
    // What the coordinator knew when it assigned this: whether the run's output is followed.
    ctx.uplink.set_followed(&a.run_id, a.output_watched);
    let token = ctx.abort.child_token();
    if let Some(hold) = ctx.hold.as_ref().filter(|h| !h.valid()) {
        // Fenced between the assignment's arrival and now: never started, handed back.
        hold.mark_stopped(a.fence, crate::hold::FENCED_MESSAGE);
        token.cancel();
    }
    ctx.held.running.lock().unwrap_or_else(|e| e.into_inner()).insert(
        a.fence,
        Running {
            run_id: a.run_id.clone(),
            subtask_id: a.subtask_id.clone(),
            attempt: a.attempt,
            token: token.clone(),
        },
    );
    let tool = ctx.tools.get(&a.tool).cloned();
    let held = ctx.held.clone();
    let reports = ctx.reports.clone();
    let abort = ctx.abort.clone();
    let hold = ctx.hold.clone();
    let tools = ctx.tools.clone();
    let models = ctx.models.clone();
    let gate = ctx.gate.clone();
    let uplink = ctx.uplink.clone();
    let link = ctx.artifacts.clone();
    let worker_id = ctx.worker_id.clone();
    let span = match &a.agent {
        Some(task) => telemetry::agent_span(&task.name, &a.run_id, &a.subtask_id, a.attempt, task.orchestrator),
        None => telemetry::tool_span(&a.tool, &a.subtask_id, &a.run_id, &a.subtask_id, a.attempt, a.speculative),
    };
    let trace_context: std::collections::HashMap<String, String> =
        a.trace_context.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    swarm_telemetry::set_parent(&span, &trace_context);
    let attempt_span = span.clone();
    ctx.attempts.spawn(tracing::Instrument::instrument(async move {
        let started_us = now_us();
        let workspaces = tools.workspaces();
        let staged = tokio::select! {
            biased;
            _ = token.cancelled() => Err(ToolError { kind: FailureKind::Cancelled, message: "cancelled".into() }),
            r = crate::artifacts::stage_inputs(&link, workspaces, &worker_id, &a) => r,
        };
        if let Err(e) = staged {
            let outcome = error_outcome(e);
            finish(&held, hold.as_deref(), &reports, &abort, a, started_us, outcome, Vec::new()).await;
            return;
        }
        if let Some(task) = &a.agent {
            let steps = reports.clone();
            let fence = a.fence;
            let mut seq = 0u32;
            let keep = held.clone();
            let sink = crate::output::OutputSink::new(fence, a.attempt, &a.run_id, uplink);
            let run = agent::AgentRun {
                task,
                run_id: &a.run_id,
                subtask_id: &a.subtask_id,
                attempt: a.attempt,
                tools: &tools,
                models: &models,
                gate: &gate,
                output: Some(sink.clone()),
                cancel: token.clone(),
                hold: hold.clone(),
            };
            let mut marked_by_agent = Vec::new();
            let result = guarded(agent::run(run, |turn| {
                let step = pb::AgentStepReport { fence, turn_json: serde_json::to_string(turn).unwrap_or_default(), seq };
                seq += 1;
                // Kept until acknowledged: a step lost with a stream is re-sent on reconnection.
                keep.unacked_steps.lock().unwrap_or_else(|e| e.into_inner()).insert((fence, step.seq), step.clone());
                let _ = steps.try_send(Up::Step(step));
            }))
            .await;
            // What the interval held back goes before the outcome.
            sink.flush();
            let outcome = match result {
                Ok(agent::AgentOutcome::Answer(text, marked)) => {
                    marked_by_agent = marked;
                    pb::attempt_report::Outcome::OutputJson(serde_json::json!({ "answer": text }).to_string())
                }
                Ok(agent::AgentOutcome::Suspend { turn, spawns }) => pb::attempt_report::Outcome::Suspended(pb::Suspended {
                    turn_json: serde_json::to_string(&turn).unwrap_or_default(),
                    spawns_json: serde_json::to_string(&spawns).unwrap_or_default(),
                    ..Default::default()
                }),
                Ok(agent::AgentOutcome::AskApproval { turn, call_id, question }) => {
                    pb::attempt_report::Outcome::Suspended(pb::Suspended {
                        turn_json: serde_json::to_string(&turn).unwrap_or_default(),
                        spawns_json: "[]".into(),
                        approval_call_id: call_id,
                        approval_question: question,
                    })
                }
                Err(e) => {
                    attempt_span.record("otel.status_code", "error");
                    attempt_span.record("error.type", e.kind.as_str());
                    pb::attempt_report::Outcome::Error(pb::AttemptError {
                        kind: pb::FailureKind::from(e.kind).into(),
                        message: swarm_core::error::bounded_message(e.message),
                    })
                }
            };
            let (outcome, artifacts) =
                handed_on(outcome, &link, workspaces, &worker_id, &a, marked_by_agent, &token).await;
            finish(&held, hold.as_deref(), &reports, &abort, a, started_us, outcome, artifacts).await;
            return;
        }
        let known_tool = tool.is_some();
        let outcome = match tool {
            None => Err(ToolError::permanent(format!("tool `{}` is not offered by this worker", a.tool))),
            Some(tool) => {
                let timeout = a.timeout.as_ref().map(|d| Duration::from_micros(duration_to_us(d))).or(tool.info().timeout);
                match serde_json::from_str::<serde_json::Value>(if a.args_json.is_empty() { "{}" } else { &a.args_json }) {
                    Err(e) => Err(ToolError::permanent(format!("args are not JSON: {e}"))),
                    Ok(args) => {
                        let tctx = ToolContext {
                            run_id: a.run_id.clone(),
                            subtask_id: a.subtask_id.clone(),
                            attempt: a.attempt,
                            cancel: token.clone(),
                            hold: hold.clone(),
                        };
                        // A tool that panics fails its attempt (reported, so it is not kept
                        // alive by heartbeats forever); the worker goes on.
                        let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tool.call(args, tctx)));
                        match call {
                            Err(panic) => Err(panicked(panic.as_ref())),
                            Ok(call) => tokio::select! {
                                biased;
                                _ = token.cancelled() => Err(ToolError { kind: FailureKind::Cancelled, message: "cancelled".into() }),
                                r = guarded(with_timeout(call, timeout)) => r,
                            },
                        }
                    }
                }
            }
        };
        let outcome = outcome.map(|value| value.to_string()).and_then(|text| {
            if text.len() > MAX_OUTPUT_BYTES {
                Err(ToolError::permanent(format!(
                    "the output has {} bytes; the limit is {MAX_OUTPUT_BYTES} bytes (32 MiB)",
                    text.len()
                )))
            } else {
                Ok(text)
            }
        });
        if known_tool {
            let took = Duration::from_micros(now_us().saturating_sub(started_us));
            telemetry::tool_done(&attempt_span, &a.tool, took, outcome.as_ref().err().map(|e| e.kind));
            if swarm_telemetry::capture_content() {
                attempt_span.record("gen_ai.tool.call.arguments", a.args_json.as_str());
                if let Ok(text) = &outcome {
                    attempt_span.record("gen_ai.tool.call.result", text.as_str());
                }
            }
        }
        let outcome = match outcome {
            Ok(text) => pb::attempt_report::Outcome::OutputJson(text),
            Err(e) => error_outcome(e),
        };
        let (outcome, artifacts) = handed_on(outcome, &link, workspaces, &worker_id, &a, Vec::new(), &token).await;
        finish(&held, hold.as_deref(), &reports, &abort, a, started_us, outcome, artifacts).await;
    }, span));
}

fn error_outcome(e: ToolError) -> pb::attempt_report::Outcome {
    pb::attempt_report::Outcome::Error(pb::AttemptError {
        kind: pb::FailureKind::from(e.kind).into(),
        message: swarm_core::error::bounded_message(e.message),
    })
}

/// After a success: the artifacts the subtask declared (and an agent marked), collected and
/// stored; their failure
/// (a file missing, the quota, the link) is the attempt's.
async fn handed_on(
    outcome: pb::attempt_report::Outcome,
    link: &crate::artifacts::ArtifactLink,
    workspaces: Option<&tools::exec::Workspaces>,
    worker_id: &str,
    a: &pb::Assignment,
    marked: Vec<String>,
    token: &CancellationToken,
) -> (pb::attempt_report::Outcome, Vec<pb::Artifact>) {
    let mut patterns = a.artifacts.clone();
    patterns.extend(marked.into_iter().filter(|m| !a.artifacts.contains(m)));
    if patterns.is_empty() || !matches!(outcome, pb::attempt_report::Outcome::OutputJson(_)) {
        return (outcome, Vec::new());
    }
    let stored = tokio::select! {
        biased;
        _ = token.cancelled() => Err(ToolError { kind: FailureKind::Cancelled, message: "cancelled".into() }),
        r = crate::artifacts::hand_on(link, workspaces, worker_id, a, patterns) => r,
    };
    match stored {
        Ok(artifacts) => (outcome, artifacts),
        Err(e) => (error_outcome(e), Vec::new()),
    }
}

/// Keeps the attempt's report until it is acknowledged, and sends it. An attempt the worker
/// stopped itself ([`crate::hold`]) and that did not finish first is reported `worker_lost`:
/// the coordinator re-queues it at once if it still holds it.
#[allow(clippy::too_many_arguments)]
async fn finish(
    held: &Held,
    hold: Option<&crate::hold::LeaseHold>,
    reports: &mpsc::Sender<Up>,
    abort: &CancellationToken,
    a: pb::Assignment,
    started_us: u64,
    outcome: pb::attempt_report::Outcome,
    artifacts: Vec<pb::Artifact>,
) {
    let stopped = hold.and_then(|h| h.take_stopped(a.fence));
    let outcome = match (stopped, outcome) {
        (Some(why), pb::attempt_report::Outcome::Error(_)) => pb::attempt_report::Outcome::Error(pb::AttemptError {
            kind: pb::FailureKind::from(FailureKind::WorkerLost).into(),
            message: why.to_owned(),
        }),
        (_, outcome) => outcome,
    };
    if abort.is_cancelled() {
        // Handed back: the coordinator re-queues what the closed stream held.
        held.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&a.fence);
        return;
    }
    let report = pb::AttemptReport {
        run_id: a.run_id,
        subtask_id: a.subtask_id,
        attempt: a.attempt,
        fence: a.fence,
        started_at: Some(timestamp(started_us)),
        finished_at: Some(timestamp(now_us())),
        outcome: Some(outcome),
        artifacts,
    };
    held.unacked.lock().unwrap_or_else(|e| e.into_inner()).insert(a.fence, report.clone());
    held.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&a.fence);
    let _ = reports.send(Up::Report(report)).await;
}

/// `fut`'s result, or a permanent failure naming the panic if it panics.
async fn guarded<T>(fut: impl std::future::Future<Output = Result<T, ToolError>>) -> Result<T, ToolError> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> ToolError {
    let message = swarm_core::error::panic_message(payload);
    ToolError::permanent(format!("the worker panicked running the attempt: {message}"))
}

async fn with_timeout(call: tools::ToolFuture, timeout: Option<Duration>) -> Result<serde_json::Value, ToolError> {
    match timeout {
        None => call.await,
        Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
            Err(ToolError { kind: FailureKind::Timeout, message: format!("no result within {} ms", t.as_millis()) })
        }),
    }
}
