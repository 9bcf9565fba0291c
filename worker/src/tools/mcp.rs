//! MCP servers as tools, through `rmcp`: stdio servers (the worker spawns them) and streamable
//! HTTP servers. Each server's tools join the worker's registry under their own names.
//!
//! A server that crashes or hangs up gives a retryable tool error and is started again on the
//! next call. Configured per worker (`--mcp FILE`):
//!
//! ```yaml
//! servers:
//!   time:
//!     command: python3
//!     args: [-m, mcp_server_time, --local-timezone, UTC]
//!     read_only: true
//!     idempotent: true
//!   search:
//!     url: http://127.0.0.1:8765/mcp
//!     timeout_secs: 30
//! ```
//!
//! Servers over HTTP are reached under the worker's egress policy (`--allow-egress`), as
//! `http_get` is: a URL whose host resolves to an internal address (loopback, private,
//! link-local, …) is refused when the file is loaded, naming the address, unless the server's
//! entry says `internal: true` (or `--allow-egress` covers it); then the addresses it resolves
//! to at load are allowed for that server alone. Any other internal address — a redirect, or
//! the name rebinding later to 169.254.169.254 — is refused, and the call fails `permanent`
//! naming the policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError, ServiceExt};
use serde::Deserialize;
use serde_json::Value;
use swarm_core::FailureKind;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::egress::{Cidr, EgressPolicy};
use super::{Tool, ToolContext, ToolError, ToolFuture, ToolInfo};

/// One MCP server in the config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The command of a stdio server.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// The endpoint of a streamable-HTTP server.
    #[serde(default)]
    pub url: Option<String>,
    /// Its tools have no side effects.
    #[serde(default)]
    pub read_only: bool,
    /// Its tools may safely run twice.
    #[serde(default)]
    pub idempotent: bool,
    /// Per-call timeout (default 60 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// An HTTP server at an internal address the egress policy forbids (a sidecar, a service
    /// in the cluster): reach it there, and only there.
    #[serde(default)]
    pub internal: bool,
}

/// The `--mcp` file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    pub servers: HashMap<String, McpServerConfig>,
}

type Client = RunningService<RoleClient, ()>;

/// A connection to one server, re-established after a crash.
pub struct McpServer {
    name: String,
    config: McpServerConfig,
    /// The live client and its generation (each connection a new one).
    client: Mutex<Option<(u64, Client)>>,
    /// Connections made so far (the next one's generation).
    connections: std::sync::atomic::AtomicU64,
    /// What an HTTP server's connections may reach.
    egress: Arc<EgressPolicy>,
    /// Why its client last refused to connect somewhere.
    refusals: super::egress::Refusals,
    /// The session id of an HTTP server's connection (`mcp.session.id`).
    session: super::mcp_http::SessionId,
}

/// A failed MCP call: the tool error, and its `error.type` as the MCP conventions name it (the
/// JSON-RPC error code, `tool_error` for a result with `isError`, `timeout`, …).
struct Failed {
    error: ToolError,
    error_type: String,
}

impl From<ToolError> for Failed {
    fn from(error: ToolError) -> Self {
        let error_type = match error.kind {
            FailureKind::ToolReported => "tool_error".to_owned(),
            kind => kind.as_str().to_owned(),
        };
        Self { error, error_type }
    }
}

fn transient(message: String) -> ToolError {
    ToolError { kind: FailureKind::Transient, message }
}

impl McpServer {
    /// A server, not yet started, reached under the public-only egress policy.
    pub fn new(name: &str, config: McpServerConfig) -> Self {
        Self::with_egress(name, config, Arc::new(EgressPolicy::public_only()))
    }

    /// A server whose HTTP connections go only where `egress` permits.
    pub fn with_egress(name: &str, config: McpServerConfig, egress: Arc<EgressPolicy>) -> Self {
        Self {
            name: name.to_owned(),
            config,
            client: Mutex::new(None),
            connections: Default::default(),
            egress,
            refusals: Default::default(),
            session: Default::default(),
        }
    }

    /// A permanent failure when the last error was an egress refusal.
    fn refused(&self) -> Option<ToolError> {
        self.refusals.take().map(|why| ToolError::permanent(format!("MCP server `{}`: {why}", self.name)))
    }

    async fn connect(&self) -> Result<Client, ToolError> {
        let failed = |e: String| transient(format!("MCP server `{}` could not start: {e}", self.name));
        match (&self.config.command, &self.config.url) {
            (Some(command), None) => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(&self.config.args).envs(&self.config.env).kill_on_drop(true);
                let (transport, _stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| failed(e.to_string()))?;
                ().serve(transport).await.map_err(|e| failed(e.to_string()))
            }
            (None, Some(url)) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| ToolError::permanent(format!("MCP server `{}`: url: {e}", self.name)))?;
                if let Some(why) = super::egress::refused_literal(&self.egress, &parsed) {
                    return Err(ToolError::permanent(format!("MCP server `{}`: {why}", self.name)));
                }
                // Installing the ring provider twice is harmless; the first install wins.
                let _ = rustls::crypto::ring::default_provider().install_default();
                // No proxy: a proxy would resolve names where the policy cannot check them.
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .dns_resolver(Arc::new(super::egress::CheckedResolver(
                        self.egress.clone(),
                        Some(self.refusals.clone()),
                    )))
                    .redirect(super::egress::redirects_logged(self.egress.clone(), Some(self.refusals.clone())))
                    .build()
                    .map_err(|e| failed(e.to_string()))?;
                let mut config =
                    rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url.clone());
                config.retry_config = super::mcp_http::resume_policy();
                let transport = rmcp::transport::StreamableHttpClientTransport::with_client(
                    super::mcp_http::SessionAware(http, self.session.clone()),
                    config,
                );
                self.refusals.take();
                match ().serve(transport).await {
                    Ok(c) => Ok(c),
                    Err(e) => Err(self.refused().unwrap_or_else(|| failed(e.to_string()))),
                }
            }
            _ => {
                Err(ToolError::permanent(format!("MCP server `{}`: set exactly one of `command` and `url`", self.name)))
            }
        }
    }

    /// A live peer and its connection's generation, starting (or restarting) the server if
    /// needed.
    async fn peer(&self) -> Result<(u64, Peer<RoleClient>), ToolError> {
        let mut client = self.client.lock().await;
        if client.as_ref().is_none_or(|(_, c)| c.is_closed()) {
            if client.is_some() {
                warn!(server = %self.name, "MCP server is gone; starting it again");
            }
            let generation = self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *client = Some((generation, self.connect().await?));
            info!(server = %self.name, "MCP server connected");
        }
        client.as_ref().map(|(g, c)| (*g, c.peer().clone())).ok_or_else(|| transient("no MCP client".into()))
    }

    /// Forgets connection `generation` if it is still the live one (the next call starts the
    /// server again); a newer connection that another call made stays.
    async fn reset(&self, generation: u64) {
        let mut client = self.client.lock().await;
        if client.as_ref().is_some_and(|(g, _)| *g == generation)
            && let Some((_, mut c)) = client.take()
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
        }
    }

    /// The server's tools: (name, description).
    pub async fn list(&self) -> Result<Vec<(String, String)>, ToolError> {
        let (_, peer) = self.peer().await?;
        let tools =
            peer.list_all_tools().await.map_err(|e| transient(format!("listing tools of `{}`: {e}", self.name)))?;
        Ok(tools
            .into_iter()
            .map(|t| (t.name.to_string(), t.description.map(|d| d.to_string()).unwrap_or_default()))
            .collect())
    }

    /// Calls a tool.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Value, ToolError> {
        let span = self.span(tool);
        let started = std::time::Instant::now();
        let result = tracing::Instrument::instrument(self.call_inner(tool, args), span.clone()).await;
        if let Some(id) = self.session.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
            span.record("mcp.session.id", id);
        }
        let transport = if self.config.url.is_some() { "tcp" } else { "pipe" };
        let mut attrs =
            vec![("mcp.method.name", "tools/call"), ("gen_ai.tool.name", tool), ("network.transport", transport)];
        let result = result.map_err(|f| {
            span.record("otel.status_code", "error");
            span.record("error.type", f.error_type.as_str());
            (f.error, f.error_type)
        });
        if let Err((_, error_type)) = &result {
            attrs.push(("error.type", error_type.as_str()));
        }
        swarm_telemetry::metrics().mcp_duration.record(started.elapsed().as_secs_f64(), &attrs);
        result.map_err(|(error, _)| error)
    }

    /// `tools/call {tool}`: the MCP call, a CLIENT span (MCP semantic conventions) under the
    /// calling `execute_tool` span.
    fn span(&self, tool: &str) -> tracing::Span {
        let (transport, address, port) = match self.config.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()) {
            Some(url) => ("tcp", url.host_str().unwrap_or_default().to_owned(), url.port_or_known_default()),
            None => ("pipe", String::new(), None),
        };
        let span = tracing::info_span!(
            target: "swarm_worker::tool",
            "mcp",
            otel.name = format!("tools/call {tool}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            mcp.method.name = "tools/call",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = tool,
            swarm.mcp.server = self.name.as_str(),
            network.transport = transport,
            network.protocol.name = tracing::field::Empty,
            mcp.session.id = tracing::field::Empty,
            mcp.protocol.version = tracing::field::Empty,
            rpc.response.status_code = tracing::field::Empty,
            server.address = tracing::field::Empty,
            server.port = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if !address.is_empty() {
            span.record("server.address", address.as_str());
            span.record("network.protocol.name", "http");
        }
        if let Some(p) = port {
            span.record("server.port", i64::from(p));
        }
        span
    }

    async fn call_inner(&self, tool: &str, args: Value) -> Result<Value, Failed> {
        let (generation, peer) = self.peer().await?;
        let span = tracing::Span::current();
        if let Some(info) = peer.peer_info() {
            span.record("mcp.protocol.version", info.protocol_version.to_string());
        }
        let arguments = match args {
            Value::Object(map) => map,
            Value::Null => Default::default(),
            _ => return Err(ToolError::permanent("MCP tool arguments must be a JSON object").into()),
        };
        let params = call_params(tool, arguments, &span);
        let timeout = Duration::from_secs(self.config.timeout_secs.unwrap_or(60));
        let result = match tokio::time::timeout(timeout, peer.call_tool(params)).await {
            Err(_) => {
                self.reset(generation).await;
                return Err(ToolError {
                    kind: FailureKind::Timeout,
                    message: format!("MCP server `{}` did not answer in {timeout:?}", self.name),
                }
                .into());
            }
            Ok(Err(e)) => {
                // A broken transport (a server process that died) is started again by the next
                // call. Any other error leaves the connection: an HTTP session that expired was
                // re-initialised by the transport already, and other calls go on over it.
                if matches!(e, ServiceError::TransportClosed | ServiceError::TransportSend(_)) {
                    self.reset(generation).await;
                }
                if let Some(refused) = self.refused() {
                    return Err(refused.into());
                }
                let error = transient(format!("MCP server `{}` failed: {e}", self.name));
                // A JSON-RPC error: its code is the error's type (MCP conventions).
                if let ServiceError::McpError(data) = &e {
                    let code = data.code.0.to_string();
                    span.record("rpc.response.status_code", code.as_str());
                    return Err(Failed { error, error_type: code });
                }
                return Err(error.into());
            }
            Ok(Ok(r)) => r,
        };
        Ok(tool_result(serde_json::to_value(&result).unwrap_or(Value::Null))?)
    }
}

/// A `tools/call` request's parameters, the calling span's W3C trace context in `_meta`
/// (`traceparent`, `tracestate`: MCP conventions, SEP-414) so that the server's spans join the
/// trace.
fn call_params(tool: &str, arguments: serde_json::Map<String, Value>, span: &tracing::Span) -> CallToolRequestParams {
    let mut params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    let context = swarm_telemetry::inject(span);
    if let Some(parent) = context.get("traceparent") {
        let mut meta = rmcp::model::MetaObject::new();
        meta.set_traceparent(parent.clone());
        if let Some(state) = context.get("tracestate").filter(|s| !s.is_empty()) {
            meta.set_tracestate(state.clone());
        }
        params.meta = Some(rmcp::model::RequestMetaObject(meta));
    }
    params
}

/// A `tools/call` result (as JSON) as a tool outcome: `structuredContent` when present, else
/// the text items joined (parsed as JSON when they are JSON); `isError` makes it a failure the
/// tool reported.
pub fn tool_result(value: Value) -> Result<Value, ToolError> {
    let text: Vec<String> = value["content"]
        .as_array()
        .map(|items| items.iter().filter_map(|c| c["text"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let output = match value.get("structuredContent") {
        Some(v) if !v.is_null() => v.clone(),
        _ => {
            let joined = text.join("\n");
            serde_json::from_str(&joined).unwrap_or(Value::String(joined))
        }
    };
    if value["isError"].as_bool() == Some(true) {
        return Err(ToolError {
            kind: FailureKind::ToolReported,
            message: format!("the tool reported an error: {output}"),
        });
    }
    Ok(output)
}

/// One tool of an MCP server, offered as `SERVER__TOOL` (see [`register`]).
#[derive(Clone)]
pub struct McpTool {
    info: ToolInfo,
    /// The tool's own name on its server.
    remote: String,
    server: Arc<McpServer>,
}

impl McpTool {
    /// The tool's name on its server (its bare name).
    pub fn remote_name(&self) -> &str {
        &self.remote
    }
}

impl Tool for McpTool {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        let server = self.server.clone();
        let name = self.remote.clone();
        Box::pin(async move { server.call(&name, args).await })
    }
}

/// The name a worker offers an MCP tool under: `SERVER__TOOL`, each part reduced to what an
/// OpenAI function name allows (letters, digits, `_`, `-`), at most 64 characters.
pub fn qualified_name(server: &str, tool: &str) -> String {
    let clean = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect::<String>()
    };
    let mut name = format!("{}__{}", clean(server), clean(tool));
    name.truncate(64);
    name
}

/// Adds MCP tools to `registry`: each under its qualified name (`SERVER__TOOL`), and under its
/// bare name only where no built-in tool and no other server's tool has it. Each collision is
/// logged once, naming both sides; a bare built-in name never changes meaning.
pub fn register(registry: &mut super::ToolRegistry, tools: &[Arc<McpTool>]) {
    let mut bare: HashMap<&str, Vec<&Arc<McpTool>>> = HashMap::new();
    for tool in tools {
        registry.register(tool.clone());
        bare.entry(tool.remote.as_str()).or_default().push(tool);
    }
    let mut names: Vec<_> = bare.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    for (name, owners) in names {
        let qualified: Vec<&str> = owners.iter().map(|t| t.info.name.as_str()).collect();
        if registry.get(name).is_some() {
            warn!(tool = name, mcp = ?qualified, "an MCP tool has the name of a tool this worker already offers (a built-in one): the bare name keeps meaning that; call the MCP one by its qualified name");
        } else if owners.len() > 1 {
            warn!(tool = name, mcp = ?qualified, "MCP servers share a tool name: the bare name is not offered; call each by its qualified name");
        } else {
            let mut alias = McpTool::clone(owners[0]);
            alias.info.name = name.to_owned();
            registry.register(Arc::new(alias));
        }
    }
}

/// Starts every configured server and returns its tools, named `SERVER__TOOL` (HTTP servers
/// under the public-only egress policy plus their own addresses); [`register`] offers them.
pub async fn load(config: &McpConfig) -> Result<Vec<Arc<McpTool>>, String> {
    load_with(config, &EgressPolicy::public_only()).await
}

/// [`load`] under the worker's egress policy: an HTTP server at an internal address is refused
/// unless its entry says `internal: true`, which allows the addresses its host resolves to now,
/// for it alone.
pub async fn load_with(config: &McpConfig, egress: &EgressPolicy) -> Result<Vec<Arc<McpTool>>, String> {
    let mut tools: Vec<Arc<McpTool>> = Vec::new();
    for (name, server_config) in &config.servers {
        let mut policy = egress.clone();
        if let Some(url) = &server_config.url {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("MCP server `{name}`: url `{url}`: {e}"))?;
            let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = parsed.port_or_known_default().unwrap_or(80);
            let addrs = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("MCP server `{name}`: cannot resolve {host}: {e}"))?;
            for addr in addrs {
                if egress.permits(addr.ip()) {
                    continue;
                }
                if !server_config.internal {
                    return Err(format!(
                        "MCP server `{name}`: {url} is at the internal address {}, which the egress policy forbids; \
                         set `internal: true` on it in the --mcp file (or --allow-egress {}) to reach it there",
                        addr.ip(),
                        addr.ip()
                    ));
                }
                info!(server = %name, ip = %addr.ip(), "MCP server at an internal address (internal: true): allowed for this server only");
                policy.allow.push(Cidr::host(addr.ip()));
            }
        }
        let server = Arc::new(McpServer::with_egress(name, server_config.clone(), Arc::new(policy)));
        let listed = server.list().await.map_err(|e| e.message)?;
        info!(server = %name, tools = listed.len(), "MCP tools registered");
        for (tool, description) in listed {
            tools.push(Arc::new(McpTool {
                info: ToolInfo {
                    name: qualified_name(name, &tool),
                    description,
                    read_only: server_config.read_only,
                    idempotent: server_config.idempotent,
                    timeout: None,
                },
                remote: tool,
                server: server.clone(),
            }));
        }
    }
    Ok(tools)
}

/// Reads an `--mcp` file.
pub fn parse_config(text: &str) -> Result<McpConfig, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tools::ToolRegistry;

    fn tool(server: &Arc<McpServer>, remote: &str) -> Arc<McpTool> {
        let info = ToolInfo {
            name: qualified_name(&server.name, remote),
            description: String::new(),
            read_only: true,
            idempotent: true,
            timeout: None,
        };
        Arc::new(McpTool { info, remote: remote.into(), server: server.clone() })
    }

    #[test]
    fn mcp_tools_get_qualified_names_and_bare_ones_only_where_nothing_else_has_them() {
        let config = McpServerConfig {
            command: Some("true".into()),
            args: Vec::new(),
            env: HashMap::new(),
            url: None,
            read_only: true,
            idempotent: true,
            timeout_secs: None,
            internal: false,
        };
        let server = |name: &str| Arc::new(McpServer::with_egress(name, config.clone(), Default::default()));
        let (a, b) = (server("search"), server("web.tools"));
        let tools = vec![tool(&a, "echo"), tool(&a, "fetch"), tool(&b, "fetch"), tool(&b, "time.now")];
        let mut registry = ToolRegistry::builtin();
        let builtin_echo = registry.get("echo").map(|t| t.info().description.clone());
        register(&mut registry, &tools);
        // Every tool by SERVER__TOOL (as an OpenAI function name allows).
        for name in ["search__echo", "search__fetch", "web_tools__fetch", "web_tools__time_now"] {
            assert!(registry.get(name).is_some(), "{name}");
        }
        // A built-in name keeps its meaning; a name two servers share is offered by neither.
        assert_eq!(registry.get("echo").map(|t| t.info().description.clone()), builtin_echo);
        assert!(registry.get("fetch").is_none());
        // A unique name also works bare, and calls the server's own name.
        let alias = registry.get("time.now").expect("bare alias");
        assert_eq!(alias.info().name, "time.now");
        assert_eq!(qualified_name("s", &"x".repeat(100)).len(), 64);
    }
}
