//! The in-memory store: the embedded default and a unit-test aid.
//!
//! It keeps etcd's semantics where Swarm relies on them: one revision per transaction, compares
//! on mod/create revision, prefix watches that replay from a revision (with a bounded history,
//! older revisions answer [`StoreError::Compacted`]), leases whose expiry deletes their keys.
//! Lease expiry is checked lazily on every call, against tokio's clock (so paused-time tests
//! work); a watcher therefore sees an expiry at the next store call, not at the deadline.
//! Nothing survives the process.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::types::*;

/// Changes kept for watches that start in the past.
const HISTORY: usize = 65_536;
/// Batches a watcher may have queued before it is dropped (its stream ends; re-watch).
const WATCH_BUFFER: usize = 4_096;

/// See the module docs.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_txn_ops: usize,
    /// A space quota like etcd's (`--quota-backend-bytes`): beyond it, writes fail `NoSpace`.
    quota_bytes: std::sync::atomic::AtomicUsize,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<Vec<u8>>,
}

struct Watcher {
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<Vec<WatchEvent>, StoreError>>,
}

#[derive(Default)]
struct Inner {
    kv: BTreeMap<Vec<u8>, KeyValue>,
    revision: Revision,
    history: VecDeque<WatchEvent>,
    /// Oldest revision no longer in `history`.
    compacted: Revision,
    watchers: Vec<Watcher>,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with etcd's default transaction limit (128 operations).
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner { next_lease: 1, ..Inner::default() }),
            max_txn_ops: 128,
            quota_bytes: usize::MAX.into(),
        }
    }

    /// A store that holds at most `bytes` of keys and values (tests of a full store).
    pub fn with_quota(self, bytes: usize) -> Self {
        self.set_quota(Some(bytes));
        self
    }

    /// Sets or lifts the quota (as an operator who compacts or raises it).
    pub fn set_quota(&self, bytes: Option<usize>) {
        self.quota_bytes.store(bytes.unwrap_or(usize::MAX), std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every mutation completes
        // before events go out), so a poisoned lock is safe to reuse.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire_leases(Instant::now());
        inner
    }
}

impl Inner {
    fn expire_leases(&mut self, now: Instant) {
        let expired: Vec<i64> = self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: i64) {
        if let Some(lease) = self.leases.remove(&id) {
            if lease.keys.is_empty() {
                return;
            }
            self.revision += 1;
            let rev = self.revision;
            let mut events = Vec::new();
            for key in lease.keys {
                if self.kv.remove(&key).is_some() {
                    events.push(WatchEvent::Delete { key, revision: rev });
                }
            }
            self.publish(events);
        }
    }

    fn check(&self, c: &Compare) -> bool {
        match c {
            Compare::Absent(k) => !self.kv.contains_key(k),
            Compare::Exists(k) => self.kv.contains_key(k),
            Compare::ModRevision(k, r) => self.kv.get(k).map_or(0, |kv| kv.mod_revision) == *r,
            Compare::CreateRevision(k, r) => self.kv.get(k).map_or(0, |kv| kv.create_revision) == *r,
            Compare::Value(k, v) => self.kv.get(k).is_some_and(|kv| &kv.value == v),
        }
    }

    fn publish(&mut self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            let batch: Vec<WatchEvent> =
                events.iter().filter(|e| event_key(e).starts_with(&w.prefix)).cloned().collect();
            batch.is_empty() || w.tx.try_send(Ok(batch)).is_ok()
        });
        for e in events {
            if self.history.len() == HISTORY
                && let Some(old) = self.history.pop_front()
            {
                self.compacted = old.revision();
            }
            self.history.push_back(e);
        }
    }
}

fn event_key(e: &WatchEvent) -> &[u8] {
    match e {
        WatchEvent::Put(kv) => &kv.key,
        WatchEvent::Delete { key, .. } => key,
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().kv.get(key).cloned())
    }

    async fn range(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<RangePage, StoreError> {
        use std::ops::Bound;
        let inner = self.lock();
        let lower = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for (k, kv) in inner.kv.range((lower, Bound::Unbounded)) {
            if !k.starts_with(prefix) {
                break;
            }
            if limit != 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(kv.clone());
        }
        Ok(RangePage { kvs, more, revision: inner.revision })
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        if txn.ops.len() > self.max_txn_ops {
            return Err(StoreError::TooLarge(format!("{} operations (limit {})", txn.ops.len(), self.max_txn_ops)));
        }
        // etcd's request limit (`--max-request-bytes`, 1.5 MiB), so in-process tests see the
        // failures a real cluster gives.
        let size: usize = txn.ops.iter().map(Op::size).sum();
        if size > self.max_request_bytes() {
            return Err(StoreError::TooLarge(format!("etcdserver: request is too large ({size} bytes)")));
        }
        // etcd refuses a transaction that writes a key twice (or a key under a range it deletes).
        if let Some(key) = Txn::first_overlap(&txn.ops) {
            return Err(StoreError::Other(format!(
                "InvalidArgument: etcdserver: duplicate key given in txn request ({})",
                String::from_utf8_lossy(key)
            )));
        }
        let mut inner = self.lock();
        let quota = self.quota_bytes.load(std::sync::atomic::Ordering::Relaxed);
        if quota != usize::MAX {
            let used: usize = inner.kv.values().map(|kv| kv.key.len() + kv.value.len()).sum();
            let added: usize = txn.ops.iter().map(|op| if let Op::Put { .. } = op { op.size() } else { 0 }).sum();
            if added > 0 && used + added > quota {
                return Err(StoreError::NoSpace("etcdserver: mvcc: database space exceeded".into()));
            }
        }
        if !txn.compares.iter().all(|c| inner.check(c)) {
            return Ok(TxnOutcome { succeeded: false, revision: inner.revision });
        }
        for op in &txn.ops {
            if let Op::Put { lease: Some(l), .. } = op
                && !inner.leases.contains_key(&l.0)
            {
                return Err(StoreError::LeaseNotFound(l.0));
            }
        }
        if txn.ops.is_empty() {
            return Ok(TxnOutcome { succeeded: true, revision: inner.revision });
        }
        inner.revision += 1;
        let rev = inner.revision;
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    let old = inner.kv.get(&key);
                    let kv = KeyValue {
                        create_revision: old.map_or(rev, |o| o.create_revision),
                        version: old.map_or(1, |o| o.version + 1),
                        mod_revision: rev,
                        key: key.clone(),
                        value,
                        lease,
                    };
                    if let Some(old_lease) = old.and_then(|o| o.lease)
                        && Some(old_lease) != lease
                        && let Some(l) = inner.leases.get_mut(&old_lease.0)
                    {
                        l.keys.remove(&key);
                    }
                    if let Some(l) = lease.and_then(|l| inner.leases.get_mut(&l.0)) {
                        l.keys.insert(key.clone());
                    }
                    inner.kv.insert(key, kv.clone());
                    events.push(WatchEvent::Put(kv));
                }
                Op::Delete { key } => {
                    if inner.kv.remove(&key).is_some() {
                        events.push(WatchEvent::Delete { key, revision: rev });
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<Vec<u8>> = inner
                        .kv
                        .range(prefix.clone()..)
                        .map(|(k, _)| k)
                        .take_while(|k| k.starts_with(&prefix))
                        .cloned()
                        .collect();
                    for key in keys {
                        inner.kv.remove(&key);
                        events.push(WatchEvent::Delete { key, revision: rev });
                    }
                }
            }
        }
        inner.publish(events);
        Ok(TxnOutcome { succeeded: true, revision: rev })
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream, StoreError> {
        let mut inner = self.lock();
        if from != 0 && from <= inner.compacted {
            return Err(StoreError::Compacted { requested: from, compact_revision: inner.compacted + 1 });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        if from != 0 {
            let past: Vec<WatchEvent> = inner
                .history
                .iter()
                .filter(|e| e.revision() >= from && event_key(e).starts_with(prefix))
                .cloned()
                .collect();
            if !past.is_empty() {
                let _ = tx.try_send(Ok(past));
            }
        }
        inner.watchers.push(Watcher { prefix: prefix.to_vec(), tx });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut inner = self.lock();
        let id = inner.next_lease;
        inner.next_lease += 1;
        inner.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl, keys: HashSet::new() });
        Ok(LeaseId(id))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let l = inner.leases.get_mut(&lease.0).ok_or(StoreError::LeaseNotFound(lease.0))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.leases.contains_key(&lease.0) {
            return Err(StoreError::LeaseNotFound(lease.0));
        }
        inner.drop_lease(lease.0);
        Ok(())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut inner = self.lock();
        while inner.history.front().is_some_and(|e| e.revision() < revision) {
            inner.history.pop_front();
        }
        inner.compacted = inner.compacted.max(revision - 1);
        Ok(())
    }

    fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    fn max_request_bytes(&self) -> usize {
        1536 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store_conformance_suite!(std::sync::Arc::new(crate::MemoryStore::new()));

    #[tokio::test(start_paused = true)]
    async fn expired_lease_deletes_its_keys() {
        let s = MemoryStore::new();
        let lease = s.grant_lease(Duration::from_secs(5)).await.expect("grant");
        s.commit(Txn::new().then(Op::Put { key: b"w".to_vec(), value: b"1".to_vec(), lease: Some(lease) }))
            .await
            .expect("commit");
        tokio::time::advance(Duration::from_secs(4)).await;
        s.keep_alive(lease).await.expect("still alive");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(s.get(b"w").await.expect("get").is_some(), "kept alive");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(s.get(b"w").await.expect("get"), None);
        assert_eq!(s.keep_alive(lease).await, Err(StoreError::LeaseNotFound(lease.0)));
    }
}
