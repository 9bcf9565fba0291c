//! What the manager is configured with.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use swarm_core::RetryPolicy;

use super::{AdmissionCaps, DEFAULT_NO_WORKER_TIMEOUT, FaultHook};

/// What the manager is configured with.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The default retry policy of runs.
    pub retry: RetryPolicy,
    /// How often workers should send heartbeats.
    pub heartbeat_interval: Duration,
    /// The model endpoints whose calls need a gateway permit (told in each worker's welcome).
    pub gateway_endpoints: Vec<String>,
    /// The leadership term number (0 when unfenced), for logs; the term's fences come in
    /// [`Startup::fences`].
    pub term: u64,
    /// How long resumed runs wait for workers to reconnect and declare held attempts.
    pub recovery_grace: Duration,
    /// This coordinator's name, sent to workers.
    pub coordinator_id: String,
    /// Cluster-wide rate limits by tool.
    pub rate_limits: HashMap<String, crate::ratelimit::RateLimit>,
    /// How long a ready subtask waits for a worker that offers its tool or model when no
    /// connected worker does; then it fails `permanent` saying so (0: wait forever).
    pub no_worker_timeout: Duration,
    /// Admission caps: beyond them `SubmitRun` is refused, nothing stored.
    pub caps: AdmissionCaps,
    /// The test-only fault hook (from `SWARM_FAULT_INJECTION`; unset in production).
    pub fault: Option<FaultHook>,
    /// Tenants' quotas and weights (from the auth file; empty: plain round-robin over runs).
    pub tenants: std::collections::BTreeMap<String, crate::auth::TenantQuota>,
    /// The artifact bytes a run may hand on, for runs of no tenant or of a tenant without
    /// its own `max_artifact_bytes`.
    pub max_artifact_bytes: u64,
    /// Tools the operator declares may run twice (read-only or idempotent; `--repeatable-tool`):
    /// speculated like the built-in ones, whatever workers say.
    pub operator_repeatable: HashSet<String>,
    /// Take workers' word for which non-built-in tools may run twice (read-only, idempotent).
    /// Off when callers authenticate: a worker must not make a tool raceable by saying so.
    pub trust_worker_tool_flags: bool,
    /// Who did what (`--audit-log`): workers joining, and refused.
    pub audit: Arc<crate::audit::AuditLog>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            heartbeat_interval: Duration::from_secs(5),
            gateway_endpoints: Vec::new(),
            trust_worker_tool_flags: true,
            tenants: Default::default(),
            max_artifact_bytes: super::artifacts::DEFAULT_MAX_ARTIFACT_BYTES,
            operator_repeatable: HashSet::new(),
            term: 0,
            recovery_grace: Duration::from_secs(6),
            coordinator_id: "swarm-coordinator".into(),
            rate_limits: HashMap::new(),
            no_worker_timeout: DEFAULT_NO_WORKER_TIMEOUT,
            fault: FaultHook::from_env(),
            caps: AdmissionCaps::default(),
            audit: Arc::default(),
        }
    }
}
