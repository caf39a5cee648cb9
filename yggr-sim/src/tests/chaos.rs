//! Safety under chaos: drops, duplicates, reordering, partitions, crashes and partial fsyncs.
//! Liveness is not asserted here: the schedule may partition forever.

use proptest::prelude::*;

use crate::tests::{cases, chaos_with};

fn chaos(seed: u64, nodes: u64, steps: u64) -> Result<(), TestCaseError> {
    chaos_with("default", seed, nodes, steps)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn chaos_three_nodes(seed in any::<u64>()) {
        chaos(seed, 3, 1500)?;
    }

    #[test]
    fn chaos_five_nodes(seed in any::<u64>()) {
        chaos(seed, 5, 1500)?;
    }

    #[test]
    fn chaos_seven_nodes(seed in any::<u64>()) {
        chaos(seed, 7, 2000)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(32)))]

    /// Long schedules reach what short ones rarely do: long logs, repeated snapshots, many
    /// crash-and-recover cycles of the same node.
    #[test]
    fn chaos_long_runs_five_nodes(seed in any::<u64>()) {
        chaos(seed, 5, 20_000)?;
    }
}
