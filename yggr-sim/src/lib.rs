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
//!   [`vote_conformance`]: one voter asked by scripted candidates, and [`lease_conformance`]:
//!   a leader and its voters with clocks at the edge of a lease's drift bound, for the
//!   corners cluster runs reach only by luck.
//! - [`trace`]: the step-by-step record a replay prints.
//!
//! # Testing a modified engine
//! The simulator drives whatever `yggr-core` the workspace builds, so change the engine and
//! run `cargo nextest run -p yggr-sim` (the test profile is optimised), or every suite at any
//! budget with `cargo run --release -p yggr-sim --example suite`. A failure prints the
//! invariant, the seed, the step and a command that replays it with a full trace. The CI
//! suites are open to your own tests: here are the first runs of the `reads` suite against
//! this build's engine ([`suite::Suite::run`] runs them all and holds them to the suite's
//! coverage gate):
//!
//! ```
//! use yggr_sim::run;
//! use yggr_sim::suite::Suite;
//!
//! let suite = Suite::preset("reads").expect("one of the CI suites");
//! let base_seed = 2026; // the CI takes a fresh one each run: `suite::base_seed()`
//! for index in 0..3 {
//!     if let Err(failure) = run(&suite.options(base_seed, index)) {
//!         panic!("{failure}\nreplay with: {}", failure.replay);
//!     }
//! }
//! ```
//!
//! And from your own crate, replay a failure from the options it carries:
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

#![warn(missing_docs)]

pub mod checker;
pub mod conformance;
pub mod coverage;
pub mod disk;
pub mod harness;
pub mod history;
pub mod leader_conformance;
pub mod lease_conformance;
pub mod liveness;
pub mod network;
pub mod options;
pub mod policy;
pub mod runner;
pub mod stack;
pub mod state_machine;
pub mod suite;
pub mod trace;
pub mod vote_conformance;

#[cfg(test)]
mod tests;

pub use checker::{Invariant, SafetyChecker, Violation};
pub use coverage::{Coverage, CoverageGate};
pub use harness::{Campaigns, Cluster, ClusterOptions, Command, SimError};
pub use network::{Network, NetworkFaults};
pub use options::{Clocks, Policy, RunOptions, Workload};
pub use policy::{ChaosRates, Schedule};
pub use runner::{RunReport, replay, run};
pub use state_machine::TrackedStateMachine;
pub use suite::{Suite, SuiteFailure, SuiteReport};
pub use yggr_core;

/// The book's chapters about simulation, compiled by `cargo test --doc` so that every Rust
/// sample in them builds and runs.
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../../book/src/simulation/harness.md")]
    pub struct Harness;
    #[doc = include_str!("../../book/src/simulation/invariants.md")]
    pub struct SafetyInvariants;
    #[doc = include_str!("../../book/src/simulation/replaying-a-seed.md")]
    pub struct ReplayingASeed;
    #[doc = include_str!("../../book/src/simulation/chaos-testing.md")]
    pub struct ChaosTesting;
}
