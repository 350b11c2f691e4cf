//! The primary's side of replication, for both strategies a unit may choose.
//!
//! - **Synchronous**, with group commit: a response leaves only after the standby acknowledged
//!   the batch holding its update, and the updates of concurrent stimuli share one round trip.
//! - **Trailing**: a response leaves at once; its updates follow in the next batch, sealed at
//!   the end of each stimulus (as soon as the window has room) or once several have gathered.
//!   Every answer says how far the standby had got ([`Durability`]), so a caller can keep what
//!   the standby may not have and replay it after a takeover.
//!
//! ```text
//!   handle ──► open batch ──seal──► in flight (≤ window) ──ack──► replies released (synchronous)
//!                 ▲                      │
//!                 └── while a batch is in flight, new entries gather in the open batch
//! ```
//!
//! The replicator decides; the copy core acts on its decisions.

use crate::ids::BatchSeq;
use crate::message::Entry;
use crate::unit::Unit;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How a unit's state changes reach its standby.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// An answer leaves only once the standby acknowledged the batch holding its updates: an
    /// acknowledged stimulus survives the loss of the primary.
    #[default]
    Synchronous,
    /// The primary answers at once; its updates follow, sealed into batches as [`Flush`] says.
    /// The standby trails: at a takeover it may lack the last answered stimuli, which their
    /// callers replay to the new primary.
    Trailing(Flush),
}

/// When a trailing primary seals the updates gathered since the last batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flush {
    /// At the end of each stimulus, as soon as the window has room (updates of stimuli served
    /// while the window is full share the next batch). A unit's updates are produced at the end
    /// of its handler, so "as they happen" is this too.
    #[default]
    EachStimulus,
    /// Once `entries` entries have gathered, or the oldest has waited `delay`.
    Batched {
        /// Entries that make a batch.
        entries: usize,
        /// The longest an entry waits to be sealed.
        delay: Duration,
    },
}

/// How far an answer's effects had reached the standby when the answer left the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durability {
    /// The batch that holds the stimulus's updates (for a stimulus that only read: the batch
    /// completing the state it read).
    pub batch: BatchSeq,
    /// The newest batch the standby had acknowledged.
    pub standby_has: BatchSeq,
}

impl Durability {
    /// Whether the standby already had everything the answer depends on.
    pub fn durable(&self) -> bool {
        self.batch <= self.standby_has
    }
}

/// A sealed batch: consecutive entries that the standby applies whole or not at all.
#[derive(Clone, Debug)]
pub struct Batch<U: Unit> {
    /// Its place in the stream.
    pub seq: BatchSeq,
    /// Its entries.
    pub entries: Vec<Entry<U>>,
}

/// The primary's side of replication.
#[derive(Debug)]
pub struct Replicator<U: Unit, W> {
    strategy: Strategy,
    window: usize,
    open: Vec<Entry<U>>,
    sealed: BatchSeq,
    acked: BatchSeq,
    in_flight: VecDeque<Batch<U>>,
    waiters: BTreeMap<BatchSeq, Vec<W>>,
    /// The open batch holds an entry that must be committed (acknowledged) before its
    /// stimulus goes on, whatever the strategy: seal it at once.
    commit_waiting: bool,
}

impl<U: Unit, W> Replicator<U, W> {
    /// A replicator of `strategy` whose stream continues after batch `start`, with at most
    /// `window` batches in flight (at least 1).
    pub fn new(strategy: Strategy, start: BatchSeq, window: usize) -> Self {
        Replicator {
            strategy,
            window: window.max(1),
            open: Vec::new(),
            sealed: start,
            acked: start,
            in_flight: VecDeque::new(),
            waiters: BTreeMap::new(),
            commit_waiting: false,
        }
    }

    /// The last batch sealed.
    pub fn sealed(&self) -> BatchSeq {
        self.sealed
    }

    /// The last batch the standby acknowledged.
    pub fn acked(&self) -> BatchSeq {
        self.acked
    }

    /// How many entries wait in the open batch.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The batch that completes the state as it is now: the open batch's number if entries
    /// wait in it, else the last sealed.
    pub fn position(&self) -> BatchSeq {
        if self.open.is_empty() {
            self.sealed
        } else {
            self.sealed.next()
        }
    }

    /// An answer's durability, for a stimulus whose effects are complete with batch `batch`.
    pub fn durability(&self, batch: BatchSeq) -> Durability {
        Durability {
            batch,
            standby_has: self.acked,
        }
    }

    /// Whether the open batch should be sealed now (the window permitting), for a trailing
    /// primary whose oldest open entry has waited `waited`. A synchronous primary always seals.
    pub fn due(&self, waited: Duration) -> bool {
        if self.commit_waiting {
            return true;
        }
        match self.strategy {
            Strategy::Synchronous | Strategy::Trailing(Flush::EachStimulus) => true,
            Strategy::Trailing(Flush::Batched { entries, delay }) => {
                self.open.len() >= entries.max(1) || waited >= delay
            }
        }
    }

    /// How many answers are held.
    pub fn held(&self) -> usize {
        self.waiters.values().map(Vec::len).sum()
    }

    /// Whether anything is unacknowledged (open or in flight).
    pub fn pending(&self) -> bool {
        !self.open.is_empty() || self.sealed > self.acked
    }

    /// Add an entry to the open batch with nobody waiting on it (a change with no caller, or a
    /// stimulus served again at a takeover whose caller has not asked again yet).
    pub fn append(&mut self, entry: Entry<U>) {
        self.open.push(entry);
    }

    /// Commit `entry` whatever the strategy: hold `waiter` until the standby acknowledged the
    /// batch that carries it (in-flight knowledge: a stimulus's begin). Returns that batch.
    pub fn commit(&mut self, entry: Entry<U>, waiter: W) -> BatchSeq {
        self.open.push(entry);
        self.commit_waiting = true;
        let seq = self.sealed.next();
        self.waiters.entry(seq).or_default().push(waiter);
        seq
    }

    /// Hold `waiter` until batch `seq` is acknowledged, or return it if it already is (or the
    /// strategy is trailing, which holds nothing).
    pub fn hold_until(&mut self, seq: BatchSeq, waiter: W) -> Option<W> {
        if seq <= self.acked || self.strategy != Strategy::Synchronous {
            return Some(waiter);
        }
        self.waiters.entry(seq).or_default().push(waiter);
        None
    }

    /// The batch to send now, if the open batch has entries and the window has room.
    pub fn seal(&mut self) -> Option<Batch<U>> {
        if self.open.is_empty() || self.in_flight.len() >= self.window {
            return None;
        }
        self.sealed = self.sealed.next();
        self.commit_waiting = false;
        let batch = Batch {
            seq: self.sealed,
            entries: std::mem::take(&mut self.open),
        };
        self.in_flight.push_back(batch.clone());
        Some(batch)
    }

    /// Seal the open batch without sending it, drop everything in flight, and return the
    /// batch a snapshot of the current state stands for. Held answers stay held until the
    /// snapshot is acknowledged.
    pub fn seal_for_snapshot(&mut self) -> BatchSeq {
        if !self.open.is_empty() {
            self.open.clear();
            self.sealed = self.sealed.next();
        }
        self.commit_waiting = false;
        self.in_flight.clear();
        self.sealed
    }

    /// The standby acknowledged every batch up to `upto`: the answers released.
    pub fn on_ack(&mut self, upto: BatchSeq) -> Vec<W> {
        let upto = upto.min(self.sealed);
        if upto <= self.acked {
            return Vec::new();
        }
        self.acked = upto;
        while self.in_flight.front().is_some_and(|b| b.seq <= upto) {
            self.in_flight.pop_front();
        }
        let keep = self.waiters.split_off(&upto.next());
        let released = std::mem::replace(&mut self.waiters, keep);
        debug_assert!(self.acked <= self.sealed, "acked beyond sealed");
        released.into_values().flatten().collect()
    }

    /// The batches in flight, to send again.
    pub fn in_flight(&self) -> impl Iterator<Item = &Batch<U>> {
        self.in_flight.iter()
    }

    /// Give up every held answer (the copy was fenced).
    pub fn drain_waiters(&mut self) -> Vec<W> {
        std::mem::take(&mut self.waiters)
            .into_values()
            .flatten()
            .collect()
    }
}
