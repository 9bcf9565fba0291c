//! DAG validation and the compiled, index-based form of a run spec.
//!
//! [`Dag::build`] checks a [`RunSpec`] against [`Limits`] and returns *every* violation it finds,
//! each naming the field path (`subtasks[17].depends_on[0]`), so a client can fix its spec in one
//! go. Cycles are found with an iterative DFS (no recursion, so 50,000-deep chains are fine) and
//! named along the dependency edges in execution order: `a → b → c → a` means `b` depends on `a`,
//! `c` on `b` and `a` on `c`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AGENT_CAPABILITY, AgentSpec, OrchestratorSpec, RunLimits};
use crate::ids::{SubtaskId, SubtaskIx};
use crate::spec::{
    Limits, MAX_AGENT_TOOLS, MAX_NAME_BYTES, MAX_SCHEDULE_TO_START_MS, MAX_TIMEOUT_MS, RunSpec, SubtaskKind,
};
pub use crate::violation::{SpecViolation, SpecViolations};

mod checks;
use checks::check_agent;

/// What a node does.
#[derive(Clone, Debug)]
pub enum Work {
    /// One tool call (`Node::tool`, `Node::args_json`).
    Tool,
    /// An agent loop.
    Agent(Arc<AgentSpec>),
    /// An orchestrator loop.
    Orchestrator(Arc<OrchestratorSpec>),
    /// A human decision: never dispatched (see [`crate::spec::ApprovalSpec`]).
    Approval(Arc<crate::spec::ApprovalSpec>),
}

/// The `tool` name an approval's node carries (no worker offers it; approvals are never placed).
pub const APPROVAL_TOOL: &str = "@approval";

/// A validated subtask, with dependencies as indexes.
#[derive(Clone, Debug)]
pub struct Node {
    /// The user's id (for spawned subagents: `{orchestrator}:{stage}:{name}:{n}`).
    pub id: SubtaskId,
    /// What a worker must offer to run it: the tool, or the agent capability.
    pub tool: Arc<str>,
    /// The tool's arguments, serialized once as JSON (empty for agents).
    pub args_json: Arc<str>,
    /// What it does.
    pub work: Work,
    /// The orchestrator that spawned it, for subagents added at run time.
    pub parent: Option<SubtaskIx>,
    /// For a subagent: the orchestrator's stage (1-based) that started it; 0 otherwise.
    pub stage: u32,
    /// For a subagent: the name its orchestrator gave it (`create_subagent`); empty otherwise.
    pub name: Arc<str>,
    /// Its retry policy: the subtask's own, else its tool's, else the run's (else the
    /// coordinator's default applies).
    pub retry: Option<Arc<crate::retry::RetrySpec>>,
    /// Indexes of the subtasks this one depends on.
    pub deps: Vec<SubtaskIx>,
    /// Indexes of the subtasks that depend on this one.
    pub dependents: Vec<SubtaskIx>,
    /// Start-to-close limit of one attempt.
    pub timeout: Option<Duration>,
    /// For a subagent: the trace context of the call that started it (its spans' parent);
    /// `None`: the run's.
    pub trace_context: Option<Arc<std::collections::BTreeMap<String, String>>>,
    /// The files it hands on (patterns, [`crate::artifact`]); empty for most.
    pub artifacts: Arc<[String]>,
    /// Where it may run (labels, resources); `None` for most.
    pub placement: Option<Arc<crate::placement::Placement>>,
}

impl Node {
    /// The model an agent or orchestrator runs on; `None` for a tool call.
    pub fn model(&self) -> Option<&str> {
        match &self.work {
            Work::Tool | Work::Approval(_) => None,
            Work::Agent(a) => Some(&a.model),
            Work::Orchestrator(o) => Some(&o.model),
        }
    }

    /// The capability a worker must advertise to run it: the tool's name, or for an agent
    /// `@model:MODEL` (see [`crate::agent::MODEL_CAPABILITY_PREFIX`]).
    pub fn requirement(&self) -> std::borrow::Cow<'_, str> {
        match self.model() {
            None => std::borrow::Cow::Borrowed(&self.tool),
            Some(model) => std::borrow::Cow::Owned(format!("{}{model}", crate::agent::MODEL_CAPABILITY_PREFIX)),
        }
    }

    /// What [`Node::requirement`] names, for people: "tool `x`" or "model `m`".
    pub fn describe_requirement(&self) -> String {
        match self.model() {
            None => format!("tool `{}`", self.tool),
            Some(model) => format!("model `{model}`"),
        }
    }
}

/// The most violations a refused spec lists one by one; the rest are counted in one more.
pub const MAX_VIOLATIONS: usize = 100;

/// A validated run: an acyclic graph of subtasks with a topological order.
#[derive(Clone, Debug)]
pub struct Dag {
    name: String,
    nodes: Vec<Node>,
    index: HashMap<SubtaskId, SubtaskIx>,
    topo: Vec<SubtaskIx>,
    limits: RunLimits,
    speculation: crate::spec::Speculation,
    max_concurrency: u32,
    schedule_to_start_ms: u64,
    priority: u32,
}

impl Dag {
    /// Validates `spec` against `limits`; on failure returns every violation found.
    pub fn build(spec: &RunSpec, limits: &Limits) -> Result<Self, SpecViolations> {
        let mut v = Vec::new();
        // At most MAX_VIOLATIONS are spelled out; the rest are counted. Each problem costs a
        // formatted message only while under the cap, so a hostile spec (a million bad
        // `depends_on` entries) is refused in time and memory linear in its size.
        let mut more = 0usize;
        let mut bad = |field: String, description: String| {
            if v.len() < MAX_VIOLATIONS {
                v.push(SpecViolation { field, description });
            } else {
                more += 1;
            }
        };
        if spec.subtasks.is_empty() {
            bad("subtasks".into(), "a run needs at least one subtask".into());
        }
        if spec.subtasks.len() > limits.max_subtasks {
            bad(
                "subtasks".into(),
                format!("{} subtasks exceed the limit of {}", spec.subtasks.len(), limits.max_subtasks),
            );
            return Err(SpecViolations(v));
        }
        if spec.name.len() > 256 {
            bad("name".into(), "longer than 256 bytes".into());
        }
        if let Some(version) = &spec.version {
            if version.is_empty() || version.len() > crate::spec::MAX_VERSION_BYTES {
                bad("version".into(), format!("must be 1 to {} bytes", crate::spec::MAX_VERSION_BYTES));
            } else if version.chars().any(char::is_control) {
                bad("version".into(), "must not contain control characters".into());
            }
        }
        let l = &spec.limits;
        checks::check_limits(&mut bad, l);

        for (field, description) in spec.speculation.violations() {
            bad(format!("speculation.{field}"), description);
        }
        if spec.priority > 9 {
            bad("priority".into(), format!("must be 0 to 9, not {}", spec.priority));
        }
        if spec.schedule_to_start_ms > MAX_SCHEDULE_TO_START_MS {
            bad(
                "schedule_to_start_ms".into(),
                format!("must be at most {MAX_SCHEDULE_TO_START_MS} (7 days), not {}", spec.schedule_to_start_ms),
            );
        }

        let mut index: HashMap<SubtaskId, SubtaskIx> = HashMap::with_capacity(spec.subtasks.len());
        let mut nodes = Vec::with_capacity(spec.subtasks.len());
        // What many nodes share is allocated once: a run of 100,000 calls of one tool holds one
        // copy of its name, of the empty name and artifact list, of each retry policy and placement.
        let mut alike: HashMap<&crate::placement::Placement, Arc<crate::placement::Placement>> = HashMap::new();
        let mut tools: HashMap<&str, Arc<str>> = HashMap::new();
        let empty_name: Arc<str> = Arc::from("");
        let no_artifacts: Arc<[String]> = Arc::from(Vec::new());
        let run_retry = spec.retry.clone().map(Arc::new);
        let mut tool_retries: HashMap<&str, Arc<crate::retry::RetrySpec>> = HashMap::new();
        for (i, s) in spec.subtasks.iter().enumerate() {
            let id = s.id.as_str();
            if id.is_empty() {
                bad(format!("subtasks[{i}].id"), "must not be empty".into());
            } else if id.len() > limits.max_id_len {
                bad(format!("subtasks[{i}].id"), format!("longer than {} bytes", limits.max_id_len));
            } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
                bad(format!("subtasks[{i}].id"), format!("`{id}` may only contain letters, digits and - _ . :"));
            }
            if let Some(first) = index.insert(s.id.clone(), SubtaskIx(i as u32)) {
                index.insert(s.id.clone(), first);
                bad(format!("subtasks[{i}].id"), format!("duplicate id `{id}` (first used by subtasks[{first}])"));
            }
            let (tool, args, work) = match &s.kind {
                SubtaskKind::Tool { tool, args } => (tool.as_str(), args, Work::Tool),
                SubtaskKind::Agent(a) => {
                    check_agent(
                        &mut bad,
                        i,
                        "agent",
                        &a.input,
                        &a.instructions,
                        &a.model,
                        &a.tools,
                        a.max_steps,
                        l.subagent_max_steps,
                    );
                    (AGENT_CAPABILITY, &EMPTY_OBJECT, Work::Agent(Arc::new(a.clone())))
                }
                SubtaskKind::Orchestrator(o) => {
                    check_agent(
                        &mut bad,
                        i,
                        "orchestrator",
                        &o.goal,
                        "",
                        &o.model,
                        &o.tools,
                        o.max_steps,
                        l.orchestrator_max_steps,
                    );
                    for (field, names) in
                        [("subagent_tools", &o.subagent_tools), ("subagent_models", &o.subagent_models)]
                    {
                        if names.len() > MAX_AGENT_TOOLS {
                            let n = names.len();
                            bad(
                                format!("subtasks[{i}].orchestrator.{field}"),
                                format!("{n} exceed the limit of {MAX_AGENT_TOOLS}"),
                            );
                        } else if let Some(j) = names.iter().position(|t| t.is_empty() || t.len() > MAX_NAME_BYTES) {
                            bad(
                                format!("subtasks[{i}].orchestrator.{field}[{j}]"),
                                format!("must be 1 to {MAX_NAME_BYTES} bytes"),
                            );
                        }
                    }
                    (AGENT_CAPABILITY, &EMPTY_OBJECT, Work::Orchestrator(Arc::new(o.clone())))
                }
                SubtaskKind::Approval(a) => {
                    checks::check_approval(&mut bad, i, s, a);
                    (APPROVAL_TOOL, &EMPTY_OBJECT, Work::Approval(Arc::new(a.clone())))
                }
            };
            if tool.is_empty() {
                bad(format!("subtasks[{i}].tool"), "must not be empty".into());
            }
            let args_json = match args {
                _ if !matches!(work, Work::Tool) => String::new(),
                serde_json::Value::Object(_) => {
                    let text = args.to_string();
                    if text.len() > limits.max_args_bytes {
                        bad(
                            format!("subtasks[{i}].args"),
                            format!("{} bytes exceed the limit of {}", text.len(), limits.max_args_bytes),
                        );
                    }
                    text
                }
                _ => {
                    bad(format!("subtasks[{i}].args"), "must be a JSON object".into());
                    String::new()
                }
            };
            if tool.len() > MAX_NAME_BYTES {
                bad(format!("subtasks[{i}].tool"), format!("longer than {MAX_NAME_BYTES} bytes"));
            }
            match s.timeout {
                Some(Duration::ZERO) => bad(format!("subtasks[{i}].timeout"), "must be greater than zero".into()),
                Some(t) if t > Duration::from_millis(MAX_TIMEOUT_MS) => {
                    bad(format!("subtasks[{i}].timeout"), format!("must be at most 24 h, not {} s", t.as_secs()))
                }
                _ => {}
            }
            checks::check_outputs(&mut bad, i, s);
            checks::check_placement(&mut bad, i, s);
            // The most specific level wins, field by field: the subtask's over the tool's over
            // the run's (what none sets, the coordinator's default gives).
            let tool_level = spec
                .tool_retry
                .get_key_value(tool)
                .map(|(name, r)| crate::retry::tool_level(&mut tool_retries, name.as_str(), r, run_retry.as_deref()));
            let retry = match (&s.retry, tool_level) {
                (Some(own), Some(level)) => Some(Arc::new(own.over(&level))),
                (Some(own), None) => {
                    Some(Arc::new(run_retry.as_deref().map_or_else(|| own.clone(), |run| own.over(run))))
                }
                (None, Some(level)) => Some(level),
                (None, None) => run_retry.clone(),
            };
            nodes.push(Node {
                id: s.id.clone(),
                tool: tools.entry(tool).or_insert_with(|| Arc::from(tool)).clone(),
                args_json: Arc::from(args_json),
                retry,
                work,
                parent: None,
                stage: 0,
                name: empty_name.clone(),
                deps: Vec::with_capacity(s.depends_on.len()),
                dependents: Vec::new(),
                timeout: s.timeout,
                trace_context: None,
                artifacts: if s.outputs.artifacts.is_empty() {
                    no_artifacts.clone()
                } else {
                    s.outputs.artifacts.iter().cloned().collect()
                },
                placement: s.placement.as_ref().map(|p| alike.entry(p).or_insert_with(|| Arc::new(p.clone())).clone()),
            });
        }

        let mut check_retry = |path: &str, r: &crate::retry::RetrySpec| {
            for (field, description) in r.violations() {
                bad(format!("{path}.{field}"), description);
            }
        };
        if let Some(r) = &spec.retry {
            check_retry("retry", r);
        }
        for (tool, r) in &spec.tool_retry {
            check_retry(&format!("tool_retry.{tool}"), r);
        }
        for (i, s) in spec.subtasks.iter().enumerate() {
            if let Some(r) = &s.retry {
                check_retry(&format!("subtasks[{i}].retry"), r);
            }
        }

        // `listed[d] == i + 1`: subtask d is already among subtask i's dependencies (one pass,
        // no quadratic duplicate search).
        let mut listed = vec![0u32; nodes.len()];
        for (i, s) in spec.subtasks.iter().enumerate() {
            let field = |j: usize| format!("subtasks[{i}].depends_on[{j}]");
            for (j, dep) in s.depends_on.iter().enumerate() {
                match index.get(dep) {
                    None => bad(field(j), format!("unknown subtask `{dep}`")),
                    Some(&d) if d.index() == i => bad(field(j), format!("subtask `{dep}` depends on itself")),
                    Some(&d) if listed[d.index()] == i as u32 + 1 => bad(field(j), format!("`{dep}` is listed twice")),
                    Some(&d) => {
                        listed[d.index()] = i as u32 + 1;
                        // A duplicate id's later occurrence has no node of its own in the index.
                        if index.get(&s.id) == Some(&SubtaskIx(i as u32)) {
                            nodes[i].deps.push(d);
                        }
                    }
                }
            }
        }
        for i in 0..nodes.len() {
            for k in 0..nodes[i].deps.len() {
                let d = nodes[i].deps[k].index();
                nodes[d].dependents.push(SubtaskIx(i as u32));
            }
        }

        let topo = match topo_order(&nodes) {
            Ok(order) => order,
            Err(cycles) => {
                for cycle in cycles {
                    let first = cycle[0].index();
                    let names: Vec<&str> = cycle.iter().map(|&n| nodes[n.index()].id.as_str()).collect();
                    let shown = if names.len() > 16 {
                        format!(
                            "{} → … ({} more) … → {}",
                            names[..8].join(" → "),
                            names.len() - 12,
                            names[names.len() - 4..].join(" → ")
                        )
                    } else {
                        names.join(" → ")
                    };
                    bad(format!("subtasks[{first}].depends_on"), format!("cycle: {shown} → {}", names[0]));
                }
                Vec::new()
            }
        };
        if more > 0 {
            v.push(SpecViolations::more_entry(more, MAX_VIOLATIONS));
        }
        if !v.is_empty() {
            return Err(SpecViolations(v));
        }
        Ok(Self {
            name: spec.name.clone(),
            nodes,
            index,
            topo,
            limits: spec.limits.clone(),
            speculation: spec.speculation.clone(),
            max_concurrency: spec.max_concurrency,
            schedule_to_start_ms: spec.schedule_to_start_ms,
            priority: spec.priority,
        })
    }

    /// The run's priority among its tenant's runs (0 to 9).
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// The run's agent limits.
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// How long a ready subtask may wait to start (0: forever).
    pub fn schedule_to_start_ms(&self) -> u64 {
        self.schedule_to_start_ms
    }

    /// The most attempts of the run at once (0: no cap).
    pub fn max_concurrency(&self) -> u32 {
        self.max_concurrency
    }

    /// The run's speculation policy.
    pub fn speculation(&self) -> &crate::spec::Speculation {
        &self.speculation
    }

    /// Adds a subagent spawned by orchestrator `parent` at run time; returns its index. It has
    /// no dependencies in the DAG: it runs inside its orchestrator's stage.
    pub fn add_child(
        &mut self,
        parent: SubtaskIx,
        id: SubtaskId,
        stage: u32,
        name: &str,
        agent: AgentSpec,
        trace_context: std::collections::BTreeMap<String, String>,
    ) -> SubtaskIx {
        let i = SubtaskIx(self.nodes.len() as u32);
        self.index.insert(id.clone(), i);
        let (artifacts, placement) = match &self.nodes[parent.index()].work {
            Work::Orchestrator(o) => {
                (o.subagent_artifacts.iter().cloned().collect(), o.subagent_placement.clone().map(Arc::new))
            }
            _ => (Arc::from([]), None),
        };
        self.nodes.push(Node {
            id,
            tool: Arc::from(AGENT_CAPABILITY),
            args_json: Arc::from(""),
            work: Work::Agent(Arc::new(agent)),
            parent: Some(parent),
            stage,
            name: Arc::from(name),
            retry: None,
            deps: Vec::new(),
            dependents: Vec::new(),
            timeout: None,
            trace_context: (!trace_context.is_empty()).then(|| Arc::new(trace_context)),
            artifacts,
            placement,
        });
        self.topo.push(i);
        i
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of subtasks.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True when the DAG has no subtasks (never for a built DAG).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// The subtask at `index`.
    pub fn node(&self, index: SubtaskIx) -> &Node {
        &self.nodes[index.index()]
    }
    /// Every subtask index, in index order.
    pub fn indexes(&self) -> impl Iterator<Item = SubtaskIx> + use<> {
        (0..self.nodes.len() as u32).map(SubtaskIx)
    }
    /// All subtasks, by index.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// The index of subtask `id`.
    pub fn index_of(&self, id: &str) -> Option<SubtaskIx> {
        self.index.get(id).copied()
    }
    /// A topological order: every subtask after all its dependencies.
    pub fn topo_order(&self) -> &[SubtaskIx] {
        &self.topo
    }

    /// The longest path through the DAG where each subtask weighs `weight(index)`: the total
    /// weight and the subtasks along it, in execution order.
    pub fn longest_path(&self, weight: impl Fn(SubtaskIx) -> u64) -> (u64, Vec<SubtaskIx>) {
        let n = self.nodes.len();
        let mut best: Vec<u64> = vec![0; n];
        let mut parent: Vec<Option<SubtaskIx>> = vec![None; n];
        for &i in &self.topo {
            let node = &self.nodes[i.index()];
            let mut base = 0;
            for &d in &node.deps {
                if parent[i.index()].is_none() || best[d.index()] > base {
                    base = best[d.index()];
                    parent[i.index()] = Some(d);
                }
            }
            best[i.index()] = base.saturating_add(weight(i));
        }
        let Some(mut end) = self.indexes().reduce(|a, b| if best[b.index()] > best[a.index()] { b } else { a }) else {
            return (0, Vec::new());
        };
        let total = best[end.index()];
        let mut path = vec![end];
        while let Some(p) = parent[end.index()] {
            path.push(p);
            end = p;
        }
        path.reverse();
        (total, path)
    }
}

static EMPTY_OBJECT: serde_json::Value = serde_json::Value::Null;

/// Kahn's algorithm; on failure, up to ten distinct cycles among the nodes it could not order.
fn topo_order(nodes: &[Node]) -> Result<Vec<SubtaskIx>, Vec<Vec<SubtaskIx>>> {
    let n = nodes.len();
    let mut indeg: Vec<u32> = nodes.iter().map(|x| x.deps.len() as u32).collect();
    let mut order: Vec<SubtaskIx> = (0..n as u32).map(SubtaskIx).filter(|i| indeg[i.index()] == 0).collect();
    let mut head = 0;
    while head < order.len() {
        let i = order[head].index();
        head += 1;
        for &d in &nodes[i].dependents {
            indeg[d.index()] -= 1;
            if indeg[d.index()] == 0 {
                order.push(d);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    Err(find_cycles(nodes, &indeg, 10))
}

/// Finds cycles with an iterative DFS along dependency edges (node → its deps) among nodes left
/// with in-degree > 0; each cycle is returned in execution order.
fn find_cycles(nodes: &[Node], indeg: &[u32], max: usize) -> Vec<Vec<SubtaskIx>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Gray,
        Black,
    }
    let mut color = vec![Color::White; nodes.len()];
    let mut cycles = Vec::new();
    for start in 0..nodes.len() {
        if indeg[start] == 0 || color[start] != Color::White || cycles.len() >= max {
            continue;
        }
        // Stack of (node, next dep position).
        let mut stack: Vec<(SubtaskIx, usize)> = vec![(SubtaskIx(start as u32), 0)];
        color[start] = Color::Gray;
        while let Some(&mut (node, ref mut pos)) = stack.last_mut() {
            let deps = &nodes[node.index()].deps;
            if *pos < deps.len() {
                let next = deps[*pos];
                *pos += 1;
                match color[next.index()] {
                    Color::White => {
                        color[next.index()] = Color::Gray;
                        stack.push((next, 0));
                    }
                    Color::Gray if cycles.len() < max => {
                        // The stack from `next` to the top is a cycle against dependency edges.
                        let from = stack.iter().position(|&(x, _)| x == next).unwrap_or(0);
                        let mut cycle: Vec<SubtaskIx> = stack[from..].iter().map(|&(x, _)| x).collect();
                        cycle.reverse();
                        // Start at the lowest index, so the same cycle is always named alike.
                        let min = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                        cycle.rotate_left(min);
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node.index()] = Color::Black;
                stack.pop();
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests;
