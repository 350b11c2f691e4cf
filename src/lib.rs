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
//! | [`units`] | this crate | the example units: key-value, ledger (also split over two units) and pipeline stage |
//! | [`api_client`] | this crate | the HTTP client of a node's API behind `understudy status`, `switchover`, `drain` and `restore` |
//! | [`testkit`] | this crate | real node processes for programs and tests: start, fault, restart, clean up |
//! | [`demo`] | this crate | the in-process failover demonstration behind `understudy demo` |
//! | [`bench`](mod@bench) | this crate | `understudy bench`: a unit's throughput and latency against a plain ractor actor |
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
//! Your binary starts a node: [`NodeArgs`](cluster::args::NodeArgs) reads the node's flags
//! (`node --name --port --join --cookie --expect`, the flags the [`testkit`] passes too),
//! [`NodeArgs::builder`](cluster::args::NodeArgs::builder) makes a
//! [`Node::builder`](cluster::node::Node::builder) from them with your units file, and you
//! register your unit kinds — a kind name, as `units.toml` spells it, and how to make the unit
//! from its entry. The node that joins nobody is the seed: it founds the cluster once
//! `--expect` nodes are up.
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
//! use understudy::cluster::args::NodeArgs;
//! use understudy::cluster::config::ClusterConfig;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // yourbin node --name a --port 7101 --expect 3        (the seed)
//!     // yourbin node --name b --port 7102 --join 127.0.0.1:7101
//!     let args = NodeArgs::from_env();
//!     let units = ClusterConfig::from_toml_str(
//!         r#"
//!         [[units]]
//!         name = "hits"
//!         kind = "counter"
//!         t_max_ms = 2000
//!         "#,
//!     )?;
//!     let node = args
//!         .builder(units)?
//!         .kind("counter", |_entry| Counter)
//!         .start()
//!         .await?;
//!     // A typed client: it resolves the unit by name and follows its takeovers.
//!     let hits = node.client("hits", Counter);
//!     let total = hits.call(CounterRequest::Add(1)).await?;
//!     println!("{total} hits");
//!     node.serve_until_signal().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Calling a unit from your own ractor actor
//!
//! A [`UnitClient`] is cheap to clone and may live in any actor's state; awaiting a call in
//! the actor's handler is all it takes (`examples/embedded`'s `CheckoutActor` calls two units
//! this way).
//!
//! ```
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
//! use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
//! use understudy::{CallError, UnitClient};
//!
//! /// Counts page views in the `hits` unit and answers the new total.
//! struct PageViews;
//!
//! struct View(RpcReplyPort<Result<u64, CallError>>);
//! impl ractor::Message for View {}
//!
//! impl Actor for PageViews {
//!     type Msg = View;
//!     type State = UnitClient<Counter>;
//!     type Arguments = UnitClient<Counter>;
//!
//!     async fn pre_start(
//!         &self,
//!         _me: ActorRef<View>,
//!         hits: UnitClient<Counter>,
//!     ) -> Result<UnitClient<Counter>, ActorProcessingErr> {
//!         Ok(hits)
//!     }
//!
//!     async fn handle(
//!         &self,
//!         _me: ActorRef<View>,
//!         View(reply): View,
//!         hits: &mut UnitClient<Counter>,
//!     ) -> Result<(), ActorProcessingErr> {
//!         let _ = reply.send(hits.call(CounterRequest::Add(1)).await);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use understudy::{Catalog, ClusterConfig, CopyConfig, InProcessCluster, UnitKind};
//! // Three nodes in this process (a real deployment runs them as processes, as above).
//! let catalog = Catalog::new().with_unit("hits", UnitKind::new(Counter), CopyConfig::default());
//! let cluster = InProcessCluster::start(catalog, &["a", "b", "c"], ClusterConfig::default()).await?;
//! cluster.wait_ready(Duration::from_secs(10)).await?;
//! let hits = cluster.client("a", "hits", Counter)?;
//! let (views, _) = Actor::spawn(None, PageViews, hits).await?;
//! assert_eq!(ractor::call!(views, View)?, Ok(1));
//! assert_eq!(ractor::call!(views, View)?, Ok(2));
//! # views.stop(None);
//! # cluster.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! ## A unit that calls another
//!
//! A unit calls another from [`Unit::handle_with`]: it returns [`Step::Call`] with an
//! [`Outcall`], and runs again with the reply appended until it returns [`Step::Done`]. The
//! runtime gives the call an id derived from the stimulus being served, commits that
//! stimulus's begin to the standby before the call leaves, and serves nothing else until the
//! reply is back; so a takeover serves the stimulus again, with the same call, and the called
//! unit answers it from its table — its effect happens once (`docs/semantics.md`, 18–20).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use understudy::{CallReply, Handled, Outcall, Step, Unit};
//!
//! /// Forwards each number to the unit "sum" and remembers how many it forwarded.
//! #[derive(Clone, Debug)]
//! struct Forwarder;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct Number(u64);
//!
//! impl Unit for Forwarder {
//!     type State = u64;
//!     type Stimulus = Number;
//!     type Response = Option<u64>;
//!     type Update = ();
//!
//!     /// Without a call: nothing to say.
//!     fn handle(&self, _count: &u64, _n: &Number) -> Handled<Self> {
//!         Handled::read(None)
//!     }
//!
//!     fn handle_with(&self, _count: &u64, n: &Number, replies: &[CallReply]) -> Step<Self> {
//!         match replies {
//!             [] => Step::Call(Outcall::new("sum", n)),
//!             [reply, ..] => Step::Done(match reply.decode::<u64>() {
//!                 Ok(total) => Handled::write(Some(total), vec![()]),
//!                 Err(_) => Handled::read(None),
//!             }),
//!         }
//!     }
//!
//!     fn apply(&self, count: &mut u64, _: &()) {
//!         *count += 1;
//!     }
//! }
//!
//! let Step::Call(call) = Forwarder.handle_with(&0, &Number(5), &[]) else { unreachable!() };
//! assert_eq!(call.unit.0, "sum");
//! ```
//!
//! ## Testing it under faults
//!
//! [`testkit::ProcessCluster`] starts your binary as N node processes on free loopback
//! ports, waits until the cluster is ready, injects faults — `kill -9`, `SIGSTOP`/`SIGCONT`,
//! a panic in a unit's handler, partitions one way or both — and stops every node when the
//! test ends, also when it fails. A [`testkit::History`] records every call and checks lost,
//! duplicated and late counts, and one primary per epoch.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use understudy::testkit::{History, Outcome, ProcessCluster};
//! use understudy::runtime::NodeName;
//!
//! # async fn fault_test() {
//! let mut cluster = ProcessCluster::builder("target/release/yourbin") // env!("CARGO_BIN_EXE_yourbin")
//!     .nodes(&["a", "b", "c"])
//!     .start()
//!     .expect("three nodes start");
//! let probe = cluster.ready(Duration::from_secs(30)).await.expect("the cluster forms");
//! let history = History::new();
//! let t_max = Duration::from_secs(2);
//! for i in 0..100 {
//!     if i == 50 {
//!         cluster.kill9("a");
//!     }
//!     let sent = Instant::now();
//!     let (outcome, served_by) =
//!         match probe.call_json_served(&NodeName::new("b"), "hits", r#"{"Add":1}"#, Some(t_max)).await {
//!             Ok(answer) => (Outcome::Answered(answer.json), Some(answer.served_by)),
//!             Err(e) => (Outcome::Failed(e.to_string()), None),
//!         };
//!     history.record_served("add 1", sent, t_max, outcome, served_by);
//! }
//! assert!(history.check_primaries().holds());
//! # }
//! ```
//!
//! `examples/quickstart` is the whole of this — the `hits` service with its fault test — and
//! the README walks through it from an empty crate; `examples/embedded` is a larger
//! application (the shop: an inventory and an orders unit, its own binary, a ractor actor
//! calling both, and a cluster test under concurrent load).

pub mod api_client;
pub mod bench;
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
    Budget, CallFailure, CallReply, CopyConfig, DependencyChange, Epoch, Handled, Outcall,
    Reconcile, Step, StimulusId, Unit,
};
