//! The etcd backend of [`StateStore`], over etcd-client (gRPC).
//!
//! Mapping: a [`Txn`] is one etcd transaction (compares → `Compare`, ops → `TxnOp`), so the
//! atomicity and revision semantics are etcd's own. `Absent`/`Exists` compare the key's version
//! with 0. Errors: connection failures and `UNAVAILABLE`/`DEADLINE_EXCEEDED` become
//! [`StoreError::Unavailable`] (retryable); "too many operations" and oversize requests
//! [`StoreError::TooLarge`]; compacted revisions [`StoreError::Compacted`].

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn as EtcdTxn,
    TxnOp, WatchOptions,
};
use futures_util::StreamExt;

use crate::types::*;

/// The largest range response read: a page of 1,000 records with inline values of up to 64 KiB
/// each fits twice (the client's default, 4 MiB, made reading ordinary runs fail).
pub const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// etcd's default `--max-txn-ops`.
pub const ETCD_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const ETCD_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// How to reach a secured etcd: TLS files (`--etcd-ca`, `--etcd-cert`, `--etcd-key`) and
/// etcd's own user (`--etcd-user`, password from `SWARM_ETCD_PASSWORD`). The password is never
/// printed by `Debug`.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A [`StateStore`] on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    max_txn_ops: usize,
}

impl EtcdStore {
    /// Connects to the given endpoints (`http://127.0.0.1:2379`, …). Calls time out after
    /// `timeout`; connections are kept alive with HTTP/2 pings.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, timeout, &EtcdSecurity::default()).await
    }

    /// [`EtcdStore::connect`] over TLS (`https://` endpoints) and/or with etcd's own
    /// authentication, as `security` says. The auth token is refreshed when etcd expires it.
    pub async fn connect_with(
        endpoints: &[String],
        timeout: Duration,
        security: &EtcdSecurity,
    ) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if endpoints.iter().any(|e| e.starts_with("https://")) || security.ca.is_some() || security.cert.is_some() {
            let read = |p: &std::path::Path, flag: &str| {
                std::fs::read(p).map_err(|e| StoreError::Other(format!("{flag} {}: {e}", p.display())))
            };
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &security.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "--etcd-ca")?));
            }
            match (&security.cert, &security.key) {
                (Some(c), Some(k)) => {
                    tls =
                        tls.identity(etcd_client::Identity::from_pem(read(c, "--etcd-cert")?, read(k, "--etcd-key")?));
                }
                (None, None) => {}
                _ => return Err(StoreError::Other("--etcd-cert and --etcd-key go together".into())),
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &security.user {
            options = options
                .with_user(user.clone(), security.password.clone().unwrap_or_default())
                .with_auto_token_refresh(true);
        }
        let client = Client::connect(endpoints, Some(options)).await.map_err(map_err)?;
        Ok(Self { client, max_txn_ops: ETCD_MAX_TXN_OPS })
    }

    /// The raw client, for what the trait does not cover (status, maintenance).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The first key after every key with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// Maps an etcd-client error to a [`StoreError`].
pub fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message().to_owned();
            match s.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Aborted => StoreError::Unavailable(msg),
                _ if msg.contains("database space exceeded") || msg.contains("NOSPACE") => StoreError::NoSpace(msg),
                _ if msg.contains("too many operations") || msg.contains("request is too large") => {
                    StoreError::TooLarge(msg)
                }
                _ if msg.contains("lease not found") => StoreError::LeaseNotFound(0),
                _ if msg.contains("compacted") => StoreError::Compacted { requested: 0, compact_revision: 0 },
                tonic::Code::ResourceExhausted => StoreError::TooLarge(msg),
                _ => StoreError::Other(format!("{:?}: {msg}", s.code())),
            }
        }
        E::TransportError(t) => StoreError::Unavailable(t.to_string()),
        E::IoError(io) => StoreError::Unavailable(io.to_string()),
        E::LeaseKeepAliveError(m) | E::WatchError(m) => StoreError::Unavailable(m),
        other => StoreError::Other(other.to_string()),
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn compare_of(c: Compare) -> EtcdCompare {
    match c {
        Compare::Absent(k) => EtcdCompare::version(k, CompareOp::Equal, 0),
        Compare::Exists(k) => EtcdCompare::version(k, CompareOp::Greater, 0),
        Compare::ModRevision(k, r) => EtcdCompare::mod_revision(k, CompareOp::Equal, r),
        Compare::CreateRevision(k, r) => EtcdCompare::create_revision(k, CompareOp::Equal, r),
        Compare::Value(k, v) => EtcdCompare::value(k, CompareOp::Equal, v),
    }
}

fn op_of(op: Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l.0))),
        Op::Delete { key } => TxnOp::delete(key, None),
        Op::DeletePrefix { prefix } => TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
    }
}

#[async_trait::async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let resp = self.client.kv_client().get(key, None).await.map_err(map_err)?;
        Ok(resp.kvs().first().map(kv_of))
    }

    async fn range(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<RangePage, StoreError> {
        let start = match start_after {
            Some(k) if k >= prefix => {
                let mut s = k.to_vec();
                s.push(0);
                s
            }
            _ => prefix.to_vec(),
        };
        let options = GetOptions::new().with_range(prefix_end(prefix)).with_limit(limit as i64);
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        let resp = kv.get(start, Some(options)).await.map_err(map_err)?;
        Ok(RangePage {
            kvs: resp.kvs().iter().map(kv_of).collect(),
            more: resp.more(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        if txn.ops.len() > self.max_txn_ops {
            return Err(StoreError::TooLarge(format!("{} operations (limit {})", txn.ops.len(), self.max_txn_ops)));
        }
        let lease_ids: Vec<i64> = txn
            .ops
            .iter()
            .filter_map(|op| if let Op::Put { lease: Some(l), .. } = op { Some(l.0) } else { None })
            .collect();
        let etcd = EtcdTxn::new()
            .when(txn.compares.into_iter().map(compare_of).collect::<Vec<_>>())
            .and_then(txn.ops.into_iter().map(op_of).collect::<Vec<_>>());
        let resp = self.client.kv_client().txn(etcd).await.map_err(|e| match map_err(e) {
            StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease_ids.first().copied().unwrap_or(0)),
            other => other,
        })?;
        Ok(TxnOutcome { succeeded: resp.succeeded(), revision: resp.header().map_or(0, |h| h.revision()) })
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream, StoreError> {
        let mut options = WatchOptions::new().with_prefix();
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let stream = self.client.watch_client().watch(prefix, Some(options)).await.map_err(map_err)?;
        let events = futures_util::stream::unfold(Some(stream), move |state| async move {
            let mut stream = state?;
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0
                            || (resp.canceled() && resp.cancel_reason().contains("compacted"))
                        {
                            let err =
                                StoreError::Compacted { requested: from, compact_revision: resp.compact_revision() };
                            return Some((Err(err), None));
                        }
                        if resp.canceled() {
                            return Some((
                                Err(StoreError::Unavailable(format!("watch cancelled: {}", resp.cancel_reason()))),
                                None,
                            ));
                        }
                        let batch: Vec<WatchEvent> = resp
                            .events()
                            .iter()
                            .filter_map(|e| {
                                let kv = e.kv()?;
                                Some(match e.event_type() {
                                    etcd_client::EventType::Put => WatchEvent::Put(kv_of(kv)),
                                    etcd_client::EventType::Delete => {
                                        WatchEvent::Delete { key: kv.key().to_vec(), revision: kv.mod_revision() }
                                    }
                                })
                            })
                            .collect();
                        if !batch.is_empty() {
                            return Some((Ok(batch), Some(stream)));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((Err(map_err(e)), None)),
                }
            }
        });
        Ok(events.boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self.client.lease_client().grant(secs, None).await.map_err(map_err)?;
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let (mut keeper, mut answers) = self.client.lease_client().keep_alive(lease.0).await.map_err(map_err)?;
        keeper.keep_alive().await.map_err(map_err)?;
        match answers.message().await.map_err(map_err)? {
            Some(resp) if resp.ttl() > 0 => Ok(()),
            Some(_) => Err(StoreError::LeaseNotFound(lease.0)),
            None => Err(StoreError::Unavailable("lease keep-alive stream closed".into())),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.client.lease_client().revoke(lease.0).await.map_err(|e| match map_err(e) {
            StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease.0),
            other => other,
        })?;
        Ok(())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.client.kv_client().compact(revision, None).await.map_err(map_err)?;
        Ok(())
    }

    fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    fn max_request_bytes(&self) -> usize {
        ETCD_MAX_REQUEST_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }
}
