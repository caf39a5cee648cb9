//! The whole-stack simulation's suite: the real `Node`, `DiskStorage` and `TcpTransport`
//! under turmoil, with the simulator's register workload, on 3 and 5 nodes.
//!
//! ```sh
//! cargo run --release -p yggr-sim --example stack                   # 50 runs (budget 1)
//! YGGR_SIM_BUDGET=4 cargo run --release -p yggr-sim --example stack # CI: 200 runs
//! YGGR_SIM_SEED_BASE=42 cargo run --release -p yggr-sim --example stack
//! YGGR_STACK_SEED=1234 cargo run --release -p yggr-sim --example stack   # one run, replayed
//! ```
//!
//! Runs `50 × YGGR_SIM_BUDGET` seeds drawn from the base seed (fresh unless
//! `YGGR_SIM_SEED_BASE` is set), stops at the first failure (`--keep-going` runs them all),
//! prints it with the seed that replays it, and exits with status 1. Otherwise prints what
//! the runs covered and how fast they ran, and fails if they covered too little.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use yggr_sim::stack::{
    CrashPointReport, RegisterWorkload, StackOptions, StackReport, run_crash_points, run_stack,
};
use yggr_sim::suite::{base_seed, budget, run_seed};

/// Runs per unit of budget.
const RUNS_PER_BUDGET: f64 = 50.0;
/// Crash-point sweeps (one storage history each, every crash point of two of its batches)
/// per unit of budget.
const SWEEPS_PER_BUDGET: f64 = 250.0;

fn main() -> ExitCode {
    let keep_going = std::env::args().any(|argument| argument == "--keep-going");
    let single = std::env::var("YGGR_STACK_SEED")
        .ok()
        .and_then(|value| value.parse::<u64>().ok());
    let base = base_seed();
    let seeds: Vec<u64> = match single {
        Some(seed) => vec![seed],
        None => {
            let runs = (RUNS_PER_BUDGET * budget()).ceil() as u64;
            println!("stack suite: base seed {base}, {runs} runs");
            (0..runs).map(|index| run_seed(base, index)).collect()
        }
    };
    if single.is_none()
        && let Err(failure) = sweep_crash_points(base, keep_going)
    {
        println!("{failure}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut failed = 0;
    for seed in seeds {
        let options = StackOptions::from_seed(seed);
        match run_stack(&RegisterWorkload::default(), &options) {
            Ok(report) => {
                if single.is_some() {
                    println!("{report:#?}");
                }
                reports.push(report);
            }
            Err(failure) => {
                failed += 1;
                println!("{failure}");
                if !keep_going {
                    break;
                }
            }
        }
    }
    summarize(&reports, started.elapsed());
    if failed > 0 {
        println!("{failed} run(s) failed");
        return ExitCode::FAILURE;
    }
    if single.is_none()
        && let Err(shortfall) = coverage_gate(&reports)
    {
        println!("coverage shortfall: {shortfall}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs the crash-point sweeps first: they take seconds and catch storage bugs at their
/// root. `YGGR_CRASH_POINTS_SEED=N` replays one.
fn sweep_crash_points(base: u64, keep_going: bool) -> Result<(), String> {
    let replay = match std::env::var("YGGR_CRASH_POINTS_SEED") {
        Ok(value) => Some(value.parse::<u64>().map_err(|_| {
            format!("YGGR_CRASH_POINTS_SEED={value:?} is not a seed (a number from 0 to 2^64 - 1)")
        })?),
        Err(_) => None,
    };
    let seeds: Vec<u64> = match replay {
        Some(seed) => vec![seed],
        None => {
            let sweeps = (SWEEPS_PER_BUDGET * budget()).ceil() as u64;
            (0..sweeps)
                .map(|index| run_seed(base ^ 0xc4a5, index))
                .collect()
        }
    };
    let started = Instant::now();
    let mut total = CrashPointReport::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run_crash_points(seed) {
            Ok(report) => {
                total.batches += report.batches;
                total.crash_points += report.crash_points;
                total.in_installs_replacing_a_log += report.in_installs_replacing_a_log;
                total.recoveries_interrupted += report.recoveries_interrupted;
                total.corruptions += report.corruptions;
            }
            Err(failure) => {
                let failure = format!(
                    "{failure}\nreplay: YGGR_CRASH_POINTS_SEED={seed} cargo run --release -p yggr-sim --example stack"
                );
                if !keep_going {
                    return Err(failure);
                }
                println!("{failure}");
                failures.push(seed);
            }
        }
    }
    println!(
        "crash points: {} sweeps in {:.1} wall s: {} crash points ({} in installs replacing a log), {} recoveries interrupted, {} corruptions refused",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.crash_points,
        total.in_installs_replacing_a_log,
        total.recoveries_interrupted,
        total.corruptions
    );
    if seeds.len() >= 20 && total.in_installs_replacing_a_log == 0 {
        return Err(format!(
            "coverage shortfall: no crash point in an install replacing a log in {} sweeps",
            seeds.len()
        ));
    }
    match failures.len() {
        0 => Ok(()),
        count => Err(format!(
            "{count} crash-point sweep(s) failed: seeds {failures:?}"
        )),
    }
}

fn summarize(reports: &[StackReport], wall: Duration) {
    let simulated: f64 = reports
        .iter()
        .map(|report| report.simulated.as_secs_f64())
        .sum();
    let sum = |field: fn(&StackReport) -> u64| reports.iter().map(field).sum::<u64>();
    println!(
        "{} runs passed: {simulated:.0} simulated s in {:.1} wall s ({:.0} simulated s per wall s); \
         {} writes acknowledged, {} refused, {} unknown; {} reads; {} crashes ({} power losses), \
         {} restarts, {} pauses, {} full disks, {} corruptions refused, {} partitions, {} holds; \
         {} snapshots installed ({} replacing a log, {} with a power loss planned in); {} transfers, {} voters removed, {} lone-voter periods",
        reports.len(),
        wall.as_secs_f64(),
        simulated / wall.as_secs_f64().max(1e-9),
        sum(|report| report.history.acknowledged),
        sum(|report| report.history.refused),
        sum(|report| report.history.unknown),
        sum(|report| report.history.reads),
        sum(|report| report.faults.crashes),
        sum(|report| report.faults.power_losses),
        sum(|report| report.faults.restarts),
        sum(|report| report.faults.pauses),
        sum(|report| report.faults.full_disks),
        sum(|report| report.faults.corruptions_refused),
        sum(|report| report.faults.partitions),
        sum(|report| report.faults.holds),
        sum(|report| report.history.snapshots_installed),
        sum(|report| report.storage.installs_replacing_a_log),
        sum(|report| report.storage.power_losses_planned_in_installs),
        sum(|report| report.operator.transfers),
        sum(|report| report.operator.removals),
        sum(|report| report.operator.lone_voter_periods),
    );
}

/// The suite must have reached the corners it exists for.
fn coverage_gate(reports: &[StackReport]) -> Result<(), String> {
    if reports.len() < 20 {
        return Ok(());
    }
    let sum = |field: fn(&StackReport) -> u64| reports.iter().map(field).sum::<u64>();
    let needs: [(&str, u64); 6] = [
        ("crashes", sum(|report| report.faults.crashes)),
        ("power losses", sum(|report| report.faults.power_losses)),
        (
            "corruptions refused",
            sum(|report| report.faults.corruptions_refused),
        ),
        (
            "snapshots installed",
            sum(|report| report.history.snapshots_installed),
        ),
        (
            "lone-voter periods",
            sum(|report| report.operator.lone_voter_periods),
        ),
        ("unknown outcomes", sum(|report| report.history.unknown)),
    ];
    match needs.iter().find(|(_, count)| *count == 0) {
        Some((what, _)) => Err(format!("no {what} in {} runs", reports.len())),
        None => Ok(()),
    }
}
