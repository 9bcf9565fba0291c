//! Tools: what a worker can run. A [`Tool`] has a [`ToolInfo`] (name, flags, default timeout)
//! and an async `call`; the [`ToolRegistry`] maps names to tools. Built-ins live in
//! [`builtin`]; MCP-backed tools implement the same trait.

pub mod builtin;
pub mod egress;
pub mod exec;
pub mod mcp;
pub mod mcp_http;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use swarm_core::{FailureKind, Retryable};
use tokio_util::sync::CancellationToken;

/// What the cluster knows of a tool.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolInfo {
    /// Registered name.
    pub name: String,
    /// One line for humans and models.
    pub description: String,
    /// Has no side effects.
    pub read_only: bool,
    /// Running it twice has the effect of running it once.
    pub idempotent: bool,
    /// Default start-to-close limit when the subtask sets none.
    pub timeout: Option<Duration>,
}

/// The context of one call.
#[derive(Clone, Debug)]
pub struct ToolContext {
    /// The run.
    pub run_id: String,
    /// The subtask.
    pub subtask_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Cancelled when the attempt must stop.
    pub cancel: CancellationToken,
    /// With a store: the worker's lease hold. A tool about to make a side effect asks
    /// [`ToolContext::may_act`] first (a worker frozen past its lease and thawed must not act
    /// before its own enforcement has stopped the attempt).
    pub hold: Option<std::sync::Arc<crate::hold::LeaseHold>>,
}

impl ToolContext {
    /// Whether the attempt may still act: not cancelled, and the worker's lease hold (if any)
    /// has not lapsed (checked on the clock, not on a timer that may not have fired yet).
    pub fn may_act(&self) -> bool {
        !self.cancel.is_cancelled() && self.hold.as_ref().is_none_or(|h| h.valid())
    }
}

/// A failed call.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ToolError {
    /// The class, which decides retries.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

impl ToolError {
    /// Bad arguments or another failure that will repeat: not retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { kind: FailureKind::Permanent, message: message.into() }
    }
    /// A passing failure: retried per policy.
    pub fn transient(message: impl Into<String>) -> Self {
        Self { kind: FailureKind::Transient, message: message.into() }
    }
}

impl Retryable for ToolError {
    fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// The future a tool call returns.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Value, ToolError>> + Send>>;

/// A tool a worker can run.
pub trait Tool: Send + Sync + 'static {
    /// Name, flags and defaults.
    fn info(&self) -> &ToolInfo;
    /// Runs one call. `args` is a JSON object.
    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture;
}

/// The tools of a worker, by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    /// Where subtasks' workspaces are (for artifacts), when this worker keeps them.
    workspaces: Option<exec::Workspaces>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in tools: `sleep`, `echo`, `http_get` (public addresses only), `flaky`.
    pub fn builtin() -> Self {
        Self::builtin_with(Arc::new(egress::EgressPolicy::public_only()))
    }

    /// The same, `http_get` under `egress`.
    pub fn builtin_with(egress: Arc<egress::EgressPolicy>) -> Self {
        let mut r = Self::new();
        r.register(Arc::new(builtin::Sleep::new()));
        r.register(Arc::new(builtin::Echo::new()));
        r.register(Arc::new(builtin::HttpGet::with_policy(egress)));
        r.register(Arc::new(builtin::Flaky::new()));
        r
    }

    /// Adds (or replaces) a tool.
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.info().name.clone(), tool);
    }

    /// The tool called `name`.
    pub fn set_workspaces(&mut self, workspaces: exec::Workspaces) {
        self.workspaces = Some(workspaces);
    }

    /// Where subtasks' workspaces are, when this worker keeps them (artifacts need them).
    pub fn workspaces(&self) -> Option<&exec::Workspaces> {
        self.workspaces.as_ref()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// Every tool's info, by name.
    pub fn infos(&self) -> impl Iterator<Item = &ToolInfo> {
        self.tools.values().map(|t| t.info())
    }
}

/// Reads a required unsigned integer argument.
pub fn arg_u64(args: &Value, name: &str) -> Result<u64, ToolError> {
    args.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| ToolError::permanent(format!("args.{name}: required non-negative integer")))
}

/// Reads an optional number argument.
pub fn arg_f64_or(args: &Value, name: &str, default: f64) -> Result<f64, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| ToolError::permanent(format!("args.{name}: must be a number"))),
    }
}

/// Reads a required string argument.
pub fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| ToolError::permanent(format!("args.{name}: required string")))
}
