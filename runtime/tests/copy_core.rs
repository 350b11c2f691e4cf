//! Command-level tests of `CopyCore`: each feeds inputs and asserts on the commands emitted.
//! The unit is the simulation's `SetUnit` (an `Add` is two updates; state counts parts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use understudy_runtime::sim::{SetResponse, SetStimulus, SetUnit};
use understudy_runtime::{
    BatchSeq, ClientId, Command, CopyConfig, CopyCore, CopyId, Directive, Epoch, Flush, Input,
    LeaseGrant, NextTick, PeerMsg, Refusal, ReplyToken, Report, Role, Seq, StimulusId, StimulusIn,
    Strategy, Time, TraceId, UnitName,
};

type Core = CopyCore<SetUnit>;
type Cmds = Vec<Command<SetUnit>>;

const P: CopyId = CopyId(1);
const S: CopyId = CopyId(2);
const LEASE: Duration = Duration::from_millis(300);

fn name() -> UnitName {
    UnitName::new("set")
}

fn config() -> CopyConfig {
    CopyConfig {
        window: 1,
        max_entries_per_part: 64,
        ..CopyConfig::default()
    }
}

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn add(client: u64, seq: u64, tag: u64, token: u64) -> Input<SetUnit> {
    Input::Stimulus(StimulusIn {
        id: StimulusId {
            client: ClientId(client),
            seq: Seq(seq),
        },
        low_water: Seq(seq),
        bound_at: Epoch(0),
        body: SetStimulus::Add { tag },
        trace: TraceId::root(StimulusId {
            client: ClientId(client),
            seq: Seq(seq),
        }),
        reply: ReplyToken(token),
    })
}

fn read(client: u64, seq: u64, token: u64) -> Input<SetUnit> {
    Input::Stimulus(StimulusIn {
        id: StimulusId {
            client: ClientId(client),
            seq: Seq(seq),
        },
        low_water: Seq(seq),
        bound_at: Epoch(0),
        body: SetStimulus::Read,
        trace: TraceId::root(StimulusId {
            client: ClientId(client),
            seq: Seq(seq),
        }),
        reply: ReplyToken(token),
    })
}

fn step(core: &mut Core, now: Time, input: Input<SetUnit>) -> Cmds {
    core.step(now, input);
    core.drain_commands()
}

fn replies(cmds: &Cmds) -> Vec<(u64, Result<SetResponse, Refusal>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply { to, outcome, .. } => Some((to.0, outcome.clone())),
            _ => None,
        })
        .collect()
}

/// (reply token, batch, what the standby had) of every answer in `cmds`.
fn durabilities(cmds: &Cmds) -> Vec<(u64, u64, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply { to, durability, .. } => {
                Some((to.0, durability.batch.0, durability.standby_has.0))
            }
            _ => None,
        })
        .collect()
}

fn to_peer(cmds: &Cmds) -> Vec<(CopyId, PeerMsg<SetUnit>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToPeer { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn reports(cmds: &Cmds) -> Vec<Report> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToManager(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn replicates(cmds: &Cmds) -> Vec<(BatchSeq, u32, u32, usize)> {
    to_peer(cmds)
        .into_iter()
        .filter_map(|(_, m)| match m {
            PeerMsg::Replicate {
                seq,
                part,
                parts,
                entries,
                ..
            } => Some((seq, part, parts, entries.len())),
            _ => None,
        })
        .collect()
}

fn lease(epoch: Epoch, at: Time) -> Input<SetUnit> {
    Input::Directive(Directive::Lease {
        epoch,
        requested_at: at,
        duration: LEASE,
    })
}

fn assign(epoch: Epoch, standby: Option<CopyId>) -> Input<SetUnit> {
    Input::Directive(Directive::AssignStandby { epoch, standby })
}

/// Deliver every peer message in `cmds` addressed to `to` into `core`; return what it emitted.
fn deliver(cmds: &Cmds, to: CopyId, core: &mut Core, now: Time) -> Cmds {
    let mut out = Vec::new();
    for (dest, msg) in to_peer(cmds) {
        if dest == to {
            out.extend(step(core, now, Input::Peer(msg)));
        }
    }
    out
}

/// Promote standby `s` to `epoch` at `now` and grant its first lease: it serves.
fn promote_and_lease(s: &mut Core, epoch: Epoch, now: Time) {
    step(
        s,
        now,
        Input::Directive(Directive::Promote { epoch, lease: None }),
    );
    step(s, now, lease(epoch, now));
    assert_eq!(s.role(), Role::Primary);
}

/// A primary (copy 1, epoch 1, leased at 0) with a standby (copy 2) that holds its snapshot.
fn pair() -> (Core, Core) {
    pair_with(config())
}

/// [`pair`] with the given configuration.
fn pair_with(config: CopyConfig) -> (Core, Core) {
    let mut p = Core::new_initial(SetUnit, name(), P, Epoch(1), config);
    let asked = step(&mut p, ms(0), Input::Tick);
    assert!(matches!(reports(&asked)[..], [Report::Promoted { .. }]));
    step(&mut p, ms(0), lease(Epoch(1), ms(0)));
    assert_eq!(p.role(), Role::Primary);
    let mut s = Core::new_standby(SetUnit, name(), S, Epoch(1), P, config);
    let snap = step(&mut p, ms(0), assign(Epoch(1), Some(S)));
    let ack = deliver(&snap, S, &mut s, ms(1));
    assert!(matches!(reports(&ack)[..], [Report::StandbyReady { .. }]));
    deliver(&ack, P, &mut p, ms(2));
    (p, s)
}

#[test]
fn a_standby_refuses_a_lower_epoch_naming_the_current_one() {
    let mut s = Core::new_standby(SetUnit, name(), S, Epoch(3), P, config());
    let stale = PeerMsg::Replicate {
        epoch: Epoch(2),
        from: CopyId(9),
        seq: BatchSeq(1),
        part: 0,
        parts: 1,
        entries: Vec::new(),
    };
    let out = step(&mut s, ms(0), Input::Peer(stale));
    match &to_peer(&out)[..] {
        [(to, PeerMsg::Refuse { current, from })] => {
            assert_eq!((*to, *current, *from), (CopyId(9), Epoch(3), S));
        }
        other => panic!("expected one Refuse, got {other:?}"),
    }
    assert_eq!(s.role(), Role::Standby);
    // A client that reaches a standby is told the epoch to resolve at.
    let out = step(&mut s, ms(1), add(7, 1, 70, 1));
    assert_eq!(
        replies(&out),
        vec![(1, Err(Refusal::NotPrimary { epoch: Epoch(3) }))]
    );
}

#[test]
fn a_primary_steps_down_on_a_higher_epoch_and_refuses_what_it_held() {
    let (mut p, _s) = pair();
    let out = step(&mut p, ms(5), add(7, 1, 70, 11));
    assert!(
        replies(&out).is_empty(),
        "held until the standby acknowledges"
    );
    let newer = PeerMsg::Refuse {
        current: Epoch(2),
        from: S,
    };
    let out = step(&mut p, ms(6), Input::Peer(newer));
    assert_eq!(p.role(), Role::Fenced);
    assert_eq!(p.epoch(), Epoch(2));
    assert!(!p.is_serving(ms(6)));
    assert_eq!(
        replies(&out),
        vec![(11, Err(Refusal::NotPrimary { epoch: Epoch(2) }))]
    );
    assert!(reports(&out).iter().any(|r| matches!(
        r,
        Report::Fenced {
            current: Epoch(2),
            ..
        }
    )));
    // An acknowledgement from a newer epoch fences as well.
    let (mut p, _s) = pair();
    step(
        &mut p,
        ms(5),
        Input::Peer(PeerMsg::Ack {
            epoch: Epoch(4),
            from: S,
            upto: BatchSeq(0),
        }),
    );
    assert_eq!((p.role(), p.epoch()), (Role::Fenced, Epoch(4)));
}

#[test]
fn sync_replication_holds_the_response_until_the_ack_and_releases_it_on_ack() {
    let (mut p, mut s) = pair();
    let out = step(&mut p, ms(5), add(7, 1, 70, 11));
    assert!(replies(&out).is_empty());
    assert_eq!(replicates(&out), vec![(BatchSeq(1), 0, 1, 1)]);
    let ack = deliver(&out, S, &mut s, ms(6));
    assert_eq!(s.state().get(&70), Some(&2));
    let released = deliver(&ack, P, &mut p, ms(7));
    assert_eq!(
        replies(&released),
        vec![(11, Ok(SetResponse::Added { tag: 70 }))]
    );
    // A read with nothing pending is answered at once.
    let out = step(&mut p, ms(8), read(8, 1, 12));
    assert!(matches!(&replies(&out)[..], [(12, Ok(SetResponse::Tags(t)))] if t.contains(&70)));
}

#[test]
fn stimuli_that_arrive_while_a_batch_is_in_flight_share_the_next_batch() {
    let (mut p, mut s) = pair();
    let first = step(&mut p, ms(5), add(7, 1, 70, 100));
    assert_eq!(replicates(&first), vec![(BatchSeq(1), 0, 1, 1)]);
    // Five more while batch 1 is in flight (window 1): nothing is sent for them yet.
    let mut gathered = Vec::new();
    for i in 0..5 {
        gathered.extend(step(&mut p, ms(6), add(8, i + 1, 80 + i, 101 + i)));
    }
    assert!(replicates(&gathered).is_empty());
    assert!(replies(&gathered).is_empty());
    assert_eq!(p.open_entries(), 5);
    // The ack of batch 1 answers the first and sends all five in one batch: one round trip.
    let ack1 = deliver(&first, S, &mut s, ms(7));
    let out = deliver(&ack1, P, &mut p, ms(8));
    assert_eq!(replies(&out).len(), 1);
    assert_eq!(replicates(&out), vec![(BatchSeq(2), 0, 1, 5)]);
    let ack2 = deliver(&out, S, &mut s, ms(9));
    let out = deliver(&ack2, P, &mut p, ms(10));
    let mut tokens: Vec<u64> = replies(&out).into_iter().map(|(t, _)| t).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, vec![101, 102, 103, 104, 105]);
    assert_eq!(s.state(), p.state());
}

#[test]
fn a_torn_batch_is_dropped_at_promotion() {
    let cfg = CopyConfig {
        max_entries_per_part: 1,
        ..config()
    };
    let mut p = Core::new_initial(SetUnit, name(), P, Epoch(1), cfg);
    step(&mut p, ms(0), Input::Tick);
    step(&mut p, ms(0), lease(Epoch(1), ms(0)));
    let mut s = Core::new_standby(SetUnit, name(), S, Epoch(1), P, cfg);
    let snap = step(&mut p, ms(0), assign(Epoch(1), Some(S)));
    let ack = deliver(&snap, S, &mut s, ms(1));
    deliver(&ack, P, &mut p, ms(1));
    // Batch 1, whole and acknowledged.
    let b1 = step(&mut p, ms(2), add(7, 1, 70, 1));
    let ack = deliver(&b1, S, &mut s, ms(3));
    deliver(&ack, P, &mut p, ms(3));
    // Batch 2 in flight; two more stimuli gather meanwhile.
    let b2 = step(&mut p, ms(4), add(7, 2, 71, 2));
    step(&mut p, ms(4), add(7, 3, 72, 3));
    step(&mut p, ms(4), add(7, 4, 73, 4));
    let ack = deliver(&b2, S, &mut s, ms(5));
    // Its ack sends batch 3: two entries, one per part, so two parts.
    let b3 = deliver(&ack, P, &mut p, ms(6));
    assert_eq!(
        replicates(&b3),
        vec![(BatchSeq(3), 0, 2, 1), (BatchSeq(3), 1, 2, 1)]
    );
    // Only part 0 reaches the standby: nothing of it is applied.
    let (_, first_part) = to_peer(&b3).into_iter().next().expect("a part");
    step(&mut s, ms(7), Input::Peer(first_part));
    assert_eq!(s.applied(), BatchSeq(2), "a part alone is not applied");
    // Promotion: the consistency check drops the torn batch; the state is that of batch 2.
    let out = step(
        &mut s,
        ms(8),
        Input::Directive(Directive::Promote {
            epoch: Epoch(2),
            lease: None,
        }),
    );
    assert_eq!(s.role(), Role::Promoting);
    assert!(matches!(
        reports(&out)[..],
        [Report::Promoted {
            epoch: Epoch(2),
            ..
        }]
    ));
    assert!(s.state().values().all(|n| *n == 2));
    assert!(s.state().contains_key(&70) && s.state().contains_key(&71));
    assert!(!s.state().contains_key(&72) && !s.state().contains_key(&73));
    // The rest of the torn batch, arriving late, is refused as stale.
    let (_, second_part) = to_peer(&b3).into_iter().nth(1).expect("a part");
    let out = step(&mut s, ms(9), Input::Peer(second_part));
    assert!(matches!(
        &to_peer(&out)[..],
        [(
            P,
            PeerMsg::Refuse {
                current: Epoch(2),
                ..
            }
        )]
    ));
    assert!(!s.state().contains_key(&73));
}

#[test]
fn a_retried_stimulus_is_answered_from_the_dedupe_table_and_applied_once() {
    let (mut p, mut s) = pair();
    let out = step(&mut p, ms(5), add(7, 1, 70, 1));
    // The same stimulus again before the ack: held, not applied again.
    let again = step(&mut p, ms(6), add(7, 1, 70, 2));
    assert!(replies(&again).is_empty() && replicates(&again).is_empty());
    let ack = deliver(&out, S, &mut s, ms(7));
    let released = deliver(&ack, P, &mut p, ms(8));
    assert_eq!(replies(&released).len(), 2);
    assert_eq!(p.state().get(&70), Some(&2));
    // After the ack: answered at once from the table.
    let third = step(&mut p, ms(9), add(7, 1, 70, 3));
    assert_eq!(
        replies(&third),
        vec![(3, Ok(SetResponse::Added { tag: 70 }))]
    );
    assert!(replicates(&third).is_empty());
    // After a takeover the standby's copy of the table answers the retry.
    promote_and_lease(&mut s, Epoch(2), ms(10));
    let retry = step(&mut s, ms(11), add(7, 1, 70, 4));
    assert_eq!(
        replies(&retry),
        vec![(4, Ok(SetResponse::Added { tag: 70 }))]
    );
    assert_eq!(s.state().get(&70), Some(&2));
}

#[test]
fn a_promoting_copy_parks_stimuli_until_its_first_lease_and_a_lapsed_lease_refuses_late() {
    let mut p = Core::new_initial(SetUnit, name(), P, Epoch(1), config());
    step(&mut p, ms(0), Input::Tick);
    let parked = step(&mut p, ms(1), read(7, 1, 1));
    assert!(replies(&parked).is_empty());
    let out = step(&mut p, ms(2), lease(Epoch(1), ms(0)));
    assert!(matches!(
        &replies(&out)[..],
        [(1, Ok(SetResponse::Tags(_)))]
    ));
    // The lease runs out (no renewal granted): stimuli park, then are refused as retryable.
    let late = ms(0).after(LEASE);
    assert!(!p.is_serving(late));
    step(&mut p, late, read(7, 2, 2));
    let out = step(&mut p, late.after(config().park_timeout), Input::Tick);
    let refused = replies(&out);
    assert_eq!(
        refused,
        vec![(2, Err(Refusal::LeaseLapsed { epoch: Epoch(1) }))]
    );
    assert!(refused[0].1.as_ref().unwrap_err().is_retryable());
}

#[test]
fn a_standby_promoted_with_its_lease_serves_at_once_and_what_the_new_binding_sent_first_waits_for_it(
) {
    let (_p, mut s) = pair();
    // A stimulus by the old binding is refused: this copy is not the primary.
    let old = step(&mut s, ms(3), read(7, 1, 1));
    assert_eq!(
        replies(&old),
        vec![(1, Err(Refusal::NotPrimary { epoch: Epoch(1) }))]
    );
    // One by the binding at epoch 2 arrives before the promotion directive: it waits.
    let early = Input::Stimulus(StimulusIn {
        id: StimulusId {
            client: ClientId(7),
            seq: Seq(2),
        },
        low_water: Seq(2),
        bound_at: Epoch(2),
        body: SetStimulus::Read,
        trace: TraceId::root(StimulusId {
            client: ClientId(7),
            seq: Seq(2),
        }),
        reply: ReplyToken(2),
    });
    assert!(replies(&step(&mut s, ms(4), early)).is_empty());
    // The directive carries the first lease, counted from the node's clock at 2 ms.
    let grant = LeaseGrant {
        from: ms(2),
        duration: LEASE,
    };
    let out = step(
        &mut s,
        ms(5),
        Input::Directive(Directive::Promote {
            epoch: Epoch(2),
            lease: Some(grant),
        }),
    );
    assert_eq!(s.role(), Role::Primary);
    assert_eq!(s.lease_until(), Some(ms(2).after(LEASE)));
    assert!(matches!(
        &replies(&out)[..],
        [(2, Ok(SetResponse::Tags(_)))]
    ));
    // It still tells the manager it promoted (the manager then counts it serving).
    assert!(reports(&out).iter().any(|r| matches!(
        r,
        Report::Promoted {
            epoch: Epoch(2),
            ..
        }
    )));
}

#[test]
fn a_resent_snapshot_carries_the_state_of_its_batch_not_entries_served_since() {
    // Regression: the snapshot was rebuilt from the current state on every resend, labelled
    // with the old batch number, and the entries served meanwhile then came again in the next
    // batch, so the standby applied them twice.
    let mut p = Core::new_initial(SetUnit, name(), P, Epoch(1), config());
    step(&mut p, ms(0), Input::Tick);
    step(&mut p, ms(0), lease(Epoch(1), ms(0)));
    let first = step(&mut p, ms(1), assign(Epoch(1), Some(S)));
    assert_eq!(to_peer(&first).len(), 1, "the snapshot (then lost)");
    step(&mut p, ms(2), add(7, 1, 70, 1));
    let resend = step(&mut p, ms(60), Input::Tick);
    let mut s = Core::new_standby(SetUnit, name(), S, Epoch(1), P, config());
    match &to_peer(&resend)[..] {
        [(_, PeerMsg::Snapshot { seq, state, .. })] => {
            assert_eq!(*seq, BatchSeq(0));
            assert!(
                state.is_empty(),
                "the snapshot of batch 0 holds nothing: {state:?}"
            );
        }
        other => panic!("expected the snapshot again, got {other:?}"),
    }
    let ack = deliver(&resend, S, &mut s, ms(61));
    let batch = deliver(&ack, P, &mut p, ms(62));
    assert_eq!(replicates(&batch), vec![(BatchSeq(1), 0, 1, 1)]);
    let ack = deliver(&batch, S, &mut s, ms(63));
    assert_eq!(s.state().get(&70), Some(&2), "applied once");
    let released = deliver(&ack, P, &mut p, ms(64));
    assert_eq!(replies(&released).len(), 1);
}

#[test]
fn a_delayed_assignment_of_an_older_standby_is_ignored() {
    // Regression: an `AssignStandby` for a standby the manager has since replaced arrived
    // late and took the primary back to it (a zombie), which then acknowledged answers the
    // manager's standby never received.
    let (mut p, _s) = pair();
    step(&mut p, ms(5), assign(Epoch(1), None));
    let to_new = step(&mut p, ms(6), assign(Epoch(1), Some(CopyId(5))));
    assert!(to_peer(&to_new).iter().all(|(to, _)| *to == CopyId(5)));
    let stale = step(&mut p, ms(7), assign(Epoch(1), Some(S)));
    assert!(to_peer(&stale).is_empty());
    let later = step(&mut p, ms(70), Input::Tick);
    assert!(
        to_peer(&later).iter().all(|(to, _)| *to == CopyId(5)),
        "still replicating to the newest standby: {:?}",
        to_peer(&later)
    );
}

#[test]
fn a_standby_asked_directly_says_again_that_it_is_ready() {
    // Regression: a lost `StandbyReady` was never repeated, so the manager could never
    // promote a standby that held every change.
    let (_p, mut s) = pair();
    let out = step(&mut s, ms(5), assign(Epoch(1), Some(S)));
    assert!(matches!(
        reports(&out)[..],
        [Report::StandbyReady {
            copy: S,
            epoch: Epoch(1),
            ..
        }]
    ));
    // One without a snapshot stays silent.
    let mut fresh = Core::new_standby(SetUnit, name(), CopyId(3), Epoch(1), P, config());
    let out = step(&mut fresh, ms(5), assign(Epoch(1), Some(CopyId(3))));
    assert!(out.is_empty());
}

#[test]
fn a_primary_handing_over_answers_what_it_served_parks_the_rest_and_stops_once_all_is_acked() {
    let (mut p, mut s) = pair();
    // One stimulus in flight when the switchover is asked for.
    let out = step(&mut p, ms(5), add(7, 1, 70, 11));
    let hand_over = step(
        &mut p,
        ms(6),
        Input::Directive(Directive::HandOver { epoch: Epoch(1) }),
    );
    assert!(
        reports(&hand_over).is_empty(),
        "not before the standby has everything"
    );
    // A new stimulus is parked, not served.
    let parked = step(&mut p, ms(7), add(7, 2, 71, 12));
    assert!(replies(&parked).is_empty());
    assert!(replicates(&parked).is_empty());
    // The ack releases the first answer and completes the hand-over.
    let ack = deliver(&out, S, &mut s, ms(8));
    let done = deliver(&ack, P, &mut p, ms(9));
    let answered = replies(&done);
    assert!(answered.contains(&(11, Ok(SetResponse::Added { tag: 70 }))));
    assert!(
        answered.contains(&(12, Err(Refusal::NotPrimary { epoch: Epoch(1) }))),
        "the parked stimulus is sent on to the next primary: {answered:?}"
    );
    assert!(reports(&done).iter().any(|r| matches!(
        r,
        Report::HandedOver { epoch: Epoch(1), standby, .. } if *standby == S
    )));
    assert_eq!(p.role(), Role::Fenced);
    assert!(!p.is_serving(ms(9)));
    assert_eq!(
        s.state().get(&70),
        Some(&2),
        "the standby holds what was answered"
    );
    assert_eq!(s.state().get(&71), None, "and nothing that was not");
}

fn trailing(flush: Flush) -> CopyConfig {
    CopyConfig {
        strategy: Strategy::Trailing(flush),
        ..config()
    }
}

#[test]
fn a_trailing_primary_answers_at_once_and_says_how_far_the_standby_has_got() {
    let (mut p, mut s) = pair_with(trailing(Flush::EachStimulus));
    let out = step(&mut p, ms(5), add(7, 1, 70, 11));
    assert_eq!(
        replies(&out),
        vec![(11, Ok(SetResponse::Added { tag: 70 }))]
    );
    assert_eq!(
        durabilities(&out),
        vec![(11, 1, 0)],
        "batch 1, not on the standby yet"
    );
    assert_eq!(replicates(&out), vec![(BatchSeq(1), 0, 1, 1)]);
    // While batch 1 is in flight (window 1) the next answers leave too; their updates gather.
    let more = step(&mut p, ms(6), add(9, 1, 71, 12));
    assert_eq!(durabilities(&more), vec![(12, 2, 0)]);
    assert!(replicates(&more).is_empty());
    let ack = deliver(&out, S, &mut s, ms(7));
    let next = deliver(&ack, P, &mut p, ms(8));
    assert_eq!(replicates(&next), vec![(BatchSeq(2), 0, 1, 1)]);
    // The same stimulus again: answered from the table at once, now known durable.
    let again = step(&mut p, ms(9), add(7, 1, 70, 13));
    assert_eq!(durabilities(&again), vec![(13, 1, 1)]);
    assert_eq!(p.state().get(&70), Some(&2), "applied once");
    // A read sees the primary's state, which the standby may not have yet.
    let r = step(&mut p, ms(10), read(8, 1, 14));
    assert_eq!(durabilities(&r), vec![(14, 2, 1)]);
}

#[test]
fn a_batched_trailing_primary_seals_once_enough_entries_gathered_or_the_oldest_waited() {
    let flush = Flush::Batched {
        entries: 3,
        delay: Duration::from_millis(10),
    };
    let (mut p, _s) = pair_with(trailing(flush));
    let mut out = Vec::new();
    for i in 0..2 {
        out.extend(step(&mut p, ms(5), add(7, i + 1, 70 + i, 20 + i)));
    }
    assert_eq!(replies(&out).len(), 2, "answered at once");
    assert!(replicates(&out).is_empty(), "two entries wait for a third");
    let third = step(&mut p, ms(6), add(7, 3, 72, 22));
    assert_eq!(replicates(&third), vec![(BatchSeq(1), 0, 1, 3)]);
    // One more waits; a tick before its delay seals nothing, one after it does (once the
    // standby acknowledged batch 1, as the window is 1).
    step(&mut p, ms(20), add(7, 4, 73, 23));
    assert!(replicates(&step(&mut p, ms(25), Input::Tick)).is_empty());
    let ack = PeerMsg::Ack {
        epoch: Epoch(1),
        from: S,
        upto: BatchSeq(1),
    };
    step(&mut p, ms(26), Input::Peer(ack));
    let late = step(&mut p, ms(31), Input::Tick);
    assert_eq!(replicates(&late), vec![(BatchSeq(2), 0, 1, 1)]);
}

#[test]
fn after_a_trailing_takeover_a_replayed_stimulus_takes_effect_once_whether_or_not_the_standby_had_it(
) {
    let (mut p, mut s) = pair_with(trailing(Flush::EachStimulus));
    // Batch 1 (tag 70) reaches the standby; batch 2 (tag 71) is answered but lost with the
    // primary.
    let b1 = step(&mut p, ms(5), add(7, 1, 70, 1));
    let ack = deliver(&b1, S, &mut s, ms(6));
    let b2 = deliver(&ack, P, &mut p, ms(7));
    assert!(replicates(&b2).is_empty());
    let lost = step(&mut p, ms(8), add(7, 2, 71, 2));
    assert_eq!(durabilities(&lost), vec![(2, 2, 1)]);
    // The standby is promoted and leased.
    promote_and_lease(&mut s, Epoch(2), ms(10));
    // The caller replays both, as their answers were not known durable.
    let replay1 = step(&mut s, ms(11), add(7, 1, 70, 3));
    let replay2 = step(&mut s, ms(11), add(7, 2, 71, 4));
    assert_eq!(
        replies(&replay1),
        vec![(3, Ok(SetResponse::Added { tag: 70 }))]
    );
    assert_eq!(
        replies(&replay2),
        vec![(4, Ok(SetResponse::Added { tag: 71 }))]
    );
    assert_eq!(
        s.state().get(&70),
        Some(&2),
        "the one it had: not applied again"
    );
    assert_eq!(
        s.state().get(&71),
        Some(&2),
        "the one it lacked: applied once"
    );
}

#[test]
fn a_batched_trailing_primary_handing_over_seals_at_once_and_hands_over_once_acked() {
    let flush = Flush::Batched {
        entries: 100,
        delay: Duration::from_secs(10),
    };
    let (mut p, mut s) = pair_with(trailing(flush));
    let out = step(&mut p, ms(5), add(7, 1, 70, 11));
    assert_eq!(replies(&out).len(), 1, "answered at once");
    assert!(replicates(&out).is_empty(), "the batch waits for more");
    let sealed = step(
        &mut p,
        ms(6),
        Input::Directive(Directive::HandOver { epoch: Epoch(1) }),
    );
    assert_eq!(replicates(&sealed), vec![(BatchSeq(1), 0, 1, 1)]);
    let ack = deliver(&sealed, S, &mut s, ms(7));
    let done = deliver(&ack, P, &mut p, ms(8));
    assert!(reports(&done)
        .iter()
        .any(|r| matches!(r, Report::HandedOver { .. })));
    assert_eq!(
        s.state().get(&70),
        Some(&2),
        "the standby has what was answered"
    );
}

#[test]
fn an_idle_copy_needs_no_tick_but_its_next_renewal_and_a_busy_or_watching_one_needs_the_regular_tick(
) {
    let (mut p, mut s) = pair();
    // Idle: the standby waits for its primary; the primary for a third of its lease (leased
    // at 0 for 300 ms: it asks again from 100 ms).
    assert_eq!(s.next_tick(false), NextTick::Never);
    assert_eq!(p.next_tick(false), NextTick::At(ms(100)));
    // A stimulus waiting for the standby's acknowledgement keeps the primary ticking (it may
    // have to resend).
    let sent = step(&mut p, ms(10), add(1, 1, 7, 1));
    assert_eq!(p.next_tick(false), NextTick::Regular);
    let ack = deliver(&sent, S, &mut s, ms(11));
    deliver(&ack, P, &mut p, ms(12));
    assert_eq!(p.next_tick(false), NextTick::At(ms(100)));
    // Once it asked, its retry is its next tick; the renewal answers it.
    let asked = step(&mut p, ms(100), Input::Tick);
    assert!(matches!(reports(&asked)[..], [Report::LeaseRequest { .. }]));
    assert_eq!(
        p.next_tick(false),
        NextTick::At(ms(100).after(config().lease_retry))
    );
    step(&mut p, ms(105), lease(Epoch(1), ms(100)));
    assert_eq!(p.next_tick(false), NextTick::At(ms(200)));
    // A primary whose unit calls other units watches their names on each regular tick; a
    // standby of such a unit has nothing to watch.
    assert_eq!(p.next_tick(true), NextTick::Regular);
    assert_eq!(s.next_tick(true), NextTick::Never);
    // A promoting copy asks until it is answered: the regular tick.
    step(
        &mut s,
        ms(300),
        Input::Directive(Directive::Promote {
            epoch: Epoch(2),
            lease: None,
        }),
    );
    assert_eq!(s.next_tick(false), NextTick::Regular);
}
