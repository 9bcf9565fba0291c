use std::time::Duration;

use futures_util::stream::BoxStream;
use swarm_core::Retryable;

/// A store revision: grows with every committed change.
pub type Revision = i64;

/// A lease id; keys put under a lease are deleted when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A stored key and its value, with etcd's revision bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the change that created the key.
    pub create_revision: Revision,
    /// Revision of the last change of the key.
    pub mod_revision: Revision,
    /// Changes since creation (1 when created).
    pub version: i64,
    /// The lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// A condition a transaction checks before it applies its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(Vec<u8>),
    /// The key exists.
    Exists(Vec<u8>),
    /// The key's last change is exactly this revision (0: absent).
    ModRevision(Vec<u8>, Revision),
    /// The key was created at exactly this revision (0: absent).
    CreateRevision(Vec<u8>, Revision),
    /// The key holds exactly this value.
    Value(Vec<u8>, Vec<u8>),
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets a key, optionally bound to a lease.
    Put { key: Vec<u8>, value: Vec<u8>, lease: Option<LeaseId> },
    /// Removes a key.
    Delete { key: Vec<u8> },
    /// Removes every key under a prefix.
    DeletePrefix { prefix: Vec<u8> },
}

impl Op {
    /// A put without lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put { key: key.into(), value: value.into(), lease: None }
    }
    /// The key (or prefix) it writes, as text, for messages.
    pub fn key_text(&self) -> String {
        match self {
            Self::Put { key, .. } | Self::Delete { key } | Self::DeletePrefix { prefix: key } => {
                String::from_utf8_lossy(key).into_owned()
            }
        }
    }

    /// Bytes this operation adds to a request (for request-size limits).
    pub fn size(&self) -> usize {
        match self {
            Self::Put { key, value, .. } => key.len() + value.len() + 16,
            Self::Delete { key } | Self::DeletePrefix { prefix: key } => key.len() + 8,
        }
    }
}

/// An atomic transaction: if every compare holds, every op is applied, all at one revision;
/// otherwise nothing is. It must fit the store's [`StateStore::max_txn_ops`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a compare (builder style).
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    /// Adds an op (builder style).
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

impl Txn {
    /// The first key among `ops` that an earlier op of them also writes (or deletes under a
    /// prefix), if any: etcd refuses such a transaction.
    pub fn first_overlap(ops: &[Op]) -> Option<&[u8]> {
        let mut keys: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let mut prefixes: Vec<&[u8]> = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, .. } | Op::Delete { key } => {
                    if !keys.insert(key) || prefixes.iter().any(|p| key.starts_with(p)) {
                        return Some(key);
                    }
                }
                Op::DeletePrefix { prefix } => {
                    if keys.iter().any(|k| k.starts_with(prefix))
                        || prefixes.iter().any(|p| p.starts_with(prefix) || prefix.starts_with(p))
                    {
                        return Some(prefix);
                    }
                    prefixes.push(prefix);
                }
            }
        }
        None
    }
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// False when a compare failed and nothing was written.
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

/// A page of keys under a prefix, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePage {
    pub kvs: Vec<KeyValue>,
    /// True when more keys follow the last one returned.
    pub more: bool,
    /// The revision the page was read at.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (or its lease expired) at `revision`.
    Delete { key: Vec<u8>, revision: Revision },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(kv) => kv.mod_revision,
            Self::Delete { revision, .. } => *revision,
        }
    }
}

/// A prefix watch: batches of changes in revision order. It ends with
/// [`StoreError::Compacted`] when the start revision is no longer available: re-list, then watch
/// again from the listing's revision + 1.
pub type WatchStream = BoxStream<'static, Result<Vec<WatchEvent>, StoreError>>;

/// Store failures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The requested revision was compacted away.
    #[error("revision {requested} is compacted (oldest available: {compact_revision})")]
    Compacted { requested: Revision, compact_revision: Revision },
    /// The transaction is larger than the store accepts.
    #[error("transaction too large: {0}")]
    TooLarge(String),
    /// The store is full (etcd's NOSPACE alarm: its quota is reached until an operator compacts,
    /// defragments or raises it). Writes are kept and retried, never dropped.
    #[error("the store is out of space: {0}")]
    NoSpace(String),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    /// A fenced write was refused: the writer is no longer the leader it was.
    #[error("fenced out: leadership {0} is over")]
    Fenced(Revision),
    /// A stored value could not be decoded.
    #[error("corrupt value at {key}: {message}")]
    Corrupt { key: String, message: String },
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Other(String),
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::NoSpace(_))
    }
}

/// The state store: small, precondition-first, etcd-shaped.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// One key.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError>;
    /// Keys under `prefix` after `start_after` (exclusive), at most `limit` (0: no limit).
    async fn range(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<RangePage, StoreError>;
    /// Applies a transaction atomically.
    async fn commit(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    /// Changes under `prefix` from revision `from` (inclusive) on.
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream, StoreError>;
    /// A new lease that expires `ttl` after its last refresh.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Refreshes a lease.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Forgets the history before `revision`: watches from older revisions answer
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
    /// The most operations one transaction may hold (etcd's default is 128).
    fn max_txn_ops(&self) -> usize;
    /// The largest request in bytes (etcd's default is 1.5 MiB).
    fn max_request_bytes(&self) -> usize;
}
