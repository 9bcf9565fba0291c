//! The server commands: `swarm up` (coordinator and workers in one process), `swarm
//! coordinator` and `swarm worker`, with their signal handling and health ports.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::{Coordinator, CoordinatorConfig};
use swarm_worker::{ToolRegistry, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::args::{CoordinatorArgs, UpArgs, WorkerArgs, WorkerKitArgs};

/// `swarm up`: a coordinator and in-process workers until Ctrl-C or SIGTERM.
pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let UpArgs {
        listen,
        auth_file,
        insecure,
        tls,
        workers,
        slots,
        store,
        payloads,
        http_listen,
        no_worker_timeout,
        max_artifact_bytes,
        heartbeat_interval,
        audit_log,
        allow_egress,
        repeatable_tools,
        kit,
        caps,
    } = args;
    let auth = authenticator(auth_file.as_deref(), listen, insecure)?;
    let backend =
        if store.etcd.is_empty() { "memory store".to_owned() } else { format!("etcd {}", store.etcd.join(",")) };
    let mut options = EmbeddedOptions { listen, workers, slots, http_listen, ..EmbeddedOptions::default() };
    options.coordinator.prefix = store.prefix.clone();
    options.coordinator.lease_ttl = store.lease_ttl;
    options.coordinator.manager.no_worker_timeout = no_worker_timeout;
    options.coordinator.manager.max_artifact_bytes = max_artifact_bytes;
    options.coordinator.manager.heartbeat_interval = heartbeat_interval;
    options.coordinator.audit = audit(audit_log.as_deref())?;
    options.coordinator.manager.caps = caps.into();
    options.coordinator.manager.operator_repeatable = repeatable_tools.into_iter().collect();
    options.coordinator.payloads = store.payloads(payloads.as_deref())?;
    options.coordinator.auth = auth;
    options.egress = swarm_worker::tools::egress::EgressPolicy { allow: allow_egress };
    let (tools, models) = load_kit(&kit, &options.egress).await?;
    options.tools = Some(tools);
    options.models = Arc::new(models);
    options.coordinator.model_limits = model_limits(kit.models.as_deref())?;
    options.tls = tls.load()?;
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    if let Some(server_tls) = &options.tls {
        server_tls.watch(tls.tls_reload, token.clone());
    }
    let cluster = Embedded::start_on(options, store.open().await?, None).await?;
    eprintln!(
        "swarm up: coordinator on {} with {workers} workers × {slots} slots ({backend}); Ctrl-C stops",
        cluster.url()
    );
    if let Some(addr) = cluster.http_addr {
        let scheme = if tls.tls_cert.is_some() { "https" } else { "http" };
        eprintln!("swarm up: web view on {scheme}://{addr}/, metrics on {scheme}://{addr}/metrics");
    }
    tokio::select! {
        _ = token.cancelled() => {}
        _ = cluster.stopped() => {}
    }
    let fatal = cluster.fatal.clone();
    cluster.stop().await;
    Ok(exit_code(&fatal))
}

/// The coordinator's callers: the principals of `--auth-file`, or (without one) everyone as
/// administrator, which is refused on a non-loopback address unless `--insecure` says so.
fn authenticator(
    auth_file: Option<&std::path::Path>,
    listen: std::net::SocketAddr,
    insecure: bool,
) -> anyhow::Result<swarm_coordinator::auth::Authenticator> {
    match auth_file {
        Some(path) => swarm_coordinator::auth::Authenticator::from_file(path),
        None if listen.ip().is_loopback() || insecure => {
            if !listen.ip().is_loopback() {
                tracing::warn!(%listen, "--insecure: no authentication on a non-loopback address; anyone who reaches it can drive the cluster");
            }
            Ok(swarm_coordinator::auth::Authenticator::off())
        }
        None => anyhow::bail!(
            "refusing to listen on {listen} without --auth-file: anyone who can reach it could submit runs, read \
             every run and connect as a worker. Give --auth-file FILE (docs/security.md), listen on a loopback \
             address, or pass --insecure on a trusted network"
        ),
    }
}

/// 70 (EX_SOFTWARE) when the coordinator stopped because it could not go on, so a supervisor
/// restarts it; success otherwise.
fn exit_code(fatal: &swarm_coordinator::manager::Fatal) -> ExitCode {
    match fatal.reason() {
        Some(reason) => {
            eprintln!("swarm: the coordinator stopped: {reason}");
            ExitCode::from(70)
        }
        None => ExitCode::SUCCESS,
    }
}

/// `swarm coordinator`: one coordinator process (with etcd, one of several).
pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let CoordinatorArgs {
        listen,
        auth_file,
        insecure,
        tls,
        peer_ca,
        peer_server_name,
        advertise,
        store,
        payloads,
        rate_limits,
        run_ttl,
        http_listen,
        health_listen,
        metrics_listen,
        no_worker_timeout,
        max_artifact_bytes,
        heartbeat_interval,
        audit_log,
        repeatable_tools,
        models,
        caps,
    } = args;
    let auth = authenticator(auth_file.as_deref(), listen, insecure)?;
    let server_tls = tls.load()?;
    let model_limits = model_limits(models.as_deref())?;
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    if let Some(server_tls) = &server_tls {
        server_tls.watch(tls.tls_reload, token.clone());
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("--listen {listen}"))?;
    let scheme = if server_tls.is_some() { "https" } else { "http" };
    let config = CoordinatorConfig {
        auth,
        prefix: store.prefix.clone(),
        advertise: advertise.unwrap_or_else(|| format!("{scheme}://{listen}")),
        lease_ttl: store.lease_ttl,
        run_ttl: (!run_ttl.is_zero()).then_some(run_ttl),
        payloads: store.payloads(payloads.as_deref())?,
        model_limits,
        peer_tls: tls.peer_tls(peer_ca.as_deref(), peer_server_name.as_deref())?,
        audit: audit(audit_log.as_deref())?,
        ..CoordinatorConfig::default()
    };
    let mut config = config;
    config.manager.rate_limits = rate_limits.into_iter().collect();
    config.manager.no_worker_timeout = no_worker_timeout;
    config.manager.max_artifact_bytes = max_artifact_bytes;
    config.manager.heartbeat_interval = heartbeat_interval;
    config.manager.caps = caps.into();
    config.manager.operator_repeatable = repeatable_tools.into_iter().collect();
    let coordinator = Coordinator::start(config, store.open().await?, token);
    if let Some(addr) = http_listen {
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--http-listen {addr}"))?;
        tracing::info!(addr = %http.local_addr()?, tls = server_tls.is_some(), "web view and /metrics serving");
        coordinator.serve_http_on(coordinator.incoming().listen(http, server_tls.as_ref().map(|t| t.http())));
    }
    if let Some(addr) = health_listen {
        let health = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--health-listen {addr}"))?;
        coordinator.serve_health(health);
    }
    let metrics_stop = CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    if let Some(addr) = metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics-listen {addr}"))?;
        tracing::info!(addr = %metrics.local_addr()?, "/metrics serving");
        tokio::spawn(swarm_telemetry::serve_metrics(metrics, metrics_stop.cancelled_owned()));
    }
    let fatal = coordinator.fatal();
    let incoming = coordinator.incoming().listen(listener, server_tls);
    coordinator.serve_on(incoming, Duration::from_secs(10)).await?;
    Ok(exit_code(&fatal))
}

/// The audit log of `--audit-log` (off without it).
fn audit(path: Option<&str>) -> anyhow::Result<Arc<swarm_coordinator::audit::AuditLog>> {
    Ok(Arc::new(match path {
        None => swarm_coordinator::audit::AuditLog::off(),
        Some(p) => swarm_coordinator::audit::AuditLog::open(p).with_context(|| format!("--audit-log {p}"))?,
    }))
}

/// `swarm worker`: a worker process; drains on SIGTERM.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let WorkerArgs {
        coordinator,
        token: auth_token,
        tls,
        slots,
        id,
        store,
        kit,
        http_listen,
        health_listen,
        drain_timeout,
        allow_egress,
        max_clock_drift,
        link_hold,
        labels,
        resources,
    } = args;
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    // Serves until the process exits; NOT_SERVING once the drain starts.
    let exit = CancellationToken::new();
    let _exit_guard = exit.clone().drop_guard();
    if let Some(addr) = health_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--health-listen {addr}"))?;
        serve_worker_health(listener, token.clone(), exit.clone()).await;
    }
    if let Some(addr) = http_listen {
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--http-listen {addr}"))?;
        tracing::info!(addr = %http.local_addr()?, "/metrics serving");
        tokio::spawn(swarm_telemetry::serve_metrics(http, exit.clone().cancelled_owned()));
    }
    let mut config = WorkerConfig::new(coordinator);
    config.slots = slots;
    config.drain_timeout = drain_timeout;
    config.token = auth_token;
    config.tls = tls.into();
    config.lease_ttl = store.lease_ttl;
    config.max_clock_drift = max_clock_drift;
    config.link_hold = link_hold;
    config.labels = labels.into_iter().collect();
    config.resources = resources.into_iter().collect();
    if let Some(id) = id {
        config.worker_id = id.into();
    }
    if !store.etcd.is_empty() {
        config.source =
            swarm_worker::CoordinatorSource::Store { store: store.open().await?, prefix: store.prefix.clone() };
    }
    let egress = swarm_worker::tools::egress::EgressPolicy { allow: allow_egress };
    let (tools, models) = load_kit(&kit, &egress).await?;
    config.models = Arc::new(models);
    swarm_worker::run(config, tools, token).await?;
    Ok(ExitCode::SUCCESS)
}

/// Where this worker keeps subtasks' workspaces (`exec`, the file tools and artifacts use
/// them); runs' workspaces untouched for the TTL are removed, now and every tenth of it.
fn workspaces(kit: &WorkerKitArgs) -> Option<swarm_worker::tools::exec::Workspaces> {
    let root = kit.workspace_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("swarm-workspaces"));
    let workspaces = match swarm_worker::tools::exec::Workspaces::new(&root, kit.workspace_ttl) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("no workspaces (`exec` and artifacts are off): workspace directory {}: {e}", root.display());
            return None;
        }
    };
    let gc = workspaces.clone();
    tokio::spawn(async move {
        loop {
            let w = gc.clone();
            let _ = tokio::task::spawn_blocking(move || w.collect_garbage()).await;
            tokio::time::sleep((gc.ttl / 10).max(std::time::Duration::from_secs(1))).await;
        }
    });
    Some(workspaces)
}

/// Offers `exec` when bubblewrap works here, saying which limits are in force; otherwise says
/// exactly what is missing (the worker serves on without it).
async fn register_exec(
    tools: &mut ToolRegistry,
    workspaces: swarm_worker::tools::exec::Workspaces,
    kit: &WorkerKitArgs,
    egress: &swarm_worker::tools::egress::EgressPolicy,
) {
    use swarm_worker::tools::exec::{Exec, Limits, Sandbox};
    let sandbox = match Sandbox::probe().await {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!("the sandboxed `exec` tool is off: {why} (--no-exec silences this)");
            return;
        }
    };
    tracing::info!(workspaces = %workspaces.root.display(), limits = sandbox.describe(), "sandboxed `exec` offered");
    let sandbox = Arc::new(sandbox);
    for tool in swarm_worker::tools::exec::files::FileTool::all(&sandbox, &workspaces) {
        tools.register(Arc::new(tool));
    }
    let mut limits = Limits::default();
    limits.memory_bytes = kit.exec_memory.unwrap_or(limits.memory_bytes);
    limits.file_bytes = kit.exec_file_size.unwrap_or(limits.file_bytes);
    limits.workspace_bytes = kit.exec_workspace_size.unwrap_or(limits.workspace_bytes);
    tools.register(Arc::new(Exec::new(sandbox, workspaces, limits).with_egress(Arc::new(egress.clone()))));
}

/// The tools (built-in under `egress`, `append`, MCP servers' tools) and models (endpoints, the
/// scripted model) of `kit`.
pub(crate) async fn load_kit(
    kit: &WorkerKitArgs,
    egress: &swarm_worker::tools::egress::EgressPolicy,
) -> anyhow::Result<(Arc<ToolRegistry>, swarm_worker::model::ModelRegistry)> {
    let mut tools = ToolRegistry::builtin_with(Arc::new(egress.clone()));
    if let Some(dir) = &kit.append_dir {
        anyhow::ensure!(dir.is_dir(), "--append-dir {} is not a directory", dir.display());
        tools.register(Arc::new(swarm_worker::tools::builtin::Append::new(dir.clone())));
    }
    if let Some(workspaces) = workspaces(kit) {
        tools.set_workspaces(workspaces.clone());
        if !kit.no_exec {
            register_exec(&mut tools, workspaces, kit, egress).await;
        }
    }
    if let Some(path) = &kit.mcp {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config =
            swarm_worker::tools::mcp::parse_config(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let loaded = swarm_worker::tools::mcp::load_with(&config, egress).await.map_err(|e| anyhow::anyhow!(e))?;
        swarm_worker::tools::mcp::register(&mut tools, &loaded);
    }
    let mut registry = swarm_worker::model::ModelRegistry::new();
    if let Some(path) = &kit.models {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let endpoints =
            swarm_worker::model::load_endpoints(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (name, endpoint) in endpoints {
            let model =
                swarm_worker::model::OpenAiModel::new(&endpoint).map_err(|e| anyhow::anyhow!("model `{name}`: {e}"))?;
            registry.register(&name, Arc::new(model));
        }
    }
    if let Some(path) = &kit.script {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let model = swarm_worker::model::ScriptedModel::from_yaml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        registry.register("scripted", Arc::new(model));
    }
    Ok((Arc::new(tools), registry))
}

/// The model gateway's limits in a models file (`rpm`, `tpm`, `max_concurrency` beside each
/// endpoint); none without a file.
pub(crate) fn model_limits(
    path: Option<&std::path::Path>,
) -> anyhow::Result<std::collections::HashMap<String, swarm_coordinator::gateway::Limits>> {
    let Some(path) = path else { return Ok(Default::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let limits = swarm_coordinator::gateway::limits_from_models_file(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (name, l) in &limits {
        tracing::info!(endpoint = %name, rpm = ?l.rpm, tpm = ?l.tpm, max_concurrency = ?l.max_concurrency, "model gateway limits");
    }
    Ok(limits)
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
pub fn cancel_on_signal(token: CancellationToken) {
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
