//! `swarm bench --scenario overload`: many runs at once, then very large runs.
//!
//! Phase 1 submits 50 copies of the 1,502-call swarm DAG (no-op calls) at once; phase 2
//! submits 10 runs of 9,992 calls (1 → 111 × 90 → 1, the largest such DAG within the
//! 10,000-subtask limit) at once. For each phase: every call must succeed (each subtask
//! exactly once; extra attempts, which only speculative backups of idempotent calls may add,
//! are counted), throughput, the wait from a subtask becoming ready to its attempt starting
//! (p50/p99/max, over every subtask; it includes queueing for a free slot), the coordinator's
//! peak resident memory above its level before the phase, per subtask queued at once, and its
//! CPU time per call.
//!
//! Embedded, the coordinator shares the process with the workers, the client and the memory
//! store (which holds every spec and record), so the memory figure is the whole process's; with
//! `--addr` and `--coordinator-pid` (scripts/dev-cluster), it is the coordinator's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client;
use crate::specs;

/// One phase of the overload benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct OverloadPhase {
    pub name: String,
    pub runs: usize,
    pub tool_calls: u64,
    /// Attempts beyond one per call (speculative backups; retries would show here too).
    pub extra_attempts: u64,
    pub wall_ms: f64,
    pub tool_calls_per_sec: f64,
    /// Ready → attempt started, over every subtask of the phase.
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub wait_max_ms: f64,
    /// Resident memory before the phase and its peak during it (MiB).
    pub rss_before_mb: f64,
    pub rss_peak_mb: f64,
    /// (peak − before) / subtasks queued at once, in bytes.
    pub rss_bytes_per_queued_subtask: f64,
    pub coordinator_cpu_us_per_call: Option<f64>,
}

/// Where the coordinator's memory and CPU are read.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// This process (embedded): RSS of the whole process, CPU of the `swarm-coord` threads.
    Embedded,
    /// Another process, by PID.
    Pid(u32),
    /// Nothing readable.
    None,
}

impl Probe {
    pub(super) fn rss_bytes(self) -> Option<u64> {
        let path = match self {
            Self::Embedded => "/proc/self/status".to_owned(),
            Self::Pid(pid) => format!("/proc/{pid}/status"),
            Self::None => return None,
        };
        let status = std::fs::read_to_string(path).ok()?;
        let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    }

    pub(super) fn cpu_us(self) -> Option<u64> {
        match self {
            Self::Embedded => super::thread_cpu_us("swarm-coord"),
            Self::Pid(pid) => {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let rest = stat.rsplit_once(") ").map(|(_, r)| r)?;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks * 10_000)
            }
            Self::None => None,
        }
    }
}

/// The peak resident set while a phase runs, sampled every 20 ms.
pub(super) struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling `probe`, from `before`.
    pub(super) fn start(probe: Probe, before: u64) -> Self {
        let peak = Arc::new(AtomicU64::new(before));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    if let Some(rss) = probe.rss_bytes() {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
        });
        Self { peak, stop, task }
    }

    /// Stops sampling; the peak seen (bytes).
    pub(super) async fn stop(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// Runs both phases.
pub async fn overload(client: &mut client::Client, probe: Probe) -> anyhow::Result<Vec<OverloadPhase>> {
    let small = specs::swarm(100, 15, Some(&|_, _| 0));
    let big = specs::swarm(111, 90, Some(&|_, _| 0));
    super::submit_and_wait(client, &small).await?; // warm-up
    let mut phases = Vec::new();
    phases.push(phase(client, probe, "50 runs × 1,502 calls at once", &small, 50).await?);
    phases.push(phase(client, probe, "10 runs × 9,992 calls at once", &big, 10).await?);
    Ok(phases)
}

async fn phase(
    client: &mut client::Client,
    probe: Probe,
    name: &str,
    spec: &swarm_core::RunSpec,
    runs: usize,
) -> anyhow::Result<OverloadPhase> {
    let before = probe.rss_bytes().unwrap_or(0);
    let cpu0 = probe.cpu_us();
    let sampler = PeakRss::start(probe, before);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..runs {
        let mut c = client.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let r = super::submit_and_wait(&mut c, &spec).await?;
            anyhow::Ok(r)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await??);
    }
    let wall = t0.elapsed().as_secs_f64();
    let peak = sampler.stop().await;
    let cpu1 = probe.cpu_us();
    let calls: u64 = done.iter().map(|r| u64::from(r.tool_calls_completed)).sum();
    let attempts: u64 = done.iter().map(|r| u64::from(r.attempts)).sum();
    let expected = (runs * spec.subtasks.len()) as u64;
    anyhow::ensure!(calls == expected, "{calls} calls succeeded of {expected}");
    let mut waits = Vec::with_capacity(expected as usize);
    for r in &done {
        let run = client::get(client, &r.run_id, true).await.map_err(|s| client::status_error(&s))?;
        for s in &run.subtasks {
            let ready = s.ready_at.as_ref().map(swarm_proto::convert::unix_us);
            let started = s.first_started_at.as_ref().or(s.started_at.as_ref()).map(swarm_proto::convert::unix_us);
            if let (Some(r), Some(s)) = (ready, started) {
                waits.push(s.saturating_sub(r) as f64 / 1000.0);
            }
        }
    }
    waits.sort_by(f64::total_cmp);
    let q = |p: f64| waits.get(((waits.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    let out = OverloadPhase {
        name: name.to_owned(),
        runs,
        tool_calls: calls,
        extra_attempts: attempts.saturating_sub(calls),
        wall_ms: wall * 1000.0,
        tool_calls_per_sec: calls as f64 / wall,
        wait_p50_ms: q(0.5),
        wait_p99_ms: q(0.99),
        wait_max_ms: q(1.0),
        rss_before_mb: before as f64 / (1 << 20) as f64,
        rss_peak_mb: peak as f64 / (1 << 20) as f64,
        rss_bytes_per_queued_subtask: peak.saturating_sub(before) as f64 / expected as f64,
        coordinator_cpu_us_per_call: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a) as f64 / calls as f64),
    };
    eprintln!(
        "overload: {name}: {calls} calls in {:.0} ms → {:.0} calls/s; ready→start p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         RSS {:.0} → peak {:.0} MiB ({:.0} B per queued subtask); coordinator CPU {} per call; {} extra attempts",
        out.wall_ms,
        out.tool_calls_per_sec,
        out.wait_p50_ms,
        out.wait_p99_ms,
        out.wait_max_ms,
        out.rss_before_mb,
        out.rss_peak_mb,
        out.rss_bytes_per_queued_subtask,
        out.coordinator_cpu_us_per_call.map_or("n/a".to_owned(), |c| format!("{c:.1} µs")),
        out.extra_attempts,
    );
    Ok(out)
}
