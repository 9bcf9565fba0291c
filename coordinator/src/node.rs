//! A coordinator node's life: campaign for leadership, lead a term, step down, campaign again.
//!
//! Each term has its own fenced repository (writes compare the leader key's create revision),
//! its own run manager (restored from the store) and its own helpers: a watch on worker
//! registrations (an expired lease re-queues that worker's attempts) and the retention janitor.
//! A term ends when the node's lease is lost, a write is fenced out, or the node shuts down (it
//! then resigns, so a standby takes over at once).

use std::collections::HashSet;
use std::sync::Arc;

use backon::BackoffBuilder;
use std::time::Duration;

use futures_util::StreamExt;
use swarm_core::WorkerId;
use swarm_store::election::{Election, keep_lease_alive};
use swarm_store::{RunRepo, StateStore, StoreError, WatchEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::CoordinatorConfig;
use crate::manager::{self, Command, ManagerConfig, ManagerHandle, Startup};
use crate::recovery;

/// What a leader's request handlers need.
pub struct LeaderCtx {
    /// The term's run manager.
    pub manager: ManagerHandle,
    /// The term's fenced repository.
    pub repo: RunRepo,
    /// Cancelled when the term ends: streams it serves end then (the caller resumes on the
    /// next leader), rather than wait on a log that no longer grows.
    pub term: CancellationToken,
    /// The ended run `GetRun` pages through, rebuilt from the store once.
    pub pages: crate::recovery::StoredPages,
}

/// This node's role, as the request handlers see it.
#[derive(Clone)]
pub enum Role {
    /// Leading a term.
    Leader(Arc<LeaderCtx>),
    /// Not leading; the leader's address when known.
    Standby { leader: Option<String> },
}

/// Runs terms until `shutdown`.
pub async fn run(
    config: CoordinatorConfig,
    store: Arc<dyn StateStore>,
    role: watch::Sender<Role>,
    shutdown: CancellationToken,
    fatal: manager::Fatal,
) {
    let base = RunRepo::new(store.clone(), config.prefix.clone()).with_payloads(config.payloads.clone());
    let election = Election::new(store.clone(), &base.election_name());
    let tracker = TaskTracker::new();
    // Failed lease grants and campaigns are retried 100 ms doubling to 2 s, jittered; a term
    // that began resets the delays.
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times();
    let mut delays = backoff.build();
    // Before standing by at all: this node must read the payload store the others write.
    loop {
        match base.payloads_shared().await {
            Ok(true) => break,
            Ok(false) => {
                let reason = format!(
                    "this coordinator's payload store ({:?}) does not hold the cluster's marker (named by {} \
                     in the state store): coordinators of one cluster must share their payload store (--payloads: \
                     a directory all of them mount; docs/deploy.md), or a standby could not resume runs with \
                     offloaded specs or outputs. Refusing to stand by.",
                    base.payloads(),
                    base.payload_marker_key()
                );
                tracing::error!(%reason, "payload store not shared");
                fatal.trip(reason);
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot check the payload store; retrying");
                pause(&shutdown, delays.next().unwrap_or(Duration::from_secs(2))).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
        }
    }
    while !shutdown.is_cancelled() {
        let lease = match store.grant_lease(config.lease_ttl).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot get a lease; retrying");
                pause(&shutdown, delays.next().unwrap_or(Duration::from_secs(2))).await;
                continue;
            }
        };
        let lease_lost = CancellationToken::new();
        let keeper_stop = CancellationToken::new();
        tracker.spawn({
            let (store, lost, stop, ttl) = (store.clone(), lease_lost.clone(), keeper_stop.clone(), config.lease_ttl);
            async move {
                if let Err(e) = keep_lease_alive(store, lease, ttl, stop).await {
                    warn!(error = %e, "coordinator lease lost");
                    lost.cancel();
                }
            }
        });
        let follow_stop = CancellationToken::new();
        tracker.spawn(follow_leader(election.clone(), role.clone(), follow_stop.clone()));
        let won = tokio::select! {
            r = election.campaign(lease, &config.advertise) => r,
            _ = lease_lost.cancelled() => Err(StoreError::LeaseNotFound(lease.0)),
            _ = shutdown.cancelled() => Err(StoreError::Other("shutting down".into())),
        };
        follow_stop.cancel();
        let leadership = match won {
            Ok(l) => l,
            Err(e) => {
                if !shutdown.is_cancelled() {
                    warn!(error = %e, "campaign failed; starting over");
                }
                keeper_stop.cancel();
                let _ = store.revoke_lease(lease).await;
                pause(&shutdown, delays.next().unwrap_or(Duration::from_secs(2))).await;
                continue;
            }
        };
        delays = backoff.build();
        info!(leader_key_revision = leadership.revision, advertise = %config.advertise, "elected leader");
        let term = shutdown.child_token();
        let repo = base.fenced(leadership.fence());
        match start_term(&config, &store, &repo, &tracker, &term, leadership.revision, &fatal).await {
            Ok(manager) => {
                role.send_replace(Role::Leader(Arc::new(LeaderCtx {
                    manager,
                    repo,
                    term: term.clone(),
                    pages: Default::default(),
                })));
                tokio::select! {
                    _ = lease_lost.cancelled() => warn!(term = leadership.revision, "lease lost; stepping down"),
                    _ = term.cancelled() => {}
                }
            }
            Err(e) => warn!(error = %e, "could not start the term; stepping down"),
        }
        role.send_replace(Role::Standby { leader: None });
        term.cancel();
        if let Some(reason) = fatal.reason() {
            tracing::error!(term = leadership.revision, %reason, "cannot go on; resigning leadership");
        } else if shutdown.is_cancelled() {
            info!(term = leadership.revision, "resigning leadership");
        } else {
            warn!(term = leadership.revision, "term over; campaigning again");
        }
        let _ = election.resign(&leadership).await;
        keeper_stop.cancel();
        let _ = store.revoke_lease(lease).await;
    }
    tracker.close();
    tracker.wait().await;
}

async fn pause(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

async fn start_term(
    config: &CoordinatorConfig,
    store: &Arc<dyn StateStore>,
    repo: &RunRepo,
    tracker: &TaskTracker,
    term: &CancellationToken,
    revision: i64,
    fatal: &manager::Fatal,
) -> Result<ManagerHandle, StoreError> {
    let term_no = repo.next_term().await?;
    let fences = swarm_core::fence::FenceSeq::for_term(term_no).map_err(|e| StoreError::Other(e.to_string()))?;
    info!(term = term_no, revision, "term begins");
    let recovered = recovery::load(repo, &config.limits).await?;
    let workers = store.range(&repo.workers_prefix(), None, 0).await?;
    let prefix_len = repo.workers_prefix().len();
    let expected_workers: HashSet<WorkerId> = workers
        .kvs
        .iter()
        .map(|kv| WorkerId::from(String::from_utf8_lossy(&kv.key[prefix_len..]).into_owned()))
        .collect();
    let manager_config = ManagerConfig {
        term: term_no,
        coordinator_id: config.advertise.clone(),
        trust_worker_tool_flags: config.manager.trust_worker_tool_flags && !config.auth.enabled(),
        tenants: config.auth.tenants().clone(),
        ..config.manager.clone()
    };
    let startup = Startup { recovered, expected_workers, fences, clock: None, fatal: fatal.clone() };
    let manager = manager::spawn(manager_config, repo.clone(), tracker, term.clone(), startup);
    tracker.spawn(watch_workers(store.clone(), repo.workers_prefix(), manager.clone(), term.clone()));
    if let Some(ttl) = config.run_ttl {
        tracker.spawn(janitor(repo.clone(), manager.clone(), ttl, term.clone()));
    }
    Ok(manager)
}

/// Tells standby callers who leads.
async fn follow_leader(election: Election, role: watch::Sender<Role>, stop: CancellationToken) {
    let mut known = None;
    loop {
        let changed = tokio::select! {
            _ = stop.cancelled() => return,
            c = election.changed(known.as_ref()) => c,
        };
        match changed {
            Ok(now) => {
                if !stop.is_cancelled() {
                    role.send_replace(Role::Standby { leader: now.as_ref().map(|l| l.value.clone()) });
                }
                known = now;
            }
            Err(e) => {
                warn!(error = %e, "cannot follow the election; retrying");
                pause(&stop, Duration::from_secs(1)).await;
            }
        }
    }
}

/// Re-queues the attempts of workers whose registration lease expires.
async fn watch_workers(store: Arc<dyn StateStore>, prefix: Vec<u8>, manager: ManagerHandle, term: CancellationToken) {
    let id_of = |key: &[u8]| WorkerId::from(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
    let mut known: HashSet<WorkerId> = HashSet::new();
    while !term.is_cancelled() {
        let page = match store.range(&prefix, None, 0).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot list workers; retrying");
                pause(&term, Duration::from_secs(1)).await;
                continue;
            }
        };
        let now: HashSet<WorkerId> = page.kvs.iter().map(|kv| id_of(&kv.key)).collect();
        for gone in known.difference(&now) {
            let _ = manager.send(Command::WorkerExpired { worker_id: gone.clone() }).await;
        }
        for id in &now {
            let _ = manager.send(Command::WorkerRegistered { worker_id: id.clone() }).await;
        }
        known = now;
        let mut watch = match store.watch(&prefix, page.revision + 1).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch workers; retrying");
                pause(&term, Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = term.cancelled() => return,
                n = watch.next() => n,
            };
            match next {
                Some(Ok(events)) => {
                    for e in events {
                        match e {
                            WatchEvent::Put(kv) => {
                                let id = id_of(&kv.key);
                                if known.insert(id.clone()) {
                                    let _ = manager.send(Command::WorkerRegistered { worker_id: id }).await;
                                }
                            }
                            WatchEvent::Delete { key, .. } => {
                                let id = id_of(&key);
                                known.remove(&id);
                                let _ = manager.send(Command::WorkerExpired { worker_id: id }).await;
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "worker watch broke; listing again");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Deletes runs that ended more than `ttl` ago.
async fn janitor(repo: RunRepo, manager: ManagerHandle, ttl: Duration, term: CancellationToken) {
    let every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        pause(&term, every).await;
        if term.is_cancelled() {
            return;
        }
        let cutoff = manager::now_us().saturating_sub(ttl.as_micros() as u64);
        let Ok(gone) = manager.call(|reply| Command::Forget { ended_before_us: cutoff, reply }).await else { return };
        if gone.is_empty() {
            continue;
        }
        let ops: Vec<_> = gone.iter().flat_map(|(run, key)| repo.delete_run_ops(run, key.as_deref())).collect();
        match repo.write_batch(&ops).await {
            Ok(_) => info!(runs = gone.len(), "expired runs deleted"),
            Err(e) => warn!(error = %e, runs = gone.len(), "deleting expired runs failed"),
        }
        if let Some(payloads) = repo.payloads() {
            for (run, _) in &gone {
                if let Err(e) = payloads.delete_prefix(&RunRepo::payload_prefix(run)).await {
                    warn!(run_id = %run, error = %e, "deleting payloads of an expired run failed");
                }
            }
        }
    }
}
