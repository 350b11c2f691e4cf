//! The message fault model: every message between copies, between the manager and copies,
//! and between clients and copies may be dropped, delayed (which reorders it), or delivered
//! twice. Partitions, which cut one node off from everybody, are injected by [`super::faults`]
//! and applied by the event loop on top of this model.

use super::rng::SimRng;
use std::time::Duration;

/// How the network treats each message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a delivered message is delivered a second time (with its own delay).
    pub duplicate: f64,
    /// The usual delay, drawn uniformly from this range.
    pub delay: (Duration, Duration),
    /// Probability that a message is slow (drawn from `slow_delay`), overtaken by later ones.
    pub slow: f64,
    /// The delay of a slow message.
    pub slow_delay: (Duration, Duration),
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            drop: 0.03,
            duplicate: 0.02,
            delay: (Duration::from_micros(200), Duration::from_millis(3)),
            slow: 0.03,
            slow_delay: (Duration::from_millis(5), Duration::from_millis(60)),
        }
    }
}

impl NetworkConfig {
    /// A network that delivers everything once, after the usual delay.
    pub fn reliable() -> Self {
        NetworkConfig {
            drop: 0.0,
            duplicate: 0.0,
            slow: 0.0,
            ..NetworkConfig::default()
        }
    }
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Lost.
    Dropped,
    /// Delivered after `delay`, and a second time after `again` if set.
    Delivered {
        delay: Duration,
        again: Option<Duration>,
    },
}

/// A duration drawn uniformly from `range`, at microsecond resolution.
pub(crate) fn draw(rng: &mut SimRng, range: (Duration, Duration)) -> Duration {
    let lo = u64::try_from(range.0.as_micros()).unwrap_or(u64::MAX);
    let hi = u64::try_from(range.1.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.between(lo, hi))
}

impl NetworkConfig {
    /// Decide the fate of one message.
    pub(crate) fn fate(&self, rng: &mut SimRng) -> Fate {
        if rng.chance(self.drop) {
            return Fate::Dropped;
        }
        let delay = self.delay_of_one(rng);
        let again = rng.chance(self.duplicate).then(|| self.delay_of_one(rng));
        Fate::Delivered { delay, again }
    }

    fn delay_of_one(&self, rng: &mut SimRng) -> Duration {
        if rng.chance(self.slow) {
            draw(rng, self.slow_delay)
        } else {
            draw(rng, self.delay)
        }
    }
}
