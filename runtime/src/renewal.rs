//! A node's lease asks, gathered into one request ([`LeaseAsks`]).
//!
//! Every primary asks for its lease again once a third of it has passed. A thousand primaries
//! over five nodes asking one by one make fifteen thousand asks a second, each an input of the
//! group's control log; the primaries of one node were leased together, so they ask together,
//! and the node's local manager sends what gathered as one request
//! ([`GroupInput::RenewLeases`](crate::group::GroupInput::RenewLeases)), answered with one
//! message ([`GroupCommand::Leases`](crate::group::GroupCommand::Leases)).
//!
//! ```text
//!  primary ─ LeaseRequest ─► LeaseAsks::ask ─(first since the last send: arrange a send)
//!  local manager, after the asks already queued: LeaseAsks::take ─► one RenewLeases
//! ```
//!
//! A request that is lost costs nothing but time: a primary not answered asks again after its
//! retry interval, and its ask joins the next request.

use crate::group::LeaseAsk;
use crate::ids::CopyId;
use std::collections::HashSet;

/// The asks a local manager gathered since its last request.
#[derive(Debug, Default)]
pub struct LeaseAsks {
    asks: Vec<LeaseAsk>,
    copies: HashSet<CopyId>,
}

impl LeaseAsks {
    /// Nothing gathered.
    pub fn new() -> Self {
        Self::default()
    }

    /// A primary asked. Returns whether this is the first ask since the last request: the
    /// caller then arranges to send one once the asks already on their way have come (a
    /// message to itself, behind them). A repeated ask of the same copy is gathered once.
    pub fn ask(&mut self, ask: LeaseAsk) -> bool {
        let first = self.asks.is_empty();
        if self.copies.insert(ask.copy) {
            self.asks.push(ask);
        }
        first
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
        assert!(asks.ask(ask("a", 1)), "the first ask arranges a request");
        assert!(!asks.ask(ask("b", 2)));
        assert!(!asks.ask(ask("a", 1)));
        assert_eq!(asks.take(), vec![ask("a", 1), ask("b", 2)]);
        assert!(asks.take().is_empty());
        assert!(
            asks.ask(ask("a", 1)),
            "after a request, the next ask arranges another"
        );
    }
}
