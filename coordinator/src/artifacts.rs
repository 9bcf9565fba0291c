//! Artifacts in transit: a worker's upload of what an attempt hands on
//! (`WorkerService.PutArtifacts`), a worker's download of its dependencies' artifacts
//! (`GetInputArtifact`) and a client's download (`SwarmService.GetArtifact`). The bytes go
//! between the payload store and the stream, a chunk at a time; the manager only says which
//! attempt may do what and keeps the run's quota ([`crate::manager::ArtifactAccess`]).

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use swarm_proto::{ApiError, pb};
use swarm_store::payload::{PayloadStore, object_path};

use crate::manager::{Command, ManagerHandle};

/// Bytes per chunk sent (and at most accepted).
pub const CHUNK_BYTES: usize = 256 * 1024;
/// How long an upload may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream of artifact bytes.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, tonic::Status>> + Send>>;

fn payloads(store: Option<&PayloadStore>) -> Result<&PayloadStore, ApiError> {
    store.ok_or_else(|| ApiError::FailedPrecondition("this coordinator keeps no payload store".into()))
}

fn store_error(e: swarm_store::StoreError) -> ApiError {
    ApiError::Unavailable { message: format!("payload store: {e}"), retry_after: None }
}

/// Checks an upload's header: well-formed, distinct paths, not too many; the bytes it declares.
fn check_header(header: &pb::ArtifactUploadHeader) -> Result<u64, ApiError> {
    use swarm_core::artifact::{MAX_FILES, check_path};
    if header.files.len() > MAX_FILES {
        return Err(ApiError::invalid(
            "header.files",
            format!("{} files exceed the limit of {MAX_FILES}", header.files.len()),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(header.files.len());
    let mut total = 0u64;
    for (i, f) in header.files.iter().enumerate() {
        check_path(&f.path).map_err(|e| ApiError::invalid(format!("header.files[{i}].path"), e))?;
        if !seen.insert(f.path.as_str()) {
            return Err(ApiError::invalid(format!("header.files[{i}].path"), format!("`{}` is listed twice", f.path)));
        }
        total = total.saturating_add(f.size);
    }
    Ok(total)
}

/// Stores an upload's files under its attempt's prefix; answers with their manifest.
pub async fn receive(
    manager: &ManagerHandle,
    store: Option<&PayloadStore>,
    principal: &str,
    mut upload: tonic::Streaming<pb::ArtifactUpload>,
) -> Result<pb::ArtifactManifest, ApiError> {
    let first = tokio::time::timeout(HEADER_TIMEOUT, upload.message())
        .await
        .map_err(|_| ApiError::invalid("header", "not sent within 10 s"))?
        .map_err(|s| ApiError::invalid("header", format!("the stream failed: {}", s.message())))?;
    let header = match first.and_then(|m| m.msg) {
        Some(pb::artifact_upload::Msg::Header(h)) => h,
        _ => return Err(ApiError::invalid("header", "the first message must be the header")),
    };
    let total = check_header(&header)?;
    let payloads = payloads(store)?;
    let (worker_id, fence) = (header.worker_id.clone(), header.fence);
    let access = manager
        .call(|reply| Command::ArtifactAccess {
            worker_id,
            principal: principal.to_owned(),
            fence,
            reserve: total,
            reply,
        })
        .await??;
    let mut artifacts = Vec::with_capacity(header.files.len());
    let mut pending: Option<pb::ArtifactChunk> = None;
    for (i, file) in header.files.into_iter().enumerate() {
        let key = object_path([access.upload_prefix.as_str(), file.path.as_str()]);
        let mut writer = payloads.writer(&key, file.size).await.map_err(store_error)?;
        let mut hash = Sha256::new();
        let mut left = file.size;
        while left > 0 {
            let chunk = match pending.take() {
                Some(c) => c,
                None => match upload.message().await {
                    Ok(Some(pb::ArtifactUpload { msg: Some(pb::artifact_upload::Msg::Chunk(c)) })) => c,
                    Ok(Some(_)) => {
                        writer.abort().await;
                        return Err(ApiError::invalid("chunk", "a second header"));
                    }
                    Ok(None) | Err(_) => {
                        writer.abort().await;
                        return Err(ApiError::invalid(
                            format!("header.files[{i}]"),
                            format!("the upload ended {left} bytes short of `{}`", file.path),
                        ));
                    }
                },
            };
            if chunk.data.len() > CHUNK_BYTES {
                writer.abort().await;
                return Err(ApiError::invalid("chunk", format!("larger than {CHUNK_BYTES} bytes")));
            }
            let take = (chunk.data.len() as u64).min(left) as usize;
            hash.update(&chunk.data[..take]);
            if let Err(e) = writer.write(&chunk.data[..take]).await {
                writer.abort().await;
                return Err(store_error(e));
            }
            left -= take as u64;
            if take < chunk.data.len() {
                pending = Some(pb::ArtifactChunk { data: chunk.data.slice(take..) });
            }
        }
        writer.finish().await.map_err(store_error)?;
        let sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        artifacts.push(pb::Artifact { path: file.path, size: file.size, sha256, key });
    }
    let extra = match pending {
        Some(c) => !c.data.is_empty(),
        None => matches!(upload.message().await, Ok(Some(_))),
    };
    if extra {
        return Err(ApiError::invalid("chunk", "more bytes than the header declared"));
    }
    Ok(pb::ArtifactManifest { artifacts })
}

/// The bytes at `key`, as a stream of chunks.
pub async fn send(store: Option<&PayloadStore>, key: &str) -> Result<ChunkStream, ApiError> {
    let stream = payloads(store)?.get_stream(key).await.map_err(|e| match e {
        swarm_store::StoreError::Other(m) if m.contains("not found") => ApiError::NotFound(m),
        e => store_error(e),
    })?;
    Ok(Box::pin(stream.flat_map(|r| {
        let chunks: Vec<Result<pb::ArtifactChunk, tonic::Status>> = match r {
            Ok(bytes) => (0..bytes.len())
                .step_by(CHUNK_BYTES)
                .map(|at| Ok(pb::ArtifactChunk { data: bytes.slice(at..(at + CHUNK_BYTES).min(bytes.len())) }))
                .collect(),
            Err(e) => vec![Err(swarm_proto::status::to_status(&store_error(e)))],
        };
        futures_util::stream::iter(chunks)
    })))
}

/// A worker's download of an input artifact of its attempt: only keys of the attempt's run.
pub async fn input(
    manager: &ManagerHandle,
    store: Option<&PayloadStore>,
    principal: &str,
    req: pb::InputArtifactRequest,
) -> Result<ChunkStream, ApiError> {
    let pb::InputArtifactRequest { worker_id, fence, key } = req;
    let access = manager
        .call(|reply| Command::ArtifactAccess { worker_id, principal: principal.to_owned(), fence, reserve: 0, reply })
        .await??;
    if !key.starts_with(&access.run_prefix) || key.split('/').any(|p| p == ".." || p == ".") {
        return Err(ApiError::invalid("key", "not an artifact of this attempt's run"));
    }
    send(store, &key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_that_climb_repeat_or_overflow_are_refused() {
        let file = |path: &str, size| pb::ArtifactFile { path: path.into(), size };
        let header = |files| pb::ArtifactUploadHeader { worker_id: "w".into(), fence: 1, files };
        assert_eq!(check_header(&header(vec![file("a", 2), file("b/c", 3)])), Ok(5));
        for bad in [vec![file("../../x", 1)], vec![file("/etc/passwd", 1)], vec![file("a", 1), file("a", 1)]] {
            assert!(check_header(&header(bad)).is_err());
        }
        // Sizes that would overflow add up to the most there is, which no quota allows.
        assert_eq!(check_header(&header(vec![file("a", u64::MAX), file("b", u64::MAX)])), Ok(u64::MAX));
        let many = (0..=swarm_core::artifact::MAX_FILES).map(|i| file(&format!("f{i}"), 0)).collect();
        assert!(check_header(&header(many)).is_err());
    }
}
