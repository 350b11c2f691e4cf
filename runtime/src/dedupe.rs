//! The dedupe table: remembers the answer of each stimulus so that a retry (after a lost
//! reply or a takeover) is answered again instead of taking effect twice.
//!
//! The table is part of the replicated state: the primary records an answer when it handles a
//! stimulus and the standby records the same answer when it applies the batch that holds it,
//! so a promoted standby recognises retries of stimuli its old primary served.
//!
//! # What it forgets
//!
//! Every stimulus carries its client's *low-water mark*: the lowest sequence number that
//! client still waits for. The table keeps, per client:
//!
//! * the answers of stimuli at or above the low-water mark, at most
//!   [`DedupeLimits::max_per_client`] of them. When a client has more (one slow stimulus holds
//!   its low-water mark down while its other stimuli go on), the lowest answer is forgotten but
//!   the fact that its stimulus took effect is kept, as a range of sequence numbers: a retry of
//!   it is refused as `AnswerForgotten` (it took effect; its answer is gone), never applied
//!   again, and the low-water mark does not move past a stimulus that has not taken effect.
//!   Consecutive numbers share one range; only if a client has more than `max_per_client`
//!   separate ranges does the lowest range go, and the low-water mark move past it;
//! * the low-water mark itself. A stimulus below it is refused as superseded, never applied.
//!
//! At most [`DedupeLimits::max_clients`] clients are kept; beyond that the client whose
//! answers were recorded least recently is forgotten whole. Once the table has forgotten a
//! client, a stimulus from a client it does not know whose low-water mark is past its first
//! sequence number is refused as `SessionExpired` (the client must start over with a new
//! client id), so it is never applied twice. Until then an unknown client is simply one whose
//! stimuli so far changed nothing (reads are not recorded), and it is served. The one case the
//! table cannot catch is a retry of a client's *first* stimulus after `max_clients` other
//! clients were recorded since: choose `max_clients` well above the number of clients active
//! within one `T_max`.

use crate::ids::{BatchSeq, ClientId, Seq, StimulusId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bounds of a [`DedupeTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeLimits {
    /// Most clients remembered at once.
    pub max_clients: usize,
    /// Most answers remembered per client.
    pub max_per_client: usize,
}

impl Default for DedupeLimits {
    fn default() -> Self {
        DedupeLimits {
            max_clients: 65_536,
            max_per_client: 1_024,
        }
    }
}

/// A remembered answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answered<R> {
    /// The answer sent (or to be sent) for the stimulus.
    pub response: R,
    /// The batch that carried the stimulus's updates to the standby; a retry is answered only
    /// once that batch is acknowledged.
    pub batch: BatchSeq,
}

/// What the table knows about a stimulus.
#[derive(Debug, PartialEq)]
pub enum Seen<'a, R> {
    /// Never seen: handle it.
    New,
    /// Already handled: answer with this.
    Answered(&'a Answered<R>),
    /// Below its client's low-water mark: the client no longer waits for it; refuse it.
    Superseded {
        /// The client's low-water mark.
        low_water: Seq,
    },
    /// It took effect, but its answer was forgotten under the per-client bound: refuse it
    /// (it must not take effect again).
    AnswerForgotten,
    /// From a client the table forgot (see the module docs): refuse it.
    SessionExpired,
    /// A promoted primary found it open and ignored it: refuse it as ignored (it took no
    /// effect and must not take one now).
    Ignored,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ClientRecord<R> {
    low_water: Seq,
    answered: BTreeMap<Seq, Answered<R>>,
    /// Sequence numbers that took effect but whose answers were forgotten, as disjoint ranges
    /// `start → end` (end exclusive), all at or above `low_water`.
    #[serde(default)]
    applied_unanswered: BTreeMap<u64, u64>,
    /// Sequence numbers ignored at a takeover, at or above `low_water`.
    #[serde(default)]
    ignored: std::collections::BTreeSet<u64>,
    touched: u64,
}

impl<R> ClientRecord<R> {
    fn forgot_answer_of(&self, seq: Seq) -> bool {
        self.applied_unanswered
            .range(..=seq.0)
            .next_back()
            .is_some_and(|(_, end)| seq.0 < *end)
    }

    /// Remember that `seq` took effect, merging it into its neighbouring ranges.
    fn mark_applied(&mut self, seq: u64) {
        let mut start = seq;
        let mut end = seq + 1;
        if let Some((&s, &e)) = self.applied_unanswered.range(..=seq).next_back() {
            if e >= seq {
                start = s;
                end = end.max(e);
                self.applied_unanswered.remove(&s);
            }
        }
        if let Some(&e) = self.applied_unanswered.get(&end) {
            self.applied_unanswered.remove(&end);
            end = e;
        }
        self.applied_unanswered.insert(start, end);
    }

    /// Drop what lies below the low-water mark.
    fn trim(&mut self) {
        let floor = self.low_water;
        self.answered.retain(|s, _| *s >= floor);
        self.ignored.retain(|s| *s >= floor.0);
        let below: Vec<u64> = self
            .applied_unanswered
            .range(..floor.0)
            .map(|(s, _)| *s)
            .collect();
        for s in below {
            if let Some(e) = self.applied_unanswered.remove(&s) {
                if e > floor.0 {
                    self.applied_unanswered.insert(floor.0, e);
                }
            }
        }
    }
}

/// The bounded table of answered stimuli; see the module docs for what it forgets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DedupeTable<R> {
    limits: DedupeLimits,
    clients: BTreeMap<ClientId, ClientRecord<R>>,
    by_touch: BTreeMap<u64, ClientId>,
    clock: u64,
    /// How many clients were forgotten; while none were, an unknown client was never recorded.
    #[serde(default)]
    forgotten: u64,
}

impl<R: Clone> DedupeTable<R> {
    /// An empty table with the given bounds (each at least 1).
    pub fn new(limits: DedupeLimits) -> Self {
        DedupeTable {
            limits: DedupeLimits {
                max_clients: limits.max_clients.max(1),
                max_per_client: limits.max_per_client.max(1),
            },
            clients: BTreeMap::new(),
            by_touch: BTreeMap::new(),
            clock: 0,
            forgotten: 0,
        }
    }

    /// What the table knows of stimulus `id`, sent with the client's low-water mark
    /// `low_water`.
    pub fn seen(&self, id: StimulusId, low_water: Seq) -> Seen<'_, R> {
        match self.clients.get(&id.client) {
            None if low_water > Seq::FIRST && self.forgotten > 0 => Seen::SessionExpired,
            None => Seen::New,
            Some(rec) => {
                if let Some(a) = rec.answered.get(&id.seq) {
                    Seen::Answered(a)
                } else if rec.ignored.contains(&id.seq.0) {
                    Seen::Ignored
                } else if rec.forgot_answer_of(id.seq) {
                    Seen::AnswerForgotten
                } else if id.seq < rec.low_water {
                    Seen::Superseded {
                        low_water: rec.low_water,
                    }
                } else {
                    Seen::New
                }
            }
        }
    }

    /// Record that stimulus `id` was ignored at a takeover (it took no effect), and apply the
    /// client's low-water mark. Runs identically on primary and standby.
    pub fn record_ignored(&mut self, id: StimulusId, low_water: Seq) {
        let max = self.limits.max_per_client;
        let rec = self.touch(id.client);
        rec.low_water = rec.low_water.max(low_water.min(id.seq));
        rec.ignored.insert(id.seq.0);
        rec.trim();
        while rec.ignored.len() > max {
            rec.ignored.pop_first();
        }
        self.forget_least_recent();
    }

    /// The record of `client`, created if new, marked as the most recently touched.
    fn touch(&mut self, client: ClientId) -> &mut ClientRecord<R> {
        self.clock += 1;
        let clock = self.clock;
        let rec = self.clients.entry(client).or_insert_with(|| ClientRecord {
            low_water: Seq(0),
            answered: BTreeMap::new(),
            applied_unanswered: BTreeMap::new(),
            ignored: std::collections::BTreeSet::new(),
            touched: 0,
        });
        if rec.touched != 0 {
            self.by_touch.remove(&rec.touched);
        }
        rec.touched = clock;
        self.by_touch.insert(clock, client);
        rec
    }

    /// Forget whole clients, least recently touched first, beyond the bound.
    fn forget_least_recent(&mut self) {
        while self.clients.len() > self.limits.max_clients {
            let Some((&touch, &victim)) = self.by_touch.iter().next() else {
                break;
            };
            self.by_touch.remove(&touch);
            self.clients.remove(&victim);
            self.forgotten += 1;
        }
    }

    /// Record the answer of stimulus `id`, carried by `batch`, and apply the client's
    /// low-water mark. Runs identically on primary and standby.
    pub fn record(&mut self, id: StimulusId, low_water: Seq, answer: Answered<R>) {
        let max = self.limits.max_per_client;
        let rec = self.touch(id.client);
        rec.low_water = rec.low_water.max(low_water.min(id.seq));
        rec.answered.insert(id.seq, answer);
        rec.trim();
        while rec.answered.len() > max {
            let Some((&lowest, _)) = rec.answered.iter().next() else {
                break;
            };
            rec.answered.remove(&lowest);
            rec.mark_applied(lowest.0);
        }
        while rec.applied_unanswered.len() > max {
            let Some((_, end)) = rec.applied_unanswered.pop_first() else {
                break;
            };
            rec.low_water = rec.low_water.max(Seq(end));
            rec.trim();
        }
        self.forget_least_recent();
    }

    /// How many clients are remembered.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// How many answers are remembered in all.
    pub fn answers(&self) -> usize {
        self.clients.values().map(|r| r.answered.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: u64, s: u64) -> StimulusId {
        StimulusId {
            client: ClientId(c),
            seq: Seq(s),
        }
    }

    fn ans(r: u32) -> Answered<u32> {
        Answered {
            response: r,
            batch: BatchSeq(1),
        }
    }

    #[test]
    fn a_retry_is_answered_from_the_table() {
        let mut t = DedupeTable::new(DedupeLimits::default());
        assert_eq!(t.seen(id(1, 1), Seq(1)), Seen::New);
        t.record(id(1, 1), Seq(1), ans(7));
        assert_eq!(t.seen(id(1, 1), Seq(1)), Seen::Answered(&ans(7)));
    }

    #[test]
    fn low_water_mark_forgets_answers_and_refuses_late_copies() {
        let mut t = DedupeTable::new(DedupeLimits::default());
        t.record(id(1, 1), Seq(1), ans(1));
        t.record(id(1, 2), Seq(1), ans(2));
        t.record(id(1, 3), Seq(3), ans(3));
        assert_eq!(t.answers(), 1);
        assert_eq!(
            t.seen(id(1, 1), Seq(3)),
            Seen::Superseded { low_water: Seq(3) }
        );
        assert_eq!(t.seen(id(1, 3), Seq(3)), Seen::Answered(&ans(3)));
    }

    #[test]
    fn per_client_bound_forgets_answers_but_never_passes_a_stimulus_still_awaited() {
        let mut t = DedupeTable::new(DedupeLimits {
            max_clients: 10,
            max_per_client: 2,
        });
        // Stimulus 1 is slow: the client's low-water mark stays at 1 while 2..=6 are answered.
        for s in 2..=6 {
            t.record(id(1, s), Seq(1), ans(s as u32));
        }
        assert_eq!(t.answers(), 2);
        assert_eq!(
            t.seen(id(1, 1), Seq(1)),
            Seen::New,
            "the slow stimulus is still served"
        );
        assert_eq!(t.seen(id(1, 2), Seq(1)), Seen::AnswerForgotten);
        assert_eq!(t.seen(id(1, 4), Seq(1)), Seen::AnswerForgotten);
        assert_eq!(t.seen(id(1, 6), Seq(1)), Seen::Answered(&ans(6)));
        // Once the slow one is answered and the client moves on, everything below is dropped.
        t.record(id(1, 1), Seq(1), ans(1));
        t.record(id(1, 7), Seq(7), ans(7));
        assert_eq!(
            t.seen(id(1, 3), Seq(7)),
            Seen::Superseded { low_water: Seq(7) }
        );
    }

    #[test]
    fn too_many_separate_gaps_move_the_low_water_mark_past_the_lowest() {
        let mut t = DedupeTable::new(DedupeLimits {
            max_clients: 10,
            max_per_client: 1,
        });
        // Odd numbers are answered, even ones still awaited: every forgotten answer is its own
        // range.
        for s in [3, 5, 7] {
            t.record(id(1, s), Seq(2), ans(s as u32));
        }
        assert_eq!(t.seen(id(1, 5), Seq(2)), Seen::AnswerForgotten);
        assert_eq!(
            t.seen(id(1, 3), Seq(2)),
            Seen::Superseded { low_water: Seq(4) }
        );
    }

    #[test]
    fn a_client_whose_first_stimuli_were_reads_is_served_not_expired() {
        // Reads leave no record: a client that read first, then writes with its low-water
        // mark past 1, is new to the table but was never forgotten.
        let mut t = DedupeTable::<u32>::new(DedupeLimits::default());
        assert_eq!(t.seen(id(1, 2), Seq(2)), Seen::New);
        t.record(id(2, 1), Seq(1), ans(1));
        assert_eq!(t.seen(id(1, 2), Seq(2)), Seen::New);
    }

    #[test]
    fn least_recently_recorded_client_is_forgotten_and_its_later_stimuli_refused() {
        let mut t = DedupeTable::new(DedupeLimits {
            max_clients: 2,
            max_per_client: 8,
        });
        t.record(id(1, 1), Seq(1), ans(1));
        t.record(id(2, 1), Seq(1), ans(2));
        t.record(id(1, 2), Seq(1), ans(3));
        t.record(id(3, 1), Seq(1), ans(4));
        assert_eq!(t.clients(), 2);
        assert_eq!(t.seen(id(2, 2), Seq(2)), Seen::SessionExpired);
        assert_eq!(t.seen(id(1, 2), Seq(1)), Seen::Answered(&ans(3)));
    }
}
