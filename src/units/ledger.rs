//! A bank-ledger unit: accounts and transfers between them. A transfer moves money and never
//! creates or destroys it, so the sum of balances changes only when an account is opened.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use understudy_runtime::{Budget, Handled, Unit};

/// A stimulus to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerRequest {
    /// Open an account with an initial balance.
    Open {
        /// The account.
        account: String,
        /// Its initial balance.
        balance: i64,
    },
    /// Move `amount` from one account to another.
    Transfer {
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// The amount, positive.
        amount: i64,
    },
    /// Read one account's balance.
    Balance {
        /// The account.
        account: String,
    },
    /// Read the sum of all balances.
    Total,
}

/// The ledger's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerResponse {
    /// The account was opened.
    Opened,
    /// The transfer was made.
    Transferred,
    /// A balance or the total.
    Amount(i64),
    /// The request was refused; nothing changed.
    Refused(String),
}

/// One change to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerUpdate {
    /// An account was opened.
    Opened {
        /// The account.
        account: String,
        /// Its balance.
        balance: i64,
    },
    /// An account's balance changed by `delta`.
    Moved {
        /// The account.
        account: String,
        /// The change.
        delta: i64,
    },
}

/// The ledger unit.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// The budget of every stimulus.
    pub budget: Budget,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            budget: Budget::new(Duration::from_secs(2)),
        }
    }
}

impl Unit for Ledger {
    type State = BTreeMap<String, i64>;
    type Stimulus = LedgerRequest;
    type Response = LedgerResponse;
    type Update = LedgerUpdate;

    fn handle(&self, state: &Self::State, stimulus: &LedgerRequest) -> Handled<Self> {
        match stimulus {
            LedgerRequest::Open { account, balance } => {
                if state.contains_key(account) {
                    return Handled::read(LedgerResponse::Refused(format!("{account} exists")));
                }
                if *balance < 0 {
                    return Handled::read(LedgerResponse::Refused("negative balance".into()));
                }
                Handled::write(
                    LedgerResponse::Opened,
                    vec![LedgerUpdate::Opened {
                        account: account.clone(),
                        balance: *balance,
                    }],
                )
            }
            LedgerRequest::Transfer { from, to, amount } => {
                if *amount <= 0 || from == to {
                    return Handled::read(LedgerResponse::Refused("bad transfer".into()));
                }
                let (Some(have), Some(_)) = (state.get(from), state.get(to)) else {
                    return Handled::read(LedgerResponse::Refused("no such account".into()));
                };
                if have < amount {
                    return Handled::read(LedgerResponse::Refused("insufficient funds".into()));
                }
                Handled::write(
                    LedgerResponse::Transferred,
                    vec![
                        LedgerUpdate::Moved {
                            account: from.clone(),
                            delta: -amount,
                        },
                        LedgerUpdate::Moved {
                            account: to.clone(),
                            delta: *amount,
                        },
                    ],
                )
            }
            LedgerRequest::Balance { account } => match state.get(account) {
                Some(b) => Handled::read(LedgerResponse::Amount(*b)),
                None => Handled::read(LedgerResponse::Refused("no such account".into())),
            },
            LedgerRequest::Total => Handled::read(LedgerResponse::Amount(state.values().sum())),
        }
    }

    fn apply(&self, state: &mut Self::State, update: &LedgerUpdate) {
        match update {
            LedgerUpdate::Opened { account, balance } => {
                state.insert(account.clone(), *balance);
            }
            LedgerUpdate::Moved { account, delta } => {
                *state.entry(account.clone()).or_insert(0) += delta;
            }
        }
    }

    fn stimulus_kind(&self, stimulus: &LedgerRequest) -> &'static str {
        match stimulus {
            LedgerRequest::Open { .. } => "open",
            LedgerRequest::Transfer { .. } => "transfer",
            LedgerRequest::Balance { .. } => "balance",
            LedgerRequest::Total => "total",
        }
    }

    fn budget(&self, _stimulus: &LedgerRequest) -> Budget {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_moves_money_and_keeps_the_total() {
        let l = Ledger::default();
        let mut s = BTreeMap::new();
        for r in [
            LedgerRequest::Open {
                account: "a".into(),
                balance: 10,
            },
            LedgerRequest::Open {
                account: "b".into(),
                balance: 5,
            },
            LedgerRequest::Transfer {
                from: "a".into(),
                to: "b".into(),
                amount: 7,
            },
            LedgerRequest::Transfer {
                from: "a".into(),
                to: "b".into(),
                amount: 7,
            },
        ] {
            for u in l.handle(&s, &r).updates {
                l.apply(&mut s, &u);
            }
        }
        assert_eq!(s["a"], 3);
        assert_eq!(s["b"], 12);
        assert_eq!(
            l.handle(&s, &LedgerRequest::Total).response,
            LedgerResponse::Amount(15)
        );
    }
}
