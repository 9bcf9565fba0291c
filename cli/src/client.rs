//! Client side of `swarm submit | get | runs | cancel | watch`: connecting, the `--json`
//! summary object, and a resumable watch.

use std::time::Duration;

use anyhow::Context;
use backon::BackoffBuilder;
use futures_util::StreamExt;
use serde::Serialize;
use swarm_proto::convert::{duration_to_us, unix_us};
use swarm_proto::pb::{self, swarm_service_client::SwarmServiceClient};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Deadline of unary calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected client.
pub type Client = SwarmServiceClient<InterceptedService<Channel, Bearer>>;

/// Sends `authorization: Bearer TOKEN` with every call (when there is a token). The token is
/// never logged: its `Debug` says only whether there is one.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bearer({})", if self.0.is_some() { "set" } else { "none" })
    }
}

impl Bearer {
    /// A bearer for `token` (`None`: send no credentials).
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let value = token
            .map(|t| {
                let mut v: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the token must be printable ASCII"))?;
                v.set_sensitive(true);
                anyhow::Ok(v)
            })
            .transpose()?;
        Ok(Self(value))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connects to a coordinator at `addr` (`http://host:port`), with no credentials.
pub async fn connect(addr: &str) -> anyhow::Result<Client> {
    connect_with(addr, None, &swarm_worker::tls::ClientTls::default()).await
}

/// Connects to a coordinator at `addr`, sending `token` (`--token`, `SWARM_TOKEN`) if given,
/// over TLS as `tls` says for an `https://` address.
pub async fn connect_with(
    addr: &str,
    token: Option<&str>,
    tls: &swarm_worker::tls::ClientTls,
) -> anyhow::Result<Client> {
    let bearer = Bearer::new(token)?;
    // `HOST:PORT` (as `--listen` takes it) means plain HTTP.
    let full;
    let addr = if addr.contains("://") {
        addr
    } else {
        full = format!("http://{addr}");
        full.as_str()
    };
    let channel = tls
        .endpoint(addr)
        .map_err(|e| anyhow::anyhow!(e))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {addr}"))?;
    Ok(SwarmServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(256 * 1024 * 1024))
}

/// A request with the unary deadline set.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(CALL_TIMEOUT);
    req
}

/// `SubmitRun`, or `SubmitRunChunked` for a request over the 16 MiB message limit.
pub async fn submit(client: &mut Client, req: pb::SubmitRunRequest) -> Result<pb::SubmitRunResponse, tonic::Status> {
    if !swarm_proto::chunked::needs_chunks(&req) {
        return Ok(client.submit_run(request(req)).await?.into_inner());
    }
    let chunks = swarm_proto::chunked::request_chunks(&req);
    drop(req);
    let mut req = tonic::Request::new(futures_util::stream::iter(chunks));
    // Up to 256 MiB: more time than a unary call's deadline.
    req.set_timeout(CALL_TIMEOUT * 10);
    Ok(client.submit_run_chunked(req).await?.into_inner())
}

/// One model's tokens in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TokenUse {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The JSON object `submit --json` and `get --json` print.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunJson {
    pub run_id: String,
    pub name: String,
    pub state: String,
    pub tool_calls_completed: u32,
    pub tool_calls_failed: u32,
    pub tool_calls_skipped: u32,
    pub total_subtasks: u32,
    pub attempts: u32,
    pub wall_ms: f64,
    pub total_work_ms: f64,
    pub critical_path_ms: f64,
    pub critical_path: Vec<String>,
    pub critical_steps: u64,
    pub total_steps: u64,
    pub parallelism: f64,
    pub agent_tool_calls: u32,
    pub subagents: u32,
    pub tokens: u64,
    /// Tokens by model: `{model: {input_tokens, output_tokens}}` (absent without agents).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tokens_by_model: std::collections::BTreeMap<String, TokenUse>,
    /// The run's token budget (`limits.max_tokens`) and what is left of it (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_left: Option<u64>,
    pub speculative_attempts: u32,
    pub speculative_wins: u32,
    /// Where the wall time went along the chain that decided the run's end, in ms: `work`,
    /// `waiting_for_slot`, `waiting_for_placement`, `dispatch`, `retry_backoff`,
    /// `failed_attempts`, `straggler_wait`, `waiting_for_approval`, `other` (they add up to
    /// `wall_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_breakdown_ms: Option<std::collections::BTreeMap<String, f64>>,
    /// The same in one line: the biggest loss beyond the work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_headline: Option<String>,
    /// Why the run itself failed (`internal`: the coordinator quarantined it); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A fork's calls reused from the run it was forked from, and the calls the run made.
    pub calls_reused: u32,
    pub calls_made: u32,
    /// Agents' later attempts, and those that ran on their previous worker again.
    pub agent_resumes: u32,
    pub agent_resumes_sticky: u32,
    /// The spec's version label (absent: none) and hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_version: Option<String>,
    pub spec_hash: String,
    /// For a fork: the run and subtask it was forked from (and the agent's step, if given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from_subtask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from_step: Option<u32>,
    /// Every subtask, with `get --subtasks` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtasks: Option<Vec<SubtaskJson>>,
}

/// One subtask in `get --subtasks --json`. Times are Unix ms; `started_ms` is when its first
/// attempt started, `finished_ms` when its last attempt ended, `waited_ms` the time from
/// becoming ready to that first start, `duration_ms` the last attempt's run time. A time that
/// is not known (yet) is `null`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubtaskJson {
    pub id: String,
    /// `tool`, `agent` or `orchestrator`.
    pub kind: String,
    pub tool: String,
    /// `BLOCKED`, `READY`, `RUNNING`, `BACKOFF`, `SUCCEEDED`, `FAILED`, `SKIPPED`, …
    pub state: String,
    /// The current or last attempt (1-based; 0 before the first).
    pub attempt: u32,
    /// The worker of that attempt.
    pub worker: Option<String>,
    /// The failure class of the last failure (`transient`, `permanent`, `timeout`, …).
    pub error_kind: Option<String>,
    /// The last failure's message.
    pub error: Option<String>,
    pub ready_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub waited_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub depends_on: Vec<String>,
    /// For a subagent: its orchestrator and stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
    /// The result (JSON), once succeeded, unless offloaded.
    pub output: Option<serde_json::Value>,
    /// Where an offloaded result lives in the payload store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<String>,
    /// The files it handed on (`outputs: {artifacts: […]}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactJson>,
    /// Its result was reused from this run (a fork), not made again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// An artifact, as `--json` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArtifactJson {
    /// The subtask that handed it on (in `swarm get --artifacts` listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtask_id: Option<String>,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl ArtifactJson {
    pub fn of(a: &pb::Artifact, subtask: Option<&str>) -> Self {
        Self { subtask_id: subtask.map(str::to_owned), path: a.path.clone(), size: a.size, sha256: a.sha256.clone() }
    }
}

fn unix_ms(ts: &Option<prost_types::Timestamp>) -> Option<u64> {
    ts.as_ref().map(|t| unix_us(t) / 1000).filter(|&ms| ms > 0)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl From<&pb::SubtaskStatus> for SubtaskJson {
    fn from(s: &pb::SubtaskStatus) -> Self {
        let ready_ms = unix_ms(&s.ready_at);
        let started_ms = unix_ms(&s.first_started_at).or_else(|| unix_ms(&s.started_at));
        let last_started_ms = unix_ms(&s.started_at);
        let finished_ms = unix_ms(&s.finished_at);
        Self {
            id: s.id.clone(),
            kind: s.kind.clone(),
            tool: s.tool.clone(),
            state: subtask_state_name(s.state),
            attempt: s.attempt,
            worker: non_empty(&s.worker_id),
            error_kind: (s.error_kind != 0).then(|| failure_kind_name(s.error_kind)),
            error: non_empty(&s.error_message),
            ready_ms,
            started_ms,
            finished_ms,
            waited_ms: ready_ms.zip(started_ms).map(|(r, st)| st.saturating_sub(r)),
            duration_ms: last_started_ms.zip(finished_ms).map(|(st, f)| f.saturating_sub(st)),
            depends_on: s.depends_on.clone(),
            parent: non_empty(&s.parent),
            stage: (s.stage > 0).then_some(s.stage),
            // Outputs are JSON text; one that is not stays a string rather than being lost.
            output: non_empty(&s.output_json).map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))),
            output_ref: non_empty(&s.output_ref),
            artifacts: s.artifacts.iter().map(|a| ArtifactJson::of(a, None)).collect(),
            reused_from: non_empty(&s.reused_from),
        }
    }
}

/// The short state name (`SUCCEEDED`) of a wire subtask state.
pub fn subtask_state_name(state: i32) -> String {
    pb::SubtaskState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("SUBTASK_STATE_").to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({state})"))
}

/// A duration in ms for people: `850 ms`, `12.4 s`, `3 m 05 s`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} m {:02} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// The human listing of `get --subtasks`: one line per subtask under a header.
pub fn subtask_table(subtasks: &[SubtaskJson]) -> Vec<String> {
    let width = subtasks.iter().map(|s| s.id.len()).max().unwrap_or(0).clamp(2, 48);
    let mut lines = vec![format!(
        "  {:<width$} {:<10} {:>7} {:<20} {:>9} {:>9}  ERROR",
        "ID", "STATE", "ATTEMPT", "WORKER", "WAIT", "DURATION"
    )];
    for s in subtasks {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), human_ms);
        lines.push(
            format!(
                "  {:<width$} {:<10} {:>7} {:<20} {:>9} {:>9}  {}",
                s.id,
                s.state,
                s.attempt,
                s.worker.as_deref().unwrap_or("-"),
                opt(s.waited_ms),
                opt(s.duration_ms),
                // A subtask that succeeded after all shows no earlier attempt's error here
                // (`--json` keeps it).
                if s.state == "SUCCEEDED" { "" } else { s.error.as_deref().unwrap_or("") }
            )
            .trim_end()
            .to_owned(),
        );
    }
    lines
}

fn ms(d: &Option<prost_types::Duration>) -> f64 {
    d.as_ref().map_or(0.0, |d| (duration_to_us(d) as f64 / 1000.0 * 1000.0).round() / 1000.0)
}

/// The short state name (`SUCCEEDED`) of a wire state.
pub fn state_name(state: i32) -> String {
    pb::RunState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("RUN_STATE_").to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({state})"))
}

impl From<&pb::Run> for RunJson {
    fn from(run: &pb::Run) -> Self {
        let s = run.summary.clone().unwrap_or_default();
        Self {
            run_id: run.run_id.clone(),
            name: run.name.clone(),
            state: state_name(run.state),
            tool_calls_completed: s.tool_calls_completed,
            tool_calls_failed: s.tool_calls_failed,
            tool_calls_skipped: s.tool_calls_skipped,
            total_subtasks: s.total_subtasks,
            attempts: s.attempts,
            wall_ms: ms(&s.wall_time),
            total_work_ms: ms(&s.total_work),
            critical_path_ms: ms(&s.critical_path_time),
            critical_path: s.critical_path,
            critical_steps: s.critical_steps,
            total_steps: s.total_steps,
            parallelism: (s.parallelism * 100.0).round() / 100.0,
            agent_tool_calls: s.agent_tool_calls,
            subagents: s.subagents,
            tokens: s.tokens,
            tokens_by_model: s
                .tokens_by_model
                .iter()
                .map(|m| (m.model.clone(), TokenUse { input_tokens: m.input_tokens, output_tokens: m.output_tokens }))
                .collect(),
            token_budget: (s.token_budget > 0).then_some(s.token_budget),
            tokens_left: (s.token_budget > 0).then(|| s.token_budget.saturating_sub(s.tokens)),
            speculative_attempts: s.speculative_attempts,
            speculative_wins: s.speculative_wins,
            wall_breakdown_ms: s.wall_breakdown.as_ref().map(|b| {
                let ms =
                    |d: &Option<prost_types::Duration>| d.as_ref().map_or(0.0, |d| duration_to_us(d) as f64 / 1000.0);
                [
                    ("work", ms(&b.work)),
                    ("waiting_for_slot", ms(&b.waiting_for_slot)),
                    ("waiting_for_placement", ms(&b.waiting_for_placement)),
                    ("dispatch", ms(&b.dispatch)),
                    ("retry_backoff", ms(&b.retry_backoff)),
                    ("failed_attempts", ms(&b.failed_attempts)),
                    ("straggler_wait", ms(&b.straggler_wait)),
                    ("waiting_for_approval", ms(&b.waiting_for_approval)),
                    ("other", ms(&b.other)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
            }),
            wall_headline: s.wall_breakdown.as_ref().map(|b| b.headline.clone()).filter(|h| !h.is_empty()),
            error_kind: (s.error_kind != 0).then(|| failure_kind_name(s.error_kind)),
            error: (!s.error_message.is_empty()).then(|| s.error_message.clone()),
            calls_reused: s.calls_reused,
            calls_made: s.calls_made,
            agent_resumes: s.agent_resumes,
            agent_resumes_sticky: s.agent_resumes_sticky,
            spec_version: non_empty(&run.spec_version),
            spec_hash: run.spec_hash.clone(),
            forked_from: non_empty(&run.forked_from_run),
            forked_from_subtask: non_empty(&run.forked_from_subtask),
            forked_from_step: run.forked_from_step,
            subtasks: (!run.subtasks.is_empty()).then(|| run.subtasks.iter().map(SubtaskJson::from).collect()),
        }
    }
}

/// A failure kind's lowercase name (`transient`, `internal`, …).
pub fn failure_kind_name(kind: i32) -> String {
    pb::FailureKind::try_from(kind)
        .map(|k| k.as_str_name().trim_start_matches("FAILURE_KIND_").to_lowercase())
        .unwrap_or_else(|_| format!("unknown({kind})"))
}

/// Fetches one run; with `include_subtasks`, every page of its subtasks.
pub async fn get(client: &mut Client, run_id: &str, include_subtasks: bool) -> Result<pb::Run, tonic::Status> {
    let mut subtasks = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::GetRunRequest { run_id: run_id.to_owned(), include_subtasks, page_size: 0, page_token };
        let resp = client.get_run(request(req)).await?.into_inner();
        let mut run = resp.run.ok_or_else(|| tonic::Status::internal("empty GetRun response"))?;
        subtasks.append(&mut run.subtasks);
        if resp.next_page_token.is_empty() {
            run.subtasks = subtasks;
            return Ok(run);
        }
        page_token = resp.next_page_token;
    }
}

/// Follows a run's events from `after_seq`, calling `on_event` for each, until the run ends.
/// Reconnects (resuming after the last seen seq) when the stream breaks with UNAVAILABLE or
/// ends early. Returns the last seq seen.
pub async fn follow(
    client: &mut Client,
    run_id: &str,
    after_seq: u64,
    on_event: impl FnMut(&pb::RunEvent),
) -> anyhow::Result<u64> {
    follow_with(client, run_id, after_seq, false, on_event).await
}

/// [`follow`], with agents' partial output too when `output` is set (resumed after the last
/// `(output_epoch, output_seq)` seen, so a reconnect repeats nothing).
pub async fn follow_with(
    client: &mut Client,
    run_id: &str,
    mut after_seq: u64,
    output: bool,
    mut on_event: impl FnMut(&pb::RunEvent),
) -> anyhow::Result<u64> {
    let (mut output_epoch, mut after_output_seq) = (0, 0);
    // A broken or refused stream is resumed after the last seen seq: 100 ms doubling to 3 s,
    // jittered, 30 tries in a row at most; every event received resets the count.
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .with_max_times(30);
    let mut delays = backoff.build();
    loop {
        let req = pb::WatchRunRequest {
            run_id: run_id.to_owned(),
            after_seq,
            follow_output: output,
            after_output_seq,
            output_epoch,
            catch_up_only: false,
        };
        let stream = client.watch_run(req).await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => match delays.next() {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    continue;
                }
                None => return Err(status_error(&s)),
            },
            Err(s) => return Err(status_error(&s)),
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    delays = backoff.build();
                    match &ev.event {
                        Some(pb::run_event::Event::AgentOutput(o)) => {
                            (output_epoch, after_output_seq) = (o.output_epoch, o.output_seq);
                        }
                        _ => after_seq = ev.seq,
                    }
                    on_event(&ev);
                    if matches!(ev.event, Some(pb::run_event::Event::RunFinished(_))) {
                        return Ok(after_seq);
                    }
                }
                Err(s) if resumable(&s) => break,
                Err(s) => return Err(status_error(&s)),
            }
        }
        let delay = delays.next().ok_or_else(|| anyhow::anyhow!("the event stream of {run_id} keeps breaking"))?;
        tokio::time::sleep(delay).await;
    }
}

/// Whether a broken event stream is worth resuming: the server said UNAVAILABLE, or the
/// connection itself broke (a status made here from a transport error, which carries its
/// source, not one the server sent).
fn resumable(s: &tonic::Status) -> bool {
    use tonic::Code::{Cancelled, Internal, Unavailable, Unknown};
    s.code() == Unavailable
        || (matches!(s.code(), Unknown | Cancelled | Internal) && std::error::Error::source(s).is_some())
}

/// What the coordinator refused a call with: its code and what it said (with, for
/// INVALID_ARGUMENT, each field violation). The CLI's exit code follows the code.
#[derive(Debug)]
pub struct StatusError {
    pub code: tonic::Code,
    text: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for StatusError {}

/// An error with the status's message and, for INVALID_ARGUMENT, each field violation.
pub fn status_error(status: &tonic::Status) -> anyhow::Error {
    let violations = swarm_proto::status::field_violations(status);
    let text = if violations.is_empty() {
        format!("{:?}: {}", status.code(), status.message())
    } else {
        let lines: Vec<String> = violations.iter().map(|(f, d)| format!("  {f}: {d}")).collect();
        format!("{:?}: the run spec is invalid:\n{}", status.code(), lines.join("\n"))
    };
    StatusError { code: status.code(), text }.into()
}
