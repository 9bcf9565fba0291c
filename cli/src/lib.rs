//! The pieces behind the `swarm` binary, reusable by tests: the embedded cluster, the client
//! helpers, spec files and generators, and the benchmarks.

pub mod bench;
pub mod certs;
pub mod client;
pub mod config;
pub mod embedded;
pub mod events;
pub mod output;
pub mod replay;
pub mod specs;
