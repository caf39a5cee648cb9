//! Prints what each run's liveness phase cost, one CSV line per run, for the CI suites' seeds:
//! the data the liveness baselines (`yggr_sim::liveness::LivenessBaseline`) were chosen from.
//!
//! ```sh
//! YGGR_SIM_BUDGET=2 YGGR_SIM_SEED_BASE=1 cargo run --release -p yggr-sim --example liveness_costs > costs.csv
//! cargo run --release -p yggr-sim --example liveness_costs -- lease   # one suite
//! ```

use yggr_sim::suite::{Suite, base_seed, budget};
use yggr_sim::{Clocks, Workload, run};

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let base = base_seed();
    let budget = budget();
    println!(
        "suite,seed,nodes,election_min,election_max,heartbeat,pre_vote,drift_per_mille,\
         elections_to_converge,ticks_to_converge,ticks_to_serve,campaigns_while_led"
    );
    for name in Workload::PRESETS {
        if !arguments.is_empty() && !arguments.iter().any(|argument| argument == name) {
            continue;
        }
        let Some(suite) = Suite::preset(name) else {
            continue;
        };
        let runs = ((suite.runs as f64 * budget).ceil() as u64).max(1);
        for index in 0..runs {
            let options = suite.options(base, index);
            let engine = &options.workload.engine;
            let drift = match options.workload.clocks {
                Clocks::Independent => -1,
                Clocks::Drifting {
                    max_drift_per_mille,
                } => i64::from(max_drift_per_mille),
            };
            let prefix = format!(
                "{name},{},{},{},{},{},{},{drift}",
                options.seed,
                options.nodes,
                engine.election_timeout_min_ticks,
                engine.election_timeout_max_ticks,
                engine.heartbeat_interval_ticks,
                engine.pre_vote
            );
            match run(&options) {
                Ok(report) => {
                    let Some(liveness) = report.liveness else {
                        continue;
                    };
                    println!(
                        "{prefix},{},{},{},{}",
                        liveness.elections_to_converge,
                        liveness.ticks_to_converge,
                        liveness.ticks_to_serve,
                        liveness.campaigns_while_led
                    );
                }
                Err(failure) => eprintln!("{prefix}: FAILED {failure}"),
            }
        }
    }
}
