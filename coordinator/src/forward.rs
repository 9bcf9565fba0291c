//! Any coordinator serves the API: a standby sends each call on to the leader it follows (as
//! Vault and Nomad standbys forward to their active node), WatchRun streams included, so a
//! Kubernetes Service or a port in front of every coordinator just works.
//!
//! The caller's credentials travel with the call (its bearer token, its trace context) and the
//! leader authenticates and authorizes it again: a standby adds no authority of its own. A call
//! is forwarded at most once: it carries [`FORWARDED_BY`], and a node that receives a forwarded
//! call it cannot serve (its leader changed meanwhile) answers `UNAVAILABLE` with the leader
//! hint, as every node did before forwarding. A caller known only by its client certificate is
//! forwarded when the auth file names the coordinators (a principal with the `peer` role and a
//! `cert_name` their certificates carry): the standby names the caller in
//! [`crate::auth::ON_BEHALF_OF`] and the leader, seeing a peer's certificate, takes it; without
//! such a principal the caller gets the hint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use swarm_proto::ApiError;
use swarm_proto::pb::swarm_service_client::SwarmServiceClient;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// The metadata key a forwarded call carries: the address of the node that forwarded it.
pub const FORWARDED_BY: &str = "x-swarm-forwarded-by";

/// Responses a forwarded call may bring back (a page of a run's subtasks is about 4 MiB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A standby's way to its leader: one HTTP/2 connection, made on first use and kept while the
/// leader stays the same.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's advertised address (a leader hint naming itself is stale).
    me: String,
    /// How to reach an `https://` leader: the CA that signed the coordinators' certificates
    /// (`--peer-ca`), else the system's roots.
    tls: Option<ClientTlsConfig>,
    channel: Mutex<Option<(String, Channel)>>,
}

impl Forwarder {
    pub fn new(me: String, tls: Option<ClientTlsConfig>) -> Self {
        Self { inner: Arc::new(Inner { me, tls, channel: Mutex::new(None) }) }
    }

    /// A client of `leader`, or why there is none (then the caller gets the hint).
    pub fn client(&self, leader: &str) -> Result<SwarmServiceClient<Channel>, ApiError> {
        let hint = || ApiError::NotLeader { leader: Some(leader.to_owned()) };
        if leader == self.inner.me {
            return Err(hint());
        }
        let mut slot = self.inner.channel.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match &*slot {
            Some((addr, channel)) if addr == leader => channel.clone(),
            _ => {
                let mut endpoint = Endpoint::from_shared(leader.to_owned())
                    .map_err(|_| hint())?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                if leader.starts_with("https://") {
                    let tls = self.inner.tls.clone().unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
                    endpoint = endpoint.tls_config(tls).map_err(|e| {
                        tracing::warn!(error = %e, leader, "cannot forward to the leader over TLS");
                        hint()
                    })?;
                }
                let channel = endpoint.connect_lazy();
                *slot = Some((leader.to_owned(), channel.clone()));
                channel
            }
        };
        Ok(SwarmServiceClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(crate::MAX_SUBMIT_BYTES))
    }

    /// The call to send on: the caller's message and metadata (tonic drops the reserved
    /// headers), the current span's trace context in place of the caller's (the forwarding
    /// hop is a span of the trace), and this node's mark.
    pub fn request<T>(&self, req: Request<T>, who: &crate::auth::Principal) -> Request<T> {
        let (mut metadata, _, message) = req.into_parts();
        // A caller without a token is named for the leader (see the module docs).
        metadata.remove(crate::auth::ON_BEHALF_OF);
        if !metadata.contains_key("authorization")
            && let Ok(name) = who.name.parse()
        {
            metadata.insert(crate::auth::ON_BEHALF_OF, name);
        }
        for (key, value) in swarm_telemetry::inject(&tracing::Span::current()) {
            if let (Ok(k), Ok(v)) = (key.parse::<tonic::metadata::MetadataKey<_>>(), value.parse()) {
                metadata.insert(k, v);
            }
        }
        if let Ok(me) = self.inner.me.parse() {
            metadata.insert(FORWARDED_BY, me);
        }
        Request::from_parts(metadata, Default::default(), message)
    }
}

/// Whether a call can be vouched for to the leader: it was not forwarded already, and it
/// carries its credentials (a token), or needs none (authentication off), or the standby can
/// name its caller (`vouches`: the coordinators are peers in the auth file).
pub fn forwardable(metadata: &MetadataMap, auth_on: bool, vouches: bool) -> bool {
    !metadata.contains_key(FORWARDED_BY) && (!auth_on || vouches || metadata.contains_key("authorization"))
}

/// A forwarded call's failure as the caller should see it: one that never reached the leader
/// (it is down, or refused this node's connection) is UNAVAILABLE with the leader hint, so a
/// client can retry or go there itself; the leader's own answers pass unchanged.
pub fn failed(status: Status, leader: &str) -> Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    tracing::debug!(leader, error = %status, "forwarding to the leader failed");
    swarm_proto::status::to_status(&ApiError::NotLeader { leader: Some(leader.to_owned()) })
}

/// A stream from the leader as this node's own: when the connection to the leader breaks (the
/// leader died), the caller hears UNAVAILABLE, which says "resume with after_seq", rather than
/// the transport's UNKNOWN.
pub fn resumable<T>(
    stream: impl Stream<Item = Result<T, Status>> + Send,
) -> impl Stream<Item = Result<T, Status>> + Send {
    stream.map(|item| {
        item.map_err(|s| {
            if s.code() != Code::Unavailable && std::error::Error::source(&s).is_some() {
                Status::unavailable(format!(
                    "the stream from the leader broke ({}); resume with after_seq",
                    s.message()
                ))
            } else {
                s
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_the_leader_can_authenticate_are_forwarded_and_only_once() {
        let mut md = MetadataMap::new();
        assert!(forwardable(&md, false, false), "authentication off: everyone is the anonymous admin");
        assert!(!forwardable(&md, true, false), "a caller known by its certificate alone, and no peers");
        assert!(forwardable(&md, true, true), "a caller known by its certificate, the coordinators peers");
        md.insert("authorization", "Bearer t".parse().expect("value"));
        assert!(forwardable(&md, true, false), "its token travels with it");
        md.insert(FORWARDED_BY, "http://10.0.0.1:7070".parse().expect("value"));
        assert!(!forwardable(&md, true, true), "forwarded once at most");
    }

    #[tokio::test]
    async fn a_hint_naming_this_node_or_no_url_is_answered_with_the_hint() {
        let f = Forwarder::new("http://127.0.0.1:7070".into(), None);
        for leader in ["http://127.0.0.1:7070", "not a url \u{0}"] {
            let Err(ApiError::NotLeader { leader: hint }) = f.client(leader) else { panic!("{leader} is no leader") };
            assert_eq!(hint.as_deref(), Some(leader));
        }
        let mut forged = Request::new(());
        forged.metadata_mut().insert(crate::auth::ON_BEHALF_OF, "admin".parse().expect("value"));
        let who = crate::auth::Principal { name: "ci-bot".into(), tenant: None, roles: vec![] };
        let req = f.request(forged, &who);
        assert_eq!(req.metadata().get(FORWARDED_BY).and_then(|v| v.to_str().ok()), Some("http://127.0.0.1:7070"));
        let named = req.metadata().get(crate::auth::ON_BEHALF_OF).and_then(|v| v.to_str().ok());
        assert_eq!(named, Some("ci-bot"), "the caller as the standby knows it, not what it claimed");
        let mut with_token = Request::new(());
        with_token.metadata_mut().insert("authorization", "Bearer t".parse().expect("value"));
        let req = f.request(with_token, &who);
        assert!(req.metadata().get(crate::auth::ON_BEHALF_OF).is_none(), "a token speaks for itself");
    }
}
