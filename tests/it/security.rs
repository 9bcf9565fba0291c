//! Authentication, roles and tenants over real gRPC: every RPC with no credentials, the wrong
//! role, another tenant's principal and the right one; workers that claim an identity that is
//! not theirs; a coordinator that would listen on the network without an auth file.

use std::time::Duration;

use swarm_cli::client::{self, Client};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::auth::{Authenticator, token_sha256};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::wait_done;
use tonic::Code;

/// (name, tenant, roles, token)
pub(crate) const PRINCIPALS: &[(&str, &str, &str, &str)] = &[
    ("acme-bot", "acme", "[submit, read, cancel]", "tok-acme"),
    ("acme-viewer", "acme", "[read]", "tok-viewer"),
    ("beta-bot", "beta", "[submit, read, cancel]", "tok-beta"),
    ("pool-a", "", "[worker]", "tok-pool-a"),
    ("pool-b", "", "[worker]", "tok-pool-b"),
    ("ops", "", "[admin]", "tok-ops"),
];

fn auth_file() -> String {
    auth_file_of(PRINCIPALS)
}

/// An auth file of token principals: (name, tenant or "", roles, token).
pub(crate) fn auth_file_of(principals: &[(&str, &str, &str, &str)]) -> String {
    let mut out = String::from("principals:\n");
    for (name, tenant, roles, token) in principals {
        let tenant = if tenant.is_empty() { String::new() } else { format!("tenant: {tenant}, ") };
        out += &format!("  - {{name: {name}, {tenant}roles: {roles}, token_sha256: \"{}\"}}\n", token_sha256(token));
    }
    out
}

async fn cluster() -> Embedded {
    let mut opts = EmbeddedOptions { workers: 1, slots: 4, ..Default::default() };
    opts.coordinator.auth = Authenticator::parse(&auth_file()).expect("auth file");
    Embedded::start(opts).await.expect("cluster")
}

async fn as_(cluster: &Embedded, token: Option<&str>) -> Client {
    client::connect_with(&cluster.url(), token, &Default::default()).await.expect("client")
}

fn spec(name: &str) -> RunSpec {
    RunSpec::new(name, vec![SubtaskSpec::tool("a", "echo", serde_json::json!({"text": "hi"}))])
}

fn submit_req(name: &str, key: &str) -> pb::SubmitRunRequest {
    pb::SubmitRunRequest { spec: Some((&spec(name)).into()), idempotency_key: key.into(), ..Default::default() }
}

/// The code of every client RPC on `run_id` as the caller of `c`.
async fn codes(c: &mut Client, run_id: &str) -> [Code; 6] {
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let get = c.get_run(pb::GetRunRequest { run_id: run_id.into(), ..Default::default() }).await.map(|_| ());
    let list = c.list_runs(pb::ListRunsRequest::default()).await.map(|_| ());
    let watch = c
        .watch_run(pb::WatchRunRequest { run_id: run_id.into(), after_seq: u64::MAX, ..Default::default() })
        .await
        .map(|_| ());
    let workers = c.list_workers(pb::ListWorkersRequest {}).await.map(|_| ());
    let submit = c.submit_run(submit_req("probe", "")).await.map(|_| ());
    let cancel = c.cancel_run(pb::CancelRunRequest { run_id: run_id.into(), reason: "probe".into() }).await.map(|_| ());
    [code(submit), code(get), code(list), code(watch), code(workers), code(cancel)]
}

#[tokio::test]
async fn every_rpc_checks_credentials_roles_and_tenants() {
    let cluster = cluster().await;
    let mut acme = as_(&cluster, Some("tok-acme")).await;
    let run_id = acme.submit_run(submit_req("acme-run", "")).await.expect("submit").into_inner().run_id;
    wait_done(&mut acme, &run_id, Duration::from_secs(10)).await.expect("runs");

    // [submit, get, list, watch, workers, cancel]; cancel of an ended run: FAILED_PRECONDITION.
    let unauth = [Code::Unauthenticated; 6];
    assert_eq!(codes(&mut as_(&cluster, None).await, &run_id).await, unauth, "no credentials");
    assert_eq!(codes(&mut as_(&cluster, Some("tok-nobody")).await, &run_id).await, unauth, "an unknown token");
    let denied = Code::PermissionDenied;
    assert_eq!(
        codes(&mut as_(&cluster, Some("tok-viewer")).await, &run_id).await,
        [denied, Code::Ok, Code::Ok, Code::Ok, Code::Ok, denied],
        "a reader reads and does nothing else"
    );
    assert_eq!(
        codes(&mut as_(&cluster, Some("tok-pool-a")).await, &run_id).await,
        [denied; 6],
        "a worker is no client"
    );
    assert_eq!(
        codes(&mut as_(&cluster, Some("tok-beta")).await, &run_id).await,
        [Code::Ok, Code::NotFound, Code::Ok, Code::NotFound, Code::Ok, Code::NotFound],
        "another tenant's run does not exist for it"
    );
    assert_eq!(
        codes(&mut acme, &run_id).await,
        [Code::Ok, Code::Ok, Code::Ok, Code::Ok, Code::Ok, Code::FailedPrecondition],
        "its own run"
    );
    assert_eq!(
        codes(&mut as_(&cluster, Some("tok-ops")).await, &run_id).await,
        [Code::Ok, Code::Ok, Code::Ok, Code::Ok, Code::Ok, Code::FailedPrecondition],
        "an administrator sees every tenant"
    );

    // Listings show one's own tenant's runs; an administrator's shows all.
    let names = |runs: Vec<pb::Run>| {
        let mut n: Vec<String> = runs.into_iter().map(|r| r.name).collect();
        n.sort();
        n.dedup();
        n
    };
    let mut beta = as_(&cluster, Some("tok-beta")).await;
    let listed = beta.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert!(listed.iter().all(|r| r.tenant == "beta"), "beta sees only its runs");
    let all = as_(&cluster, Some("tok-ops")).await.list_runs(pb::ListRunsRequest::default()).await.expect("list");
    assert_eq!(names(all.into_inner().runs), ["acme-run", "probe"]);

    // Idempotency keys are per tenant: the same key names two runs, one per tenant.
    let a = acme.submit_run(submit_req("keyed", "job-1")).await.expect("acme").into_inner();
    let b = beta.submit_run(submit_req("keyed", "job-1")).await.expect("beta").into_inner();
    assert!(a.created && b.created && a.run_id != b.run_id);
    let again = acme.submit_run(submit_req("keyed", "job-1")).await.expect("acme again").into_inner();
    assert_eq!((again.created, again.run_id), (false, a.run_id));
    let reserved = acme.submit_run(submit_req("keyed", "tenant:beta/job-1")).await.expect_err("reserved prefix");
    assert_eq!(reserved.code(), Code::InvalidArgument);
    cluster.stop().await;
}

/// Opens a worker stream as `token` with `worker_id`; returns the first thing the coordinator
/// sends (a welcome, or the refusal).
pub(crate) async fn worker_hello(cluster: &Embedded, token: Option<&str>, worker_id: &str) -> Result<(), Code> {
    let channel =
        tonic::transport::Endpoint::from_shared(cluster.url()).expect("url").connect().await.expect("connect");
    let mut client = pb::worker_service_client::WorkerServiceClient::new(channel);
    let hello = pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Hello(pb::WorkerHello {
            worker_id: worker_id.into(),
            slots: 1,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.expect("queued");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("ascii"));
    }
    let mut inbound = client.connect(request).await.map_err(|s| s.code())?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await.expect("an answer");
    drop(tx);
    match first {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Code::Unknown),
        Err(s) => Err(s.code()),
    }
}

#[tokio::test]
async fn workers_must_be_who_they_say() {
    let cluster = cluster().await;
    assert_eq!(worker_hello(&cluster, None, "w-x").await, Err(Code::Unauthenticated));
    assert_eq!(worker_hello(&cluster, Some("tok-acme"), "w-x").await, Err(Code::PermissionDenied), "a client");
    // The in-process worker (its own principal) holds `embedded-0`: another principal cannot
    // take that id over.
    assert_eq!(worker_hello(&cluster, Some("tok-pool-a"), "embedded-0").await, Err(Code::PermissionDenied));
    assert_eq!(worker_hello(&cluster, Some("tok-pool-a"), "pool-a-1").await, Ok(()), "its own id");
    cluster.stop().await;
}

#[tokio::test]
async fn a_coordinator_refuses_to_listen_on_the_network_without_an_auth_file() {
    let out = std::process::Command::new(swarm_tests::process::swarm_bin().expect("swarm"))
        .args(["coordinator", "--listen", "0.0.0.0:0"])
        .output()
        .expect("ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(stderr.contains("without --auth-file") && stderr.contains("--insecure"), "{stderr}");
}

/// `GET path` on the web view with extra headers; returns the status code.
async fn web_status(addr: std::net::SocketAddr, path: &str, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn the_web_view_asks_for_the_same_credentials() {
    let mut opts = EmbeddedOptions {
        workers: 1,
        slots: 4,
        http_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Default::default()
    };
    opts.coordinator.auth = Authenticator::parse(&auth_file()).expect("auth file");
    let cluster = Embedded::start(opts).await.expect("cluster");
    let http = cluster.http_addr.expect("web view");
    let mut acme = as_(&cluster, Some("tok-acme")).await;
    let run_id = acme.submit_run(submit_req("acme-run", "")).await.expect("submit").into_inner().run_id;
    let run = format!("/api/runs/{run_id}/summary");
    assert_eq!(web_status(http, "/", "").await, 200, "the page itself holds no data");
    assert_eq!(web_status(http, "/metrics", "").await, 200, "metrics stay open");
    assert_eq!(web_status(http, "/api/runs", "").await, 401);
    assert_eq!(web_status(http, &run, "Authorization: Bearer tok-nobody\r\n").await, 401);
    assert_eq!(web_status(http, &run, "Authorization: Bearer tok-acme\r\n").await, 200);
    assert_eq!(
        web_status(http, &run, "Cookie: theme=dark; swarm_token=tok%2Dacme\r\n").await,
        200,
        "the page's cookie"
    );
    assert_eq!(web_status(http, &run, "Authorization: Bearer tok-beta\r\n").await, 404, "another tenant's run");
    assert_eq!(web_status(http, "/api/workers", "Authorization: Bearer tok-pool-a\r\n").await, 403, "a worker");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_store_the_logs_or_the_events() {
    use swarm_tests::fixture::{Canned, ModelFixture, completion};
    let _serial = crate::failover::SERIAL.lock().await;
    const MODEL_KEY: &str = "sk-test-7f3e9a1c5b2d4e6f8091a2b3c4d5e6f7";
    const CLIENT_TOKEN: &str = "client-token-3c1d9e7b5a2f4c6e";
    const WORKER_TOKEN: &str = "worker-token-8a6f4d2b0c9e7a5c";
    let fixture = ModelFixture::start(vec![
        Canned::Status(500, None),
        Canned::Ok(completion(None, vec![("c1", "echo", r#"{"text": "hello"}"#)])),
        Canned::Ok(completion(Some("done"), vec![])),
    ])
    .await
    .expect("fixture");
    let etcd = swarm_tests::etcd::EtcdCluster::start(1).await.expect("etcd");
    let dir = swarm_tests::etcd::TempDir::new("secrets").expect("dir");
    let auth = format!(
        "principals:\n  - {{name: app, tenant: t1, roles: [submit, read], token_sha256: \"{}\"}}\n  - {{name: pool, roles: [worker], token_sha256: \"{}\"}}\n",
        token_sha256(CLIENT_TOKEN),
        token_sha256(WORKER_TOKEN)
    );
    std::fs::write(dir.0.join("auth.yaml"), auth).expect("auth file");
    let models = format!(
        "fixture:\n  base_url: {}\n  model: m\n  api_key_env: SWARM_TEST_MODEL_KEY\n  max_retries: 2\n",
        fixture.base_url()
    );
    std::fs::write(dir.0.join("models.yaml"), models).expect("models file");
    let port = swarm_tests::etcd::free_port().expect("port");
    let url = format!("http://127.0.0.1:{port}");
    let endpoints = etcd.endpoints().join(",");
    let debug = [("SWARM_LOG", "debug")];
    let coordinator_args: Vec<String> = ["coordinator", "--listen", &format!("127.0.0.1:{port}"), "--etcd", &endpoints]
        .into_iter()
        .map(String::from)
        .chain(["--auth-file".to_owned(), dir.0.join("auth.yaml").display().to_string()])
        .collect();
    let coordinator = swarm_tests::process::SwarmProcess::spawn_env("coordinator", &coordinator_args, &debug, &dir.0)
        .expect("coordinator");
    let worker_args: Vec<String> = ["worker", "--id", "w0", "--etcd", &endpoints, "--token", WORKER_TOKEN]
        .into_iter()
        .map(String::from)
        .chain(["--models".to_owned(), dir.0.join("models.yaml").display().to_string()])
        .collect();
    let worker_env = [("SWARM_LOG", "debug"), ("SWARM_TEST_MODEL_KEY", MODEL_KEY)];
    let worker =
        swarm_tests::process::SwarmProcess::spawn_env("worker", &worker_args, &worker_env, &dir.0).expect("worker");

    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Ok(mut c) = client::connect_with(&url, Some(CLIENT_TOKEN), &Default::default()).await
            && c.list_workers(pb::ListWorkersRequest {}).await.is_ok_and(|w| !w.into_inner().workers.is_empty())
        {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no worker joined\n{}\n{}",
            coordinator.log_text(),
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let agent = SubtaskSpec {
        retry: None,
        outputs: Default::default(),
        id: "a".into(),
        kind: swarm_core::SubtaskKind::Agent(swarm_core::agent::AgentSpec {
            instructions: "Be brief.".into(),
            input: "say hello".into(),
            model: "fixture".into(),
            tools: vec!["echo".into()],
            max_steps: None,
        }),
        depends_on: vec![],
        timeout: None,
        placement: None,
    };
    let run_id = c
        .submit_run(pb::SubmitRunRequest {
            spec: Some((&RunSpec::new("secret-run", vec![agent])).into()),
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .run_id;
    let run = wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{}", worker.log_text());
    assert!(
        fixture.seen().iter().all(|s| s.authorization.as_deref() == Some(&format!("Bearer {MODEL_KEY}"))),
        "the key was used for every model call"
    );

    // Everything the cluster wrote or said: the whole key space, both logs, every event.
    let mut etcd_client = etcd_client::Client::connect(etcd.endpoints(), None).await.expect("etcd client");
    let all = etcd_client.get("\0", Some(etcd_client::GetOptions::new().with_from_key())).await.expect("dump");
    let mut haystack: Vec<(String, String)> = all
        .kvs()
        .iter()
        .map(|kv| {
            (format!("etcd {}", String::from_utf8_lossy(kv.key())), String::from_utf8_lossy(kv.value()).into_owned())
        })
        .collect();
    assert!(haystack.len() > 5, "the run is in the store");
    haystack.push(("coordinator log".into(), coordinator.log_text()));
    haystack.push(("worker log".into(), worker.log_text()));
    let events = wait_for_events_all(&mut c, &run_id).await;
    haystack.push(("events".into(), format!("{events:?}")));
    for secret in [MODEL_KEY, CLIENT_TOKEN, WORKER_TOKEN] {
        for (place, text) in &haystack {
            assert!(!text.contains(secret), "{secret} found in {place}");
        }
    }
}

async fn wait_for_events_all(c: &mut Client, run_id: &str) -> Vec<pb::RunEvent> {
    let mut stream = c
        .watch_run(pb::WatchRunRequest { run_id: run_id.into(), after_seq: 0, ..Default::default() })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut stream)).await
    {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn metrics_can_be_served_alone_on_their_own_address() {
    let dir = swarm_tests::etcd::TempDir::new("metrics").expect("dir");
    let (api, metrics) = (swarm_tests::etcd::free_port().expect("port"), swarm_tests::etcd::free_port().expect("port"));
    let args: Vec<String> =
        ["coordinator", "--listen", &format!("127.0.0.1:{api}"), "--metrics-listen", &format!("127.0.0.1:{metrics}")]
            .map(String::from)
            .to_vec();
    let process = swarm_tests::process::SwarmProcess::spawn("coordinator", &args, &dir.0).expect("coordinator");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{metrics}").parse().expect("addr");
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < until, "no metrics port\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(web_status(addr, "/metrics", "").await, 200);
    assert_eq!(web_status(addr, "/api/runs", "").await, 404, "nothing but the metrics there");
    assert_eq!(web_status(addr, "/", "").await, 404);
}
