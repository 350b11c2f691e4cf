//! The synchronous strategy's primary side, with group commit: a response leaves only after
//! the standby acknowledged the batch holding its update, and the updates of concurrent
//! stimuli share one round trip.
//!
//! ```text
//!   handle ──► open batch ──seal──► in flight (≤ window) ──ack──► replies released
//!                 ▲                      │
//!                 └── while a batch is in flight, new entries gather in the open batch
//! ```
//!
//! The replicator decides; the copy core acts on its decisions.

use crate::ids::BatchSeq;
use crate::message::Entry;
use crate::unit::Unit;
use std::collections::{BTreeMap, VecDeque};

/// A sealed batch: consecutive entries that the standby applies whole or not at all.
#[derive(Clone, Debug)]
pub struct Batch<U: Unit> {
    /// Its place in the stream.
    pub seq: BatchSeq,
    /// Its entries.
    pub entries: Vec<Entry<U>>,
}

/// What to do with a handled stimulus's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer now: nothing it depends on is unacknowledged.
    Reply,
    /// Hold the answer until the standby acknowledged this batch.
    HoldUntilAck(BatchSeq),
}

/// The primary's side of synchronous replication.
#[derive(Debug)]
pub struct SyncReplicator<U: Unit, W> {
    window: usize,
    open: Vec<Entry<U>>,
    sealed: BatchSeq,
    acked: BatchSeq,
    in_flight: VecDeque<Batch<U>>,
    waiters: BTreeMap<BatchSeq, Vec<W>>,
}

impl<U: Unit, W> SyncReplicator<U, W> {
    /// A replicator whose stream continues after batch `start`, with at most `window` batches
    /// in flight (at least 1).
    pub fn new(start: BatchSeq, window: usize) -> Self {
        SyncReplicator {
            window: window.max(1),
            open: Vec::new(),
            sealed: start,
            acked: start,
            in_flight: VecDeque::new(),
            waiters: BTreeMap::new(),
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

    /// How many answers are held.
    pub fn held(&self) -> usize {
        self.waiters.values().map(Vec::len).sum()
    }

    /// Whether anything is unacknowledged (open or in flight).
    pub fn pending(&self) -> bool {
        !self.open.is_empty() || self.sealed > self.acked
    }

    /// Offer a handled stimulus: its entry (`None` for a read) and the answer to hold.
    /// A read with nothing pending is answered at once; anything else waits for the batch
    /// that holds it (a read waits for the newest pending batch, so it never reveals a state
    /// the standby does not have).
    pub fn offer(&mut self, entry: Option<Entry<U>>, waiter: W) -> (Decision, Option<W>) {
        match entry {
            None if !self.pending() => (Decision::Reply, Some(waiter)),
            None if self.open.is_empty() => {
                let seq = self.sealed;
                self.waiters.entry(seq).or_default().push(waiter);
                (Decision::HoldUntilAck(seq), None)
            }
            entry => {
                if let Some(e) = entry {
                    self.open.push(e);
                }
                let seq = self.sealed.next();
                self.waiters.entry(seq).or_default().push(waiter);
                (Decision::HoldUntilAck(seq), None)
            }
        }
    }

    /// Hold `waiter` until batch `seq` is acknowledged, or return it if it already is.
    pub fn hold_until(&mut self, seq: BatchSeq, waiter: W) -> Option<W> {
        if seq <= self.acked {
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
