//! The simulator's own suites; see the README section "Simulator" for how to run them.

mod chaos;
mod checker;
mod conformance;
mod membership;
mod reads;
mod smoke;
mod snapshot;
mod stack;
mod transfer;

use crate::suite::{Suite, base_seed, budget};

/// Runs the happy policy until `done` holds, failing after `limit` steps.
pub(crate) fn settle(
    cluster: &mut crate::Cluster,
    limit: u64,
    done: impl Fn(&crate::Cluster) -> bool,
) {
    for _ in 0..limit {
        if done(cluster) {
            return;
        }
        crate::policy::happy_step(cluster).unwrap_or_else(|failure| panic!("{failure}"));
    }
    assert!(done(cluster), "condition not reached in {limit} steps");
}

/// Runs the named CI suite at the budget `YGGR_SIM_BUDGET` asks for, from the base seed
/// `YGGR_SIM_SEED_BASE` or a fresh one, and fails with the first failure or coverage shortfall.
pub(crate) fn run_suite(name: &str) {
    let suite = Suite::preset(name).expect("a known suite");
    let base = base_seed();
    match suite.run(base, budget()) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}
