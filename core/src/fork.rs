//! Forking a recorded run: the patch that changes its spec, and which subtasks run again.
//!
//! A fork reuses the recorded result of every subtask that does not depend on the subtask it
//! is forked from; that subtask, the subtasks the patch changes, and everything downstream of
//! them run again. The patch is a partial spec: `subtasks` entries are matched by `id` and
//! merged into the subtask of that id as a JSON merge patch (RFC 7386: objects merge key by
//! key, `null` removes a key, anything else replaces); other top-level fields merge the same
//! way into the run's.

use std::collections::HashSet;

use serde_json::Value;

use crate::dag::Dag;
use crate::ids::SubtaskIx;

/// A patch that cannot be applied: the field (as `patch.…`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchError {
    pub field: String,
    pub description: String,
}

/// Merges `patch` into `spec` (both the JSON form of a spec); returns the merged spec and
/// the ids of the subtasks the patch changed.
pub fn merge(mut spec: Value, patch: Value) -> Result<(Value, Vec<String>), PatchError> {
    let bad = |field: String, description: String| PatchError { field, description };
    let Value::Object(patch) = patch else {
        if patch.is_null() {
            return Ok((spec, Vec::new()));
        }
        return Err(bad("patch".into(), "must be a mapping (a partial spec)".into()));
    };
    let Some(run) = spec.as_object_mut() else {
        return Err(bad("patch".into(), "the stored spec is not an object".into()));
    };
    let mut touched = Vec::new();
    for (key, value) in patch {
        if key != "subtasks" {
            merge_value(run.entry(key).or_insert(Value::Null), value);
            continue;
        }
        let Value::Array(entries) = value else {
            return Err(bad("patch.subtasks".into(), "must be a list of subtasks, each with its id".into()));
        };
        let Some(Value::Array(subtasks)) = run.get_mut("subtasks") else {
            return Err(bad("patch.subtasks".into(), "the stored spec has no subtasks".into()));
        };
        let mut seen = HashSet::new();
        // By id, once: a patch of many entries costs one lookup each, not a scan.
        let index: std::collections::HashMap<String, usize> =
            subtasks.iter().enumerate().filter_map(|(i, s)| Some((s.get("id")?.as_str()?.to_owned(), i))).collect();
        for (k, entry) in entries.into_iter().enumerate() {
            let field = format!("patch.subtasks[{k}]");
            let Some(id) = entry.get("id").and_then(Value::as_str).map(str::to_owned) else {
                return Err(bad(format!("{field}.id"), "required: the id of the subtask to change".into()));
            };
            if !seen.insert(id.clone()) {
                return Err(bad(format!("{field}.id"), format!("`{id}` is patched twice")));
            }
            let Some(target) = index.get(&id).and_then(|&i| subtasks.get_mut(i)) else {
                let mut known: Vec<&str> = index.keys().map(String::as_str).collect();
                known.sort_unstable();
                let hint =
                    crate::text::did_you_mean(&id, known).map(|m| format!("; did you mean `{m}`?")).unwrap_or_default();
                return Err(bad(format!("{field}.id"), format!("the run has no subtask `{id}`{hint}")));
            };
            merge_value(target, entry);
            touched.push(id);
        }
    }
    Ok((spec, touched))
}

/// RFC 7386 merge of `patch` into `target`.
fn merge_value(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_value(map.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// Which subtasks of `dag` run again: `roots` and everything that depends on them,
/// transitively (indexed like the DAG's nodes).
pub fn downstream(dag: &Dag, roots: &[SubtaskIx]) -> Vec<bool> {
    let mut again = vec![false; dag.len()];
    let mut stack: Vec<SubtaskIx> = roots.to_vec();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut again[i.index()], true) {
            continue;
        }
        stack.extend(dag.node(i).dependents.iter().copied());
    }
    again
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::{Limits, RunSpec};

    fn spec() -> Value {
        json!({"name": "n", "subtasks": [
            {"id": "a", "tool": "echo", "args": {"text": "a", "n": 1}},
            {"id": "b", "tool": "echo", "args": {"text": "b"}, "depends_on": ["a"]},
            {"id": "c", "tool": "echo", "args": {"text": "c"}, "depends_on": ["b"]},
            {"id": "d", "tool": "echo", "args": {"text": "d"}}
        ]})
    }

    #[test]
    fn a_patch_merges_by_id_key_by_key_and_null_removes() {
        let patch = json!({"subtasks": [{"id": "a", "args": {"text": "A", "n": null}}], "version": "v2"});
        let (merged, touched) = merge(spec(), patch).expect("merges");
        assert_eq!(merged["subtasks"][0]["args"], json!({"text": "A"}));
        assert_eq!(merged["subtasks"][1]["args"], json!({"text": "b"}), "others untouched");
        assert_eq!(merged["version"], json!("v2"));
        assert_eq!(touched, ["a"]);
    }

    #[test]
    fn a_patch_naming_no_subtask_or_twice_is_refused_by_field() {
        let e = merge(spec(), json!({"subtasks": [{"id": "bb"}]})).expect_err("unknown id");
        assert_eq!(e.field, "patch.subtasks[0].id");
        assert!(e.description.contains("did you mean `b`"), "{}", e.description);
        let e = merge(spec(), json!({"subtasks": [{"id": "a"}, {"id": "a"}]})).expect_err("twice");
        assert_eq!(e.field, "patch.subtasks[1].id");
        let e = merge(spec(), json!({"subtasks": [{"args": {}}]})).expect_err("no id");
        assert_eq!(e.field, "patch.subtasks[0].id");
        assert_eq!(merge(spec(), json!([1])).expect_err("not a map").field, "patch");
        assert_eq!(merge(spec(), json!({"subtasks": {"id": "a"}})).expect_err("not a list").field, "patch.subtasks");
    }

    #[test]
    fn downstream_of_a_subtask_is_it_and_its_dependents() {
        let spec: RunSpec = serde_json::from_value(spec()).expect("spec");
        let dag = Dag::build(&spec, &Limits::default()).expect("valid");
        let b = dag.index_of("b").expect("b");
        assert_eq!(downstream(&dag, &[b]), [false, true, true, false]);
        let (a, d) = (dag.index_of("a").expect("a"), dag.index_of("d").expect("d"));
        assert_eq!(downstream(&dag, &[a, d]), [true; 4]);
    }
}
