//! Command-level tests of `GroupCore`: placement, leases and takeover, asserted on the
//! commands the manager emits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use understudy_runtime::group::{Phase, StandbyState, FRESH_STARTS_BEFORE_SERVING};
use understudy_runtime::{
    CopyId, Directive, Epoch, GroupCommand, GroupConfig, GroupCore, GroupInput, LeaseAsk,
    LeaseGrant, LeaseRenewal, NodeName, Placement, Report, StartAs, Time, UnitName,
};

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn node(i: usize) -> NodeName {
    NodeName::new(format!("n{i}"))
}

fn unit(name: &str) -> UnitName {
    UnitName::new(name)
}

fn config() -> GroupConfig {
    GroupConfig {
        lease: Duration::from_millis(300),
        retry: Duration::from_millis(50),
    }
}

fn group(nodes: usize) -> GroupCore {
    let mut g = GroupCore::new(config(), 0);
    for i in 0..nodes {
        g.step(ms(0), GroupInput::NodeUp { node: node(i) });
    }
    g.drain_commands();
    g
}

fn step(g: &mut GroupCore, now: Time, input: GroupInput) -> Vec<GroupCommand> {
    g.step(now, input);
    g.drain_commands()
}

/// Unit `u` loses `copy` at `now`.
fn copy_down(g: &mut GroupCore, now: Time, copy: CopyId, known_dead: bool) -> Vec<GroupCommand> {
    step(
        g,
        now,
        GroupInput::CopyDown {
            unit: unit("u"),
            copy,
            known_dead,
        },
    )
}

/// The directives in `cmds`, as (copy, directive).
fn directives(cmds: &[GroupCommand]) -> Vec<(CopyId, Directive)> {
    cmds.iter()
        .filter_map(|c| match c {
            GroupCommand::Direct {
                copy, directive, ..
            } => Some((*copy, directive.clone())),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Placed {
    primary: CopyId,
    primary_node: NodeName,
    standby: CopyId,
    standby_node: NodeName,
}

/// The report of unit `name`'s primary `p` (placed at epoch 1) that it handed over to its
/// standby.
fn handed_over(name: &str, p: &Placed) -> Report {
    Report::HandedOver {
        unit: unit(name),
        copy: p.primary,
        epoch: Epoch(1),
        standby: p.standby,
    }
}

/// Add `name`, start both copies, promote the primary (lease granted at `now`) and make the
/// standby ready.
fn serving(g: &mut GroupCore, name: &str, now: Time) -> Placed {
    let cmds = step(g, now, GroupInput::AddUnit { unit: unit(name) });
    let mut primary = None;
    let mut standby = None;
    for c in cmds {
        if let GroupCommand::Start {
            node,
            copy,
            start_as,
            ..
        } = c
        {
            match start_as {
                StartAs::Initial { .. } => primary = Some((copy, node)),
                StartAs::Standby { .. } => standby = Some((copy, node)),
            }
        }
    }
    let (p, pn) = primary.expect("a primary is started");
    let (s, sn) = standby.expect("a standby is started");
    let u = unit(name);
    step(
        g,
        now,
        GroupInput::CopyStarted {
            unit: u.clone(),
            copy: p,
        },
    );
    step(
        g,
        now,
        GroupInput::CopyStarted {
            unit: u.clone(),
            copy: s,
        },
    );
    let promoted = Report::Promoted {
        unit: u.clone(),
        copy: p,
        epoch: Epoch(1),
        requested_at: now,
    };
    let cmds = step(g, now, GroupInput::Report(promoted));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, GroupCommand::Bind { copy, epoch: Epoch(1), .. } if *copy == p)));
    let ready = Report::StandbyReady {
        unit: u,
        copy: s,
        epoch: Epoch(1),
    };
    step(g, now, GroupInput::Report(ready));
    Placed {
        primary: p,
        primary_node: pn,
        standby: s,
        standby_node: sn,
    }
}

#[test]
fn placement_never_puts_primary_and_standby_on_one_node_and_spreads_a_nodes_standbys() {
    let mut g = group(4);
    let placed: Vec<Placed> = (0..12)
        .map(|i| serving(&mut g, &format!("u{i}"), ms(0)))
        .collect();
    for p in &placed {
        assert_ne!(p.primary_node, p.standby_node, "{p:?}");
    }
    // The standbys of one node's primaries are spread evenly over the other nodes, so losing
    // that node spreads its takeovers.
    let mut by_primary_node: BTreeMap<NodeName, BTreeMap<NodeName, usize>> = BTreeMap::new();
    for p in &placed {
        *by_primary_node
            .entry(p.primary_node.clone())
            .or_default()
            .entry(p.standby_node.clone())
            .or_default() += 1;
    }
    for (pn, spread) in &by_primary_node {
        let counts: Vec<usize> = (0..4)
            .map(node)
            .filter(|n| n != pn)
            .map(|n| spread.get(&n).copied().unwrap_or(0))
            .collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "standbys of {pn}'s primaries: {spread:?}");
    }
    // After a node is lost, replacement standbys still avoid their primary's node.
    step(
        &mut g,
        ms(10),
        GroupInput::NodeDown {
            node: node(0),
            known_dead: true,
        },
    );
    for (_, rec) in g.units() {
        if let (Some(p), Some((s, _))) = (&rec.primary, &rec.standby) {
            assert_ne!(p.node, s.node);
            assert_ne!(s.node, node(0));
        }
    }
}

#[test]
fn a_primary_known_dead_is_replaced_at_once() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    let cmds = copy_down(&mut g, ms(5), p.primary, true);
    assert!(cmds.contains(&GroupCommand::Unbind {
        unit: unit("u"),
        epoch: Epoch(1)
    }));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, GroupCommand::Stop { copy, .. } if *copy == p.primary)));
    assert_eq!(
        directives(&cmds),
        vec![(
            p.standby,
            Directive::Promote {
                epoch: Epoch(2),
                lease: None
            }
        )]
    );
    let rec = g.unit(&unit("u")).unwrap();
    assert_eq!(rec.epoch, Epoch(2));
    assert_eq!(rec.primary.as_ref().map(|x| x.copy), Some(p.standby));
}

#[test]
fn a_standby_whose_nodes_clock_is_known_is_promoted_leased_and_bound_in_one_step() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    // The standby's node said it lives at 3 ms on its own clock (heard before the loss).
    step(
        &mut g,
        ms(4),
        GroupInput::NodeClocks {
            clocks: vec![(p.standby_node.clone(), ms(3))],
        },
    );
    let cmds = copy_down(&mut g, ms(5), p.primary, true);
    let grant = LeaseGrant {
        from: ms(3),
        duration: config().lease,
    };
    assert_eq!(
        directives(&cmds),
        vec![(
            p.standby,
            Directive::Promote {
                epoch: Epoch(2),
                lease: Some(grant)
            }
        )]
    );
    assert!(
        cmds.contains(&GroupCommand::Bind {
            unit: unit("u"),
            copy: p.standby,
            node: p.standby_node.clone(),
            epoch: Epoch(2)
        }),
        "bound in the same step: {cmds:?}"
    );
    let rec = g.unit(&unit("u")).unwrap();
    // The manager counts from the grant, later than the copy's start of count.
    assert_eq!(rec.lease_expires, ms(5).after(config().lease));
    // Resent unchanged until the copy confirms, then serving without a second binding.
    let again = step(&mut g, ms(5).after(config().retry), GroupInput::Tick);
    assert!(directives(&again).contains(&(
        p.standby,
        Directive::Promote {
            epoch: Epoch(2),
            lease: Some(grant)
        }
    )));
    let promoted = Report::Promoted {
        unit: unit("u"),
        copy: p.standby,
        epoch: Epoch(2),
        requested_at: ms(6),
    };
    let cmds = step(&mut g, ms(60), GroupInput::Report(promoted));
    assert!(!cmds.iter().any(|c| matches!(c, GroupCommand::Bind { .. })));
    assert_eq!(g.unit(&unit("u")).unwrap().phase, Phase::Serving);
}

#[test]
fn a_nodes_clock_is_forgotten_when_it_starts_again() {
    // Two nodes: the standby's replacement goes where the standby was.
    let mut g = group(2);
    let p = serving(&mut g, "u", ms(0));
    step(
        &mut g,
        ms(4),
        GroupInput::NodeClocks {
            clocks: vec![(p.standby_node.clone(), ms(3))],
        },
    );
    // The standby's node restarts: a new process, a new clock; its copies are gone.
    step(
        &mut g,
        ms(5),
        GroupInput::NodeUp {
            node: p.standby_node.clone(),
        },
    );
    let (s, _) = g
        .unit(&unit("u"))
        .unwrap()
        .standby
        .clone()
        .expect("a new standby");
    assert_eq!(s.node, p.standby_node);
    step(
        &mut g,
        ms(6),
        GroupInput::CopyStarted {
            unit: unit("u"),
            copy: s.copy,
        },
    );
    let ready = Report::StandbyReady {
        unit: unit("u"),
        copy: s.copy,
        epoch: Epoch(1),
    };
    step(&mut g, ms(7), GroupInput::Report(ready));
    let cmds = copy_down(&mut g, ms(8), p.primary, true);
    assert_eq!(
        directives(&cmds),
        vec![(
            s.copy,
            Directive::Promote {
                epoch: Epoch(2),
                lease: None
            }
        )],
        "no lease counted from the old process's clock"
    );
}

#[test]
fn a_primary_not_known_dead_is_replaced_only_after_its_lease_lapsed() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    // A renewal at 100 ms: the manager counts the lease until 400 ms.
    let renew = Report::LeaseRequest {
        unit: unit("u"),
        copy: p.primary,
        epoch: Epoch(1),
        requested_at: ms(99),
    };
    step(&mut g, ms(100), GroupInput::Report(renew));
    let cmds = copy_down(&mut g, ms(150), p.primary, false);
    assert!(directives(&cmds).is_empty(), "no promotion yet: {cmds:?}");
    assert!(matches!(
        g.unit(&unit("u")).unwrap().phase,
        Phase::AwaitingLeaseLapse { .. }
    ));
    // The suspected primary asks for a renewal: it is not granted.
    let again = Report::LeaseRequest {
        unit: unit("u"),
        copy: p.primary,
        epoch: Epoch(1),
        requested_at: ms(200),
    };
    let cmds = step(&mut g, ms(200), GroupInput::Report(again));
    assert!(directives(&cmds).is_empty(), "{cmds:?}");
    let cmds = step(&mut g, ms(399), GroupInput::Tick);
    assert!(directives(&cmds).is_empty());
    let cmds = step(&mut g, ms(400), GroupInput::Tick);
    assert_eq!(
        directives(&cmds),
        vec![(
            p.standby,
            Directive::Promote {
                epoch: Epoch(2),
                lease: None
            }
        )]
    );
}

#[test]
fn a_promoted_standby_is_leased_then_bound_and_gets_a_standby_on_another_node() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    copy_down(&mut g, ms(5), p.primary, true);
    let promoted = Report::Promoted {
        unit: unit("u"),
        copy: p.standby,
        epoch: Epoch(2),
        requested_at: ms(6),
    };
    let cmds = step(&mut g, ms(7), GroupInput::Report(promoted));
    let lease_at = cmds
        .iter()
        .position(|c| {
            matches!(
                c,
                GroupCommand::Direct {
                    directive: Directive::Lease {
                        epoch: Epoch(2),
                        ..
                    },
                    ..
                }
            )
        })
        .expect("a lease");
    let bind_at = cmds
        .iter()
        .position(|c| {
            matches!(
                c,
                GroupCommand::Bind {
                    epoch: Epoch(2),
                    ..
                }
            )
        })
        .expect("a binding");
    assert!(lease_at < bind_at, "leased before bound: {cmds:?}");
    let new_standby = cmds.iter().find_map(|c| match c {
        GroupCommand::Start {
            node,
            start_as: StartAs::Standby { epoch, primary },
            ..
        } => Some((node.clone(), *epoch, *primary)),
        _ => None,
    });
    let (n, e, of) = new_standby.expect("a new standby");
    assert_ne!(n, p.standby_node);
    assert_eq!((e, of), (Epoch(2), p.standby));
}

#[test]
fn a_stale_lease_request_from_a_replaced_primary_is_answered_with_fence() {
    // Regression: once the old primary was dropped from the unit's record the manager no
    // longer knew its node, so a zombie old primary was never fenced.
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    copy_down(&mut g, ms(5), p.primary, false);
    step(&mut g, ms(300), GroupInput::Tick);
    let promoted = Report::Promoted {
        unit: unit("u"),
        copy: p.standby,
        epoch: Epoch(2),
        requested_at: ms(301),
    };
    step(&mut g, ms(302), GroupInput::Report(promoted));
    let zombie = Report::LeaseRequest {
        unit: unit("u"),
        copy: p.primary,
        epoch: Epoch(1),
        requested_at: ms(900),
    };
    let cmds = step(&mut g, ms(900), GroupInput::Report(zombie));
    assert_eq!(
        cmds,
        vec![GroupCommand::Direct {
            node: p.primary_node.clone(),
            unit: unit("u"),
            copy: p.primary,
            directive: Directive::Fence { current: Epoch(2) },
        }]
    );
}

#[test]
fn losing_the_standby_while_the_lease_runs_out_declares_the_unit_unavailable() {
    // Regression: the unit stayed waiting for a lease lapse forever, with no copy left.
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    copy_down(&mut g, ms(5), p.primary, false);
    copy_down(&mut g, ms(6), p.standby, true);
    let cmds = step(&mut g, ms(300), GroupInput::Tick);
    assert!(cmds.contains(&GroupCommand::Unavailable {
        unit: unit("u"),
        epoch: Epoch(1)
    }));
    assert_eq!(g.unit(&unit("u")).unwrap().phase, Phase::Unavailable);
}

#[test]
fn an_unavailable_unit_restored_by_the_operator_starts_again_empty_at_a_new_epoch() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    // Restoring a unit that serves changes nothing.
    assert!(step(&mut g, ms(1), GroupInput::Restore { unit: unit("u") }).is_empty());
    copy_down(&mut g, ms(5), p.primary, true);
    copy_down(&mut g, ms(6), p.standby, true);
    assert_eq!(g.unit(&unit("u")).unwrap().phase, Phase::Unavailable);
    let cmds = step(&mut g, ms(10), GroupInput::Restore { unit: unit("u") });
    let started: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            GroupCommand::Start { copy, start_as, .. } => Some((*copy, *start_as)),
            _ => None,
        })
        .collect();
    let epoch = g.unit(&unit("u")).unwrap().epoch;
    assert!(epoch > Epoch(1), "a new epoch: {epoch:?}");
    assert!(
        started.contains(&(
            g.unit(&unit("u")).unwrap().primary.clone().unwrap().copy,
            StartAs::Initial { epoch }
        )),
        "an initial copy at the new epoch: {cmds:?}"
    );
    assert!(matches!(
        g.unit(&unit("u")).unwrap().phase,
        Phase::Promoting { .. }
    ));
}

#[test]
fn each_lease_restates_the_ready_standby_to_the_primary() {
    // Regression: an `AssignStandby { None }` that overtook the assignment of the current
    // standby left the primary without one for good.
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    let renew = Report::LeaseRequest {
        unit: unit("u"),
        copy: p.primary,
        epoch: Epoch(1),
        requested_at: ms(100),
    };
    let cmds = step(&mut g, ms(100), GroupInput::Report(renew));
    let d = directives(&cmds);
    assert!(matches!(d[0], (c, Directive::Lease { epoch: Epoch(1), .. }) if c == p.primary));
    assert_eq!(
        d[1],
        (
            p.primary,
            Directive::AssignStandby {
                epoch: Epoch(1),
                standby: Some(p.standby)
            }
        )
    );
}

#[test]
fn a_seeding_standby_is_asked_directly_whether_it_is_ready() {
    // Regression: a lost `StandbyReady` left the standby unpromotable for good.
    let mut g = group(3);
    let cmds = step(&mut g, ms(0), GroupInput::AddUnit { unit: unit("u") });
    let copies: Vec<CopyId> = cmds
        .iter()
        .filter_map(|c| match c {
            GroupCommand::Start { copy, .. } => Some(*copy),
            _ => None,
        })
        .collect();
    let (p, s) = (copies[0], copies[1]);
    step(
        &mut g,
        ms(1),
        GroupInput::CopyStarted {
            unit: unit("u"),
            copy: s,
        },
    );
    let promoted = Report::Promoted {
        unit: unit("u"),
        copy: p,
        epoch: Epoch(1),
        requested_at: ms(1),
    };
    step(&mut g, ms(2), GroupInput::Report(promoted));
    let cmds = step(&mut g, ms(60), GroupInput::Tick);
    let asked: BTreeSet<CopyId> = directives(&cmds)
        .into_iter()
        .filter(|(_, d)| {
            *d == Directive::AssignStandby {
                epoch: Epoch(1),
                standby: Some(s),
            }
        })
        .map(|(c, _)| c)
        .collect();
    assert_eq!(asked, [p, s].into_iter().collect());
    let ready = Report::StandbyReady {
        unit: unit("u"),
        copy: s,
        epoch: Epoch(1),
    };
    step(&mut g, ms(61), GroupInput::Report(ready));
    assert!(matches!(
        g.unit(&unit("u")).unwrap().standby,
        Some((_, StandbyState::Ready))
    ));
}

#[test]
fn a_switchover_asks_for_a_hand_over_and_promotes_the_standby_at_once_when_it_is_done() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    let cmds = step(&mut g, ms(10), GroupInput::Switchover { unit: unit("u") });
    assert_eq!(
        directives(&cmds),
        vec![(p.primary, Directive::HandOver { epoch: Epoch(1) })]
    );
    // Resent until answered.
    let again = step(&mut g, ms(70), GroupInput::Tick);
    assert!(directives(&again).contains(&(p.primary, Directive::HandOver { epoch: Epoch(1) })));
    // The hand-over is done well inside the lease: the standby is promoted without waiting.
    let done = handed_over("u", &p);
    let cmds = step(&mut g, ms(80), GroupInput::Report(done));
    assert!(directives(&cmds).contains(&(
        p.standby,
        Directive::Promote {
            epoch: Epoch(2),
            lease: None
        }
    )));
    assert!(cmds.iter().any(|c| matches!(
        c,
        GroupCommand::Stop { copy, .. } if *copy == p.primary
    )));
}

#[test]
fn draining_a_node_hands_over_its_primaries_moves_its_standbys_and_places_nothing_there() {
    let mut g = group(3);
    let a = serving(&mut g, "u", ms(0));
    // Drain the primary's node.
    let cmds = step(
        &mut g,
        ms(10),
        GroupInput::Drain {
            node: a.primary_node.clone(),
        },
    );
    assert!(g.is_draining(&a.primary_node));
    assert!(directives(&cmds).contains(&(a.primary, Directive::HandOver { epoch: Epoch(1) })));
    let done = handed_over("u", &a);
    step(&mut g, ms(20), GroupInput::Report(done));
    let promoted = Report::Promoted {
        unit: unit("u"),
        copy: a.standby,
        epoch: Epoch(2),
        requested_at: ms(21),
    };
    let cmds = step(&mut g, ms(22), GroupInput::Report(promoted));
    // The new standby goes to the third node, not back to the drained one.
    let placed: Vec<NodeName> = cmds
        .iter()
        .filter_map(|c| match c {
            GroupCommand::Start { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(placed.len(), 1);
    assert_ne!(placed[0], a.primary_node);
    assert_ne!(placed[0], a.standby_node);

    // A unit added while the node drains is placed elsewhere.
    let cmds = step(&mut g, ms(30), GroupInput::AddUnit { unit: unit("w") });
    for c in &cmds {
        if let GroupCommand::Start { node, .. } = c {
            assert_ne!(
                node, &a.primary_node,
                "nothing is placed on a draining node"
            );
        }
    }
}

#[test]
fn draining_a_standbys_node_replaces_the_standby_elsewhere() {
    let mut g = group(3);
    let a = serving(&mut g, "u", ms(0));
    let cmds = step(
        &mut g,
        ms(10),
        GroupInput::Drain {
            node: a.standby_node.clone(),
        },
    );
    assert!(cmds.iter().any(|c| matches!(
        c,
        GroupCommand::Stop { copy, .. } if *copy == a.standby
    )));
    let placed: Vec<NodeName> = cmds
        .iter()
        .filter_map(|c| match c {
            GroupCommand::Start { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(placed.len(), 1);
    assert_ne!(placed[0], a.standby_node);
    assert_ne!(placed[0], a.primary_node);
}

#[test]
fn a_nodes_renewal_renews_each_primary_that_asked_in_one_answer_and_counts_each_lease() {
    let mut g = group(3);
    let units: Vec<(String, Placed)> = (0..6)
        .map(|i| {
            let name = format!("u{i}");
            let placed = serving(&mut g, &name, ms(0));
            (name, placed)
        })
        .collect();
    // One node's primaries, all of which ask; another node's primary asks with them (it
    // cannot be renewed by this node's request) and is left out.
    let here = units[0].1.primary_node.clone();
    let mut asks: Vec<LeaseAsk> = units
        .iter()
        .filter(|(_, p)| p.primary_node == here)
        .map(|(name, p)| LeaseAsk {
            unit: unit(name),
            copy: p.primary,
            epoch: Epoch(1),
        })
        .collect();
    let mine = asks.len();
    let elsewhere = units
        .iter()
        .find(|(_, p)| p.primary_node != here)
        .map(|(name, p)| (name.clone(), p.clone()))
        .expect("a primary on another node");
    asks.push(LeaseAsk {
        unit: unit(&elsewhere.0),
        copy: elsewhere.1.primary,
        epoch: Epoch(1),
    });
    let cmds = step(
        &mut g,
        ms(100),
        GroupInput::RenewLeases {
            node: here.clone(),
            requested_at: ms(99),
            asks,
        },
    );
    assert_eq!(cmds.len(), 1, "one answer for the node: {cmds:?}");
    let GroupCommand::Leases {
        node: to,
        from,
        duration,
        renewals,
    } = &cmds[0]
    else {
        panic!("a Leases command: {cmds:?}");
    };
    assert_eq!((to, *from, *duration), (&here, ms(99), config().lease));
    assert_eq!(renewals.len(), mine, "every primary of the node that asked");
    for r in renewals {
        let (_, p) = units
            .iter()
            .find(|(name, _)| unit(name) == r.unit)
            .expect("a unit of the test");
        assert_eq!(
            r,
            &LeaseRenewal {
                unit: r.unit.clone(),
                copy: p.primary,
                epoch: Epoch(1),
                standby: Some(Placement {
                    copy: p.standby,
                    node: p.standby_node.clone(),
                }),
            },
            "the lease, with the ready standby restated"
        );
        assert_eq!(
            g.unit(&r.unit).unwrap().lease_expires,
            ms(100).after(config().lease),
            "the manager counts the lease from its grant"
        );
    }
}

#[test]
fn a_renewal_ask_of_a_replaced_primary_is_answered_with_fence() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    copy_down(&mut g, ms(5), p.primary, false);
    step(&mut g, ms(300), GroupInput::Tick);
    let promoted = Report::Promoted {
        unit: unit("u"),
        copy: p.standby,
        epoch: Epoch(2),
        requested_at: ms(301),
    };
    step(&mut g, ms(302), GroupInput::Report(promoted));
    let cmds = step(
        &mut g,
        ms(900),
        GroupInput::RenewLeases {
            node: p.primary_node.clone(),
            requested_at: ms(899),
            asks: vec![LeaseAsk {
                unit: unit("u"),
                copy: p.primary,
                epoch: Epoch(1),
            }],
        },
    );
    assert_eq!(
        cmds,
        vec![GroupCommand::Direct {
            node: p.primary_node.clone(),
            unit: unit("u"),
            copy: p.primary,
            directive: Directive::Fence { current: Epoch(2) },
        }],
        "fenced, and no lease"
    );
}

#[test]
fn a_suspected_primary_is_not_renewed_by_its_nodes_request() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    copy_down(&mut g, ms(5), p.primary, false);
    let before = g.unit(&unit("u")).unwrap().lease_expires;
    let cmds = step(
        &mut g,
        ms(10),
        GroupInput::RenewLeases {
            node: p.primary_node.clone(),
            requested_at: ms(9),
            asks: vec![LeaseAsk {
                unit: unit("u"),
                copy: p.primary,
                epoch: Epoch(1),
            }],
        },
    );
    assert!(cmds.is_empty(), "no renewal: {cmds:?}");
    assert_eq!(g.unit(&unit("u")).unwrap().lease_expires, before);
}

#[test]
fn a_unit_that_loses_its_copies_before_it_first_served_starts_again_empty_and_only_a_few_times() {
    // A node taken for lost during a cold start (a starved host) takes copies with it that
    // never served: nothing a caller saw is lost, so the unit starts again rather than being
    // declared unavailable for the operator to restore.
    let mut g = group(3);
    let mut cmds = step(&mut g, ms(0), GroupInput::AddUnit { unit: unit("u") });
    for round in 1..=FRESH_STARTS_BEFORE_SERVING + 1 {
        let rec = g.unit(&unit("u")).expect("the unit").clone();
        assert_eq!(rec.epoch, Epoch(round), "round {round}");
        assert!(!rec.served);
        let Placement {
            copy: initial,
            node: at,
        } = rec.primary.expect("an initial copy");
        assert!(
            cmds.contains(&GroupCommand::Start {
                node: at,
                unit: unit("u"),
                copy: initial,
                start_as: StartAs::Initial {
                    epoch: Epoch(round)
                },
            }),
            "round {round}: an initial copy at epoch {round}: {cmds:?}"
        );
        cmds = copy_down(&mut g, ms(round * 10), initial, true);
        let declared = cmds
            .iter()
            .any(|c| matches!(c, GroupCommand::Unavailable { .. }));
        if round <= FRESH_STARTS_BEFORE_SERVING {
            assert!(
                !declared,
                "round {round}: started again, not declared: {cmds:?}"
            );
        } else {
            assert!(declared, "past the fresh starts it is declared: {cmds:?}");
            assert_eq!(g.unit(&unit("u")).unwrap().phase, Phase::Unavailable);
        }
    }
}

#[test]
fn a_unit_that_served_and_lost_every_copy_is_declared_unavailable_not_started_empty() {
    let mut g = group(3);
    let p = serving(&mut g, "u", ms(0));
    assert!(g.unit(&unit("u")).unwrap().served);
    copy_down(&mut g, ms(5), p.standby, true);
    let cmds = copy_down(&mut g, ms(6), p.primary, true);
    assert!(cmds.contains(&GroupCommand::Unavailable {
        unit: unit("u"),
        epoch: Epoch(1)
    }));
    assert_eq!(g.unit(&unit("u")).unwrap().phase, Phase::Unavailable);
}

#[test]
fn a_quarantined_unit_keeps_its_copies_and_its_release_is_a_newer_name_update() {
    let mut g = group(3);
    let placed = serving(&mut g, "u", ms(10));
    let reason = "copy1 on n0 and copy2 on n1 both failed serving stimulus 7:1".to_string();
    let quarantine = GroupInput::Quarantine {
        unit: unit("u"),
        reason: reason.clone(),
    };
    let cmds = step(&mut g, ms(20), quarantine.clone());
    assert_eq!(
        cmds,
        vec![GroupCommand::Quarantine {
            unit: unit("u"),
            version: 1,
            reason: Some(reason.clone()),
        }],
        "only the names change: no copy is stopped"
    );
    assert_eq!(g.quarantined(&unit("u")), Some(reason.as_str()));
    let rec = g.unit(&unit("u")).expect("the unit");
    assert_eq!(rec.phase, Phase::Serving);
    assert_eq!(rec.primary.as_ref().map(|p| p.copy), Some(placed.primary));
    // A repeat of the decision (the global manager said it again) changes nothing.
    assert!(step(&mut g, ms(30), quarantine).is_empty());
    // An unknown unit is not quarantined.
    let unknown = GroupInput::Quarantine {
        unit: unit("nope"),
        reason: "x".into(),
    };
    assert!(step(&mut g, ms(30), unknown).is_empty());
    assert_eq!(g.quarantined(&unit("nope")), None);
    // Released: a newer version without a reason; released again: nothing.
    let release = GroupInput::Release { unit: unit("u") };
    assert_eq!(
        step(&mut g, ms(40), release.clone()),
        vec![GroupCommand::Quarantine {
            unit: unit("u"),
            version: 2,
            reason: None,
        }]
    );
    assert!(step(&mut g, ms(50), release).is_empty());
    assert_eq!(g.quarantined(&unit("u")), None);
}

#[test]
fn a_takeover_is_counted_for_each_standby_promoted_for_a_lost_primary_and_never_for_a_switchover() {
    let mut g = group(3);
    let takeovers = |g: &GroupCore, name: &str| g.unit(&unit(name)).unwrap().takeovers;
    let lose = |g: &mut GroupCore, now: Time, name: &str, copy: CopyId, known_dead: bool| {
        let input = GroupInput::CopyDown {
            unit: unit(name),
            copy,
            known_dead,
        };
        step(g, now, input);
    };
    let planned = serving(&mut g, "u", ms(0));
    let crashed = serving(&mut g, "w", ms(0));
    let hung = serving(&mut g, "v", ms(0));
    assert_eq!(
        [takeovers(&g, "u"), takeovers(&g, "w"), takeovers(&g, "v")],
        [0; 3]
    );

    // A planned switchover promotes the standby too, at a new epoch: not a takeover.
    step(&mut g, ms(10), GroupInput::Switchover { unit: unit("u") });
    let done = handed_over("u", &planned);
    step(&mut g, ms(20), GroupInput::Report(done));
    assert_eq!(g.unit(&unit("u")).unwrap().epoch, Epoch(2));
    assert_eq!(takeovers(&g, "u"), 0);

    // A primary known dead: promoted at once, one takeover.
    lose(&mut g, ms(30), "w", crashed.primary, true);
    assert_eq!(g.unit(&unit("w")).unwrap().epoch, Epoch(2));
    assert_eq!(takeovers(&g, "w"), 1);

    // A primary not known dead: counted when its lease lapsed and the standby is promoted,
    // not before.
    lose(&mut g, ms(40), "v", hung.primary, false);
    assert_eq!(takeovers(&g, "v"), 0, "awaiting the lease's lapse");
    step(&mut g, ms(300), GroupInput::Tick);
    assert_eq!(g.unit(&unit("v")).unwrap().epoch, Epoch(2));
    assert_eq!(takeovers(&g, "v"), 1);

    // The promoted copy of w lost before w has a ready standby again: no standby to promote,
    // w is unavailable; no takeover. Restored, w keeps its count.
    lose(&mut g, ms(50), "w", crashed.standby, true);
    assert_eq!(g.unit(&unit("w")).unwrap().phase, Phase::Unavailable);
    assert_eq!(takeovers(&g, "w"), 1);
    step(&mut g, ms(60), GroupInput::Restore { unit: unit("w") });
    assert_ne!(g.unit(&unit("w")).unwrap().phase, Phase::Unavailable);
    assert_eq!(takeovers(&g, "w"), 1);
}

#[test]
fn a_unit_record_written_before_takeovers_were_counted_reads_as_none_yet() {
    // A record as an older node replicated it: everything but `takeovers`.
    #[derive(serde::Serialize)]
    struct OlderRecord {
        epoch: Epoch,
        primary: Option<Placement>,
        standby: Option<(Placement, StandbyState)>,
        lease_expires: Time,
        phase: Phase,
        bound: bool,
        handover: Option<Time>,
        served: bool,
    }
    let older = OlderRecord {
        epoch: Epoch(4),
        primary: None,
        standby: None,
        lease_expires: ms(0),
        phase: Phase::Unavailable,
        bound: false,
        handover: None,
        served: true,
    };
    let bytes = rmp_serde::to_vec_named(&older).unwrap();
    let rec: understudy_runtime::group::UnitRecord = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!((rec.epoch, rec.takeovers), (Epoch(4), 0));
}

#[test]
fn an_excluded_node_takes_no_copies_even_after_it_starts_again_until_it_is_readmitted() {
    let mut g = group(3);
    let a = serving(&mut g, "u", ms(0));
    let starts = |cmds: &[GroupCommand]| -> Vec<NodeName> {
        cmds.iter()
            .filter_map(|c| match c {
                GroupCommand::Start { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect()
    };
    let third = (0..3)
        .map(node)
        .find(|n| *n != a.primary_node && *n != a.standby_node)
        .expect("a third node");
    // The standby's node is excluded: its standby moves to the third node, as in a drain.
    let cmds = step(
        &mut g,
        ms(10),
        GroupInput::Exclude {
            node: a.standby_node.clone(),
            reason: "lost 3 times".into(),
        },
    );
    assert_eq!(
        g.excluded().get(&a.standby_node).map(String::as_str),
        Some("lost 3 times")
    );
    assert_eq!(starts(&cmds), vec![third.clone()]);
    // It starts again (a new process): still excluded. The third node is lost: its standby
    // has nowhere to go but the excluded node, so it goes nowhere.
    step(
        &mut g,
        ms(20),
        GroupInput::NodeUp {
            node: a.standby_node.clone(),
        },
    );
    assert!(g.excluded().contains_key(&a.standby_node));
    let cmds = step(
        &mut g,
        ms(30),
        GroupInput::NodeDown {
            node: third.clone(),
            known_dead: true,
        },
    );
    assert_eq!(starts(&cmds), Vec::<NodeName>::new());
    let cmds = step(&mut g, ms(40), GroupInput::AddUnit { unit: unit("w") });
    assert!(
        !starts(&cmds).contains(&a.standby_node),
        "a unit added now is not placed on the excluded node"
    );
    // Readmitted, it takes the standbys that lacked a node.
    let cmds = step(
        &mut g,
        ms(50),
        GroupInput::Readmit {
            node: a.standby_node.clone(),
        },
    );
    assert!(g.excluded().is_empty());
    let placed = starts(&cmds);
    assert!(
        !placed.is_empty() && placed.iter().all(|n| *n == a.standby_node),
        "the readmitted node takes the missing standbys: {placed:?}"
    );
}
