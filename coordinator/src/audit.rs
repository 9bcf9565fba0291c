//! The audit log: who did what, one JSON line per mutating call (`--audit-log PATH`, `-` for
//! standard output), in a form an auditor's tools read as it is.
//!
//! ```json
//! {"time":"2026-12-06T17:19:50.123Z","principal":"acme-bot","tenant":"acme","action":"submit",
//!  "run_id":"r-…","result":"ok"}
//! ```
//!
//! `result` is `ok` or the gRPC code's name (`permission_denied`, `invalid_argument`, …), with
//! `error` holding the message. Actions: `submit`, `cancel`, `signal` (with `subtask_id` and
//! `decision`), `worker_join` (with `worker_id`). A call is recorded by the node that served it:
//! a standby forwards and the leader records (a call refused on the standby, for its role say,
//! is recorded there). Calls refused before any principal is known (no or unknown credentials)
//! are not: nobody is there to name. Each line is also a `tracing` event (target `swarm::audit`),
//! and, when OTLP export is on, an OpenTelemetry log record (event name `swarm.audit`, the line
//! as its body, each field an attribute `swarm.audit.FIELD`, in the trace of the call).
//!
//! Lines are written whole under a lock and flushed (not synced: the log follows the process's
//! other logs, and a call is far rarer than a write).

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::auth::Principal;

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Submit,
    Fork,
    Cancel,
    Signal,
    WorkerJoin,
}

impl Action {
    /// The name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Fork => "fork",
            Self::Cancel => "cancel",
            Self::Signal => "signal",
            Self::WorkerJoin => "worker_join",
        }
    }
}

/// See the module docs. Cheap to share; records nothing when off.
#[derive(Default)]
pub struct AuditLog {
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("on", &self.out.is_some()).finish()
    }
}

impl AuditLog {
    /// Records nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Appends to `path` (created if missing), or writes to standard output for `-`.
    pub fn open(path: &str) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(Self::to(out))
    }

    /// Writes to `out`.
    pub fn to(out: Box<dyn Write + Send>) -> Self {
        Self { out: Some(Mutex::new(out)) }
    }

    /// Whether anything is recorded.
    pub fn on(&self) -> bool {
        self.out.is_some()
    }

    /// Records `action` by `who` on `run_id` (empty: none) with its outcome and `extra` fields.
    pub fn record(
        &self,
        who: &Principal,
        action: Action,
        run_id: &str,
        outcome: Result<(), &tonic::Status>,
        extra: &[(&str, Value)],
    ) {
        let Some(out) = &self.out else { return };
        // The wall clock as it reads now: an auditor compares it with other systems' clocks.
        let now_ms = (swarm_core::time::wall_clock_us() / 1000) as i64;
        let mut line = Map::new();
        line.insert("time".into(), json!(swarm_core::time::rfc3339_ms(now_ms)));
        line.insert("principal".into(), json!(who.name));
        line.insert("tenant".into(), json!(who.tenant.as_deref().unwrap_or("")));
        line.insert("action".into(), json!(action.as_str()));
        line.insert("run_id".into(), json!(run_id));
        let result = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(status) => code_name(status.code()),
        };
        line.insert("result".into(), json!(result));
        if let Err(status) = outcome {
            line.insert("error".into(), json!(status.message()));
        }
        for (k, v) in extra {
            line.insert((*k).to_owned(), v.clone());
        }
        tracing::info!(
            target: "swarm::audit",
            principal = %who.name,
            tenant = who.tenant.as_deref().unwrap_or(""),
            action = action.as_str(),
            run_id,
            result = %result,
            "audit"
        );
        let line = Value::Object(line);
        let mut text = line.to_string();
        if swarm_telemetry::events::enabled() {
            let attributes = line
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (format!("swarm.audit.{k}"), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect();
            swarm_telemetry::events::emit("swarm.audit", text.clone(), attributes);
        }
        text.push('\n');
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// `PermissionDenied` → `permission_denied`.
fn code_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_call_is_one_json_line_with_the_fields_an_auditor_reads() {
        let buf = Shared::default();
        let log = AuditLog::to(Box::new(buf.clone()));
        let who = Principal { name: "acme-bot".into(), tenant: Some("acme".into()), roles: vec![] };
        log.record(&who, Action::Submit, "r-1", Ok(()), &[]);
        let denied = tonic::Status::permission_denied("needs the cancel role");
        log.record(&who, Action::Cancel, "r-1", Err(&denied), &[("reason", json!("x\ny"))]);
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["action"], "submit");
        assert_eq!(lines[0]["result"], "ok");
        assert_eq!(lines[0]["tenant"], "acme");
        assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24));
        assert_eq!(lines[1]["result"], "permission_denied");
        assert_eq!(lines[1]["error"], "needs the cancel role");
        assert_eq!(lines[1]["reason"], "x\ny", "a newline in a value stays inside its line");
    }

    #[test]
    fn code_names_are_snake_case() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(tonic::Code::Ok), "ok");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "unauthenticated");
    }
}
