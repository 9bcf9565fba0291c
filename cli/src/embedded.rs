//! An embedded cluster in one process: a coordinator serving gRPC on a loopback (or given)
//! address, and in-process workers that connect to it over real gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use swarm_coordinator::manager::{Command, ManagerStats};
use swarm_coordinator::{Coordinator, CoordinatorConfig, Role};
use swarm_store::{MemoryStore, StateStore};
use swarm_worker::{ToolRegistry, WorkerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `NAME=VALUE` pairs (labels, resources).
pub type Pairs = Vec<(String, String)>;

/// What to start.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Where the coordinator listens (port 0: any free port).
    pub listen: SocketAddr,
    /// In-process workers.
    pub workers: usize,
    /// Slots per worker.
    pub slots: u32,
    /// Coordinator settings.
    pub coordinator: CoordinatorConfig,
    /// What the in-process workers' `http_get` may reach.
    pub egress: swarm_worker::tools::egress::EgressPolicy,
    /// Models of the in-process workers (none: they run no agents).
    pub models: Arc<swarm_worker::model::ModelRegistry>,
    /// Where the web view and `/metrics` are served (none: not served).
    pub http_listen: Option<SocketAddr>,
    /// TLS on `listen` (and the web view). In-process workers then connect over TLS with
    /// `worker_tls`, or, without it, through a private plaintext loopback listener of their own.
    pub tls: Option<swarm_coordinator::tls::ServerTls>,
    /// The in-process workers' client TLS (CA and, for mTLS, their certificate).
    pub worker_tls: Option<swarm_worker::tls::ClientTls>,
    /// The in-process workers' tools (none: the built-in ones under `egress`).
    pub tools: Option<Arc<ToolRegistry>>,
    /// Start without waiting to lead (a second coordinator on the same store stands by).
    pub standby: bool,
    /// Labels and resources of the in-process workers, worker `i` taking entry `i % len`
    /// (none: no labels but `process=embedded`, no resources).
    pub worker_placement: Vec<(Pairs, Pairs)>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 4,
            slots: 64,
            coordinator: CoordinatorConfig::default(),
            models: Arc::new(swarm_worker::model::ModelRegistry::new()),
            http_listen: None,
            tls: None,
            worker_tls: None,
            tools: None,
            egress: swarm_worker::tools::egress::EgressPolicy::public_only(),
            standby: false,
            worker_placement: Vec::new(),
        }
    }
}

/// A running embedded cluster.
pub struct Embedded {
    /// The coordinator's address.
    pub addr: SocketAddr,
    /// Where the web view and `/metrics` are served, if they are.
    pub http_addr: Option<SocketAddr>,
    role: tokio::sync::watch::Receiver<Role>,
    shutdown: CancellationToken,
    coordinator: JoinHandle<()>,
    /// Per worker: its shutdown (drain) token, its abort token, its task.
    workers: Vec<(CancellationToken, CancellationToken, Option<JoinHandle<()>>)>,
    /// Spawns coordinator tasks on this runtime (the current one if `None`).
    coordinator_rt: Option<tokio::runtime::Handle>,
    models: Arc<swarm_worker::model::ModelRegistry>,
    /// Set when the coordinator stopped because it could not go on.
    pub fatal: swarm_coordinator::manager::Fatal,
    /// The model gateway, when the coordinator has limits.
    pub gateway: Option<swarm_coordinator::gateway::GatewayHandle>,
    /// The in-process workers' token (with authentication on).
    worker_token: Option<String>,
    /// Where the in-process workers connect, and how.
    worker_url: String,
    worker_tls: swarm_worker::tls::ClientTls,
    tls: bool,
}

impl Embedded {
    /// Starts the coordinator (on `coordinator_rt`, or the current runtime) with `store`, then
    /// the workers on the current runtime.
    pub async fn start_on(
        opts: EmbeddedOptions,
        store: Arc<dyn StateStore>,
        coordinator_rt: Option<tokio::runtime::Handle>,
    ) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let rt = coordinator_rt.clone().unwrap_or_else(tokio::runtime::Handle::current);
        let listen = opts.listen;
        let http_listen = opts.http_listen;
        let models = opts.models.clone();
        let mut config = opts.coordinator.clone();
        // With authentication on, the in-process workers get a principal of their own.
        let worker_token = if config.auth.enabled() {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no OS randomness for a worker token: {e}"))?;
            Some(secret.iter().map(|b| format!("{b:02x}")).collect::<String>())
        } else {
            None
        };
        if let Some(t) = &worker_token {
            config.auth = config.auth.clone().with_worker("embedded-workers", t);
        }
        let token = shutdown.clone();
        let tls = opts.tls.clone();
        let private_listener = tls.is_some() && opts.worker_tls.is_none();
        let (addr, private_addr, http_addr, role, coordinator, fatal, gateway) = rt
            .spawn(async move {
                let listener = TcpListener::bind(listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (--listen): {e}"))?;
                let addr = listener.local_addr()?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                if config.advertise.is_empty() {
                    config.advertise = format!("{scheme}://{addr}");
                }
                let coordinator = Coordinator::start(config, store, token.clone());
                let http_addr = match http_listen {
                    Some(addr) => {
                        let http = TcpListener::bind(addr)
                            .await
                            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-listen): {e}"))?;
                        let bound = http.local_addr()?;
                        let http_tls = tls.as_ref().map(|t| t.http());
                        coordinator.serve_http_on(coordinator.incoming().listen(http, http_tls));
                        Some(bound)
                    }
                    None => None,
                };
                let mut incoming = coordinator.incoming().listen(listener, tls.clone());
                let mut private_addr = None;
                if private_listener {
                    let private = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
                    private_addr = Some(private.local_addr()?);
                    incoming = incoming.listen(private, None);
                }
                let role = coordinator.role();
                let fatal = coordinator.fatal();
                let gateway = coordinator.gateway();
                let handle = tokio::spawn(async move {
                    if let Err(e) = coordinator.serve_on(incoming, Duration::from_secs(5)).await {
                        tracing::error!(error = %e, "coordinator server failed");
                    }
                });
                anyhow::Ok((addr, private_addr, http_addr, role, handle, fatal, gateway))
            })
            .await??;
        let is_tls = opts.tls.is_some();
        let worker_url = match private_addr {
            Some(a) => format!("http://{a}"),
            None if is_tls => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let mut cluster = Self {
            addr,
            http_addr,
            role,
            shutdown,
            coordinator,
            workers: Vec::new(),
            coordinator_rt,
            models,
            fatal,
            gateway,
            worker_token,
            worker_url,
            worker_tls: opts.worker_tls.clone().unwrap_or_default(),
            tls: is_tls,
        };
        if !opts.standby {
            cluster.wait_leader(Duration::from_secs(10)).await?;
        }
        let tools =
            opts.tools.clone().unwrap_or_else(|| Arc::new(ToolRegistry::builtin_with(Arc::new(opts.egress.clone()))));
        for i in 0..opts.workers {
            let placement =
                (!opts.worker_placement.is_empty()).then(|| &opts.worker_placement[i % opts.worker_placement.len()]);
            let mut config = cluster.worker_config(&format!("embedded-{i}"), opts.slots);
            if let Some((labels, resources)) = placement {
                config.labels.extend(labels.iter().cloned());
                config.resources.extend(resources.iter().cloned());
            }
            cluster.add_worker_with(config, tools.clone());
        }
        Ok(cluster)
    }

    /// Starts with a fresh memory store on the current runtime.
    pub async fn start(opts: EmbeddedOptions) -> anyhow::Result<Self> {
        Self::start_on(opts, Arc::new(MemoryStore::new()), None).await
    }

    /// Resolves when the coordinator shuts down (asked to, or because it could not go on).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }

    /// The coordinator's URL (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Waits until the coordinator leads.
    pub async fn wait_leader(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let mut role = self.role.clone();
        tokio::time::timeout(deadline, role.wait_for(|r| matches!(r, Role::Leader(_))))
            .await
            .map_err(|_| anyhow::anyhow!("the coordinator did not become leader within {deadline:?}"))??;
        Ok(())
    }

    /// The run manager's counters (while the coordinator leads).
    pub async fn stats(&self) -> anyhow::Result<ManagerStats> {
        let manager = match &*self.role.borrow() {
            Role::Leader(ctx) => ctx.manager.clone(),
            Role::Standby { .. } => anyhow::bail!("the coordinator is not the leader"),
        };
        Ok(manager.call(|reply| Command::Stats { reply }).await?)
    }

    /// Adds an in-process worker; returns its index (for [`Embedded::stop_worker`]).
    pub fn add_worker(&mut self, id: &str, slots: u32, tools: Arc<ToolRegistry>) -> usize {
        let config = self.worker_config(id, slots);
        self.add_worker_with(config, tools)
    }

    /// The configuration of an in-process worker.
    fn worker_config(&self, id: &str, slots: u32) -> WorkerConfig {
        let mut config = WorkerConfig::new(self.worker_url.clone());
        config.tls = self.worker_tls.clone();
        config.worker_id = id.into();
        config.slots = slots;
        config.models = self.models.clone();
        config.token = self.worker_token.clone();
        // What operators see in the workers table (`swarm worker` sets none unless given).
        config.labels.insert("process".into(), "embedded".into());
        config
    }

    /// Stops one worker abruptly, as if it died: its connection closes and the coordinator
    /// re-queues its attempts. (`Embedded::stop` drains the workers instead.)
    pub async fn stop_worker(&mut self, index: usize) {
        let (token, abort, handle) = &mut self.workers[index];
        abort.cancel();
        token.cancel();
        if let Some(handle) = handle.take() {
            let _ = handle.await;
        }
    }

    /// Waits until `n` workers are connected (or the deadline passes).
    pub async fn wait_for_workers(&self, n: u32, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let stats = self.stats().await?;
            if stats.workers >= n {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "only {} of {n} workers connected", stats.workers);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops everything and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (_, _, handle) in self.workers {
            if let Some(handle) = handle {
                let _ = handle.await;
            }
        }
        let _ = self.coordinator.await;
        drop(self.coordinator_rt);
    }

    /// Adds a worker with a custom config (its source must point at this cluster).
    pub fn add_worker_with(&mut self, config: WorkerConfig, tools: Arc<ToolRegistry>) -> usize {
        let token = self.shutdown.child_token();
        let abort = CancellationToken::new();
        let (t, a) = (token.clone(), abort.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = swarm_worker::run_with_abort(config, tools, t, a).await {
                tracing::error!(error = %e, "worker failed");
            }
        });
        self.workers.push((token, abort, Some(handle)));
        self.workers.len() - 1
    }
}
