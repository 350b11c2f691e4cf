//! A bank-ledger unit: accounts and transfers between them. A transfer moves money and never
//! creates or destroys it, so the sum of balances changes only when an account is opened.
//!
//! A ledger may be split over two units: one ledger names the other as its peer (the first of
//! its `calls` in `units.toml`), and a transfer between one of its own accounts and one of the
//! peer's moves the money between the two units — the peer is credited (`Deposit`) or debited
//! (`Withdraw`) by a call, and the local account changes once the peer answered. The call's
//! stimulus id is derived from the transfer's, and a ledger serves nothing else while its call
//! is out, so a transfer served again after a takeover moves the money once: the sum over
//! both units never changes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use understudy_runtime::{Budget, CallFailure, CallReply, Handled, Outcall, Step, Unit};

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
    /// From the peer ledger: credit `amount` to a local account.
    Deposit {
        /// The account.
        account: String,
        /// The amount, positive.
        amount: i64,
    },
    /// From the peer ledger: debit `amount` from a local account, if it holds that much.
    Withdraw {
        /// The account.
        account: String,
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
    /// The ledger unit holding the accounts this one does not, if the ledger is split.
    pub peer: Option<String>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            budget: Budget::new(Duration::from_secs(2)),
            peer: None,
        }
    }
}

fn refused(why: &str) -> Handled<Ledger> {
    Handled::read(LedgerResponse::Refused(why.to_string()))
}

fn moved(account: &str, delta: i64) -> LedgerUpdate {
    LedgerUpdate::Moved {
        account: account.to_string(),
        delta,
    }
}

impl Ledger {
    /// A transfer between a local account and one of the peer's: the call to make first, and
    /// the local change once the peer took its part.
    fn across(
        &self,
        state: &BTreeMap<String, i64>,
        from: &str,
        to: &str,
        amount: i64,
        replies: &[CallReply],
    ) -> Step<Self> {
        let Some(peer) = &self.peer else {
            return Step::Done(refused("no such account"));
        };
        let outgoing = match (state.get(from), state.contains_key(to)) {
            (Some(have), false) if *have < amount => {
                return Step::Done(refused("insufficient funds"))
            }
            (Some(_), false) => true,
            (None, true) => false,
            _ => return Step::Done(refused("no such account")),
        };
        let Some(reply) = replies.first() else {
            let ask = if outgoing {
                LedgerRequest::Deposit {
                    account: to.to_string(),
                    amount,
                }
            } else {
                LedgerRequest::Withdraw {
                    account: from.to_string(),
                    amount,
                }
            };
            return Step::Call(Outcall::new(peer.clone(), &ask));
        };
        // The peer's part is done when it says so, or when its answer is lost but the call took
        // effect (the runtime sends a call whose outcome is unknown again until it is known).
        let took = matches!(
            reply.decode::<LedgerResponse>(),
            Ok(LedgerResponse::Transferred) | Err(CallFailure::TookEffect { .. })
        );
        Step::Done(match reply.decode::<LedgerResponse>() {
            _ if took && outgoing => {
                Handled::write(LedgerResponse::Transferred, vec![moved(from, -amount)])
            }
            _ if took => Handled::write(LedgerResponse::Transferred, vec![moved(to, amount)]),
            Ok(LedgerResponse::Refused(why)) => refused(&format!("{peer}: {why}")),
            Ok(other) => refused(&format!("{peer} answered {other:?}")),
            Err(e) => refused(&e.to_string()),
        })
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
            LedgerRequest::Deposit { account, amount } => {
                if *amount <= 0 || !state.contains_key(account) {
                    return refused("bad deposit");
                }
                Handled::write(LedgerResponse::Transferred, vec![moved(account, *amount)])
            }
            LedgerRequest::Withdraw { account, amount } => match state.get(account) {
                Some(have) if *amount > 0 && have >= amount => {
                    Handled::write(LedgerResponse::Transferred, vec![moved(account, -amount)])
                }
                Some(_) => refused("insufficient funds"),
                None => refused("no such account"),
            },
            LedgerRequest::Balance { account } => match state.get(account) {
                Some(b) => Handled::read(LedgerResponse::Amount(*b)),
                None => Handled::read(LedgerResponse::Refused("no such account".into())),
            },
            LedgerRequest::Total => Handled::read(LedgerResponse::Amount(state.values().sum())),
        }
    }

    fn handle_with(
        &self,
        state: &Self::State,
        stimulus: &LedgerRequest,
        replies: &[CallReply],
    ) -> Step<Self> {
        match stimulus {
            LedgerRequest::Transfer { from, to, amount }
                if *amount > 0
                    && from != to
                    && !(state.contains_key(from) && state.contains_key(to)) =>
            {
                self.across(state, from, to, *amount, replies)
            }
            _ => Step::Done(self.handle(state, stimulus)),
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
            LedgerRequest::Deposit { .. } => "deposit",
            LedgerRequest::Withdraw { .. } => "withdraw",
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

    #[test]
    fn a_split_ledger_moves_money_to_its_peer_by_a_call_and_debits_once_the_peer_took_it() {
        let a = Ledger {
            peer: Some("ledger-b".into()),
            ..Ledger::default()
        };
        let s: BTreeMap<String, i64> = [("a0".to_string(), 10)].into_iter().collect();
        let t = LedgerRequest::Transfer {
            from: "a0".into(),
            to: "b0".into(),
            amount: 4,
        };
        let Step::Call(call) = a.handle_with(&s, &t, &[]) else {
            panic!("a transfer to the peer's account calls the peer");
        };
        assert_eq!(call.unit.0, "ledger-b");
        let deposit: LedgerRequest =
            rmp_serde::from_slice(call.body.as_ref().expect("encoded")).expect("decodes");
        assert_eq!(
            deposit,
            LedgerRequest::Deposit {
                account: "b0".into(),
                amount: 4
            }
        );
        let took = CallReply {
            unit: call.unit.clone(),
            outcome: Ok(rmp_serde::to_vec(&LedgerResponse::Transferred).expect("encodes")),
        };
        let Step::Done(h) = a.handle_with(&s, &t, &[took]) else {
            panic!("one call is enough");
        };
        assert_eq!(h.response, LedgerResponse::Transferred);
        assert_eq!(h.updates, vec![moved("a0", -4)]);
        // Too little money: refused before any call.
        let big = LedgerRequest::Transfer {
            from: "a0".into(),
            to: "b0".into(),
            amount: 11,
        };
        assert!(matches!(
            a.handle_with(&s, &big, &[]),
            Step::Done(Handled {
                response: LedgerResponse::Refused(_),
                ..
            })
        ));
    }
}
