//! One module per group of commands; [`run`] dispatches a parsed command (`bench` runs before
//! the runtime starts: see `main`).

pub mod bench;
pub mod demo;
pub mod fork;
pub mod runs;
pub mod server;

use std::process::ExitCode;

use crate::args::Command;

/// Runs one command on the current runtime.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => server::up(args).await,
        Command::Coordinator(args) => server::coordinator(args).await,
        Command::Worker(args) => server::worker(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => runs::run(args).await,
        Command::Signal(args) => runs::signal(args).await,
        Command::Submit(args) => runs::submit(args).await,
        Command::Get(args) => runs::get(args).await,
        Command::Runs(args) => runs::runs(args).await,
        Command::Fork(args) => fork::fork(args).await,
        Command::Replay(args) => fork::replay(args).await,
        Command::Cancel(args) => runs::cancel(args).await,
        Command::Artifact(args) => runs::artifact(args).await,
        Command::Watch(args) => runs::watch(args).await,
        Command::Healthcheck(args) => demo::healthcheck(args).await,
        Command::Certs(args) if args.if_missing && args.dir.join("server.pem").exists() => {
            println!("{}: certificates present; kept", args.dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) if !args.revoke.is_empty() => {
            let crl = swarm_cli::certs::revoke(&args.dir, &args.revoke)?;
            println!("revoked {}: {}", args.revoke.join(", "), crl.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => {
            let issued = swarm_cli::certs::generate(&args.dir, &args.hosts, &args.clients, args.days)?;
            println!("CA:     {}", issued.ca.display());
            println!("server: {} {}", issued.server_cert.display(), issued.server_key.display());
            for (name, cert, key) in &issued.clients {
                println!("client {name}: {} {}", cert.display(), key.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Example(args) => demo::example(args).await,
        Command::Bench(args) => Ok(bench::run(&args)),
    }
}
