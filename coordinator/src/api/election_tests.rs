//! A call that comes while no leader is known waits for the election instead of being refused.

use std::sync::Arc;
use std::time::Duration;

use swarm_proto::ApiError;
use swarm_store::memory::MemoryStore;
use swarm_store::repo::RunRepo;
use tokio_util::sync::CancellationToken;

use super::{ELECTION_WAIT, SwarmApi};
use crate::forward::Forwarder;
use crate::node::Role;

fn api(role: tokio::sync::watch::Receiver<Role>) -> SwarmApi {
    api_stopping(role, Default::default())
}

fn api_stopping(role: tokio::sync::watch::Receiver<Role>, shutdown: CancellationToken) -> SwarmApi {
    SwarmApi::new(
        role,
        Default::default(),
        shutdown,
        Forwarder::new("http://127.0.0.1:1".into(), None),
        (false, false),
        RunRepo::new(Arc::new(MemoryStore::new()), "/t"),
        Arc::new(crate::audit::AuditLog::off()),
    )
}

fn leader_named(e: Result<impl Sized, ApiError>) -> Option<String> {
    match e {
        Err(ApiError::NotLeader { leader }) => leader,
        Ok(_) => panic!("this node does not lead"),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_during_an_election_is_answered_once_a_leader_is_known() {
    let (tx, rx) = tokio::sync::watch::channel(Role::Standby { leader: None });
    let api = api(rx);
    let call = tokio::spawn(async move { leader_named(api.leader().await) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!call.is_finished(), "answered before any leader was known");
    tx.send(Role::Standby { leader: Some("http://127.0.0.1:9".into()) }).expect("the api holds the receiver");
    assert_eq!(
        call.await.expect("no panic").as_deref(),
        Some("http://127.0.0.1:9"),
        "the hint names the elected leader"
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_leader_elected_the_call_is_refused_after_a_bounded_wait() {
    let (_tx, rx) = tokio::sync::watch::channel(Role::Standby { leader: None });
    let api = api(rx);
    let started = tokio::time::Instant::now();
    assert_eq!(leader_named(api.leader().await), None);
    assert_eq!(started.elapsed(), ELECTION_WAIT);
}

#[tokio::test(start_paused = true)]
async fn a_known_leader_is_named_at_once() {
    let (_tx, rx) = tokio::sync::watch::channel(Role::Standby { leader: Some("http://127.0.0.1:9".into()) });
    let started = tokio::time::Instant::now();
    assert!(leader_named(api(rx).leader().await).is_some());
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_stopping_node_does_not_wait_for_an_election() {
    let (_tx, rx) = tokio::sync::watch::channel(Role::Standby { leader: None });
    let shutdown = CancellationToken::new();
    let api = api_stopping(rx, shutdown.clone());
    let call = tokio::spawn(async move { leader_named(api.leader().await) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = tokio::time::Instant::now();
    shutdown.cancel();
    assert_eq!(call.await.expect("no panic"), None);
    assert_eq!(asked.elapsed(), Duration::ZERO, "answered when shutdown began");
}
