//! Swarm's coordinator: accepts runs over gRPC, schedules their subtasks onto connected workers
//! and streams progress back.
//!
//! [`Coordinator::start`] spawns the [`manager`] (the single owner of run state);
//! [`Coordinator::serve`] serves `swarm.v1.SwarmService`, `swarm.v1.WorkerService`,
//! `grpc.health.v1` and server reflection (v1 and v1alpha) on a listener until shutdown.

pub mod api;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod fork;
pub mod forward;
pub mod gateway;
pub mod manager;
pub mod node;
pub mod output;
pub mod oversize;
pub mod placement;
pub mod ratelimit;
pub mod recovery;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod web;
pub mod worker_api;
pub mod yaml;

#[cfg(test)]
mod spec_audit_tests;

use std::sync::Arc;
use std::time::Duration;

use swarm_core::Limits;
use swarm_proto::pb::{self, swarm_service_server::SwarmServiceServer, worker_service_server::WorkerServiceServer};
use swarm_store::StateStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use manager::{ManagerConfig, ManagerHandle, ManagerStats};
pub use node::Role;

/// Largest request the client API decodes (a 100,000-subtask spec of small calls fits); larger
/// ones are refused while decoding, with RESOURCE_EXHAUSTED naming the limit.
/// (`SubmitRunChunked` takes larger ones, up to 256 MiB.)
pub const MAX_SUBMIT_BYTES: usize = swarm_proto::chunked::MAX_SUBMIT_BYTES;
/// Largest message a worker stream decodes: one report with an output of up to
/// `swarm_worker::MAX_OUTPUT_BYTES` (32 MiB) plus 1 MiB; workers batch up to 1 MiB.
pub const MAX_WORKER_MESSAGE_BYTES: usize = 33 * 1024 * 1024;

/// Coordinator settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Limits run specs must respect.
    pub limits: Limits,
    /// Run manager settings.
    pub manager: ManagerConfig,
    /// Key prefix in the state store.
    pub prefix: String,
    /// The address workers and clients reach this node at (its election value).
    pub advertise: String,
    /// TTL of the node's lease: a standby takes over at most this long after the leader dies.
    pub lease_ttl: Duration,
    /// Ended runs are deleted this long after they end (`None`: kept).
    pub run_ttl: Option<Duration>,
    /// Where large outputs and specs go (claim check).
    pub payloads: swarm_store::payload::PayloadStore,
    /// Who may call (`--auth-file`; off: everyone, as the anonymous administrator).
    pub auth: auth::Authenticator,
    /// The model gateway's limits per endpoint (`--models`); empty: no gateway.
    pub model_limits: std::collections::HashMap<String, gateway::Limits>,
    /// How a standby reaches an `https://` leader to forward API calls (`--peer-ca`); `None`:
    /// the system's roots.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Who did what (`--audit-log`; off by default).
    pub audit: Arc<audit::AuditLog>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            manager: ManagerConfig::default(),
            prefix: swarm_store::repo::DEFAULT_PREFIX.to_owned(),
            advertise: String::new(),
            lease_ttl: Duration::from_secs(2),
            run_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            payloads: swarm_store::payload::PayloadStore::memory(swarm_store::payload::DEFAULT_THRESHOLD),
            auth: auth::Authenticator::off(),
            model_limits: std::collections::HashMap::new(),
            peer_tls: None,
            audit: Arc::default(),
        }
    }
}

/// Serves `grpc.health.v1` alone, as `reporter` says, on `listener` until `shutdown`: the
/// plaintext health port of coordinators and workers (kubelet gRPC probes cannot use TLS).
pub async fn serve_health_only(
    listener: TcpListener,
    reporter: tonic_health::server::HealthReporter,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter),
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served =
        tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "health server failed");
    }
}

/// A started coordinator node: it campaigns for leadership and, while leader, runs a run
/// manager; [`Coordinator::serve`] exposes it over gRPC.
pub struct Coordinator {
    role: tokio::sync::watch::Receiver<Role>,
    api: api::SwarmApi,
    worker_api: worker_api::WorkerApi,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    health: tonic_health::server::HealthReporter,
    fatal: manager::Fatal,
    auth: auth::Authenticator,
    gateway: Option<gateway::GatewayHandle>,
}

impl Coordinator {
    /// Starts the node over `store`. Everything stops when `shutdown` is cancelled (a leader
    /// resigns first).
    pub fn start(config: CoordinatorConfig, store: Arc<dyn StateStore>, shutdown: CancellationToken) -> Self {
        telemetry::touch_series();
        let tracker = TaskTracker::new();
        let (role_tx, role) = tokio::sync::watch::channel(Role::Standby { leader: None });
        let forwarder = forward::Forwarder::new(config.advertise.clone(), config.peer_tls.clone());
        let reads = swarm_store::repo::RunRepo::new(store.clone(), config.prefix.clone())
            .with_payloads(config.payloads.clone());
        let api = api::SwarmApi::new(
            role.clone(),
            config.limits.clone(),
            shutdown.clone(),
            forwarder,
            (config.auth.enabled(), config.auth.vouches()),
            reads,
            config.audit.clone(),
        );
        let mut config = config;
        let gateway =
            (!config.model_limits.is_empty()).then(|| gateway::GatewayHandle::spawn(config.model_limits.clone()));
        config.manager.gateway_endpoints = gateway.as_ref().map(|g| g.endpoints().to_vec()).unwrap_or_default();
        config.manager.audit = config.audit.clone();
        let worker_api =
            worker_api::WorkerApi::new(role.clone(), tracker.clone(), gateway.clone(), config.audit.clone());
        let fatal = manager::Fatal::new(shutdown.clone());
        let auth = config.auth.clone();
        tracker.spawn(node::run(config, store, role_tx, shutdown.clone(), fatal.clone()));
        let health = tonic_health::server::HealthReporter::new();
        // NOT_SERVING as soon as shutdown starts, on every port that serves health.
        let (h, token) = (health.clone(), shutdown.clone());
        tracker.spawn(async move {
            token.cancelled().await;
            h.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            h.set_not_serving::<SwarmServiceServer<api::SwarmApi>>().await;
            h.set_not_serving::<WorkerServiceServer<worker_api::WorkerApi>>().await;
        });
        Self { role, api, worker_api, tracker, shutdown, health, fatal, auth, gateway }
    }

    /// The model gateway, when `model_limits` set one up.
    pub fn gateway(&self) -> Option<gateway::GatewayHandle> {
        self.gateway.clone()
    }

    /// Set when the node stopped because it could not go on (its run manager panicked): the
    /// process should exit non-zero with this reason once [`Coordinator::serve`] returns.
    pub fn fatal(&self) -> manager::Fatal {
        self.fatal.clone()
    }

    /// Serves only `grpc.health.v1` on `listener` (plaintext, for Kubernetes gRPC probes) until
    /// shutdown.
    pub fn serve_health(&self, listener: TcpListener) {
        self.tracker.spawn(serve_health_only(listener, self.health.clone(), self.shutdown.clone().cancelled_owned()));
    }

    /// The web view's routes (see [`web`]); serve them with `/metrics` on the HTTP port.
    pub fn web_router(&self) -> axum::Router {
        web::router(self.api.clone(), self.auth.clone())
    }

    /// Serves the web view and `/metrics` on `listener` (the HTTP port) until shutdown.
    pub fn serve_http(&self, listener: TcpListener) {
        self.serve_http_on(self.incoming().listen(listener, None));
    }

    /// Accepted connections, ending with this node (add listeners, TLS or not, then serve).
    pub fn incoming(&self) -> tls::Incoming {
        tls::Incoming::new(self.shutdown.clone())
    }

    /// Serves the web view and `/metrics` on `incoming` (HTTPS when its listener is TLS).
    pub fn serve_http_on(&self, incoming: tls::Incoming) {
        let router = self.web_router().merge(swarm_telemetry::metrics_router());
        let shutdown = self.shutdown.clone().cancelled_owned();
        self.tracker.spawn(async move {
            // Handlers see each connection's client certificate (mTLS principals).
            let app = router.into_make_service_with_connect_info::<tls::ConnInfo>();
            if let Err(e) = axum::serve(incoming, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }

    /// The node's role, as it changes.
    pub fn role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.role.clone()
    }

    /// Serves gRPC on `listener` until shutdown, then waits (at most `grace`) for tasks to end.
    pub async fn serve(self, listener: TcpListener, grace: Duration) -> Result<(), tonic::transport::Error> {
        let incoming = self.incoming().listen(listener, None);
        self.serve_on(incoming, grace).await
    }

    /// [`Coordinator::serve`] on the connections of `incoming` (TLS, plaintext or both).
    pub async fn serve_on(self, incoming: tls::Incoming, grace: Duration) -> Result<(), tonic::transport::Error> {
        let health = self.health.clone();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        health.set_service_status("", tonic_health::ServingStatus::Serving).await;
        health.set_serving::<SwarmServiceServer<api::SwarmApi>>().await;
        health.set_serving::<WorkerServiceServer<worker_api::WorkerApi>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 =
            reflection().build_v1().inspect_err(|e| tracing::error!(error = %e, "reflection setup failed"));
        let reflection_v1alpha = reflection().build_v1alpha();
        let addr = incoming.local_addr();
        match addr {
            Some(addr) => info!(%addr, "coordinator serving"),
            None => info!("coordinator serving"),
        }
        let shutdown = self.shutdown.clone();
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(telemetry::GrpcSpanLayer)
            .layer(oversize::OversizeLayer { limit: MAX_SUBMIT_BYTES })
            .add_service(health_service)
            .add_optional_service(reflection_v1.ok())
            .add_optional_service(reflection_v1alpha.ok())
            .add_service(tonic::service::interceptor::InterceptedService::new(
                SwarmServiceServer::new(self.api).max_decoding_message_size(MAX_SUBMIT_BYTES),
                self.auth.clone(),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                WorkerServiceServer::new(self.worker_api).max_decoding_message_size(MAX_WORKER_MESSAGE_BYTES),
                self.auth.clone(),
            ));
        // Accepted sockets get TCP_NODELAY in the accept loop; dead peers are found by the
        // HTTP/2 keepalive above.
        let result = router.serve_with_incoming_shutdown(incoming.into_stream(), shutdown.cancelled_owned()).await;
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!("coordinator tasks did not stop within the grace period");
        }
        result
    }
}
