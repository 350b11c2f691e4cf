//! The Raft log of one member, in memory: entries, the vote, the committed position and how
//! far the log was purged after a snapshot.
//!
//! Nothing survives the process: a member restarted with an empty log has forgotten its vote,
//! so it must rejoin its group under a new [`MemberId`](super::MemberId) (remove the old one, add the new one),
//! never under its old id.

use super::types::{Entry, GroupRaftConfig, LogId, StorageError, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

/// The in-memory log of one member. Cloning gives another handle on the same log (openraft
/// reads it from its replication tasks through such clones).
#[derive(Clone, Default)]
pub struct MemoryLogStore {
    shared: Arc<Mutex<LogContents>>,
}

#[derive(Default)]
struct LogContents {
    /// Entries by index; those up to `last_purged` are gone.
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl fmt::Debug for MemoryLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MemoryLogStore");
        match self.shared.try_lock() {
            Ok(log) => d
                .field("entries", &log.entries.len())
                .field("first", &log.entries.keys().next())
                .field("last", &log.entries.keys().next_back())
                .field("vote", &log.vote)
                .field("committed", &log.committed)
                .field("last_purged", &log.last_purged)
                .finish(),
            Err(_) => d.finish_non_exhaustive(),
        }
    }
}

impl MemoryLogStore {
    /// An empty log: no entries, no vote.
    pub fn new() -> Self {
        Self::default()
    }

    // The error type is openraft's, large or not.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> Result<MutexGuard<'_, LogContents>, StorageError> {
        self.shared.lock().map_err(|_| {
            StorageIOError::new(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                AnyError::error(
                    "the log's lock is poisoned by an earlier panic; restart the member",
                ),
            )
            .into()
        })
    }
}

impl RaftLogReader<GroupRaftConfig> for MemoryLogStore {
    async fn try_get_log_entries<RB>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError>
    where
        RB: RangeBounds<u64> + Clone + fmt::Debug + Send,
    {
        let log = self.lock()?;
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<GroupRaftConfig> for MemoryLogStore {
    type LogReader = MemoryLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<GroupRaftConfig>, StorageError> {
        let log = self.lock()?;
        let last_purged_log_id = log.last_purged;
        let last_log_id = log
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.lock()?.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.lock()?.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock()?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<GroupRaftConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        {
            let mut log = self.lock()?;
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        // In memory, an entry is "on disk" as soon as it is in the map.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock()?;
        // Drop the entry at `log_id.index` and every later one (they conflict with the leader).
        drop(log.entries.split_off(&log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock()?;
        let advances = match log.last_purged {
            Some(purged) => purged.index < log_id.index,
            None => true,
        };
        if advances {
            log.last_purged = Some(log_id);
        }
        // Keep only the entries after `log_id.index`.
        log.entries.retain(|&index, _| index > log_id.index);
        Ok(())
    }
}
