//! The nemesis (see `swarm_tests::nemesis`): in the suite, every kind of fault once in a seeded
//! order; random seeded schedules for as long as asked (`scripts/nemesis MINUTES`).

use std::time::Duration;

use swarm_tests::nemesis;

/// The seed of the suite's round, unless `SWARM_NEMESIS_SEED` names another (a failure prints
/// the seed to replay).
const SUITE_SEED: u64 = 20261201;

fn seed_from_env() -> Option<u64> {
    std::env::var("SWARM_NEMESIS_SEED").ok().and_then(|s| s.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_seeded_schedule_of_faults_nothing_is_lost_or_run_twice() {
    let _serial = crate::failover::SERIAL.lock().await;
    let seed = seed_from_env().unwrap_or(SUITE_SEED);
    nemesis::round(seed, nemesis::tour(seed)).await.expect("every invariant holds");
}

/// Rounds with fresh seeds for `SWARM_NEMESIS_MINUTES` (default 10); each round's figures go
/// to stderr. Run by `scripts/nemesis`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by scripts/nemesis"]
async fn nemesis_long() {
    let _serial = crate::failover::SERIAL.lock().await;
    let minutes: u64 = std::env::var("SWARM_NEMESIS_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(10);
    let until = tokio::time::Instant::now() + Duration::from_secs(minutes * 60);
    let (mut rounds, mut faults, mut runs, mut calls) = (0, 0, 0, 0);
    let mut seed = seed_from_env().unwrap_or_else(|| fastrand::u64(..));
    while tokio::time::Instant::now() < until {
        let plan = nemesis::schedule(seed, Duration::from_secs(60));
        let (f, r, c) = nemesis::round(seed, plan).await.expect("every invariant holds");
        (rounds, faults, runs, calls) = (rounds + 1, faults + f, runs + r, calls + c);
        seed = fastrand::u64(..);
    }
    eprintln!("nemesis: {rounds} rounds, {faults} faults, {runs} runs, {calls} tool calls: every invariant held");
}
