//! A Jepsen-style nemesis for the process cluster: etcd (3 members), two coordinators and three
//! workers as real processes; a seeded schedule of faults (SIGKILL and SIGSTOP of workers,
//! leaders and etcd members, dropped connections, delays, partitions) while runs are submitted;
//! then every fault is healed and invariants are checked from outside (see `check`).
//!
//! Every coordinator is reached only through a fault proxy of its own (it advertises the
//! proxy's address, so workers and clients use it), and reaches each etcd member through a
//! proxy of its own, as does each worker: a partition is a proxy that blackholes. The clients'
//! operations are recorded in a [`history::History`] and checked with the rest.

use std::collections::HashSet;
use std::time::Duration;

use swarm_cli::client::{self, Client};
use swarm_core::RunSpec;
use swarm_proto::pb;
use swarm_store::StateStore;
use tokio::time::{Instant, timeout};

use crate::etcd::{EtcdCluster, TempDir, free_port};
use crate::fault_proxy::{FaultProxy, Mode};
use crate::proc_cluster::{PREFIX, write_script};

mod check;
mod faults;
mod workload;
pub use workload::{Kind, workload};
pub mod history;
use crate::process::SwarmProcess;
pub use check::check;
pub use faults::{Fault, schedule, tour};
use history::{Finder, History, Outcome};

/// The lease TTL of every process.
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// The longest any client call may take before the nemesis client gives up on it and retries.
const CALL: Duration = Duration::from_secs(5);

struct Coordinator {
    process: SwarmProcess,
    /// Its advertised address: the proxy in front of it.
    url: String,
    front: FaultProxy,
    /// Its links to the etcd members.
    etcd_links: Vec<FaultProxy>,
}

/// The cluster under the nemesis.
pub struct Nemesis {
    pub etcd: EtcdCluster,
    pub dir: TempDir,
    coordinators: Vec<Coordinator>,
    workers: Vec<SwarmProcess>,
    /// Each worker's links to the etcd members.
    worker_links: Vec<Vec<FaultProxy>>,
    /// Workers whose attempts may legitimately have been re-run: killed, or paused for long
    /// enough to lose their lease.
    disrupted: HashSet<String>,
    /// What was done, for the failure message.
    pub log: Vec<String>,
    /// The file coordinator 0's wall clock offset is read from (libfaketime).
    clock: std::path::PathBuf,
    /// strace processes delaying etcd's fsyncs, until healed.
    disk_stalls: Vec<std::process::Child>,
}

impl Nemesis {
    pub async fn start() -> anyhow::Result<Self> {
        let etcd = EtcdCluster::start(3).await?;
        let dir = TempDir::new("nemesis")?;
        write_script(&dir.0)?;
        let mut n = Self {
            etcd,
            dir,
            coordinators: Vec::new(),
            workers: Vec::new(),
            worker_links: Vec::new(),
            disrupted: HashSet::new(),
            log: Vec::new(),
            clock: std::path::PathBuf::new(),
            disk_stalls: Vec::new(),
        };
        n.clock = n.dir.0.join("clock-0");
        for i in 0..2 {
            n.add_coordinator(i).await?;
            if i == 0 {
                n.wait_serving(Duration::from_secs(20)).await?;
            }
        }
        for i in 0..3 {
            let mut links = Vec::new();
            for endpoint in n.etcd.endpoints() {
                links.push(FaultProxy::start(endpoint.trim_start_matches("http://").parse()?).await?);
            }
            let endpoints: Vec<String> = links.iter().map(FaultProxy::url).collect();
            let args: Vec<String> = ["worker", "--id", &format!("w{i}"), "--slots", "16", "--append-dir"]
                .map(String::from)
                .into_iter()
                .chain([n.append_dir(&format!("w{i}"))?.display().to_string(), "--script".into()])
                .chain([n.dir.0.join("script.yaml").display().to_string()])
                .chain(n.etcd_args(&endpoints))
                .collect();
            n.workers.push(SwarmProcess::spawn(&format!("worker-w{i}"), &args, &n.dir.0)?);
            n.worker_links.push(links);
        }
        Ok(n)
    }

    fn etcd_args(&self, endpoints: &[String]) -> Vec<String> {
        vec!["--etcd".into(), endpoints.join(","), "--lease-ttl".into(), format!("{}ms", LEASE_TTL.as_millis())]
    }

    async fn add_coordinator(&mut self, i: usize) -> anyhow::Result<()> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let front = FaultProxy::start(listen.parse()?).await?;
        let mut etcd_links = Vec::new();
        for endpoint in self.etcd.endpoints() {
            etcd_links.push(FaultProxy::start(endpoint.trim_start_matches("http://").parse()?).await?);
        }
        let endpoints: Vec<String> = etcd_links.iter().map(FaultProxy::url).collect();
        let url = front.url();
        let mut args: Vec<String> =
            vec!["coordinator".into(), "--listen".into(), listen, "--advertise".into(), url.clone()];
        args.extend(self.etcd_args(&endpoints));
        // Coordinator 0's wall clock is stepped by `Fault::StepClock`; coordinator 1's clocks
        // (wall and monotonic) run 5 % slow throughout: a leader slow to see its lease run out.
        let env = match i {
            0 => crate::process::stepped_wall_clock(&self.clock),
            _ => crate::process::faketime(&[("FAKETIME", "+0 x0.95")]),
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let process = SwarmProcess::spawn_env(&format!("coordinator-{i}"), &args, &env, &self.dir.0)?;
        self.coordinators.push(Coordinator { process, url, front, etcd_links });
        Ok(())
    }

    /// The index of the coordinator that holds the leader key, if any.
    pub async fn leader(&self) -> Option<usize> {
        let store: std::sync::Arc<dyn StateStore> = self.etcd.store().await.ok()?;
        let election = swarm_store::election::Election::new(store, &format!("{PREFIX}leader"));
        let (leader, _) = timeout(CALL, election.leader()).await.ok()?.ok()?;
        let url = leader?.value;
        self.coordinators.iter().position(|c| c.url == url)
    }

    /// How clients outside the nemesis find the leader.
    pub fn finder(&self) -> Finder {
        Finder { etcd: self.etcd.endpoints(), urls: self.coordinators.iter().map(|c| c.url.clone()).collect() }
    }

    /// A client of whichever coordinator serves as leader now.
    pub async fn client(&self) -> Option<Client> {
        let i = self.leader().await?;
        timeout(CALL, client::connect(&self.coordinators[i].url)).await.ok()?.ok()
    }

    async fn wait_serving(&self, deadline: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(mut c) = self.client().await
                && timeout(CALL, c.list_runs(pb::ListRunsRequest::default())).await.is_ok_and(|r| r.is_ok())
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < until, "no coordinator served within {deadline:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Applies one fault and heals it.
    pub async fn inflict(&mut self, fault: &Fault) {
        let leader = self.leader().await;
        self.log.push(format!("{fault:?} (leader: {leader:?})"));
        let sleep = |d: Duration| tokio::time::sleep(d);
        match *fault {
            Fault::KillWorker(i, d) => {
                self.workers[i].kill();
                self.disrupted.insert(format!("w{i}"));
                sleep(d).await;
                let _ = self.workers[i].restart();
            }
            Fault::PauseWorker(i, d) => {
                let _ = self.workers[i].signal("STOP");
                if d >= LEASE_TTL / 2 {
                    self.disrupted.insert(format!("w{i}"));
                }
                sleep(d).await;
                let _ = self.workers[i].signal("CONT");
            }
            Fault::PauseEtcd(i, d) => {
                let _ = self.etcd.signal(i, "STOP");
                sleep(d).await;
                let _ = self.etcd.signal(i, "CONT");
            }
            Fault::KillEtcd(i, d) => {
                self.etcd.kill(i);
                sleep(d).await;
                let _ = self.etcd.restart(i);
            }
            Fault::EtcdOutage(d) => {
                for i in 0..3 {
                    let _ = self.etcd.signal(i, "STOP");
                }
                sleep(d).await;
                for i in 0..3 {
                    let _ = self.etcd.signal(i, "CONT");
                }
            }
            Fault::RestartCoordinators(d) => {
                self.coordinators.iter_mut().for_each(|c| c.process.kill());
                sleep(d).await;
                for c in &mut self.coordinators {
                    let _ = c.process.restart();
                }
            }
            Fault::RollingRestart => {
                for w in &mut self.workers {
                    let _ = w.signal("TERM");
                    let _ = w.wait_exit(Duration::from_secs(30)).await;
                    let _ = w.restart();
                }
                let order: Vec<usize> = match leader {
                    Some(l) => (0..self.coordinators.len()).filter(|&i| i != l).chain([l]).collect(),
                    None => (0..self.coordinators.len()).collect(),
                };
                for i in order {
                    let c = &mut self.coordinators[i];
                    let _ = c.process.signal("TERM");
                    let _ = c.process.wait_exit(Duration::from_secs(30)).await;
                    let _ = c.process.restart();
                    let _ = self.wait_serving(Duration::from_secs(30)).await;
                }
            }
            Fault::IsolateWorkerFromEtcd(i, d) => {
                // Past its lease it is a lost worker to a leader that starts meanwhile (it cannot
                // find one): a call it finished but whose report died with its leader runs again.
                if d >= LEASE_TTL / 2 {
                    self.disrupted.insert(format!("w{i}"));
                }
                self.worker_links[i].iter().for_each(|p| p.set(Mode::Blackhole));
                sleep(d).await;
                self.worker_links[i].iter().for_each(|p| p.set(Mode::Pass));
            }
            Fault::StepClock(secs, d) => {
                let _ = std::fs::write(&self.clock, format!("{secs:+}s\n"));
                sleep(d).await;
                let _ = std::fs::write(&self.clock, "+0\n");
            }
            Fault::SlowEtcdDisks(d, delay) => {
                self.stall_disks(delay).await;
                // A witness that the stall took: one commit, timed.
                let t = Instant::now();
                let put = swarm_store::Txn::new().then(swarm_store::Op::put("/nemesis/disk", "1"));
                if let Ok(store) = self.etcd.store().await {
                    let ok = timeout(d, store.commit(put)).await.is_ok_and(|r| r.is_ok());
                    self.log.push(format!(
                        "  a commit during the stall: {:?} ({})",
                        t.elapsed(),
                        if ok { "ok" } else { "not within the fault" }
                    ));
                }
                sleep(d.saturating_sub(t.elapsed())).await;
                self.unstall_disks();
            }
            Fault::RestartWorkers(d) => {
                for (i, w) in self.workers.iter_mut().enumerate() {
                    w.kill();
                    self.disrupted.insert(format!("w{i}"));
                }
                sleep(d).await;
                for w in &mut self.workers {
                    let _ = w.restart();
                }
            }
            _ => {
                let Some(l) = leader else { return };
                let c = &mut self.coordinators[l];
                match *fault {
                    Fault::KillLeader(d) => {
                        c.process.kill();
                        sleep(d).await;
                        let _ = c.process.restart();
                    }
                    Fault::PauseLeader(d) => {
                        let _ = c.process.signal("STOP");
                        sleep(d).await;
                        let _ = c.process.signal("CONT");
                    }
                    Fault::DropLeaderLinks => {
                        c.front.drop_connections();
                    }
                    Fault::SlowLeader(d, delay) => {
                        c.front.set(Mode::Delay(delay));
                        sleep(d).await;
                        c.front.set(Mode::Pass);
                    }
                    Fault::IsolateLeaderFromEtcd(d) => {
                        c.etcd_links.iter().for_each(|p| p.set(Mode::Blackhole));
                        sleep(d).await;
                        c.etcd_links.iter().for_each(|p| p.set(Mode::Pass));
                    }
                    Fault::IsolateLeaderFromWorkers(d) => {
                        c.front.set(Mode::Blackhole);
                        sleep(d).await;
                        c.front.set(Mode::Pass);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Delays every fsync and fdatasync of every etcd member by `delay` (strace attached to it,
    /// injecting the delay), until [`Self::unstall_disks`].
    async fn stall_disks(&mut self, delay: Duration) {
        let inject = format!("inject=fsync,fdatasync:delay_enter={}us", delay.as_micros());
        for pid in (0..3).filter_map(|i| self.etcd.pid(i)) {
            let strace = std::process::Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync,fdatasync", "-e", &inject, "-p"])
                .arg(pid.to_string())
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match strace {
                Ok(child) => self.disk_stalls.push(child),
                Err(e) => self.log.push(format!("  strace did not start ({e}): run scripts/install-deps test")),
            }
        }
        // Until every thread of every member is traced (or 5 s), without holding up the runtime.
        let until = Instant::now() + Duration::from_secs(5);
        while (0..3).filter_map(|i| self.etcd.pid(i)).any(|pid| !traced(pid)) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Detaches every strace [`Self::stall_disks`] attached (SIGINT: it lets its tracees go).
    fn unstall_disks(&mut self) {
        for mut child in self.disk_stalls.drain(..) {
            let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Heals everything: every process runs and every link passes.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        self.unstall_disks();
        // A member that exited by itself (no fault kills it without restarting it) is an
        // anomaly to report, and to restart so the round can be checked.
        for i in 0..3 {
            if let Some(how) = self.etcd.exited(i) {
                self.log.push(format!("  etcd member {i} had exited ({how}); restarted"));
                let _ = self.etcd.restart(i);
            }
        }
        let _ = std::fs::write(&self.clock, "+0\n");
        for i in 0..3 {
            let _ = self.etcd.signal(i, "CONT");
        }
        for c in &mut self.coordinators {
            let _ = c.process.signal("CONT");
            c.front.set(Mode::Pass);
            c.etcd_links.iter().for_each(|p| p.set(Mode::Pass));
        }
        for w in &self.workers {
            let _ = w.signal("CONT");
        }
        self.worker_links.iter().flatten().for_each(|p| p.set(Mode::Pass));
        self.wait_serving(Duration::from_secs(60)).await
    }

    /// Worker `id`'s append directory (created): each worker's own, so that an effect names
    /// the worker that made it.
    fn append_dir(&self, id: &str) -> anyhow::Result<std::path::PathBuf> {
        let dir = self.dir.0.join(format!("append-{id}"));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Lines appended to `file` by the `append` tool, with the worker that appended each.
    pub fn appended(&self, file: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in 0..self.workers.len() {
            let path = self.dir.0.join(format!("append-w{i}")).join(file);
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.extend(text.lines().map(|l| (format!("w{i}"), l.to_owned())));
        }
        out
    }

    /// The tail of every process's log, after every error any coordinator logged.
    pub fn logs(&self) -> String {
        let mut out = String::from("--- coordinator errors ---\n");
        let mut files: Vec<_> =
            std::fs::read_dir(&self.dir.0).into_iter().flatten().flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files.iter().filter(|p| p.to_string_lossy().contains("coordinator-")) {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("ERROR")).take(30) {
                out += &format!("{}: {line}\n", path.file_name().unwrap_or_default().to_string_lossy());
            }
        }
        let procs = self.coordinators.iter().map(|c| &c.process).chain(&self.workers);
        for p in procs {
            let text = p.log_text();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {} ---\n{}\n", p.name, lines[lines.len().saturating_sub(25)..].join("\n"));
        }
        out
    }
}

/// Whether every thread of process `pid` has a tracer.
fn traced(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks.into_iter().all(|t| {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        status.lines().any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
    })
}

impl Drop for Nemesis {
    fn drop(&mut self) {
        self.unstall_disks();
    }
}

/// Submits `spec` with an idempotency key, retrying through failovers until it is accepted;
/// the acknowledgement goes into `history`.
pub async fn submit(n: &Nemesis, spec: &RunSpec, deadline: Duration, history: &History) -> anyhow::Result<String> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(mut c) = n.client().await {
            let request = pb::SubmitRunRequest {
                spec: Some(spec.into()),
                idempotency_key: spec.name.clone(),
                ..Default::default()
            };
            let invoked = Instant::now();
            if let Ok(Ok(r)) = timeout(CALL, c.submit_run(request)).await {
                let run_id = r.into_inner().run_id;
                history.record("submit", &spec.name, invoked, Outcome::Submitted(run_id.clone()));
                return Ok(run_id);
            }
        }
        anyhow::ensure!(Instant::now() < until, "{} was never accepted", spec.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every run has ended; returns them as the leader serves them (with subtasks).
pub async fn wait_ended(n: &Nemesis, runs: &[String], deadline: Duration) -> anyhow::Result<Vec<pb::Run>> {
    let until = Instant::now() + deadline;
    let mut out = Vec::new();
    for id in runs {
        loop {
            if let Some(mut c) = n.client().await
                && let Ok(Ok(run)) = timeout(CALL, client::get(&mut c, id, true)).await
                && run.state != pb::RunState::Running as i32
            {
                out.push(run);
                break;
            }
            anyhow::ensure!(Instant::now() < until, "run {id} did not end in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(out)
}

/// One round: the faults of `plan` (made from `seed`) while runs are submitted, then heal and
/// check. Returns (faults inflicted, runs checked, tool calls completed).
pub async fn round(seed: u64, plan: Vec<(Duration, Fault)>) -> anyhow::Result<(usize, usize, u64)> {
    let mut n = Nemesis::start().await?;
    let started = Instant::now();
    let history = History::new();
    let (observers, stop) = (tokio_util::task::TaskTracker::new(), tokio_util::sync::CancellationToken::new());
    let mut runs = Vec::new();
    for (k, (gap, fault)) in plan.iter().enumerate() {
        let spec = workload(k);
        let run_id = submit(&n, &spec, Duration::from_secs(60), &history).await?;
        observers.spawn(history.clone().observe(n.finder(), spec.name.clone(), run_id.clone(), stop.clone()));
        observers.spawn(history.clone().watch(n.finder(), spec.name.clone(), run_id.clone(), stop.clone()));
        runs.push(run_id);
        tokio::time::sleep(*gap).await;
        n.inflict(fault).await;
    }
    n.heal().await?;
    let done = wait_ended(&n, &runs, Duration::from_secs(180)).await;
    // Observers that saw their run end ask again a few times (through whichever leader);
    // watchers end at the run's end (one stuck on a link that went silent needs HTTP/2
    // keepalive, ~15 s, to find out and resume).
    observers.close();
    let _ = timeout(Duration::from_secs(45), observers.wait()).await;
    stop.cancel();
    observers.wait().await;
    let context =
        || format!("seed {seed} (replay: SWARM_NEMESIS_SEED={seed})\nfaults:\n  {}\n{}", n.log.join("\n  "), n.logs());
    let ended = done.map_err(|e| anyhow::anyhow!("{e}\n{}", context()))?;
    let bad = check(&n, &ended, &history.ops()).await?;
    anyhow::ensure!(bad.is_empty(), "{} violations:\n  {}\n{}", bad.len(), bad.join("\n  "), context());
    let calls = ended.iter().map(|r| r.summary.as_ref().map_or(0, |s| u64::from(s.tool_calls_completed))).sum();
    eprintln!(
        "nemesis seed {seed}: {} faults over {:?}, {} runs, {calls} tool calls, {} client operations checked ({}); every invariant held\n  {}",
        plan.len(),
        started.elapsed(),
        runs.len(),
        history.ops().len(),
        history.counts(),
        n.log.join("\n  ")
    );
    Ok((plan.len(), runs.len(), calls))
}
