//! Where state lives: etcd (or the memory store) and the payload store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use swarm_store::{MemoryStore, StateStore};

use super::parse_ttl;

/// Where state lives.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// etcd endpoints, comma-separated (default: the in-memory store).
    #[arg(long, env = "SWARM_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix in the store.
    #[arg(long, env = "SWARM_PREFIX", default_value = "/swarm/v1/")]
    pub prefix: String,
    /// Lease TTL of coordinators and workers: how fast a dead one is noticed.
    #[arg(long, env = "SWARM_LEASE_TTL", default_value = "2s", value_parser = parse_ttl)]
    pub lease_ttl: Duration,
    /// The CA (PEM) that issued etcd's server certificate (`https://` endpoints).
    #[arg(long, env = "SWARM_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's `--client-cert-auth`.
    #[arg(long, env = "SWARM_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, env = "SWARM_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd's own authentication: this user, with the password in SWARM_ETCD_PASSWORD.
    #[arg(long, env = "SWARM_ETCD_USER")]
    pub etcd_user: Option<String>,
}

impl StoreArgs {
    pub fn payloads(&self, url: Option<&str>) -> anyhow::Result<swarm_store::payload::PayloadStore> {
        let default = if self.etcd.is_empty() { "memory://" } else { "./swarm-payloads" };
        swarm_store::payload::PayloadStore::from_url(url.unwrap_or(default), swarm_store::payload::DEFAULT_THRESHOLD)
            .map_err(|e| anyhow::anyhow!("--payloads: {e}"))
    }

    pub async fn open(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        if self.etcd.is_empty() {
            return Ok(Arc::new(MemoryStore::new()));
        }
        let password = std::env::var("SWARM_ETCD_PASSWORD").ok();
        anyhow::ensure!(
            self.etcd_user.is_none() || password.is_some(),
            "--etcd-user is given but SWARM_ETCD_PASSWORD is not set"
        );
        let security = swarm_store::EtcdSecurity {
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password,
        };
        let store = swarm_store::EtcdStore::connect_with(&self.etcd, Duration::from_secs(5), &security)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach etcd at {}: {e}", self.etcd.join(",")))?;
        Ok(Arc::new(store))
    }
}
