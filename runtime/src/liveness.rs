//! Heartbeat bookkeeping as a pure value: who was heard from when, and who has been silent for
//! longer than the allowed number of missed intervals. Used by a `LocalManager` for the copies
//! on its node (a hung copy is noticed, not only a crashed one) and by a group manager for the
//! nodes of its group.

use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Interval and tolerance of a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// How often a heartbeat is sent.
    pub interval: Duration,
    /// How many intervals may pass without an answer before the peer is declared lost.
    pub misses: u32,
}

impl HeartbeatConfig {
    /// How long a peer may stay silent before it is declared lost.
    pub fn deadline(&self) -> Duration {
        self.interval * self.misses.max(1)
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_millis(50),
            misses: 4,
        }
    }
}

/// Who was last heard from when.
///
/// The checker calls [`Liveness::expire`] on its own tick, at least once per interval. A check
/// that comes more than `deadline − interval` after the previous one (the longest absence
/// after which a peer that answered every interval still cannot be past the deadline) means
/// the checker itself was away — an actor busy with a burst
/// of other work (a node starting hundreds of copies, a manager applying a large entry), with
/// the peers' answers and its own ticks queued behind it, or a process that was stopped — and
/// the time it was away does not count as anybody's silence: it could not have heard them.
///
///
/// A silence shared by most of the peers at once is taken for the checker's side, not theirs:
/// when, of at least [`MASS_SILENCE_MIN`] peers watched, more than half are past the deadline
/// together — a starved machine, where the answers wait in sockets and mailboxes for a core,
/// rather than that many independent hangs — nobody is lost until that has lasted
/// [`MASS_SILENCE_PATIENCE`] deadlines more. A lone silent peer among answering ones is lost at
/// its deadline all the same. (Where the peers are a Raft group's nodes, most of them truly
/// gone leave no quorum to act on their loss anyway.)
#[derive(Clone, Debug)]
pub struct Liveness<K: Ord + Clone> {
    config: HeartbeatConfig,
    last_heard: BTreeMap<K, Time>,
    last_check: Option<Time>,
    mass_silence_since: Option<Time>,
    /// How many peers [`Liveness::expire`] has declared lost, in all.
    declared_lost: u64,
}

/// The fewest peers watched for a silence of most of them to count as the host's (with one or
/// two there is nobody to compare a silent one with).
pub const MASS_SILENCE_MIN: usize = 3;

/// How many deadlines more a silence of most peers at once is waited out before they are lost
/// all the same.
pub const MASS_SILENCE_PATIENCE: u32 = 10;

impl<K: Ord + Clone> Liveness<K> {
    /// Nobody watched yet.
    pub fn new(config: HeartbeatConfig) -> Self {
        Liveness {
            config,
            last_heard: BTreeMap::new(),
            last_check: None,
            mass_silence_since: None,
            declared_lost: 0,
        }
    }

    /// How many times a peer was declared lost for missed heartbeats (by [`Liveness::expire`])
    /// since this value was made; a peer lost, watched again and lost again counts twice.
    pub fn declared_lost(&self) -> u64 {
        self.declared_lost
    }

    /// Start watching `k`, counting from `now`.
    pub fn watch(&mut self, k: K, now: Time) {
        self.last_heard.insert(k, now);
    }

    /// Stop watching `k`.
    pub fn forget(&mut self, k: &K) {
        self.last_heard.remove(k);
    }

    /// `k` answered at `now`. Returns whether `k` was watched.
    pub fn heard(&mut self, k: &K, now: Time) -> bool {
        match self.last_heard.get_mut(k) {
            Some(t) => {
                *t = (*t).max(now);
                true
            }
            None => false,
        }
    }

    /// Whether `k` is watched.
    pub fn is_watched(&self, k: &K) -> bool {
        self.last_heard.contains_key(k)
    }

    /// Everyone silent past the deadline at `now`; they stop being watched. If the previous
    /// check was more than `deadline − interval` ago, the checker was away: the time beyond one
    /// interval is not counted, every peer's silence is shortened by it.
    pub fn expire(&mut self, now: Time) -> Vec<K> {
        if let Some(previous) = self.last_check {
            let gap = now.since(previous);
            let interval = self.config.interval;
            if gap > self.config.deadline().saturating_sub(interval) {
                let away = gap.saturating_sub(interval);
                for t in self.last_heard.values_mut() {
                    *t = t.after(away).min(now);
                }
            }
        }
        self.last_check = Some(self.last_check.map_or(now, |p| p.max(now)));
        let deadline = self.config.deadline();
        let lost: Vec<K> = self
            .last_heard
            .iter()
            .filter(|(_, t)| now.since(**t) > deadline)
            .map(|(k, _)| k.clone())
            .collect();
        let watched = self.last_heard.len();
        if watched >= MASS_SILENCE_MIN && lost.len() * 2 > watched {
            let since = *self.mass_silence_since.get_or_insert(now);
            if now.since(since) < deadline * MASS_SILENCE_PATIENCE {
                return Vec::new();
            }
        } else if self.mass_silence_since.is_some() {
            // Most answer again: the host is back. Those still silent count from now, as after
            // the checker's own absence: their answers may be queued behind the others'.
            self.mass_silence_since = None;
            for t in self.last_heard.values_mut() {
                *t = (*t).max(now);
            }
            return Vec::new();
        }
        self.mass_silence_since = None;
        for k in &lost {
            self.last_heard.remove(k);
        }
        self.declared_lost += lost.len() as u64;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_lost_after_the_allowed_misses_and_only_once() {
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        l.watch("a", Time::ZERO);
        l.watch("b", Time::ZERO);
        // The checker runs on time: every 10 ms, then at 31 and 56 ms.
        for ms in [0, 10, 20] {
            assert!(l.expire(Time::from_millis(ms)).is_empty());
        }
        assert!(l.heard(&"b", Time::from_millis(25)));
        assert!(l.expire(Time::from_millis(30)).is_empty());
        assert_eq!(l.expire(Time::from_millis(31)), vec!["a"]);
        assert!(l.expire(Time::from_millis(31)).is_empty());
        for ms in [40, 50] {
            assert!(l.expire(Time::from_millis(ms)).is_empty());
        }
        assert_eq!(l.expire(Time::from_millis(56)), vec!["b"]);
        assert!(!l.heard(&"a", Time::from_millis(60)));
    }

    #[test]
    fn every_loss_declared_is_counted_once_and_a_forgotten_peer_not_at_all() {
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        for k in ["a", "b", "c"] {
            l.watch(k, Time::ZERO);
        }
        // "b" leaves (stopped on purpose, not silent): never declared lost.
        l.forget(&"b");
        for ms in (0..=30).step_by(10) {
            assert!(l.heard(&"c", Time::from_millis(ms)));
            assert!(l.expire(Time::from_millis(ms)).is_empty());
        }
        assert_eq!(l.declared_lost(), 0);
        assert!(l.heard(&"c", Time::from_millis(31)));
        assert_eq!(l.expire(Time::from_millis(31)), vec!["a"]);
        // Checked again: nobody new is lost, the count stays.
        assert!(l.expire(Time::from_millis(31)).is_empty());
        assert_eq!(l.declared_lost(), 1);
        // "a" comes back, is watched again, and falls silent again: a second loss.
        l.watch("a", Time::from_millis(31));
        for ms in (40..=60).step_by(10) {
            assert!(l.heard(&"c", Time::from_millis(ms)));
            assert!(l.expire(Time::from_millis(ms)).is_empty());
        }
        assert!(l.heard(&"c", Time::from_millis(62)));
        assert_eq!(l.expire(Time::from_millis(62)), vec!["a"]);
        assert_eq!(l.declared_lost(), 2);
    }

    #[test]
    fn most_peers_silent_at_once_are_waited_for_and_then_counted_from_when_most_answer_again() {
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        for k in ["a", "b", "c", "d"] {
            l.watch(k, Time::ZERO);
        }
        // The checker runs every 10 ms; only "d" answers.
        for ms in (0..=30).step_by(10) {
            assert!(l.heard(&"d", Time::from_millis(ms)));
            assert!(l.expire(Time::from_millis(ms)).is_empty(), "at {ms} ms");
        }
        // From 40 ms three of four are past the deadline together: the host's silence, not
        // theirs. Nobody is lost, and they are still watched.
        for ms in (40..=90).step_by(10) {
            assert!(l.expire(Time::from_millis(ms)).is_empty(), "at {ms} ms");
        }
        // "a" and "d" answer again at 95 ms: most are heard, the host is back. "b" and "c"
        // count from then, not from 0: lost a deadline later unless they answer.
        assert!(l.heard(&"a", Time::from_millis(95)) && l.heard(&"d", Time::from_millis(95)));
        for ms in (100..=130).step_by(10) {
            assert!(l.heard(&"a", Time::from_millis(ms)) && l.heard(&"d", Time::from_millis(ms)));
            assert!(l.expire(Time::from_millis(ms)).is_empty(), "at {ms} ms");
        }
        assert!(l.heard(&"a", Time::from_millis(131)) && l.heard(&"d", Time::from_millis(131)));
        let mut lost = l.expire(Time::from_millis(131));
        lost.sort();
        assert_eq!(lost, vec!["b", "c"]);
    }

    #[test]
    fn a_silence_of_most_peers_past_the_patience_loses_them_all_the_same() {
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        for k in ["a", "b", "c"] {
            l.watch(k, Time::ZERO);
        }
        // Nobody answers. Most (all) are past the deadline together from 40 ms on; the
        // patience is 10 deadlines (300 ms) from then.
        for ms in (0..340).step_by(10) {
            assert!(l.expire(Time::from_millis(ms)).is_empty(), "at {ms} ms");
        }
        // Waited out, the silence declared nobody lost; its end declares all three.
        assert_eq!(l.declared_lost(), 0);
        assert_eq!(l.expire(Time::from_millis(340)), vec!["a", "b", "c"]);
        assert_eq!(l.declared_lost(), 3);
    }

    #[test]
    fn a_lone_silent_peer_among_answering_ones_is_lost_at_its_deadline() {
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        for k in ["a", "b", "c"] {
            l.watch(k, Time::ZERO);
        }
        for ms in (0..=30).step_by(10) {
            assert!(l.heard(&"b", Time::from_millis(ms)) && l.heard(&"c", Time::from_millis(ms)));
            assert!(l.expire(Time::from_millis(ms)).is_empty());
        }
        assert!(l.heard(&"b", Time::from_millis(31)) && l.heard(&"c", Time::from_millis(31)));
        assert_eq!(l.expire(Time::from_millis(31)), vec!["a"]);
        // Two left, both silent: too few to compare, lost at their deadline.
        for ms in (40..=60).step_by(10) {
            assert!(l.expire(Time::from_millis(ms)).is_empty(), "at {ms} ms");
        }
        let mut lost = l.expire(Time::from_millis(62));
        lost.sort();
        assert_eq!(lost, vec!["b", "c"]);
    }

    #[test]
    fn the_time_a_late_checker_was_away_is_nobodys_silence() {
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        l.watch("a", Time::ZERO);
        l.watch("b", Time::ZERO);
        assert!(l.expire(Time::ZERO).is_empty());
        // The checker was busy for 100 ms: its tick comes late, and the answers that queued
        // behind the work come after it. Nobody is lost for the checker's absence.
        assert!(l.expire(Time::from_millis(100)).is_empty());
        assert!(l.heard(&"b", Time::from_millis(101)));
        // On time again: a peer that stays silent is lost a whole deadline after the checker
        // came back, and only then.
        for ms in [110, 120] {
            assert!(l.expire(Time::from_millis(ms)).is_empty());
        }
        assert_eq!(l.expire(Time::from_millis(131)), vec!["a"]);
        assert!(l.expire(Time::from_millis(131)).is_empty());
        assert_eq!(l.expire(Time::from_millis(140)), vec!["b"]);
        // A check a little late (within deadline − interval) shortens nobody's silence.
        let mut l = Liveness::new(HeartbeatConfig {
            interval: Duration::from_millis(10),
            misses: 3,
        });
        l.watch("c", Time::ZERO);
        assert!(l.expire(Time::ZERO).is_empty());
        assert!(l.expire(Time::from_millis(20)).is_empty());
        assert_eq!(l.expire(Time::from_millis(31)), vec!["c"]);
    }
}
