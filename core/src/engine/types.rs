//! The engine's vocabulary: run and subtask states, a subtask's slot, the events fed in and
//! the actions that come out. No behaviour beyond small accessors (see `super` for that).

use std::collections::HashMap;
use std::sync::Arc;

use crate::agent::{Message, SpawnRequest, Turn};
use crate::error::FailureKind;
use crate::ids::{AttemptNo, Fence, SubtaskIx, WorkerId};

/// Distinct workers a subtask may fail on before it is quarantined.
pub const POISON_WORKERS: usize = 3;

/// The state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// Accepted, not yet started.
    Pending,
    /// Subtasks are being executed.
    Running,
    /// Every subtask succeeded.
    Succeeded,
    /// At least one subtask failed (others ran to the end).
    Failed,
    /// Cancelled on request.
    Cancelled,
    /// Stopped because a run budget (tool calls, tokens) ran out; finished results are kept.
    BudgetExceeded,
}

impl RunState {
    /// True for `Succeeded`, `Failed`, `Cancelled` and `BudgetExceeded`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::BudgetExceeded)
    }
    /// The stable upper-case name used in JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::BudgetExceeded => "BUDGET_EXCEEDED",
        }
    }
}

/// The state of a subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubtaskState {
    /// Waiting for dependencies.
    Blocked,
    /// Queued for dispatch.
    Ready,
    /// An attempt is on a worker.
    Running,
    /// Waiting for a retry timer.
    Backoff,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Not run because a dependency failed.
    Skipped,
    /// Not finished because the run was cancelled.
    Cancelled,
    /// An orchestrator waiting for the subagents of its current stage.
    Waiting,
}

impl SubtaskState {
    /// True for states no event leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled)
    }
}

/// The last failure of a subtask.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Its class.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

/// Per-subtask runtime state.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Where the subtask is in its life.
    pub state: SubtaskState,
    /// Dependencies not yet succeeded.
    pub pending_deps: u32,
    /// The current (or last) attempt; 0 before the first.
    pub attempt: AttemptNo,
    /// The current attempt's fence.
    pub fence: Fence,
    /// The worker of the current (or last) attempt.
    pub worker: Option<WorkerId>,
    /// When the last attempt that reported started and finished, in µs since the Unix epoch.
    pub started_us: u64,
    /// See `started_us`.
    pub finished_us: u64,
    /// Attempts that ran to a result (steps taken).
    pub steps: u32,
    /// The result, JSON text.
    pub output: Option<Arc<str>>,
    /// Where the result was offloaded to (claim check), when it was.
    pub output_ref: Option<Arc<str>>,
    /// The files it handed on, once it succeeded.
    pub artifacts: Option<Arc<[crate::artifact::Artifact]>>,
    /// The last failure.
    pub error: Option<Failure>,
    /// When the first attempt that reported started (µs since the epoch).
    pub first_started_us: Option<u64>,
    /// Agent and orchestrator state (transcript, stages); `None` for tool calls.
    pub agent: Option<Box<AgentState>>,
    /// When the current attempt was dispatched (µs since the epoch, coordinator clock).
    pub dispatched_us: Option<u64>,
    /// When the subtask first became ready (µs since the epoch, coordinator clock; `None`: not
    /// yet, or it became ready before a restore). See [`Slot::ready_at_us`].
    pub first_ready_us: Option<u64>,
    /// Distinct workers on which attempts failed retryably (for poison quarantine).
    pub failed_on: Vec<WorkerId>,
    /// Since when the subtask has been ready and not started (`None`: not waiting).
    pub ready_since_us: Option<u64>,
    /// Backup attempts racing the current one (straggler speculation), oldest first.
    pub backups: Vec<Backup>,
    /// Where this subtask's time went (coordinator clock), for the run's wall-time breakdown.
    pub timing: Timing,
    /// In the engine's list of running subtasks (which may hold it a while after it stopped).
    pub(crate) listed: bool,
    /// Its result was copied from the run this one was forked from, not made by this run.
    pub reused: bool,
}

/// Where a subtask's time went, from first ready to its end, on the coordinator's clock:
/// `waited + failed + backoff + straggler + (done − final_dispatched)` covers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Ready → dispatched, summed over attempts.
    pub waited_us: u64,
    /// Failure → retry due, summed over backoffs.
    pub backoff_us: u64,
    /// Ready → dispatched while its run was held back by a placement (no worker with the
    /// labels of the subtask at the head of its queue, or its resources held by other
    /// attempts): part of the wait, not in `waited_us`.
    pub placement_us: u64,
    /// Dispatched → failure known, summed over attempts that failed or were lost.
    pub failed_us: u64,
    /// Original dispatched → backup dispatched, when the backup won (time lost to a straggler).
    pub straggler_us: u64,
    /// Since when the subtask has been in backoff.
    pub backoff_since_us: Option<u64>,
    /// When the engine learned the subtask ended (succeeded, or failed for good).
    pub done_us: Option<u64>,
    /// When the attempt that ended it was dispatched.
    pub final_dispatched_us: Option<u64>,
}

/// A backup attempt of a straggling subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub fence: Fence,
    pub worker: WorkerId,
    pub dispatched_us: u64,
}

impl Slot {
    /// When the subtask first became ready (µs since the epoch), if known: set at its first
    /// dispatch, or the start of its current wait while it waits for the first one.
    pub fn ready_at_us(&self) -> Option<u64> {
        self.first_ready_us.or(self.ready_since_us)
    }

    /// Records the worker-measured times of an attempt that ended, and a step for a tool call.
    pub(super) fn attempt_ended(&mut self, started_us: u64, finished_us: u64, counts_as_step: bool) {
        if self.first_started_us.is_none() {
            self.first_started_us = Some(started_us);
        }
        self.started_us = started_us;
        self.finished_us = finished_us;
        if counts_as_step {
            self.steps += 1;
        }
    }

    /// A subtask not yet run: ready without pending dependencies, else blocked.
    pub(crate) fn new(pending_deps: u32, agent: bool) -> Self {
        Self {
            state: if pending_deps == 0 { SubtaskState::Ready } else { SubtaskState::Blocked },
            pending_deps,
            attempt: AttemptNo(0),
            fence: Fence(0),
            worker: None,
            started_us: 0,
            finished_us: 0,
            steps: 0,
            output: None,
            output_ref: None,
            artifacts: None,
            error: None,
            first_started_us: None,
            agent: agent.then(Box::default),
            dispatched_us: None,
            backups: Vec::new(),
            failed_on: Vec::new(),
            ready_since_us: None,
            first_ready_us: None,
            timing: Timing::default(),
            listed: false,
            reused: false,
        }
    }
}

/// What happened to an attempt or a run; fed to [`RunEngine::apply`].
#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// The shell placed a ready subtask on a worker.
    Dispatched { subtask: SubtaskIx, worker: WorkerId, fence: Fence },
    /// The attempt returned a result.
    /// (`artifacts`: the files it handed on, stored by the shell.)
    Succeeded {
        subtask: SubtaskIx,
        fence: Fence,
        started_us: u64,
        finished_us: u64,
        output: Arc<str>,
        artifacts: Option<Arc<[crate::artifact::Artifact]>>,
    },
    /// The attempt failed.
    Failed { subtask: SubtaskIx, fence: Fence, kind: FailureKind, message: String, started_us: u64, finished_us: u64 },
    /// The attempt's worker went away, or the attempt fell silent; `reason` says which.
    Lost { subtask: SubtaskIx, fence: Fence, reason: String },
    /// A ready primary attempt needed the slot of backup `fence` of `subtask`: it is cancelled
    /// (and does not count against the hedge budget).
    BackupPreempted { subtask: SubtaskIx, fence: Fence },
    /// A backoff timer armed by [`Action::ArmTimer`] fired.
    RetryDue { subtask: SubtaskIx },
    /// The user asked to cancel the run.
    CancelRequested,
    /// An agent or orchestrator finished a turn that called tools (and ran them).
    StepRecorded { subtask: SubtaskIx, fence: Fence, seq: u32, turn: Arc<Turn> },
    /// An orchestrator's turn assigned tasks to subagents: the attempt ends and a stage opens.
    Spawned {
        subtask: SubtaskIx,
        fence: Fence,
        turn: Arc<Turn>,
        spawns: Vec<SpawnRequest>,
        started_us: u64,
        finished_us: u64,
    },
    /// An agent asked a person (`request_approval`): `turn` is its last turn, without the
    /// result of call `call_id`, which the decision becomes. The attempt ends; the agent waits.
    AskedApproval {
        subtask: SubtaskIx,
        fence: Fence,
        turn: Arc<Turn>,
        call_id: String,
        question: String,
        started_us: u64,
        finished_us: u64,
    },
    /// A decision for an approval (`SignalRun`): approved with `payload` as its output, or
    /// rejected for `reason`. Ignored unless the approval waits for one.
    Signal { subtask: SubtaskIx, approve: bool, payload: Arc<str>, reason: String },
    /// The shell started a backup attempt of a straggling subtask on another worker (beside
    /// its earlier backup, if that one is late too).
    BackupDispatched { subtask: SubtaskIx, worker: WorkerId, fence: Fence },
    /// A worker holds an attempt this engine did not dispatch (it was dispatched under an
    /// earlier leader): adopt it as the subtask's running attempt, unless the subtask has
    /// ended or runs another attempt.
    Adopt { subtask: SubtaskIx, worker: WorkerId, fence: Fence, attempt: AttemptNo },
}

/// A subtask's recorded end state, for [`RunEngine::restore`](super::RunEngine::restore): what
/// [`Action::Persist`] stored.
pub type RestoredSubtask = SubtaskOutcome;

/// A change watchers should see.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// An attempt was dispatched to a worker.
    Started { subtask: SubtaskIx, attempt: AttemptNo, worker: WorkerId, waited_us: Option<u64> },
    /// An attempt succeeded.
    Succeeded { subtask: SubtaskIx, attempt: AttemptNo, duration_us: u64 },
    /// An attempt failed; `retry_in_us` is set when another attempt will follow.
    Failed { subtask: SubtaskIx, attempt: AttemptNo, kind: FailureKind, message: String, retry_in_us: Option<u64> },
    /// A subtask will not run because dependency `because` failed.
    Skipped { subtask: SubtaskIx, because: SubtaskIx },
    /// An agent recorded a step (`steps` so far, `tool_calls` in this turn).
    Step { subtask: SubtaskIx, steps: u32, tool_calls: u32 },
    /// An orchestrator opened stage `stage` with these subagents.
    Spawned { subtask: SubtaskIx, stage: u32, children: Vec<SubtaskIx>, refused: u32 },
    /// A run budget ran out.
    BudgetExceeded { what: String },
    /// A backup attempt started, `after_us` into the original one.
    Speculated { subtask: SubtaskIx, worker: WorkerId, after_us: u64 },
    /// Something users should know (e.g. a swarm that collapsed into serial work).
    Warning { subtask: SubtaskIx, message: String },
    /// An approval waits for a decision (until `deadline_us`, when it has a timeout).
    ApprovalRequested {
        subtask: SubtaskIx,
        prompt: String,
        deadline_us: Option<u64>,
        on_timeout: crate::spec::OnTimeout,
    },
    /// The run reached a terminal state.
    Finished { state: RunState },
}

/// What the shell must do after an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Show watchers this change.
    Publish(Update),
    /// The subtask reached a terminal state: write `record` to the store.
    Persist { subtask: SubtaskIx, record: Box<SubtaskOutcome> },
    /// Turn `index` of the subtask's transcript is new: write it to the store.
    PersistTurn { subtask: SubtaskIx, index: u32 },
    /// The orchestrator's stage `stage` spawned subagents: write the spawn record.
    PersistSpawn { subtask: SubtaskIx, stage: u32 },
    /// Tell `worker` to stop the attempt with `fence`.
    CancelAttempt { worker: WorkerId, fence: Fence },
    /// Feed `RetryDue { subtask }` back at `at_us`.
    ArmTimer { subtask: SubtaskIx, at_us: u64 },
    /// The run ended; its summary is ready.
    Finished { state: RunState },
}

/// Counters kept up to date on every transition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Subtasks not in a terminal state.
    pub open: u32,
    /// Attempts on workers now.
    pub running: u32,
    /// Succeeded subtasks.
    pub succeeded: u32,
    /// Failed subtasks.
    pub failed: u32,
    /// Skipped subtasks.
    pub skipped: u32,
    /// Attempts dispatched in all.
    pub attempts: u32,
    /// Reports ignored because their fence was stale.
    pub stale_reports: u32,
    /// Spawned subagents that failed (their orchestrator sees the error; the run does not fail).
    pub child_failed: u32,
    /// Tool calls made by agents and orchestrators (not counting `create_subagent` and
    /// `assign_task`).
    pub agent_tool_calls: u32,
    /// Model tokens used.
    pub tokens: u64,
    /// Subagents spawned.
    pub spawned: u32,
    /// Backup attempts started for stragglers.
    pub speculative: u32,
    /// Backup attempts that finished first.
    pub speculative_wins: u32,
    /// Calls whose recorded results a fork reused (one per tool subtask, an agent's tool
    /// calls in the turns it reused).
    pub calls_reused: u32,
    /// Agent and orchestrator attempts after their first (a stage's resume, an approval, a
    /// retry) whose previous worker was known, and those of them that ran on that worker.
    pub agent_resumes: u32,
    pub agent_resumes_sticky: u32,
}

/// One stage of an orchestrator: one tool-calling turn and the subagents it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stage {
    /// Subagents started in this stage (subtask indexes).
    pub children: Vec<SubtaskIx>,
}

/// Agent and orchestrator state kept by the engine.
#[derive(Clone, Debug, Default)]
pub struct AgentState {
    /// The transcript beyond the initial system and user messages, turn by turn.
    pub turns: Vec<Arc<Turn>>,
    /// Orchestrators: the stages so far.
    pub stages: Vec<Stage>,
    /// Orchestrators: subagents of the current stage that have not ended.
    pub waiting: u32,
    /// Orchestrators: answers not yet delivered (tool results for `assign_task` calls).
    pub pending_results: Vec<Message>,
    /// Orchestrators: the `assign_task` call each subagent answers.
    pub child_calls: HashMap<SubtaskIx, String>,
    /// A serial-collapse warning was already given.
    pub warned: bool,
    /// The sequence number the current attempt's next turn must carry (older ones are repeats).
    pub next_seq: u32,
    /// A question put to a person (`request_approval`) and not yet decided: (call id, question).
    pub asking: Option<(String, String)>,
    /// When the question's timeout passes (µs), the decision that then applies, and the
    /// timeout as asked (`request_approval {timeout, on_timeout}`); none: it waits.
    pub asking_deadline: Option<(u64, crate::spec::OnTimeout, std::time::Duration)>,
}

/// What a subtask's stored record holds once it ended: carried by [`Action::Persist`], so the
/// shell stores it without reading engine state.
#[derive(Clone, Debug, PartialEq)]
pub struct SubtaskOutcome {
    pub state: SubtaskState,
    /// The last attempt.
    pub attempt: AttemptNo,
    pub worker: Option<WorkerId>,
    /// When the last attempt that reported started and finished (worker clock, µs).
    pub started_us: u64,
    pub finished_us: u64,
    pub steps: u32,
    pub output: Option<Arc<str>>,
    /// Where the output was offloaded to, when it was (set by the shell).
    pub output_ref: Option<Arc<str>>,
    /// The files it handed on.
    pub artifacts: Option<Arc<[crate::artifact::Artifact]>>,
    pub error: Option<Failure>,
    /// When the subtask first became ready, and its first attempt started (µs), when known.
    pub ready_us: Option<u64>,
    pub first_started_us: Option<u64>,
    /// The result was copied from the run this one was forked from.
    pub reused: bool,
}

impl Slot {
    /// The record of this slot as it stands.
    pub fn outcome(&self) -> SubtaskOutcome {
        SubtaskOutcome {
            state: self.state,
            attempt: self.attempt,
            worker: self.worker.clone(),
            started_us: self.started_us,
            finished_us: self.finished_us,
            steps: self.steps,
            output: self.output.clone(),
            output_ref: self.output_ref.clone(),
            artifacts: self.artifacts.clone(),
            error: self.error.clone(),
            ready_us: self.ready_at_us(),
            first_started_us: self.first_started_us,
            reused: self.reused,
        }
    }
}
