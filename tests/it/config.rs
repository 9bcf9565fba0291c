//! Configuration precedence at process level: flags > SWARM_* environment > config file >
//! built-in defaults (docs/configuration.md).

use std::time::Duration;

use swarm_proto::pb;
use swarm_tests::etcd::free_port;
use swarm_tests::process::SwarmProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let dir = std::env::temp_dir().join(format!("swarm-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let [file_grpc, env_grpc, file_http, flag_http] = [(); 4].map(|_| free_port().expect("port"));
    let config = dir.join("swarm.yaml");
    std::fs::write(
        &config,
        format!(
            "lease-ttl: 3s\nup:\n  listen: 127.0.0.1:{file_grpc}\n  workers: 3\n  http-listen: 127.0.0.1:{file_http}\n"
        ),
    )
    .expect("write");
    let env_listen = format!("127.0.0.1:{env_grpc}");
    let mut up = SwarmProcess::spawn_env(
        "up",
        &[
            "up".into(),
            "--config".into(),
            config.display().to_string(),
            "--http-listen".into(),
            format!("127.0.0.1:{flag_http}"),
        ],
        &[("SWARM_LISTEN", env_listen.as_str())],
        &dir,
    )
    .expect("spawn");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut c = loop {
        if let Ok(c) = swarm_cli::client::connect(&format!("http://{env_listen}")).await {
            break c;
        }
        assert!(tokio::time::Instant::now() < until, "nothing on the SWARM_LISTEN address: {}", up.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = c.list_workers(pb::ListWorkersRequest {}).await.map(|r| r.into_inner().workers.len()).unwrap_or(0);
        if n == 3 {
            break;
        }
        assert!(n < 3 && tokio::time::Instant::now() < until, "{n} workers; the file says 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", flag_http)).await.is_ok(), "the flag's HTTP port serves");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", file_http)).await.is_err(), "the file's HTTP port lost");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", file_grpc)).await.is_err(), "the file's gRPC port lost");

    // A typo in the file is a usage error that names the key.
    std::fs::write(&config, "up:\n  worker: 3\n").expect("write");
    let mut bad = SwarmProcess::spawn("bad", &["up".into(), "--config".into(), config.display().to_string()], &dir)
        .expect("spawn");
    assert_eq!(bad.wait_exit(Duration::from_secs(10)).await.expect("exit"), Some(64));
    assert!(bad.log_text().contains("up.worker"), "{}", bad.log_text());

    up.signal("TERM").expect("TERM");
    assert_eq!(up.wait_exit(Duration::from_secs(20)).await.expect("exit"), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
