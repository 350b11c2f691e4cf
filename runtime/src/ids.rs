//! Identities that travel in every message: epochs, stimulus ids, copy ids, node names.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The epoch of a unit's primary. It only grows: each takeover commits a new one, and every
/// message between copies and managers carries the epoch it belongs to, so the stale side can
/// be refused with an error naming the current epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of a unit that has never had a primary.
    pub const ZERO: Epoch = Epoch(0);

    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// Who sent a stimulus: one `UnitClient` (or one calling unit) for its whole life.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClientId(pub u64);

/// A client's sequence number for its stimuli, starting at 1 and growing by one per stimulus.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Seq {
    /// The first sequence number a client uses.
    pub const FIRST: Seq = Seq(1);
}

/// Names one stimulus for its whole life, across retries and takeovers, so that a retry is
/// recognised and answered from the dedupe table instead of taking effect twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StimulusId {
    /// The client that sent it.
    pub client: ClientId,
    /// Its sequence number at that client.
    pub seq: Seq,
}

impl fmt::Display for StimulusId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}#{}", self.client.0, self.seq.0)
    }
}

/// Names one stimulus thread: a stimulus a client sent and every call the units it reaches
/// make on its behalf, however deep. It is the id of the stimulus that began the thread; each
/// call carries it on, so one id finds the thread in the logs of every unit it passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TraceId(pub StimulusId);

impl TraceId {
    /// The trace of a thread `root` begins (a stimulus no unit sent).
    pub fn root(root: StimulusId) -> TraceId {
        TraceId(root)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One incarnation of one copy of a unit. A copy that restarts gets a new id, so messages to
/// or from an earlier incarnation are never mistaken for the current one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CopyId(pub u64);

impl fmt::Display for CopyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy{}", self.0)
    }
}

/// A node, known by its name (transport-level ids change on reconnect; names do not).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeName(pub String);

impl NodeName {
    /// A node name from any string.
    pub fn new(name: impl Into<String>) -> NodeName {
        NodeName(name.into())
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unit's name in the name server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnitName(pub String);

impl UnitName {
    /// A unit name from any string.
    pub fn new(name: impl Into<String>) -> UnitName {
        UnitName(name.into())
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sequence number of a replication batch within one primary's stream to its standby.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct BatchSeq(pub u64);

impl BatchSeq {
    /// The batch after this one.
    pub fn next(self) -> BatchSeq {
        BatchSeq(self.0 + 1)
    }
}
