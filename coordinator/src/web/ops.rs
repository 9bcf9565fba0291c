//! The web view's operator routes:
//!
//! - `/api/runs?state=S&name=TEXT&limit=N&page_token=T` — runs filtered by state and a name
//!   substring, a page at a time (newest first);
//! - `/api/workers` — workers with their labels, when they connected and were last heard of,
//!   and whether they drain;
//! - `/api/runs/{id}/timeline` — every attempt as a bar (worker, start, end, outcome; backups
//!   and their losers marked), built from the run's event log;
//! - `/api/runs/{id}/subtasks/{sid}` — one subtask: its spec (arguments, or the agent's
//!   instructions and input), output or offloaded reference, error, attempts, and for agents
//!   the transcript;
//! - `POST /api/runs/{id}/fork` — `{"from_subtask", "patch", "from_step"}`: `ForkRun` as the
//!   caller (role `submit`); answers the new run's id;
//! - `POST /api/runs/{id}/cancel` — `{"reason"}`: `CancelRun` as the caller (role `cancel`);
//! - `/api/me` — who the page's caller is: name, tenant, roles, and what the page may offer it
//!   (`may.submit`, `may.cancel`, `may.approve`): buttons a principal could not use are not
//!   shown (and the routes refuse them anyway).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use swarm_core::RunId;
use swarm_proto::ApiError;
use swarm_proto::pb;
use swarm_proto::pb::swarm_service_server::SwarmService;
use swarm_proto::status::to_status;

use super::{Caller, Web, authed, changing_request, error, ms, run_json, subtask_json};

/// Runs looked at for one filtered page at most (a filter matching little ends the page early,
/// with a token to go on).
const SCAN_PAGES: usize = 20;

pub(super) fn query(raw: &Option<String>, key: &str) -> Option<String> {
    raw.as_deref()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(super::percent_decode)
}

/// `/api/runs`: filtered by `state` (e.g. RUNNING), `name` (a substring), `tenant` (exact; `-`
/// for runs of no tenant) and `version` (the spec's version label), `limit` per page.
pub(super) async fn runs(State(web): State<Web>, RawQuery(raw): RawQuery, caller: Caller) -> Response {
    let state = query(&raw, "state").filter(|s| !s.is_empty()).map(|s| s.to_uppercase());
    let name = query(&raw, "name").unwrap_or_default().to_lowercase();
    let spec_version = query(&raw, "version").unwrap_or_default();
    let tenant = query(&raw, "tenant").filter(|t| !t.is_empty()).map(|t| if t == "-" { String::new() } else { t });
    let limit = query(&raw, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(50).clamp(1, 500);
    let mut token = query(&raw, "page_token").unwrap_or_default();
    let mut out = Vec::new();
    for _ in 0..SCAN_PAGES {
        let req = pb::ListRunsRequest {
            page_size: 200,
            page_token: std::mem::take(&mut token),
            spec_version: spec_version.clone(),
        };
        let req = match authed(&web, &caller, req) {
            Ok(r) => r,
            Err(e) => return *e,
        };
        let resp = match web.api.list_runs(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return error(&s),
        };
        for r in &resp.runs {
            let j = run_json(r);
            let state_ok = state.as_deref().is_none_or(|s| j["state"] == s);
            let tenant_ok = tenant.as_deref().is_none_or(|t| r.tenant == t);
            if state_ok && tenant_ok && r.name.to_lowercase().contains(&name) && out.len() < limit {
                out.push(j);
            }
        }
        token = resp.next_page_token;
        if token.is_empty() || out.len() >= limit {
            break;
        }
    }
    // A page that stopped on its limit mid-page resumes after its last run.
    if out.len() >= limit {
        token = out.last().and_then(|r| r["run_id"].as_str()).unwrap_or_default().to_owned();
    }
    Json(json!({ "runs": out, "next_page_token": token })).into_response()
}

/// `/api/workers`.
pub(super) async fn workers(State(web): State<Web>, caller: Caller) -> Response {
    let req = match authed(&web, &caller, pb::ListWorkersRequest {}) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match web.api.list_workers(req).await {
        Ok(r) => {
            let workers: Vec<Value> = r
                .into_inner()
                .workers
                .iter()
                .map(|w| {
                    json!({ "worker_id": w.worker_id, "slots": w.slots, "running": w.running, "tools": w.tools,
                        "labels": w.labels, "last_heard_ms": ms(w.last_heard.as_ref()),
                        "connected_ms": ms(w.connected_at.as_ref()), "draining": w.draining })
                })
                .collect();
            Json(json!({ "workers": workers })).into_response()
        }
        Err(s) => error(&s),
    }
}

/// One attempt on the timeline.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Bar {
    pub subtask: String,
    pub attempt: u32,
    pub worker: String,
    pub start_ms: f64,
    /// None while it runs.
    pub end_ms: Option<f64>,
    /// ok, failed, lost (a backup race), cancelled, running.
    pub outcome: &'static str,
    /// A backup attempt of a straggler.
    pub backup: bool,
}

/// The attempts of a run from its events. `winners` names the worker each succeeded subtask's
/// result came from (a backup race's winner; the events do not say which attempt won).
pub fn timeline(events: &[pb::RunEvent], winners: &HashMap<String, String>) -> Vec<Bar> {
    use pb::run_event::Event as E;
    let mut bars: Vec<Bar> = Vec::new();
    let mut open: HashMap<String, Vec<usize>> = HashMap::new();
    let t = |e: &pb::RunEvent| e.time.as_ref().map_or(0.0, |t| t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6);
    for e in events {
        let at = t(e);
        let started = match &e.event {
            Some(E::SubtaskStarted(s)) => Some((s.subtask_id.as_str(), s.attempt, s.worker_id.as_str(), false)),
            Some(E::Speculated(s)) => {
                let attempt = open.get(&s.subtask_id).and_then(|o| o.first()).map_or(0, |&i| bars[i].attempt);
                Some((s.subtask_id.as_str(), attempt, s.worker_id.as_str(), true))
            }
            _ => None,
        };
        if let Some((subtask, attempt, worker, backup)) = started {
            open.entry(subtask.to_owned()).or_default().push(bars.len());
            bars.push(Bar {
                subtask: subtask.to_owned(),
                attempt,
                worker: worker.to_owned(),
                start_ms: at,
                end_ms: None,
                outcome: "running",
                backup,
            });
            continue;
        }
        match &e.event {
            Some(E::SubtaskSucceeded(s)) => {
                let racing = open.remove(&s.subtask_id).unwrap_or_default();
                let winner = winners.get(&s.subtask_id);
                let won = racing
                    .iter()
                    .copied()
                    .find(|&i| winner.is_some_and(|w| *w == bars[i].worker))
                    .or_else(|| racing.first().copied());
                for i in racing {
                    bars[i].end_ms = Some(at);
                    bars[i].outcome = if Some(i) == won { "ok" } else { "lost" };
                }
            }
            Some(E::SubtaskFailed(s)) => {
                if let Some(list) = open.get_mut(&s.subtask_id)
                    && let Some(k) =
                        list.iter().position(|&i| bars[i].attempt == s.attempt).or(list.len().checked_sub(1))
                {
                    let i = list.remove(k);
                    bars[i].end_ms = Some(at);
                    bars[i].outcome = "failed";
                }
            }
            Some(E::RunFinished(_)) => {
                for i in open.drain().flat_map(|(_, v)| v) {
                    bars[i].end_ms = Some(at);
                    bars[i].outcome = "cancelled";
                }
            }
            _ => {}
        }
    }
    bars
}

/// Every event of a run written so far, as the caller, without waiting for more (a WatchRun
/// that only catches up: served by the leader, or forwarded to it).
async fn events_now(web: &Web, caller: &Caller, id: &str) -> Result<Vec<pb::RunEvent>, Response> {
    let req = pb::WatchRunRequest { run_id: id.to_owned(), catch_up_only: true, ..Default::default() };
    let req = authed(web, caller, req).map_err(|e| *e)?;
    let mut stream = web.api.watch_run(req).await.map_err(|s| error(&s))?.into_inner();
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        out.push(event.map_err(|s| error(&s))?);
    }
    Ok(out)
}

/// Every subtask status of a run (all pages), as the caller.
async fn subtasks(web: &Web, caller: &Caller, id: &str) -> Result<(pb::Run, Vec<pb::SubtaskStatus>), Response> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::GetRunRequest { run_id: id.to_owned(), include_subtasks: true, page_size: 0, page_token };
        let req = authed(web, caller, req).map_err(|e| *e)?;
        let resp = web.api.get_run(req).await.map_err(|s| error(&s))?.into_inner();
        let mut run = resp.run.ok_or_else(|| error(&tonic::Status::not_found("no such run")))?;
        all.append(&mut run.subtasks);
        if resp.next_page_token.is_empty() {
            return Ok((run, all));
        }
        page_token = resp.next_page_token;
    }
}

/// `/api/runs/{id}/timeline`: `{run, bars}`.
pub(super) async fn run_timeline(State(web): State<Web>, Path(id): Path<String>, caller: Caller) -> Response {
    let (run, statuses) = match subtasks(&web, &caller, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let winners: HashMap<String, String> = statuses.into_iter().map(|s| (s.id, s.worker_id)).collect();
    match events_now(&web, &caller, &id).await {
        Ok(events) => Json(json!({ "run": run_json(&run), "bars": timeline(&events, &winners) })).into_response(),
        Err(r) => r,
    }
}

/// `/api/runs/{id}/subtasks/{sid}`.
pub(super) async fn subtask_detail(
    State(web): State<Web>,
    Path((id, sid)): Path<(String, String)>,
    caller: Caller,
) -> Response {
    let (_, statuses) = match subtasks(&web, &caller, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(status) = statuses.iter().find(|s| s.id == sid) else {
        return error(&tonic::Status::not_found(format!("subtask {sid} of run {id}")));
    };
    let run_id = RunId::from(id.as_str());
    let detail = async {
        // The caller may see the run: GetRun (here or at the leader) just said so.
        let repo = web.api.reads();
        let store = |e: swarm_store::StoreError| ApiError::Internal(e.to_string());
        let spec = repo.spec(&run_id).await.map_err(store)?;
        let mut spec_json = spec
            .as_ref()
            .and_then(|s| s.subtasks.iter().find(|t| t.id.as_str() == sid))
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or(Value::Null);
        if spec_json.is_null() && !status.parent.is_empty() {
            // A subagent: its spec is in its orchestrator's spawn records.
            let spawns = repo.spawns(&run_id).await.map_err(store)?;
            if let Some(child) = spawns.iter().flat_map(|(_, _, c)| c).find(|c| c.id.as_str() == sid) {
                spec_json = json!({ "id": sid, "name": child.name, "agent": child.agent });
            }
        }
        let mut turns: Vec<(u32, swarm_core::agent::Turn)> = if status.kind == "agent" || status.kind == "orchestrator"
        {
            repo.turns(&run_id)
                .await
                .map_err(store)?
                .into_iter()
                .filter(|(s, _, _)| s.as_str() == sid)
                .map(|(_, n, t)| (n, t))
                .collect()
        } else {
            Vec::new()
        };
        turns.sort_by_key(|(n, _)| *n);
        let transcript: Vec<Value> =
            turns.iter().flat_map(|(_, t)| &t.messages).filter_map(|m| serde_json::to_value(m).ok()).collect();
        Ok::<_, ApiError>((spec_json, transcript, turns))
    };
    match detail.await {
        Ok((spec, transcript, turns)) => {
            let mut v = subtask_json(status);
            v["spec"] = spec;
            v["output"] = json!(status.output_json);
            v["output_ref"] = json!(status.output_ref);
            v["error_kind"] = json!(pb::FailureKind::try_from(status.error_kind).map_or("", |k| k.as_str_name()));
            v["transcript"] = json!(transcript);
            v["turns"] = json!(turns.len());
            v["artifacts"] =
                status.artifacts.iter().map(|a| json!({"path": a.path, "size": a.size, "sha256": a.sha256})).collect();
            Json(v).into_response()
        }
        Err(e) => error(&to_status(&e)),
    }
}

/// `GET /api/runs/{id}/artifacts/{sid}/{path}`: one artifact's bytes (`GetArtifact` as the
/// caller), as a download.
pub(super) async fn artifact(
    State(web): State<Web>,
    Path((id, sid, path)): Path<(String, String, String)>,
    caller: Caller,
) -> Response {
    let name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let req = match authed(&web, &caller, pb::GetArtifactRequest { run_id: id, subtask_id: sid, path }) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match web.api.get_artifact(req).await {
        Ok(stream) => {
            let bytes = stream
                .into_inner()
                .map(|c| c.map(|c| c.data).map_err(|s| std::io::Error::other(s.message().to_owned())));
            let headers = [
                (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            ];
            (headers, axum::body::Body::from_stream(bytes)).into_response()
        }
        Err(s) => error(&s),
    }
}

/// `POST /api/runs/{id}/fork` `{"from_subtask", "patch": YAML or JSON text, "from_step"}`:
/// `ForkRun` as the caller (role `submit`); see [`changing_request`].
pub(super) async fn fork(
    State(web): State<Web>,
    Path(id): Path<String>,
    caller: Caller,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = changing_request(&web, &caller, body, |body| {
        let from_step = match &body["from_step"] {
            Value::Null => None,
            v => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => return Err(tonic::Status::invalid_argument("from_step: must be a whole number of turns")),
            },
        };
        Ok(pb::ForkRunRequest {
            run_id: id,
            from_subtask: body["from_subtask"].as_str().unwrap_or_default().to_owned(),
            patch: body["patch"].as_str().unwrap_or_default().to_owned(),
            from_step,
            idempotency_key: String::new(),
        })
    });
    let req = match req {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match web.api.fork_run(req).await {
        Ok(r) => {
            let r = r.into_inner();
            Json(json!({ "run_id": r.run_id, "reused": r.reused, "rerun": r.rerun })).into_response()
        }
        Err(s) => error(&s),
    }
}

/// `POST /api/runs/{id}/cancel` `{"reason"}`: `CancelRun` as the caller (role `cancel`), see
/// [`changing_request`]; answers the run's state.
pub(super) async fn cancel(
    State(web): State<Web>,
    Path(id): Path<String>,
    caller: Caller,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = changing_request(&web, &caller, body, |body| {
        let reason = body["reason"].as_str().unwrap_or("cancelled in the web view").chars().take(1024).collect();
        Ok(pb::CancelRunRequest { run_id: id, reason })
    });
    let req = match req {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match web.api.cancel_run(req).await {
        Ok(r) => Json(r.into_inner().run.as_ref().map(run_json).unwrap_or(Value::Null)).into_response(),
        Err(s) => error(&s),
    }
}

/// `/api/me`: the caller as the API sees it, and what the page may offer it.
pub(super) async fn me(State(web): State<Web>, caller: Caller) -> Response {
    use crate::auth::Role;
    let req = match authed(&web, &caller, ()) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let p = crate::auth::principal(&req);
    Json(json!({
        "name": p.name,
        "tenant": p.tenant,
        "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "may": {
            "read": p.may(Role::Read),
            "submit": p.may(Role::Submit),
            "cancel": p.may(Role::Cancel),
            "approve": p.may(Role::Approve),
        },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64, event: pb::run_event::Event) -> pb::RunEvent {
        let time = prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 };
        pb::RunEvent { run_id: "r".into(), seq: 0, time: Some(time), event: Some(event) }
    }

    #[test]
    fn attempts_retries_and_a_backup_race_become_bars() {
        use pb::run_event::Event as E;
        let started = |s: &str, attempt, w: &str| {
            E::SubtaskStarted(pb::SubtaskStarted { subtask_id: s.into(), attempt, worker_id: w.into() })
        };
        let events = vec![
            at(0, started("a", 1, "w1")),
            at(100, E::SubtaskFailed(pb::SubtaskFailed { subtask_id: "a".into(), attempt: 1, ..Default::default() })),
            at(150, started("a", 2, "w2")),
            at(160, started("b", 1, "w1")),
            at(300, E::Speculated(pb::Speculated { subtask_id: "b".into(), worker_id: "w3".into(), after: None })),
            at(400, E::SubtaskSucceeded(pb::SubtaskSucceeded { subtask_id: "b".into(), attempt: 1, duration: None })),
            at(500, E::SubtaskSucceeded(pb::SubtaskSucceeded { subtask_id: "a".into(), attempt: 2, duration: None })),
            at(520, started("c", 1, "w1")),
            at(600, E::RunFinished(pb::RunFinished::default())),
        ];
        let winners = HashMap::from([("b".to_owned(), "w3".to_owned())]);
        let bars = timeline(&events, &winners);
        type Shape<'a> = (&'a str, u32, &'a str, f64, Option<f64>, &'a str, bool);
        let shape: Vec<Shape<'_>> = bars
            .iter()
            .map(|b| (b.subtask.as_str(), b.attempt, b.worker.as_str(), b.start_ms, b.end_ms, b.outcome, b.backup))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", 1, "w1", 0.0, Some(100.0), "failed", false),
                ("a", 2, "w2", 150.0, Some(500.0), "ok", false),
                ("b", 1, "w1", 160.0, Some(400.0), "lost", false),
                ("b", 1, "w3", 300.0, Some(400.0), "ok", true),
                ("c", 1, "w1", 520.0, Some(600.0), "cancelled", false),
            ]
        );
        // Events out of order or about nobody (a forged log) make no bar and no panic.
        let odd = vec![
            at(5, E::SubtaskSucceeded(pb::SubtaskSucceeded { subtask_id: "zz".into(), attempt: 9, duration: None })),
            at(5, E::SubtaskFailed(pb::SubtaskFailed { subtask_id: "zz".into(), attempt: 9, ..Default::default() })),
        ];
        assert!(timeline(&odd, &HashMap::new()).is_empty());
    }
}
