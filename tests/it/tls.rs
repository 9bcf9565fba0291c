//! TLS and mTLS over real sockets: certificates made by `swarm certs` (rcgen) for the test;
//! certificate principals; clients without a certificate, with one from another CA, or with
//! one that names no principal; a server certificate rotated without a restart; and the whole
//! cluster on an etcd that serves TLS, requires client certificates and has auth enabled.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use swarm_cli::certs::{Issued, generate};
use swarm_cli::client;
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::auth::{Authenticator, token_sha256};
use swarm_coordinator::tls::{ServerTls, TlsFiles};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::etcd::{EtcdCluster, TempDir};
use swarm_tests::harness::wait_done;
use swarm_worker::tls::ClientTls;
use swarm_worker::{ToolRegistry, WorkerConfig};
use tonic::Code;

fn certs(dir: &Path) -> Issued {
    generate(dir, &["127.0.0.1".into(), "localhost".into()], &["pool-a".into(), "ci-bot".into(), "stranger".into()], 2)
        .expect("certificates")
}

fn client_tls(issued: &Issued, name: Option<&str>) -> ClientTls {
    let pair = name.map(|n| issued.clients.iter().find(|(c, _, _)| c == n).expect("client cert").clone());
    ClientTls {
        ca: Some(issued.ca.clone()),
        cert: pair.as_ref().map(|p| p.1.clone()),
        key: pair.map(|p| p.2),
        server_name: None,
    }
}

const AUTH: &str = "principals:
  - {name: coordinators, roles: [peer], cert_name: localhost}
  - {name: pool-a, roles: [worker], cert_name: pool-a}
  - {name: ci-bot, tenant: acme, roles: [submit, read], cert_name: ci-bot}
  - {name: ops, roles: [admin], token_sha256: \"OPS\"}
";

fn auth() -> Authenticator {
    Authenticator::parse(&AUTH.replace("OPS", &token_sha256("ops-token-0123456789"))).expect("auth file")
}

fn spec(name: &str) -> RunSpec {
    RunSpec::new(name, vec![SubtaskSpec::tool("a", "echo", serde_json::json!({"text": "over tls"}))])
}

async fn submit_and_wait(c: &mut client::Client, name: &str) -> pb::Run {
    let run = c
        .submit_run(pb::SubmitRunRequest {
            spec: Some((&spec(name)).into()),
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner();
    wait_done(c, &run.run_id, Duration::from_secs(30)).await.expect("run ends")
}

/// The coordinators' TLS: the server certificate, client certificates of the CA required.
fn mtls_server(issued: &Issued) -> ServerTls {
    ServerTls::grpc(TlsFiles {
        cert: issued.server_cert.clone(),
        key: issued.server_key.clone(),
        client_ca: Some(issued.ca.clone()),
        crl: None,
    })
    .expect("server TLS")
}

/// A cluster whose API requires client certificates, with one worker that authenticates by
/// its certificate alone (no token).
async fn mtls_cluster(issued: &Issued) -> Embedded {
    let mut opts = EmbeddedOptions { workers: 0, ..Default::default() };
    opts.coordinator.auth = auth();
    opts.tls = Some(mtls_server(issued));
    opts.worker_tls = Some(client_tls(issued, Some("pool-a")));
    let mut cluster = Embedded::start(opts).await.expect("cluster");
    assert!(cluster.url().starts_with("https://"), "{}", cluster.url());
    let mut config = WorkerConfig::new(cluster.url());
    config.worker_id = "pool-a-1".into();
    config.slots = 4;
    config.tls = client_tls(issued, Some("pool-a"));
    cluster.add_worker_with(config, Arc::new(ToolRegistry::builtin()));
    cluster.wait_for_workers(1, Duration::from_secs(10)).await.expect("the worker connects over mTLS");
    cluster
}

#[tokio::test]
async fn mtls_admits_certificate_principals_and_refuses_everyone_else() {
    let dir = TempDir::new("tls").expect("dir");
    let issued = certs(&dir.0);
    let cluster = mtls_cluster(&issued).await;
    let url = cluster.url();

    // A client certificate stands for its principal: ci-bot submits and reads, nothing more.
    let mut bot = client::connect_with(&url, None, &client_tls(&issued, Some("ci-bot"))).await.expect("connect");
    let run = submit_and_wait(&mut bot, "over-mtls").await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let denied = bot
        .cancel_run(pb::CancelRunRequest { run_id: run.run_id.clone(), reason: "probe".into() })
        .await
        .expect_err("ci-bot holds no cancel role");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // A token with a certificate: the token decides (ops, an administrator, sees acme's run).
    let mut ops = client::connect_with(&url, Some("ops-token-0123456789"), &client_tls(&issued, Some("stranger")))
        .await
        .expect("connect");
    let seen = ops.get_run(pb::GetRunRequest { run_id: run.run_id.clone(), ..Default::default() }).await;
    assert!(seen.is_ok(), "{seen:?}");

    // A certificate from our CA that names no principal: the handshake succeeds, the call not.
    let mut stranger = client::connect_with(&url, None, &client_tls(&issued, Some("stranger"))).await.expect("connect");
    let refused = stranger.list_runs(pb::ListRunsRequest::default()).await.expect_err("no principal");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // No client certificate, even with a valid token: the TLS handshake itself is refused.
    let no_cert = client::connect_with(&url, Some("ops-token-0123456789"), &client_tls(&issued, None)).await;
    let failed = match no_cert {
        Err(_) => true,
        Ok(mut c) => c.list_runs(pb::ListRunsRequest::default()).await.is_err(),
    };
    assert!(failed, "a client without a certificate got through");

    // A certificate named ci-bot but issued by another CA.
    let rogue_dir = TempDir::new("tls-rogue").expect("dir");
    let rogue = generate(&rogue_dir.0, &["127.0.0.1".into()], &["ci-bot".into()], 2).expect("rogue certs");
    let forged = ClientTls { ca: Some(issued.ca.clone()), ..client_tls(&rogue, Some("ci-bot")) };
    let got_in = match client::connect_with(&url, None, &forged).await {
        Err(_) => false,
        Ok(mut c) => c.list_runs(pb::ListRunsRequest::default()).await.is_ok(),
    };
    assert!(!got_in, "a certificate from another CA was accepted");

    // A client that trusts another CA does not trust this server.
    let wrong_ca = client_tls(&rogue, Some("ci-bot"));
    let trusted = match client::connect_with(&url, None, &wrong_ca).await {
        Err(_) => false,
        Ok(mut c) => c.list_runs(pb::ListRunsRequest::default()).await.is_ok(),
    };
    assert!(!trusted, "the client accepted a server certificate its CA did not issue");

    // Plaintext to the TLS port.
    let plain = url.replace("https://", "http://");
    let spoke = match client::connect_with(&plain, Some("ops-token-0123456789"), &ClientTls::default()).await {
        Err(_) => false,
        Ok(mut c) => c.list_runs(pb::ListRunsRequest::default()).await.is_ok(),
    };
    assert!(!spoke, "plaintext gRPC was served on the TLS port");
    cluster.stop().await;
}

#[tokio::test]
async fn a_worker_certificate_cannot_act_as_a_client_and_a_client_certificate_cannot_serve_as_a_worker() {
    let dir = TempDir::new("tls").expect("dir");
    let issued = certs(&dir.0);
    let mut cluster = mtls_cluster(&issued).await;
    // pool-a's certificate holds only the worker role.
    let mut pool =
        client::connect_with(&cluster.url(), None, &client_tls(&issued, Some("pool-a"))).await.expect("connect");
    let e = pool.list_runs(pb::ListRunsRequest::default()).await.expect_err("a worker may not list runs");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // ci-bot's certificate cannot join as a worker: it never counts as connected.
    let mut config = WorkerConfig::new(cluster.url());
    config.worker_id = "impostor".into();
    config.tls = client_tls(&issued, Some("ci-bot"));
    let index = cluster.add_worker_with(config, Arc::new(ToolRegistry::builtin()));
    let joined = cluster.wait_for_workers(2, Duration::from_secs(2)).await;
    assert!(joined.is_err(), "a client certificate joined as a worker");
    cluster.stop_worker(index).await;
    cluster.stop().await;
}

/// `swarm certs --revoke` and `--tls-crl`: a stolen client certificate stops working once the
/// CRL is written, without a restart; the others go on.
#[tokio::test]
async fn a_revoked_client_certificate_is_refused_once_the_crl_reloads() {
    let dir = TempDir::new("tls-crl").expect("dir");
    let issued = certs(&dir.0);
    let crl = swarm_cli::certs::revoke(&dir.0, &[]).expect("an empty CRL");
    let tls = ServerTls::grpc(TlsFiles {
        cert: issued.server_cert.clone(),
        key: issued.server_key.clone(),
        client_ca: Some(issued.ca.clone()),
        crl: Some(crl),
    })
    .expect("server TLS");
    let mut opts = EmbeddedOptions { workers: 0, ..Default::default() };
    opts.coordinator.auth = auth();
    opts.tls = Some(tls.clone());
    let cluster = Embedded::start(opts).await.expect("cluster");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut reloads = tls.reloads();
    tls.watch(Duration::from_millis(50), stop.clone());
    let works = |name: &'static str| {
        let (url, tls) = (cluster.url(), client_tls(&issued, Some(name)));
        async move {
            match client::connect_with(&url, None, &tls).await {
                Err(_) => None,
                Ok(mut c) => Some(c.list_runs(pb::ListRunsRequest::default()).await.map(|_| ()).map_err(|s| s.code())),
            }
        }
    };
    assert_eq!(works("ci-bot").await, Some(Ok(())), "before the revocation");
    swarm_cli::certs::revoke(&dir.0, &["ci-bot".into()]).expect("revoked");
    tokio::time::timeout(Duration::from_secs(10), reloads.changed()).await.expect("reloaded").expect("watch");
    let after = works("ci-bot").await;
    assert!(!matches!(after, Some(Ok(()))), "a revoked certificate still works: {after:?}");
    // Another certificate of the same CA still gets through the handshake (pool-a may not list).
    assert_eq!(works("pool-a").await, Some(Err(Code::PermissionDenied)));
    stop.cancel();
    cluster.stop().await;
}

#[tokio::test]
async fn a_rotated_server_certificate_is_served_without_a_restart() {
    let dir = TempDir::new("tls").expect("dir");
    let first = certs(&dir.0);
    let tls = ServerTls::grpc(TlsFiles {
        cert: first.server_cert.clone(),
        key: first.server_key.clone(),
        client_ca: None,
        crl: None,
    })
    .expect("server TLS");
    let mut opts = EmbeddedOptions { workers: 1, slots: 2, ..Default::default() };
    opts.tls = Some(tls.clone());
    let cluster = Embedded::start(opts).await.expect("cluster");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut reloads = tls.reloads();
    tls.watch(Duration::from_millis(50), stop.clone());
    let old_ca = ClientTls { ca: Some(first.ca.clone()), ..Default::default() };
    let mut c = client::connect_with(&cluster.url(), None, &old_ca).await.expect("trusts the first CA");
    assert_eq!(submit_and_wait(&mut c, "before").await.state, pb::RunState::Succeeded as i32);
    // --tls-server-name: the certificate is checked for that name instead of the URL's host.
    let named = |name: &str| ClientTls { server_name: Some(name.into()), ..old_ca.clone() };
    let mut by_name = client::connect_with(&cluster.url(), None, &named("localhost")).await.expect("localhost");
    by_name.list_runs(pb::ListRunsRequest::default()).await.expect("the certificate names localhost");
    let other = match client::connect_with(&cluster.url(), None, &named("coordinator.example")).await {
        Err(_) => false,
        Ok(mut c) => c.list_runs(pb::ListRunsRequest::default()).await.is_ok(),
    };
    assert!(!other, "a certificate was accepted for a name it does not carry");

    // A new CA issues a new server certificate, written over the files in use.
    let next_dir = TempDir::new("tls-next").expect("dir");
    let next = certs(&next_dir.0);
    // A half-written key first: the server keeps the certificate it has.
    std::fs::write(&first.server_key, b"-----BEGIN PRIVATE KEY-----\ngarbage").expect("write");
    std::fs::copy(&next.server_cert, &first.server_cert).expect("copy");
    tokio::time::sleep(Duration::from_millis(200)).await; // several checks: none may take the bad files
    assert_eq!(*reloads.borrow_and_update(), 0, "bad files were loaded");
    let mut again =
        client::connect_with(&cluster.url(), None, &old_ca).await.expect("the old certificate is still served");
    again.list_runs(pb::ListRunsRequest::default()).await.expect("served");
    std::fs::copy(&next.server_key, &first.server_key).expect("copy");
    tokio::time::timeout(Duration::from_secs(10), reloads.changed()).await.expect("reloaded").expect("watch");

    let new_ca = ClientTls { ca: Some(next.ca.clone()), ..Default::default() };
    let mut c = client::connect_with(&cluster.url(), None, &new_ca).await.expect("trusts the new CA");
    assert_eq!(submit_and_wait(&mut c, "after").await.state, pb::RunState::Succeeded as i32);
    let old = match client::connect_with(&cluster.url(), None, &old_ca).await {
        Err(_) => false,
        Ok(mut c) => c.list_runs(pb::ListRunsRequest::default()).await.is_ok(),
    };
    assert!(!old, "the old certificate is still served after the reload");
    stop.cancel();
    cluster.stop().await;
}

/// etcd with TLS, client certificates and its own authentication; a user whose role covers only
/// Swarm's prefix.
#[tokio::test]
async fn the_cluster_runs_on_etcd_with_tls_client_certificates_and_auth() {
    let dir = TempDir::new("tls-etcd").expect("dir");
    let issued = generate(&dir.0, &["127.0.0.1".into(), "localhost".into()], &["root".into(), "swarm".into()], 2)
        .expect("certs");
    let as_user = |user: &str| {
        let (_, cert, key) = issued.clients.iter().find(|(n, _, _)| n == user).expect("cert").clone();
        swarm_store::EtcdSecurity {
            ca: Some(issued.ca.clone()),
            cert: Some(cert),
            key: Some(key),
            user: None,
            password: None,
        }
    };
    let etcd = EtcdCluster::start_tls(&issued.ca, &issued.server_cert, &issued.server_key, as_user("root"))
        .await
        .expect("etcd with TLS");
    // Users, a role on Swarm's prefix, then auth on (the root user must exist first).
    let root_security = as_user("root");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&issued.ca).expect("ca")))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(root_security.cert.as_ref().expect("cert")).expect("cert"),
            std::fs::read(root_security.key.as_ref().expect("key")).expect("key"),
        ));
    let mut admin =
        etcd_client::Client::connect(etcd.endpoints(), Some(etcd_client::ConnectOptions::new().with_tls(tls)))
            .await
            .expect("admin client");
    admin.user_add("root", "root-password-123", None).await.expect("root");
    admin.user_grant_role("root", "root").await.expect("root role");
    admin.user_add("swarm", "swarm-password-123", None).await.expect("user");
    admin.role_add("swarm").await.expect("role");
    let perm = etcd_client::Permission::read_write("/swarm/").with_prefix();
    admin.role_grant_permission("swarm", perm).await.expect("grant");
    admin.user_grant_role("swarm", "swarm").await.expect("grant role");
    admin.auth_enable().await.expect("auth on");

    let security = swarm_store::EtcdSecurity {
        user: Some("swarm".into()),
        password: Some("swarm-password-123".into()),
        ..as_user("swarm")
    };
    let endpoints = etcd.endpoints();
    // The wrong password, no client certificate, or plaintext: no store.
    let wrong = swarm_store::EtcdSecurity { password: Some("nope".into()), ..security.clone() };
    assert!(swarm_store::EtcdStore::connect_with(&endpoints, Duration::from_secs(3), &wrong).await.is_err());
    let no_cert = swarm_store::EtcdSecurity { cert: None, key: None, ..security.clone() };
    let reached = match swarm_store::EtcdStore::connect_with(&endpoints, Duration::from_secs(3), &no_cert).await {
        Err(_) => false,
        Ok(s) => swarm_store::StateStore::get(&s, b"/swarm/v1/probe").await.is_ok(),
    };
    assert!(!reached, "etcd answered a client without a certificate");
    // The user's role stops at Swarm's prefix.
    let store =
        swarm_store::EtcdStore::connect_with(&endpoints, Duration::from_secs(5), &security).await.expect("store");
    let outside =
        swarm_store::StateStore::commit(&store, swarm_store::Txn::new().then(swarm_store::Op::put("/elsewhere", "x")))
            .await;
    assert!(outside.is_err(), "the swarm user wrote outside its prefix");

    // A whole cluster on it: coordinator (API over TLS), worker finding it through etcd.
    let store: Arc<dyn swarm_store::StateStore> = Arc::new(store);
    let mut opts = EmbeddedOptions { workers: 1, slots: 4, ..Default::default() };
    opts.coordinator.payloads = swarm_store::payload::PayloadStore::memory(swarm_store::payload::DEFAULT_THRESHOLD);
    opts.tls = Some(
        ServerTls::grpc(TlsFiles {
            cert: issued.server_cert.clone(),
            key: issued.server_key.clone(),
            client_ca: None,
            crl: None,
        })
        .expect("server TLS"),
    );
    opts.worker_tls = Some(ClientTls { ca: Some(issued.ca.clone()), ..Default::default() });
    let cluster = Embedded::start_on(opts, store, None).await.expect("cluster on secured etcd");
    cluster.wait_for_workers(1, Duration::from_secs(10)).await.expect("worker");
    let mut c =
        client::connect_with(&cluster.url(), None, &ClientTls { ca: Some(issued.ca.clone()), ..Default::default() })
            .await
            .expect("client");
    let run = submit_and_wait(&mut c, "on-secure-etcd").await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    // The run is in etcd, under the prefix, read back with the user's credentials.
    let check =
        swarm_store::EtcdStore::connect_with(&endpoints, Duration::from_secs(5), &security).await.expect("store");
    let page = swarm_store::StateStore::range(&check, b"/swarm/v1/", None, 10_000).await.expect("read back");
    assert!(
        page.kvs.iter().any(|kv| String::from_utf8_lossy(&kv.value).contains("on-secure-etcd")),
        "the run is not in etcd"
    );
    cluster.stop().await;
}

/// The flags, end to end, as an operator types them: `swarm certs`, `swarm up` with mTLS and
/// an auth file naming certificates, a separate `swarm worker` and `swarm submit` over https.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_serves_and_calls_over_mtls() {
    use swarm_tests::process::{SwarmProcess, swarm_bin};
    let dir = TempDir::new("tls-cli").expect("dir");
    let bin = swarm_bin().expect("swarm");
    let d = dir.0.display().to_string();
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(&bin).args(&args).output().expect("swarm runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) =
        run(["certs", "--dir", &d, "--host", "127.0.0.1", "--client", "ci-bot,pool-a"].map(String::from).to_vec());
    assert_eq!(code, Some(0), "{out}{err}");
    let p = |f: &str| dir.0.join(f).display().to_string();
    std::fs::write(dir.0.join("auth.yaml"), AUTH.replace("OPS", &token_sha256("ops-token-0123456789"))).expect("auth");
    let port = swarm_tests::etcd::free_port().expect("port");
    let url = format!("https://127.0.0.1:{port}");
    let args: Vec<String> = [
        "up",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--workers",
        "0",
        "--auth-file",
        &p("auth.yaml"),
        "--tls-cert",
        &p("server.pem"),
        "--tls-key",
        &p("server.key"),
        "--tls-client-ca",
        &p("ca.pem"),
    ]
    .map(String::from)
    .to_vec();
    let mut up = SwarmProcess::spawn("up-tls", &args, &dir.0).expect("spawn up");
    let worker_args: Vec<String> = [
        "worker",
        "--coordinator",
        &url,
        "--id",
        "pool-a-1",
        "--slots",
        "2",
        "--tls-ca",
        &p("ca.pem"),
        "--tls-cert",
        &p("pool-a.pem"),
        "--tls-key",
        &p("pool-a.key"),
    ]
    .map(String::from)
    .to_vec();
    let mut worker = SwarmProcess::spawn("worker-tls", &worker_args, &dir.0).expect("spawn worker");
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small.yaml").display().to_string();
    let submit = |extra: &[&str]| {
        let mut a: Vec<String> = ["submit", &spec, "--addr", &url, "--wait", "--json"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        run(a)
    };
    // Until the coordinator serves and the worker joined, the run waits or the connect fails.
    let client_flags = ["--tls-ca", &p("ca.pem"), "--tls-cert", &p("ci-bot.pem"), "--tls-key", &p("ci-bot.key")];
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let summary = loop {
        let (code, out, err) = submit(&client_flags);
        if code == Some(0) {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no run over mTLS: {out}{err}\n{}\n{}",
            up.log_text(),
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let json: serde_json::Value = serde_json::from_str(summary.trim()).expect("json");
    assert_eq!(json["state"], "SUCCEEDED", "{json}");
    // Without a client certificate the CLI fails and says so.
    let (code, _, err) = submit(&["--tls-ca", &p("ca.pem")]);
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot reach") || err.contains("error"), "{err}");
    worker.kill();
    up.signal("TERM").expect("TERM");
    assert_eq!(up.wait_exit(Duration::from_secs(20)).await.expect("exit"), Some(0), "{}", up.log_text());
}

/// A coordinator on `etcd` serving its API over mTLS with auth, forwarding as a standby with
/// `peer`.
async fn mtls_coordinator(
    issued: &Issued,
    etcd: &EtcdCluster,
    payloads: &Path,
    peer: &tonic::transport::ClientTlsConfig,
    standby: bool,
) -> Embedded {
    let mut opts = EmbeddedOptions { workers: 0, standby, ..Default::default() };
    opts.coordinator.auth = auth();
    opts.coordinator.payloads =
        swarm_store::payload::PayloadStore::local(payloads, swarm_store::payload::DEFAULT_THRESHOLD).expect("payloads");
    opts.coordinator.peer_tls = Some(peer.clone());
    opts.tls = Some(mtls_server(issued));
    let store = swarm_store::EtcdStore::connect(&etcd.endpoints(), Duration::from_secs(5)).await.expect("store");
    Embedded::start_on(opts, Arc::new(store), None).await.expect("coordinator")
}

/// Two coordinators on etcd, their API over mTLS with auth: a standby forwards a caller's call
/// to the leader presenting its own certificate (the leader requires client certificates) with
/// the caller's token, which the leader checks again. A caller known only by its certificate
/// is named for the leader (the coordinators are `peer`s in the auth file); a caller that
/// names someone itself is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_over_mtls_with_the_callers_token() {
    let dir = TempDir::new("tls-forward").expect("dir");
    let issued = certs(&dir.0);
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let payloads = dir.0.join("payloads");
    let peer = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&issued.ca).expect("ca")))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&issued.server_cert).expect("cert"),
            std::fs::read(&issued.server_key).expect("key"),
        ));
    let mut leader = mtls_coordinator(&issued, &etcd, &payloads, &peer, false).await;
    let mut config = WorkerConfig::new(leader.url());
    config.worker_id = "pool-a-1".into();
    config.slots = 4;
    config.tls = client_tls(&issued, Some("pool-a"));
    leader.add_worker_with(config, Arc::new(ToolRegistry::builtin()));
    leader.wait_for_workers(1, Duration::from_secs(10)).await.expect("worker");
    let standby = mtls_coordinator(&issued, &etcd, &payloads, &peer, true).await;

    // An operator with a token (and a certificate, as the API requires) at the standby.
    let ops = ClientTls { ca: Some(issued.ca.clone()), ..client_tls(&issued, Some("stranger")) };
    let mut c = client::connect_with(&standby.url(), Some("ops-token-0123456789"), &ops).await.expect("client");
    let run = submit_and_wait(&mut c, "forwarded-over-mtls").await;
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");

    // ci-bot is known by its certificate alone: the standby names it, as ci-bot (tenant acme:
    // it sees its own runs, not the operator's), and ci-bot's roles apply at the leader.
    let mut bot =
        client::connect_with(&standby.url(), None, &client_tls(&issued, Some("ci-bot"))).await.expect("client");
    let listed = bot.list_runs(pb::ListRunsRequest::default()).await.expect("forwarded").into_inner();
    assert!(listed.runs.iter().all(|r| r.run_id != run.run_id), "ci-bot saw another tenant's run: {listed:?}");
    let mine = submit_and_wait(&mut bot, "cert-only-through-the-standby").await;
    assert_eq!(mine.state, pb::RunState::Succeeded as i32, "{mine:?}");
    let denied = bot
        .cancel_run(pb::CancelRunRequest { run_id: mine.run_id.clone(), reason: "probe".into() })
        .await
        .expect_err("ci-bot holds no cancel role");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // A caller that is no peer cannot name someone else, at the leader or at the standby.
    for url in [leader.url(), standby.url()] {
        let mut forger = client::connect_with(&url, None, &client_tls(&issued, Some("ci-bot"))).await.expect("client");
        let mut req = tonic::Request::new(pb::ListRunsRequest::default());
        req.metadata_mut().insert(swarm_coordinator::auth::ON_BEHALF_OF, "ops".parse().expect("value"));
        let refused = forger.list_runs(req).await.expect_err("forged");
        assert_eq!(refused.code(), Code::Unauthenticated, "{url}: {refused:?}");
    }
    standby.stop().await;
    leader.stop().await;
}
