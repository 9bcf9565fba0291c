//! Tenants' shares of the slots: with tenants configured (the auth file's `tenants:`), each
//! dispatch goes to the tenant whose running attempts are fewest for its weight (weighted fair
//! queuing over slots), skipping tenants at their `max_concurrent_calls` or out of their
//! `tool_calls_per_minute` (their subtasks wait, queued); within a tenant, the runs of the
//! highest `priority` go first, and runs of one priority take turns.

use std::collections::HashMap;

use swarm_core::RunKey;

use super::Manager;

/// Buckets for the tenants that have a `tool_calls_per_minute`, keyed by tenant name.
pub(super) fn tenant_rates(
    tenants: &std::collections::BTreeMap<String, crate::auth::TenantQuota>,
) -> crate::ratelimit::RateLimiter {
    let limits = tenants
        .iter()
        .filter_map(|(t, q)| q.tool_calls_per_minute.map(|n| (t, n)))
        .map(|(t, n)| {
            let rate = f64::from(n) / 60.0;
            (t.clone(), crate::ratelimit::RateLimit { rate, burst: rate.ceil().max(1.0) as u32 })
        })
        .collect();
    crate::ratelimit::RateLimiter::new(&limits)
}

/// Running attempts per tenant (`None`: runs of no tenant), for one dispatch pass.
pub(super) type Running = HashMap<Option<String>, u32>;

impl Manager {
    /// Whether dispatch shares slots among tenants (any tenant configured).
    pub(super) fn shares_by_tenant(&self) -> bool {
        !self.config.tenants.is_empty()
    }

    /// Attempts in flight per tenant.
    pub(super) fn running_by_tenant(&self) -> Running {
        let mut running = Running::new();
        for run in self.registry.inflight_runs() {
            let tenant = self.runs.get(&run).and_then(|e| e.header.tenant.clone());
            *running.entry(tenant).or_default() += 1;
        }
        running
    }

    /// The tenant of run `key`.
    pub(super) fn tenant_of_run(&self, key: RunKey) -> Option<String> {
        self.runs.get(&key).and_then(|e| e.header.tenant.clone())
    }

    /// Takes the next run to dispatch from out of the ring: the first run of the tenant with
    /// the fewest running attempts for its weight, among tenants under their concurrency cap
    /// (`None` when every waiting run's tenant is at its cap).
    pub(super) fn next_fair_run(&mut self, running: &Running, now_us: u64) -> Option<RunKey> {
        let mut best: Option<(f64, usize)> = None;
        let mut seen: Vec<Option<String>> = Vec::new();
        for (i, &key) in self.ring.iter().enumerate() {
            let tenant = self.tenant_of_run(key);
            if seen.contains(&tenant) {
                continue;
            }
            let quota = tenant.as_ref().and_then(|t| self.config.tenants.get(t)).copied().unwrap_or_default();
            let now = running.get(&tenant).copied().unwrap_or(0);
            seen.push(tenant);
            if quota.max_concurrent_calls.is_some_and(|cap| now >= cap) {
                continue;
            }
            if let Some(t) = seen.last().and_then(Option::as_deref)
                && !self.tenant_rates.has_token(t, now_us)
            {
                continue;
            }
            let load = f64::from(now + 1) / quota.weight;
            if best.is_none_or(|(b, _)| load < b) {
                best = Some((load, i));
            }
        }
        let (_, i) = best?;
        let tenant = self.tenant_of_run(self.ring[i]);
        let i = self.highest_priority(Some(&tenant)).unwrap_or(i);
        self.ring.remove(i)
    }

    /// Takes the next run to dispatch from without tenants: the first of the highest priority
    /// (the ring's head while no run has asked for a priority).
    pub(super) fn next_run(&mut self) -> Option<RunKey> {
        if !self.prioritized {
            return self.ring.pop_front();
        }
        let i = self.highest_priority(None)?;
        self.ring.remove(i)
    }

    /// The ring index of the first run of the highest priority (of `tenant`'s runs, if given).
    fn highest_priority(&self, tenant: Option<&Option<String>>) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        for (i, key) in self.ring.iter().enumerate() {
            let Some(entry) = self.runs.get(key) else { continue };
            if tenant.is_some_and(|t| entry.header.tenant != *t) {
                continue;
            }
            let p = entry.engine.dag().priority();
            if best.is_none_or(|(b, _)| p > b) {
                best = Some((p, i));
            }
        }
        best.map(|(_, i)| i)
    }
}
