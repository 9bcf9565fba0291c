//! The deployment files run `swarm` with real command lines: each must parse. (Their syntax is
//! validated by scripts/validate-deploy: docker-compose config, kubectl kustomize +
//! kubernetes-validate, promtool.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use swarm_tests::process::swarm_bin;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `swarm ARGS --help`: clap parses everything before printing help, and a config file
/// given with `--config` is loaded and checked first.
fn parses(args: &[String]) -> String {
    let out = Command::new(swarm_bin().expect("swarm")).args(args).arg("--help").output().expect("run swarm");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`swarm {}` does not parse: {text}", args.join(" "));
    text
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn every_swarm_command_line_in_docker_compose_parses() {
    let checked = compose_commands_parse(&[]);
    assert_eq!(checked, ["coordinator-1", "coordinator-2", "worker"]);
    // With TLS: the one-shot `certs` service too, and the coordinators' TLS flags.
    let checked = compose_commands_parse(&["deploy/compose/tls.yml"]);
    assert_eq!(checked, ["certs", "coordinator-1", "coordinator-2", "worker"]);
}

/// Checks the Swarm services of docker-compose.yml with `overrides`; returns their names.
fn compose_commands_parse(overrides: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("docker-compose");
    cmd.arg("-f").arg(root().join("docker-compose.yml"));
    for o in overrides {
        cmd.arg("-f").arg(root().join(o));
    }
    let out = cmd
        .arg("config")
        .env_remove("SWARM_IMAGE")
        .envs(
            ["SWARM_CLIENT_TOKEN", "SWARM_WORKER_TOKEN", "SWARM_ADMIN_TOKEN", "SWARM_S3_SECRET_KEY"]
                .map(|v| (v, "validate-only-token")),
        )
        .output()
        .expect("docker-compose (./scripts/install-deps test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let compose: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("YAML");
    let mut checked = Vec::new();
    for (name, service) in compose["services"].as_object().expect("services") {
        if service.get("build").is_none() {
            continue; // not the Swarm image
        }
        parses(&strings(&service["command"]));
        checked.push(name.clone());
        if service["restart"] == "no" {
            continue; // a one-shot job: no health to check
        }
        let test = strings(&service["healthcheck"]["test"]);
        assert_eq!(test.get(1).map(String::as_str), Some("swarm"), "{name} checks its health with `swarm healthcheck`");
        parses(&test[2..]);
    }
    checked.sort();
    assert_eq!(compose["services"]["worker"]["deploy"]["replicas"], 3);
    // Payloads in S3 (SeaweedFS), not on a volume every coordinator must share.
    for c in ["coordinator-1", "coordinator-2"] {
        let command = strings(&compose["services"][c]["command"]);
        assert!(command.iter().any(|a| a == "--payloads=s3://swarm/payloads"), "{c}: {command:?}");
        assert_eq!(compose["services"][c]["environment"]["AWS_ENDPOINT_URL"], "http://seaweedfs:8333");
    }
    assert!(strings(&compose["services"]["seaweedfs"]["command"]).iter().any(|a| a == "-bucket=swarm"));
    checked
}

fn render(overlay: &Path) -> Vec<Value> {
    let out =
        Command::new(swarm_tests::process::pytool("kubectl")).arg("kustomize").arg(overlay).output().expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("YAML documents")
}

#[test]
fn every_swarm_container_in_the_kubernetes_overlays_parses_with_its_config_file() {
    let tmp = std::env::temp_dir().join(format!("swarm-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    for overlay in ["dev", "prod"] {
        let docs = render(&root().join("deploy/kubernetes/overlays").join(overlay));
        let config = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "swarm-config")
            .expect("the swarm-config ConfigMap");
        let file = tmp.join(format!("{overlay}.yaml"));
        std::fs::write(&file, config["data"]["swarm.yaml"].as_str().expect("swarm.yaml")).expect("write");
        let mut roles = Vec::new();
        for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
            let spec = &d["spec"]["template"]["spec"];
            let container = &spec["containers"][0];
            assert!(
                container["image"].as_str().is_some_and(|i| i.contains("swarm:")),
                "{overlay}: image set by the overlay"
            );
            let args: Vec<String> = strings(&container["args"])
                .into_iter()
                .map(|a| if a.starts_with("--config=") { format!("--config={}", file.display()) } else { a })
                .collect();
            let help = parses(&args);
            assert!(help.contains("0.0.0.0:7079"), "{overlay}: the config file's health port applies: {help}");
            assert_eq!(container["startupProbe"]["grpc"]["port"], 7079, "gRPC probes on the plaintext health port");
            assert!(spec["terminationGracePeriodSeconds"].as_u64().is_some());
            let labels = &d["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/part-of"], "swarm");
            roles.push(args[0].clone());
        }
        roles.sort();
        assert_eq!(roles, ["coordinator", "worker"], "{overlay}");
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in ["PodDisruptionBudget", "HorizontalPodAutoscaler", "StatefulSet", "Secret", "Service"] {
            assert!(kinds.contains(&kind), "{overlay} has a {kind}: {kinds:?}");
        }
        let coordinators =
            docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "swarm-coordinator");
        assert!(coordinators.and_then(|d| d["spec"]["replicas"].as_u64()).is_some_and(|n| n >= 2));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
