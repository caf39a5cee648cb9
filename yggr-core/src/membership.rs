//! Cluster membership: who votes, who only learns (§4.3, thesis §4.2.1).

use std::collections::BTreeSet;

use crate::types::NodeId;

/// One single-server membership change (§4.3). Each log entry carries at most one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigChange {
    /// Add a new voting member.
    AddPeer(NodeId),
    /// Add a non-voting member that receives replication only.
    AddLearner(NodeId),
    /// Turn an existing learner into a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or a learner.
    RemovePeer(NodeId),
}

/// Why a [`ConfigChange`] cannot apply to a [`Membership`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipChangeError {
    /// The node is already a voter.
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    /// The node is already a learner.
    #[error("node {0} is already a learner")]
    AlreadyLearner(NodeId),
    /// The node is not a learner, so it cannot be promoted.
    #[error("node {0} is not a learner")]
    NotLearner(NodeId),
    /// The node is not a member at all.
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    /// The change would leave no voter, and so no way to ever commit again.
    #[error("the change would leave the cluster without voters")]
    NoVotersLeft,
}

/// The voters and learners of a configuration.
///
/// Invariant: `voters` and `learners` are disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Members that vote and count toward the commit majority.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive replication but never campaign and are not counted in elections or
    /// commits. (They answer vote requests like anyone: the candidate decides whose votes count.)
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A configuration of voters only.
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// The empty configuration a joining node starts with: it knows nobody and votes for nobody.
    pub fn empty() -> Membership {
        Membership::default()
    }

    /// Whether `node` is a voter.
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains(&node)
    }

    /// Whether `node` is a learner.
    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.contains(&node)
    }

    /// Whether `node` is a voter or a learner.
    pub fn contains(&self, node: NodeId) -> bool {
        self.is_voter(node) || self.is_learner(node)
    }

    /// Every member, voters and learners, in ascending id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut all: Vec<NodeId> = self
            .voters
            .iter()
            .chain(self.learners.iter())
            .copied()
            .collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// How many voters make a majority.
    pub fn quorum_size(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why the change does not apply.
    ///
    /// # Errors
    /// A [`MembershipChangeError`] naming the conflict; `self` is never modified.
    pub fn with_change(&self, change: ConfigChange) -> Result<Membership, MembershipChangeError> {
        let mut next = self.clone();
        match change {
            ConfigChange::AddPeer(node) => {
                if self.is_voter(node) {
                    return Err(MembershipChangeError::AlreadyVoter(node));
                }
                // Adding a learner as a voter directly is a promotion in all but name.
                next.learners.remove(&node);
                next.voters.insert(node);
            }
            ConfigChange::AddLearner(node) => {
                if self.is_voter(node) {
                    return Err(MembershipChangeError::AlreadyVoter(node));
                }
                if self.is_learner(node) {
                    return Err(MembershipChangeError::AlreadyLearner(node));
                }
                next.learners.insert(node);
            }
            ConfigChange::PromoteLearner(node) => {
                if self.is_voter(node) {
                    return Err(MembershipChangeError::AlreadyVoter(node));
                }
                if !next.learners.remove(&node) {
                    return Err(MembershipChangeError::NotLearner(node));
                }
                next.voters.insert(node);
            }
            ConfigChange::RemovePeer(node) => {
                if !self.contains(node) {
                    return Err(MembershipChangeError::UnknownNode(node));
                }
                next.voters.remove(&node);
                next.learners.remove(&node);
                if next.voters.is_empty() {
                    return Err(MembershipChangeError::NoVotersLeft);
                }
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    #[test]
    fn quorum_is_a_strict_majority_of_voters_only() {
        let mut membership = Membership::from_voters([id(1), id(2), id(3)]);
        assert_eq!(membership.quorum_size(), 2);
        membership.learners.insert(id(4));
        assert_eq!(
            membership.quorum_size(),
            2,
            "learners never count toward quorum"
        );
        membership.voters.insert(id(5));
        assert_eq!(membership.quorum_size(), 3);
    }

    #[test]
    fn learner_lifecycle_add_promote_remove() {
        let base = Membership::from_voters([id(1)]);
        let with_learner = base.with_change(ConfigChange::AddLearner(id(2))).unwrap();
        assert!(with_learner.is_learner(id(2)) && !with_learner.is_voter(id(2)));
        let promoted = with_learner
            .with_change(ConfigChange::PromoteLearner(id(2)))
            .unwrap();
        assert!(promoted.is_voter(id(2)) && !promoted.is_learner(id(2)));
        let removed = promoted
            .with_change(ConfigChange::RemovePeer(id(2)))
            .unwrap();
        assert_eq!(removed, base);
    }

    #[test]
    fn conflicting_changes_are_refused_with_a_reason() {
        let base = Membership::from_voters([id(1)]);
        assert_eq!(
            base.with_change(ConfigChange::AddPeer(id(1))),
            Err(MembershipChangeError::AlreadyVoter(id(1)))
        );
        assert_eq!(
            base.with_change(ConfigChange::PromoteLearner(id(9))),
            Err(MembershipChangeError::NotLearner(id(9)))
        );
        assert_eq!(
            base.with_change(ConfigChange::RemovePeer(id(9))),
            Err(MembershipChangeError::UnknownNode(id(9)))
        );
        assert_eq!(
            base.with_change(ConfigChange::RemovePeer(id(1))),
            Err(MembershipChangeError::NoVotersLeft)
        );
    }
}
