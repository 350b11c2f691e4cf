//! A `Probe` talks to a running cluster from outside it: it joins as a `ractor_cluster` node
//! that advertises no endpoint (so nobody places copies on it), and asks nodes for their
//! status or to call a unit. The `understudy call|load` commands and the multi-process
//! tests are built on it.

use crate::bench::{BenchError, BenchPlan, BenchStats, BenchTarget, ServedLoad, ServedPlan};
use crate::operator::{self, ReachNodes};
use crate::wire::{node_of_group, NodeStatus, WireAnswer, WireAsk, WireMsg, WireRequest};
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::time::Instant;
use understudy_actors::codec::{decode, encode};
use understudy_actors::copy::{JsonAnswer, JsonCallError};
use understudy_actors::envelope::{Envelope, NodeCast};
use understudy_runtime::{CopyId, NodeName, UnitName};

/// Why a probe could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe's own node server did not start.
    #[error("could not start the probe: {0}")]
    Start(String),
    /// No node answered at the address before the deadline: check the address and cookie
    /// (and the TLS flags, if the cluster uses TLS).
    #[error("no node reachable at {addr} within {waited:?} (wrong address or cookie{}?){}", .tls.then_some("").unwrap_or(", or a TLS cluster and no --tls-* flags"), .last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Unreachable {
        /// The address dialled.
        addr: String,
        /// How long the probe tried.
        waited: Duration,
        /// Whether the probe dialled with TLS.
        tls: bool,
        /// Why the last dial failed, if it failed before any session opened.
        last_error: Option<String>,
    },
    /// The probe's TLS flags are incomplete, or their files unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The node asked is not (or no longer) connected.
    #[error("node {0} is not connected")]
    NoSuchNode(NodeName),
    /// The node did not answer in time, or its answer did not decode.
    #[error("node {node} did not answer: {reason}")]
    NoAnswer {
        /// The node.
        node: NodeName,
        /// Why.
        reason: String,
    },
    /// The call reached the unit's node but failed there.
    #[error(transparent)]
    Call(#[from] JsonCallError),
    /// The bench reached its node but measured nothing there.
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// An operator request named a unit that no group of the cluster declares.
    #[error("no group of the cluster declares unit {0}; `understudy status` lists the units")]
    UnknownUnit(UnitName),
    /// An operator request named a node that is neither connected nor in any group's table.
    #[error("node {0} is neither connected nor in any group's table; `understudy status` lists the nodes")]
    UnknownNode(NodeName),
    /// No node that answered runs the group manager (of the group concerned): an election may
    /// be under way.
    #[error("no node runs the group manager{} right now (a Raft election may be under way); try again in a moment", .group.as_ref().map(|g| format!(" of group {g}")).unwrap_or_default())]
    NoManager {
        /// The group, if the request concerned one.
        group: Option<String>,
    },
    /// No node of the cluster answered a status request.
    #[error("no node of the cluster answered; check that the nodes run and are reachable")]
    NoNodeAnswered,
    /// The group manager's node refused an operator request (it may have stopped running the
    /// manager since it was asked, or the request does not apply).
    #[error("node {node} refused: {reason}")]
    Refused {
        /// The node asked.
        node: NodeName,
        /// What it said.
        reason: String,
    },
}

/// A connection to a cluster from outside it.
#[derive(Debug)]
pub struct Probe {
    server: ActorRef<NodeServerMessage>,
    /// With TLS: the task that dials every node the probe sees published ([`crate::mesh`]).
    mesh: Option<tokio::task::JoinHandle<()>>,
}

impl Probe {
    /// Join the cluster through the node at `addr` (`host:port`), presenting `cookie`, and wait
    /// (up to `timeout`) until at least one node's endpoint is visible.
    pub async fn connect(addr: &str, cookie: &str, timeout: Duration) -> Result<Probe, ProbeError> {
        Self::connect_with_tls(addr, cookie, None, timeout).await
    }

    /// As [`Probe::connect`], over TLS when `tls` is given (a TLS cluster accepts nothing else):
    /// the probe presents that certificate, verifies the nodes' against its CA, and dials every
    /// node of the cluster itself ([`crate::mesh`]).
    pub async fn connect_with_tls(
        addr: &str,
        cookie: &str,
        tls: Option<&crate::tls::Tls>,
        timeout: Duration,
    ) -> Result<Probe, ProbeError> {
        let name = format!(
            "probe-{}-{}",
            std::process::id(),
            crate::node::unique_suffix()
        );
        let mode = match tls {
            Some(_) => ractor_cluster::node::NodeConnectionMode::Isolated,
            None => ractor_cluster::node::NodeConnectionMode::Transitive,
        };
        let server = NodeServer::new(
            0,
            cookie.to_string(),
            name.clone(),
            "127.0.0.1".to_string(),
            tls.map(crate::tls::Tls::incoming),
            Some(mode),
        )
        .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .with_max_inbound_frame_size(crate::node::MAX_FRAME_BYTES);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| ProbeError::Start(e.to_string()))?;
        let mesh = tls.map(|tls| {
            tokio::spawn(crate::mesh::keep_meshed(
                server.clone(),
                NodeName::new(name),
                None,
                tls.clone(),
            ))
        });
        let probe = Probe { server, mesh };
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        let mut pacing = crate::tls::DialPacing::default();
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            // Ready once this probe's own session to `addr` is up and some node's endpoint is
            // visible (process groups may still list nodes of an earlier probe in this
            // process, so the session is what counts).
            if probe.session_to(addr).await && !probe.nodes().is_empty() {
                return Ok(probe);
            }
            if Instant::now() >= deadline {
                return Err(ProbeError::Unreachable {
                    addr: addr.to_string(),
                    waited: timeout,
                    tls: tls.is_some(),
                    last_error,
                });
            }
            if !probe.session_to(addr).await {
                if let Some(outcome) = pacing.dial(&probe.server, addr, tls).await {
                    last_error = outcome.err().map(|e| e.to_string());
                }
            }
        }
    }

    /// Whether this probe has a session, with a known peer, to `addr`.
    async fn session_to(&self, addr: &str) -> bool {
        match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 1_000) {
            Ok(sessions) => sessions
                .values()
                .any(|s| s.peer_addr == addr && s.peer_name.is_some()),
            Err(_) => false,
        }
    }

    /// The nodes whose endpoints the probe sees, sorted.
    pub fn nodes(&self) -> Vec<NodeName> {
        let mut all: Vec<NodeName> = ractor::pg::which_groups()
            .iter()
            .filter_map(|g| node_of_group(g))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn endpoint(&self, node: &NodeName) -> Result<ActorRef<WireMsg>, ProbeError> {
        ractor::pg::get_members(&crate::wire::endpoint_group(node))
            .into_iter()
            .find(|c| !c.get_id().is_local())
            .map(ActorRef::from)
            .ok_or_else(|| ProbeError::NoSuchNode(node.clone()))
    }

    /// Send `ask` to `node`'s endpoint and wait up to `wait` for its answer.
    pub async fn ask(
        &self,
        node: &NodeName,
        ask: &WireAsk,
        wait: Duration,
    ) -> Result<WireAnswer, ProbeError> {
        let no_answer = |reason: String| ProbeError::NoAnswer {
            node: node.clone(),
            reason,
        };
        let endpoint = self.endpoint(node)?;
        let request = WireRequest {
            from: None,
            ask: ask.clone(),
        };
        let bytes = encode("request", &request).map_err(|e| no_answer(e.to_string()))?;
        match endpoint
            .call(|port| WireMsg::Ask(bytes, port), Some(wait))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => {
                decode::<WireAnswer>("answer", &answer).map_err(|e| no_answer(e.to_string()))
            }
            Ok(other) => Err(no_answer(format!("{other:?}"))),
            Err(e) => Err(no_answer(e.to_string())),
        }
    }

    /// Fault injection: copy `copy` of `unit` on `node` panics inside its handler at its next
    /// stimulus (its local manager sees it fail, as it would see faulty application code).
    pub fn inject_panic(
        &self,
        node: &NodeName,
        unit: &UnitName,
        copy: CopyId,
    ) -> Result<(), ProbeError> {
        let envelope = Envelope::Node(NodeCast::InjectPanic {
            unit: unit.clone(),
            copy,
        });
        let bytes = encode("envelope", &envelope).map_err(|e| ProbeError::NoAnswer {
            node: node.clone(),
            reason: e.to_string(),
        })?;
        self.endpoint(node)?
            .cast(WireMsg::Frame(bytes))
            .map_err(|e| ProbeError::NoAnswer {
                node: node.clone(),
                reason: e.to_string(),
            })
    }

    /// Fault injection: `node` sends nothing more to the nodes in `to` (frames, requests and
    /// answers alike) until told otherwise; an empty `to` heals. Cut both ends for a full
    /// partition between two nodes.
    pub async fn cut(&self, node: &NodeName, to: &[NodeName]) -> Result<(), ProbeError> {
        let ask = WireAsk::Cut { to: to.to_vec() };
        match self.ask(node, &ask, Duration::from_secs(5)).await? {
            WireAnswer::Done(Ok(())) => Ok(()),
            other => Err(ProbeError::NoAnswer {
                node: node.clone(),
                reason: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// What `node` knows.
    pub async fn status(&self, node: &NodeName) -> Result<NodeStatus, ProbeError> {
        operator::status_of(self, node).await
    }

    /// Every visible node's status, in the order of their names (see [`operator::statuses`]).
    pub async fn statuses(&self) -> Result<Vec<NodeStatus>, ProbeError> {
        operator::statuses(self).await
    }

    /// Call `unit` through `node` with a JSON stimulus; the node's client follows takeovers
    /// until `t_max` (or the unit's own budget) runs out.
    pub async fn call_json(
        &self,
        node: &NodeName,
        unit: &str,
        json: &str,
        t_max: Option<Duration>,
    ) -> Result<String, ProbeError> {
        Ok(self.call_json_served(node, unit, json, t_max).await?.json)
    }

    /// As [`Probe::call_json`], also saying which copy answered, at which epoch and when.
    pub async fn call_json_served(
        &self,
        node: &NodeName,
        unit: &str,
        json: &str,
        t_max: Option<Duration>,
    ) -> Result<JsonAnswer, ProbeError> {
        let ask = WireAsk::Call {
            unit: UnitName::new(unit),
            json: json.to_string(),
            t_max_ms: t_max.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let wait = t_max.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(5);
        match self.ask(node, &ask, wait).await? {
            WireAnswer::Called(r) => Ok(r?),
            other => Err(ProbeError::NoAnswer {
                node: node.clone(),
                reason: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Drive a bench from `node` against `target` under `plan` (see [`crate::bench`]) and wait
    /// for what it measured.
    pub async fn bench(
        &self,
        node: &NodeName,
        target: BenchTarget,
        plan: BenchPlan,
    ) -> Result<BenchStats, ProbeError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ask = WireAsk::Bench {
            target,
            in_flight: plan.in_flight,
            duration_ms: millis(plan.duration),
            warmup_ms: millis(plan.warmup),
        };
        // The load, its first call, and its last calls' budgets.
        let wait = plan.warmup + plan.duration + Duration::from_secs(30);
        match self.ask(node, &ask, wait).await? {
            WireAnswer::Bench(r) => Ok(r?),
            other => Err(ProbeError::NoAnswer {
                node: node.clone(),
                reason: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Drive a served load of `unit` from `node` (see [`WireAsk::BenchServed`]) and wait until
    /// every request it sent has its outcome.
    pub async fn bench_served(
        &self,
        node: &NodeName,
        unit: &UnitName,
        stimulus: &str,
        plan: ServedPlan,
    ) -> Result<ServedLoad, ProbeError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ask = WireAsk::BenchServed {
            unit: unit.clone(),
            stimulus: stimulus.to_string(),
            in_flight: plan.in_flight,
            limit_ms: millis(plan.limit),
            after_newer_ms: millis(plan.after_newer),
        };
        // The load, and its last calls' budgets.
        let wait = plan.limit + plan.after_newer + Duration::from_secs(30);
        match self.ask(node, &ask, wait).await? {
            WireAnswer::BenchServed(r) => Ok(r?),
            other => Err(ProbeError::NoAnswer {
                node: node.clone(),
                reason: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// The node that runs the group manager of the first group found running one, as the
    /// nodes' status says (in a cluster of one group: its manager).
    pub async fn manager_node(&self) -> Result<NodeName, ProbeError> {
        operator::manager_where(self, |_| true).await
    }

    /// The node that runs the manager of `group`.
    pub async fn manager_of(&self, group: &str) -> Result<NodeName, ProbeError> {
        operator::manager_where(self, |g| g == group).await
    }

    /// Ask the group manager for a planned switchover of `unit`, to drain `node`, or to
    /// restore an unavailable `unit` (see [`operator::operate`]).
    pub async fn operate(&self, request: WireAsk) -> Result<(), ProbeError> {
        operator::operate(self, request).await
    }

    /// Leave the cluster (also done when the probe is dropped).
    pub fn stop(self) {}
}

impl ReachNodes for Probe {
    fn nodes(&self) -> Vec<NodeName> {
        Probe::nodes(self)
    }

    async fn ask(
        &self,
        node: &NodeName,
        ask: &WireAsk,
        wait: Duration,
    ) -> Result<WireAnswer, ProbeError> {
        Probe::ask(self, node, ask, wait).await
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(mesh) = &self.mesh {
            mesh.abort();
        }
        self.server.kill();
    }
}
