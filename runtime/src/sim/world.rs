//! The event loop: a priority queue of events ordered by time and then by the order they
//! were scheduled, the copies, the manager, the name registry and the clients, and the
//! routing of every command the cores emit.

use super::checks::{self, Ledger, Violation};
use super::client::SimClient;
use super::network::{draw, Fate};
use super::rng::SimRng;
use super::trace::Trace;
use super::unit::{SetResponse, SetStimulus, SetUnit};
use super::{Breakage, SimConfig, SimFailure, SimReport};
use crate::copy::{Command, CopyConfig, CopyCore, Input, Role};
use crate::group::{GroupCommand, GroupCore, GroupInput, LeaseAsk, Phase, StartAs};
use crate::ids::{CopyId, Epoch, NodeName, UnitName};
use crate::message::Entry;
use crate::message::{Directive, PeerMsg, Refusal, Report};
use crate::replication::{Durability, Flush, Strategy};
use crate::time::Time;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

/// Every this many manager ticks, each node that reaches the manager sends it the copies it
/// runs (as a node's heartbeat carries them).
const INVENTORY_TICKS: u32 = 5;

/// Most inputs a hung copy's mailbox keeps; later ones are lost.
const MAILBOX_LIMIT: usize = 10_000;

/// One copy as the simulation holds it.
#[derive(Debug)]
pub(crate) struct SimCopy {
    pub(crate) core: CopyCore<SetUnit>,
    pub(crate) unit: usize,
    pub(crate) node: usize,
    /// Set while the copy is hung: inputs wait here and ticks are skipped.
    pub(crate) hang: Option<Hang>,
    /// How many of its unit's acknowledged tags are known to be in its state (while primary).
    pub(crate) verified: usize,
}

#[derive(Debug)]
pub(crate) struct Hang {
    pub(crate) id: u64,
    pub(crate) mailbox: VecDeque<Input<SetUnit>>,
    /// Whether a `Stop` already failed on it (it will resume as a zombie).
    pub(crate) stop_failed: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct SimNode {
    pub(crate) alive: bool,
    pub(crate) incarnation: u64,
    /// Set while the node is cut off from everybody.
    pub(crate) cut: Option<u64>,
    /// Whether the manager was told the node is down (and not yet that it is back).
    pub(crate) declared_down: bool,
}

/// Who is at either end of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Node(usize),
    Manager,
    Client,
}

/// A binding in the name registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) copy: CopyId,
    pub(crate) epoch: Epoch,
}

/// What travels over the network.
#[derive(Clone, Debug)]
pub(crate) enum Packet {
    /// A stimulus, peer message or directive for a copy.
    Input { to: CopyId, input: Input<SetUnit> },
    /// A copy's report to the manager.
    Report(Report),
    /// An answer or refusal for a client.
    Reply {
        token: u64,
        outcome: Result<SetResponse, Refusal>,
        /// The answering copy's epoch.
        epoch: Epoch,
        /// How far the answer's effects had reached the standby.
        durability: Durability,
    },
}

/// Who a reply token belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenOwner {
    pub(crate) client: usize,
    pub(crate) unit: usize,
    pub(crate) seq: u64,
}

#[derive(Clone, Debug)]
pub(crate) enum Event {
    CopyTick(CopyId),
    ManagerTick,
    Deliver {
        from: Endpoint,
        packet: Packet,
    },
    /// A supervisor's notification, delivered reliably.
    Notify(GroupInput),
    /// A `Start` or `Stop` for a node's local manager.
    NodeCommand {
        incarnation: u64,
        command: GroupCommand,
    },
    /// A `Bind` or `Unbind` reaching the registry.
    Registry(GroupCommand),
    ClientWake(usize),
    /// A client with answers the standby may lack confirms or replays them.
    ClientConfirm(usize),
    ClientRetry {
        client: usize,
        unit: usize,
        seq: u64,
        attempt: u32,
    },
    Fault,
    Resume {
        copy: CopyId,
        hang: u64,
    },
    DetectHang {
        copy: CopyId,
        hang: u64,
    },
    Heal {
        node: usize,
        cut: u64,
    },
    DetectCut {
        node: usize,
        cut: u64,
    },
    Restart {
        node: usize,
        incarnation: u64,
    },
    /// A node's heartbeats reach the manager again after a cut: if the manager counts it
    /// down, it serves as capacity again (its copies were replaced).
    HeardAgain {
        node: usize,
    },
}

impl Event {
    fn code(&self) -> u64 {
        match self {
            Event::CopyTick(c) => 1 ^ (c.0 << 8),
            Event::ManagerTick => 2,
            Event::Deliver { packet, .. } => match packet {
                Packet::Input { to, .. } => 3 ^ (to.0 << 8),
                Packet::Report(_) => 4,
                Packet::Reply { token, .. } => 5 ^ (token << 8),
            },
            Event::Notify(_) => 6,
            Event::NodeCommand { .. } => 7,
            Event::Registry(_) => 8,
            Event::ClientWake(c) => 9 ^ ((*c as u64) << 8),
            Event::ClientRetry { seq, .. } => 10 ^ (seq << 8),
            Event::Fault => 11,
            Event::Resume { copy, .. } => 12 ^ (copy.0 << 8),
            Event::DetectHang { copy, .. } => 13 ^ (copy.0 << 8),
            Event::Heal { node, .. } => 14 ^ ((*node as u64) << 8),
            Event::DetectCut { node, .. } => 15 ^ ((*node as u64) << 8),
            Event::Restart { node, .. } => 16 ^ ((*node as u64) << 8),
            Event::ClientConfirm(c) => 17 ^ ((*c as u64) << 8),
            Event::HeardAgain { node } => 17 ^ ((*node as u64) << 8),
        }
    }
}

#[derive(Debug)]
struct Scheduled {
    at: Time,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// The whole simulated group.
#[derive(Debug)]
pub(crate) struct World<'a> {
    pub(crate) seed: u64,
    pub(crate) config: &'a SimConfig,
    pub(crate) copy_config: CopyConfig,
    pub(crate) rng: SimRng,
    pub(crate) now: Time,
    pub(crate) step: u64,
    queue: BinaryHeap<Scheduled>,
    scheduled: u64,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) node_names: Vec<NodeName>,
    pub(crate) unit_names: Vec<UnitName>,
    pub(crate) copies: BTreeMap<CopyId, SimCopy>,
    pub(crate) group: GroupCore,
    pub(crate) registry: Vec<Option<Binding>>,
    pub(crate) unavailable: Vec<bool>,
    pub(crate) clients: Vec<SimClient>,
    pub(crate) tokens: BTreeMap<u64, TokenOwner>,
    pub(crate) next_token: u64,
    pub(crate) ledger: Ledger,
    pub(crate) report: SimReport,
    pub(crate) trace: Trace,
    /// When the last fault is repaired (hang over, partition healed, node restarted).
    pub(crate) faults_over: Time,
    pub(crate) faults_pending: usize,
    pub(crate) next_fault_id: u64,
    /// While the group manager moves: until when nothing reaches it.
    pub(crate) manager_away_until: Option<Time>,
    /// Manager ticks since the nodes last sent their inventories.
    pub(crate) ticks_since_inventory: u32,
}

impl<'a> World<'a> {
    pub(crate) fn new(seed: u64, config: &'a SimConfig) -> Self {
        let mut rng = SimRng::new(seed);
        let mut copy_config = config.copy;
        if config.vary_tuning {
            copy_config.window = rng.between(1, 3) as usize;
            copy_config.max_entries_per_part = rng.between(1, 3) as usize;
            if let Strategy::Trailing(_) = copy_config.strategy {
                copy_config.strategy = Strategy::Trailing(if rng.chance(0.5) {
                    Flush::EachStimulus
                } else {
                    Flush::Batched {
                        entries: rng.between(1, 4) as usize,
                        delay: Duration::from_millis(rng.between(0, 30)),
                    }
                });
            }
        }
        let nodes = config.nodes.max(1);
        let units = config.units.max(1);
        World {
            seed,
            config,
            copy_config,
            rng,
            now: Time::ZERO,
            step: 0,
            queue: BinaryHeap::new(),
            scheduled: 0,
            nodes: vec![
                SimNode {
                    alive: true,
                    incarnation: 0,
                    cut: None,
                    declared_down: false,
                };
                nodes
            ],
            node_names: (0..nodes).map(|i| NodeName::new(format!("n{i}"))).collect(),
            unit_names: (0..units).map(|i| UnitName::new(format!("u{i}"))).collect(),
            copies: BTreeMap::new(),
            group: GroupCore::new(config.group, 0),
            registry: vec![None; units],
            unavailable: vec![false; units],
            clients: Vec::new(),
            tokens: BTreeMap::new(),
            next_token: 0,
            ledger: Ledger::new(units),
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            trace: Trace::new(config.trace),
            faults_over: Time::ZERO,
            faults_pending: 0,
            next_fault_id: 0,
            manager_away_until: None,
            ticks_since_inventory: 0,
        }
    }

    // ---- scheduling ------------------------------------------------------------------

    pub(crate) fn schedule(&mut self, after: Duration, event: Event) {
        self.scheduled += 1;
        self.queue.push(Scheduled {
            at: self.now.after(after),
            order: self.scheduled,
            event,
        });
    }

    pub(crate) fn note(&mut self, text: impl FnOnce() -> String) {
        let (step, now) = (self.step, self.now);
        self.trace.line(step, now, text);
    }

    fn fail(&self, v: Violation) -> SimFailure {
        SimFailure {
            seed: self.seed,
            breakage: self.config.breakage,
            invariant: v.invariant,
            step: self.step,
            at: self.now,
            detail: v.detail,
            trace_tail: self.trace.tail(),
        }
    }

    // ---- the loop --------------------------------------------------------------------

    pub(crate) fn run(mut self) -> Result<SimReport, SimFailure> {
        self.start().map_err(|v| self.fail(v))?;
        let give_up = Time::ZERO.after(self.config.give_up_after);
        while let Some(next) = self.queue.pop() {
            if self.finished(next.at) {
                break;
            }
            if next.at > give_up {
                let v = Violation {
                    invariant: checks::Invariant::ClientsRedirectedNotFailed,
                    detail: format!(
                        "the run did not settle within {:?} of simulated time",
                        self.config.give_up_after
                    ),
                };
                return Err(self.fail(v));
            }
            self.now = next.at;
            self.step += 1;
            self.trace.mix(self.now.as_micros());
            self.trace.mix(next.event.code());
            if let Err(v) = self.handle(next.event) {
                return Err(self.fail(v));
            }
        }
        self.finish().map_err(|v| self.fail(v))?;
        self.report.steps = self.step;
        self.report.end = self.now;
        self.report.runs = 1;
        self.report.runs_with_takeover = u64::from(self.report.takeovers > 0);
        self.report.runs_with_fault = u64::from(self.report.faults > 0);
        self.report.digest = self.trace.digest();
        Ok(self.report)
    }

    fn finished(&self, next: Time) -> bool {
        self.faults_pending == 0
            && self.clients.iter().all(SimClient::done)
            && next >= self.faults_over.after(self.config.settle)
            && next >= self.clients_done_at().after(self.config.settle)
    }

    fn clients_done_at(&self) -> Time {
        self.clients
            .iter()
            .map(|c| c.done_at)
            .max()
            .unwrap_or(Time::ZERO)
    }

    fn start(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let node = self.node_names[i].clone();
            self.step_manager(GroupInput::NodeUp { node })?;
        }
        for u in 0..self.unit_names.len() {
            let unit = self.unit_names[u].clone();
            self.step_manager(GroupInput::AddUnit { unit })?;
        }
        let tick = self.config.tick;
        self.schedule(tick, Event::ManagerTick);
        self.start_clients();
        self.plan_faults();
        Ok(())
    }

    /// The end of the run: the final checks, after faults stopped and everything settled.
    fn finish(&mut self) -> Result<(), Violation> {
        for u in 0..self.unit_names.len() {
            let Some(rec) = self.group.unit(&self.unit_names[u]) else {
                continue;
            };
            self.report.takeovers += rec.epoch.0.saturating_sub(1);
            if rec.phase == Phase::Unavailable {
                self.report.units_unavailable += 1;
                continue;
            }
            let Some(p) = rec.primary.clone() else {
                return Err(Violation {
                    invariant: checks::Invariant::ClientsRedirectedNotFailed,
                    detail: format!(
                        "unit {u} ended with no primary and was not declared unavailable \
                         (phase {:?})",
                        rec.phase
                    ),
                });
            };
            match self.copies.get(&p.copy) {
                Some(copy) => {
                    checks::final_primary_holds_acknowledged(
                        &self.ledger,
                        u,
                        p.copy,
                        copy.core.state(),
                    )?;
                    checks::unit_recovered(u, rec, p.copy, &copy.core, self.now)?;
                }
                None if self.ledger.acked_count(u) > 0 => {
                    return Err(Violation {
                        invariant: checks::Invariant::NoAcknowledgedStimulusLost,
                        detail: format!(
                            "unit {u}: the manager's final primary {} no longer exists",
                            p.copy
                        ),
                    });
                }
                None => {}
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::CopyTick(id) => {
                let Some(c) = self.copies.get(&id) else {
                    return Ok(());
                };
                let hung = c.hang.is_some();
                let tick = self.config.tick;
                self.schedule(tick, Event::CopyTick(id));
                if !hung {
                    self.step_copy(id, Input::Tick)?;
                }
                Ok(())
            }
            Event::ManagerTick => {
                let tick = self.config.tick;
                self.schedule(tick, Event::ManagerTick);
                self.ticks_since_inventory += 1;
                if self.ticks_since_inventory >= INVENTORY_TICKS {
                    self.ticks_since_inventory = 0;
                    self.send_inventories()?;
                }
                self.step_manager(GroupInput::Tick)
            }
            Event::Deliver { from, packet } => self.deliver(from, packet),
            Event::Notify(input) => {
                self.note(|| format!("manager ⇐ supervisor: {input:?}"));
                self.step_manager(input)
            }
            Event::NodeCommand {
                incarnation,
                command,
            } => self.node_command(incarnation, command),
            Event::Registry(command) => {
                self.registry_update(command);
                Ok(())
            }
            Event::ClientWake(c) => self.client_wake(c),
            Event::ClientConfirm(c) => self.client_confirm(c),
            Event::ClientRetry {
                client,
                unit,
                seq,
                attempt,
            } => self.client_retry(client, unit, seq, attempt),
            Event::Fault => self.inject_fault(),
            Event::Resume { copy, hang } => self.resume(copy, hang),
            Event::DetectHang { copy, hang } => self.detect_hang(copy, hang),
            Event::Heal { node, cut } => self.heal(node, cut),
            Event::HeardAgain { node } => {
                let name = self.node_names[node].clone();
                if self.group.node_up(&name) {
                    self.note(|| format!("{name} heard again; the manager counts it up"));
                    return Ok(());
                }
                self.note(|| format!("manager ⇐ {name} heard again"));
                self.step_manager(GroupInput::NodeUp { node: name })
            }
            Event::DetectCut { node, cut } => self.detect_cut(node, cut),
            Event::Restart { node, incarnation } => self.restart(node, incarnation),
        }
    }

    // ---- the network -----------------------------------------------------------------

    fn reachable(&self, a: Endpoint, b: Endpoint) -> bool {
        let cut = |e: Endpoint| match e {
            Endpoint::Node(n) => self.nodes.get(n).is_some_and(|s| s.cut.is_some()),
            Endpoint::Manager | Endpoint::Client => false,
        };
        if let (Endpoint::Node(x), Endpoint::Node(y)) = (a, b) {
            if x == y {
                return true;
            }
        }
        !cut(a) && !cut(b)
    }

    fn destination(&self, packet: &Packet) -> Option<Endpoint> {
        match packet {
            Packet::Input { to, .. } => self.copies.get(to).map(|c| Endpoint::Node(c.node)),
            Packet::Report(_) => Some(Endpoint::Manager),
            Packet::Reply { .. } => Some(Endpoint::Client),
        }
    }

    /// Put a message on the network: it may be lost, delayed, reordered or duplicated, and is
    /// lost if either end is cut off now or when it arrives.
    pub(crate) fn send(&mut self, from: Endpoint, packet: Packet) {
        self.report.messages += 1;
        let Some(to) = self.destination(&packet) else {
            self.report.dropped += 1;
            return;
        };
        if !self.reachable(from, to) {
            self.report.dropped += 1;
            self.note(|| format!("network cut: lost {}", describe_packet(&packet)));
            return;
        }
        match self.config.network.fate(&mut self.rng) {
            Fate::Dropped => {
                self.report.dropped += 1;
                self.note(|| format!("network dropped {}", describe_packet(&packet)));
            }
            Fate::Delivered { delay, again } => {
                if let Some(again) = again {
                    self.report.duplicated += 1;
                    self.schedule(
                        again,
                        Event::Deliver {
                            from,
                            packet: packet.clone(),
                        },
                    );
                }
                self.schedule(delay, Event::Deliver { from, packet });
            }
        }
    }

    fn deliver(&mut self, from: Endpoint, packet: Packet) -> Result<(), Violation> {
        let Some(to) = self.destination(&packet) else {
            return Ok(());
        };
        if !self.reachable(from, to) {
            self.report.dropped += 1;
            self.note(|| format!("network cut: lost {}", describe_packet(&packet)));
            return Ok(());
        }
        match packet {
            Packet::Input { to, input } => {
                let input = self.tamper_with_input(to, input);
                self.note(|| format!("{to} ⇐ {}", describe_input(&input)));
                self.input_copy(to, input)
            }
            Packet::Report(report) => {
                let report = self.tamper_with_report(report);
                self.note(|| format!("manager ⇐ {report:?}"));
                let input = self.as_node_renewal(report);
                self.step_manager(input)
            }
            Packet::Reply {
                token,
                outcome,
                epoch,
                durability,
            } => self.client_reply(token, outcome, epoch, durability),
        }
    }

    /// Both ways a lease is asked for are exercised: the lease requests of odd copies reach
    /// the manager as their node's renewal (as a local manager gathers them, here one ask per
    /// request), those of even copies as the copy's own report.
    fn as_node_renewal(&self, report: Report) -> GroupInput {
        let Report::LeaseRequest {
            unit,
            copy,
            epoch,
            requested_at,
        } = report
        else {
            return GroupInput::Report(report);
        };
        let node = self
            .copies
            .get(&copy)
            .filter(|_| copy.0 % 2 == 1)
            .map(|c| self.node_names[c.node].clone());
        match node {
            Some(node) => GroupInput::RenewLeases {
                node,
                requested_at,
                asks: vec![LeaseAsk { unit, copy, epoch }],
            },
            None => GroupInput::Report(Report::LeaseRequest {
                unit,
                copy,
                epoch,
                requested_at,
            }),
        }
    }

    /// The deliberately broken variants that live in the network.
    fn tamper_with_input(&self, to: CopyId, input: Input<SetUnit>) -> Input<SetUnit> {
        let Some(copy) = self.copies.get(&to) else {
            return input;
        };
        let current = copy.core.epoch();
        match (self.config.breakage, input) {
            (
                Some(Breakage::LeaseOverrun),
                Input::Directive(Directive::Lease {
                    epoch,
                    requested_at,
                    duration,
                }),
            ) => Input::Directive(Directive::Lease {
                epoch,
                requested_at,
                duration: duration * 10,
            }),
            (Some(Breakage::ForgeEpoch), Input::Directive(d)) => {
                Input::Directive(forge_directive(d, current))
            }
            (Some(Breakage::ForgeEpoch), Input::Peer(msg)) => Input::Peer(forge_peer(msg, current)),
            (_, input) => input,
        }
    }

    fn tamper_with_report(&self, report: Report) -> Report {
        if self.config.breakage != Some(Breakage::ForgeEpoch) {
            return report;
        }
        let current = |unit: &UnitName, e: Epoch| {
            self.group
                .unit(unit)
                .map_or(e, |rec| if e < rec.epoch { rec.epoch } else { e })
        };
        let mut report = report;
        match &mut report {
            Report::LeaseRequest { unit, epoch, .. }
            | Report::Promoted { unit, epoch, .. }
            | Report::StandbyReady { unit, epoch, .. }
            | Report::CannotPromote { unit, epoch, .. } => *epoch = current(unit, *epoch),
            _ => {}
        }
        report
    }

    // ---- copies ----------------------------------------------------------------------

    /// An input reaches a copy: a hung copy keeps it for later.
    pub(crate) fn input_copy(
        &mut self,
        id: CopyId,
        input: Input<SetUnit>,
    ) -> Result<(), Violation> {
        let Some(copy) = self.copies.get_mut(&id) else {
            return Ok(());
        };
        if let Some(hang) = copy.hang.as_mut() {
            if hang.mailbox.len() < MAILBOX_LIMIT {
                hang.mailbox.push_back(input);
            }
            return Ok(());
        }
        self.step_copy(id, input)
    }

    /// Step one copy, check the invariants it may have touched, and carry out its commands.
    pub(crate) fn step_copy(&mut self, id: CopyId, input: Input<SetUnit>) -> Result<(), Violation> {
        let now = self.now;
        let Some(copy) = self.copies.get_mut(&id) else {
            return Ok(());
        };
        let role_before = copy.core.role();
        let served_again_before = copy.core.reconciled().served_again;
        copy.core.step(now, input);
        let commands = copy.core.drain_commands();
        let (unit, node, epoch) = (copy.unit, copy.node, copy.core.epoch());
        let role_after = copy.core.role();
        // Open stimuli a promotion queued to be served again (it may serve them in the same
        // step when the directive brings the lease).
        self.report.open_at_takeover += copy.core.reconciled().served_again - served_again_before;
        let mut newly_acked = false;
        for command in &commands {
            match command {
                Command::ToPeer {
                    msg:
                        PeerMsg::Replicate {
                            from, seq, part: 0, ..
                        },
                    ..
                }
                | Command::ToPeer {
                    msg: PeerMsg::Snapshot { from, seq, .. },
                    ..
                } => self.ledger.seal(*from, *seq, copy.core.state()),
                Command::Reply {
                    outcome: Ok(response),
                    durability,
                    ..
                } => {
                    checks::one_responder_per_epoch(&mut self.ledger, unit, epoch, id)?;
                    // A trailing answer the standby may lack counts as acknowledged once its
                    // caller learns the standby has it (the client tells the ledger).
                    if let (SetResponse::Added { tag }, true) = (response, durability.durable()) {
                        newly_acked |= self.ledger.acknowledge(unit, *tag, now);
                    }
                }
                _ => {}
            }
        }
        if role_before != role_after {
            self.note(|| format!("{id} role {role_before:?} → {role_after:?} at epoch {epoch}"));
        }
        self.check_after_copy_step(id, unit, newly_acked)?;
        for command in commands {
            self.route_copy_command(id, node, command);
        }
        Ok(())
    }

    fn check_after_copy_step(
        &mut self,
        id: CopyId,
        unit: usize,
        newly_acked: bool,
    ) -> Result<(), Violation> {
        let now = self.now;
        checks::one_primary_per_epoch(&mut self.ledger, &self.copies, id, now)?;
        if let Some(copy) = self.copies.get(&id) {
            checks::no_stimulus_takes_effect_twice(id, copy)?;
            checks::standby_applies_only_whole_batches(&self.ledger, id, copy)?;
        }
        if let Some(copy) = self.copies.get_mut(&id) {
            checks::no_acknowledged_stimulus_lost(&self.ledger, id, copy, now)?;
        }
        if newly_acked {
            for (other_id, other) in self.copies.iter_mut() {
                if other.unit == unit && *other_id != id {
                    checks::no_acknowledged_stimulus_lost(&self.ledger, *other_id, other, now)?;
                }
            }
        }
        Ok(())
    }

    fn route_copy_command(&mut self, id: CopyId, node: usize, command: Command<SetUnit>) {
        let from = Endpoint::Node(node);
        match command {
            Command::Reply {
                to,
                outcome,
                epoch,
                durability,
                ..
            } => {
                self.note(|| {
                    format!(
                        "{id} replies to token {}: {} (batch {}, standby has {})",
                        to.0,
                        describe_outcome(&outcome),
                        durability.batch.0,
                        durability.standby_has.0
                    )
                });
                self.send(
                    from,
                    Packet::Reply {
                        token: to.0,
                        outcome,
                        epoch,
                        durability,
                    },
                );
            }
            Command::ToPeer { to, msg } => {
                let input = Input::Peer(msg);
                self.send(from, Packet::Input { to, input });
            }
            Command::ToManager(report) => self.send(from, Packet::Report(report)),
            // The simulated unit never calls another unit.
            Command::Call { .. } => {}
        }
    }

    // ---- the manager, the nodes' local managers, the registry --------------------------

    pub(crate) fn step_manager(&mut self, input: GroupInput) -> Result<(), Violation> {
        let now = self.now;
        if let Some(until) = self.manager_away_until {
            if now < until {
                self.note(|| format!("manager away: lost {input:?}"));
                return Ok(());
            }
            self.manager_away_until = None;
        }
        let resumed = input == GroupInput::Resume;
        self.group.step(now, input);
        let commands = self.group.drain_commands();
        checks::primary_and_standby_never_share_a_node(&self.group)?;
        for command in commands {
            self.route_group_command(command);
        }
        if resumed {
            self.watch_after_resume();
        }
        Ok(())
    }

    /// A new manager watches every node's heartbeats from its start: a node it counts as up
    /// that is down or cut off is noticed after a detection delay (not known dead: the new
    /// manager cannot tell a crash from a cut).
    fn watch_after_resume(&mut self) {
        for n in 0..self.nodes.len() {
            let silent = !self.nodes[n].alive || self.nodes[n].cut.is_some();
            let name = self.node_names[n].clone();
            if silent && self.group.node_up(&name) {
                let delay = draw(&mut self.rng, self.config.faults.detect);
                self.note(|| format!("the new manager will miss {name}'s heartbeats"));
                self.schedule(
                    delay,
                    Event::Notify(GroupInput::NodeDown {
                        node: name,
                        known_dead: false,
                    }),
                );
            }
        }
    }

    /// Every node that is up and not cut off tells the manager which copies it runs (hung
    /// ones included: their actors have not ended). Only an inventory that changes the
    /// manager's record is stepped, as the real manager proposes only those.
    fn send_inventories(&mut self) -> Result<(), Violation> {
        // Each heartbeat carries its node's clock (one clock for all in the simulation).
        let now = self.now;
        let clocks: Vec<(NodeName, Time)> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].alive && self.nodes[*n].cut.is_none())
            .map(|n| (self.node_names[n].clone(), now))
            .collect();
        if !clocks.is_empty() {
            self.step_manager(GroupInput::NodeClocks { clocks })?;
        }
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            if !node.alive || node.cut.is_some() {
                continue;
            }
            let running: Vec<(UnitName, CopyId)> = self
                .copies
                .iter()
                .filter(|(_, c)| c.node == n)
                .map(|(id, c)| (self.unit_names[c.unit].clone(), *id))
                .collect();
            let name = self.node_names[n].clone();
            if !self.group.node_up(&name) {
                // A node counted down that is heard again: it serves as capacity again (its
                // `NodeUp` notification may have been lost while the manager moved).
                self.note(|| format!("manager ⇐ heartbeat of {name}, counted down"));
                self.step_manager(GroupInput::NodeUp { node: name })?;
                continue;
            }
            if self.group.inventory_diff(&name, &running).is_empty() {
                continue;
            }
            self.note(|| format!("manager ⇐ inventory of {name}: {running:?}"));
            self.step_manager(GroupInput::NodeInventory {
                node: name,
                running,
            })?;
        }
        Ok(())
    }

    pub(crate) fn node_index(&self, name: &NodeName) -> Option<usize> {
        self.node_names.iter().position(|n| n == name)
    }

    pub(crate) fn unit_index(&self, name: &UnitName) -> Option<usize> {
        self.unit_names.iter().position(|n| n == name)
    }

    pub(crate) fn notify_delay(&mut self) -> Duration {
        draw(&mut self.rng, self.config.faults.notify)
    }

    fn route_group_command(&mut self, command: GroupCommand) {
        self.note(|| format!("manager: {command:?}"));
        match command {
            GroupCommand::Start { ref node, .. } | GroupCommand::Stop { ref node, .. } => {
                let Some(n) = self.node_index(node) else {
                    return;
                };
                let incarnation = self.nodes[n].incarnation;
                let delay = self.notify_delay();
                self.schedule(
                    delay,
                    Event::NodeCommand {
                        incarnation,
                        command,
                    },
                );
            }
            GroupCommand::Direct {
                copy, directive, ..
            } => {
                let input = Input::Directive(directive);
                self.send(Endpoint::Manager, Packet::Input { to: copy, input });
            }
            GroupCommand::Leases {
                from,
                duration,
                renewals,
                ..
            } => {
                for r in renewals {
                    let lease = Directive::Lease {
                        epoch: r.epoch,
                        requested_at: from,
                        duration,
                    };
                    let input = Input::Directive(lease);
                    self.send(Endpoint::Manager, Packet::Input { to: r.copy, input });
                    if let Some(s) = r.standby {
                        let restate = Directive::AssignStandby {
                            epoch: r.epoch,
                            standby: Some(s.copy),
                        };
                        let input = Input::Directive(restate);
                        self.send(Endpoint::Manager, Packet::Input { to: r.copy, input });
                    }
                }
            }
            GroupCommand::Bind { .. } | GroupCommand::Unbind { .. } => {
                let delay = self.notify_delay();
                self.schedule(delay, Event::Registry(command));
            }
            GroupCommand::Unavailable { unit, .. } => {
                if let Some(u) = self.unit_index(&unit) {
                    self.unavailable[u] = true;
                }
            }
            // The simulation's faults never make the global manager quarantine a unit.
            GroupCommand::Quarantine { .. } => {}
        }
    }

    /// A node's local manager carries out a `Start` or `Stop`. A `Start` waits while the node
    /// is cut off (the local manager retries); a `Stop` sent to a cut-off node is lost, and a
    /// `Stop` for a hung copy may fail to take effect.
    fn node_command(&mut self, incarnation: u64, command: GroupCommand) -> Result<(), Violation> {
        match command {
            GroupCommand::Start {
                node,
                unit,
                copy,
                start_as,
            } => {
                let Some(n) = self.node_index(&node) else {
                    return Ok(());
                };
                let state = &self.nodes[n];
                if !state.alive || state.incarnation != incarnation {
                    self.note(|| format!("{node} is down: start of {copy} lost"));
                    return Ok(());
                }
                if state.cut.is_some() {
                    let retry = self.config.tick;
                    self.schedule(
                        retry,
                        Event::NodeCommand {
                            incarnation,
                            command: GroupCommand::Start {
                                node,
                                unit,
                                copy,
                                start_as,
                            },
                        },
                    );
                    return Ok(());
                }
                self.start_copy(n, &unit, copy, start_as);
                Ok(())
            }
            GroupCommand::Stop { node, copy, .. } => {
                let Some(n) = self.node_index(&node) else {
                    return Ok(());
                };
                let state = &self.nodes[n];
                if !state.alive || state.incarnation != incarnation || state.cut.is_some() {
                    self.note(|| format!("{node} unreachable: stop of {copy} lost"));
                    return Ok(());
                }
                let stop_fails = self.config.faults.stop_fails;
                let Some(c) = self.copies.get_mut(&copy) else {
                    return Ok(());
                };
                if c.node != n {
                    return Ok(());
                }
                if let Some(hang) = c.hang.as_mut() {
                    if self.rng.chance(stop_fails) {
                        if !hang.stop_failed {
                            hang.stop_failed = true;
                            self.report.zombies += 1;
                        }
                        self.note(|| format!("stop of hung {copy} failed: it will resume"));
                        return Ok(());
                    }
                }
                self.copies.remove(&copy);
                self.note(|| format!("{copy} stopped on {node}"));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn start_copy(&mut self, node: usize, unit: &UnitName, copy: CopyId, start_as: StartAs) {
        let Some(u) = self.unit_index(unit) else {
            return;
        };
        if self.copies.contains_key(&copy) {
            return;
        }
        let core = match start_as {
            StartAs::Initial { epoch } => {
                CopyCore::new_initial(SetUnit, unit.clone(), copy, epoch, self.copy_config)
            }
            StartAs::Standby { epoch, primary } => CopyCore::new_standby(
                SetUnit,
                unit.clone(),
                copy,
                epoch,
                primary,
                self.copy_config,
            ),
        };
        self.copies.insert(
            copy,
            SimCopy {
                core,
                unit: u,
                node,
                hang: None,
                verified: 0,
            },
        );
        self.note(|| format!("{copy} of {unit} started on n{node} as {start_as:?}"));
        let phase = Duration::from_micros(self.rng.between(1, self.config.tick.as_micros() as u64));
        self.schedule(phase, Event::CopyTick(copy));
        let delay = self.notify_delay();
        self.schedule(
            delay,
            Event::Notify(GroupInput::CopyStarted {
                unit: unit.clone(),
                copy,
            }),
        );
    }

    fn registry_update(&mut self, command: GroupCommand) {
        match command {
            GroupCommand::Bind {
                unit, copy, epoch, ..
            } => {
                let Some(u) = self.unit_index(&unit) else {
                    return;
                };
                if self.registry[u].is_none_or(|b| b.epoch <= epoch) {
                    self.registry[u] = Some(Binding { copy, epoch });
                    self.note(|| format!("registry: {unit} → {copy} at {epoch}"));
                }
            }
            GroupCommand::Unbind { unit, epoch } => {
                let Some(u) = self.unit_index(&unit) else {
                    return;
                };
                if self.registry[u].is_some_and(|b| b.epoch == epoch) {
                    self.registry[u] = None;
                    self.note(|| format!("registry: {unit} unbound at {epoch}"));
                }
            }
            _ => {}
        }
    }

    /// Whether a copy is the primary (for choosing fault targets).
    pub(crate) fn is_primary(&self, id: CopyId) -> bool {
        self.copies
            .get(&id)
            .is_some_and(|c| c.core.role() == Role::Primary)
    }
}

fn forge_directive(d: Directive, current: Epoch) -> Directive {
    let up = |e: Epoch| e.max(current);
    match d {
        Directive::Promote { epoch, lease } => Directive::Promote {
            epoch: up(epoch),
            lease,
        },
        Directive::AssignStandby { epoch, standby } => Directive::AssignStandby {
            epoch: up(epoch),
            standby,
        },
        Directive::Lease {
            epoch,
            requested_at,
            duration,
        } => Directive::Lease {
            epoch: up(epoch),
            requested_at,
            duration,
        },
        Directive::HandOver { epoch } => Directive::HandOver { epoch: up(epoch) },
        Directive::Fence { current: c } => Directive::Fence { current: up(c) },
    }
}

fn forge_peer(mut msg: PeerMsg<SetUnit>, current: Epoch) -> PeerMsg<SetUnit> {
    match &mut msg {
        PeerMsg::Replicate { epoch, .. }
        | PeerMsg::Snapshot { epoch, .. }
        | PeerMsg::Ack { epoch, .. }
        | PeerMsg::Refuse { current: epoch, .. } => *epoch = (*epoch).max(current),
    }
    msg
}

pub(crate) fn describe_input(input: &Input<SetUnit>) -> String {
    match input {
        Input::Stimulus(s) => format!(
            "stimulus {} {:?} (low water {}, token {})",
            s.id, s.body, s.low_water, s.reply.0
        ),
        Input::Peer(msg) => describe_peer(msg),
        Input::Directive(d) => format!("directive {d:?}"),
        Input::Tick => "tick".to_string(),
        Input::CallReply { call, reply } => format!("reply to call {} {reply:?}", call.0),
        Input::Dependency(change) => format!("dependency {change:?}"),
    }
}

fn describe_peer(msg: &PeerMsg<SetUnit>) -> String {
    match msg {
        PeerMsg::Replicate {
            epoch,
            from,
            seq,
            part,
            parts,
            entries,
        } => {
            let ids: Vec<String> = entries
                .iter()
                .map(|e| match e {
                    Entry::Served {
                        id,
                        response: SetResponse::Added { tag },
                        ..
                    } => format!("{id}:+{tag}"),
                    Entry::Served { id, response, .. } => format!("{id}:{response:?}"),
                    Entry::Begun(b) => format!("{}:begun", b.id),
                    Entry::Ignored { id, .. } => format!("{id}:ignored"),
                    Entry::Dependency { change, .. } => format!("{change:?}"),
                })
                .collect();
            format!(
                "Replicate {epoch} from {from} batch {} part {}/{parts} [{}]",
                seq.0,
                part + 1,
                ids.join(" ")
            )
        }
        PeerMsg::Snapshot {
            epoch,
            from,
            seq,
            state,
            ..
        } => format!(
            "Snapshot {epoch} from {from} at batch {} ({} tags)",
            seq.0,
            state.len()
        ),
        PeerMsg::Ack { epoch, from, upto } => format!("Ack {epoch} from {from} up to {}", upto.0),
        PeerMsg::Refuse { current, from } => format!("Refuse from {from}: current {current}"),
    }
}

fn describe_outcome(outcome: &Result<SetResponse, Refusal>) -> String {
    match outcome {
        Ok(SetResponse::Added { tag }) => format!("added {tag}"),
        Ok(SetResponse::Tags(t)) => format!("read {} tags", t.len()),
        Err(r) => format!("refused: {r}"),
    }
}

fn describe_packet(packet: &Packet) -> String {
    match packet {
        Packet::Input { to, input } => format!("→{to} {}", describe_input(input)),
        Packet::Report(r) => format!("→manager {r:?}"),
        Packet::Reply { token, outcome, .. } => {
            format!("→client token {token}: {}", describe_outcome(outcome))
        }
    }
}

/// Whether a stimulus body writes.
pub(crate) fn is_write(body: &SetStimulus) -> bool {
    matches!(body, SetStimulus::Add { .. })
}
