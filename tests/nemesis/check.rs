//! The invariants a nemesis round must leave intact, checked from outside: through the API,
//! the store and the files the `append` tool wrote.

use std::collections::{BTreeMap, HashMap, HashSet};

use swarm_proto::pb;
use swarm_store::StateStore;
use tokio::time::timeout;

use super::{CALL, Nemesis};
use crate::proc_cluster::PREFIX;

/// The whole event log of an ended run, read from the leader.
async fn events(n: &Nemesis, run_id: &str) -> anyhow::Result<Vec<pb::RunEvent>> {
    let mut c = n.client().await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let request = pb::WatchRunRequest { run_id: run_id.into(), after_seq: 0, ..Default::default() };
    let mut stream = timeout(CALL, c.watch_run(request)).await??.into_inner();
    let mut out = Vec::new();
    while let Some(ev) = timeout(CALL, futures_util::StreamExt::next(&mut stream)).await? {
        out.push(ev?);
    }
    Ok(out)
}

/// Checks the invariants of a round, and its clients' history `ops` (see `history`); returns
/// the violations found (empty: all hold).
pub async fn check(n: &Nemesis, runs: &[pb::Run], ops: &[super::history::Op]) -> anyhow::Result<Vec<String>> {
    let mut bad = Vec::new();
    // Every member runs again after the heal; a connection may still take a moment.
    let mut store = n.etcd.store().await;
    for _ in 0..50 {
        if store.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        store = n.etcd.store().await;
    }
    let store = store?;
    let mut names = HashSet::new();
    let mut last = BTreeMap::new();
    let mut finished = BTreeMap::new();
    let mut logs = BTreeMap::new();
    for run in runs {
        let id = &run.run_id;
        last.insert(run.name.clone(), (id.clone(), super::history::seen(run)));
        if !names.insert(run.name.clone()) {
            bad.push(format!("{}: two runs for one idempotency key", run.name));
        }
        // Every run ends, and succeeds (or is cancelled, when a client cancels it: the history
        // checks that one did): every fault is one a retry or a failover absorbs.
        let cancelled =
            super::Kind::of(&run.name) == super::Kind::Cancel && run.state == pb::RunState::Cancelled as i32;
        if run.state != pb::RunState::Succeeded as i32 && !cancelled {
            let failed: Vec<_> = run
                .subtasks
                .iter()
                .filter(|s| !s.error_message.is_empty())
                .map(|s| (&s.id, &s.error_message))
                .collect();
            bad.push(format!("{}: ended {:?}: {failed:?}", run.name, pb::RunState::try_from(run.state)));
        }
        // The event log: one numbering from 1 with nothing missing or repeated, each subtask's
        // success told once, and no start before the success of every dependency.
        let events = events(n, id).await?;
        let ends = events.iter().filter(|e| matches!(e.event, Some(pb::run_event::Event::RunFinished(_)))).count();
        finished.insert(id.clone(), ends);
        logs.insert(id.clone(), events.iter().map(|e| (e.seq, prost::Message::encode_to_vec(e))).collect());
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
            let chunks = store.range(format!("{PREFIX}events/{id}/").as_bytes(), None, 0).await?;
            let chunks: Vec<String> = chunks
                .kvs
                .iter()
                .map(|kv| {
                    format!(
                        "{}@{}",
                        String::from_utf8_lossy(&kv.key).rsplit('/').next().unwrap_or_default(),
                        kv.create_revision
                    )
                })
                .collect();
            let kinds: Vec<String> = events
                .iter()
                .map(|e| format!("{}:{:?}", e.seq, e.event.as_ref().map(std::mem::discriminant)))
                .collect();
            bad.push(format!(
                "{}: event seqs are not 1..={}: {kinds:?}; stored chunks {chunks:?}",
                run.name,
                seqs.len()
            ));
        }
        let mut succeeded_at: HashMap<&str, usize> = HashMap::new();
        let mut succeeded_attempt: HashMap<&str, u32> = HashMap::new();
        let mut started: BTreeMap<&str, Vec<(u32, String)>> = BTreeMap::new();
        let deps: HashMap<&str, &Vec<String>> = run.subtasks.iter().map(|s| (s.id.as_str(), &s.depends_on)).collect();
        for (k, e) in events.iter().enumerate() {
            match &e.event {
                Some(pb::run_event::Event::SubtaskSucceeded(s))
                    if succeeded_at.insert(s.subtask_id.as_str(), k).is_some() =>
                {
                    bad.push(format!("{}: {} succeeded twice in the event log", run.name, s.subtask_id));
                }
                Some(pb::run_event::Event::SubtaskSucceeded(s)) => {
                    succeeded_attempt.insert(s.subtask_id.as_str(), s.attempt);
                }
                Some(pb::run_event::Event::SubtaskStarted(s)) => {
                    for d in deps.get(s.subtask_id.as_str()).copied().into_iter().flatten() {
                        if !succeeded_at.contains_key(d.as_str()) {
                            bad.push(format!(
                                "{}: {} started before its dependency {d} succeeded",
                                run.name, s.subtask_id
                            ));
                        }
                    }
                    started.entry(s.subtask_id.as_str()).or_default().push((s.attempt, s.worker_id.clone()));
                }
                _ => {}
            }
        }
        // Every result GetRun serves is the one recorded, and each record was written once.
        let records = store.range(format!("{PREFIX}subtasks/{id}/").as_bytes(), None, 0).await?;
        let stored: HashMap<String, (serde_json::Value, i64)> = records
            .kvs
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(&kv.key).rsplit('/').next().unwrap_or_default().to_owned();
                (key, (serde_json::from_slice(&kv.value).unwrap_or_default(), kv.version))
            })
            .collect();
        for s in &run.subtasks {
            let Some((record, version)) = stored.get(&s.id) else {
                if s.state == pb::SubtaskState::Succeeded as i32 {
                    bad.push(format!("{}: {} succeeded with no record in the store", run.name, s.id));
                }
                continue;
            };
            // Once when it ends; an approval also once when it is parked (waiting, holding the
            // time it began to wait for the next leader).
            let writes = if s.kind == "approval" { 2 } else { 1 };
            if *version != writes {
                bad.push(format!("{}: {}'s record was written {version} times (not {writes})", run.name, s.id));
            }
            let recorded = record.get("output").and_then(|o| o.as_str()).unwrap_or_default();
            if s.state == pb::SubtaskState::Succeeded as i32
                && record.get("output_ref").is_none()
                && recorded != s.output_json
            {
                bad.push(format!("{}: {} served {:?} but recorded {recorded:?}", run.name, s.id, s.output_json));
            }
        }
        // Non-idempotent calls: every effect (a line, stamped with the attempt that wrote it, in
        // the directory of the worker that ran it) comes from an attempt that started there, and
        // each attempt acts once. A succeeded call's winning attempt acted; any other effect of
        // it must come from an attempt on a worker the nemesis killed, froze or cut off from
        // etcd past its lease (a call it finished whose report died with its leader). A call
        // that did not succeed (cancelled) acted at most once, with the same excuse.
        let mut effects: HashMap<String, Vec<(u32, String)>> = HashMap::new();
        for (worker, line) in n.appended(&format!("{}.log", run.name)) {
            let (id, attempt) = line.rsplit_once(" attempt=").unwrap_or((&line, "0"));
            effects.entry(id.to_owned()).or_default().push((attempt.parse().unwrap_or(0), worker));
        }
        for s in run.subtasks.iter().filter(|s| s.tool == "append") {
            let effects = effects.remove(&s.id).unwrap_or_default();
            let attempts = started.get(s.id.as_str()).cloned().unwrap_or_default();
            let won =
                succeeded_attempt.get(s.id.as_str()).copied().filter(|_| s.state == pb::SubtaskState::Succeeded as i32);
            let call = format!("{}: {}", run.name, s.id);
            bad.extend(effect_violations(&call, &effects, &attempts, won, &n.disrupted));
        }
        if let Some(stray) = effects.keys().next() {
            bad.push(format!("{}: an effect of {stray}, which is no append of the run", run.name));
        }
    }
    let ends = super::history::Ends { last, finished, logs };
    bad.extend(super::history::check(ops, &ends));
    Ok(bad)
}

/// The violations among the effects `(attempt, worker)` of one non-idempotent call (`call`, for
/// messages), given the attempts the event log started and the attempt that won (if it
/// succeeded): every effect from an attempt that started on that worker; each attempt acting
/// once; a winner that acted; any other effect excused only by a `disrupted` worker.
pub fn effect_violations(
    call: &str,
    effects: &[(u32, String)],
    attempts: &[(u32, String)],
    won: Option<u32>,
    disrupted: &HashSet<String>,
) -> Vec<String> {
    let mut bad = Vec::new();
    let mut seen = HashSet::new();
    for e in effects {
        if !attempts.contains(e) {
            bad.push(format!("{call} has an effect of attempt {e:?}, never started there ({attempts:?})"));
        }
        if !seen.insert(e) {
            bad.push(format!("{call}: its attempt {e:?} acted twice"));
        }
    }
    // Forged effects are told above; the rest are weighed against the one allowed.
    let mut rest: Vec<(u32, String)> = effects.iter().filter(|e| attempts.contains(e)).cloned().collect();
    let undisrupted = |(_, w): &(u32, String)| !disrupted.contains(w);
    // The one effect allowed: the winner's (a leader restarted meanwhile may have dispatched its
    // number twice: preferably on an undisrupted worker), or, for a call that did not succeed,
    // any one.
    let allowed = match won {
        Some(won) => {
            let k =
                rest.iter().position(|e| e.0 == won && undisrupted(e)).or_else(|| rest.iter().position(|e| e.0 == won));
            if k.is_none() {
                bad.push(format!("{call} succeeded as attempt {won}, which left no effect ({effects:?})"));
            }
            k
        }
        None => rest.iter().position(undisrupted).or((!rest.is_empty()).then_some(0)),
    };
    if let Some(k) = allowed {
        rest.remove(k);
    }
    for (a, w) in rest.iter().filter(|e| undisrupted(e)) {
        bad.push(format!(
            "{call} ran twice: attempt {a} on {w} acted too (effects {effects:?}, attempts {attempts:?})"
        ));
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(list: &[(u32, &str)]) -> Vec<(u32, String)> {
        list.iter().map(|&(a, w)| (a, w.to_owned())).collect()
    }

    #[test]
    fn an_effect_twice_a_forged_one_or_a_missing_winner_is_a_violation() {
        let none = HashSet::new();
        let w1_lost = HashSet::from(["w1".to_owned()]);
        let started = e(&[(1, "w1"), (2, "w2")]);
        let check = |effects: &[(u32, &str)], won, disrupted| {
            effect_violations("c", &e(effects), &started, won, disrupted).len()
        };
        assert_eq!(check(&[(2, "w2")], Some(2), &none), 0);
        assert_eq!(check(&[(1, "w1"), (2, "w2")], Some(2), &none), 1, "attempt 1 acted too");
        assert_eq!(check(&[(1, "w1"), (2, "w2")], Some(2), &w1_lost), 0, "excused: w1 was disrupted");
        assert_eq!(check(&[(1, "w1")], Some(2), &w1_lost), 1, "the winner left no effect");
        assert_eq!(check(&[(2, "w2"), (2, "w2")], Some(2), &none), 2, "one attempt acted twice");
        assert_eq!(check(&[(2, "w1")], Some(2), &none), 2, "attempt 2 never ran on w1 (and the winner did not act)");
        assert_eq!(check(&[(1, "w1")], None, &none), 0, "a cancelled call acted once");
        assert_eq!(check(&[(1, "w1"), (2, "w2")], None, &none), 1, "a cancelled call acted twice");
        assert_eq!(check(&[], None, &none), 0);
    }
}
