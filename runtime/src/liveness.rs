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
#[derive(Clone, Debug)]
pub struct Liveness<K: Ord + Clone> {
    config: HeartbeatConfig,
    last_heard: BTreeMap<K, Time>,
    last_check: Option<Time>,
}

impl<K: Ord + Clone> Liveness<K> {
    /// Nobody watched yet.
    pub fn new(config: HeartbeatConfig) -> Self {
        Liveness {
            config,
            last_heard: BTreeMap::new(),
            last_check: None,
        }
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
        for k in &lost {
            self.last_heard.remove(k);
        }
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
