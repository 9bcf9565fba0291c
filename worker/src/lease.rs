//! The worker's registration in the store, under a lease, and the tasks that keep its
//! [`hold::LeaseHold`] honest: attempts stop before a lost lease could expire, and are given back
//! when no coordinator can be reached for the link hold.

use super::*;

/// Keeps the worker registered under a lease; if the lease is lost (etcd out of reach for
/// longer than it), the worker registers anew. Every grant and refresh extends the worker's
/// [`hold::LeaseHold`], which stops the attempts before a lost lease could expire (see
/// [`enforce_hold`]); a hold given back (no coordinator for the link hold) revokes the lease.
pub(crate) async fn register(
    store: Arc<dyn StateStore>,
    prefix: String,
    config: WorkerConfig,
    tools: Arc<ToolRegistry>,
    held: Arc<Held>,
    hold: Arc<hold::LeaseHold>,
    shutdown: CancellationToken,
) {
    let key = format!("{prefix}workers/{}", config.worker_id).into_bytes();
    let value = serde_json::json!({
        "slots": config.slots,
        "tools": tools.infos().map(|t| t.name.clone()).collect::<Vec<_>>(),
    })
    .to_string();
    // Failed registrations are retried 200 ms doubling to 5 s, jittered; a registration that
    // held resets the delays.
    let backoff = store_backoff();
    let mut delays = backoff.build();
    while !shutdown.is_cancelled() {
        let sent = tokio::time::Instant::now();
        let registered = async {
            let lease = store.grant_lease(config.lease_ttl).await?;
            store
                .commit(Txn::new().then(Op::Put {
                    key: key.clone(),
                    value: value.clone().into_bytes(),
                    lease: Some(lease),
                }))
                .await?;
            Ok::<_, swarm_store::StoreError>(lease)
        }
        .await;
        match registered {
            Ok(lease) => {
                info!(worker_id = %config.worker_id, "registered");
                hold.renewed(sent);
                delays = backoff.build();
                let kept = swarm_store::election::keep_lease_alive_reporting(
                    store.clone(),
                    lease,
                    config.lease_ttl,
                    shutdown.clone(),
                    |sent| hold.renewed(sent),
                );
                let ended = tokio::select! {
                    r = kept => Some(r),
                    _ = hold.given_back() => None,
                };
                match ended {
                    Some(Ok(())) => {
                        let _ = store.revoke_lease(lease).await;
                        return;
                    }
                    Some(Err(e)) => {
                        hold.lost();
                        let running = held.running.lock().unwrap_or_else(|e| e.into_inner()).len();
                        warn!(worker_id = %config.worker_id, error = %e, running, "registration lease lost; registering again");
                    }
                    None => {
                        warn!(worker_id = %config.worker_id, "giving the registration lease back; registering again");
                        if let Err(e) = store.revoke_lease(lease).await {
                            warn!(worker_id = %config.worker_id, error = %e, "cannot revoke the lease; it expires by itself");
                        }
                    }
                }
            }
            Err(e) => {
                warn!(worker_id = %config.worker_id, error = %e, "cannot register; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))) => {}
                }
            }
        }
    }
}

/// Stops every running attempt when the worker's lease hold lapses (the lease could expire
/// soon, and the coordinator would re-queue them), and when no coordinator has been reachable
/// for the link hold (then the lease is given back, so the coordinator re-queues them).
pub(crate) async fn enforce_hold(
    hold: Arc<hold::LeaseHold>,
    held: Arc<Held>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) {
    let stop_all = |why: &'static str| {
        let running = held.running.lock().unwrap_or_else(|e| e.into_inner());
        for (fence, r) in running.iter() {
            hold.mark_stopped(*fence, why);
            r.token.cancel();
        }
        running.len()
    };
    let lease = async {
        loop {
            hold.restored().await;
            hold.lapsed().await;
            let stopped = stop_all(hold::FENCED_MESSAGE);
            warn!(worker_id = %config.worker_id, stopped, "lease not renewed in time: attempts stopped, no new ones until registered again");
        }
    };
    let link = async {
        loop {
            hold.link_lapsed(config.link_hold).await;
            if held.idle() {
                // Nothing to give back: wait for a stream, or for something to hold.
                tokio::select! {
                    _ = hold.link_restored() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let stopped = stop_all(hold::LINK_MESSAGE);
            warn!(worker_id = %config.worker_id, stopped, hold_ms = config.link_hold.as_millis() as u64, "no coordinator within the link hold: attempts stopped and the lease given back");
            hold.give_back();
            hold.link_restored().await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = lease => {}
        _ = link => {}
    }
}

/// Ends when the leader is no longer `known`. The store out of reach is no change of leader:
/// the stream to the coordinator goes on (the lease hold stops attempts if it lasts), and the
/// watch is tried again, 200 ms doubling to 5 s.
pub(crate) async fn watch_leader(election: Election, known: LeaderInfo, changed: CancellationToken) {
    let mut delays = store_backoff().build();
    loop {
        tokio::select! {
            _ = changed.cancelled() => return,
            r = election.changed(Some(&known)) => match r {
                Ok(now) => {
                    debug!(from = %known.value, to = ?now.map(|l| l.value), "leader changed");
                    changed.cancel();
                    return;
                }
                Err(e) => debug!(error = %e, "cannot watch the leader; the stream goes on"),
            }
        }
        tokio::select! {
            _ = changed.cancelled() => return,
            _ = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))) => {}
        }
    }
}

/// How the store is tried again after a failure: 200 ms doubling to 5 s, jittered, forever.
fn store_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}
