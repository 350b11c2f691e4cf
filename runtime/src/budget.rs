//! Time spent against budgets: per unit and stimulus kind, how many stimuli were counted, how
//! many took longer than `T_normal` and than `T_max`, their total and the longest. A copy
//! counts the time it took to serve (against `T_normal`); a caller counts the time until the
//! outcome (against `T_max`). The actors feed it; the operator reads it in `status`.

use crate::ids::UnitName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What one stimulus kind of one unit spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindTally {
    /// Stimuli counted.
    pub count: u64,
    /// Of those, how many took longer than `T_normal`.
    pub over_normal: u64,
    /// Of those, how many took longer than `T_max`.
    pub over_max: u64,
    /// Their total time, in µs.
    pub total_us: u64,
    /// The longest, in µs.
    pub max_us: u64,
}

/// One row of a [`BudgetTally`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRow {
    /// The unit.
    pub unit: UnitName,
    /// The stimulus kind (the unit's `stimulus_kind`).
    pub kind: String,
    /// What it spent.
    pub tally: KindTally,
}

/// Time spent against budgets, per unit and stimulus kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetTally {
    rows: BTreeMap<(UnitName, String), KindTally>,
}

impl BudgetTally {
    /// Counts one stimulus of `kind` to `unit` that took `took`, against its `t_normal` and
    /// `t_max`.
    pub fn record(
        &mut self,
        unit: &UnitName,
        kind: &str,
        took: Duration,
        t_normal: Duration,
        t_max: Duration,
    ) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let row = self
            .rows
            .entry((unit.clone(), kind.to_string()))
            .or_default();
        row.count += 1;
        row.over_normal += u64::from(took > t_normal);
        row.over_max += u64::from(took > t_max);
        row.total_us = row.total_us.saturating_add(us);
        row.max_us = row.max_us.max(us);
    }

    /// Every row, by unit and kind.
    pub fn rows(&self) -> Vec<BudgetRow> {
        self.rows
            .iter()
            .map(|((unit, kind), tally)| BudgetRow {
                unit: unit.clone(),
                kind: kind.clone(),
                tally: *tally,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_per_unit_and_kind_what_overran_t_normal_and_t_max() {
        let mut t = BudgetTally::default();
        let kv = UnitName::new("kv");
        let ms = Duration::from_millis;
        t.record(&kv, "incr", ms(1), ms(5), ms(20));
        t.record(&kv, "incr", ms(7), ms(5), ms(20));
        t.record(&kv, "incr", ms(30), ms(5), ms(20));
        t.record(&kv, "get", ms(2), ms(5), ms(20));
        let rows = t.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].kind.as_str(), rows[0].tally.count), ("get", 1));
        let incr = rows[1].tally;
        assert_eq!((incr.count, incr.over_normal, incr.over_max), (3, 2, 1));
        assert_eq!((incr.total_us, incr.max_us), (38_000, 30_000));
    }
}
