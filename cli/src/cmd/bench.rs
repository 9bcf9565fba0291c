//! `swarm bench`: runs the benchmarks (docs/benchmarks.md) and prints their report.

use std::process::ExitCode;

use swarm_cli::bench::{self, BenchOptions};
use swarm_cli::outln;

use crate::args::BenchArgs;

/// `swarm bench`: runs on its own runtimes (see `swarm_cli::bench`), so it is called before
/// `main` starts one.
pub fn run(args: &BenchArgs) -> ExitCode {
    let BenchArgs {
        chains,
        length,
        workers,
        slots,
        seed,
        median_ms,
        sigma,
        repeat,
        runs,
        scenario,
        json,
        addr,
        etcd_metrics,
        coordinator_pid,
        auth,
        tls,
        placement,
    } = args;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWARM_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if scenario == "gateway" {
        return gateway(*json);
    }
    if scenario == "exec" {
        return exec(*json);
    }
    if scenario == "artifacts" {
        return artifacts(*json);
    }
    if scenario == "fork" {
        return fork(addr.as_deref(), *repeat, *json);
    }
    if scenario == "output" {
        return output(*repeat, *json);
    }
    let (efficiency, throughput, agents, stragglers, overload) = match scenario.as_str() {
        "all" => (true, true, addr.is_none(), true, false),
        "efficiency" => (true, false, false, false, false),
        "throughput" => (false, true, false, false, false),
        "agents" => (false, false, true, false, false),
        "stragglers" => (false, false, false, true, false),
        "overload" => (false, false, false, false, true),
        "retries" | "scale" => (false, false, false, false, false),
        other => {
            eprintln!(
                "error: --scenario must be efficiency, throughput, agents, stragglers, retries, overload, scale, gateway, exec, artifacts, fork, output or all, not `{other}`"
            );
            return ExitCode::from(64);
        }
    };
    let retries = matches!(scenario.as_str(), "retries" | "all");
    let opts = BenchOptions {
        chains: *chains,
        length: *length,
        workers: *workers,
        slots: *slots,
        seed: *seed,
        median_ms: *median_ms,
        sigma: *sigma,
        repeat: *repeat,
        throughput_runs: *runs,
        efficiency,
        throughput,
        agents,
        stragglers,
        retries,
        addr: addr.clone(),
        etcd_metrics: etcd_metrics.clone(),
        overload,
        scale: scenario == "scale",
        coordinator_pid: *coordinator_pid,
        auth: *auth,
        tls: *tls,
        placement: *placement,
    };
    match bench::run(&opts) {
        Ok(report) => {
            if *json {
                outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print_bench(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--scenario output`: the agent swarm unwatched and followed, alternating
/// (`swarm_cli::bench::output`).
fn output(repeat: usize, json: bool) -> ExitCode {
    match bench::output::run(repeat.max(1)) {
        Ok(b) if json => {
            outln!("{}", serde_json::to_string_pretty(&b).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(b) => {
            outln!(
                "swarm bench --scenario output ({} runs each way, alternating; {} tool calls a run; medians per run):",
                b.runs_each,
                b.tool_calls
            );
            outln!(
                "  nobody follows the output: {} chunks, {} bytes from the workers; wall {:.0} ms",
                b.unwatched_chunks,
                b.unwatched_bytes,
                b.unwatched_wall_ms
            );
            outln!(
                "  a watcher follows it:      {} chunks, {} bytes from the workers ({} output events to the watcher); wall {:.0} ms",
                b.followed_chunks,
                b.followed_bytes,
                b.follower_events,
                b.followed_wall_ms
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--scenario fork`: a finished 1,502-call run forked at the last call of one chain.
fn fork(addr: Option<&str>, repeat: usize, json: bool) -> ExitCode {
    match bench::fork::run(addr, repeat.max(1)) {
        Ok(b) if json => {
            outln!("{}", serde_json::to_string_pretty(&b).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(b) => {
            outln!(
                "swarm bench --scenario fork ({} forks of a {}-call run at {}, medians):",
                b.forks,
                b.original_calls,
                b.from
            );
            outln!(
                "  ForkRun {:.1} ms (max {:.1}); request → first call started {:.1} ms (max {:.1}); fork run ended after {:.1} ms",
                b.fork_rpc_ms,
                b.fork_rpc_max_ms,
                b.first_call_ms,
                b.first_call_max_ms,
                b.fork_run_ms
            );
            outln!("  calls made {}, reused {}", b.calls_made, b.calls_reused);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--scenario artifacts`: 1,000 files from 100 producers handed to one reducer.
fn artifacts(json: bool) -> ExitCode {
    match bench::artifacts::run(5) {
        Ok(b) if json => {
            outln!("{}", serde_json::to_string_pretty(&b).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(b) => {
            outln!("swarm bench --scenario artifacts ({} alternating pairs, medians):", b.pairs);
            outln!(
                "  {} files ({} KiB) from 100 producers handed to one reducer: its attempt {:.0} ms (without inputs {:.0} ms); {} found",
                b.files,
                b.bytes / 1024,
                b.reducer_ms,
                b.reducer_baseline_ms,
                b.found
            );
            outln!("  the whole run: {:.0} ms (without artifacts {:.0} ms)", b.run_ms, b.run_baseline_ms);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--scenario exec`: the sandbox's overhead and 200 calls at once (`swarm_cli::bench::exec`).
fn exec(json: bool) -> ExitCode {
    match bench::exec::run(300) {
        Ok(b) if json => {
            outln!("{}", serde_json::to_string_pretty(&b).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(b) => {
            outln!("swarm bench --scenario exec ({}):", b.limits);
            outln!(
                "  exec {{cmd: [/bin/true]}}, {} calls as the tool sees them: p50 {:.1} ms, p99 {:.1} ms (bare bwrap: p50 {:.1} ms, p99 {:.1} ms)",
                b.calls,
                b.tool_p50_ms,
                b.tool_p99_ms,
                b.bare_p50_ms,
                b.bare_p99_ms
            );
            outln!(
                "  {} exec subtasks at once (4 workers × 64 slots): {} succeeded in {:.0} ms; leaked: {} processes, {} cgroups",
                b.concurrent_calls,
                b.concurrent_succeeded,
                b.concurrent_wall_ms,
                b.leaked_processes,
                b.leaked_cgroups
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--scenario gateway`: its own clusters and fixture server (see `swarm_cli::bench::gateway`).
fn gateway(json: bool) -> ExitCode {
    match bench::gateway::run(bench::gateway::GatewayWorkload::default()) {
        Ok(g) if json => {
            outln!("{}", serde_json::to_string_pretty(&g).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(g) => {
            let w = &g.workload;
            outln!(
                "swarm bench --scenario gateway: orchestrator → {} subagents × {} model turns, tpm {} (server and gateway)",
                w.subagents,
                w.turns,
                w.server_tpm
            );
            outln!(
                "  limited: {} ({} subtasks, {} attempts); {} calls, {} tokens in {:.0} ms; lower bound (tokens / tpm) {:.0} ms → {:.3}×",
                g.limited.state,
                g.limited.subtasks,
                g.limited.attempts,
                g.limited.server.served,
                g.total_tokens,
                g.limited.wall_ms,
                g.lower_bound_ms,
                g.ratio
            );
            outln!(
                "  429s: {} of {} requests ({:.2} %); mean permit wait {:.0} ms",
                g.limited.server.refused_429,
                g.limited.server.served + g.limited.server.refused_429,
                100.0 * g.refused_fraction,
                g.limited.mean_wait_ms
            );
            outln!(
                "  gateway cost: unlimited swarm {:.0} ms without a gateway, {:.0} ms through one → {:.2} ms per call on the path",
                g.free_wall_ms,
                g.open_gateway_wall_ms,
                g.gateway_cost_per_call_ms
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_bench(r: &bench::BenchReport) {
    outln!(
        "swarm bench: {} chains × {} calls, {} workers × {} slots, {} cores",
        r.chains,
        r.length,
        r.workers,
        r.slots,
        r.cores
    );
    for (i, e) in r.efficiency.iter().enumerate() {
        outln!(
            "  efficiency #{}: ideal {:.1} ms, wall {:.1} ms (coordinator {:.1} ms) → {:.4}",
            i + 1,
            e.ideal_ms,
            e.wall_ms,
            e.coordinator_wall_ms,
            e.efficiency
        );
    }
    if let Some(m) = r.efficiency_median {
        outln!("  efficiency (median): {m:.4}");
    }
    if let Some(t) = &r.throughput {
        outln!(
            "  throughput: {} runs, {} tool calls in {:.0} ms → {:.0} tool calls/s",
            t.runs,
            t.tool_calls,
            t.wall_ms,
            t.tool_calls_per_sec
        );
        if r.workers > 0 && !t.coordinator_cpu_us_per_call.is_nan() && t.coordinator_cpu_us_per_call > 0.0 {
            outln!(
                "  CPU per tool call: coordinator {:.1} µs, workers + client {:.1} µs",
                t.coordinator_cpu_us_per_call,
                t.worker_cpu_us_per_call
            );
        }
        if let (Some(txns), Some(props)) = (t.etcd_txns_per_call, t.etcd_proposals_per_call) {
            outln!("  etcd: {txns:.3} write transactions, {props:.3} raft proposals per tool call");
        }
    }
    if let Some(st) = &r.stragglers {
        for x in &st.runs {
            outln!(
                "  stragglers (2% of attempts 10× slower), seed {}: ideal {:.0} ms; speculation on {:.0} ms ({:.3}×, {} backups, {} won), off {:.0} ms ({:.3}×)",
                x.seed,
                x.ideal_ms,
                x.wall_on_ms,
                x.wall_on_ms / x.ideal_ms,
                x.speculative_attempts,
                x.speculative_wins,
                x.wall_off_ms,
                x.wall_off_ms / x.ideal_ms
            );
        }
        outln!(
            "  stragglers: median wall / straggler-free ideal: {:.3}× with speculation, {:.3}× without",
            st.median_ratio_speculation_on,
            st.median_ratio_speculation_off
        );
    }
    if let Some(rt) = &r.retries {
        for run in &rt.runs {
            outln!(
                "  retries (5% of calls fail once), seed {}, {} failures: ideal {:.0} ms; default {:.0} ms ({:.3}; {} backups, {} won); immediate retry {:.0} ms ({:.3}); speculation off {:.0} ms ({:.3})",
                run.seed,
                run.failures,
                run.ideal_ms,
                run.wall_default_ms,
                run.ideal_ms / run.wall_default_ms,
                run.speculative_attempts,
                run.speculative_wins,
                run.wall_immediate_ms,
                run.ideal_ms / run.wall_immediate_ms,
                run.wall_speculation_off_ms,
                run.ideal_ms / run.wall_speculation_off_ms
            );
        }
        outln!(
            "  retries: median efficiency {:.3} (default), {:.3} (initial_interval_ms: 0), {:.3} (speculation off)",
            rt.median_default,
            rt.median_immediate,
            rt.median_speculation_off
        );
    }
    for p in r.overload.iter().flatten() {
        outln!(
            "  overload, {}: {} calls in {:.0} ms → {:.0} calls/s; ready→start p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             RSS {:.0} → {:.0} MiB ({:.0} B per queued subtask); coordinator CPU {} per call; {} extra attempts",
            p.name,
            p.tool_calls,
            p.wall_ms,
            p.tool_calls_per_sec,
            p.wait_p50_ms,
            p.wait_p99_ms,
            p.wait_max_ms,
            p.rss_before_mb,
            p.rss_peak_mb,
            p.rss_bytes_per_queued_subtask,
            p.coordinator_cpu_us_per_call.map_or("n/a".to_owned(), |c| format!("{c:.1} µs")),
            p.extra_attempts
        );
    }
    for p in r.scale.iter().flatten() {
        outln!(
            "  scale, {}: {} subtasks, {} calls, {} subagents; submitted in {:.0} ms, ended after {:.0} ms → {:.0} calls/s; \
             ready→start p50 {:.1} ms, p99 {:.1} ms; first page of GetRun {:.1} ms; RSS {:.0} → {:.0} MiB ({:.0} B per subtask); \
             coordinator CPU {} per call",
            p.name,
            p.subtasks,
            p.tool_calls,
            p.subagents,
            p.submit_ms,
            p.wall_ms,
            p.tool_calls_per_sec,
            p.wait_p50_ms,
            p.wait_p99_ms,
            p.first_page_ms,
            p.rss_before_mb,
            p.rss_peak_mb,
            p.rss_bytes_per_subtask,
            p.coordinator_cpu_us_per_call.map_or("n/a".to_owned(), |c| format!("{c:.1} µs")),
        );
    }
    if let Some(a) = &r.agents {
        outln!(
            "  agents: orchestrator → 100 subagents × 15 calls of 50 ms: wall {:.1} ms, ideal {:.0} ms → {:.4}; \
             {} critical steps of {} total; overhead {:.2} ms per critical step",
            a.swarm_wall_ms,
            a.swarm_ideal_ms,
            a.swarm_efficiency,
            a.swarm_critical_steps,
            a.swarm_total_steps,
            a.overhead_per_critical_step_ms
        );
        outln!(
            "  agents: orchestrator → {} subagents, {} tool calls: wall {:.0} ms; peak RSS of the whole process {:.0} MB",
            a.big_subagents,
            a.big_tool_calls,
            a.big_wall_ms,
            a.peak_rss_mb
        );
    }
}
