//! The messages that may cross a node boundary. `LocalManagerMsg::Cast`,
//! `LocalManagerMsg::Stimulus` and `GroupManagerMsg::Cast` carry them as they are, so nothing
//! converts between a local and a network form. Everything here is plain data (serde),
//! encoded with MessagePack by whoever carries it; reply ports never travel inside an
//! envelope — a stimulus, which needs an answer, travels as a [`StimulusAsk`] over a
//! request–response channel instead.

use crate::registry::NameUpdate;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use understudy_runtime::global::SlowThread;
use understudy_runtime::{
    CopyId, Directive, Epoch, LeaseAsk, LeaseRenewal, NodeName, Report, Seq, StartAs, StimulusId,
    Time, TraceId, UnitName,
};

/// The largest encoded stimulus a client sends and a copy accepts: 1 MiB. It is well under
/// the largest frame a node accepts from a peer (16 MiB, `understudy_cluster::node::
/// MAX_FRAME_BYTES`, which closes the session of a peer that sends more), so a stimulus, its
/// request and the messages that carry it on always fit in a frame. Larger data belongs
/// elsewhere (a store), with a reference to it in the stimulus.
pub const MAX_STIMULUS_BYTES: usize = 1024 * 1024;

/// A one-way message for another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope {
    /// For the node's `LocalManager`.
    Node(NodeCast),
    /// For the manager of `group`, if it runs on that node (a node that does not run it, or
    /// runs another group's, drops it).
    Manager {
        /// The sender's group.
        group: String,
        /// The message.
        cast: ManagerCast,
    },
}

/// The one-way messages a `LocalManager` takes from other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeCast {
    /// Group manager: start a copy here.
    StartCopy {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// How it starts.
        start_as: StartAs,
        /// Its primary's node.
        peer_node: Option<NodeName>,
    },
    /// Group manager: stop a copy here.
    StopCopy {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
    },
    /// Group manager: pass a directive to a copy here.
    Direct {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// The directive.
        directive: Directive,
        /// The node of the copy it names.
        peer_node: Option<NodeName>,
    },
    /// Group manager: the leases of primaries here renewed, in answer to this node's
    /// [`ManagerCast::RenewLeases`]; each goes to its copy as a `Directive::Lease` from
    /// `from` for `duration` (with its ready standby restated).
    Leases {
        /// When this node asked, on its clock.
        from: Time,
        /// How long each lease runs.
        duration: Duration,
        /// The primaries renewed.
        renewals: Vec<LeaseRenewal>,
    },
    /// Group manager: changes to the name table.
    Names(Vec<NameUpdate>),
    /// Fault injection (tests, the demo): the copy's next stimulus panics inside its handler,
    /// as faulty application code would.
    InjectPanic {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
    },
    /// Another node's copy sends to a copy here.
    Peer {
        /// The unit.
        unit: UnitName,
        /// The copy addressed.
        to: CopyId,
        /// The sender's node.
        from_node: NodeName,
        /// The encoded peer message.
        bytes: Vec<u8>,
    },
}

/// The one-way messages a group manager takes from other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagerCast {
    /// A node's local manager started (or started again, empty).
    NodeUp {
        /// The node.
        node: NodeName,
        /// Which start of the node's process this is (a new number every start).
        incarnation: u64,
    },
    /// A node's periodic sign of life, with its inventory.
    NodeAlive {
        /// The node.
        node: NodeName,
        /// Which start of the node's process this is.
        incarnation: u64,
        /// The copies it runs (or told to stop and not yet ended), with their units.
        running: Vec<(UnitName, CopyId)>,
        /// The node's clock when it sent this (a standby's first lease at a promotion is
        /// counted from it).
        sent_at: Time,
    },
    /// A local manager lost a copy: crashed (`known_dead`) or hung.
    CopyDown {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// Whether it certainly stopped.
        known_dead: bool,
        /// The stimulus it was serving when it ended, if it ended inside a handler.
        #[serde(default)]
        during: Option<StimulusId>,
        /// How it ended, as the local manager saw it (a panic's message).
        #[serde(default)]
        why: String,
    },
    /// A local manager started a copy it was asked for.
    CopyStarted {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
    },
    /// A copy's report.
    Report(Report),
    /// A node's primaries ask for their leases, gathered by its local manager into one
    /// request (see `understudy_runtime::renewal`).
    RenewLeases {
        /// The node.
        node: NodeName,
        /// Which start of the node's process this is (its clock counts from that start).
        incarnation: u64,
        /// When it asked, on its clock.
        requested_at: Time,
        /// The primaries that asked.
        asks: Vec<LeaseAsk>,
    },
    /// A stimulus thread that began at a copy on the sender's node broke its budget (its
    /// `group` is named by the manager), for the global manager.
    SlowThread(Box<SlowThread>),
    /// Another member of the group proved that incarnation `incarnation` of node `node`
    /// ended (its session closed and its port refuses connections): the manager counts it
    /// down at once, as if it had seen it itself, unless the table records another start of
    /// the node or counts it down already.
    NodeGone {
        /// The node.
        node: NodeName,
        /// The start of it that ended, as the sender's table records it.
        incarnation: u64,
    },
}

/// A stimulus sent to another node, which answers with an encoded
/// [`crate::copy::StimulusReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimulusAsk {
    /// The unit.
    pub unit: UnitName,
    /// The copy addressed.
    pub copy: CopyId,
    /// The stimulus's id.
    pub id: StimulusId,
    /// Its client's low-water mark.
    pub low_water: Seq,
    /// The epoch of the binding it was sent by (0: addressed to the copy without one). A
    /// standby that sees a newer epoch than its own knows its promotion is on the way.
    pub bound_at: Epoch,
    /// The encoded stimulus.
    pub body: Vec<u8>,
    /// The stimulus thread it belongs to, when a unit sends it on behalf of a stimulus it
    /// serves (absent: it begins a thread of its own).
    #[serde(default)]
    pub trace: Option<TraceId>,
}
