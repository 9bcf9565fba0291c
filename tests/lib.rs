//! Test harness for Swarm's integration tests (see `it/`): an in-process cluster over real
//! gRPC on loopback, and a recording tool that observes every execution from outside.

pub mod balancer;
pub mod etcd;
pub mod fault_proxy;
pub mod fixture;
pub mod harness;
pub mod nemesis;
pub mod otlp;
pub mod proc_cluster;
pub mod process;
pub mod s3;
