//! The supervisor turns time into events: retry timers that come due, the cadence at which
//! stragglers, overdue waits and silent attempts are looked for, the end of the recovery grace
//! period after a failover, and when the manager's loop must wake next.
//!
//! Time comes from an injected [`Clock`], so every rule here runs on tokio's paused time in
//! tests. May not touch: runs, engines, workers or the store; the manager acts on what it says.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use swarm_core::{RunKey, SubtaskIx};

use crate::clock::Clock;

/// How often running attempts are checked for stragglers, overdue waits and silence.
pub const TICK_EVERY_US: u64 = 10_000;
/// How often the queue, worker and run gauges are refreshed.
pub const GAUGES_EVERY_US: u64 = 250_000;

/// A retry timer: at (µs), run key, subtask index.
type Timer = Reverse<(u64, RunKey, SubtaskIx)>;

/// What is due at one loop turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Look for stragglers, overdue waits and silent attempts.
    pub tick: bool,
    /// Refresh the gauges.
    pub gauges: bool,
    /// The recovery grace period just ended.
    pub recovery_over: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    clock: Arc<dyn Clock>,
    heartbeat_interval: Duration,
    timers: BinaryHeap<Timer>,
    last_tick_us: u64,
    last_gauges_us: u64,
    recovery_deadline: Option<u64>,
}

impl Supervisor {
    /// A supervisor on `clock`, for workers beating every `heartbeat_interval`.
    pub fn new(clock: Arc<dyn Clock>, heartbeat_interval: Duration) -> Self {
        Self {
            clock,
            heartbeat_interval,
            timers: BinaryHeap::new(),
            last_tick_us: 0,
            last_gauges_us: 0,
            recovery_deadline: None,
        }
    }

    /// The injected clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Now, by the injected clock (µs since the Unix epoch).
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Fire `(run, subtask)`'s retry at `at_us`.
    pub fn arm_retry(&mut self, at_us: u64, run: RunKey, subtask: SubtaskIx) {
        self.timers.push(Reverse((at_us, run, subtask)));
    }

    /// The retries due by `now_us`, earliest first (each fires once).
    pub fn due_retries(&mut self, now_us: u64) -> Vec<(RunKey, SubtaskIx)> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, run, subtask))) = self.timers.peek() {
            if at > now_us {
                break;
            }
            self.timers.pop();
            due.push((run, subtask));
        }
        due
    }

    /// Silence longer than this declares an attempt lost (µs; the engine's rule).
    pub fn silence_limit_us(&self) -> u64 {
        swarm_core::engine::silence_limit_us(self.heartbeat_interval.as_micros() as u64)
    }

    /// Resumed runs wait for workers until `grace` from now.
    pub fn start_recovery(&mut self, grace: Duration) {
        self.recovery_deadline = Some(self.now_us() + grace.as_micros() as u64);
    }

    /// True while resumed runs wait for workers.
    pub fn recovering(&self) -> bool {
        self.recovery_deadline.is_some()
    }

    /// Ends the recovery period; false if there was none.
    pub fn end_recovery(&mut self) -> bool {
        self.recovery_deadline.take().is_some()
    }

    /// Refresh the gauges at the next turn.
    pub fn gauges_soon(&mut self) {
        self.last_gauges_us = 0;
    }

    /// What is due at `now_us` (marks it done).
    pub fn due(&mut self, now_us: u64) -> Due {
        let mut due = Due::default();
        if now_us >= self.last_tick_us + TICK_EVERY_US {
            self.last_tick_us = now_us;
            due.tick = true;
        }
        if now_us >= self.last_gauges_us + GAUGES_EVERY_US {
            self.last_gauges_us = now_us;
            due.gauges = true;
        }
        due.recovery_over = self.recovery_deadline.is_some_and(|d| d <= now_us);
        due
    }

    /// When the loop must wake without a command: the next retry, the recovery deadline, the
    /// next tick while `busy` (attempts run or subtasks wait), and `token_us` (a rate-limited
    /// tool's next token), whichever is first.
    pub fn next_wake(&self, busy: bool, token_us: Option<u64>) -> Option<u64> {
        let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let tick = busy.then_some(self.last_tick_us + TICK_EVERY_US);
        [next_timer, self.recovery_deadline, tick, token_us].into_iter().flatten().min()
    }

    /// Sleeps until `at_us` by the injected clock.
    pub async fn sleep_until(&self, at_us: u64) {
        crate::clock::sleep_until(self.clock.as_ref(), at_us).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;

    fn sup() -> Supervisor {
        Supervisor::new(Arc::new(TokioClock::new()), Duration::from_secs(5))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_fire_once_in_time_order_and_wake_the_loop_on_time() {
        let mut s = sup();
        let t0 = s.now_us();
        s.arm_retry(t0 + 2_000_000, RunKey(1), SubtaskIx(7));
        s.arm_retry(t0 + 500_000, RunKey(1), SubtaskIx(3));
        assert_eq!(s.next_wake(false, None), Some(t0 + 500_000));
        assert!(s.due_retries(t0).is_empty());
        s.sleep_until(t0 + 500_000).await;
        assert_eq!(s.due_retries(s.now_us()), [(RunKey(1), SubtaskIx(3))]);
        assert_eq!(s.next_wake(false, None), Some(t0 + 2_000_000));
        s.sleep_until(t0 + 2_000_000).await;
        assert_eq!(s.due_retries(s.now_us()), [(RunKey(1), SubtaskIx(7))]);
        assert!(s.due_retries(s.now_us() + 10_000_000).is_empty(), "each fires once");
        assert_eq!(s.next_wake(false, None), None, "idle: sleep until a command comes");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tick_comes_every_10_ms_while_busy_and_not_at_all_while_idle() {
        let mut s = sup();
        let t0 = s.now_us();
        let first = s.due(t0);
        assert!(first.tick && first.gauges);
        assert!(!s.due(t0 + 5_000).tick);
        assert_eq!(s.next_wake(true, None), Some(t0 + TICK_EVERY_US));
        assert_eq!(s.next_wake(false, None), None);
        assert_eq!(s.next_wake(true, Some(t0 + 1)), Some(t0 + 1), "a rate-limit token comes first");
        s.sleep_until(t0 + TICK_EVERY_US).await;
        assert!(s.due(s.now_us()).tick);
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_ends_at_its_deadline() {
        let mut s = sup();
        s.start_recovery(Duration::from_secs(6));
        assert!(s.recovering());
        let deadline = s.next_wake(false, None).expect("a deadline");
        assert!(!s.due(s.now_us()).recovery_over);
        s.sleep_until(deadline).await;
        assert!(s.due(s.now_us()).recovery_over);
        assert!(s.end_recovery());
        assert!(!s.end_recovery(), "once");
        assert_eq!(s.silence_limit_us(), 15_000_000);
    }
}
