//! Faults: copies crash or hang, nodes crash and restart, nodes are cut off and healed. What a
//! supervisor would see is delivered to the manager reliably, after a delay: a crash at once
//! (`known_dead`), a hang or a cut only after a detection delay (not `known_dead`), and only if
//! it still lasts. A hung copy whose `Stop` fails resumes later as a zombie, with its old
//! state and lease; a cut-off node keeps its copies running.

use super::checks::Violation;
use super::network::draw;
use super::world::{Event, Hang, World};
use crate::group::GroupInput;
use crate::ids::CopyId;
use std::collections::VecDeque;
use std::time::Duration;

/// Relative weights of the kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultWeights {
    /// A copy crashes.
    pub crash_copy: u32,
    /// A node crashes (and restarts later).
    pub crash_node: u32,
    /// A copy hangs for a while.
    pub hang_copy: u32,
    /// A node is cut off from everybody for a while.
    pub partition: u32,
    /// The operator asks for a planned switchover of a unit (not a fault: the run must lose
    /// nothing and stay available through it).
    pub switchover: u32,
    /// The operator drains a node for maintenance.
    pub drain: u32,
    /// The group manager moves (its Raft leader is lost): for an election's time nothing
    /// reaches it — notifications, reports and inventories are lost — then a new manager
    /// resumes from the same table.
    pub manager_moves: u32,
}

/// When, how often and how badly things fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// Fewest faults per run.
    pub min_faults: usize,
    /// Most faults per run.
    pub max_faults: usize,
    /// Faults start within this window of simulated time.
    pub window: (Duration, Duration),
    /// The kinds of fault, weighted.
    pub weights: FaultWeights,
    /// Probability that a copy fault hits a primary (otherwise any copy).
    pub target_primary: f64,
    /// How long a hang lasts.
    pub hang: (Duration, Duration),
    /// How long a partition lasts.
    pub partition: (Duration, Duration),
    /// How long a crashed node stays down.
    pub restart: (Duration, Duration),
    /// How long until a hang or a cut is noticed.
    pub detect: (Duration, Duration),
    /// How long a supervisor's notification, a node command or a registry update takes.
    pub notify: (Duration, Duration),
    /// Probability that a `Stop` for a hung copy fails to take effect.
    pub stop_fails: f64,
    /// How long the group is without a manager when it moves.
    pub election: (Duration, Duration),
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            min_faults: 1,
            max_faults: 4,
            window: (Duration::from_millis(50), Duration::from_millis(1500)),
            weights: FaultWeights {
                crash_copy: 3,
                crash_node: 2,
                hang_copy: 4,
                partition: 3,
                switchover: 3,
                drain: 1,
                manager_moves: 2,
            },
            target_primary: 0.7,
            hang: (Duration::from_millis(20), Duration::from_millis(900)),
            partition: (Duration::from_millis(20), Duration::from_millis(700)),
            restart: (Duration::from_millis(50), Duration::from_millis(500)),
            detect: (Duration::from_millis(30), Duration::from_millis(120)),
            notify: (Duration::from_micros(500), Duration::from_millis(4)),
            stop_fails: 0.5,
            election: (Duration::from_millis(150), Duration::from_millis(900)),
        }
    }
}

impl FaultConfig {
    /// No faults at all.
    pub fn none() -> Self {
        FaultConfig {
            min_faults: 0,
            max_faults: 0,
            ..FaultConfig::default()
        }
    }
}

impl World<'_> {
    /// Schedule this run's faults at random times within the window.
    pub(crate) fn plan_faults(&mut self) {
        let cfg = self.config.faults;
        let count = self
            .rng
            .between(cfg.min_faults as u64, cfg.max_faults as u64) as usize;
        for _ in 0..count {
            let at = draw(&mut self.rng, cfg.window);
            self.faults_pending += 1;
            self.schedule(at, Event::Fault);
        }
    }

    fn mark_repaired_at(&mut self, after: Duration) {
        let at = self.now.after(after);
        self.faults_over = self.faults_over.max(at);
    }

    fn choose_copy(&mut self, running_only: bool) -> Option<CopyId> {
        let p = self.config.faults.target_primary;
        let candidates: Vec<CopyId> = self
            .copies
            .iter()
            .filter(|(_, c)| !running_only || c.hang.is_none())
            .map(|(id, _)| *id)
            .collect();
        let primaries: Vec<CopyId> = candidates
            .iter()
            .copied()
            .filter(|id| self.is_primary(*id))
            .collect();
        if !primaries.is_empty() && self.rng.chance(p) {
            return self.rng.pick(&primaries).copied();
        }
        self.rng.pick(&candidates).copied()
    }

    fn choose_node(&mut self, prefer_primary: bool) -> Option<usize> {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].alive && self.nodes[*n].cut.is_none())
            .collect();
        if prefer_primary && self.rng.chance(self.config.faults.target_primary) {
            let with_primary: Vec<usize> = alive
                .iter()
                .copied()
                .filter(|n| {
                    self.copies
                        .iter()
                        .any(|(id, c)| c.node == *n && self.is_primary(*id))
                })
                .collect();
            if !with_primary.is_empty() {
                return self.rng.pick(&with_primary).copied();
            }
        }
        self.rng.pick(&alive).copied()
    }

    pub(crate) fn inject_fault(&mut self) -> Result<(), Violation> {
        self.faults_pending = self.faults_pending.saturating_sub(1);
        let w = self.config.faults.weights;
        let kind = self.rng.weighted(&[
            w.crash_copy,
            w.crash_node,
            w.hang_copy,
            w.partition,
            w.switchover,
            w.drain,
            w.manager_moves,
        ]);
        match kind {
            Some(0) => self.crash_copy(),
            Some(1) => self.crash_node(),
            Some(2) => self.hang_copy(),
            Some(3) => self.partition(),
            Some(4) => self.operator_switchover(),
            Some(5) => self.operator_drain(),
            Some(6) => self.manager_moves(),
            _ => Ok(()),
        }
    }

    fn manager_moves(&mut self) -> Result<(), Violation> {
        if self.manager_away_until.is_some() {
            return Ok(());
        }
        let away = draw(&mut self.rng, self.config.faults.election);
        self.report.faults += 1;
        self.report.manager_moves += 1;
        self.note(|| format!("FAULT: the group manager is lost; a new one resumes in {away:?}"));
        self.manager_away_until = Some(self.now.after(away));
        self.mark_repaired_at(away);
        self.schedule(away, Event::Notify(GroupInput::Resume));
        Ok(())
    }

    fn operator_switchover(&mut self) -> Result<(), Violation> {
        let units: Vec<usize> = (0..self.unit_names.len()).collect();
        let Some(&u) = self.rng.pick(&units) else {
            return Ok(());
        };
        let unit = self.unit_names[u].clone();
        self.report.switchovers += 1;
        self.note(|| format!("OPERATOR: switchover of {unit}"));
        let delay = self.notify_delay();
        self.mark_repaired_at(delay);
        self.schedule(delay, Event::Notify(GroupInput::Switchover { unit }));
        Ok(())
    }

    fn operator_drain(&mut self) -> Result<(), Violation> {
        if self.report.drains > 0 {
            // One node out of placement per run, so a standby always has somewhere to go.
            return Ok(());
        }
        let Some(n) = self.choose_node(true) else {
            return Ok(());
        };
        let node = self.node_names[n].clone();
        self.report.drains += 1;
        self.note(|| format!("OPERATOR: drain of {node}"));
        let delay = self.notify_delay();
        self.mark_repaired_at(delay);
        self.schedule(delay, Event::Notify(GroupInput::Drain { node }));
        Ok(())
    }

    fn crash_copy(&mut self) -> Result<(), Violation> {
        let Some(id) = self.choose_copy(false) else {
            return Ok(());
        };
        let Some(copy) = self.copies.remove(&id) else {
            return Ok(());
        };
        self.report.faults += 1;
        self.report.copy_crashes += 1;
        let unit = self.unit_names[copy.unit].clone();
        self.note(|| format!("FAULT: {id} ({:?}) of {unit} crashed", copy.core.role()));
        let delay = self.notify_delay();
        self.mark_repaired_at(delay);
        self.schedule(
            delay,
            Event::Notify(GroupInput::CopyDown {
                unit,
                copy: id,
                known_dead: true,
            }),
        );
        Ok(())
    }

    fn crash_node(&mut self) -> Result<(), Violation> {
        let Some(n) = self.choose_node(true) else {
            return Ok(());
        };
        self.report.faults += 1;
        self.report.node_crashes += 1;
        let node = &mut self.nodes[n];
        node.alive = false;
        node.incarnation += 1;
        node.cut = None;
        node.declared_down = false;
        let incarnation = node.incarnation;
        self.copies.retain(|_, c| c.node != n);
        self.note(|| format!("FAULT: node n{n} crashed"));
        let name = self.node_names[n].clone();
        let delay = self.notify_delay();
        self.schedule(
            delay,
            Event::Notify(GroupInput::NodeDown {
                node: name,
                known_dead: true,
            }),
        );
        let down_for = draw(&mut self.rng, self.config.faults.restart);
        self.mark_repaired_at(down_for);
        self.schedule(
            down_for,
            Event::Restart {
                node: n,
                incarnation,
            },
        );
        Ok(())
    }

    pub(crate) fn restart(&mut self, n: usize, incarnation: u64) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(n) else {
            return Ok(());
        };
        if node.alive || node.incarnation != incarnation {
            return Ok(());
        }
        node.alive = true;
        self.note(|| format!("node n{n} restarted, empty"));
        let name = self.node_names[n].clone();
        let delay = self.notify_delay();
        self.mark_repaired_at(delay);
        self.schedule(delay, Event::Notify(GroupInput::NodeUp { node: name }));
        Ok(())
    }

    fn hang_copy(&mut self) -> Result<(), Violation> {
        let Some(id) = self.choose_copy(true) else {
            return Ok(());
        };
        self.next_fault_id += 1;
        let hang = self.next_fault_id;
        let Some(copy) = self.copies.get_mut(&id) else {
            return Ok(());
        };
        copy.hang = Some(Hang {
            id: hang,
            mailbox: VecDeque::new(),
            stop_failed: false,
        });
        let role = copy.core.role();
        self.report.faults += 1;
        self.report.hangs += 1;
        let cfg = self.config.faults;
        let lasts = draw(&mut self.rng, cfg.hang);
        let detect = draw(&mut self.rng, cfg.detect);
        self.note(|| format!("FAULT: {id} ({role:?}) hangs for {lasts:?}"));
        self.mark_repaired_at(lasts);
        self.schedule(lasts, Event::Resume { copy: id, hang });
        self.schedule(detect, Event::DetectHang { copy: id, hang });
        Ok(())
    }

    pub(crate) fn detect_hang(&mut self, id: CopyId, hang: u64) -> Result<(), Violation> {
        let Some(copy) = self.copies.get(&id) else {
            return Ok(());
        };
        if copy.hang.as_ref().is_none_or(|h| h.id != hang) {
            return Ok(());
        }
        let unit = self.unit_names[copy.unit].clone();
        self.note(|| format!("{id} is noticed hung"));
        self.step_manager(GroupInput::CopyDown {
            unit,
            copy: id,
            known_dead: false,
        })
    }

    /// A hung copy resumes: it works through the inputs that waited, with its old state.
    pub(crate) fn resume(&mut self, id: CopyId, hang: u64) -> Result<(), Violation> {
        let Some(copy) = self.copies.get_mut(&id) else {
            return Ok(());
        };
        if copy.hang.as_ref().is_none_or(|h| h.id != hang) {
            return Ok(());
        }
        let Some(h) = copy.hang.take() else {
            return Ok(());
        };
        let waiting = h.mailbox.len();
        self.note(|| format!("{id} resumes with {waiting} waiting inputs"));
        for input in h.mailbox {
            self.step_copy(id, input)?;
        }
        Ok(())
    }

    fn partition(&mut self) -> Result<(), Violation> {
        let Some(n) = self.choose_node(true) else {
            return Ok(());
        };
        self.next_fault_id += 1;
        let cut = self.next_fault_id;
        self.nodes[n].cut = Some(cut);
        self.report.faults += 1;
        self.report.partitions += 1;
        let cfg = self.config.faults;
        let lasts = draw(&mut self.rng, cfg.partition);
        let detect = draw(&mut self.rng, cfg.detect);
        self.note(|| format!("FAULT: node n{n} cut off for {lasts:?}"));
        self.mark_repaired_at(lasts);
        self.schedule(lasts, Event::Heal { node: n, cut });
        self.schedule(detect, Event::DetectCut { node: n, cut });
        Ok(())
    }

    pub(crate) fn detect_cut(&mut self, n: usize, cut: u64) -> Result<(), Violation> {
        if self.nodes.get(n).is_none_or(|s| s.cut != Some(cut)) {
            return Ok(());
        }
        self.nodes[n].declared_down = true;
        let node = self.node_names[n].clone();
        self.note(|| format!("{node} is noticed unreachable"));
        self.step_manager(GroupInput::NodeDown {
            node,
            known_dead: false,
        })
    }

    pub(crate) fn heal(&mut self, n: usize, cut: u64) -> Result<(), Violation> {
        if self.nodes.get(n).is_none_or(|s| s.cut != Some(cut)) {
            return Ok(());
        }
        self.nodes[n].cut = None;
        self.note(|| format!("node n{n} reachable again"));
        if self.nodes[n].declared_down {
            self.nodes[n].declared_down = false;
            let delay = self.notify_delay();
            self.mark_repaired_at(delay);
            self.schedule(delay, Event::HeardAgain { node: n });
        }
        Ok(())
    }
}
