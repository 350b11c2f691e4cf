//! `shop`: the shop's own binary, a node of an Understudy cluster with the shop's units.
//!
//! ```text
//! shop node --name a --port 7401 --expect 3
//! shop node --name b --port 7402 --join 127.0.0.1:7401
//! shop node --name c --port 7403 --join 127.0.0.1:7401
//! ```

use understudy::cluster::args::NodeArgs;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `shop node --name … --port … [--join …] [--cookie …] [--expect …] [--config …]`
    let args = NodeArgs::from_env();
    let builder = args.builder(understudy_shop::units()?)?;
    let node = understudy_shop::register(builder).start().await?;
    println!(
        "shop node {} listening on {}:{}",
        args.name, args.bind, args.port
    );
    node.serve_until_signal().await;
    Ok(())
}
