//! Server TLS for the API and the web view: certificates read from PEM files and reloaded when
//! the files change (no restart), client certificates required when a client CA is given
//! (mTLS), and one accepted-connection stream that may mix TLS and plaintext listeners (`swarm
//! up` serves its in-process workers on a private loopback one).
//!
//! Handshakes run off the accept loop, at most [`MAX_HANDSHAKES`] at once and each for at most
//! [`HANDSHAKE_TIMEOUT`], so a client that opens a socket and says nothing holds no one up.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once per listener; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;

/// Where a server's certificate, key and (for mTLS) client CA are (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, clients must present a certificate this CA (bundle, PEM) issued.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM, one or more) checked against client certificates'
    /// serial numbers (`--tls-crl`; `swarm certs --revoke` writes one); reloaded like the rest.
    pub crl: Option<PathBuf>,
}

/// A server TLS configuration that follows its files: [`ServerTls::watch`] rebuilds it when
/// any of them changes; a change that does not load (a half-copied key) is logged and the
/// last good configuration kept. Clones (and the [`ServerTls::http`] view) share the reloads.
#[derive(Clone)]
pub struct ServerTls {
    shared: Arc<Shared>,
    /// The web view's configuration (HTTP/1.1) rather than the API's (h2).
    http: bool,
}

struct Shared {
    files: TlsFiles,
    /// The API's configuration (ALPN h2, client certificates if configured) and the web view's.
    current: RwLock<(Arc<ServerConfig>, Arc<ServerConfig>)>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.shared.files).field("http", &self.http).finish()
    }
}

impl ServerTls {
    /// Loads the files for a gRPC server (ALPN `h2`); errors name the file at fault.
    pub fn grpc(files: TlsFiles) -> anyhow::Result<Self> {
        let current = RwLock::new(build_both(&files)?);
        let shared = Shared { files, current, generation: tokio::sync::watch::channel(0).0 };
        Ok(Self { shared: Arc::new(shared), http: false })
    }

    /// The same certificate for an HTTP/1.1 server (the web view), behind the same mTLS as the
    /// API: with a client CA, a browser (or script) presents a certificate of that CA, which
    /// may stand for a principal as on the API; tokens work there too.
    pub fn http(&self) -> Self {
        Self { shared: self.shared.clone(), http: true }
    }

    /// Counts reloads (tests await a change instead of sleeping).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Reloads now if the files load; the configuration in use is kept otherwise.
    pub fn reload(&self) -> anyhow::Result<()> {
        let both = build_both(&self.shared.files)?;
        *self.shared.current.write().unwrap_or_else(|p| p.into_inner()) = both;
        self.shared.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Checks the files every `every` until `shutdown`, reloading when one changed (its
    /// modification time or length). New connections get the new certificate; open ones
    /// keep theirs.
    pub fn watch(&self, every: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut seen = this.stamp();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let now = this.stamp();
                if now == seen {
                    continue;
                }
                match this.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %this.shared.files.cert.display(), "TLS certificates reloaded");
                        seen = now;
                    }
                    // Tried again at the next check (the files may still be being written).
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; keeping the last good ones")
                    }
                }
            }
        })
    }

    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        let f = &self.shared.files;
        [Some(&f.cert), Some(&f.key), f.client_ca.as_ref(), f.crl.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.shared.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(if self.http { current.1.clone() } else { current.0.clone() })
    }
}

fn build_both(files: &TlsFiles) -> anyhow::Result<(Arc<ServerConfig>, Arc<ServerConfig>)> {
    let grpc = build(files, &[b"h2".to_vec()])?;
    let web = build(files, &[b"http/1.1".to_vec()])?;
    Ok((Arc::new(grpc), Arc::new(web)))
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{what} {}: no PEM certificate in it", path.display());
    Ok(certs)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(path) = &files.crl {
                let crls = rustls::pki_types::CertificateRevocationListDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| anyhow::anyhow!("--tls-crl {}: {e}", path.display()))?;
                anyhow::ensure!(!crls.is_empty(), "--tls-crl {}: no PEM CRL in it", path.display());
                // Leaf certificates are checked; a CA no list speaks for is not refused for it.
                verifier =
                    verifier.with_crls(crls).only_check_end_entity_revocation().allow_unknown_revocation_status();
            }
            let verifier = verifier.build().map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key ({}): {e}", files.cert.display()))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// What the server knows of a connection: the peer's address and, over mTLS, its verified
/// certificate chain (leaf first). In every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted connection, TLS or plaintext.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn info(&self) -> ConnInfo {
        match self {
            Conn::Plain(s) => ConnInfo { remote: s.peer_addr().ok(), peer_certs: None },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ConnInfo {
                    remote: tcp.peer_addr().ok(),
                    peer_certs: session.peer_certificates().map(|c| Arc::new(c.to_vec())),
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepted connections from any number of listeners, each plaintext or TLS, until shutdown.
pub struct Incoming {
    rx: mpsc::Receiver<Conn>,
    tx: Option<mpsc::Sender<Conn>>,
    local: Option<SocketAddr>,
    shutdown: CancellationToken,
}

impl Incoming {
    /// No listeners yet; accepting stops when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(64);
        Self { rx, tx: Some(tx), local: None, shutdown }
    }

    /// Accepts on `listener`, with TLS when `tls` is given.
    pub fn listen(mut self, listener: TcpListener, tls: Option<ServerTls>) -> Self {
        if self.local.is_none() {
            self.local = listener.local_addr().ok();
        }
        let Some(tx) = self.tx.clone() else { return self };
        tokio::spawn(accept_loop(listener, tls, tx, self.shutdown.clone()));
        self
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The connections, as the stream tonic serves.
    pub fn into_stream(mut self) -> impl futures_util::Stream<Item = io::Result<Conn>> + Send + 'static {
        self.tx = None; // ends when every accept loop has
        futures_util::stream::unfold(self.rx, |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) })
    }
}

/// The web view's handlers see the connection as the API's do (its client certificate).
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>> for ConnInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        stream.io().info()
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = Option<SocketAddr>;

    async fn accept(&mut self) -> (Conn, Option<SocketAddr>) {
        self.tx = None;
        match self.rx.recv().await {
            Some(conn) => {
                let addr = conn.info().remote;
                (conn, addr)
            }
            // Every accept loop ended (shutdown): axum's graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    tx: mpsc::Sender<Conn>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = handshakes.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small responses would otherwise wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &tls else {
            drop(permit);
            if tx.send(Conn::Plain(tcp)).await.is_err() {
                return;
            }
            continue;
        };
        let acceptor = tls.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Conn::Tls(Box::new(stream))).await;
                }
                // A scanner, a plaintext client, a certificate the CA did not issue: the peer
                // learns from its TLS alert; a debug line here is enough.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
