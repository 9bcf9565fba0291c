//! Artifacts, the manager's part: which attempt may store or read them (by its fence, its
//! worker and that worker's principal), each run's artifact quota, what an assignment carries
//! (the patterns, the quota left, its dependencies' artifacts), and checking what a report
//! says was stored. The bytes themselves go through [`crate::artifacts`], never the manager.

use std::sync::Arc;

use swarm_core::artifact::Artifact;
use swarm_core::engine::RunEngine;
use swarm_core::{Fence, RunId, SubtaskIx};
use swarm_proto::{ApiError, pb};
use swarm_store::RunRepo;

use super::Manager;

/// Artifact bytes a run may store when its tenant sets no `max_artifact_bytes` (1 GiB).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// What an attempt may do with artifacts ([`super::Command::ArtifactAccess`]).
#[derive(Clone, Debug)]
pub struct ArtifactAccess {
    pub run_id: RunId,
    pub subtask_id: String,
    /// Where this attempt's artifacts go.
    pub upload_prefix: String,
    /// Where its run's artifacts are: a worker reads nothing else.
    pub run_prefix: String,
}

/// Where a run's artifacts are in the payload store (ends with `/`).
pub fn run_prefix(run: &RunId) -> String {
    format!("{}/artifacts/", swarm_store::payload::object_path([RunRepo::payload_prefix(run).as_str()]))
}

/// Where attempt `fence` of `subtask` stores its artifacts.
pub fn upload_prefix(run: &RunId, subtask: &str, fence: Fence) -> String {
    let prefix = RunRepo::payload_prefix(run);
    swarm_store::payload::object_path([prefix.as_str(), "artifacts", subtask, fence.0.to_string().as_str()])
}

/// The artifact bytes a run's subtasks have stored.
pub fn stored_bytes(engine: &RunEngine) -> u64 {
    (0..engine.dag().len())
        .filter_map(|i| engine.slot(SubtaskIx(i as u32)).artifacts.as_ref())
        .flat_map(|a| a.iter())
        .fold(0u64, |sum, a| sum.saturating_add(a.size))
}

/// What a report says attempt `fence` stored, if every artifact lies under its upload prefix
/// (a worker cannot point a run at another run's files).
pub fn reported(
    run: &RunId,
    subtask: &str,
    fence: Fence,
    artifacts: Vec<pb::Artifact>,
) -> Result<Option<Arc<[Artifact]>>, String> {
    if artifacts.is_empty() {
        return Ok(None);
    }
    if artifacts.len() > swarm_core::artifact::MAX_FILES {
        return Err(format!("{} artifacts exceed the limit of {}", artifacts.len(), swarm_core::artifact::MAX_FILES));
    }
    let prefix = upload_prefix(run, subtask, fence);
    for a in &artifacts {
        swarm_core::artifact::check_path(&a.path).map_err(|e| format!("artifact path: {e}"))?;
        let expected = swarm_store::payload::object_path([prefix.as_str(), a.path.as_str()]);
        if a.key != expected || a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("artifact `{}` was not stored for this attempt", a.path));
        }
    }
    Ok(Some(artifacts.into_iter().map(Artifact::from).collect()))
}

/// What orchestrator `sub` hands on: its subagents' artifacts merged at their paths (a later
/// subagent's file replaces an earlier one's), then its own on top. `None` for other subtasks
/// and when there is nothing.
pub fn with_subagents(engine: &RunEngine, sub: SubtaskIx, own: Option<Arc<[Artifact]>>) -> Option<Arc<[Artifact]>> {
    if !matches!(engine.dag().node(sub).work, swarm_core::dag::Work::Orchestrator(_)) {
        return own;
    }
    let mut merged: std::collections::BTreeMap<&str, &Artifact> = Default::default();
    let children = (0..engine.dag().len())
        .map(|i| SubtaskIx(i as u32))
        .filter(|&c| engine.dag().node(c).parent == Some(sub))
        .filter_map(|c| engine.slot(c).artifacts.as_ref());
    for a in children.flat_map(|a| a.iter()).chain(own.iter().flat_map(|a| a.iter())) {
        merged.insert(a.path.as_str(), a);
    }
    (!merged.is_empty()).then(|| merged.into_values().cloned().collect())
}

impl Manager {
    /// The artifact quota of a run of `tenant`.
    fn artifact_quota(&self, tenant: Option<&str>) -> u64 {
        tenant
            .and_then(|t| self.config.tenants.get(t))
            .and_then(|q| q.max_artifact_bytes)
            .unwrap_or(self.config.max_artifact_bytes)
    }

    /// The artifact bytes run `entry` may still store.
    pub(super) fn artifact_bytes_left(&self, entry: &super::RunEntry) -> u64 {
        self.artifact_quota(entry.header.tenant.as_deref()).saturating_sub(entry.artifact_bytes)
    }

    /// See [`super::Command::ArtifactAccess`]. Bytes reserved are not given back when an upload
    /// fails (the quota errs on the safe side); a new leader counts what records hold.
    pub(super) fn artifact_access(
        &mut self,
        worker_id: &str,
        principal: &str,
        fence: u64,
        reserve: u64,
    ) -> Result<ArtifactAccess, ApiError> {
        let held = self.registry.held(Fence(fence)).copied().ok_or_else(|| {
            ApiError::FailedPrecondition(format!("attempt {fence} is not running here (it ended, or was cancelled)"))
        })?;
        let holder = self.registry.id(held.worker).map(ToString::to_string).unwrap_or_default();
        let registered = self.worker_principals.get(&swarm_core::WorkerId::from(worker_id)).map(String::as_str);
        if holder != worker_id || registered.is_some_and(|p| p != principal) {
            return Err(ApiError::FailedPrecondition(format!("attempt {fence} is not held by worker `{worker_id}`")));
        }
        let quota = {
            let entry = self.runs.get(&held.run).ok_or_else(|| ApiError::NotFound("the run has ended".into()))?;
            self.artifact_quota(entry.header.tenant.as_deref())
        };
        let entry = self.runs.get_mut(&held.run).ok_or_else(|| ApiError::NotFound("the run has ended".into()))?;
        let run_id = entry.engine.run_id().clone();
        let subtask_id = entry.engine.dag().node(held.subtask).id.to_string();
        if reserve > 0 {
            let total = entry.artifact_bytes.saturating_add(reserve);
            if total > quota {
                return Err(ApiError::ResourceExhausted(format!(
                    "subtask `{subtask_id}`'s artifacts ({reserve} bytes) would bring run {run_id}'s to {total} bytes; \
                     its quota is {quota} bytes (max_artifact_bytes)"
                )));
            }
            entry.artifact_bytes = total;
        }
        Ok(ArtifactAccess {
            upload_prefix: upload_prefix(&run_id, &subtask_id, Fence(fence)),
            run_prefix: run_prefix(&run_id),
            run_id,
            subtask_id,
        })
    }

    /// The artifact part of an assignment of `sub`: the patterns to hand on, the bytes left,
    /// and the artifacts of the subtasks it depends on.
    pub(super) fn assignment_artifacts(
        &self,
        entry: &super::RunEntry,
        sub: SubtaskIx,
    ) -> (Vec<String>, u64, Vec<pb::InputArtifacts>) {
        let engine = &entry.engine;
        let node = engine.dag().node(sub);
        let inputs = node
            .deps
            .iter()
            .filter_map(|&d| {
                let artifacts = engine.slot(d).artifacts.as_ref()?;
                Some(pb::InputArtifacts {
                    subtask_id: engine.dag().node(d).id.to_string(),
                    artifacts: artifacts.iter().map(pb::Artifact::from).collect(),
                })
            })
            .collect();
        // Agents may mark files at run time (`mark_artifact`): they are told the quota too.
        let may_hand_on = !node.artifacts.is_empty() || matches!(node.work, swarm_core::dag::Work::Agent(_));
        let left = if may_hand_on { self.artifact_bytes_left(entry) } else { 0 };
        (node.artifacts.to_vec(), left, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_may_name_only_what_its_own_attempt_stored() {
        let run = RunId::from("r1");
        let ok = |path: &str, fence: u64, sub: &str| pb::Artifact {
            path: path.into(),
            size: 1,
            sha256: "a".repeat(64),
            key: swarm_store::payload::object_path([upload_prefix(&run, sub, Fence(fence)).as_str(), path]),
        };
        assert!(reported(&run, "a", Fence(7), vec![ok("x/y.csv", 7, "a")]).expect("own").is_some());
        assert!(reported(&run, "a", Fence(7), vec![ok("x", 8, "a")]).is_err(), "another attempt's");
        assert!(reported(&run, "a", Fence(7), vec![ok("x", 7, "b")]).is_err(), "another subtask's");
        let other = RunId::from("r2");
        let mut forged = ok("x", 7, "a");
        forged.key = swarm_store::payload::object_path([upload_prefix(&other, "a", Fence(7)).as_str(), "x"]);
        assert!(reported(&run, "a", Fence(7), vec![forged]).is_err(), "another run's");
        assert!(reported(&run, "a", Fence(7), vec![ok("../../x", 7, "a")]).is_err(), "a climbing path");
        let mut bad_hash = ok("x", 7, "a");
        bad_hash.sha256 = "zz".into();
        assert!(reported(&run, "a", Fence(7), vec![bad_hash]).is_err());
        assert_eq!(reported(&run, "a", Fence(7), vec![]), Ok(None));
    }
}
