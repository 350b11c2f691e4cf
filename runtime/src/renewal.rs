//! A node's lease asks, gathered into one request ([`LeaseAsks`]).
//!
//! Every primary asks for its lease again once a third of it has passed. A thousand primaries
//! over five nodes asking one by one make fifteen thousand asks a second, each an input of the
//! group's control log. The node's local manager gathers the asks for a short window
//! ([`LeaseAsks::GATHER`]) after the first and sends them as one request
//! ([`GroupInput::RenewLeases`](crate::group::GroupInput::RenewLeases)), answered with one
//! message ([`GroupCommand::Leases`](crate::group::GroupCommand::Leases)) whose leases all run
//! from the request's time. So the primaries renewed together ask together next time, and a
//! node's asks, however scattered at first (placed one by one at the cold start), fall into
//! one request per renewal round after the first: one control entry per node every third of
//! a lease, not one per few primaries.
//!
//! ```text
//!  primary ─ LeaseRequest ─► LeaseAsks::ask ─(first since the last send: send at now + GATHER)
//!  local manager, then: LeaseAsks::take ─► one RenewLeases (requested_at: then)
//! ```
//!
//! The window costs a renewal at most [`LeaseAsks::GATHER`] of the two thirds of its lease
//! still to run when it is asked; a promotion grants its first lease without asking.
//!
//! A request that is lost costs nothing but time: a primary not answered asks again after its
//! retry interval, and its ask joins the next request.

use crate::group::LeaseAsk;
use crate::ids::CopyId;
use crate::time::Time;
use std::collections::HashSet;
use std::time::Duration;

/// The asks a local manager gathered since its last request.
#[derive(Debug, Default)]
pub struct LeaseAsks {
    asks: Vec<LeaseAsk>,
    copies: HashSet<CopyId>,
}

impl LeaseAsks {
    /// How long asks are gathered after the first before they go as one request: longer than
    /// the spread of one node's primaries asking at one moment (their ticks, one by one on a
    /// busy node), far shorter than the two thirds of a lease left when they ask.
    pub const GATHER: Duration = Duration::from_millis(10);

    /// Nothing gathered.
    pub fn new() -> Self {
        Self::default()
    }

    /// A primary asked at `now`. Returns, for the first ask since the last request, when to
    /// send the next one ([`LeaseAsks::GATHER`] later); `None` when a send is arranged
    /// already. A repeated ask of the same copy is gathered once.
    pub fn ask(&mut self, ask: LeaseAsk, now: Time) -> Option<Time> {
        let first = self.asks.is_empty();
        if self.copies.insert(ask.copy) {
            self.asks.push(ask);
        }
        first.then(|| now.after(Self::GATHER))
    }

    /// Everything gathered, in the order asked, for one request; nothing is gathered after.
    pub fn take(&mut self) -> Vec<LeaseAsk> {
        self.copies.clear();
        std::mem::take(&mut self.asks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Epoch, UnitName};

    fn ask(unit: &str, copy: u64) -> LeaseAsk {
        LeaseAsk {
            unit: UnitName::new(unit),
            copy: CopyId(copy),
            epoch: Epoch(1),
        }
    }

    #[test]
    fn asks_gathered_between_requests_go_in_one_each_copy_once() {
        let mut asks = LeaseAsks::new();
        let t = Time::from_millis(100);
        assert_eq!(
            asks.ask(ask("a", 1), t),
            Some(t.after(LeaseAsks::GATHER)),
            "the first ask arranges a request, a gathering window later"
        );
        assert_eq!(asks.ask(ask("b", 2), Time::from_millis(104)), None);
        assert_eq!(asks.ask(ask("a", 1), Time::from_millis(105)), None);
        assert_eq!(asks.take(), vec![ask("a", 1), ask("b", 2)]);
        assert!(asks.take().is_empty());
        let later = Time::from_millis(180);
        assert_eq!(
            asks.ask(ask("a", 1), later),
            Some(later.after(LeaseAsks::GATHER)),
            "after a request, the next ask arranges another"
        );
    }
}
