//! `SwarmService`: adapters that decode, call the run manager and map the answer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use swarm_core::dag::{MAX_VIOLATIONS, SpecViolations};
use swarm_core::{Dag, Limits, RunId, RunSpec};
use swarm_proto::ApiError;
use swarm_proto::pb::swarm_service_client::SwarmServiceClient;
use swarm_proto::pb::{self, swarm_service_server::SwarmService};
use swarm_proto::status::to_status;
use swarm_store::repo::{Created, RunHeader, RunRepo};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{Principal, Role as Access, principal};
use crate::forward::{self, Forwarder};
use crate::manager::{Command, Page, RunSize, Watchable, now_us};
use crate::node::{LeaderCtx, Role};
use crate::watch::EventLog;

mod chunked;
mod fork;
mod mutations;
mod stored;
mod stream;
use mutations::run_id;

/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Events a watch stream reads from the log at a time.
const WATCH_BATCH: usize = 256;

/// The `SwarmService` implementation.
/// Subtasks in one `GetRun` page by default, at most, and the outputs it carries (about).
const DEFAULT_SUBTASK_PAGE: usize = 1000;
const MAX_SUBTASK_PAGE: usize = 10_000;
const PAGE_BYTES: usize = 4 << 20;

/// The longest run id a request may name (ids are 26 characters; this leaves room).
const MAX_RUN_ID: usize = 128;

/// Specs larger than this (encoded) are validated on a blocking thread.
const BLOCKING_VALIDATION_BYTES: usize = 256 * 1024;

/// How long a call that comes while no leader is known (a node just started, or an election is
/// under way) waits for one before it is answered `UNAVAILABLE`.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SwarmApi {
    role: tokio::sync::watch::Receiver<Role>,
    limits: Arc<Limits>,
    shutdown: tokio_util::sync::CancellationToken,
    forward: Forwarder,
    /// Whether callers authenticate, and whether this node can vouch for certificate-known ones
    /// (see `forward::forwardable`).
    auth_on: bool,
    vouches: bool,
    /// Reads of the store a standby may make too (the web view's subtask detail).
    reads: RunRepo,
    /// Who did what (`--audit-log`).
    audit: Arc<crate::audit::AuditLog>,
    /// Turns to gather a `SubmitRunChunked` request (see `chunked`).
    chunked: Arc<tokio::sync::Semaphore>,
}

/// Where a call is served: here (this node leads), or by the leader it is sent on to.
enum Route {
    Here,
    Leader(SwarmServiceClient<Channel>, String),
}

impl SwarmApi {
    /// An adapter over whatever role the node has.
    pub fn new(
        role: tokio::sync::watch::Receiver<Role>,
        limits: Limits,
        shutdown: tokio_util::sync::CancellationToken,
        forward: Forwarder,
        (auth_on, vouches): (bool, bool),
        reads: RunRepo,
        audit: Arc<crate::audit::AuditLog>,
    ) -> Self {
        let chunked = Arc::new(tokio::sync::Semaphore::new(chunked::CONCURRENT_CHUNKED));
        Self { role, limits: Arc::new(limits), shutdown, forward, auth_on, vouches, reads, audit, chunked }
    }

    /// Read access to the store, as the leader's repository or (on a standby) unfenced.
    pub(crate) fn reads(&self) -> RunRepo {
        match &*self.role.borrow() {
            Role::Leader(ctx) => ctx.repo.clone(),
            Role::Standby { .. } => self.reads.clone(),
        }
    }

    /// Waits (up to [`ELECTION_WAIT`]) while this node knows no leader, so that a call made
    /// just as a cluster starts or fails over is served rather than refused.
    async fn elected(&self) {
        let unknown = |r: &Role| matches!(r, Role::Standby { leader: None });
        if !unknown(&self.role.borrow()) {
            return;
        }
        let mut role = self.role.clone();
        // Not past shutdown: a stopping node answers at once.
        tokio::select! {
            _ = tokio::time::timeout(ELECTION_WAIT, role.wait_for(|r| !unknown(r))) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// Serve `req` here, or send it on to the leader (see [`crate::forward`]).
    async fn route<T>(&self, req: &Request<T>) -> Result<Route, Status> {
        self.elected().await;
        let leader = match &*self.role.borrow() {
            Role::Leader(_) => return Ok(Route::Here),
            Role::Standby { leader } => leader.clone(),
        };
        let hint = || to_status(&ApiError::NotLeader { leader: leader.clone() });
        match &leader {
            Some(addr) if forward::forwardable(req.metadata(), self.auth_on, self.vouches) => {
                self.forward.client(addr).map(|c| Route::Leader(c, addr.clone())).map_err(|e| to_status(&e))
            }
            _ => Err(hint()),
        }
    }

    /// [`Self::route`] for a caller who must hold `access`.
    async fn route_as<T>(&self, who: &Principal, access: Access, req: &Request<T>) -> Result<Route, Status> {
        who.require(access)?;
        self.route(req).await
    }

    pub(crate) async fn leader(&self) -> Result<Arc<LeaderCtx>, ApiError> {
        self.elected().await;
        match &*self.role.borrow() {
            Role::Leader(ctx) => Ok(ctx.clone()),
            Role::Standby { leader } => Err(ApiError::NotLeader { leader: leader.clone() }),
        }
    }

    /// `SubmitRun` (and `SubmitRunChunked`, with its larger `max_bytes`) on the leader.
    async fn submit(
        &self,
        req: pb::SubmitRunRequest,
        who: &Principal,
        max_bytes: usize,
    ) -> Result<pb::SubmitRunResponse, ApiError> {
        let size = prost::Message::encoded_len(&req);
        if size > max_bytes {
            return Err(ApiError::ResourceExhausted(format!(
                "the request has {size} bytes; the limit is {max_bytes} bytes ({} MiB){}",
                max_bytes >> 20,
                if max_bytes < swarm_proto::chunked::MAX_CHUNKED_SUBMIT_BYTES as usize {
                    "; send larger ones with SubmitRunChunked"
                } else {
                    ""
                }
            )));
        }
        let key = idempotency_key(req.idempotency_key, who)?;
        let wire = match (req.spec, req.spec_text.is_empty()) {
            (Some(_), false) => return Err(ApiError::invalid("spec_text", "give spec or spec_text, not both")),
            (Some(w), true) => Ok(w),
            (None, false) => Err(req.spec_text),
            (None, true) => return Err(ApiError::invalid("spec", "required (or spec_text)")),
        };
        let limits = self.limits.clone();
        let validate = move || -> Result<(RunSpec, Dag, String), ApiError> {
            let spec = match wire {
                Ok(w) => {
                    // What the wire form got wrong and what the graph gets wrong, together.
                    let (spec, wire_problems) = swarm_proto::convert::decode_spec(w);
                    if !wire_problems.is_empty() {
                        let structural = Dag::build(&spec, &limits).err().unwrap_or(SpecViolations(Vec::new()));
                        let all = SpecViolations::merge(wire_problems, &structural, MAX_VIOLATIONS);
                        return Err(ApiError::InvalidSpec(all));
                    }
                    spec
                }
                // JSON is YAML: one parser for both, as the CLI reads files.
                Err(text) => crate::yaml::from_str::<RunSpec>(&text)
                    .map_err(|e| ApiError::invalid("spec_text", swarm_core::error::bounded_message(e.to_string())))?,
            };
            let dag = Dag::build(&spec, &limits)?;
            // Hashed here too: for a large spec, off the runtime's threads.
            let hash = spec.hash();
            Ok((spec, dag, hash))
        };
        // Validation is linear in the spec's size; a large spec is validated off the runtime's
        // threads so it delays no other request.
        let (spec, dag, spec_hash) = if size > BLOCKING_VALIDATION_BYTES {
            tokio::task::spawn_blocking(validate).await.map_err(|e| ApiError::Internal(e.to_string()))??
        } else {
            validate()?
        };
        let dag = Arc::new(dag);
        let ctx = self.leader().await?;
        let size = RunSize::of(&dag);
        let tenant = who.tenant.clone();
        let admitted = dag.clone();
        ctx.manager.call(|reply| Command::Admit { size, tenant, dag: admitted, reply }).await??;
        let submitted_us = now_us();
        let run_id = RunId::generate(submitted_us / 1000);
        // The run's trace continues the caller's (the SubmitRun server span is the parent).
        let span = crate::telemetry::workflow_span(Some(&tracing::Span::current()), &spec.name, run_id.as_str());
        let header = RunHeader {
            idempotency_key: key,
            tenant: who.tenant.clone(),
            term: ctx.repo.term(),
            trace_context: swarm_telemetry::inject(&span).into_iter().collect(),
            spec_version: spec.version.clone(),
            spec_hash,
            ..RunHeader::running(run_id.clone(), spec.name.clone(), submitted_us)
        };
        match ctx.repo.create_run(&header, &spec).await.map_err(store_error)? {
            Created::Existing(existing) => {
                // The idempotency key named a run that exists: this span stands for nothing new.
                span.record("swarm.run.id", existing.as_str());
                span.record("swarm.duplicate", true);
                // A reused key with other content is a mistake, not a retry (as Stripe and
                // Temporal treat it): say so rather than answer with a run of another spec.
                // Compared as stored (the store's encoding, JSON, normalises both sides).
                if let Some(stored) = ctx.repo.spec(&existing).await.map_err(store_error)?
                    && serde_json::to_value(&stored).ok() != serde_json::to_value(&spec).ok()
                {
                    return Err(ApiError::FailedPrecondition(format!(
                        "idempotency_key already names run {existing}, submitted with a different spec; use a new \
                         key for a new run"
                    )));
                }
                return Ok(pb::SubmitRunResponse { run_id: existing.to_string(), created: false });
            }
            Created::New => {}
        }
        tracing::info!(principal = %who.name, tenant = who.tenant.as_deref().unwrap_or(""), run_id = %run_id, name = %spec.name, "run submitted");
        ctx.manager
            .call(|reply| Command::Submit { run_id: run_id.clone(), dag, header: Box::new(header), span, reply })
            .await?;
        Ok(pb::SubmitRunResponse { run_id: run_id.to_string(), created: true })
    }

    async fn get(&self, req: pb::GetRunRequest, who: &Principal) -> Result<pb::GetRunResponse, ApiError> {
        let run_id = run_id(&req.run_id)?;
        let page = if req.include_subtasks {
            let offset = match req.page_token.as_str() {
                "" => 0,
                t => t
                    .strip_prefix('s')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| ApiError::invalid("page_token", "not a token this API returned"))?,
            };
            let size = match req.page_size {
                0 => DEFAULT_SUBTASK_PAGE,
                n => (n as usize).min(MAX_SUBTASK_PAGE),
            };
            Some(Page { offset, size, max_bytes: PAGE_BYTES })
        } else {
            None
        };
        let id = run_id.clone();
        let ctx = self.leader().await?;
        let found = ctx.manager.call(|reply| Command::Get { run_id: id, page, reply }).await?;
        // Another tenant's run is not there, as far as this caller can tell.
        let Some(mut found) = found.filter(|f| who.sees(tenant(&f.run))) else {
            return Err(ApiError::NotFound(format!("run {run_id}")));
        };
        // An ended run's subtasks are read from the store, not kept in memory.
        if let (Some(page), true) = (page, found.archived) {
            let (subtasks, next) = ctx.pages.page(&ctx.repo, &found.run, page).await.map_err(store_error)?;
            found.run.subtasks = subtasks;
            found.next = next;
        }
        Ok(pb::GetRunResponse {
            run: Some(found.run),
            next_page_token: found.next.map(|n| format!("s{n}")).unwrap_or_default(),
        })
    }

    /// `NOT_FOUND` unless `who` sees the run (it exists and is of its tenant).
    pub(crate) async fn check_visible(&self, run_id: &RunId, who: &Principal) -> Result<(), ApiError> {
        if who.listing_tenant().is_none() {
            return Ok(());
        }
        let id = run_id.clone();
        let found = self.leader().await?.manager.call(|reply| Command::Get { run_id: id, page: None, reply }).await?;
        match found {
            Some(f) if who.sees(tenant(&f.run)) => Ok(()),
            _ => Err(ApiError::NotFound(format!("run {run_id}"))),
        }
    }

    /// The run's event log, and the token of the term serving it (a watch ends with the term).
    pub(crate) async fn watch_log(
        &self,
        run_id: RunId,
    ) -> Result<(Arc<EventLog>, tokio_util::sync::CancellationToken), ApiError> {
        let id = run_id.clone();
        let ctx = self.leader().await?;
        let found = ctx
            .manager
            .call(|reply| Command::Watch { run_id: id, reply })
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("run {run_id} (or it is no longer watchable)")))?;
        let term = ctx.term.clone();
        match found {
            Watchable::Log(log) => Ok((log, term)),
            // An ended run's log is no longer in memory (it ended long ago or under an
            // earlier leader): read back from the store.
            Watchable::Stored(header) => {
                let events = crate::recovery::stored_events(&ctx.repo, &run_id).await.map_err(store_error)?;
                Ok((EventLog::stored_ended(&header, events), term))
            }
        }
    }
}

/// A request's idempotency key as stored: checked, and per tenant (the same key from two
/// tenants names two runs).
fn idempotency_key(key: String, who: &Principal) -> Result<Option<String>, ApiError> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::invalid("idempotency_key", format!("longer than {MAX_IDEMPOTENCY_KEY} bytes")));
    }
    if key.starts_with(TENANT_KEY_PREFIX) {
        return Err(ApiError::invalid("idempotency_key", format!("must not start with `{TENANT_KEY_PREFIX}`")));
    }
    Ok(Some(match &who.tenant {
        Some(tenant) => format!("{TENANT_KEY_PREFIX}{tenant}/{key}"),
        None => key,
    }))
}

/// A run's tenant as the manager reports it (empty: none).
fn tenant(run: &pb::Run) -> Option<&str> {
    (!run.tenant.is_empty()).then_some(run.tenant.as_str())
}

/// Where tenants' idempotency keys start (`tenant:{tenant}/{key}`); callers' keys may not.
const TENANT_KEY_PREFIX: &str = "tenant:";

pub(crate) fn store_error(e: swarm_store::StoreError) -> ApiError {
    match e {
        swarm_store::StoreError::Unavailable(m) => ApiError::Unavailable {
            message: format!("state store unavailable: {m}"),
            retry_after: Some(Duration::from_secs(1)),
        },
        swarm_store::StoreError::TooLarge(m) => ApiError::ResourceExhausted(m),
        swarm_store::StoreError::Fenced(_) => ApiError::NotLeader { leader: None },
        other => ApiError::Internal(other.to_string()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SwarmService for SwarmApi {
    async fn submit_run(&self, req: Request<pb::SubmitRunRequest>) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let who = principal(&req);
        let result = match self.route_as(&who, Access::Submit, &req).await {
            Err(e) => Err(e),
            Ok(Route::Leader(mut leader, addr)) => {
                // The leader records it.
                return leader.submit_run(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
            }
            Ok(Route::Here) => self
                .submit(req.into_inner(), &who, crate::MAX_SUBMIT_BYTES)
                .await
                .map(Response::new)
                .map_err(|e| to_status(&e)),
        };
        let run_id = result.as_ref().map_or("", |r| r.get_ref().run_id.as_str());
        self.audit(&who, crate::audit::Action::Submit, run_id, &result, &[]);
        result
    }

    async fn submit_run_chunked(
        &self,
        req: Request<tonic::Streaming<pb::SubmitRunChunk>>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        self.submit_chunked(req).await
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::GetRunResponse>, Status> {
        let who = principal(&req);
        who.require(Access::Read)?;
        if let Route::Leader(mut leader, addr) = self.route(&req).await? {
            return leader.get_run(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
        }
        self.get(req.into_inner(), &who).await.map(Response::new).map_err(|e| to_status(&e))
    }

    async fn list_runs(&self, req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let who = principal(&req);
        who.require(Access::Read)?;
        if let Route::Leader(mut leader, addr) = self.route(&req).await? {
            return leader.list_runs(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
        }
        let tenant = who.listing_tenant();
        let req = req.into_inner();
        let limit = match req.page_size {
            0 => 50,
            n => n.min(1000) as usize,
        };
        // The token is the last run id of the previous page; anything else is not ours.
        if !req.page_token.is_empty() && !RunId::is_well_formed(&req.page_token) {
            return Err(to_status(&ApiError::invalid("page_token", "not a token this API returned")));
        }
        let before = (!req.page_token.is_empty()).then(|| RunId::from(req.page_token));
        let spec_version = (!req.spec_version.is_empty()).then_some(req.spec_version);
        let ctx = self.leader().await.map_err(|e| to_status(&e))?;
        let (runs, more) = ctx
            .manager
            .call(|reply| Command::List { before, limit, tenant, spec_version, reply })
            .await
            .map_err(|e| to_status(&e))?;
        let next_page_token =
            if more { runs.last().map(|r| r.run_id.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListRunsResponse { runs, next_page_token }))
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let who = principal(&req);
        who.require(Access::Read)?;
        if let Route::Leader(mut leader, addr) = self.route(&req).await? {
            return leader.list_workers(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
        }
        let ctx = self.leader().await.map_err(|e| to_status(&e))?;
        let workers = ctx.manager.call(|reply| Command::Workers { reply }).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn cancel_run(&self, req: Request<pb::CancelRunRequest>) -> Result<Response<pb::CancelRunResponse>, Status> {
        let who = principal(&req);
        let run = req.get_ref().run_id.clone();
        let result = match self.route_as(&who, Access::Cancel, &req).await {
            Err(e) => Err(e),
            Ok(Route::Leader(mut leader, addr)) => {
                return leader.cancel_run(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
            }
            Ok(Route::Here) => self.cancel(req.into_inner(), &who).await,
        };
        self.audit(&who, crate::audit::Action::Cancel, &run, &result, &[]);
        result
    }

    async fn signal_run(&self, req: Request<pb::SignalRunRequest>) -> Result<Response<pb::SignalRunResponse>, Status> {
        let who = principal(&req);
        let (run, subtask, decision) =
            (req.get_ref().run_id.clone(), req.get_ref().subtask_id.clone(), req.get_ref().decision);
        let result = match self.route_as(&who, Access::Approve, &req).await {
            Err(e) => Err(e),
            Ok(Route::Leader(mut leader, addr)) => {
                return leader.signal_run(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
            }
            Ok(Route::Here) => self.signal(req.into_inner(), &who).await,
        };
        let decision =
            pb::Decision::try_from(decision).map_or_else(|_| decision.to_string(), |d| d.as_str_name().to_owned());
        let extra = [("subtask_id", serde_json::json!(subtask)), ("decision", serde_json::json!(decision))];
        self.audit(&who, crate::audit::Action::Signal, &run, &result, &extra);
        result
    }

    type GetArtifactStream = crate::artifacts::ChunkStream;

    async fn get_artifact(
        &self,
        req: Request<pb::GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        let who = principal(&req);
        who.require(Access::Read)?;
        if let Route::Leader(mut leader, addr) = self.route(&req).await? {
            let stream =
                leader.get_artifact(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr))?;
            return Ok(stream.map(|s| Box::pin(s) as crate::artifacts::ChunkStream));
        }
        let req = req.into_inner();
        let result = async {
            let status = self.find_subtask(&req.run_id, &req.subtask_id, &who).await?;
            let artifact = status.artifacts.iter().find(|a| a.path == req.path).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "artifact `{}` of subtask {} of run {}",
                    req.path, req.subtask_id, req.run_id
                ))
            })?;
            crate::artifacts::send(self.leader().await?.repo.payloads(), &artifact.key).await
        };
        result.await.map(Response::new).map_err(|e| to_status(&e))
    }

    async fn fork_run(&self, req: Request<pb::ForkRunRequest>) -> Result<Response<pb::ForkRunResponse>, Status> {
        let who = principal(&req);
        let result = match self.route_as(&who, Access::Submit, &req).await {
            Err(e) => Err(e),
            Ok(Route::Leader(mut leader, addr)) => {
                return leader.fork_run(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
            }
            Ok(Route::Here) => self.fork(req.into_inner(), &who).await.map(Response::new).map_err(|e| to_status(&e)),
        };
        let run_id = result.as_ref().map_or("", |r| r.get_ref().run_id.as_str());
        self.audit(&who, crate::audit::Action::Fork, run_id, &result, &[]);
        result
    }

    async fn get_transcript(
        &self,
        req: Request<pb::GetTranscriptRequest>,
    ) -> Result<Response<pb::GetTranscriptResponse>, Status> {
        let who = principal(&req);
        who.require(Access::Read)?;
        if let Route::Leader(mut leader, addr) = self.route(&req).await? {
            return leader.get_transcript(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr));
        }
        self.transcript(req.into_inner(), &who).await.map(Response::new).map_err(|e| to_status(&e))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(&self, req: Request<pb::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        let who = principal(&req);
        who.require(Access::Read)?;
        if let Route::Leader(mut leader, addr) = self.route(&req).await? {
            let stream =
                leader.watch_run(self.forward.request(req, &who)).await.map_err(|s| forward::failed(s, &addr))?;
            return Ok(stream.map(|s| Box::pin(forward::resumable(s)) as EventStream));
        }
        let req = req.into_inner();
        let run_id = run_id(&req.run_id).map_err(|e| to_status(&e))?;
        self.check_visible(&run_id, &who).await.map_err(|e| to_status(&e))?;
        let (log, term) = self.watch_log(run_id).await.map_err(|e| to_status(&e))?;
        let output = req.follow_output.then_some((req.output_epoch, req.after_output_seq));
        // Workers send a run's output only while someone follows it.
        let follower = match (req.follow_output, self.leader().await) {
            (true, Ok(ctx)) => Some(stream::Follower::new(log.clone(), ctx.manager.clone())),
            _ => None,
        };
        // Ends with UNAVAILABLE when the process stops or this term ends (deposed, the caller
        // resumes with after_seq on the next leader).
        let stops = [self.shutdown.clone(), term];
        let events = stream::watch_stream(log, req.after_seq, output, req.catch_up_only, stops, follower);
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod election_tests;
