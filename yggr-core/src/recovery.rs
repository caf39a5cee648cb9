//! What a host reads back from disk after a restart, and its validation.

use bytes::Bytes;

use crate::entry::LogEntry;
use crate::membership::Membership;
use crate::types::{LogIndex, NodeId, Term};

/// Durable state handed to [`Engine::recover_from`](crate::Engine::recover_from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredHardState<C> {
    /// The last persisted term.
    pub current_term: Term,
    /// The last persisted vote.
    pub voted_for: Option<NodeId>,
    /// The latest persisted snapshot, if any.
    pub snapshot: Option<RecoveredSnapshot>,
    /// The persisted log entries after the snapshot, contiguous and in order.
    pub log: Vec<LogEntry<C>>,
}

/// A persisted snapshot's metadata and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredSnapshot {
    /// The last index it covers.
    pub last_included_index: LogIndex,
    /// The term of that entry.
    pub last_included_term: Term,
    /// The configuration as of that index.
    pub membership: Membership,
    /// The state-machine bytes, kept so the node can send them to followers that need them.
    pub bytes: Bytes,
}

/// Why recovered state was refused. Disk contents are untrusted input: each inconsistency is
/// reported, never papered over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// `recover_from` was called after the engine had processed events.
    #[error("recover_from must be called before the first step")]
    AlreadyStarted,
    /// The log has a gap or starts at the wrong index.
    #[error("log entry at position {position} has index {found}, expected {expected}")]
    NonContiguousLog {
        /// Position in the recovered vector.
        position: usize,
        /// The index that entry should have.
        expected: LogIndex,
        /// The index it has.
        found: LogIndex,
    },
    /// A log entry's term is lower than the one before it (or than the snapshot's).
    #[error("log entry {index} has term {term}, below the preceding term {previous}")]
    TermRegression {
        /// The offending entry.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The term before it.
        previous: Term,
    },
    /// An entry or the snapshot claims a term newer than the persisted current term.
    #[error("term {term} at index {index} is newer than the persisted current term {current_term}")]
    TermFromTheFuture {
        /// Where.
        index: LogIndex,
        /// The claimed term.
        term: Term,
        /// The persisted current term.
        current_term: Term,
    },
}

impl<C> RecoveredHardState<C> {
    /// Checks that the log continues the snapshot without gaps and that no term runs
    /// backwards or ahead of `current_term`.
    ///
    /// # Errors
    /// The first inconsistency found.
    pub fn validate(&self) -> Result<(), RecoveryError> {
        let (mut previous_index, mut previous_term) = self
            .snapshot
            .as_ref()
            .map_or((LogIndex::ZERO, Term::ZERO), |snapshot| {
                (snapshot.last_included_index, snapshot.last_included_term)
            });
        if previous_term > self.current_term {
            return Err(RecoveryError::TermFromTheFuture {
                index: previous_index,
                term: previous_term,
                current_term: self.current_term,
            });
        }
        for (position, entry) in self.log.iter().enumerate() {
            let expected = previous_index.next();
            if entry.index != expected || expected == previous_index {
                return Err(RecoveryError::NonContiguousLog {
                    position,
                    expected,
                    found: entry.index,
                });
            }
            if entry.term < previous_term {
                return Err(RecoveryError::TermRegression {
                    index: entry.index,
                    term: entry.term,
                    previous: previous_term,
                });
            }
            if entry.term > self.current_term {
                return Err(RecoveryError::TermFromTheFuture {
                    index: entry.index,
                    term: entry.term,
                    current_term: self.current_term,
                });
            }
            previous_index = entry.index;
            previous_term = entry.term;
        }
        Ok(())
    }
}
