//! `swarm`: one binary for the embedded cluster, the coordinator and worker processes, the
//! client commands and the benchmarks. Exit codes: 0 success; 1 error; 2 the run ended but not
//! SUCCEEDED (`submit --wait`, `get`); 64 bad usage (an invalid spec among it); 70 the coordinator stopped because it
//! could not go on; 141 the output pipe closed.
//!
//! `args` holds the command line; `cmd/` one module per group of commands.

mod args;
mod cmd;

use std::process::ExitCode;
use std::time::Duration;

use args::{Cli, Command};

/// mimalloc instead of the system allocator: it returns freed memory to the OS, so a
/// coordinator's resident set comes back down after a burst of large outputs (glibc's malloc
/// kept ~400 MiB of freed 50 KiB blocks after 200 runs; see docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the command line with the config file's values as defaults.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = Cli::command();
    if let Some(path) = swarm_cli::config::path_from(&args) {
        match swarm_cli::config::load(&path, &cmd) {
            Ok(file) => cmd = swarm_cli::config::apply(cmd, &file),
            Err(e) => {
                eprintln!("error: config file {e}");
                std::process::exit(64);
            }
        }
    }
    let matches = cmd.try_get_matches_from(args).unwrap_or_else(|e| usage_error(e));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e))
}

/// Prints what the argument parser said and exits: 0 for `--help` and `--version`, 64 (bad
/// usage) for every mistake (clap's own code, 2, is the code of a run that ended but did not
/// succeed).
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let _ = e.print();
    let code = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ => 64,
    };
    std::process::exit(code)
}

/// 64 (bad usage) for a spec file that is not a spec and for what the coordinator refused as
/// invalid (INVALID_ARGUMENT, with its fields); 1 for every other error.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use swarm_cli::{client::StatusError, specs::BadSpecFile};
    let usage = e.chain().any(|c| {
        c.is::<BadSpecFile>() || c.downcast_ref::<StatusError>().is_some_and(|s| s.code == tonic::Code::InvalidArgument)
    });
    if usage { ExitCode::from(64) } else { ExitCode::FAILURE }
}

fn main() -> ExitCode {
    // One TLS crypto provider for every HTTPS client in the process (ring; no aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = parse_cli();
    if let Command::Bench(args) = &cli.command {
        return cmd::bench::run(args);
    }
    let server = matches!(cli.command, Command::Up(_) | Command::Coordinator(_) | Command::Worker(_));
    // `swarm run` says what its embedded coordinator warns about a run itself (the run's
    // warnings, on stderr): the coordinator's own log lines would say it twice. The workers'
    // warnings (a missing sandbox, an MCP server that will not start) stay.
    let default_filter = if server {
        "info"
    } else if matches!(cli.command, Command::Run(_)) {
        "warn,swarm_coordinator=error"
    } else {
        "warn"
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let service = match cli.command {
        Command::Coordinator(_) => "swarm-coordinator",
        Command::Worker(_) => "swarm-worker",
        _ => "swarm",
    };
    let telemetry = {
        let _inside = runtime.enter();
        swarm_telemetry::init(service, default_filter)
    };
    let code = match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    };
    let _inside = runtime.enter();
    telemetry.shutdown(Duration::from_secs(3));
    code
}
