//! One conformance suite for every [`StateStore`] backend.
//!
//! [`store_conformance_suite!`](crate::store_conformance_suite) expands every test below for a
//! backend; each test works under its own key prefix, so the suite can share one etcd. A backend
//! that cannot be started fails its tests: nothing is skipped silently.

use std::time::Duration;

use futures_util::StreamExt;

use crate::types::*;

fn prefix(test: &str) -> String {
    format!("/conformance/{test}/{:08x}/", fastrand_u32())
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u32
}

fn k(p: &str, name: &str) -> Vec<u8> {
    format!("{p}{name}").into_bytes()
}

async fn next_events(w: &mut WatchStream, want: usize) -> Vec<WatchEvent> {
    let mut got = Vec::new();
    while got.len() < want {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch delivered in time")
            .expect("watch stream open")
            .expect("no watch error");
        got.extend(batch);
    }
    got
}

/// Put, get, versions and revisions.
pub async fn put_get_revisions(s: &dyn StateStore) {
    let p = prefix("put_get");
    let r1 = s.commit(Txn::new().then(Op::put(k(&p, "a"), "1"))).await.expect("commit");
    assert!(r1.succeeded);
    let kv = s.get(&k(&p, "a")).await.expect("get").expect("present");
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision, kv.create_revision),
        (&b"1"[..], 1, r1.revision, r1.revision)
    );
    let r2 = s.commit(Txn::new().then(Op::put(k(&p, "a"), "2"))).await.expect("commit");
    assert!(r2.revision > r1.revision);
    let kv = s.get(&k(&p, "a")).await.expect("get").expect("present");
    assert_eq!((kv.value.as_slice(), kv.version, kv.create_revision), (&b"2"[..], 2, r1.revision));
    assert_eq!(s.get(&k(&p, "missing")).await.expect("get"), None);
}

/// Create-if-absent succeeds once.
pub async fn create_if_absent(s: &dyn StateStore) {
    let p = prefix("create");
    let key = k(&p, "idem");
    let txn = || Txn::new().when(Compare::Absent(key.clone())).then(Op::put(key.clone(), "first"));
    assert!(s.commit(txn()).await.expect("commit").succeeded);
    let second = Txn::new().when(Compare::Absent(key.clone())).then(Op::put(key.clone(), "second"));
    assert!(!s.commit(second).await.expect("commit").succeeded);
    assert_eq!(s.get(&key).await.expect("get").expect("present").value, b"first");
}

/// Compare-and-swap on the mod revision; a failed compare writes none of the ops.
pub async fn cas_is_atomic(s: &dyn StateStore) {
    let p = prefix("cas");
    let r = s.commit(Txn::new().then(Op::put(k(&p, "x"), "0"))).await.expect("commit");
    let stale = Txn::new()
        .when(Compare::ModRevision(k(&p, "x"), r.revision - 1))
        .then(Op::put(k(&p, "x"), "bad"))
        .then(Op::put(k(&p, "y"), "bad"));
    assert!(!s.commit(stale).await.expect("commit").succeeded);
    assert_eq!(s.get(&k(&p, "y")).await.expect("get"), None, "nothing of a failed txn is written");
    let fresh = Txn::new()
        .when(Compare::ModRevision(k(&p, "x"), r.revision))
        .when(Compare::Value(k(&p, "x"), b"0".to_vec()))
        .then(Op::put(k(&p, "x"), "1"))
        .then(Op::put(k(&p, "y"), "1"));
    let out = s.commit(fresh).await.expect("commit");
    assert!(out.succeeded);
    let (x, y) =
        (s.get(&k(&p, "x")).await.expect("get").expect("x"), s.get(&k(&p, "y")).await.expect("get").expect("y"));
    assert_eq!((x.mod_revision, y.mod_revision), (out.revision, out.revision), "one revision per txn");
}

/// Ranges are prefix-bounded, ordered and paged.
pub async fn range_pages(s: &dyn StateStore) {
    let p = prefix("range");
    let mut txn = Txn::new();
    for name in ["c", "a", "e", "b", "d"] {
        txn = txn.then(Op::put(k(&p, name), name));
    }
    txn = txn.then(Op::put(format!("{}~outside", &p[..p.len() - 1]).into_bytes(), "no"));
    s.commit(txn).await.expect("commit");
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = s.range(p.as_bytes(), after.as_deref(), 2).await.expect("range");
        assert!(page.kvs.len() <= 2);
        seen.extend(page.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, vec!["a", "b", "c", "d", "e"]);
}

/// Deletes, by key and by prefix.
pub async fn deletes(s: &dyn StateStore) {
    let p = prefix("delete");
    s.commit(
        Txn::new().then(Op::put(k(&p, "d/1"), "1")).then(Op::put(k(&p, "d/2"), "2")).then(Op::put(k(&p, "keep"), "k")),
    )
    .await
    .expect("commit");
    s.commit(Txn::new().then(Op::DeletePrefix { prefix: k(&p, "d/") })).await.expect("commit");
    let left = s.range(p.as_bytes(), None, 0).await.expect("range");
    assert_eq!(left.kvs.len(), 1);
    s.commit(Txn::new().then(Op::Delete { key: k(&p, "keep") })).await.expect("commit");
    assert_eq!(s.get(&k(&p, "keep")).await.expect("get"), None);
}

/// A transaction over the operation limit is refused whole.
pub async fn txn_limit(s: &dyn StateStore) {
    let p = prefix("limit");
    let mut txn = Txn::new();
    for i in 0..=s.max_txn_ops() {
        txn = txn.then(Op::put(k(&p, &i.to_string()), "v"));
    }
    let err = s.commit(txn).await.expect_err("over the limit");
    assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
    assert!(s.range(p.as_bytes(), None, 0).await.expect("range").kvs.is_empty());
}

/// A transaction that writes one key twice is refused whole (etcd: "duplicate key given in
/// txn request"); `RunRepo::write_batch` never sends one.
pub async fn duplicate_keys(s: &dyn StateStore) {
    let p = prefix("dup");
    let txn = Txn::new().then(Op::put(k(&p, "a"), "1")).then(Op::put(k(&p, "b"), "1")).then(Op::put(k(&p, "a"), "2"));
    let err = s.commit(txn).await.expect_err("a key twice");
    assert!(matches!(err, StoreError::Other(ref m) if m.contains("duplicate key")), "{err:?}");
    assert!(s.range(p.as_bytes(), None, 0).await.expect("range").kvs.is_empty());
}

/// A watch from a past revision replays, then follows live changes.
pub async fn watch_replays_then_follows(s: &dyn StateStore) {
    let p = prefix("watch");
    let first = s.commit(Txn::new().then(Op::put(k(&p, "a"), "1"))).await.expect("commit");
    s.commit(Txn::new().then(Op::put(k(&p, "b"), "2"))).await.expect("commit");
    s.commit(Txn::new().then(Op::put(b"/conformance-elsewhere".to_vec(), "x"))).await.expect("commit");
    let mut w = s.watch(p.as_bytes(), first.revision).await.expect("watch");
    let past = next_events(&mut w, 2).await;
    assert!(matches!(&past[0], WatchEvent::Put(kv) if kv.key == k(&p, "a")));
    assert!(matches!(&past[1], WatchEvent::Put(kv) if kv.key == k(&p, "b")));
    s.commit(Txn::new().then(Op::Delete { key: k(&p, "a") })).await.expect("commit");
    let live = next_events(&mut w, 1).await;
    assert!(matches!(&live[0], WatchEvent::Delete { key, .. } if *key == k(&p, "a")));
}

/// A watch from a compacted revision fails with `Compacted`; from a later one it works.
pub async fn watch_after_compaction(s: &dyn StateStore) {
    let p = prefix("compact");
    let first = s.commit(Txn::new().then(Op::put(k(&p, "a"), "1"))).await.expect("commit");
    let second = s.commit(Txn::new().then(Op::put(k(&p, "a"), "2"))).await.expect("commit");
    s.compact(second.revision).await.expect("compact");
    let compacted = match s.watch(p.as_bytes(), first.revision).await {
        Err(e) => e,
        Ok(mut w) => tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an answer in time")
            .expect("an item")
            .expect_err("the revision is compacted"),
    };
    assert!(matches!(compacted, StoreError::Compacted { .. }), "{compacted:?}");
    let mut w = s.watch(p.as_bytes(), second.revision).await.expect("watch");
    let events = next_events(&mut w, 1).await;
    assert!(matches!(&events[0], WatchEvent::Put(kv) if kv.value == b"2"));
}

/// Revoking a lease deletes the keys bound to it; a dead lease cannot take new keys.
pub async fn lease_revoke(s: &dyn StateStore) {
    let p = prefix("lease");
    let lease = s.grant_lease(Duration::from_secs(30)).await.expect("grant");
    s.commit(Txn::new().then(Op::Put { key: k(&p, "w"), value: b"1".to_vec(), lease: Some(lease) }))
        .await
        .expect("commit");
    s.keep_alive(lease).await.expect("keep alive");
    assert!(s.get(&k(&p, "w")).await.expect("get").is_some());
    s.revoke_lease(lease).await.expect("revoke");
    assert_eq!(s.get(&k(&p, "w")).await.expect("get"), None);
    let err = s
        .commit(Txn::new().then(Op::Put { key: k(&p, "w"), value: b"1".to_vec(), lease: Some(lease) }))
        .await
        .expect_err("dead lease");
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
}

/// Expands the conformance suite for a backend: `store_conformance_suite!(async_expr)`, where
/// the expression (awaited inside each test) yields something that derefs to a `StateStore`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:expr) => {
        $crate::store_conformance_suite!(@tests $make;
            put_get_revisions, create_if_absent, cas_is_atomic, range_pages, deletes, txn_limit,
            duplicate_keys, watch_replays_then_follows, watch_after_compaction, lease_revoke);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make;
                $crate::conformance::$name(&*store).await;
            }
        )*
    };
}
