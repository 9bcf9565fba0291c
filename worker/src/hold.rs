//! Self-fencing: a worker stops its attempts before a coordinator could give them to another
//! worker, so a side effect never happens twice because one worker was cut off.
//!
//! With a store, a worker's attempts belong to it while its registration lease lives: the
//! coordinator re-queues them when the lease ends (and not when the worker merely falls silent
//! while the lease lives; see the coordinator's `expire_silent`). Two faults can end that:
//!
//! - **Cut off from the store** (the measured hole: 40 of 40 appends ran twice). Each lease
//!   refresh sent at `sent` that succeeded keeps the lease alive until at least `sent + ttl`,
//!   as the store counts the TTL from when it got the refresh, which is later. The worker holds
//!   its attempts until `sent + ttl × (1 − drift) − margin` by its own clock (`drift`: how much
//!   its clock may run fast or slow against the store's, `--max-clock-drift`), and when that
//!   deadline passes without a newer refresh it is **fenced**: every running attempt is
//!   cancelled (reported `worker_lost`, so a coordinator that still holds it re-queues it at
//!   once), the worker leaves its coordinator, and it starts nothing and connects again only
//!   once it is registered under a new lease.
//! - **Cut off from the coordinator** while the store is reachable: the lease lives, so the
//!   coordinator waits and the worker's results are delivered when the link comes back. If
//!   no coordinator can be reached for `link_hold`, the worker gives its attempts up: it
//!   cancels them and gives its lease back (the coordinator re-queues on the lease's end).
//!
//! What stays open: an attempt that *finished* while the worker was cut off from every
//! coordinator for longer than `link_hold` is run again elsewhere (its result cannot be
//! delivered); within `link_hold` nothing is. Without a store (a fixed coordinator URL) there
//! is no lease and the coordinator's silence rule decides, as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The cancellation message of an attempt the worker stopped itself.
pub const FENCED_MESSAGE: &str =
    "the worker could not renew its lease and stopped the attempt before the lease could expire";
/// The same, when no coordinator could be reached for the link hold.
pub const LINK_MESSAGE: &str = "the worker could reach no coordinator for its link hold and gave the attempt back";

/// The clock-drift bound a worker assumes when none is configured: 5 %.
pub const DEFAULT_DRIFT: f64 = 0.05;

/// Why a bound is refused.
pub fn check_drift(drift: f64) -> Result<f64, String> {
    if drift.is_finite() && (0.0..0.5).contains(&drift) {
        Ok(drift)
    } else {
        Err(format!("`{drift}`: the clock-drift bound is a ratio from 0 to below 0.5 (0.05 is 5 %)"))
    }
}

/// When the worker's hold on its attempts ends; see the module docs.
#[derive(Debug)]
pub struct LeaseHold {
    ttl: Duration,
    drift: f64,
    margin: Duration,
    /// The deadline; `None` while the worker holds no lease (not registered yet, or fenced).
    until: watch::Sender<Option<Instant>>,
    /// Attempts this worker stopped itself, by fence, with why: their reports say so.
    stopped: Mutex<HashMap<u64, &'static str>>,
    /// Since when no coordinator stream is up (`None`: one is).
    cut_since: watch::Sender<Option<Instant>>,
    /// Asks the registration to give its lease back (the coordinator then re-queues).
    give_back: tokio::sync::Notify,
}

impl LeaseHold {
    /// A hold for a lease of `ttl`, a clock-drift bound `drift` (a ratio, see
    /// [`check_drift`]) and a margin for the time cancelling takes.
    pub fn new(ttl: Duration, drift: f64, margin: Duration) -> Self {
        Self {
            ttl,
            drift,
            margin,
            until: watch::channel(None).0,
            stopped: Mutex::default(),
            cut_since: watch::channel(Some(Instant::now())).0,
            give_back: tokio::sync::Notify::new(),
        }
    }

    /// How long after a refresh was sent the worker may still hold its attempts.
    pub fn window(&self) -> Duration {
        self.ttl.mul_f64(1.0 - self.drift).saturating_sub(self.margin)
    }

    /// A lease was granted, or refreshed, by a request sent at `sent`.
    pub fn renewed(&self, sent: Instant) {
        let until = sent + self.window();
        self.until.send_if_modified(|now| {
            if now.is_none_or(|t| t < until) {
                *now = Some(until);
                true
            } else {
                false
            }
        });
    }

    /// The lease is gone (or given back): hold nothing until the next one.
    pub fn lost(&self) {
        self.until.send_replace(None);
    }

    /// The worker may run attempts now.
    pub fn valid(&self) -> bool {
        self.until.borrow().is_some_and(|t| Instant::now() < t)
    }

    /// Resolves once the hold has lapsed (at once if it has).
    pub async fn lapsed(&self) {
        let mut rx = self.until.subscribe();
        loop {
            let until = *rx.borrow_and_update();
            match until {
                Some(t) if Instant::now() < t => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        r = rx.changed() => if r.is_err() { return },
                    }
                }
                _ => return,
            }
        }
    }

    /// Resolves once the hold is valid (at once if it is).
    pub async fn restored(&self) {
        let mut rx = self.until.subscribe();
        loop {
            if self.valid() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Marks `fence` as stopped by the worker itself, for `why` (before its token is cancelled).
    pub fn mark_stopped(&self, fence: u64, why: &'static str) {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).insert(fence, why);
    }

    /// Why `fence` was stopped by the worker itself, if it was (forgets it).
    pub fn take_stopped(&self, fence: u64) -> Option<&'static str> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).remove(&fence)
    }

    /// A coordinator stream is up.
    pub fn link_up(&self) {
        self.cut_since.send_if_modified(|since| since.take().is_some());
    }

    /// No coordinator stream is up (since the first time this is said).
    pub fn link_down(&self) {
        self.cut_since.send_if_modified(|since| {
            if since.is_none() {
                *since = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }

    /// Resolves once no coordinator stream has been up for `hold`.
    pub async fn link_lapsed(&self, hold: Duration) {
        let mut rx = self.cut_since.subscribe();
        loop {
            let since = *rx.borrow_and_update();
            match since {
                Some(t) if Instant::now() >= t + hold => return,
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t + hold) => {}
                        r = rx.changed() => if r.is_err() { return },
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Resolves once a coordinator stream is up.
    pub async fn link_restored(&self) {
        let mut rx = self.cut_since.subscribe();
        while rx.borrow_and_update().is_some() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Asks the registration to give its lease back now.
    pub fn give_back(&self) {
        self.lost();
        self.give_back.notify_one();
    }

    /// Resolves when [`LeaseHold::give_back`] was asked for.
    pub async fn given_back(&self) {
        self.give_back.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_hold_lapses_before_the_lease_could_and_a_refresh_extends_it() {
        let hold = LeaseHold::new(Duration::from_secs(2), 0.05, Duration::from_millis(100));
        assert!(!hold.valid(), "no lease yet");
        assert_eq!(hold.window(), Duration::from_millis(1800));
        let sent = Instant::now();
        hold.renewed(sent);
        assert!(hold.valid());
        // A refresh sent earlier than the one known does not shorten the hold.
        hold.renewed(sent - Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(1000)).await;
        hold.renewed(Instant::now());
        let lapsed_at = {
            hold.lapsed().await;
            Instant::now()
        };
        // 1 s + 1.8 s: the last refresh's window, well before its lease (sent at 1 s) could
        // end at 3 s even on a clock 5 % fast.
        assert_eq!(lapsed_at - sent, Duration::from_millis(2800));
        assert!(!hold.valid());
        let restored = tokio::spawn({
            let hold = std::sync::Arc::new(hold);
            let h = hold.clone();
            async move {
                h.restored().await;
                h.valid()
            }
        });
        tokio::task::yield_now().await;
        assert!(!restored.is_finished(), "waits for a new lease");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_lapses_the_hold_at_once() {
        let hold = LeaseHold::new(Duration::from_secs(10), 0.0, Duration::ZERO);
        hold.renewed(Instant::now());
        assert!(hold.valid());
        hold.lost();
        tokio::time::timeout(Duration::from_millis(1), hold.lapsed()).await.expect("lapsed at once");
        assert!(!hold.valid());
    }

    #[tokio::test(start_paused = true)]
    async fn the_link_hold_counts_from_the_first_moment_without_a_stream() {
        let hold = LeaseHold::new(Duration::from_secs(2), 0.05, Duration::ZERO);
        hold.link_up();
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        hold.link_down();
        tokio::time::advance(Duration::from_secs(3)).await;
        hold.link_down(); // said again: still counts from the first
        hold.link_lapsed(Duration::from_secs(10)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(15));
        hold.link_up();
        tokio::time::timeout(Duration::from_millis(1), hold.link_restored()).await.expect("up");
    }

    #[test]
    fn absurd_drift_bounds_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, -0.1, 0.5, 1e300] {
            assert!(check_drift(bad).is_err(), "{bad}");
        }
        assert_eq!(check_drift(0.05), Ok(0.05));
    }

    #[test]
    fn a_stopped_attempt_is_known_once() {
        let hold = LeaseHold::new(Duration::from_secs(2), 0.05, Duration::ZERO);
        hold.mark_stopped(7, FENCED_MESSAGE);
        assert_eq!(hold.take_stopped(7), Some(FENCED_MESSAGE));
        assert_eq!(hold.take_stopped(7), None);
    }
}
