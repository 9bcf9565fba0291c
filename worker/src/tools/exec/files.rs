//! File tools confined to the calling subtask's workspace: `read_file`, `write_file`,
//! `list_files`, `delete_file`. Each runs a fixed command inside the same sandbox as `exec`,
//! where nothing but the workspace (and a private `/tmp`, a read-only `/usr`) exists: a
//! symlink or hard link the agent planted, `..` or `/proc/self/root` leads nowhere outside, so
//! no path check can be raced (a path is still refused early when it is absolute or climbs,
//! for a clear error).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Limits, Sandbox, Workspaces};
use crate::tools::{Tool, ToolContext, ToolError, ToolFuture, ToolInfo};

/// Largest file `write_file` takes and `read_file` returns by default.
const MAX_FILE: usize = 8 << 20;
/// Entries `list_files` returns at most.
const MAX_ENTRIES: usize = 2000;

/// Which file tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    List,
    Delete,
}

/// One of the file tools.
pub struct FileTool {
    op: Op,
    info: ToolInfo,
    sandbox: Arc<Sandbox>,
    workspaces: Workspaces,
}

impl FileTool {
    /// The four file tools, over `sandbox` and `workspaces`.
    pub fn all(sandbox: &Arc<Sandbox>, workspaces: &Workspaces) -> Vec<Self> {
        [
            (Op::Read, "read_file", "Reads a file of this subtask's workspace (`path`, optional `max_bytes`).", true),
            (
                Op::Write,
                "write_file",
                "Writes `content` to a file of this subtask's workspace (`path`; `append: true` adds).",
                false,
            ),
            (
                Op::List,
                "list_files",
                "Lists the files of this subtask's workspace (optional `path`, a directory).",
                true,
            ),
            (Op::Delete, "delete_file", "Deletes a file or directory of this subtask's workspace (`path`).", false),
        ]
        .into_iter()
        .map(|(op, name, description, read_only)| Self {
            op,
            info: ToolInfo {
                name: name.into(),
                description: description.into(),
                read_only,
                idempotent: read_only || op == Op::Delete,
                timeout: None,
            },
            sandbox: sandbox.clone(),
            workspaces: workspaces.clone(),
        })
        .collect()
    }
}

/// A workspace-relative path: not empty, not absolute, no `..`, no NUL, at most 4096 bytes.
fn path_arg(args: &Value, required: bool) -> Result<String, ToolError> {
    let path = match args.get("path") {
        None | Some(Value::Null) if !required => return Ok(".".into()),
        Some(Value::String(p)) => p.clone(),
        _ => return Err(ToolError::permanent("args.path: a string (a path in the workspace)")),
    };
    let climbs = path.split('/').any(|c| c == "..");
    if path.is_empty() || path.starts_with('/') || climbs || path.contains('\0') || path.len() > 4096 {
        return Err(ToolError::permanent(format!(
            "args.path: a relative path inside the workspace (no leading `/`, no `..`), not {path:?}"
        )));
    }
    Ok(path)
}

fn sh(script: &str, path: &str, extra: &[&str]) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".into(), script.into(), "sh".into(), path.into()];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv
}

impl Tool for FileTool {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        let (op, sandbox, workspaces) = (self.op, self.sandbox.clone(), self.workspaces.clone());
        Box::pin(async move {
            let path = path_arg(&args, op != Op::List)?;
            let mut stdin = Vec::new();
            let max = args.get("max_bytes").and_then(Value::as_u64).map_or(MAX_FILE, |m| (m as usize).min(MAX_FILE));
            let argv = match op {
                Op::Read => sh("head -c \"$2\" -- \"$1\"", &path, &[&(max + 1).to_string()]),
                Op::Write => {
                    let content = args
                        .get("content")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ToolError::permanent("args.content: a string"))?;
                    if content.len() > MAX_FILE {
                        return Err(ToolError::permanent(format!("args.content: at most {MAX_FILE} bytes")));
                    }
                    stdin = content.as_bytes().to_vec();
                    let append = args.get("append").and_then(Value::as_bool).unwrap_or(false);
                    let redirect = if append { ">>" } else { ">" };
                    sh(&format!("mkdir -p -- \"$(dirname -- \"$1\")\" && cat {redirect} \"$1\""), &path, &[])
                }
                Op::List => sh(
                    "find \"$1\" -mindepth 1 -maxdepth 6 -printf '%y %s %P\\n' | head -n \"$2\"",
                    &path,
                    &[&(MAX_ENTRIES + 1).to_string()],
                ),
                Op::Delete if path.trim_matches(['.', '/']).is_empty() => {
                    return Err(ToolError::permanent("args.path: a file or directory, not the workspace itself"));
                }
                Op::Delete => sh("rm -rf -- \"$1\"", &path, &[]),
            };
            let dir = workspaces
                .dir(&ctx.run_id, &ctx.subtask_id)
                .map_err(|e| ToolError::transient(format!("creating the workspace: {e}")))?;
            if !ctx.may_act() {
                return Err(ToolError { kind: swarm_core::FailureKind::Cancelled, message: "cancelled".into() });
            }
            let limits = Limits { output_bytes: MAX_FILE + 1, ..Limits::default() };
            let o = sandbox
                .run(&argv, &[], &stdin, &dir, &limits, &ctx.cancel, None)
                .await
                .map_err(|e| ToolError::transient(format!("sandbox: {e}")))?;
            if o.exit_code != Some(0) {
                let why = String::from_utf8_lossy(&o.stderr);
                return Err(ToolError::permanent(format!("{}: {}", path, why.trim())));
            }
            Ok(match op {
                Op::Read => {
                    let truncated = o.stdout.len() > max;
                    let content = String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(max)]).into_owned();
                    json!({ "path": path, "content": content, "truncated": truncated })
                }
                Op::Write => json!({ "path": path, "bytes": stdin.len(), "written": true }),
                Op::List => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    let entries: Vec<Value> = text
                        .lines()
                        .take(MAX_ENTRIES)
                        .filter_map(|l| {
                            let mut parts = l.splitn(3, ' ');
                            let (kind, size, name) = (parts.next()?, parts.next()?, parts.next()?);
                            let kind = match kind {
                                "d" => "dir",
                                "f" => "file",
                                "l" => "symlink",
                                _ => "other",
                            };
                            Some(json!({ "path": name, "kind": kind, "bytes": size.parse::<u64>().unwrap_or(0) }))
                        })
                        .collect();
                    json!({ "path": path, "entries": entries, "truncated": text.lines().count() > MAX_ENTRIES })
                }
                Op::Delete => json!({ "path": path, "deleted": true }),
            })
        })
    }
}
