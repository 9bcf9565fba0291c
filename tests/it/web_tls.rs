//! The web view behind the same mTLS and auth as the API: a client certificate is asked for at
//! the handshake, it stands for its principal (no token needed), a read-only principal may view
//! and is refused when it tries to decide an approval, and one with the `approve` role may.

use std::sync::Arc;
use std::time::Duration;

use swarm_cli::certs::{Issued, generate};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::auth::Authenticator;
use swarm_coordinator::tls::{ServerTls, TlsFiles};
use swarm_core::spec::{ApprovalSpec, OnTimeout};
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::etcd::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUTH: &str = "principals:
  - {name: viewer, roles: [read], cert_name: viewer}
  - {name: approver, roles: [read, approve], cert_name: approver}
  - {name: submitter, roles: [submit, read], cert_name: submitter}
";

/// One HTTP/1.1 request over TLS as `client` (a certificate name in `issued`, or none);
/// `None` when the handshake or the connection failed, else the status code.
async fn https(issued: &Issued, addr: std::net::SocketAddr, client: Option<&str>, request: &str) -> Option<u16> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&issued.ca).expect("ca").flatten() {
        roots.add(cert).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client.and_then(|n| issued.clients.iter().find(|(c, _, _)| c == n)) {
        Some((_, cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert).expect("cert").flatten().collect(),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut tls = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await.ok()?;
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

fn approve(run_id: &str) -> String {
    let body = r#"{"subtask_id": "gate", "decision": "approve"}"#;
    format!(
        "POST /api/runs/{run_id}/signal HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nx-swarm-request: 1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn the_web_view_asks_for_a_client_certificate_and_honours_its_principals_roles() {
    let dir = TempDir::new("web-mtls").expect("dir");
    let issued = generate(
        &dir.0,
        &["localhost".into(), "127.0.0.1".into()],
        &["viewer".into(), "approver".into(), "submitter".into(), "stranger".into()],
        2,
    )
    .expect("certificates");
    let tls = ServerTls::grpc(TlsFiles {
        cert: issued.server_cert.clone(),
        key: issued.server_key.clone(),
        client_ca: Some(issued.ca.clone()),
        crl: None,
    })
    .expect("server TLS");
    let mut opts = EmbeddedOptions {
        workers: 1,
        slots: 2,
        http_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Default::default()
    };
    opts.coordinator.auth = Authenticator::parse(AUTH).expect("auth file");
    opts.tls = Some(tls);
    let cluster = Embedded::start(opts).await.expect("cluster");
    let http = cluster.http_addr.expect("web view");

    // A run with an approval, submitted by certificate over the API.
    let client_tls = |name: &str| {
        let (_, cert, key) = issued.clients.iter().find(|(c, _, _)| c == name).expect("client").clone();
        swarm_worker::tls::ClientTls {
            ca: Some(issued.ca.clone()),
            cert: Some(cert),
            key: Some(key),
            server_name: None,
        }
    };
    let mut submitter =
        swarm_cli::client::connect_with(&cluster.url(), None, &client_tls("submitter")).await.expect("connect");
    let gate = ApprovalSpec { prompt: "ship?".into(), timeout: None, on_timeout: OnTimeout::Reject };
    let spec = RunSpec::new(
        "gated",
        vec![SubtaskSpec {
            kind: SubtaskKind::Approval(gate),
            ..SubtaskSpec::tool("gate", "echo", serde_json::json!({}))
        }],
    );
    let run_id = submitter
        .submit_run(pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() })
        .await
        .expect("submit")
        .into_inner()
        .run_id;
    swarm_tests::harness::wait_for_events(&mut submitter, &run_id, Duration::from_secs(20), |events| {
        events.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::ApprovalRequested(_))))
    })
    .await
    .expect("the approval waits");

    // No client certificate: no handshake (the page itself is behind the same mTLS).
    assert_eq!(https(&issued, http, None, &get("/")).await, None, "served without a client certificate");
    // A certificate naming no principal: the handshake passes, the data is refused.
    assert_eq!(https(&issued, http, Some("stranger"), &get("/api/runs")).await, Some(401));
    // Read-only: sees, cannot decide.
    assert_eq!(https(&issued, http, Some("viewer"), &get("/api/runs")).await, Some(200));
    assert_eq!(https(&issued, http, Some("viewer"), &get(&format!("/api/runs/{run_id}"))).await, Some(200));
    assert_eq!(https(&issued, http, Some("viewer"), &approve(&run_id)).await, Some(403), "a reader decided");
    // The approve role decides.
    assert_eq!(https(&issued, http, Some("approver"), &approve(&run_id)).await, Some(200));
    let run = swarm_tests::harness::wait_done(&mut submitter, &run_id, Duration::from_secs(20)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    cluster.stop().await;
}
