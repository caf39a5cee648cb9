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
//! `cargo run -p yggr --example counter` runs three nodes in one process the same way.
//!
//! # Layout
//! - [`node`]: [`Node`], the handle applications hold, and [`Admin`] for operators.
//! - `driver` (internal): the task that owns the engine and carries out its actions in order, with
//!   group commit (one storage write and one message per peer per iteration).
//! - `apply` (internal): the task that owns the state machine: applies committed entries, answers
//!   writers, runs reads, takes and restores snapshots.
//! - [`config`]: [`Config`] and [`Bootstrap`]; [`error`]: every error type; [`status`]:
//!   [`Status`] and [`NodeMetrics`].
//! - [`storage`]: the [`Storage`] trait, [`MemStorage`] and [`DiskStorage`]; [`transport`]: the
//!   [`Transport`] trait, [`LocalNetwork`] and [`TcpTransport`].
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
pub use storage::{DiskError, DiskStorage, MemStorage, Storage, StorageWrite, StoredState};
pub use transport::{
    LocalNetwork, LocalTransport, TcpHandle, TcpOptions, TcpStats, TcpTransport, Transport,
};
pub use yggr_core as core;
pub use yggr_core::{
    Bytes, ConfigChange, EngineMetrics, EntryPayload, LogEntry, LogIndex, Membership, NodeId,
    RecoveredSnapshot, Role, Term,
};
