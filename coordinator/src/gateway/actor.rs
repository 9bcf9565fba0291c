//! The gateway's task: owns the [`Gateway`] state, hears permit requests and releases from the
//! worker streams, and sends grants back down the stream that asked.

use std::collections::HashMap;
use std::sync::Arc;

use swarm_core::ConnId;
use swarm_proto::convert::duration_to_us;
use swarm_proto::pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use super::{Ask, EndpointStats, Gateway, Limits, Release};

/// A worker stream's way down.
pub type Downstream = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

enum Cmd {
    Connected { conn: ConnId, down: Downstream },
    Permits { conn: ConnId, permits: pb::ModelPermits },
    Gone { conn: ConnId },
    Stats(oneshot::Sender<HashMap<String, EndpointStats>>),
}

/// The way to the gateway task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    tx: mpsc::Sender<Cmd>,
    endpoints: Arc<Vec<String>>,
}

impl GatewayHandle {
    /// Starts the task governing these endpoints; it ends when every handle is dropped.
    pub fn spawn(limits: HashMap<String, Limits>) -> Self {
        let gateway = Gateway::new(limits, Instant::now());
        let endpoints = Arc::new(gateway.endpoints());
        // Each budget's series exist from the start (scraped as 0, not missing).
        let m = swarm_telemetry::metrics();
        for e in gateway.budgets().iter() {
            let endpoint = [("endpoint", e.as_str())];
            m.gateway_queue_depth.touch(&endpoint);
            m.gateway_wait.touch(&endpoint);
            m.gateway_throttled.touch(&endpoint);
            for kind in ["input", "output"] {
                m.gateway_tokens.touch(&[("endpoint", e.as_str()), ("gen_ai.token.type", kind)]);
            }
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(gateway, rx));
        Self { tx, endpoints }
    }

    /// The endpoints whose calls need a permit.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A worker stream opened; grants for `conn` go down `down`.
    pub async fn connected(&self, conn: ConnId, down: Downstream) {
        let _ = self.tx.send(Cmd::Connected { conn, down }).await;
    }

    /// Requests and releases from a worker.
    pub async fn permits(&self, conn: ConnId, permits: pb::ModelPermits) {
        let _ = self.tx.send(Cmd::Permits { conn, permits }).await;
    }

    /// A worker stream closed: its waits and permits are dropped.
    pub async fn gone(&self, conn: ConnId) {
        let _ = self.tx.send(Cmd::Gone { conn }).await;
    }

    /// Counters per endpoint (for the bench and tests).
    pub async fn stats(&self) -> HashMap<String, EndpointStats> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stats(tx)).await.is_err() {
            return HashMap::new();
        }
        rx.await.unwrap_or_default()
    }
}

async fn run(mut gateway: Gateway, mut rx: mpsc::Receiver<Cmd>) {
    let metrics = swarm_telemetry::metrics::metrics();
    let mut downs: HashMap<ConnId, Downstream> = HashMap::new();
    loop {
        let wake = gateway.next_wake();
        let cmd = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(c) => Some(c),
                None => return,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => None,
        };
        let now = Instant::now();
        // Ungoverned endpoints are granted at once (a worker configured before this leader).
        let mut at_once: Vec<(ConnId, u64)> = Vec::new();
        let mut apply = |cmd: Cmd, gateway: &mut Gateway, downs: &mut HashMap<ConnId, Downstream>| match cmd {
            Cmd::Connected { conn, down } => {
                downs.insert(conn, down);
            }
            Cmd::Gone { conn } => {
                downs.remove(&conn);
                gateway.forget(conn);
            }
            Cmd::Stats(tx) => {
                let _ = tx.send(gateway.stats());
            }
            Cmd::Permits { conn, permits } => {
                for r in permits.release {
                    let throttled_for = r
                        .throttled_for
                        .as_ref()
                        .map(duration_to_us)
                        .filter(|&us| us > 0)
                        .map(std::time::Duration::from_micros);
                    if r.used {
                        let endpoint = gateway.holder_endpoint((conn, r.id)).unwrap_or_default();
                        metrics
                            .gateway_tokens
                            .add(r.input_tokens, &[("endpoint", &endpoint), ("gen_ai.token.type", "input")]);
                        metrics
                            .gateway_tokens
                            .add(r.output_tokens, &[("endpoint", &endpoint), ("gen_ai.token.type", "output")]);
                        if throttled_for.is_some() {
                            metrics.gateway_throttled.add(1, &[("endpoint", &endpoint)]);
                        }
                    }
                    let release = Release {
                        used: r.used,
                        input_tokens: r.input_tokens,
                        output_tokens: r.output_tokens,
                        throttled_for,
                    };
                    gateway.release(now, (conn, r.id), release);
                }
                for a in permits.acquire {
                    let ask = Ask {
                        endpoint: a.endpoint,
                        prompt_chars: a.prompt_chars,
                        max_tokens: a.max_tokens,
                        priority: a.priority,
                        orchestrator: a.orchestrator,
                        critical_path: a.critical_path,
                    };
                    if !gateway.acquire(now, (conn, a.id), ask) {
                        at_once.push((conn, a.id));
                    }
                }
            }
        };
        if let Some(cmd) = cmd {
            apply(cmd, &mut gateway, &mut downs);
            // Whatever else queued meanwhile, before granting.
            while let Ok(cmd) = rx.try_recv() {
                apply(cmd, &mut gateway, &mut downs);
            }
        }
        let mut grants: HashMap<ConnId, Vec<u64>> = HashMap::new();
        for (conn, id) in at_once {
            grants.entry(conn).or_default().push(id);
        }
        for g in gateway.grant(now) {
            metrics.gateway_wait.record(g.waited.as_secs_f64(), &[("endpoint", &g.endpoint)]);
            grants.entry(g.holder.0).or_default().push(g.holder.1);
        }
        for (name, depth) in gateway.queue_depths() {
            metrics.gateway_queue_depth.set(depth as i64, &[("endpoint", name)]);
        }
        for (conn, ids) in grants {
            let Some(down) = downs.get(&conn) else { continue };
            let msg = Ok(pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::Grants(pb::PermitGrants { ids })),
            });
            // A full stream must not stall every other worker's grants.
            if let Err(mpsc::error::TrySendError::Full(msg)) = down.try_send(msg) {
                let down = down.clone();
                tokio::spawn(async move {
                    let _ = down.send(msg).await;
                });
            }
        }
    }
}
