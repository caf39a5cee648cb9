//! Whether this node is a member of the cluster, and whether it was removed from it: what
//! `RAFT.STATUS` reports as `member:`, and what turns a removed node's endless `TRYAGAIN`
//! into an error that says why.
//!
//! A node's [`Status`] carries only the configuration in force, the latest in its log. A node
//! whose id is not in it is either a joiner that no leader has added yet (its log is empty, or
//! holds the cluster's older configurations while it catches up) or a member that was
//! removed. The status alone cannot tell them apart, so [`MembershipRecord`] remembers, for
//! the life of the process, whether the node ever followed a committed configuration that
//! named it.
//!
//! A follower learns of its removal from the entry that removes it, which the leader still
//! sends it for a few heartbeat rounds after appending it. What it cannot see: a follower that
//! was down or cut off for all of those rounds never receives that entry, so its own log still
//! names it and it stays a [`Standing::Member`] that never hears from a leader. And a removed
//! node that restarts has forgotten it was a member: it reports [`Standing::NotMember`], as a
//! joiner does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use yggr::{LogIndex, Status};

/// How this node stands in the cluster, as far as it can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The configuration in force names this node, as a voter or a learner.
    Member,
    /// It does not, and this process never saw a committed one that did: a joiner waiting to
    /// be added or catching up, or a removed node restarted since (the two look the same).
    NotMember,
    /// It does not, although this process saw a committed configuration that did: the node
    /// was removed. The configuration that removed it may not be committed yet; should it be
    /// rolled back, the node is a member again.
    Removed,
}

impl Standing {
    /// The value of `RAFT.STATUS`'s `member:` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Member => "yes",
            Standing::NotMember => "no",
            Standing::Removed => "removed",
        }
    }
}

/// What this process has seen of its own membership; clones share it.
#[derive(Clone, Debug, Default)]
pub struct MembershipRecord {
    shared: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    /// A committed configuration named this node. Never cleared: committed entries stay.
    was_member: AtomicBool,
    /// The last observation was [`Standing::Removed`].
    removed: AtomicBool,
}

impl MembershipRecord {
    /// Records one observation of the node (its status and the index of its last log entry,
    /// taken together) and returns how it stands.
    pub fn observe(&self, status: &Status, last_log_index: LogIndex) -> Standing {
        // With the whole log committed, the entry (or snapshot) that set the configuration in
        // force is committed too, so a configuration naming this node was agreed, not merely
        // proposed to it by a leader that may yet be overruled.
        let whole_log_committed = status.commit_index >= last_log_index;
        self.record(status.membership.contains(status.id), whole_log_committed)
    }

    fn record(&self, named: bool, whole_log_committed: bool) -> Standing {
        let flags = &self.shared;
        if named && whole_log_committed {
            flags.was_member.store(true, Ordering::Relaxed);
        }
        let standing = if named {
            Standing::Member
        } else if flags.was_member.load(Ordering::Relaxed) {
            Standing::Removed
        } else {
            Standing::NotMember
        };
        flags
            .removed
            .store(standing == Standing::Removed, Ordering::Relaxed);
        standing
    }

    /// Whether the last observation found the node removed.
    pub fn is_removed(&self) -> bool {
        self.shared.removed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_is_not_a_member_until_a_committed_configuration_names_it() {
        let record = MembershipRecord::default();
        // Empty, then catching up on the configurations from before it was added.
        assert_eq!(record.record(false, true), Standing::NotMember);
        assert_eq!(record.record(false, false), Standing::NotMember);
        // An uncommitted configuration naming it, rolled back by the next leader.
        assert_eq!(record.record(true, false), Standing::Member);
        assert_eq!(record.record(false, true), Standing::NotMember);
        assert!(!record.is_removed());
    }

    #[test]
    fn a_member_whose_configuration_drops_it_is_removed() {
        let record = MembershipRecord::default();
        assert_eq!(record.record(true, true), Standing::Member);
        let shared = record.clone();
        assert_eq!(record.record(false, false), Standing::Removed);
        assert!(shared.is_removed());
        // Its removal rolled back: a member again.
        assert_eq!(record.record(true, false), Standing::Member);
        assert!(!shared.is_removed());
    }
}
