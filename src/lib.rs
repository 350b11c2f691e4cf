//! # Understudy
//!
//! Understudy keeps actor-based services answering within their response-time budgets while
//! actors, processes and whole machines fail. Software is split into **units**, each of which
//! owns all of its state and is reached only by messages through a name server. Each unit
//! runs as two copies on two nodes: the **primary** serves and sends its state changes to the
//! **standby**, which takes over when the primary is lost — promoted, the old primary fenced
//! by epoch, the name rebound, and the callers' queued and in-flight stimuli resent to it.
//!
//! This crate is the facade: it re-exports the public API of its parts.
//!
//! | module | crate | what it holds |
//! | --- | --- | --- |
//! | [`runtime`] | `understudy-runtime` | the pure protocol core: `Unit`, epochs, leases, roles, replication, dedupe, takeover, the simulation |
//! | [`actors`] | `understudy-actors` | the ractor actors: unit copies, `LocalManager`, `GroupManager`, `Registry`, `UnitClient` |
//! | [`cluster`] | `understudy-cluster` | nodes as OS processes over `ractor_cluster` |
//! | [`units`] | this crate | the example units: key-value and ledger |
//! | [`testkit`] | this crate | real node processes for programs and tests: start, fault, restart, clean up |
//! | [`demo`] | this crate | the in-process failover demonstration behind `understudy demo` |
//!
//! ## Writing a unit
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use understudy::{Handled, Unit};
//!
//! /// Counts what it is told to count.
//! #[derive(Clone, Debug)]
//! struct Counter;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! enum CounterRequest { Add(u64), Read }
//!
//! impl Unit for Counter {
//!     type State = u64;
//!     type Stimulus = CounterRequest;
//!     type Response = u64;
//!     type Update = u64;
//!
//!     fn handle(&self, state: &u64, stimulus: &CounterRequest) -> Handled<Self> {
//!         match stimulus {
//!             CounterRequest::Add(n) => Handled::write(state + n, vec![*n]),
//!             CounterRequest::Read => Handled::read(*state),
//!         }
//!     }
//!
//!     fn apply(&self, state: &mut u64, update: &u64) {
//!         *state += update;
//!     }
//! }
//!
//! let c = Counter;
//! let h = c.handle(&40, &CounterRequest::Add(2));
//! assert_eq!(h.response, 42);
//! ```
//!
//! ## Running it inside your own application
//!
//! Your binary starts a node with [`Node::builder`](cluster::node::Node::builder): its name and
//! port, the peers it joins, the cluster's cookie, the units file, and your unit kinds — a
//! kind name, as `units.toml` spells it, and how to make the unit from its entry. The running
//! node hands out typed [`UnitClient`]s, usable from any task or ractor actor of yours; they
//! follow the unit's takeovers until its budget runs out.
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # use understudy::{Handled, Unit};
//! # #[derive(Clone, Debug)] struct Counter;
//! # #[derive(Clone, Debug, Serialize, Deserialize)] enum CounterRequest { Add(u64), Read }
//! # impl Unit for Counter {
//! #     type State = u64; type Stimulus = CounterRequest; type Response = u64; type Update = u64;
//! #     fn handle(&self, s: &u64, r: &CounterRequest) -> Handled<Self> {
//! #         match r { CounterRequest::Add(n) => Handled::write(s + n, vec![*n]), CounterRequest::Read => Handled::read(*s) }
//! #     }
//! #     fn apply(&self, s: &mut u64, u: &u64) { *s += u; }
//! # }
//! use understudy::cluster::config::ClusterConfig;
//! use understudy::cluster::node::Node;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClusterConfig::from_toml_str(
//!     r#"
//!     [[units]]
//!     name = "hits"
//!     kind = "counter"
//!     "#,
//! )?;
//! // The seed: started without `join`, it founds the group once three nodes are up.
//! let node = Node::builder("a", 7101)
//!     .cookie("a shared secret")
//!     .config(config)
//!     .kind("counter", |_entry| Counter)
//!     .expect(3)
//!     .start()
//!     .await?;
//! let hits = node.client("hits", Counter);
//! let total = hits.call(CounterRequest::Add(1)).await?;
//! println!("{total} hits");
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embedded` is a whole application built this way (the shop: an inventory and an
//! orders unit, its own `shop` binary and a cluster test written with [`testkit`]).

pub mod demo;
pub mod testkit;
pub mod units;

pub use understudy_actors as actors;
pub use understudy_cluster as cluster;
pub use understudy_runtime as runtime;

pub use understudy_actors::{
    CallError, Catalog, ClusterConfig, InProcessCluster, UnitClient, UnitKind,
};
pub use understudy_runtime::{
    Budget, CopyConfig, DependencyChange, Epoch, Handled, StimulusId, Unit,
};
