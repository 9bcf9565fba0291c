//! Payload offload (claim check): values too big for the control plane — large tool outputs,
//! large specs — go to an object store, and the state store keeps only a reference.
//!
//! The backend is the `object_store` crate: a local directory by default (`file:///path` or a
//! plain path); cloud stores (S3, GCS, Azure) are the same trait behind that crate's features.
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

    /// Payloads at a URL: `file:///dir` or `memory://`. Other schemes need the matching
    /// `object_store` feature, which this build does not enable.
    pub fn from_url(url: &str, threshold: usize) -> Result<Self, StoreError> {
        if let Some(dir) = url.strip_prefix("file://") {
            return Self::local(Path::new(dir), threshold);
        }
        if url == "memory://" {
            return Ok(Self::memory(threshold));
        }
        if !url.contains("://") {
            return Self::local(Path::new(url), threshold);
        }
        Err(StoreError::Other(format!("unsupported payload store `{url}` (file:///dir or memory://)")))
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
}
