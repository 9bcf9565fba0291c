//! Swarm's integration tests, in one binary: real gRPC over loopback against in-process
//! coordinators and workers.

mod agents;
mod api;
mod approvals;
mod audit;
mod breakdown;
mod cli;
mod clocks;
mod config;
mod deploy;
mod examples;
mod failover;
mod faults;
mod fencing;
mod forwarding;
mod gateway;
mod layout;
mod mcp;
mod nemesis;
mod output;
mod payloads;
mod resilience;
mod robustness;
mod runs;
mod s3;
mod sandbox;
mod security;
mod speculation;
mod store_etcd;
mod telemetry;
mod tenants;
mod tls;
mod upgrade;
mod web;
mod web_ops;
mod web_tls;
