//! The store conformance suite against a real etcd: each test starts its own single-node etcd
//! (free loopback ports, temp dir), which is SIGKILLed when the test ends.

use swarm_store::EtcdStore;
use swarm_tests::etcd::EtcdCluster;

/// An etcd store that owns its server.
struct Fixture {
    store: EtcdStore,
    _etcd: EtcdCluster,
}

impl std::ops::Deref for Fixture {
    type Target = EtcdStore;
    fn deref(&self) -> &EtcdStore {
        &self.store
    }
}

async fn etcd_store() -> Fixture {
    let etcd = EtcdCluster::start(1).await.expect("etcd must start for the conformance suite");
    let store =
        EtcdStore::connect(&etcd.endpoints(), std::time::Duration::from_secs(5)).await.expect("connect to etcd");
    Fixture { store, _etcd: etcd }
}

swarm_store::store_conformance_suite!(etcd_store().await);
