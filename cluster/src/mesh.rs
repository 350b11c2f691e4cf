//! Every node of a TLS cluster connected to every other. `ractor_cluster` meshes a cluster by
//! itself only over plain TCP (its transitive dialling does not use TLS), so a TLS node turns
//! that off and meshes here instead: each node publishes, as process groups its peers see, the
//! address of every node it has a session with (`understudy.reach.NODE=HOST:PORT`, the address
//! that node listens on); a node that sees a published node it has no session with dials it,
//! with TLS. Of two nodes, the one whose name sorts first dials (one session, no race). A
//! probe publishes nothing and nobody publishes it (it has no endpoint); it dials every node
//! it sees.
//!
//! ```text
//!  b ─join─► seed ◄─join─ c          the seed publishes reach.b=…:pb and reach.c=…:pc
//!  b sees reach.c, has no session to c, and b < c ─TLS dial─► c
//! ```

use crate::admission::{node_part, report_now};
use crate::tls::{DialError, DialPacing, Tls};
use crate::wire::endpoint_group;
use ractor::{ActorCell, ActorRef};
use ractor_cluster::NodeServerMessage;
use std::collections::BTreeSet;
use std::time::Duration;
use understudy_runtime::NodeName;

const PREFIX: &str = "understudy.reach.";

/// How often the published addresses and the sessions are compared.
const EVERY: Duration = Duration::from_millis(100);

/// The process group that says node `node` listens at `addr`.
pub fn reach_group(node: &NodeName, addr: &str) -> String {
    format!("{PREFIX}{}={addr}", node.0)
}

/// The node and address a [`reach_group`] names, if `group` is one (and well formed: it comes
/// from a peer).
pub fn reach_of_group(group: &str) -> Option<(NodeName, String)> {
    let (node, addr) = group.strip_prefix(PREFIX)?.split_once('=')?;
    let (_, port) = addr.rsplit_once(':')?;
    let name_ok = !node.is_empty()
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (name_ok && port.parse::<u16>().is_ok()).then(|| (NodeName::new(node), addr.to_string()))
}

/// Keeps `server` (of node, or probe, `me`) connected to every node it sees published, dialling
/// with `tls`; with a `publisher` (a node's endpoint, whose process groups its peers see),
/// also publishes the nodes `me` has sessions with. Runs until aborted.
pub async fn keep_meshed(
    server: ActorRef<NodeServerMessage>,
    me: NodeName,
    publisher: Option<ActorCell>,
    tls: Tls,
) {
    let mut published: BTreeSet<String> = BTreeSet::new();
    let mut pacing = DialPacing::default();
    let mut every = tokio::time::interval(EVERY);
    loop {
        every.tick().await;
        let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1_000) else {
            continue;
        };
        let peers: Vec<(NodeName, String)> = sessions
            .values()
            .filter_map(|s| s.peer_name.as_ref())
            .map(|n| {
                (
                    NodeName::new(node_part(&n.name)),
                    n.connection_string.clone(),
                )
            })
            .collect();
        let connected: BTreeSet<&NodeName> = peers.iter().map(|(n, _)| n).collect();
        if let Some(cell) = &publisher {
            let want: BTreeSet<String> = peers
                .iter()
                .filter(|(node, addr)| *node != me && !addr.is_empty() && is_node(node))
                .map(|(node, addr)| reach_group(node, addr))
                .collect();
            for group in want.difference(&published) {
                ractor::pg::join(group.clone(), vec![cell.clone()]);
            }
            for group in published.difference(&want) {
                ractor::pg::leave(group.clone(), vec![cell.clone()]);
            }
            published = want;
        }
        let seen: BTreeSet<(NodeName, String)> = ractor::pg::which_groups()
            .iter()
            .filter(|g| {
                ractor::pg::get_members(g)
                    .iter()
                    .any(|c| !c.get_id().is_local())
            })
            .filter_map(|g| reach_of_group(g))
            .collect();
        for (node, addr) in seen {
            // A node dials the nodes whose names sort after its own; a probe dials them all.
            let mine = publisher.is_none() || me < node;
            if node == me || connected.contains(&node) || !mine {
                continue;
            }
            match pacing.dial(&server, &addr, Some(&tls)).await {
                None => {}
                Some(Ok(())) => {
                    tracing::debug!(%me, peer = %node, %addr, "dialled a node another node reaches")
                }
                // Reported once per 10 s; meanwhile as any failed dial.
                Some(Err(e @ DialError::Handshake { .. }))
                    if report_now(&format!("mesh:{addr}")) =>
                {
                    tracing::error!(%me, peer = %node, error = %e, "cannot reach a node of the cluster over TLS");
                }
                Some(Err(e)) => {
                    tracing::debug!(%me, peer = %node, error = %e, "dial failed; will retry")
                }
            }
        }
    }
}

/// Whether `node` is a node (it advertises an endpoint), not a probe.
fn is_node(node: &NodeName) -> bool {
    ractor::pg::get_members(&endpoint_group(node))
        .iter()
        .any(|c| !c.get_id().is_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reach_group_names_its_node_and_address_and_junk_is_refused() {
        let g = reach_group(&NodeName::new("n2"), "127.0.0.1:7002");
        assert_eq!(
            reach_of_group(&g),
            Some((NodeName::new("n2"), "127.0.0.1:7002".to_string()))
        );
        assert_eq!(reach_of_group("understudy.reach.n2=127.0.0.1"), None);
        assert_eq!(reach_of_group("understudy.reach.=127.0.0.1:1"), None);
        assert_eq!(reach_of_group("understudy.reach.a b=127.0.0.1:1"), None);
        assert_eq!(reach_of_group("understudy.node.n2"), None);
    }
}
