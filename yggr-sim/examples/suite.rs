//! Runs the simulator's CI suites (or some of them) outside the test harness, at any budget.
//!
//! ```sh
//! cargo run --release -p yggr-sim --example suite                      # every suite, budget 1
//! cargo run --release -p yggr-sim --example suite -- reads lease       # two of them
//! cargo run --release -p yggr-sim --example suite -- follower leader votes lease-bound
//! YGGR_SIM_BUDGET=100 cargo run --release -p yggr-sim --example suite  # the nightly budget
//! YGGR_SIM_SEED_BASE=42 cargo run --release -p yggr-sim --example suite -- default
//! ```
//!
//! Prints each suite's coverage; on the first failure prints it with its replay command and
//! exits with status 1. `--keep-going` runs every suite even after a failure.

use std::process::ExitCode;

use yggr_sim::Workload;
use yggr_sim::conformance::ConformanceSuite;
use yggr_sim::leader_conformance::LeaderSuite;
use yggr_sim::lease_conformance::LeaseSuite;
use yggr_sim::suite::{Suite, base_seed, budget};
use yggr_sim::vote_conformance::VoteSuite;

/// The conformance suites' names on the command line.
const FOLLOWER: &str = "follower";
const LEADER: &str = "leader";
const VOTES: &str = "votes";
const LEASE_BOUND: &str = "lease-bound";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let keep_going = arguments.iter().any(|argument| argument == "--keep-going");
    // The conformance suites take seconds: they go first, so a bug they catch is caught fast.
    let every: Vec<&str> = [FOLLOWER, LEADER, VOTES, LEASE_BOUND]
        .into_iter()
        .chain(Workload::PRESETS)
        .collect();
    let mut names: Vec<&str> = every
        .iter()
        .copied()
        .filter(|name| arguments.iter().any(|argument| argument == name))
        .collect();
    if names.is_empty() {
        names = every;
    }
    let base = base_seed();
    let budget = budget();
    println!("base seed {base}, budget {budget}");
    let mut failed = false;
    for name in names {
        let outcome = if name == FOLLOWER {
            ConformanceSuite::default()
                .run(base, budget)
                .map(|report| report.to_string())
                .map_err(|failure| failure.to_string())
        } else if name == LEADER {
            LeaderSuite::default()
                .run(base, budget)
                .map(|report| report.to_string())
                .map_err(|failure| failure.to_string())
        } else if name == LEASE_BOUND {
            LeaseSuite::default()
                .run(base, budget)
                .map(|report| report.to_string())
                .map_err(|failure| failure.to_string())
        } else if name == VOTES {
            VoteSuite::default()
                .run(base, budget)
                .map(|report| report.to_string())
                .map_err(|failure| failure.to_string())
        } else {
            let Some(suite) = Suite::preset(name) else {
                continue;
            };
            suite
                .run(base, budget)
                .map(|report| report.to_string())
                .map_err(|failure| failure.to_string())
        };
        match outcome {
            Ok(report) => println!("{report}"),
            Err(failure) => {
                println!("FAILED suite {name}: {failure}");
                failed = true;
                if !keep_going {
                    break;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
