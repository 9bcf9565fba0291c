//! TLS flags: towards a coordinator (clients, workers), and a coordinator's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::parse_ttl;

/// TLS towards a coordinator at an `https://` URL.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsClientArgs {
    /// The CA (PEM) that issued the coordinator's certificate (default: the system's roots).
    #[arg(long, env = "SWARM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), when the coordinator requires mTLS.
    #[arg(long, env = "SWARM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "SWARM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Verify the coordinator's certificate for this name rather than the URL's host (for an
    /// advertised address such as a pod IP).
    #[arg(long, env = "SWARM_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl From<TlsClientArgs> for swarm_worker::tls::ClientTls {
    fn from(a: TlsClientArgs) -> Self {
        Self { ca: a.tls_ca, cert: a.tls_cert, key: a.tls_key, server_name: a.tls_server_name }
    }
}

/// Server TLS on the API (and the web view): `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsServerArgs {
    /// Serve the API over TLS with this certificate chain (PEM); reloaded when the file changes.
    #[arg(long, env = "SWARM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "SWARM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (mTLS); a certificate may stand for a
    /// principal (`cert_name` in --auth-file).
    #[arg(long, env = "SWARM_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse client certificates revoked by these CRLs (PEM; `swarm certs --revoke NAME`
    /// writes `crl.pem`); reloaded when the file changes, like the certificates.
    #[arg(long, env = "SWARM_TLS_CRL", requires = "tls_client_ca")]
    pub tls_crl: Option<PathBuf>,
    /// How often the certificate files are checked for a change.
    #[arg(long, env = "SWARM_TLS_RELOAD", default_value = "10s", value_parser = parse_ttl)]
    pub tls_reload: Duration,
}

impl TlsServerArgs {
    /// The API's TLS, if configured (files are checked now: a bad one fails the start).
    pub fn load(&self) -> anyhow::Result<Option<swarm_coordinator::tls::ServerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let files = swarm_coordinator::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
            crl: self.tls_crl.clone(),
        };
        Ok(Some(swarm_coordinator::tls::ServerTls::grpc(files)?))
    }

    /// How this coordinator, as a standby, reaches an `https://` leader to forward API calls:
    /// trusting `peer_ca` (default: --tls-client-ca, else the system's roots) and presenting
    /// its own certificate (a leader that requires client certificates accepts its peers).
    pub fn peer_tls(
        &self,
        peer_ca: Option<&Path>,
        server_name: Option<&str>,
    ) -> anyhow::Result<Option<ClientTlsConfig>> {
        let mut tls = ClientTlsConfig::new();
        if let Some(name) = server_name {
            tls = tls.domain_name(name);
        }
        match peer_ca.or(self.tls_client_ca.as_deref()) {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None if self.tls_cert.is_none() && server_name.is_none() => return Ok(None),
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(Some(tls))
    }
}
