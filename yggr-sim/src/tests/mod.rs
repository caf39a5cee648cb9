//! The simulator's own suites; see the README section "Simulator" for how to run them.

mod chaos;
mod checker;
mod membership;
mod proptests;
mod reads;
mod smoke;
mod snapshot;
mod transfer;

/// Proptest's case budget: `PROPTEST_CASES` when set, otherwise `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

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
        crate::policy::happy_step(cluster, &crate::Workload::default())
            .unwrap_or_else(|failure| panic!("{failure}"));
    }
    assert!(done(cluster), "condition not reached in {limit} steps");
}

/// Runs one chaos seed with a named workload preset, as a proptest case.
pub(crate) fn chaos_with(
    preset: &str,
    seed: u64,
    nodes: u64,
    steps: u64,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let workload = crate::Workload::preset(preset).expect("a known preset");
    let options = crate::RunOptions {
        workload,
        ..crate::RunOptions::new(seed, nodes, steps, crate::Policy::Chaos)
    };
    crate::run(&options)
        .map(|_| ())
        .map_err(|failure| proptest::test_runner::TestCaseError::fail(failure.to_string()))
}
