//! Leader election and leases over any [`StateStore`].
//!
//! The algorithm and key layout are etcd's election API (`{name}/{lease id in hex}`, the
//! candidate with the lowest create revision leads), built on the store trait so it works on
//! etcd and on the memory store alike, and `etcdctl elect -l {name}` shows the same leader.
//! The leader key's create revision is the leadership **term**: every write the leader makes is
//! fenced on it ([`crate::repo::LeaderFence`]), so a leader that was paused or cut off past its lease
//! cannot commit anything once its key is gone.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::repo::LeaderFence;
use crate::types::*;

/// An election under a name such as `/swarm/v1/leader`.
#[derive(Clone)]
pub struct Election {
    store: Arc<dyn StateStore>,
    prefix: Vec<u8>,
}

/// Won leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader key.
    pub key: Vec<u8>,
    /// Its create revision: the term.
    pub revision: Revision,
    /// The lease that keeps it.
    pub lease: LeaseId,
}

impl Leadership {
    /// The fence for writes made under this leadership.
    pub fn fence(&self) -> LeaderFence {
        LeaderFence { key: self.key.clone(), revision: self.revision }
    }
}

/// Who leads now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's value (for Swarm: its advertised gRPC address).
    pub value: String,
    /// The term.
    pub revision: Revision,
}

impl Election {
    /// The election called `name` (no trailing slash).
    pub fn new(store: Arc<dyn StateStore>, name: &str) -> Self {
        Self { store, prefix: format!("{}/", name.trim_end_matches('/')).into_bytes() }
    }

    /// Campaigns with `value` under `lease` and returns once elected. Fails if the lease dies.
    pub async fn campaign(&self, lease: LeaseId, value: &str) -> Result<Leadership, StoreError> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(format!("{:x}", lease.0).as_bytes());
        let put = Op::Put { key: key.clone(), value: value.as_bytes().to_vec(), lease: Some(lease) };
        self.store.commit(Txn::new().when(Compare::Absent(key.clone())).then(put.clone())).await?;
        loop {
            let page = self.store.range(&self.prefix, None, 0).await?;
            let Some(mine) = page.kvs.iter().find(|kv| kv.key == key) else {
                return Err(StoreError::LeaseNotFound(lease.0));
            };
            let earlier = page
                .kvs
                .iter()
                .filter(|kv| kv.create_revision < mine.create_revision)
                .max_by_key(|kv| kv.create_revision);
            match earlier {
                None => return Ok(Leadership { key, revision: mine.create_revision, lease }),
                Some(kv) => self.wait_deleted(&kv.key, page.revision + 1).await?,
            }
        }
    }

    async fn wait_deleted(&self, key: &[u8], from: Revision) -> Result<(), StoreError> {
        let mut watch = self.store.watch(key, from).await?;
        while let Some(batch) = watch.next().await {
            if batch?.iter().any(|e| matches!(e, WatchEvent::Delete { key: k, .. } if k == key)) {
                return Ok(());
            }
        }
        Ok(()) // the stream ended: look again
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<(Option<LeaderInfo>, Revision), StoreError> {
        let page = self.store.range(&self.prefix, None, 0).await?;
        let leader = page.kvs.iter().min_by_key(|kv| kv.create_revision).map(|kv| LeaderInfo {
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            revision: kv.create_revision,
        });
        Ok((leader, page.revision))
    }

    /// Waits until the leader differs from `known` and returns the new one.
    pub async fn changed(&self, known: Option<&LeaderInfo>) -> Result<Option<LeaderInfo>, StoreError> {
        loop {
            let (now, revision) = self.leader().await?;
            if now.as_ref() != known {
                return Ok(now);
            }
            let mut watch = self.store.watch(&self.prefix, revision + 1).await?;
            match watch.next().await {
                Some(Err(e)) => return Err(e),
                _ => continue,
            }
        }
    }

    /// Gives up leadership (deletes the key if it is still this term's).
    pub async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when(Compare::CreateRevision(leadership.key.clone(), leadership.revision))
            .then(Op::Delete { key: leadership.key.clone() });
        self.store.commit(txn).await.map(|_| ())
    }
}

/// Keeps `lease` alive (a refresh every `ttl / 3`) until `cancel`; returns an error once the
/// lease is known lost: not found, or no successful refresh for a whole `ttl`.
pub async fn keep_lease_alive(
    store: Arc<dyn StateStore>,
    lease: LeaseId,
    ttl: Duration,
    cancel: CancellationToken,
) -> Result<(), StoreError> {
    keep_lease_alive_reporting(store, lease, ttl, cancel, |_| {}).await
}

/// [`keep_lease_alive`], calling `renewed(sent)` after each successful refresh with the time the
/// refresh was *sent*: the store counts the lease's TTL from when it got the refresh, which is
/// later, so the lease lives at least until `sent + ttl` (what a holder fencing itself needs).
pub async fn keep_lease_alive_reporting(
    store: Arc<dyn StateStore>,
    lease: LeaseId,
    ttl: Duration,
    cancel: CancellationToken,
    renewed: impl Fn(tokio::time::Instant),
) -> Result<(), StoreError> {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let wait = if last_ok.elapsed() < ttl / 3 { ttl / 3 } else { Duration::from_millis(200) };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        let sent = tokio::time::Instant::now();
        let refreshed = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            // A refresh that hangs (a link that went silent) counts as failed after a TTL.
            r = tokio::time::timeout(ttl, store.keep_alive(lease)) => {
                r.unwrap_or_else(|_| Err(StoreError::Unavailable("lease refresh timed out".into())))
            }
        };
        match refreshed {
            Ok(()) => {
                last_ok = tokio::time::Instant::now();
                renewed(sent);
            }
            Err(StoreError::LeaseNotFound(_)) => return Err(StoreError::LeaseNotFound(lease.0)),
            Err(e) => {
                warn!(lease = lease.0, error = %e, "lease refresh failed");
                if last_ok.elapsed() >= ttl {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn the_first_candidate_leads_and_the_next_takes_over_when_it_resigns() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let election = Election::new(store.clone(), "/swarm/v1/leader");
        let l1 = store.grant_lease(Duration::from_secs(10)).await.expect("lease");
        let l2 = store.grant_lease(Duration::from_secs(10)).await.expect("lease");
        let first = election.campaign(l1, "http://a").await.expect("elected");
        let (leader, _) = election.leader().await.expect("leader");
        assert_eq!(leader.as_ref().map(|l| l.value.as_str()), Some("http://a"));
        let e2 = election.clone();
        let second = tokio::spawn(async move { e2.campaign(l2, "http://b").await });
        let changed = {
            let e3 = election.clone();
            let known = leader.clone();
            tokio::spawn(async move { e3.changed(known.as_ref()).await })
        };
        election.resign(&first).await.expect("resign");
        let second = second.await.expect("task").expect("elected");
        assert!(second.revision > first.revision, "terms grow");
        let now = changed.await.expect("task").expect("changed");
        assert_eq!(now.map(|l| l.value), Some("http://b".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_is_reported() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let lease = store.grant_lease(Duration::from_secs(3)).await.expect("lease");
        store.revoke_lease(lease).await.expect("revoke");
        let err = keep_lease_alive(store, lease, Duration::from_secs(3), CancellationToken::new()).await;
        assert_eq!(err, Err(StoreError::LeaseNotFound(lease.0)));
    }
}
