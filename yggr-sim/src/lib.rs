//! # yggr-sim
//!
//! A deterministic cluster simulator for `yggr-core`. It will drive N engines through
//! message drops, reordering, duplication, partitions, crashes and partial fsyncs from one
//! seed, and check Raft's safety invariants (Election Safety, Log Matching, Leader
//! Completeness, State Machine Safety, persist-before-send) after every step. Built by the
//! simulator issue; until then this crate only compiles against the engine.

pub use yggr_core;
