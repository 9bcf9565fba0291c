//! The shape of the code, checked: no source file over 600 lines (tests aside), within each
//! crate the files import one another without a circle (docs/architecture.md), and the tests
//! that must run alone are the ones `scripts/test` runs alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 7] = ["core", "proto", "store", "telemetry", "coordinator", "worker", "cli"];
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, as (module path, file).
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut module: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            out.insert(module, path);
        }
    }
    out
}

/// The code of a file before its unit tests (an inline `#[cfg(test)]` module comes last),
/// without comments: a doc link names a module without importing it.
fn non_test(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs" || n == "conformance.rs")
}

/// Module paths named after `crate::` / `super::` / `self::` in `text`, for a file whose own
/// module is `me` (`is_mod`: it is a `mod.rs`/`lib.rs`, so `super` is one level up).
fn references(text: &str, me: &[String], is_mod: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent(me, is_mod)), ("self::", self_of(me, is_mod))] {
        let mut from = 0;
        while let Some(i) = text[from..].find(anchor) {
            let start = from + i;
            from = start + anchor.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue; // e.g. `swarm_core::`
            }
            for path in expand(&text[from..]) {
                let mut full = base.clone();
                full.extend(path);
                out.push(full);
            }
        }
    }
    out
}

fn parent(me: &[String], is_mod: bool) -> Vec<String> {
    let own = self_of(me, is_mod);
    own[..own.len().saturating_sub(1)].to_vec()
}

fn self_of(me: &[String], _is_mod: bool) -> Vec<String> {
    me.to_vec()
}

/// The paths at the start of `rest`: `a::b::C` → [[a, b, C]]; `{a, b::c}` → [[a], [b, c]].
fn expand(rest: &str) -> Vec<Vec<String>> {
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let end = inner
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => return true,
                    '}' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map_or(inner.len(), |(i, _)| i);
        return inner[..end].split(',').flat_map(|item| expand(item.trim())).collect();
    }
    let path: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
    let segments: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if segments.is_empty() { vec![] } else { vec![segments] }
}

/// The file a path lands in: its longest prefix that is a module.
fn resolve<'a>(path: &[String], mods: &'a BTreeMap<Vec<String>, PathBuf>) -> Option<&'a Vec<String>> {
    (1..=path.len()).rev().find_map(|n| mods.get_key_value(&path[..n]).map(|(k, _)| k))
}

fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let at = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(c) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut long = Vec::new();
    for krate in CRATES {
        for path in modules(&root().join(krate).join("src")).values() {
            let lines = std::fs::read_to_string(path).expect("read").lines().count();
            if lines > MAX_LINES && !is_test_file(path) {
                long.push(format!("{} ({lines} lines)", path.strip_prefix(root()).unwrap_or(path).display()));
            }
        }
    }
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn within_each_crate_the_files_import_each_other_without_a_circle() {
    for krate in CRATES {
        let mods = modules(&root().join(krate).join("src"));
        let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, path) in &mods {
            if is_test_file(path) {
                continue;
            }
            let text = std::fs::read_to_string(path).expect("read");
            let is_mod = path.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs");
            let edges = graph.entry(module.clone()).or_default();
            for reference in references(&non_test(&text), module, is_mod) {
                if let Some(target) = resolve(&reference, &mods)
                    && target != module
                    && !is_test_file(&mods[target])
                    // A module's own submodules are its parts, not its peers.
                    && !(target.len() > module.len() && target.starts_with(module))
                {
                    edges.insert(target.clone());
                }
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<String> = cycle.iter().map(|m| format!("{krate}::{}", m.join("::"))).collect();
            panic!("a circle of imports in {krate}: {}", names.join(" → "));
        }
    }
}

/// The integration tests that take `failover::SERIAL` (timing-sensitive: leases, failovers,
/// measured memory) are listed in `tests/it/serial.txt`, which `scripts/test` runs in a process
/// of its own, one at a time, while the rest run beside it: a test missing from the list would
/// run at the same time as the listed ones.
#[test]
fn the_tests_that_take_the_serial_lock_are_the_ones_scripts_test_runs_alone() {
    let dir = root().join("tests/it");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path.file_stem().expect("stem").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        // Each function's text runs to the next function's start.
        let starts: Vec<(usize, String)> = text
            .match_indices("fn ")
            .filter(|(i, _)| {
                let line = &text[text[..*i].rfind('\n').map_or(0, |n| n + 1)..*i];
                matches!(line.trim(), "" | "async" | "pub async" | "pub(crate) async" | "pub" | "pub(crate)")
            })
            .map(|(i, _)| (i, text[i + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()))
            .collect();
        for (k, (start, name)) in starts.iter().enumerate() {
            let end = starts.get(k + 1).map_or(text.len(), |(next, _)| *next);
            if text[*start..end].contains(concat!("SERIAL", ".lock()")) {
                found.insert(format!("{module}::{name}"));
            }
        }
    }
    let listed: BTreeSet<String> = std::fs::read_to_string(dir.join("serial.txt"))
        .expect("tests/it/serial.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let unlisted: Vec<_> = found.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "tests/it/serial.txt: add {unlisted:?} (they take SERIAL), remove {stale:?} (they do not, or are gone)"
    );
}
