//! A cluster of real processes: etcd, `swarm coordinator` replicas and `swarm worker`s, all on
//! loopback, each stopped by PID when the cluster is dropped.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_cli::client::{self, Client};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_store::election::Election;
use swarm_store::{EtcdStore, StateStore};

use crate::etcd::{EtcdCluster, TempDir};
use crate::process::SwarmProcess;

/// The key prefix the processes use.
pub const PREFIX: &str = "/swarm/v1/";

/// etcd + coordinators + workers.
pub struct ProcCluster {
    pub etcd: EtcdCluster,
    pub dir: TempDir,
    pub coordinators: Vec<(SwarmProcess, String)>,
    pub workers: Vec<SwarmProcess>,
    pub lease_ttl: Duration,
    /// Extra environment of every process started from now on.
    pub env: Vec<(String, String)>,
}

pub fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(format!("127.0.0.1:{port}"))
}

impl ProcCluster {
    /// Starts etcd (`etcd_members` nodes), then `coordinators` coordinators (the first becomes
    /// leader before the next starts) and `workers` workers with 32 slots and the `append` tool.
    pub async fn start(
        etcd_members: usize,
        coordinators: usize,
        workers: usize,
        lease_ttl: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(etcd_members, coordinators, workers, lease_ttl, Vec::new()).await
    }

    /// The same, with extra environment variables for every process.
    pub async fn start_with_env(
        etcd_members: usize,
        coordinators: usize,
        workers: usize,
        lease_ttl: Duration,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let etcd = EtcdCluster::start(etcd_members).await?;
        Self::start_on(etcd, coordinators, workers, lease_ttl, env).await
    }

    /// The same on an etcd the caller started (with flags of its own, say).
    pub async fn start_on(
        etcd: EtcdCluster,
        coordinators: usize,
        workers: usize,
        lease_ttl: Duration,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let dir = TempDir::new("proc")?;
        write_script(&dir.0)?;
        let mut cluster = Self { etcd, dir, coordinators: Vec::new(), workers: Vec::new(), lease_ttl, env };
        for _ in 0..coordinators {
            cluster.add_coordinator()?;
            if cluster.coordinators.len() == 1 {
                let (leader, _) = cluster.wait_leader(None, Duration::from_secs(15)).await?;
                cluster.wait_serving(&leader, Duration::from_secs(15)).await?;
            }
        }
        for i in 0..workers {
            cluster.add_worker(&format!("w{i}"))?;
        }
        cluster.wait_workers(workers, Duration::from_secs(15)).await?;
        Ok(cluster)
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            "--etcd".into(),
            self.etcd.endpoints().join(","),
            "--lease-ttl".into(),
            format!("{}ms", self.lease_ttl.as_millis()),
        ]
    }

    /// Starts one more coordinator; returns its index.
    pub fn add_coordinator(&mut self) -> anyhow::Result<usize> {
        self.add_coordinator_args(&[])
    }

    /// Starts one more coordinator with extra arguments; returns its index.
    pub fn add_coordinator_args(&mut self, extra: &[String]) -> anyhow::Result<usize> {
        let addr = free_addr()?;
        let url = format!("http://{addr}");
        let mut args: Vec<String> =
            vec!["coordinator".into(), "--listen".into(), addr, "--advertise".into(), url.clone()];
        args.extend(extra.iter().cloned());
        args.extend(self.common_args());
        let i = self.coordinators.len();
        let process = SwarmProcess::spawn_env(&format!("coordinator-{i}"), &args, &self.env_refs(), &self.dir.0)?;
        self.coordinators.push((process, url));
        Ok(i)
    }

    /// Starts one more worker.
    pub fn add_worker(&mut self, id: &str) -> anyhow::Result<()> {
        self.add_worker_args(id, &[])
    }

    /// Starts one more worker with extra arguments.
    pub fn add_worker_args(&mut self, id: &str, extra: &[String]) -> anyhow::Result<()> {
        let mut args: Vec<String> = vec!["worker".into(), "--id".into(), id.into(), "--slots".into(), "32".into()];
        args.extend(extra.iter().cloned());
        args.push("--append-dir".into());
        args.push(self.dir.0.join("append").display().to_string());
        args.push("--script".into());
        args.push(self.dir.0.join("script.yaml").display().to_string());
        args.extend(self.common_args());
        self.workers.push(SwarmProcess::spawn_env(&format!("worker-{id}"), &args, &self.env_refs(), &self.dir.0)?);
        Ok(())
    }

    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// A store client of the cluster's etcd.
    pub async fn store(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        Ok(Arc::new(EtcdStore::connect(&self.etcd.endpoints(), Duration::from_secs(5)).await?))
    }

    /// The leader's address and term, from the election in etcd.
    pub async fn leader(&self) -> anyhow::Result<Option<(String, i64)>> {
        let election = Election::new(self.store().await?, &format!("{PREFIX}leader"));
        Ok(election.leader().await?.0.map(|l| (l.value, l.revision)))
    }

    /// Waits until a leader other than `not` is elected; returns its address and term.
    pub async fn wait_leader(&self, not: Option<&str>, deadline: Duration) -> anyhow::Result<(String, i64)> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok(Some((leader, term))) = self.leader().await
                && Some(leader.as_str()) != not
            {
                return Ok((leader, term));
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "no new leader within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the coordinator at `url` serves the API as leader (elected is not yet
    /// serving: it still reads the store).
    pub async fn wait_serving(&self, url: &str, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok(mut c) = self.client(url).await
                && c.list_runs(swarm_proto::pb::ListRunsRequest::default()).await.is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "{url} did not serve within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `n` workers are registered in etcd.
    pub async fn wait_workers(&self, n: usize, deadline: Duration) -> anyhow::Result<()> {
        let store = self.store().await?;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let page = store.range(format!("{PREFIX}workers/").as_bytes(), None, 0).await?;
            if page.kvs.len() >= n {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "only {} of {n} workers registered", page.kvs.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the leader has `n` workers connected (registered in etcd is not yet joined:
    /// the admission check of placements counts the connected ones).
    pub async fn wait_connected(&self, n: usize, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok(Some((leader, _))) = self.leader().await
                && let Ok(mut c) = self.client(&leader).await
                && let Ok(r) = c.list_workers(swarm_proto::pb::ListWorkersRequest {}).await
                && r.into_inner().workers.len() >= n
            {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "fewer than {n} workers joined the leader");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A client of the coordinator at `url`.
    pub async fn client(&self, url: &str) -> anyhow::Result<Client> {
        client::connect(url).await
    }

    /// After the leader at `old` is gone: `run_id` as the next leader serves it (with its
    /// subtasks), once its term has started (until then it answers UNAVAILABLE).
    pub async fn get_from_next_leader(&self, old: &str, run_id: &str) -> anyhow::Result<swarm_proto::pb::Run> {
        let (url, _) = self.wait_leader(Some(old), Duration::from_secs(15)).await?;
        let mut c = self.client(&url).await?;
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match swarm_cli::client::get(&mut c, run_id, true).await {
                Ok(run) => return Ok(run),
                Err(s) if s.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => anyhow::bail!("get from the new leader: {s:?}"),
            }
        }
    }

    /// Lines appended by the `append` tool to `file`.
    pub fn appended(&self, file: &str) -> Vec<String> {
        appended_in(&self.dir.0, file)
    }

    /// The logs of every process, for failure messages.
    /// Panics unless `run` succeeded, saying first what did not (its error, then each subtask
    /// that did not succeed, with its attempts and last error), then the processes' logs.
    pub async fn assert_succeeded(&self, run: &swarm_proto::pb::Run) {
        use swarm_proto::pb;
        if run.state == pb::RunState::Succeeded as i32 {
            return;
        }
        let state = pb::RunState::try_from(run.state).map_or("?".into(), |s| s.as_str_name().to_owned());
        let error = run.summary.as_ref().map(|s| s.error_message.clone()).unwrap_or_default();
        let mut why = format!("run {} ended {state}: {error}\n", run.run_id);
        if let Ok(Some((leader, _))) = self.leader().await
            && let Ok(mut c) = self.client(&leader).await
            && let Ok(full) = client::get(&mut c, &run.run_id, true).await
        {
            let failed: Vec<&pb::SubtaskStatus> =
                full.subtasks.iter().filter(|s| s.state != pb::SubtaskState::Succeeded as i32).collect();
            for s in failed.iter().take(20) {
                let state = pb::SubtaskState::try_from(s.state).map_or("?".into(), |s| s.as_str_name().to_owned());
                why += &format!("  {} {state} attempt {} on {}: {}\n", s.id, s.attempt, s.worker_id, s.error_message);
            }
            if failed.len() > 20 {
                why += &format!("  … and {} more\n", failed.len() - 20);
            }
        }
        panic!("{why}{}", self.logs());
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (p, _) in &self.coordinators {
            out += &format!("--- {} ---\n{}\n", p.name, tail(&p.log_text(), 40));
        }
        for p in &self.workers {
            out += &format!("--- {} ---\n{}\n", p.name, tail(&p.log_text(), 20));
        }
        out
    }
}

/// Writes the scripted model's script (`script.yaml`) and the append directory into `dir`.
/// Every agent: eight turns, each appending `call-{turn}` after 150 ms, then an answer.
/// `lead`: an orchestrator that starts six `helper`s, each appending four lines.
pub fn write_script(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("append"))?;
    let assigns: Vec<String> =
        (0..6).map(|i| format!("{{name: assign_task, arguments: {{subagent: helper, task: 'part {i}'}}}}")).collect();
    let script = format!(
        "agents:\n  '*':\n    - repeat: 8\n      tool_calls: [{{name: append, arguments: {{file: agent.log, text: 'call-{{turn}}', ms: 150}}}}]\n    - content: finished\n  lead:\n    - tool_calls: [{{name: create_subagent, arguments: {{name: helper, system_prompt: help, tools: [append]}}}}, {}]\n    - content: all done\n  helper:\n    - repeat: 4\n      tool_calls: [{{name: append, arguments: {{file: helpers.log, text: 'h-{{turn}}', ms: 300}}}}]\n    - content: helped\n",
        assigns.join(", ")
    );
    std::fs::write(dir.join("script.yaml"), script)?;
    Ok(())
}

/// The last `n` lines of a log, a run of lines that differ only in numbers and ids (a warning
/// for each of 40 attempts) kept as its first line and a count, so that one burst cannot hide
/// what came before it.
fn tail(text: &str, n: usize) -> String {
    let shape = |line: &str| -> String { line.chars().filter(|c| !c.is_ascii_digit()).collect() };
    let mut kept: Vec<(String, usize)> = Vec::new();
    let mut last_shape = String::new();
    for line in text.lines() {
        let s = shape(line);
        match kept.last_mut() {
            Some((_, count)) if s == last_shape => *count += 1,
            _ => kept.push((line.to_owned(), 1)),
        }
        last_shape = s;
    }
    kept[kept.len().saturating_sub(n)..]
        .iter()
        .map(
            |(line, count)| {
                if *count > 1 { format!("{line}\n  (and {} more like it)", count - 1) } else { line.clone() }
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1 planner → `chains` × `length` `append` calls of `ms` each (each appends its subtask id to
/// `file`) → 1 reducer.
pub fn append_swarm(chains: usize, length: usize, ms: u64, file: &str) -> RunSpec {
    let mut spec = swarm_cli::specs::swarm(chains, length, None);
    for s in &mut spec.subtasks {
        if s.id.as_str().starts_with("agent-") {
            s.kind = swarm_core::SubtaskKind::Tool {
                tool: "append".into(),
                args: json!({ "file": file, "text": s.id.to_string(), "ms": ms }),
            };
        }
    }
    spec
}

/// Lines the `append` tool appended to `file` in `dir`'s append directory (see [`write_script`]).
pub fn appended_in(dir: &std::path::Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("append").join(file)).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// The scripted orchestrator `lead` (see [`write_script`]): six `helper`s, four appends each,
/// granted the `append` tool.
pub fn lead() -> SubtaskSpec {
    SubtaskSpec {
        retry: None,
        outputs: Default::default(),
        id: "lead".into(),
        kind: swarm_core::SubtaskKind::Orchestrator(swarm_core::agent::OrchestratorSpec {
            goal: "get help".into(),
            model: "scripted".into(),
            tools: vec![],
            max_steps: None,
            subagent_tools: vec!["append".into()],
            subagent_models: vec![],
            subagent_artifacts: vec![],
            subagent_placement: None,
        }),
        depends_on: vec![],
        timeout: None,
        placement: None,
    }
}

/// A subtask for quick probes.
pub fn echo(id: &str) -> SubtaskSpec {
    SubtaskSpec::tool(id, "echo", json!({ "text": id }))
}
