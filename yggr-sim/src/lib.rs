//! # yggr-sim
//!
//! A deterministic cluster simulator for `yggr-core`. It runs N engines against a simulated
//! network and disk, injects faults chosen by a seeded random generator, checks Raft's safety
//! invariants after every step, and then heals the cluster and checks that it recovers. One
//! [`RunOptions`] (a seed and a workload) reproduces a whole run exactly.
//!
//! ```
//! use yggr_sim::{run, Policy, RunOptions};
//!
//! let report = run(&RunOptions::new(7, 3, 2_000, Policy::Chaos))
//!     .unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.coverage.elections > 0);
//! assert!(report.liveness.is_some(), "the healed cluster served a write and a read");
//! ```
//!
//! # Layout
//! - [`harness`]: [`Cluster`], the simulated servers and the host loop that obeys the
//!   engine's persist-before-send contract; a reference host.
//! - [`network`]: [`Network`]: messages in flight, drops, duplicates, long delays, reordering,
//!   partitions.
//! - [`disk`]: durable state and pending writes, so a crash can keep only a prefix of them.
//! - [`state_machine`]: [`TrackedStateMachine`], a digest of everything applied.
//! - [`checker`]: [`SafetyChecker`] and the [`Invariant`]s it enforces.
//! - [`history`]: what clients were told, and the write-history oracle.
//! - [`options`]: [`RunOptions`], [`Workload`] and their text form.
//! - [`policy`]: how a seed becomes a schedule ([`Schedule`]).
//! - [`liveness`]: the healing phase and what it requires.
//! - [`runner`]: [`run`] and [`replay`].
//! - [`coverage`], [`suite`]: what runs exercised, and suites of runs held to a gate.
//! - [`conformance`]: one follower driven by every request a succession of correct leaders
//!   may send it, [`leader_conformance`]: one leader answered by scripted followers, and
//!   [`vote_conformance`]: one voter asked by scripted candidates, for the corners cluster
//!   runs reach only by luck.
//! - [`trace`]: the step-by-step record a replay prints.
//!
//! # Testing a modified engine
//! The simulator drives whatever `yggr-core` the workspace builds, so change the engine and
//! run `cargo nextest run -p yggr-sim` (the test profile is optimised). A failure prints the
//! invariant, the seed, the step and a command that replays it with a full trace. From your
//! own crate, replay a failure from the options it carries:
//!
//! ```
//! use yggr_sim::{Policy, RunOptions, replay, run};
//!
//! let options = RunOptions::new(11, 3, 1_000, Policy::Chaos);
//! if let Err(failure) = run(&options) {
//!     if let Some(options) = failure.options.as_deref() {
//!         let _ = replay(options, &mut |line| println!("{line}"));
//!     }
//! }
//! ```

pub mod checker;
pub mod conformance;
pub mod coverage;
pub mod disk;
pub mod harness;
pub mod history;
pub mod leader_conformance;
pub mod liveness;
pub mod network;
pub mod options;
pub mod policy;
pub mod runner;
pub mod state_machine;
pub mod suite;
pub mod trace;
pub mod vote_conformance;

#[cfg(test)]
mod tests;

pub use checker::{Invariant, SafetyChecker, Violation};
pub use coverage::{Coverage, CoverageGate};
pub use harness::{Cluster, ClusterOptions, Command, SimError};
pub use network::{Network, NetworkFaults};
pub use options::{Clocks, Policy, RunOptions, Workload};
pub use policy::{ChaosRates, Schedule};
pub use runner::{RunReport, replay, run};
pub use state_machine::TrackedStateMachine;
pub use suite::{Suite, SuiteFailure, SuiteReport};
pub use yggr_core;
