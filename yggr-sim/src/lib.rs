//! # yggr-sim
//!
//! A deterministic cluster simulator for `yggr-core`. It runs N engines against a simulated
//! network and disk, injects faults chosen by a seeded random generator, and checks Raft's
//! safety invariants after every step. One `u64` seed reproduces a whole run exactly.
//!
//! ```
//! use yggr_sim::{run, Policy, RunOptions};
//!
//! let report = run(&RunOptions::new(7, 3, 500, Policy::Chaos))
//!     .unwrap_or_else(|failure| panic!("{failure}"));
//! assert_eq!(report.steps, 500);
//! ```
//!
//! # Layout
//! - [`harness`]: [`Cluster`], the simulated servers and the host loop that obeys the
//!   engine's persist-before-send contract; a reference host.
//! - [`network`]: [`Network`]: messages in flight, drops, duplicates, reordering, partitions.
//! - [`disk`]: durable state and pending writes, so a crash can keep only a prefix of them.
//! - [`checker`]: [`SafetyChecker`] and the [`Invariant`]s it enforces.
//! - [`policy`]: how a seed becomes a schedule (`happy`, `chaos`) and [`run`].
//! - [`trace`]: an optional step-by-step record, used by the `replay` example.
//!
//! # Testing a modified engine
//! The simulator drives whatever `yggr-core` the workspace builds, so change the engine and
//! run `cargo nextest run -p yggr-sim` (the test profile is optimised). A failure prints the
//! invariant, the seed, the step and a command that replays it with a full trace.

pub mod checker;
pub mod disk;
pub mod harness;
pub mod network;
pub mod policy;
pub mod trace;

#[cfg(test)]
mod tests;

pub use checker::{Invariant, SafetyChecker, Violation};
pub use harness::{Cluster, ClusterOptions, Command, SimError, TrackedStateMachine};
pub use network::{Network, NetworkFaults};
pub use policy::{Policy, RunOptions, RunReport, Workload, run};
pub use yggr_core;
