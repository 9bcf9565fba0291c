//! The registry's unit tests.

use super::*;

fn join(
    r: &mut WorkerRegistry,
    conn: ConnId,
    id: &str,
) -> (WorkerKey, mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>) {
    let (tx, rx) = mpsc::channel(8);
    let tools = ["echo".to_owned()].into_iter().collect();
    (r.join(conn, WorkerId::from(id), 4, tools, tx), rx)
}

fn assignment(fence: u64) -> pb::Assignment {
    pb::Assignment { fence, tool: "echo".into(), ..Default::default() }
}

#[test]
fn a_reused_slot_gets_a_new_generation_and_old_keys_match_nothing() {
    let mut r = WorkerRegistry::new();
    let (a, _rx) = join(&mut r, ConnId(1), "a");
    r.assign(a, (RunKey(0), SubtaskIx(0)), assignment(10), None, 0);
    let lost = r.lose(a);
    assert_eq!(lost.len(), 1, "its attempt comes back");
    assert!(r.get(a).is_none());
    let (b, _rx2) = join(&mut r, ConnId(2), "b");
    assert_ne!(a, b, "same slot, new generation");
    assert!(r.get(a).is_none(), "the old key does not reach the new worker");
    assert_eq!(r.id(b).map(WorkerId::as_str), Some("b"));
    assert_eq!(r.release(a, Fence(10)), None);
    assert!(r.by_conn(ConnId(1)).is_none());
    assert_eq!(r.by_conn(ConnId(2)), Some(b));
}

#[test]
fn held_resources_come_back_on_every_way_an_attempt_ends_and_follow_a_reattached_one() {
    let gpu = Arc::new(Placement {
        resources: [("gpu".into(), swarm_core::placement::Quantity(1000))].into(),
        ..Placement::default()
    });
    let fits = |r: &WorkerRegistry, k: WorkerKey| r.get(k).map(|w| w.fit(&gpu));
    let mut r = WorkerRegistry::new();
    let (a, _ra) = join(&mut r, ConnId(1), "a");
    r.describe(a, Default::default(), [("gpu".to_owned(), 1000)].into(), 0);
    assert_eq!(fits(&r, a), Some(Fit::Now(0)));
    // Released by its report.
    r.assign(a, (RunKey(0), SubtaskIx(0)), assignment(1), Some(&gpu), 0);
    assert_eq!(fits(&r, a), Some(Fit::NotNow), "its one gpu is held");
    assert!(r.release(a, Fence(1)).is_some());
    assert_eq!(fits(&r, a), Some(Fit::Now(0)));
    // Released when it falls silent.
    r.assign(a, (RunKey(0), SubtaskIx(1)), assignment(2), Some(&gpu), 0);
    assert_eq!(r.silent(10_000, 500, &HashSet::new()).len(), 1);
    assert_eq!(fits(&r, a), Some(Fit::Now(0)));
    // Held across a dropped connection by the same worker, and nowhere twice.
    r.assign(a, (RunKey(0), SubtaskIx(2)), assignment(3), Some(&gpu), 20_000);
    assert_eq!(r.detach(a), 1);
    let (a2, _ra2) = join(&mut r, ConnId(2), "a");
    r.describe(a2, Default::default(), [("gpu".to_owned(), 1000)].into(), 20_000);
    assert_eq!(fits(&r, a2), Some(Fit::Now(0)));
    assert!(r.reattach(a2, Fence(3), 20_000));
    assert_eq!(fits(&r, a2), Some(Fit::NotNow), "the reattached attempt holds it here");
    assert!(r.release(a2, Fence(3)).is_some());
    assert_eq!(fits(&r, a2), Some(Fit::Now(0)));
    assert!(r.holding.is_empty(), "nothing left held");
    // Lost with its worker: nothing left held either.
    r.assign(a2, (RunKey(0), SubtaskIx(3)), assignment(4), Some(&gpu), 20_000);
    assert_eq!(r.lose(a2).len(), 1);
    assert!(r.holding.is_empty());
}

#[test]
fn only_the_holder_can_release_or_touch_an_attempt() {
    let mut r = WorkerRegistry::new();
    let (a, _ra) = join(&mut r, ConnId(1), "a");
    let (b, _rb) = join(&mut r, ConnId(2), "b");
    r.assign(a, (RunKey(3), SubtaskIx(7)), assignment(42), None, 100);
    assert_eq!(r.usage(), (2, 1, 8));
    assert_eq!(r.touch(b, Fence(42), 200), None, "another worker's attempt");
    assert_eq!(r.release(b, Fence(42)), None);
    assert_eq!(r.touch(a, Fence(42), 200).map(|h| h.last_beat_us), Some(200));
    assert_eq!(r.release(a, Fence(42)).map(|h| (h.run, h.subtask)), Some((RunKey(3), SubtaskIx(7))));
    assert_eq!(r.release(a, Fence(42)), None, "once");
    assert_eq!(r.usage(), (2, 0, 8));
}

#[test]
fn silent_attempts_are_released_and_cancelled_on_their_worker() {
    let mut r = WorkerRegistry::new();
    let (a, mut rx) = join(&mut r, ConnId(1), "a");
    r.assign(a, (RunKey(0), SubtaskIx(0)), assignment(1), None, 0);
    r.assign(a, (RunKey(0), SubtaskIx(1)), assignment(2), None, 0);
    r.touch(a, Fence(2), 900);
    assert!(r.flush().is_empty());
    let silent = r.silent(1_000, 500, &HashSet::new());
    assert_eq!(silent.iter().map(|(f, _)| *f).collect::<Vec<_>>(), [Fence(1)]);
    assert!(r.holds(Fence(2)) && !r.holds(Fence(1)));
    assert!(r.flush().is_empty());
    let mut cancels = Vec::new();
    while let Ok(Ok(msg)) = rx.try_recv() {
        if let Some(pb::coordinator_message::Msg::Cancels(c)) = msg.msg {
            cancels.extend(c.fences);
        }
    }
    assert_eq!(cancels, [1]);
}

#[test]
fn a_silent_worker_whose_lease_lives_keeps_its_attempts_until_the_lease_ends() {
    let mut r = WorkerRegistry::new();
    let (a, _rx_a) = join(&mut r, ConnId(1), "a");
    let (b, _rx_b) = join(&mut r, ConnId(2), "b");
    r.assign(a, (RunKey(0), SubtaskIx(0)), assignment(1), None, 0);
    r.assign(b, (RunKey(0), SubtaskIx(1)), assignment(2), None, 0);
    r.assign(b, (RunKey(0), SubtaskIx(2)), assignment(3), None, 0);
    // `b` is heard (its heartbeats arrive) but says nothing of attempt 3.
    r.heard(b, 900);
    r.touch(b, Fence(2), 900);
    let leased: HashSet<WorkerId> = ["a", "b"].into_iter().map(WorkerId::from).collect();
    let silent = r.silent(1_000, 500, &leased);
    // `a` is silent as a whole, its lease alive: cut off from us only, it keeps attempt 1.
    // `b` speaks without attempt 3: that one is gone.
    assert_eq!(silent.iter().map(|(f, _)| *f).collect::<Vec<_>>(), [Fence(3)]);
    assert!(r.holds(Fence(1)));
    // Detached, with its lease alive: still kept.
    r.detach(a);
    assert!(r.silent(5_000, 500, &leased).iter().all(|(f, _)| *f != Fence(1)));
    // Its lease ended: silence decides again.
    let silent = r.silent(5_000, 500, &HashSet::new());
    assert!(silent.iter().any(|(f, _)| *f == Fence(1)), "{silent:?}");
}

#[test]
fn a_full_stream_is_reported_by_flush() {
    let mut r = WorkerRegistry::new();
    let (tx, _rx) = mpsc::channel(1);
    let a = r.join(ConnId(1), WorkerId::from("a"), 4, HashSet::new(), tx);
    r.assign(a, (RunKey(0), SubtaskIx(0)), assignment(1), None, 0);
    r.cancel(a, Fence(9));
    assert_eq!(r.flush(), [a], "the second message did not fit");
}

#[test]
fn a_draining_worker_offers_no_slots() {
    let mut r = WorkerRegistry::new();
    let (a, _rx) = join(&mut r, ConnId(1), "a");
    assert_eq!(r.free_slots(), 4);
    assert_eq!(r.drain(a).map(|(_, running)| running), Some(0));
    assert_eq!(r.free_slots(), 0);
}

#[test]
fn a_detached_workers_id_counts_as_in_use_until_its_attempts_are_settled() {
    let mut r = WorkerRegistry::new();
    let (a, _rx) = join(&mut r, ConnId(1), "a");
    assert!(!r.holds_detached(&WorkerId::from("a")), "connected, not detached");
    r.assign(a, (RunKey(0), SubtaskIx(0)), assignment(10), None, 0);
    assert_eq!(r.detach(a), 1);
    assert!(r.holds_detached(&WorkerId::from("a")), "its attempt waits for it");
    assert!(!r.holds_detached(&WorkerId::from("b")));
    assert_eq!(r.take_detached(&WorkerId::from("a")).len(), 1);
    assert!(!r.holds_detached(&WorkerId::from("a")), "settled");
}
