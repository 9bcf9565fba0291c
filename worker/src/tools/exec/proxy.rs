//! Network for an `exec` call that the run spec opened (`network: true`), and only through the
//! worker's egress policy (the one that guards `http_get`): the sandbox keeps its own network
//! namespace, with nothing but loopback; an HTTP proxy on a Unix socket, bound into the
//! sandbox, is its one way out. A small forwarder inside (started by the prelude) listens on
//! `127.0.0.1:3128` and relays to that socket; `HTTP_PROXY`/`HTTPS_PROXY` point at it.
//!
//! The proxy takes `CONNECT host:port` (TLS passes through) and absolute-form requests
//! (`GET http://host/…`), resolves the host itself and connects only to addresses the policy
//! permits (internal ranges are refused unless `--allow-egress` lists them): a refusal is a
//! `403` naming the host and address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::tools::egress::{EgressPolicy, screen};

/// Where the proxy's socket appears inside the sandbox.
pub const SOCKET_IN_SANDBOX: &str = "/run/swarm-proxy.sock";
/// The forwarder's address inside the sandbox.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
/// The longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

/// The forwarder run inside the sandbox (Python, which the sandbox has for `lang: python`):
/// listens on 127.0.0.1:3128, relays each connection to the proxy's socket, and marks itself
/// ready once it listens.
pub const FORWARDER: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 3128)); s.listen(64)
open("/tmp/.swarm-proxy-ready", "w").close()
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
while True:
    c, _ = s.accept()
    u = socket.socket(socket.AF_UNIX); u.connect("/run/swarm-proxy.sock")
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"#;

/// One call's proxy: serves until dropped (then its socket is removed).
pub struct Proxy {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a new socket in `dir`, under `policy`.
    pub fn start(dir: &Path, policy: Arc<EgressPolicy>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("proxy-{:016x}.sock", fastrand::u64(..)));
        let listener = UnixListener::bind(&path)?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let policy = policy.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, &policy).await;
                });
            }
        });
        Ok(Self { path, task })
    }

    /// The socket's path on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where a request goes, and what to send there first.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// `CONNECT`: answer 200 and relay; otherwise the head to send upstream (origin-form).
    tunnel: bool,
}

/// Parses a proxy request's first line; returns the target and, for a plain request, the
/// line rewritten to origin form.
fn target(line: &str) -> Result<(Target, Option<String>), String> {
    let mut parts = line.split_whitespace();
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not an HTTP request".into());
    };
    let host_port = |hp: &str, default: u16| -> Result<(String, u16), String> {
        let (host, port) = match hp.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hp.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port in `{hp}`"))?)
            }
            _ => (hp, default),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok((host.to_owned(), port))
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = host_port(uri, 443)?;
        return Ok((Target { host, port, tunnel: true }, None));
    }
    let rest = uri.strip_prefix("http://").ok_or("only http:// URLs and CONNECT (for https) go through the proxy")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = host_port(authority, 80)?;
    Ok((Target { host, port, tunnel: false }, Some(format!("{method} {path} {version}"))))
}

async fn refuse(stream: &mut UnixStream, status: &str, why: &str) -> std::io::Result<()> {
    let body = format!("{why}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}

async fn handle(mut stream: UnixStream, policy: &EgressPolicy) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return refuse(&mut stream, "431 Request Header Fields Too Large", "the request head is too long").await;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let (first, rest_of_head) = text.split_once("\r\n").unwrap_or((&text, ""));
    let (target, rewritten) = match target(first) {
        Ok(t) => t,
        Err(why) => return refuse(&mut stream, "400 Bad Request", &why).await,
    };
    let addrs = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
        Ok(a) => a.collect(),
        Err(e) => return refuse(&mut stream, "502 Bad Gateway", &format!("cannot resolve {}: {e}", target.host)).await,
    };
    let addrs = match screen(policy, &target.host, addrs) {
        Ok(a) => a,
        Err(refused) => return refuse(&mut stream, "403 Forbidden", &refused.to_string()).await,
    };
    let mut upstream = None;
    for addr in addrs {
        if let Ok(s) = TcpStream::connect(addr).await {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        return refuse(&mut stream, "502 Bad Gateway", &format!("cannot connect to {}:{}", target.host, target.port))
            .await;
    };
    match rewritten {
        None => stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?,
        Some(line) => {
            upstream.write_all(format!("{line}\r\n{rest_of_head}").as_bytes()).await?;
        }
    }
    // What came after the head (a request body, or TLS bytes sent early).
    upstream.write_all(&head[end..]).await?;
    tokio::io::copy_bidirectional(&mut stream, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_name_their_target() {
        let t = |line| target(line).map(|(t, r)| (t.host, t.port, t.tunnel, r));
        assert_eq!(t("CONNECT example.com:443 HTTP/1.1"), Ok(("example.com".into(), 443, true, None)));
        assert_eq!(t("CONNECT [::1]:8443 HTTP/1.1"), Ok(("::1".into(), 8443, true, None)));
        assert_eq!(
            t("GET http://10.0.0.1:8080/a?b=1 HTTP/1.1"),
            Ok(("10.0.0.1".into(), 8080, false, Some("GET /a?b=1 HTTP/1.1".into())))
        );
        assert_eq!(t("GET http://h HTTP/1.0"), Ok(("h".into(), 80, false, Some("GET / HTTP/1.0".into()))));
        assert!(t("GET https://h/ HTTP/1.1").is_err());
        assert!(t("GET /local HTTP/1.1").is_err());
        assert!(t("CONNECT :443 HTTP/1.1").is_err());
        assert!(t("CONNECT h:99999 HTTP/1.1").is_err());
        assert!(t("garbage").is_err());
    }
}
