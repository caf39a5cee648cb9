//! The conformance suites at the CI budget: a follower given every request a succession of
//! correct leaders may send, and a leader answered by scripted followers; seeds change every
//! run.

use crate::conformance::ConformanceSuite;
use crate::leader_conformance::LeaderSuite;
use crate::lease_conformance::LeaseSuite;
use crate::suite::{base_seed, budget};
use crate::vote_conformance::VoteSuite;

#[test]
fn follower_conformance_suite_holds_every_answer_to_what_leaders_rely_on() {
    match ConformanceSuite::default().run(base_seed(), budget()) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn leader_conformance_suite_commits_only_by_the_rules() {
    match LeaderSuite::default().run(base_seed(), budget()) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn vote_conformance_suite_grants_votes_only_by_the_rules() {
    match VoteSuite::default().run(base_seed(), budget()) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn lease_conformance_suite_serves_lease_reads_only_while_the_voters_counted_refuse_votes() {
    match LeaseSuite::default().run(base_seed(), budget()) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}
