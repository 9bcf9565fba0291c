//! Artifacts on the worker: before an attempt, its dependencies' artifacts are placed under
//! `inputs/<subtask>/` in its workspace (read-only in the sandbox); after an attempt that
//! succeeded, the files its subtask declared are collected from the workspace and uploaded
//! through the coordinator (`PutArtifacts`), and the report lists what was stored.
//!
//! Collection runs after the attempt's sandboxes are gone (their process trees are killed at
//! the end of each call), so nothing swaps a file while it is read. Even so it trusts nothing
//! in the workspace: it walks with `lstat`, takes regular files only (a symlink a pattern
//! names fails the attempt), opens with `O_NOFOLLOW` and reads at most the size it declared.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use swarm_core::FailureKind;
use swarm_core::artifact::{INPUTS_DIR, MAX_FILES, check_path, is_glob, matches};
use swarm_proto::pb::{self, worker_service_client::WorkerServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::tools::ToolError;
use crate::tools::exec::{Workspaces, component};

/// Bytes per chunk sent.
const CHUNK_BYTES: usize = 256 * 1024;
/// Input artifacts downloaded at once.
const FETCHES_AT_ONCE: usize = 16;
/// Directory levels walked at most.
const MAX_DEPTH: usize = 64;
/// How long an attempt waits for a coordinator link to move its artifacts.
const LINK_WAIT: Duration = Duration::from_secs(30);

/// The coordinator link artifacts move over (the current stream's channel and credentials).
#[derive(Default)]
pub struct ArtifactLink {
    current: Mutex<Option<Link>>,
    changed: tokio::sync::Notify,
}

#[derive(Clone)]
struct Link {
    client: WorkerServiceClient<Channel>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl ArtifactLink {
    /// The link of a new connection (or none: disconnected).
    pub fn set(
        &self,
        client: Option<WorkerServiceClient<Channel>>,
        token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = client.map(|client| Link { client, token });
        self.changed.notify_waiters();
    }

    async fn get(&self) -> Result<Link, ToolError> {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if let Some(link) = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    return link;
                }
                changed.await;
            }
        };
        tokio::time::timeout(LINK_WAIT, wait)
            .await
            .map_err(|_| ToolError::transient("no coordinator link to move artifacts over for 30 s"))
    }

    fn request<T>(link: &Link, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &link.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        request
    }
}

fn status_error(what: &str, s: tonic::Status) -> ToolError {
    let kind = match s.code() {
        tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied => {
            FailureKind::Permanent
        }
        _ => FailureKind::Transient,
    };
    ToolError { kind, message: format!("{what}: {}", s.message()) }
}

fn io_error(what: impl std::fmt::Display, e: std::io::Error) -> ToolError {
    ToolError::transient(format!("{what}: {e}"))
}

/// Places the artifacts of the subtasks `a` depends on under `inputs/<subtask>/` of its
/// workspace. A file already there with the same contents (a retry on this worker) stays.
pub async fn stage_inputs(
    link: &ArtifactLink,
    workspaces: Option<&Workspaces>,
    worker_id: &str,
    a: &pb::Assignment,
) -> Result<(), ToolError> {
    if a.inputs.is_empty() {
        return Ok(());
    }
    let workspaces =
        workspaces.ok_or_else(|| ToolError::permanent("this worker keeps no workspaces for input artifacts"))?;
    let dir = workspaces.dir(&a.run_id, &a.subtask_id).map_err(|e| io_error("the workspace", e))?;
    let link = link.get().await?;
    let mut files = Vec::new();
    for input in &a.inputs {
        let base = dir.join(INPUTS_DIR).join(component(&input.subtask_id));
        for artifact in &input.artifacts {
            check_path(&artifact.path).map_err(|e| ToolError::permanent(format!("input artifact: {e}")))?;
            files.push((artifact.clone(), base.join(&artifact.path)));
        }
    }
    // A few downloads at once: many small files are bound by round trips, not bytes.
    let (worker_id, fence) = (worker_id.to_owned(), a.fence);
    let mut fetches = futures_util::stream::iter(files)
        .map(|(artifact, dest)| place(link.clone(), worker_id.clone(), fence, artifact, dest))
        .buffer_unordered(FETCHES_AT_ONCE);
    while let Some(done) = fetches.next().await {
        done?;
    }
    Ok(())
}

/// One input artifact at `dest`, unless the same is there already.
async fn place(
    link: Link,
    worker_id: String,
    fence: u64,
    artifact: pb::Artifact,
    dest: PathBuf,
) -> Result<(), ToolError> {
    if same_file(&dest, &artifact).await {
        return Ok(());
    }
    fetch(&link, &worker_id, fence, &artifact, &dest).await
}

/// Whether `path` is a regular file with `artifact`'s size and hash.
async fn same_file(path: &Path, artifact: &pb::Artifact) -> bool {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.is_file() && m.len() == artifact.size => {
            let path = path.to_owned();
            let hash = tokio::task::spawn_blocking(move || hash_file(&path)).await;
            matches!(hash, Ok(Ok(h)) if h == artifact.sha256)
        }
        _ => false,
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut file, &mut buf)? {
            0 => return Ok(hex(&hash.finalize())),
            n => hash.update(&buf[..n]),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads one artifact into `dest` (through a temporary file, checked, then renamed).
async fn fetch(
    link: &Link,
    worker_id: &str,
    fence: u64,
    artifact: &pb::Artifact,
    dest: &Path,
) -> Result<(), ToolError> {
    let parent = dest.parent().unwrap_or(dest);
    tokio::fs::create_dir_all(parent).await.map_err(|e| io_error(format_args!("creating {}", parent.display()), e))?;
    let request = pb::InputArtifactRequest { worker_id: worker_id.into(), fence, key: artifact.key.clone() };
    let mut stream = link
        .client
        .clone()
        .get_input_artifact(ArtifactLink::request(link, request))
        .await
        .map_err(|s| status_error(&format!("input artifact `{}`", artifact.path), s))?
        .into_inner();
    let tmp = dest.with_extension(format!("swarm-part-{}", fastrand::u32(..)));
    let mut file =
        tokio::fs::File::create(&tmp).await.map_err(|e| io_error(format_args!("creating {}", tmp.display()), e))?;
    let mut hash = Sha256::new();
    let mut got = 0u64;
    let result: Result<(), ToolError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| status_error(&format!("input artifact `{}`", artifact.path), s))?;
            got += chunk.data.len() as u64;
            if got > artifact.size {
                return Err(ToolError::transient(format!(
                    "input artifact `{}` is longer than recorded",
                    artifact.path
                )));
            }
            hash.update(&chunk.data);
            file.write_all(&chunk.data).await.map_err(|e| io_error(format_args!("writing {}", tmp.display()), e))?;
        }
        file.flush().await.map_err(|e| io_error(format_args!("writing {}", tmp.display()), e))?;
        if got != artifact.size || hex(&hash.finalize()) != artifact.sha256 {
            return Err(ToolError::transient(format!(
                "input artifact `{}` arrived with other contents than recorded ({got} of {} bytes)",
                artifact.path, artifact.size
            )));
        }
        tokio::fs::rename(&tmp, dest).await.map_err(|e| io_error(format_args!("placing {}", dest.display()), e))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// A file to hand on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Relative to the workspace.
    pub path: String,
    pub size: u64,
}

/// The regular files of `workspace` (but `inputs/`) that `patterns` name, within `bytes_left`
/// in all. A plain path that matches no file, a symlink or special file a pattern names, a
/// name that is not UTF-8, more than [`MAX_FILES`] files or more bytes than allowed: an error
/// (permanent) that says which.
pub fn collect(workspace: &Path, patterns: &[String], bytes_left: u64) -> Result<Vec<Found>, ToolError> {
    let mut found = Vec::new();
    let mut total = 0u64;
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(workspace.to_owned(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io_error(format_args!("reading {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(format_args!("reading {}", dir.display()), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if rel.is_empty() && name == INPUTS_DIR {
                continue;
            }
            // lstat: a symlink is itself, never what it points at.
            let meta = entry.path().symlink_metadata().map_err(|e| io_error(format_args!("{path}"), e))?;
            let named = patterns.iter().any(|p| matches(p, &path));
            if meta.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((entry.path(), path, depth + 1));
                }
                continue;
            }
            if !named {
                continue;
            }
            if !meta.is_file() {
                return Err(ToolError::permanent(format!(
                    "artifact `{path}` is not a regular file (a symlink or special file): only regular files are handed on"
                )));
            }
            total = total.saturating_add(meta.len());
            if total > bytes_left {
                return Err(ToolError::permanent(format!(
                    "the artifacts take more than {bytes_left} bytes, what the run's quota (max_artifact_bytes) leaves; \
                     `{path}` alone has {} bytes",
                    meta.len()
                )));
            }
            found.push(Found { path, size: meta.len() });
            if found.len() > MAX_FILES {
                return Err(ToolError::permanent(format!("more than {MAX_FILES} artifacts")));
            }
        }
    }
    for p in patterns.iter().filter(|p| !is_glob(p)) {
        if !found.iter().any(|f| &f.path == p) {
            return Err(ToolError::permanent(format!("declared artifact `{p}` was not written")));
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Uploads `files` of `workspace` for attempt `fence`; returns what the coordinator stored.
pub async fn upload(
    link: &ArtifactLink,
    worker_id: &str,
    fence: u64,
    workspace: &Path,
    files: Vec<Found>,
) -> Result<Vec<pb::Artifact>, ToolError> {
    let link = link.get().await?;
    let header = pb::ArtifactUploadHeader {
        worker_id: worker_id.into(),
        fence,
        files: files.iter().map(|f| pb::ArtifactFile { path: f.path.clone(), size: f.size }).collect(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ArtifactUpload>(8);
    let workspace = workspace.to_owned();
    // The reader stops (and the upload comes up short, refused) if a file changed.
    let reader: tokio::task::JoinHandle<Result<(), ToolError>> = tokio::spawn(async move {
        let msg = |m| pb::ArtifactUpload { msg: Some(m) };
        if tx.send(msg(pb::artifact_upload::Msg::Header(header))).await.is_err() {
            return Ok(());
        }
        for f in files {
            let path = workspace.join(&f.path);
            let std_file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| io_error(format_args!("artifact `{}`", f.path), e))?;
            let meta = std_file.metadata().map_err(|e| io_error(format_args!("artifact `{}`", f.path), e))?;
            if !meta.is_file() || meta.len() != f.size {
                return Err(ToolError::permanent(format!("artifact `{}` changed while it was collected", f.path)));
            }
            let mut file = tokio::fs::File::from_std(std_file).take(f.size);
            loop {
                let mut buf = bytes::BytesMut::with_capacity(CHUNK_BYTES);
                let n = (&mut file).take(CHUNK_BYTES as u64).read_buf(&mut buf).await;
                let n = n.map_err(|e| io_error(format_args!("artifact `{}`", f.path), e))?;
                if n == 0 {
                    break;
                }
                let chunk = pb::ArtifactChunk { data: buf.freeze() };
                if tx.send(msg(pb::artifact_upload::Msg::Chunk(chunk))).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    let request = ArtifactLink::request(&link, tokio_stream::wrappers::ReceiverStream::new(rx));
    let answer = link.client.clone().put_artifacts(request).await;
    let read = reader.await.unwrap_or_else(|e| Err(ToolError::transient(format!("reading artifacts: {e}"))));
    read?;
    Ok(answer.map_err(|s| status_error("storing the artifacts", s))?.into_inner().artifacts)
}

/// What `a` hands on (the files `patterns` name), collected and uploaded (blocking work off
/// the runtime).
pub async fn hand_on(
    link: &ArtifactLink,
    workspaces: Option<&Workspaces>,
    worker_id: &str,
    a: &pb::Assignment,
    patterns: Vec<String>,
) -> Result<Vec<pb::Artifact>, ToolError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let workspaces =
        workspaces.ok_or_else(|| ToolError::permanent("this worker keeps no workspaces to hand artifacts on from"))?;
    let dir = workspaces.dir(&a.run_id, &a.subtask_id).map_err(|e| io_error("the workspace", e))?;
    let (left, walk_dir) = (a.artifact_bytes_left, dir.clone());
    let files = tokio::task::spawn_blocking(move || collect(&walk_dir, &patterns, left))
        .await
        .map_err(|e| ToolError::transient(format!("collecting artifacts: {e}")))??;
    upload(link, worker_id, a.fence, &dir, files).await
}

/// The link, shared.
pub type SharedLink = Arc<ArtifactLink>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("swarm-collect-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(dir.join("data/deep")).expect("dirs");
        std::fs::create_dir_all(dir.join("inputs/a")).expect("dirs");
        std::fs::write(dir.join("report.md"), "r").expect("write");
        std::fs::write(dir.join("data/a.csv"), "1,2").expect("write");
        std::fs::write(dir.join("data/deep/b.csv"), "3").expect("write");
        std::fs::write(dir.join("inputs/a/x.csv"), "in").expect("write");
        dir
    }

    #[test]
    fn collects_what_the_patterns_name_and_never_inputs() {
        let dir = tree();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = collect(&dir, &p(&["report.md", "data/*.csv"]), u64::MAX).expect("collect");
        let paths: Vec<_> = got.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["data/a.csv", "report.md"]);
        let all = collect(&dir, &p(&["**"]), u64::MAX).expect("collect");
        assert!(all.iter().all(|f| !f.path.starts_with("inputs/")), "{all:?}");
        assert_eq!(all.len(), 3);
        let missing = collect(&dir, &p(&["nothing.md"]), u64::MAX).expect_err("missing");
        assert!(missing.message.contains("`nothing.md` was not written"), "{}", missing.message);
        let over = collect(&dir, &p(&["**"]), 4).expect_err("quota");
        assert!(over.message.contains("max_artifact_bytes"), "{}", over.message);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlink_named_as_an_artifact_fails_and_one_not_named_is_ignored() {
        let dir = tree();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("data/passwd.csv")).expect("symlink");
        std::os::unix::fs::symlink("/etc", dir.join("data/etc")).expect("symlink");
        let err = collect(&dir, &["data/*.csv".to_string()], u64::MAX).expect_err("symlink");
        assert!(err.message.contains("not a regular file"), "{}", err.message);
        // A symlinked directory is not walked into.
        let got = collect(&dir, &["data/etc/*".to_string()], u64::MAX).expect("no entries");
        assert!(got.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
