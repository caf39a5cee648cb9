//! The default workload under chaos: every fault, safety after every step, recovery after
//! healing. Seeds change every run; a failure prints how to replay it.

use crate::tests::run_suite;

#[test]
fn chaos_suite_keeps_every_invariant_and_recovers() {
    run_suite("default");
}
