//! The fault benchmarks: random stragglers, and transient failures under three retry policies.

use std::time::Instant;

use super::{
    BenchOptions, RetriesBench, RetriesRun, StragglerBench, StragglerRun, median, seeded_swarm, submit_and_wait,
};
use crate::client;

/// Each attempt independently 10× slower with probability 2 %, speculation on and off.
pub(super) async fn stragglers(client: &mut client::Client, opts: &BenchOptions) -> anyhow::Result<StragglerBench> {
    let mut runs = Vec::new();
    for k in 0..opts.repeat.max(1) {
        let seed = opts.seed + k as u64;
        let (ideal_ms, mut spec) = seeded_swarm(opts, seed);
        if let Ok(text) = std::env::var("SWARM_BENCH_SPECULATION") {
            spec.speculation = serde_json::from_str(&text)?;
        }
        for t in &mut spec.subtasks {
            if let swarm_core::SubtaskKind::Tool { tool, args } = &mut t.kind
                && tool == "sleep"
            {
                args["straggler_prob"] = serde_json::json!(0.02);
                args["straggler_mult"] = serde_json::json!(10);
            }
        }
        let t0 = Instant::now();
        let on = submit_and_wait(client, &spec).await?;
        let wall_on_ms = t0.elapsed().as_secs_f64() * 1000.0;
        spec.speculation.enabled = false;
        let t1 = Instant::now();
        submit_and_wait(client, &spec).await?;
        let wall_off_ms = t1.elapsed().as_secs_f64() * 1000.0;
        let breakdown = on.wall_breakdown_ms.clone().unwrap_or_default();
        let parts: Vec<String> =
            breakdown.iter().filter(|(_, ms)| **ms >= 1.0).map(|(part, ms)| format!("{part} {ms:.0}")).collect();
        eprintln!(
            "stragglers (seed {seed}): ideal {ideal_ms:.0} ms; speculation on {wall_on_ms:.0} ms ({:.3}×, {} backups, {} won; {}); off {wall_off_ms:.0} ms ({:.3}×)",
            wall_on_ms / ideal_ms,
            on.speculative_attempts,
            on.speculative_wins,
            parts.join(", "),
            wall_off_ms / ideal_ms
        );
        runs.push(StragglerRun {
            seed,
            ideal_ms,
            wall_on_ms,
            wall_off_ms,
            speculative_attempts: on.speculative_attempts,
            speculative_wins: on.speculative_wins,
            breakdown,
        });
    }
    Ok(StragglerBench {
        median_ratio_speculation_on: median(runs.iter().map(|r| r.wall_on_ms / r.ideal_ms).collect()),
        median_ratio_speculation_off: median(runs.iter().map(|r| r.wall_off_ms / r.ideal_ms).collect()),
        runs,
    })
}

/// The efficiency DAG with 5 % of its calls failing once (transient, after their duration),
/// under the default policy, with immediate retries, and with speculation off.
pub(super) async fn retries(client: &mut client::Client, opts: &BenchOptions) -> anyhow::Result<RetriesBench> {
    let mut runs = Vec::new();
    for k in 0..opts.repeat.max(1) {
        let seed = opts.seed + k as u64;
        let (ideal_ms, mut spec) = seeded_swarm(opts, seed);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_fa11);
        let mut failures = 0;
        for t in &mut spec.subtasks {
            if let swarm_core::SubtaskKind::Tool { tool, args } = &mut t.kind
                && tool == "sleep"
                && rng.f64() < 0.05
            {
                *tool = "flaky".into();
                args["fail_times"] = serde_json::json!(1);
                // A transient failure answers at once (a 503), as in the peers' measurement.
                args["fail_ms"] = serde_json::json!(0);
                failures += 1;
            }
        }
        let timed = |client: &mut client::Client, spec: swarm_core::RunSpec| {
            let mut client = client.clone();
            async move {
                let t0 = Instant::now();
                let summary = submit_and_wait(&mut client, &spec).await?;
                anyhow::Ok((t0.elapsed().as_secs_f64() * 1000.0, summary))
            }
        };
        let (wall_default_ms, default) = timed(client, spec.clone()).await?;
        let mut immediate = spec.clone();
        immediate.retry = Some(swarm_core::retry::RetrySpec { initial_interval_ms: Some(0), ..Default::default() });
        let (wall_immediate_ms, _) = timed(client, immediate).await?;
        let mut off = spec.clone();
        off.speculation.enabled = false;
        let (wall_speculation_off_ms, _) = timed(client, off).await?;
        eprintln!(
            "retries (seed {seed}, {failures} failures): ideal {ideal_ms:.0} ms; default {wall_default_ms:.0} ms ({:.3}, {} backups, {} won); immediate {wall_immediate_ms:.0} ms ({:.3}); speculation off {wall_speculation_off_ms:.0} ms ({:.3})",
            ideal_ms / wall_default_ms,
            default.speculative_attempts,
            default.speculative_wins,
            ideal_ms / wall_immediate_ms,
            ideal_ms / wall_speculation_off_ms,
        );
        runs.push(RetriesRun {
            seed,
            failures,
            ideal_ms,
            wall_default_ms,
            wall_immediate_ms,
            wall_speculation_off_ms,
            speculative_attempts: default.speculative_attempts,
            speculative_wins: default.speculative_wins,
            breakdown: default.wall_breakdown_ms.clone().unwrap_or_default(),
        });
    }
    Ok(RetriesBench {
        median_default: median(runs.iter().map(|r| r.ideal_ms / r.wall_default_ms).collect()),
        median_immediate: median(runs.iter().map(|r| r.ideal_ms / r.wall_immediate_ms).collect()),
        median_speculation_off: median(runs.iter().map(|r| r.ideal_ms / r.wall_speculation_off_ms).collect()),
        runs,
    })
}
