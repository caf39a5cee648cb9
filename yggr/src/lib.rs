//! # yggr
//!
//! A replicated state machine on Raft, for tokio services. Write a [`StateMachine`], start a
//! [`Node`] on every server with a [`Storage`] and a [`Transport`], and call
//! [`Node::write`] and [`Node::read_linearizable`] on the leader.
//!
//! # Layout
//! - [`node`]: [`Node`], the handle applications hold, and [`Admin`] for operators.
//! - `driver`: the task that owns the engine and carries out its actions in order, with
//!   group commit (one storage write and one message per peer per iteration).
//! - `apply`: the task that owns the state machine: applies committed entries, answers
//!   writers, runs reads, takes and restores snapshots.
//! - [`config`]: [`Config`] and [`Bootstrap`]; [`error`]: every error type; [`status`]:
//!   [`Status`] and [`NodeMetrics`].
//! - [`storage`]: the [`Storage`] trait and [`MemStorage`]; [`transport`]: the
//!   [`Transport`] trait and [`LocalNetwork`].
//! - [`core`]: the protocol engine (`yggr-core`), re-exported whole.

pub mod config;
pub mod error;
pub mod node;
pub mod state_machine;
pub mod status;
pub mod storage;
pub mod transport;

mod apply;
mod driver;

pub use config::{Bootstrap, Config, ConfigError};
pub use error::{
    MembershipError, NodeStartError, ProposeError, ReadError, ShutdownError, StatusError,
    TransferLeadershipError,
};
pub use node::{Admin, Node};
pub use state_machine::{DecodeError, SnapshotError, StateMachine};
pub use status::{FollowerProgress, NodeMetrics, ReplicationMetrics, Status};
pub use storage::{MemStorage, Storage, StorageWrite, StoredState};
pub use transport::{LocalNetwork, LocalTransport, Transport};
pub use yggr_core as core;
pub use yggr_core::{
    Bytes, ConfigChange, EngineMetrics, EntryPayload, LogEntry, LogIndex, Membership, NodeId,
    RecoveredSnapshot, Role, Term,
};
