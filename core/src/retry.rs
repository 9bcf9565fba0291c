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

/// The largest `backoff_coefficient` a spec may set.
pub const MAX_BACKOFF_COEFFICIENT: f64 = 100.0;
/// The longest interval (initial or maximum) a spec may set: 24 h.
pub const MAX_INTERVAL_MS: u64 = 24 * 3600 * 1000;
/// The most attempts a spec may allow.
pub const MAX_ATTEMPTS: u32 = 100;

impl RetrySpec {
    /// Every problem with the fields that are set, as (field name, description), checked
    /// before anything runs: finite, bounded numbers only, so no later arithmetic can panic.
    pub fn violations(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = self.backoff_coefficient
            && !(c.is_finite() && (1.0..=MAX_BACKOFF_COEFFICIENT).contains(&c))
        {
            out.push(("backoff_coefficient", format!("must be a number in [1, {MAX_BACKOFF_COEFFICIENT}], not {c}")));
        }
        if let Some(j) = self.jitter
            && !(j.is_finite() && (0.0..1.0).contains(&j))
        {
            out.push(("jitter", format!("must be a number in [0, 1), not {j}")));
        }
        for (field, value) in
            [("initial_interval_ms", self.initial_interval_ms), ("maximum_interval_ms", self.maximum_interval_ms)]
        {
            if let Some(ms) = value
                && ms > MAX_INTERVAL_MS
            {
                out.push((field, format!("must be at most {MAX_INTERVAL_MS} (24 h), not {ms}")));
            }
        }
        if let (Some(initial), Some(max)) = (self.initial_interval_ms, self.maximum_interval_ms)
            && max < initial
        {
            out.push(("maximum_interval_ms", format!("must not be below initial_interval_ms ({max} < {initial})")));
        }
        if let Some(n) = self.maximum_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            out.push(("maximum_attempts", format!("must be from 1 to {MAX_ATTEMPTS}, not {n}")));
        }
        out
    }

    /// This level over a less specific one: each number unset here takes `base`'s (a subtask's
    /// `retry` over the run's `tool_retry[tool]` over the run's `retry`). `non_retryable` is the
    /// level's own (an empty list must be able to say "retry everything" over a tool's list).
    pub fn over(&self, base: &RetrySpec) -> RetrySpec {
        RetrySpec {
            initial_interval_ms: self.initial_interval_ms.or(base.initial_interval_ms),
            backoff_coefficient: self.backoff_coefficient.or(base.backoff_coefficient),
            maximum_interval_ms: self.maximum_interval_ms.or(base.maximum_interval_ms),
            maximum_attempts: self.maximum_attempts.or(base.maximum_attempts),
            jitter: self.jitter.or(base.jitter),
            non_retryable: self.non_retryable.clone(),
        }
    }

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

/// The run's `tool_retry[name]` over its `retry`, made once per tool.
pub(crate) fn tool_level<'s>(
    cache: &mut std::collections::HashMap<&'s str, std::sync::Arc<RetrySpec>>,
    name: &'s str,
    level: &RetrySpec,
    run: Option<&RetrySpec>,
) -> std::sync::Arc<RetrySpec> {
    cache
        .entry(name)
        .or_insert_with(|| std::sync::Arc::new(run.map_or_else(|| level.clone(), |run| level.over(run))))
        .clone()
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
        // Validated policies keep this finite and small; should one slip through, the delay is
        // capped rather than panicking (`from_secs_f64` panics on NaN, infinity, overflow).
        Duration::try_from_secs_f64((capped * factor).max(0.0)).unwrap_or(self.maximum_interval)
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
    fn spec_values_that_would_break_arithmetic_are_refused_by_name() {
        let fields = |r: RetrySpec| r.violations().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        for bad in [1e300, f64::NAN, f64::INFINITY, -0.1, 1.0] {
            assert_eq!(fields(RetrySpec { jitter: Some(bad), ..RetrySpec::default() }), ["jitter"], "{bad}");
        }
        for bad in [f64::NAN, f64::INFINITY, 0.5, 100.5, 1e300] {
            assert_eq!(
                fields(RetrySpec { backoff_coefficient: Some(bad), ..RetrySpec::default() }),
                ["backoff_coefficient"],
                "{bad}"
            );
        }
        assert_eq!(fields(RetrySpec { maximum_attempts: Some(0), ..RetrySpec::default() }), ["maximum_attempts"]);
        assert_eq!(
            fields(RetrySpec { maximum_attempts: Some(u32::MAX), ..RetrySpec::default() }),
            ["maximum_attempts"]
        );
        assert_eq!(
            fields(RetrySpec { initial_interval_ms: Some(u64::MAX), ..RetrySpec::default() }),
            ["initial_interval_ms"]
        );
        assert_eq!(
            fields(RetrySpec {
                initial_interval_ms: Some(500),
                maximum_interval_ms: Some(100),
                ..RetrySpec::default()
            }),
            ["maximum_interval_ms"]
        );
        let fine = RetrySpec {
            initial_interval_ms: Some(0),
            backoff_coefficient: Some(100.0),
            maximum_interval_ms: Some(MAX_INTERVAL_MS),
            maximum_attempts: Some(MAX_ATTEMPTS),
            jitter: Some(0.99),
            non_retryable: vec![],
        };
        assert!(fine.violations().is_empty());
        // The bounds keep every delay finite: the largest policy allowed, at its largest attempt.
        let p = fine.resolve(&RetryPolicy::default());
        let mut rng = fastrand::Rng::with_seed(3);
        assert!(p.delay(MAX_ATTEMPTS, &mut rng) <= Duration::from_millis(MAX_INTERVAL_MS * 2));
    }

    #[test]
    fn a_delay_never_panics_even_on_a_policy_that_escaped_validation() {
        let mut rng = fastrand::Rng::with_seed(5);
        for jitter in [1e300, f64::NAN, f64::INFINITY, -1e300] {
            let p = RetryPolicy { jitter, ..RetryPolicy::default() };
            for attempt in [2, 3, 50] {
                assert!(p.delay(attempt, &mut rng) <= p.maximum_interval.max(Duration::from_secs(1e6 as u64)));
            }
        }
        let p = RetryPolicy { backoff_coefficient: f64::MAX, ..RetryPolicy::default() };
        let _ = p.delay(64, &mut rng);
    }

    #[test]
    fn validation_names_the_field() {
        let p = RetryPolicy { maximum_attempts: 0, ..RetryPolicy::default() };
        assert_eq!(p.validate().map_err(|e| e.0), Err("maximum_attempts"));
        let p = RetryPolicy { jitter: 1.5, ..RetryPolicy::default() };
        assert_eq!(p.validate().map_err(|e| e.0), Err("jitter"));
    }
}
