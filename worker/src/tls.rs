//! Client TLS for connections to a coordinator (workers and the CLI): `https://` URLs, the CA
//! to trust (`--tls-ca`; the system's roots without it) and, for mTLS, the client certificate
//! and key (`--tls-cert`, `--tls-key`). Files are read at each connect, so a rotated client
//! certificate is picked up at the next reconnection.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How to reach a coordinator over TLS.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA bundle (PEM) that issued the coordinator's certificate.
    pub ca: Option<PathBuf>,
    /// This client's certificate chain (PEM), for mTLS.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The name the coordinator's certificate must carry, when the URL's host is not it (an
    /// advertised pod IP: `--tls-server-name swarm-coordinator.swarm.svc`).
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }

    /// An endpoint for `url` (`http://` or `https://host:port`) with TLS set up as configured;
    /// errors say which setting or file is wrong.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        // HTTP/2 pings find a connection that went silent (a partition, a peer frozen): a
        // watch or a worker's stream on it then fails and is resumed elsewhere, where without
        // them it would wait on a dead link for as long as TCP does (minutes).
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if !url.starts_with("https://") {
            if self.is_set() {
                return Err(format!(
                    "--tls-ca/--tls-cert/--tls-key/--tls-server-name are given but `{url}` is not an https:// URL"
                ));
            }
            return Ok(endpoint);
        }
        let read = |p: &PathBuf, flag: &str| std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()));
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?)),
            None => config.with_native_roots(),
        };
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?));
            }
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        endpoint.tls_config(config).map_err(|e| format!("TLS settings for {url}: {e}"))
    }
}
