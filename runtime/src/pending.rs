//! The inputs a group manager queues for its next control entry ([`Pending`]): in the order
//! heard, each once, a primary's repeated lease requests folded into one, and a node's
//! repeated lease renewals folded into one.
//!
//! While one entry is in flight every input heard goes into the next one, so at a thousand
//! units the queue holds thousands of inputs: a repeat must be found without a scan of the
//! queue, and a primary that asks for its lease again because the previous ask is still
//! committing (it asks every `lease_retry`) must not add another input each time.

use crate::group::{GroupInput, LeaseAsk};
use crate::ids::{CopyId, Epoch, NodeName, UnitName};
use crate::message::Report;
use crate::table::ControlInput;
use crate::time::Time;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The queue of inputs for the next entry.
#[derive(Debug, Default)]
pub struct Pending {
    inputs: Vec<ControlInput>,
    /// Positions in `inputs` by the hash of the input there (lease requests excepted).
    by_hash: HashMap<u64, Vec<usize>>,
    /// The position of the lease request queued for each primary and epoch.
    leases: HashMap<(UnitName, CopyId, Epoch), usize>,
    /// The position of the lease renewal queued for each node and incarnation.
    renewals: HashMap<(NodeName, u64), usize>,
}

fn hash_of(input: &ControlInput) -> u64 {
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    h.finish()
}

impl Pending {
    /// An empty queue.
    pub fn new() -> Self {
        Pending::default()
    }

    /// Queues `input` after those queued, unless the same input is queued already. A lease
    /// request of a primary (unit, copy, epoch) that has one queued is folded into it: the
    /// queued one keeps its place and takes the later `requested_at`, so the lease granted runs
    /// from the later ask (the holder counts from its ask and the manager from its grant, which
    /// follows both: either ask is safe, the later one lasts longer).
    pub fn push(&mut self, input: ControlInput) {
        if let ControlInput::Core(GroupInput::Report(Report::LeaseRequest {
            unit,
            copy,
            epoch,
            requested_at,
        })) = &input
        {
            let key = (unit.clone(), *copy, *epoch);
            if let Some(&at) = self.leases.get(&key) {
                if let Some(ControlInput::Core(GroupInput::Report(Report::LeaseRequest {
                    requested_at: queued,
                    ..
                }))) = self.inputs.get_mut(at)
                {
                    *queued = (*queued).max(*requested_at);
                }
                return;
            }
            self.leases.insert(key, self.inputs.len());
            self.inputs.push(input);
            return;
        }
        if let ControlInput::RenewLeases {
            node,
            incarnation,
            requested_at,
            asks,
        } = input
        {
            self.push_renewal(node, incarnation, requested_at, asks);
            return;
        }
        let hash = hash_of(&input);
        let positions = self.by_hash.entry(hash).or_default();
        if positions
            .iter()
            .any(|&i| self.inputs.get(i) == Some(&input))
        {
            return;
        }
        positions.push(self.inputs.len());
        self.inputs.push(input);
    }

    /// A node's lease renewal, folded into the one queued for the same node and incarnation
    /// if there is one: its asks join those queued (each primary once) and it takes the later
    /// `requested_at` (safe for every ask in it, as for a folded lease request above).
    fn push_renewal(
        &mut self,
        node: NodeName,
        incarnation: u64,
        requested_at: Time,
        asks: Vec<LeaseAsk>,
    ) {
        let key = (node, incarnation);
        if let Some(&at) = self.renewals.get(&key) {
            if let Some(ControlInput::RenewLeases {
                requested_at: queued_at,
                asks: queued,
                ..
            }) = self.inputs.get_mut(at)
            {
                *queued_at = (*queued_at).max(requested_at);
                for ask in asks {
                    if !queued.contains(&ask) {
                        queued.push(ask);
                    }
                }
            }
            return;
        }
        self.renewals.insert(key.clone(), self.inputs.len());
        self.inputs.push(ControlInput::RenewLeases {
            node: key.0,
            incarnation: key.1,
            requested_at,
            asks,
        });
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// How many inputs are queued.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Everything queued, in order; the queue is empty after.
    pub fn take(&mut self) -> Vec<ControlInput> {
        self.by_hash.clear();
        self.leases.clear();
        self.renewals.clear();
        std::mem::take(&mut self.inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeName;
    use crate::time::Time;

    fn lease(unit: &str, copy: u64, epoch: u64, at_ms: u64) -> ControlInput {
        ControlInput::Core(GroupInput::Report(Report::LeaseRequest {
            unit: UnitName::new(unit),
            copy: CopyId(copy),
            epoch: Epoch(epoch),
            requested_at: Time::from_millis(at_ms),
        }))
    }

    fn started(unit: &str, copy: u64) -> ControlInput {
        ControlInput::Core(GroupInput::CopyStarted {
            unit: UnitName::new(unit),
            copy: CopyId(copy),
        })
    }

    #[test]
    fn a_repeat_is_queued_once_and_the_order_heard_is_kept() {
        let mut p = Pending::new();
        let running = ControlInput::NodeRunning {
            node: NodeName::new("n1"),
            incarnation: 7,
        };
        p.push(started("a", 1));
        p.push(running.clone());
        p.push(started("a", 1));
        p.push(started("b", 2));
        p.push(running.clone());
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.take(),
            vec![started("a", 1), running.clone(), started("b", 2)]
        );
        assert!(p.is_empty());
        // Taken: the same input queues again for the next entry.
        p.push(running.clone());
        assert_eq!(p.take(), vec![running]);
    }

    fn renewal(node: &str, incarnation: u64, at_ms: u64, copies: &[u64]) -> ControlInput {
        ControlInput::RenewLeases {
            node: NodeName::new(node),
            incarnation,
            requested_at: Time::from_millis(at_ms),
            asks: copies
                .iter()
                .map(|c| LeaseAsk {
                    unit: UnitName::new(format!("u{c}")),
                    copy: CopyId(*c),
                    epoch: Epoch(1),
                })
                .collect(),
        }
    }

    #[test]
    fn a_nodes_repeated_renewals_fold_into_the_first_with_every_ask_once_and_the_latest_time() {
        let mut p = Pending::new();
        p.push(renewal("n1", 7, 100, &[1, 2]));
        p.push(started("b", 9));
        p.push(renewal("n1", 7, 130, &[2, 3]));
        p.push(renewal("n1", 8, 140, &[4])); // another start of n1: its own request
        p.push(renewal("n2", 5, 120, &[5]));
        assert_eq!(
            p.take(),
            vec![
                renewal("n1", 7, 130, &[1, 2, 3]),
                started("b", 9),
                renewal("n1", 8, 140, &[4]),
                renewal("n2", 5, 120, &[5]),
            ]
        );
    }

    #[test]
    fn a_primarys_repeated_lease_requests_fold_into_the_first_with_the_latest_ask() {
        let mut p = Pending::new();
        p.push(lease("a", 1, 3, 100));
        p.push(started("b", 2));
        p.push(lease("a", 1, 3, 140));
        p.push(lease("a", 1, 3, 120)); // late, out of order: the latest ask stays
        p.push(lease("a", 1, 4, 150)); // another epoch: its own request
        p.push(lease("c", 5, 3, 150)); // another primary
        assert_eq!(
            p.take(),
            vec![
                lease("a", 1, 3, 140),
                started("b", 2),
                lease("a", 1, 4, 150),
                lease("c", 5, 3, 150),
            ]
        );
        p.push(lease("a", 1, 3, 200));
        assert_eq!(p.take(), vec![lease("a", 1, 3, 200)]);
    }

    #[test]
    fn thousands_of_inputs_queue_without_scanning_the_queue() {
        let mut p = Pending::new();
        for round in 0..5u64 {
            for u in 0..2_000u64 {
                p.push(lease(&format!("u{u}"), u, 1, round * 20));
                p.push(started(&format!("u{u}"), u + 10_000));
            }
        }
        let inputs = p.take();
        assert_eq!(inputs.len(), 4_000);
        assert_eq!(inputs[0], lease("u0", 0, 1, 80));
    }
}
