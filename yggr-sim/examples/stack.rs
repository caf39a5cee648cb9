//! Runs the whole stack under simulation with the simulator's register workload.
//!
//! `cargo run --release -p yggr-sim --example stack` runs seeds 1 to 10;
//! `YGGR_STACK_SEED=N` runs seed N alone, `YGGR_STACK_RUNS=K` runs K seeds from
//! `YGGR_STACK_BASE` (default 1).

use std::time::Instant;

use yggr_sim::stack::{RegisterWorkload, StackOptions, run_stack};

fn main() {
    let variable = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse::<u64>().ok())
    };
    let seeds: Vec<u64> = match variable("YGGR_STACK_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = variable("YGGR_STACK_BASE").unwrap_or(1);
            (base..base + variable("YGGR_STACK_RUNS").unwrap_or(10)).collect()
        }
    };
    let mut failed = 0;
    for seed in seeds {
        let options = StackOptions::from_seed(seed);
        let started = Instant::now();
        match run_stack(&RegisterWorkload::default(), &options) {
            Ok(report) => println!(
                "seed {seed}: ok in {:.1} s wall, {:.1} s simulated; {} nodes, {:?}, {:?}, {:?}, term {}, leader after {:?}, converged after {:?}, digest {:016x}",
                started.elapsed().as_secs_f64(),
                report.simulated.as_secs_f64(),
                options.nodes,
                report.history,
                report.faults,
                report.operator,
                report.term,
                report.time_to_leader,
                report.time_to_converge,
                report.digest
            ),
            Err(failure) => {
                failed += 1;
                println!("{failure}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} run(s) failed");
        std::process::exit(1);
    }
}
