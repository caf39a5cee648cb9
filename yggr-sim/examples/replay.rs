//! Replays one simulator run with a step-by-step trace of events, actions and faults.
//!
//! ```sh
//! YGGR_SIM_RUN='seed=42 nodes=3 steps=1500 workload=reads ...' \
//!     cargo run --release -p yggr-sim --example replay
//! ```
//!
//! A failing run prints exactly such a command: `YGGR_SIM_RUN` holds the run's complete
//! options (see `yggr_sim::RunOptions`'s text form), so the replay is exact whatever the
//! workload or engine settings were. Keys left out take their defaults, so
//! `YGGR_SIM_RUN='seed=42'` replays seed 42 of the default workload. `YGGR_SIM_TAIL=N` prints
//! only the last N lines.

use std::collections::VecDeque;
use std::process::ExitCode;

use yggr_sim::{RunOptions, replay};

fn main() -> ExitCode {
    let Ok(text) = std::env::var("YGGR_SIM_RUN") else {
        eprintln!("set YGGR_SIM_RUN to the options of the run to replay, e.g. 'seed=42 nodes=3'");
        return ExitCode::from(2);
    };
    let options: RunOptions = match text.parse() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("YGGR_SIM_RUN: {error}");
            return ExitCode::from(2);
        }
    };
    let tail: Option<usize> = std::env::var("YGGR_SIM_TAIL")
        .ok()
        .and_then(|value| value.parse().ok());
    let mut kept = VecDeque::new();
    println!("replaying {options}");
    let outcome = replay(&options, &mut |line| match tail {
        Some(limit) => {
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(line);
        }
        None => println!("{line}"),
    });
    for line in kept {
        println!("{line}");
    }
    match outcome {
        Ok(report) => {
            println!("\nok: {}", report.coverage);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("\nFAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}
