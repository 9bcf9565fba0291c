//! Agent state in the store, typed and versioned: an agent's transcript turn by turn
//! (`turns/{run}/{subtask}/{n}`) and an orchestrator's stages (`spawns/{run}/{subtask}/{t}`).
//!
//! Decoding never guesses: a value that does not decode, a key that does not parse, or a record
//! written by a newer version is a [`StoreError::Corrupt`] naming the key.

use serde::{Deserialize, Serialize};
use swarm_core::agent::{AgentSpec, Turn};
use swarm_core::{RunId, SubtaskId};

use crate::repo::RunRepo;
use crate::types::*;

/// The version of the records this build writes.
pub const RECORD_VERSION: u32 = 1;

/// Turns encoded larger than this go to the payload store (when there is one) and their record
/// holds a reference: a transcript step carrying a huge tool result must not exceed etcd's
/// request limit (1.5 MiB), or it could not be written at all.
pub const TURN_INLINE_MAX: usize = 512 * 1024;

/// A turn or stage record that names where its payload is (`{"$ref": path, "v": 1}`).
#[derive(Serialize, Deserialize)]
struct TurnRef {
    #[serde(rename = "$ref")]
    reference: String,
    v: u32,
}

fn version_1() -> u32 {
    1
}

/// One turn of an agent's transcript. (Records without `v` were written before versioning
/// and are version 1.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    #[serde(default = "version_1")]
    pub v: u32,
    #[serde(flatten)]
    pub turn: Turn,
}

/// A subagent an orchestrator's stage started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnedChild {
    /// Its subtask id (`{orchestrator}:{stage}:{name}:{n}`).
    pub id: SubtaskId,
    /// The name its orchestrator gave it (empty in records of earlier builds).
    #[serde(default)]
    pub name: String,
    pub agent: AgentSpec,
    /// The `assign_task` call its answer goes back to.
    #[serde(default)]
    pub call_id: String,
    /// The W3C trace context of the call that started it (`traceparent`, `tracestate`):
    /// the subagent's spans nest under it. Empty when unknown (records of earlier builds).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub trace_context: std::collections::BTreeMap<String, String>,
}

/// One stage of an orchestrator: the subagents it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnRecord {
    pub v: u32,
    pub children: Vec<SpawnedChild>,
}

fn corrupt(key: &[u8], message: impl Into<String>) -> StoreError {
    StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), message: message.into() }
}

fn check_version(key: &[u8], v: u32) -> Result<(), StoreError> {
    if v == 0 || v > RECORD_VERSION {
        return Err(corrupt(key, format!("record version {v}; this build reads 1 to {RECORD_VERSION}")));
    }
    Ok(())
}

/// Decodes a turn record.
pub fn decode_turn(key: &[u8], value: &[u8]) -> Result<Turn, StoreError> {
    let record: TurnRecord = serde_json::from_slice(value).map_err(|e| corrupt(key, e.to_string()))?;
    check_version(key, record.v)?;
    Ok(record.turn)
}

/// Decodes a spawn record (also the unversioned list earlier builds wrote).
pub fn decode_spawn(key: &[u8], value: &[u8]) -> Result<Vec<SpawnedChild>, StoreError> {
    if value.first() == Some(&b'[') {
        return serde_json::from_slice(value).map_err(|e| corrupt(key, e.to_string()));
    }
    let record: SpawnRecord = serde_json::from_slice(value).map_err(|e| corrupt(key, e.to_string()))?;
    check_version(key, record.v)?;
    Ok(record.children)
}

/// Splits `{subtask}/{n}` (the part of a key after the run) into the subtask and the number.
fn split_key(full: &[u8], rest: &str) -> Result<(SubtaskId, u32), StoreError> {
    let (subtask, n) = rest.rsplit_once('/').ok_or_else(|| corrupt(full, "expected {subtask}/{number}"))?;
    let n = n.parse().map_err(|_| corrupt(full, format!("`{n}` is not a record number")))?;
    if subtask.is_empty() {
        return Err(corrupt(full, "no subtask id"));
    }
    Ok((SubtaskId::from(subtask), n))
}

impl RunRepo {
    fn agent_prefix(&self, kind: &str, run: &RunId) -> Vec<u8> {
        format!("{}{kind}/{run}/", self.prefix()).into_bytes()
    }

    /// The write of one turn of an agent's transcript (`turns/{run}/{subtask}/{index}`).
    pub fn turn_op(&self, run: &RunId, subtask: &SubtaskId, index: u32, turn: &Turn) -> Op {
        self.turn_write(run, subtask, index, turn).0
    }

    /// The same, and the payload to upload first when the turn is over [`TURN_INLINE_MAX`]
    /// (the record then names it).
    pub fn turn_write(
        &self,
        run: &RunId,
        subtask: &SubtaskId,
        index: u32,
        turn: &Turn,
    ) -> (Op, Option<(String, bytes::Bytes)>) {
        let key = format!("{}turns/{run}/{subtask}/{index:06}", self.prefix());
        let value = crate::repo::encode(&TurnRecord { v: RECORD_VERSION, turn: turn.clone() });
        let path = || format!("{}/turns/{}/{index:06}", Self::payload_prefix(run), subtask.as_str().replace(':', "_"));
        self.put_or_offload(key, value, path)
    }

    /// A record's write, or over [`TURN_INLINE_MAX`] (with a payload store) a `$ref` record
    /// naming `path()` and the payload to upload there first.
    fn put_or_offload(
        &self,
        key: String,
        value: Vec<u8>,
        path: impl FnOnce() -> String,
    ) -> (Op, Option<(String, bytes::Bytes)>) {
        if value.len() > TURN_INLINE_MAX && self.payloads().is_some() {
            let path = path();
            let record = crate::repo::encode(&TurnRef { reference: path.clone(), v: RECORD_VERSION });
            return (Op::put(key, record), Some((path, value.into())));
        }
        (Op::put(key, value), None)
    }

    /// The write of an orchestrator's stage (`spawns/{run}/{subtask}/{stage}`).
    pub fn spawn_op(&self, run: &RunId, subtask: &SubtaskId, stage: u32, children: Vec<SpawnedChild>) -> Op {
        self.spawn_write(run, subtask, stage, children).0
    }

    /// The same, and the payload to upload first when the stage is over [`TURN_INLINE_MAX`]
    /// (thousands of subagents: the record then names it, as an offloaded turn does).
    pub fn spawn_write(
        &self,
        run: &RunId,
        subtask: &SubtaskId,
        stage: u32,
        children: Vec<SpawnedChild>,
    ) -> (Op, Option<(String, bytes::Bytes)>) {
        let key = format!("{}spawns/{run}/{subtask}/{stage:04}", self.prefix());
        let value = crate::repo::encode(&SpawnRecord { v: RECORD_VERSION, children });
        let path = || format!("{}/spawns/{}/{stage:04}", Self::payload_prefix(run), subtask.as_str().replace(':', "_"));
        self.put_or_offload(key, value, path)
    }

    /// Every stored turn of a run's agents, as (subtask, turn number, turn), in key order.
    pub async fn turns(&self, run: &RunId) -> Result<Vec<(SubtaskId, u32, Turn)>, StoreError> {
        self.agent_records("turns", run, decode_turn).await
    }

    /// Every stored stage of a run's orchestrators, as (orchestrator, stage, children).
    pub async fn spawns(&self, run: &RunId) -> Result<Vec<(SubtaskId, u32, Vec<SpawnedChild>)>, StoreError> {
        self.agent_records("spawns", run, decode_spawn).await
    }

    /// Every `{kind}/{run}/{subtask}/{n}` record, decoded, in key order.
    async fn agent_records<T>(
        &self,
        kind: &str,
        run: &RunId,
        decode: fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<(SubtaskId, u32, T)>, StoreError> {
        let prefix = self.agent_prefix(kind, run);
        let mut out = Vec::new();
        for kv in self.range_all(&prefix).await? {
            let rest = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            let (subtask, n) = split_key(&kv.key, &rest)?;
            // An offloaded record (`put_or_offload`) names its payload.
            let record = if kv.value.starts_with(br#"{"$ref""#) {
                let r: TurnRef = serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv.key, e.to_string()))?;
                check_version(&kv.key, r.v)?;
                let payloads =
                    self.payloads().ok_or_else(|| corrupt(&kv.key, "an offloaded record, and no payload store"))?;
                decode(&kv.key, &payloads.get(&r.reference).await?)?
            } else {
                decode(&kv.key, &kv.value)?
            };
            out.push((subtask, n, record));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::MemoryStore;
    use crate::repo::DEFAULT_PREFIX;

    fn agent() -> AgentSpec {
        AgentSpec {
            instructions: "i".into(),
            input: "x".into(),
            model: "scripted".into(),
            tools: vec!["echo".into()],
            max_steps: None,
        }
    }

    #[tokio::test]
    async fn a_turn_over_the_inline_limit_goes_to_the_payload_store_and_reads_back_whole() {
        let payloads = crate::payload::PayloadStore::memory(64 << 10);
        let repo = RunRepo::new(Arc::new(MemoryStore::new()), DEFAULT_PREFIX).with_payloads(payloads.clone());
        let (run, a) = (RunId::from("r"), SubtaskId::from("lead:1:w:0"));
        let result = swarm_core::agent::Message::tool_result("c1", "x".repeat(2 << 20)); // a 2 MiB tool result
        let big = Turn { messages: vec![result], usage: Default::default(), fence: 7, seq: 1 };
        let small = Turn { messages: vec![], usage: Default::default(), fence: 7, seq: 2 };
        let (op, offload) = repo.turn_write(&run, &a, 0, &big);
        let (path, value) = offload.expect("offloaded");
        assert!(op.size() < 1024, "the record only names the payload: {} bytes", op.size());
        payloads.put(&path, value).await.expect("upload");
        let (small_op, none) = repo.turn_write(&run, &a, 1, &small);
        assert!(none.is_none());
        repo.write_batch(&[op, small_op]).await.expect("write");
        let turns = repo.turns(&run).await.expect("turns");
        assert_eq!(turns, vec![(a.clone(), 0, big), (a, 1, small)]);
    }

    #[tokio::test]
    async fn a_stage_of_ten_thousand_subagents_goes_to_the_payload_store_and_reads_back_whole() {
        let payloads = crate::payload::PayloadStore::memory(64 << 10);
        let repo = RunRepo::new(Arc::new(MemoryStore::new()), DEFAULT_PREFIX).with_payloads(payloads.clone());
        let (run, lead) = (RunId::from("r"), SubtaskId::from("lead"));
        let children: Vec<SpawnedChild> = (0..10_000)
            .map(|i| SpawnedChild {
                id: SubtaskId::from(format!("lead:1:researcher:{i}")),
                name: "researcher".into(),
                agent: AgentSpec { input: format!("research part {i}"), ..agent() },
                call_id: format!("call-{i}"),
                trace_context: Default::default(),
            })
            .collect();
        let (op, offload) = repo.spawn_write(&run, &lead, 1, children.clone());
        let (path, value) = offload.expect("offloaded");
        assert!(value.len() > 1 << 20, "over etcd's request limit inline: {} bytes", value.len());
        assert!(op.size() < 1024, "the record only names the payload: {} bytes", op.size());
        payloads.put(&path, value).await.expect("upload");
        let (small_op, none) = repo.spawn_write(&run, &lead, 2, children[..1].to_vec());
        assert!(none.is_none(), "a small stage stays inline");
        repo.write_batch(&[op, small_op]).await.expect("write");
        let stages = repo.spawns(&run).await.expect("spawns");
        assert_eq!(stages, vec![(lead.clone(), 1, children.clone()), (lead, 2, children[..1].to_vec())]);
    }

    #[tokio::test]
    async fn records_round_trip_and_corruption_names_the_key() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let repo = RunRepo::new(store.clone(), DEFAULT_PREFIX);
        let run = RunId::from("r1");
        let lead = SubtaskId::from("lead");
        let turn = Turn { messages: vec![], usage: Default::default(), fence: 7, seq: 2 };
        let child = SpawnedChild {
            id: SubtaskId::from("lead:1:w:0"),
            name: "w".into(),
            agent: agent(),
            call_id: "c1".into(),
            trace_context: [("traceparent".to_owned(), "00-1-2-01".to_owned())].into(),
        };
        repo.write_batch(&[repo.turn_op(&run, &lead, 0, &turn), repo.spawn_op(&run, &lead, 1, vec![child.clone()])])
            .await
            .expect("write");
        assert_eq!(repo.turns(&run).await.expect("turns"), vec![(lead.clone(), 0, turn.clone())]);
        assert_eq!(repo.spawns(&run).await.expect("spawns"), vec![(lead.clone(), 1, vec![child.clone()])]);

        // What earlier builds wrote still reads: an unversioned turn, a bare list of children.
        let legacy_turn = serde_json::to_vec(&turn).expect("json");
        let legacy_spawn = serde_json::to_vec(&vec![child.clone()]).expect("json");
        store
            .commit(
                Txn::new()
                    .then(Op::put("/swarm/v1/turns/r2/a/000000", legacy_turn))
                    .then(Op::put("/swarm/v1/spawns/r2/a/0001", legacy_spawn)),
            )
            .await
            .expect("legacy");
        let r2 = RunId::from("r2");
        assert_eq!(repo.turns(&r2).await.expect("turns")[0].2, turn);
        assert_eq!(repo.spawns(&r2).await.expect("spawns")[0].2, vec![child]);

        for (key, value) in [
            ("/swarm/v1/turns/r3/a/000000", &b"{not json"[..]),
            ("/swarm/v1/turns/r3/a/000001", &br#"{"v": 9, "messages": []}"#[..]),
            ("/swarm/v1/turns/r3/a/x", &br#"{"messages": []}"#[..]),
            ("/swarm/v1/spawns/r3/a/0001", &br#"{"v": 1, "children": [{"id": 5}]}"#[..]),
        ] {
            store.commit(Txn::new().then(Op::put(key, value))).await.expect("put");
            let r3 = RunId::from("r3");
            let err = if key.contains("/turns/") {
                repo.turns(&r3).await.map(|_| ())
            } else {
                repo.spawns(&r3).await.map(|_| ())
            };
            match err {
                Err(StoreError::Corrupt { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{key}: expected Corrupt, got {other:?}"),
            }
            store.commit(Txn::new().then(Op::Delete { key: key.as_bytes().to_vec() })).await.expect("clean");
        }
    }
}
