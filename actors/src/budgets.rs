//! A node's book of time spent against budgets: what its copies served (from receipt to
//! answer, against `T_normal`) and what its callers called (from call to outcome, against
//! `T_max`), per unit and stimulus kind. `status` shows it.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use understudy_runtime::{Budget, BudgetRow, BudgetTally, UnitName};

/// The node's book; clones share it.
#[derive(Clone, Debug, Default)]
pub struct BudgetBook {
    served: Arc<Mutex<BudgetTally>>,
    called: Arc<Mutex<BudgetTally>>,
}

/// What a node's book holds, as `status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// Stimuli its primaries served: the time from receipt to answer.
    pub served: Vec<BudgetRow>,
    /// Stimuli its callers sent: the time from the call to its outcome (answer or error).
    pub called: Vec<BudgetRow>,
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

    /// Everything counted so far.
    pub fn report(&self) -> BudgetReport {
        BudgetReport {
            served: lock(&self.served).rows(),
            called: lock(&self.called).rows(),
        }
    }
}
