//! hits: a counter that survives the loss of any one of its nodes.

use serde::{Deserialize, Serialize};
use understudy::cluster::args::NodeArgs;
use understudy::cluster::config::ClusterConfig;
use understudy::{Handled, Unit};

/// The counter unit. Its state is one number, which Understudy keeps on two nodes: the
/// primary serves, the standby applies the same updates and takes over if the primary is lost.
#[derive(Clone, Debug)]
struct Counter;

/// What callers ask the counter (as JSON: `{"Add":1}`, `"Read"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum CounterRequest {
    /// Add to the count; the answer is the new count.
    Add(u64),
    /// The answer is the count.
    Read,
}

impl Unit for Counter {
    type State = u64;
    type Stimulus = CounterRequest;
    type Response = u64;
    type Update = u64;

    /// Runs on the primary: the answer, and the updates to apply on both copies.
    fn handle(&self, count: &u64, request: &CounterRequest) -> Handled<Self> {
        match request {
            CounterRequest::Add(n) => Handled::write(count + n, vec![*n]),
            CounterRequest::Read => Handled::read(*count),
        }
    }

    /// Runs on both copies.
    fn apply(&self, count: &mut u64, added: &u64) {
        *count += added;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // hits node --name NAME --port PORT [--join HOST:PORT] [--expect N] [--cookie SECRET]
    let args = NodeArgs::from_env();
    let units = ClusterConfig::from_toml_str(include_str!("../units.toml"))?;
    let node = args
        .builder(units)?
        .kind("counter", |_entry| Counter)
        .start()
        .await?;
    println!(
        "hits node {} listening on {}:{}",
        args.name, args.bind, args.port
    );
    node.serve_until_signal().await;
    Ok(())
}
