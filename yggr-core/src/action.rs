//! What the engine asks its host to do.

use bytes::Bytes;

use crate::entry::LogEntry;
use crate::membership::Membership;
use crate::message::Message;
use crate::types::{LogIndex, NodeId, Term};

/// One effect requested by [`Engine::step`](crate::Engine::step).
///
/// # Ordering contract
///
/// The actions of one `step` come out in causal order, and the host must carry them out in
/// that order. In particular, every `Persist*` action must be durable (written and fsynced)
/// before the host performs any action that comes after it: a vote or an acknowledgement may
/// only leave the node once the state it promises is on disk (Figure 2, "respond to RPCs only
/// after updating stable storage"), and an `Apply` or `ReadReady` may only reach a client once
/// the entries behind it are durable (a leader that is a majority on its own commits an entry
/// in the very step that asks to persist it). A host that batches several steps into one fsync
/// (group commit) keeps this rule per batch: flush first, then send and apply.
///
/// `Send` is best-effort: a lost message is recovered by the engine's own retries.
/// `Apply`, `ApplySnapshot`, `Redirect`, `TransferInProgress`, `ReadReady`, `ReadFailed` and
/// `SnapshotHint` need no fsync of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<C> {
    /// Durably store the term and vote before anything that follows.
    PersistHardState {
        /// The current term.
        current_term: Term,
        /// The vote cast in `current_term`, if any.
        voted_for: Option<NodeId>,
    },
    /// Durably store these entries before anything that follows. They are contiguous; the
    /// stored log must end up holding exactly them from `entries[0].index` on: any stored entry
    /// at or past that index is discarded first (a follower overwriting a conflicting suffix).
    PersistLogEntries(Vec<LogEntry<C>>),
    /// Durably store a snapshot and trim the stored log to match it, before anything that
    /// follows:
    /// - stored entries at or below `last_included_index` are discarded (the snapshot covers
    ///   them);
    /// - if the stored log holds the entry at `last_included_index` with term
    ///   `last_included_term`, every stored entry after it is kept: the log continues the
    ///   snapshot;
    /// - otherwise the whole stored log is discarded: it diverges from the snapshot, and the
    ///   leader will send what follows.
    ///
    /// Replace the previous snapshot atomically: a crash must leave either the old snapshot
    /// with the old log or the new snapshot with the trimmed log.
    PersistSnapshot {
        /// The last index the snapshot covers.
        last_included_index: LogIndex,
        /// The term of that entry.
        last_included_term: Term,
        /// The configuration as of `last_included_index`.
        membership: Membership,
        /// The opaque state-machine bytes.
        bytes: Bytes,
    },
    /// Deliver `message` to `to`. The receiver feeds it to its engine as
    /// [`Event::Incoming`](crate::Event::Incoming) unchanged.
    Send {
        /// The destination server.
        to: NodeId,
        /// The RPC, naming this node as its sender.
        message: Message<C>,
    },
    /// Apply these committed entries to the state machine, in order. The engine has already
    /// advanced its applied index past them; the host must not skip any. No-op and membership
    /// entries are included so that every index is accounted for; hosts skip what they do not
    /// need.
    Apply(Vec<LogEntry<C>>),
    /// Replace the state machine's state with this snapshot. The `PersistSnapshot` emitted
    /// just before it, in the same step, names the index and term it reflects.
    ApplySnapshot {
        /// The opaque bytes produced by the leader's state machine.
        bytes: Bytes,
    },
    /// This node is not the leader: fail the proposal that caused this step.
    Redirect {
        /// The leader, when this node knows one.
        leader_hint: Option<NodeId>,
    },
    /// This leader is handing leadership to `target` (thesis §3.10) and takes no proposals
    /// until the transfer completes or times out (an election timeout): fail the proposal that
    /// caused this step. `target` is likely to lead shortly; retrying there is reasonable.
    TransferInProgress {
        /// The node leadership is being handed to.
        target: NodeId,
    },
    /// The read with this id is linearizable now: serve it from the local state machine once it
    /// has applied every entry emitted so far.
    ReadReady {
        /// The host's handle for the read.
        id: u64,
    },
    /// The read with this id cannot be served here.
    ReadFailed {
        /// The host's handle for the read.
        id: u64,
        /// Why.
        reason: ReadFailure,
    },
    /// A membership change was refused; nothing was appended.
    ConfigChangeRejected {
        /// The change that was proposed.
        change: crate::membership::ConfigChange,
        /// Why it was refused.
        reason: ConfigChangeRejection,
    },
    /// A leadership transfer was refused: the target is this node, not a voter, or unknown.
    TransferRejected {
        /// The requested target.
        target: NodeId,
    },
    /// Advisory: enough has been applied (or the log has grown enough) that a snapshot through
    /// `last_included_index` would be worthwhile. Ignore, debounce or act.
    SnapshotHint {
        /// The highest index a snapshot may cover now (the applied index).
        last_included_index: LogIndex,
    },
}

/// Why a linearizable read failed. A read that reaches a leader before it has committed an
/// entry of its own term is not failed: it waits for that commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFailure {
    /// This node is not the leader.
    NotLeader {
        /// The leader, when known.
        leader_hint: Option<NodeId>,
    },
    /// Leadership was lost before the read could be confirmed.
    SteppedDown,
}

/// Why a membership change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChangeRejection {
    /// Another membership change is still uncommitted (§4.3 allows one at a time).
    ChangeInProgress,
    /// This leader has not yet committed an entry of its own term.
    LeaderNotReady,
    /// A leadership transfer is pending.
    TransferInProgress,
    /// The change does not apply to the current configuration.
    Invalid(crate::membership::MembershipChangeError),
}
