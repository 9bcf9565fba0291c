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
    let store = n.etcd.store().await?;
    let mut names = HashSet::new();
    let mut last = BTreeMap::new();
    let mut finished = BTreeMap::new();
    for run in runs {
        let id = &run.run_id;
        last.insert(run.name.clone(), (id.clone(), super::history::seen(run)));
        if !names.insert(run.name.clone()) {
            bad.push(format!("{}: two runs for one idempotency key", run.name));
        }
        // Every run ends, and succeeds: every fault is one a retry or a failover absorbs.
        if run.state != pb::RunState::Succeeded as i32 {
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
        let mut started: BTreeMap<&str, Vec<(u32, String)>> = BTreeMap::new();
        let deps: HashMap<&str, &Vec<String>> = run.subtasks.iter().map(|s| (s.id.as_str(), &s.depends_on)).collect();
        for (k, e) in events.iter().enumerate() {
            match &e.event {
                Some(pb::run_event::Event::SubtaskSucceeded(s))
                    if succeeded_at.insert(s.subtask_id.as_str(), k).is_some() =>
                {
                    bad.push(format!("{}: {} succeeded twice in the event log", run.name, s.subtask_id));
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
            if *version != 1 {
                bad.push(format!("{}: {}'s record was written {version} times", run.name, s.id));
            }
            let recorded = record.get("output").and_then(|o| o.as_str()).unwrap_or_default();
            if s.state == pb::SubtaskState::Succeeded as i32
                && record.get("output_ref").is_none()
                && recorded != s.output_json
            {
                bad.push(format!("{}: {} served {:?} but recorded {recorded:?}", run.name, s.id, s.output_json));
            }
        }
        // Non-idempotent calls: each succeeded one appended its line once, or more only if an
        // earlier start of it ran on a worker the nemesis killed, froze past its lease, or cut
        // off from etcd past its lease (a call it finished whose report died with its leader).
        if run.subtasks.iter().any(|s| s.tool == "append") {
            let mut lines: HashMap<String, usize> = HashMap::new();
            for line in n.appended(&format!("{}.log", run.name)) {
                *lines.entry(line).or_default() += 1;
            }
            for s in run.subtasks.iter().filter(|s| s.tool == "append" && s.state == pb::SubtaskState::Succeeded as i32)
            {
                let count = lines.get(&s.id).copied().unwrap_or(0);
                let attempts = started.get(s.id.as_str()).cloned().unwrap_or_default();
                // Every start before the last on a worker that was killed, frozen or cut off
                // from etcd past its lease may have taken effect unreported (a leader that
                // restarts meanwhile may even dispatch the same attempt number again).
                let earlier = &attempts[..attempts.len().saturating_sub(1)];
                let excused = earlier.iter().filter(|(_, w)| n.disrupted.contains(w)).count();
                if count == 0 || count > 1 + excused {
                    bad.push(format!("{}: {} appended {count} times (attempts {attempts:?})", run.name, s.id));
                }
            }
        }
    }
    bad.extend(super::history::check(ops, &last, &finished));
    Ok(bad)
}
