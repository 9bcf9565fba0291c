//! Wire compatibility: what a released `swarm.v1` promised, checked against the protos as they
//! are, so a field renumbered, retyped or removed (without reserving its number and name), an
//! enum value renumbered, or an RPC changed fails the build's tests instead of a user's client
//! or a worker of the previous release in a rolling upgrade.
//!
//! The promise is `proto/compat/swarm.v1.json`: every message field (number, type, label),
//! every enum value and every RPC (request, response, streaming) of the last release, flattened
//! to one line each. Adding is free; a line of the promise must still hold, unless the field
//! is gone and its number and name are both `reserved`. At a release, write the new promise:
//! `SWARM_PROTO_PROMISE=write cargo test -p swarm-proto compat`.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// One line per promised element: `message swarm.v1.Run field 3` → `run_id string optional`.
pub type Schema = BTreeMap<String, String>;

/// The schema of an encoded descriptor set.
pub fn schema(descriptor_set: &[u8]) -> Result<Schema, prost::DecodeError> {
    let set = FileDescriptorSet::decode(descriptor_set)?;
    let mut out = Schema::new();
    for file in &set.file {
        let package = file.package();
        for m in &file.message_type {
            message(&mut out, &format!("{package}.{}", m.name()), m);
        }
        for e in &file.enum_type {
            for v in &e.value {
                out.insert(format!("enum {package}.{} value {}", e.name(), v.number()), v.name().to_owned());
            }
        }
        for s in &file.service {
            for m in &s.method {
                out.insert(
                    format!("rpc {package}.{}.{}", s.name(), m.name()),
                    format!(
                        "{}{} -> {}{}",
                        if m.client_streaming() { "stream " } else { "" },
                        m.input_type(),
                        if m.server_streaming() { "stream " } else { "" },
                        m.output_type()
                    ),
                );
            }
        }
    }
    Ok(out)
}

fn message(out: &mut Schema, name: &str, m: &DescriptorProto) {
    for f in &m.field {
        let ty = if f.type_name().is_empty() { format!("{:?}", f.r#type()) } else { f.type_name().to_owned() };
        let oneof = f.oneof_index.map(|i| format!(" oneof {}", m.oneof_decl[i as usize].name())).unwrap_or_default();
        out.insert(format!("message {name} field {}", f.number()), format!("{} {ty} {:?}{oneof}", f.name(), f.label()));
    }
    for r in &m.reserved_range {
        for n in r.start()..r.end() {
            out.insert(format!("message {name} reserved {n}"), String::new());
        }
    }
    for n in &m.reserved_name {
        out.insert(format!("message {name} reserved name {n}"), String::new());
    }
    for nested in &m.nested_type {
        message(out, &format!("{name}.{}", nested.name()), nested);
    }
    for e in &m.enum_type {
        for v in &e.value {
            out.insert(format!("enum {name}.{} value {}", e.name(), v.number()), v.name().to_owned());
        }
    }
}

/// What `now` breaks of `promised`, one line each (empty: compatible).
pub fn breaks(promised: &Schema, now: &Schema) -> Vec<String> {
    // A proto3 `optional` scalar sits in a synthetic oneof of its own (`_name`): the same bytes
    // on the wire as the plain field (only presence is tracked), so adding or dropping `optional`
    // breaks nothing.
    let plain = |line: &str| -> String {
        let name = line.split_whitespace().next().unwrap_or_default();
        line.strip_suffix(&format!(" oneof _{name}")).unwrap_or(line).to_owned()
    };
    let mut out = Vec::new();
    for (key, was) in promised {
        if key.contains(" reserved ") {
            continue;
        }
        match now.get(key) {
            Some(is) if plain(is) == plain(was) => {}
            Some(is) => out.push(format!("{key}: was `{was}`, now `{is}`")),
            None => {
                // A field may go if its number and name are both reserved.
                let reserved = key.rsplit_once(" field ").is_some_and(|(msg, number)| {
                    let name = was.split_whitespace().next().unwrap_or_default();
                    now.contains_key(&format!("{msg} reserved {number}"))
                        && now.contains_key(&format!("{msg} reserved name {name}"))
                });
                if !reserved {
                    out.push(format!("{key}: `{was}` is gone (reserve its number and name to remove a field)"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMISE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/swarm.v1.json");

    #[test]
    fn the_protos_keep_every_promise_of_the_last_release() {
        let now = schema(crate::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
        if std::env::var("SWARM_PROTO_PROMISE").as_deref() == Ok("write") {
            let text = serde_json::to_string_pretty(&now).expect("json");
            std::fs::write(PROMISE, text + "\n").expect("write the promise");
            return;
        }
        let text = std::fs::read_to_string(PROMISE).expect("proto/compat/swarm.v1.json");
        let promised: Schema = serde_json::from_str(&text).expect("the promise is JSON");
        let broken = breaks(&promised, &now);
        assert!(broken.is_empty(), "the protos break the release's promise:\n{}", broken.join("\n"));
        assert!(promised.len() > 100, "the promise covers the API: {} lines", promised.len());
    }

    #[test]
    fn a_renumbered_retyped_or_removed_field_breaks_and_a_reserved_one_does_not() {
        let promised = schema(crate::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let key = "message swarm.v1.SubmitRunRequest field 2".to_owned();
        let was = promised.get(&key).cloned().expect("a field to play with");
        let name = was.split_whitespace().next().expect("name").to_owned();
        // Renumbered: the old number is gone, a new one appears.
        let mut now = promised.clone();
        now.remove(&key);
        now.insert("message swarm.v1.SubmitRunRequest field 99".into(), was.clone());
        assert_eq!(breaks(&promised, &now).len(), 1, "{:?}", breaks(&promised, &now));
        // Retyped.
        let mut now = promised.clone();
        now.insert(key.clone(), format!("{name} TYPE_BYTES LABEL_OPTIONAL"));
        assert_eq!(breaks(&promised, &now).len(), 1);
        // Removed with its number and name reserved: fine; with the number only: not.
        let mut now = promised.clone();
        now.remove(&key);
        now.insert("message swarm.v1.SubmitRunRequest reserved 2".into(), String::new());
        assert_eq!(breaks(&promised, &now).len(), 1, "the name is not reserved");
        now.insert(format!("message swarm.v1.SubmitRunRequest reserved name {name}"), String::new());
        assert!(breaks(&promised, &now).is_empty());
        // An enum value renumbered, an RPC made streaming.
        let mut now = promised.clone();
        now.insert("enum swarm.v1.Decision value 1".into(), "REJECT".into());
        let rpc = "rpc swarm.v1.SwarmService.GetRun".to_owned();
        now.insert(rpc.clone(), format!("stream {}", promised[&rpc]));
        assert_eq!(breaks(&promised, &now).len(), 2);
        // A scalar made proto3 `optional` (its synthetic oneof), or plain again: the same
        // bytes; moved into a real oneof: not.
        let mut now = promised.clone();
        now.insert(key.clone(), format!("{was} oneof _{name}"));
        assert!(breaks(&promised, &now).is_empty(), "{:?}", breaks(&promised, &now));
        assert!(breaks(&now, &promised).is_empty());
        now.insert(key.clone(), format!("{was} oneof kind"));
        assert_eq!(breaks(&promised, &now).len(), 1);
        // Adding is free.
        let mut now = promised.clone();
        now.insert("message swarm.v1.SubmitRunRequest field 98".into(), "extra string LABEL_OPTIONAL".into());
        assert!(breaks(&promised, &now).is_empty());
    }
}
