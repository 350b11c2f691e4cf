//! A group's Raft (`understudy_cluster::raft`) on its own: members in one process, joined by
//! an in-memory transport that calls `RaftGroup::handle_rpc` directly and can cut a member off
//! (both ways) and heal it. Waiting is always a poll against a deadline.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use understudy_cluster::raft::{
    Applier, GroupRaftConfig, GroupStateMachine, MemberId, MemberRole, MembershipError,
    MemoryLogStore, ProposeError, RaftGroup, RaftReply, RaftRequest, RaftRpc, RaftTransport,
    RaftTuning, SnapshotMeta, StartError, StorageError, TransportError,
};

/// The longest any condition in these tests may take to come true.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The application side: an Applier that records the commands it applied.

/// What a [`RecordingApplier`] shows to the test: the commands, in the order applied, and how
/// many snapshots it restored.
#[derive(Clone, Default)]
struct Journal {
    commands: Arc<Mutex<Vec<Vec<u8>>>>,
    restores: Arc<AtomicUsize>,
}

impl Journal {
    fn commands(&self) -> Vec<Vec<u8>> {
        self.commands.lock().expect("journal lock").clone()
    }

    fn restores(&self) -> usize {
        self.restores.load(Ordering::SeqCst)
    }
}

/// Appends every command to its journal; its output is the command's log index.
struct RecordingApplier {
    journal: Journal,
}

impl Applier for RecordingApplier {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.journal
            .commands
            .lock()
            .expect("journal lock")
            .push(command.to_vec());
        index.to_be_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let commands = self.journal.commands();
        rmp_serde::to_vec(&commands).expect("a list of byte strings encodes")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let commands: Vec<Vec<u8>> =
            rmp_serde::from_slice(snapshot).map_err(|e| format!("not a journal: {e}"))?;
        *self.journal.commands.lock().expect("journal lock") = commands;
        self.journal.restores.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The in-memory network.

/// Every member of a test group, by id, and which ones are cut off.
#[derive(Default)]
struct TestNet {
    members: Mutex<HashMap<MemberId, RaftGroup>>,
    cut: Mutex<HashSet<MemberId>>,
    /// The largest request any member sent.
    largest_request: std::sync::atomic::AtomicUsize,
}

impl TestNet {
    fn transport_for(self: &Arc<Self>, from: MemberId) -> Arc<dyn RaftTransport> {
        Arc::new(InMemoryTransport {
            net: Arc::clone(self),
            from,
        })
    }

    fn register(&self, group: RaftGroup) {
        self.members
            .lock()
            .expect("net lock")
            .insert(group.id(), group);
    }

    /// Cuts `id` off from every other member, both ways.
    fn cut(&self, id: MemberId) {
        self.cut.lock().expect("net lock").insert(id);
    }

    fn heal(&self, id: MemberId) {
        self.cut.lock().expect("net lock").remove(&id);
    }

    fn link_is_up(&self, from: MemberId, to: MemberId) -> bool {
        let cut = self.cut.lock().expect("net lock");
        !cut.contains(&from) && !cut.contains(&to)
    }
}

struct InMemoryTransport {
    net: Arc<TestNet>,
    from: MemberId,
}

impl RaftTransport for InMemoryTransport {
    fn call(
        &self,
        target: MemberId,
        _node: &str,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send>> {
        let net = Arc::clone(&self.net);
        let from = self.from;
        net.largest_request
            .fetch_max(request.len(), std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let unreachable = |reason: &str| TransportError::Unreachable {
                target,
                reason: reason.to_string(),
            };
            if !net.link_is_up(from, target) {
                return Err(unreachable("cut off"));
            }
            let member = net.members.lock().expect("net lock").get(&target).cloned();
            let member = member.ok_or_else(|| unreachable("no such member"))?;
            let reply = member.handle_rpc(&request).await;
            // A cut during the call loses the reply.
            if !net.link_is_up(from, target) {
                return Err(unreachable("cut off during the call"));
            }
            Ok(reply)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

struct TestMember {
    group: RaftGroup,
    journal: Journal,
}

fn name_of(id: MemberId) -> String {
    format!("n{id}")
}

async fn start_member(net: &Arc<TestNet>, id: MemberId, tuning: &RaftTuning) -> TestMember {
    let journal = Journal::default();
    let applier = RecordingApplier {
        journal: journal.clone(),
    };
    let group = RaftGroup::start(
        id,
        name_of(id),
        tuning.clone(),
        net.transport_for(id),
        Box::new(applier),
    )
    .await
    .expect("a member starts");
    net.register(group.clone());
    TestMember { group, journal }
}

/// Starts members `1..=n`, initializes the group on member 1 and waits for a leader.
async fn form_group(n: u64, tuning: &RaftTuning) -> (Arc<TestNet>, BTreeMap<MemberId, TestMember>) {
    let net = Arc::new(TestNet::default());
    let mut members = BTreeMap::new();
    for id in 1..=n {
        members.insert(id, start_member(&net, id, tuning).await);
    }
    let founding = (1..=n).map(|id| (id, name_of(id))).collect();
    members[&1]
        .group
        .initialize(founding)
        .await
        .expect("a pristine group initializes");
    let all: Vec<MemberId> = members.keys().copied().collect();
    wait_until("the founding members agree on a leader", || {
        agreed_leader(&members, &all).is_some()
    })
    .await;
    (net, members)
}

/// The leader, if every member in `among` names the same one, it is among them, and it sees
/// itself as leader.
fn agreed_leader(members: &BTreeMap<MemberId, TestMember>, among: &[MemberId]) -> Option<MemberId> {
    let leader = members[&among[0]].group.leader()?;
    let all_agree = among
        .iter()
        .all(|id| members[id].group.leader() == Some(leader));
    let leads = among.contains(&leader) && members[&leader].group.is_leader();
    (all_agree && leads).then_some(leader)
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        // The conditions are read from watches and journals that change asynchronously.
        tokio::time::sleep(Duration::from_millis(5)).await; // poll with a deadline
    }
}

fn cmd(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

async fn shutdown_all(members: &BTreeMap<MemberId, TestMember>) {
    for member in members.values() {
        member.group.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Election and replication.

#[tokio::test]
async fn three_members_elect_exactly_one_leader_and_apply_proposals_in_the_same_order() {
    let (_net, members) = form_group(3, &RaftTuning::default()).await;
    let all = [1, 2, 3];
    let leader = agreed_leader(&members, &all).expect("a leader was agreed");
    let leaders: Vec<MemberId> = all
        .iter()
        .copied()
        .filter(|id| members[id].group.is_leader())
        .collect();
    assert_eq!(leaders, vec![leader], "exactly one member leads");
    let terms: HashSet<u64> = all
        .iter()
        .map(|id| members[id].group.leadership().borrow().term)
        .collect();
    assert_eq!(
        terms.len(),
        1,
        "all members are in the same term: {terms:?}"
    );

    // Three proposers at once: the log decides one order, and every member follows it.
    let mut proposers = Vec::new();
    for proposer in 0..3 {
        let group = members[&leader].group.clone();
        proposers.push(tokio::spawn(async move {
            let mut indexes = Vec::new();
            for i in 0..10 {
                let output = group
                    .propose(cmd(&format!("p{proposer}-{i}")))
                    .await
                    .expect("the leader commits");
                let index: [u8; 8] = output.try_into().expect("the output is an index");
                indexes.push(u64::from_be_bytes(index));
            }
            indexes
        }));
    }
    for proposer in proposers {
        let indexes = proposer.await.expect("proposer task");
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "one proposer's commands commit in its order: {indexes:?}"
        );
    }
    wait_until("every member applied the 30 commands", || {
        all.iter()
            .all(|id| members[id].journal.commands().len() == 30)
    })
    .await;
    let reference = members[&leader].journal.commands();
    for id in all {
        assert_eq!(
            members[&id].journal.commands(),
            reference,
            "member {id} applied another sequence"
        );
    }
    shutdown_all(&members).await;
}

#[tokio::test]
async fn a_follower_refuses_proposals_and_membership_changes_naming_the_leader() {
    let (_net, members) = form_group(3, &RaftTuning::default()).await;
    let leader = agreed_leader(&members, &[1, 2, 3]).expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let group = &members[&follower].group;

    let refused = group.propose(cmd("via a follower")).await;
    assert_eq!(
        refused,
        Err(ProposeError::ForwardToLeader {
            leader: Some((leader, name_of(leader)))
        })
    );
    let refused = group.add_voter(9, "n9").await;
    assert_eq!(
        refused,
        Err(MembershipError::ForwardToLeader {
            leader: Some((leader, name_of(leader)))
        })
    );
    assert_eq!(group.leader_member(), Some((leader, name_of(leader))));

    // Forming the group again is refused, and says there is nothing to do.
    let again = group
        .initialize((1..=3).map(|id| (id, name_of(id))).collect())
        .await;
    assert_eq!(again, Err(MembershipError::AlreadyInitialized));
    shutdown_all(&members).await;
}

#[tokio::test]
async fn initializing_without_the_member_itself_is_refused() {
    let net = Arc::new(TestNet::default());
    let member = start_member(&net, 1, &RaftTuning::default()).await;
    let refused = member
        .group
        .initialize(BTreeMap::from([(2, name_of(2)), (3, name_of(3))]))
        .await;
    assert_eq!(refused, Err(MembershipError::NotInMembers { id: 1 }));
    member.group.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Losing the leader.

#[tokio::test]
async fn cutting_off_the_leader_elects_another_that_keeps_the_log_and_the_old_one_catches_up() {
    let (net, members) = form_group(3, &RaftTuning::default()).await;
    let old = agreed_leader(&members, &[1, 2, 3]).expect("a leader");
    let others: Vec<MemberId> = (1..=3).filter(|id| *id != old).collect();
    for c in ["a", "b"] {
        members[&old].group.propose(cmd(c)).await.expect("commits");
    }
    wait_until("the followers applied a and b", || {
        others
            .iter()
            .all(|id| members[id].journal.commands() == vec![cmd("a"), cmd("b")])
    })
    .await;

    let old_term = members[&old].group.leadership().borrow().term;
    net.cut(old);
    let cut_at = Instant::now();

    // The cut-off leader still believes it leads, but it can neither commit nor confirm.
    let isolated = members[&old].group.clone();
    let lost = tokio::spawn(async move {
        isolated
            .propose_within(cmd("lost"), Duration::from_millis(800))
            .await
    });
    assert!(members[&old].group.is_leader());
    assert!(
        matches!(
            members[&old].group.confirm_leader().await,
            Err(ProposeError::NoQuorum { .. })
        ),
        "a cut-off leader cannot confirm its leadership"
    );

    wait_until("the two others elect a new leader", || {
        agreed_leader(&members, &others).is_some()
    })
    .await;
    let failover = cut_at.elapsed();
    let new = agreed_leader(&members, &others).expect("a new leader");
    println!("leader {old} cut off: member {new} leads after {failover:?}");
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    assert_ne!(new, old);
    let new_term = members[&new].group.leadership().borrow().term;
    assert!(new_term > old_term, "the new leader leads a later term");
    assert_eq!(
        lost.await.expect("proposer task"),
        Err(ProposeError::DeadlineExceeded {
            budget: Duration::from_millis(800)
        }),
        "a leader without a majority commits nothing"
    );

    // Committed entries survive; the new leader commits.
    members[&new]
        .group
        .confirm_leader()
        .await
        .expect("the new leader is confirmed");
    assert_eq!(
        &members[&new].journal.commands()[..2],
        &[cmd("a"), cmd("b")],
        "the new leader kept the committed entries"
    );
    members[&new]
        .group
        .propose(cmd("c"))
        .await
        .expect("the new leader commits");
    let expected = vec![cmd("a"), cmd("b"), cmd("c")];
    wait_until("both connected members applied c", || {
        others
            .iter()
            .all(|id| members[id].journal.commands() == expected)
    })
    .await;
    assert_eq!(members[&old].journal.commands(), vec![cmd("a"), cmd("b")]);

    // Healing: the old leader steps down, drops its uncommitted entry and catches up.
    net.heal(old);
    let healed_at = Instant::now();
    wait_until("the old leader follows the new one and caught up", || {
        let group = &members[&old].group;
        !group.is_leader()
            && group.leader() == Some(new)
            && members[&old].journal.commands() == expected
    })
    .await;
    println!(
        "old leader {old} healed: follows {new} and caught up after {:?}",
        healed_at.elapsed()
    );
    members[&new]
        .group
        .propose(cmd("d"))
        .await
        .expect("commits");
    let expected = vec![cmd("a"), cmd("b"), cmd("c"), cmd("d")];
    wait_until("all three applied d", || {
        (1..=3).all(|id| members[&id].journal.commands() == expected)
    })
    .await;
    shutdown_all(&members).await;
}

#[tokio::test]
async fn a_member_that_lagged_behind_large_entries_catches_up_in_appends_within_the_byte_limit() {
    const LIMIT: u64 = 8 * 1024;
    let tuning = RaftTuning {
        max_append_bytes: LIMIT,
        ..RaftTuning::default()
    };
    let (net, members) = form_group(3, &tuning).await;
    let leader = agreed_leader(&members, &[1, 2, 3]).expect("a leader");
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    net.cut(lagging);
    // 60 entries of 1 KiB each: about 60 KiB for the lagging member, which the leader would
    // send it in one request without the limit (up to 300 entries per request).
    let mut expected = Vec::new();
    for i in 0..60 {
        let c = format!("{i:04}-{}", "x".repeat(1019)).into_bytes();
        members[&leader]
            .group
            .propose(c.clone())
            .await
            .expect("commits with the other follower");
        expected.push(c);
    }
    net.largest_request
        .store(0, std::sync::atomic::Ordering::Relaxed);
    net.heal(lagging);
    wait_until("the lagging member applied every entry", || {
        members[&lagging].journal.commands() == expected
    })
    .await;
    let largest = net
        .largest_request
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("catching up 60 KiB: the largest request was {largest} bytes (limit {LIMIT})");
    assert!(
        largest as u64 <= LIMIT,
        "every request of several entries fits the limit: the largest was {largest} bytes"
    );
    shutdown_all(&members).await;
}

/// Members `1..=n`; the leader is cut off for good after one follower (the first by id) missed
/// its last entry; every other member saw the leader go and campaigns once, and the one behind
/// keeps campaigning every 5 ms. Returns the leader the others agree on within 4 s (election
/// timeouts are 8–9 s: no election here comes from a timeout), how long that took, and the
/// member behind.
async fn leader_after_a_candidate_behind_keeps_campaigning(
    n: u64,
) -> (
    Option<MemberId>,
    Duration,
    MemberId,
    BTreeMap<MemberId, TestMember>,
) {
    let tuning = RaftTuning {
        election_timeout_min: Duration::from_secs(8),
        election_timeout_max: Duration::from_secs(9),
        ..RaftTuning::default()
    };
    let (net, members) = form_group(n, &tuning).await;
    let all: Vec<MemberId> = (1..=n).collect();
    let leader = agreed_leader(&members, &all).expect("a leader");
    let others: Vec<MemberId> = all.iter().copied().filter(|id| *id != leader).collect();
    let behind = others[0];
    net.cut(behind);
    members[&leader]
        .group
        .propose(cmd("last"))
        .await
        .expect("commits with the other followers");
    net.cut(leader);
    net.heal(behind);
    let started = Instant::now();
    for id in &others {
        members[id].group.campaign().await;
    }
    let mut leader_now = None;
    while started.elapsed() < Duration::from_secs(4) {
        leader_now = agreed_leader(&members, &others);
        if leader_now.is_some() {
            break;
        }
        members[&behind].group.campaign().await;
        tokio::time::sleep(Duration::from_millis(5)).await; // poll with a deadline (4 s), campaigning again as the first in line does
    }
    (leader_now, started.elapsed(), behind, members)
}

#[tokio::test]
async fn with_the_leader_gone_a_candidate_with_a_shorter_log_makes_the_member_with_the_longer_one_campaign(
) {
    for n in [3, 5] {
        let (leader, took, behind, members) =
            leader_after_a_candidate_behind_keeps_campaigning(n).await;
        println!("{n} members: a leader after {took:?}: {leader:?} (behind: {behind})");
        assert!(
            leader.is_some_and(|l| l != behind),
            "{n} members: a member with the longer log leads, well before any election timeout"
        );
        shutdown_all(&members).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Membership changes.

#[tokio::test]
async fn a_voter_added_later_catches_up_through_a_snapshot() {
    let tuning = RaftTuning {
        snapshot_every: Some(10),
        keep_after_snapshot: 0,
        ..RaftTuning::default()
    };
    let (net, mut members) = form_group(3, &tuning).await;
    let leader = agreed_leader(&members, &[1, 2, 3]).expect("a leader");
    let mut expected = Vec::new();
    for i in 0..25 {
        let c = cmd(&format!("before-{i}"));
        members[&leader]
            .group
            .propose(c.clone())
            .await
            .expect("commits");
        expected.push(c);
    }
    let metrics = members[&leader].group.metrics();
    wait_until("the leader snapshotted and purged its log", || {
        let m = metrics.borrow();
        m.snapshot.is_some() && m.purged.is_some_and(|p| p.index >= 10)
    })
    .await;

    let newcomer = start_member(&net, 4, &tuning).await;
    members[&leader]
        .group
        .add_voter(4, name_of(4))
        .await
        .expect("the newcomer is added");
    members.insert(4, newcomer);
    assert!(members[&leader].group.members().voters.contains_key(&4));
    wait_until("the newcomer applied everything", || {
        members[&4].journal.commands() == expected
    })
    .await;
    assert!(
        members[&4].journal.restores() >= 1,
        "the purged prefix reached the newcomer as a snapshot"
    );

    members[&leader]
        .group
        .propose(cmd("after"))
        .await
        .expect("commits");
    expected.push(cmd("after"));
    wait_until("all four applied the next command", || {
        (1..=4).all(|id| members[&id].journal.commands() == expected)
    })
    .await;
    // Adding it again changes nothing.
    members[&leader]
        .group
        .add_voter(4, name_of(4))
        .await
        .expect("adding a voter twice is harmless");
    shutdown_all(&members).await;
}

#[tokio::test]
async fn removing_both_followers_leaves_a_leader_that_commits_alone() {
    let (net, members) = form_group(3, &RaftTuning::default()).await;
    let leader = agreed_leader(&members, &[1, 2, 3]).expect("a leader");
    let group = &members[&leader].group;
    for follower in (1..=3).filter(|id| *id != leader) {
        group.remove_member(follower).await.expect("removed");
        net.cut(follower);
    }
    assert_eq!(
        group.members().voters,
        BTreeMap::from([(leader, name_of(leader))])
    );
    group
        .propose(cmd("alone"))
        .await
        .expect("a group of one commits by itself");
    group
        .remove_member(42)
        .await
        .expect("removing an absent member is harmless");
    assert_eq!(
        group.remove_member(leader).await,
        Err(MembershipError::WouldEmptyGroup)
    );
    shutdown_all(&members).await;
}

#[tokio::test]
async fn removing_the_leader_hands_the_group_to_the_remaining_members() {
    let (_net, members) = form_group(3, &RaftTuning::default()).await;
    let old = agreed_leader(&members, &[1, 2, 3]).expect("a leader");
    let rest: Vec<MemberId> = (1..=3).filter(|id| *id != old).collect();
    members[&old]
        .group
        .propose(cmd("before"))
        .await
        .expect("commits");
    members[&old]
        .group
        .remove_member(old)
        .await
        .expect("the leader removes itself");
    let removed_at = Instant::now();
    wait_until("the remaining two elect a leader", || {
        agreed_leader(&members, &rest).is_some()
    })
    .await;
    println!(
        "leader {old} removed itself: the others elected a leader after {:?}",
        removed_at.elapsed()
    );
    assert!(
        !members[&old].group.is_leader(),
        "the removed leader stepped down"
    );
    let new = agreed_leader(&members, &rest).expect("a new leader");
    assert!(!members[&new].group.members().voters.contains_key(&old));
    members[&new]
        .group
        .propose(cmd("after"))
        .await
        .expect("commits");
    wait_until("both remaining members applied both commands", || {
        rest.iter()
            .all(|id| members[id].journal.commands() == vec![cmd("before"), cmd("after")])
    })
    .await;
    shutdown_all(&members).await;
}

// ---------------------------------------------------------------------------------------------
// Damaged input.

fn journal_snapshot_meta(last_index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            last_index,
        )),
        last_membership: Default::default(),
        snapshot_id: format!("test-{last_index}"),
    }
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_with_a_storage_error_and_changes_nothing() {
    // A real snapshot, from a state machine that applied two commands.
    let source_journal = Journal::default();
    let mut source = GroupStateMachine::new(Box::new(RecordingApplier {
        journal: source_journal.clone(),
    }));
    let entries = (1..=2).map(|i| openraft::Entry::<GroupRaftConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
        payload: openraft::EntryPayload::Normal(cmd(&format!("c{i}"))),
    });
    source.apply(entries).await.expect("applies");
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    let meta = snapshot.meta.clone();
    let good = snapshot.snapshot.into_inner();

    let target_journal = Journal::default();
    target_journal
        .commands
        .lock()
        .expect("lock")
        .push(cmd("mine"));
    let mut target = GroupStateMachine::new(Box::new(RecordingApplier {
        journal: target_journal.clone(),
    }));
    let refused = |bytes: Vec<u8>, meta: SnapshotMeta| {
        let mut target = target.clone();
        async move {
            let result: Result<(), StorageError> = target
                .install_snapshot(&meta, Box::new(Cursor::new(bytes)))
                .await;
            result.expect_err("a damaged snapshot is refused")
        }
    };

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let error = refused(flipped, meta.clone()).await;
    assert!(error.to_string().contains("checksum"), "{error}");
    refused(good[..good.len() - 1].to_vec(), meta.clone()).await;
    refused(Vec::new(), meta.clone()).await;
    refused(
        b"not a snapshot at all, but long enough".to_vec(),
        meta.clone(),
    )
    .await;
    // Intact bytes, but described as another snapshot.
    let error = refused(good.clone(), journal_snapshot_meta(7)).await;
    assert!(error.to_string().contains("do not match"), "{error}");

    // Intact frame around a state the Applier cannot read.
    let mut garbage_state = GroupStateMachine::new(Box::new(GarbageApplier));
    let garbage = garbage_state
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    let error = refused(garbage.snapshot.into_inner(), garbage.meta.clone()).await;
    assert!(error.to_string().contains("could not restore"), "{error}");

    assert_eq!(
        target_journal.commands(),
        vec![cmd("mine")],
        "state untouched"
    );
    assert_eq!(target_journal.restores(), 0);
    let (applied, _) = target.applied_state().await.expect("readable");
    assert_eq!(applied, None, "the refused snapshots left no trace");

    // And the intact one installs.
    target
        .install_snapshot(&meta, Box::new(Cursor::new(good)))
        .await
        .expect("an intact snapshot installs");
    assert_eq!(target_journal.commands(), vec![cmd("c1"), cmd("c2")]);
}

/// The same as above for any snapshot and any damage: a snapshot cut short, with any one byte
/// changed, or no snapshot at all is refused, naming the snapshot, and the member keeps its
/// state; the intact one installs.
#[test]
fn any_damaged_snapshot_is_refused_naming_it_and_the_member_keeps_its_state() {
    let runtime = current_thread_runtime();
    let snapshot_of = |commands: &[Vec<u8>]| {
        let commands = commands.to_vec();
        async move {
            let mut source = GroupStateMachine::new(Box::new(RecordingApplier {
                journal: Journal::default(),
            }));
            let entries = commands
                .into_iter()
                .zip(1..)
                .map(|(command, i)| openraft::Entry::<GroupRaftConfig> {
                    log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
                    payload: openraft::EntryPayload::Normal(command),
                });
            source.apply(entries).await.expect("applies");
            let snapshot = source
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("builds");
            (snapshot.meta.clone(), snapshot.snapshot.into_inner())
        }
    };
    let input = (
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..6),
        any::<prop::sample::Index>(),
        1..=255u8,
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 0..128),
    );
    proptest_runner(256)
        .run(&input, |(commands, at, flip, cut, garbage)| {
            runtime.block_on(async {
                let (meta, good) = snapshot_of(&commands).await;
                let journal = Journal::default();
                journal.commands.lock().expect("lock").push(cmd("mine"));
                let mut target = GroupStateMachine::new(Box::new(RecordingApplier {
                    journal: journal.clone(),
                }));
                let mut flipped = good.clone();
                let i = at.index(flipped.len());
                flipped[i] ^= flip;
                let truncated = good[..cut.index(good.len())].to_vec();
                for bytes in [flipped, truncated, garbage] {
                    let result = target
                        .install_snapshot(&meta, Box::new(Cursor::new(bytes)))
                        .await;
                    let error = match result {
                        Ok(()) => return Err(TestCaseError::fail("a damaged snapshot installed")),
                        Err(e) => e.to_string(),
                    };
                    prop_assert!(
                        error.contains(&format!("refusing snapshot {}", meta.snapshot_id)),
                        "{}",
                        error
                    );
                    prop_assert_eq!(journal.commands(), vec![cmd("mine")], "state untouched");
                    prop_assert_eq!(journal.restores(), 0);
                    let (applied, _) = target.applied_state().await.expect("readable");
                    prop_assert_eq!(applied, None, "the refused snapshot left no trace");
                }
                target
                    .install_snapshot(&meta, Box::new(Cursor::new(good)))
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(journal.commands(), commands);
                Ok(())
            })
        })
        .expect("every damaged snapshot is refused");
}

/// An Applier whose snapshots no RecordingApplier can restore.
struct GarbageApplier;

impl Applier for GarbageApplier {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        vec![0xc1; 16] // 0xc1 is never valid MessagePack
    }
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// A group of one member, leading, reachable by nobody.
async fn lone_leader() -> TestMember {
    let net = Arc::new(TestNet::default());
    let member = start_member(&net, 1, &RaftTuning::default()).await;
    member
        .group
        .initialize(BTreeMap::from([(1, name_of(1))]))
        .await
        .expect("initializes");
    assert_eq!(member.group.wait_for_leader(PATIENCE).await, Some(1));
    assert!(member.group.is_leader());
    member
}

fn refusal(reply: &[u8]) -> String {
    match RaftReply::decode(reply) {
        Ok(RaftReply::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_requests_get_a_refusal_and_the_member_keeps_working() {
    let member = lone_leader().await;
    let group = &member.group;

    let reason = refusal(&group.handle_rpc(b"").await);
    assert!(reason.contains("malformed"), "{reason}");
    refusal(&group.handle_rpc(&[0xc1, 0x00, 0xff]).await);
    refusal(&group.handle_rpc(&[0xdf, 0xff, 0xff, 0xff, 0xff]).await); // a map claiming 4 G entries

    // Well-formed, but for another member.
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(1, 2), None);
    let misrouted = RaftRequest {
        target: 2,
        rpc: RaftRpc::Vote(vote),
    };
    let reason = refusal(
        &group
            .handle_rpc(&misrouted.encode().expect("encodes"))
            .await,
    );
    assert!(reason.contains("routing"), "{reason}");

    // Well-formed, but claiming to come from the member itself.
    let own_heartbeat = RaftRequest {
        target: 1,
        rpc: RaftRpc::AppendEntries(openraft::raft::AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        }),
    };
    let reason = refusal(
        &group
            .handle_rpc(&own_heartbeat.encode().expect("encodes"))
            .await,
    );
    assert!(reason.contains("itself"), "{reason}");

    // A snapshot chunk far beyond the limit.
    let chunk = openraft::raft::InstallSnapshotRequest::<GroupRaftConfig> {
        vote: openraft::Vote::new_committed(1, 2),
        meta: journal_snapshot_meta(5),
        offset: u64::MAX - 2,
        data: vec![1, 2, 3, 4],
        done: true,
    };
    let oversized = RaftRequest {
        target: 1,
        rpc: RaftRpc::InstallSnapshot(chunk),
    };
    let reason = refusal(
        &group
            .handle_rpc(&oversized.encode().expect("encodes"))
            .await,
    );
    assert!(reason.contains("max_snapshot_bytes"), "{reason}");

    group
        .propose(cmd("still alive"))
        .await
        .expect("the member still commits");
    assert_eq!(member.journal.commands(), vec![cmd("still alive")]);
    group.shutdown().await;
}

#[tokio::test]
async fn a_member_sent_a_corrupt_snapshot_stops_instead_of_applying_it() {
    let member = lone_leader().await;
    let group = &member.group;
    group.propose(cmd("before")).await.expect("commits");

    // A "leader" of a later term ships a snapshot whose bytes are garbage.
    let chunk = openraft::raft::InstallSnapshotRequest::<GroupRaftConfig> {
        vote: openraft::Vote::new_committed(9, 2),
        meta: SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(9, 2),
                100,
            )),
            last_membership: Default::default(),
            snapshot_id: "forged".to_string(),
        },
        offset: 0,
        data: b"this is not a snapshot".to_vec(),
        done: true,
    };
    let forged = RaftRequest {
        target: 1,
        rpc: RaftRpc::InstallSnapshot(chunk),
    };
    let reply = RaftReply::decode(&group.handle_rpc(&forged.encode().expect("encodes")).await)
        .expect("the reply decodes");
    assert!(
        matches!(reply, RaftReply::InstallSnapshot(Err(_))),
        "the install fails: {reply:?}"
    );
    let mut leadership = group.leadership();
    wait_until("the member stops", || {
        leadership.borrow_and_update().role == MemberRole::Stopped
    })
    .await;
    assert!(matches!(
        group.propose(cmd("after")).await,
        Err(ProposeError::Fatal { .. })
    ));
    assert_eq!(
        member.journal.commands(),
        vec![cmd("before")],
        "nothing applied"
    );
    assert_eq!(member.journal.restores(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn start_refuses_an_unusable_tuning() {
    let net = Arc::new(TestNet::default());
    let cases = [
        RaftTuning {
            election_timeout_min: Duration::from_millis(40),
            ..RaftTuning::default()
        },
        RaftTuning {
            election_timeout_max: Duration::from_millis(150),
            ..RaftTuning::default()
        },
        RaftTuning {
            heartbeat: Duration::from_micros(10),
            ..RaftTuning::default()
        },
        RaftTuning {
            snapshot_every: Some(0),
            ..RaftTuning::default()
        },
        RaftTuning {
            snapshot_chunk_bytes: 0,
            ..RaftTuning::default()
        },
    ];
    for tuning in cases {
        let started = RaftGroup::start(
            1,
            "n1",
            tuning.clone(),
            net.transport_for(1),
            Box::new(GarbageApplier),
        )
        .await;
        assert!(
            matches!(started, Err(StartError::InvalidTuning { .. })),
            "{tuning:?} was accepted"
        );
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn proptest_runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn random_bytes_get_a_refusal_and_leave_the_member_working() {
    let runtime = current_thread_runtime();
    let member = runtime.block_on(lone_leader());
    let group = member.group.clone();
    proptest_runner(500)
        .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
            let reply = runtime.block_on(group.handle_rpc(&bytes));
            prop_assert!(
                matches!(RaftReply::decode(&reply), Ok(RaftReply::Refused { .. })),
                "random bytes were not refused"
            );
            Ok(())
        })
        .expect("every random input is refused");
    runtime.block_on(async {
        assert!(member.group.is_leader(), "random bytes changed nothing");
        member
            .group
            .propose(cmd("still alive"))
            .await
            .expect("the member still commits");
        member.group.shutdown().await;
    });
}

/// Real requests, as another member (2, leading term 2, or 3, campaigning) would send them.
fn genuine_requests() -> Vec<Vec<u8>> {
    let leader_vote = openraft::Vote::new_committed(2, 2);
    let entry = |index: u64, payload| openraft::Entry::<GroupRaftConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 2), index),
        payload,
    };
    let rpcs = [
        RaftRpc::AppendEntries(openraft::raft::AppendEntriesRequest {
            vote: leader_vote,
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        }),
        RaftRpc::AppendEntries(openraft::raft::AppendEntriesRequest {
            vote: leader_vote,
            prev_log_id: None,
            leader_commit: None,
            entries: vec![
                entry(1, openraft::EntryPayload::Blank),
                entry(2, openraft::EntryPayload::Normal(cmd("x"))),
            ],
        }),
        RaftRpc::Vote(openraft::raft::VoteRequest::new(
            openraft::Vote::new(3, 3),
            None,
        )),
        RaftRpc::InstallSnapshot(openraft::raft::InstallSnapshotRequest {
            vote: leader_vote,
            meta: journal_snapshot_meta(5),
            offset: 0,
            data: vec![7; 16],
            done: false,
        }),
    ];
    rpcs.into_iter()
        .map(|rpc| RaftRequest { target: 1, rpc }.encode().expect("encodes"))
        .collect()
}

const DAMAGED_CASES: u32 = 1000;

/// Damaged copies of genuine requests: most are refused, some decode into odd but well-formed
/// requests that openraft handles (Raft trusts well-formed messages from its peers, which is
/// why the transport must authenticate them). Whatever happens to the member, handle_rpc
/// itself answers every input.
#[test]
fn damaged_requests_always_get_a_decodable_reply() {
    let runtime = current_thread_runtime();
    let member = runtime.block_on(lone_leader());
    let group = member.group.clone();
    let damaged = (
        prop::sample::select(genuine_requests()),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    )
        .prop_map(|(mut bytes, flips)| {
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes
        });
    let refused = AtomicUsize::new(0);
    proptest_runner(DAMAGED_CASES)
        .run(&damaged, |bytes| {
            let reply = runtime.block_on(group.handle_rpc(&bytes));
            match RaftReply::decode(&reply) {
                Ok(RaftReply::Refused { .. }) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => prop_assert!(false, "undecodable reply: {e}"),
            }
            Ok(())
        })
        .expect("handle_rpc answers every damaged request");
    println!(
        "{} of {DAMAGED_CASES} damaged requests refused, the rest handed to openraft",
        refused.load(Ordering::Relaxed)
    );
    let running = member.group.metrics().borrow().running_state.clone();
    assert_ne!(
        running,
        Err(openraft::error::Fatal::Panicked),
        "openraft panicked on a request handle_rpc let through"
    );
    runtime.block_on(member.group.shutdown());
}

// ---------------------------------------------------------------------------------------------
// Openraft's own storage suite.

struct FreshStores;

impl StoreBuilder<GroupRaftConfig, MemoryLogStore, GroupStateMachine> for FreshStores {
    async fn build(&self) -> Result<((), MemoryLogStore, GroupStateMachine), StorageError> {
        let applier = RecordingApplier {
            journal: Journal::default(),
        };
        Ok((
            (),
            MemoryLogStore::new(),
            GroupStateMachine::new(Box::new(applier)),
        ))
    }
}

#[test]
fn the_log_store_and_state_machine_pass_openraft_s_storage_suite() {
    Suite::test_all(FreshStores).expect("openraft's storage suite passes");
}
