//! How the members of a group talk: openraft's RPCs, encoded as one MessagePack frame each,
//! over a byte channel the application provides ([`RaftTransport`]).
//!
//! ```text
//!  sender member                                                receiving member
//!  openraft ──RPC──▶ MemberLink ──RaftRequest bytes──▶ RaftTransport ──▶ RaftGroup::handle_rpc
//!           ◀─Result─          ◀──RaftReply bytes────               ◀──   (openraft on that side)
//! ```
//!
//! The receiving side hands openraft only requests that decode, are meant for it and pass
//! [`RaftRpc::check`]; anything else is answered with [`RaftReply::Refused`].
//!
//! A transport failure becomes openraft's `Unreachable` (openraft then waits
//! [`RaftTuning::unreachable_backoff`](super::RaftTuning::unreachable_backoff) before retrying
//! that member); a reply that cannot be decoded, or a [`RaftReply::Refused`], becomes
//! `Unreachable` too, so that a member speaking another version is not hammered.

use super::types::{GroupRaftConfig, MemberId};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, LogId, LogIdOptionExt, Membership, Vote};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The byte channel from this member to the other members of its group (later: the
/// `ractor_cluster` wire). The receiving side hands the request to
/// [`RaftGroup::handle_rpc`](super::RaftGroup::handle_rpc) and sends back what it returns.
///
/// The transport should authenticate its peers: Raft tolerates lost, late and duplicated
/// messages, not forged ones.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `request` to member `target`, which runs on the node named `node` (as given when
    /// the member was added), and resolves to its reply. There is no need for a timeout here:
    /// openraft bounds every call by its own.
    fn call(
        &self,
        target: MemberId,
        node: &str,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send>>;
}

/// Why a [`RaftTransport`] could not deliver a request or bring back its reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The member cannot be reached now (no link, link down, cut off). Raft backs off for
    /// [`RaftTuning::unreachable_backoff`](super::RaftTuning::unreachable_backoff) and retries.
    #[error("member {target} is unreachable: {reason}; Raft retries after its back-off")]
    Unreachable {
        /// The member the request was for.
        target: MemberId,
        /// What the transport saw.
        reason: String,
    },
    /// The request may have been sent but the link failed before the reply came back. Raft
    /// retries at its next heartbeat.
    #[error("the link to member {target} broke during a call: {reason}; Raft retries at its next heartbeat")]
    Broken {
        /// The member the request was for.
        target: MemberId,
        /// What the transport saw.
        reason: String,
    },
}

/// One request on the wire: which member it is for, and the RPC.
#[derive(Debug, Serialize, Deserialize)]
pub struct RaftRequest {
    /// The member the request is for; a member refuses requests meant for another.
    pub target: MemberId,
    /// The RPC itself.
    pub rpc: RaftRpc,
}

/// The RPCs openraft 0.9 sends between members (snapshots travel in chunks).
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Entries to append (none: a heartbeat), from the leader.
    AppendEntries(AppendEntriesRequest<GroupRaftConfig>),
    /// A request for a vote, from a candidate.
    Vote(VoteRequest<MemberId>),
    /// One chunk of a snapshot, from the leader to a member too far behind for the log.
    InstallSnapshot(InstallSnapshotRequest<GroupRaftConfig>),
}

/// The reply to a [`RaftRequest`], one variant per [`RaftRpc`] plus a refusal.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// Openraft's answer to [`RaftRpc::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>),
    /// Openraft's answer to [`RaftRpc::Vote`].
    Vote(Result<VoteResponse<MemberId>, RaftError<MemberId>>),
    /// Openraft's answer to [`RaftRpc::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<MemberId>, RaftError<MemberId, InstallSnapshotError>>,
    ),
    /// The request was not handed to openraft: unreadable, inconsistent (see
    /// [`RaftRpc::check`]), meant for another member, or beyond a limit. The reason says which.
    Refused {
        /// Why the member refused the request.
        reason: String,
    },
}

/// Terms and log indexes beyond any real group; larger ones are refused, so that no `+ 1` on
/// them can overflow.
const MAX_TERM_OR_INDEX: u64 = 1 << 62;

impl RaftRpc {
    /// Checks what openraft takes for granted in a request from a peer: sane terms and
    /// indexes, entries that follow `prev_log_id` one by one in non-decreasing terms no later
    /// than the sender's, memberships whose voters all have a node. Openraft only asserts these
    /// (in debug builds, by panicking), so a damaged request must be refused before it gets
    /// there. This is no defence against a forger: Raft trusts well-formed requests, and the
    /// transport must authenticate its peers.
    pub fn check(&self) -> Result<(), String> {
        match self {
            RaftRpc::AppendEntries(r) => {
                let term = sane_term(&r.vote)?;
                sane_log_id("prev_log_id", r.prev_log_id.as_ref(), term)?;
                sane_log_id("leader_commit", r.leader_commit.as_ref(), term)?;
                let mut next_index = r.prev_log_id.next_index();
                let mut last_term = r.prev_log_id.map_or(0, |l| l.leader_id.term);
                for entry in &r.entries {
                    let log_id = entry.log_id;
                    sane_log_id("an entry", Some(&log_id), term)?;
                    if log_id.index != next_index || log_id.leader_id.term < last_term {
                        return Err(format!(
                            "entry {log_id} does not follow the one before it (index {next_index}, \
                             term at least {last_term})"
                        ));
                    }
                    if let EntryPayload::Membership(m) = &entry.payload {
                        sane_membership(m)?;
                    }
                    next_index = log_id.index + 1;
                    last_term = log_id.leader_id.term;
                }
                Ok(())
            }
            RaftRpc::Vote(r) => {
                let term = sane_term(&r.vote)?;
                sane_log_id("last_log_id", r.last_log_id.as_ref(), term)
            }
            RaftRpc::InstallSnapshot(r) => {
                let term = sane_term(&r.vote)?;
                sane_log_id(
                    "the snapshot's last log id",
                    r.meta.last_log_id.as_ref(),
                    term,
                )?;
                let membership = &r.meta.last_membership;
                sane_log_id(
                    "the snapshot's membership",
                    membership.log_id().as_ref(),
                    term,
                )?;
                if membership.log_id().index() > r.meta.last_log_id.index() {
                    return Err("the snapshot's membership is later than its last entry".into());
                }
                sane_membership(membership.membership())
            }
        }
    }
}

fn sane_term(vote: &Vote<MemberId>) -> Result<u64, String> {
    let term = vote.leader_id().term;
    if term > MAX_TERM_OR_INDEX {
        return Err(format!("term {term} is beyond any real group"));
    }
    Ok(term)
}

fn sane_log_id(what: &str, log_id: Option<&LogId<MemberId>>, term: u64) -> Result<(), String> {
    let Some(log_id) = log_id else {
        return Ok(());
    };
    if log_id.index > MAX_TERM_OR_INDEX {
        return Err(format!(
            "{what} has index {}, beyond any real log",
            log_id.index
        ));
    }
    if log_id.leader_id.term > term {
        return Err(format!(
            "{what} ({log_id}) is from a term later than the sender's ({term})"
        ));
    }
    Ok(())
}

fn sane_membership(membership: &Membership<MemberId, BasicNode>) -> Result<(), String> {
    let configs = membership.get_joint_config();
    if configs.len() > 2 {
        return Err(format!("a membership with {} joint configs", configs.len()));
    }
    for voter in configs.iter().flatten() {
        if membership.get_node(voter).is_none() {
            return Err(format!("voter {voter} has no node in the membership"));
        }
    }
    Ok(())
}

impl RaftRequest {
    /// Encodes the request as MessagePack: the derived form, with the entries' commands and
    /// the snapshot chunks written as byte strings (see `RequestOut`).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        to_vec_named_bin(&RequestOut::of(self))
            .map_err(|e| format!("cannot encode a raft request: {e}"))
    }

    /// Decodes a request; any byte string gives either a request or an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("malformed raft request: {e}"))
    }
}

impl RaftReply {
    /// Encodes the reply as MessagePack; if that fails, a [`RaftReply::Refused`] saying why.
    pub fn encode(&self) -> Vec<u8> {
        match to_vec_named_bin(self) {
            Ok(bytes) => bytes,
            Err(e) => {
                let refused = RaftReply::Refused {
                    reason: format!("the member could not encode its reply: {e}"),
                };
                // A `Refused` holds a string only, which always encodes; an empty reply would
                // still decode as an error on the other side.
                rmp_serde::to_vec_named(&refused).unwrap_or_default()
            }
        }
    }

    /// Decodes a reply; any byte string gives either a reply or an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("malformed raft reply: {e}"))
    }
}

/// A [`RaftRequest`] as it is written: the same fields and variants as the derived form, so
/// [`RaftRequest::decode`] reads it, but every command and snapshot chunk is one MessagePack
/// byte string, written with one copy. (Openraft's own `Entry` writes its command, a `Vec<u8>`,
/// as an array of integers, with a call per byte: at a thousand units, where entries carry
/// thousands of inputs, that was most of the leader's time.)
#[derive(Serialize)]
struct RequestOut<'a> {
    target: MemberId,
    rpc: RpcOut<'a>,
}

#[derive(Serialize)]
enum RpcOut<'a> {
    AppendEntries(AppendOut<'a>),
    Vote(&'a VoteRequest<MemberId>),
    InstallSnapshot(SnapshotChunkOut<'a>),
}

#[derive(Serialize)]
struct AppendOut<'a> {
    vote: &'a Vote<MemberId>,
    prev_log_id: &'a Option<LogId<MemberId>>,
    entries: Vec<EntryOut<'a>>,
    leader_commit: &'a Option<LogId<MemberId>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    log_id: &'a LogId<MemberId>,
    payload: PayloadOut<'a>,
}

#[derive(Serialize)]
enum PayloadOut<'a> {
    Blank,
    Normal(#[serde(with = "understudy_actors::codec::bin")] &'a [u8]),
    Membership(&'a Membership<MemberId, BasicNode>),
}

#[derive(Serialize)]
struct SnapshotChunkOut<'a> {
    vote: &'a Vote<MemberId>,
    meta: &'a openraft::SnapshotMeta<MemberId, BasicNode>,
    offset: u64,
    #[serde(with = "understudy_actors::codec::bin")]
    data: &'a [u8],
    done: bool,
}

impl<'a> RequestOut<'a> {
    fn of(request: &'a RaftRequest) -> Self {
        let rpc = match &request.rpc {
            RaftRpc::AppendEntries(r) => RpcOut::AppendEntries(AppendOut {
                vote: &r.vote,
                prev_log_id: &r.prev_log_id,
                entries: r
                    .entries
                    .iter()
                    .map(|e| EntryOut {
                        log_id: &e.log_id,
                        payload: match &e.payload {
                            EntryPayload::Blank => PayloadOut::Blank,
                            EntryPayload::Normal(command) => PayloadOut::Normal(command),
                            EntryPayload::Membership(m) => PayloadOut::Membership(m),
                        },
                    })
                    .collect(),
                leader_commit: &r.leader_commit,
            }),
            RaftRpc::Vote(r) => RpcOut::Vote(r),
            RaftRpc::InstallSnapshot(r) => RpcOut::InstallSnapshot(SnapshotChunkOut {
                vote: &r.vote,
                meta: &r.meta,
                offset: r.offset,
                data: &r.data,
                done: r.done,
            }),
        };
        RequestOut {
            target: request.target,
            rpc,
        }
    }
}

/// MessagePack with struct fields by name, and byte strings (the entries' commands) as `bin`
/// rather than arrays of integers: at a thousand units the entries are large, and an array
/// costs up to two bytes and a call per byte to write and to read. `rmp_serde::from_slice`
/// reads either form.
fn to_vec_named_bin<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut bytes = Vec::new();
    let mut serializer = rmp_serde::Serializer::new(&mut bytes)
        .with_struct_map()
        .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
    value.serialize(&mut serializer)?;
    Ok(bytes)
}

/// For an append-entries request of `entries` entries that encodes to `bytes`, over `limit`:
/// how many entries to send instead (about as many as fit, at least one). `None` when it may
/// go as it is: within the limit, or a single entry, which cannot be split.
fn fewer_entries(entries: u64, bytes: u64, limit: u64) -> Option<u64> {
    if entries <= 1 || bytes <= limit {
        return None;
    }
    let fit = (u128::from(entries) * u128::from(limit) / u128::from(bytes)) as u64;
    Some(fit.clamp(1, entries - 1))
}

/// Openraft's network factory for one member: makes a [`MemberLink`] per target.
pub(crate) struct GroupNetwork {
    transport: Arc<dyn RaftTransport>,
    backoff: Duration,
    max_append_bytes: u64,
}

impl GroupNetwork {
    pub(crate) fn new(
        transport: Arc<dyn RaftTransport>,
        backoff: Duration,
        max_append_bytes: u64,
    ) -> Self {
        GroupNetwork {
            transport,
            backoff,
            max_append_bytes,
        }
    }
}

impl RaftNetworkFactory<GroupRaftConfig> for GroupNetwork {
    type Network = MemberLink;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> MemberLink {
        MemberLink {
            target,
            node: node.clone(),
            transport: Arc::clone(&self.transport),
            backoff: self.backoff,
            max_append_bytes: self.max_append_bytes,
        }
    }
}

/// Openraft's client for one target member: encodes each RPC, calls the transport, decodes
/// the reply.
pub(crate) struct MemberLink {
    target: MemberId,
    node: BasicNode,
    transport: Arc<dyn RaftTransport>,
    backoff: Duration,
    max_append_bytes: u64,
}

impl fmt::Debug for MemberLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberLink")
            .field("target", &self.target)
            .field("node", &self.node.addr)
            .finish_non_exhaustive()
    }
}

/// A message as an openraft network error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkFault(String);

impl MemberLink {
    /// Sends one RPC and returns the decoded reply, or the RPC error openraft should see.
    async fn exchange<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
    ) -> Result<RaftReply, RPCError<MemberId, BasicNode, E>> {
        let unreachable =
            |reason: String| RPCError::Unreachable(Unreachable::new(&LinkFault(reason)));
        let entries = match &rpc {
            RaftRpc::AppendEntries(append) => append.entries.len() as u64,
            _ => 0,
        };
        let request = RaftRequest {
            target: self.target,
            rpc,
        }
        .encode()
        .map_err(|reason| RPCError::Network(NetworkError::new(&LinkFault(reason))))?;
        if let Some(hint) = fewer_entries(entries, request.len() as u64, self.max_append_bytes) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let reply = match self
            .transport
            .call(self.target, &self.node.addr, request)
            .await
        {
            Ok(reply) => reply,
            Err(e @ TransportError::Unreachable { .. }) => return Err(unreachable(e.to_string())),
            Err(e @ TransportError::Broken { .. }) => {
                return Err(RPCError::Network(NetworkError::new(&e)))
            }
        };
        match RaftReply::decode(&reply) {
            Ok(RaftReply::Refused { reason }) => Err(unreachable(format!(
                "member {} ({}) refused the request: {reason}",
                self.target, self.node.addr
            ))),
            Ok(reply) => Ok(reply),
            Err(reason) => Err(unreachable(format!(
                "member {} ({}): {reason}",
                self.target, self.node.addr
            ))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<MemberId, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            e,
        ))
    }

    fn mismatch<E: std::error::Error>(
        &self,
        asked: &str,
        reply: &RaftReply,
    ) -> RPCError<MemberId, BasicNode, E> {
        let reason = format!(
            "member {} answered {asked} with {}",
            self.target,
            match reply {
                RaftReply::AppendEntries(_) => "an append-entries reply",
                RaftReply::Vote(_) => "a vote reply",
                RaftReply::InstallSnapshot(_) => "an install-snapshot reply",
                RaftReply::Refused { .. } => "a refusal",
            }
        );
        RPCError::Unreachable(Unreachable::new(&LinkFault(reason)))
    }
}

impl RaftNetwork<GroupRaftConfig> for MemberLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<GroupRaftConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, BasicNode, RaftError<MemberId>>>
    {
        match self.exchange(RaftRpc::AppendEntries(rpc)).await? {
            RaftReply::AppendEntries(Ok(resp)) => Ok(resp),
            RaftReply::AppendEntries(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatch("append-entries", &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<GroupRaftConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MemberId>,
        RPCError<MemberId, BasicNode, RaftError<MemberId, InstallSnapshotError>>,
    > {
        match self.exchange(RaftRpc::InstallSnapshot(rpc)).await? {
            RaftReply::InstallSnapshot(Ok(resp)) => Ok(resp),
            RaftReply::InstallSnapshot(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatch("install-snapshot", &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, BasicNode, RaftError<MemberId>>> {
        match self.exchange(RaftRpc::Vote(rpc)).await? {
            RaftReply::Vote(Ok(resp)) => Ok(resp),
            RaftReply::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatch("vote", &other)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn requests() -> Vec<RaftRequest> {
        let vote = Vote::new_committed(2, 2);
        let entry = |index: u64, payload| openraft::Entry::<GroupRaftConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(2, 2), index),
            payload,
        };
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([(1, BasicNode::new("n1")), (2, BasicNode::new("n2"))]),
        );
        let command: Vec<u8> = (0..=255).cycle().take(5000).collect();
        let rpcs = vec![
            RaftRpc::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 0)),
                leader_commit: None,
                entries: vec![
                    entry(1, EntryPayload::Blank),
                    entry(2, EntryPayload::Normal(command.clone())),
                    entry(3, EntryPayload::Membership(membership)),
                    entry(4, EntryPayload::Normal(Vec::new())),
                ],
            }),
            RaftRpc::Vote(VoteRequest::new(Vote::new(3, 3), None)),
            RaftRpc::InstallSnapshot(InstallSnapshotRequest {
                vote,
                meta: openraft::SnapshotMeta::default(),
                offset: 7,
                data: command,
                done: true,
            }),
        ];
        rpcs.into_iter()
            .map(|rpc| RaftRequest { target: 1, rpc })
            .collect()
    }

    #[test]
    fn an_append_over_the_byte_limit_asks_for_about_as_many_entries_as_fit_and_at_least_one() {
        assert_eq!(fewer_entries(300, 4_000_000, 1_000_000), Some(75));
        assert_eq!(fewer_entries(2, 1_000_000_000, 1), Some(1));
        assert_eq!(fewer_entries(10, 10_001, 10_000), Some(9), "always fewer");
        assert_eq!(fewer_entries(10, 10_000, 10_000), None, "within the limit");
        assert_eq!(
            fewer_entries(1, 50_000_000, 1_000),
            None,
            "one entry cannot be split"
        );
        assert_eq!(fewer_entries(0, 100, 10), None, "a heartbeat");
    }

    #[test]
    fn a_request_written_with_byte_strings_reads_back_as_the_derived_form_wrote_it() {
        for request in requests() {
            let derived = rmp_serde::to_vec_named(&request).expect("the derived form encodes");
            let written = request.encode().expect("encodes");
            let read = RaftRequest::decode(&written).expect("decodes");
            assert_eq!(
                rmp_serde::to_vec_named(&read).expect("encodes"),
                derived,
                "{request:?}"
            );
            // And the derived form (an earlier node's) still reads.
            assert!(RaftRequest::decode(&derived).is_ok());
        }
        let append = &requests()[0];
        let written = append.encode().expect("encodes");
        let derived = rmp_serde::to_vec_named(append).expect("encodes");
        assert!(
            written.len() < derived.len() - 2000,
            "{} vs {}",
            written.len(),
            derived.len()
        );
    }

    mod fuzz {
        //! Property tests of [`RaftRequest::decode`] and [`RaftReply::decode`]: the bytes come
        //! from another node, and what decodes must pass [`RaftRpc::check`] without a panic.

        use super::super::*;
        use openraft::error::Fatal;
        use openraft::{CommittedLeaderId, SnapshotMeta, StoredMembership};
        use proptest::prelude::*;
        use proptest::strategy::ValueTree;
        use std::collections::BTreeMap;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 384,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Mostly the small numbers of a real group, sometimes anything.
        fn number() -> impl Strategy<Value = u64> {
            prop_oneof![4 => 0..16u64, 1 => any::<u64>()]
        }

        fn log_id() -> impl Strategy<Value = LogId<MemberId>> {
            (number(), 0..4u64, number()).prop_map(|(term, node, index)| {
                LogId::new(CommittedLeaderId::new(term, node), index)
            })
        }

        fn vote() -> impl Strategy<Value = Vote<MemberId>> {
            (number(), 0..4u64, any::<bool>()).prop_map(|(term, node, committed)| {
                if committed {
                    Vote::new_committed(term, node)
                } else {
                    Vote::new(term, node)
                }
            })
        }

        fn membership() -> impl Strategy<Value = Membership<MemberId, BasicNode>> {
            proptest::collection::btree_set(0..6u64, 1..4).prop_map(|voters| {
                let nodes: BTreeMap<MemberId, BasicNode> = voters
                    .iter()
                    .map(|&id| (id, BasicNode::new(format!("n{id}"))))
                    .collect();
                Membership::new(vec![voters], nodes)
            })
        }

        fn payload() -> impl Strategy<Value = EntryPayload<GroupRaftConfig>> {
            prop_oneof![
                Just(EntryPayload::Blank),
                proptest::collection::vec(any::<u8>(), 0..48).prop_map(EntryPayload::Normal),
                membership().prop_map(EntryPayload::Membership),
            ]
        }

        fn rpc() -> impl Strategy<Value = RaftRpc> {
            let entry = (log_id(), payload()).prop_map(|(log_id, payload)| openraft::Entry::<
                GroupRaftConfig,
            > {
                log_id,
                payload,
            });
            let meta = (
                proptest::option::of(log_id()),
                proptest::option::of(log_id()),
                membership(),
                "[a-z0-9-]{0,12}",
            )
                .prop_map(
                    |(last_log_id, membership_at, membership, snapshot_id)| SnapshotMeta {
                        last_log_id,
                        last_membership: StoredMembership::new(membership_at, membership),
                        snapshot_id,
                    },
                );
            prop_oneof![
                (
                    vote(),
                    proptest::option::of(log_id()),
                    proptest::collection::vec(entry, 0..4),
                    proptest::option::of(log_id()),
                )
                    .prop_map(|(vote, prev_log_id, entries, leader_commit)| {
                        RaftRpc::AppendEntries(AppendEntriesRequest {
                            vote,
                            prev_log_id,
                            entries,
                            leader_commit,
                        })
                    }),
                (vote(), proptest::option::of(log_id()))
                    .prop_map(|(vote, last)| RaftRpc::Vote(VoteRequest::new(vote, last))),
                (
                    vote(),
                    meta,
                    any::<u64>(),
                    proptest::collection::vec(any::<u8>(), 0..48),
                    any::<bool>(),
                )
                    .prop_map(|(vote, meta, offset, data, done)| {
                        RaftRpc::InstallSnapshot(InstallSnapshotRequest {
                            vote,
                            meta,
                            offset,
                            data,
                            done,
                        })
                    }),
            ]
        }

        fn request() -> impl Strategy<Value = RaftRequest> {
            (0..4u64, rpc()).prop_map(|(target, rpc)| RaftRequest { target, rpc })
        }

        fn reply() -> impl Strategy<Value = RaftReply> {
            let fatal = prop_oneof![Just(Fatal::Panicked), Just(Fatal::Stopped)];
            prop_oneof![
                ".{0,24}".prop_map(|reason| RaftReply::Refused { reason }),
                (vote(), proptest::option::of(log_id()), any::<bool>()).prop_map(
                    |(vote, last, granted)| RaftReply::Vote(Ok(VoteResponse::new(
                        vote, last, granted
                    )))
                ),
                // (The response is not `Clone`, which `Just` needs.)
                (0..4u8, proptest::option::of(log_id()), vote()).prop_map(
                    |(kind, matched, vote)| {
                        RaftReply::AppendEntries(Ok(match kind {
                            0 => AppendEntriesResponse::Success,
                            1 => AppendEntriesResponse::Conflict,
                            2 => AppendEntriesResponse::PartialSuccess(matched),
                            _ => AppendEntriesResponse::HigherVote(vote),
                        }))
                    }
                ),
                vote().prop_map(
                    |vote| RaftReply::InstallSnapshot(Ok(InstallSnapshotResponse { vote }))
                ),
                fatal.prop_map(|f| RaftReply::Vote(Err(RaftError::Fatal(f)))),
            ]
        }

        /// A request that decoded is checked without a panic; one that did not is refused as a
        /// malformed raft request.
        fn decodes_and_is_checked_or_is_refused(bytes: &[u8]) -> Result<(), TestCaseError> {
            match RaftRequest::decode(bytes) {
                Ok(request) => {
                    let _ = request.rpc.check();
                }
                Err(e) => prop_assert!(e.starts_with("malformed raft request: "), "{e}"),
            }
            Ok(())
        }

        fn decodes_or_is_refused_as_a_reply(bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Err(e) = RaftReply::decode(bytes) {
                prop_assert!(e.starts_with("malformed raft reply: "), "{e}");
            }
            Ok(())
        }

        /// The derived form of a value: what the derived `Serialize` writes, to compare
        /// values that have no `PartialEq`.
        fn derived<T: Serialize>(value: &T) -> Result<Vec<u8>, TestCaseError> {
            rmp_serde::to_vec_named(value).map_err(|e| TestCaseError::fail(e.to_string()))
        }

        fn damaged(
            bytes: &[u8],
            cut: prop::sample::Index,
            at: prop::sample::Index,
            flip: u8,
        ) -> [Vec<u8>; 2] {
            understudy_actors::codec::damaged(
                bytes,
                cut.index(bytes.len()),
                at.index(bytes.len()),
                flip,
            )
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn a_malformed_raft_frame_is_refused_with_a_clear_error(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                decodes_and_is_checked_or_is_refused(&bytes)?;
                decodes_or_is_refused_as_a_reply(&bytes)?;
            }

            #[test]
            fn a_raft_request_or_reply_round_trips(request in request(), reply in reply()) {
                let written = request.encode().map_err(TestCaseError::fail)?;
                let read = RaftRequest::decode(&written).map_err(TestCaseError::fail)?;
                prop_assert_eq!(derived(&read)?, derived(&request)?);
                let written = reply.encode();
                let read = RaftReply::decode(&written).map_err(TestCaseError::fail)?;
                prop_assert_eq!(derived(&read)?, derived(&reply)?);
            }

            #[test]
            fn a_truncated_or_damaged_raft_frame_decodes_and_is_checked_or_is_refused(
                request in request(),
                reply in reply(),
                cut in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                flip in 1..=255u8,
            ) {
                let written = request.encode().map_err(TestCaseError::fail)?;
                for bytes in damaged(&written, cut, at, flip) {
                    decodes_and_is_checked_or_is_refused(&bytes)?;
                }
                for bytes in damaged(&reply.encode(), cut, at, flip) {
                    decodes_or_is_refused_as_a_reply(&bytes)?;
                }
            }
        }

        #[test]
        fn the_fuzzed_requests_reach_every_check() {
            // Terms past the limit and entries that do not follow are among the generated
            // requests, so `check` refuses some and passes others.
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let (mut passed, mut refused) = (0, 0);
            for _ in 0..256 {
                let request = request()
                    .new_tree(&mut runner)
                    .map(|tree| tree.current())
                    .unwrap_or_else(|e| panic!("a request: {e}"));
                match request.rpc.check() {
                    Ok(()) => passed += 1,
                    Err(_) => refused += 1,
                }
            }
            assert!(
                passed > 0 && refused > 0,
                "passed {passed}, refused {refused}"
            );
        }
    }
}
