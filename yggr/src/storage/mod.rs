//! Where a node keeps what must survive a restart, behind the [`Storage`] trait.
//!
//! - [`memory`]: [`MemStorage`], a store in memory whose clones share one state: a disk that
//!   never loses a write, for tests and examples.
//! - [`disk`]: [`DiskStorage`], checksummed files in a directory, crash-safe, for production.
//!
//! # The contract
//!
//! The driver calls [`Storage::persist`] once per iteration with every write that iteration
//! produced, in order (group commit), and does nothing that depends on them (no message, no
//! apply, no answer to a client) until it returns `Ok`. So `persist` must return only once
//! every write is durable: for a disk, written and fsynced. The writes mean exactly what the
//! engine's actions of the same name mean ([`yggr_core::Action`]):
//!
//! - [`StorageWrite::HardState`] replaces the stored term and vote;
//! - [`StorageWrite::Entries`] replaces the stored log from its first entry's index on (any
//!   stored entry at or past it is discarded first);
//! - [`StorageWrite::Snapshot`] replaces the stored snapshot; stored entries it covers are
//!   discarded, and later ones kept only if the stored entry at its index has its term.
//!
//! A snapshot the node takes of its own state is first handed to
//! [`Storage::prepare_snapshot`], which may write its bytes while the node goes on working,
//! and then to `persist` like any other write.
//!
//! An error from `persist` is fatal: the node stops (a failed fsync cannot be retried safely)
//! and every caller waiting on it is answered with `Fatal`.
//!
//! [`Storage::load`] returns everything stored, or `None` for storage that never held a node.
//! [`Storage::bootstrap`] is called once, on a node's first start, with its founding
//! configuration (empty for a node joining a running cluster); `load` returns it ever after.
//!
//! [`Storage::incarnation`] names the storage's data: a random number drawn at `bootstrap`,
//! the same on every later `load` of the same data, and new for storage bootstrapped afresh.
//! Peers use it to refuse a node that lost its data (see [`crate::identity`]).

pub mod disk;
pub mod memory;

use std::future::Future;

use bytes::Bytes;
use yggr_core::{LogEntry, Membership, NodeId, RecoveredSnapshot, Term};

pub use disk::{DiskError, DiskStorage};
pub use memory::MemStorage;

/// Everything a node stored, as [`Storage::load`] returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The node this storage belongs to, recorded on its first start; `None` when the storage
    /// does not record it. A node started over storage recorded for another id is refused.
    pub node_id: Option<NodeId>,
    /// The configuration the node started with: the founding members, or empty for a node
    /// that joined a running cluster.
    pub founding: Membership,
    /// The stored term.
    pub current_term: Term,
    /// The stored vote.
    pub voted_for: Option<NodeId>,
    /// The stored snapshot, if any.
    pub snapshot: Option<RecoveredSnapshot>,
    /// The stored log entries after the snapshot, in order, each command as its encoded bytes.
    pub log: Vec<LogEntry<Bytes>>,
}

/// One write of a [`Storage::persist`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageWrite {
    /// Store the term and vote.
    HardState {
        /// The current term.
        current_term: Term,
        /// The vote in that term.
        voted_for: Option<NodeId>,
    },
    /// Store these entries, replacing the stored log from the first one's index on.
    Entries(Vec<LogEntry<Bytes>>),
    /// Store this snapshot, trimming the stored log to match it.
    Snapshot(RecoveredSnapshot),
}

/// Durable storage for one node. See the [module documentation](self) for the contract.
pub trait Storage: Send + 'static {
    /// What a failed operation reports.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Everything stored, or `None` when this storage never held a node.
    ///
    /// # Errors
    /// When the stored state cannot be read, or is corrupt.
    fn load(&mut self) -> impl Future<Output = Result<Option<StoredState>, Self::Error>> + Send;

    /// Records, durably, the id of the node and the configuration it starts with, on its
    /// first start.
    ///
    /// # Errors
    /// When it cannot be made durable.
    fn bootstrap(
        &mut self,
        node_id: NodeId,
        founding: &Membership,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes `writes` durable, in order; returns once all of them are.
    ///
    /// # Errors
    /// When any of them cannot be made durable. The node treats it as fatal.
    fn persist(
        &mut self,
        writes: Vec<StorageWrite>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The incarnation of the stored data, once [`load`](Storage::load) found it or
    /// [`bootstrap`](Storage::bootstrap) recorded it: a non-zero number drawn at random when
    /// the storage was first bootstrapped and kept with the data, so that it stays the same
    /// across restarts and differs for storage that was wiped or replaced. `None` before
    /// either, and for storage that does not record one (the default): its peers then cannot
    /// tell that this node lost its data. See [`crate::identity`].
    fn incarnation(&self) -> Option<u64> {
        None
    }

    /// Writes the bulk of `snapshot` ahead of the [`persist`](Storage::persist) that stores
    /// it, so that a large snapshot does not hold the node up. The driver runs the returned
    /// future beside its other work (heartbeats, replication, answers to clients) and, once it
    /// completes, hands the same snapshot to `persist` as a [`StorageWrite::Snapshot`], which
    /// can then finish quickly from what was prepared (for a disk: write and fsync a file
    /// here, rename it there). Only snapshots the node takes of its own state go this way; a
    /// snapshot received from a leader goes straight to `persist`. Until `persist` stores it,
    /// nothing stored may change: a crash in between recovers the previous snapshot and the
    /// whole log. The future must not borrow the storage. The default prepares nothing and
    /// leaves all the work to `persist`.
    ///
    /// # Errors
    /// When the bytes cannot be written. The node drops that snapshot (logged and counted in
    /// [`NodeMetrics`](crate::NodeMetrics)) and takes another later; nothing stored changed.
    fn prepare_snapshot(
        &self,
        snapshot: &RecoveredSnapshot,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let _ = snapshot;
        std::future::ready(Ok(()))
    }
}
