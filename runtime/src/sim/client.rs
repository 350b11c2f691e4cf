//! Simulated clients. Each sends a bounded number of stimuli (mostly `Add`s of unique tags,
//! some `Read`s), a few at a time, to the copy its cached binding names (possibly stale), and
//! resends the *same* stimulus id after a timeout or a retryable refusal, re-reading the
//! registry, until the stimulus's deadline runs out.
//!
//! Under the trailing strategy they do what `UnitClient` does: keep each answered stimulus
//! whose answer said the standby may lack it, confirm it by an answer of the same epoch that
//! says the standby has it (only then is it acknowledged in the ledger), and after a rebinding
//! to a newer epoch replay the kept stimuli, in order and with their ids.

use super::checks;
use super::checks::Violation;
use super::network::draw;
use super::unit::{SetResponse, SetStimulus};
use super::world::{is_write, Binding, Endpoint, Event, Packet, TokenOwner, World};
use super::Breakage;
use crate::copy::{Input, ReplyToken, StimulusIn};
use crate::ids::{BatchSeq, ClientId, Epoch, Seq, StimulusId, TraceId};
use crate::message::Refusal;
use crate::replay::ReplayBook;
use crate::replication::Durability;
use crate::time::Time;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientConfig {
    /// How many clients.
    pub clients: usize,
    /// Stimuli each client sends in all.
    pub stimuli: usize,
    /// Most stimuli a client awaits at once (several at once exercise group commit).
    pub max_outstanding: usize,
    /// The share of `Read`s among the stimuli.
    pub read_share: f64,
    /// Clients start at a random time within this.
    pub start_within: Duration,
    /// The pause between two stimuli of one client.
    pub think: (Duration, Duration),
    /// Resend a stimulus that got no answer after this long.
    pub timeout: Duration,
    /// Resend after a retryable refusal (or while the unit is unbound) after this long.
    pub backoff: (Duration, Duration),
    /// The deadline of each stimulus after it was first sent (its `T_max`).
    pub t_max: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            clients: 3,
            stimuli: 12,
            max_outstanding: 3,
            read_share: 0.2,
            start_within: Duration::from_millis(100),
            think: (Duration::from_millis(2), Duration::from_millis(60)),
            timeout: Duration::from_millis(60),
            backoff: (Duration::from_millis(2), Duration::from_millis(15)),
            t_max: Duration::from_secs(4),
        }
    }
}

/// A stimulus a client awaits.
#[derive(Clone, Debug)]
struct Pending {
    body: SetStimulus,
    first_sent: Time,
    deadline: Time,
    attempt: u32,
    sends: u32,
    /// Sent again after its answer (a replay, or a resend to learn how far the standby got):
    /// its answer is not counted again.
    again: bool,
}

/// How often a client with kept answers confirms or replays them.
const CONFIRM_EVERY: Duration = Duration::from_millis(20);

/// One client: per unit its own client id and sequence numbers (as a `UnitClient` is per
/// unit), its plan, what it awaits, and its cached bindings.
#[derive(Debug)]
pub(crate) struct SimClient {
    ids: Vec<ClientId>,
    next_seq: Vec<u64>,
    plan: VecDeque<(usize, SetStimulus)>,
    outstanding: BTreeMap<(usize, u64), Pending>,
    /// Per unit, the answered stimuli its standby may lack (the book `UnitClient` keeps too).
    kept: Vec<ReplayBook<u64, SetStimulus>>,
    confirming: bool,
    cache: Vec<Option<Binding>>,
    pub(crate) done_at: Time,
}

impl SimClient {
    pub(crate) fn done(&self) -> bool {
        self.plan.is_empty()
            && self.outstanding.is_empty()
            && self.kept.iter().all(|b| b.is_empty())
    }

    fn low_water(&self, unit: usize) -> Seq {
        let kept = self.kept.get(unit).and_then(|b| b.keys().next());
        let lowest = self
            .outstanding
            .keys()
            .filter(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .chain(kept)
            .min()
            .unwrap_or(self.next_seq.get(unit).copied().unwrap_or(1));
        Seq(lowest)
    }
}

impl World<'_> {
    pub(crate) fn start_clients(&mut self) {
        let cfg = self.config.clients;
        let units = self.unit_names.len() as u64;
        for c in 0..cfg.clients {
            let mut plan = VecDeque::new();
            for k in 0..cfg.stimuli {
                let unit = self.rng.below(units) as usize;
                let body = if self.rng.chance(cfg.read_share) {
                    SetStimulus::Read
                } else {
                    SetStimulus::Add {
                        tag: (c as u64 + 1) * 1_000_000 + k as u64,
                    }
                };
                plan.push_back((unit, body));
            }
            self.clients.push(SimClient {
                ids: (0..units)
                    .map(|u| ClientId((c as u64 + 1) * 100 + u))
                    .collect(),
                next_seq: vec![Seq::FIRST.0; units as usize],
                plan,
                outstanding: BTreeMap::new(),
                kept: (0..units).map(|_| ReplayBook::default()).collect(),
                confirming: false,
                cache: vec![None; units as usize],
                done_at: Time::ZERO,
            });
            let start = draw(&mut self.rng, (Duration::ZERO, cfg.start_within));
            self.schedule(start, Event::ClientWake(c));
        }
    }

    /// Send the client's next stimulus if it has room, and plan the one after.
    pub(crate) fn client_wake(&mut self, c: usize) -> Result<(), Violation> {
        let cfg = self.config.clients;
        let now = self.now;
        let Some(client) = self.clients.get_mut(c) else {
            return Ok(());
        };
        if client.outstanding.len() >= cfg.max_outstanding.max(1) {
            return Ok(());
        }
        let Some((unit, body)) = client.plan.pop_front() else {
            return Ok(());
        };
        let seq = client.next_seq[unit];
        client.next_seq[unit] += 1;
        client.outstanding.insert(
            (unit, seq),
            Pending {
                body,
                first_sent: now,
                deadline: now.after(cfg.t_max),
                attempt: 0,
                sends: 0,
                again: false,
            },
        );
        let more = !client.plan.is_empty();
        self.report.stimuli_sent += 1;
        self.send_attempt(c, unit, seq);
        if more {
            let think = draw(&mut self.rng, cfg.think);
            self.schedule(think, Event::ClientWake(c));
        }
        Ok(())
    }

    /// Send (or resend) one awaited stimulus to the copy the client's binding names.
    fn send_attempt(&mut self, c: usize, unit: usize, seq: u64) {
        let cfg = self.config.clients;
        let registry = self.registry[unit];
        let Some(client) = self.clients.get_mut(c) else {
            return;
        };
        let low_water = client.low_water(unit);
        let id = StimulusId {
            client: client.ids[unit],
            seq: Seq(seq),
        };
        let Some(pending) = client.outstanding.get_mut(&(unit, seq)) else {
            return;
        };
        let attempt = pending.attempt;
        if client.cache[unit].is_none() {
            client.cache[unit] = registry;
        }
        let Some(binding) = client.cache[unit] else {
            let backoff = draw(&mut self.rng, cfg.backoff);
            self.schedule(
                backoff,
                Event::ClientRetry {
                    client: c,
                    unit,
                    seq,
                    attempt,
                },
            );
            return;
        };
        if pending.sends > 0 {
            self.report.retries += 1;
        }
        pending.sends += 1;
        let body = pending.body.clone();
        self.next_token += 1;
        let token = self.next_token;
        self.tokens.insert(
            token,
            TokenOwner {
                client: c,
                unit,
                seq,
            },
        );
        let input = Input::Stimulus(StimulusIn {
            id,
            low_water,
            bound_at: binding.epoch,
            body,
            trace: TraceId::root(id),
            reply: ReplyToken(token),
        });
        self.send(
            Endpoint::Client,
            Packet::Input {
                to: binding.copy,
                input,
            },
        );
        self.schedule(
            cfg.timeout,
            Event::ClientRetry {
                client: c,
                unit,
                seq,
                attempt,
            },
        );
    }

    /// A timeout or a backoff ran out: resend (re-reading the registry) unless the stimulus
    /// was answered meanwhile or its deadline passed.
    pub(crate) fn client_retry(
        &mut self,
        c: usize,
        unit: usize,
        seq: u64,
        attempt: u32,
    ) -> Result<(), Violation> {
        let now = self.now;
        let registry = self.registry[unit];
        let new_ids = self.config.breakage == Some(Breakage::RetryWithNewId);
        let Some(client) = self.clients.get_mut(c) else {
            return Ok(());
        };
        let Some(pending) = client.outstanding.get_mut(&(unit, seq)) else {
            return Ok(());
        };
        if pending.attempt != attempt {
            return Ok(());
        }
        if now >= pending.deadline {
            return self.give_up(c, unit, seq);
        }
        pending.attempt += 1;
        client.cache[unit] = registry;
        let mut seq = seq;
        if new_ids && pending.sends > 0 {
            // The broken variant: the retry travels under a fresh id.
            if let Some(p) = client.outstanding.remove(&(unit, seq)) {
                seq = client.next_seq[unit];
                client.next_seq[unit] += 1;
                client.outstanding.insert((unit, seq), p);
            }
        }
        self.send_attempt(c, unit, seq);
        Ok(())
    }

    /// The stimulus's deadline ran out. That is only an acceptable outcome when its unit was
    /// declared indefinitely unavailable (§2.6).
    fn give_up(&mut self, c: usize, unit: usize, seq: u64) -> Result<(), Violation> {
        let now = self.now;
        let unavailable = self.unavailable[unit];
        let Some(client) = self.clients.get_mut(c) else {
            return Ok(());
        };
        let Some(pending) = client.outstanding.remove(&(unit, seq)) else {
            return Ok(());
        };
        if client.done() {
            client.done_at = now;
        }
        self.report.timed_out += 1;
        self.note(|| format!("client {c}: stimulus u{unit}#{seq} ran out of time"));
        if !unavailable {
            return checks::deadline_ran_out_only_if_unavailable(unit, pending.first_sent, || {
                format!("client {c}: stimulus u{unit}#{seq} {:?}", pending.body)
            });
        }
        let think = draw(&mut self.rng, self.config.clients.think);
        self.schedule(think, Event::ClientWake(c));
        Ok(())
    }

    /// An answer or refusal reaches a client.
    pub(crate) fn client_reply(
        &mut self,
        token: u64,
        outcome: Result<SetResponse, Refusal>,
        epoch: Epoch,
        durability: Durability,
    ) -> Result<(), Violation> {
        let now = self.now;
        let Some(owner) = self.tokens.get(&token).copied() else {
            return Ok(());
        };
        let (c, unit, seq) = (owner.client, owner.unit, owner.seq);
        let Some(client) = self.clients.get_mut(c) else {
            return Ok(());
        };
        let Some(pending) = client.outstanding.get_mut(&(unit, seq)) else {
            return Ok(());
        };
        match outcome {
            Ok(response) => {
                let pending = pending.clone();
                client.outstanding.remove(&(unit, seq));
                if let Some(book) = client.kept.get_mut(unit) {
                    book.answered(seq, epoch, durability, pending.body.clone());
                }
                self.confirm_kept(c, unit, epoch, durability.standby_has);
                self.start_confirming(c);
                let Some(client) = self.clients.get_mut(c) else {
                    return Ok(());
                };
                if client.done() {
                    client.done_at = now;
                }
                if pending.again {
                    // It held a slot of the client's outstanding stimuli: the client may go on.
                    let think = draw(&mut self.rng, self.config.clients.think);
                    self.schedule(think, Event::ClientWake(c));
                    return Ok(());
                }
                self.report.acked += 1;
                if is_write(&pending.body) {
                    self.report.adds_acked += 1;
                } else {
                    checks::read_sees_acknowledged(
                        &self.ledger,
                        unit,
                        pending.first_sent,
                        &response,
                    )?;
                    self.report.reads_checked += 1;
                }
                self.note(|| format!("client {c}: u{unit}#{seq} answered"));
                let think = draw(&mut self.rng, self.config.clients.think);
                self.schedule(think, Event::ClientWake(c));
                Ok(())
            }
            Err(refusal) if refusal.is_retryable() => {
                pending.attempt += 1;
                let attempt = pending.attempt;
                client.cache[unit] = None;
                let backoff = draw(&mut self.rng, self.config.clients.backoff);
                self.schedule(
                    backoff,
                    Event::ClientRetry {
                        client: c,
                        unit,
                        seq,
                        attempt,
                    },
                );
                Ok(())
            }
            Err(refusal) => checks::clients_redirected_not_failed(&refusal, || {
                format!("client {c}: stimulus u{unit}#{seq}, still awaited,")
            }),
        }
    }

    /// An answer of `epoch` says its standby has every batch up to `has`: the kept stimuli of
    /// that epoch it covers are acknowledged now.
    fn confirm_kept(&mut self, c: usize, unit: usize, epoch: Epoch, has: BatchSeq) {
        let now = self.now;
        let Some(client) = self.clients.get_mut(c) else {
            return;
        };
        let Some(book) = client.kept.get_mut(unit) else {
            return;
        };
        for (_, body) in book.confirm(epoch, has) {
            if let SetStimulus::Add { tag } = body {
                self.ledger.acknowledge(unit, tag, now);
            }
        }
    }

    fn start_confirming(&mut self, c: usize) {
        let Some(client) = self.clients.get_mut(c) else {
            return;
        };
        if client.confirming || client.kept.iter().all(|b| b.is_empty()) {
            return;
        }
        client.confirming = true;
        self.schedule(CONFIRM_EVERY, Event::ClientConfirm(c));
    }

    /// Confirm or replay what the client keeps: per unit, every kept stimulus answered at an
    /// older epoch than the registry's binding is sent again, in order, with its id; else the
    /// newest kept is sent again to learn how far the standby got.
    pub(crate) fn client_confirm(&mut self, c: usize) -> Result<(), Violation> {
        let now = self.now;
        let t_max = self.config.clients.t_max;
        let bindings: Vec<Option<Binding>> = self.registry.clone();
        let unavailable: Vec<bool> = self.unavailable.clone();
        let Some(client) = self.clients.get_mut(c) else {
            return Ok(());
        };
        client.confirming = false;
        let mut again: Vec<(usize, u64, SetStimulus)> = Vec::new();
        let mut lost = 0u64;
        let mut settled: Vec<(usize, SetStimulus)> = Vec::new();
        let no_replay = self.config.breakage == Some(Breakage::TrailingWithoutReplay);
        for (unit, book) in client.kept.iter_mut().enumerate() {
            if unavailable.get(unit).copied().unwrap_or(false) {
                // No copy holding the unit's state is left: what the client kept is lost, and
                // it is told so (as `UnitClient::take_trailing_losses` does).
                lost += book.take_all().len() as u64;
                continue;
            }
            let Some(binding) = bindings.get(unit).copied().flatten() else {
                continue;
            };
            let round = book.round(binding.epoch);
            if no_replay && !round.replay.is_empty() {
                // The broken variant: taken as settled, never replayed.
                for seq in round.replay {
                    settled.extend(book.take(&seq).map(|k| (unit, k.payload)));
                }
                continue;
            }
            self.report.replays += round.replay.len() as u64;
            for seq in round.replay.into_iter().chain(round.probe) {
                // Awaited again: its answer will keep or confirm it anew.
                again.extend(book.take(&seq).map(|k| (unit, seq, k.payload)));
            }
        }
        for (unit, seq, body) in &again {
            client.outstanding.entry((*unit, *seq)).or_insert(Pending {
                body: body.clone(),
                first_sent: now,
                deadline: now.after(t_max),
                attempt: 0,
                sends: 0,
                again: true,
            });
        }
        if let Some(client) = self.clients.get_mut(c) {
            if client.done() {
                client.done_at = now;
            }
        }
        for (unit, body) in settled {
            if let SetStimulus::Add { tag } = body {
                self.ledger.acknowledge(unit, tag, now);
            }
        }
        if lost > 0 {
            self.report.trailing_losses += lost;
            self.note(|| format!("client {c}: {lost} answered stimuli of unavailable units lost"));
        }
        for (unit, seq, _) in again {
            self.send_attempt(c, unit, seq);
        }
        self.start_confirming(c);
        Ok(())
    }
}
