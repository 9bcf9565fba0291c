//! An embedded cluster in one process: a coordinator serving gRPC on a loopback (or given)
//! address, and in-process workers that connect to it over real gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use swarm_coordinator::{Coordinator, CoordinatorConfig, ManagerHandle};
use swarm_store::{MemoryStore, StateStore};
use swarm_worker::{ToolRegistry, WorkerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 4,
            slots: 64,
            coordinator: CoordinatorConfig::default(),
        }
    }
}

/// A running embedded cluster.
pub struct Embedded {
    /// The coordinator's address.
    pub addr: SocketAddr,
    manager: ManagerHandle,
    shutdown: CancellationToken,
    coordinator: JoinHandle<()>,
    workers: Vec<(CancellationToken, Option<JoinHandle<()>>)>,
    /// Spawns coordinator tasks on this runtime (the current one if `None`).
    coordinator_rt: Option<tokio::runtime::Handle>,
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
        let config = opts.coordinator.clone();
        let token = shutdown.clone();
        let (addr, manager, coordinator) = rt
            .spawn(async move {
                let listener = TcpListener::bind(listen).await?;
                let addr = listener.local_addr()?;
                let coordinator = Coordinator::start(config, store, token);
                let manager = coordinator.manager().clone();
                let handle = tokio::spawn(async move {
                    if let Err(e) = coordinator.serve(listener, Duration::from_secs(5)).await {
                        tracing::error!(error = %e, "coordinator server failed");
                    }
                });
                anyhow::Ok((addr, manager, handle))
            })
            .await??;
        let mut cluster = Self { addr, manager, shutdown, coordinator, workers: Vec::new(), coordinator_rt };
        for i in 0..opts.workers {
            cluster.add_worker(&format!("embedded-{i}"), opts.slots, Arc::new(ToolRegistry::builtin()));
        }
        Ok(cluster)
    }

    /// Starts with a fresh memory store on the current runtime.
    pub async fn start(opts: EmbeddedOptions) -> anyhow::Result<Self> {
        Self::start_on(opts, Arc::new(MemoryStore::new()), None).await
    }

    /// The coordinator's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The run manager (for stats).
    pub fn manager(&self) -> &ManagerHandle {
        &self.manager
    }

    /// Adds an in-process worker; returns its index (for [`Embedded::stop_worker`]).
    pub fn add_worker(&mut self, id: &str, slots: u32, tools: Arc<ToolRegistry>) -> usize {
        let token = self.shutdown.child_token();
        let mut config = WorkerConfig::new(self.url());
        config.worker_id = id.into();
        config.slots = slots;
        let t = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = swarm_worker::run(config, tools, t).await {
                tracing::error!(error = %e, "worker failed");
            }
        });
        self.workers.push((token, Some(handle)));
        self.workers.len() - 1
    }

    /// Stops one worker (its connection closes; the coordinator re-queues its attempts).
    pub async fn stop_worker(&mut self, index: usize) {
        let (token, handle) = &mut self.workers[index];
        token.cancel();
        if let Some(handle) = handle.take() {
            let _ = handle.await;
        }
    }

    /// Waits until `n` workers are connected (or the deadline passes).
    pub async fn wait_for_workers(&self, n: u32, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let stats = self.manager.call(|reply| swarm_coordinator::manager::Command::Stats { reply }).await?;
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
        for (_, handle) in self.workers {
            if let Some(handle) = handle {
                let _ = handle.await;
            }
        }
        let _ = self.coordinator.await;
        drop(self.coordinator_rt);
    }
}
