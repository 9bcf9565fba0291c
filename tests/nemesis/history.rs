//! The history of a nemesis round, as its clients saw it: every submit, `GetRun` answer,
//! acknowledged cancel and approval, and every stretch of events a `WatchRun` stream delivered,
//! with when it was invoked and when it completed (ms since the round began), and the checks
//! made on it once the round is over (see [`check`]):
//!
//! - every acknowledged submit names a run that ends, and ends once (one `RunFinished`);
//! - no acknowledged result is lost or changed: a subtask any answer showed succeeded is
//!   succeeded in the end, with the same output;
//! - read-your-writes across failover: once an answer showed the run ended, every later answer
//!   (from whichever leader) shows the same end and the same final results;
//! - a watch resumed after a dropped stream (from the last sequence number it saw, through
//!   whichever leader) misses no event and is never told an event the log does not end with,
//!   and sees the run end;
//! - an acknowledged cancel ends its run cancelled (unless the answer said it had ended), and a
//!   run ends cancelled only when a client cancelled it;
//! - an acknowledged approval is the decision the run went on with: its gate's output is the
//!   payload approved, whatever leader took it and however often it was sent.
//!
//! Clients act through whichever coordinator leads, as a client would, with no knowledge of
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
    /// A `WatchRun` stream asked for events after `after`, and delivered these (sequence
    /// number and encoded event) before it ended or broke.
    Watched {
        after: u64,
        events: Vec<(u64, Vec<u8>)>,
        finished: bool,
    },
    /// A cancel sent (acknowledged or not).
    CancelSent,
    /// A cancel acknowledged; the run's state in the answer.
    Cancelled(i32),
    /// An approval of `gate` acknowledged: the decision and payload that stand.
    Approved {
        decision: i32,
        payload: String,
    },
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

    /// How many operations of each kind, as text (`get 120, submit 18, …`).
    pub fn counts(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for op in self.ops() {
            *counts.entry(op.what).or_default() += 1;
        }
        counts.iter().map(|(what, n)| format!("{what} {n}")).collect::<Vec<_>>().join(", ")
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
        let kind = super::Kind::of(&name);
        let mut acted = false;
        while !stop.is_cancelled() && after_end < 4 {
            if let Some(mut c) = finder.client().await {
                let invoked = Instant::now();
                if let Ok(Ok(run)) = timeout(CALL, client::get(&mut c, &run_id, true)).await {
                    let seen = seen(&run);
                    let ended = is_terminal(seen.state);
                    after_end += usize::from(ended);
                    let some_result = !seen.results.is_empty();
                    self.record("get", &name, invoked, Outcome::Got(seen));
                    if !acted && !ended {
                        acted = self.act(&mut c, kind, &name, &run_id, some_result).await;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

impl History {
    /// What `kind` asks a client to do to the run while it runs: cancel it once some subtask
    /// succeeded, approve its gate. Returns whether it was acknowledged (recorded).
    async fn act(
        &self,
        c: &mut client::Client,
        kind: super::Kind,
        name: &str,
        run_id: &str,
        some_result: bool,
    ) -> bool {
        let invoked = Instant::now();
        match kind {
            super::Kind::Plain => true,
            super::Kind::Cancel if some_result => {
                self.record("cancel-sent", name, invoked, Outcome::CancelSent);
                let request = pb::CancelRunRequest { run_id: run_id.into(), reason: "nemesis client".into() };
                let Ok(Ok(r)) = timeout(CALL, c.cancel_run(request)).await else { return false };
                let state = r.into_inner().run.map_or(0, |r| r.state);
                self.record("cancel", name, invoked, Outcome::Cancelled(state));
                true
            }
            super::Kind::Cancel => false,
            super::Kind::Approve => {
                let request = pb::SignalRunRequest {
                    run_id: run_id.into(),
                    subtask_id: "gate".into(),
                    decision: pb::Decision::Approve as i32,
                    payload_json: super::workload::approval_payload(name),
                    reason: String::new(),
                };
                let Ok(Ok(r)) = timeout(CALL, c.signal_run(request)).await else { return false };
                let r = r.into_inner();
                self.record(
                    "approve",
                    name,
                    invoked,
                    Outcome::Approved { decision: r.decision, payload: r.payload_json },
                );
                true
            }
        }
    }

    /// Watches run `run_id` (named `name`) through whichever coordinator leads, resuming after
    /// the last event seen whenever the stream breaks, until it delivers `RunFinished` or `stop`;
    /// records each stream's stretch of events.
    pub async fn watch(self, finder: Finder, name: String, run_id: String, stop: tokio_util::sync::CancellationToken) {
        use futures_util::StreamExt;
        use prost::Message;
        let mut after = 0;
        while !stop.is_cancelled() {
            let invoked = Instant::now();
            let (mut events, mut finished) = (Vec::new(), false);
            if let Some(mut c) = finder.client().await {
                let request = pb::WatchRunRequest { run_id: run_id.clone(), after_seq: after, ..Default::default() };
                if let Ok(Ok(stream)) = timeout(CALL, c.watch_run(request)).await {
                    let mut stream = stream.into_inner();
                    loop {
                        let next = tokio::select! {
                            _ = stop.cancelled() => break,
                            next = stream.next() => next,
                        };
                        let Some(Ok(event)) = next else { break };
                        finished |= matches!(event.event, Some(pb::run_event::Event::RunFinished(_)));
                        events.push((event.seq, event.encode_to_vec()));
                        if finished {
                            break;
                        }
                    }
                }
            }
            let from = after;
            after = events.last().map_or(after, |(seq, _)| *seq);
            if !events.is_empty() || finished {
                self.record("watch", &name, invoked, Outcome::Watched { after: from, events, finished });
            }
            if finished {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
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

/// The end of every run, by name: its id, what it showed, and its whole event log encoded
/// (sequence number, event).
pub struct Ends {
    pub last: BTreeMap<String, (String, Seen)>,
    /// `RunFinished` events in each run's log, by run id.
    pub finished: BTreeMap<String, usize>,
    pub logs: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
}

/// Checks `ops` against the runs as they ended; returns the violations.
pub fn check(ops: &[Op], ends: &Ends) -> Vec<String> {
    let mut bad = Vec::new();
    let (last, finished) = (&ends.last, &ends.finished);
    for op in ops {
        let Some((run_id, end)) = last.get(&op.run) else {
            bad.push(format!("{}: acknowledged ({op:?}) but not among the runs that ended", op.run));
            continue;
        };
        let at = format!("at {}..{} ms", op.invoke_ms, op.complete_ms);
        match &op.outcome {
            Outcome::Submitted(id) => {
                if id != run_id {
                    bad.push(format!("{}: submitted as {id}, ended as {run_id}", op.run));
                }
                let n = finished.get(run_id).copied().unwrap_or(0);
                if n != 1 {
                    bad.push(format!("{}: {n} RunFinished events (acknowledged submit {at})", op.run));
                }
            }
            Outcome::Got(seen) => {
                for (subtask, output) in &seen.results {
                    match end.results.get(subtask) {
                        Some(o) if o == output => {}
                        other => bad.push(format!(
                            "{}: {subtask} was told succeeded with {output:?} {at}, ended with {other:?}",
                            op.run
                        )),
                    }
                }
                if is_terminal(seen.state) && seen != end {
                    bad.push(format!("{}: told ended {at} as {seen:?}, but it ended as {end:?}", op.run));
                }
            }
            Outcome::Watched { after, events, .. } => {
                let log = ends.logs.get(run_id).map_or(&[][..], Vec::as_slice);
                for (k, (seq, bytes)) in events.iter().enumerate() {
                    if *seq != after + 1 + k as u64 {
                        bad.push(format!("{}: a watch after {after} {at} got seq {seq} as its event {k}", op.run));
                        break;
                    }
                    if log.get(*seq as usize - 1).is_none_or(|(s, b)| s != seq || b != bytes) {
                        bad.push(format!(
                            "{}: a watch {at} was told event {seq}, which the log does not end with",
                            op.run
                        ));
                    }
                }
            }
            Outcome::CancelSent => {}
            Outcome::Cancelled(state) => {
                let cancelled = pb::RunState::Cancelled as i32;
                let told = if is_terminal(*state) { *state } else { cancelled };
                if end.state != told {
                    bad.push(format!("{}: a cancel acknowledged {at} (state {state}), ended {}", op.run, end.state));
                }
            }
            Outcome::Approved { decision, payload } => {
                let sent = super::workload::approval_payload(&op.run);
                let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
                if *decision != pb::Decision::Approve as i32 || json(payload) != json(&sent) {
                    bad.push(format!("{}: approval acknowledged {at} as {decision} {payload:?}", op.run));
                }
                if end.results.get("gate").is_none_or(|o| json(o) != json(&sent)) {
                    bad.push(format!(
                        "{}: approved {at}, but its gate ended with {:?}",
                        op.run,
                        end.results.get("gate")
                    ));
                }
            }
        }
    }
    // Runs as a whole: each watched to its end; cancelled only when a client sent a cancel.
    for (name, (_, end)) in last {
        let ops_of = || ops.iter().filter(move |o| &o.run == name);
        if !ops_of().any(|o| matches!(o.outcome, Outcome::Watched { finished: true, .. })) {
            bad.push(format!("{name}: no watch saw it end"));
        }
        if end.state == pb::RunState::Cancelled as i32 && !ops_of().any(|o| matches!(o.outcome, Outcome::CancelSent)) {
            bad.push(format!("{name}: ended cancelled, but no client cancelled it"));
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

    fn ends(end: &Seen, finished: usize) -> Ends {
        Ends {
            last: BTreeMap::from([("r".to_owned(), ("id".to_owned(), end.clone()))]),
            finished: BTreeMap::from([("id".to_owned(), finished)]),
            logs: BTreeMap::from([("id".to_owned(), vec![(1, vec![1]), (2, vec![2]), (3, vec![3])])]),
        }
    }

    fn watched(after: u64, events: &[(u64, u8)], finished: bool) -> Op {
        let events = events.iter().map(|&(seq, b)| (seq, vec![b])).collect();
        op("watch", Outcome::Watched { after, events, finished })
    }

    #[test]
    fn a_lost_or_changed_result_a_reread_end_and_a_run_ended_twice_are_violations() {
        let end = seen(pb::RunState::Succeeded, &[("a", "1"), ("b", "2")]);
        let fine = [
            op("submit", Outcome::Submitted("id".into())),
            op("get", Outcome::Got(seen(pb::RunState::Running, &[("a", "1")]))),
            op("get", Outcome::Got(end.clone())),
            watched(0, &[(1, 1), (2, 2)], false),
            watched(2, &[(3, 3)], true),
        ];
        assert_eq!(check(&fine, &ends(&end, 1)), Vec::<String>::new());
        let with = |extra: Op| [fine.to_vec(), vec![extra]].concat();
        let changed = with(op("get", Outcome::Got(seen(pb::RunState::Running, &[("a", "9")]))));
        assert_eq!(check(&changed, &ends(&end, 1)).len(), 1);
        let early_end = with(op("get", Outcome::Got(seen(pb::RunState::Succeeded, &[("a", "1")]))));
        assert_eq!(check(&early_end, &ends(&end, 1)).len(), 1, "told ended before b's result");
        assert_eq!(check(&fine, &ends(&end, 2)).len(), 1, "ended twice");
        let unknown = with(Op { run: "gone".into(), ..fine[0].clone() });
        assert_eq!(check(&unknown, &ends(&end, 1)).len(), 1);
        // Watches: a gap on resuming, an event the log does not end with, no watch seeing the end.
        assert_eq!(check(&with(watched(0, &[(2, 2)], false)), &ends(&end, 1)).len(), 1, "gap");
        assert_eq!(check(&with(watched(1, &[(2, 9)], false)), &ends(&end, 1)).len(), 1, "changed event");
        assert_eq!(check(&fine[..4], &ends(&end, 1)).len(), 1, "never saw the end");
    }

    #[test]
    fn a_cancel_or_an_approval_that_did_not_stand_is_a_violation() {
        let cancelled = seen(pb::RunState::Cancelled, &[]);
        let watch = watched(2, &[(3, 3)], true);
        let sent = op("cancel-sent", Outcome::CancelSent);
        let acked = op("cancel", Outcome::Cancelled(pb::RunState::Running as i32));
        assert!(check(&[watch.clone(), sent.clone(), acked.clone()], &ends(&cancelled, 1)).is_empty());
        assert_eq!(check(std::slice::from_ref(&watch), &ends(&cancelled, 1)).len(), 1, "cancelled by nobody");
        let succeeded = seen(pb::RunState::Succeeded, &[]);
        assert_eq!(check(&[watch.clone(), sent.clone(), acked], &ends(&succeeded, 1)).len(), 1, "cancel lost");
        let too_late = op("cancel", Outcome::Cancelled(pb::RunState::Succeeded as i32));
        assert!(check(&[watch.clone(), sent, too_late], &ends(&succeeded, 1)).is_empty(), "it had ended");

        let payload = super::super::workload::approval_payload("r");
        let approved = seen(pb::RunState::Succeeded, &[("gate", &payload)]);
        let ack =
            |p: &str| op("approve", Outcome::Approved { decision: pb::Decision::Approve as i32, payload: p.into() });
        assert!(check(&[watch.clone(), ack(&payload)], &ends(&approved, 1)).is_empty());
        assert_eq!(check(&[watch.clone(), ack("{}")], &ends(&approved, 1)).len(), 1, "another decision stood");
        let other = seen(pb::RunState::Succeeded, &[("gate", "{}")]);
        assert_eq!(check(&[watch, ack(&payload)], &ends(&other, 1)).len(), 1, "the gate ended otherwise");
    }
}
