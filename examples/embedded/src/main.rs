//! `shop`: the shop's own binary, a node of an Understudy cluster with the shop's units.
//!
//! ```text
//! shop node --name a --port 7401 --expect 3
//! shop node --name b --port 7402 --join 127.0.0.1:7401
//! shop node --name c --port 7403 --join 127.0.0.1:7401
//! ```

use clap::{Parser, Subcommand};
use understudy::cluster::builder::DEV_COOKIE;
use understudy::cluster::config::ClusterConfig;

#[derive(Parser, Debug)]
#[command(
    name = "shop",
    about = "A shop whose inventory and orders survive crashes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node of the shop's cluster until SIGTERM or Ctrl-C.
    Node {
        /// The node's name, unique in the cluster.
        #[arg(long)]
        name: String,
        /// The port to listen on (127.0.0.1).
        #[arg(long)]
        port: u16,
        /// A node to join, as HOST:PORT (repeatable); the node that joins nobody founds the
        /// cluster.
        #[arg(long)]
        join: Vec<String>,
        /// The cluster's shared secret.
        #[arg(long, default_value = DEV_COOKIE)]
        cookie: String,
        /// Place the units once this many nodes are up.
        #[arg(long, default_value_t = 1)]
        expect: usize,
        /// A units file instead of the shop's own.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Command::Node {
        name,
        port,
        join,
        cookie,
        expect,
        config,
    } = Cli::parse().command;
    let config = match config {
        Some(path) => Some(ClusterConfig::load(&path, &["inventory", "orders"])?),
        None => None,
    };
    let mut builder = understudy_shop::builder(&name, port, config)?
        .cookie(cookie)
        .expect(expect);
    for peer in join {
        builder = builder.join(peer);
    }
    let node = builder.start().await?;
    println!("shop node {name} listening on 127.0.0.1:{port}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    node.stop();
    Ok(())
}
