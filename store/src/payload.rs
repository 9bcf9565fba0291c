//! Payload offload (claim check): values too big for the control plane — large tool outputs,
//! large specs — go to an object store, and the state store keeps only a reference.
//!
//! The backend is the `object_store` crate: a local directory by default (`file:///path` or a
//! plain path), or an S3-compatible bucket (`s3://bucket/prefix`: AWS, SeaweedFS, MinIO, …).
//! References are object paths (`payloads/{run}/…`); deleting a run deletes its prefix.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::types::StoreError;

/// Values above this many bytes are offloaded by default (64 KiB).
pub const DEFAULT_THRESHOLD: usize = 64 * 1024;

/// An object store for payloads, with the size threshold for offloading.
#[derive(Clone)]
pub struct PayloadStore {
    objects: Arc<dyn ObjectStore>,
    threshold: usize,
}

impl std::fmt::Debug for PayloadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PayloadStore({}, threshold {})", self.objects, self.threshold)
    }
}

fn err(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { path, .. } => StoreError::Other(format!("payload {path} not found")),
        other => StoreError::Unavailable(format!("payload store: {other}")),
    }
}

impl PayloadStore {
    /// Payloads in a local directory (created if missing).
    pub fn local(dir: &Path, threshold: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(format!("creating {}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StoreError::Other(format!("payload dir {}: {e}", dir.display())))?;
        Ok(Self { objects: Arc::new(fs), threshold })
    }

    /// Payloads in memory (tests, the embedded default).
    pub fn memory(threshold: usize) -> Self {
        Self { objects: Arc::new(object_store::memory::InMemory::new()), threshold }
    }

    /// Payloads in an S3-compatible bucket, under `prefix`. Credentials, region and endpoint come
    /// from the usual AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`/`AWS_REGION`, web identity, ECS roles), and
    /// `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`) names a store other than AWS (path-style
    /// requests; plain `http://` is allowed only when the endpoint says so).
    pub fn s3(bucket: &str, prefix: &str, threshold: usize) -> Result<Self, StoreError> {
        // Its HTTP client speaks TLS through rustls: ring, as everywhere in Swarm.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok()
            .filter(|e| !e.trim().is_empty());
        if let Some(endpoint) = endpoint {
            builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
        }
        if let Ok(region) = std::env::var("AWS_REGION") {
            builder = builder.with_region(region);
        }
        let s3 = builder.build().map_err(|e| StoreError::Other(format!("s3://{bucket}: {e}")))?;
        Ok(Self::with_objects(Box::new(s3), prefix, threshold))
    }

    /// Payloads in any `object_store` backend, under `prefix` (none when empty).
    pub fn with_objects(objects: Box<dyn ObjectStore>, prefix: &str, threshold: usize) -> Self {
        let objects: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => Arc::from(objects),
            p => Arc::new(object_store::prefix::PrefixStore::new(objects, p)),
        };
        Self { objects, threshold }
    }

    /// Payloads at a URL: `file:///dir`, a plain directory, `memory://`, or
    /// `s3://bucket/prefix` (see [`Self::s3`]).
    pub fn from_url(url: &str, threshold: usize) -> Result<Self, StoreError> {
        if let Some(dir) = url.strip_prefix("file://") {
            return Self::local(Path::new(dir), threshold);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Other(format!("`{url}`: s3://BUCKET[/PREFIX]")));
            }
            return Self::s3(bucket, prefix, threshold);
        }
        if url == "memory://" {
            return Ok(Self::memory(threshold));
        }
        if !url.contains("://") {
            return Self::local(Path::new(url), threshold);
        }
        Err(StoreError::Other(format!(
            "unsupported payload store `{url}` (a directory, file:///dir, s3://bucket/prefix or memory://)"
        )))
    }

    /// True when a value of `len` bytes should be offloaded.
    pub fn should_offload(&self, len: usize) -> bool {
        len > self.threshold
    }

    /// Stores a value; returns its reference.
    pub async fn put(&self, path: &str, value: Bytes) -> Result<String, StoreError> {
        let p = ObjectPath::parse(path).map_err(|e| StoreError::Other(format!("payload path {path}: {e}")))?;
        self.objects.put(&p, value.into()).await.map_err(err)?;
        Ok(path.to_owned())
    }

    /// Reads a value by reference.
    pub async fn get(&self, reference: &str) -> Result<Bytes, StoreError> {
        let p =
            ObjectPath::parse(reference).map_err(|e| StoreError::Other(format!("payload path {reference}: {e}")))?;
        self.objects.get(&p).await.map_err(err)?.bytes().await.map_err(err)
    }

    /// A writer of a value at `path` of `len` bytes (known beforehand): small values are
    /// buffered and put at once, large ones go up in parts as they come.
    pub async fn writer(&self, path: &str, len: u64) -> Result<PayloadWriter, StoreError> {
        let p = ObjectPath::parse(path).map_err(|e| StoreError::Other(format!("payload path {path}: {e}")))?;
        let inner = if len <= SINGLE_PUT_MAX {
            WriterKind::Buffer(bytes::BytesMut::with_capacity(len as usize))
        } else {
            WriterKind::Parts(Box::new(object_store::WriteMultipart::new(
                self.objects.put_multipart(&p).await.map_err(err)?,
            )))
        };
        Ok(PayloadWriter { objects: self.objects.clone(), path: p, inner })
    }

    /// Reads a value by reference as a stream of chunks.
    pub async fn get_stream(
        &self,
        reference: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let p =
            ObjectPath::parse(reference).map_err(|e| StoreError::Other(format!("payload path {reference}: {e}")))?;
        let got = self.objects.get(&p).await.map_err(err)?;
        Ok(got.into_stream().map(|r| r.map_err(err)).boxed())
    }

    /// Deletes every value under a prefix.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let p = ObjectPath::parse(prefix).map_err(|e| StoreError::Other(format!("payload path {prefix}: {e}")))?;
        let mut listing = self.objects.list(Some(&p));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(err)?;
            self.objects.delete(&meta.location).await.map_err(err)?;
        }
        Ok(())
    }
}

/// Values up to this size are put in one request (larger ones in parts).
const SINGLE_PUT_MAX: u64 = 8 << 20;

/// A value being written ([`PayloadStore::writer`]).
pub struct PayloadWriter {
    objects: Arc<dyn ObjectStore>,
    path: ObjectPath,
    inner: WriterKind,
}

enum WriterKind {
    Buffer(bytes::BytesMut),
    Parts(Box<object_store::WriteMultipart>),
}

impl PayloadWriter {
    /// Adds bytes (waiting while too many parts are in flight).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match &mut self.inner {
            WriterKind::Buffer(b) => b.extend_from_slice(data),
            WriterKind::Parts(w) => {
                w.wait_for_capacity(4).await.map_err(err)?;
                w.write(data);
            }
        }
        Ok(())
    }

    /// Stores what was written.
    pub async fn finish(self) -> Result<(), StoreError> {
        match self.inner {
            WriterKind::Buffer(b) => self.objects.put(&self.path, b.freeze().into()).await.map(drop).map_err(err),
            WriterKind::Parts(w) => w.finish().await.map(drop).map_err(err),
        }
    }

    /// Gives up: nothing is stored.
    pub async fn abort(self) {
        if let WriterKind::Parts(w) = self.inner {
            let _ = w.abort().await;
        }
    }
}

/// An object path with each component encoded as the store needs (`run`, `subtask`, … and a
/// `/`-separated relative `path` whose components were checked).
pub fn object_path<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let parts = parts.into_iter().flat_map(|p| p.split('/')).map(object_store::path::PathPart::from);
    ObjectPath::from_iter(parts).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_round_trip_and_prefixes_delete() {
        let dir = std::env::temp_dir().join(format!("swarm-payload-{}", std::process::id()));
        let store = PayloadStore::local(&dir, 10).expect("local");
        assert!(store.should_offload(11) && !store.should_offload(10));
        let big = Bytes::from(vec![b'x'; 10 * 1024 * 1024]);
        let r = store.put("payloads/r1/a/1", big.clone()).await.expect("put");
        store.put("payloads/r2/a/1", Bytes::from_static(b"keep")).await.expect("put");
        assert_eq!(store.get(&r).await.expect("get"), big);
        store.delete_prefix("payloads/r1").await.expect("delete");
        assert!(store.get(&r).await.is_err());
        assert_eq!(store.get("payloads/r2/a/1").await.expect("kept"), Bytes::from_static(b"keep"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn large_values_go_up_in_parts_and_stream_back() {
        let store = PayloadStore::memory(10);
        for len in [3u64, SINGLE_PUT_MAX + 1] {
            let key = object_path(["payloads", "r", "a:1", &format!("d/{len} x.bin")]);
            let mut w = store.writer(&key, len).await.expect("writer");
            let data = vec![7u8; len as usize];
            for chunk in data.chunks(1 << 20) {
                w.write(chunk).await.expect("write");
            }
            w.finish().await.expect("finish");
            let mut got = Vec::new();
            let mut s = store.get_stream(&key).await.expect("stream");
            while let Some(c) = s.next().await {
                got.extend_from_slice(&c.expect("chunk"));
            }
            assert_eq!(got, data);
        }
    }
}
