//! Built-in tools: `sleep`, `echo`, `http_get` and `flaky`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::egress::EgressPolicy;
use super::{Tool, ToolContext, ToolError, ToolFuture, ToolInfo, arg_f64_or, arg_str, arg_u64};

fn info(name: &str, description: &str, read_only: bool, idempotent: bool, timeout: Option<Duration>) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into(), read_only, idempotent, timeout }
}

/// `sleep {ms, straggler_prob?, straggler_mult?}`: waits `ms` milliseconds. With
/// `straggler_prob` p, each *attempt* independently takes `straggler_mult` (default 10) times
/// as long with probability p, to model stragglers.
pub struct Sleep(ToolInfo);

impl Sleep {
    /// The tool.
    pub fn new() -> Self {
        Self(info("sleep", "Waits for `ms` milliseconds.", true, true, None))
    }
}

impl Default for Sleep {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for Sleep {
    fn info(&self) -> &ToolInfo {
        &self.0
    }

    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let ms = arg_u64(&args, "ms")?;
            let prob = arg_f64_or(&args, "straggler_prob", 0.0)?;
            let mult = arg_f64_or(&args, "straggler_mult", 10.0)?;
            if !((0.0..=1.0).contains(&prob) && mult.is_finite() && mult >= 0.0) {
                return Err(ToolError::permanent("args.straggler_prob must be in [0, 1], straggler_mult ≥ 0"));
            }
            let straggler = prob > 0.0 && fastrand::f64() < prob;
            let total = if straggler { (ms as f64 * mult) as u64 } else { ms };
            if total > 0 {
                tokio::time::sleep(Duration::from_millis(total)).await;
            }
            Ok(json!({ "slept_ms": total, "straggler": straggler }))
        })
    }
}

/// `echo {text}`: returns the text.
pub struct Echo(ToolInfo);

impl Echo {
    /// The tool.
    pub fn new() -> Self {
        Self(info("echo", "Returns `text` unchanged (or `repeat` times over).", true, true, None))
    }
}

impl Default for Echo {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for Echo {
    fn info(&self) -> &ToolInfo {
        &self.0
    }

    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        let text = arg_str(&args, "text").map(str::to_owned);
        let repeat = match args.get("repeat") {
            None => Ok(1),
            Some(v) => {
                v.as_u64().filter(|&n| n >= 1).ok_or_else(|| ToolError::permanent("args.repeat must be an integer ≥ 1"))
            }
        };
        Box::pin(async move {
            let (text, repeat) = (text?, repeat?);
            // Outputs of sizes chosen by the spec (benchmarks, memory tests), within the limit.
            let len = (text.len() as u64).saturating_mul(repeat);
            if len > crate::MAX_OUTPUT_BYTES as u64 {
                return Err(ToolError::permanent(format!(
                    "{len} bytes exceed the output limit of {} bytes",
                    crate::MAX_OUTPUT_BYTES
                )));
            }
            Ok(json!({ "text": text.repeat(repeat as usize) }))
        })
    }
}

/// `flaky {fail_times, ms?, fail_ms?}`: fails its first `fail_times` attempts (transiently),
/// then succeeds; a succeeding attempt first waits `ms`, a failing one `fail_ms` (default `ms`:
/// a quick 503 is `fail_ms: 0`). For tests, demos and benchmarks of retries.
pub struct Flaky(ToolInfo);

impl Flaky {
    /// The tool.
    pub fn new() -> Self {
        Self(info("flaky", "Fails the first `fail_times` attempts, then succeeds.", true, true, None))
    }
}

impl Default for Flaky {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for Flaky {
    fn info(&self) -> &ToolInfo {
        &self.0
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let fail_times = arg_u64(&args, "fail_times")?;
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
            let fails = u64::from(ctx.attempt) <= fail_times;
            let wait = if fails { args.get("fail_ms").and_then(Value::as_u64).unwrap_or(ms) } else { ms };
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait.min(24 * 3600 * 1000))).await;
            }
            if fails {
                return Err(ToolError::transient(format!(
                    "flaky: attempt {} of {fail_times} planned failures",
                    ctx.attempt
                )));
            }
            Ok(json!({ "attempt": ctx.attempt }))
        })
    }
}

/// Default cap on the body `http_get` returns.
const HTTP_DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// Hard cap on `max_bytes`.
const HTTP_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// `http_get {url, max_bytes?, timeout_ms?}`: fetches a URL (http or https) and returns
/// `{status, content_type, body, truncated}`. The body is cut at `max_bytes` (default 1 MiB,
/// at most 10 MiB); the request gives up after `timeout_ms` (default 10 s). 5xx and 429 are
/// transient failures; connection errors too.
pub struct HttpGet {
    info: ToolInfo,
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl HttpGet {
    /// The tool, with its own connection pool, reaching public addresses only.
    pub fn new() -> Self {
        Self::with_policy(Arc::new(EgressPolicy::public_only()))
    }

    /// The tool under an egress policy (see [`super::egress`]).
    pub fn with_policy(policy: Arc<EgressPolicy>) -> Self {
        // Installing the ring provider twice is harmless; the first install wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("swarm-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(super::egress::CheckedResolver(policy.clone(), None)))
            .redirect(super::egress::redirects(policy.clone()))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            info: info("http_get", "Fetches a URL with HTTP GET.", true, true, Some(Duration::from_secs(30))),
            client,
            policy,
        }
    }
}

impl Default for HttpGet {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for HttpGet {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        let client = self.client.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let url = arg_str(&args, "url")?;
            let parsed = reqwest::Url::parse(url).map_err(|e| ToolError::permanent(format!("args.url: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ToolError::permanent("args.url: only http and https are supported"));
            }
            if let Some(why) = super::egress::refused_literal(&policy, &parsed) {
                return Err(ToolError::permanent(why));
            }
            let max =
                args.get("max_bytes").and_then(Value::as_u64).unwrap_or(HTTP_DEFAULT_MAX_BYTES).min(HTTP_MAX_BYTES);
            let timeout = Duration::from_millis(args.get("timeout_ms").and_then(Value::as_u64).unwrap_or(10_000));
            let fetch = async {
                let mut resp = client.get(parsed).send().await.map_err(|e| match super::egress::refusal_in(&e) {
                    // Refused by policy: permanent, and said without the URL's query.
                    Some(why) => ToolError::permanent(why),
                    None => ToolError::transient(format!("request failed: {}", e.without_url())),
                })?;
                let status = resp.status();
                let content_type = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let mut body = Vec::new();
                let mut truncated = false;
                while let Some(chunk) =
                    resp.chunk().await.map_err(|e| ToolError::transient(format!("reading body: {e}")))?
                {
                    let room = (max as usize).saturating_sub(body.len());
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                if status.is_server_error() || status.as_u16() == 429 {
                    return Err(ToolError::transient(format!("HTTP {status}")));
                }
                Ok(json!({
                    "status": status.as_u16(),
                    "content_type": content_type,
                    "body": String::from_utf8_lossy(&body),
                    "truncated": truncated,
                }))
            };
            tokio::time::timeout(timeout, fetch).await.map_err(|_| ToolError {
                kind: swarm_core::FailureKind::Timeout,
                message: format!("no answer within {} ms", timeout.as_millis()),
            })?
        })
    }
}

/// `append {file, text, ms?, stamp?}`: waits `ms`, then appends `text` and a newline to `file`
/// in the worker's append directory (a plain file name; no paths); with `stamp: true` the line
/// ends ` attempt=N`, naming the attempt that wrote it (the nemesis attributes effects). Side-effecting: neither read-only
/// nor idempotent. Only offered when the worker is given a directory (`--append-dir`).
pub struct Append {
    info: ToolInfo,
    dir: std::path::PathBuf,
}

impl Append {
    /// The tool, writing under `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            info: info("append", "Appends a line to a file in the worker's append directory.", false, false, None),
            dir: dir.into(),
        }
    }
}

impl Tool for Append {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        let dir = self.dir.clone();
        Box::pin(async move {
            let file = arg_str(&args, "file")?;
            let text = arg_str(&args, "text")?;
            if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
                return Err(ToolError::permanent("args.file: a plain file name (no paths, not hidden)"));
            }
            if text.contains('\n') {
                return Err(ToolError::permanent("args.text: one line (no newline)"));
            }
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
            let line = match args.get("stamp").and_then(Value::as_bool) {
                Some(true) => format!("{text} attempt={}\n", ctx.attempt),
                _ => format!("{text}\n"),
            };
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            // The side effect happens only while the attempt is still this worker's.
            if !ctx.may_act() {
                return Err(ToolError {
                    kind: swarm_core::FailureKind::Cancelled,
                    message: "cancelled before appending".into(),
                });
            }
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(file))
                .await
                .map_err(|e| ToolError::transient(format!("opening {file}: {e}")))?;
            f.write_all(line.as_bytes()).await.map_err(|e| ToolError::transient(format!("writing {file}: {e}")))?;
            // tokio's File hands writes to a blocking thread: without this flush the call could
            // report success while the line is still in a buffer, and a worker killed at that
            // moment would lose a write it had reported (the run would not run it again).
            f.flush().await.map_err(|e| ToolError::transient(format!("writing {file}: {e}")))?;
            Ok(json!({ "appended": text }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(attempt: u32) -> ToolContext {
        ToolContext {
            run_id: "r".into(),
            subtask_id: "s".into(),
            attempt,
            cancel: CancellationToken::new(),
            hold: None,
        }
    }

    #[tokio::test]
    async fn flaky_fails_the_planned_attempts() {
        let t = Flaky::new();
        assert!(t.call(json!({"fail_times": 2}), ctx(1)).await.is_err());
        assert!(t.call(json!({"fail_times": 2}), ctx(2)).await.is_err());
        assert_eq!(t.call(json!({"fail_times": 2}), ctx(3)).await, Ok(json!({"attempt": 3})));
    }

    #[tokio::test]
    async fn bad_arguments_are_permanent_errors() {
        let err = Echo::new().call(json!({}), ctx(1)).await.expect_err("no text");
        assert_eq!(err, ToolError::permanent("args.text: required string"));
        let err = Sleep::new().call(json!({"ms": -1}), ctx(1)).await.expect_err("negative");
        assert_eq!(err.kind, swarm_core::FailureKind::Permanent);
        let err = HttpGet::new().call(json!({"url": "file:///etc/passwd"}), ctx(1)).await.expect_err("scheme");
        assert_eq!(err.kind, swarm_core::FailureKind::Permanent);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_and_stragglers_stretch() {
        let t0 = tokio::time::Instant::now();
        Sleep::new().call(json!({"ms": 40}), ctx(1)).await.expect("sleeps");
        assert_eq!(t0.elapsed(), Duration::from_millis(40));
        let out = Sleep::new()
            .call(json!({"ms": 10, "straggler_prob": 1.0, "straggler_mult": 5}), ctx(1))
            .await
            .expect("sleeps");
        assert_eq!(out, json!({"slept_ms": 50, "straggler": true}));
    }

    #[tokio::test]
    async fn http_get_caps_the_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let body = "x".repeat(5000);
            let resp =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            sock.write_all(resp.as_bytes()).await.expect("write");
        });
        let out = HttpGet::with_policy(Arc::new(EgressPolicy::allow_all()))
            .call(json!({"url": format!("http://{addr}/"), "max_bytes": 100}), ctx(1))
            .await
            .expect("fetched");
        assert_eq!(out["status"], 200);
        assert_eq!(out["truncated"], true);
        assert_eq!(out["body"].as_str().map(str::len), Some(100));
        server.await.expect("server");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_that_reported_success_is_in_the_file() {
        let dir = std::env::temp_dir().join(format!("swarm-append-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let tool = Append::new(&dir);
        for i in 0..200 {
            let text = format!("line-{i}");
            tool.call(json!({"file": "a.log", "text": text}), ctx(1)).await.expect("appended");
            // Read at once, with no wait for background writes: the reported line must be there.
            let body = std::fs::read_to_string(dir.join("a.log")).expect("read");
            assert_eq!(body.lines().count(), i + 1, "line {i} was reported before it was written");
        }
        tool.call(json!({"file": "s.log", "text": "x", "stamp": true}), ctx(3)).await.expect("appended");
        assert_eq!(std::fs::read_to_string(dir.join("s.log")).expect("read"), "x attempt=3\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn an_append_whose_lease_hold_lapsed_while_it_waited_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("swarm-append-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let tool = Append::new(&dir);
        let hold = std::sync::Arc::new(crate::hold::LeaseHold::new(Duration::from_secs(2), 0.0, Duration::ZERO));
        hold.renewed(tokio::time::Instant::now());
        let held = ToolContext { hold: Some(hold.clone()), ..ctx(1) };
        // Waits 3 s, past the 2 s hold (as a worker frozen and thawed would find it).
        let err = tool.call(json!({"file": "h.log", "text": "x", "ms": 3000}), held).await.expect_err("refused");
        assert_eq!(err.kind, swarm_core::FailureKind::Cancelled);
        assert!(!dir.join("h.log").exists(), "appended after the hold lapsed");
        hold.renewed(tokio::time::Instant::now());
        let held = ToolContext { hold: Some(hold), ..ctx(1) };
        tool.call(json!({"file": "h.log", "text": "y"}), held).await.expect("appended while held");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod egress_tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::tools::ToolContext;

    fn ctx() -> ToolContext {
        ToolContext {
            run_id: "r".into(),
            subtask_id: "s".into(),
            attempt: 1,
            cancel: tokio_util::sync::CancellationToken::new(),
            hold: None,
        }
    }

    async fn refusal(tool: &HttpGet, url: &str) -> ToolError {
        tool.call(json!({"url": url}), ctx()).await.expect_err("refused")
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_by_literal_name_and_redirect() {
        let tool = HttpGet::new();
        let mut urls = vec![
            "http://127.0.0.1:9/x?token=secret",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9/",
            "http://[::ffff:10.0.0.1]/",
        ];
        // A name through the resolver, where the system resolves `localhost` (a minimal root
        // may not; `egress::screen`'s own test covers names without DNS).
        if tokio::net::lookup_host("localhost:9").await.is_ok_and(|mut a| a.all(|a| a.ip().is_loopback())) {
            urls.push("http://localhost:9/?token=secret");
        }
        for url in urls {
            let e = refusal(&tool, url).await;
            assert_eq!(e.kind, swarm_core::FailureKind::Permanent, "{url}: {e:?}");
            assert!(e.message.contains("egress policy"), "{url}: {}", e.message);
            assert!(!e.message.contains("secret"), "no query string in the message: {}", e.message);
        }
        // A server the operator opened (127.0.0.1) redirects to one it did not (127.0.0.2).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let resp =
                format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.2:{port}/inside\r\ncontent-length: 0\r\n\r\n");
            sock.write_all(resp.as_bytes()).await.expect("write");
        });
        let opened = EgressPolicy { allow: vec!["127.0.0.1".parse().expect("cidr")] };
        let tool = HttpGet::with_policy(Arc::new(opened));
        let e = refusal(&tool, &format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(e.kind, swarm_core::FailureKind::Permanent, "{e:?}");
        assert!(e.message.contains("127.0.0.2") && e.message.contains("egress policy"), "{}", e.message);
        server.await.expect("server");
    }
}
