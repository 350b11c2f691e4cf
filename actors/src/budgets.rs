//! A node's book of time spent against budgets: what its copies served (from receipt to
//! answer, against `T_normal`) and what its callers called (from call to outcome, against
//! `T_max`), per unit and stimulus kind. `status` shows it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use understudy_runtime::{Budget, BudgetRow, BudgetTally, UnitName};

/// The node's book; clones share it.
#[derive(Clone, Debug, Default)]
pub struct BudgetBook {
    served: Arc<Mutex<BudgetTally>>,
    called: Arc<Mutex<BudgetTally>>,
    reconciled: Arc<Mutex<BTreeMap<UnitName, ReconciledRow>>>,
}

/// What this node's promoted primaries of one unit did with the stimuli they found open at
/// their takeovers, and how many calls they sent again for want of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciledRow {
    /// The unit.
    pub unit: UnitName,
    /// Open stimuli served again.
    pub served_again: u64,
    /// Open stimuli recorded as ignored.
    pub ignored: u64,
    /// Calls to other units sent again because no answer came in time.
    pub calls_resent: u64,
    /// Calls to other units answered only after following a takeover of the called unit
    /// (sent again, same id, to its new primary).
    #[serde(default)]
    pub calls_redirected: u64,
}

/// What a node's book holds, as `status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// Stimuli its primaries served: the time from receipt to answer.
    pub served: Vec<BudgetRow>,
    /// Stimuli its callers sent: the time from the call to its outcome (answer or error).
    pub called: Vec<BudgetRow>,
    /// Per unit, what its primaries here found open at their takeovers.
    #[serde(default)]
    pub reconciled: Vec<ReconciledRow>,
}

fn lock(m: &Mutex<BudgetTally>) -> std::sync::MutexGuard<'_, BudgetTally> {
    // A poisoned lock only means a recorder panicked mid-count; the counts stay usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BudgetBook {
    /// A copy of `unit` served a stimulus of `kind` in `took`.
    pub fn served(&self, unit: &UnitName, kind: &str, took: Duration, budget: &Budget) {
        lock(&self.served).record(unit, kind, took, budget.t_normal(), budget.t_max());
    }

    /// A caller's stimulus of `kind` to `unit` had its outcome after `took`; it was allowed
    /// `t_max`.
    pub fn called(
        &self,
        unit: &UnitName,
        kind: &str,
        took: Duration,
        budget: &Budget,
        t_max: Duration,
    ) {
        lock(&self.called).record(unit, kind, took, budget.t_normal(), t_max);
    }

    /// A primary of `unit` here served `served_again` open stimuli again, ignored `ignored`,
    /// and sent `calls_resent` calls again (counts to add).
    pub fn reconciled(&self, unit: &UnitName, served_again: u64, ignored: u64, calls_resent: u64) {
        self.reconciled_row(unit, |row| {
            row.served_again += served_again;
            row.ignored += ignored;
            row.calls_resent += calls_resent;
        });
    }

    /// A call a primary of `unit` here made was answered only after following a takeover of
    /// the called unit.
    pub fn redirected(&self, unit: &UnitName) {
        self.reconciled_row(unit, |row| row.calls_redirected += 1);
    }

    fn reconciled_row(&self, unit: &UnitName, change: impl FnOnce(&mut ReconciledRow)) {
        let mut rows = self.reconciled.lock().unwrap_or_else(|p| p.into_inner());
        let row = rows.entry(unit.clone()).or_insert_with(|| ReconciledRow {
            unit: unit.clone(),
            served_again: 0,
            ignored: 0,
            calls_resent: 0,
            calls_redirected: 0,
        });
        change(row);
    }

    /// Everything counted so far.
    pub fn report(&self) -> BudgetReport {
        let reconciled = self
            .reconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        BudgetReport {
            served: lock(&self.served).rows(),
            called: lock(&self.called).rows(),
            reconciled,
        }
    }
}
