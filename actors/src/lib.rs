//! # understudy-actors
//!
//! The `ractor` actors that carry Understudy's protocol. They decide nothing themselves: each
//! turns its messages into inputs for a core of `understudy-runtime`, and carries the
//! commands the core returns to mailboxes (and, through node endpoints, to other nodes).
//!
//! ## Map
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`copy`] | the unit actor [`UnitCopy`], which runs one copy in either role |
//! | [`local_manager`] | the [`LocalManager`], supervisor and heartbeat of every copy on a node, and the node's endpoint |
//! | [`group_manager`] | the [`GroupManager`], which hosts the group's takeover decisions |
//! | [`link`] | [`Directory`], [`NodeLink`], [`ManagerLink`]: reaching a node or a group manager, here or across the network |
//! | [`envelope`] | the messages that may cross a node boundary |
//! | [`registry`] | the [`Registry`], a node's name table: unit → primary and epoch, with waiting for rebinding |
//! | [`budgets`] | [`BudgetBook`]: the node's time spent against budgets, served and called |
//! | [`client`] | [`UnitClient`], the typed handle that calls a unit and follows its takeovers |
//! | [`in_process`] | several nodes in one process, for tests and demonstrations |
//! | [`codec`], [`clock`], [`error`] | encoding, the clock, and the errors a caller sees |
//!
//! ## The path of a stimulus
//!
//! ```text
//!  UnitClient ──resolve──► Registry (this node)        binding: node, copy, epoch
//!      │
//!      └─Stimulus─► LocalManager of that node ──► UnitCopy (primary) ──Replicate─► LocalManager
//!                                                     ▲                            of the standby's
//!      answer ◄──────────── after the standby's Ack ──┘◄──────Ack──── UnitCopy (standby)
//! ```

#![warn(missing_docs)]

pub mod budgets;
pub mod client;
pub mod clock;
pub mod codec;
pub mod copy;
pub mod envelope;
pub mod error;
pub mod group_manager;
pub mod in_process;
pub mod link;
pub mod local_manager;
pub mod registry;

pub use budgets::{BudgetBook, BudgetReport, ReconciledRow};
pub use client::{Served, TrailingLoss, UnitClient};
pub use copy::{CopyMsg, JsonAnswer, ServedBy, UnitCopy, UnitKind};
pub use error::{CallError, DeliveryError};
pub use group_manager::{GroupManager, GroupManagerConfig, GroupManagerMsg, UnitStatus};
pub use in_process::{ClusterConfig, InProcessCluster};
pub use link::{Directory, LinkError, ManagerLink, NodeLink};
pub use local_manager::{Catalog, LocalManager, LocalManagerConfig, LocalManagerMsg};
pub use registry::{Binding, NameState, QuarantineUpdate, Registry};
