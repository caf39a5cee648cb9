//! The engine's integration tests, in one binary: one link per build instead of one per file
//! (mutation testing rebuilds them for every mutant).

mod common;

mod check_quorum;
mod cluster_chaos;
mod election;
mod engine_proptest;
mod features;
mod metrics;
mod pitfalls;
mod reads;
mod recovery;
mod replication;
mod snapshot_transfer;
mod wire;
