//! `swarm`: one binary for the embedded cluster, the coordinator and worker processes, the
//! client commands and the benchmarks. Exit codes: 0 success; 1 error; 2 the run ended but not
//! SUCCEEDED (`submit --wait`, `get`); 64 bad usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use swarm_cli::bench::{self, BenchOptions};
use swarm_cli::client::{self, RunJson};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_cli::{outln, specs};
use swarm_coordinator::{Coordinator, CoordinatorConfig};
use swarm_proto::pb;
use swarm_store::{MemoryStore, StateStore};
use swarm_worker::{ToolRegistry, WorkerConfig};
use tokio_util::sync::CancellationToken;

const DEFAULT_ADDR: &str = "http://127.0.0.1:7070";

#[derive(Parser)]
#[command(name = "swarm", version, about = "A distributed execution cluster for agent swarms")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A YAML file of flag values (docs/configuration.md); flags and SWARM_* variables win.
    #[arg(long, global = true, env = "SWARM_CONFIG")]
    config: Option<PathBuf>,
}

/// Parses the command line with the config file's values as defaults.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = Cli::command();
    if let Some(path) = swarm_cli::config::path_from(&args) {
        match swarm_cli::config::load(&path, &cmd) {
            Ok(file) => cmd = swarm_cli::config::apply(cmd, &file),
            Err(e) => {
                eprintln!("error: config file {e}");
                std::process::exit(64);
            }
        }
    }
    let matches = cmd.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Subcommand)]
enum Command {
    /// Coordinator + in-process workers in one process, serving gRPC (memory store, or etcd).
    Up {
        #[arg(long, env = "SWARM_LISTEN", default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        #[arg(long, env = "SWARM_WORKERS", default_value_t = 4)]
        workers: usize,
        #[arg(long, env = "SWARM_SLOTS", default_value_t = 64)]
        slots: u32,
        #[command(flatten)]
        store: StoreArgs,
        /// Where large outputs and specs go: a directory, file:///dir or memory:// (default:
        /// memory:// with the memory store, ./swarm-payloads with etcd).
        #[arg(long, env = "SWARM_PAYLOADS")]
        payloads: Option<String>,
        /// Serve the web view and Prometheus `/metrics` on this address (e.g. 127.0.0.1:9090).
        #[arg(long, env = "SWARM_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        /// A ready subtask whose tool or model no connected worker offers fails after this long,
        /// saying so (0: it waits for such a worker forever).
        #[arg(long, env = "SWARM_NO_WORKER_TIMEOUT", default_value = "60s", value_parser = parse_ttl)]
        no_worker_timeout: Duration,
    },
    /// Runs the 1,500-call swarm example on an embedded cluster and prints the summary.
    Demo {
        /// Run this spec instead of the built-in swarm example.
        #[arg(long)]
        spec: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 64)]
        slots: u32,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A coordinator process. With --etcd, any number of them elect a leader; the others stand by.
    Coordinator {
        #[arg(long, env = "SWARM_LISTEN", default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// The address workers and clients reach this coordinator at (default: http://LISTEN).
        #[arg(long, env = "SWARM_ADVERTISE")]
        advertise: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Where large outputs and specs go: a directory, file:///dir or memory:// (default:
        /// memory:// with the memory store, ./swarm-payloads with etcd; coordinators of one
        /// cluster must share it).
        #[arg(long, env = "SWARM_PAYLOADS")]
        payloads: Option<String>,
        /// A cluster-wide rate limit for a tool: TOOL=RATE[/BURST] (calls per second); repeatable.
        #[arg(long = "rate-limit", value_parser = parse_rate_limit)]
        rate_limits: Vec<(String, swarm_coordinator::ratelimit::RateLimit)>,
        /// Ended runs are deleted after this long (0: never).
        #[arg(long, env = "SWARM_RUN_TTL", default_value = "7d", value_parser = parse_ttl)]
        run_ttl: Duration,
        /// Serve the web view and Prometheus `/metrics` on this address (e.g. 127.0.0.1:9090).
        #[arg(long, env = "SWARM_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        /// Also serve `grpc.health.v1` alone on this plaintext address (Kubernetes gRPC probes).
        #[arg(long, env = "SWARM_HEALTH_LISTEN")]
        health_listen: Option<SocketAddr>,
        /// A ready subtask whose tool or model no connected worker offers fails after this long,
        /// saying so (0: it waits for such a worker forever).
        #[arg(long, env = "SWARM_NO_WORKER_TIMEOUT", default_value = "60s", value_parser = parse_ttl)]
        no_worker_timeout: Duration,
    },
    /// A worker process: finds the leader through etcd (--etcd) or at a fixed --coordinator URL.
    Worker {
        /// The coordinator's URL (without --etcd).
        #[arg(long, env = "SWARM_COORDINATOR", default_value = DEFAULT_ADDR)]
        coordinator: String,
        #[arg(long, env = "SWARM_SLOTS", default_value_t = 64)]
        slots: u32,
        /// Worker id (default: generated).
        #[arg(long, env = "SWARM_WORKER_ID")]
        id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Offer the side-effecting `append` tool, writing files in this directory.
        #[arg(long, env = "SWARM_APPEND_DIR")]
        append_dir: Option<PathBuf>,
        /// MCP servers whose tools this worker offers (YAML; see docs/agents.md).
        #[arg(long, env = "SWARM_MCP")]
        mcp: Option<PathBuf>,
        /// OpenAI-compatible model endpoints for agents (YAML: name → base_url, model, api_key_env…).
        #[arg(long, env = "SWARM_MODELS")]
        models: Option<PathBuf>,
        /// A script for the `scripted` model (YAML).
        #[arg(long, env = "SWARM_SCRIPT")]
        script: Option<PathBuf>,
        /// Serve Prometheus `/metrics` on this address.
        #[arg(long, env = "SWARM_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        /// Serve `grpc.health.v1` on this plaintext address: SERVING while the worker takes
        /// attempts, NOT_SERVING from SIGTERM on (while it drains).
        #[arg(long, env = "SWARM_HEALTH_LISTEN")]
        health_listen: Option<SocketAddr>,
        /// On SIGTERM, how long in-flight attempts may finish before they are handed back.
        #[arg(long, env = "SWARM_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_ttl)]
        drain_timeout: Duration,
    },
    /// Submits a run spec (YAML or JSON).
    Submit {
        file: PathBuf,
        #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
        /// Wait for the run to end, showing progress.
        #[arg(long)]
        wait: bool,
        /// Print one JSON object (with --wait: at the end).
        #[arg(long)]
        json: bool,
        /// Submitting again with the same key returns the same run.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Shows one run.
    Get {
        run: String,
        #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
        #[arg(long)]
        json: bool,
        /// Also list every subtask.
        #[arg(long)]
        subtasks: bool,
    },
    /// Lists runs, newest first.
    Runs {
        #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Cancels a run.
    Cancel {
        run: String,
        #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
    },
    /// Streams a run's events until it ends.
    Watch {
        run: String,
        #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks the embedded cluster (see docs/benchmarks.md).
    Bench {
        #[arg(long, default_value_t = 100)]
        chains: usize,
        #[arg(long, default_value_t = 15)]
        length: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 64)]
        slots: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 50.0)]
        median_ms: f64,
        #[arg(long, default_value_t = 0.5)]
        sigma: f64,
        /// Efficiency runs (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Concurrent runs in the throughput test.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// efficiency, throughput, agents (embedded only), stragglers or all.
        #[arg(long, default_value = "all")]
        scenario: String,
        #[arg(long)]
        json: bool,
        /// Benchmark the running cluster at this address instead of an embedded one.
        #[arg(long)]
        addr: Option<String>,
        /// etcd's client URL: report etcd transactions per tool call.
        #[arg(long)]
        etcd_metrics: Option<String>,
    },
    /// Exits 0 when the gRPC server at --addr reports SERVING.
    Healthcheck {
        #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
        /// The service to check ("" is the whole server).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Prints an example run spec: `small` or `swarm` (1 → 100 × 15 → 1).
    Example { which: String },
}

/// Where state lives.
#[derive(clap::Args, Clone, Debug)]
struct StoreArgs {
    /// etcd endpoints, comma-separated (default: the in-memory store).
    #[arg(long, env = "SWARM_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Key prefix in the store.
    #[arg(long, env = "SWARM_PREFIX", default_value = "/swarm/v1/")]
    prefix: String,
    /// Lease TTL of coordinators and workers: how fast a dead one is noticed.
    #[arg(long, env = "SWARM_LEASE_TTL", default_value = "5s", value_parser = parse_ttl)]
    lease_ttl: Duration,
}

impl StoreArgs {
    fn payloads(&self, url: Option<&str>) -> anyhow::Result<swarm_store::payload::PayloadStore> {
        let default = if self.etcd.is_empty() { "memory://" } else { "./swarm-payloads" };
        swarm_store::payload::PayloadStore::from_url(url.unwrap_or(default), swarm_store::payload::DEFAULT_THRESHOLD)
            .map_err(|e| anyhow::anyhow!("--payloads: {e}"))
    }

    async fn open(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        if self.etcd.is_empty() {
            return Ok(Arc::new(MemoryStore::new()));
        }
        let store = swarm_store::EtcdStore::connect(&self.etcd, Duration::from_secs(5))
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach etcd at {}: {e}", self.etcd.join(",")))?;
        Ok(Arc::new(store))
    }
}

fn parse_rate_limit(text: &str) -> Result<(String, swarm_coordinator::ratelimit::RateLimit), String> {
    let (tool, limit) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected TOOL=RATE[/BURST]"))?;
    Ok((tool.to_owned(), limit.parse()?))
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    if let Some(days) = text.strip_suffix('d') {
        let days = days.parse::<u64>().map_err(|e| format!("`{text}`: {e}"))?;
        return days.checked_mul(86_400).map(Duration::from_secs).ok_or_else(|| format!("`{text}`: too long"));
    }
    swarm_core::spec::parse_duration(text)
}

fn main() -> ExitCode {
    // One TLS crypto provider for every HTTPS client in the process (ring; no aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = parse_cli();
    let server = matches!(cli.command, Command::Up { .. } | Command::Coordinator { .. } | Command::Worker { .. });
    let default_filter = if server { "info" } else { "warn" };
    if let Command::Bench {
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
    } = &cli.command
    {
        let filter = tracing_subscriber::EnvFilter::try_from_env("SWARM_LOG").unwrap_or_else(|_| default_filter.into());
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
        let (efficiency, throughput, agents, stragglers) = match scenario.as_str() {
            "all" => (true, true, addr.is_none(), true),
            "efficiency" => (true, false, false, false),
            "throughput" => (false, true, false, false),
            "agents" => (false, false, true, false),
            "stragglers" => (false, false, false, true),
            other => {
                eprintln!("error: --scenario must be efficiency, throughput, agents, stragglers or all, not `{other}`");
                return ExitCode::from(64);
            }
        };
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
            addr: addr.clone(),
            etcd_metrics: etcd_metrics.clone(),
        };
        return match bench::run(&opts) {
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
        };
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let service = match cli.command {
        Command::Coordinator { .. } => "swarm-coordinator",
        Command::Worker { .. } => "swarm-worker",
        _ => "swarm",
    };
    let telemetry = {
        let _inside = runtime.enter();
        swarm_telemetry::init(service, default_filter)
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    let _inside = runtime.enter();
    telemetry.shutdown(Duration::from_secs(3));
    code
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

/// A worker's health: SERVING until `draining` fires, then NOT_SERVING until `exit`.
async fn serve_worker_health(listener: tokio::net::TcpListener, draining: CancellationToken, exit: CancellationToken) {
    let reporter = tonic_health::server::HealthReporter::new();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    tokio::spawn(swarm_coordinator::serve_health_only(listener, reporter.clone(), exit.cancelled_owned()));
    tokio::spawn(async move {
        draining.cancelled().await;
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    });
}

/// Cancels the token on Ctrl-C or SIGTERM. The handlers are installed before this returns, so
/// a signal that arrives while the process is still starting is not lost (nor fatal).
fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = recv(term.as_mut()) => {}
            _ = recv(int.as_mut()) => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up { listen, workers, slots, store, payloads, http_listen, no_worker_timeout } => {
            let backend = if store.etcd.is_empty() {
                "memory store".to_owned()
            } else {
                format!("etcd {}", store.etcd.join(","))
            };
            let mut options = EmbeddedOptions { listen, workers, slots, http_listen, ..EmbeddedOptions::default() };
            options.coordinator.prefix = store.prefix.clone();
            options.coordinator.lease_ttl = store.lease_ttl;
            options.coordinator.manager.no_worker_timeout = no_worker_timeout;
            options.coordinator.payloads = store.payloads(payloads.as_deref())?;
            let token = CancellationToken::new();
            cancel_on_signal(token.clone());
            let cluster = Embedded::start_on(options, store.open().await?, None).await?;
            eprintln!(
                "swarm up: coordinator on {} with {workers} workers × {slots} slots ({backend}); Ctrl-C stops",
                cluster.url()
            );
            if let Some(addr) = cluster.http_addr {
                eprintln!("swarm up: web view on http://{addr}/, metrics on http://{addr}/metrics");
            }
            token.cancelled().await;
            cluster.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { spec, workers, slots, json } => demo(spec, workers, slots, json).await,
        Command::Coordinator {
            listen,
            advertise,
            store,
            payloads,
            rate_limits,
            run_ttl,
            http_listen,
            health_listen,
            no_worker_timeout,
        } => {
            let token = CancellationToken::new();
            cancel_on_signal(token.clone());
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let config = CoordinatorConfig {
                prefix: store.prefix.clone(),
                advertise: advertise.unwrap_or_else(|| format!("http://{listen}")),
                lease_ttl: store.lease_ttl,
                run_ttl: (!run_ttl.is_zero()).then_some(run_ttl),
                payloads: store.payloads(payloads.as_deref())?,
                ..CoordinatorConfig::default()
            };
            let mut config = config;
            config.manager.rate_limits = rate_limits.into_iter().collect();
            config.manager.no_worker_timeout = no_worker_timeout;
            let coordinator = Coordinator::start(config, store.open().await?, token);
            if let Some(addr) = http_listen {
                let http =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--http-listen {addr}"))?;
                tracing::info!(addr = %http.local_addr()?, "web view and /metrics serving");
                coordinator.serve_http(http);
            }
            if let Some(addr) = health_listen {
                let health =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--health-listen {addr}"))?;
                coordinator.serve_health(health);
            }
            coordinator.serve(listener, Duration::from_secs(10)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            coordinator,
            slots,
            id,
            store,
            append_dir,
            mcp,
            models,
            script,
            http_listen,
            health_listen,
            drain_timeout,
        } => {
            let token = CancellationToken::new();
            cancel_on_signal(token.clone());
            // Serves until the process exits; NOT_SERVING once the drain starts.
            let exit = CancellationToken::new();
            let _exit_guard = exit.clone().drop_guard();
            if let Some(addr) = health_listen {
                let listener =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--health-listen {addr}"))?;
                serve_worker_health(listener, token.clone(), exit.clone()).await;
            }
            if let Some(addr) = http_listen {
                let http =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--http-listen {addr}"))?;
                tracing::info!(addr = %http.local_addr()?, "/metrics serving");
                tokio::spawn(swarm_telemetry::serve_metrics(http, exit.clone().cancelled_owned()));
            }
            let mut config = WorkerConfig::new(coordinator);
            config.slots = slots;
            config.drain_timeout = drain_timeout;
            config.lease_ttl = store.lease_ttl;
            if let Some(id) = id {
                config.worker_id = id.into();
            }
            if !store.etcd.is_empty() {
                config.source =
                    swarm_worker::CoordinatorSource::Store { store: store.open().await?, prefix: store.prefix.clone() };
            }
            let mut tools = ToolRegistry::builtin();
            if let Some(dir) = append_dir {
                anyhow::ensure!(dir.is_dir(), "--append-dir {} is not a directory", dir.display());
                tools.register(Arc::new(swarm_worker::tools::builtin::Append::new(dir)));
            }
            if let Some(path) = mcp {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let config = swarm_worker::tools::mcp::parse_config(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                for tool in swarm_worker::tools::mcp::load(&config).await.map_err(|e| anyhow::anyhow!(e))? {
                    tools.register(tool);
                }
            }
            let mut registry = swarm_worker::model::ModelRegistry::new();
            if let Some(path) = models {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let endpoints = swarm_worker::model::load_endpoints(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                for (name, endpoint) in endpoints {
                    let model = swarm_worker::model::OpenAiModel::new(&endpoint)
                        .map_err(|e| anyhow::anyhow!("model `{name}`: {e}"))?;
                    registry.register(&name, Arc::new(model));
                }
            }
            if let Some(path) = script {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let model = swarm_worker::model::ScriptedModel::from_yaml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                registry.register("scripted", Arc::new(model));
            }
            config.models = Arc::new(registry);
            swarm_worker::run(config, Arc::new(tools), token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { file, addr, wait, json, idempotency_key } => {
            let spec = specs::load(&file)?;
            let mut c = client::connect(&addr).await?;
            let total = spec.subtasks.len() as u64;
            let req = pb::SubmitRunRequest {
                spec: Some((&spec).into()),
                idempotency_key: idempotency_key.unwrap_or_default(),
            };
            let resp = c.submit_run(client::request(req)).await.map_err(|s| client::status_error(&s))?.into_inner();
            if !wait {
                if json {
                    let run = client::get(&mut c, &resp.run_id, false).await.map_err(|s| client::status_error(&s))?;
                    outln!("{}", serde_json::to_string(&RunJson::from(&run))?);
                } else {
                    outln!("{}", resp.run_id);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                ProgressBar::hidden()
            } else {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} calls {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            };
            bar.set_message(resp.run_id.clone());
            client::follow(&mut c, &resp.run_id, 0, |ev| {
                use pb::run_event::Event;
                match &ev.event {
                    Some(Event::SubtaskSucceeded(_) | Event::SubtaskSkipped(_)) => bar.inc(1),
                    // Said at once (a tool no worker offers, a refused spawn), also with --json:
                    // on stderr, so stdout stays one JSON object.
                    Some(Event::Warning(w)) => bar.suspend(|| eprintln!("warning: {}: {}", w.subtask_id, w.message)),
                    _ => {}
                }
            })
            .await?;
            bar.finish_and_clear();
            let run = client::get(&mut c, &resp.run_id, false).await.map_err(|s| client::status_error(&s))?;
            print_run(&run, json)?;
            Ok(exit_for(run.state))
        }
        Command::Get { run, addr, json, subtasks } => {
            let mut c = client::connect(&addr).await?;
            let run = client::get(&mut c, &run, subtasks).await.map_err(|s| client::status_error(&s))?;
            print_run(&run, json)?;
            if subtasks && !json {
                let rows: Vec<client::SubtaskJson> = run.subtasks.iter().map(client::SubtaskJson::from).collect();
                for line in client::subtask_table(&rows) {
                    outln!("{line}");
                }
            }
            Ok(exit_for(run.state))
        }
        Command::Runs { addr, limit, json } => {
            let mut c = client::connect(&addr).await?;
            let resp = c
                .list_runs(client::request(pb::ListRunsRequest { page_size: limit, page_token: String::new() }))
                .await
                .map_err(|s| client::status_error(&s))?
                .into_inner();
            for run in &resp.runs {
                let j = RunJson::from(run);
                if json {
                    outln!("{}", serde_json::to_string(&j)?);
                } else {
                    outln!(
                        "{}  {:<10} {:<16} {}/{} calls",
                        j.run_id,
                        j.state,
                        j.name,
                        j.tool_calls_completed,
                        j.total_subtasks
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { run, addr, reason } => {
            let mut c = client::connect(&addr).await?;
            let resp = c
                .cancel_run(client::request(pb::CancelRunRequest { run_id: run, reason }))
                .await
                .map_err(|s| client::status_error(&s))?
                .into_inner();
            let run = resp.run.unwrap_or_default();
            outln!("{} {}", run.run_id, client::state_name(run.state));
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { run, addr, after_seq, json } => {
            let mut c = client::connect(&addr).await?;
            let mut failed = None;
            client::follow(&mut c, &run, after_seq, |ev| {
                if json {
                    match event_json(ev) {
                        Ok(line) => outln!("{line}"),
                        Err(e) => failed = Some(e),
                    }
                } else {
                    outln!("{}", client::describe(ev));
                }
            })
            .await?;
            if let Some(e) = failed {
                return Err(e);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { addr, service } => {
            let channel = tonic::transport::Endpoint::from_shared(addr.clone())?
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(3))
                .connect()
                .await;
            let Ok(channel) = channel else {
                eprintln!("unhealthy: cannot reach {addr}");
                return Ok(ExitCode::FAILURE);
            };
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            match health.check(tonic_health::pb::HealthCheckRequest { service }).await {
                Ok(r)
                    if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
                {
                    outln!("SERVING");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(r) => {
                    eprintln!("unhealthy: status {}", r.get_ref().status);
                    Ok(ExitCode::FAILURE)
                }
                Err(s) => {
                    eprintln!("unhealthy: {:?} {}", s.code(), s.message());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Example { which } => {
            let spec = match which.as_str() {
                "small" => specs::small(),
                "swarm" => specs::swarm(100, 15, Some(&|_, _| 50)),
                other => {
                    eprintln!("error: unknown example `{other}` (small, swarm)");
                    return Ok(ExitCode::from(64));
                }
            };
            outln!("{}", serde_json::to_string_pretty(&spec)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { .. } => unreachable!("handled before the runtime starts"),
    }
}

fn event_json(ev: &pb::RunEvent) -> anyhow::Result<String> {
    let text = client::describe(ev);
    Ok(serde_json::to_string(&serde_json::json!({
        "run_id": ev.run_id,
        "seq": ev.seq,
        "time_us": ev.time.as_ref().map(swarm_proto::convert::unix_us),
        "event": text.trim_start().split_once(' ').map(|(_, rest)| rest).unwrap_or(""),
    }))?)
}

/// 2 when the run ended without succeeding; 0 otherwise (also while it is still running).
fn exit_for(state: i32) -> ExitCode {
    let ended_badly = state == pb::RunState::Failed as i32 || state == pb::RunState::Cancelled as i32;
    if ended_badly { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

fn print_run(run: &pb::Run, json: bool) -> anyhow::Result<()> {
    let j = RunJson::from(run);
    if json {
        outln!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    outln!("run {} ({}): {}", j.run_id, j.name, j.state);
    outln!(
        "  subtasks: {} completed, {} failed, {} skipped of {} ({} attempts)",
        j.tool_calls_completed,
        j.tool_calls_failed,
        j.tool_calls_skipped,
        j.total_subtasks,
        j.attempts
    );
    outln!(
        "  wall time {:.1} ms; critical path {:.1} ms; total work {:.1} ms",
        j.wall_ms,
        j.critical_path_ms,
        j.total_work_ms
    );
    outln!("  critical steps {}; total steps {}; parallelism {:.2}", j.critical_steps, j.total_steps, j.parallelism);
    if j.subagents > 0 || j.agent_tool_calls > 0 {
        outln!("  agents: {} subagents, {} tool calls, {} tokens", j.subagents, j.agent_tool_calls, j.tokens);
    }
    Ok(())
}

async fn demo(spec: Option<PathBuf>, workers: usize, slots: u32, json: bool) -> anyhow::Result<ExitCode> {
    let custom = spec.is_some();
    let spec = match spec {
        Some(path) => specs::load(&path)?,
        None => {
            let ms = specs::lognormal_ms(7, 50.0, 0.5, 100, 15);
            specs::swarm(100, 15, Some(&|c, s| ms[c][s]))
        }
    };
    let mut models = swarm_worker::model::ModelRegistry::new();
    models.register("scripted", Arc::new(swarm_worker::model::ScriptedModel::demo(100, 15, 50)));
    let options = EmbeddedOptions { workers, slots, models: Arc::new(models), ..EmbeddedOptions::default() };
    let cluster = Embedded::start(options).await?;
    cluster.wait_for_workers(workers as u32, Duration::from_secs(10)).await?;
    let mut c = client::connect(&cluster.url()).await?;

    // 1. A DAG of tool calls: 1 planner → 100 chains × 15 calls → 1 reducer.
    if !json {
        eprintln!(
            "swarm demo: {} tool calls on {workers} workers × {slots} slots ({})",
            spec.subtasks.len(),
            cluster.url()
        );
    }
    let run = demo_run(&mut c, &spec).await?;
    print_run(&run, json)?;
    if !json {
        let j = RunJson::from(&run);
        outln!(
            "  one agent doing the same calls in sequence would need ≈ {:.1} ms: the swarm was {:.1}× faster",
            j.total_work_ms,
            j.total_work_ms / j.wall_ms.max(1e-9)
        );
    }
    let mut state = run.state;

    // 2. An orchestrator (scripted model) that spawns 100 subagents making 15 tool calls each.
    if !custom {
        let lead = swarm_core::SubtaskSpec {
            retry: None,
            id: "lead".into(),
            kind: swarm_core::SubtaskKind::Orchestrator(swarm_core::agent::OrchestratorSpec {
                goal: "research the question in 100 parts".into(),
                model: "scripted".into(),
                tools: vec![],
                max_steps: None,
            }),
            depends_on: vec![],
            timeout: None,
        };
        let swarm = swarm_core::RunSpec::new("orchestrated-swarm", vec![lead]);
        if !json {
            eprintln!(
                "\nswarm demo: an orchestrator spawns 100 subagents × 15 tool calls (scripted model, sleep 50 ms)"
            );
        }
        let run = demo_run(&mut c, &swarm).await?;
        print_run(&run, json)?;
        if !json {
            let j = RunJson::from(&run);
            let serial_steps = j.total_steps;
            outln!(
                "  {} subagents, {} tool calls; a single agent doing the same work sequentially: {serial_steps} steps \
                 and ≈ {:.1} s of work, against {} critical steps and {:.2} s here ({:.0}× fewer steps, {:.0}× faster)",
                j.subagents,
                j.agent_tool_calls,
                j.total_work_ms / 1000.0,
                j.critical_steps,
                j.wall_ms / 1000.0,
                serial_steps as f64 / j.critical_steps.max(1) as f64,
                j.total_work_ms / j.wall_ms.max(1e-9)
            );
        }
        if exit_for(run.state) != ExitCode::SUCCESS {
            state = run.state;
        }
    }
    cluster.stop().await;
    Ok(exit_for(state))
}

async fn demo_run(c: &mut client::Client, spec: &swarm_core::RunSpec) -> anyhow::Result<pb::Run> {
    let resp = c
        .submit_run(client::request(pb::SubmitRunRequest { spec: Some(spec.into()), idempotency_key: String::new() }))
        .await
        .map_err(|s| client::status_error(&s))?
        .into_inner();
    client::follow(c, &resp.run_id, 0, |_| {}).await?;
    client::get(c, &resp.run_id, false).await.map_err(|s| client::status_error(&s))
}
