//! Per-tool rate limits: token buckets held by the leader, which dispatches every attempt in
//! the cluster, so a limit holds cluster-wide.

use std::collections::HashMap;

/// The slowest rate a limit may have: one call in about 17 minutes.
pub const MIN_RATE: f64 = 0.001;
/// The fastest rate a limit may have (calls per second).
pub const MAX_RATE: f64 = 1_000_000.0;
/// The largest burst a limit may allow.
pub const MAX_BURST: u32 = 1_000_000;

/// A limit: `rate` calls per second on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: u32,
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `RATE` or `RATE/BURST`, e.g. `20` or `20/5` (calls per second).
    fn from_str(s: &str) -> Result<Self, String> {
        let (rate, burst) = s.split_once('/').unwrap_or((s, ""));
        let rate: f64 = rate.trim().parse().map_err(|_| format!("invalid rate `{rate}`"))?;
        if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
            return Err(format!("the rate must be from {MIN_RATE} to {MAX_RATE} calls per second, not {rate}"));
        }
        let burst = if burst.is_empty() {
            rate.ceil().max(1.0) as u32
        } else {
            burst.trim().parse().map_err(|_| format!("invalid burst `{burst}`"))?
        };
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(format!("the burst must be from 1 to {MAX_BURST}, not {burst}"));
        }
        Ok(Self { rate, burst })
    }
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at_us: u64,
}

/// Token buckets by tool.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// Buckets for `limits`, full.
    pub fn new(limits: &HashMap<String, RateLimit>) -> Self {
        let buckets = limits
            .iter()
            .map(|(tool, &limit)| (tool.clone(), Bucket { limit, tokens: f64::from(limit.burst), at_us: 0 }))
            .collect();
        Self { buckets }
    }

    fn refill(b: &mut Bucket, now_us: u64) {
        if b.at_us != 0 {
            let elapsed = now_us.saturating_sub(b.at_us) as f64 / 1e6;
            b.tokens = (b.tokens + elapsed * b.limit.rate).min(f64::from(b.limit.burst));
        }
        b.at_us = now_us;
    }

    /// Takes a token for a call of `tool` now; false when the tool is at its limit.
    pub fn try_take(&mut self, tool: &str, now_us: u64) -> bool {
        let Some(b) = self.buckets.get_mut(tool) else { return true };
        Self::refill(b, now_us);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a call of `key` could take a token now (none is taken).
    pub fn has_token(&mut self, key: &str, now_us: u64) -> bool {
        let Some(b) = self.buckets.get_mut(key) else { return true };
        Self::refill(b, now_us);
        b.tokens >= 1.0
    }

    /// When the next token of any empty bucket arrives (µs since the epoch).
    pub fn next_token_us(&self, now_us: u64) -> Option<u64> {
        self.buckets
            .values()
            .filter(|b| b.tokens < 1.0)
            .map(|b| now_us.saturating_add((((1.0 - b.tokens) / b.limit.rate) * 1e6).ceil() as u64))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_bursts_then_the_rate() {
        let limits = HashMap::from([("t".to_owned(), "10/3".parse::<RateLimit>().expect("limit"))]);
        let mut r = RateLimiter::new(&limits);
        let t0 = 1_000_000;
        assert!((0..3).all(|_| r.try_take("t", t0)), "a burst of three");
        assert!(!r.try_take("t", t0));
        assert_eq!(r.next_token_us(t0), Some(t0 + 100_000));
        assert!(r.try_take("t", t0 + 100_000), "one more after 100 ms at 10/s");
        assert!(r.try_take("other", t0), "other tools are not limited");
        assert!("0".parse::<RateLimit>().is_err());
        for bad in ["1e-300", "NaN", "inf", "1e300", "-1", "5/0", "5/4294967295", "5/-1", "5/x"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad} must be refused");
        }
        assert_eq!("2.5".parse::<RateLimit>(), Ok(RateLimit { rate: 2.5, burst: 3 }));
    }
}
