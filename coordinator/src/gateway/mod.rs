//! The model gateway: cluster-wide limits per model endpoint, owned by the leading coordinator.
//!
//! Workers call model APIs themselves, but before each call to an endpoint the coordinator
//! governs they ask it for a permit ([`Gateway::acquire`]) and wait for the grant. An endpoint's
//! limits are requests per minute (`rpm`), tokens per minute (`tpm`, input + output) and
//! concurrent requests (`max_concurrency`). A grant reserves the call's *estimated* tokens (the
//! prompt's characters at the ratio this endpoint has shown so far, plus `max_tokens` or twice
//! the usual answer); the release settles on the tokens the call used, so an estimate too high
//! costs nothing for long. Both rates refill continuously, holding at most one second's worth,
//! so the cluster never bursts a minute's budget into a provider that meters by the second.
//!
//! Calls wait in one queue per endpoint, granted in order of the run's priority, orchestrators
//! first (a stage waits on them), the longest remaining critical path, then first come; the
//! head is never overtaken, so a large call is not starved by small ones. A call never fails
//! for the limit: it waits. A 429 or 503 from the endpoint (reported by the worker with the
//! pause its `Retry-After` or `x-ratelimit-reset-*` headers asked for) pauses the whole
//! endpoint, empties its buckets and lowers its rates by a fifth (to a quarter at least); each
//! call that then goes through raises them by 2 % again.
//!
//! The state is soft: a new leader starts with full buckets, and workers ask again for what
//! they were waiting on.

mod actor;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub use actor::GatewayHandle;
use serde::Deserialize;
use swarm_core::ConnId;
use tokio::time::Instant;

/// One endpoint's limits (beside the endpoint in the models file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute, input and output together.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests at once.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// The budget it counts against: endpoints with the same non-zero `key` share one (the
    /// models file gives the same key to entries with the same `base_url` and API key); 0: its
    /// own.
    #[serde(skip)]
    pub key: u64,
}

impl Limits {
    /// True when any limit is set.
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_concurrency.is_some()
    }

    /// The limits themselves, without the budget key.
    fn values(&self) -> (Option<u32>, Option<u64>, Option<u32>) {
        (self.rpm, self.tpm, self.max_concurrency)
    }

    /// Checks the values: zero would block every call forever.
    pub fn validate(&self) -> Result<(), String> {
        if self.rpm == Some(0) || self.tpm == Some(0) || self.max_concurrency == Some(0) {
            return Err("rpm, tpm and max_concurrency must be at least 1 (leave one out for no limit)".into());
        }
        Ok(())
    }
}

/// One entry of a models file, as the gateway reads it.
#[derive(Deserialize)]
struct ModelEntry {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(flatten)]
    limits: Limits,
}

/// Reads the limits from a models file (docs/agents.md): `name: {base_url, …, rpm, tpm,
/// max_concurrency}`. Limits are per API key: entries with the same `base_url` and
/// `api_key_env` share one budget (the limits set on any of them, which must agree, govern them
/// all). Endpoints of keys without limits are not governed; other fields are the workers'
/// business.
pub fn limits_from_models_file(text: &str) -> Result<HashMap<String, Limits>, String> {
    let all: BTreeMap<String, ModelEntry> = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    // Entries by key (base_url, api_key_env); an entry without a base_url is its own key.
    let mut keys: BTreeMap<(String, String), Vec<&String>> = BTreeMap::new();
    for (name, e) in &all {
        e.limits.validate().map_err(|err| format!("{name}: {err}"))?;
        let key = match &e.base_url {
            Some(url) => (url.trim_end_matches('/').to_owned(), e.api_key_env.clone().unwrap_or_default()),
            None => (format!("\u{0}{name}"), String::new()),
        };
        keys.entry(key).or_default().push(name);
    }
    let mut out = HashMap::new();
    for (k, names) in keys.values().enumerate() {
        let mut governing: Option<(&String, Limits)> = None;
        for &name in names {
            let l = all[name].limits;
            if !l.any() {
                continue;
            }
            match governing {
                Some((first, g)) if g.values() != l.values() => {
                    return Err(format!(
                        "{first} and {name} use the same API key at the same base_url but set different limits; \
                         set them on one (they share its budget) or make them agree"
                    ));
                }
                Some(_) => {}
                None => governing = Some((name, l)),
            }
        }
        if let Some((_, l)) = governing {
            for &name in names {
                out.insert(name.clone(), Limits { key: k as u64 + 1, ..l });
            }
        }
    }
    Ok(out)
}

/// Who holds or waits for a permit: a worker connection and the worker's permit id.
pub type Holder = (ConnId, u64);

/// A permit asked for.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    pub endpoint: String,
    pub prompt_chars: u64,
    pub max_tokens: u32,
    pub priority: u32,
    pub orchestrator: bool,
    pub critical_path: u64,
}

/// A permit given back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Release {
    /// The call was sent.
    pub used: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The endpoint refused for its rate limit and asked for this pause.
    pub throttled_for: Option<Duration>,
}

/// A grant, with how long it waited.
#[derive(Debug, PartialEq)]
pub struct Grant {
    pub holder: Holder,
    pub endpoint: String,
    pub waited: Duration,
}

/// How long a granted permit may go unreleased before it is taken back (a worker that lost
/// track of it; the longest model call with its retries is well within this).
pub const MAX_HOLD: Duration = Duration::from_secs(15 * 60);
/// The longest pause an endpoint's answer can impose.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);
/// Characters per token assumed before an endpoint has answered (below English's ~4, so early
/// estimates err high).
const INITIAL_CHARS_PER_TOKEN: f64 = 3.0;
/// The answer length assumed before an endpoint has answered, when it sets no `max_tokens`.
const INITIAL_OUTPUT_TOKENS: f64 = 512.0;
/// The lowest fraction of its configured rates a throttled endpoint is run at.
const MIN_FACTOR: f64 = 0.25;

/// A continuously refilled allowance holding at most one second's worth.
#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: f64, now: Instant) -> Self {
        Self { per_minute, level: per_minute / 60.0, at: now }
    }
    fn capacity(&self) -> f64 {
        self.per_minute / 60.0
    }
    fn refill(&mut self, now: Instant, factor: f64) {
        // Nothing accrues before `at` (the end of a pause).
        if now <= self.at {
            return;
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_minute / 60.0 * factor).min(self.capacity());
        self.at = now;
    }
    /// Enough for `need`: the level covers it, or is full (one call larger than a second's
    /// worth goes when the bucket is full, and leaves it in debt).
    fn covers(&self, need: f64) -> bool {
        self.level >= need.min(self.capacity())
    }
    /// When it will cover `need` at `factor`.
    fn ready_at(&self, need: f64, factor: f64) -> Instant {
        let short = need.min(self.capacity()) - self.level;
        if short <= 0.0 {
            return self.at;
        }
        let secs = short / (self.per_minute / 60.0 * factor);
        self.at + Duration::try_from_secs_f64(secs).unwrap_or(MAX_PAUSE).min(MAX_PAUSE)
    }
}

/// Queue order: higher priority, orchestrators, longer critical path, earlier.
type Order = (Reverse<u32>, bool, Reverse<u64>, u64);

#[derive(Debug)]
struct Waiting {
    holder: Holder,
    ask: Ask,
    since: Instant,
}

#[derive(Debug)]
struct Held {
    estimate: u64,
    prompt_chars: u64,
    since: Instant,
}

/// Counters of one endpoint, for metrics and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EndpointStats {
    pub granted: u64,
    pub throttled: u64,
    pub waited: Duration,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug)]
struct Endpoint {
    limits: Limits,
    tokens: Option<Bucket>,
    requests: Option<Bucket>,
    queue: BTreeMap<Order, Waiting>,
    held: HashMap<Holder, Held>,
    paused_until: Option<Instant>,
    factor: f64,
    chars_per_token: f64,
    output_tokens: f64,
    stats: EndpointStats,
}

impl Endpoint {
    fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            tokens: limits.tpm.map(|t| Bucket::new(t as f64, now)),
            requests: limits.rpm.map(|r| Bucket::new(f64::from(r), now)),
            queue: BTreeMap::new(),
            held: HashMap::new(),
            paused_until: None,
            factor: 1.0,
            chars_per_token: INITIAL_CHARS_PER_TOKEN,
            output_tokens: INITIAL_OUTPUT_TOKENS,
            stats: EndpointStats::default(),
        }
    }

    fn estimate(&self, ask: &Ask) -> u64 {
        let input = ask.prompt_chars as f64 / self.chars_per_token;
        let output = match ask.max_tokens {
            0 => 2.0 * self.output_tokens,
            m => f64::from(m),
        };
        (input + output).ceil() as u64
    }

    fn full(&self) -> bool {
        self.limits.max_concurrency.is_some_and(|m| self.held.len() >= m as usize)
    }

    fn refill(&mut self, now: Instant) {
        let f = self.factor;
        for b in [&mut self.tokens, &mut self.requests].into_iter().flatten() {
            b.refill(now, f);
        }
    }

    /// When the head of the queue can go (None: nothing waits, or only a release frees it).
    fn ready_at(&self) -> Option<Instant> {
        let (_, head) = self.queue.first_key_value()?;
        if self.full() {
            return None;
        }
        let need = self.estimate(&head.ask) as f64;
        let mut at = self.paused_until;
        for t in [
            self.tokens.as_ref().map(|b| b.ready_at(need, self.factor)),
            self.requests.as_ref().map(|b| b.ready_at(1.0, self.factor)),
        ]
        .into_iter()
        .flatten()
        {
            at = Some(at.map_or(t, |a| a.max(t)));
        }
        Some(at.unwrap_or(head.since))
    }

    fn settle(&mut self, now: Instant, held: Held, r: Release) {
        if r.used {
            let actual = r.input_tokens + r.output_tokens;
            if let Some(b) = &mut self.tokens {
                b.refill(now, self.factor);
                b.level = (b.level + held.estimate as f64 - actual as f64).min(b.capacity());
            }
            self.stats.input_tokens += r.input_tokens;
            self.stats.output_tokens += r.output_tokens;
            if r.output_tokens > 0 {
                self.output_tokens = 0.9 * self.output_tokens + 0.1 * r.output_tokens as f64;
            }
            if held.prompt_chars > 0 && r.input_tokens > 0 {
                // A tenth below what was seen: an estimate slightly high is refunded, one too
                // low draws 429s.
                let seen = (held.prompt_chars as f64 / r.input_tokens as f64 * 0.9).clamp(0.5, 8.0);
                self.chars_per_token = 0.8 * self.chars_per_token + 0.2 * seen;
            }
        } else if let Some(b) = &mut self.tokens {
            b.level = (b.level + held.estimate as f64).min(b.capacity());
        }
        match r.throttled_for {
            Some(pause) => {
                self.stats.throttled += 1;
                let until = now + pause.min(MAX_PAUSE);
                self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                self.factor = (self.factor * 0.8).max(MIN_FACTOR);
                // Empty, and refilling only once the pause is over.
                for b in [&mut self.tokens, &mut self.requests].into_iter().flatten() {
                    b.refill(now, self.factor);
                    b.level = b.level.min(0.0);
                    b.at = b.at.max(until);
                }
            }
            None if r.used => self.factor = (self.factor + 0.02).min(1.0),
            None => {}
        }
    }
}

/// The gateway's state: pure, driven by [`Instant`]s the caller passes.
#[derive(Debug)]
pub struct Gateway {
    /// The budgets, by governing name (the first endpoint name of a shared key).
    endpoints: HashMap<String, Endpoint>,
    /// Each governed endpoint's budget.
    budget_of: HashMap<String, String>,
    /// Where each waiting holder is queued.
    waiting: HashMap<Holder, (String, Order)>,
    /// Where each granted holder's permit counts.
    granted: HashMap<Holder, String>,
    seq: u64,
}

impl Gateway {
    /// A gateway governing these endpoints.
    pub fn new(limits: HashMap<String, Limits>, now: Instant) -> Self {
        let sorted: BTreeMap<String, Limits> = limits.into_iter().collect();
        let mut first_of_key: HashMap<u64, String> = HashMap::new();
        let mut endpoints = HashMap::new();
        let mut budget_of = HashMap::new();
        for (name, l) in sorted {
            let budget = if l.key == 0 {
                name.clone()
            } else {
                first_of_key.entry(l.key).or_insert_with(|| name.clone()).clone()
            };
            endpoints.entry(budget.clone()).or_insert_with(|| Endpoint::new(l, now));
            budget_of.insert(name, budget);
        }
        Self { endpoints, budget_of, waiting: HashMap::new(), granted: HashMap::new(), seq: 0 }
    }

    /// The endpoints it governs (workers ask permits for these), sorted.
    pub fn endpoints(&self) -> Vec<String> {
        let mut names: Vec<String> = self.budget_of.keys().cloned().collect();
        names.sort();
        names
    }

    /// The budgets (an endpoint's own, or the one its API key shares), sorted: the `endpoint`
    /// label of the gateway's metrics.
    pub fn budgets(&self) -> Vec<String> {
        let mut names: Vec<String> = self.endpoints.keys().cloned().collect();
        names.sort();
        names
    }

    /// Queues a request; false if the endpoint is not governed (the caller grants it at once).
    /// A holder asking again replaces its earlier request.
    pub fn acquire(&mut self, now: Instant, holder: Holder, ask: Ask) -> bool {
        let Some(name) = self.budget_of.get(&ask.endpoint).cloned() else {
            return false;
        };
        self.cancel(holder);
        self.seq += 1;
        let order = (Reverse(ask.priority), !ask.orchestrator, Reverse(ask.critical_path), self.seq);
        if let Some(e) = self.endpoints.get_mut(&name) {
            e.queue.insert(order, Waiting { holder, ask, since: now });
        }
        self.waiting.insert(holder, (name, order));
        true
    }

    fn cancel(&mut self, holder: Holder) {
        if let Some((name, order)) = self.waiting.remove(&holder)
            && let Some(e) = self.endpoints.get_mut(&name)
        {
            e.queue.remove(&order);
        }
    }

    /// A permit given back (or a wait given up).
    pub fn release(&mut self, now: Instant, holder: Holder, r: Release) {
        self.cancel(holder);
        if let Some(name) = self.granted.remove(&holder)
            && let Some(e) = self.endpoints.get_mut(&name)
            && let Some(held) = e.held.remove(&holder)
        {
            e.settle(now, held, r);
        }
    }

    /// A worker connection is gone: its waits are dropped and its permits taken back (as
    /// used in full: what it sent may have been counted).
    pub fn forget(&mut self, conn: ConnId) {
        let waits: Vec<Holder> = self.waiting.keys().filter(|h| h.0 == conn).copied().collect();
        for h in waits {
            self.cancel(h);
        }
        let held: Vec<Holder> = self.granted.keys().filter(|h| h.0 == conn).copied().collect();
        for h in held {
            if let Some(name) = self.granted.remove(&h)
                && let Some(e) = self.endpoints.get_mut(&name)
            {
                e.held.remove(&h);
            }
        }
    }

    /// Grants what the limits allow now, in queue order.
    pub fn grant(&mut self, now: Instant) -> Vec<Grant> {
        let mut out = Vec::new();
        for (name, e) in &mut self.endpoints {
            // Permits never released (a worker that lost track) are taken back.
            e.held.retain(|h, held| {
                let keep = now.saturating_duration_since(held.since) < MAX_HOLD;
                if !keep {
                    self.granted.remove(h);
                }
                keep
            });
            if e.paused_until.is_some_and(|p| p > now) {
                continue;
            }
            e.paused_until = None;
            e.refill(now);
            while let Some((_, head)) = e.queue.first_key_value() {
                let estimate = e.estimate(&head.ask);
                let fits = !e.full()
                    && e.tokens.as_ref().is_none_or(|b| b.covers(estimate as f64))
                    && e.requests.as_ref().is_none_or(|b| b.covers(1.0));
                if !fits {
                    break;
                }
                let Some((_, w)) = e.queue.pop_first() else { break };
                if let Some(b) = &mut e.tokens {
                    b.level -= estimate as f64;
                }
                if let Some(b) = &mut e.requests {
                    b.level -= 1.0;
                }
                self.waiting.remove(&w.holder);
                self.granted.insert(w.holder, name.clone());
                e.held.insert(w.holder, Held { estimate, prompt_chars: w.ask.prompt_chars, since: now });
                let waited = now.saturating_duration_since(w.since);
                e.stats.granted += 1;
                e.stats.waited += waited;
                out.push(Grant { holder: w.holder, endpoint: name.clone(), waited });
            }
        }
        out
    }

    /// The earliest time a queued request could be granted without a release happening first.
    pub fn next_wake(&self) -> Option<Instant> {
        self.endpoints.values().filter_map(Endpoint::ready_at).min()
    }

    /// Requests waiting per endpoint.
    pub fn queue_depths(&self) -> impl Iterator<Item = (&str, usize)> {
        self.endpoints.iter().map(|(n, e)| (n.as_str(), e.queue.len()))
    }

    /// The endpoint a granted permit counts against.
    pub fn holder_endpoint(&self, holder: Holder) -> Option<String> {
        self.granted.get(&holder).cloned()
    }

    /// Counters per endpoint.
    pub fn stats(&self) -> HashMap<String, EndpointStats> {
        self.endpoints.iter().map(|(n, e)| (n.clone(), e.stats)).collect()
    }
}
