//! The sandbox `exec` runs in: bubblewrap (`bwrap`) with new user, PID, IPC, UTS, cgroup and
//! network namespaces, a read-only view of the system's runtime (`/usr` and its symlinks,
//! the dynamic loader's cache), a private `/proc`, `/dev` and `/tmp`, the call's workspace
//! read-write at `/workspace` (the working directory), no environment but `PATH`, `HOME`,
//! `TMPDIR`, `LANG` and what the call sets, and uid/gid 65534 inside.
//!
//! Limits: wall time (the call's timeout, then the whole tree is killed), CPU seconds and file
//! size as rlimits set by a `sh` prelude inside (the sandbox cannot raise them), memory and
//! processes through cgroups (v2, or v1's `memory` and `pids` controllers) when the worker can
//! create groups, else memory as an address-space rlimit and no process cap; output bytes by
//! truncation. The tree is put into its groups before the command runs: the prelude waits for
//! a line on its stdin until every process of the tree has been moved; the call's stdin
//! follows that line. Killing the tree: every process of its groups (a PID
//! namespace's init dying takes the rest), and bwrap's own process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The uid and gid the command runs as inside.
const NOBODY: &str = "65534";

/// How limits on memory and processes are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v2, groups under this directory.
    V2(PathBuf),
    /// cgroup v1: the `memory` and `pids` hierarchies' directories for our groups.
    V1 { memory: PathBuf, pids: PathBuf },
    /// None writable: memory as an address-space rlimit, processes not capped.
    None,
}

/// Per-call limits (docs/agents.md, "exec").
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub wall: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub processes: u64,
    /// Per stream (stdout, stderr).
    pub output_bytes: usize,
    pub file_bytes: u64,
    pub workspace_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(60),
            cpu_seconds: 60,
            memory_bytes: 512 << 20,
            processes: 128,
            output_bytes: 1 << 20,
            file_bytes: 100 << 20,
            workspace_bytes: 1 << 30,
        }
    }
}

/// What ran and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Which streams were cut at the output limit.
    pub truncated: bool,
    /// The limit that stopped it: `wall`, `cpu`, `memory`, `processes`, `file_size`.
    pub limit: Option<&'static str>,
    pub duration: Duration,
}

/// A working bubblewrap, found and tried at start ([`Sandbox::probe`]).
#[derive(Clone, Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    pub cgroups: Cgroups,
    /// Where this worker's groups are created (unique per process).
    group_prefix: String,
}

/// The directories of `/` that are symlinks into `/usr` on a merged-`/usr` system (Debian 12),
/// or directories to bind read-only otherwise.
const ROOT_LINKS: &[&str] = &["bin", "sbin", "lib", "lib64", "lib32", "libx32"];

impl Sandbox {
    /// Finds `bwrap` on `PATH` and runs `true` in a sandbox like the calls' (without limits):
    /// the error says what is missing (bubblewrap; user namespaces; a refusal by AppArmor or a
    /// container's seccomp policy, with bwrap's own message).
    pub async fn probe() -> Result<Self, String> {
        let bwrap = find_in_path("bwrap").ok_or_else(|| {
            "bubblewrap (`bwrap`) is not installed: `apt-get install bubblewrap` (scripts/install-deps does)".to_owned()
        })?;
        let sandbox = Self {
            bwrap,
            cgroups: detect_cgroups(),
            group_prefix: format!("swarm-exec-{}-{:08x}", std::process::id(), fastrand::u32(..)),
        };
        // Per probe: probes run at once in one process (tests, several workers) must not share it.
        let dir =
            std::env::temp_dir().join(format!("swarm-exec-probe-{}-{:016x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let limits = Limits { wall: Duration::from_secs(10), ..Limits::default() };
        let outcome = sandbox
            .run(
                &["/bin/sh".into(), "-c".into(), "exit 0".into()],
                &[],
                b"",
                &dir,
                &limits,
                &CancellationToken::new(),
                None,
            )
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        match outcome {
            Ok(o) if o.exit_code == Some(0) => Ok(sandbox),
            Ok(o) => Err(format!(
                "bubblewrap cannot build a sandbox here (exit {:?}): {}; user namespaces may be off \
                 (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone) or refused by \
                 AppArmor (kernel.apparmor_restrict_unprivileged_userns) or a container's seccomp policy",
                o.exit_code,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(e),
        }
    }

    /// The prefix of the cgroups this sandbox creates (`swarm-exec-PID-RANDOM`).
    pub fn group_prefix(&self) -> &str {
        &self.group_prefix
    }

    /// Which limits are in force, for the worker's start message.
    pub fn describe(&self) -> &'static str {
        match self.cgroups {
            Cgroups::V2(_) => "memory and processes by cgroup v2; cpu, file size by rlimit",
            Cgroups::V1 { .. } => "memory and processes by cgroup v1; cpu, file size by rlimit",
            Cgroups::None => {
                "memory (address space), cpu, file size by rlimit; processes not capped (no writable cgroup)"
            }
        }
    }

    /// bwrap's arguments for a call in `workspace` running `argv` with `env`.
    fn args(
        &self,
        argv: &[String],
        env: &[(String, String)],
        workspace: &Path,
        limits: &Limits,
        proxy: Option<&Path>,
    ) -> Vec<String> {
        let mut a: Vec<String> = [
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            // No user namespace inside it: the kernel's largest attack surface for a process
            // without capabilities stays shut.
            "--disable-userns",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--unshare-net",
            "--uid",
            NOBODY,
            "--gid",
            NOBODY,
            "--hostname",
            "sandbox",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        .map(String::from)
        .to_vec();
        for dir in ROOT_LINKS {
            let host = Path::new("/").join(dir);
            match std::fs::read_link(&host) {
                Ok(target) => a.extend(["--symlink".into(), target.display().to_string(), host.display().to_string()]),
                Err(_) if host.is_dir() => {
                    a.extend(["--ro-bind".into(), host.display().to_string(), host.display().to_string()])
                }
                Err(_) => {}
            }
        }
        for file in ["/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"] {
            a.extend(["--ro-bind-try".into(), file.into(), file.into()]);
        }
        a.extend(["--proc", "/proc", "--dev", "/dev", "--size", "67108864", "--tmpfs", "/tmp"].map(String::from));
        a.extend(["--bind".into(), workspace.display().to_string(), "/workspace".into()]);
        // The dependencies' artifacts: read-only, over the read-write workspace.
        let inputs = workspace.join(swarm_core::artifact::INPUTS_DIR);
        if inputs.is_dir() {
            a.extend(["--ro-bind".into(), inputs.display().to_string(), "/workspace/inputs".into()]);
        }
        if let Some(socket) = proxy {
            a.extend(["--bind".into(), socket.display().to_string(), super::proxy::SOCKET_IN_SANDBOX.into()]);
        }
        a.extend(["--chdir", "/workspace", "--clearenv"].map(String::from));
        let base =
            [("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/workspace"), ("TMPDIR", "/tmp"), ("LANG", "C.UTF-8")];
        for (k, v) in base.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(env.iter().cloned()) {
            a.extend(["--setenv".into(), k, v]);
        }
        if proxy.is_some() {
            for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                a.extend(["--setenv".into(), k.into(), super::proxy::PROXY_URL.into()]);
            }
            a.extend(["--setenv".into(), "SWARM_PROXY_FORWARDER".into(), super::proxy::FORWARDER.into()]);
        }
        a.push("--".into());
        // The prelude: rlimits the sandbox cannot raise (dash counts file size in 512-byte
        // blocks, address space in KiB), then the command.
        // CPU: SIGXCPU at the soft limit (told as `cpu`), SIGKILL a second later.
        let cpu = limits.cpu_seconds.max(1);
        let mut prelude = format!(
            "ulimit -S -t {cpu} && ulimit -H -t {} && ulimit -f {}",
            cpu + 1,
            limits.file_bytes.div_ceil(512).max(1)
        );
        if self.cgroups == Cgroups::None {
            prelude += &format!(" && ulimit -v {}", (limits.memory_bytes / 1024).max(1024));
        }
        // Held until the worker has moved the tree into its groups and sends a line (dash reads
        // a pipe byte by byte: the call's stdin after it is left whole).
        prelude += " && read -r _";
        if proxy.is_some() {
            // The forwarder starts inside the call's groups, and the command once it listens.
            prelude += " && { python3 -c \"$SWARM_PROXY_FORWARDER\" </dev/null >/dev/null 2>&1 & } \
                        && i=0 && while [ ! -e /tmp/.swarm-proxy-ready ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done \
                        && unset SWARM_PROXY_FORWARDER";
        }
        prelude += " && exec \"$@\"";
        a.extend(["/bin/sh".into(), "-c".into(), prelude, "sh".into()]);
        a.extend(argv.iter().cloned());
        a
    }

    /// Runs `argv` in the sandbox with `stdin`, in `workspace`, under `limits`; ends it (the
    /// whole tree) at the wall limit or when `cancel` fires. An error is the sandbox's own
    /// failure (it could not start), never the command's. With `proxy`, network goes through the
    /// proxy at that socket ([`super::proxy`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: &[u8],
        workspace: &Path,
        limits: &Limits,
        cancel: &CancellationToken,
        proxy: Option<&Path>,
    ) -> Result<Outcome, String> {
        let started = Instant::now();
        // With cgroups, a call whose groups cannot be made does not run without its limits.
        let group = match &self.cgroups {
            Cgroups::None => None,
            c => Some(
                Group::create(c, &format!("{}-{:016x}", self.group_prefix, fastrand::u64(..)), limits)
                    .ok_or("cannot create the call's cgroups (its memory and process limits)")?,
            ),
        };
        let mut child = tokio::process::Command::new(&self.bwrap)
            .args(self.args(argv, env, workspace, limits, proxy))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting bwrap: {e}"))?;
        let pid = child.id();
        // bwrap sets the namespaces up; the prelude inside waits for a line on stdin: move the
        // tree into the groups, then release it.
        if let (Some(group), Some(pid)) = (&group, pid) {
            group.adopt_tree(pid);
        }
        let mut input = child.stdin.take().ok_or("bwrap's stdin")?;
        let stdin = stdin.to_vec();
        let feed = tokio::spawn(async move {
            let _ = input.write_all(b"go\n").await;
            let _ = input.write_all(&stdin).await;
        });
        let (mut out, mut err) =
            (child.stdout.take().ok_or("bwrap's stdout")?, child.stderr.take().ok_or("bwrap's stderr")?);
        let cap = limits.output_bytes;
        let read_out = tokio::spawn(async move { read_capped(&mut out, cap).await });
        let read_err = tokio::spawn(async move { read_capped(&mut err, cap).await });
        let mut limit = None;
        let status = tokio::select! {
            status = child.wait() => status.ok(),
            () = tokio::time::sleep(limits.wall) => { limit = Some("wall"); None }
            () = cancel.cancelled() => None,
        };
        // Whatever ended it, nothing of the tree outlives the call (a double-forked daemon
        // included: it is in the groups, and in the PID namespace whose init is gone). Killed
        // here, before the output is read to its end: a daemon holding stdout open would
        // otherwise keep the readers waiting (`Group`'s `Drop` covers a dropped future).
        if let Some(group) = &group {
            group.kill_all();
        }
        let _ = child.start_kill();
        let status = match status {
            Some(s) => Some(s),
            None => child.wait().await.ok(),
        };
        feed.abort();
        let ((stdout, t1), (stderr, t2)) = (read_out.await.unwrap_or_default(), read_err.await.unwrap_or_default());
        use std::os::unix::process::ExitStatusExt;
        let (exit_code, signal) = match status {
            Some(s) => (s.code(), s.signal()),
            None => (None, Some(9)),
        };
        if limit.is_none() {
            limit = group.as_ref().and_then(Group::limit_hit).or(match (exit_code, signal) {
                // The prelude's shell exec'd the command, and bwrap reports its end as an exit
                // code of 128 + signal.
                (Some(code), _) if code == 128 + 24 => Some("cpu"),
                (Some(code), _) if code == 128 + 25 => Some("file_size"),
                _ => None,
            });
        }
        drop(group); // removed (see `Group`'s `Drop`)
        Ok(Outcome { exit_code, signal, stdout, stderr, truncated: t1 || t2, limit, duration: started.elapsed() })
    }
}

/// Reads all of `r`, keeping the first `cap` bytes; whether more came.
async fn read_capped(r: &mut (impl AsyncReadExt + Unpin), cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut more = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, more),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                more |= n > room;
            }
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// cgroup v2 if its root lists the `memory` and `pids` controllers and we can make a group;
/// else v1's `memory` and `pids` hierarchies if we can make groups there; else none.
fn detect_cgroups() -> Cgroups {
    let root = Path::new("/sys/fs/cgroup");
    let writable = |dir: &Path| {
        let probe = dir.join(format!("swarm-probe-{}", std::process::id()));
        let ok = std::fs::create_dir(&probe).is_ok();
        let _ = std::fs::remove_dir(&probe);
        ok
    };
    if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers"))
        && controllers.split_whitespace().any(|c| c == "memory")
        && controllers.split_whitespace().any(|c| c == "pids")
    {
        // Our own group's parent must delegate them: create ours beside the worker's group.
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").trim_start_matches('/');
        let parent = root.join(rel).parent().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
        if writable(&parent) {
            return Cgroups::V2(parent);
        }
    }
    let (memory, pids) = (root.join("memory"), root.join("pids"));
    if memory.join("cgroup.procs").exists()
        && pids.join("cgroup.procs").exists()
        && writable(&memory)
        && writable(&pids)
    {
        return Cgroups::V1 { memory, pids };
    }
    Cgroups::None
}

/// The groups of one call.
struct Group {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Group {
    /// Creates the call's groups with `limits` (none when cgroups are off or creation fails).
    fn create(cgroups: &Cgroups, name: &str, limits: &Limits) -> Option<Self> {
        let write = |dir: &Path, file: &str, value: String| std::fs::write(dir.join(file), value).is_ok();
        match cgroups {
            Cgroups::None => None,
            Cgroups::V2(parent) => {
                let dir = parent.join(name);
                std::fs::create_dir(&dir).ok()?;
                let ok = write(&dir, "memory.max", limits.memory_bytes.to_string())
                    && write(&dir, "pids.max", limits.processes.to_string());
                let _ = write(&dir, "memory.swap.max", "0".into());
                let group = Self { dirs: vec![dir], v2: true };
                ok.then_some(group)
            }
            Cgroups::V1 { memory, pids } => {
                let (m, p) = (memory.join(name), pids.join(name));
                // Each directory is owned (removed on drop) from the moment it exists.
                let mut group = Self { dirs: Vec::new(), v2: false };
                std::fs::create_dir(&m).ok()?;
                group.dirs.push(m.clone());
                std::fs::create_dir(&p).ok()?;
                group.dirs.push(p.clone());
                let ok = write(&m, "memory.limit_in_bytes", limits.memory_bytes.to_string())
                    && write(&p, "pids.max", limits.processes.to_string());
                let _ = write(&m, "memory.memsw.limit_in_bytes", limits.memory_bytes.to_string());
                ok.then_some(group)
            }
        }
    }

    /// Moves `pid` and its descendants into every group.
    fn adopt_tree(&self, pid: u32) {
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            for dir in &self.dirs {
                let _ = std::fs::write(dir.join("cgroup.procs"), p.to_string());
            }
            let tasks = std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten();
            for task in tasks {
                let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                todo.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }

    /// SIGKILLs every process in the groups until none is left (bounded: a fork bomb is capped
    /// by `pids.max`).
    fn kill_all(&self) {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..100 {
            let pids: Vec<String> = self
                .dirs
                .iter()
                .flat_map(|d| {
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            if pids.is_empty() {
                return;
            }
            let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).stderr(Stdio::null()).status();
        }
    }

    /// The cgroup limit the call ran into, if any.
    fn limit_hit(&self) -> Option<&'static str> {
        let read =
            |file: &str| self.dirs.iter().find_map(|d| std::fs::read_to_string(d.join(file)).ok()).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok()).unwrap_or(0)
        };
        if self.v2 {
            let memory = read("memory.events");
            if field(&memory, "oom_kill ") > 0 || field(&memory, "max ") > 0 && field(&memory, "oom ") > 0 {
                return Some("memory");
            }
            if field(&read("pids.events"), "max ") > 0 {
                return Some("processes");
            }
            return None;
        }
        if read("memory.failcnt").trim().parse::<u64>().unwrap_or(0) > 0 {
            return Some("memory");
        }
        if field(&read("pids.events"), "max ") > 0 {
            return Some("processes");
        }
        None
    }
}

/// However the call ends — returned, or its future dropped (the worker drops a cancelled or
/// timed-out call's future): every process of the groups is killed, and the groups removed
/// once their last process is reaped (on a thread of their own: that takes a moment).
impl Drop for Group {
    fn drop(&mut self) {
        self.kill_all();
        let dirs = std::mem::take(&mut self.dirs);
        std::thread::spawn(move || {
            for dir in &dirs {
                for _ in 0..250 {
                    if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
    }
}
