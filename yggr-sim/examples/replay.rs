//! Replays one simulator run with a step-by-step trace of events, actions and faults.
//!
//! ```sh
//! YGGR_SIM_SEED=42 YGGR_SIM_NODES=3 YGGR_SIM_STEPS=1500 YGGR_SIM_POLICY=chaos \
//!     cargo run --release -p yggr-sim --example replay
//! ```
//!
//! A failing test prints exactly such a command. Every variable but the seed is optional
//! (defaults: 3 nodes, 1500 steps, chaos, the `default` workload; `YGGR_SIM_WORKLOAD` names a
//! preset: default, membership, snapshot, reads, lease or transfer).

use std::process::ExitCode;

use yggr_sim::Policy;
use yggr_sim::policy::{ChaosRates, build, policy_step, report};
use yggr_sim::trace::Trace;

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn main() -> ExitCode {
    let Some(seed) = variable("YGGR_SIM_SEED").and_then(|s| s.parse::<u64>().ok()) else {
        eprintln!("set YGGR_SIM_SEED to the seed to replay (a u64)");
        return ExitCode::from(2);
    };
    let nodes = variable("YGGR_SIM_NODES")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let steps = variable("YGGR_SIM_STEPS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let policy = match variable("YGGR_SIM_POLICY") {
        None => Policy::Chaos,
        Some(name) => match Policy::parse(&name) {
            Some(policy) => policy,
            None => {
                eprintln!("YGGR_SIM_POLICY must be happy or chaos, not {name}");
                return ExitCode::from(2);
            }
        },
    };
    let workload_name = variable("YGGR_SIM_WORKLOAD").unwrap_or_else(|| "default".to_string());
    let Some(workload) = yggr_sim::Workload::preset(&workload_name) else {
        eprintln!(
            "YGGR_SIM_WORKLOAD must be one of {:?}, not {workload_name}",
            yggr_sim::Workload::PRESETS
        );
        return ExitCode::from(2);
    };
    let options = yggr_sim::RunOptions {
        workload,
        ..yggr_sim::RunOptions::new(seed, nodes, steps, policy)
    };
    let mut cluster = build(&options);
    cluster.trace = Trace::enabled();
    let rates = ChaosRates::from_seed(seed);
    println!(
        "seed {seed}, {nodes} nodes, {steps} steps, {policy:?}, workload {workload_name}; rates {rates:?}"
    );
    while cluster.step_count < steps {
        let result = policy_step(&mut cluster, &options, &rates);
        for line in cluster.trace.take_lines() {
            println!("{line}");
        }
        if let Err(failure) = result {
            println!("\nFAILED: {failure}");
            return ExitCode::FAILURE;
        }
    }
    println!("\nok: {:?}", report(&cluster));
    ExitCode::SUCCESS
}
