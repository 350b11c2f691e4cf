//! A seeded, deterministic simulation of one group: copies of [`SetUnit`]s on several nodes,
//! one [`GroupCore`](crate::GroupCore) manager, clients with retries, and a network that
//! drops, delays, duplicates, reorders and partitions, while copies crash, hang and come back
//! as zombies and nodes crash, restart and are cut off.
//!
//! After **every** step the checkers in [`checks`] test the invariants of DESIGN.md §2; the
//! first violation ends the run with a [`SimFailure`] naming the invariant, the seed, the step
//! and the last trace lines. The same seed always gives the same run, so a failure is
//! replayed by running its seed again (see the `sim_replays_seed_from_env` test).
//!
//! The copies replicate as `SimConfig::copy.strategy` says: synchronous, or trailing (a
//! stimulus answered under it counts as acknowledged only once its client learned the standby
//! has it; the clients replay the rest after a takeover, as `UnitClient` does).
//!
//! ```text
//!  clients ──stimuli──► network ──► CopyCore (primary) ──Replicate──► network ──► CopyCore (standby)
//!     ▲                    │              │  ▲                                        │
//!     └───replies──────────┘        reports │ directives                            Ack
//!                                         ▼  │
//!            supervisor notifications ──► GroupCore ──Start/Stop──► nodes, Bind──► registry
//! ```
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`rng`] | the SplitMix64 generator, the only source of randomness |
//! | [`mod@unit`] | [`SetUnit`], whose `Add` is two updates, so torn and doubled effects show |
//! | [`network`] | the message fault model ([`NetworkConfig`]) |
//! | [`faults`] | crashes, hangs, partitions and restarts ([`FaultConfig`]) |
//! | [`client`] | clients that resend the same stimulus until its deadline ([`ClientConfig`]); under the trailing strategy they keep, confirm and replay answers the standby may lack |
//! | [`checks`] | one checker per invariant |
//! | `world` | the event loop that ties them together |
//!
//! ```
//! use understudy_runtime::sim::{run, SimConfig};
//! let report = run(42, &SimConfig::default()).expect("the core keeps its invariants");
//! assert!(report.stimuli_sent > 0);
//! ```

pub mod checks;
pub mod client;
pub mod faults;
pub mod network;
pub mod rng;
mod trace;
pub mod unit;
mod world;

pub use checks::Invariant;
pub use client::ClientConfig;
pub use faults::FaultConfig;
pub use network::NetworkConfig;
pub use rng::SimRng;
pub use trace::TraceMode;
pub use unit::{SetResponse, SetState, SetStimulus, SetUnit, SetUpdate};

use crate::copy::CopyConfig;
use crate::group::GroupConfig;
use crate::time::Time;
use std::fmt;
use std::time::Duration;

/// A deliberately broken variant of the system, built into the simulation harness (the cores
/// are untouched), to show that the checkers catch what they claim to catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Breakage {
    /// Lease directives reach copies with ten times the granted duration, so a primary that
    /// hung or was cut off still believes it holds its lease after the manager's count ran
    /// out and its standby was promoted.
    LeaseOverrun,
    /// Clients resend a stimulus under a fresh `StimulusId` instead of the same one, so the
    /// dedupe table cannot recognise the retry.
    RetryWithNewId,
    /// The network rewrites the epoch of every stale peer message, directive and report to the
    /// receiver's current epoch, disabling the epoch check. No checker catches it: copy ids
    /// (never reused) and leases carry safety, and the epoch check only makes stale copies
    /// step down sooner (see the `sim_forged_epochs_*` test).
    ForgeEpoch,
    /// Trailing-strategy clients, on a rebinding to a newer epoch, take the answers they kept
    /// as settled instead of replaying them: what the lost standby lacked is lost.
    TrailingWithoutReplay,
}

impl Breakage {
    /// Every variant.
    pub const ALL: [Breakage; 4] = [
        Breakage::LeaseOverrun,
        Breakage::RetryWithNewId,
        Breakage::ForgeEpoch,
        Breakage::TrailingWithoutReplay,
    ];

    /// The variant's name, as accepted by [`Breakage::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Breakage::LeaseOverrun => "LeaseOverrun",
            Breakage::RetryWithNewId => "RetryWithNewId",
            Breakage::ForgeEpoch => "ForgeEpoch",
            Breakage::TrailingWithoutReplay => "TrailingWithoutReplay",
        }
    }

    /// The variant named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<Breakage> {
        Breakage::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// Everything a run depends on besides its seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes in the group (at least 3, so a standby can be placed while one node is down).
    pub nodes: usize,
    /// Units in the group.
    pub units: usize,
    /// How often copies and the manager get a tick.
    pub tick: Duration,
    /// The clients and their stimuli.
    pub clients: ClientConfig,
    /// The message fault model.
    pub network: NetworkConfig,
    /// Crashes, hangs and partitions.
    pub faults: FaultConfig,
    /// Tuning of every copy (see `vary_tuning`).
    pub copy: CopyConfig,
    /// Tuning of the group manager.
    pub group: GroupConfig,
    /// When set, each seed also picks the replication window (1–3) and the entries per
    /// `Replicate` part (1–3), so batches are often split in parts that can be torn.
    pub vary_tuning: bool,
    /// How long the run goes on after the last fault was repaired and the last client
    /// finished, before the final checks.
    pub settle: Duration,
    /// Simulated time after which a run that has not finished is reported as stuck.
    pub give_up_after: Duration,
    /// A deliberately broken variant, or `None` for the real system.
    pub breakage: Option<Breakage>,
    /// What to do with the trace.
    pub trace: TraceMode,
}

impl Default for SimConfig {
    fn default() -> Self {
        let copy = CopyConfig {
            max_entries_per_part: 2,
            ..CopyConfig::default()
        };
        SimConfig {
            nodes: 4,
            units: 2,
            tick: Duration::from_millis(10),
            clients: ClientConfig::default(),
            network: NetworkConfig::default(),
            faults: FaultConfig::default(),
            copy,
            group: GroupConfig::default(),
            vary_tuning: true,
            settle: Duration::from_millis(800),
            give_up_after: Duration::from_secs(60),
            breakage: None,
            trace: TraceMode::Quiet,
        }
    }
}

impl SimConfig {
    /// A harsher profile: 3–8 faults per run, a tenth of all messages lost, more and longer
    /// reorderings, and more stimuli per client. Units are declared unavailable more often
    /// (both copies lost), and rare interleavings (a directive overtaken by a newer one) show.
    pub fn harsh() -> Self {
        let mut config = SimConfig::default();
        config.faults.min_faults = 3;
        config.faults.max_faults = 8;
        config.network.drop = 0.1;
        // With one message in ten lost, every renewal of a 200 ms lease (the default, asked
        // from a third of it, every 20 ms) is lost now and then, and a lapse at the instant of
        // the final check reads as a unit that did not recover. A 300 ms lease leaves the
        // renewals twice the room; loopback, which loses nothing, keeps the default.
        config.group.lease = std::time::Duration::from_millis(300);
        config.network.duplicate = 0.05;
        config.network.slow = 0.15;
        config.network.slow_delay = (Duration::from_millis(5), Duration::from_millis(200));
        config.clients.stimuli = 25;
        config
    }
}

/// What a run did, for the caller to aggregate (a test asserts that faults really happened).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed (of the last run absorbed, in an aggregate).
    pub seed: u64,
    /// Runs counted (1 for one run).
    pub runs: u64,
    /// Runs in which at least one takeover happened.
    pub runs_with_takeover: u64,
    /// Runs in which at least one fault was injected.
    pub runs_with_fault: u64,
    /// Steps (events handled).
    pub steps: u64,
    /// Simulated time at the end.
    pub end: Time,
    /// Distinct stimuli clients sent.
    pub stimuli_sent: u64,
    /// Stimuli answered with a response.
    pub acked: u64,
    /// `Add`s answered (their tags are the ones that must never be lost).
    pub adds_acked: u64,
    /// `Read`s answered and checked against the acknowledged tags.
    pub reads_checked: u64,
    /// Sends of a stimulus after its first.
    pub retries: u64,
    /// Answered stimuli the clients replayed to a new primary (trailing strategy).
    pub replays: u64,
    /// Answered stimuli the clients reported lost: their unit became unavailable before the
    /// standby had them (trailing strategy).
    pub trailing_losses: u64,
    /// Stimuli whose deadline ran out (only ever for a unit declared unavailable: anything
    /// else fails the run).
    pub timed_out: u64,
    /// Takeovers: epochs reached beyond each unit's first.
    pub takeovers: u64,
    /// Stimuli a promoted standby found open (begun, not ended) and served again (in-flight
    /// knowledge).
    pub open_at_takeover: u64,
    /// Faults injected (crashes, hangs, partitions).
    pub faults: u64,
    /// Of which copy crashes.
    pub copy_crashes: u64,
    /// Of which node crashes.
    pub node_crashes: u64,
    /// Of which hangs.
    pub hangs: u64,
    /// Of which partitions.
    pub partitions: u64,
    /// Hung copies whose `Stop` failed and that resumed as zombies.
    pub zombies: u64,
    /// Planned switchovers the operator asked for.
    pub switchovers: u64,
    /// Times the group manager moved.
    pub manager_moves: u64,
    /// Nodes the operator drained.
    pub drains: u64,
    /// Messages sent over the network.
    pub messages: u64,
    /// Messages the network dropped (at random or because of a partition).
    pub dropped: u64,
    /// Messages the network delivered twice.
    pub duplicated: u64,
    /// Units declared indefinitely unavailable by the manager.
    pub units_unavailable: u64,
    /// A digest of the whole run: equal digests mean (with overwhelming likelihood) equal runs.
    pub digest: u64,
}

impl SimReport {
    /// Add another run's counts to these (the end is the latest; the digests are mixed).
    pub fn absorb(&mut self, other: &SimReport) {
        self.seed = other.seed;
        self.runs += other.runs;
        self.runs_with_takeover += other.runs_with_takeover;
        self.runs_with_fault += other.runs_with_fault;
        self.steps += other.steps;
        self.end = self.end.max(other.end);
        self.stimuli_sent += other.stimuli_sent;
        self.acked += other.acked;
        self.adds_acked += other.adds_acked;
        self.reads_checked += other.reads_checked;
        self.retries += other.retries;
        self.replays += other.replays;
        self.trailing_losses += other.trailing_losses;
        self.timed_out += other.timed_out;
        self.takeovers += other.takeovers;
        self.open_at_takeover += other.open_at_takeover;
        self.faults += other.faults;
        self.copy_crashes += other.copy_crashes;
        self.node_crashes += other.node_crashes;
        self.hangs += other.hangs;
        self.partitions += other.partitions;
        self.zombies += other.zombies;
        self.switchovers += other.switchovers;
        self.manager_moves += other.manager_moves;
        self.drains += other.drains;
        self.messages += other.messages;
        self.dropped += other.dropped;
        self.duplicated += other.duplicated;
        self.units_unavailable += other.units_unavailable;
        self.digest = self.digest.rotate_left(7) ^ other.digest;
    }
}

/// A run that broke an invariant: everything needed to understand and replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// The broken variant the run used, if any.
    pub breakage: Option<Breakage>,
    /// The invariant violated.
    pub invariant: Invariant,
    /// The step at which the checker fired.
    pub step: u64,
    /// The simulated time at which it fired.
    pub at: Time,
    /// What the checker saw.
    pub detail: String,
    /// The last trace lines before the violation.
    pub trace_tail: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed: invariant {} ({}) violated at step {}, t={}: {}",
            self.seed,
            self.invariant.number(),
            self.invariant.name(),
            self.step,
            self.at,
            self.detail
        )?;
        if let Some(b) = self.breakage {
            writeln!(f, "(deliberately broken variant: {})", b.name())?;
        }
        writeln!(f, "last {} trace lines:", self.trace_tail.len())?;
        for line in &self.trace_tail {
            writeln!(f, "  {line}")?;
        }
        let breakage = self
            .breakage
            .map(|b| format!("UNDERSTUDY_SIM_BREAKAGE={} ", b.name()))
            .unwrap_or_default();
        write!(
            f,
            "replay with: {breakage}UNDERSTUDY_SIM_SEED={} cargo test --release -p understudy-runtime \
             --test simulation sim_replays_seed_from_env -- --nocapture",
            self.seed
        )
    }
}

impl std::error::Error for SimFailure {}

/// Run the simulation for `seed`. The same seed and config always give the same run.
///
/// When the run fails with [`TraceMode::Quiet`], it is run once more with a trace so that the
/// failure carries the last trace lines (the replay stops at the same step).
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    match world::World::new(seed, config).run() {
        Err(failure) if config.trace == TraceMode::Quiet => {
            let mut traced = config.clone();
            traced.trace = TraceMode::Tail;
            match world::World::new(seed, &traced).run() {
                Err(again) => Err(again),
                Ok(_) => Err(failure),
            }
        }
        other => other,
    }
}
