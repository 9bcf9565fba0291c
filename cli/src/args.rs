//! The `swarm` command line: every subcommand's flags (the flag names, `SWARM_*` variables and
//! defaults are a contract: docs/configuration.md), and their parsers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod fork;
mod parse;
mod store;
mod tls;
pub use fork::{ForkArgs, ReplayArgs};
pub use parse::{parse_bytes, parse_drift, parse_heartbeat, parse_label, parse_rate_limit, parse_resource, parse_ttl};
pub use store::StoreArgs;
pub use tls::{TlsClientArgs, TlsServerArgs};

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:7070";

#[derive(Parser)]
#[command(name = "swarm", version, about = "A distributed execution cluster for agent swarms")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// A YAML file of flag values (docs/configuration.md); flags and SWARM_* variables win.
    #[arg(long, global = true, env = "SWARM_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Coordinator + in-process workers in one process, serving gRPC (memory store, or etcd).
    Up(UpArgs),
    /// Runs the 1,500-call swarm example on an embedded cluster and prints the summary.
    Demo(DemoArgs),
    /// Runs one spec on a throwaway embedded cluster, with live progress, and prints the summary.
    Run(RunArgs),
    /// Decides an approval subtask: --approve [--data JSON] or --reject [--reason TEXT].
    Signal(SignalArgs),
    /// A coordinator process. With --etcd, any number of them elect a leader; the others stand by.
    Coordinator(CoordinatorArgs),
    /// A worker process: finds the leader through etcd (--etcd) or at a fixed --coordinator URL.
    Worker(WorkerArgs),
    /// Submits a run spec (YAML or JSON).
    Submit(SubmitArgs),
    /// Shows one run.
    Get(GetArgs),
    /// Lists runs, newest first.
    Runs(RunsArgs),
    /// Starts a new run from a recorded one: reuses every result not downstream of --from.
    Fork(ForkArgs),
    /// Replays a run's agents against their recorded model responses and tool results (calling
    /// no model and no tool) and reports the first step where the code now decides differently.
    Replay(ReplayArgs),
    /// Cancels a run.
    Cancel(CancelArgs),
    /// Downloads an artifact a subtask handed on.
    Artifact(ArtifactArgs),
    /// Streams a run's events until it ends.
    Watch(WatchArgs),
    /// Benchmarks the embedded cluster (see docs/benchmarks.md).
    Bench(BenchArgs),
    /// Exits 0 when the gRPC server at --addr reports SERVING.
    Healthcheck(HealthcheckArgs),
    /// Prints an example run spec: `small` or `swarm` (1 → 100 × 15 → 1).
    Example(ExampleArgs),
    /// Writes a private CA, a server certificate and client certificates for TLS and mTLS.
    Certs(CertsArgs),
}

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Where to write them (an existing ca.pem + ca.key there is reused).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// A DNS name or IP address of the coordinator (repeatable, comma-separated).
    #[arg(long = "host", value_delimiter = ',', default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub hosts: Vec<String>,
    /// A client certificate for this name (its DNS name; `cert_name` in --auth-file).
    #[arg(long = "client", value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Validity of the server and client certificates.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Do nothing when the directory already holds a server certificate (certificates an
    /// operator put there are kept: compose's `certs` service).
    #[arg(long)]
    pub if_missing: bool,
    /// Revoke the certificate `DIR/NAME.pem` (repeatable): its serial joins `DIR/revoked.txt`
    /// and `DIR/crl.pem` is written anew, for coordinators' `--tls-crl`. Issues nothing else.
    #[arg(long = "revoke", value_name = "NAME", value_delimiter = ',')]
    pub revoke: Vec<String>,
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the gRPC API (and in-process workers' streams) listens: HOST:PORT. Clients reach
    /// it as http://HOST:PORT (or plain HOST:PORT with --addr).
    #[arg(long, env = "SWARM_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Principals, roles and tenants (YAML; docs/security.md). Without it every caller is an
    /// administrator, which only a loopback listener allows (see --insecure).
    #[arg(long, env = "SWARM_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Listen on a non-loopback address without --auth-file: anyone who reaches the port can
    /// drive the cluster. For trusted networks only.
    #[arg(long, env = "SWARM_INSECURE")]
    pub insecure: bool,
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// In-process workers to start.
    #[arg(long, env = "SWARM_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Attempts each in-process worker runs at once.
    #[arg(long, env = "SWARM_SLOTS", default_value_t = 64)]
    pub slots: u32,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where large outputs and specs go: a directory, file:///dir or memory:// (default:
    /// memory:// with the memory store, ./swarm-payloads with etcd).
    #[arg(long, env = "SWARM_PAYLOADS")]
    pub payloads: Option<String>,
    /// Serve the web view and Prometheus `/metrics` on this address (e.g. 127.0.0.1:9090).
    #[arg(long, env = "SWARM_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// A ready subtask whose tool or model no connected worker offers fails after this long,
    /// saying so (0: it waits for such a worker forever).
    #[arg(long, env = "SWARM_NO_WORKER_TIMEOUT", default_value = "60s", value_parser = parse_ttl)]
    pub no_worker_timeout: Duration,
    /// The bytes of artifacts one run may hand on (`outputs: {artifacts}`), e.g. `100MB`,
    /// `1GiB`; a tenant's `max_artifact_bytes` in --auth-file overrides it.
    #[arg(long, env = "SWARM_MAX_ARTIFACT_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub max_artifact_bytes: u64,
    /// How often workers send heartbeats; an attempt not heard of for three intervals is
    /// re-queued (unless its worker's lease in etcd still lives).
    #[arg(long, env = "SWARM_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_heartbeat)]
    pub heartbeat_interval: Duration,
    /// Write one JSON line per mutating call (submit, cancel, signal, worker_join) with time,
    /// principal, tenant, action, run_id and result to this file (appended), or `-` for
    /// standard output (docs/security.md, audit log).
    #[arg(long, env = "SWARM_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// Let the in-process workers' `http_get` reach this internal range (repeatable).
    #[arg(long = "allow-egress", value_name = "CIDR")]
    pub allow_egress: Vec<swarm_worker::tools::egress::Cidr>,
    /// A tool (MCP, HTTP) that may run twice — read-only or idempotent — so it is speculated
    /// like the built-in ones (repeatable). Built-in tools' flags are fixed; under --auth-file
    /// workers' own claims about other tools are ignored, so list them here.
    #[arg(long = "repeatable-tool", value_name = "TOOL")]
    pub repeatable_tools: Vec<String>,
    #[command(flatten)]
    pub kit: WorkerKitArgs,
    #[command(flatten)]
    pub caps: CapsArgs,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Run this spec instead of the built-in swarm example.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[arg(long, default_value_t = 64)]
    pub slots: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    #[arg(long, env = "SWARM_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Principals, roles and tenants (YAML; docs/security.md). Without it every caller is an
    /// administrator, which only a loopback listener allows (see --insecure).
    #[arg(long, env = "SWARM_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Listen on a non-loopback address without --auth-file: anyone who reaches the port can
    /// drive the cluster. For trusted networks only.
    #[arg(long, env = "SWARM_INSECURE")]
    pub insecure: bool,
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// The CA that signed the other coordinators' certificates: a standby forwards API calls
    /// to an `https://` leader trusting it (default: --tls-client-ca, else the system's roots).
    #[arg(long, env = "SWARM_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// Verify the leader's certificate for this name when forwarding, rather than the host of
    /// its advertised URL (coordinators that advertise pod IPs).
    #[arg(long, env = "SWARM_PEER_SERVER_NAME")]
    pub peer_server_name: Option<String>,
    /// The address workers and clients reach this coordinator at (default: http://LISTEN).
    #[arg(long, env = "SWARM_ADVERTISE")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where large outputs and specs go: a directory, file:///dir or memory:// (default:
    /// memory:// with the memory store, ./swarm-payloads with etcd; coordinators of one
    /// cluster must share it).
    #[arg(long, env = "SWARM_PAYLOADS")]
    pub payloads: Option<String>,
    /// A cluster-wide rate limit for a tool: TOOL=RATE[/BURST] (calls per second); repeatable.
    #[arg(long = "rate-limit", value_parser = parse_rate_limit)]
    pub rate_limits: Vec<(String, swarm_coordinator::ratelimit::RateLimit)>,
    /// Ended runs are deleted after this long (0: never).
    #[arg(long, env = "SWARM_RUN_TTL", default_value = "7d", value_parser = parse_ttl)]
    pub run_ttl: Duration,
    /// Serve the web view and Prometheus `/metrics` on this address (e.g. 127.0.0.1:9090).
    #[arg(long, env = "SWARM_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Also serve `grpc.health.v1` alone on this plaintext address (Kubernetes gRPC probes).
    #[arg(long, env = "SWARM_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Also serve Prometheus `/metrics` alone on this address (so the web view's port can
    /// stay private while a scraper reaches the metrics).
    #[arg(long, env = "SWARM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// A ready subtask whose tool or model no connected worker offers fails after this long,
    /// saying so (0: it waits for such a worker forever).
    #[arg(long, env = "SWARM_NO_WORKER_TIMEOUT", default_value = "60s", value_parser = parse_ttl)]
    pub no_worker_timeout: Duration,
    /// The bytes of artifacts one run may hand on (`outputs: {artifacts}`), e.g. `100MB`,
    /// `1GiB`; a tenant's `max_artifact_bytes` in --auth-file overrides it.
    #[arg(long, env = "SWARM_MAX_ARTIFACT_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub max_artifact_bytes: u64,
    /// How often workers send heartbeats; an attempt not heard of for three intervals is
    /// re-queued (unless its worker's lease in etcd still lives).
    #[arg(long, env = "SWARM_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_heartbeat)]
    pub heartbeat_interval: Duration,
    /// Write one JSON line per mutating call (submit, cancel, signal, worker_join) with time,
    /// principal, tenant, action, run_id and result to this file (appended), or `-` for
    /// standard output (docs/security.md, audit log).
    #[arg(long, env = "SWARM_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// A tool (MCP, HTTP) that may run twice — read-only or idempotent — so it is speculated
    /// like the built-in ones (repeatable). Built-in tools' flags are fixed; under --auth-file
    /// workers' own claims about other tools are ignored, so list them here.
    #[arg(long = "repeatable-tool", value_name = "TOOL")]
    pub repeatable_tools: Vec<String>,
    /// The models file (docs/agents.md): its endpoints' `rpm`, `tpm` and `max_concurrency` are
    /// the model gateway's cluster-wide limits (workers read their own copy for the rest).
    #[arg(long, env = "SWARM_MODELS")]
    pub models: Option<PathBuf>,
    #[command(flatten)]
    pub caps: CapsArgs,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The coordinator's URL (without --etcd).
    #[arg(long, env = "SWARM_COORDINATOR", default_value = DEFAULT_ADDR)]
    pub coordinator: String,
    /// The bearer token to authenticate with (the coordinator's --auth-file holds its SHA-256).
    #[arg(long, env = "SWARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsClientArgs,
    #[arg(long, env = "SWARM_SLOTS", default_value_t = 64)]
    pub slots: u32,
    /// Worker id (default: generated).
    #[arg(long, env = "SWARM_WORKER_ID")]
    pub id: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kit: WorkerKitArgs,
    /// Serve Prometheus `/metrics` on this address.
    #[arg(long, env = "SWARM_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Serve `grpc.health.v1` on this plaintext address: SERVING while the worker takes
    /// attempts, NOT_SERVING from SIGTERM on (while it drains).
    #[arg(long, env = "SWARM_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// On SIGTERM, how long in-flight attempts may finish before they are handed back.
    #[arg(long, env = "SWARM_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_ttl)]
    pub drain_timeout: Duration,
    /// Let `http_get` reach this internal range (CIDR or address; repeatable). Loopback,
    /// link-local, private and unique-local addresses are refused otherwise.
    #[arg(long = "allow-egress", value_name = "CIDR")]
    pub allow_egress: Vec<swarm_worker::tools::egress::Cidr>,
    /// How much faster or slower this machine's clock may run than etcd's, as a ratio (0.05:
    /// 5 %). With --etcd the worker stops its attempts before its lease could expire, this
    /// much earlier (docs/resilience.md, fencing).
    #[arg(long, env = "SWARM_MAX_CLOCK_DRIFT", default_value_t = swarm_worker::hold::DEFAULT_DRIFT, value_parser = parse_drift)]
    pub max_clock_drift: f64,
    /// With --etcd: how long the worker may reach no coordinator before it stops its attempts
    /// and gives its lease back, so they run elsewhere.
    #[arg(long, env = "SWARM_LINK_HOLD", default_value = "30s", value_parser = parse_ttl)]
    pub link_hold: Duration,
    /// A label subtasks' placements can require, avoid or prefer (`pool=gpu`; repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A resource attempts hold while they run (`gpu=1`, `memory=16Gi`, `cpu=4`; repeatable):
    /// a subtask whose placement asks for it runs here only while enough is free.
    #[arg(long = "resource", value_name = "NAME=AMOUNT", value_parser = parse_resource)]
    pub resources: Vec<(String, String)>,
}

/// What workers offer besides the built-in tools: models for agents, MCP servers, `append`.
/// The same flags on `swarm worker`, `swarm up` (its in-process workers) and `swarm run`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WorkerKitArgs {
    /// Offer the side-effecting `append` tool, writing files in this directory.
    #[arg(long, env = "SWARM_APPEND_DIR")]
    pub append_dir: Option<PathBuf>,
    /// MCP servers whose tools the workers offer (YAML; see docs/agents.md).
    #[arg(long, env = "SWARM_MCP")]
    pub mcp: Option<PathBuf>,
    /// OpenAI-compatible model endpoints for agents (YAML: name → base_url, model, api_key_env…).
    #[arg(long, env = "SWARM_MODELS")]
    pub models: Option<PathBuf>,
    /// A script for the `scripted` model (YAML).
    #[arg(long, env = "SWARM_SCRIPT")]
    pub script: Option<PathBuf>,
    /// Do not offer the sandboxed `exec` tool (offered by default where bubblewrap works).
    #[arg(long, env = "SWARM_NO_EXEC")]
    pub no_exec: bool,
    /// Where subtasks' workspaces live (`exec` runs in them); default: a directory under the
    /// system's temporary directory.
    #[arg(long, env = "SWARM_WORKSPACE_DIR")]
    pub workspace_dir: Option<PathBuf>,
    /// How long a run's workspaces are kept once untouched (for debugging), e.g. `1h`.
    #[arg(long, env = "SWARM_WORKSPACE_TTL", default_value = "1h", value_parser = parse_ttl)]
    pub workspace_ttl: std::time::Duration,
    /// The most memory one `exec` call may use (default 512MiB; a call may ask for less).
    #[arg(long, env = "SWARM_EXEC_MEMORY", value_parser = parse_bytes)]
    pub exec_memory: Option<u64>,
    /// The largest file one `exec` call may write (default 100MiB).
    #[arg(long, env = "SWARM_EXEC_FILE_SIZE", value_parser = parse_bytes)]
    pub exec_file_size: Option<u64>,
    /// The most a workspace may hold after an `exec` call (default 1GiB).
    #[arg(long, env = "SWARM_EXEC_WORKSPACE_SIZE", value_parser = parse_bytes)]
    pub exec_workspace_size: Option<u64>,
}

/// Admission caps (docs/configuration.md): beyond them SubmitRun answers RESOURCE_EXHAUSTED.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct CapsArgs {
    /// Runs not yet ended, at most.
    #[arg(long, env = "SWARM_MAX_ACTIVE_RUNS", default_value_t = 1_000)]
    pub max_active_runs: u32,
    /// Subtasks of active runs not yet ended, cluster-wide, at most.
    #[arg(long, env = "SWARM_MAX_QUEUED_SUBTASKS", default_value_t = 250_000)]
    pub max_queued_subtasks: u64,
    /// Events kept in one run's log (later progress events are counted, not kept).
    #[arg(long, env = "SWARM_MAX_RUN_EVENTS", default_value_t = 1_000_000)]
    pub max_run_events: usize,
}

impl From<CapsArgs> for swarm_coordinator::manager::AdmissionCaps {
    fn from(c: CapsArgs) -> Self {
        Self {
            max_active_runs: c.max_active_runs,
            max_queued_subtasks: c.max_queued_subtasks,
            max_run_events: c.max_run_events,
        }
    }
}

/// Which coordinator a client command calls, and how: `--addr`, `--token`, `--tls-*`.
#[derive(clap::Args, Clone, Debug)]
pub struct CoordinatorTarget {
    #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// The bearer token to authenticate with (the coordinator's --auth-file holds its SHA-256).
    #[arg(long, env = "SWARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

impl CoordinatorTarget {
    /// A client of that coordinator.
    pub async fn connect(self) -> anyhow::Result<swarm_cli::client::Client> {
        swarm_cli::client::connect_with(&self.addr, self.token.as_deref(), &self.tls.into()).await
    }
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// Wait for the run to end, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object (with --wait: at the end).
    #[arg(long)]
    pub json: bool,
    /// Submitting again with the same key returns the same run.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// When the cluster is at an admission cap (RESOURCE_EXHAUSTED with a retry delay), wait
    /// the delay it asks for and submit again, for up to 10 minutes (or `--retry-busy=DURATION`).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, default_missing_value = "10m",
          value_parser = parse_ttl)]
    pub retry_busy: Option<Duration>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The run spec (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub kit: WorkerKitArgs,
    /// In-process workers of the throwaway cluster.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Attempts each worker runs at once.
    #[arg(long, default_value_t = 64)]
    pub slots: u32,
    /// Print one JSON object at the end (as `swarm submit --wait --json`).
    #[arg(long)]
    pub json: bool,
    /// Where the throwaway coordinator listens (loopback only), so other commands can reach
    /// the run meanwhile (`swarm signal`, `swarm watch`); its URL and the run id go to stderr.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Let `http_get` (and MCP over HTTP) reach this internal range (repeatable).
    #[arg(long = "allow-egress", value_name = "CIDR")]
    pub allow_egress: Vec<swarm_worker::tools::egress::Cidr>,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// The run's id.
    pub run: String,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// Print one JSON object (the run, its summary, and with --subtasks every subtask).
    #[arg(long)]
    pub json: bool,
    /// Also list every subtask.
    #[arg(long)]
    pub subtasks: bool,
    /// Also list the artifacts the subtasks handed on (path, size, SHA-256; `swarm artifact`
    /// downloads one).
    #[arg(long)]
    pub artifacts: bool,
}

#[derive(clap::Args)]
pub struct ArtifactArgs {
    pub run: String,
    /// The subtask that handed the file on.
    pub subtask: String,
    /// The file's path, as `swarm get RUN --artifacts` lists it.
    pub path: String,
    /// Where to write it (default: standard output; `-` too).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub to: CoordinatorTarget,
}

#[derive(clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// At most this many runs, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only runs whose spec has this version label (`version:` in the spec).
    #[arg(long, value_name = "LABEL")]
    pub spec_version: Option<String>,
}

#[derive(clap::Args)]
pub struct CancelArgs {
    pub run: String,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    #[arg(long, default_value = "cancelled from the CLI")]
    pub reason: String,
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("decision").required(true).args(["approve", "reject"]))]
pub struct SignalArgs {
    pub run: String,
    /// The approval subtask.
    pub subtask: String,
    /// Approve: the subtask succeeds, with --data as its output.
    #[arg(long)]
    pub approve: bool,
    /// Reject: the subtask fails (permanent) with --reason.
    #[arg(long)]
    pub reject: bool,
    /// With --approve: the approval's output (JSON).
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// With --reject: why.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// Print the answer as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct WatchArgs {
    pub run: String,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// Start after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after_seq: u64,
    /// One JSON object per event.
    #[arg(long)]
    pub json: bool,
    /// Also print agents' partial output as it comes (model text, tool calls), per agent.
    #[arg(long)]
    pub follow_output: bool,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 100)]
    pub chains: usize,
    #[arg(long, default_value_t = 15)]
    pub length: usize,
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[arg(long, default_value_t = 64)]
    pub slots: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 50.0)]
    pub median_ms: f64,
    #[arg(long, default_value_t = 0.5)]
    pub sigma: f64,
    /// Efficiency runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Concurrent runs in the throughput test.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// efficiency, throughput, agents (embedded only), stragglers, retries, overload, scale (a
    /// run of 100,000 calls, then 10,000 subagents × 10 calls), gateway (embedded only: the
    /// model gateway against a rate-limited fixture server), exec (the sandbox's overhead and
    /// 200 calls at once), artifacts (1,000 files handed from 100 producers to one reducer),
    /// fork (a finished 1,502-call run forked `--repeat` times at one subtask of its last
    /// stage), output (the agent swarm `--repeat` times unwatched and followed, alternating:
    /// the partial output the workers send; embedded only), or all (all but overload, scale,
    /// gateway, exec, artifacts, fork and output).
    #[arg(long, default_value = "all")]
    pub scenario: String,
    #[arg(long)]
    pub json: bool,
    /// Benchmark the running cluster at this address instead of an embedded one.
    #[arg(long)]
    pub addr: Option<String>,
    /// etcd's client URL: report etcd transactions per tool call.
    #[arg(long)]
    pub etcd_metrics: Option<String>,
    /// With --addr: the coordinator's PID, to read its memory and CPU (overload scenario).
    #[arg(long)]
    pub coordinator_pid: Option<u32>,
    /// The embedded cluster authenticates every call (an auth file of one principal; the
    /// client and the workers send bearer tokens), to measure what authentication costs.
    #[arg(long)]
    pub auth: bool,
    /// The embedded cluster serves mTLS (certificates generated for the run; the client and the
    /// workers present client certificates), to measure what TLS costs.
    #[arg(long)]
    pub tls: bool,
    /// Every subtask carries a placement (one of 3 label pools, 2 resource kinds held), the
    /// embedded workers the matching labels and resources: what placement costs per call.
    #[arg(long)]
    pub placement: bool,
}

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    #[arg(long, env = "SWARM_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// The service to check ("" is the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
}

#[derive(clap::Args)]
pub struct ExampleArgs {
    pub which: String,
}
