//! Who may join: a peer must pass `ractor_cluster`'s cookie challenge (the same `--cookie` on
//! every node) and, with TLS on, present a certificate signed by the cluster's CA
//! ([`crate::tls`]). A refused peer changes nothing on the node it tried: its session closes
//! before it is authenticated, so it never becomes a member, never sees a process group and
//! never receives a message. Both ends say why, as errors (each refusal at most once per 10 s):
//!
//! ```text
//!  a session closes before it authenticated ─► 500 ms later, is another session to the
//!  same peer authenticated?
//!     yes ─► a duplicate connection lost the election: nothing to say
//!     no  ─► accepting node: "refused node X from ADDR: it did not pass the cookie challenge …"
//!            dialling node:  "could not join ADDR: … check that --cookie is the cluster's …"
//! ```
//!
//! A connection accepted and closed before its peer even named itself is not reported (that
//! is what a departure probe, [`crate::departure`], looks like); nor is anything learnt from an
//! unauthenticated session used elsewhere: the departure watch, too, looks only at sessions
//! that were authenticated.
//!
//! A TLS handshake that fails is reported where it fails: by the accepting node's certificate
//! check ([`crate::tls`]) and by the dialling node's dial.

use ractor::ActorRef;
use ractor_cluster::node::{NodeEventSubscription, NodeServerSessionInformation};
use ractor_cluster::{NodeId, NodeServerMessage};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long after an unauthenticated session closed its peer is looked for again: the
/// election between two simultaneous connections settles well within it on loopback.
const SETTLE: Duration = Duration::from_millis(500);

/// Whether the refusal (or failure) `key` may be logged now: the first time, then at most once
/// per [`crate::tls::REPORT_EVERY`] (a refused node re-dials every 100 ms).
pub(crate) fn report_now(key: &str) -> bool {
    static LAST: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match last.get(key) {
        Some(at) if now.duration_since(*at) < crate::tls::REPORT_EVERY => false,
        _ => {
            last.insert(key.to_string(), now);
            true
        }
    }
}

/// A session that closed before it was authenticated.
#[derive(Debug)]
struct Unauthenticated {
    /// The peer's node name, as it claimed it (unverified), if it got that far.
    peer: Option<String>,
    /// The peer's address (for a session this node dialled: the address dialled).
    addr: String,
    /// Whether this node accepted the session (else it dialled it).
    accepted: bool,
}

/// The subscription to the node server's session events: forwards every session that closes
/// without having been authenticated.
struct SessionWatch {
    authenticated: Mutex<HashSet<NodeId>>,
    closed: mpsc::UnboundedSender<Unauthenticated>,
}

impl SessionWatch {
    fn authenticated(&self) -> std::sync::MutexGuard<'_, HashSet<NodeId>> {
        self.authenticated.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NodeEventSubscription for SessionWatch {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        self.authenticated().insert(session.node_id);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        if self.authenticated().remove(&session.node_id) {
            return;
        }
        let _ = self.closed.send(Unauthenticated {
            peer: session.peer_name.map(|n| node_part(&n.name).to_string()),
            addr: session.peer_addr,
            accepted: session.is_server,
        });
    }
}

/// The node name in a `ractor_cluster` peer name (`node@host`).
pub(crate) fn node_part(peer_name: &str) -> &str {
    peer_name.split('@').next().unwrap_or_default()
}

/// Watches `server`'s sessions and logs, as an error, every peer refused (or every node that
/// refused this one) for failing the cookie challenge. `tls` says whether the cluster uses TLS
/// (the advice differs). Runs until the node server stops.
pub async fn report_refusals(server: ActorRef<NodeServerMessage>, tls: bool) {
    let (closed, mut closes) = mpsc::unbounded_channel();
    let subscribed = server.cast(NodeServerMessage::SubscribeToEvents {
        id: format!("admission-{}", crate::node::unique_suffix()),
        subscription: Box::new(SessionWatch {
            authenticated: Mutex::new(HashSet::new()),
            closed,
        }),
    });
    if let Err(e) = subscribed {
        tracing::warn!(error = %e, "cannot watch sessions: refused peers are not reported");
        return;
    }
    while let Some(closed) = closes.recv().await {
        let server = server.clone();
        tokio::spawn(async move {
            // Wait for a simultaneous connection's election to settle, then look.
            tokio::time::sleep(SETTLE).await;
            if let Some(peer) = &closed.peer {
                if authenticated_to(&server, peer).await {
                    tracing::debug!(%peer, addr = %closed.addr, "a duplicate session closed");
                    return;
                }
            }
            report(&closed, tls);
        });
    }
}

/// Whether `server` has an authenticated session to node `peer`.
async fn authenticated_to(server: &ActorRef<NodeServerMessage>, peer: &str) -> bool {
    match ractor::call_t!(server, NodeServerMessage::GetSessions, 1_000) {
        Ok(sessions) => sessions
            .values()
            .filter_map(|s| s.peer_name.as_ref())
            .any(|n| node_part(&n.name) == peer),
        Err(_) => false,
    }
}

fn report(closed: &Unauthenticated, tls: bool) {
    let who = closed.peer.as_deref().unwrap_or("(no name given)");
    if closed.accepted && closed.peer.is_none() {
        // Closed before it even named itself: a peer's departure probe (`crate::departure`),
        // which connects and closes at once, or a port scan. Nothing was refused.
        tracing::debug!(from = %closed.addr, "a connection closed before its peer named itself");
    } else if closed.accepted {
        // The dialling end's port changes with every attempt: one report per name, or per host.
        let host = closed
            .addr
            .rsplit_once(':')
            .map_or(&*closed.addr, |(h, _)| h);
        let key = format!("refused:{}", closed.peer.as_deref().unwrap_or(host));
        if report_now(&key) {
            tracing::error!(peer = %who, from = %closed.addr, "refused node {who} connecting from {}: it did not pass the cookie challenge (its --cookie is not this cluster's){}; it is not a member, and this node keeps serving", closed.addr, if tls { "" } else { ", or it speaks TLS and this cluster does not" });
        }
    } else if report_now(&format!("join:{}", closed.addr)) {
        let hint = if tls {
            "check that --cookie is the cluster's"
        } else {
            "check that --cookie is the cluster's, and whether the cluster uses TLS (then give this node --tls-cert, --tls-key and --tls-ca)"
        };
        tracing::error!(peer = %who, addr = %closed.addr, "could not join node {who} at {}: the session closed before it was authenticated; {hint}. Retrying", closed.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_reported_once_then_not_again_for_a_while() {
        let key = format!("test-{}", crate::node::unique_suffix());
        assert!(report_now(&key));
        assert!(!report_now(&key));
        assert!(report_now(&format!("{key}-other")));
    }

    #[test]
    fn the_node_name_is_what_comes_before_the_at() {
        assert_eq!(node_part("n1@127.0.0.1"), "n1");
        assert_eq!(node_part("n1"), "n1");
    }
}
