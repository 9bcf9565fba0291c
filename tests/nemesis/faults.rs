//! The faults of the nemesis, and the schedules it draws them in.

use std::time::Duration;

/// One fault, healed after its duration (or, for kills, by a restart after it).
#[derive(Clone, Debug)]
pub enum Fault {
    KillWorker(usize, Duration),
    PauseWorker(usize, Duration),
    KillLeader(Duration),
    PauseLeader(Duration),
    PauseEtcd(usize, Duration),
    KillEtcd(usize, Duration),
    /// Drops every connection to the leader (workers' streams, clients).
    DropLeaderLinks,
    /// Delays every chunk to and from the leader.
    SlowLeader(Duration, Duration),
    /// Cuts the leader off from etcd: it loses its lease; a standby takes over.
    IsolateLeaderFromEtcd(Duration),
    /// Cuts the leader off from workers and clients (not from etcd).
    IsolateLeaderFromWorkers(Duration),
    /// Freezes every etcd member (longer than the lease: every lease runs out).
    EtcdOutage(Duration),
    /// SIGKILLs every coordinator, then starts them all again.
    RestartCoordinators(Duration),
    /// SIGKILLs every worker, then starts them all again.
    RestartWorkers(Duration),
    /// Cuts worker `i` off from etcd (not from its coordinator) for longer than its lease:
    /// it must stop its attempts before they run elsewhere.
    IsolateWorkerFromEtcd(usize, Duration),
    /// A rolling restart, as an upgrade does it: each worker, then the standby, then the
    /// leader, stopped with SIGTERM (they drain or resign) and started again, one at a time.
    RollingRestart,
    /// Steps coordinator 0's wall clock by this many seconds (either way), and back after the
    /// duration: an NTP correction or an operator's `date -s` (libfaketime; coordinator 1's
    /// clocks, wall and monotonic, run 5 % slow throughout).
    StepClock(i64, Duration),
    /// Delays every `fsync`/`fdatasync` of every etcd member by the second duration (strace
    /// injecting the delay): a slow or stalled disk, every commit waiting on it.
    SlowEtcdDisks(Duration, Duration),
}

/// Every kind of fault once, in an order and with durations drawn from `seed`: what the suite
/// runs, so that each kind is exercised on every run of the suite.
pub fn tour(seed: u64) -> Vec<(Duration, Fault)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ms = |rng: &mut fastrand::Rng, lo: u64, hi: u64| Duration::from_millis(rng.u64(lo..=hi));
    let r = &mut rng;
    let mut faults = vec![
        Fault::KillWorker(0, ms(r, 300, 1500)),
        Fault::PauseWorker(1, ms(r, 2500, 4000)),
        Fault::KillLeader(ms(r, 500, 1500)),
        Fault::PauseLeader(ms(r, 2500, 4000)),
        Fault::PauseEtcd(0, ms(r, 500, 2000)),
        Fault::KillEtcd(1, ms(r, 500, 2000)),
        Fault::DropLeaderLinks,
        Fault::SlowLeader(ms(r, 500, 2000), ms(r, 10, 60)),
        Fault::IsolateLeaderFromEtcd(ms(r, 2500, 4000)),
        Fault::IsolateLeaderFromWorkers(ms(r, 1000, 4000)),
        Fault::EtcdOutage(ms(r, 3000, 5000)),
        Fault::RestartCoordinators(ms(r, 200, 1000)),
        Fault::RestartWorkers(ms(r, 200, 1000)),
        Fault::IsolateWorkerFromEtcd(2, ms(r, 2500, 4000)),
        Fault::RollingRestart,
        Fault::StepClock(3600, ms(r, 1500, 3000)),
        Fault::StepClock(-3600, ms(r, 1500, 3000)),
        Fault::SlowEtcdDisks(ms(r, 1500, 3000), ms(r, 100, 600)),
    ];
    rng.shuffle(&mut faults);
    faults.into_iter().map(|f| (ms(&mut rng, 200, 800), f)).collect()
}

/// A seeded schedule: (pause before, fault), filling about `window`.
pub fn schedule(seed: u64, window: Duration) -> Vec<(Duration, Fault)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ms = |lo: u64, hi: u64| Duration::from_millis(rng.u64(lo..=hi));
    let mut out = Vec::new();
    let mut total = Duration::ZERO;
    while total < window {
        let gap = ms(300, 1500);
        let kind = ms(0, 16).as_millis() as u64;
        let who = ms(0, 2).as_millis() as usize;
        let fault = match kind {
            0 => Fault::KillWorker(who, ms(300, 2000)),
            1 => Fault::PauseWorker(who, ms(300, 4000)),
            2 => Fault::KillLeader(ms(500, 2500)),
            3 => Fault::PauseLeader(ms(300, 4000)),
            4 => Fault::PauseEtcd(who, ms(300, 3000)),
            5 => Fault::KillEtcd(who, ms(500, 3000)),
            6 => Fault::DropLeaderLinks,
            7 => Fault::SlowLeader(ms(500, 3000), ms(5, 80)),
            8 => Fault::IsolateLeaderFromEtcd(ms(1000, 5000)),
            9 => Fault::IsolateLeaderFromWorkers(ms(500, 5000)),
            10 => Fault::EtcdOutage(ms(2500, 6000)),
            11 => Fault::RestartCoordinators(ms(200, 2000)),
            12 => Fault::RestartWorkers(ms(200, 2000)),
            13 => Fault::IsolateWorkerFromEtcd(who, ms(2500, 5000)),
            14 => Fault::StepClock(if who == 1 { -3600 } else { 3600 * (who as i64 + 1) }, ms(1000, 5000)),
            15 => Fault::SlowEtcdDisks(ms(1000, 4000), ms(50, 1000)),
            _ => Fault::RollingRestart,
        };
        total += gap + fault.duration();
        out.push((gap, fault));
    }
    out
}

impl Fault {
    pub(super) fn duration(&self) -> Duration {
        match self {
            Self::KillWorker(_, d)
            | Self::PauseWorker(_, d)
            | Self::KillLeader(d)
            | Self::PauseLeader(d)
            | Self::PauseEtcd(_, d)
            | Self::KillEtcd(_, d)
            | Self::SlowLeader(d, _)
            | Self::IsolateLeaderFromEtcd(d)
            | Self::IsolateLeaderFromWorkers(d)
            | Self::EtcdOutage(d)
            | Self::RestartCoordinators(d)
            | Self::RestartWorkers(d)
            | Self::IsolateWorkerFromEtcd(_, d)
            | Self::StepClock(_, d)
            | Self::SlowEtcdDisks(d, _) => *d,
            Self::DropLeaderLinks => Duration::ZERO,
            Self::RollingRestart => Duration::from_secs(10),
        }
    }
}
