//! What drives the engine forward.

use bytes::Bytes;

use crate::membership::ConfigChange;
use crate::message::Message;
use crate::types::{LogIndex, NodeId};

/// One input to [`Engine::step`](crate::Engine::step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<C> {
    /// Abstract time advanced by one tick. Election and heartbeat timers count these.
    Tick,
    /// A peer's RPC arrived.
    Incoming(Message<C>),
    /// The application wants one command replicated.
    ClientProposal(C),
    /// The application wants several commands replicated: one append, one persist, one
    /// broadcast (group commit).
    ClientProposalBatch(Vec<C>),
    /// A single-server membership change (§4.3).
    ProposeConfigChange(ConfigChange),
    /// Hand leadership to `target` (thesis §3.10).
    TransferLeadership {
        /// The voter that should become leader.
        target: NodeId,
    },
    /// A linearizable read (§8); answered by `ReadReady { id }` or `ReadFailed { id, .. }`.
    ProposeRead {
        /// The host's handle for this read, echoed back.
        id: u64,
    },
    /// Several linearizable reads at once: they share one leadership-confirmation round
    /// (one heartbeat per follower), where separate `ProposeRead` events would each wait for
    /// the round in flight to be acknowledged before the next one starts. Each is answered
    /// by `ReadReady { id }` or `ReadFailed { id, .. }`.
    ProposeReads {
        /// The host's handles for these reads, in arrival order.
        ids: Vec<u64>,
    },
    /// The host captured the state machine through `last_included_index` (§7). The engine
    /// compacts its log and answers with `PersistSnapshot`; it ignores (and logs) a snapshot
    /// that is not past its current one, or that is past its applied index (the host may only
    /// snapshot what it has applied), and then emits nothing.
    SnapshotTaken {
        /// The last applied index the snapshot reflects; must not exceed the applied index.
        last_included_index: LogIndex,
        /// The state machine's serialized state, opaque to the engine.
        bytes: Bytes,
    },
}
