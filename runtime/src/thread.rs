//! Where a stimulus thread's time went. A copy serving a stimulus sums, per unit, what its
//! calls took: each called unit's own account of its part, and the rest of the round trip —
//! the way there and back, the waiting — on the called unit too. What its calls did not take
//! is its own. Each answer carries its copy's account ([`ThreadTime::account`]), so the first
//! unit of a thread ends up holding the whole thread's: the unit that spent the time is the
//! one with the most ([`spent_most`]).
//!
//! ```text
//!  intake ──call──► enrich ──call──► tally          tally:  [tally 300]
//!    ▲                 ▲                │            enrich: [enrich 2, tally 301]
//!    └── [intake 1, enrich 2, tally 302] ◄┘           intake: [intake 1, enrich 2, tally 302]
//! ```

use crate::ids::UnitName;
use std::collections::BTreeMap;
use std::time::Duration;

/// Time in whole microseconds, as accounts keep it (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The time one stimulus's calls took so far, per unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadTime {
    calls: BTreeMap<UnitName, u64>,
}

impl ThreadTime {
    /// A call to `callee` took `round_trip`, of which the called unit accounted for
    /// `accounted` (µs per unit; empty when no answer came): the rest is put on `callee`.
    pub fn called(
        &mut self,
        callee: &UnitName,
        round_trip: Duration,
        accounted: &[(UnitName, u64)],
    ) {
        let mut inside = 0u64;
        for (unit, us) in accounted {
            let at = self.calls.entry(unit.clone()).or_default();
            *at = at.saturating_add(*us);
            inside = inside.saturating_add(*us);
        }
        let rest = micros(round_trip).saturating_sub(inside);
        let at = self.calls.entry(callee.clone()).or_default();
        *at = at.saturating_add(rest);
    }

    /// The account of the stimulus `unit` served in `took`: µs per unit, sorted by name, its
    /// own time being what its calls did not take.
    pub fn account(&self, unit: &UnitName, took: Duration) -> Vec<(UnitName, u64)> {
        let in_calls = self.calls.values().fold(0u64, |a, b| a.saturating_add(*b));
        let mut spent = self.calls.clone();
        let own = spent.entry(unit.clone()).or_default();
        *own = own.saturating_add(micros(took).saturating_sub(in_calls));
        spent.into_iter().collect()
    }
}

/// What a copy does with the time of a stimulus it answers ([`settle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// A unit's call: its answer carries this account of the callee's part.
    Carry(Vec<(UnitName, u64)>),
    /// A client's stimulus answered after its `T_max`: the thread broke its budget, and this
    /// is where its time went (for the global manager).
    Slow(Vec<(UnitName, u64)>),
    /// A client's stimulus answered on time, or refused: nothing to carry or report.
    Nothing,
}

/// The rule for the time of a stimulus `unit` answered (`answered`: with a response, not a
/// refusal) after `took`, its budget `t_max`; `began_here` when a client sent it (the thread
/// begins at this unit), `time` what its calls took (none made: `None`). The account is
/// built only when it is carried or reported. The global manager's own stimuli are never
/// reported slow: its report would be a stimulus of its own.
pub fn settle(
    unit: &UnitName,
    began_here: bool,
    answered: bool,
    took: Duration,
    t_max: Duration,
    time: Option<ThreadTime>,
) -> Settled {
    let broke = answered && took > t_max && unit.0 != crate::global::GLOBAL_UNIT;
    if began_here && !broke {
        return Settled::Nothing;
    }
    let spent = time.unwrap_or_default().account(unit, took);
    if began_here {
        Settled::Slow(spent)
    } else {
        Settled::Carry(spent)
    }
}

/// The unit that spent the most of `account`, with its µs (the first by name of a tie).
pub fn spent_most(account: &[(UnitName, u64)]) -> Option<&(UnitName, u64)> {
    account
        .iter()
        .reduce(|best, next| if next.1 > best.1 { next } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(name: &str) -> UnitName {
        UnitName::new(name)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_threads_time_is_put_on_the_unit_that_spent_it_down_the_chain() {
        // tally served in 300 ms.
        let tally = ThreadTime::default().account(&u("tally"), ms(300));
        assert_eq!(tally, vec![(u("tally"), 300_000)]);
        // enrich's call to tally took 301 ms; enrich served in 303 ms.
        let mut enrich = ThreadTime::default();
        enrich.called(&u("tally"), ms(301), &tally);
        let enrich = enrich.account(&u("enrich"), ms(303));
        assert_eq!(enrich, vec![(u("enrich"), 2_000), (u("tally"), 301_000)]);
        // intake's call to enrich took 304 ms; intake served in 305 ms.
        let mut intake = ThreadTime::default();
        intake.called(&u("enrich"), ms(304), &enrich);
        let intake = intake.account(&u("intake"), ms(305));
        assert_eq!(
            intake,
            vec![
                (u("enrich"), 3_000),
                (u("intake"), 1_000),
                (u("tally"), 301_000)
            ]
        );
        let total: u64 = intake.iter().map(|(_, us)| us).sum();
        assert_eq!(total, 305_000, "the account adds up to the time served");
        assert_eq!(spent_most(&intake), Some(&(u("tally"), 301_000)));
    }

    #[test]
    fn a_call_without_an_answer_is_all_the_called_units_and_accounts_never_overflow() {
        let mut t = ThreadTime::default();
        t.called(&u("b"), ms(50), &[]);
        t.called(&u("b"), ms(20), &[(u("b"), 5_000), (u("c"), 10_000)]);
        let account = t.account(&u("a"), ms(60));
        // a's own time cannot go below nothing: its calls took longer than it measured.
        assert_eq!(
            account,
            vec![(u("a"), 0), (u("b"), 60_000), (u("c"), 10_000)]
        );
        let mut huge = ThreadTime::default();
        huge.called(
            &u("b"),
            Duration::MAX,
            &[(u("c"), u64::MAX), (u("c"), u64::MAX)],
        );
        let account = huge.account(&u("a"), Duration::MAX);
        // Saturated, not wrapped (a wrap would panic in a debug build).
        assert_eq!(account, vec![(u("a"), 0), (u("b"), 0), (u("c"), u64::MAX)]);
        assert_eq!(spent_most(&[]), None);
    }
    #[test]
    fn a_call_carries_its_account_and_a_client_stimulus_is_reported_only_past_its_budget() {
        let (t_max, fast, slow) = (ms(20), ms(5), ms(30));
        let mut time = ThreadTime::default();
        time.called(&u("tally"), ms(3), &[(u("tally"), 2_000)]);
        assert_eq!(
            settle(&u("enrich"), false, true, fast, t_max, Some(time.clone())),
            Settled::Carry(vec![(u("enrich"), 2_000), (u("tally"), 3_000)]),
            "a unit's call carries the callee's account, on time or not"
        );
        assert_eq!(
            settle(&u("intake"), true, true, fast, t_max, Some(time.clone())),
            Settled::Nothing
        );
        assert_eq!(
            settle(&u("intake"), true, true, slow, t_max, Some(time.clone())),
            Settled::Slow(vec![(u("intake"), 27_000), (u("tally"), 3_000)])
        );
        assert_eq!(
            settle(&u("intake"), true, false, slow, t_max, None),
            Settled::Nothing,
            "a refusal is no slow thread"
        );
        assert_eq!(
            settle(
                &u(crate::global::GLOBAL_UNIT),
                true,
                true,
                slow,
                t_max,
                None
            ),
            Settled::Nothing,
            "the global manager's own stimuli are not reported to it"
        );
    }
}
