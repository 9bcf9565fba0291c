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
        let record = TurnRecord { v: RECORD_VERSION, turn: turn.clone() };
        Op::put(format!("{}turns/{run}/{subtask}/{index:06}", self.prefix()), crate::repo::encode(&record))
    }

    /// The write of an orchestrator's stage (`spawns/{run}/{subtask}/{stage}`).
    pub fn spawn_op(&self, run: &RunId, subtask: &SubtaskId, stage: u32, children: Vec<SpawnedChild>) -> Op {
        let record = SpawnRecord { v: RECORD_VERSION, children };
        Op::put(format!("{}spawns/{run}/{subtask}/{stage:04}", self.prefix()), crate::repo::encode(&record))
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
            out.push((subtask, n, decode(&kv.key, &kv.value)?));
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
    async fn records_round_trip_and_corruption_names_the_key() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let repo = RunRepo::new(store.clone(), DEFAULT_PREFIX);
        let run = RunId::from("r1");
        let lead = SubtaskId::from("lead");
        let turn = Turn { messages: vec![], usage: Default::default(), fence: 7, seq: 2 };
        let child =
            SpawnedChild { id: SubtaskId::from("lead:1:w:0"), name: "w".into(), agent: agent(), call_id: "c1".into() };
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
