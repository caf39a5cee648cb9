//! The whole stack under simulation: runs pass, and the same seed repeats exactly.

use crate::stack::{Faults, RegisterWorkload, StackOptions, run_stack};
use crate::suite::{budget, run_seed};

use super::base_seed;

#[test]
fn the_same_seed_gives_the_same_stack_run_event_for_event() {
    let options = StackOptions::from_seed(11);
    let first = run_stack(&RegisterWorkload::default(), &options)
        .unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_stack(&RegisterWorkload::default(), &options)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first.digest, second.digest, "one seed, two different runs");
    assert_eq!(first.history, second.history);
    let other = run_stack(&RegisterWorkload::default(), &StackOptions::from_seed(12))
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(
        first.digest, other.digest,
        "the digest does not tell runs apart"
    );
}

#[test]
fn stack_runs_under_chaos_keep_every_acknowledged_write_on_three_and_five_nodes() {
    let base = base_seed();
    let mut elections = 0;
    let mut crashes = 0;
    let mut installed = 0;
    let runs = (10.0 * budget()).ceil() as u64;
    for index in 0..runs {
        let seed = run_seed(base, index);
        let mut options = StackOptions::from_seed(seed);
        options.nodes = if index % 2 == 0 { 3 } else { 5 };
        let report = run_stack(&RegisterWorkload::default(), &options)
            .unwrap_or_else(|failure| panic!("{failure}"));
        elections += report.term;
        crashes += report.faults.crashes;
        installed += report.history.snapshots_installed;
    }
    assert!(
        elections > 0 && crashes > 0 && installed > 0,
        "the runs exercised little: {elections} terms, {crashes} crashes, {installed} snapshots installed"
    );
}

#[test]
fn a_stack_run_without_faults_serves_every_client() {
    let mut options = StackOptions::new(5, 3);
    options.faults = Faults::none();
    let report = run_stack(&RegisterWorkload::default(), &options)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.history.unknown, 0, "no fault, yet outcomes unknown");
    assert!(report.history.acknowledged > 100, "{:?}", report.history);
    assert!(report.history.reads > 0, "{:?}", report.history);
}
