//! Typed access to run state: key layout, JSON codec and batched writes.
//!
//! Key layout under the configurable prefix (default `/swarm/v1/`):
//!
//! ```text
//! {prefix}leader/{lease hex}         coordinator election (etcd's layout); value: its URL
//! {prefix}term                       the leadership term number (see `RunRepo::next_term`)
//! {prefix}workers/{worker}           worker registration, bound to the worker's lease
//! {prefix}runs/{run}                 RunHeader (state, times, summary)
//! {prefix}specs/{run}                the RunSpec, one value (or a payload reference)
//! {prefix}subtasks/{run}/{subtask}   SubtaskRecord, written when the subtask ends
//! {prefix}idempotency/{key}          the run id created for an idempotency key
//! {prefix}turns/{run}/{subtask}/{n}  an agent's transcript, turn by turn
//! {prefix}spawns/{run}/{subtask}/{t} an orchestrator's stage t: the subagents it started
//! {prefix}events/{run}/{seq hex}      a chunk of the run's event log, from event `seq` on
//! ```
//!
//! Headers sit apart from per-subtask records so that listing runs reads headers only.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use swarm_core::engine::{RunState, SubtaskState};
use swarm_core::{FailureKind, RunId, RunSpec, RunSummary, SubtaskId};

use crate::payload::PayloadStore;
use crate::types::*;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/swarm/v1/";

/// A run's header record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub run_id: RunId,
    pub name: String,
    pub state: RunState,
    pub submitted_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The tenant of the principal that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
    /// The leadership term that wrote this version (0: unfenced).
    #[serde(default)]
    pub term: Revision,
    /// W3C trace context of the run's first span, so a run resumed by a new leader stays in
    /// its trace.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub trace_context: std::collections::BTreeMap<String, String>,
    /// The seq of the run's final event (set when it ends), so a watcher of a run whose events
    /// are no longer kept still gets the final one with its number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_seq: u64,
    /// The spec's version label and hash (see `RunSpec::hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_version: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spec_hash: String,
    /// Where a fork came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkOrigin>,
}

/// The run and subtask a fork was made from (and the agent step, when one was given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub run_id: RunId,
    pub subtask: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl RunHeader {
    /// The header of a run that starts now: running, unfenced, with no key, summary or trace.
    pub fn running(run_id: RunId, name: impl Into<String>, submitted_us: u64) -> Self {
        Self {
            run_id,
            name: name.into(),
            state: RunState::Running,
            submitted_us,
            finished_us: None,
            idempotency_key: None,
            tenant: None,
            summary: None,
            term: 0,
            trace_context: Default::default(),
            last_seq: 0,
            spec_version: None,
            spec_hash: String::new(),
            forked_from: None,
        }
    }
}

/// A subtask's record, written when it reaches a terminal state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskRecord {
    pub state: SubtaskState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub started_us: u64,
    pub finished_us: u64,
    pub steps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<FailureKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Where a large output lives instead of `output` (a payload-store path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<String>,
    /// The files it handed on (in the payload store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<swarm_core::artifact::Artifact>,
    /// The leadership term that wrote this version (0: unfenced).
    #[serde(default)]
    pub term: Revision,
    /// When the subtask first became ready, and its first attempt started (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_us: Option<u64>,
    /// Copied from the run this one was forked from (`RunHeader::forked_from`), not made again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

/// The bytes a paged read asks for at a time (about; see [`RunRepo::range_all`]).
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// A batch that failed part-way: the first `committed` operations are durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFailure {
    pub committed: usize,
    pub error: StoreError,
}

/// What [`RunRepo::create_run`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The run was stored.
    New,
    /// The idempotency key already named this run; nothing was written.
    Existing(RunId),
}

/// The leadership a writer holds: every write it makes is guarded by the leader key still
/// having this create revision, so a deposed leader (paused, partitioned) commits nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderFence {
    /// The leader key (its election key).
    pub key: Vec<u8>,
    /// The key's create revision: the leadership term.
    pub revision: Revision,
}

/// Typed run storage over any [`StateStore`].
#[derive(Clone)]
pub struct RunRepo {
    store: Arc<dyn StateStore>,
    prefix: String,
    fence: Option<LeaderFence>,
    payloads: Option<PayloadStore>,
}

/// Specs above this size (encoded) go to the payload store: etcd takes at most 1.5 MiB per request.
pub const SPEC_INLINE_MAX: usize = 1024 * 1024;

/// The reference stored in place of an offloaded value.
#[derive(Serialize, Deserialize)]
struct PayloadRef {
    #[serde(rename = "$ref")]
    reference: String,
}

impl RunRepo {
    /// A repository under `prefix` (which should end with `/`).
    pub fn new(store: Arc<dyn StateStore>, prefix: impl Into<String>) -> Self {
        Self { store, prefix: prefix.into(), fence: None, payloads: None }
    }

    /// The same repository, offloading large values to `payloads`.
    pub fn with_payloads(mut self, payloads: PayloadStore) -> Self {
        self.payloads = Some(payloads);
        self
    }

    /// The payload store, if any.
    pub fn payloads(&self) -> Option<&PayloadStore> {
        self.payloads.as_ref()
    }

    /// Where a run's payloads live in the payload store.
    pub fn payload_prefix(run: &RunId) -> String {
        format!("payloads/{run}")
    }

    /// The same repository, with every write fenced by `fence`.
    pub fn fenced(&self, fence: LeaderFence) -> Self {
        Self { fence: Some(fence), ..self.clone() }
    }

    /// The leadership term writes are fenced with (0 when unfenced).
    pub fn term(&self) -> Revision {
        self.fence.as_ref().map_or(0, |f| f.revision)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Commits `txn` under the fence; a failed fence compare is [`StoreError::Fenced`], other
    /// failed compares return `Ok(false)`.
    pub async fn commit(&self, mut txn: Txn) -> Result<bool, StoreError> {
        let Some(fence) = &self.fence else {
            return Ok(self.store.commit(txn).await?.succeeded);
        };
        let guarded = !txn.compares.is_empty();
        txn.compares.push(Compare::CreateRevision(fence.key.clone(), fence.revision));
        if self.store.commit(txn).await?.succeeded {
            return Ok(true);
        }
        // Tell a lost fence from a failed precondition.
        match self.store.get(&fence.key).await? {
            Some(kv) if kv.create_revision == fence.revision && guarded => Ok(false),
            _ => Err(StoreError::Fenced(fence.revision)),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    fn header_key(&self, run: &RunId) -> Vec<u8> {
        format!("{}runs/{run}", self.prefix).into_bytes()
    }
    fn spec_key(&self, run: &RunId) -> Vec<u8> {
        format!("{}specs/{run}", self.prefix).into_bytes()
    }
    fn subtasks_prefix(&self, run: &RunId) -> Vec<u8> {
        format!("{}subtasks/{run}/", self.prefix).into_bytes()
    }
    fn idempotency_key(&self, key: &str) -> Vec<u8> {
        format!("{}idempotency/{key}", self.prefix).into_bytes()
    }

    /// Stores a new run (header and spec) in one transaction, unless its idempotency key is
    /// taken, in which case the existing run id is returned and nothing is written.
    ///
    /// A spec above [`SPEC_INLINE_MAX`] is uploaded to the payload store first and the header,
    /// a reference and the idempotency key are then written in one transaction, so a run is
    /// never visible half-created (at worst an unreferenced blob is left behind).
    pub async fn create_run(&self, header: &RunHeader, spec: &RunSpec) -> Result<Created, StoreError> {
        let mut spec_value = encode(spec);
        if spec_value.len() > SPEC_INLINE_MAX
            && let Some(payloads) = &self.payloads
        {
            let path = format!("{}/spec", Self::payload_prefix(&header.run_id));
            let reference = payloads.put(&path, spec_value.into()).await?;
            spec_value = encode(&PayloadRef { reference });
        }
        let mut txn = Txn::new()
            .when(Compare::Absent(self.header_key(&header.run_id)))
            .then(Op::put(self.header_key(&header.run_id), encode(header)))
            .then(Op::put(self.spec_key(&header.run_id), spec_value));
        if let Some(key) = &header.idempotency_key {
            txn = txn
                .when(Compare::Absent(self.idempotency_key(key)))
                .then(Op::put(self.idempotency_key(key), header.run_id.as_str()));
        }
        let bytes: usize = txn.ops.iter().map(Op::size).sum();
        if bytes > self.store.max_request_bytes() {
            return Err(StoreError::TooLarge(format!(
                "the run needs {bytes} bytes in one write; the store accepts {}",
                self.store.max_request_bytes()
            )));
        }
        if self.commit(txn.clone()).await? {
            return Ok(Created::New);
        }
        if let Some(key) = &header.idempotency_key
            && let Some(kv) = self.store.get(&self.idempotency_key(key)).await?
        {
            let existing = RunId::from(String::from_utf8_lossy(&kv.value).into_owned());
            if self.store.get(&self.header_key(&existing)).await?.is_some() {
                return Ok(Created::Existing(existing));
            }
            // The key names a run that was deleted (its key outlived it): the key is free.
            // Taken over only if nobody changed it meanwhile.
            let stale = Txn::new()
                .when(Compare::ModRevision(self.idempotency_key(key), kv.mod_revision))
                .then(Op::Delete { key: self.idempotency_key(key) });
            if self.commit(stale).await? && self.commit(txn).await? {
                return Ok(Created::New);
            }
            if let Some(kv) = self.store.get(&self.idempotency_key(key)).await? {
                return Ok(Created::Existing(RunId::from(String::from_utf8_lossy(&kv.value).into_owned())));
            }
        }
        Err(StoreError::Other(format!("run {} already exists", header.run_id)))
    }

    /// The election name for coordinators (`{prefix}leader`).
    pub fn election_name(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// Where the leadership term counter lives (`{prefix}term`).
    pub fn term_key(&self) -> Vec<u8> {
        format!("{}term", self.prefix).into_bytes()
    }

    /// Begins a leadership term: increments the term counter (under this repository's fence,
    /// compare-and-set) and returns the new term number, from which the term's attempt fences
    /// are made (`swarm_core::fence`). A store without a counter yet (written by a version
    /// that used the leader key's revision as the term) starts above that scheme's fences.
    pub async fn next_term(&self) -> Result<u64, StoreError> {
        let key = self.term_key();
        let name = String::from_utf8_lossy(&key).into_owned();
        let current = self.store.get(&key).await?;
        let (next, guard) = match &current {
            Some(kv) => {
                let n: u64 = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt { key: name.clone(), message: "not a term number".into() })?;
                let next = n.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                    key: name.clone(),
                    message: "term number overflows".into(),
                })?;
                (next, Compare::ModRevision(key.clone(), kv.mod_revision))
            }
            None => {
                let revision = u64::try_from(self.term()).unwrap_or(0);
                (swarm_core::fence::FenceSeq::first_term_after_revision_scheme(revision), Compare::Absent(key.clone()))
            }
        };
        if self.commit(Txn::new().when(guard).then(Op::put(key, next.to_string()))).await? {
            Ok(next)
        } else {
            // Only the leader writes the counter, and each term once: a lost compare means
            // another writer, which the fence should have stopped.
            Err(StoreError::Other(format!("{name} changed while this term began")))
        }
    }

    /// Where worker registrations live (`{prefix}workers/`).
    pub fn workers_prefix(&self) -> Vec<u8> {
        format!("{}workers/", self.prefix).into_bytes()
    }

    /// The ops that delete everything of a run (header, spec, subtask records, transcripts,
    /// event log, and its idempotency key, which would otherwise name a run that is gone).
    pub fn delete_run_ops(&self, run: &RunId, idempotency_key: Option<&str>) -> Vec<Op> {
        let mut ops = vec![
            Op::Delete { key: self.header_key(run) },
            Op::Delete { key: self.spec_key(run) },
            Op::DeletePrefix { prefix: self.subtasks_prefix(run) },
            Op::DeletePrefix { prefix: format!("{}turns/{run}/", self.prefix).into_bytes() },
            Op::DeletePrefix { prefix: format!("{}spawns/{run}/", self.prefix).into_bytes() },
            Op::DeletePrefix { prefix: self.events_prefix(run) },
        ];
        if let Some(key) = idempotency_key {
            ops.push(Op::Delete { key: self.idempotency_key(key) });
        }
        ops
    }

    fn events_prefix(&self, run: &RunId) -> Vec<u8> {
        format!("{}events/{run}/", self.prefix).into_bytes()
    }

    /// The write of a chunk of a run's event log whose first event has seq `first_seq`.
    pub fn events_op(&self, run: &RunId, first_seq: u64, chunk: Vec<u8>) -> Op {
        let mut key = self.events_prefix(run);
        key.extend_from_slice(format!("{first_seq:016x}").as_bytes());
        Op::put(key, chunk)
    }

    /// The stored chunks of a run's event log, in seq order.
    pub async fn event_chunks(&self, run: &RunId) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.range_all(&self.events_prefix(run)).await?.into_iter().map(|kv| kv.value).collect())
    }

    /// The write of a header, for batching.
    pub fn header_op(&self, header: &RunHeader) -> Op {
        Op::put(self.header_key(&header.run_id), encode(header))
    }

    /// The write of a subtask record, for batching.
    pub fn subtask_op(&self, run: &RunId, subtask: &SubtaskId, record: &SubtaskRecord) -> Op {
        let mut key = self.subtasks_prefix(run);
        key.extend_from_slice(subtask.as_str().as_bytes());
        Op::put(key, encode(record))
    }

    /// Commits independent writes in as few transactions as the store's limits allow
    /// (each op stands alone; none relies on another being in the same transaction).
    pub async fn write_batch(&self, ops: &[Op]) -> Result<usize, StoreError> {
        self.write_batch_from(ops).await.map_err(|f| f.error)
    }

    /// [`Self::write_batch`], saying on failure how many of `ops` (a prefix) were committed,
    /// so a caller retries only the rest and writes nothing twice.
    pub async fn write_batch_from(&self, ops: &[Op]) -> Result<usize, BatchFailure> {
        let max_ops = self.store.max_txn_ops();
        let max_bytes = self.store.max_request_bytes() - 4096;
        let mut txns = 0;
        let mut committed = 0;
        let mut start = 0;
        let mut bytes = 0;
        // Keys in the open transaction: etcd refuses one that writes a key twice, so a key
        // written again (a record rewritten in a later turn of the same batch) starts the next.
        let mut keys: HashSet<&[u8]> = HashSet::new();
        let mut prefixes: Vec<&[u8]> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let size = op.size();
            let repeated = match op {
                Op::Put { key, .. } | Op::Delete { key } => {
                    keys.contains(key.as_slice()) || prefixes.iter().any(|p| key.starts_with(p))
                }
                Op::DeletePrefix { prefix } => {
                    keys.iter().any(|k| k.starts_with(prefix))
                        || prefixes.iter().any(|p| p.starts_with(prefix) || prefix.starts_with(p))
                }
            };
            if i > start && (i - start == max_ops || bytes + size > max_bytes || repeated) {
                self.commit(Txn { compares: Vec::new(), ops: ops[start..i].to_vec() })
                    .await
                    .map_err(|error| BatchFailure { committed, error })?;
                txns += 1;
                committed = i;
                start = i;
                bytes = 0;
                keys.clear();
                prefixes.clear();
            }
            bytes += size;
            match op {
                Op::Put { key, .. } | Op::Delete { key } => {
                    keys.insert(key);
                }
                Op::DeletePrefix { prefix } => prefixes.push(prefix),
            }
        }
        if start < ops.len() {
            self.commit(Txn { compares: Vec::new(), ops: ops[start..].to_vec() })
                .await
                .map_err(|error| BatchFailure { committed, error })?;
            txns += 1;
        }
        Ok(txns)
    }

    /// Proves that this node reads the payload store the cluster writes: the first node to
    /// check writes a marker object through its payload store and records its path in the
    /// state store (`{prefix}payload-marker`); every other node must find that object through
    /// its own. Coordinators that do not share one cannot read each other's offloaded specs and
    /// outputs, so a standby would take over runs it cannot resume. `Ok(false)`: not shared.
    pub async fn payloads_shared(&self) -> Result<bool, StoreError> {
        let Some(payloads) = &self.payloads else { return Ok(true) };
        let key = format!("{}payload-marker", self.prefix).into_bytes();
        loop {
            if let Some(kv) = self.store.get(&key).await? {
                let path = String::from_utf8_lossy(&kv.value).into_owned();
                return match payloads.get(&path).await {
                    Ok(_) => Ok(true),
                    Err(e @ StoreError::Unavailable(_)) => Err(e),
                    Err(_) => Ok(false),
                };
            }
            let mine = format!("markers/{:016x}", fastrand_u64());
            payloads.put(&mine, bytes::Bytes::from_static(b"swarm payload store marker\n")).await?;
            let txn = Txn::new().when(Compare::Absent(key.clone())).then(Op::put(key.clone(), mine.into_bytes()));
            if self.store.commit(txn).await?.succeeded {
                return Ok(true);
            }
        }
    }

    /// The state store key of the payload marker (for messages).
    pub fn payload_marker_key(&self) -> String {
        format!("{}payload-marker", self.prefix)
    }

    /// A run's header.
    pub async fn header(&self, run: &RunId) -> Result<Option<RunHeader>, StoreError> {
        self.store.get(&self.header_key(run)).await?.map(|kv| decode(&kv)).transpose()
    }

    /// A run's spec.
    pub async fn spec(&self, run: &RunId) -> Result<Option<RunSpec>, StoreError> {
        let Some(kv) = self.store.get(&self.spec_key(run)).await? else { return Ok(None) };
        if kv.value.starts_with(b"{\"$ref\"") {
            let r: PayloadRef = decode(&kv)?;
            let payloads = self.payloads.as_ref().ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                message: "the spec is offloaded but no payload store is configured".into(),
            })?;
            let bytes = payloads.get(&r.reference).await?;
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { key: r.reference, message: e.to_string() });
        }
        decode(&kv).map(Some)
    }

    /// Every recorded subtask of a run.
    pub async fn subtasks(&self, run: &RunId) -> Result<Vec<(SubtaskId, SubtaskRecord)>, StoreError> {
        let prefix = self.subtasks_prefix(run);
        self.range_all(&prefix)
            .await?
            .iter()
            .map(|kv| Ok((SubtaskId::from(String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned()), decode(kv)?)))
            .collect()
    }

    /// Every key under `prefix`, read a page at a time. Pages are sized by bytes: each asks for
    /// as many keys as fit [`PAGE_BYTES`] at the sizes seen so far (from 16 to 1,000), so large
    /// values mean small pages, never a response over the client's limit.
    pub(crate) async fn range_all(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut limit = 100;
        loop {
            let page = self.store.range(prefix, after.as_deref(), limit).await?;
            after = page.kvs.last().map(|kv| kv.key.clone());
            let bytes: usize = page.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
            let per_key = bytes / page.kvs.len().max(1);
            limit = (PAGE_BYTES / per_key.max(1)).clamp(16, 1000);
            out.extend(page.kvs);
            if !page.more {
                return Ok(out);
            }
        }
    }

    /// Run headers in id order (oldest first), after `after`.
    pub async fn headers(&self, after: Option<&RunId>, limit: usize) -> Result<(Vec<RunHeader>, bool), StoreError> {
        let prefix = format!("{}runs/", self.prefix).into_bytes();
        let start = after.map(|r| self.header_key(r));
        let page = self.store.range(&prefix, start.as_deref(), limit).await?;
        let headers = page.kvs.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((headers, page.more))
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: string keys only, and the only floats
    // (summary figures, retry numbers) are finite (validated at submit, computed finitely).
    // (Were it ever to fail, the empty value reads back as a Corrupt error naming the key.)
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| StoreError::Corrupt { key: String::from_utf8_lossy(&kv.key).into_owned(), message: e.to_string() })
}

/// A random u64 without a dependency: the standard library's randomly keyed hasher.
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests;
