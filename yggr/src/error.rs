//! Every way a call on a [`Node`](crate::Node) can fail. Each variant maps to one thing the
//! caller should do: retry elsewhere, back off, stop, or restart the process.

use yggr_core::NodeId;

use crate::config::ConfigError;

/// Why a write (or `propose`, or `write_batch`) failed.
///
/// Every variant but `OutcomeUnknown`, `DriverDead` and `Fatal` is a definite refusal: the
/// command was not appended to the log, or the entry that held it was replaced by a committed
/// entry of another leader, so it will never apply and retrying it cannot apply it twice.
/// `OutcomeUnknown` says the write may or may not have applied; after `DriverDead` or `Fatal`
/// the process restarts, and a write that was under way may have applied too.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node does not lead; `leader_hint` does (or is about to). The write was not
    /// executed and never will be: retry there.
    #[error("not the leader; try node {leader_hint}")]
    NotLeader {
        /// The node believed to lead.
        leader_hint: NodeId,
    },
    /// No leader is known (an election is under way). The write was not executed and never
    /// will be: back off and retry.
    #[error("no leader is known")]
    NoLeader,
    /// The command was appended to the log, but this node could not learn whether it
    /// committed: it lost leadership and did not hear the entry's fate within
    /// [`Config::outcome_wait_ticks`](crate::Config::outcome_wait_ticks), it shut down first,
    /// or a snapshot from the new leader skipped past the entry. The write may have been
    /// applied or not. Do not retry it blindly (a retried increment could count twice): read
    /// the state first, or make commands idempotent. For a batch, some of its commands may
    /// have applied and others not.
    #[error("the write's outcome is unknown: it may or may not have been applied")]
    OutcomeUnknown,
    /// `max_pending_proposals` proposals are already in flight. Back off and retry.
    #[error("too many proposals in flight")]
    Busy,
    /// A command encodes to more than `Config::max_command_bytes`; nothing was proposed.
    /// Split it, or raise the limit.
    #[error("a command of {bytes} bytes is above the limit of {limit}")]
    TooLarge {
        /// The encoded size of the largest command refused.
        bytes: usize,
        /// `Config::max_command_bytes`.
        limit: usize,
    },
    /// The node is shutting down; the write was not appended.
    #[error("the node is shutting down")]
    Shutdown,
    /// The driver task is gone without a clean shutdown. Restart the process. A write that
    /// was under way may have been applied.
    #[error("the node's driver stopped unexpectedly")]
    DriverDead,
    /// The node stopped after an unrecoverable fault: its storage failed, its transport
    /// closed, or the state machine panicked. Restart the process. A write that was under way
    /// may have been applied.
    #[error("the node stopped after a fatal error")]
    Fatal,
}

/// Why a linearizable read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// This node does not lead; `leader_hint` does. Retry there.
    #[error("not the leader; try node {leader_hint}")]
    NotLeader {
        /// The node believed to lead.
        leader_hint: NodeId,
    },
    /// No leader is known. Back off and retry.
    #[error("no leader is known")]
    NoLeader,
    /// The leader could not confirm the read yet. Reads that reach a leader before it has
    /// committed an entry of its term wait for that commit instead, so this runtime does not
    /// return it today; it is kept for callers that match on it.
    #[error("the leader is not ready to serve reads")]
    NotReady,
    /// The leader's state machine is far behind (its apply backlog is full) and
    /// [`MAX_PARKED_READS`](crate::MAX_PARKED_READS) reads already wait for it. Back off and
    /// retry.
    #[error("too many reads waiting for the state machine")]
    Busy,
    /// Leadership was lost before the read could be confirmed. Retry on the new leader.
    #[error("leadership was lost before the read was confirmed")]
    SteppedDown,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// The driver task is gone without a clean shutdown.
    #[error("the node's driver stopped unexpectedly")]
    DriverDead,
    /// The node hit an unrecoverable fault.
    #[error("the node stopped after a fatal error")]
    Fatal,
}

/// Why a leadership transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferLeadershipError {
    /// This node does not lead; `leader_hint` does.
    #[error("not the leader; try node {leader_hint}")]
    NotLeader {
        /// The node believed to lead.
        leader_hint: NodeId,
    },
    /// No leader is known.
    #[error("no leader is known")]
    NoLeader,
    /// The target is this node, or not a voter.
    #[error("the transfer target is this node or not a voter")]
    InvalidTarget,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// The driver task is gone without a clean shutdown.
    #[error("the node's driver stopped unexpectedly")]
    DriverDead,
    /// The node hit an unrecoverable fault.
    #[error("the node stopped after a fatal error")]
    Fatal,
}

/// Why a membership change failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// This node does not lead; `leader_hint` does.
    #[error("not the leader; try node {leader_hint}")]
    NotLeader {
        /// The node believed to lead.
        leader_hint: NodeId,
    },
    /// No leader is known.
    #[error("no leader is known")]
    NoLeader,
    /// Too many proposals are in flight, or the leader has not yet committed an entry of its
    /// term (changes wait for that), or a leadership transfer is under way. Retry shortly.
    #[error("the leader cannot take a membership change right now")]
    Busy,
    /// Another membership change is not committed yet (§4.3 allows one at a time).
    #[error("another membership change is still in progress")]
    ChangeInProgress,
    /// `remove_peer` of a node that is neither a voter nor a learner. (Promoting a
    /// non-member is `NotLearner`.)
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    /// The change was appended to the log, but this node could not learn whether it
    /// committed (see [`ProposeError::OutcomeUnknown`]). Check the membership before trying
    /// again.
    #[error("the membership change's outcome is unknown: it may or may not have been applied")]
    OutcomeUnknown,
    /// The node is already a voter.
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    /// The node is already a learner.
    #[error("node {0} is already a learner")]
    AlreadyLearner(NodeId),
    /// The node is not a learner, so it cannot be promoted.
    #[error("node {0} is not a learner")]
    NotLearner(NodeId),
    /// The change would leave a configuration that cannot work (no voters).
    #[error("the change would leave the cluster without voters")]
    InvalidTargetMembership,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// The driver task is gone without a clean shutdown.
    #[error("the node's driver stopped unexpectedly")]
    DriverDead,
    /// The node hit an unrecoverable fault.
    #[error("the node stopped after a fatal error")]
    Fatal,
}

/// Why `status`, `metrics` or `node_metrics` could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The node is shutting down or has shut down.
    #[error("the node is shutting down")]
    Shutdown,
    /// The driver task is gone without a clean shutdown.
    #[error("the node's driver stopped unexpectedly")]
    DriverDead,
    /// The node hit an unrecoverable fault.
    #[error("the node stopped after a fatal error")]
    Fatal,
}

/// Why `shutdown` did not complete cleanly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Another handle already shut the node down.
    #[error("the node was already shut down")]
    AlreadyShutdown,
    /// The driver task died before it could drain.
    #[error("the node's driver stopped unexpectedly")]
    DriverDead,
    /// The node had stopped after a fatal error; it was stopped, but not drained.
    #[error("the node stopped after a fatal error")]
    Fatal,
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeStartError<E> {
    /// The configuration failed [`Config::validate`](crate::Config::validate).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The storage failed to load or to record the founding configuration.
    #[error("storage failed: {0}")]
    Storage(E),
    /// [`Bootstrap::Recover`](crate::Bootstrap::Recover) over storage that holds nothing:
    /// there is no state to recover. A first start needs `NewCluster` or `Join`.
    #[error(
        "nothing to recover: the storage is empty (start a new cluster with Bootstrap::NewCluster, or a new member with Bootstrap::Join)"
    )]
    NothingToRecover,
    /// [`Bootstrap::Join`](crate::Bootstrap::Join) over storage that belongs to a founding
    /// member: that node must restart with `Recover`.
    #[error(
        "this storage belongs to a founding member of a cluster; restart it with Bootstrap::Recover, not Join"
    )]
    JoinOverFoundingMember,
    /// The storage was recorded for another node: starting over it would give this node
    /// that node's vote and log. Check the data directory and the node id.
    #[error("this storage belongs to node {stored}, not to node {configured}")]
    WrongNode {
        /// The id the storage was recorded for.
        stored: NodeId,
        /// `Config::node_id`.
        configured: NodeId,
    },
    /// The stored state is inconsistent (a gap in the log, a term from the future, ...).
    #[error("stored state is inconsistent: {0}")]
    Recovery(yggr_core::RecoveryError),
}
