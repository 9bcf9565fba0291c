//! Who is calling: principals with roles and a tenant, from `--auth-file`, authenticated by a
//! bearer token (`authorization: Bearer TOKEN`) whose SHA-256 the file holds.
//!
//! ```yaml
//! principals:
//!   - {name: ci-bot, tenant: acme, roles: [submit, read, cancel], token_sha256: "<hex>"}
//!   - {name: pool-a, roles: [worker], token_sha256: "<hex>"}
//!   - {name: ops, roles: [admin], token_sha256: "<hex>"}
//! ```
//!
//! Tokens are never stored or logged: the file holds their hashes, a presented token is hashed
//! and compared with every principal's hash in constant time. Without an auth file every caller
//! is the anonymous administrator (the embedded default, on loopback).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submit runs.
    Submit,
    /// Get, list and watch runs; list workers.
    Read,
    /// Cancel runs.
    Cancel,
    /// Decide approvals (`SignalRun`).
    Approve,
    /// Connect as a worker.
    Worker,
    /// Everything, across tenants.
    Admin,
    /// A coordinator: a standby may forward the calls of a principal known by its client
    /// certificate, naming it in [`ON_BEHALF_OF`] (its own certificate proves the standby).
    Peer,
}

/// The metadata key a standby names a certificate-known caller by when it forwards the call;
/// taken only from a principal with the `peer` role.
pub const ON_BEHALF_OF: &str = "x-swarm-on-behalf-of";

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Read => "read",
            Self::Cancel => "cancel",
            Self::Approve => "approve",
            Self::Worker => "worker",
            Self::Admin => "admin",
            Self::Peer => "peer",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// The tenant whose runs it sees and submits (`None`: no tenant; an admin sees all).
    pub tenant: Option<String>,
    pub roles: Vec<Role>,
}

impl Principal {
    /// The caller when authentication is off.
    pub fn anonymous() -> Self {
        Self { name: "anonymous".into(), tenant: None, roles: vec![Role::Admin] }
    }

    /// Whether it may act as `role` (admins may do anything).
    pub fn may(&self, role: Role) -> bool {
        self.roles.iter().any(|&r| r == role || r == Role::Admin)
    }

    /// `PERMISSION_DENIED` unless it may act as `role`.
    pub fn require(&self, role: Role) -> Result<(), Status> {
        if self.may(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("principal {} lacks the role `{}`", self.name, role.as_str())))
        }
    }

    /// Whether it sees runs of `tenant` (its own; an admin sees every tenant's).
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.roles.contains(&Role::Admin) || self.tenant.as_deref() == tenant
    }

    /// The tenant whose runs a listing shows (`None`: all, for an admin).
    pub fn listing_tenant(&self) -> Option<Option<String>> {
        if self.roles.contains(&Role::Admin) { None } else { Some(self.tenant.clone()) }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    principals: Vec<PrincipalEntry>,
    #[serde(default)]
    tenants: std::collections::BTreeMap<String, TenantQuota>,
}

/// A tenant's quotas and share of the slots (the auth file's `tenants:` section).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Its share of busy slots relative to other tenants' (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Its runs not yet ended, at most; beyond it `SubmitRun` is `RESOURCE_EXHAUSTED`.
    #[serde(default)]
    pub max_active_runs: Option<u32>,
    /// Its attempts running at once, at most; beyond it its subtasks wait (queued).
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
    /// Its attempts started per minute, at most (bursts of a second's worth); beyond it its
    /// subtasks wait (queued).
    #[serde(default)]
    pub tool_calls_per_minute: Option<u32>,
    /// The bytes of artifacts one of its runs may hand on, at most (default: the
    /// coordinator's, 1 GiB); beyond it the subtask that would exceed it fails.
    #[serde(default)]
    pub max_artifact_bytes: Option<u64>,
    /// Subtasks in one of its runs, at most (below the coordinator's 100,000).
    #[serde(default)]
    pub max_run_subtasks: Option<u32>,
    /// `limits.max_subagents` one of its runs may ask for, at most (below 10,000).
    #[serde(default)]
    pub max_run_subagents: Option<u32>,
    /// `limits.max_tool_calls` one of its runs may ask for, at most (below 100,000).
    #[serde(default)]
    pub max_run_tool_calls: Option<u32>,
}

fn one() -> f64 {
    1.0
}

impl Default for TenantQuota {
    fn default() -> Self {
        Self {
            weight: 1.0,
            max_active_runs: None,
            max_concurrent_calls: None,
            tool_calls_per_minute: None,
            max_artifact_bytes: None,
            max_run_subtasks: None,
            max_run_subagents: None,
            max_run_tool_calls: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    #[serde(default)]
    tenant: Option<String>,
    roles: Vec<Role>,
    /// The token's SHA-256, hex; or where the token itself is (`token_env`, `token_file`: a
    /// Kubernetes or compose secret), hashed at start. Exactly one of the three.
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<String>,
    /// Over mTLS: a client certificate with this DNS name among its subject alternative names
    /// stands for this principal (with or without a token).
    #[serde(default)]
    cert_name: Option<String>,
}

/// A principal and its token's SHA-256.
type Hashed = ([u8; 32], Arc<Principal>);

/// Most principals an auth file may list.
const MAX_PRINCIPALS: usize = 10_000;

/// The principals of an auth file (or none: authentication off).
#[derive(Clone, Default)]
pub struct Authenticator {
    principals: Option<Arc<Vec<Hashed>>>,
    /// Principals a verified client certificate stands for, by the DNS name it must carry.
    cert_names: Arc<Vec<(rustls::pki_types::ServerName<'static>, Arc<Principal>)>>,
    tenants: Arc<std::collections::BTreeMap<String, TenantQuota>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.principals {
            None => write!(f, "Authenticator(off)"),
            Some(p) => write!(f, "Authenticator({} principals)", p.len()),
        }
    }
}

impl Authenticator {
    /// No authentication: every caller is [`Principal::anonymous`].
    pub fn off() -> Self {
        Self::default()
    }

    /// Whether callers must authenticate.
    pub fn enabled(&self) -> bool {
        self.principals.is_some()
    }

    /// Reads an auth file; errors name the principal and field at fault.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses an auth file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: AuthFile = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(!file.principals.is_empty(), "no principals: nobody could call");
        anyhow::ensure!(file.principals.len() <= MAX_PRINCIPALS, "more than {MAX_PRINCIPALS} principals");
        let mut out = Vec::with_capacity(file.principals.len());
        let mut cert_names = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, p) in file.principals.into_iter().enumerate() {
            let at = format!("principals[{i}] ({})", p.name);
            anyhow::ensure!(!p.name.is_empty() && p.name.len() <= 128, "{at}: name must be 1 to 128 bytes");
            anyhow::ensure!(names.insert(p.name.clone()), "{at}: a second principal of that name");
            if let Some(t) = &p.tenant {
                let ok = !t.is_empty()
                    && t.len() <= 64
                    && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                anyhow::ensure!(ok, "{at}: tenant must be 1 to 64 of [A-Za-z0-9._-]");
            }
            anyhow::ensure!(!p.roles.is_empty(), "{at}: no roles");
            let principal =
                Arc::new(Principal { name: p.name.clone(), tenant: p.tenant.clone(), roles: p.roles.clone() });
            if let Some(name) = &p.cert_name {
                let dns = rustls::pki_types::ServerName::try_from(name.clone())
                    .ok()
                    .filter(|n| matches!(n, rustls::pki_types::ServerName::DnsName(_)))
                    .ok_or_else(|| anyhow::anyhow!("{at}: cert_name `{name}` is not a DNS name"))?;
                anyhow::ensure!(
                    cert_names.iter().all(|(n, _)| n != &dns),
                    "{at}: cert_name `{name}` already stands for another principal"
                );
                cert_names.push((dns, principal.clone()));
            }
            let hash = match (&p.token_sha256, &p.token_env, &p.token_file) {
                (None, None, None) if p.cert_name.is_some() => continue,
                (Some(hex), None, None) => decode_hex32(hex).ok_or_else(|| {
                    anyhow::anyhow!("{at}: token_sha256 must be 64 hex digits (sha256sum of the token)")
                })?,
                (None, Some(var), None) => {
                    let token =
                        std::env::var(var).map_err(|_| anyhow::anyhow!("{at}: token_env: ${var} is not set"))?;
                    hash_token(&at, token.trim())?
                }
                (None, None, Some(path)) => {
                    let token = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("{at}: token_file: cannot read {path}: {e}"))?;
                    hash_token(&at, token.trim())?
                }
                _ => anyhow::bail!("{at}: give exactly one of token_sha256, token_env, token_file (or a cert_name)"),
            };
            out.push((hash, principal));
        }
        for (name, q) in &file.tenants {
            let at = format!("tenants.{name}");
            anyhow::ensure!(
                q.weight.is_finite() && q.weight > 0.0 && q.weight <= 1000.0,
                "{at}.weight: must be in (0, 1000]"
            );
            anyhow::ensure!(q.max_active_runs != Some(0), "{at}.max_active_runs: must be at least 1");
            anyhow::ensure!(q.max_concurrent_calls != Some(0), "{at}.max_concurrent_calls: must be at least 1");
            anyhow::ensure!(
                q.tool_calls_per_minute.is_none_or(|n| (1..=60_000_000).contains(&n)),
                "{at}.tool_calls_per_minute: must be 1 to 60,000,000"
            );
        }
        Ok(Self { principals: Some(Arc::new(out)), cert_names: Arc::new(cert_names), tenants: Arc::new(file.tenants) })
    }

    /// The same, with one more principal, `name`, holding only the `worker` role, for `token`
    /// (the in-process workers of `swarm up`, which authenticate like any other).
    pub fn with_worker(mut self, name: &str, token: &str) -> Self {
        if let Some(principals) = &self.principals {
            let mut list = principals.as_ref().clone();
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            list.push((hash, Arc::new(Principal { name: name.into(), tenant: None, roles: vec![Role::Worker] })));
            self.principals = Some(Arc::new(list));
        }
        self
    }

    /// The tenants' quotas and weights (empty: none configured).
    pub fn tenants(&self) -> &std::collections::BTreeMap<String, TenantQuota> {
        &self.tenants
    }

    /// The principal a bearer token stands for. Every principal's hash is compared, in
    /// constant time, whatever matches.
    pub fn principal_for(&self, token: &str) -> Option<Arc<Principal>> {
        let principals = self.principals.as_ref()?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (h, p) in principals.iter() {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(p.clone());
            }
        }
        found
    }

    /// The principal a verified client certificate chain (leaf first) stands for: the one
    /// whose `cert_name` is among the leaf's DNS names.
    pub fn principal_for_cert(&self, chain: &[rustls::pki_types::CertificateDer<'static>]) -> Option<Arc<Principal>> {
        let leaf = webpki::EndEntityCert::try_from(chain.first()?).ok()?;
        self.cert_names
            .iter()
            .find(|(name, _)| leaf.verify_is_valid_for_subject_name(name).is_ok())
            .map(|(_, p)| p.clone())
    }

    /// Authenticates a request (tonic interceptor): the principal goes into its extensions.
    pub fn authenticate<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let principal = if self.principals.is_none() {
            Arc::new(Principal::anonymous())
        } else {
            let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
            let token = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
            match token {
                // A token, when sent, decides (a wrong one is not rescued by a certificate).
                Some(token) => {
                    self.principal_for(token.trim()).ok_or_else(|| Status::unauthenticated("unknown token"))?
                }
                None => {
                    let certs = req.extensions().get::<crate::tls::ConnInfo>().and_then(|c| c.peer_certs.clone());
                    match certs {
                        Some(chain) => self.principal_for_cert(&chain).ok_or_else(|| {
                            Status::unauthenticated(
                                "the client certificate names no principal (no cert_name in --auth-file matches its DNS names); send a token",
                            )
                        })?,
                        None => {
                            return Err(Status::unauthenticated(
                                "credentials required: send `authorization: Bearer TOKEN` or a client certificate",
                            ));
                        }
                    }
                }
            }
        };
        // With authentication off everyone is the anonymous administrator: the header means nothing.
        let principal = match req.metadata().get(ON_BEHALF_OF).filter(|_| self.enabled()) {
            None => principal,
            Some(value) => self.on_behalf_of(&principal, value.to_str().unwrap_or_default())?,
        };
        req.extensions_mut().insert(principal);
        Ok(req)
    }

    /// The principal a peer forwards a call for: one known by its client certificate (a caller
    /// with a token sends it along instead). Only a `peer` may name one.
    fn on_behalf_of(&self, peer: &Principal, name: &str) -> Result<Arc<Principal>, Status> {
        if !peer.roles.contains(&Role::Peer) {
            return Err(Status::unauthenticated(format!(
                "{ON_BEHALF_OF} is taken only from a coordinator (role `peer`); {} is not one",
                peer.name
            )));
        }
        self.cert_names.iter().find(|(_, p)| p.name == name).map(|(_, p)| p.clone()).ok_or_else(|| {
            Status::unauthenticated(format!("{ON_BEHALF_OF}: no principal `{name}` known by a client certificate"))
        })
    }

    /// Whether a standby can vouch for callers known by their certificate: the auth file names
    /// the coordinators (a principal with the `peer` role and a `cert_name`).
    pub fn vouches(&self) -> bool {
        self.cert_names.iter().any(|(_, p)| p.roles.contains(&Role::Peer))
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.authenticate(req)
    }
}

/// The principal the interceptor authenticated (anonymous if none ran: authentication off).
pub fn principal<T>(req: &Request<T>) -> Arc<Principal> {
    req.extensions().get::<Arc<Principal>>().cloned().unwrap_or_else(|| Arc::new(Principal::anonymous()))
}

/// The hex SHA-256 of a token, as an auth file holds it (`echo -n TOKEN | sha256sum`).
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A token given in the clear (from the environment or a file), as its hash; short ones are
/// refused (a token must not be guessable).
fn hash_token(at: &str, token: &str) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(token.len() >= 16, "{at}: the token is shorter than 16 characters");
    Ok(Sha256::digest(token.as_bytes()).into())
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        format!(
            "principals:\n  - {{name: ci-bot, tenant: acme, roles: [submit, read], token_sha256: \"{}\"}}\n  - {{name: ops, roles: [admin], token_sha256: \"{}\"}}\n",
            token_sha256("s3cret"),
            token_sha256("root")
        )
    }

    #[test]
    fn tokens_map_to_their_principals_and_nothing_else_does() {
        let auth = Authenticator::parse(&file()).expect("valid");
        let bot = auth.principal_for("s3cret").expect("known");
        assert_eq!((bot.name.as_str(), bot.tenant.as_deref()), ("ci-bot", Some("acme")));
        assert!(bot.may(Role::Submit) && !bot.may(Role::Cancel) && !bot.may(Role::Worker));
        assert!(bot.sees(Some("acme")) && !bot.sees(Some("other")) && !bot.sees(None));
        let ops = auth.principal_for("root").expect("known");
        assert!(ops.may(Role::Cancel) && ops.sees(Some("anyone")));
        for wrong in ["", "s3cre", "s3cret ", "S3CRET", &token_sha256("s3cret")] {
            assert!(auth.principal_for(wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn requests_without_valid_credentials_are_unauthenticated() {
        let auth = Authenticator::parse(&file()).expect("valid");
        let with = |value: Option<&str>| {
            let mut req = Request::new(());
            if let Some(v) = value {
                req.metadata_mut().insert("authorization", v.parse().expect("ascii"));
            }
            auth.authenticate(req)
        };
        for bad in [None, Some("s3cret"), Some("Bearer nope"), Some("Basic czNjcmV0")] {
            assert_eq!(with(bad).expect_err("refused").code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let req = with(Some("Bearer s3cret")).expect("authenticated");
        assert_eq!(principal(&req).name, "ci-bot");
        // Off: everyone is the anonymous administrator.
        let req = Authenticator::off().authenticate(Request::new(())).expect("open");
        assert!(principal(&req).may(Role::Admin));
    }

    #[test]
    fn tokens_can_come_from_a_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("swarm-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "file-token-0123456789\n").expect("write");
        // A variable every test process has (setting one would need `unsafe`).
        let path = std::env::var("PATH").expect("PATH");
        let text = format!(
            "principals:\n  - {{name: f, roles: [read], token_file: {}}}\n  - {{name: e, roles: [worker], token_env: PATH}}\n",
            file.display()
        );
        let auth = Authenticator::parse(&text).expect("valid");
        assert_eq!(auth.principal_for("file-token-0123456789").map(|p| p.name.clone()).as_deref(), Some("f"));
        assert_eq!(auth.principal_for(path.trim()).map(|p| p.name.clone()).as_deref(), Some("e"));
        for (text, says) in [
            ("principals:\n  - {name: a, roles: [read], token_env: SWARM_TEST_UNSET_VAR}", "is not set"),
            ("principals:\n  - {name: a, roles: [read]}", "exactly one"),
        ] {
            let err = Authenticator::parse(text).expect_err("refused").to_string();
            assert!(err.contains(says), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_file_names_the_principal_and_field() {
        for (text, says) in [
            ("principals: []", "no principals"),
            ("principals:\n  - {name: a, roles: [read], token_sha256: abc}", "principals[0] (a): token_sha256"),
            ("principals:\n  - {name: a, roles: [], token_sha256: abc}", "no roles"),
            ("principals:\n  - {name: a, roles: [root], token_sha256: abc}", "root"),
            ("principals:\n  - {name: a, tenant: 'a/b', roles: [read], token_sha256: abc}", "tenant"),
        ] {
            let err = Authenticator::parse(text).expect_err("refused").to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
