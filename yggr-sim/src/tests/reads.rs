//! Linearizable reads under chaos: every ReadReady must observe every entry committed anywhere
//! before the read was proposed, whether confirmed by a heartbeat round or by a lease.

use proptest::prelude::*;

use crate::tests::{cases, chaos_with};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn read_index_reads_are_linearizable_under_chaos(seed in any::<u64>(), nodes in prop_oneof![Just(3u64), Just(5u64)]) {
        chaos_with("reads", seed, nodes, 1500)?;
    }

    #[test]
    fn lease_reads_are_linearizable_under_chaos_with_bounded_clock_rates(seed in any::<u64>(), nodes in prop_oneof![Just(3u64), Just(5u64)]) {
        chaos_with("lease", seed, nodes, 3000)?;
    }
}
