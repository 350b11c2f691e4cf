//! Seeing a peer's process end within milliseconds, instead of after its heartbeats lapse.
//!
//! ```text
//!  NodeServer ─ session closed (peer n3, listening at 127.0.0.1:p) ─► probe 127.0.0.1:p
//!     refused, and refused again a moment later ─► ControlMsg::PeerGone(n3) to every control plane
//!     accepted ─► nothing: the process runs (a duplicate session closed, or the link broke);
//!                 its heartbeats decide
//! ```
//!
//! When a node's process ends — `kill -9`, a crash, an exit — the kernel closes its sockets:
//! its peers see their sessions to it close within a millisecond or two on loopback, and its
//! listening port refuses connections from then on. A closed session alone proves nothing (a
//! session may be closed as a duplicate, or by a broken link while the process runs); a
//! refused port on top of it does: the process no longer listens, so none of its copies can
//! take a stimulus, and the manager may promote their standbys at once, without waiting for
//! their leases to lapse (`ControlInput::NodeGone`). A hung process (`SIGSTOP`) keeps its
//! sessions and its port: only its missed heartbeats, and its leases, speak for it.

use crate::control::ControlMsg;
use ractor::ActorRef;
use ractor_cluster::node::{NodeEventSubscription, NodeServerSessionInformation};
use ractor_cluster::NodeServerMessage;
use std::time::Duration;
use tokio::sync::mpsc;
use understudy_runtime::NodeName;

/// How long one probe of a peer's port may take. On loopback a refusal is immediate; a live
/// but busy process accepts from its kernel backlog just as fast.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// The pause between the two probes: the port must refuse both times, so that the moment a
/// node's listener is being replaced is not mistaken for its end.
const SECOND_PROBE_AFTER: Duration = Duration::from_millis(2);

/// The pauses before each probe of a port that accepted the probe before it.
const ACCEPTED_AGAIN_AFTER_MS: [u64; 6] = [0, 1, 2, 4, 8, 16];

/// A session that closed: the peer's node name and the address it listens on.
#[derive(Debug)]
struct Closed {
    node: NodeName,
    listens_at: String,
}

/// The subscription to the node server's session events: forwards every closed session of a
/// named peer.
struct SessionEvents {
    closed: mpsc::UnboundedSender<Closed>,
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, _: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        let Some(peer) = session.peer_name else {
            return;
        };
        // The peer's name is `node@host`; the node name is what comes before the `@`.
        let node = peer.name.split('@').next().unwrap_or_default();
        if node.is_empty() || peer.connection_string.is_empty() {
            return;
        }
        let _ = self.closed.send(Closed {
            node: NodeName::new(node),
            listens_at: peer.connection_string,
        });
    }
}

/// Subscribes to `server`'s session events and, for every peer whose session closed and whose
/// port then refuses connections, tells each of `planes` ([`ControlMsg::PeerGone`]). Runs until
/// the node server stops.
pub async fn watch_departures(
    server: ActorRef<NodeServerMessage>,
    me: NodeName,
    planes: Vec<ActorRef<ControlMsg>>,
) {
    let (closed, mut closes) = mpsc::unbounded_channel();
    let subscribed = server.cast(NodeServerMessage::SubscribeToEvents {
        id: format!("departures-{}", crate::node::unique_suffix()),
        subscription: Box::new(SessionEvents { closed }),
    });
    if let Err(e) = subscribed {
        tracing::warn!(error = %e, "cannot watch sessions: a peer's end is seen by its missed heartbeats only");
        return;
    }
    while let Some(Closed { node, listens_at }) = closes.recv().await {
        if node == me {
            continue;
        }
        let planes = planes.clone();
        tokio::spawn(async move {
            if !refuses(&listens_at).await {
                tracing::debug!(peer = %node, %listens_at, "a session closed, but the peer still listens");
                return;
            }
            tracing::info!(peer = %node, %listens_at, "the peer's session closed and its port refuses: its process ended");
            for plane in &planes {
                let _ = plane.cast(ControlMsg::PeerGone(node.clone()));
            }
        });
    }
}

/// Whether `addr` refuses connections twice in a row (the process behind it no longer
/// listens). A dying process's sessions may close a fraction of a millisecond before its
/// listener does, so a port that still accepts is probed again a few times, over about 30 ms,
/// before it counts as alive. A timeout or any other error counts as not refused: heartbeats
/// decide then.
async fn refuses(addr: &str) -> bool {
    for pause_ms in ACCEPTED_AGAIN_AFTER_MS {
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        if refused_once(addr).await {
            tokio::time::sleep(SECOND_PROBE_AFTER).await;
            return refused_once(addr).await;
        }
    }
    false
}

async fn refused_once(addr: &str) -> bool {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_nobody_listens_on_refuses_and_a_listening_one_does_not() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind a loopback port: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a.to_string(),
            Err(e) => panic!("no local address: {e}"),
        };
        assert!(!refuses(&addr).await, "a listening port accepts");
        drop(listener);
        assert!(refuses(&addr).await, "a closed port refuses");
    }
}
