//! What a node reports about itself: [`Status`], and [`NodeMetrics`] with per-follower
//! progress.

use std::collections::BTreeMap;

use yggr_core::{EngineMetrics, LogIndex, Membership, NodeId, Role, Term};

/// A point-in-time view of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// The role it plays now.
    pub role: Role,
    /// Its current term.
    pub current_term: Term,
    /// The highest index it knows committed.
    pub commit_index: LogIndex,
    /// The highest index its state machine has applied (or restored a snapshot through). It
    /// trails `commit_index` by whatever is still waiting to be applied.
    pub last_applied: LogIndex,
    /// The leader it knows of; `Some(id)` on the leader itself.
    pub leader: Option<NodeId>,
    /// The configuration in force: every voter and learner, this node included when it is a
    /// member.
    pub membership: Membership,
}

/// A follower's replication progress, as its leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowerProgress {
    /// The highest index known to match the leader's log.
    pub matched: LogIndex,
    /// The next index the leader will send.
    pub next_index: LogIndex,
    /// Whether the follower is a learner (it does not count toward commit).
    pub is_learner: bool,
}

/// Replication progress: filled on the leader only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationMetrics {
    /// Each follower's progress, by id.
    pub followers: BTreeMap<NodeId, FollowerProgress>,
}

/// The engine's counters and gauges, plus the node's status and, on the leader, every
/// follower's progress (decide when a learner has caught up from it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeMetrics {
    /// The engine's counters and gauges.
    pub engine: EngineMetrics,
    /// The node's status.
    pub status: Status,
    /// Per-follower progress (leader only; empty elsewhere).
    pub replication: ReplicationMetrics,
    /// The index of the last entry in the node's log.
    pub last_log_index: LogIndex,
    /// Snapshots of the state machine this node took and stored for compaction, since it
    /// started.
    pub snapshots_taken: u64,
    /// Snapshots of the state machine that failed since the node started: the state machine
    /// refused or panicked, or storage could not prepare the bytes. Each is logged at `warn`,
    /// and another is tried later.
    pub snapshots_failed: u64,
}
