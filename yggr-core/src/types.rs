//! The small value types every other module speaks in: node identities, terms and log indexes.

use std::fmt;
use std::num::NonZeroU64;

/// The identity of one Raft server.
///
/// Invariant: never zero. Zero is reserved on the wire to mean "no node" (for example, no vote
/// cast), so a `NodeId` can always be told apart from that absence.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(NonZeroU64);

impl NodeId {
    /// Returns the id for `raw`, or `None` when `raw` is zero.
    pub const fn new(raw: u64) -> Option<NodeId> {
        match NonZeroU64::new(raw) {
            Some(value) => Some(NodeId(value)),
            None => None,
        }
    }

    /// The id as a plain integer; never zero.
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "NodeId({})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A Raft term (§5.1): a logical clock that only moves forward on each server.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(u64);

impl Term {
    /// The term every server starts in before any election.
    pub const ZERO: Term = Term(0);

    /// Wraps a raw term number.
    pub const fn new(raw: u64) -> Term {
        Term(raw)
    }

    /// The term as a plain integer.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The term after this one. Saturates rather than wrapping: 2^64 elections will not happen,
    /// and a wrapped term would break the "terms only grow" invariant.
    pub const fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl fmt::Debug for Term {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Term({})", self.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A position in the replicated log. The first entry has index 1; index 0 means "before the
/// first entry" (an empty log, or the base of a log with no snapshot).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(u64);

impl LogIndex {
    /// The index before the first entry.
    pub const ZERO: LogIndex = LogIndex(0);

    /// Wraps a raw index.
    pub const fn new(raw: u64) -> LogIndex {
        LogIndex(raw)
    }

    /// The index as a plain integer.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The following index (saturating).
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }

    /// The preceding index, or zero at zero.
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// This index moved forward by `count` positions (saturating).
    pub const fn plus(self, count: u64) -> LogIndex {
        LogIndex(self.0.saturating_add(count))
    }

    /// How many positions `self` lies past `earlier`, or zero when it does not.
    pub const fn distance_from(self, earlier: LogIndex) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Debug for LogIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "LogIndex({})", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// The role a server plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Passive: answers leaders and candidates.
    Follower,
    /// Probing with pre-votes (§9.6) whether an election could succeed, without changing term.
    PreCandidate,
    /// Campaigning for votes in a new term (§5.2).
    Candidate,
    /// Accepting proposals and replicating them (§5.3).
    Leader,
}

impl Role {
    /// The numeric code reported in metrics: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub const fn code(self) -> u8 {
        match self {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        }
    }

    /// The lower-case name used in tracing fields.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "precandidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rejects_zero_and_round_trips_other_values() {
        assert_eq!(NodeId::new(0), None);
        assert_eq!(NodeId::new(7).map(NodeId::get), Some(7));
        assert_eq!(NodeId::new(u64::MAX).map(NodeId::get), Some(u64::MAX));
    }

    #[test]
    fn node_ids_order_by_their_number_and_display_it() {
        let one = NodeId::new(1).unwrap();
        let two = NodeId::new(2).unwrap();
        assert!(one < two);
        assert_eq!(two.to_string(), "2");
        assert_eq!(format!("{two:?}"), "NodeId(2)");
    }

    #[test]
    fn index_arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(LogIndex::ZERO.prev(), LogIndex::ZERO);
        assert_eq!(LogIndex::new(u64::MAX).next(), LogIndex::new(u64::MAX));
        assert_eq!(LogIndex::new(3).distance_from(LogIndex::new(5)), 0);
        assert_eq!(LogIndex::new(5).distance_from(LogIndex::new(3)), 2);
        assert_eq!(Term::new(u64::MAX).next(), Term::new(u64::MAX));
    }

    #[test]
    fn terms_indexes_and_roles_print_their_values() {
        assert_eq!(format!("{:?}", Term::new(4)), "Term(4)");
        assert_eq!(format!("{:?}", LogIndex::new(9)), "LogIndex(9)");
        assert_eq!(Term::new(4).to_string(), "4");
        assert_eq!(LogIndex::new(9).to_string(), "9");
        let names = [
            Role::Follower,
            Role::PreCandidate,
            Role::Candidate,
            Role::Leader,
        ]
        .map(|role| role.to_string());
        assert_eq!(names, ["follower", "precandidate", "candidate", "leader"]);
        assert_eq!(Role::Leader.as_str(), "leader");
    }

    #[test]
    fn role_codes_match_the_metrics_contract() {
        assert_eq!(Role::Follower.code(), 0);
        assert_eq!(Role::PreCandidate.code(), 1);
        assert_eq!(Role::Candidate.code(), 2);
        assert_eq!(Role::Leader.code(), 3);
    }
}
