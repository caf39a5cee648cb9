//! # yggr-core
//!
//! The Raft consensus protocol as a pure, deterministic state machine. An [`Engine`] takes
//! one [`Event`] at a time through [`Engine::step`] and answers with the [`Action`]s its host
//! must carry out. It opens no socket, touches no file, reads no clock and has no async: time
//! arrives as [`Event::Tick`], randomness from an injected [`Env`].
//!
//! ```
//! use yggr_core::{Action, Engine, Event, NodeId, RandomEnv, Role};
//!
//! let me = NodeId::new(1).unwrap();
//! // A deliberate single-node cluster: it elects itself and commits on its own.
//! let mut engine: Engine<String> = Engine::new(me, [], RandomEnv::seeded(7), 3);
//! while engine.role() != Role::Leader {
//!     engine.step(Event::Tick);
//! }
//! let actions = engine.step(Event::ClientProposal("hello".to_string()));
//! assert!(matches!(actions[0], Action::PersistLogEntries(_)));
//! assert!(actions.iter().any(|action| matches!(action, Action::Apply(_))));
//! ```
//!
//! `examples/three_engines.rs` (`cargo run -p yggr-core --example three_engines`) is a whole
//! host in a hundred lines: three engines, an in-memory disk each, a queue for a network.
//!
//! # Layout
//! - `types`: [`NodeId`], [`Term`], [`LogIndex`], [`Role`].
//! - `engine`: the [`Engine`] state, `step`, and the transitions shared by all roles.
//! - `role/`: one file per role or feature: elections and voting, the follower's side of
//!   replication, the leader, membership changes, reads, snapshots, leadership transfer.
//! - `log`, `progress`, `quorum`: the log above the snapshot floor, per-follower replication
//!   progress, and pure majority arithmetic.
//! - `event`, `action`, `message`, `entry`, `membership`: the engine's vocabulary.
//! - `wire`: the protobuf encoding of [`Message`] (`proto/raft.proto`).
//! - `config`, `env`, `metrics`, `recovery`: tunables, randomness, counters, restart.

#![warn(missing_docs)]

mod action;
mod config;
mod engine;
mod entry;
mod env;
mod event;
mod log;
mod membership;
mod message;
mod metrics;
mod progress;
pub mod quorum;
mod recovery;
mod role;
mod rounds;
mod types;
pub mod wire;

pub use action::{Action, ConfigChangeRejection, ReadFailure};
/// The byte buffer snapshots and wire messages are carried in, re-exported for hosts.
pub use bytes::Bytes;
pub use config::{ConfigError, EngineConfig};
pub use engine::Engine;
pub use entry::{EntryPayload, LogEntry};
pub use env::{Env, RandomEnv};
pub use event::Event;
pub use membership::{ConfigChange, Membership, MembershipChangeError};
pub use message::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, InstallSnapshot, InstallSnapshotResponse,
    Message, Rpc, VoteRequest, VoteResponse,
};
pub use metrics::EngineMetrics;
pub use recovery::{RecoveredHardState, RecoveredSnapshot, RecoveryError};
pub use types::{LogIndex, NodeId, Role, Term};

/// The book's chapters about the engine, and the reference, compiled by `cargo test --doc`
/// so that every Rust sample in them builds and runs.
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../../book/src/engine/pure-engine.md")]
    pub struct PureEngine;
    #[doc = include_str!("../../book/src/engine/events-and-actions.md")]
    pub struct EventsAndActions;
    #[doc = include_str!("../../book/src/engine/custom-host.md")]
    pub struct CustomHost;
    #[doc = include_str!("../../book/src/engine/elections.md")]
    pub struct Elections;
    #[doc = include_str!("../../book/src/engine/replication.md")]
    pub struct Replication;
    #[doc = include_str!("../../book/src/engine/features.md")]
    pub struct Features;
    #[doc = include_str!("../../book/src/reference/crate-layout.md")]
    pub struct CrateLayout;
    #[doc = include_str!("../../book/src/reference/design.md")]
    pub struct DesignDecisions;
    #[doc = include_str!("../../book/src/reference/wire-format.md")]
    pub struct WireFormat;
}
