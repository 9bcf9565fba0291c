//! `WorkerService.Connect`: one bidirectional stream per worker, bridged to the run manager.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::Stream;
use swarm_core::ConnId;
use swarm_proto::ApiError;
use swarm_proto::pb::{self, worker_message::Msg, worker_service_server::WorkerService};
use swarm_proto::status::to_status;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::gateway::GatewayHandle;
use crate::manager::Command;
use crate::node::Role;

/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most slots one worker may declare.
/// The most slots a worker may declare.
pub const MAX_SLOTS: u32 = 100_000;

/// The `WorkerService` implementation.
#[derive(Clone)]
pub struct WorkerApi {
    role: tokio::sync::watch::Receiver<Role>,
    tracker: TaskTracker,
    next_conn: Arc<AtomicU64>,
    gateway: Option<GatewayHandle>,
    audit: Arc<crate::audit::AuditLog>,
}

impl WorkerApi {
    /// An adapter over the node's role; reader tasks are spawned on `tracker`.
    /// With a `gateway`, workers ask it for permits before calling the models it governs.
    pub fn new(
        role: tokio::sync::watch::Receiver<Role>,
        tracker: TaskTracker,
        gateway: Option<GatewayHandle>,
        audit: Arc<crate::audit::AuditLog>,
    ) -> Self {
        Self { role, tracker, next_conn: Arc::new(AtomicU64::new(1)), gateway, audit }
    }
}

fn validate(hello: &pb::WorkerHello) -> Result<(), ApiError> {
    if hello.worker_id.is_empty() || hello.worker_id.len() > 128 {
        return Err(ApiError::invalid("hello.worker_id", "required, at most 128 bytes"));
    }
    if hello.slots == 0 || hello.slots > MAX_SLOTS {
        return Err(ApiError::invalid("hello.slots", format!("must be in 1..={MAX_SLOTS}")));
    }
    Ok(())
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let who = crate::auth::principal(&req);
        if let Err(e) = who.require(crate::auth::Role::Worker) {
            self.audit.record(&who, crate::audit::Action::WorkerJoin, "", Err(&e), &[]);
            return Err(e);
        }
        let manager = match &*self.role.borrow() {
            Role::Leader(ctx) => ctx.manager.clone(),
            Role::Standby { leader } => return Err(to_status(&ApiError::NotLeader { leader: leader.clone() })),
        };
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let Some(pb::WorkerMessage { msg: Some(Msg::Hello(hello)) }) = first else {
            return Err(to_status(&ApiError::invalid("msg", "the first message must be a hello")));
        };
        if let Err(e) = validate(&hello) {
            let status = to_status(&e);
            let extra = [("worker_id", serde_json::json!(hello.worker_id.chars().take(128).collect::<String>()))];
            self.audit.record(&who, crate::audit::Action::WorkerJoin, "", Err(&status), &extra);
            return Err(status);
        }
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = tokio::sync::mpsc::channel(2 * hello.slots as usize + 256);
        let principal = who.name.clone();
        let gateway = self.gateway.clone();
        if let Some(g) = &gateway {
            g.connected(conn, tx.clone()).await;
        }
        manager.send(Command::WorkerJoined { conn, hello, tx, principal }).await.map_err(|e| to_status(&e))?;
        self.tracker.spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::WorkerMessage { msg: Some(Msg::Reports(r)) })) => {
                        if manager.send(Command::WorkerReports { conn, reports: r.reports }).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(pb::WorkerMessage { msg: Some(Msg::Heartbeat(h)) })) => {
                        if manager.send(Command::WorkerHeartbeat { conn, fences: h.fences }).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(pb::WorkerMessage { msg: Some(Msg::Steps(s)) })) => {
                        if manager.send(Command::WorkerSteps { conn, steps: s.steps }).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(pb::WorkerMessage { msg: Some(Msg::Permits(p)) })) => {
                        if let Some(g) = &gateway {
                            g.permits(conn, p).await;
                        }
                    }
                    // Best effort: partial output never holds up reports behind it.
                    Ok(Some(pb::WorkerMessage { msg: Some(Msg::Outputs(o)) })) => {
                        manager.try_send(Command::WorkerOutput { conn, chunks: o.chunks });
                    }
                    Ok(Some(pb::WorkerMessage { msg: Some(Msg::Drain(_)) })) => {
                        if manager.send(Command::WorkerDraining { conn }).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(status) => {
                        debug!(conn = conn.0, %status, "worker stream failed");
                        break;
                    }
                }
            }
            if let Some(g) = &gateway {
                g.gone(conn).await;
            }
            let _ = manager.send(Command::WorkerLeft { conn }).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn put_artifacts(
        &self,
        req: Request<Streaming<pb::ArtifactUpload>>,
    ) -> Result<Response<pb::ArtifactManifest>, Status> {
        let (who, ctx) = self.leader_for_worker(&req)?;
        crate::artifacts::receive(&ctx.manager, ctx.repo.payloads(), &who.name, req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| to_status(&e))
    }

    type GetInputArtifactStream = crate::artifacts::ChunkStream;

    async fn get_input_artifact(
        &self,
        req: Request<pb::InputArtifactRequest>,
    ) -> Result<Response<Self::GetInputArtifactStream>, Status> {
        let (who, ctx) = self.leader_for_worker(&req)?;
        crate::artifacts::input(&ctx.manager, ctx.repo.payloads(), &who.name, req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| to_status(&e))
    }
}

impl WorkerApi {
    /// The caller (it must have the worker role) and this term, if this node leads.
    fn leader_for_worker<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(Arc<crate::auth::Principal>, Arc<crate::node::LeaderCtx>), Status> {
        let who = crate::auth::principal(req);
        who.require(crate::auth::Role::Worker)?;
        match &*self.role.borrow() {
            Role::Leader(ctx) => Ok((who, ctx.clone())),
            Role::Standby { leader } => Err(to_status(&ApiError::NotLeader { leader: leader.clone() })),
        }
    }
}
