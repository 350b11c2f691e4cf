//! A caller's side of the trailing strategy, as a plain book: the answered stimuli whose effects
//! the standby may lack ([`Durability`] says so), kept until an answer of the same epoch shows
//! the standby has them, and after a takeover sent again — in order, with their ids — to the new
//! primary. `UnitClient` and the simulation's clients keep one per unit; they carry out the
//! sends, this decides what to keep, what is confirmed and what to send.

use crate::ids::{BatchSeq, Epoch};
use crate::replication::Durability;
use std::collections::BTreeMap;

/// One kept stimulus: the epoch of the primary that last answered it, the batch of that
/// primary's stream holding its effects, and what the caller needs to send it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept<P> {
    /// The answering primary's epoch.
    pub epoch: Epoch,
    /// The batch holding its effects.
    pub batch: BatchSeq,
    /// What the caller keeps to send it again.
    pub payload: P,
}

/// What to send again in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round<K> {
    /// Kept stimuli answered at an older epoch than the unit's current one, in order: the new
    /// primary may lack them; each is answered from its table if it has it, served once if not.
    pub replay: Vec<K>,
    /// With nothing to replay, the newest kept stimulus, sent again only to learn how far the
    /// standby got (the primary answers it from its table).
    pub probe: Option<K>,
}

/// The kept stimuli of one caller of one unit, by key (the stimulus's sequence number).
#[derive(Clone, Debug)]
pub struct ReplayBook<K, P> {
    kept: BTreeMap<K, Kept<P>>,
}

impl<K, P> Default for ReplayBook<K, P> {
    fn default() -> Self {
        ReplayBook {
            kept: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, P> ReplayBook<K, P> {
    /// An answer to `key` came from a primary of `epoch` with `durability`: keep the stimulus
    /// (or re-stamp it, if kept already) unless the standby had it. Returns whether it is kept.
    pub fn answered(&mut self, key: K, epoch: Epoch, durability: Durability, payload: P) -> bool {
        if durability.durable() {
            self.kept.remove(&key);
            return false;
        }
        let batch = durability.batch;
        self.kept.insert(
            key,
            Kept {
                epoch,
                batch,
                payload,
            },
        );
        true
    }

    /// An answer of `epoch` says its standby has every batch up to `standby_has`: the kept
    /// stimuli it covers, removed.
    pub fn confirm(&mut self, epoch: Epoch, standby_has: BatchSeq) -> Vec<(K, P)> {
        let done: Vec<K> = self
            .kept
            .iter()
            .filter(|(_, k)| k.epoch == epoch && k.batch <= standby_has)
            .map(|(key, _)| *key)
            .collect();
        done.into_iter()
            .filter_map(|key| self.kept.remove(&key).map(|k| (key, k.payload)))
            .collect()
    }

    /// What to send again now that the unit is bound at `current`.
    pub fn round(&self, current: Epoch) -> Round<K> {
        let replay: Vec<K> = self
            .kept
            .iter()
            .filter(|(_, k)| k.epoch < current)
            .map(|(key, _)| *key)
            .collect();
        let probe = if replay.is_empty() {
            self.kept.keys().next_back().copied()
        } else {
            None
        };
        Round { replay, probe }
    }

    /// The kept stimulus `key`.
    pub fn get(&self, key: &K) -> Option<&Kept<P>> {
        self.kept.get(key)
    }

    /// Stop keeping `key` (it is sent again, or lost), returning what was kept.
    pub fn take(&mut self, key: &K) -> Option<Kept<P>> {
        self.kept.remove(key)
    }

    /// Stop keeping everything (the unit is lost for good), returning what was kept.
    pub fn take_all(&mut self) -> Vec<(K, P)> {
        std::mem::take(&mut self.kept)
            .into_iter()
            .map(|(key, k)| (key, k.payload))
            .collect()
    }

    /// The keys kept, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = K> + '_ {
        self.kept.keys().copied()
    }

    /// How many stimuli are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(batch: u64, has: u64) -> Durability {
        Durability {
            batch: BatchSeq(batch),
            standby_has: BatchSeq(has),
        }
    }

    #[test]
    fn a_book_keeps_what_the_standby_lacks_confirms_it_by_epoch_and_replays_older_epochs_in_order()
    {
        let mut book: ReplayBook<u64, &str> = ReplayBook::default();
        assert!(!book.answered(1, Epoch(1), trail(1, 1), "durable"));
        assert!(book.answered(2, Epoch(1), trail(2, 1), "b"));
        assert!(book.answered(3, Epoch(1), trail(3, 1), "c"));
        // Same epoch: probe with the newest.
        assert_eq!(book.round(Epoch(1)).probe, Some(3));
        // An answer of another epoch confirms nothing of epoch 1.
        assert!(book.confirm(Epoch(2), BatchSeq(9)).is_empty());
        assert_eq!(book.confirm(Epoch(1), BatchSeq(2)), vec![(2, "b")]);
        // After a takeover: replay what epoch 1 answered, in order; no probe.
        assert!(book.answered(4, Epoch(2), trail(5, 4), "d"));
        let round = book.round(Epoch(2));
        assert_eq!((round.replay, round.probe), (vec![3], None));
        assert_eq!(book.take_all().len(), 2);
        assert!(book.is_empty());
    }
}
