//! The name server: unit name → current primary (node, copy) and epoch.
//!
//! Each node keeps its own `Registry`, a read cache of the bindings the group manager
//! commits; updates carry epochs, and an update older than what the table holds is ignored,
//! so a late message can never roll a binding back. A caller that finds its binding stale
//! (the copy refused it, or vanished) waits here for the rebinding, with a deadline.
//!
//! This table is our own, not `ractor::registry` (a process-global table that several nodes
//! in one process would share).

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use understudy_runtime::{CopyId, Epoch, NodeName, UnitName};

/// Where a unit's primary is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The node the primary runs on.
    pub node: NodeName,
    /// The primary copy.
    pub copy: CopyId,
    /// Its epoch.
    pub epoch: Epoch,
}

/// What the name server knows of a unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameState {
    /// Bound to a primary.
    Bound(Binding),
    /// The binding at `epoch` was withdrawn: a takeover is under way; wait for the next one.
    Rebinding {
        /// The epoch withdrawn.
        epoch: Epoch,
    },
    /// No copy holding the unit's state is left.
    Unavailable {
        /// The unit's last epoch.
        epoch: Epoch,
    },
}

impl NameState {
    /// The epoch this state belongs to.
    pub fn epoch(&self) -> Epoch {
        match self {
            NameState::Bound(b) => b.epoch,
            NameState::Rebinding { epoch } | NameState::Unavailable { epoch } => *epoch,
        }
    }

    /// How far along an epoch's life this state is (a binding is withdrawn after it was made).
    fn rank(&self) -> (Epoch, u8) {
        match self {
            NameState::Bound(b) => (b.epoch, 0),
            NameState::Rebinding { epoch } => (*epoch, 1),
            NameState::Unavailable { epoch } => (*epoch, 2),
        }
    }
}

/// One change to the table, as the group manager sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameUpdate {
    /// The unit.
    pub unit: UnitName,
    /// Its new state.
    pub state: NameState,
}

/// A unit's quarantine as the group manager sends it: why callers are refused (`None`: they
/// no longer are), and how many quarantines and releases of the unit came before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineUpdate {
    /// The unit.
    pub unit: UnitName,
    /// The count of the unit's quarantines and releases, this one included.
    pub version: u64,
    /// Why callers are refused; `None` once released.
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Inner {
    table: DashMap<UnitName, NameState>,
    /// Units quarantined, and released ones (`None`), with the version of that state.
    quarantines: DashMap<UnitName, (u64, Option<String>)>,
    version: watch::Sender<u64>,
    /// Per unit, how many updates this table applied that raised the unit's epoch.
    epoch_changes: DashMap<UnitName, u64>,
}

/// A node's name table. Cheap to clone; all clones share the table.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty table.
    pub fn new() -> Self {
        let (version, _) = watch::channel(0);
        Registry {
            inner: Arc::new(Inner {
                table: DashMap::new(),
                quarantines: DashMap::new(),
                version,
                epoch_changes: DashMap::new(),
            }),
        }
    }

    /// Apply an update unless the table already holds a newer state for the unit. Returns
    /// whether it changed anything.
    pub fn apply(&self, update: NameUpdate) -> bool {
        let mut new_epoch = false;
        let changed = match self.inner.table.entry(update.unit.clone()) {
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(update.state);
                true
            }
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                let newer = update.state.rank() > o.get().rank();
                if newer {
                    new_epoch = update.state.epoch() > o.get().epoch();
                    o.insert(update.state);
                }
                newer
            }
        };
        if new_epoch {
            *self.inner.epoch_changes.entry(update.unit).or_insert(0) += 1;
        }
        if changed {
            self.inner.version.send_modify(|v| *v += 1);
        }
        changed
    }

    /// Apply a quarantine or release unless the table holds a newer one for the unit. Returns
    /// whether it changed anything.
    pub fn apply_quarantine(&self, update: QuarantineUpdate) -> bool {
        let changed = match self.inner.quarantines.entry(update.unit) {
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert((update.version, update.reason));
                true
            }
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                let newer = update.version > o.get().0;
                if newer {
                    o.insert((update.version, update.reason));
                }
                newer
            }
        };
        if changed {
            self.inner.version.send_modify(|v| *v += 1);
        }
        changed
    }

    /// Why `unit` is quarantined (its callers are refused at once), if it is.
    pub fn quarantined(&self, unit: &UnitName) -> Option<String> {
        self.inner.quarantines.get(unit)?.value().1.clone()
    }

    /// What the table knows of `unit`, if anything.
    pub fn resolve(&self, unit: &UnitName) -> Option<NameState> {
        self.inner.table.get(unit).map(|e| e.value().clone())
    }

    /// Every unit and its state, sorted by name.
    pub fn snapshot(&self) -> Vec<(UnitName, NameState)> {
        let mut all: Vec<_> = self
            .inner
            .table
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Per unit, how many times this table moved the unit to a newer epoch since it was made
    /// (takeovers, switchovers, restores — as far as this node saw them; a unit's first
    /// state is no change), sorted by name. Units never moved are absent.
    pub fn epoch_changes(&self) -> Vec<(UnitName, u64)> {
        let mut all: Vec<_> = self
            .inner
            .epoch_changes
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A receiver whose value changes each time the table does, for a view that follows the
    /// whole table (the web console's timeline): wait on it, then read [`Registry::snapshot`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Wait until `unit`'s state differs from `seen` (a rebinding, or the unit declared
    /// unavailable) or the unit is quarantined, or until `deadline`. Returns the new state, or `None` at the deadline.
    pub async fn wait_for_change(
        &self,
        unit: &UnitName,
        seen: Option<&NameState>,
        deadline: Instant,
    ) -> Option<NameState> {
        let mut rx = self.inner.version.subscribe();
        let quarantined_before = self.quarantined(unit).is_some();
        loop {
            let now = self.resolve(unit);
            if now.as_ref() != seen || (!quarantined_before && self.quarantined(unit).is_some()) {
                return now;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives as long as the registry; a closed channel cannot happen
                // while we hold `self`, and a timeout ends the wait.
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_quarantine_update_never_undoes_a_newer_one() {
        let r = Registry::new();
        let unit = UnitName::new("u");
        let update = |version, reason: Option<&str>| QuarantineUpdate {
            unit: unit.clone(),
            version,
            reason: reason.map(str::to_string),
        };
        assert_eq!(r.quarantined(&unit), None);
        assert!(r.apply_quarantine(update(1, Some("both copies failed"))));
        assert_eq!(r.quarantined(&unit).as_deref(), Some("both copies failed"));
        assert!(r.apply_quarantine(update(2, None)), "released");
        assert!(!r.apply_quarantine(update(1, Some("both copies failed"))));
        assert_eq!(r.quarantined(&unit), None, "the late quarantine is ignored");
    }

    fn bound(epoch: u64, copy: u64) -> NameState {
        NameState::Bound(Binding {
            node: NodeName::new("a"),
            copy: CopyId(copy),
            epoch: Epoch(epoch),
        })
    }

    #[test]
    fn a_stale_update_never_rolls_a_binding_back() {
        let r = Registry::new();
        let kv = UnitName::new("kv");
        assert!(r.apply(NameUpdate {
            unit: kv.clone(),
            state: bound(2, 5)
        }));
        assert!(!r.apply(NameUpdate {
            unit: kv.clone(),
            state: bound(1, 3)
        }));
        assert!(r.apply(NameUpdate {
            unit: kv.clone(),
            state: NameState::Rebinding { epoch: Epoch(2) }
        }));
        assert!(!r.apply(NameUpdate {
            unit: kv.clone(),
            state: bound(2, 5)
        }));
        assert!(r.apply(NameUpdate {
            unit: kv.clone(),
            state: bound(3, 9)
        }));
        assert_eq!(r.resolve(&kv), Some(bound(3, 9)));
    }

    #[test]
    fn the_table_counts_each_move_to_a_newer_epoch_once_and_nothing_else() {
        let r = Registry::new();
        let kv = UnitName::new("kv");
        let apply = |state| {
            r.apply(NameUpdate {
                unit: kv.clone(),
                state,
            })
        };
        apply(bound(1, 1));
        assert!(r.epoch_changes().is_empty(), "a first binding is no change");
        apply(NameState::Rebinding { epoch: Epoch(1) });
        assert!(
            r.epoch_changes().is_empty(),
            "a withdrawal stays in its epoch"
        );
        apply(bound(2, 2));
        apply(bound(2, 2));
        apply(bound(1, 1));
        assert_eq!(
            r.epoch_changes(),
            vec![(kv.clone(), 1)],
            "repeats and stale updates"
        );
        apply(NameState::Unavailable { epoch: Epoch(2) });
        apply(bound(3, 3));
        assert_eq!(r.epoch_changes(), vec![(kv, 2)]);
    }

    #[tokio::test]
    async fn waiting_for_a_rebinding_wakes_on_the_new_binding() {
        let r = Registry::new();
        let kv = UnitName::new("kv");
        r.apply(NameUpdate {
            unit: kv.clone(),
            state: bound(1, 1),
        });
        let seen = r.resolve(&kv);
        let r2 = r.clone();
        let kv2 = kv.clone();
        let waiter = tokio::spawn(async move {
            r2.wait_for_change(
                &kv2,
                seen.as_ref(),
                Instant::now() + std::time::Duration::from_secs(5),
            )
            .await
        });
        r.apply(NameUpdate {
            unit: kv.clone(),
            state: bound(2, 2),
        });
        let got = waiter.await.expect("waiter task");
        assert_eq!(got, Some(bound(2, 2)));
        let none = r
            .wait_for_change(
                &kv,
                Some(&bound(2, 2)),
                Instant::now() + std::time::Duration::from_millis(20),
            )
            .await;
        assert_eq!(none, None);
    }
}
