//! The whole production stack under deterministic simulation: the real `yggr::Node`, over
//! the real `DiskStorage` on a simulated file system and the real `TcpTransport` on a
//! simulated network ([turmoil](https://docs.rs/turmoil)), running *your* state machine.
//!
//! A run founds a cluster of 3 or 5 nodes, each on its own simulated host, starts clients
//! that send the [`Workload`]'s commands and reads, and injects faults for a while: crashes
//! that lose every write not yet synced, restarts, partitions, one-way cuts, held traffic
//! delivered all at once, slow links, early syncs and, if asked, I/O errors. Then it heals
//! everything and requires the cluster to recover within a bound: one leader, every request
//! answered, a fresh write and read served, every live replica in the same state. Last, it
//! checks everything clients were told against a model (see [`check`](self#the-checks)).
//! The same seed gives the same run, event for event: [`StackReport::digest`] says so.
//!
//! ```
//! use yggr_sim::stack::{Draw, StackOptions, Workload, run_stack};
//! use yggr::{DecodeError, NodeId, SnapshotError, StateMachine};
//!
//! /// A counter: the state machine under test.
//! #[derive(Clone, Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     fn encode_command(command: &u64) -> Vec<u8> { command.to_le_bytes().to_vec() }
//!     fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
//!         Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| DecodeError::new("8 bytes"))?))
//!     }
//!     fn apply(&mut self, add: u64) -> u64 { self.0 += add; self.0 }
//!     fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> { Ok(self.0.to_le_bytes().to_vec()) }
//!     fn restore(&mut self, bytes: Vec<u8>) {
//!         self.0 = u64::from_le_bytes(bytes.try_into().expect("our own snapshot"));
//!     }
//! }
//!
//! /// What clients do with it: add 1 to 5, and read the total.
//! #[derive(Clone)]
//! struct Adding;
//!
//! impl Workload for Adding {
//!     type Command = u64;
//!     type Response = u64;
//!     type Read = u64;
//!     type Machine = Counter;
//!     fn state_machine(&self, _node: NodeId) -> Counter { Counter::default() }
//!     fn command(&self, draw: &mut Draw) -> u64 { 1 + draw.below(5) }
//!     fn read(&self, state: &Counter, _key: u64) -> Option<u64> { Some(state.0) }
//! }
//!
//! let mut options = StackOptions::new(7, 3);
//! options.chaos_duration = std::time::Duration::from_secs(2);
//! let report = run_stack(&Adding, &options).unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.history.acknowledged > 0);
//! ```
//!
//! # The checks
//! See [`check`]'s module documentation: the journal of what every node applied must agree
//! with itself, every answer must be the model's, and real time must be respected, which
//! together are linearizability of the whole history.
//!
//! # Layout
//! - [`workload`]: the [`Workload`] trait users implement, and [`Draw`].
//! - `observed` (internal): the wrapper that tags commands and journals every apply.
//! - `cluster` (internal): the node hosts and the registry; `clients` (internal): the client
//!   hosts and the history; `faults` (internal): the fault injector; `liveness` (internal):
//!   the healed cluster's probe.
//! - [`check`]: the checker; [`options`]: [`StackOptions`] and [`Faults`].

pub mod check;
pub mod options;
pub mod registers;
pub mod workload;

mod clients;
mod cluster;
mod crash_points;
mod digest;
mod faults;
mod liveness;
mod monitor;
mod observed;
mod operator;
mod responsiveness;
mod run;
mod steady;
mod stored;

pub use check::HistoryCounts;
pub use crash_points::{CrashPointReport, run_crash_points};
pub use digest::Fnv64;
pub use faults::FaultCounts;
pub use operator::OperatorCounts;
pub use options::{Faults, StackOptions};
pub use registers::{RegisterCommand, RegisterValue, RegisterWorkload, Registers};
pub use run::{StackFailure, StackReport, run_stack};
pub use stored::StorageCounts;
pub use workload::{Draw, Workload};
