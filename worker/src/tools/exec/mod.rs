//! `exec`: runs a command line or a script in a bubblewrap sandbox ([`sandbox`]), in the
//! calling subtask's workspace ([`Workspaces`]), and answers with what happened:
//!
//! ```json
//! {"exit_code": 0, "signal": null, "stdout": "1\n", "stderr": "", "truncated": false,
//!  "limit": null, "duration_ms": 7, "files_written": ["out.csv"]}
//! ```
//!
//! Arguments: `cmd: [argv…]` or `script: "…"` with `lang: sh|python` (default `sh`); optional
//! `stdin`, `env` (names `[A-Za-z_][A-Za-z0-9_]*`), `timeout_ms`, `limits` (`cpu_seconds`,
//! `memory_mb`, `processes`, `output_bytes`, `file_mb`: each may only lower the worker's), and
//! `check: true` to fail the call (permanently) when the command exits non-zero or hits a limit
//! (what a plain tool subtask usually wants; an agent reads the result instead), and
//! `network: true` for HTTP(S) out through the worker's egress policy ([`proxy`]; the run spec
//! opens it, a model cannot: agents' calls are refused it). Side-effecting:
//! neither read-only nor idempotent, so never speculated.

pub mod files;
pub mod proxy;
pub mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError, ToolFuture, ToolInfo};
pub use sandbox::{Limits, Sandbox};

/// Where workspaces live: `{root}/{run}/{subtask}`, one per subtask (a subagent's steps and its
/// retries on this worker share it), removed once untouched for `ttl` (`--workspace-ttl`).
#[derive(Clone, Debug)]
pub struct Workspaces {
    pub root: PathBuf,
    pub ttl: Duration,
}

/// A path component from an id: `[A-Za-z0-9._-]` kept, anything else `_`, never `.`/`..`.
pub fn component(id: &str) -> String {
    let s: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') { format!("_{s}") } else { s }
}

impl Workspaces {
    /// Under `root` (created).
    pub fn new(root: impl Into<PathBuf>, ttl: Duration) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root, ttl })
    }

    /// The workspace of (`run`, `subtask`), created on first use.
    pub fn dir(&self, run: &str, subtask: &str) -> std::io::Result<PathBuf> {
        let dir = self.root.join(component(run)).join(component(subtask));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes runs' workspaces untouched for the TTL; returns how many.
    pub fn collect_garbage(&self) -> usize {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for run in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let fresh = newest(&run.path()).and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age < self.ttl);
            if !fresh && std::fs::remove_dir_all(run.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The latest modification time of `dir` and its direct children.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let own = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let children =
        std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.metadata().ok()?.modified().ok());
    own.into_iter().chain(children).max()
}

/// The `exec` tool.
pub struct Exec {
    info: ToolInfo,
    sandbox: Arc<Sandbox>,
    workspaces: Workspaces,
    limits: Limits,
    /// The policy `network: true` calls reach the network through (none: no network at all).
    egress: Option<Arc<crate::tools::egress::EgressPolicy>>,
}

impl Exec {
    /// Runs calls in `sandbox`, in `workspaces`, within `limits` at most.
    pub fn new(sandbox: Arc<Sandbox>, workspaces: Workspaces, limits: Limits) -> Self {
        let info = ToolInfo {
            name: "exec".into(),
            description: "Runs a command (`cmd: [argv]`) or a script (`script`, `lang: sh|python`) in a sandbox \
                          without network, in this subtask's workspace (/workspace); returns exit_code, \
                          stdout, stderr, truncated, limit, duration_ms."
                .into(),
            read_only: false,
            idempotent: false,
            timeout: None,
        };
        Self { info, sandbox, workspaces, limits, egress: None }
    }

    /// Calls that ask for `network: true` get it, through an HTTP proxy under `policy`
    /// ([`proxy`]).
    pub fn with_egress(mut self, policy: Arc<crate::tools::egress::EgressPolicy>) -> Self {
        self.egress = Some(policy);
        self
    }
}

/// A parsed call.
struct Call {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    limits: Limits,
    check: bool,
    network: bool,
}

fn bad(message: impl Into<String>) -> ToolError {
    ToolError::permanent(message)
}

fn parse(args: &Value, max: &Limits) -> Result<Call, ToolError> {
    let obj = args.as_object().ok_or_else(|| bad("args: an object"))?;
    for key in obj.keys() {
        if !["cmd", "script", "lang", "stdin", "env", "timeout_ms", "limits", "check", "network"]
            .contains(&key.as_str())
        {
            return Err(bad(format!(
                "args.{key}: unknown (cmd, script, lang, stdin, env, timeout_ms, limits, check, network)"
            )));
        }
    }
    let text = |v: &Value, what: &str, max: usize| -> Result<String, ToolError> {
        let s = v.as_str().ok_or_else(|| bad(format!("{what}: a string")))?;
        if s.len() > max {
            return Err(bad(format!("{what}: at most {max} bytes")));
        }
        if s.contains('\0') {
            return Err(bad(format!("{what}: no NUL bytes")));
        }
        Ok(s.to_owned())
    };
    let argv = match (obj.get("cmd"), obj.get("script")) {
        (Some(cmd), None) => {
            let items = cmd.as_array().ok_or_else(|| bad("args.cmd: an array of strings"))?;
            if items.is_empty() || items.len() > 4096 {
                return Err(bad("args.cmd: 1 to 4096 strings"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| text(v, &format!("args.cmd[{i}]"), 128 << 10))
                .collect::<Result<_, _>>()?
        }
        (None, Some(script)) => {
            let script = text(script, "args.script", 1 << 20)?;
            match obj.get("lang").map(|l| l.as_str().unwrap_or("?")).unwrap_or("sh") {
                "sh" => vec!["/bin/sh".into(), "-c".into(), script],
                "python" | "python3" => vec!["python3".into(), "-c".into(), script],
                other => return Err(bad(format!("args.lang: sh or python, not {other:?}"))),
            }
        }
        (Some(_), Some(_)) => return Err(bad("args: cmd or script, not both")),
        (None, None) => return Err(bad("args.cmd or args.script: required")),
    };
    let stdin = match obj.get("stdin") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => text(v, "args.stdin", 16 << 20)?.into_bytes(),
    };
    let mut env = Vec::new();
    if let Some(e) = obj.get("env") {
        let e = e.as_object().ok_or_else(|| bad("args.env: an object of strings"))?;
        if e.len() > 256 {
            return Err(bad("args.env: at most 256 variables"));
        }
        for (k, v) in e {
            let valid = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(bad(format!("args.env.{k}: a variable name ([A-Za-z_][A-Za-z0-9_]*)")));
            }
            env.push((k.clone(), text(v, &format!("args.env.{k}"), 64 << 10)?));
        }
    }
    let mut limits = max.clone();
    let number = |v: &Value, what: &str| -> Result<u64, ToolError> {
        v.as_u64().filter(|n| *n > 0).ok_or_else(|| bad(format!("{what}: a positive integer")))
    };
    if let Some(ms) = obj.get("timeout_ms") {
        limits.wall = limits.wall.min(Duration::from_millis(number(ms, "args.timeout_ms")?));
    }
    if let Some(l) = obj.get("limits") {
        let l = l.as_object().ok_or_else(|| bad("args.limits: an object"))?;
        for (k, v) in l {
            let n = number(v, &format!("args.limits.{k}"))?;
            match k.as_str() {
                "cpu_seconds" => limits.cpu_seconds = limits.cpu_seconds.min(n),
                "memory_mb" => limits.memory_bytes = limits.memory_bytes.min(n.saturating_mul(1 << 20)),
                "processes" => limits.processes = limits.processes.min(n),
                "output_bytes" => {
                    limits.output_bytes = limits.output_bytes.min(usize::try_from(n).unwrap_or(usize::MAX))
                }
                "file_mb" => limits.file_bytes = limits.file_bytes.min(n.saturating_mul(1 << 20)),
                other => {
                    return Err(bad(format!(
                        "args.limits.{other}: unknown (cpu_seconds, memory_mb, processes, output_bytes, file_mb)"
                    )));
                }
            }
        }
    }
    let check = obj.get("check").and_then(Value::as_bool).unwrap_or(false);
    let network = match obj.get("network") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(bad("args.network: true or false")),
    };
    Ok(Call { argv, env, stdin, limits, check, network })
}

/// Text of a stream, with a marker where it was cut.
fn stream(bytes: &[u8], cut: bool, cap: usize) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if cut && bytes.len() >= cap {
        s.push_str(&format!("\n[output truncated at {cap} bytes]"));
    }
    s
}

/// What a call left in its workspace: bytes of regular files (links not followed), and the
/// files written since `since` (workspace-relative paths, the first [`MAX_LISTED`], and the
/// largest one's size).
struct Usage {
    total: u64,
    written: Vec<String>,
    largest_written: u64,
}

/// Files a result lists as written at most.
const MAX_LISTED: usize = 100;

fn usage(dir: &Path, since: std::time::SystemTime) -> Usage {
    let mut u = Usage { total: 0, written: Vec::new(), largest_written: 0 };
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => {
                    let Ok(m) = e.metadata() else { continue };
                    u.total += m.len();
                    if m.modified().is_ok_and(|t| t >= since) {
                        u.largest_written = u.largest_written.max(m.len());
                        if u.written.len() < MAX_LISTED
                            && let Ok(rel) = e.path().strip_prefix(dir)
                        {
                            u.written.push(rel.display().to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    u.written.sort();
    u
}

impl Tool for Exec {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        let (sandbox, workspaces, max) = (self.sandbox.clone(), self.workspaces.clone(), self.limits.clone());
        let egress = self.egress.clone();
        Box::pin(async move {
            let call = parse(&args, &max)?;
            let proxy = match (call.network, egress) {
                (false, _) => None,
                (true, None) => return Err(bad("args.network: this worker offers `exec` no network")),
                (true, Some(policy)) => {
                    let dir = std::env::temp_dir().join(format!("swarm-exec-proxy-{}", std::process::id()));
                    Some(
                        proxy::Proxy::start(&dir, policy)
                            .map_err(|e| ToolError::transient(format!("starting the network proxy: {e}")))?,
                    )
                }
            };
            let dir = workspaces
                .dir(&ctx.run_id, &ctx.subtask_id)
                .map_err(|e| ToolError::transient(format!("creating the workspace: {e}")))?;
            if !ctx.may_act() {
                return Err(ToolError {
                    kind: swarm_core::FailureKind::Cancelled,
                    message: "cancelled before running".into(),
                });
            }
            let began = std::time::SystemTime::now();
            let o = sandbox
                .run(
                    &call.argv,
                    &call.env,
                    &call.stdin,
                    &dir,
                    &call.limits,
                    &ctx.cancel,
                    proxy.as_ref().map(|p| p.path()),
                )
                .await
                .map_err(|e| ToolError::transient(format!("sandbox: {e}")))?;
            if ctx.cancel.is_cancelled() {
                return Err(ToolError { kind: swarm_core::FailureKind::Cancelled, message: "cancelled".into() });
            }
            let mut limit = o.limit;
            let dir2 = dir.clone();
            let used = tokio::task::spawn_blocking(move || usage(&dir2, began)).await.unwrap_or(Usage {
                total: 0,
                written: Vec::new(),
                largest_written: 0,
            });
            // A file at the size limit was stopped there (the command may have gone on).
            if limit.is_none() && used.largest_written >= call.limits.file_bytes {
                limit = Some("file_size");
            }
            if limit.is_none() && used.total > call.limits.workspace_bytes {
                limit = Some("workspace");
            }
            let cap = call.limits.output_bytes;
            let result = json!({
                "exit_code": o.exit_code,
                "signal": o.signal.or(o.exit_code.filter(|c| (129..=192).contains(c)).map(|c| c - 128)),
                "stdout": stream(&o.stdout, o.truncated, cap),
                "stderr": stream(&o.stderr, o.truncated, cap),
                "truncated": o.truncated,
                "limit": limit,
                "duration_ms": o.duration.as_millis() as u64,
                // What it wrote (the transcript keeps it: which files an agent made).
                "files_written": used.written,
            });
            if call.check && (o.exit_code != Some(0) || limit.is_some()) {
                return Err(ToolError::permanent(format!("exec failed: {result}")));
            }
            Ok(result)
        })
    }
}
