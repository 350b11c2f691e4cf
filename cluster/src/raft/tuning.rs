//! The knobs of a group's Raft, with defaults for members on one machine or one LAN, and what
//! each one trades.

use openraft::{Config, SnapshotPolicy};
use std::time::Duration;

/// How a member runs Raft. [`RaftTuning::default`] suits loopback and a quiet LAN.
///
/// How long a group is without a leader after losing it: openraft draws one election timeout
/// per member at start, uniformly in `election_timeout_min..election_timeout_max`, and a
/// follower that has seen a leader waits `election_timeout_max` (the leader's lease) plus its
/// own timeout, checked at every tick (`1.5 × heartbeat`), before it campaigns. With the
/// defaults that is about 0.45–0.7 s, plus one round of votes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTuning {
    /// How often the leader sends append-entries (empty ones are heartbeats), and how long it
    /// waits for each reply. Shorter: followers notice a lost leader sooner, at the price of
    /// more traffic; too short for the network (or for a loaded machine) and replies time out.
    pub heartbeat: Duration,
    /// Lower bound of the election timeout, also how long a candidate waits for each vote.
    /// Must exceed `heartbeat`. Lower: faster failover, but a slow heartbeat (pause, loaded
    /// host) starts a needless election.
    pub election_timeout_min: Duration,
    /// Upper bound of the election timeout, also the leader's lease during which followers
    /// refuse to vote for anyone else. Must exceed `election_timeout_min`; a wider range makes
    /// split votes rarer, a higher bound makes failover slower.
    pub election_timeout_max: Duration,
    /// How long replication to a member waits after the transport reported it unreachable.
    /// Shorter: a healed member catches up sooner; longer: fewer wasted calls while it is down.
    pub unreachable_backoff: Duration,
    /// Take a snapshot once this many entries were applied since the last one (`None`: never
    /// on its own). Lower: smaller log and faster catch-up of new members, more snapshot work.
    pub snapshot_every: Option<u64>,
    /// How many entries already in a snapshot stay in the log. A member lagging by fewer entries
    /// catches up from the log; one lagging by more needs the whole snapshot.
    pub keep_after_snapshot: u64,
    /// A new member counts as caught up, and [`RaftGroup::add_voter`](super::RaftGroup::add_voter)
    /// promotes it to voter, once it lags the leader by at most this many entries. Lower: a
    /// promotion slows commits less; higher: promotion does not wait on a busy leader.
    pub learner_lag: u64,
    /// The most entries in one append-entries request. Higher: faster catch-up, larger frames.
    pub max_entries_per_append: u64,
    /// The most bytes one append-entries request of several entries may take on the wire: a
    /// larger one is sent again with fewer entries. Bounds what a lagging member is sent at
    /// once when entries are large (a node's lease renewal holds an ask per primary there).
    pub max_append_bytes: u64,
    /// The size of one snapshot chunk on the wire. Must fit the transport's frame limit, with
    /// room for the encoding (an opaque byte can take two bytes in MessagePack).
    pub snapshot_chunk_bytes: u64,
    /// How long the leader waits for a member to take one snapshot chunk (and, for the last
    /// one, to install the snapshot). Longer than the time to restore the largest snapshot.
    pub install_snapshot_timeout: Duration,
    /// The largest snapshot a member accepts from the wire; a chunk beyond it is refused, so a
    /// bad request cannot make the member allocate without bound.
    pub max_snapshot_bytes: u64,
    /// The default budget of a client request ([`RaftGroup::propose`](super::RaftGroup::propose),
    /// membership changes). A request whose outcome is not known by then returns
    /// `DeadlineExceeded`: it may still commit later.
    pub request_timeout: Duration,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            unreachable_backoff: Duration::from_millis(200),
            snapshot_every: Some(500),
            keep_after_snapshot: 100,
            learner_lag: 100,
            max_entries_per_append: 300,
            max_append_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            install_snapshot_timeout: Duration::from_secs(2),
            max_snapshot_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RaftTuning {
    /// The openraft configuration for this tuning (`label` names the member in openraft's
    /// traces), or why the tuning is unusable.
    pub(crate) fn openraft_config(&self, label: &str) -> Result<Config, String> {
        let millis = |what: &str, d: Duration| -> Result<u64, String> {
            match u64::try_from(d.as_millis()) {
                Ok(0) | Err(_) => Err(format!(
                    "{what} = {d:?} is out of range; use at least 1 ms (openraft counts whole milliseconds)"
                )),
                Ok(ms) => Ok(ms),
            }
        };
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > self.max_snapshot_bytes {
            return Err(format!(
                "snapshot_chunk_bytes = {} must be between 1 and max_snapshot_bytes = {}",
                self.snapshot_chunk_bytes, self.max_snapshot_bytes
            ));
        }
        if self.snapshot_every == Some(0) {
            return Err(
                "snapshot_every = Some(0) would snapshot after every entry; use None to \
                        never snapshot on its own, or at least 1"
                    .to_string(),
            );
        }
        let config = Config {
            cluster_name: label.to_string(),
            heartbeat_interval: millis("heartbeat", self.heartbeat)?,
            election_timeout_min: millis("election_timeout_min", self.election_timeout_min)?,
            election_timeout_max: millis("election_timeout_max", self.election_timeout_max)?,
            install_snapshot_timeout: millis(
                "install_snapshot_timeout",
                self.install_snapshot_timeout,
            )?,
            max_payload_entries: self.max_entries_per_append,
            replication_lag_threshold: self.learner_lag,
            snapshot_policy: match self.snapshot_every {
                Some(n) => SnapshotPolicy::LogsSinceLast(n),
                None => SnapshotPolicy::Never,
            },
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            purge_batch_size: 1,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| format!("{e}; adjust the RaftTuning accordingly"))
    }
}
