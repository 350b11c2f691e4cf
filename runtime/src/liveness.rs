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
#[derive(Clone, Debug)]
pub struct Liveness<K: Ord + Clone> {
    config: HeartbeatConfig,
    last_heard: BTreeMap<K, Time>,
}

impl<K: Ord + Clone> Liveness<K> {
    /// Nobody watched yet.
    pub fn new(config: HeartbeatConfig) -> Self {
        Liveness {
            config,
            last_heard: BTreeMap::new(),
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

    /// Everyone silent past the deadline at `now`; they stop being watched.
    pub fn expire(&mut self, now: Time) -> Vec<K> {
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
        assert!(l.heard(&"b", Time::from_millis(25)));
        assert!(l.expire(Time::from_millis(30)).is_empty());
        assert_eq!(l.expire(Time::from_millis(31)), vec!["a"]);
        assert!(l.expire(Time::from_millis(31)).is_empty());
        assert_eq!(l.expire(Time::from_millis(56)), vec!["b"]);
        assert!(!l.heard(&"a", Time::from_millis(60)));
    }
}
