//! # yggr
//!
//! A replicated state machine on Raft, for tokio services. Write a [`StateMachine`], start a
//! [`Node`] on every server with a [`Storage`] and a [`Transport`], and call
//! [`Node::write`] and [`Node::read_linearizable`] on the leader.
//!
//! ```
//! use std::time::Duration;
//! use yggr::{Bootstrap, Config, DecodeError, LocalNetwork, MemStorage, Node, NodeId, StateMachine};
//!
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! impl StateMachine for Counter {
//!     type Command = i64;
//!     type Response = i64;
//!
//!     fn encode_command(command: &i64) -> Vec<u8> {
//!         command.to_le_bytes().to_vec()
//!     }
//!     fn decode_command(bytes: &[u8]) -> Result<i64, DecodeError> {
//!         let bytes = bytes.try_into().map_err(|_| DecodeError::new("8 bytes"))?;
//!         Ok(i64::from_le_bytes(bytes))
//!     }
//!     fn apply(&mut self, command: i64) -> i64 {
//!         self.0 += command;
//!         self.0
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let me = NodeId::new(1).unwrap();
//! // A one-node cluster founds itself explicitly (with no peers, `Config::new` recovers).
//! let mut config = Config::new(me, []);
//! config.bootstrap = Bootstrap::NewCluster { members: [me].into() };
//! let network = LocalNetwork::new();
//! let node = Node::start(config, Counter::default(), MemStorage::new(), network.transport(me)).await?;
//! while node.current_leader() != Some(me) {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! assert_eq!(node.write(5).await?, 5);
//! assert_eq!(node.read_linearizable(|counter: &Counter| counter.0).await?, 5);
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! `cargo run -p yggr --example counter` runs three nodes in one process the same way. For a
//! deployment, each server runs one node on [`DiskStorage`] and [`TcpTransport`] (see their
//! docs); `yggr-examples` holds `kv`, a whole replicated service built that way. The book
//! (`book/` in the repository) covers configuration, bootstrap, membership, snapshots,
//! errors and operations.
//!
//! # Layout
//! - [`node`]: [`Node`], the handle applications hold, and [`Admin`] for operators.
//! - `driver` (internal): the task that owns the engine and carries out its actions in order, with
//!   group commit (one storage write and one message per peer per iteration).
//! - `apply` (internal): the task that owns the state machine: applies committed entries, answers
//!   writers, runs reads, takes and restores snapshots.
//! - [`config`]: [`Config`] and [`Bootstrap`]; [`error`]: every error type; [`status`]:
//!   [`Status`] and [`NodeMetrics`]; [`identity`]: [`NodeIdentity`], the cluster id and
//!   incarnation that keep a node whose data was lost from coming back as if it were not.
//! - [`storage`]: the [`Storage`] trait, [`MemStorage`] and [`DiskStorage`]; [`transport`]: the
//!   [`Transport`] trait, [`LocalNetwork`] and [`TcpTransport`].
//! - [`core`]: the protocol engine (`yggr-core`), re-exported whole.
//! - `sys` (internal): the seams to the outside world, one module per resource (files,
//!   sockets, blocking work, randomness), which pick turmoil's simulated versions inside a
//!   simulation.
//! - [`simulation`] (with the `simulation` feature): what a simulator sets up before a run.
//!
//! # Features
//! - `simulation` (off by default; for the simulator, not for production): lets the runtime
//!   run inside a turmoil simulation. Whenever a simulation is running, `DiskStorage`'s files
//!   are turmoil's simulated ones, `TcpTransport`'s sockets are turmoil's simulated ones, the
//!   apply task and blocking work run on the simulated host's thread, and the few random draws
//!   outside the engine come from a seeded generator; outside one, nothing changes. The
//!   `yggr-sim` crate runs whole clusters this way.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod identity;
pub mod node;
pub mod state_machine;
pub mod status;
pub mod storage;
pub mod transport;

#[cfg(feature = "simulation")]
pub mod simulation;

mod apply;
mod driver;
mod sys;

pub use config::{Bootstrap, Config, ConfigError, MAX_PARKED_READS};
pub use error::{
    MembershipError, NodeStartError, ProposeError, ReadError, ShutdownError, StatusError,
    TransferLeadershipError,
};
pub use identity::NodeIdentity;
pub use node::{Admin, Node};
pub use state_machine::{DecodeError, SnapshotError, StateMachine};
pub use status::{FollowerProgress, NodeMetrics, ReplicationMetrics, Status};
pub use storage::{DiskError, DiskStorage, MemStorage, Storage, StorageWrite, StoredState};
pub use transport::{
    LocalNetwork, LocalTransport, TcpHandle, TcpOptions, TcpOptionsError, TcpStats, TcpTransport,
    TlsConfig, TlsError, Transport,
};
pub use yggr_core as core;
pub use yggr_core::{
    Bytes, ConfigChange, EngineMetrics, EntryPayload, LogEntry, LogIndex, Membership, NodeId,
    RecoveredSnapshot, Role, Term,
};

/// The book's chapters about getting started, the runtime, and measuring, compiled by
/// `cargo test --doc` so that every Rust sample in them builds and runs.
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../../book/src/introduction.md")]
    pub struct Introduction;
    #[doc = include_str!("../../book/src/getting-started/installation.md")]
    pub struct Installation;
    #[doc = include_str!("../../book/src/getting-started/three-node-cluster.md")]
    pub struct ThreeNodeCluster;
    #[doc = include_str!("../../book/src/getting-started/state-machine.md")]
    pub struct WritingAStateMachine;
    #[doc = include_str!("../../book/src/runtime/node.md")]
    pub struct NodeApi;
    #[doc = include_str!("../../book/src/runtime/configuration.md")]
    pub struct Configuration;
    #[doc = include_str!("../../book/src/runtime/bootstrap.md")]
    pub struct BootstrapModes;
    #[doc = include_str!("../../book/src/runtime/writes.md")]
    pub struct Writes;
    #[doc = include_str!("../../book/src/runtime/reads.md")]
    pub struct LinearizableReads;
    #[doc = include_str!("../../book/src/runtime/membership.md")]
    pub struct Membership;
    #[doc = include_str!("../../book/src/runtime/learners.md")]
    pub struct Learners;
    #[doc = include_str!("../../book/src/runtime/transfer.md")]
    pub struct LeadershipTransfer;
    #[doc = include_str!("../../book/src/runtime/snapshots.md")]
    pub struct Snapshots;
    #[doc = include_str!("../../book/src/runtime/observability.md")]
    pub struct Observability;
    #[doc = include_str!("../../book/src/runtime/errors.md")]
    pub struct Errors;
    #[doc = include_str!("../../book/src/runtime/operations.md")]
    pub struct Operations;
    #[doc = include_str!("../../book/src/measuring/benchmarks.md")]
    pub struct MeasuredFigures;
    #[doc = include_str!("../../book/src/measuring/testing.md")]
    pub struct Testing;
}
