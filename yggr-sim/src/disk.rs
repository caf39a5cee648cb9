//! A simulated disk: what a node has made durable, and the writes still waiting for fsync.

use bytes::Bytes;
use yggr_core::{
    LogEntry, LogIndex, Membership, NodeId, RecoveredHardState, RecoveredSnapshot, Term,
};

use crate::harness::Command;

/// A snapshot as stored on the simulated disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The last index it covers.
    pub last_included_index: LogIndex,
    /// The term of that entry.
    pub last_included_term: Term,
    /// The configuration at that index.
    pub membership: Membership,
    /// The state machine's bytes.
    pub bytes: Bytes,
}

/// One write the engine asked for that has not been fsynced yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingWrite {
    /// `PersistHardState`.
    HardState {
        /// The term to store.
        current_term: Term,
        /// The vote to store.
        voted_for: Option<NodeId>,
    },
    /// `PersistLogEntries`.
    Entries(Vec<LogEntry<Command>>),
    /// `PersistSnapshot`.
    Snapshot(StoredSnapshot),
}

/// What survives a crash.
///
/// Invariant: `log` is contiguous from the snapshot's index plus one (or from 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The stored term.
    pub current_term: Term,
    /// The stored vote.
    pub voted_for: Option<NodeId>,
    /// The stored snapshot.
    pub snapshot: Option<StoredSnapshot>,
    /// The stored entries after the snapshot.
    pub log: Vec<LogEntry<Command>>,
}

impl DurableState {
    /// The index the stored log starts after.
    pub fn floor(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |s| s.last_included_index)
    }

    /// The last stored index.
    pub fn last_index(&self) -> LogIndex {
        self.floor().plus(self.log.len() as u64)
    }

    /// The stored term at `index` (the snapshot's at its index), if stored.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        let floor = self.floor();
        if index == floor {
            return Some(
                self.snapshot
                    .as_ref()
                    .map_or(Term::ZERO, |s| s.last_included_term),
            );
        }
        if index < floor {
            return None;
        }
        let offset = usize::try_from(index.distance_from(floor) - 1).ok()?;
        self.log.get(offset).map(|entry| entry.term)
    }

    /// Makes one write durable, with the semantics documented on `yggr_core::Action`.
    pub fn apply(&mut self, write: PendingWrite) {
        match write {
            PendingWrite::HardState {
                current_term,
                voted_for,
            } => {
                self.current_term = current_term;
                self.voted_for = voted_for;
            }
            PendingWrite::Entries(entries) => {
                let Some(first) = entries.first() else {
                    return;
                };
                let floor = self.floor();
                let keep = usize::try_from(first.index.distance_from(floor).saturating_sub(1))
                    .unwrap_or(usize::MAX);
                self.log.truncate(keep);
                self.log
                    .extend(entries.into_iter().filter(|e| e.index > floor));
            }
            PendingWrite::Snapshot(snapshot) => {
                let index = snapshot.last_included_index;
                let continues = self.term_at(index) == Some(snapshot.last_included_term);
                let floor = self.floor();
                if continues && index >= floor {
                    let drop = usize::try_from(index.distance_from(floor)).unwrap_or(usize::MAX);
                    self.log.drain(..drop.min(self.log.len()));
                } else {
                    self.log.clear();
                }
                self.snapshot = Some(snapshot);
            }
        }
    }

    /// The state handed to `Engine::recover_from` after a restart.
    pub fn recovered(&self) -> RecoveredHardState<Command> {
        RecoveredHardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
            snapshot: self.snapshot.as_ref().map(|s| RecoveredSnapshot {
                last_included_index: s.last_included_index,
                last_included_term: s.last_included_term,
                membership: s.membership.clone(),
                bytes: s.bytes.clone(),
            }),
            log: self.log.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yggr_core::EntryPayload;

    fn entry(index: u64, term: u64) -> LogEntry<Command> {
        LogEntry {
            term: Term::new(term),
            index: LogIndex::new(index),
            payload: EntryPayload::Command(index),
        }
    }

    #[test]
    fn entries_replace_the_stored_tail_from_their_first_index() {
        let mut disk = DurableState::default();
        disk.apply(PendingWrite::Entries(vec![
            entry(1, 1),
            entry(2, 1),
            entry(3, 1),
        ]));
        disk.apply(PendingWrite::Entries(vec![entry(2, 2)]));
        assert_eq!(disk.last_index(), LogIndex::new(2));
        assert_eq!(disk.term_at(LogIndex::new(2)), Some(Term::new(2)));
    }

    #[test]
    fn snapshot_keeps_a_continuing_suffix_and_drops_a_diverging_one() {
        let snapshot = |index: u64, term: u64| {
            PendingWrite::Snapshot(StoredSnapshot {
                last_included_index: LogIndex::new(index),
                last_included_term: Term::new(term),
                membership: Membership::default(),
                bytes: Bytes::new(),
            })
        };
        let mut disk = DurableState::default();
        disk.apply(PendingWrite::Entries(vec![
            entry(1, 1),
            entry(2, 1),
            entry(3, 1),
        ]));
        disk.apply(snapshot(2, 1));
        assert_eq!(disk.log, vec![entry(3, 1)]);
        disk.apply(snapshot(3, 5));
        assert!(disk.log.is_empty());
        assert_eq!(disk.last_index(), LogIndex::new(3));
    }
}
