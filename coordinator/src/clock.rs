//! The coordinator's clock, injected so that timers can be tested on tokio's paused time.
//!
//! Times are µs since the Unix epoch, comparable with the times workers report.
//! [`SystemClock`] reads the system clock (its wall time at start, advanced by the monotonic
//! clock: a step of the system clock moves no timer); [`TokioClock`] is anchored to it once and then
//! advances with tokio's clock, so under `#[tokio::test(start_paused = true)]` a retry backoff,
//! a heartbeat limit or a schedule-to-start limit passes in no real time.

use std::sync::Arc;
use std::time::Duration;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// µs since the Unix epoch, now.
    fn now_us(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        unix_now_us()
    }
}

/// The system time at creation, advanced by tokio's clock since (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_us: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Anchored now.
    pub fn new() -> Self {
        Self { base_us: unix_now_us(), start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_us(&self) -> u64 {
        self.base_us.saturating_add(self.start.elapsed().as_micros() as u64)
    }
}

/// The clock servers use unless told otherwise.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// µs since the Unix epoch by the process's step-free clock ([`swarm_core::time::unix_now_us`]).
pub fn unix_now_us() -> u64 {
    swarm_core::time::unix_now_us()
}

/// Sleeps until `at_us` by `clock` (at once if that has passed).
pub async fn sleep_until(clock: &dyn Clock, at_us: u64) {
    tokio::time::sleep(Duration::from_micros(at_us.saturating_sub(clock.now_us()))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let t0 = clock.now_us();
        assert!(t0 > 1_700_000_000_000_000, "Unix µs");
        sleep_until(&clock, t0 + 3_600_000_000).await; // an hour, in no real time
        let t1 = clock.now_us();
        assert!(t1 >= t0 + 3_600_000_000 && t1 < t0 + 3_601_000_000, "{}", t1 - t0);
    }
}
