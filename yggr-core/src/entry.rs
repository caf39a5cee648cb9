//! Log entries: what the replicated log holds.

use crate::membership::{ConfigChange, Membership};
use crate::types::{LogIndex, Term};

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry<C> {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log; never zero.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload<C>,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload<C> {
    /// The empty entry a new leader appends to commit its term (§5.4.2). Hosts skip it.
    Noop,
    /// An application command.
    Command(C),
    /// A single-server membership change (§4.3). The entry records both the delta and the
    /// whole configuration it produces, so a node that never saw the founding configuration (a
    /// joiner, or one caught up from the middle of the log) still learns the full member set.
    ConfigChange {
        /// The delta this entry makes.
        change: ConfigChange,
        /// The configuration in force once this entry is in the log.
        membership: Membership,
    },
}

impl<C> LogEntry<C> {
    /// The configuration this entry installs, if it is a membership change.
    pub fn membership(&self) -> Option<&Membership> {
        match &self.payload {
            EntryPayload::ConfigChange { membership, .. } => Some(membership),
            _ => None,
        }
    }
}
