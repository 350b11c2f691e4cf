//! # understudy-cluster
//!
//! Understudy nodes as OS processes over `ractor_cluster`: the wire that carries the actors'
//! messages between nodes, membership (who is connected, by name, re-dialled after any
//! disconnect), the control plane each group runs on Raft, and the node's configuration.
//!
//! ## Map
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`args`] | the flags of a node process, for any binary that runs nodes |
//! | [`bench`](mod@bench) | load driven from inside a node for `understudy bench`: the closed loop, the baseline counter actor |
//! | [`builder`] | starting a node from an application's `main`: `Node::builder`, unit kinds, typed clients |
//! | [`node`] | one node: its `NodeServer`, local manager, name table, membership and re-dialling |
//! | [`probe`] | talking to a running cluster from outside it: status and calls |
//! | [`operator`] | what an operator asks of a cluster (status, switchover, drain, restore), from outside or from a node |
//! | [`http`] | every node's HTTP API (axum): status, switchover, drain, Prometheus `/metrics` |
//! | [`console`] | the live web console at `/`: its page, its event stream, the node's timeline of takeovers |
//! | [`wire`] | the one advertised endpoint per node, and the links that reach other nodes through it |
//! | [`config`] | `units.toml`: the groups and units of a cluster |
//! | [`departure`] | seeing a peer's process end at once: its session closed and its port refuses |
//! | [`tls`] | mutual TLS between nodes from `--tls-cert`, `--tls-key`, `--tls-ca`; dialling with or without it |
//! | [`mesh`] | every node of a TLS cluster connected to every other (ractor_cluster's own meshing is plain TCP) |
//! | [`admission`] | who may join (cookie, certificate), and the errors both ends log when a peer is refused |
//! | [`control`] | the group's control plane: the table every node applies from Raft, the group manager on the leader |
//! | [`raft`] | consensus within a group: openraft over an in-memory log, applying the committed log |

#![warn(missing_docs)]

pub mod admission;
pub mod args;
pub mod bench;
pub mod builder;
pub mod config;
pub mod console;
pub mod control;
pub mod departure;
pub mod http;
pub mod mesh;
pub mod node;
pub mod operator;
pub mod probe;
pub mod raft;
pub mod tls;
pub mod wire;
