//! Real etcd servers for tests: one node or a cluster on free loopback ports, each in its own
//! temp dir, killed by PID (SIGKILL) and cleaned up when dropped. A missing `etcd` binary fails
//! the test with a clear message (`scripts/test` installs Debian's etcd-server).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use swarm_store::{EtcdStore, StateStore};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn etcd_binary() -> anyhow::Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/local/bin"]) {
        let p = PathBuf::from(dir).join("etcd");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!("the `etcd` binary is not installed: run ./scripts/test (it installs Debian's etcd-server)")
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running etcd (one node or a cluster).
pub struct EtcdCluster {
    pub members: Vec<Member>,
    /// Extra flags of every member started from now on (`--quota-backend-bytes`, say).
    pub extra_args: Vec<String>,
    /// How clients reach it (TLS files, user; [`EtcdCluster::start_tls`]).
    pub security: swarm_store::EtcdSecurity,
    token: String,
    _root: TempDir,
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty dir under the system temp dir.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("swarm-{label}-{}-{:08x}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers (with a leader). Free ports are
    /// picked by binding port 0, which can race with other tests: a member that exits at once
    /// (port taken) or a cluster that does not come up is started again on new ports.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with(n, &[]).await
    }

    /// The same, with extra flags for every member.
    pub async fn start_with(n: usize, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_full(n, extra_args.iter().map(|a| a.to_string()).collect(), Default::default(), "http").await
    }

    /// One member serving clients over TLS with `server_cert`/`server_key` and requiring client
    /// certificates issued by `ca` (`--client-cert-auth`); `security` is how clients reach it.
    pub async fn start_tls(
        ca: &std::path::Path,
        server_cert: &std::path::Path,
        server_key: &std::path::Path,
        security: swarm_store::EtcdSecurity,
    ) -> anyhow::Result<Self> {
        let path = |p: &std::path::Path| p.display().to_string();
        let args = vec![
            "--cert-file".into(),
            path(server_cert),
            "--key-file".into(),
            path(server_key),
            "--trusted-ca-file".into(),
            path(ca),
            "--client-cert-auth".into(),
        ];
        Self::start_full(1, args, security, "https").await
    }

    async fn start_full(
        n: usize,
        extra_args: Vec<String>,
        security: swarm_store::EtcdSecurity,
        scheme: &'static str,
    ) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(n, extra_args.clone(), security.clone(), scheme).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    async fn try_start(
        n: usize,
        extra_args: Vec<String>,
        security: swarm_store::EtcdSecurity,
        scheme: &'static str,
    ) -> anyhow::Result<Self> {
        let root = TempDir::new("etcd")?;
        let token = format!("swarm-test-{:08x}", fastrand::u32(..));
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("n{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()?),
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                dir: root.0.join(format!("n{i}")),
                child: None,
            });
        }
        let mut cluster = Self { members, extra_args, security, token, _root: root };
        for i in 0..n {
            cluster.spawn(i, "new")?;
        }
        cluster.wait_ready(Duration::from_secs(15)).await?;
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) -> anyhow::Result<()> {
        let initial = self.initial_cluster();
        let m = &mut self.members[i];
        let child = Command::new(etcd_binary()?)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--log-level", "error", "--logger", "zap"])
            .args(["--auto-compaction-mode", "revision", "--auto-compaction-retention", "100000"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(m.dir.with_extension("log"))?))
            .spawn()
            .context("starting etcd")?;
        m.child = Some(child);
        Ok(())
    }

    /// How member `i` ended, if its process exited (not killed by [`Self::kill`]), with the tail
    /// of its log (errors only).
    pub fn exited(&mut self, i: usize) -> Option<String> {
        let m = &mut self.members[i];
        let status = m.child.as_mut()?.try_wait().ok()??;
        let log = std::fs::read_to_string(m.dir.with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Some(format!("{status}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
    }

    /// Client URLs of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Waits until a write succeeds.
    pub async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            for m in &mut self.members {
                if let Some(child) = m.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    m.child = None;
                    anyhow::bail!("etcd member {} exited at once ({status}); its port may be taken", m.name);
                }
            }
            if let Ok(store) = EtcdStore::connect_with(&self.endpoints(), Duration::from_secs(2), &self.security).await
                && store.commit(swarm_store::Txn::new().then(swarm_store::Op::put("/ready", "1"))).await.is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "etcd did not become ready within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the members answer a status request (a write may still be refused: the
    /// store may be full).
    pub async fn wait_ready_or_full(&self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < until {
            if let Ok(mut client) = etcd_client::Client::connect(self.endpoints(), None).await
                && client.status().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A store connected to every member.
    pub async fn store(&self) -> anyhow::Result<Arc<EtcdStore>> {
        Ok(Arc::new(EtcdStore::connect_with(&self.endpoints(), Duration::from_secs(5), &self.security).await?))
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Member `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(std::process::Child::id)
    }

    /// Sends member `i` a signal (`STOP`, `CONT`) by PID.
    pub fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let pid = self.members[i]
            .child
            .as_ref()
            .map(std::process::Child::id)
            .ok_or_else(|| anyhow::anyhow!("member {i} is not running"))?;
        let status = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
        Ok(())
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i, "existing")
    }

    /// The index of the current raft leader.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Ok(mut client) = etcd_client::Client::connect([m.client_url.as_str()], None).await else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status.leader() == status.header().map_or(0, |h| h.member_id())
            {
                return Ok(i);
            }
        }
        anyhow::bail!("no etcd leader")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
