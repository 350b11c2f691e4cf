//! The `understudy` command line.

use clap::{Parser, Subcommand};

/// Understudy: keeps actor-based services answering while actors, processes and machines fail.
#[derive(Debug, Parser)]
#[command(name = "understudy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a unit pair under load in this process, kill the primary's node, and print what
    /// happened (takeover time, acknowledged, lost, applied twice).
    Demo,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => understudy::demo::pair_failover().await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("understudy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
