//! The history of a nemesis round, as its clients saw it: every submit and every `GetRun`
//! answer, with when it was invoked and when it completed (ms since the round began), and the
//! checks made on it once the round is over (see [`check`]):
//!
//! - every acknowledged submit names a run that ends, and ends once (one `RunFinished`);
//! - no acknowledged result is lost or changed: a subtask any answer showed succeeded is
//!   succeeded in the end, with the same output;
//! - read-your-writes across failover: once an answer showed the run ended, every later answer
//!   (from whichever leader) shows the same end and the same final results.
//!
//! Observers poll through whichever coordinator leads, as a client would, with no knowledge of
//! the faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm_cli::client;
use swarm_proto::pb;
use swarm_store::StateStore;
use tokio::time::{Instant, timeout};

use super::CALL;
use crate::proc_cluster::PREFIX;

/// What one `GetRun` answer showed.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub state: i32,
    /// Succeeded subtasks and their outputs.
    pub results: BTreeMap<String, String>,
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub what: &'static str,
    /// The run's name (its idempotency key).
    pub run: String,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    /// The run id a submit was acknowledged with, or what a get answered.
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Submitted(String),
    Got(Seen),
}

/// Where a client finds the leader: the etcd members and every coordinator's address.
#[derive(Clone)]
pub struct Finder {
    pub etcd: Vec<String>,
    pub urls: Vec<String>,
}

impl Finder {
    /// A client of whichever coordinator leads now.
    pub async fn client(&self) -> Option<client::Client> {
        let store: Arc<dyn StateStore> =
            Arc::new(timeout(CALL, swarm_store::EtcdStore::connect(&self.etcd, CALL)).await.ok()?.ok()?);
        let election = swarm_store::election::Election::new(store, &format!("{PREFIX}leader"));
        let (leader, _) = timeout(CALL, election.leader()).await.ok()?.ok()?;
        let url = leader?.value;
        self.urls.contains(&url).then_some(())?;
        timeout(CALL, client::connect(&url)).await.ok()?.ok()
    }
}

/// The round's history, shared by its clients.
#[derive(Clone)]
pub struct History {
    began: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new() -> Self {
        Self { began: Instant::now(), ops: Arc::default() }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.began).as_millis() as u64
    }

    pub fn record(&self, what: &'static str, run: &str, invoked: Instant, outcome: Outcome) {
        let op = Op {
            what,
            run: run.to_owned(),
            invoke_ms: self.ms(invoked),
            complete_ms: self.ms(Instant::now()),
            outcome,
        };
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Follows run `run_id` (named `name`) with `GetRun` every ~250 ms through whichever
    /// coordinator leads, until `stop`; records every answer. Once an answer shows it ended,
    /// it asks a few more times (after a failover, a new leader must tell the same).
    pub async fn observe(
        self,
        finder: Finder,
        name: String,
        run_id: String,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut after_end = 0;
        while !stop.is_cancelled() && after_end < 4 {
            if let Some(mut c) = finder.client().await {
                let invoked = Instant::now();
                if let Ok(Ok(run)) = timeout(CALL, client::get(&mut c, &run_id, true)).await {
                    let seen = seen(&run);
                    if is_terminal(seen.state) {
                        after_end += 1;
                    }
                    self.record("get", &name, invoked, Outcome::Got(seen));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

fn is_terminal(state: i32) -> bool {
    state != pb::RunState::Running as i32 && state != pb::RunState::Unspecified as i32
}

/// What an answer shows.
pub fn seen(run: &pb::Run) -> Seen {
    let results = run
        .subtasks
        .iter()
        .filter(|s| s.state == pb::SubtaskState::Succeeded as i32)
        .map(|s| (s.id.clone(), s.output_json.clone()))
        .collect();
    Seen { state: run.state, results }
}

/// Checks `ops` against the runs as they ended (`last`, by name) and the number of
/// `RunFinished` events each one's log holds; returns the violations.
pub fn check(ops: &[Op], last: &BTreeMap<String, (String, Seen)>, finished: &BTreeMap<String, usize>) -> Vec<String> {
    let mut bad = Vec::new();
    for op in ops {
        let Some((run_id, end)) = last.get(&op.run) else {
            bad.push(format!("{}: acknowledged ({op:?}) but not among the runs that ended", op.run));
            continue;
        };
        match &op.outcome {
            Outcome::Submitted(id) => {
                if id != run_id {
                    bad.push(format!("{}: submitted as {id}, ended as {run_id}", op.run));
                }
                let n = finished.get(run_id).copied().unwrap_or(0);
                if n != 1 {
                    bad.push(format!(
                        "{}: {n} RunFinished events (acknowledged submit at {} ms)",
                        op.run, op.invoke_ms
                    ));
                }
            }
            Outcome::Got(seen) => {
                for (subtask, output) in &seen.results {
                    match end.results.get(subtask) {
                        Some(o) if o == output => {}
                        other => bad.push(format!(
                            "{}: {subtask} was told succeeded with {output:?} at {}..{} ms, ended with {other:?}",
                            op.run, op.invoke_ms, op.complete_ms
                        )),
                    }
                }
                if is_terminal(seen.state) && seen != end {
                    bad.push(format!(
                        "{}: told ended at {}..{} ms as {seen:?}, but it ended as {end:?}",
                        op.run, op.invoke_ms, op.complete_ms
                    ));
                }
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: pb::RunState, results: &[(&str, &str)]) -> Seen {
        Seen { state: state as i32, results: results.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect() }
    }

    fn op(what: &'static str, outcome: Outcome) -> Op {
        Op { what, run: "r".into(), invoke_ms: 1, complete_ms: 2, outcome }
    }

    #[test]
    fn a_lost_or_changed_result_a_reread_end_and_a_run_ended_twice_are_violations() {
        let end = seen(pb::RunState::Succeeded, &[("a", "1"), ("b", "2")]);
        let last = BTreeMap::from([("r".to_owned(), ("id".to_owned(), end.clone()))]);
        let once = BTreeMap::from([("id".to_owned(), 1)]);
        let fine = [
            op("submit", Outcome::Submitted("id".into())),
            op("get", Outcome::Got(seen(pb::RunState::Running, &[("a", "1")]))),
            op("get", Outcome::Got(end.clone())),
        ];
        assert!(check(&fine, &last, &once).is_empty());
        let changed = [op("get", Outcome::Got(seen(pb::RunState::Running, &[("a", "9")])))];
        assert_eq!(check(&changed, &last, &once).len(), 1);
        let early_end = [op("get", Outcome::Got(seen(pb::RunState::Succeeded, &[("a", "1")])))];
        assert_eq!(check(&early_end, &last, &once).len(), 1, "told ended before b's result");
        let twice = BTreeMap::from([("id".to_owned(), 2)]);
        assert_eq!(check(&fine[..1], &last, &twice).len(), 1);
        let unknown = [Op { run: "gone".into(), ..fine[0].clone() }];
        assert_eq!(check(&unknown, &last, &once).len(), 1);
    }
}
