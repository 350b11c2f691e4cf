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
/// The pause between the two probes: the port must refuse both times, so that one refusal in
/// the instant a listener is being set up again is not mistaken for the process's end.
const SECOND_PROBE_AFTER: Duration = Duration::from_micros(100);

/// The pauses, in microseconds, before each probe of a port that accepted the probe before it:
/// a dying process's sessions may close a moment before its listener does (the kernel closes
/// its descriptors one by one), so the first ones come quickly; about 30 ms in all.
const ACCEPTED_AGAIN_AFTER_US: [u64; 10] =
    [0, 200, 200, 400, 800, 1_600, 3_200, 6_400, 8_000, 10_000];

/// A session that closed: the peer's node name and the address it listens on.
#[derive(Debug)]
struct Closed {
    node: NodeName,
    listens_at: String,
}

/// The subscription to the node server's session events: forwards every closed session of a
/// named peer that had been authenticated. A session that never passed the cookie challenge
/// names a peer only as the peer claimed it: a process with a wrong cookie could claim to be
/// any node, at a port that refuses, and must not count that node down.
struct SessionEvents {
    closed: mpsc::UnboundedSender<Closed>,
    authenticated: std::sync::Mutex<std::collections::HashSet<ractor_cluster::NodeId>>,
}

impl SessionEvents {
    fn authenticated(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<ractor_cluster::NodeId>> {
        self.authenticated.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        self.authenticated().insert(session.node_id);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        if !self.authenticated().remove(&session.node_id) {
            return;
        }
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
        subscription: Box::new(SessionEvents {
            closed,
            authenticated: std::sync::Mutex::new(std::collections::HashSet::new()),
        }),
    });
    if let Err(e) = subscribed {
        tracing::warn!(error = %e, "cannot watch sessions: a peer's end is seen by its missed heartbeats only");
        return;
    }
    while let Some(Closed { node, listens_at }) = closes.recv().await {
        if node == me {
            continue;
        }
        tracing::debug!(peer = %node, %listens_at, "a session closed: probing the peer's port");
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
/// listens). A port that still accepts is probed again a few times, over about 30 ms
/// ([`ACCEPTED_AGAIN_AFTER_US`]), before it counts as alive. A timeout or any other error
/// counts as not refused: heartbeats decide then. The probes run on a blocking thread: their
/// pauses are shorter than the async timer's millisecond.
async fn refuses(addr: &str) -> bool {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || refuses_now(&addr))
        .await
        .unwrap_or(false)
}

fn refuses_now(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Some(addr) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    for pause_us in ACCEPTED_AGAIN_AFTER_US {
        if pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
        if refused_once(&addr) {
            std::thread::sleep(SECOND_PROBE_AFTER);
            return refused_once(&addr);
        }
    }
    false
}

fn refused_once(addr: &std::net::SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(addr, PROBE_TIMEOUT) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
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
