//! Swarm's state store.
//!
//! [`StateStore`] is small and shaped like etcd: revisions, reads by key and prefix, atomic
//! transactions guarded by compares, prefix watches that resume from a revision, and leases.
//! Typed keys, codecs and batching live above it in [`repo`]. [`MemoryStore`] is the embedded
//! default; the etcd backend implements the same trait and passes the same conformance suite
//! ([`conformance`]).

pub mod agent_records;
pub mod conformance;
pub mod election;
pub mod etcd;
pub mod memory;
pub mod payload;
pub mod repo;
mod types;

pub use etcd::{EtcdSecurity, EtcdStore};
pub use memory::MemoryStore;
pub use repo::RunRepo;
pub use types::*;
