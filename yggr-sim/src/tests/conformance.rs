//! Follower conformance at the CI budget: every request a succession of correct leaders may
//! send, delivered in any order; seeds change every run.

use crate::conformance::ConformanceSuite;
use crate::suite::{base_seed, budget};

#[test]
fn follower_conformance_suite_holds_every_answer_to_what_leaders_rely_on() {
    match ConformanceSuite::default().run(base_seed(), budget()) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}
