//! Tests of the run repository on the memory store.

use super::*;
use crate::MemoryStore;

fn header(run: &str, key: Option<&str>) -> RunHeader {
    RunHeader { idempotency_key: key.map(str::to_owned), ..RunHeader::running(RunId::from(run), "n", 1) }
}

#[tokio::test]
async fn idempotent_create_returns_the_first_run() {
    let repo = RunRepo::new(Arc::new(MemoryStore::new()), DEFAULT_PREFIX);
    let spec = RunSpec::new("n", vec![]);
    assert_eq!(repo.create_run(&header("r1", Some("k")), &spec).await, Ok(Created::New));
    assert_eq!(repo.create_run(&header("r2", Some("k")), &spec).await, Ok(Created::Existing(RunId::from("r1"))));
    assert_eq!(repo.header(&RunId::from("r2")).await, Ok(None));
    assert_eq!(repo.headers(None, 10).await.expect("list").0.len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_left_by_a_deleted_run_is_free_again() {
    let repo = RunRepo::new(Arc::new(MemoryStore::new()), DEFAULT_PREFIX);
    let spec = RunSpec::new("n", vec![]);
    assert_eq!(repo.create_run(&header("r1", Some("k")), &spec).await.expect("create"), Created::New);
    // The run is deleted but its key is left behind (as by versions before the janitor
    // deleted keys, or a delete that failed half-way).
    let ops: Vec<Op> = repo.delete_run_ops(&RunId::from("r1"), None);
    repo.write_batch(&ops).await.expect("delete");
    assert_eq!(repo.create_run(&header("r2", Some("k")), &spec).await.expect("create"), Created::New);
    assert_eq!(
        repo.create_run(&header("r3", Some("k")), &spec).await.expect("create"),
        Created::Existing(RunId::from("r2")),
        "the key now names the run that exists"
    );
    // The janitor's delete takes the key with the run.
    repo.write_batch(&repo.delete_run_ops(&RunId::from("r2"), Some("k"))).await.expect("delete");
    assert!(repo.store().get(b"/swarm/v1/idempotency/k").await.expect("get").is_none());
}

#[tokio::test]
async fn fenced_writes_fail_once_the_leader_key_is_gone() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let out = store.commit(Txn::new().then(Op::put("/leader/1", "me"))).await.expect("leader key");
    let repo = RunRepo::new(store.clone(), DEFAULT_PREFIX)
        .fenced(LeaderFence { key: b"/leader/1".to_vec(), revision: out.revision });
    let spec = RunSpec::new("n", vec![]);
    assert_eq!(repo.create_run(&header("r1", Some("k")), &spec).await, Ok(Created::New));
    assert_eq!(repo.create_run(&header("r2", Some("k")), &spec).await, Ok(Created::Existing(RunId::from("r1"))));
    store.commit(Txn::new().then(Op::Delete { key: b"/leader/1".to_vec() })).await.expect("depose");
    assert_eq!(repo.create_run(&header("r3", None), &spec).await, Err(StoreError::Fenced(out.revision)));
    assert_eq!(repo.header(&RunId::from("r3")).await, Ok(None));
}

#[tokio::test]
async fn each_term_gets_the_next_term_number_and_a_deposed_leader_gets_none() {
    use swarm_core::fence::FenceSeq;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    // Some history first, so the leader key's revision is not 1.
    for i in 0..300 {
        store.commit(Txn::new().then(Op::put(format!("/x/{i}"), "v"))).await.expect("write");
    }
    let out = store.commit(Txn::new().then(Op::put("/leader/1", "me"))).await.expect("leader key");
    let fence = LeaderFence { key: b"/leader/1".to_vec(), revision: out.revision };
    let repo = RunRepo::new(store.clone(), DEFAULT_PREFIX).fenced(fence.clone());
    // No counter yet: the first term starts above the fences the revision scheme gave out.
    let first = repo.next_term().await.expect("term");
    assert_eq!(first, FenceSeq::first_term_after_revision_scheme(out.revision as u64));
    let old_scheme_max = ((out.revision as u64) << 32) | 0xFFFF_FFFF;
    let mut fences = FenceSeq::for_term(first).expect("fits");
    assert!(fences.next().expect("fence").0 > old_scheme_max);
    // Later terms count up by one, whatever the revision has become.
    assert_eq!(repo.next_term().await, Ok(first + 1));
    assert_eq!(repo.next_term().await, Ok(first + 2));
    // A deposed leader cannot begin a term.
    store.commit(Txn::new().then(Op::Delete { key: b"/leader/1".to_vec() })).await.expect("depose");
    assert_eq!(repo.next_term().await, Err(StoreError::Fenced(out.revision)));
    // A counter that is not a number is reported with its key, never reset in silence.
    let plain = RunRepo::new(store.clone(), DEFAULT_PREFIX);
    store.commit(Txn::new().then(Op::put(plain.term_key(), "seven"))).await.expect("corrupt it");
    match plain.next_term().await {
        Err(StoreError::Corrupt { key, .. }) => assert!(key.ends_with("term"), "{key}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn batches_respect_the_txn_limit() {
    let repo = RunRepo::new(Arc::new(MemoryStore::new()), DEFAULT_PREFIX);
    let run = RunId::from("r");
    let rec = SubtaskRecord {
        state: SubtaskState::Succeeded,
        attempt: 1,
        worker: None,
        started_us: 0,
        finished_us: 1,
        steps: 1,
        output: Some("{}".into()),
        error_kind: None,
        error_message: None,
        output_ref: None,
        artifacts: vec![],
        term: 0,
        ready_us: None,
        first_started_us: None,
        reused: false,
    };
    let ops: Vec<Op> = (0..300).map(|i| repo.subtask_op(&run, &SubtaskId::from(format!("s{i:03}")), &rec)).collect();
    assert_eq!(repo.write_batch(&ops).await, Ok(3));
    assert_eq!(repo.subtasks(&run).await.expect("read").len(), 300);
}

#[tokio::test]
async fn a_batch_that_writes_a_key_twice_is_split_so_the_store_takes_it_and_the_last_write_wins() {
    let repo = RunRepo::new(Arc::new(MemoryStore::new()), DEFAULT_PREFIX);
    let ops = vec![
        Op::put("/swarm/v1/a", "1"),
        Op::put("/swarm/v1/b", "1"),
        Op::put("/swarm/v1/a", "2"),
        Op::DeletePrefix { prefix: b"/swarm/v1/c/".to_vec() },
        Op::put("/swarm/v1/c/x", "3"),
    ];
    assert_eq!(repo.write_batch(&ops).await.expect("written"), 3, "split before each overlap");
    let get = |k: &'static str| {
        let repo = repo.clone();
        async move { repo.store().get(k.as_bytes()).await.expect("get").map(|kv| kv.value) }
    };
    assert_eq!(get("/swarm/v1/a").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(get("/swarm/v1/c/x").await.as_deref(), Some(&b"3"[..]));
}
