//! Command-level tests of in-flight knowledge, units calling units, and degraded modes in
//! `CopyCore`: each feeds inputs and asserts on the commands emitted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use understudy_runtime::sim::{SetResponse, SetStimulus};
use understudy_runtime::{
    derived_id, CallReply, ClientId, Command, CopyConfig, CopyCore, CopyId, DependencyChange,
    Directive, Entry, Epoch, Handled, Input, Outcall, PeerMsg, Reconcile, Refusal, ReplyToken,
    Role, Seq, Step, StimulusId, StimulusIn, Time, TraceId, Unit, UnitName,
};

/// A unit that adds tags, forwards tags to the unit "back" (a `SetUnit`), and knows whether
/// it is degraded.
#[derive(Clone, Copy, Debug, Default)]
struct Front;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FrontState {
    /// Tag → how many times its add was applied.
    tags: BTreeMap<u64, u32>,
    /// Tag → whether "back" took it.
    forwarded: BTreeMap<u64, bool>,
    degraded: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum FrontStimulus {
    Add {
        tag: u64,
    },
    /// Not worth doing again after a takeover: ignored then.
    Fragile {
        tag: u64,
    },
    Forward {
        tag: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum FrontResponse {
    Added { tag: u64, degraded: bool },
    Forwarded { tag: u64, taken: bool },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum FrontUpdate {
    Added { tag: u64 },
    Forwarded { tag: u64, taken: bool },
    Degraded(bool),
}

impl Unit for Front {
    type State = FrontState;
    type Stimulus = FrontStimulus;
    type Response = FrontResponse;
    type Update = FrontUpdate;

    fn handle(&self, state: &FrontState, stimulus: &FrontStimulus) -> Handled<Self> {
        match stimulus {
            FrontStimulus::Add { tag } | FrontStimulus::Fragile { tag } => Handled::write(
                FrontResponse::Added {
                    tag: *tag,
                    degraded: state.degraded,
                },
                vec![FrontUpdate::Added { tag: *tag }],
            ),
            // Without a call (degraded): not taken.
            FrontStimulus::Forward { tag } => Handled::write(
                FrontResponse::Forwarded {
                    tag: *tag,
                    taken: false,
                },
                vec![FrontUpdate::Forwarded {
                    tag: *tag,
                    taken: false,
                }],
            ),
        }
    }

    fn handle_with(
        &self,
        state: &FrontState,
        stimulus: &FrontStimulus,
        replies: &[CallReply],
    ) -> Step<Self> {
        match (stimulus, replies) {
            (FrontStimulus::Forward { tag }, []) if !state.degraded => {
                Step::Call(Outcall::new("back", &SetStimulus::Add { tag: *tag }))
            }
            (FrontStimulus::Forward { tag }, [reply]) => {
                let taken = matches!(reply.decode::<SetResponse>(), Ok(SetResponse::Added { .. }));
                Step::Done(Handled::write(
                    FrontResponse::Forwarded { tag: *tag, taken },
                    vec![FrontUpdate::Forwarded { tag: *tag, taken }],
                ))
            }
            _ => Step::Done(self.handle(state, stimulus)),
        }
    }

    fn on_open_at_takeover(&self, _state: &FrontState, stimulus: &FrontStimulus) -> Reconcile {
        match stimulus {
            FrontStimulus::Fragile { .. } => Reconcile::Ignore,
            _ => Reconcile::Reprocess,
        }
    }

    fn apply(&self, state: &mut FrontState, update: &FrontUpdate) {
        match update {
            FrontUpdate::Added { tag } => *state.tags.entry(*tag).or_insert(0) += 1,
            FrontUpdate::Forwarded { tag, taken } => {
                state.forwarded.insert(*tag, *taken);
            }
            FrontUpdate::Degraded(d) => state.degraded = *d,
        }
    }

    fn on_dependency_change(
        &self,
        _state: &FrontState,
        change: &DependencyChange,
    ) -> Vec<FrontUpdate> {
        vec![FrontUpdate::Degraded(matches!(
            change,
            DependencyChange::Unavailable { .. }
        ))]
    }
}

type Core = CopyCore<Front>;
type Cmds = Vec<Command<Front>>;

const P: CopyId = CopyId(1);
const S: CopyId = CopyId(2);
const T: CopyId = CopyId(3);

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn name() -> UnitName {
    UnitName::new("front")
}

fn id(client: u64, seq: u64) -> StimulusId {
    StimulusId {
        client: ClientId(client),
        seq: Seq(seq),
    }
}

fn stimulus(client: u64, seq: u64, body: FrontStimulus, token: u64) -> Input<Front> {
    Input::Stimulus(StimulusIn {
        id: id(client, seq),
        low_water: Seq(seq),
        bound_at: Epoch(0),
        body,
        trace: TraceId::root(id(client, seq)),
        reply: ReplyToken(token),
    })
}

fn step(core: &mut Core, now: Time, input: Input<Front>) -> Cmds {
    core.step(now, input);
    core.drain_commands()
}

fn replies(cmds: &Cmds) -> Vec<(u64, Result<FrontResponse, Refusal>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply { to, outcome, .. } => Some((to.0, outcome.clone())),
            _ => None,
        })
        .collect()
}

fn degraded_flags(cmds: &Cmds) -> Vec<bool> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply { degraded, .. } => Some(*degraded),
            _ => None,
        })
        .collect()
}

fn calls(cmds: &Cmds) -> Vec<(u64, UnitName, StimulusId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Call { call, unit, id, .. } => Some((call.0, unit.clone(), *id)),
            _ => None,
        })
        .collect()
}

/// The entries of every batch in `cmds`, described: `begun c#s`, `served c#s`, `ignored c#s`,
/// `dependency`.
fn entries(cmds: &Cmds) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToPeer {
                msg: PeerMsg::Replicate { entries, .. },
                ..
            } => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .map(|e| match e {
            Entry::Served { id, .. } => format!("served {id}"),
            Entry::Begun(b) => format!("begun {}", b.id),
            Entry::Ignored { id, .. } => format!("ignored {id}"),
            Entry::Dependency { .. } => "dependency".to_string(),
        })
        .collect()
}

/// Deliver every peer message in `cmds` addressed to `to` into `core`; return what it emitted.
fn deliver(cmds: &Cmds, to: CopyId, core: &mut Core, now: Time) -> Cmds {
    let mut out = Vec::new();
    for c in cmds {
        if let Command::ToPeer { to: dest, msg } = c {
            if *dest == to {
                out.extend(step(core, now, Input::Peer(msg.clone())));
            }
        }
    }
    out
}

/// Client 7's stimulus `seq` to primary `p`, its begin delivered to standby `s` and the
/// standby's acknowledgement back to `p`: what `p` emitted then (its end, or its call).
fn begun_and_committed(p: &mut Core, s: &mut Core, seq: u64, body: FrontStimulus) -> Cmds {
    let begin = step(p, ms(5), stimulus(7, seq, body, 1));
    let ack = deliver(&begin, S, s, ms(6));
    deliver(&ack, P, p, ms(7))
}

fn added(tag: u64) -> Result<FrontResponse, Refusal> {
    Ok(FrontResponse::Added {
        tag,
        degraded: false,
    })
}

fn lease(epoch: Epoch, at: Time) -> Input<Front> {
    Input::Directive(Directive::Lease {
        epoch,
        requested_at: at,
        duration: Duration::from_millis(300),
    })
}

fn assign(epoch: Epoch, standby: Option<CopyId>) -> Input<Front> {
    Input::Directive(Directive::AssignStandby { epoch, standby })
}

fn in_flight() -> CopyConfig {
    CopyConfig {
        in_flight: true,
        ..CopyConfig::default()
    }
}

/// A primary `p` at epoch 1 with a standby `s` seeded with its snapshot.
fn pair(config: CopyConfig) -> (Core, Core) {
    let mut p = Core::new_initial(Front, name(), P, Epoch(1), config);
    step(&mut p, ms(0), Input::Tick);
    step(&mut p, ms(0), lease(Epoch(1), ms(0)));
    assert_eq!(p.role(), Role::Primary);
    let mut s = Core::new_standby(Front, name(), S, Epoch(1), P, config);
    let snap = step(&mut p, ms(0), assign(Epoch(1), Some(S)));
    let ack = deliver(&snap, S, &mut s, ms(1));
    deliver(&ack, P, &mut p, ms(2));
    (p, s)
}

/// Promote `s` to `epoch` and lease it; then give it a new standby `t` and deliver the
/// snapshot and its acknowledgement. Returns everything the new primary emitted after its
/// lease.
fn take_over(s: &mut Core, t: &mut Option<Core>, epoch: Epoch, now: Time) -> Cmds {
    step(
        s,
        now,
        Input::Directive(Directive::Promote { epoch, lease: None }),
    );
    let mut out = step(s, now, lease(epoch, now));
    assert_eq!(s.role(), Role::Primary);
    if let Some(t) = t.as_mut() {
        let snap = step(s, now, assign(epoch, Some(T)));
        let ack = deliver(&snap, T, t, now);
        out.extend(snap);
        out.extend(deliver(&ack, S, s, now));
    }
    out
}

#[test]
fn in_flight_a_stimulus_is_handled_only_once_its_begin_is_committed() {
    let (mut p, mut s) = pair(in_flight());
    let begin = step(
        &mut p,
        ms(5),
        stimulus(7, 1, FrontStimulus::Add { tag: 70 }, 1),
    );
    assert_eq!(entries(&begin), vec!["begun c7#1"]);
    assert!(replies(&begin).is_empty());
    assert!(
        p.state().tags.is_empty(),
        "not handled before its begin is committed"
    );
    let ack = deliver(&begin, S, &mut s, ms(6));
    assert_eq!(
        s.open_stimuli(),
        vec![id(7, 1)],
        "the standby knows it is open"
    );
    let end = deliver(&ack, P, &mut p, ms(7));
    assert_eq!(entries(&end), vec!["served c7#1"]);
    assert_eq!(p.state().tags.get(&70), Some(&1));
    assert!(
        replies(&end).is_empty(),
        "synchronous: the answer waits for the end's ack"
    );
    let ack = deliver(&end, S, &mut s, ms(8));
    assert!(s.open_stimuli().is_empty(), "ended");
    let answered = deliver(&ack, P, &mut p, ms(9));
    assert_eq!(replies(&answered), vec![(1, added(70))]);
}

#[test]
fn in_flight_a_promoted_standby_serves_the_open_stimuli_again_and_answers_their_retries_once() {
    let (mut p, mut s) = pair(in_flight());
    // The primary handles it, and is lost before its end reaches the standby.
    let _lost_end = begun_and_committed(&mut p, &mut s, 1, FrontStimulus::Add { tag: 70 });
    let mut t = Some(Core::new_standby(
        Front,
        name(),
        T,
        Epoch(2),
        S,
        in_flight(),
    ));
    take_over(&mut s, &mut t, Epoch(2), ms(20));
    assert_eq!(
        s.state().tags.get(&70),
        Some(&1),
        "served again at the takeover, once"
    );
    assert_eq!(
        t.as_ref().map(|t| t.state().tags.get(&70).copied()),
        Some(Some(1))
    );
    // The caller's retry is answered from the table, not applied again.
    let retry = step(
        &mut s,
        ms(21),
        stimulus(7, 1, FrontStimulus::Add { tag: 70 }, 2),
    );
    assert_eq!(replies(&retry), vec![(2, added(70))]);
    assert_eq!(s.state().tags.get(&70), Some(&1));
}

#[test]
fn in_flight_an_open_stimulus_the_unit_ignores_at_takeover_is_refused_as_ignored_and_never_applied()
{
    let (mut p, mut s) = pair(in_flight());
    let begin = step(
        &mut p,
        ms(5),
        stimulus(7, 1, FrontStimulus::Fragile { tag: 9 }, 1),
    );
    deliver(&begin, S, &mut s, ms(6));
    let mut t = Some(Core::new_standby(
        Front,
        name(),
        T,
        Epoch(2),
        S,
        in_flight(),
    ));
    take_over(&mut s, &mut t, Epoch(2), ms(20));
    let retry = step(
        &mut s,
        ms(21),
        stimulus(7, 1, FrontStimulus::Fragile { tag: 9 }, 2),
    );
    assert_eq!(
        replies(&retry),
        vec![(2, Err(Refusal::Ignored { stimulus: id(7, 1) }))]
    );
    assert!(s.state().tags.is_empty());
    // The new standby learned it too: a second takeover refuses the retry the same way.
    let mut t = t.expect("a standby");
    let mut none = None;
    take_over(&mut t, &mut none, Epoch(3), ms(40));
    let again = step(
        &mut t,
        ms(41),
        stimulus(7, 1, FrontStimulus::Fragile { tag: 9 }, 3),
    );
    assert_eq!(
        replies(&again),
        vec![(3, Err(Refusal::Ignored { stimulus: id(7, 1) }))]
    );
}

#[test]
fn a_call_carries_an_id_derived_from_its_stimulus_and_the_unit_serves_nothing_else_until_it_returns(
) {
    let (mut p, mut s) = pair(CopyConfig::default());
    let begin = step(
        &mut p,
        ms(5),
        stimulus(7, 3, FrontStimulus::Forward { tag: 5 }, 1),
    );
    // Even without in-flight knowledge configured, a stimulus that calls commits its begin
    // before the call leaves, so a takeover would serve it again first.
    assert_eq!(entries(&begin), vec!["begun c7#3"]);
    assert!(calls(&begin).is_empty());
    let ack = deliver(&begin, S, &mut s, ms(5));
    assert_eq!(s.open_stimuli(), vec![id(7, 3)]);
    let out = deliver(&ack, P, &mut p, ms(5));
    let made = calls(&out);
    assert_eq!(made.len(), 1);
    let (call, unit, call_id) = made[0].clone();
    assert_eq!(unit, UnitName::new("back"));
    assert_eq!(call_id, derived_id(&name(), id(7, 3), 0));
    // Another stimulus waits behind the call.
    let waits = step(
        &mut p,
        ms(6),
        stimulus(8, 1, FrontStimulus::Add { tag: 80 }, 2),
    );
    assert!(entries(&waits).is_empty() && replies(&waits).is_empty());
    assert!(p.state().tags.is_empty());
    let reply = CallReply {
        unit,
        outcome: Ok(rmp_serde::to_vec(&SetResponse::Added { tag: 5 }).expect("encodes")),
    };
    let done = step(
        &mut p,
        ms(7),
        Input::CallReply {
            call: understudy_runtime::CallToken(call),
            reply,
        },
    );
    assert_eq!(
        entries(&done),
        vec!["served c7#3", "served c8#1"],
        "the forward, then the add that waited, in one batch"
    );
    assert_eq!(p.state().forwarded.get(&5), Some(&true));
    assert_eq!(
        p.state().tags.get(&80),
        Some(&1),
        "served once the call returned"
    );
    let ack = deliver(&done, S, &mut s, ms(8));
    let answered = deliver(&ack, P, &mut p, ms(9));
    assert_eq!(
        replies(&answered),
        vec![
            (
                1,
                Ok(FrontResponse::Forwarded {
                    tag: 5,
                    taken: true
                })
            ),
            (2, added(80))
        ]
    );
}

#[test]
fn in_flight_after_a_takeover_the_open_stimulus_makes_the_same_call_with_the_same_id() {
    let (mut p, mut s) = pair(in_flight());
    let first = calls(&begun_and_committed(
        &mut p,
        &mut s,
        3,
        FrontStimulus::Forward { tag: 5 },
    ));
    assert_eq!(first.len(), 1, "the call went out");
    // The primary is lost while its call is out; the standby takes over.
    let mut none = None;
    let after = take_over(&mut s, &mut none, Epoch(2), ms(20));
    let again = calls(&after);
    assert_eq!(again.len(), 1, "the open stimulus is served again");
    assert_eq!(
        again[0].2, first[0].2,
        "with the same call id: the called unit answers it from its table"
    );
}

#[test]
fn a_dependency_change_runs_the_degraded_hook_replicates_it_and_answers_say_degraded() {
    let (mut p, mut s) = pair(CopyConfig::default());
    let down = DependencyChange::Unavailable {
        unit: "back".to_string(),
    };
    let out = step(&mut p, ms(5), Input::Dependency(down.clone()));
    assert_eq!(entries(&out), vec!["dependency"]);
    assert!(p.degraded());
    // The same change again changes nothing.
    assert!(entries(&step(&mut p, ms(5), Input::Dependency(down))).is_empty());
    let ack = deliver(&out, S, &mut s, ms(6));
    assert!(
        s.state().degraded && s.degraded(),
        "the standby knows the mode too"
    );
    deliver(&ack, P, &mut p, ms(7));
    // Served degraded: no call is made, and the answer says so.
    let fwd = step(
        &mut p,
        ms(8),
        stimulus(7, 1, FrontStimulus::Forward { tag: 5 }, 1),
    );
    assert!(calls(&fwd).is_empty());
    let ack = deliver(&fwd, S, &mut s, ms(9));
    let answered = deliver(&ack, P, &mut p, ms(10));
    assert_eq!(degraded_flags(&answered), vec![true]);
    assert_eq!(
        replies(&answered),
        vec![(
            1,
            Ok(FrontResponse::Forwarded {
                tag: 5,
                taken: false
            })
        )]
    );
    // Back: the mode ends, on both copies.
    let up = DependencyChange::Available {
        unit: "back".to_string(),
    };
    let out = step(&mut p, ms(11), Input::Dependency(up));
    assert!(!p.degraded() && !p.state().degraded);
    deliver(&out, S, &mut s, ms(12));
    assert!(!s.degraded() && !s.state().degraded);
}

#[test]
fn the_line_behind_a_call_that_is_out_is_bounded_and_the_overflow_told_to_back_off() {
    let config = CopyConfig {
        in_flight: true,
        max_parked: 3,
        ..CopyConfig::default()
    };
    let (mut p, mut s) = pair(config);
    let out = begun_and_committed(&mut p, &mut s, 1, FrontStimulus::Forward { tag: 5 });
    assert_eq!(calls(&out).len(), 1, "the call is out");
    for seq in 2..=3 {
        let waits = step(
            &mut p,
            ms(8),
            stimulus(7, seq, FrontStimulus::Add { tag: seq }, seq),
        );
        assert!(replies(&waits).is_empty(), "stimulus {seq} waits in line");
    }
    let over = step(
        &mut p,
        ms(9),
        stimulus(7, 4, FrontStimulus::Add { tag: 4 }, 4),
    );
    assert_eq!(
        replies(&over),
        vec![(4, Err(Refusal::Overloaded { parked: 3 }))]
    );
}

#[test]
fn a_call_whose_outcome_is_unknown_is_sent_again_with_the_same_id_not_given_to_the_handler() {
    let (mut p, mut s) = pair(in_flight());
    let out = begun_and_committed(&mut p, &mut s, 3, FrontStimulus::Forward { tag: 5 });
    let (call, unit, first_id) = calls(&out)[0].clone();
    let unknown = CallReply {
        unit: unit.clone(),
        outcome: Err(understudy_runtime::CallFailure::DeadlineExceeded {
            unit,
            left: Duration::from_millis(1),
        }),
    };
    // Long after the stimulus's own budget ran out (the primary's lease renewed meanwhile).
    step(&mut p, ms(60_000), lease(Epoch(1), ms(60_000)));
    let again = step(
        &mut p,
        ms(60_000),
        Input::CallReply {
            call: understudy_runtime::CallToken(call),
            reply: unknown,
        },
    );
    let resent = calls(&again);
    assert_eq!(resent.len(), 1, "sent again");
    assert_eq!(resent[0].2, first_id, "with the same id");
    assert_ne!(resent[0].0, call, "as a new call");
    assert!(entries(&again).is_empty() && replies(&again).is_empty());
    let budget = again.iter().find_map(|c| match c {
        Command::Call { t_max, .. } => Some(*t_max),
        _ => None,
    });
    assert_eq!(budget, Some(Duration::from_secs(1)), "a whole budget again");
    assert_eq!(p.reconciled().calls_resent, 1);
}

/// The traces the calls in `cmds` carry.
fn call_traces(cmds: &Cmds) -> Vec<TraceId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Call { trace, .. } => Some(*trace),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_carries_the_trace_of_the_thread_its_stimulus_belongs_to_also_after_a_takeover() {
    let (mut p, mut s) = pair(in_flight());
    // Stimulus c7#3 is itself a call in the thread begun by c99#1.
    let thread = TraceId::root(id(99, 1));
    let input = Input::Stimulus(StimulusIn {
        id: id(7, 3),
        low_water: Seq(3),
        bound_at: Epoch(0),
        body: FrontStimulus::Forward { tag: 5 },
        trace: thread,
        reply: ReplyToken(1),
    });
    let begin = step(&mut p, ms(5), input);
    let ack = deliver(&begin, S, &mut s, ms(6));
    let first = deliver(&ack, P, &mut p, ms(7));
    assert_eq!(
        call_traces(&first),
        vec![thread],
        "the call carries the thread on"
    );
    // The primary is lost while its call is out: the standby knew the open stimulus's thread.
    let mut none = None;
    let after = take_over(&mut s, &mut none, Epoch(2), ms(20));
    assert_eq!(
        call_traces(&after),
        vec![thread],
        "served again after the takeover, its call carries the same thread"
    );
}
