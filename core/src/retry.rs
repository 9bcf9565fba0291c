//! Retry policy: Temporal-shaped, validated, jittered and pure.
//!
//! `delay(attempt, rng)` is a function of the attempt number and a seedable RNG, so the engine
//! persists *when* the next attempt is due instead of holding sleeping futures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How failed attempts are retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_interval: Duration,
    /// Factor applied to the delay after each attempt (≥ 1).
    pub backoff_coefficient: f64,
    /// Upper bound of the delay.
    pub maximum_interval: Duration,
    /// Attempts in all, the first included (≥ 1).
    pub maximum_attempts: u32,
    /// Relative jitter in [0, 1): the delay is scaled by a factor drawn from [1 - j, 1 + j].
    pub jitter: f64,
    /// Failure kinds never retried under this policy (on top of those never retried at all).
    #[serde(default)]
    pub non_retryable: Vec<crate::error::FailureKind>,
}

/// A retry policy as a spec writes it (all fields optional; missing ones take the defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    pub initial_interval_ms: Option<u64>,
    pub backoff_coefficient: Option<f64>,
    pub maximum_interval_ms: Option<u64>,
    pub maximum_attempts: Option<u32>,
    pub jitter: Option<f64>,
    pub non_retryable: Vec<crate::error::FailureKind>,
}

impl RetrySpec {
    /// The policy, defaults filled in from `base`.
    pub fn resolve(&self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            initial_interval: self.initial_interval_ms.map_or(base.initial_interval, Duration::from_millis),
            backoff_coefficient: self.backoff_coefficient.unwrap_or(base.backoff_coefficient),
            maximum_interval: self.maximum_interval_ms.map_or(base.maximum_interval, Duration::from_millis),
            maximum_attempts: self.maximum_attempts.unwrap_or(base.maximum_attempts),
            jitter: self.jitter.unwrap_or(base.jitter),
            non_retryable: if self.non_retryable.is_empty() {
                base.non_retryable.clone()
            } else {
                self.non_retryable.clone()
            },
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(100),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(10),
            maximum_attempts: 5,
            jitter: 0.2,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Checks the policy's fields; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.maximum_attempts == 0 {
            return Err(("maximum_attempts", "must be at least 1".into()));
        }
        if !(self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0) {
            return Err(("backoff_coefficient", "must be a number ≥ 1".into()));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(("jitter", "must be in [0, 1)".into()));
        }
        if self.maximum_interval < self.initial_interval {
            return Err(("maximum_interval", "must not be below initial_interval".into()));
        }
        Ok(())
    }

    /// The delay before attempt `next_attempt` (2 for the first retry), jittered with `rng`.
    pub fn delay(&self, next_attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(64) as i32;
        let base = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exp);
        let capped = base.min(self.maximum_interval.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * rng.f64() - 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }

    /// True when another attempt may follow attempt `attempt`.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.maximum_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_within_jitter() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for (attempt, nominal) in [(2u32, 0.1f64), (3, 0.2), (4, 0.4), (20, 10.0)] {
            let d = p.delay(attempt, &mut rng).as_secs_f64();
            assert!(d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let p = RetryPolicy::default();
        let a: Vec<_> = (2..6).map(|n| p.delay(n, &mut fastrand::Rng::with_seed(1))).collect();
        let b: Vec<_> = (2..6).map(|n| p.delay(n, &mut fastrand::Rng::with_seed(1))).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn validation_names_the_field() {
        let p = RetryPolicy { maximum_attempts: 0, ..RetryPolicy::default() };
        assert_eq!(p.validate().map_err(|e| e.0), Err("maximum_attempts"));
        let p = RetryPolicy { jitter: 1.5, ..RetryPolicy::default() };
        assert_eq!(p.validate().map_err(|e| e.0), Err("jitter"));
    }
}
