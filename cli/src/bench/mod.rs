//! `swarm bench`: the embedded cluster under the swarm-shaped DAG.
//!
//! * **efficiency**: 1 planner → `chains` × `length` sleep calls (lognormal, median 50 ms, fixed
//!   seed) → 1 reducer. The ideal is the DAG's longest path by the same sleep durations; the
//!   figure is ideal / measured wall time (client side: submit to the final event).
//! * **throughput**: the same DAG with 0 ms sleeps, `runs` copies submitted at once: tool calls
//!   per second, and CPU time per tool call of the coordinator's and the workers' threads.
//!
//! The coordinator runs on its own one-thread runtime and the workers (and the client) on
//! another, so each side's CPU time can be read from `/proc/self/task/*/stat`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use swarm_proto::pb;
use swarm_store::MemoryStore;

pub mod artifacts;
pub mod exec;
mod faults;
pub mod fork;
pub mod gateway;
pub mod model_server;
pub mod output;
mod overload;
pub mod scale;

pub use overload::{OverloadPhase, Probe};

use crate::client::{self, RunJson};
use crate::embedded::{Embedded, EmbeddedOptions};
use crate::specs;

/// Bench parameters.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub chains: usize,
    pub length: usize,
    pub workers: usize,
    pub slots: u32,
    pub seed: u64,
    pub median_ms: f64,
    pub sigma: f64,
    pub repeat: usize,
    pub throughput_runs: usize,
    pub efficiency: bool,
    pub throughput: bool,
    /// Run the agent benchmarks (embedded only).
    pub agents: bool,
    /// Run the straggler benchmark (speculation on and off).
    pub stragglers: bool,
    /// Run the retry benchmark (5 % transient failures; three policies).
    pub retries: bool,
    /// Benchmark this running cluster instead of an embedded one.
    pub addr: Option<String>,
    /// etcd's client URL, to count its transactions per tool call.
    pub etcd_metrics: Option<String>,
    /// Run the overload benchmark.
    pub overload: bool,
    /// Run the scale benchmark (a run of 100,000 calls; 10,000 subagents).
    pub scale: bool,
    /// The remote coordinator's PID (its memory and CPU are read from /proc).
    pub coordinator_pid: Option<u32>,
    /// The embedded cluster authenticates callers (bearer tokens).
    pub auth: bool,
    /// Subtasks carry placements (3 label pools, 2 resources), workers labels and resources.
    pub placement: bool,
    /// The embedded cluster serves mTLS to the client and the workers.
    pub tls: bool,
}

/// One efficiency measurement.
#[derive(Clone, Debug, Serialize)]
pub struct EfficiencyRun {
    pub ideal_ms: f64,
    pub wall_ms: f64,
    pub coordinator_wall_ms: f64,
    pub measured_critical_path_ms: f64,
    pub efficiency: f64,
}

/// Throughput figures.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub runs: usize,
    pub tool_calls: u64,
    pub wall_ms: f64,
    pub tool_calls_per_sec: f64,
    pub coordinator_cpu_us_per_call: f64,
    pub worker_cpu_us_per_call: f64,
    /// etcd write transactions per tool call (with --etcd-metrics).
    pub etcd_txns_per_call: Option<f64>,
    /// etcd raft proposals committed per tool call (with --etcd-metrics).
    pub etcd_proposals_per_call: Option<f64>,
}

/// Everything `swarm bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub chains: usize,
    pub length: usize,
    pub workers: usize,
    pub slots: u32,
    pub cores: usize,
    pub efficiency: Vec<EfficiencyRun>,
    pub efficiency_median: Option<f64>,
    pub throughput: Option<Throughput>,
    pub agents: Option<AgentsBench>,
    pub stragglers: Option<StragglerBench>,
    pub retries: Option<RetriesBench>,
    pub overload: Option<Vec<OverloadPhase>>,
    pub scale: Option<Vec<scale::ScalePhase>>,
}

/// The retry workload: the efficiency DAG where 5 % of the calls (chosen by seed) fail once,
/// transiently and at once (their retry then takes the call's duration).
#[derive(Clone, Debug, Serialize)]
pub struct RetriesBench {
    pub runs: Vec<RetriesRun>,
    /// Medians of ideal / wall (the ideal is the failure-free critical path).
    pub median_default: f64,
    pub median_immediate: f64,
    pub median_speculation_off: f64,
}

/// One seed under three policies.
#[derive(Clone, Debug, Serialize)]
pub struct RetriesRun {
    pub seed: u64,
    pub failures: usize,
    pub ideal_ms: f64,
    /// Default retry policy and speculation.
    pub wall_default_ms: f64,
    /// `retry: {initial_interval_ms: 0}`.
    pub wall_immediate_ms: f64,
    /// Default retry policy, `speculation: {enabled: false}`.
    pub wall_speculation_off_ms: f64,
    pub speculative_attempts: u32,
    pub speculative_wins: u32,
    /// The default run's wall-time breakdown (ms by part), as its summary gives it.
    pub breakdown: std::collections::BTreeMap<String, f64>,
}

/// The straggler workload: each attempt independently takes 10× as long with probability 2%.
#[derive(Clone, Debug, Serialize)]
pub struct StragglerBench {
    pub runs: Vec<StragglerRun>,
    /// Medians of wall / straggler-free ideal.
    pub median_ratio_speculation_on: f64,
    pub median_ratio_speculation_off: f64,
}

/// One seed, speculation on and off.
#[derive(Clone, Debug, Serialize)]
pub struct StragglerRun {
    pub seed: u64,
    pub ideal_ms: f64,
    pub wall_on_ms: f64,
    pub wall_off_ms: f64,
    pub speculative_attempts: u32,
    pub speculative_wins: u32,
    /// The speculative run's wall-time breakdown (ms by part), as its summary gives it.
    pub breakdown: std::collections::BTreeMap<String, f64>,
}

/// Agent figures.
#[derive(Clone, Debug, Serialize)]
pub struct AgentsBench {
    /// Orchestrator → 100 subagents × 15 `sleep` calls of 50 ms: the ideal is 15 × 50 ms.
    pub swarm_ideal_ms: f64,
    pub swarm_wall_ms: f64,
    pub swarm_efficiency: f64,
    pub swarm_critical_steps: u64,
    pub swarm_total_steps: u64,
    /// (wall − ideal) / critical steps: what the cluster adds to each step on the critical path.
    pub overhead_per_critical_step_ms: f64,
    /// Orchestrator → 1,000 subagents × 10 calls of 0 ms (10,000 tool calls).
    pub big_wall_ms: f64,
    pub big_tool_calls: u32,
    pub big_subagents: u32,
    /// Peak resident memory of the whole bench process (coordinator, workers and client).
    pub peak_rss_mb: f64,
}

/// Runs the benchmarks against a running cluster at `opts.addr`.
pub fn run_remote(opts: &BenchOptions, addr: &str) -> anyhow::Result<BenchReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let mut client = client::connect(addr).await?;
        measure(&mut client, opts).await
    })
}

async fn measure(client: &mut client::Client, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let mut report = BenchReport {
        chains: opts.chains,
        length: opts.length,
        workers: opts.workers,
        slots: opts.slots,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        efficiency: Vec::new(),
        efficiency_median: None,
        throughput: None,
        agents: None,
        stragglers: None,
        retries: None,
        overload: None,
        scale: None,
    };
    if opts.efficiency {
        for i in 0..opts.repeat.max(1) {
            let r = efficiency(client, opts, opts.seed + i as u64).await?;
            eprintln!(
                "efficiency run {}: ideal {:.1} ms, wall {:.1} ms → {:.4}",
                i + 1,
                r.ideal_ms,
                r.wall_ms,
                r.efficiency
            );
            report.efficiency.push(r);
        }
        let mut e: Vec<f64> = report.efficiency.iter().map(|r| r.efficiency).collect();
        e.sort_by(f64::total_cmp);
        report.efficiency_median = e.get(e.len() / 2).copied();
    }
    if opts.throughput {
        report.throughput = Some(throughput(client, opts).await?);
    }
    if opts.agents {
        report.agents = Some(agents(client).await?);
    }
    if opts.stragglers {
        report.stragglers = Some(faults::stragglers(client, opts).await?);
    }
    if opts.retries {
        report.retries = Some(faults::retries(client, opts).await?);
    }
    if opts.overload {
        let probe = match (&opts.addr, opts.coordinator_pid) {
            (None, _) => Probe::Embedded,
            (Some(_), Some(pid)) => Probe::Pid(pid),
            (Some(_), None) => Probe::None,
        };
        report.overload = Some(overload::overload(client, probe).await?);
    }
    if opts.scale {
        let probe = match (&opts.addr, opts.coordinator_pid) {
            (None, _) => Probe::Embedded,
            (Some(_), Some(pid)) => Probe::Pid(pid),
            (Some(_), None) => Probe::None,
        };
        // The orchestrator phase needs the scripted model only the embedded workers have.
        let model = opts.addr.is_none().then_some("scripted-huge");
        report.scale = Some(scale::scale(client, probe, model).await?);
    }
    Ok(report)
}

/// A counter from etcd's Prometheus metrics.
async fn etcd_counter(base: &str, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", base.trim_end_matches('/'))).await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| anyhow::anyhow!("etcd metric {name} not found"))
}

/// Runs the benchmarks on fresh runtimes.
/// A fresh directory for the certificates of a `--tls` benchmark.
fn tempdir_for_certs() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("swarm-bench-certs-{}-{}", std::process::id(), fastrand::u64(..)))
}

pub fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    if let Some(addr) = &opts.addr {
        return run_remote(opts, addr);
    }
    let coord_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("swarm-coord")
        .enable_all()
        .build()?;
    let work_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("swarm-work").enable_all().build()?;
    let handle = coord_rt.handle().clone();
    let report = work_rt.block_on(async move {
        let mut models = swarm_worker::model::ModelRegistry::new();
        models.register("scripted", Arc::new(swarm_worker::model::ScriptedModel::demo(100, 15, 50)));
        models.register("scripted-big", Arc::new(swarm_worker::model::ScriptedModel::demo(1000, 10, 0)));
        models.register(
            "scripted-huge",
            Arc::new(swarm_worker::model::ScriptedModel::demo(scale::SUBAGENTS, scale::CALLS_PER_SUBAGENT, 0)),
        );
        let mut options = EmbeddedOptions {
            workers: opts.workers,
            slots: opts.slots,
            models: Arc::new(models),
            ..EmbeddedOptions::default()
        };
        if opts.placement {
            // Three pools; each worker has room for every one of its slots' calls, so placement
            // is what is measured, not waiting for resources.
            let resources =
                vec![("cpu".to_owned(), opts.slots.to_string()), ("memory".to_owned(), format!("{}Gi", opts.slots))];
            options.worker_placement =
                (0..3).map(|p| (vec![("pool".to_owned(), format!("p{p}"))], resources.clone())).collect();
        }
        let token = "bench-token-0123456789abcdef";
        if opts.auth {
            let file = format!(
                "principals:\n  - {{name: bench, roles: [admin], token_sha256: \"{}\"}}\n",
                swarm_coordinator::auth::token_sha256(token)
            );
            options.coordinator.auth = swarm_coordinator::auth::Authenticator::parse(&file)?;
        }
        let certs = tempdir_for_certs();
        let mut client_tls = swarm_worker::tls::ClientTls::default();
        if opts.tls {
            let issued = crate::certs::generate(&certs, &["127.0.0.1".into()], &["bench".into()], 1)?;
            let (_, cert, key) = issued.clients[0].clone();
            client_tls = swarm_worker::tls::ClientTls {
                ca: Some(issued.ca.clone()),
                cert: Some(cert),
                key: Some(key),
                server_name: None,
            };
            options.tls = Some(swarm_coordinator::tls::ServerTls::grpc(swarm_coordinator::tls::TlsFiles {
                cert: issued.server_cert,
                key: issued.server_key,
                client_ca: Some(issued.ca),
                crl: None,
            })?);
            options.worker_tls = Some(client_tls.clone());
        }
        let cluster = Embedded::start_on(options, Arc::new(MemoryStore::new()), Some(handle)).await?;
        cluster.wait_for_workers(opts.workers as u32, Duration::from_secs(10)).await?;
        let mut client = client::connect_with(&cluster.url(), opts.auth.then_some(token), &client_tls).await?;
        let report = measure(&mut client, opts).await?;
        cluster.stop().await;
        let _ = std::fs::remove_dir_all(&certs);
        anyhow::Ok(report)
    })?;
    coord_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

pub(super) async fn submit_and_wait(
    client: &mut client::Client,
    spec: &swarm_core::RunSpec,
) -> anyhow::Result<RunJson> {
    let resp = client
        .submit_run(client::request(pb::SubmitRunRequest {
            spec: Some(spec.into()),
            idempotency_key: String::new(),
            ..Default::default()
        }))
        .await
        .map_err(|s| client::status_error(&s))?
        .into_inner();
    client::follow(client, &resp.run_id, 0, |_| {}).await?;
    let run = client::get(client, &resp.run_id, false).await.map_err(|s| client::status_error(&s))?;
    let json = RunJson::from(&run);
    anyhow::ensure!(json.state == "SUCCEEDED", "bench run ended {}", json.state);
    Ok(json)
}

async fn efficiency(client: &mut client::Client, opts: &BenchOptions, seed: u64) -> anyhow::Result<EfficiencyRun> {
    let ms = specs::lognormal_ms(seed, opts.median_ms, opts.sigma, opts.chains, opts.length);
    let mut spec = specs::swarm(opts.chains, opts.length, Some(&|c, s| ms[c][s]));
    if opts.placement {
        place(&mut spec, opts.length)?;
    }
    let ideal_ms = ms.iter().map(|chain| chain.iter().sum::<u64>()).max().unwrap_or(0) as f64;
    let t0 = Instant::now();
    let run = submit_and_wait(client, &spec).await?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Ok(EfficiencyRun {
        ideal_ms,
        wall_ms,
        coordinator_wall_ms: run.wall_ms,
        measured_critical_path_ms: run.critical_path_ms,
        efficiency: ideal_ms / wall_ms,
    })
}

/// `--placement`: every subtask in one of 3 label pools, holding 2 kinds of resources. A chain's
/// every step goes to the next pool (placement decides at each step), and each stage spreads
/// over the three alike: `(chain + step) % 3`. (Numbering the pools by the subtask's index put
/// every chain's step `s` in the same pool, a stage of 100 calls on one pool of 64 slots: that
/// measured a pool too small for its load, not placement.)
fn place(spec: &mut swarm_core::RunSpec, length: usize) -> anyhow::Result<()> {
    let inner = spec.subtasks.len().saturating_sub(2);
    for (i, s) in spec.subtasks.iter_mut().enumerate() {
        let pool = match i.checked_sub(1) {
            Some(j) if j < inner => (j / length + j % length) % 3,
            _ => i % 3,
        };
        let p = serde_json::json!({"labels": {"pool": format!("p{pool}")}, "resources": {"cpu": 1, "memory": "1Gi"}});
        s.placement = Some(serde_json::from_value(p)?);
    }
    Ok(())
}

async fn throughput(client: &mut client::Client, opts: &BenchOptions) -> anyhow::Result<Throughput> {
    let mut spec = specs::swarm(opts.chains, opts.length, Some(&|_, _| 0));
    if opts.placement {
        place(&mut spec, opts.length)?;
    }
    submit_and_wait(client, &spec).await?; // warm-up
    let runs = opts.throughput_runs.max(1);
    let cpu0 = (thread_cpu_us("swarm-coord"), thread_cpu_us("swarm-work"));
    let etcd0 = match &opts.etcd_metrics {
        Some(url) => Some((
            etcd_counter(url, "etcd_mvcc_txn_total").await?,
            etcd_counter(url, "etcd_server_proposals_committed_total").await?,
        )),
        None => None,
    };
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..runs {
        let mut c = client.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move { submit_and_wait(&mut c, &spec).await }));
    }
    let mut calls = 0u64;
    for t in tasks {
        calls += u64::from(t.await??.tool_calls_completed);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = (thread_cpu_us("swarm-coord"), thread_cpu_us("swarm-work"));
    // The sink trails the last event by a commit or so; let it land before reading etcd.
    if opts.etcd_metrics.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let etcd1 = match &opts.etcd_metrics {
        Some(url) => Some((
            etcd_counter(url, "etcd_mvcc_txn_total").await?,
            etcd_counter(url, "etcd_server_proposals_committed_total").await?,
        )),
        None => None,
    };
    let (etcd_txns_per_call, etcd_proposals_per_call) = match (etcd0, etcd1) {
        (Some(a), Some(b)) => (Some((b.0 - a.0) / calls as f64), Some((b.1 - a.1) / calls as f64)),
        _ => (None, None),
    };
    let per_call = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / calls as f64,
        _ => f64::NAN,
    };
    let t = Throughput {
        runs,
        tool_calls: calls,
        wall_ms: wall * 1000.0,
        tool_calls_per_sec: calls as f64 / wall,
        coordinator_cpu_us_per_call: per_call(cpu0.0, cpu1.0),
        worker_cpu_us_per_call: per_call(cpu0.1, cpu1.1),
        etcd_txns_per_call,
        etcd_proposals_per_call,
    };
    if let (Some(t), Some(p)) = (t.etcd_txns_per_call, t.etcd_proposals_per_call) {
        eprintln!("etcd: {t:.3} write transactions and {p:.3} raft proposals per tool call");
    }
    eprintln!(
        "throughput: {} calls in {:.0} ms → {:.0} calls/s; CPU per call: coordinator {:.1} µs, workers+client {:.1} µs",
        t.tool_calls, t.wall_ms, t.tool_calls_per_sec, t.coordinator_cpu_us_per_call, t.worker_cpu_us_per_call
    );
    Ok(t)
}

pub(super) fn orchestrator(model: &str, max_subagents: u32, max_tool_calls: u32) -> swarm_core::RunSpec {
    specs::orchestrator(model, max_subagents, max_tool_calls)
}

async fn agents(client: &mut client::Client) -> anyhow::Result<AgentsBench> {
    let t0 = Instant::now();
    let swarm = submit_and_wait(client, &orchestrator("scripted", 100, 1500)).await?;
    let swarm_wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let ideal = 15.0 * 50.0;
    eprintln!("agents: 100 subagents × 15 calls of 50 ms in {swarm_wall_ms:.1} ms (ideal {ideal:.0} ms)");
    let t1 = Instant::now();
    let big = submit_and_wait(client, &orchestrator("scripted-big", 1000, 10_000)).await?;
    let big_wall_ms = t1.elapsed().as_secs_f64() * 1000.0;
    let peak_rss_mb = peak_rss_kb().map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    eprintln!(
        "agents: 1,000 subagents, {} tool calls in {big_wall_ms:.0} ms; peak RSS {peak_rss_mb:.0} MB",
        big.agent_tool_calls
    );
    Ok(AgentsBench {
        swarm_ideal_ms: ideal,
        swarm_wall_ms,
        swarm_efficiency: ideal / swarm_wall_ms,
        swarm_critical_steps: swarm.critical_steps,
        swarm_total_steps: swarm.total_steps,
        overhead_per_critical_step_ms: (swarm_wall_ms - ideal) / swarm.critical_steps.max(1) as f64,
        big_wall_ms,
        big_tool_calls: big.agent_tool_calls,
        big_subagents: big.subagents,
        peak_rss_mb,
    })
}

/// The median of `v` (the upper one of an even count; 0 for none).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The seeded workload of the straggler and retry scenarios: per-call durations, the straggler-
/// free ideal, and the swarm DAG of `sleep` calls.
pub(super) fn seeded_swarm(opts: &BenchOptions, seed: u64) -> (f64, swarm_core::RunSpec) {
    let ms = specs::lognormal_ms(seed, opts.median_ms, opts.sigma, opts.chains, opts.length);
    let ideal_ms = ms.iter().map(|c| c.iter().sum::<u64>()).max().unwrap_or(0) as f64;
    (ideal_ms, specs::swarm(opts.chains, opts.length, Some(&|c, s| ms[c][s])))
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`, in µs;
/// `None` where `/proc` is not readable.
pub fn thread_cpu_us(prefix: &str) -> Option<u64> {
    const TICK_US: u64 = 10_000; // USER_HZ = 100 on Linux
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        total += ticks * TICK_US;
    }
    Some(total)
}
