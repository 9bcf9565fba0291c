//! `swarm fork` and `swarm replay`.

use std::path::PathBuf;

use super::CoordinatorTarget;

#[derive(clap::Args)]
pub struct ForkArgs {
    /// The recorded run to fork.
    pub run: String,
    /// The subtask to run again: it and everything downstream of it run again, every other
    /// result is reused (copied, not made again).
    #[arg(long, value_name = "SUBTASK")]
    pub from: String,
    /// A partial spec (YAML or JSON) merged into the run's: `subtasks: [{id: b, args: {...}}]`,
    /// matched by id, objects merged key by key (null removes a key). The subtasks it changes
    /// run again too.
    #[arg(long, value_name = "PATCH.yaml")]
    pub patch: Option<PathBuf>,
    /// For an agent: reuse its transcript up to this step and go on from there.
    #[arg(long, value_name = "N")]
    pub step: Option<u32>,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// Wait for the new run to end, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object (with --wait: the new run's summary at the end, as `submit --wait --json`).
    #[arg(long)]
    pub json: bool,
    /// Forking again with the same key returns the same new run.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The recorded run whose agents to replay.
    pub run: String,
    /// Only this agent (a subtask id; repeatable). Default: every agent of the run.
    #[arg(long = "agent", value_name = "SUBTASK")]
    pub agents: Vec<String>,
    #[command(flatten)]
    pub to: CoordinatorTarget,
    /// Print one JSON object: each agent's verdict.
    #[arg(long)]
    pub json: bool,
}
