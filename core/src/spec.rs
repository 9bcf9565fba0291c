//! Run specs as users write them (YAML or JSON) and as the API carries them.
//!
//! A run is a DAG of subtasks; for now every subtask is one tool call. The serde shape is the
//! documented file format (`docs/run-spec.md`):
//!
//! ```yaml
//! name: research
//! subtasks:
//!   - id: plan
//!     tool: echo
//!     args: {text: "split the task"}
//!   - id: step-1
//!     tool: sleep
//!     args: {ms: 50}
//!     depends_on: [plan]
//!     timeout: 30s
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentSpec, OrchestratorSpec, RunLimits};
use crate::ids::SubtaskId;

/// A run as submitted: a name and a DAG of subtasks. Not yet validated: see [`crate::Dag::build`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// A low-cardinality name for the kind of run (`research`), used in listings and telemetry.
    #[serde(default)]
    pub name: String,
    /// The subtasks, in any order.
    #[serde(default)]
    pub subtasks: Vec<SubtaskSpec>,
    /// Budgets and caps for agent work.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub limits: RunLimits,
    /// Straggler speculation (on by default for read-only or idempotent tools).
    #[serde(default, skip_serializing_if = "is_default_speculation")]
    pub speculation: Speculation,
    /// The run's retry policy (subtask and per-tool policies are more specific).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::retry::RetrySpec>,
    /// Retry policies by tool name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tool_retry: std::collections::BTreeMap<String, crate::retry::RetrySpec>,
    /// At most this many attempts of the run at once (0: no cap beyond fair share).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_concurrency: u32,
    /// A subtask ready this long without starting fails as a timeout (0: waits forever).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub schedule_to_start_ms: u64,
    /// 0 (default) to 9: among runs of one tenant, a ready subtask of a higher-priority run is
    /// dispatched first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// A label for the spec's version (`prompt-v3`), shown and filterable in listings beside
    /// the spec's hash: which build of an agent's prompts and code a run used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_default_speculation(s: &Speculation) -> bool {
    *s == Speculation::default()
}

/// When to start a backup attempt of a straggling subtask (Spark's defaults): once `quantile`
/// of its siblings (subtasks at the same depth of the DAG) have finished, an attempt running
/// longer than `multiplier` × their median and longer than `min_runtime_ms` gets a backup on
/// another worker; at most `max_fraction` of the run's subtasks are speculated. Only tools that
/// are read-only or idempotent are speculated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Speculation {
    pub enabled: bool,
    pub quantile: f64,
    pub multiplier: f64,
    pub min_runtime_ms: u64,
    pub max_fraction: f64,
}

impl Default for Speculation {
    fn default() -> Self {
        Self { enabled: true, quantile: 0.75, multiplier: 1.5, min_runtime_ms: 50, max_fraction: 0.10 }
    }
}

impl Speculation {
    /// What is wrong with the settings, as (field, description) pairs: every number finite and
    /// in its range, so no later arithmetic on them can misbehave.
    pub fn violations(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut check = |field, value: f64, ok: bool, range: &str| {
            if !(value.is_finite() && ok) {
                out.push((field, format!("must be a number in {range}, not {value}")));
            }
        };
        check("quantile", self.quantile, self.quantile > 0.0 && self.quantile <= 1.0, "(0, 1]");
        check("multiplier", self.multiplier, (1.0..=100.0).contains(&self.multiplier), "[1, 100]");
        check("max_fraction", self.max_fraction, (0.0..=1.0).contains(&self.max_fraction), "[0, 1]");
        if self.min_runtime_ms > MAX_TIMEOUT_MS {
            out.push((
                "min_runtime_ms",
                format!("must be at most {MAX_TIMEOUT_MS} (24 h), not {}", self.min_runtime_ms),
            ));
        }
        out
    }
}

/// The longest timeout a subtask may have, and the longest speculation threshold (24 h).
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// The longest a ready subtask may be allowed to wait to start (7 days, the run TTL).
pub const MAX_SCHEDULE_TO_START_MS: u64 = 7 * 24 * 3600 * 1000;
/// The largest agent text field (`instructions`, `input`, `goal`).
pub const MAX_AGENT_TEXT_BYTES: usize = 1 << 20;
/// The most tools an agent or orchestrator may list.
pub const MAX_AGENT_TOOLS: usize = 100;
/// The longest tool or model name.
pub const MAX_NAME_BYTES: usize = 256;

fn is_default_limits(l: &RunLimits) -> bool {
    *l == RunLimits::default()
}

impl RunSpec {
    /// A spec with default limits.
    pub fn new(name: impl Into<String>, subtasks: Vec<SubtaskSpec>) -> Self {
        Self {
            name: name.into(),
            subtasks,
            limits: RunLimits::default(),
            speculation: Speculation::default(),
            retry: None,
            tool_retry: Default::default(),
            max_concurrency: 0,
            schedule_to_start_ms: 0,
            priority: 0,
            version: None,
        }
    }

    /// The spec's hash: SHA-256 (hex, first 16 digits) of its stored JSON form, the same for
    /// the same spec however it was written (YAML or JSON, field order, defaults spelled out).
    pub fn hash(&self) -> String {
        use sha2::Digest;
        /// The JSON goes straight into the hash (a large spec is not held twice).
        struct Hashing(sha2::Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.update(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(sha2::Sha256::new());
        // Writing into a hash does not fail, nor does serializing a spec.
        let _ = serde_json::to_writer(&mut h, self);
        h.0.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// The longest `version` label.
pub const MAX_VERSION_BYTES: usize = 128;

/// One node of the run's DAG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSubtask", into = "RawSubtask")]
pub struct SubtaskSpec {
    /// Unique within the run.
    pub id: SubtaskId,
    /// What the subtask does.
    pub kind: SubtaskKind,
    /// Subtasks that must succeed before this one starts.
    pub depends_on: Vec<SubtaskId>,
    /// Start-to-close limit for one attempt.
    pub timeout: Option<Duration>,
    /// This subtask's retry policy (the most specific).
    pub retry: Option<crate::retry::RetrySpec>,
    /// The files it hands on ([`crate::artifact`]).
    pub outputs: crate::artifact::Outputs,
    /// Where it may run: labels and resources ([`crate::placement`]).
    pub placement: Option<crate::placement::Placement>,
}

/// What a subtask does.
#[derive(Clone, Debug, PartialEq)]
pub enum SubtaskKind {
    /// One call of a tool that some worker offers, with a JSON object of arguments.
    Tool {
        /// The tool's registered name (`sleep`, `echo`, `http_get`, …).
        tool: String,
        /// The arguments: a JSON object.
        args: serde_json::Value,
    },
    /// An agent loop: a model and tools, until the model answers.
    Agent(AgentSpec),
    /// An orchestrator: an agent that can create subagents and assign them tasks, in stages.
    Orchestrator(OrchestratorSpec),
    /// A human decision: parks (holding no slot) until `SignalRun` approves or rejects it, or
    /// its timeout passes.
    Approval(ApprovalSpec),
}

/// What an approval asks, and what happens when nobody answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// What the approver is asked (shown in events, `swarm get` and the web view).
    pub prompt: String,
    /// How long to wait for a decision (none: for the run's lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_duration_text")]
    pub timeout: Option<Duration>,
    /// The decision when the timeout passes.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// The decision an approval's timeout makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    #[default]
    Reject,
    Approve,
}

/// What an agent's `request_approval` call asks: a question, and optionally how long to wait
/// for a person (`timeout`: `"30s"`, `"10m"`, or seconds as a number; at most the longest an
/// approval subtask may wait) and what then applies (`on_timeout`: `reject`, the default, or
/// `approve`). Without a timeout the agent waits for the run's lifetime.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    pub text: String,
    pub timeout: Option<std::time::Duration>,
    pub on_timeout: OnTimeout,
}

impl Question {
    /// Parses a `request_approval` call's arguments; the error is told to the model.
    pub fn parse(arguments: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(arguments).map_err(|e| format!("the arguments are not valid JSON ({e})"))?;
        let text = v.get("question").and_then(serde_json::Value::as_str).map(str::trim).filter(|q| !q.is_empty());
        let text = text.ok_or("`question` is required")?.to_owned();
        let max = std::time::Duration::from_millis(MAX_APPROVAL_TIMEOUT_MS);
        let timeout = match v.get("timeout") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => Some(parse_duration(t).map_err(|e| format!("`timeout`: {e}"))?),
            Some(serde_json::Value::Number(n)) => {
                let secs = n
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or("`timeout`: a positive number of seconds")?;
                Some(std::time::Duration::from_secs_f64(secs.min(max.as_secs_f64() + 1.0)))
            }
            Some(_) => return Err("`timeout`: a duration such as \"30s\" or \"10m\"".into()),
        };
        if let Some(t) = timeout
            && (t.is_zero() || t > max)
        {
            return Err(format!("`timeout`: from 1ms to {}", format_duration(max)));
        }
        let on_timeout = match v.get("on_timeout").and_then(serde_json::Value::as_str) {
            None => OnTimeout::Reject,
            Some("reject") => OnTimeout::Reject,
            Some("approve") => OnTimeout::Approve,
            Some(other) => return Err(format!("`on_timeout`: `approve` or `reject`, not `{other}`")),
        };
        Ok(Self { text, timeout, on_timeout })
    }
}

/// The longest an approval may wait (the run's time to live).
pub const MAX_APPROVAL_TIMEOUT_MS: u64 = MAX_SCHEDULE_TO_START_MS;
/// The longest approval prompt.
pub const MAX_PROMPT_BYTES: usize = 16 * 1024;

mod opt_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(super::DurationText).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<super::DurationText>::deserialize(d)?.map(|t| t.0))
    }
}

impl SubtaskSpec {
    /// A tool-call subtask; a convenience for tests and generators.
    pub fn tool(id: impl Into<SubtaskId>, tool: &str, args: serde_json::Value) -> Self {
        Self {
            id: id.into(),
            kind: SubtaskKind::Tool { tool: tool.to_owned(), args },
            depends_on: Vec::new(),
            timeout: None,
            retry: None,
            outputs: Default::default(),
            placement: None,
        }
    }

    /// Adds dependencies (builder style).
    pub fn after<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<SubtaskId>,
    {
        self.depends_on.extend(deps.into_iter().map(Into::into));
        self
    }
}

/// The file shape of a subtask; converted into [`SubtaskSpec`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubtask {
    id: SubtaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<AgentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    orchestrator: Option<OrchestratorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<SubtaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<DurationText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<crate::retry::RetrySpec>,
    #[serde(default, skip_serializing_if = "crate::artifact::Outputs::is_empty")]
    outputs: crate::artifact::Outputs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    placement: Option<crate::placement::Placement>,
}

impl TryFrom<RawSubtask> for SubtaskSpec {
    type Error = String;

    fn try_from(raw: RawSubtask) -> Result<Self, Self::Error> {
        let kind = match (raw.tool, raw.agent, raw.orchestrator, raw.approval) {
            (Some(tool), None, None, None) => SubtaskKind::Tool {
                tool,
                args: raw.args.unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            },
            (None, Some(agent), None, None) if raw.args.is_none() => SubtaskKind::Agent(agent),
            (None, None, Some(orchestrator), None) if raw.args.is_none() => SubtaskKind::Orchestrator(orchestrator),
            (None, None, None, Some(approval)) if raw.args.is_none() => SubtaskKind::Approval(approval),
            (None, None, None, None) => {
                return Err(format!(
                    "subtask `{}`: `tool` is required (or `agent`, `orchestrator`, `approval`)",
                    raw.id
                ));
            }
            _ => {
                return Err(format!(
                    "subtask `{}`: set exactly one of `tool` (with `args`), `agent`, `orchestrator`, `approval`",
                    raw.id
                ));
            }
        };
        Ok(Self {
            id: raw.id,
            kind,
            depends_on: raw.depends_on,
            timeout: raw.timeout.map(|d| d.0),
            retry: raw.retry,
            outputs: raw.outputs,
            placement: raw.placement.filter(|p| !p.is_empty()),
        })
    }
}

impl From<SubtaskSpec> for RawSubtask {
    fn from(s: SubtaskSpec) -> Self {
        let (mut tool, mut args, mut agent, mut orchestrator, mut approval) = (None, None, None, None, None);
        match s.kind {
            SubtaskKind::Tool { tool: t, args: a } => {
                tool = Some(t);
                args = Some(a);
            }
            SubtaskKind::Agent(a) => agent = Some(a),
            SubtaskKind::Orchestrator(o) => orchestrator = Some(o),
            SubtaskKind::Approval(a) => approval = Some(a),
        }
        Self {
            id: s.id,
            tool,
            args,
            agent,
            orchestrator,
            approval,
            depends_on: s.depends_on,
            timeout: s.timeout.map(DurationText),
            retry: s.retry,
            outputs: s.outputs,
            placement: s.placement,
        }
    }
}

/// A duration written as text (`250ms`, `30s`, `5m`, `1h`) or as a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct DurationText(Duration);

impl Serialize for DurationText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Secs(f64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Secs(s) => Duration::try_from_secs_f64(s)
                .map(Self)
                .map_err(|_| serde::de::Error::custom(format!("invalid duration {s}"))),
            Either::Text(t) => parse_duration(&t).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration as people write it: `1h`, `5m`, `30s` or `250ms` (the largest unit that fits).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

/// Parses `250ms`, `30s`, `1.5s`, `5m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration `{text}`: expected e.g. 250ms, 30s, 5m"))?;
    let secs = match unit.trim() {
        "ms" => value / 1e3,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!("invalid duration unit `{other}` in `{text}` (ms, s, m, h)"));
        }
    };
    // `try_from`: NaN, negative and overflowing values are errors, never a panic.
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration `{text}`"))
}

/// Limits a run spec must respect; configurable per coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum number of subtasks in one run (default 100,000).
    pub max_subtasks: usize,
    /// Maximum size of one subtask's arguments, serialized as JSON (default 64 KiB).
    pub max_args_bytes: usize,
    /// Maximum length of a subtask id (default 128).
    pub max_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_subtasks: 100_000, max_args_bytes: 64 * 1024, max_id_len: 128 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn json_spec_round_trips() {
        let text = r#"{"name":"r","subtasks":[{"id":"a","tool":"echo","args":{"text":"hi"}},
            {"id":"ag","agent":{"input":"go","model":"scripted","tools":["echo"]}},
            {"id":"b","tool":"sleep","args":{"ms":5},"depends_on":["a"],"timeout":"2s"}]}"#;
        let spec: RunSpec = serde_json::from_str(text).expect("valid spec");
        assert_eq!(spec.subtasks[2].depends_on, vec![SubtaskId::from("a")]);
        assert_eq!(spec.subtasks[2].timeout, Some(Duration::from_secs(2)));
        assert!(matches!(&spec.subtasks[1].kind, SubtaskKind::Agent(a) if a.tools == ["echo"]));
        let again: RunSpec = serde_json::from_str(&serde_json::to_string(&spec).expect("serializes")).expect("parses");
        assert_eq!(spec, again);
    }

    #[test]
    fn the_hash_follows_the_spec_not_how_it_was_written() {
        let json: RunSpec =
            serde_json::from_str(r#"{"name":"r","subtasks":[{"args":{"b":1,"a":2},"tool":"echo","id":"x"}]}"#)
                .expect("json");
        let yaml: RunSpec =
            serde_saphyr::from_str("name: r\nsubtasks:\n  - {id: x, tool: echo, args: {a: 2, b: 1}}\n").expect("yaml");
        assert_eq!(json.hash(), yaml.hash());
        assert_eq!(json.hash().len(), 16);
        let mut other = json.clone();
        other.subtasks[0] = SubtaskSpec::tool("x", "echo", serde_json::json!({"a": 2, "b": 2}));
        assert_ne!(json.hash(), other.hash());
    }

    #[test]
    fn missing_tool_is_an_error_naming_the_subtask() {
        let err = serde_json::from_str::<RunSpec>(r#"{"subtasks":[{"id":"x"}]}"#).expect_err("no tool");
        assert!(err.to_string().contains("subtask `x`: `tool` is required"), "{err}");
        let both = r#"{"subtasks":[{"id":"x","tool":"echo","agent":{"input":"i","model":"m"}}]}"#;
        let err = serde_json::from_str::<RunSpec>(both).expect_err("two kinds");
        assert!(err.to_string().contains("set exactly one of"), "{err}");
    }
}
