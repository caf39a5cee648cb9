//! Linearizable reads under chaos: every ReadReady must observe every entry committed anywhere
//! before the read was proposed, whether confirmed by a heartbeat round or by a lease.

use crate::tests::run_suite;

#[test]
fn read_index_reads_are_linearizable_under_chaos_with_bursts_and_stale_leaders() {
    run_suite("reads");
}

#[test]
fn lease_reads_are_linearizable_with_clocks_drifting_within_the_lease_bound() {
    run_suite("lease");
}
