//! Linearizable reads under chaos: every ReadReady must observe every entry committed anywhere
//! before the read was proposed, whether confirmed by a heartbeat round or by a lease.

use proptest::prelude::*;

use crate::policy::{Policy, RunOptions, Workload, run};
use crate::tests::cases;

fn read_index_workload() -> Workload {
    Workload::preset("reads").expect("a preset")
}

/// Leases are only as safe as the clock-rate bound, so lease runs tick every node together.
fn lease_workload() -> Workload {
    Workload::preset("lease").expect("a preset")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn read_index_reads_are_linearizable_under_chaos(seed in any::<u64>(), nodes in prop_oneof![Just(3u64), Just(5u64)]) {
        let options = RunOptions { workload: read_index_workload(), ..RunOptions::new(seed, nodes, 1500, Policy::Chaos) };
        run(&options).map_err(|failure| TestCaseError::fail(failure.to_string()))?;
    }

    #[test]
    fn lease_reads_are_linearizable_under_chaos_with_bounded_clock_rates(seed in any::<u64>(), nodes in prop_oneof![Just(3u64), Just(5u64)]) {
        let options = RunOptions { workload: lease_workload(), ..RunOptions::new(seed, nodes, 3000, Policy::Chaos) };
        run(&options).map_err(|failure| TestCaseError::fail(failure.to_string()))?;
    }
}
