//! The live web view, served on the coordinator's HTTP port next to `/metrics`:
//!
//! - `/` — one page (plain HTML and JavaScript, `web/index.html`): the runs, the workers and
//!   their slots, and one run's DAG by stage with states, durations and the critical path;
//! - `/api/runs`, `/api/runs/{id}`, `/api/workers` — JSON views over the same calls as the gRPC
//!   API (`ListRuns`, `GetRun`, `ListWorkers`); runs filtered and paged, a run's timeline and
//!   one subtask's detail: see [`ops`];
//! - `/api/runs/{id}?page_size=N&page_token=T` — one page of the run's subtasks (the page paints
//!   the first and loads the rest behind it);
//! - `/api/runs/{id}/summary` — the run without its subtasks (cheap);
//! - `POST /api/runs/{id}/signal` — decide an approval (`SignalRun`), and `POST
//!   /api/runs/{id}/fork` — fork the run from a subtask (`ForkRun`): the routes that change
//!   anything, guarded against cross-site requests (see [`cross_site`]);
//! - `/api/runs/{id}/events` — the run's events as server-sent events, each with what changed
//!   (a subtask's new state, times, worker, error; new subagents): the page loads a run once
//!   and then applies events, refreshing only the summary (at most once a second) and the
//!   whole run once when it ends.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{Value, json};
use swarm_proto::pb;
use swarm_proto::pb::swarm_service_server::SwarmService;
use tonic::Request;

mod ops;

use crate::api::SwarmApi;
use crate::auth::Authenticator;

/// The web view's state: the API it calls and who may call it.
#[derive(Clone)]
pub struct Web {
    api: SwarmApi,
    auth: Authenticator,
}

/// Who calls the web view: the request's headers and, over TLS, its connection (whose client
/// certificate may stand for a principal, as on the API).
pub(crate) struct Caller {
    headers: HeaderMap,
    conn: Option<crate::tls::ConnInfo>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Infallible> {
        let conn = parts.extensions.get::<axum::extract::ConnectInfo<crate::tls::ConnInfo>>().map(|c| c.0.clone());
        Ok(Self { headers: parts.headers.clone(), conn })
    }
}

/// A request to the API as the caller: authenticated from an `authorization: Bearer` header,
/// from the `swarm_token` cookie the page sets (an `EventSource` cannot send headers), or from
/// the connection's client certificate.
fn authed<T>(web: &Web, caller: &Caller, msg: T) -> Result<Request<T>, Box<Response>> {
    let mut req = Request::new(msg);
    if let Some(conn) = &caller.conn {
        req.extensions_mut().insert(conn.clone());
    }
    let headers = &caller.headers;
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
        let cookies = headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok());
        cookies
            .flat_map(|c| c.split(';'))
            .find_map(|kv| kv.trim().strip_prefix("swarm_token="))
            .map(|t| format!("Bearer {}", percent_decode(t)))
    });
    if let Some(value) = bearer.and_then(|b| b.parse().ok()) {
        req.metadata_mut().insert("authorization", value);
    }
    web.auth.authenticate(req).map_err(|s| Box::new(error(&s)))
}

const INDEX: &str = include_str!("../../web/index.html");

/// The web view's routes over `api`.
pub fn router(api: SwarmApi, auth: Authenticator) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/api/runs", get(ops::runs))
        .route("/api/runs/{id}/timeline", get(ops::run_timeline))
        .route("/api/runs/{id}/subtasks/{sid}", get(ops::subtask_detail))
        .route("/api/runs/{id}/artifacts/{sid}/{*path}", get(ops::artifact))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/summary", get(summary))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/workers", get(ops::workers))
        .route("/api/runs/{id}/signal", post(signal))
        .route("/api/runs/{id}/fork", post(ops::fork))
        .route("/api/runs/{id}/cancel", post(ops::cancel))
        .route("/api/me", get(ops::me))
        .with_state(Web { api, auth })
}

/// `%XX` escapes decoded (the page stores the token with `encodeURIComponent`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: &tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let violations: Vec<Value> = swarm_proto::status::field_violations(status)
        .into_iter()
        .map(|(field, description)| json!({ "field": field, "description": description }))
        .collect();
    (code, Json(json!({ "error": status.message(), "violations": violations }))).into_response()
}

fn ms(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6))
}

fn duration_ms(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
}

fn state_name(state: i32) -> &'static str {
    pb::RunState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name()).trim_start_matches("RUN_STATE_")
}

fn run_json(r: &pb::Run) -> Value {
    let s = r.summary.clone().unwrap_or_default();
    json!({
        "run_id": r.run_id,
        "name": r.name,
        "state": state_name(r.state),
        "submitted_ms": ms(r.submitted_at.as_ref()),
        "finished_ms": ms(r.finished_at.as_ref()),
        "total_subtasks": s.total_subtasks,
        "tool_calls_completed": s.tool_calls_completed,
        "tool_calls_failed": s.tool_calls_failed,
        "wall_ms": duration_ms(s.wall_time.as_ref()),
        "critical_path_ms": duration_ms(s.critical_path_time.as_ref()),
        "critical_path": s.critical_path,
        "critical_steps": s.critical_steps,
        "total_steps": s.total_steps,
        "parallelism": if s.parallelism.is_finite() { s.parallelism } else { 0.0 },
        "speculative_attempts": s.speculative_attempts,
        "agent_resumes": s.agent_resumes,
        "agent_resumes_sticky": s.agent_resumes_sticky,
        "wall_breakdown_ms": s.wall_breakdown.as_ref().map(|b| json!({
            "work": duration_ms(b.work.as_ref()),
            "waiting_for_slot": duration_ms(b.waiting_for_slot.as_ref()),
            "waiting_for_placement": duration_ms(b.waiting_for_placement.as_ref()),
            "dispatch": duration_ms(b.dispatch.as_ref()),
            "retry_backoff": duration_ms(b.retry_backoff.as_ref()),
            "failed_attempts": duration_ms(b.failed_attempts.as_ref()),
            "straggler_wait": duration_ms(b.straggler_wait.as_ref()),
            "waiting_for_approval": duration_ms(b.waiting_for_approval.as_ref()),
            "other": duration_ms(b.other.as_ref()),
        })),
        "wall_headline": s.wall_breakdown.as_ref().map(|b| b.headline.clone()).unwrap_or_default(),
        "tokens": s.tokens,
        "tokens_by_model": s.tokens_by_model.iter()
            .map(|m| (m.model.clone(), json!({"input_tokens": m.input_tokens, "output_tokens": m.output_tokens})))
            .collect::<serde_json::Map<String, Value>>(),
        "token_budget": (s.token_budget > 0).then_some(s.token_budget),
        "tokens_left": (s.token_budget > 0).then(|| s.token_budget.saturating_sub(s.tokens)),
        "last_seq": r.last_seq,
        "tenant": r.tenant,
        "spec_version": r.spec_version,
    })
}

fn subtask_json(s: &pb::SubtaskStatus) -> Value {
    let state = pb::SubtaskState::try_from(s.state).map_or("UNKNOWN", |x| x.as_str_name());
    json!({
        "id": s.id,
        "state": state.trim_start_matches("SUBTASK_STATE_"),
        "kind": s.kind,
        "tool": s.tool,
        "attempt": s.attempt,
        "worker_id": s.worker_id,
        "started_ms": ms(s.started_at.as_ref()),
        "finished_ms": ms(s.finished_at.as_ref()),
        "depends_on": s.depends_on,
        "parent": s.parent,
        "stage": s.stage,
        "error": s.error_message,
        "prompt": s.approval_prompt,
        "reused_from": s.reused_from,
        "output": if s.kind == "approval" { s.output_json.as_str() } else { "" },
    })
}

/// `/api/runs/{id}`: the run and every subtask; with `page_size` or `page_token`, one page of
/// them (`GetRun`'s) and the `next_page_token`, so that a run of 100,000 subtasks paints its
/// first page at once and loads the rest behind it.
async fn run(
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    caller: Caller,
) -> Response {
    let page_size = ops::query(&raw, "page_size").map(|n| n.parse::<u32>().unwrap_or(0));
    let first_token = ops::query(&raw, "page_token");
    let paged = page_size.is_some() || first_token.is_some();
    let mut subtasks = Vec::new();
    let mut page_token = first_token.unwrap_or_default();
    loop {
        let req = pb::GetRunRequest {
            run_id: id.clone(),
            include_subtasks: true,
            page_size: page_size.unwrap_or(0),
            page_token,
        };
        let req = match authed(&web, &caller, req) {
            Ok(r) => r,
            Err(e) => return *e,
        };
        let resp = match web.api.get_run(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return error(&s),
        };
        let Some(run) = resp.run else { return error(&tonic::Status::not_found("no such run")) };
        subtasks.extend(run.subtasks.iter().map(subtask_json));
        if paged {
            let next = resp.next_page_token;
            return Json(json!({ "run": run_json(&run), "subtasks": subtasks, "next_page_token": next }))
                .into_response();
        }
        if resp.next_page_token.is_empty() {
            return Json(json!({ "run": run_json(&run), "subtasks": subtasks })).into_response();
        }
        page_token = resp.next_page_token;
    }
}

async fn summary(State(web): State<Web>, Path(id): Path<String>, caller: Caller) -> Response {
    let req = match authed(&web, &caller, pb::GetRunRequest { run_id: id, ..Default::default() }) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match web.api.get_run(req).await {
        Ok(r) => match r.into_inner().run {
            Some(run) => Json(run_json(&run)).into_response(),
            None => error(&tonic::Status::not_found("no such run")),
        },
        Err(s) => error(&s),
    }
}

/// What a page of another site could send to a route that changes something: refused unless
/// it has the header `x-swarm-request: 1` (a cross-origin request with it needs a CORS
/// preflight, which is never granted) and an `Origin`, when sent, naming this host. (The
/// routes also take only JSON bodies.)
fn cross_site(caller: &Caller) -> Option<Response> {
    let header = |name: &str| caller.headers.get(name).and_then(|v| v.to_str().ok());
    let same_origin = match (header("origin"), header("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        }
        (Some(_), None) => false,
    };
    if header("x-swarm-request") != Some("1") || !same_origin {
        let message = "cross-site request refused: send x-swarm-request: 1 from this page's origin";
        return Some((StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response());
    }
    None
}

/// The request of a route that changes something, built by `build` from its JSON body and
/// carrying the caller's credentials ([`authed`]), unless it is refused: sent from another
/// site ([`cross_site`]), not JSON, or not what `build` accepts (its error response).
pub(super) fn changing_request<T>(
    web: &Web,
    caller: &Caller,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
    build: impl FnOnce(Value) -> Result<T, tonic::Status>,
) -> Result<Request<T>, Box<Response>> {
    if let Some(refused) = cross_site(caller) {
        return Err(Box::new(refused));
    }
    let Ok(Json(body)) = body else {
        return Err(Box::new(error(&tonic::Status::invalid_argument(
            "the body must be a JSON object (content-type: application/json)",
        ))));
    };
    let msg = build(body).map_err(|s| Box::new(error(&s)))?;
    authed(web, caller, msg)
}

/// `POST /api/runs/{id}/signal` `{"subtask_id", "decision": "approve"|"reject", "payload",
/// "reason"}`: `SignalRun` as the caller (role `approve`), see [`changing_request`].
async fn signal(
    State(web): State<Web>,
    Path(id): Path<String>,
    caller: Caller,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = changing_request(&web, &caller, body, |body| {
        let decision = match body["decision"].as_str() {
            Some("approve") => pb::Decision::Approve,
            Some("reject") => pb::Decision::Reject,
            _ => return Err(tonic::Status::invalid_argument("decision: must be \"approve\" or \"reject\"")),
        };
        Ok(pb::SignalRunRequest {
            run_id: id,
            subtask_id: body["subtask_id"].as_str().unwrap_or_default().to_owned(),
            decision: decision.into(),
            payload_json: if body["payload"].is_null() { String::new() } else { body["payload"].to_string() },
            reason: body["reason"].as_str().unwrap_or_default().to_owned(),
        })
    });
    let req = match req {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match web.api.signal_run(req).await {
        Ok(r) => {
            let a = r.into_inner();
            Json(json!({
                "decision": if a.decision == pb::Decision::Approve as i32 { "approve" } else { "reject" },
                "already_decided": a.already_decided,
                "output": serde_json::from_str::<Value>(&a.payload_json).ok(),
                "reason": a.reason,
            }))
            .into_response()
        }
        Err(s) => error(&s),
    }
}

/// What one event says, for the page: its kind, the subtask it concerns, and what changed.
fn event_json(e: &pb::RunEvent) -> Value {
    use pb::run_event::Event as E;
    let time_ms = ms(e.time.as_ref());
    let mut v = match &e.event {
        Some(E::RunStarted(_)) => json!({ "kind": "run_started", "subtask_id": "" }),
        Some(E::SubtaskStarted(x)) => json!({ "kind": "subtask_started", "subtask_id": x.subtask_id,
            "state": "RUNNING", "attempt": x.attempt, "worker_id": x.worker_id, "started_ms": time_ms }),
        Some(E::SubtaskSucceeded(x)) => json!({ "kind": "subtask_succeeded", "subtask_id": x.subtask_id,
            "state": "SUCCEEDED", "finished_ms": time_ms, "duration_ms": duration_ms(x.duration.as_ref()) }),
        Some(E::SubtaskFailed(x)) => json!({ "kind": "subtask_failed", "subtask_id": x.subtask_id,
            "state": if x.retry_in.is_some() { "READY" } else { "FAILED" }, "finished_ms": time_ms, "error": x.message }),
        Some(E::SubtaskSkipped(x)) => {
            json!({ "kind": "subtask_skipped", "subtask_id": x.subtask_id, "state": "SKIPPED" })
        }
        Some(E::RunFinished(x)) => json!({ "kind": "run_finished", "subtask_id": "", "state": state_name(x.state) }),
        Some(E::AgentStep(x)) => json!({ "kind": "agent_step", "subtask_id": x.subtask_id }),
        Some(E::StageStarted(x)) => json!({ "kind": "stage_started", "subtask_id": x.subtask_id,
            "stage": x.stage, "subagent_ids": x.subagent_ids }),
        Some(E::BudgetExceeded(_)) => json!({ "kind": "budget_exceeded", "subtask_id": "" }),
        Some(E::Warning(x)) => json!({ "kind": "warning", "subtask_id": x.subtask_id, "message": x.message }),
        Some(E::Speculated(x)) => json!({ "kind": "speculated", "subtask_id": x.subtask_id }),
        Some(E::ApprovalRequested(x)) => json!({ "kind": "approval_requested", "subtask_id": x.subtask_id,
            "state": "WAITING", "prompt": x.prompt }),
        Some(E::AgentOutput(x)) => json!({ "kind": "agent_output", "subtask_id": x.subtask_id,
            "attempt": x.attempt, "turn": x.turn, "text": x.text, "reasoning": x.reasoning, "offset": x.offset,
            "tools_started": x.tools_started,
            "tools_finished": x.tools_finished.iter().map(|t| json!({"tool": t.tool, "failed": t.failed})).collect::<Vec<_>>(),
            "output_seq": x.output_seq, "output_epoch": x.output_epoch }),
        None => json!({ "kind": "unknown", "subtask_id": "" }),
    };
    v["seq"] = json!(e.seq);
    v
}

/// Events after `?after=SEQ`, or after the `Last-Event-ID` a reconnecting browser sends; with
/// `output=1`, agents' partial output too (no SSE id: a reconnect resumes the durable events,
/// and the page drops output it has by `output_epoch` and `output_seq`).
async fn events(
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    caller: Caller,
) -> Response {
    let after_query = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let after_header = caller
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let after_seq = after_query.max(after_header);
    let follow_output = query.as_deref().unwrap_or_default().split('&').any(|kv| kv == "output=1");
    let req =
        match authed(&web, &caller, pb::WatchRunRequest { run_id: id, after_seq, follow_output, ..Default::default() })
        {
            Ok(r) => r,
            Err(e) => return *e,
        };
    match web.api.watch_run(req).await {
        Ok(stream) => {
            let events = stream.into_inner().map(|item| {
                let event = match item {
                    Ok(e) if e.seq == 0 => Event::default().data(event_json(&e).to_string()),
                    Ok(e) => Event::default().id(e.seq.to_string()).data(event_json(&e).to_string()),
                    Err(s) => Event::default().event("error").data(s.message()),
                };
                Ok::<_, Infallible>(event)
            });
            Sse::new(events).keep_alive(KeepAlive::default()).into_response()
        }
        Err(s) => error(&s),
    }
}
