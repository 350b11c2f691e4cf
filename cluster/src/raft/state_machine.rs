//! The replicated state machine of a member: the application's [`Applier`], fed with committed
//! commands in log order, plus what Raft needs to know about it (the last applied entry, the
//! membership) and its latest snapshot.
//!
//! A snapshot on the wire and in memory is framed so that damage is detected before anything
//! is restored:
//!
//! ```text
//! "USNP" | format (1 byte) | header length (u32 BE) | header | state | FNV-1a of all before (u64 BE)
//!                                           header = MessagePack { last applied, membership }
//! ```

use super::types::{
    Entry, GroupRaftConfig, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, StorageIOError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

/// The application's replicated state machine (later: the group manager's table).
///
/// Every member of a group feeds its `Applier` the same committed commands in the same order;
/// an `Applier` must therefore be deterministic: the same commands from the same state give
/// the same state and the same outputs, on every member.
pub trait Applier: Send + Sync + 'static {
    /// Applies the committed command at log `index` and returns its output, which the member
    /// that proposed it hands back to the caller of [`RaftGroup::propose`](super::RaftGroup::propose).
    /// A command the application cannot use must still be "applied" (e.g. answered with an
    /// encoded error): every member has to take the same decision.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;

    /// The whole state, encoded, as of the last command applied.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with one produced by [`Applier::snapshot`] (possibly on another
    /// member). On error the state must be left as it was.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// The state machine openraft drives on a member: wraps the [`Applier`] and keeps the last
/// applied entry, the membership and the latest snapshot. Clones share the same state (the
/// snapshot builder is such a clone).
#[derive(Clone)]
pub struct GroupStateMachine {
    shared: Arc<Mutex<MachineState>>,
}

struct MachineState {
    applier: Box<dyn Applier>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    current: Option<StoredSnapshot>,
    /// How many snapshots this member built, to give each a distinct id.
    built: u64,
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    bytes: Vec<u8>,
}

impl fmt::Debug for GroupStateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("GroupStateMachine");
        match self.shared.try_lock() {
            Ok(m) => d
                .field("last_applied", &m.last_applied)
                .field("membership", &m.membership)
                .field("snapshot", &m.current.as_ref().map(|s| &s.meta))
                .finish(),
            Err(_) => d.finish_non_exhaustive(),
        }
    }
}

impl GroupStateMachine {
    /// A state machine that has applied nothing yet, around `applier`.
    pub fn new(applier: Box<dyn Applier>) -> Self {
        GroupStateMachine {
            shared: Arc::new(Mutex::new(MachineState {
                applier,
                last_applied: None,
                membership: StoredMembership::default(),
                current: None,
                built: 0,
            })),
        }
    }

    // The error type is openraft's, large or not.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> Result<MutexGuard<'_, MachineState>, StorageError> {
        self.shared.lock().map_err(|_| {
            StorageIOError::new(
                ErrorSubject::StateMachine,
                ErrorVerb::Read,
                AnyError::error(
                    "the state machine's lock is poisoned: the Applier panicked; restart the member",
                ),
            )
            .into()
        })
    }
}

impl RaftSnapshotBuilder<GroupRaftConfig> for GroupStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let mut m = self.lock()?;
        let state = m.applier.snapshot();
        m.built += 1;
        let snapshot_id = match m.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, m.built),
            None => format!("empty-{}", m.built),
        };
        let meta = SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: m.membership.clone(),
            snapshot_id,
        };
        let bytes = encode_snapshot(&meta, &state).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::error(e),
            ))
        })?;
        m.current = Some(StoredSnapshot {
            meta: meta.clone(),
            bytes: bytes.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<GroupRaftConfig> for GroupStateMachine {
    type SnapshotBuilder = GroupStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let m = self.lock()?;
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<u8>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut m = self.lock()?;
        let mut outputs = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            let output = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(command) => m.applier.apply(entry.log_id.index, &command),
                EntryPayload::Membership(membership) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            outputs.push(output);
        }
        Ok(outputs)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let refuse = |reason: String| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(format!("refusing snapshot {}: {reason}", meta.snapshot_id)),
            ))
        };
        let bytes = snapshot.into_inner();
        let (header, state) = decode_snapshot(&bytes).map_err(&refuse)?;
        if header.last_applied != meta.last_log_id || header.membership != meta.last_membership {
            return Err(refuse(format!(
                "its contents (up to {:?}) do not match its description (up to {:?})",
                header.last_applied, meta.last_log_id
            )));
        }
        let mut m = self.lock()?;
        m.applier
            .restore(state)
            .map_err(|e| refuse(format!("the Applier could not restore it: {e}")))?;
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.current = Some(StoredSnapshot {
            meta: meta.clone(),
            bytes,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let m = self.lock()?;
        Ok(m.current.clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.bytes)),
        }))
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"USNP";
const SNAPSHOT_FORMAT: u8 = 1;
/// Magic, format byte, header length.
const PREFIX_LEN: usize = 4 + 1 + 4;
/// The checksum after the state.
const CHECKSUM_LEN: usize = 8;

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

fn encode_snapshot(meta: &SnapshotMeta, state: &[u8]) -> Result<Vec<u8>, String> {
    let header = SnapshotHeader {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    };
    let header = rmp_serde::to_vec_named(&header)
        .map_err(|e| format!("cannot encode the snapshot header: {e}"))?;
    let header_len = u32::try_from(header.len())
        .map_err(|_| format!("snapshot header of {} bytes is too large", header.len()))?;
    let mut bytes = Vec::with_capacity(PREFIX_LEN + header.len() + state.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.push(SNAPSHOT_FORMAT);
    bytes.extend_from_slice(&header_len.to_be_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(state);
    let checksum = fnv1a(&bytes);
    bytes.extend_from_slice(&checksum.to_be_bytes());
    Ok(bytes)
}

/// Splits a framed snapshot into its header and the application's state, checking the frame.
fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), String> {
    let too_short = || format!("only {} bytes, too short to be a snapshot", bytes.len());
    let (framed, checksum) = bytes
        .split_last_chunk::<CHECKSUM_LEN>()
        .ok_or_else(too_short)?;
    let (prefix, rest) = framed
        .split_first_chunk::<PREFIX_LEN>()
        .ok_or_else(too_short)?;
    if &prefix[..4] != SNAPSHOT_MAGIC {
        return Err("it does not start with the snapshot marker".to_string());
    }
    if prefix[4] != SNAPSHOT_FORMAT {
        return Err(format!(
            "format {} is unknown (this member reads format {SNAPSHOT_FORMAT}); upgrade it",
            prefix[4]
        ));
    }
    if u64::from_be_bytes(*checksum) != fnv1a(framed) {
        return Err("it does not match its checksum (damaged in transit or in storage)".into());
    }
    let header_len = u32::from_be_bytes([prefix[5], prefix[6], prefix[7], prefix[8]]) as usize;
    if header_len > rest.len() {
        return Err(format!(
            "its header claims {header_len} bytes but only {} follow",
            rest.len()
        ));
    }
    let (header, state) = rest.split_at(header_len);
    let header: SnapshotHeader =
        rmp_serde::from_slice(header).map_err(|e| format!("its header is unreadable: {e}"))?;
    Ok((header, state))
}

/// 64-bit FNV-1a: enough to catch accidental damage, not meant against forgery.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_snapshot_reads_back_and_any_flipped_byte_is_caught() {
        let meta = SnapshotMeta::default();
        let bytes = encode_snapshot(&meta, b"state of the table").unwrap_or_default();
        let (header, state) = match decode_snapshot(&bytes) {
            Ok(decoded) => decoded,
            Err(e) => panic!("a fresh snapshot must decode: {e}"),
        };
        assert_eq!(state, b"state of the table");
        assert_eq!(header.last_applied, None);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(
                decode_snapshot(&damaged).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode_snapshot(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
    }

    mod fuzz {
        //! Property tests of [`decode_snapshot`]: a snapshot arrives from the leader in chunks.

        use super::super::*;
        use openraft::{BasicNode, CommittedLeaderId, Membership};
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn meta() -> impl Strategy<Value = SnapshotMeta> {
            let log_id = (0..64u64, 0..4u64, any::<u64>()).prop_map(|(term, node, index)| {
                LogId::new(CommittedLeaderId::new(term, node), index)
            });
            (
                proptest::option::of(log_id.clone()),
                proptest::option::of(log_id),
                proptest::collection::btree_set(0..6u64, 1..4),
            )
                .prop_map(|(last_log_id, membership_at, voters)| {
                    let nodes: BTreeMap<u64, BasicNode> = voters
                        .iter()
                        .map(|&id| (id, BasicNode::new(format!("n{id}"))))
                        .collect();
                    let membership = Membership::new(vec![voters], nodes);
                    SnapshotMeta {
                        last_log_id,
                        last_membership: StoredMembership::new(membership_at, membership),
                        snapshot_id: "fuzz".into(),
                    }
                })
        }

        fn state() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(any::<u8>(), 0..256)
        }

        /// A frame with a correct checksum around any header length and header bytes: what
        /// gets past the checksum must still be refused cleanly if it does not make sense.
        fn framed(header_len: u32, rest: &[u8]) -> Vec<u8> {
            let mut bytes = SNAPSHOT_MAGIC.to_vec();
            bytes.push(SNAPSHOT_FORMAT);
            bytes.extend_from_slice(&header_len.to_be_bytes());
            bytes.extend_from_slice(rest);
            let checksum = fnv1a(&bytes);
            bytes.extend_from_slice(&checksum.to_be_bytes());
            bytes
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn a_valid_snapshot_round_trips(meta in meta(), state in state()) {
                let bytes = encode_snapshot(&meta, &state).map_err(TestCaseError::fail)?;
                let (header, read) = decode_snapshot(&bytes).map_err(TestCaseError::fail)?;
                prop_assert_eq!(header.last_applied, meta.last_log_id);
                prop_assert_eq!(header.membership, meta.last_membership);
                prop_assert_eq!(read, &state[..]);
            }

            #[test]
            fn a_snapshot_with_any_byte_changed_or_cut_short_is_refused(
                meta in meta(),
                state in state(),
                at in any::<prop::sample::Index>(),
                flip in 1..=255u8,
                cut in any::<prop::sample::Index>(),
            ) {
                let bytes = encode_snapshot(&meta, &state).map_err(TestCaseError::fail)?;
                let mut damaged = bytes.clone();
                let i = at.index(damaged.len());
                damaged[i] ^= flip;
                // One changed byte always changes FNV-1a (each step is a bijection).
                prop_assert!(decode_snapshot(&damaged).is_err(), "byte {} ^ {:#x} went unnoticed", i, flip);
                let len = cut.index(bytes.len());
                prop_assert!(decode_snapshot(&bytes[..len]).is_err(), "cut to {} bytes", len);
            }

            #[test]
            fn arbitrary_bytes_are_refused_as_no_snapshot_never_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
                header_len in prop_oneof![0..64u32, any::<u32>()],
                rest in proptest::collection::vec(any::<u8>(), 0..128),
            ) {
                let e = decode_snapshot(&bytes).err();
                prop_assert!(e.is_some_and(|e| !e.is_empty()), "random bytes read as a snapshot");
                // Past the checksum: a header length beyond the frame, or a header that is not
                // one, is refused too (or, rarely, reads as some header).
                if let Err(e) = decode_snapshot(&framed(header_len, &rest)) {
                    prop_assert!(e.contains("header"), "{}", e);
                }
            }
        }

        #[test]
        fn a_frame_too_short_says_so() {
            let e = decode_snapshot(b"USNP").err().unwrap_or_default();
            assert!(e.contains("too short to be a snapshot"), "{e}");
        }
    }
}
