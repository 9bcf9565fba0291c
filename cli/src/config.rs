//! The optional configuration file (`--config FILE`, env `SWARM_CONFIG`): YAML whose keys are
//! the commands' long flag names. Top-level keys apply to every command that has the flag; a
//! section named after a command applies to that command only and wins over the top level.
//!
//! ```yaml
//! etcd: [http://etcd-0:2379, http://etcd-1:2379]
//! lease-ttl: 5s
//! coordinator:
//!   listen: 0.0.0.0:7070
//!   http-listen: 0.0.0.0:9090
//! worker:
//!   slots: 64
//! ```
//!
//! Precedence, highest first: command-line flags, `SWARM_*` environment variables, the file,
//! built-in defaults. (File values become the flags' defaults, and clap ranks the environment
//! above defaults.) Unknown keys are errors.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;
use serde_json::Value;

/// The file's values, as flag defaults: top level, then per command.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigFile {
    pub common: BTreeMap<String, Vec<String>>,
    pub commands: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

fn values(key: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("`{key}`: list items must be strings or numbers, not {other}")),
            })
            .collect(),
        other => Err(format!("`{key}`: expected a string, number, boolean or list, not {other}")),
    }
}

/// Parses the file's text against the commands of `cmd` (the root command).
pub fn parse(text: &str, cmd: &Command) -> Result<ConfigFile, String> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let Value::Object(top) = doc else {
        return if doc.is_null() { Ok(ConfigFile::default()) } else { Err("expected a mapping of flags".into()) };
    };
    let flags = |sub: &Command| -> Vec<String> {
        sub.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned).collect()
    };
    let mut file = ConfigFile::default();
    for (key, value) in top {
        if let Some(sub) = cmd.find_subcommand(&key) {
            let Value::Object(section) = value else { return Err(format!("`{key}`: expected a mapping of flags")) };
            let known = flags(sub);
            let mut out = BTreeMap::new();
            for (k, v) in section {
                if !known.contains(&k) {
                    return Err(format!("`{key}.{k}`: `swarm {key}` has no flag --{k}"));
                }
                out.insert(k.clone(), values(&format!("{key}.{k}"), &v)?);
            }
            file.commands.insert(key, out);
        } else {
            if !cmd.get_subcommands().any(|sub| flags(sub).contains(&key)) || key == "config" {
                return Err(format!("`{key}`: no command has a flag --{key}"));
            }
            file.common.insert(key.clone(), values(&key, &value)?);
        }
    }
    Ok(file)
}

/// Makes the file's values the defaults of the matching flags.
pub fn apply(mut cmd: Command, file: &ConfigFile) -> Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in names {
        let section = file.commands.get(&name);
        cmd = cmd.mut_subcommand(&name, |mut sub| {
            let longs: Vec<(String, clap::Id)> =
                sub.get_arguments().filter_map(|a| a.get_long().map(|l| (l.to_owned(), a.get_id().clone()))).collect();
            for (long, id) in longs {
                let Some(vals) = section.and_then(|s| s.get(&long)).or_else(|| file.common.get(&long)) else {
                    continue;
                };
                let delimited = sub.get_arguments().find(|a| a.get_id() == &id).and_then(|a| a.get_value_delimiter());
                let defaults: Vec<OsString> = match delimited {
                    Some(d) => vec![vals.join(&d.to_string()).into()],
                    None => vals.iter().map(OsString::from).collect(),
                };
                sub = sub.mut_arg(id, |a| a.default_values(defaults));
            }
            sub
        });
    }
    cmd
}

/// The config file named on the command line (`--config FILE` / `--config=FILE`) or by
/// `SWARM_CONFIG`.
pub fn path_from(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("SWARM_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path, cmd: &Command) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, cmd).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction};

    use super::*;

    fn cmd() -> Command {
        Command::new("swarm")
            .subcommand(
                Command::new("worker")
                    .arg(Arg::new("slots").long("slots").default_value("64"))
                    .arg(Arg::new("etcd").long("etcd").value_delimiter(',').action(ArgAction::Append))
                    .arg(Arg::new("id").long("id")),
            )
            .subcommand(
                Command::new("coordinator")
                    .arg(Arg::new("etcd").long("etcd").value_delimiter(',').action(ArgAction::Append))
                    .arg(Arg::new("listen").long("listen").default_value("127.0.0.1:7070")),
            )
    }

    fn get(m: &clap::ArgMatches, sub: &str, id: &str) -> Vec<String> {
        let m = m.subcommand_matches(sub).expect("subcommand");
        m.get_many::<String>(id).map(|v| v.cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn file_values_become_defaults_and_flags_win() {
        let text = "etcd: [http://a:2379, http://b:2379]\nworker:\n  slots: 8\n  id: from-file\n";
        let file = parse(text, &cmd()).expect("valid");
        let m = apply(cmd(), &file).try_get_matches_from(["swarm", "worker", "--id", "from-flag"]).expect("parse");
        assert_eq!(get(&m, "worker", "slots"), ["8"], "the file beats the built-in default");
        assert_eq!(get(&m, "worker", "id"), ["from-flag"], "a flag beats the file");
        assert_eq!(get(&m, "worker", "etcd"), ["http://a:2379", "http://b:2379"], "top-level keys apply");
        let m = apply(cmd(), &file).try_get_matches_from(["swarm", "coordinator"]).expect("parse");
        assert_eq!(get(&m, "coordinator", "etcd").len(), 2);
        assert_eq!(get(&m, "coordinator", "listen"), ["127.0.0.1:7070"], "untouched defaults stay");
    }

    #[test]
    fn a_command_section_beats_the_top_level() {
        let text = "slots: 4\nworker:\n  slots: 16\n";
        let file = parse(text, &cmd()).expect("valid");
        let m = apply(cmd(), &file).try_get_matches_from(["swarm", "worker"]).expect("parse");
        assert_eq!(get(&m, "worker", "slots"), ["16"]);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = parse("worker:\n  slot: 8\n", &cmd()).expect_err("typo");
        assert!(e.contains("worker.slot"), "{e}");
        let e = parse("bogus: 1\n", &cmd()).expect_err("unknown");
        assert!(e.contains("bogus"), "{e}");
        assert!(parse("worker: 3\n", &cmd()).is_err(), "a section must be a mapping");
        assert_eq!(parse("", &cmd()).expect("empty"), ConfigFile::default());
    }

    #[test]
    fn the_path_comes_from_the_flag() {
        let args: Vec<OsString> =
            ["swarm", "worker", "--config", "/etc/swarm.yaml"].iter().map(OsString::from).collect();
        assert_eq!(path_from(&args), Some(PathBuf::from("/etc/swarm.yaml")));
        let args: Vec<OsString> = ["swarm", "--config=/x.yaml", "up"].iter().map(OsString::from).collect();
        assert_eq!(path_from(&args), Some(PathBuf::from("/x.yaml")));
    }
}
